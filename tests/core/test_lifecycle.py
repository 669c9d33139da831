"""The job lifecycle's rules, on jobs as seen, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import attrs
import pytest

from pipeline._core import lifecycle
from pipeline._core.accounting import JobStatus, JobSummary
from pipeline._core.lifecycle import ACTIVE, Change, Expect, Refuse, Skip, Stay

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
LATER = T0 + timedelta(minutes=5)
W, R = JobStatus.WAITING, JobStatus.RUNNING
C, F, X = JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED


@attrs.frozen
class Job:
    """A summary item as a caller read it."""

    status: JobStatus
    generation: int = 1
    created_at: datetime = T0
    waiting_since: datetime | None = None
    listing_done: bool = False
    summary: JobSummary = attrs.field(factory=JobSummary)


def _change(decision: object) -> Change:
    assert isinstance(decision, Change), decision
    return decision


def test_public_surface_is_complete() -> None:
    """Every name in __all__ exists, once."""
    assert len(lifecycle.__all__) == len(set(lifecycle.__all__))
    assert all(hasattr(lifecycle, name) for name in lifecycle.__all__)


class TestDelivery:
    def test_first_delivery_creates_the_job(self) -> None:
        """No item: READY creates it RUNNING at run 1, PENDING creates it WAITING since now."""
        running = _change(lifecycle.begin(None, None, "c", T0))
        assert (running.expect.absent, running.status, running.generation) == (True, R, 1)
        assert running.new_run
        assert not running.forget_failed
        waiting = _change(lifecycle.pending(None, None, "c", T0, 60))
        assert (waiting.status, waiting.waiting_since) == (W, T0)

    def test_ready_runs_a_waiting_job_on_the_seen_run(self) -> None:
        """WAITING at run 3 becomes RUNNING at run 3, written only if still WAITING at run 3."""
        change = _change(lifecycle.begin(Job(W, 3), None, "c2", LATER))
        assert change.expect == Expect(frozenset({W}), 3)
        assert (change.status, change.generation, change.correlation_id) == (R, 3, "c2")
        assert change.listed is False
        assert change.waiting_since is None
        assert change.status_changed
        assert not change.new_run

    def test_a_running_job_is_resumed_and_listed_again(self) -> None:
        """A delivery of a RUNNING job resumes it: no new run, listingDone false again."""
        change = _change(lifecycle.begin(Job(R, 2, listing_done=True), 2, "c", T0))
        assert (change.status, change.generation, change.listed) == (R, 2, False)
        assert not change.status_changed

    def test_a_listing_read_before_the_begin_goes_into_its_write(self) -> None:
        """A begin with a finished listing records it: listingDone, filesTotal, bytesTotal."""
        for job in (None, Job(W, 2), Job(R, 2), Job(F, 2)):
            change = _change(lifecycle.begin(job, None, "c", T0, listed=(1, 300)))
            assert (change.status, change.listed) == (R, True)
            assert (change.files_total, change.bytes_total) == (1, 300)

    @pytest.mark.parametrize(
        ("job", "generation", "why"),
        [
            (Job(C), None, "completed"),
            (Job(X), None, "cancelled"),
            (Job(R, 3), 2, "run 2"),
            (Job(W, 3), 2, "run 2"),
            (Job(F, 3), 3, "failed"),
        ],
    )
    def test_deliveries_that_do_nothing(self, job: Job, generation: int | None, why: str) -> None:
        """COMPLETED and CANCELLED jobs, messages of another run and a failed run's own
        message are skipped, whatever the export's state."""
        for decision in (
            lifecycle.admit(job, generation),
            lifecycle.begin(job, generation, "c", T0),
            lifecycle.pending(job, generation, "c", T0, 60),
        ):
            assert isinstance(decision, Skip)
            assert why in decision.reason

    def test_a_failed_export_submitted_anew_is_the_next_run(self) -> None:
        """A message from outside for a FAILED job starts run n+1 and forgets failed files."""
        change = _change(lifecycle.begin(Job(F, 4), None, "c", T0))
        assert change.expect == Expect(frozenset({F}), 4)
        assert (change.status, change.generation) == (R, 5)
        assert change.new_run
        assert change.forget_failed
        assert change.reopens_job


