"""Lifecycle events and retention against moto: owed with the transition, sent in order."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from pipeline._adapters.aws.clients import AwsClients, open_aws_clients
from pipeline._adapters.aws.jobcontrol import Verdict, retry_job
from pipeline._adapters.aws.jobitems import JOB_SK, decode_item, utc_now
from pipeline._adapters.aws.joboutbox import OUTBOX_PK, EventBus, owed_jobs
from pipeline._adapters.aws.jobstore import JobStore
from pipeline._core.accounting import FileResult, JobStatus
from pipeline._core.backoff import Backoff
from pipeline._service.sweeper import OWED_GRACE_SECONDS, settle_once
from pipeline.ops.provisioning import provision_event_listener
from pipeline.testing.moto import free_port, provision_fresh

FAST = Backoff(max_attempts=2, base=0.001, cap=0.01)
DAY = 86_400


@pytest.fixture
async def events_clients(aws_endpoint: str) -> AsyncIterator[AwsClients]:
    """Clients with EventBridge, against the shared moto server."""
    async with open_aws_clients(
        region="us-east-1", endpoint_url=aws_endpoint, pool_size=4, events=True
    ) as clients:
        yield clients


@pytest.fixture
async def dead_bus() -> AsyncIterator[EventBus]:
    """An EventBridge that never answers (nothing listens on its port): a send always fails."""
    async with open_aws_clients(
        region="us-east-1", endpoint_url=f"http://127.0.0.1:{free_port()}", pool_size=1, events=True
    ) as clients:
        yield EventBus(clients.events, "gone", FAST)


async def _stores(clients: AwsClients, dead_bus: EventBus) -> tuple[JobStore, JobStore, str]:
    """Two processes' stores on one fresh table, one whose events never get out; and the
    URL of a queue that a rule on the bus fills with the service's events."""
    name, _ = await provision_fresh(clients)
    bus = f"bus-{name}"
    queue_url = await provision_event_listener(clients.events, clients.sqs, bus, f"events-{name}")
    table = f"jobs-{name}"
    alive = JobStore(clients.dynamodb, table, FAST, events=EventBus(clients.events, bus, FAST))
    dying = JobStore(clients.dynamodb, table, FAST, events=dead_bus)
    return alive, dying, queue_url


async def _events(clients: AwsClients, url: str, count: int) -> list[dict[str, Any]]:
    """The details of ``count`` events from the queue, in the order received."""
    found: list[dict[str, Any]] = []
    for _ in range(20):
        response = await clients.sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        )
        for message in response.get("Messages", []):
            event = json.loads(message["Body"])
            assert (event["source"], event["detail-type"]) == (
                "export-pipeline",
                "Export Job Status Changed",
            )
            found.append(event["detail"])
            await clients.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        if len(found) >= count:
            break
    return found


async def _items(clients: AwsClients, store: JobStore, pk: str) -> dict[str, dict[str, Any]]:
    response = await clients.dynamodb.query(
        TableName=store.table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": pk}},
        ConsistentRead=True,
    )
    return {raw["sk"]["S"]: decode_item(raw) for raw in response.get("Items", [])}


