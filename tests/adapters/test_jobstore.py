"""The jobs table against moto: job lifecycle, exactly-once finish, file results."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

import pipeline._adapters.aws.jobstore as jobstore_module
from pipeline._adapters.aws.clients import AwsClients
from pipeline._adapters.aws.jobstore import JobStore
from pipeline._core import lifecycle
from pipeline._core.accounting import FileResult, JobStatus, JobSummary, summarize
from pipeline._core.backoff import Backoff

FAST = Backoff(max_attempts=3, base=0.001, cap=0.01)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def table(clients: AwsClients) -> str:
    """A fresh jobs table with the contract's key schema."""
    name = f"jobs-{uuid.uuid4().hex}"
    await clients.dynamodb.create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


@pytest.fixture
def clock() -> Clock:
    """A fixed, hand-moved clock."""
    return Clock()


@pytest.fixture
def store(clients: AwsClients, table: str, clock: Clock) -> JobStore:
    """A job store on the fresh table."""
    return JobStore(clients.dynamodb, table, FAST, clock=clock)


async def raw_items(clients: AwsClients, table: str, export_id: str) -> list[dict[str, object]]:
    response = await clients.dynamodb.query(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": export_id}},
    )
    return list(response["Items"])


SUMMARY = JobSummary(
    files_total=3,
    files_done=2,
    files_failed=1,
    entries_uploaded=10,
    entries_skipped=4,
    entries_rejected=2,
    entries_missing=5,
    bytes_uploaded=12345,
)


def test_public_surface_is_complete() -> None:
    """Every name in __all__ exists, once."""
    assert len(set(jobstore_module.__all__)) == len(jobstore_module.__all__)
    assert all(hasattr(jobstore_module, name) for name in jobstore_module.__all__)


