"""What the job lifecycle decides, as values: a job as seen, and the decisions on it.

:mod:`pipeline._core.lifecycle` makes the decisions; the job store carries a
:class:`Change` out as one conditional write on its :class:`Expect`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

import attrs

from pipeline._core.accounting import JobStatus, JobSummary

__all__ = [
    "ACTIVE",
    "DAY_SECONDS",
    "EVENT_STATUSES",
    "FINAL",
    "RETRYABLE",
    "Change",
    "Decision",
    "Expect",
    "Refuse",
    "SeenJob",
    "Skip",
    "Stay",
    "expires_at",
]

ACTIVE = frozenset({JobStatus.WAITING, JobStatus.RUNNING})
FINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
RETRYABLE = frozenset({JobStatus.FAILED, JobStatus.CANCELLED})
# Transitions into these owe a lifecycle event (contract section 8).
EVENT_STATUSES = frozenset({JobStatus.RUNNING, *FINAL})
DAY_SECONDS = 86_400


class SeenJob(Protocol):
    """The summary item as a caller read it (the job store's ``JobItem`` is one)."""

    @property
    def status(self) -> JobStatus: ...
    @property
    def generation(self) -> int: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def waiting_since(self) -> datetime | None: ...
    @property
    def listing_done(self) -> bool: ...
    @property
    def summary(self) -> JobSummary: ...


@attrs.frozen
class Expect:
    """The condition of a write: what the caller saw.

    ``statuses`` empty means no item at all; otherwise the item's status is
    one of them and its ``runGeneration`` is ``generation`` (0: an item
    written before generations existed has none).
    """

    statuses: frozenset[JobStatus] = frozenset()
    generation: int = 0

    @property
    def absent(self) -> bool:
        return not self.statuses


@attrs.frozen
class Change:
    """One conditional write of the summary item, and what follows it.

    ``new_run``: a run starts (a new item, or the next generation): the
    correlation ID is the new one, ``listingDone`` false, ``error`` gone, and
    (``forget_failed``) the results of failed files are forgotten right after
    the write, so the run downloads exactly those files again.
    """

    expect: Expect
    status: JobStatus
    generation: int
    at: datetime
    # The status before the write (None: no item): an event is owed when they differ.
    previous: JobStatus | None
    new_run: bool = False
    forget_failed: bool = False
    correlation_id: str | None = None
    # WAITING: when this wait began (EXPORT_MAX_WAIT_SECONDS counts from it).
    waiting_since: datetime | None = None
    keep_waiting_since: bool = False
    # ``error``: a job that is not FAILED or CANCELLED has none.
    error: str | None = None
    # ``listingDone``: True once the run listed every file, False while a
    # (resumed) run lists them again, None: as it stands.
    listed: bool | None = None
    # Set by the listing (and by a listing fault: the files it gave).
    files_total: int | None = None
    bytes_total: int | None = None
    # The final counts, settled by finalisation.
    summary: JobSummary | None = None

    @property
    def status_changed(self) -> bool:
        return self.previous is not self.status

    @property
    def owes_event(self) -> bool:
        """Whether the write is a transition into RUNNING or a final status (an event)."""
        return self.status_changed and self.status in EVENT_STATUSES

    @property
    def ends_job(self) -> bool:
        """Whether the write makes the job final (retention starts)."""
        return self.status in FINAL and self.status_changed

    @property
    def reopens_job(self) -> bool:
        """Whether the write takes a final job back to work (retention ends)."""
        return self.previous in FINAL and self.status in ACTIVE


def expires_at(change: Change, retention_days: int) -> int | None:
    """Epoch seconds, JOB_RETENTION_DAYS after a write that ends the job; ``None``: keep it."""
    if not change.ends_job or retention_days <= 0:
        return None
    return int(change.at.timestamp()) + retention_days * DAY_SECONDS


@attrs.frozen
class Stay:
    """No write; the work goes on as it stands (``waited``: seconds a PENDING export waited)."""

    reason: str
    waited: float = 0.0


@attrs.frozen
class Skip:
    """No write and nothing to do: the reason is logged."""

    reason: str


@attrs.frozen
class Refuse:
    """An operator's call that does not apply to the job as it stands (HTTP 409)."""

    reason: str


Decision = Change | Stay | Skip | Refuse