class TestEvents:
    async def test_each_transition_sends_one_event_in_order(
        self, events_clients: AwsClients, dead_bus: EventBus
    ) -> None:
        """RUNNING then COMPLETED: two events, the summary item as detail with exportId, a
        transition ID each; a write that changes no status (listing) sends none."""
        alive, _, url = await _stores(events_clients, dead_bus)
        await alive.begin_job("exp-e", "c-e", JobStatus.RUNNING)
        await alive.set_listing_done("exp-e", 1, 10)
        await alive.record_file("exp-e", FileResult(file_id="f", name="f.zip", ok=True))
        assert await alive.finish_job("exp-e", JobStatus.COMPLETED, None, None)
        details = await _events(events_clients, url, 2)
        assert [(d["exportId"], d["status"]) for d in details] == [
            ("exp-e", "RUNNING"),
            ("exp-e", "COMPLETED"),
        ]
        assert details[1]["filesDone"] == 1
        assert details[1]["correlationId"] == "c-e"
        assert len({d["transitionId"] for d in details}) == 2
        job = await alive.get_job("exp-e")
        assert job is not None
        assert job.events_owed == ()
        assert await owed_jobs(alive) == []

    async def test_what_a_dead_process_owed_goes_first(
        self, events_clients: AwsClients, dead_bus: EventBus
    ) -> None:
        """A process writes RUNNING and dies before its event; the next transition, by
        another process, sends the owed RUNNING first, then its own CANCELLED."""
        alive, dying, url = await _stores(events_clients, dead_bus)
        await dying.begin_job("exp-d", "c-d", JobStatus.RUNNING)
        left = await dying.get_job("exp-d")
        assert left is not None
        assert [owed.status for owed in left.events_owed] == [JobStatus.RUNNING]
        assert [export_id for export_id, _ in await owed_jobs(alive)] == ["exp-d"]
        assert await alive.finish_job("exp-d", JobStatus.CANCELLED, None, "by hand")
        details = await _events(events_clients, url, 2)
        assert [d["status"] for d in details] == ["RUNNING", "CANCELLED"]
        assert details[0]["transitionId"] == left.events_owed[0].transition_id
        assert await owed_jobs(alive) == []

    async def test_the_sweeper_sends_what_a_dead_process_owed(
        self, events_clients: AwsClients, dead_bus: EventBus
    ) -> None:
        """Jobs whose process died after its writes: another process's sweeper round sends
        every owed event, in order per job, once they are older than the grace."""
        alive, dying, url = await _stores(events_clients, dead_bus)
        for export_id in ("exp-s1", "exp-s2"):
            await dying.begin_job(export_id, "c", JobStatus.RUNNING)
        await dying.finish_job("exp-s1", JobStatus.FAILED, None, "export unknown")
        assert await settle_once(alive, now=utc_now()) == []  # still the writer's to send
        later = utc_now() + timedelta(seconds=OWED_GRACE_SECONDS + 1)
        assert sorted(await settle_once(alive, now=later)) == ["exp-s1", "exp-s2"]
        details = await _events(events_clients, url, 3)
        by_job: dict[str, list[str]] = {}
        for detail in details:
            by_job.setdefault(detail["exportId"], []).append(detail["status"])
        assert by_job == {"exp-s1": ["RUNNING", "FAILED"], "exp-s2": ["RUNNING"]}
        assert await _items(events_clients, alive, OUTBOX_PK) == {}

    async def test_no_bus_no_events_owed(self, clients: AwsClients) -> None:
        """Without EVENT_BUS_NAME a transition owes nothing and writes no outbox item."""
        name, _ = await provision_fresh(clients)
        store = JobStore(clients.dynamodb, f"jobs-{name}", FAST)
        job = await store.begin_job("exp-n", "c", JobStatus.RUNNING)
        assert job.events_owed == ()
        assert await owed_jobs(store) == []


class TestRetention:
    async def test_final_job_items_expire_and_a_retry_keeps_them(self, clients: AwsClients) -> None:
        """Once FAILED, the summary item and every file item carry expiresAt (30 days on);
        a retry takes it off all of them again (the failed file's item is gone)."""
        name, urls = await provision_fresh(clients)
        store = JobStore(clients.dynamodb, f"jobs-{name}", FAST, retention_days=30)
        await store.begin_job("exp-t", "c", JobStatus.RUNNING)
        await store.record_file("exp-t", FileResult(file_id="f1", name="1.zip", ok=True))
        await store.record_file("exp-t", FileResult(file_id="f2", name="2.zip", ok=False))
        before = int(utc_now().timestamp())
        assert await store.finish_job("exp-t", JobStatus.FAILED, None, "1 of 2 files failed")
        items = await _items(clients, store, "exp-t")
        assert set(items) == {JOB_SK, "file#f1", "file#f2"}
        expiries = {item["expiresAt"] for item in items.values()}
        assert len(expiries) == 1
        (expiry,) = expiries
        assert before + 30 * DAY <= expiry <= before + 30 * DAY + 60
        assert "expiryOwed" not in items[JOB_SK]
        assert await owed_jobs(store) == []

        answer = await retry_job(store, clients.sqs, urls.export_jobs_url, "exp-t")
        assert answer.verdict is Verdict.ACCEPTED
        items = await _items(clients, store, "exp-t")
        assert set(items) == {JOB_SK, "file#f1"}
        assert all("expiresAt" not in item for item in items.values())

    async def test_zero_days_keeps_jobs(self, clients: AwsClients) -> None:
        """JOB_RETENTION_DAYS=0: a final job carries no expiresAt and owes nothing."""
        name, _ = await provision_fresh(clients)
        store = JobStore(clients.dynamodb, f"jobs-{name}", FAST, retention_days=0)
        await store.begin_job("exp-k", "c", JobStatus.RUNNING)
        assert await store.finish_job("exp-k", JobStatus.COMPLETED, None, None)
        job = await store.get_job("exp-k")
        assert job is not None
        assert (job.expires_at, job.expiry_owed) == (None, False)
