"""The job's lifecycle: its states, and what each event does to a job, as pure functions.

A job is its summary item in the jobs table, changed at once by deliveries
of its export (duplicates, redeliveries, the sweeper's), files finishing in
any process, and operators who cancel or retry it as often and concurrently
as they like. Each rule takes the job *as the caller saw it* (``None``: no
item yet) and the time, and answers with one of:

- :class:`Change`: one conditional write on what the caller saw
  (:class:`Expect`: no item, or a status and the run generation); refused
  when the item moved on, so of racing callers exactly one wins;
- :class:`Stay`: nothing to write, the work goes on (a PENDING export waits);
- :class:`Skip`: nothing to do (a job done or cancelled, an older run's message);
- :class:`Refuse`: an operator's call that does not apply (the HTTP API's 409).

**Runs.** ``runGeneration`` counts the job's runs: 1 when it is created, one
more each time a FAILED or CANCELLED job is run again (a retry, or a FAILED
export submitted anew). Every write is conditioned on it, so what belongs to
one run (its listing, its finalisation, a cancel of it) never lands on the
next; a message of another run than the job's (a stale hand-back) starts
nothing. No clock is read here: ``now`` is an argument.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

import attrs

from pipeline._core.accounting import JobStatus, JobSummary, final_status
from pipeline._core.jobchange import (
    ACTIVE,
    EVENT_STATUSES,
    FINAL,
    RETRYABLE,
    Change,
    Decision,
    Expect,
    Refuse,
    SeenJob,
    Skip,
    Stay,
    expires_at,
)

__all__ = [
    "ACTIVE",
    "EVENT_STATUSES",
    "FINAL",
    "Change",
    "Decision",
    "Expect",
    "Refuse",
    "SeenJob",
    "Skip",
    "Stay",
    "admit",
    "begin",
    "cancel",
    "delayed",
    "end",
    "expires_at",
    "fail",
    "finalisation_due",
    "finalise",
    "listing_done",
    "pending",
    "retry",
    "waited_seconds",
]


def _seen(job: SeenJob, statuses: Collection[JobStatus] | None = None) -> Expect:
    return Expect(frozenset(statuses or {job.status}), job.generation)


def admit(job: SeenJob | None, generation: int | None) -> Skip | None:
    """Whether a delivery of the export may do work; a :class:`Skip` says why not.

    ``generation`` is the run the message was sent for (a retry's, a
    hand-back's, the sweeper's), ``None`` for a message from outside. A job
    COMPLETED stays so; a CANCELLED one waits for a retry; a message of
    another run than the job's starts nothing; a FAILED job is run again only
    by a message from outside (an export submitted anew).
    """
    if job is None:
        return None
    if job.status is JobStatus.COMPLETED:
        return Skip("export already completed; nothing to do")
    if job.status is JobStatus.CANCELLED:
        return Skip("export cancelled; nothing to do until it is retried")
    if generation is not None and generation != job.generation:
        return Skip(f"message of run {generation}, the job is at run {job.generation}; dropped")
    if job.status is JobStatus.FAILED and generation is not None:
        return Skip("export failed in the run this message was for; nothing to do")
    return None


def _start(
    job: SeenJob | None,
    status: JobStatus,
    correlation_id: str,
    now: datetime,
) -> Change:
    """A new job, or the next run of a FAILED or CANCELLED one."""
    if job is None:
        return Change(
            Expect(),
            status,
            1,
            now,
            None,
            new_run=True,
            correlation_id=correlation_id,
            waiting_since=now if status is JobStatus.WAITING else None,
            listed=False,
        )
    return Change(
        _seen(job),
        status,
        job.generation + 1,
        now,
        job.status,
        new_run=True,
        forget_failed=True,
        correlation_id=correlation_id,
        waiting_since=now if status is JobStatus.WAITING else None,
        listed=False,
    )


def begin(
    job: SeenJob | None,
    generation: int | None,
    correlation_id: str,
    now: datetime,
    *,
    listed: tuple[int, int] | None = None,
) -> Change | Skip:
    """A delivery found the export READY: the job runs.

    No item: created RUNNING. WAITING: RUNNING. RUNNING: a run resumed (the
    process before may be gone): the files are listed again, so
    ``listingDone`` goes back to false until they are, and no one concludes
    meanwhile that every file is finished. FAILED (a message from outside): the
    next run. ``listed``: the files (count, bytes) of a listing already done
    (one page), recorded in the same write as :func:`listing_done` would.
    """
    if (skip := admit(job, generation)) is not None:
        return skip
    if job is None or job.status is JobStatus.FAILED:
        change = _start(job, JobStatus.RUNNING, correlation_id, now)
    else:
        change = Change(
            _seen(job),
            JobStatus.RUNNING,
            job.generation,
            now,
            job.status,
            correlation_id=correlation_id,
            listed=False,
        )
    if listed is None:
        return change
    files_total, bytes_total = listed
    return attrs.evolve(change, listed=True, files_total=files_total, bytes_total=bytes_total)


def pending(
    job: SeenJob | None,
    generation: int | None,
    correlation_id: str,
    now: datetime,
    max_wait_seconds: float,
) -> Change | Stay | Skip:
    """A delivery found the export PENDING: the job waits, or fails once it waited too long.

    A WAITING job within :func:`waited_seconds` is not written at all (a poll
    every 30 s for hours costs no writes).
    """
    if (held := _wait(job, generation, correlation_id, now)) is not None:
        return held
    assert job is not None  # _wait answered for a new job
    waited = waited_seconds(job, now)
    if waited > max_wait_seconds:
        limit = int(max_wait_seconds)
        error = f"export still PENDING after {int(waited)} s (EXPORT_MAX_WAIT_SECONDS={limit})"
        return end(job, JobStatus.FAILED, now, error=error)
    return Stay("export pending", waited=waited)


def delayed(
    job: SeenJob | None, generation: int | None, correlation_id: str, now: datetime
) -> Change | Stay | Skip:
    """A delivery before the job's ``notBefore``: the job waits, however long.

    As :func:`pending`, without the limit on waiting (the start time is the
    sender's to choose); a WAITING job is not written again.
    """
    if (held := _wait(job, generation, correlation_id, now)) is not None:
        return held
    assert job is not None  # _wait answered for a new job
    return Stay("export waits for its start time", waited=waited_seconds(job, now))


def _wait(
    job: SeenJob | None, generation: int | None, correlation_id: str, now: datetime
) -> Change | Skip | None:
    """What a delivery that must wait (PENDING, or before ``notBefore``) writes, if anything.

    A new or FAILED job starts WAITING; a RUNNING one goes back to WAITING
    (READY a moment ago, not ready now: the export is being prepared again).
    ``None``: the job already waits, and the caller decides whether it still may.
    """
    if (skip := admit(job, generation)) is not None:
        return skip
    if job is None or job.status is JobStatus.FAILED:
        return _start(job, JobStatus.WAITING, correlation_id, now)
    if job.status is JobStatus.RUNNING:
        return Change(
            _seen(job),
            JobStatus.WAITING,
            job.generation,
            now,
            job.status,
            correlation_id=correlation_id,
            waiting_since=now,
            listed=False,
        )
    return None


def waited_seconds(job: SeenJob, now: datetime) -> float:
    """Since this run began to wait, else since the job was created.

    ``EXPORT_MAX_WAIT_SECONDS`` bounds it, for a PENDING export and for one
    whose Export API calls keep failing alike (contract 2); a resubmitted
    export gets its own.
    """
    return (now - (job.waiting_since or job.created_at)).total_seconds()


def end(
    job: SeenJob | None,
    status: JobStatus,
    now: datetime,
    *,
    error: str | None = None,
    summary: JobSummary | None = None,
    files_total: int | None = None,
) -> Change | Skip:
    """The active run ends in the final ``status``; a job not active is left as it is.

    Without ``summary`` the counts stay as recorded: files still in flight
    when a job fails or is cancelled go on adding theirs, so a final item is
    never a stale snapshot.
    """
    if status not in FINAL:
        msg = f"a job ends COMPLETED, FAILED or CANCELLED, not {status.value}"
        raise ValueError(msg)
    if job is None or job.status not in ACTIVE:
        return Skip("no active job to end" if job is None else f"job is {job.status.value}")
    return Change(
        _seen(job, ACTIVE),
        status,
        job.generation,
        now,
        job.status,
        error=None if error is None else " ".join(error.split()),
        summary=summary,
        files_total=files_total,
        keep_waiting_since=True,
    )


def fail(
    job: SeenJob | None,
    generation: int | None,
    correlation_id: str,
    error: str,
    now: datetime,
    *,
    files_total: int | None = None,
) -> Change | Skip:
    """The export failed (the API says FAILED or 404, a listing fault): the run ends FAILED.

    The counts stay as recorded: files still in flight go on adding theirs.
    ``files_total`` (a listing fault) is how many files the listing gave.
    A job with no item is created FAILED in the same write; a FAILED job
    submitted anew stays FAILED, under the new submission's correlationId.
    """
    if job is None:
        created = _start(None, JobStatus.FAILED, correlation_id, now)
        return attrs.evolve(created, error=" ".join(error.split()), files_total=files_total)
    if generation is not None and generation != job.generation:
        return Skip(f"message of run {generation}, the job is at run {job.generation}; dropped")
    if job.status is JobStatus.FAILED and generation is None:
        # Submitted anew and failed again: the item says so under the new
        # correlationId, or whoever waits for that submission (submit --wait)
        # would wait for ever. Still FAILED, so no event and no new retention.
        return Change(
            _seen(job),
            JobStatus.FAILED,
            job.generation,
            now,
            job.status,
            correlation_id=correlation_id,
            error=" ".join(error.split()),
            files_total=files_total,
            keep_waiting_since=True,
        )
    return end(job, JobStatus.FAILED, now, error=error, files_total=files_total)


def listing_done(
    job: SeenJob | None,
    generation: int | None,
    files_total: int,
    bytes_total: int | None,
    now: datetime,
) -> Change | Skip:
    """Run ``generation`` listed every file: ``filesTotal``, ``bytesTotal``, ``listingDone``.

    A listing of an older run (cancelled and retried meanwhile) is not
    recorded on the next one.
    """
    if job is None:
        return Skip("no job")
    if generation is not None and generation != job.generation:
        return Skip(f"listing of run {generation}, the job is at run {job.generation}")
    if job.status not in ACTIVE:
        return Skip(f"job is {job.status.value}; the listing is not recorded")
    return Change(
        _seen(job, ACTIVE),
        job.status,
        job.generation,
        now,
        job.status,
        files_total=files_total,
        bytes_total=bytes_total,
        listed=True,
        keep_waiting_since=True,
    )


def finalisation_due(job: SeenJob | None) -> bool:
    """After a file finished: whether every listed file of the active run has a result.

    A cancelled job takes the counts of files that finish after the cancel and
    stays CANCELLED; a job still being listed is not done, whatever its counts.
    """
    if job is None or job.status not in ACTIVE or not job.listing_done:
        return False
    return final_status(job.summary) is not None


def finalise(
    job: SeenJob | None, summary: JobSummary, now: datetime, *, first_failure: str | None = None
) -> Change | Skip:
    """Every file has a result: the run ends COMPLETED, or FAILED naming the first failed file.

    ``summary`` is derived from the file results; of the processes that
    finalise one run, the condition lets the first through.
    """
    decided = final_status(summary)
    if decided is None or job is None or not finalisation_due(job):
        return Skip("job is not done")
    status, error = decided
    if status is JobStatus.FAILED and first_failure is not None:
        error = f"{error}; first: {first_failure}"
    return end(job, status, now, error=error, summary=summary)


def cancel(job: SeenJob, reason: str, now: datetime) -> Change | Refuse:
    """An operator's cancel: a WAITING or RUNNING job ends CANCELLED with its counts so far."""
    ended = end(job, JobStatus.CANCELLED, now, error=reason)
    if isinstance(ended, Skip):
        return Refuse(f"the job is {job.status.value}; only a WAITING or RUNNING job is cancelled")
    return ended


def retry(job: SeenJob, correlation_id: str, now: datetime) -> Change | Refuse:
    """An operator's retry: a FAILED or CANCELLED job waits again, as its next run.

    Exactly the seen status and generation are expected: of racing retries
    one wins, and the others find the job WAITING (or already running).
    """
    if job.status not in RETRYABLE:
        reason = f"the job is {job.status.value}; only FAILED or CANCELLED jobs are retried"
        return Refuse(reason)
    return _start(job, JobStatus.WAITING, correlation_id, now)