class TestPending:
    def test_waiting_job_is_not_written_until_it_waited_too_long(self) -> None:
        """Within EXPORT_MAX_WAIT_SECONDS of waitingSince: Stay; past it: FAILED on the run."""
        job = Job(W, 2, waiting_since=T0)
        stay = lifecycle.pending(job, 2, "c", T0 + timedelta(seconds=60), 60)
        assert stay == Stay("export pending", waited=60.0)
        failed = _change(lifecycle.pending(job, 2, "c", T0 + timedelta(seconds=61), 60))
        assert failed.expect == Expect(ACTIVE, 2)
        assert failed.status is F
        assert failed.error == "export still PENDING after 61 s (EXPORT_MAX_WAIT_SECONDS=60)"

    def test_wait_counts_from_created_at_without_waiting_since(self) -> None:
        """An item with no waitingSince counts the wait from createdAt."""
        decision = lifecycle.pending(Job(W), None, "c", T0 + timedelta(hours=7), 21600)
        assert _change(decision).status is F

    def test_running_job_whose_export_is_pending_again_waits(self) -> None:
        """RUNNING, then the export is PENDING again: WAITING since now, to be listed again."""
        change = _change(lifecycle.pending(Job(R, 2), None, "c", LATER, 60))
        assert (change.status, change.waiting_since, change.listed) == (W, LATER, False)
        assert change.expect == Expect(frozenset({R}), 2)


class TestDelayed:
    def test_delayed_start_waits_however_long(self) -> None:
        """Before notBefore: no item is created WAITING; a WAITING job stays, never failed
        for its wait; a RUNNING one waits again; a completed or cancelled job is left."""
        created = _change(lifecycle.delayed(None, None, "c", T0))
        assert (created.status, created.waiting_since) == (W, T0)
        stay = lifecycle.delayed(Job(W, waiting_since=T0), None, "c", T0 + timedelta(days=3))
        assert isinstance(stay, Stay)
        again = _change(lifecycle.delayed(Job(R, 2), None, "c", LATER))
        assert (again.status, again.expect) == (W, Expect(frozenset({R}), 2))
        assert isinstance(lifecycle.delayed(Job(C), None, "c", T0), Skip)
        assert isinstance(lifecycle.delayed(Job(X), None, "c", T0), Skip)


class TestEnd:
    def test_fail_of_no_job_creates_it_failed(self) -> None:
        """An unknown export with no item: one write creates the job FAILED, error on one line."""
        change = _change(lifecycle.fail(None, None, "c", "export\nunknown", T0))
        assert (change.expect.absent, change.status, change.error) == (True, F, "export unknown")
        assert change.ends_job

    def test_fail_applies_to_the_active_run_only(self) -> None:
        """A listing fault fails the run it listed; a final job or another run's message: Skip."""
        change = _change(lifecycle.fail(Job(R, 2), 2, "c", "fault", T0, files_total=3))
        assert (change.expect, change.files_total) == (Expect(ACTIVE, 2), 3)
        assert isinstance(lifecycle.fail(Job(R, 3), 2, "c", "fault", T0), Skip)
        assert isinstance(lifecycle.fail(Job(C), None, "c", "fault", T0), Skip)

    def test_fail_of_a_failed_job_submitted_anew_records_the_submission(self) -> None:
        """A FAILED job whose export fails again on a new message: FAILED, its correlationId."""
        change = _change(lifecycle.fail(Job(F, 2), None, "c-new", "export\nunknown", T0))
        assert change.expect == Expect(frozenset({F}), 2)
        assert (change.status, change.generation, change.correlation_id) == (F, 2, "c-new")
        assert change.error == "export unknown"
        assert not change.new_run
        assert not change.owes_event
        assert not change.ends_job

    def test_end_takes_only_final_statuses(self) -> None:
        """Ending a run in an active status is a programming error."""
        with pytest.raises(ValueError, match="ends"):
            lifecycle.end(Job(R), R, T0)

    def test_listing_is_recorded_on_its_own_run(self) -> None:
        """The listing sets filesTotal on the run that listed; on a later run it is skipped."""
        change = _change(lifecycle.listing_done(Job(R, 2), 2, 4, 400, T0))
        assert (change.files_total, change.bytes_total, change.listed) == (4, 400, True)
        assert change.expect == Expect(ACTIVE, 2)
        assert not change.status_changed
        assert isinstance(lifecycle.listing_done(Job(R, 3), 2, 4, 400, T0), Skip)
        assert isinstance(lifecycle.listing_done(Job(X, 2), 2, 4, 400, T0), Skip)
        assert isinstance(lifecycle.listing_done(None, None, 4, 400, T0), Skip)


