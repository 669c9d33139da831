"""Outages of the work's dependencies: no job fails, intake pauses, work resumes within seconds.

Contract 2 (changed) and issue 18's done-when, against the real stack (moto,
the simulator, the service in-process, all mode):

* the Export API answering 503 to every request for 10 s, then again for
  6 s, while exports are in flight fails no job, and every job completes
  within 20 s of the outage's end; an unknown export sent while the breaker
  is open fails with its 404's reason;
* DynamoDB throttling every call for a while, from the moment the first file
  is recorded, ends with the job complete within 20 s of the outage's end.
  The suite runs 10 s; the issue's 30 s figure is the same test with
  ``DEPENDENCY_OUTAGE_SECONDS=30`` (see docs/operations.md).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable

import httpx
import pytest
import structlog
import trio

from pipeline._config import Mode
from pipeline._core.accounting import JobStatus
from pipeline._core.zip.format import TAIL_BYTES
from pipeline._service.graph import run_service
from pipeline.testing.demo import build_zip, metadata_for
from tests.support.faultproxy import Fault, FaultProxy, serve_fault_proxy
from tests.support.stack import Stack, open_stack

pytestmark = pytest.mark.slow

log = structlog.get_logger("tests.outages")

# The done-when of issues 18 and 23: jobs final this soon after an outage ends.
RESUME_WITHIN_SECONDS = 20.0
DYNAMODB_OUTAGE_SECONDS = float(os.environ.get("DEPENDENCY_OUTAGE_SECONDS", "10"))

_RNG = random.Random(23)


async def add_exports(stack: Stack, count: int, *, bytes_per_second: float) -> list[str]:
    """``count`` exports of two files each, seeded, their downloads slowed so they are in flight.

    Each ZIP is larger than the tail read, so a file makes two requests (the
    tail, then the body) and an outage finds requests to fail.
    """
    ids = []
    for n in range(count):
        export_id = f"exp-out-{n}"
        entries = [(f"{k}/rows.jsonl", _RNG.randbytes(TAIL_BYTES + 20_000)) for k in (1, 2)]
        files = [(f"part-{k}.zip", build_zip([entry])) for k, entry in enumerate(entries, 1)]
        stack.simulator.add_export(export_id, files)
        for k in (1, 2):
            stack.simulator.set_throttle(export_id, f"{export_id}-f000{k}", bytes_per_second)
        await stack.seed(export_id, metadata_for(entries))
        ids.append(export_id)
    return ids


async def wait_until(predicate: Callable[[], bool], within: float) -> None:
    with trio.fail_after(within):
        while not predicate():  # noqa: ASYNC110 - the simulator's counts have no event
            await trio.sleep(0.05)


async def test_export_api_outages_fail_no_job(aws_endpoint: str) -> None:
    """10 s then 6 s of Export API 503s fail no job, all final in 20 s; a 404 keeps its reason."""
    async with open_stack(aws_endpoint) as stack:
        ids = await add_exports(stack, 6, bytes_per_second=400_000)
        stop = trio.Event()
        stack.nursery.start_soon(
            run_service, stack.settings(Mode.ALL, MAX_CONCURRENT_JOBS="8"), Mode.ALL, stop
        )
        for export_id in ids:
            await stack.send_job([export_id])
        sim = stack.simulator
        # The outage begins once bodies are being downloaded: exports in flight.
        await wait_until(lambda: sim.count("download") >= 4, within=30)
        sim.begin_outage()
        await trio.sleep(3)
        # The breaker is open by now, intake paused; an unknown export arrives meanwhile.
        health_url = f"http://127.0.0.1:{stack.env['HEALTH_PORT']}/health"
        async with httpx.AsyncClient() as http:
            intake = (await http.get(health_url)).json()["intake"]
        assert intake["open"] is False
        assert intake["queues"]["export_jobs"]["reasons"] == [
            "the Export API's circuit breaker is open"
        ]
        await stack.send_job(["exp-unknown"])
        await trio.sleep(7)
        sim.end_outage()
        await trio.sleep(3)
        sim.begin_outage()
        await trio.sleep(6)
        sim.end_outage()
        ended = trio.current_time()
        finals = {}
        for export_id in [*ids, "exp-unknown"]:
            left = RESUME_WITHIN_SECONDS - (trio.current_time() - ended)
            finals[export_id] = await stack.wait_final(export_id, within=max(left, 0.1))
        resumed_in = trio.current_time() - ended
        log.warning("Export API outages: all jobs final", seconds_after_end=round(resumed_in, 1))
        stop.set()
        for export_id in ids:
            job = finals[export_id]
            assert job.status is JobStatus.COMPLETED, (export_id, job.error)
            assert job.summary.files_done == 2
            assert job.summary.entries_uploaded == 2
        unknown = finals["exp-unknown"]
        assert unknown.status is JobStatus.FAILED
        assert "404" in (unknown.error or "")
        assert "breaker" not in (unknown.error or "")
        assert await stack.queue_depth(stack.urls.export_jobs_dlq_url) == 0


async def test_dynamodb_outage_resumes_within_seconds(aws_endpoint: str) -> None:
    """DynamoDB throttling every call mid-job: the job completes within 20 s of the outage's end."""
    proxy = FaultProxy(aws_endpoint)
    async with trio.open_nursery() as outer:
        proxy_url = await outer.start(serve_fault_proxy, proxy)
        async with open_stack(aws_endpoint) as stack:
            ids = await add_exports(stack, 2, bytes_per_second=400_000)
            # From the first file recorded: the exports are in flight.
            outage = proxy.add(
                Fault(
                    "dynamodb",
                    "*",
                    "status",
                    status=400,
                    code="ThrottlingException",
                    for_seconds=DYNAMODB_OUTAGE_SECONDS,
                    begins_with="TransactWriteItems",
                )
            )
            stop = trio.Event()
            settings = stack.settings(Mode.ALL, AWS_ENDPOINT_URL=proxy_url)
            stack.nursery.start_soon(run_service, settings, Mode.ALL, stop)
            for export_id in ids:
                await stack.send_job([export_id])
            await wait_until(lambda: outage.hits > 0, within=60)
            began = trio.current_time()
            ends = began + DYNAMODB_OUTAGE_SECONDS
            finals = []
            for export_id in ids:
                left = ends + RESUME_WITHIN_SECONDS - trio.current_time()
                finals.append(await stack.wait_final(export_id, within=max(left, 0.1)))
            after_end = trio.current_time() - ends
            log.warning(
                "DynamoDB outage: all jobs final",
                outage_seconds=DYNAMODB_OUTAGE_SECONDS,
                seconds_after_end=round(after_end, 1),
                hits=outage.hits,
            )
            stop.set()
            assert all(job.status is JobStatus.COMPLETED for job in finals), [
                job.error for job in finals
            ]
            assert all(job.summary.files_done == 2 for job in finals)
            assert await stack.queue_depth(stack.urls.export_jobs_dlq_url) == 0
        outer.cancel_scope.cancel()


