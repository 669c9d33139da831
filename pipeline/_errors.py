"""The service's own errors, and whether trying again can help.

Every error that crosses a boundary (httpx, botocore, the ZIP reader, a message
body) is translated into one of these, raised ``from`` the original, so the rest
of the code decides with one question: ``err.transient``?

    PipelineError
    ├── TransientError              trying again later may succeed
    │   ├── ExportApiUnavailable    429, 5xx, timeout, body broken off
    │   ├── CircuitOpen             the breaker refuses calls for a while
    │   ├── AwsUnavailable          throttling, 5xx, connection trouble
    │   └── FilesUnrecorded         files of a message ended without a result
    └── PermanentError              trying again gives the same answer
        ├── ExportApiRejected       401, 403, other 4xx, a malformed answer
        │   └── ExportNotFound      404 on the export
        ├── ExportNotReady          listing a still PENDING export (409): wait, then ask again
        ├── ListingFault            the file listing loops or lies
        ├── DownloadRefused         host not allowed, file too large
        ├── ZipCorrupt              bad CRC, truncated, records disagree
        ├── AwsRejected             AWS said no (access, validation, ...)
        ├── LeaseLost               the message's receipt handle is gone
        ├── RetriesExhausted        a transient error outlived its attempts
        └── PoisonMessage           a message body that can never be handled

``str(err)`` is always one line a person can act on: it is what lands in the
job item's ``error`` attribute.
"""

from __future__ import annotations

__all__ = [
    "AwsRejected",
    "AwsUnavailable",
    "CircuitOpen",
    "DownloadRefused",
    "ExportApiRejected",
    "ExportApiUnavailable",
    "ExportNotFound",
    "ExportNotReady",
    "FilesUnrecorded",
    "LeaseLost",
    "ListingFault",
    "PermanentError",
    "PipelineError",
    "PoisonMessage",
    "RetriesExhausted",
    "TransientError",
    "ZipCorrupt",
    "describe",
]


class PipelineError(Exception):
    """Base of every error the service raises on purpose."""

    transient: bool = False


class TransientError(PipelineError):
    """Trying again later may succeed.

    ``retry_after`` is the delay the other side asked for (``Retry-After``),
    in seconds, when it asked for one.
    """

    transient = True

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(PipelineError):
    """Trying again gives the same answer: fail the file or the job."""


class ExportApiUnavailable(TransientError):
    """The Export API answered 429 or 5xx, timed out, or broke off mid-body."""


class CircuitOpen(TransientError):
    """Most recent Export API calls failed; calls are refused for a while."""


class AwsUnavailable(TransientError):
    """An AWS call was throttled, answered 5xx, or lost its connection.

    ``code`` is AWS's error code (``"ThrottlingException"``, ``"SlowDown"``)
    when AWS answered at all, ``None`` for connection trouble.
    """

    def __init__(
        self, message: str, *, code: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.code = code


class ExportApiRejected(PermanentError):
    """The Export API refused the call for good (401, 403, 4xx, bad JSON)."""


class ExportNotFound(ExportApiRejected):
    """The Export API does not know the export (404)."""


class ExportNotReady(PermanentError):
    """Listing answered 409: the export is still PENDING.

    Asking again at once gives the same answer, so this is not retried; the
    caller treats the export as pending and comes back after its poll interval.
    """


class ListingFault(PermanentError):
    """The file listing cannot be trusted, e.g. a cursor came back twice."""


class DownloadRefused(PermanentError):
    """A file is not downloaded: its host is not allowed or it is too large."""


class ZipCorrupt(PermanentError):
    """The ZIP's data is corrupt: bad CRC, truncated, records disagree."""


class AwsRejected(PermanentError):
    """AWS refused a call for good (access denied, validation, no such thing).

    ``code`` is AWS's error code, so callers can tell e.g.
    ``ConditionalCheckFailedException``, ``ReceiptHandleIsInvalid``,
    ``NoSuchKey`` or ``NoSuchUpload`` apart; ``None`` when the refusal came
    from botocore itself (bad parameters, no credentials).
    """

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class LeaseLost(PermanentError):
    """A message's receipt handle no longer works; another consumer may own it."""


class FilesUnrecorded(TransientError):
    """Files a message listed ended without a recorded result; hand it back."""


class RetriesExhausted(PermanentError):
    """A transient error persisted through every allowed attempt."""


class PoisonMessage(PermanentError):
    """A message body that is not valid and never will be."""


def describe(err: BaseException) -> str:
    """One line for any error, exception groups flattened (never a raw group in a log)."""
    if isinstance(err, BaseExceptionGroup):
        return "; ".join(describe(inner) for inner in err.exceptions)
    if isinstance(err, PipelineError):
        return str(err)
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
