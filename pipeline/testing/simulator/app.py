"""The simulator's HTTP side: a hand-written ASGI app on two hypercorn listeners.

Tests, the local demo and people trying the service all need an Export API
that behaves like the real one, including its bad days. This module is that
API: a small hand-written ASGI app (every byte of a response is ours to
control, which a framework would hide when we want to break a body off
midway) served by hypercorn on Trio, on two listeners:

* the **API host** (``/exports/{id}``, ``/exports/{id}/files``), which wants
  ``Authorization: Bearer <token>`` when a token is configured, and may serve
  downloads itself when an export says ``download_host="api"``;
* a **download host** on a second loopback address, standing in for presigned
  storage URLs: absolute URLs with a signature in the query, ``GET`` only
  (anything else is 403, as for a URL signed for one method), no token wanted,
  and a record of whether one arrived anyway.

The state lives in one :class:`Simulator` that tests drive in-process: add
exports (bytes, or a :class:`BodyProvider` that generates big files without
holding them), inject faults (status answers with ``Retry-After``, stalls,
bodies broken off after K bytes, throttled speed, looping cursors), count
the requests each route received (and the most answered at once), and await
what it sees (``wait_until``, woken by every request and every piece of a body
sent) instead of polling it.

Run it alone with ``python -m pipeline.testing.simulator --demo``; it stops on Ctrl-C
or SIGTERM.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import json
import logging
import urllib.parse
from typing import Literal

import attrs
import structlog
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from hypercorn.typing import (
    ASGIReceiveCallable,
    ASGISendCallable,
    HTTPScope,
    Scope,
)

from pipeline.testing.simulator.bodies import SEND_CHUNK_BYTES
from pipeline.testing.simulator.state import (
    Listener,
    RequestRecord,
    Route,
    Simulator,
    SimulatorUrls,
    Status,
    StoredExport,
    StoredFile,
)

__all__ = ["serve_simulator"]

log = structlog.get_logger("pipeline.testing.simulator")

MAX_PAGE_SIZE = 100
# Shutdown should not wait on a client that keeps a slow download open.
GRACEFUL_TIMEOUT_SECONDS = 1.0


def _encode_cursor(export_id: str, offset: int, page: int) -> str:
    raw = json.dumps([export_id, offset, page], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, export_id: str) -> tuple[int, int] | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        owner, offset, page = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        return None
    if owner != export_id or not isinstance(offset, int) or not isinstance(page, int):
        return None
    return offset, page


def _parse_range(
    header: str | None, size: int
) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """(first, last) inclusive from ``bytes=N-`` or ``bytes=N-M``; None to ignore it."""
    if header is None:
        return None
    unit, _, spec = header.strip().partition("=")
    first, dash, last = spec.strip().partition("-")
    if unit.strip().lower() != "bytes" or not dash or not first.isdigit():
        return None
    if last and not last.isdigit():
        return None
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        return "unsatisfiable"
    return start, end


@attrs.frozen
class _Request:
    listener: Listener
    method: str
    segments: tuple[str, ...]
    query: dict[str, list[str]]
    headers: dict[str, str]
    path: str


class _Response:
    """Thin helpers over the ASGI ``send`` callable."""

    def __init__(self, send: ASGISendCallable) -> None:
        self._send = send

    async def start(self, status: int, headers: dict[str, str]) -> None:
        raw = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
        await self._send({"type": "http.response.start", "status": status, "headers": raw})

    async def body(self, data: bytes, *, more: bool) -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": more})

    async def json(
        self, status: int, payload: object, headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        await self.start(
            status,
            {
                "content-type": "application/json",
                "content-length": str(len(data)),
                **(headers or {}),
            },
        )
        await self.body(data, more=False)

    async def error(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        await self.json(status, {"error": reason}, headers)


class _App:
    """The ASGI app of one listener; both share the :class:`Simulator`."""

    def __init__(self, sim: Simulator, listener: Listener) -> None:
        self._sim = sim
        self._listener: Listener = listener

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif scope["type"] == "http":
            await self._http(scope, _Response(send))

    async def _http(self, scope: HTTPScope, response: _Response) -> None:
        raw_path = scope["raw_path"].decode("latin-1")
        request = _Request(
            listener=self._listener,
            method=scope["method"].upper(),
            segments=tuple(urllib.parse.unquote(part) for part in raw_path.split("/")[1:]),
            query=urllib.parse.parse_qs(scope["query_string"].decode("latin-1")),
            headers={
                name.decode("latin-1").lower(): value.decode("latin-1")
                for name, value in scope["headers"]
            },
            path=raw_path,
        )
        route, export_id, file_id = _route(request.segments)
        self._sim._record(
            RequestRecord(
                listener=self._listener,
                method=request.method,
                route=route,
                path=request.path,
                export_id=export_id,
                file_id=file_id,
                range=request.headers.get("range"),
                authorization=request.headers.get("authorization"),
                at=trio.current_time(),
            )
        )
        log.debug("simulator request", listener=self._listener, method=request.method, route=route)
        self._sim._opened(route)
        try:
            await _answer(self._sim, request, route, export_id, file_id, response)
        finally:
            self._sim._closed(route)


def _route(segments: tuple[str, ...]) -> tuple[Route, str | None, str | None]:
    match segments:
        case ("exports", export_id):
            return "status", export_id, None
        case ("exports", export_id, "files"):
            return "files", export_id, None
        case ("downloads", export_id, file_id):
            return "download", export_id, file_id
    return "other", None, None


async def _answer(
    sim: Simulator,
    request: _Request,
    route: Route,
    export_id: str | None,
    file_id: str | None,
    response: _Response,
) -> None:
    """Delay, outage, auth, method, injected faults, then the route: the order a gateway uses."""
    if sim.request_delay:
        await trio.sleep(sim.request_delay)
    if sim.outage_status is not None:
        await response.error(sim.outage_status, "outage")
        return
    if request.listener == "api" and sim.token is not None:
        expected = f"Bearer {sim.token}"
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            await response.error(401, "missing or wrong bearer token")
            return
    if route == "download" and request.method != "GET":
        # A presigned URL is signed for one method; S3 answers 403 to others.
        await response.error(403, "this URL is signed for GET only")
        return
    if route in ("status", "files") and request.method != "GET":
        await response.error(405, "only GET", {"allow": "GET"})
        return
    fault = sim._take_fault(route, export_id, file_id)
    if fault is not None and fault.stall:
        await trio.sleep(fault.stall)
    if fault is not None and fault.status is not None:
        headers = {}
        if fault.retry_after is not None:
            after = fault.retry_after
            headers["retry-after"] = str(int(after)) if after == int(after) else str(after)
        if fault.body is not None:
            await response.start(
                fault.status,
                {
                    "content-type": "application/json",
                    "content-length": str(len(fault.body)),
                    **headers,
                },
            )
            await response.body(fault.body, more=False)
        else:
            await response.error(fault.status, "injected fault", headers)
        return
    export = None if export_id is None else sim._exports.get(export_id)
    if route == "other" or export is None:
        await response.error(404, "not found")
        return
    if route == "status":
        await _status(sim, export, response)
    elif route == "files":
        await _files(sim, export, request, response)
    else:
        assert file_id is not None
        break_after = None if fault is None else fault.break_after
        await _download(sim, export, file_id, request, response, break_after)


async def _status(sim: Simulator, export: StoredExport, response: _Response) -> None:
    now = sim._now()
    if export.ready_after_seconds is not None and export.ready_at is None and now is not None:
        export.ready_at = now + export.ready_after_seconds
    pending = export.pending(now)
    export.polls += 1
    status: Status = "PENDING" if pending else export.final_status
    count = len(export.files) if status == "READY" else None
    await response.json(200, {"exportId": export.export_id, "status": status, "fileCount": count})


async def _files(
    sim: Simulator, export: StoredExport, request: _Request, response: _Response
) -> None:
    if export.pending(sim._now()):
        await response.error(409, "export is PENDING")
        return
    if export.final_status != "READY":
        await response.error(409, "export is FAILED")
        return
    limits = request.query.get("limit", [str(MAX_PAGE_SIZE)])
    if len(limits) != 1 or not limits[0].isdigit() or not 1 <= int(limits[0]) <= MAX_PAGE_SIZE:
        await response.error(400, f"limit must be an integer 1..{MAX_PAGE_SIZE}")
        return
    limit = int(limits[0])
    if export.page_size_cap is not None:
        limit = min(limit, export.page_size_cap)
    cursors = request.query.get("cursor")
    offset, page = 0, 0
    if cursors is not None:
        decoded = _decode_cursor(cursors[0], export.export_id) if len(cursors) == 1 else None
        if decoded is None:
            await response.error(400, "bad cursor")
            return
        offset, page = decoded
    total = len(export.files)
    if export.empty_pages and page % 2 == 0:
        chosen: list[StoredFile] = []
        next_cursor: str | None = _encode_cursor(export.export_id, offset, page + 1)
    else:
        chosen = export.files[offset : offset + limit]
        end = offset + len(chosen)
        next_cursor = _encode_cursor(export.export_id, end, page + 1) if end < total else None
    if next_cursor is None and export.repeat_cursor:
        next_cursor = cursors[0] if cursors else _encode_cursor(export.export_id, 0, 0)
    files = [
        {
            "fileId": file.file_id,
            "name": file.name,
            "downloadUrl": sim.download_url(export.export_id, file.file_id),
            "sizeBytes": file.body.size,
        }
        for file in chosen
    ]
    await response.json(200, {"files": files, "nextCursor": next_cursor})


async def _download(
    sim: Simulator,
    export: StoredExport,
    file_id: str,
    request: _Request,
    response: _Response,
    break_after: int | None,
) -> None:
    wanted_listener = "api" if export.download_host == "api" else "download"
    file = next((f for f in export.files if f.file_id == file_id), None)
    if file is None or request.listener != wanted_listener:
        await response.error(404, "no such file")
        return
    signature = request.query.get("sig", [""])[0]
    if not hmac.compare_digest(signature.encode(), file.signature.encode()):
        await response.error(403, "signature does not match")
        return
    size = file.body.size
    span = _parse_range(request.headers.get("range"), size) if export.honour_range else None
    if span == "unsatisfiable":
        await response.error(416, "range not satisfiable", {"content-range": f"bytes */{size}"})
        return
    headers = {"content-type": "application/zip", "accept-ranges": "bytes"}
    if span is None:
        first, last, status = 0, size - 1, 200
    else:
        first, last = span
        status = 206
        headers["content-range"] = f"bytes {first}-{last}/{size}"
    length = last - first + 1
    headers["content-length"] = str(length)
    await response.start(status, headers)
    await _send_body(sim, response, file, first, length, break_after)


async def _send_body(
    sim: Simulator,
    response: _Response,
    file: StoredFile,
    first: int,
    length: int,
    break_after: int | None,
) -> None:
    """Send ``length`` bytes from ``first``, throttled, or hang up after ``break_after``.

    The throttle is read before every piece: a test that changes it changes the
    downloads under way too (holds a process's files back, then lets them go).
    """
    budget = length if break_after is None else min(length, break_after)
    sent = 0
    for piece in file.body.iter_bytes(first):
        view = memoryview(piece)
        while view and sent < budget:
            rate = file.bytes_per_second
            piece_limit = (
                SEND_CHUNK_BYTES if rate is None else max(1, min(SEND_CHUNK_BYTES, int(rate / 20)))
            )
            part = bytes(view[: min(piece_limit, budget - sent)])
            view = view[len(part) :]
            await response.body(part, more=True)
            sent += len(part)
            sim._sent(file, len(part))
            if rate is not None:
                await trio.sleep(len(part) / rate)
        if sent >= budget:
            break
    if sent < length:
        # Returning without the final body message makes hypercorn close the
        # connection with the body short of its Content-Length.
        return
    await response.body(b"", more=False)


# --- serving -------------------------------------------------------------------


def _config(host: str, port: int) -> Config:
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("pipeline.testing.simulator.hypercorn")
    config.graceful_timeout = GRACEFUL_TIMEOUT_SECONDS
    return config


async def serve_simulator(
    sim: Simulator,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    download_host: str = "127.0.0.2",
    download_port: int = 0,
    task_status: trio.TaskStatus[SimulatorUrls] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``sim`` on the API listener and the download listener until cancelled.

    Port 0 picks a free port; the real URLs are reported through
    ``task_status.started(SimulatorUrls(...))``, so
    ``urls = await nursery.start(serve_simulator, sim)``. Cancelling the
    surrounding scope stops both listeners (in-flight responses get
    ``GRACEFUL_TIMEOUT_SECONDS``).
    """
    async with trio.open_nursery() as nursery:
        api_binds = await nursery.start(
            functools.partial(serve, _App(sim, "api"), _config(host, port), mode="asgi")
        )
        download_binds = await nursery.start(
            functools.partial(
                serve, _App(sim, "download"), _config(download_host, download_port), mode="asgi"
            )
        )
        urls = SimulatorUrls(api_url=api_binds[0], download_url=download_binds[0])
        sim._bind(urls)
        log.info("simulator serving", api_url=urls.api_url, download_url=urls.download_url)
        task_status.started(urls)
