"""An HTTP fault proxy in front of moto: chosen AWS calls fail on purpose.

The service is pointed at the proxy (``AWS_ENDPOINT_URL``); every request is
forwarded to moto unless a rule claims it. A rule names a service and an
operation, as botocore calls them, and what to do instead:

* ``status``: answer with an AWS-shaped error (500 InternalError, 503 SlowDown,
  400 ThrottlingException, ...), never reaching moto;
* ``reset``: declare a body and break the connection before it is complete;
* ``stall``: wait before forwarding (a slow dependency).

Like S3 and unlike moto, the proxy checks an S3 request's
``x-amz-checksum-crc32`` against its body and answers 400 ``BadDigest`` when
they differ (counted in ``bad_digests``).

The operation is read the way AWS routes it: the ``X-Amz-Target`` header for
the JSON protocols (SQS, DynamoDB), the method and query for S3's REST API.
"""

from __future__ import annotations

import base64
import functools
import json
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import httpx
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection"}


@attrs.define
class Fault:
    """One rule: the next ``times`` calls of ``operation`` get ``kind``.

    With ``for_seconds`` the rule is an outage instead: from its first hit,
    every call of ``operation`` ("*": any of ``service``'s) gets ``kind`` for
    that long, however many calls the service makes meanwhile. With
    ``begins_with`` too, the outage waits for the first call of that
    operation (say, the first heartbeat: a message is then in flight).
    """

    service: str  # "s3", "sqs" or "dynamodb"
    operation: str  # botocore's operation name, e.g. "UploadPart"
    kind: str  # "status", "reset" or "stall"
    times: int = 1
    status: int = 500
    code: str = "InternalError"
    stall_seconds: float = 0.0
    for_seconds: float | None = None
    begins_with: str | None = None
    hits: int = 0
    _began: float | None = None

    @property
    def ends_at(self) -> float | None:
        """When an outage that has begun ends, on Trio's clock (``None`` before its first hit)."""
        if self._began is None or self.for_seconds is None:
            return None
        return self._began + self.for_seconds

    def claims(self, service: str, operation: str) -> bool:
        if self.service != service or self.operation not in (operation, "*"):
            return False
        if self.for_seconds is None:
            return self.hits < self.times
        now = trio.current_time()
        if self._began is None:
            if self.begins_with not in (None, operation):
                return False
            self._began = now
        return now < self._began + self.for_seconds


def s3_operation(method: str, path: str, query: dict[str, list[str]]) -> str:
    """botocore's name for an S3 REST call (the ones this service makes)."""
    has_key = path.strip("/").count("/") >= 1
    if method == "PUT":
        if "partNumber" in query:
            return "UploadPart"
        return "PutObject" if has_key else "CreateBucket"
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
        return "DeleteObjects" if "delete" in query else "PostObject"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    if method == "HEAD":
        return "HeadObject" if has_key else "HeadBucket"
    if "uploads" in query:
        return "ListMultipartUploads"
    return "GetObject" if has_key else "ListObjectsV2"


def classify(
    method: str, path: str, query_string: bytes, headers: dict[str, str]
) -> tuple[str, str]:
    """The (service, operation) of one AWS request."""
    target = headers.get("x-amz-target", "")
    if target.startswith("AmazonSQS."):
        return "sqs", target.split(".", 1)[1]
    if target.startswith("DynamoDB_"):
        return "dynamodb", target.split(".", 1)[1]
    query = parse_qs(query_string.decode(), keep_blank_values=True)
    if "Action" in query:
        return "sqs", query["Action"][0]
    return "s3", s3_operation(method, path, query)


@attrs.define
class FaultProxy:
    """The proxy's state: its rules and what it has seen."""

    upstream: str
    faults: list[Fault] = attrs.field(factory=list)
    calls: Counter[tuple[str, str]] = attrs.field(factory=Counter)
    injected: Counter[tuple[str, str, str]] = attrs.field(factory=Counter)
    bad_digests: int = 0
    _client: httpx.AsyncClient | None = None

    def add(self, fault: Fault) -> Fault:
        self.faults.append(fault)
        return fault

    def clear(self) -> None:
        self.faults.clear()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            message = await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = _origin_form(scope["path"])
        service, operation = classify(scope["method"], path, scope["query_string"], headers)
        self.calls[(service, operation)] += 1
        claimed = headers.get("x-amz-checksum-crc32")
        if service == "s3" and claimed is not None and claimed != _crc32_base64(body):
            self.bad_digests += 1
            await _aws_error(
                send, service, Fault(service, operation, "status", 1, 400, "BadDigest")
            )
            return
        fault = next((f for f in self.faults if f.claims(service, operation)), None)
        if fault is not None:
            fault.hits += 1
            self.injected[(service, operation, fault.kind)] += 1
            if fault.kind == "stall":
                await trio.sleep(fault.stall_seconds)
            elif fault.kind == "reset":
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [(b"content-length", b"1000")],
                    }
                )
                await send({"type": "http.response.body", "body": b"<", "more_body": True})
                raise ConnectionResetError("fault proxy: connection reset on purpose")
            else:
                await _aws_error(send, service, fault)
                return
        await self._forward(scope, headers, bytes(body), send)

    async def _forward(
        self, scope: Scope, headers: dict[str, str], body: bytes, send: Send
    ) -> None:
        if self._client is None:
            # verify=False: moto is plain HTTP, and a client that may verify loads
            # the CA bundle on creation (0.03 CPU-s, once per case).
            self._client = httpx.AsyncClient(timeout=60, verify=False)
        url = self.upstream + _origin_form(scope["raw_path"].decode())
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode()
        upstream = await self._client.request(
            scope["method"],
            url,
            headers={k: v for k, v in headers.items() if k not in _HOP_HEADERS},
            content=body,
        )
        response_headers = [
            (k.encode(), v.encode())
            for k, v in upstream.headers.items()
            if k.lower() not in _HOP_HEADERS and k.lower() != "content-encoding"
        ]
        response_headers.append((b"content-length", str(len(upstream.content)).encode()))
        await send(
            {
                "type": "http.response.start",
                "status": upstream.status_code,
                "headers": response_headers,
            }
        )
        await send({"type": "http.response.body", "body": upstream.content})


def _crc32_base64(body: bytes) -> str:
    return base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()


def _origin_form(target: str) -> str:
    """The path of a request target; aiobotocore's httpx backend sends absolute-form ones."""
    if target.startswith(("http://", "https://")):
        parts = urlsplit(target)
        return parts.path or "/"
    return target


async def _aws_error(send: Send, service: str, fault: Fault) -> None:
    if service == "s3":
        body = (
            f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{fault.code}</Code>"
            f"<Message>injected</Message></Error>"
        ).encode()
        content_type = b"application/xml"
    else:
        prefix = "com.amazonaws.dynamodb.v20120810#" if service == "dynamodb" else ""
        body = json.dumps({"__type": prefix + fault.code, "message": "injected"}).encode()
        content_type = b"application/x-amz-json-1.0"
    await send(
        {
            "type": "http.response.start",
            "status": fault.status,
            "headers": [
                (b"content-type", content_type),
                (b"x-amzn-query-error", f"{fault.code};Sender".encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def serve_fault_proxy(
    proxy: FaultProxy, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve ``proxy`` on a free loopback port; reports its URL."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(functools.partial(serve, proxy, config))  # type: ignore[arg-type]
        task_status.started(binds[0])