class TestJob:
    async def test_unknown_job_is_none(self, store: JobStore) -> None:
        """get_job of an export never begun is None."""
        assert await store.get_job("nope") is None

    async def test_begin_creates_with_zero_counts(
        self, store: JobStore, clients: AwsClients, table: str
    ) -> None:
        """A new job has zero counts, ISO-8601 UTC timestamps and the contract's attributes."""
        job = await store.begin_job("exp-1", "corr-1", "WAITING")
        assert job.status is JobStatus.WAITING
        assert job.correlation_id == "corr-1"
        assert job.summary == JobSummary()
        assert not job.listing_done
        assert job.created_at == job.updated_at == Clock().now
        assert job.files_total == 0
        assert await store.get_job("exp-1") == job
        (item,) = await raw_items(clients, table, "exp-1")
        for name in (
            "status", "filesTotal", "filesDone", "filesFailed", "entriesUploaded",
            "entriesSkipped", "entriesRejected", "entriesMissing", "bytesUploaded",
            "correlationId", "createdAt", "updatedAt",
        ):  # fmt: skip
            assert name in item
        assert item["filesTotal"] == {"N": "0"}
        assert item["createdAt"] == {"S": "2026-01-02T03:04:05.678Z"}

    async def test_begin_again_keeps_created_at(self, store: JobStore, clock: Clock) -> None:
        """Moving an existing job to RUNNING keeps createdAt and counts, resets listingDone."""
        first = await store.begin_job("exp-1", "corr-1", JobStatus.WAITING)
        await store.set_listing_done("exp-1", 7)
        clock.now += timedelta(minutes=5)
        job = await store.begin_job("exp-1", "corr-2", JobStatus.RUNNING)
        assert job.status is JobStatus.RUNNING
        assert job.created_at == first.created_at
        assert job.updated_at == first.updated_at + timedelta(minutes=5)
        assert job.correlation_id == "corr-2"
        assert job.files_total == 7
        assert not job.listing_done

    async def test_a_job_created_first_by_the_same_submission_is_not_taken_for_our_write(
        self, store: JobStore, clock: Clock
    ) -> None:
        """A begin carrying its listing, refused because the outage path created the job
        (same run, same correlation ID) a moment before, is decided again and written."""
        await store.transition(
            "exp-1", lambda seen: lifecycle.begin(seen, None, "corr-1", clock.now), read=False
        )
        clock.now += timedelta(seconds=11)
        now = clock.now
        outcome = await store.transition(
            "exp-1",
            lambda seen: lifecycle.begin(seen, None, "corr-1", now, listed=(1, 500)),
            read=False,
        )
        assert outcome.changed
        job = await store.get_job("exp-1")
        assert job is not None
        assert (job.listing_done, job.files_total, job.updated_at) == (True, 1, now)

    async def test_waiting_counts_from_this_submission(self, store: JobStore, clock: Clock) -> None:
        """waitingSince is set on entering WAITING, kept while waiting, new after a final status."""
        first = await store.begin_job("exp-w", "c-1", JobStatus.WAITING)
        assert first.waiting_since == first.created_at
        clock.now += timedelta(minutes=5)
        still = await store.begin_job("exp-w", "c-1", JobStatus.WAITING)
        assert still.waiting_since == first.waiting_since
        await store.finish_job("exp-w", JobStatus.FAILED, JobSummary(), "waited too long")
        clock.now += timedelta(days=2)
        again = await store.begin_job("exp-w", "c-2", JobStatus.WAITING)
        assert again.created_at == first.created_at
        assert again.waiting_since == clock.now
        running = await store.begin_job("exp-w", "c-2", JobStatus.RUNNING)
        assert running.waiting_since is None

    async def test_finish_is_exactly_once(self, store: JobStore) -> None:
        """finish_job succeeds once; the second finisher gets False and changes nothing."""
        await store.begin_job("exp-1", "c", "RUNNING")
        assert await store.finish_job("exp-1", "COMPLETED", SUMMARY, None)
        assert not await store.finish_job("exp-1", "FAILED", JobSummary(), "late")
        job = await store.get_job("exp-1")
        assert job is not None
        assert job.status is JobStatus.COMPLETED
        assert job.summary == SUMMARY
        assert job.error is None

    async def test_finish_of_unknown_job_is_false(self, store: JobStore) -> None:
        """A job that was never begun cannot be finished."""
        assert not await store.finish_job("ghost", "COMPLETED", SUMMARY, None)

    async def test_completed_job_is_not_begun_again(self, store: JobStore, clock: Clock) -> None:
        """begin_job on a COMPLETED job returns it unchanged."""
        await store.begin_job("exp-1", "c1", "RUNNING")
        await store.finish_job("exp-1", JobStatus.COMPLETED, SUMMARY, None)
        done = await store.get_job("exp-1")
        clock.now += timedelta(hours=1)
        again = await store.begin_job("exp-1", "c2", "RUNNING")
        assert again == done

    async def test_failed_job_can_run_again(self, store: JobStore) -> None:
        """A FAILED job begun again is RUNNING, with its error gone."""
        await store.begin_job("exp-1", "c1", "RUNNING")
        assert await store.finish_job("exp-1", "FAILED", SUMMARY, "1 of 3 files\nfailed")
        failed = await store.get_job("exp-1")
        assert failed is not None
        assert failed.error == "1 of 3 files failed"
        again = await store.begin_job("exp-1", "c2", "RUNNING")
        assert again.status is JobStatus.RUNNING
        assert again.error is None
        assert await store.finish_job("exp-1", "COMPLETED", SUMMARY, None)

    async def test_rerun_forgets_failed_files(self, clients: AwsClients, table: str) -> None:
        """Beginning a FAILED job again drops failed results (and pieces) and their counts."""
        store = JobStore(clients.dynamodb, table, FAST, paths_chunk_bytes=500)
        many = frozenset(uuid.uuid4().hex for _ in range(300))
        done = FileResult(file_id="f1", name="1.zip", ok=True, entries_uploaded=1)
        bad = FileResult(
            file_id="f2", name="2.zip", ok=False, entries_rejected=2, seen_paths=many, error="bad"
        )
        await store.begin_job("exp-1", "c", "RUNNING")
        await store.record_file("exp-1", done)
        await store.record_file("exp-1", bad)
        # A redelivery while RUNNING keeps every result.
        await store.begin_job("exp-1", "c", "RUNNING")
        assert await store.recorded_file_ids("exp-1") == {"f1", "f2"}
        await store.finish_job("exp-1", "FAILED", None, "1 of 2 files failed")
        again = await store.begin_job("exp-1", "c2", "RUNNING")
        assert await store.file_results("exp-1") == [done]
        assert await store.recorded_file_ids("exp-1") == {"f1"}
        assert again.summary == JobSummary(files_done=1, entries_uploaded=1)
        sks = sorted(item["sk"]["S"] for item in await raw_items(clients, table, "exp-1"))
        assert sks == ["file#f1", "job"]

    async def test_counts_move_while_running(self, store: JobStore) -> None:
        """Each recorded file adds its counts to the summary at once; bytesTotal once listed."""
        await store.begin_job("exp-1", "c", "RUNNING")
        await store.record_file("exp-1", FileResult("f1", "1.zip", True, 2, 1, 0, 20))
        job = await store.get_job("exp-1")
        assert job is not None
        assert job.summary == JobSummary(0, 1, 0, 2, 1, 0, 0, 20)
        assert job.bytes_total is None
        listed = await store.set_listing_done("exp-1", 3, 900)
        assert listed is not None
        assert (listed.files_total, listed.bytes_total, listed.listing_done) == (3, 900, True)
        await store.record_file("exp-1", FileResult("f2", "2.zip", False, 1, 0, 4, 5, error="x"))
        job = await store.get_job("exp-1")
        assert job is not None
        assert job.summary == JobSummary(3, 1, 1, 3, 1, 4, 0, 25)

    async def test_failed_job_keeps_counting(self, store: JobStore) -> None:
        """Finishing without a summary keeps the counts; files finishing later still add theirs."""
        await store.begin_job("exp-1", "c", "RUNNING")
        await store.record_file("exp-1", FileResult("f1", "1.zip", True, 1, 0, 0, 10))
        assert await store.finish_job("exp-1", "FAILED", None, "listing fault", files_total=2)
        await store.record_file("exp-1", FileResult("f2", "2.zip", True, 2, 0, 0, 7))
        job = await store.get_job("exp-1")
        assert job is not None
        assert job.status is JobStatus.FAILED
        assert job.summary == JobSummary(2, 2, 0, 3, 0, 0, 0, 17)
        assert await store.set_listing_done("exp-1", 1) is None

    async def test_status_arguments_are_checked(self, store: JobStore) -> None:
        """Begin takes only WAITING/RUNNING, finish only final statuses."""
        with pytest.raises(ValueError, match="begins"):
            await store.begin_job("exp-1", "c", "COMPLETED")
        with pytest.raises(ValueError, match="ends"):
            await store.finish_job("exp-1", "RUNNING", SUMMARY, None)