class TestFinalisation:
    def test_due_once_listed_and_every_file_has_a_result(self) -> None:
        """Due only for an active, listed job whose done + failed files reach filesTotal."""
        done = JobSummary(files_total=2, files_done=2)
        assert lifecycle.finalisation_due(Job(R, listing_done=True, summary=done))
        assert not lifecycle.finalisation_due(Job(R, listing_done=False, summary=done))
        half = JobSummary(files_total=2, files_done=1)
        assert not lifecycle.finalisation_due(Job(R, listing_done=True, summary=half))
        assert not lifecycle.finalisation_due(Job(X, listing_done=True, summary=done))
        assert not lifecycle.finalisation_due(None)

    def test_finalise_completes_or_fails_naming_the_first_failed_file(self) -> None:
        """All done: COMPLETED with the settled counts; one failed: FAILED with its name."""
        ok = JobSummary(files_total=1, files_done=1, entries_missing=2)
        job = Job(R, 2, listing_done=True, summary=JobSummary(files_total=1, files_done=1))
        completed = _change(lifecycle.finalise(job, ok, T0))
        assert (completed.status, completed.summary, completed.error) == (C, ok, None)
        assert completed.expect == Expect(ACTIVE, 2)
        assert completed.ends_job
        bad = JobSummary(files_total=1, files_failed=1)
        failing = Job(R, listing_done=True, summary=bad)
        failed = _change(lifecycle.finalise(failing, bad, T0, first_failure="a.zip: corrupt"))
        assert failed.status is F
        assert failed.error is not None
        assert failed.error.endswith("; first: a.zip: corrupt")

    def test_finalise_of_a_job_not_due_is_skipped(self) -> None:
        """A cancelled job, or one not fully listed, is not finalised."""
        done = JobSummary(files_total=1, files_done=1)
        assert isinstance(lifecycle.finalise(Job(X, listing_done=True), done, T0), Skip)
        assert isinstance(lifecycle.finalise(Job(R), done, T0), Skip)


class TestOperator:
    @pytest.mark.parametrize("status", [W, R])
    def test_cancel_ends_the_seen_run(self, status: JobStatus) -> None:
        """WAITING or RUNNING at run n: CANCELLED with the reason, written if still active at n."""
        change = _change(lifecycle.cancel(Job(status, 5), "by hand", T0))
        assert change.expect == Expect(ACTIVE, 5)
        assert (change.status, change.generation, change.error) == (X, 5, "by hand")
        assert change.summary is None  # the counts so far stay

    @pytest.mark.parametrize("status", [C, F, X])
    def test_cancel_of_a_final_job_is_refused(self, status: JobStatus) -> None:
        """A final job cannot be cancelled: 409."""
        decision = lifecycle.cancel(Job(status), "by hand", T0)
        assert isinstance(decision, Refuse)
        assert status.value in decision.reason

    @pytest.mark.parametrize("status", [F, X])
    def test_retry_is_the_next_run_on_exactly_what_was_seen(self, status: JobStatus) -> None:
        """FAILED or CANCELLED at run n: WAITING at n+1, written only if still that at n."""
        change = _change(lifecycle.retry(Job(status, 2), "retry-1", T0))
        assert change.expect == Expect(frozenset({status}), 2)
        assert (change.status, change.generation, change.waiting_since) == (W, 3, T0)
        assert change.new_run
        assert change.forget_failed
        assert change.reopens_job
        assert change.correlation_id == "retry-1"
        assert change.error is None

    @pytest.mark.parametrize("status", [W, R, C])
    def test_retry_of_a_job_not_failed_or_cancelled_is_refused(self, status: JobStatus) -> None:
        """Only FAILED or CANCELLED jobs are retried: the losers of a retry race see WAITING."""
        assert isinstance(lifecycle.retry(Job(status), "r", T0), Refuse)

    def test_a_retried_runs_message_starts_it_and_an_older_one_does_not(self) -> None:
        """After a retry to run 3, its message (run 3) begins the job; run 2's is dropped."""
        job = Job(W, 3, waiting_since=T0)
        assert _change(lifecycle.begin(job, 3, "r", LATER)).status is R
        assert isinstance(lifecycle.begin(job, 2, "old", LATER), Skip)
