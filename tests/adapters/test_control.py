"""The control API on a running service: jobs, queues, the pool, metrics, who may change."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
from prometheus_client.parser import text_string_to_metric_families

from pipeline._adapters.aws import sqs as _sqs
from pipeline._adapters.aws.jobitems import JobItem
from pipeline._adapters.http.control import job_view, overloaded
from pipeline._config import Mode
from pipeline._core.accounting import JobStatus, JobSummary
from pipeline._core.backoff import AWS_POLICY
from pipeline.testing.demo import build_zip, metadata_for
from tests.support.stack import open_stack
from tests.support.waiting import eventually

ADMIN = "admin-token-5678"
ENTRIES = [("a.txt", b"alpha"), ("b.txt", b"beta")]


class TestJobs:
    async def test_submit_then_read_the_job(self, aws_endpoint: str) -> None:
        """POST /jobs with the admin token is 202; GET /jobs/{id} then shows it COMPLETED."""
        async with open_stack(aws_endpoint) as stack:
            stack.simulator.add_export("exp-ctl", [("p.zip", build_zip(ENTRIES))])
            await stack.seed("exp-ctl", metadata_for(ENTRIES))
            base, stop = await stack.serve_http(ADMIN_TOKEN=ADMIN)
            async with httpx.AsyncClient(base_url=base) as client:
                body = json.dumps({"exportIds": ["exp-ctl"], "correlationId": "c-ctl"})
                auth = {"Authorization": f"Bearer {ADMIN}"}
                sent = await client.post("/jobs", content=body, headers=auth)
                assert sent.status_code == 202
                assert sent.json() == {"correlationId": "c-ctl"}
                await stack.wait_final("exp-ctl")
                view = (await client.get("/jobs/exp-ctl")).json()
            stop.set()
        assert view["exportId"] == "exp-ctl"
        assert view["status"] == JobStatus.COMPLETED.value
        assert (view["filesTotal"], view["filesDone"], view["entriesUploaded"]) == (1, 1, 2)
        assert view["progress"] == 1.0
        assert view["correlationId"] == "c-ctl"

    async def test_submit_high_goes_to_the_high_queue(self, aws_endpoint: str) -> None:
        """POST /jobs with "priority": "high" sends the job, priority and start time kept,
        to the high export-job queue (where the service parks it until its time); a bad
        priority is 400."""
        async with open_stack(aws_endpoint, with_high_queues=True) as stack:
            base, stop = await stack.serve_http(ADMIN_TOKEN=ADMIN)
            auth = {"Authorization": f"Bearer {ADMIN}"}
            document = {
                "exportIds": ["exp-hi"],
                "correlationId": "c-hi",
                "priority": "high",
                "notBefore": "2030-01-01T00:00:00Z",
            }
            async with httpx.AsyncClient(base_url=base) as client:
                sent = await client.post("/jobs", content=json.dumps(document), headers=auth)
                bad = await client.post(
                    "/jobs", content='{"exportIds": ["x"], "priority": "soon"}', headers=auth
                )

            # Parked: sent back to its queue delayed, the message taken deleted.
            async def parked() -> bool:
                high = await stack.aws.sqs.get_queue_attributes(
                    QueueUrl=stack.urls.export_jobs_high_url, AttributeNames=["All"]
                )
                depths = high["Attributes"]
                return (
                    depths["ApproximateNumberOfMessagesDelayed"],
                    depths["ApproximateNumberOfMessagesNotVisible"],
                ) == ("1", "0")

            await eventually(parked, within=30)
            job = await stack.jobs.get_job("exp-hi")
            stop.set()
            normal = await stack.queue_depth(stack.urls.export_jobs_url)
        assert sent.status_code == 202
        assert job is not None
        assert job.status is JobStatus.WAITING
        assert normal == 0
        assert bad.status_code == 400
        assert "'priority' must be" in bad.json()["error"]

    async def test_unknown_export_is_404(self, aws_endpoint: str) -> None:
        """GET /jobs/{id} of an export never seen answers 404."""
        async with open_stack(aws_endpoint) as stack:
            base, stop = await stack.serve_http()
            async with httpx.AsyncClient(base_url=base) as client:
                answer = await client.get("/jobs/exp-nobody")
            stop.set()
        assert answer.status_code == 404

    async def test_refusals(self, aws_endpoint: str) -> None:
        """Without ADMIN_TOKEN changes are off (403); a wrong or no token is 401; bad body 400;
        an unknown export 404; a cancel of a final job or a retry of a running one 409."""
        body = json.dumps({"exportIds": ["exp-x"]})
        changes = ["/jobs", "/jobs/exp-x/cancel", "/jobs/exp-x/retry"]
        # One stack for both services: the one without ADMIN_TOKEN changes nothing.
        async with open_stack(aws_endpoint) as stack:
            base, stop = await stack.serve_http()
            async with httpx.AsyncClient(base_url=base) as client:
                off = [
                    (await client.post(path, content=body, headers={"Authorization": "Bearer x"}))
                    for path in changes
                ]
            stop.set()
            await stack.jobs.begin_job("exp-done", "c", JobStatus.RUNNING)
            await stack.jobs.finish_job("exp-done", JobStatus.COMPLETED, None, None)
            await stack.jobs.begin_job("exp-busy", "c", JobStatus.RUNNING)
            base, stop = await stack.serve_http(ADMIN_TOKEN=ADMIN)
            auth = {"Authorization": f"Bearer {ADMIN}"}
            async with httpx.AsyncClient(base_url=base) as client:
                wrong = [
                    await client.post(path, content=body, headers={"Authorization": "Bearer no"})
                    for path in changes
                ]
                missing = [await client.post(path, content=body) for path in changes]
                bad = await client.post("/jobs", content='{"exportIds": []}', headers=auth)
                unknown = [
                    await client.post(f"/jobs/exp-nobody/{verb}", headers=auth)
                    for verb in ("cancel", "retry")
                ]
                final = await client.post("/jobs/exp-done/cancel", headers=auth)
                running = await client.post("/jobs/exp-busy/retry", headers=auth)
            stop.set()
        assert [answer.status_code for answer in off] == [403, 403, 403]
        assert [answer.status_code for answer in wrong + missing] == [401] * 6
        assert bad.status_code == 400
        assert "exportIds" in bad.json()["error"]
        assert [answer.status_code for answer in unknown] == [404, 404]
        assert (final.status_code, final.json()["status"]) == (409, "COMPLETED")
        assert (running.status_code, running.json()["status"]) == (409, "RUNNING")


class TestQueuesAndPool:
    async def test_queues_and_health_say_what_they_promise(self, aws_endpoint: str) -> None:
        """GET /queues gives each queue's depths; GET /health the mode and the pool's figures."""
        async with open_stack(aws_endpoint) as stack:
            base, stop = await stack.serve_http()
            async with httpx.AsyncClient(base_url=base) as client:
                view = (await client.get("/queues")).json()
                health = (await client.get("/health")).json()
            stop.set()
        assert view["exportJobs"] == {
            "visible": 0,
            "inFlight": 0,
            "delayed": 0,
            "deadLetter": 0,
            "paused": False,
        }
        assert view["downloadTasks"] is None
        assert view["overloaded"] is False
        assert (health["status"], health["mode"]) == ("ok", "all")
        assert set(health["pool"]) == {
            "size",
            "active",
            "queued",
            "inFlight",
            "completed",
            "failed",
            "avgProcessingMs",
        }
        assert health["pool"]["avgProcessingMs"] == 0

    async def test_queues_show_the_high_lanes_and_their_backlog(self, aws_endpoint: str) -> None:
        """With high queues configured, GET /queues shows each beside its queue, paused with
        it, and a backlog on a high queue alone makes the service overloaded."""
        async with open_stack(aws_endpoint, with_task_queue=True, with_high_queues=True) as stack:
            base, stop = await stack.serve_http(Mode.ORCHESTRATOR, OVERLOAD_BACKLOG="2")
            await _sqs.send_batch(
                stack.aws.sqs,
                stack.urls.download_tasks_high_url,
                ["one", "two", "three"],
                policy=AWS_POLICY,
            )
            async with httpx.AsyncClient(base_url=base) as client:
                view = (await client.get("/queues")).json()
            stop.set()
        assert view["downloadTasksHigh"]["visible"] == 3
        assert view["downloadTasksHigh"]["paused"] is False
        assert view["exportJobsHigh"]["visible"] == 0
        assert view["downloadTasks"]["visible"] == 0
        assert view["overloaded"] is True

    def test_overloaded_above_the_backlog(self) -> None:
        """Either queue's visible backlog over OVERLOAD_BACKLOG is overload; at it, not."""
        jobs = {"visible": 10, "inFlight": 0, "delayed": 0, "deadLetter": 0}
        assert overloaded([jobs, None], 9)
        assert not overloaded([jobs, None], 10)
        assert overloaded([{**jobs, "visible": 0}, jobs], 5)


