"""Live job counts: they move while a job runs, and a FAILED job's counts are not a snapshot."""

from __future__ import annotations

import random
from collections.abc import Callable

import httpx
import trio

from pipeline._adapters.aws.jobstore import JobItem
from pipeline._config import Mode
from pipeline._core.accounting import JobStatus, JobSummary
from pipeline.testing.demo import build_zip, metadata_for
from pipeline.testing.moto import free_port
from tests.support.stack import Stack, open_stack

QUICK = [[(f"q{n}/a.txt", b"quick" * 200)] for n in range(2)]
# Incompressible and served at 20 kB/s: this file takes about 5 s.
SLOW = [("slow/s.bin", random.Random(3).randbytes(100_000))]


async def _summary_when(
    stack: Stack, export_id: str, check: Callable[[JobItem], bool], within: float
) -> JobSummary:
    """The job's counts once ``check(job)`` holds; fails the test after ``within`` seconds."""
    with trio.fail_after(within):
        while True:
            job = await stack.jobs.get_job(export_id)
            if job is not None and check(job):
                return job.summary
            await trio.sleep(0.1)


async def _watch_progress(base: str, seen: list[tuple[str, float]]) -> None:
    """Record each (status, progress) GET /jobs/exp-live answers until the job is final."""
    async with httpx.AsyncClient(base_url=base) as client:
        while not seen or seen[-1][0] in ("WAITING", "RUNNING"):
            try:
                answer = await client.get("/jobs/exp-live")
            except httpx.TransportError:
                answer = None  # the service is still starting
            if answer is not None and answer.status_code == 200:
                view = answer.json()
                seen.append((view["status"], view["progress"]))
            await trio.sleep(0.1)


async def test_counts_move_while_running(aws_endpoint: str) -> None:
    """Finished files show in a RUNNING job's counts (and GET /jobs progress), with bytesTotal,
    before the slow one ends."""
    zips = [("slow.zip", build_zip(SLOW))] + [
        (f"q{n}.zip", build_zip(entries)) for n, entries in enumerate(QUICK)
    ]
    async with open_stack(aws_endpoint) as stack:
        slow_id, *_ = stack.simulator.add_export("exp-live", zips)
        stack.simulator.set_throttle("exp-live", slow_id, 20_000)
        await stack.seed("exp-live", metadata_for([*SLOW, *QUICK[0], *QUICK[1]]))
        port = free_port()
        stop = await stack.run_service(Mode.ALL, HEALTH_PORT=str(port))
        await stack.send_job(["exp-live"])
        seen: list[tuple[str, float]] = []
        stack.nursery.start_soon(_watch_progress, f"http://127.0.0.1:{port}", seen)
        running = await _summary_when(
            stack,
            "exp-live",
            lambda job: job.status is JobStatus.RUNNING and job.summary.files_done == 2,
            within=30,
        )
        job = await stack.jobs.get_job("exp-live")
        assert job is not None
        assert job.bytes_total == sum(len(data) for _, data in zips)
        assert running.entries_uploaded == 2
        assert running.files_total == 3
        final = await stack.wait_final("exp-live")
        await trio.sleep(0.5)  # the watcher's last look sees the final job
        stop.set()
        assert final.status is JobStatus.COMPLETED
        # GET /jobs/{id} showed the job part-way, never going back, and 1.0 once final.
        assert any(status == "RUNNING" and 0 < progress < 1 for status, progress in seen), seen
        progresses = [progress for _, progress in seen]
        assert progresses == sorted(progresses)
        assert seen[-1] == ("COMPLETED", 1.0)
        assert final.summary == JobSummary(3, 3, 0, 3, 0, 0, 0, 2 * 1000 + 100_000)


async def test_listing_fault_counts_keep_moving(aws_endpoint: str) -> None:
    """A job FAILED by a listing fault counts a worker's file still in flight as it finishes."""
    zips = [("slow.zip", build_zip(SLOW)), ("q0.zip", build_zip(QUICK[0]))]
    async with open_stack(aws_endpoint, with_task_queue=True) as stack:
        slow_id, _ = stack.simulator.add_export(
            "exp-loop", zips, page_size_cap=1, repeat_cursor=True
        )
        stack.simulator.set_throttle("exp-loop", slow_id, 20_000)
        await stack.seed("exp-loop", metadata_for([*SLOW, *QUICK[0]]))
        # The orchestrator fails the job at the fault, before the worker is done.
        stop_orchestrator = await stack.run_service(Mode.ORCHESTRATOR)
        stop_worker = await stack.run_service(Mode.WORKER, HEALTH_PORT=str(free_port()))
        await stack.send_job(["exp-loop"])
        failed = await stack.wait_final("exp-loop", within=30)
        assert failed.status is JobStatus.FAILED
        assert failed.summary.files_done < failed.summary.files_total
        assert failed.error is not None
        assert "cursor" in failed.error
        assert failed.summary.files_total >= 1
        # The slow file was in flight when the job failed; its upload shows later.
        final = await _summary_when(
            stack,
            "exp-loop",
            lambda job: job.summary.files_done == job.summary.files_total,
            within=30,
        )
        stop_orchestrator.set()
        stop_worker.set()
        objects = await stack.objects("exp-loop")
        assert final.entries_uploaded == len(objects) >= 1
        assert final.bytes_uploaded == sum(len(body) for body, _ in objects.values())
