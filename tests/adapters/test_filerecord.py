"""Recording file results against moto: the only file's record that also ends its job, and
writes refused with the item sent back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import attrs

from pipeline._adapters.aws.clients import AwsClients
from pipeline._adapters.aws.jobitems import EXPIRY_OWED, FILE_PREFIX, JOB_SK, JobItem, decode_item
from pipeline._adapters.aws.joboutbox import OUTBOX_PK
from pipeline._adapters.aws.jobstore import JobStore
from pipeline._core import lifecycle
from pipeline._core.accounting import FileResult, JobStatus, summarize
from pipeline._core.backoff import Backoff
from pipeline._core.lifecycle import Change, Skip
from pipeline.testing.moto import provision_fresh

FAST = Backoff(max_attempts=3, base=0.001, cap=0.01)
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
DAY = 86_400
RESULT = FileResult(
    file_id="f1",
    name="a.zip",
    ok=True,
    entries_uploaded=2,
    entries_skipped=1,
    bytes_uploaded=300,
    seen_paths=frozenset({"x", "y"}),
    size_bytes=1000,
)


async def _store(clients: AwsClients, retention_days: int = 30) -> JobStore:
    name, _ = await provision_fresh(clients)
    return JobStore(
        clients.dynamodb, f"jobs-{name}", FAST, clock=lambda: NOW, retention_days=retention_days
    )


async def _items(store: JobStore, pk: str) -> dict[str, dict[str, Any]]:
    response = await store.dynamodb.query(
        TableName=store.table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": pk}},
        ConsistentRead=True,
    )
    return {decode_item(raw)["sk"]: decode_item(raw) for raw in response["Items"]}


async def _begun(store: JobStore, export_id: str) -> JobItem:
    """A job created by a begin that carried a listing of one file."""
    outcome = await store.transition(
        export_id,
        lambda seen: lifecycle.begin(seen, None, "c1", NOW, listed=(1, 1000)),
        read=False,
    )
    assert outcome.changed
    assert outcome.job is not None
    return outcome.job


def _ending(job: JobItem, metadata_paths: set[str]) -> Change:
    summary = summarize([RESULT], files_total=1, metadata_paths=metadata_paths)
    decision = lifecycle.finalise(attrs.evolve(job, summary=summary), summary, NOW)
    assert isinstance(decision, Change)
    return decision


class TestBeginWithListing:
    async def test_a_new_job_begins_listed(self, clients: AwsClients) -> None:
        """A begin carrying a one-page listing records filesTotal, bytesTotal, listingDone."""
        store = await _store(clients)
        job = await _begun(store, "e1")
        assert (job.status, job.files_total, job.bytes_total) == (JobStatus.RUNNING, 1, 1000)
        assert job.listing_done
        assert job.generation == 1

    async def test_a_refused_first_write_decides_on_the_item_sent_back(
        self, clients: AwsClients
    ) -> None:
        """A begin that expected no item but finds one decides again on it, without a read."""
        store = await _store(clients)
        await store.begin_job("e1", "c0", "WAITING")
        assert await store.finish_job("e1", "COMPLETED", None, None)
        outcome = await store.transition(
            "e1", lambda seen: lifecycle.begin(seen, None, "c1", NOW), read=False
        )
        assert isinstance(outcome.decision, Skip)
        assert outcome.job is not None
        assert outcome.job.status is JobStatus.COMPLETED
        await store.begin_job("e2", "c0", "WAITING")
        job = await _begun(store, "e2")
        assert (job.status, job.correlation_id, job.files_total) == (JobStatus.RUNNING, "c1", 1)


class TestRecordLastFile:
    async def test_the_record_ends_the_job_and_its_items_expire(self, clients: AwsClients) -> None:
        """The only file's record ends its job: counts, entriesMissing, both items' expiresAt."""
        store = await _store(clients)
        job = await _begun(store, "e1")
        assert await store.record_last_file("e1", RESULT, _ending(job, {"x", "y", "z"})) is True
        ended = await store.get_job("e1")
        assert ended is not None
        assert ended.status is JobStatus.COMPLETED
        assert ended.summary == summarize([RESULT], files_total=1, metadata_paths={"x", "y", "z"})
        assert ended.summary.entries_missing == 1
        assert ended.bytes_finished == 1000
        assert ended.expires_at == int(NOW.timestamp()) + 30 * DAY
        assert not ended.expiry_owed
        items = await _items(store, "e1")
        assert items[FILE_PREFIX + "f1"]["expiresAt"] == ended.expires_at
        assert EXPIRY_OWED not in items[JOB_SK]
        assert "e1" not in await _items(store, OUTBOX_PK)
        assert (await store.file_results("e1"))[0].seen_paths == RESULT.seen_paths

    async def test_a_job_moved_on_gets_nothing_written(self, clients: AwsClients) -> None:
        """Cancelled meanwhile: nothing is written, and the plain record counts the file."""
        store = await _store(clients)
        job = await _begun(store, "e1")
        assert await store.finish_job("e1", "CANCELLED", None, "stop")
        assert await store.record_last_file("e1", RESULT, _ending(job, {"x", "y"})) is None
        assert FILE_PREFIX + "f1" not in await _items(store, "e1")
        assert await store.record_file("e1", RESULT)
        cancelled = await store.get_job("e1")
        assert cancelled is not None
        assert cancelled.status is JobStatus.CANCELLED
        assert cancelled.summary.files_done == 1

    async def test_a_recorded_file_is_not_recorded_again(self, clients: AwsClients) -> None:
        """A file with a result already: False, and the job is left as it was."""
        store = await _store(clients)
        job = await _begun(store, "e1")
        assert await store.record_file("e1", RESULT)
        assert await store.record_last_file("e1", RESULT, _ending(job, {"x", "y"})) is False
        still = await store.get_job("e1")
        assert still is not None
        assert still.status is JobStatus.RUNNING
        assert still.summary.files_done == 1

    async def test_without_retention_nothing_expires(self, clients: AwsClients) -> None:
        """JOB_RETENTION_DAYS=0: the job ends and no item carries expiresAt."""
        store = await _store(clients, retention_days=0)
        job = await _begun(store, "e1")
        assert await store.record_last_file("e1", RESULT, _ending(job, {"x", "y"}))
        items = await _items(store, "e1")
        assert all("expiresAt" not in item for item in items.values())
        assert items[JOB_SK]["status"] == "COMPLETED"
