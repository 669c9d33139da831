"""The jobs table against moto: job lifecycle, exactly-once finish, file results."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

import pipeline._adapters.aws.jobstore as jobstore_module
from pipeline._adapters.aws.clients import AwsClients
from pipeline._adapters.aws.jobstore import JobStore
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
        """Beginning a FAILED job again drops failed file results (and pieces), keeps done ones."""
        store = JobStore(clients.dynamodb, table, FAST, paths_chunk_bytes=500)
        many = frozenset(uuid.uuid4().hex for _ in range(300))
        done = FileResult(file_id="f1", name="1.zip", ok=True, entries_uploaded=1)
        bad = FileResult(file_id="f2", name="2.zip", ok=False, seen_paths=many, error="corrupt")
        await store.begin_job("exp-1", "c", "RUNNING")
        await store.record_file("exp-1", done)
        await store.record_file("exp-1", bad)
        # A redelivery while RUNNING keeps every result.
        await store.begin_job("exp-1", "c", "RUNNING")
        assert len(await store.file_results("exp-1")) == 2
        await store.finish_job("exp-1", "FAILED", SUMMARY, "1 of 2 files failed")
        await store.begin_job("exp-1", "c2", "RUNNING")
        assert await store.file_results("exp-1") == [done]
        assert await store.count_file_results("exp-1") == 1
        sks = sorted(item["sk"]["S"] for item in await raw_items(clients, table, "exp-1"))
        assert sks == ["done#f1", "file#f1", "job"]

    async def test_progress_only_while_running(self, store: JobStore) -> None:
        """update_progress writes counts while RUNNING, keeps filesTotal, refuses otherwise."""
        await store.begin_job("exp-1", "c", "WAITING")
        assert not await store.update_progress("exp-1", SUMMARY)
        await store.begin_job("exp-1", "c", "RUNNING")
        await store.set_listing_done("exp-1", 9)
        assert await store.update_progress("exp-1", SUMMARY)
        job = await store.get_job("exp-1")
        assert job is not None
        assert job.summary.files_done == 2
        assert job.summary.files_total == 9
        assert job.summary.entries_missing == 0
        await store.finish_job("exp-1", "CANCELLED", job.summary, None)
        assert not await store.update_progress("exp-1", SUMMARY)
        assert not await store.set_listing_done("exp-1", 1)

    async def test_status_arguments_are_checked(self, store: JobStore) -> None:
        """Begin takes only WAITING/RUNNING, finish only final statuses."""
        with pytest.raises(ValueError, match="begins"):
            await store.begin_job("exp-1", "c", "COMPLETED")
        with pytest.raises(ValueError, match="finishes"):
            await store.finish_job("exp-1", "RUNNING", SUMMARY, None)


class TestFileResults:
    async def test_round_trip_and_redelivery(self, store: JobStore) -> None:
        """Results come back equal; writing one again replaces it instead of adding."""
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
        await store.record_file("exp-1", ok)
        await store.record_file("exp-1", failed)
        await store.record_file("exp-1", ok)
        assert await store.count_file_results("exp-1") == 2
        results = await store.file_results("exp-1")
        assert sorted(results, key=lambda r: r.file_id) == [ok, failed]
        assert await store.file_results("other") == []

    async def test_many_seen_paths_are_split(
        self, store: JobStore, clients: AwsClients, table: str
    ) -> None:
        """30,000 random paths (over 300 KB compressed) are stored in pieces and read back."""
        paths = frozenset(f"dir/{uuid.uuid4().hex}/{uuid.uuid4().hex}.bin" for _ in range(30_000))
        result = FileResult(file_id="big", name="big.zip", ok=True, seen_paths=paths)
        await store.record_file("exp-1", result)
        await store.record_file("exp-1", result)
        assert await store.file_results("exp-1") == [result]
        assert await store.count_file_results("exp-1") == 1
        items = await raw_items(clients, table, "exp-1")
        assert [item["kind"] for item in items].count({"S": "paths"}) >= 1

    async def test_a_different_result_replaces_old_pieces(
        self, clients: AwsClients, table: str, clock: Clock
    ) -> None:
        """A new result for the same file drops the old result's pieces."""
        store = JobStore(clients.dynamodb, table, FAST, paths_chunk_bytes=500, clock=clock)
        many = frozenset(f"{uuid.uuid4().hex}" for _ in range(300))
        first = FileResult(file_id="f", name="f.zip", ok=False, seen_paths=many, error="boom")
        await store.record_file("exp-1", first)
        assert len(await raw_items(clients, table, "exp-1")) > 5
        second = FileResult(file_id="f", name="f.zip", ok=True, seen_paths=frozenset({"x"}))
        await store.record_file("exp-1", second)
        assert await store.file_results("exp-1") == [second]
        sks = sorted(item["sk"]["S"] for item in await raw_items(clients, table, "exp-1"))
        assert sks == ["done#f", "file#f"]

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
        """A late task's FAILED result leaves the file's DONE result as it was."""
        done = FileResult(file_id="f1", name="1.zip", ok=True, entries_uploaded=2)
        late = FileResult(file_id="f1", name="1.zip", ok=False, error="403 Forbidden")
        await store.record_file("exp-late", done)
        await store.record_file("exp-late", late)
        assert await store.file_results("exp-late") == [done]
        assert await store.count_file_results("exp-late") == 1

    async def test_a_success_replaces_a_failure(self, store: JobStore) -> None:
        """A file that failed and then succeeded (a retry) ends DONE."""
        failed = FileResult(file_id="f1", name="1.zip", ok=False, error="503")
        done = FileResult(file_id="f1", name="1.zip", ok=True, entries_uploaded=1)
        await store.record_file("exp-again", failed)
        await store.record_file("exp-again", done)
        assert await store.file_results("exp-again") == [done]

    async def test_confirm_recorded_restores_a_lost_marker(
        self, store: JobStore, clients: AwsClients, table: str
    ) -> None:
        """A result whose marker was never written is found, and its marker written again."""
        assert not await store.confirm_recorded("exp-marker", "f1")
        await store.record_file("exp-marker", FileResult(file_id="f1", name="1.zip", ok=True))
        # As if the process died between the result and its marker.
        key = {"pk": {"S": "exp-marker"}, "sk": {"S": "done#f1"}}
        await clients.dynamodb.delete_item(TableName=table, Key=key)
        assert await store.count_file_results("exp-marker") == 0
        assert await store.confirm_recorded("exp-marker", "f1")
        assert await store.count_file_results("exp-marker") == 1
