"""The operator's calls on moto and a running service: job list, files, bulk retry, events."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import trio

from pipeline._adapters.aws.clients import AwsClients
from pipeline._adapters.aws.jobitems import LIST_STATUS, STATUS_INDEX, encode, format_time
from pipeline._adapters.aws.joblist import BadCursor, list_jobs
from pipeline._adapters.aws.jobstore import JobStore
from pipeline._core.accounting import FileResult, JobStatus
from pipeline.testing.demo import build_zip, metadata_for
from pipeline.testing.moto import provision_fresh
from tests.support.stack import open_stack

ADMIN = "admin-token-console"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
ENTRIES = [("a.txt", b"alpha"), ("b.txt", b"beta")]
STATUSES = list(JobStatus)


def _count_calls(aws: AwsClients) -> Counter[str]:
    """Every DynamoDB operation the client sends from now on, by name."""
    calls: Counter[str] = Counter()

    def seen(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    aws.dynamodb.meta.events.register("before-call.dynamodb", seen)
    return calls


async def _seed_jobs(aws: AwsClients, table: str, count: int) -> list[tuple[str, str, str]]:
    """``count`` summary items, statuses in turn, one second apart; (createdAt, id, status)."""
    start = datetime(2026, 12, 1, tzinfo=UTC)
    seeded = []
    requests = []
    for n in range(count):
        status = STATUSES[n % len(STATUSES)].value
        created = format_time(start + timedelta(seconds=n))
        export_id = f"exp-{n:05d}"
        seeded.append((created, export_id, status))
        item = {
            "pk": export_id,
            "sk": "job",
            "status": status,
            LIST_STATUS: status,
            "createdAt": created,
            "updatedAt": created,
            "correlationId": "c-seed",
            "listingDone": True,
            "filesTotal": 1,
            "filesDone": 1,
        }
        requests.append({"PutRequest": {"Item": {k: encode(v) for k, v in item.items()}}})
    for at in range(0, len(requests), 25):
        await aws.dynamodb.batch_write_item(RequestItems={table: requests[at : at + 25]})
    return seeded


class TestJobList:
    async def test_pages_1200_jobs_by_cursor_without_a_scan(self, clients: AwsClients) -> None:
        """1,200 jobs page out newest first, each once, with Query and BatchGetItem only."""
        name, _ = await provision_fresh(clients)
        table = f"jobs-{name}"
        seeded = await _seed_jobs(clients, table, 1200)
        store = JobStore(clients.dynamodb, table)
        calls = _count_calls(clients)
        listed: list[str] = []
        pages, cursor = 0, None
        while True:
            page = await list_jobs(store, limit=100, cursor=cursor)
            listed += [job.export_id for job in page.jobs]
            pages += 1
            cursor = page.next_cursor
            if cursor is None:
                break
        assert listed == [export_id for _, export_id, _ in sorted(seeded, reverse=True)]
        assert pages == 12
        assert set(calls) == {"Query", "BatchGetItem"}
        # One query per status partition and one batch read per 100 jobs, each page.
        assert calls["Query"] <= pages * len(STATUSES)
        assert calls["BatchGetItem"] == pages

    async def test_one_status_newest_first(self, clients: AwsClients) -> None:
        """A status filter lists only that status's jobs, newest first, across pages."""
        name, _ = await provision_fresh(clients)
        table = f"jobs-{name}"
        seeded = await _seed_jobs(clients, table, 60)
        store = JobStore(clients.dynamodb, table)
        first = await list_jobs(store, JobStatus.FAILED, limit=5)
        rest = await list_jobs(store, JobStatus.FAILED, limit=50, cursor=first.next_cursor)
        failed = [e for _, e, s in sorted(seeded, reverse=True) if s == "FAILED"]
        assert [job.export_id for job in first.jobs + rest.jobs] == failed
        assert {job.status for job in first.jobs + rest.jobs} == {JobStatus.FAILED}
        assert rest.next_cursor is None
        with pytest.raises(BadCursor):
            await list_jobs(store, JobStatus.RUNNING, cursor=first.next_cursor)

    async def test_progress_writes_do_not_write_the_index(self, clients: AwsClients) -> None:
        """The index is keys-only on jobStatus/createdAt, and a file's record never sets those."""
        name, _ = await provision_fresh(clients)
        table = f"jobs-{name}"
        described = await clients.dynamodb.describe_table(TableName=table)
        (index,) = described["Table"]["GlobalSecondaryIndexes"]
        assert index["IndexName"] == STATUS_INDEX
        assert index["Projection"]["ProjectionType"] == "KEYS_ONLY"
        assert [key["AttributeName"] for key in index["KeySchema"]] == [LIST_STATUS, "createdAt"]
        store = JobStore(clients.dynamodb, table)
        await store.begin_job("exp-p", "c-p", JobStatus.RUNNING)
        await store.set_listing_done("exp-p", 3)
        written: list[dict[str, Any]] = []

        def capture(params: dict[str, Any], **_: Any) -> None:
            written.append(params)

        clients.dynamodb.meta.events.register(
            "before-parameter-build.dynamodb.TransactWriteItems", capture
        )
        for n in range(3):
            result = FileResult(file_id=f"f{n}", name=f"f{n}.zip", ok=True, entries_uploaded=2)
            assert await store.record_file("exp-p", result)
        items = [item for params in written for item in params["TransactItems"]]
        # Each record: the file's own item (put), and the summary item's counts (update).
        assert {item["Put"]["Item"]["sk"]["S"] for item in items if "Put" in item} == {
            "file#f0",
            "file#f1",
            "file#f2",
        }
        updates = [item["Update"] for item in items if "Update" in item]
        assert len(updates) == 3
        for update in updates:
            assert update["Key"]["sk"] == {"S": "job"}
            assert not {LIST_STATUS, "createdAt", "status"} & set(
                update["ExpressionAttributeNames"].values()
            )
        page = await list_jobs(store, JobStatus.RUNNING)
        assert [(job.export_id, job.summary.files_done) for job in page.jobs] == [("exp-p", 3)]