class TestJobView:
    def test_progress_and_estimate_while_running(self) -> None:
        """Half the files done in 10 minutes: progress 0.5, about 10 minutes left."""
        start = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
        job = JobItem(
            export_id="exp-v",
            status=JobStatus.RUNNING,
            correlation_id="c",
            created_at=start,
            updated_at=start,
            listing_done=True,
            summary=JobSummary(files_total=4, files_done=2),
        )
        view = job_view(job, start + timedelta(minutes=10))
        assert view["progress"] == 0.5
        assert view["etaSeconds"] == 600.0

    def test_progress_counts_bytes_where_sizes_are_known(self) -> None:
        """One small and one large file: the small one done is little progress."""
        start = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
        job = JobItem(
            export_id="exp-v",
            status=JobStatus.RUNNING,
            correlation_id="c",
            created_at=start,
            updated_at=start,
            listing_done=True,
            summary=JobSummary(files_total=2, files_done=1),
            bytes_total=1000,
            bytes_finished=100,
        )
        view = job_view(job, start + timedelta(seconds=60))
        assert view["progress"] == 0.1
        assert view["etaSeconds"] == 540.0

    def test_unknown_estimate_before_the_first_file(self) -> None:
        """Before any file finished, progress is 0 and the estimate null."""
        start = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
        job = JobItem(
            export_id="exp-v",
            status=JobStatus.RUNNING,
            correlation_id="c",
            created_at=start,
            updated_at=start,
            listing_done=True,
            summary=JobSummary(files_total=4),
        )
        view = job_view(job, start + timedelta(minutes=1))
        assert (view["progress"], view["etaSeconds"]) == (0.0, None)