class TestFileResults:
    async def test_round_trip_and_redelivery(self, store: JobStore) -> None:
        """Results come back equal; recording a file again is refused and counts nothing."""
        ok = FileResult(
            file_id="f1",
            name="part-0001.zip",
            ok=True,
            entries_uploaded=3,
            entries_skipped=1,
            entries_rejected=1,
            bytes_uploaded=300,
            seen_paths=frozenset({"a", "b/c", "line\nbreak", "ünï"}),
        )
        failed = FileResult(file_id="f2", name="part-0002.zip", ok=False, error="ZIP corrupt")
        await store.begin_job("exp-1", "c", "RUNNING")
        assert await store.record_file("exp-1", ok)
        assert await store.record_file("exp-1", failed)
        assert not await store.record_file("exp-1", ok)
        assert await store.recorded_file_ids("exp-1") == {"f1", "f2"}
        results = await store.file_results("exp-1")
        assert sorted(results, key=lambda r: r.file_id) == [ok, failed]
        assert await store.file_results("other") == []
        job = await store.get_job("exp-1")
        assert job is not None
        assert job.summary == summarize(results, files_total=0)

    async def test_many_seen_paths_are_split(
        self, store: JobStore, clients: AwsClients, table: str
    ) -> None:
        """30,000 random paths (over 300 KB compressed) are stored in pieces and read back."""
        paths = frozenset(f"dir/{uuid.uuid4().hex}/{uuid.uuid4().hex}.bin" for _ in range(30_000))
        result = FileResult(file_id="big", name="big.zip", ok=True, seen_paths=paths)
        await store.begin_job("exp-1", "c", "RUNNING")
        assert await store.record_file("exp-1", result)
        assert not await store.record_file("exp-1", result)
        assert await store.file_results("exp-1") == [result]
        items = await raw_items(clients, table, "exp-1")
        assert [item["kind"] for item in items].count({"S": "paths"}) >= 1

    async def test_a_refused_record_leaves_no_pieces(
        self, clients: AwsClients, table: str, clock: Clock
    ) -> None:
        """A second, different result for a recorded file is refused, its pieces deleted."""
        store = JobStore(clients.dynamodb, table, FAST, paths_chunk_bytes=500, clock=clock)
        first = FileResult(file_id="f", name="f.zip", ok=True, seen_paths=frozenset({"x"}))
        await store.begin_job("exp-1", "c", "RUNNING")
        assert await store.record_file("exp-1", first)
        many = frozenset(f"{uuid.uuid4().hex}" for _ in range(300))
        second = FileResult(file_id="f", name="f.zip", ok=False, seen_paths=many, error="boom")
        assert not await store.record_file("exp-1", second)
        assert await store.file_results("exp-1") == [first]
        sks = sorted(item["sk"]["S"] for item in await raw_items(clients, table, "exp-1"))
        assert sks == ["file#f", "job"]

    async def test_summary_from_stored_results(self, store: JobStore) -> None:
        """Results read back add up to the summary that finish_job stores."""
        await store.begin_job("exp-1", "c", "RUNNING")
        await store.set_listing_done("exp-1", 2)
        await store.record_file(
            "exp-1",
            FileResult("f1", "1.zip", True, 2, 0, 0, 20, seen_paths=frozenset({"a", "b"})),
        )
        await store.record_file(
            "exp-1", FileResult("f2", "2.zip", True, 1, 1, 0, 5, seen_paths=frozenset({"b", "c"}))
        )
        summary = summarize(
            await store.file_results("exp-1"), files_total=2, metadata_paths={"a", "b", "c", "d"}
        )
        assert await store.finish_job("exp-1", "COMPLETED", summary, None)
        job = await store.get_job("exp-1")
        assert job is not None
        assert job.summary == JobSummary(2, 2, 0, 3, 1, 0, 1, 25)


