"""The service's own errors: whether trying again can help, and whose fault they are.

Every error that crosses a boundary (httpx, botocore, the ZIP reader, a message
body) is translated into one of these, raised ``from`` the original, so the rest
of the code decides with two questions: ``err.transient`` (try again now?) and
``err.fault`` (is this a verdict on the export or the file, or did our own
infrastructure fail?). Only an error of the export or the file may fail a job
or a file; an infrastructure error, however long it lasts, hands the work back
to be tried again later (``err.verdict`` is false).

    PipelineError                                                   fault
    ├── TransientError              trying again later may succeed
    │   ├── ExportApiUnavailable    429, 5xx, timeout, body broken off   export
    │   ├── CircuitOpen             the breaker refuses calls for a while export
    │   ├── ExportApiExhausted      one call's attempts spent, or the breaker
    │   │                           open too long: hand the work back      export
    │   ├── AwsUnavailable          throttling, 5xx, connection trouble  infrastructure
    │   └── FilesUnrecorded         files of a message ended without a result  infrastructure
    └── PermanentError              trying again gives the same answer
        ├── ExportApiRejected       401, 403, other 4xx, a malformed answer  export
        │   └── ExportNotFound      404 on the export                    export
        ├── ExportNotReady          listing a still PENDING export (409) export
        ├── ListingFault            the file listing loops or lies       export
        ├── DownloadRefused         host not allowed, file too large     file
        ├── ZipCorrupt              bad CRC, truncated, records disagree file
        ├── AwsRejected             AWS said no (access, validation, ...) infrastructure
        ├── LeaseLost               the message's receipt handle is gone infrastructure
        ├── RetriesExhausted        a transient error outlived its attempts  its cause's
        └── PoisonMessage           a message body that can never be handled  export

``str(err)`` is always one line a person can act on: it is what lands in the
job item's ``error`` attribute.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "AwsRejected",
    "AwsUnavailable",
    "CircuitOpen",
    "DownloadRefused",
    "ExportApiExhausted",
    "ExportApiRejected",
    "ExportApiUnavailable",
    "ExportNotFound",
    "ExportNotReady",
    "Fault",
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
    "is_bug",
    "is_verdict",
]


class Fault(StrEnum):
    """Whose fault an error is, decided where it is translated."""

    # The export or the Export API: may fail the job (or the file).
    EXPORT = "export"
    # This file's bytes or URL: may fail the file.
    FILE = "file"
    # Our AWS resources or our process: never a verdict; the work is tried again.
    INFRASTRUCTURE = "infrastructure"


class PipelineError(Exception):
    """Base of every error the service raises on purpose."""

    transient: bool = False
    fault: Fault = Fault.INFRASTRUCTURE

    @property
    def verdict(self) -> bool:
        """Whether this error may fail a job or a file (it is not our infrastructure's)."""
        return self.fault is not Fault.INFRASTRUCTURE


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

    fault = Fault.EXPORT


class CircuitOpen(TransientError):
    """Most recent Export API calls failed; calls are refused for a while."""

    fault = Fault.EXPORT


class ExportApiExhausted(TransientError):
    """One Export API call failed transiently on every attempt, or waited on the breaker too long.

    Transient, not a verdict: the work is handed back and tried again later
    (contract 2). Only a job older than ``EXPORT_MAX_WAIT_SECONDS`` is failed
    by it, with this error's line as the reason.
    """

    fault = Fault.EXPORT


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

    fault = Fault.EXPORT


class ExportNotFound(ExportApiRejected):
    """The Export API does not know the export (404)."""


class ExportNotReady(PermanentError):
    """Listing answered 409: the export is still PENDING.

    Asking again at once gives the same answer, so this is not retried; the
    caller treats the export as pending and comes back after its poll interval.
    """

    fault = Fault.EXPORT


class ListingFault(PermanentError):
    """The file listing cannot be trusted, e.g. a cursor came back twice."""

    fault = Fault.EXPORT


class DownloadRefused(PermanentError):
    """A file is not downloaded: its host is not allowed or it is too large."""

    fault = Fault.FILE


class ZipCorrupt(PermanentError):
    """The ZIP's data is corrupt: bad CRC, truncated, records disagree."""

    fault = Fault.FILE


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
    """A transient error persisted through every allowed attempt.

    Its ``fault`` is its cause's: the Export API failing for good is a verdict
    on the export, AWS failing for good is our outage, never a verdict.
    """

    def __init__(self, message: str, *, fault: Fault) -> None:
        super().__init__(message)
        self.fault = fault


class PoisonMessage(PermanentError):
    """A message body that is not valid and never will be."""

    fault = Fault.EXPORT


def is_verdict(err: BaseException) -> bool:
    """Whether ``err`` (or every error of a group) may fail a job or a file.

    Anything that is not one of our errors is a bug, which is a verdict too:
    the same bytes would meet it again.
    """
    if isinstance(err, BaseExceptionGroup):
        return all(is_verdict(inner) for inner in err.exceptions)
    if isinstance(err, PipelineError):
        return err.verdict
    return True


def is_bug(err: BaseException) -> bool:
    """Whether ``err`` (or any error of a group) is not one of ours: worth a traceback.

    Our own errors are one line that says it all; a traceback in the log
    would only bury it.
    """
    if isinstance(err, BaseExceptionGroup):
        return any(is_bug(inner) for inner in err.exceptions)
    return not isinstance(err, PipelineError)


def describe(err: BaseException) -> str:
    """One line for any error, exception groups flattened (never a raw group in a log)."""
    if isinstance(err, BaseExceptionGroup):
        return "; ".join(describe(inner) for inner in err.exceptions)
    if isinstance(err, PipelineError):
        return str(err)
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
