"""The AWS clients, and the one place where botocore's errors become ours.

botocore's own retries are turned off (one attempt per call): a botocore retry
loop sleeps without jitter we control and cannot tell a throttled S3 partition
from a rejected request in our terms. Instead every call goes through
:func:`aws_call`, which translates the error at the boundary
(:func:`translate_aws_errors`) and retries our :class:`AwsUnavailable` with
full jitter (:func:`pipeline._adapters.retry.retry`).

The translation is by error code and HTTP status, mirroring botocore's own
"standard" retry mode: throttling codes, request timeouts and 5xx are
transient, connection trouble (refused, reset, timed out) is transient,
everything else AWS or botocore says is permanent. The code is kept on the
exception (``err.code``) because callers decide on it:
``ConditionalCheckFailedException``, ``ReceiptHandleIsInvalid``, ``NoSuchUpload``.

One client per service is opened at the top of the nursery tree and shared by
every task: a client owns a connection pool, and a pool per task would defeat
keep-alive and exhaust sockets.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any, TypeVar, cast

import attrs
import httpx
from aiobotocore.config import AioConfig
from aiobotocore.httpxsession import HttpxSession
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ChecksumError,
    ClientError,
    ConnectionError,
    CredentialRetrievalError,
    HTTPClientError,
    IncompleteReadError,
    MetadataRetrievalError,
)
from botocore.loaders import Loader, create_loader

from pipeline._adapters.aws.clienttypes import DynamoDbClient, EventsClient, S3Client, SqsClient
from pipeline._adapters.retry import retry
from pipeline._core.backoff import Backoff
from pipeline._errors import AwsRejected, AwsUnavailable

__all__ = [
    "AwsClients",
    "aws_call",
    "cancellation_codes",
    "error_code",
    "open_aws_clients",
    "refused_item",
    "tls_verify",
    "translate_aws_errors",
]

T = TypeVar("T")

# Codes botocore's "standard" retry mode treats as throttling or transient,
# plus the 5xx-style codes the services spell out.
_TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "RequestThrottled",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "SlowDown",
        "PriorRequestNotComplete",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
        "KmsThrottled",
        "KMS.ThrottlingException",
    }
)

# Why DynamoDB cancels a transaction, per item: these say "try again", any
# other (a failed condition, a validation error) is the request's answer.
_TRANSIENT_CANCELLATIONS = frozenset(
    {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}
)

# botocore's own errors that mean "the network or a credential endpoint let
# us down", not "the request is wrong". HTTPClientError covers
# ConnectionClosedError, ReadTimeoutError and ResponseStreamingError;
# ConnectionError covers EndpointConnectionError and ConnectTimeoutError.
_TRANSIENT_BOTOCORE = (
    HTTPClientError,
    ConnectionError,
    IncompleteReadError,
    ChecksumError,
    CredentialRetrievalError,
    MetadataRetrievalError,
)

# SQS long polls hold a response for up to 20 s: the read timeout must be
# well above that or every idle poll would end as a timeout.
_SQS_READ_TIMEOUT = 30.0
# S3 may take a while to answer CompleteMultipartUpload of a large object (it
# keeps the connection alive with whitespace meanwhile); DynamoDB answers fast.
_S3_READ_TIMEOUT = 60.0
_DYNAMODB_READ_TIMEOUT = 15.0
_CONNECT_TIMEOUT = 5.0
# A task may wait for a free pooled connection when all are busy; that wait
# is normal under load, so it gets longer than httpx's 5 s default.
_POOL_TIMEOUT = 60.0
# Per socket write, generous for an 8 MiB part on a slow link.
_WRITE_TIMEOUT = 60.0
_KEEPALIVE_SECONDS = 12.0


@attrs.frozen
class AwsClients:
    """The long-lived clients, shared by every task of the process."""

    s3: S3Client
    sqs: SqsClient
    dynamodb: DynamoDbClient
    # EventBridge, opened only where lifecycle events are on (EVENT_BUS_NAME).
    events: EventsClient | None = None


def _path_style(on: bool) -> dict[str, str]:
    return {"addressing_style": "path"} if on else {}


def _config(*, pool_size: int, read_timeout: float, path_style: bool) -> Any:
    return AioConfig(
        http_session_cls=HttpxSession,
        # Not "max_attempts": botocore counts that as retries after the first
        # attempt, so 1 there means two attempts.
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=pool_size,
        connect_timeout=_CONNECT_TIMEOUT,
        read_timeout=read_timeout,
        connector_args={
            "keepalive_timeout": _KEEPALIVE_SECONDS,
            "write_timeout": _WRITE_TIMEOUT,
            "pool_timeout": _POOL_TIMEOUT,
        },
        # Nothing per byte in botocore: no SHA-256 of a payload for SigV4 (over
        # HTTP botocore would hash every part; over HTTPS with a checksum it
        # already does not) and no checksum it computes itself. The S3 sink
        # sends each body's CRC-32, computed with isal, which S3 verifies.
        request_checksum_calculation="when_required",
        s3={"payload_signing_enabled": False, **_path_style(path_style)},
    )


@functools.cache
def _data_loader(search_path: str | None) -> Loader:
    """botocore's service models and endpoint rules, read once per process.

    A new session reads them anew for its clients (several MB of JSON for
    S3 alone, a tenth of a second of CPU per opening); clients of one session
    share them, and so do all openings here. The service opens its clients
    once, the tests and the operator commands' in-process callers hundreds of times.
    """
    return create_loader(search_path)


@asynccontextmanager
async def open_aws_clients(
    *, region: str, endpoint_url: str | None, pool_size: int, events: bool = False
) -> AsyncIterator[AwsClients]:
    """Open one S3, SQS and DynamoDB client each (and EventBridge), closed when the block exits.

    ``endpoint_url`` overrides every service's endpoint (moto, LocalStack);
    when ``None`` botocore applies its own ``AWS_ENDPOINT_URL`` override.
    With any override S3 is addressed path-style, since ``bucket.localhost``
    does not resolve everywhere. ``pool_size`` is the connection pool of each
    client: size it to the number of tasks that call that service at once.
    """
    if pool_size < 1:
        msg = f"pool_size must be at least 1, not {pool_size}"
        raise ValueError(msg)
    path_style = bool(endpoint_url or os.environ.get("AWS_ENDPOINT_URL"))
    session = get_session()
    session.register_component(
        "data_loader", _data_loader(session.get_config_variable("data_path"))
    )
    # The session's own default decides which credential providers it builds:
    # without the httpx backend here, the container and instance-metadata
    # providers (Fargate, EC2) use aiohttp, which needs an asyncio loop.
    session.set_default_client_config(AioConfig(http_session_cls=HttpxSession))
    async with AsyncExitStack() as stack:
        # aiobotocore makes its clients at run time, untyped: each is taken
        # as the calls the package makes of it (clienttypes.py).
        async def client(service: str, read_timeout: float) -> Any:
            config = _config(pool_size=pool_size, read_timeout=read_timeout, path_style=path_style)
            cm = session.create_client(
                service,
                region_name=region,
                endpoint_url=endpoint_url,
                config=config,
                verify=tls_verify(endpoint_url),
            )
            return await stack.enter_async_context(cm)

        yield AwsClients(
            s3=cast(S3Client, await client("s3", _S3_READ_TIMEOUT)),
            sqs=cast(SqsClient, await client("sqs", _SQS_READ_TIMEOUT)),
            dynamodb=cast(DynamoDbClient, await client("dynamodb", _DYNAMODB_READ_TIMEOUT)),
            events=(
                cast(EventsClient, await client("events", _DYNAMODB_READ_TIMEOUT))
                if events
                else None
            ),
        )


def tls_verify(endpoint_url: str | None) -> bool | None:
    """False for a plain-HTTP endpoint (moto, LocalStack), else None: botocore's own choice.

    aiobotocore's httpx session builds a TLS context with the CA bundle for
    every client it opens, whether or not a connection will ever use TLS:
    about 0.08 CPU-s for three clients, which the tests, the demo and every
    command pay on each opening. Over ``http://`` every request goes to that
    endpoint in the clear (S3 path-style), so there is nothing to verify.
    """
    if endpoint_url is not None and endpoint_url.lower().startswith("http://"):
        return False
    return None


def error_code(err: BaseException) -> str | None:
    """AWS's error code behind ``err``, else ``None``.

    Follows ``__cause__``, so the code under a ``RetriesExhausted`` (whose
    cause is the last :class:`AwsUnavailable`) is found too.
    """
    current: BaseException | None = err
    while current is not None:
        if isinstance(current, AwsRejected | AwsUnavailable):
            return current.code
        if isinstance(current, ClientError):
            return _client_error_fields(current)[0]
        current = current.__cause__
    return None


def refused_item(err: AwsRejected, index: int = 0) -> dict[str, Any] | None:
    """The item a refused conditional write sent back, ``None`` when it sent none.

    With ``ReturnValuesOnConditionCheckFailure=ALL_OLD`` DynamoDB answers a
    failed condition with the item as it stands (for a transaction, item
    ``index``'s, in its cancellation reasons), so the writer can decide again
    without reading it. No item: the item does not exist, or the endpoint
    does not send it.
    """
    response = getattr(err.__cause__, "response", None) or {}
    reasons = response.get("CancellationReasons")
    if reasons is not None:
        return reasons[index].get("Item") if index < len(reasons) else None
    item = response.get("Item")
    return item if isinstance(item, dict) else None


def cancellation_codes(err: AwsRejected) -> list[str]:
    """The reason code of each item of a cancelled transaction (``"None"``: no fault)."""
    response = getattr(err.__cause__, "response", None) or {}
    return [str(reason.get("Code")) for reason in response.get("CancellationReasons") or []]


def _client_error_fields(err: Any) -> tuple[str | None, int | None, str]:
    response = getattr(err, "response", None) or {}
    error = response.get("Error") or {}
    code = error.get("Code") or None
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    message = error.get("Message") or ""
    return (
        str(code) if code is not None else None,
        int(status) if status is not None else None,
        str(message),
    )


def _cancelled_transaction(err: ClientError, line: str) -> AwsRejected | AwsUnavailable:
    """A cancelled TransactWriteItems in the terms of a single write.

    A failed condition on any item reads as ``ConditionalCheckFailedException``,
    as it would for a conditional PutItem; a conflict with another write to
    the same item (a hot summary item) or throttling is transient.
    """
    reasons = {
        str(reason.get("Code"))
        for reason in (getattr(err, "response", None) or {}).get("CancellationReasons") or []
    }
    if "ConditionalCheckFailed" in reasons:
        return AwsRejected(line, code="ConditionalCheckFailedException")
    if reasons & _TRANSIENT_CANCELLATIONS:
        return AwsUnavailable(line, code="TransactionCanceledException")
    return AwsRejected(line, code="TransactionCanceledException")


def _one_line(text: str) -> str:
    return " ".join(text.split())


@contextmanager
def translate_aws_errors(what: str) -> Iterator[None]:
    """Turn botocore's (and raw httpx transport) errors into ours, naming ``what``.

    Throttling, request timeouts, 5xx and connection trouble become
    :class:`AwsUnavailable`; any other error AWS or botocore reports becomes
    :class:`AwsRejected`. Both carry AWS's error code as ``code`` and are raised
    ``from`` the original with a one-line message. Anything else (our own
    errors, ``trio.Cancelled``) passes through untouched.
    """
    try:
        yield
    except ClientError as err:
        code, status, message = _client_error_fields(err)
        shown = code or "error"
        if status is not None:
            shown = f"{shown} (HTTP {status})"
        line = _one_line(f"{what}: {shown}: {message}" if message else f"{what}: {shown}")
        if code in _TRANSIENT_CODES or (status is not None and (status >= 500 or status == 429)):
            raise AwsUnavailable(line, code=code) from err
        if code == "TransactionCanceledException":
            raise _cancelled_transaction(err, line) from err
        raise AwsRejected(line, code=code) from err
    except _TRANSIENT_BOTOCORE as err:
        line = _one_line(f"{what}: {type(err).__name__}: {err}")
        raise AwsUnavailable(line) from err
    except httpx.TransportError as err:
        # A streamed response body read after botocore returned bypasses its
        # translation and surfaces as httpx's own error.
        line = _one_line(f"{what}: {type(err).__name__}: {err}")
        raise AwsUnavailable(line) from err
    except BotoCoreError as err:
        line = _one_line(f"{what}: {type(err).__name__}: {err}")
        raise AwsRejected(line) from err


async def aws_call(
    what: str,
    fn: Callable[..., Awaitable[T]],
    /,
    *args: Any,
    policy: Backoff,
    **kwargs: Any,
) -> T:
    """Call ``fn(*args, **kwargs)`` once per attempt, translated and retried.

    :class:`AwsUnavailable` is retried per ``policy`` and ends as
    ``RetriesExhausted`` (its cause the last :class:`AwsUnavailable`);
    :class:`AwsRejected` propagates at once. Retrying is safe only for calls
    that are idempotent or whose repetition is harmless, which holds for every
    call this service makes (puts of the same bytes, conditional updates,
    deletes by receipt handle).
    """

    async def once() -> T:
        with translate_aws_errors(what):
            return await fn(*args, **kwargs)

    # Every name of an AWS call starts with its service: "s3 …", "sqs …", "dynamodb …".
    return await retry(once, policy, what=what, dependency=what.split(" ", 1)[0])