class TestRecordedResults:
    async def test_failure_never_replaces_a_success(self, store: JobStore) -> None:
        """A late task's FAILED result leaves the file's DONE result and the counts as they were."""
        done = FileResult(file_id="f1", name="1.zip", ok=True, entries_uploaded=2)
        late = FileResult(file_id="f1", name="1.zip", ok=False, error="403 Forbidden")
        await store.begin_job("exp-late", "c", "RUNNING")
        assert await store.record_file("exp-late", done)
        assert not await store.record_file("exp-late", late)
        assert await store.file_results("exp-late") == [done]
        job = await store.get_job("exp-late")
        assert job is not None
        assert job.summary == JobSummary(files_done=1, entries_uploaded=2)

    async def test_finished_bytes_follow_the_results(self, store: JobStore) -> None:
        """A recorded file adds its listed size to bytesFinished; forgetting a failed one
        takes it off again."""
        await store.begin_job("exp-b", "c", "RUNNING")
        done = FileResult(file_id="f1", name="1.zip", ok=True, size_bytes=300)
        failed = FileResult(file_id="f2", name="2.zip", ok=False, error="bad", size_bytes=700)
        await store.record_file("exp-b", done)
        await store.record_file("exp-b", failed)
        job = await store.get_job("exp-b")
        assert job is not None
        assert job.bytes_finished == 1000
        await store.finish_job("exp-b", JobStatus.FAILED, None, "1 of 2 files failed")
        again = await store.begin_job("exp-b", "c2", "RUNNING")
        assert again.bytes_finished == 300
        assert await store.file_results("exp-b") == [done]