async def _events_of(
    base: str,
    export_id: str,
    events: list[dict[str, Any]],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Collect ``export_id``'s events from ``/events`` until it is final; started once
    the stream is open."""
    async with (
        httpx.AsyncClient(base_url=base, timeout=None) as client,
        client.stream("GET", "/events") as stream,
    ):
        assert stream.headers["content-type"].startswith("text/event-stream")
        task_status.started()
        async for line in stream.aiter_lines():
            if line.startswith("data: "):
                view = json.loads(line[len("data: ") :])
                if view["exportId"] == export_id:
                    events.append(view)
                    if view["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
                        return


class TestRunningService:
    async def test_files_show_the_failing_files_reason(self, aws_endpoint: str) -> None:
        """A FAILED export's files: the bad ZIP failed with its reason, the good one done."""
        async with open_stack(aws_endpoint) as stack:
            files = [("good.zip", build_zip(ENTRIES)), ("bad.zip", b"this is not a zip file")]
            good_id, bad_id = stack.simulator.add_export("exp-f", files)
            await stack.seed("exp-f", metadata_for(ENTRIES))
            base, stop = await stack.serve_http(ADMIN_TOKEN=ADMIN)
            await stack.send_job(["exp-f"])
            assert (await stack.wait_final("exp-f")).status is JobStatus.FAILED
            async with httpx.AsyncClient(base_url=base) as client:
                every = (await client.get("/jobs/exp-f/files")).json()
                failed = (await client.get("/jobs/exp-f/files?status=failed")).json()
                listed = (await client.get("/jobs?status=FAILED")).json()
                unknown = await client.get("/jobs/exp-nobody/files")
                bad = await client.get("/jobs?status=LOST")
            stop.set()
        by_id = {file["fileId"]: file for file in every["files"]}
        assert by_id[good_id]["status"] == "done"
        assert by_id[good_id]["entriesUploaded"] == 2
        assert "error" not in by_id[good_id]
        (only,) = failed["files"]
        assert only["fileId"] == bad_id
        assert only["status"] == "failed"
        assert only["error"]
        assert "\n" not in only["error"]
        assert [job["exportId"] for job in listed["jobs"]] == ["exp-f"]
        assert listed["nextCursor"] is None
        assert unknown.status_code == 404
        assert bad.status_code == 400
        assert "status must be one of" in bad.json()["error"]

    async def test_bulk_retry(self, aws_endpoint: str) -> None:
        """POST /jobs/retry retries up to N FAILED jobs, each once, and needs the token."""
        async with open_stack(aws_endpoint) as stack:
            for export_id in ("exp-r1", "exp-r2"):
                stack.simulator.add_export(export_id, [("bad.zip", b"not a zip")])
            base, stop = await stack.serve_http(ADMIN_TOKEN=ADMIN)
            await stack.send_job(["exp-r1", "exp-r2"])
            for export_id in ("exp-r1", "exp-r2"):
                await stack.wait_final(export_id)
            async with httpx.AsyncClient(base_url=base) as client:
                body = {"status": "FAILED", "limit": 5}
                unauthorised = await client.post("/jobs/retry", json=body)
                malformed = await client.post(
                    "/jobs/retry", json={"status": "RUNNING"}, headers=AUTH
                )
                retried = await client.post("/jobs/retry", json=body, headers=AUTH)
                for export_id in ("exp-r1", "exp-r2"):
                    await stack.wait_final(export_id)
            stop.set()
        assert unauthorised.status_code == 401
        assert malformed.status_code == 400
        assert retried.status_code == 202
        assert sorted(retried.json()["retried"]) == ["exp-r1", "exp-r2"]

    async def test_events_deliver_a_jobs_changes_in_order(self, aws_endpoint: str) -> None:
        """/events sends the job's status and counts as they change, never going back."""
        async with open_stack(aws_endpoint) as stack:
            files = [(f"p{n}.zip", build_zip(ENTRIES)) for n in range(4)]
            file_ids = stack.simulator.add_export("exp-e", files)
            for file_id in file_ids:
                stack.simulator.set_throttle("exp-e", file_id, 2_000)
            await stack.seed("exp-e", metadata_for(ENTRIES))
            base, stop = await stack.serve_http(MAX_CONCURRENT_JOBS="1")
            events: list[dict[str, Any]] = []
            with trio.fail_after(90):
                async with trio.open_nursery() as nursery:
                    await nursery.start(_events_of, base, "exp-e", events)
                    await stack.send_job(["exp-e"])
            stop.set()
        rank = {"WAITING": 0, "RUNNING": 1, "COMPLETED": 2}
        assert [rank[event["status"]] for event in events] == sorted(
            rank[event["status"]] for event in events
        )
        done = [event["filesDone"] for event in events]
        assert done == sorted(done)
        assert len(set(done)) >= 2, done
        assert events[-1]["status"] == "COMPLETED"
        assert events[-1]["filesDone"] == 4
        assert events[-1]["progress"] == 1.0

    async def test_an_open_event_stream_does_not_hold_up_a_stop(self, aws_endpoint: str) -> None:
        """A listener still connected when the service stops sees its stream end, promptly."""
        async with open_stack(aws_endpoint) as stack:
            base, stop = await stack.serve_http()
            connected = trio.Event()
            ended = trio.Event()

            async def listen() -> None:
                try:
                    async with (
                        httpx.AsyncClient(base_url=base, timeout=None) as client,
                        client.stream("GET", "/events") as stream,
                    ):
                        async for line in stream.aiter_lines():
                            if line == ": connected":
                                connected.set()
                except httpx.HTTPError:
                    pass  # the server went away mid-stream: also an end
                ended.set()

            with trio.fail_after(20):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(listen)
                    await connected.wait()
                    stop.set()
                    await ended.wait()