async def test_transient_errors_fail_the_job_only_past_max_wait(aws_endpoint: str) -> None:
    """An export whose status keeps answering 503 is tried again, then FAILED past the max wait."""
    async with open_stack(aws_endpoint) as stack:
        stack.simulator.add_export("exp-sick", [])
        # This export alone: the API's root answers, so each hand-back comes again.
        stack.simulator.inject_status("status", 503, times=1_000, export_id="exp-sick")
        settings = stack.settings(
            Mode.ALL, EXPORT_API_MAX_ATTEMPTS="2", EXPORT_MAX_WAIT_SECONDS="4"
        )
        stop = trio.Event()
        stack.nursery.start_soon(run_service, settings, Mode.ALL, stop)
        await stack.send_job(["exp-sick"])
        job = await stack.wait_final("exp-sick", within=60)
        stop.set()
        assert job.status is JobStatus.FAILED
        assert "gave up after 2 attempts" in (job.error or "")
        assert "503" in (job.error or "")
        # More than one delivery's attempts: the first ones handed the work back.
        assert stack.simulator.count("status", export_id="exp-sick") > 2
        assert await stack.queue_depth(stack.urls.export_jobs_dlq_url) == 0


async def test_a_download_fails_its_file_only_past_max_wait(aws_endpoint: str) -> None:
    """A download that keeps answering 503 is handed back, then fails its file past the max wait."""
    entries = [("a.txt", b"alpha" * 100)]
    async with open_stack(aws_endpoint) as stack:
        stack.simulator.add_export("exp-sick-file", [("p.zip", build_zip(entries))])
        await stack.seed("exp-sick-file", metadata_for(entries))
        stack.simulator.inject_status("download", 503, times=1_000, export_id="exp-sick-file")
        settings = stack.settings(
            Mode.ALL, EXPORT_API_MAX_ATTEMPTS="2", EXPORT_MAX_WAIT_SECONDS="4"
        )
        stop = trio.Event()
        stack.nursery.start_soon(run_service, settings, Mode.ALL, stop)
        await stack.send_job(["exp-sick-file"])
        job = await stack.wait_final("exp-sick-file", within=60)
        stop.set()
        assert job.status is JobStatus.FAILED
        assert job.summary.files_failed == 1
        assert "gave up after 2 attempts" in (job.error or "")
        assert stack.simulator.count("download", export_id="exp-sick-file") > 2
        assert await stack.queue_depth(stack.urls.export_jobs_dlq_url) == 0