class TestMetrics:
    async def test_metrics_agree_with_the_job_item(self, aws_endpoint: str) -> None:
        """After a job, /metrics counts its files, entries, bytes and messages as its item does."""
        async with open_stack(aws_endpoint) as stack:
            files = [("p1.zip", build_zip(ENTRIES)), ("p2.zip", build_zip([("c.txt", b"gamma")]))]
            stack.simulator.add_export("exp-metrics", files)
            await stack.seed("exp-metrics", metadata_for(ENTRIES))
            base, stop = await stack.serve_http()
            await stack.send_job(["exp-metrics"])
            job = await stack.wait_final("exp-metrics")
            async with httpx.AsyncClient(base_url=base) as client:
                deleted = (
                    "pipeline_messages_total",
                    (("outcome", "deleted"), ("queue", "export_jobs")),
                )

                async def counted() -> tuple[httpx.Response, Samples] | None:
                    answer = await client.get("/metrics")
                    samples = _samples(answer.text)
                    return (answer, samples) if samples.get(deleted) else None

                answer, samples = await eventually(counted, within=15)
            stop.set()
        assert answer.headers["content-type"].startswith("text/plain")
        summary = job.summary
        assert samples[("pipeline_files_total", (("outcome", "completed"),))] == summary.files_done
        entries = {
            outcome: samples[("pipeline_entries_total", (("outcome", outcome),))]
            for outcome in ("uploaded", "skipped", "rejected")
        }
        assert entries == {
            "uploaded": summary.entries_uploaded,
            "skipped": summary.entries_skipped,
            "rejected": summary.entries_rejected,
        }
        assert samples[("pipeline_bytes_uploaded_total", ())] == summary.bytes_uploaded
        received = ("pipeline_messages_total", (("outcome", "received"), ("queue", "export_jobs")))
        assert samples[received] == 1
        assert samples[("pipeline_file_duration_seconds_count", ())] == 2
        for family in ("pipeline_files_in_flight", "pipeline_inflate_threads_busy"):
            assert samples[(family, ())] == 0


# A sample's name and sorted labels → its value.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(text: str) -> Samples:
    """Every sample of an exposition, by name and sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found
