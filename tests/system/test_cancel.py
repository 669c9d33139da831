"""Cancel and retry on running services: in flight, across processes, and from where it stood."""

from __future__ import annotations

import random
import zipfile
from collections.abc import Awaitable, Callable

import httpx
import trio

from pipeline._adapters.aws.jobcontrol import cancel_job
from pipeline._config import Mode
from pipeline._core.accounting import JobStatus, JobSummary
from pipeline.testing.demo import build_zip, metadata_for
from pipeline.testing.moto import free_port
from tests.support.stack import Stack, open_stack

ADMIN = "admin-token-5678"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
QUICK = [("quick/a.txt", b"alpha" * 100)]
# Incompressible, stored, served at 2 MB/s: its multipart upload opens after
# one 8 MiB part and it would take about 8 s in all.
BIG = [("big/b.bin", random.Random(7).randbytes(16 * 1024 * 1024))]


async def _wait_for(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    """Poll ``check()`` until it is true; fails the test after ``within`` seconds."""
    with trio.move_on_after(within) as scope:
        while True:
            if await check():
                return
            await trio.sleep(0.1)
    assert not scope.cancelled_caught, f"not within {within} s: {what}"


async def _with_big_file_in_flight(stack: Stack, export_id: str) -> None:
    """Add an export of a quick file and a throttled big one; seed both."""
    big = build_zip(BIG, method=zipfile.ZIP_STORED)
    files = [("quick.zip", build_zip(QUICK)), ("big.zip", big)]
    _, big_id = stack.simulator.add_export(export_id, files)
    stack.simulator.set_throttle(export_id, big_id, 2_000_000)
    await stack.seed(export_id, metadata_for([*QUICK, *BIG]))


async def _upload_open(stack: Stack) -> bool:
    return await stack.open_uploads() > 0


async def test_cancel_stops_files_in_flight(aws_endpoint: str) -> None:
    """POST cancel mid-file: CANCELLED within 10 s, the open upload aborted, the queue
    empty, the finished file's object kept; a later delivery does no work."""
    async with open_stack(aws_endpoint) as stack:
        await _with_big_file_in_flight(stack, "exp-cancel")
        port = free_port()
        stop = await stack.run_service(HEALTH_PORT=str(port), ADMIN_TOKEN=ADMIN)
        await stack.send_job(["exp-cancel"])
        await _wait_for(lambda: _upload_open(stack), 30, "the big entry's upload opened")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            answer = await client.post("/jobs/exp-cancel/cancel", headers=AUTH)
            began = trio.current_time()
            assert answer.status_code == 202
            assert answer.json()["status"] == "CANCELLED"

            async def stopped() -> bool:
                depth = await stack.queue_depth(stack.urls.export_jobs_url)
                return depth == 0 and not await _upload_open(stack)

            await _wait_for(stopped, 10, "upload aborted and message deleted")
            assert trio.current_time() - began < 10
            again = await client.post("/jobs/exp-cancel/cancel", headers=AUTH)
        job = await stack.jobs.get_job("exp-cancel")
        assert job is not None
        assert job.status is JobStatus.CANCELLED
        assert again.status_code == 409
        assert set(await stack.objects("exp-cancel")) == {"quick/a.txt"}
        downloads = stack.simulator.download_requests
        await stack.send_job(["exp-cancel"], "c-again")
        await _wait_for(
            lambda: _queue_empty(stack, stack.urls.export_jobs_url), 20, "redelivery consumed"
        )
        stop.set()
        assert stack.simulator.download_requests == downloads
        job = await stack.jobs.get_job("exp-cancel")
        assert job is not None
        assert job.status is JobStatus.CANCELLED


async def _queue_empty(stack: Stack, url: str) -> bool:
    return await stack.queue_depth(url) == 0


async def test_cancel_reaches_a_worker_of_another_process(aws_endpoint: str) -> None:
    """A cancel written to the job item (as any other process writes it) stops a worker's
    file within 10 s: upload aborted, task message deleted, no task left to start."""
    async with open_stack(aws_endpoint, with_task_queue=True) as stack:
        await _with_big_file_in_flight(stack, "exp-far")
        stop_orchestrator = await stack.run_service(Mode.ORCHESTRATOR, HEALTH_PORT=str(free_port()))
        stop_worker = await stack.run_service(
            Mode.WORKER, HEALTH_PORT=str(free_port()), MAX_CONCURRENT_JOBS="1"
        )
        await stack.send_job(["exp-far"])
        await _wait_for(lambda: _upload_open(stack), 30, "the big entry's upload opened")
        answer = await cancel_job(stack.jobs, "exp-far")
        assert answer.job is not None
        assert answer.job.status is JobStatus.CANCELLED

        async def stopped() -> bool:
            tasks = await stack.queue_depth(stack.urls.download_tasks_url)
            jobs = await stack.queue_depth(stack.urls.export_jobs_url)
            return tasks == 0 and jobs == 0 and not await _upload_open(stack)

        await _wait_for(stopped, 10, "the worker stopped the file and deleted its message")
        stop_orchestrator.set()
        stop_worker.set()
        assert "big/b.bin" not in await stack.objects("exp-far")


async def test_retry_downloads_only_the_failed_file(aws_endpoint: str) -> None:
    """A job FAILED on one corrupt file, retried once the file is good, downloads only that
    file again and ends COMPLETED with the counts of one clean run."""
    good = [[("r/one.txt", b"one" * 50)], [("r/two.txt", b"two" * 50)]]
    files = [("one.zip", build_zip(good[0])), ("two.zip", build_zip(good[1]))]
    async with open_stack(aws_endpoint) as stack:
        one_id, two_id = stack.simulator.add_export(
            "exp-retry", [files[0], ("two.zip", b"PK\x03\x04 this is not a zip")]
        )
        await stack.seed("exp-retry", metadata_for([*good[0], *good[1]]))
        port = free_port()
        stop = await stack.run_service(HEALTH_PORT=str(port), ADMIN_TOKEN=ADMIN)
        await stack.send_job(["exp-retry"])
        failed = await stack.wait_final("exp-retry")
        assert failed.status is JobStatus.FAILED
        before = {
            file_id: stack.simulator.count("download", file_id=file_id)
            for file_id in (one_id, two_id)
        }
        stack.simulator.add_export("exp-retry", files)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            answer = await client.post("/jobs/exp-retry/retry", headers=AUTH)
        assert answer.status_code == 202
        assert answer.json()["status"] == "WAITING"

        async def completed() -> bool:
            job = await stack.jobs.get_job("exp-retry")
            return job is not None and job.status is JobStatus.COMPLETED

        await _wait_for(completed, 30, "the retried job COMPLETED")
        stop.set()
        job = await stack.jobs.get_job("exp-retry")
        assert job is not None
        assert job.summary == JobSummary(2, 2, 0, 2, 0, 0, 0, 300)
        assert stack.simulator.count("download", file_id=one_id) == before[one_id]
        assert stack.simulator.count("download", file_id=two_id) > before[two_id]
        assert set(await stack.objects("exp-retry")) == {"r/one.txt", "r/two.txt"}


FOUR = [[(f"four/{n}.txt", f"file {n} ".encode() * 40)] for n in range(4)]


async def _pending_job_cancelled(stack: Stack, client: httpx.AsyncClient) -> list[str]:
    """A 4-file export submitted while PENDING, cancelled while WAITING; its file IDs."""
    files = [(f"{n}.zip", build_zip(entries)) for n, entries in enumerate(FOUR)]
    file_ids = stack.simulator.add_export("exp-race", files)
    stack.simulator.set_status("exp-race", "PENDING")
    await stack.seed("exp-race", metadata_for([entry for entries in FOUR for entry in entries]))
    await stack.send_job(["exp-race"])

    async def waiting() -> bool:
        job = await stack.jobs.get_job("exp-race")
        return job is not None and job.status is JobStatus.WAITING

    await _wait_for(waiting, 30, "the job WAITING on its pending export")
    assert (await client.post("/jobs/exp-race/cancel", headers=AUTH)).status_code == 202
    return file_ids


async def _all_at_once(client: httpx.AsyncClient, path: str, times: int) -> list[int]:
    """``times`` concurrent POSTs of ``path``; their status codes."""
    codes: list[int] = []

    async def post() -> None:
        codes.append((await client.post(path, headers=AUTH)).status_code)

    async with trio.open_nursery() as nursery:
        for _ in range(times):
            nursery.start_soon(post)
    return codes


async def test_racing_retries_run_the_job_once(aws_endpoint: str) -> None:
    """20 concurrent retries of a cancelled 4-file job: one 202, 19 x 409, and one run:
    one listing and each file downloaded as in one clean run, no message left behind."""
    async with open_stack(aws_endpoint) as stack:
        port = free_port()
        stop = await stack.run_service(HEALTH_PORT=str(port), ADMIN_TOKEN=ADMIN)
        # The same files in a clean run: the requests one download of each takes.
        files = [(f"{n}.zip", build_zip(entries)) for n, entries in enumerate(FOUR)]
        clean_ids = stack.simulator.add_export("exp-clean", files)
        await stack.send_job(["exp-clean"])
        await stack.wait_final("exp-clean")
        clean = [stack.simulator.count("download", file_id=f) for f in clean_ids]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            file_ids = await _pending_job_cancelled(stack, client)
            assert stack.simulator.count("files", export_id="exp-race") == 0
            stack.simulator.set_status("exp-race", "READY")
            codes = await _all_at_once(client, "/jobs/exp-race/retry", 20)
        assert sorted(codes) == [202] + [409] * 19
        job = await stack.wait_final("exp-race")
        await _wait_for(
            lambda: _queue_empty(stack, stack.urls.export_jobs_url), 20, "the queue empty"
        )
        stop.set()
        assert job.status is JobStatus.COMPLETED
        assert (job.summary.files_done, job.summary.entries_uploaded) == (4, 4)
        assert stack.simulator.count("files", export_id="exp-race") == 1
        assert [stack.simulator.count("download", file_id=f) for f in file_ids] == clean


async def test_racing_cancels_are_accepted_once(aws_endpoint: str) -> None:
    """20 concurrent cancels of a WAITING job: one 202 and 19 x 409; it stays CANCELLED
    and nothing of it is downloaded."""
    async with open_stack(aws_endpoint) as stack:
        files = [(f"{n}.zip", build_zip(entries)) for n, entries in enumerate(FOUR)]
        stack.simulator.add_export("exp-cancels", files)
        stack.simulator.set_status("exp-cancels", "PENDING")
        port = free_port()
        stop = await stack.run_service(HEALTH_PORT=str(port), ADMIN_TOKEN=ADMIN)
        await stack.send_job(["exp-cancels"])

        async def waiting() -> bool:
            job = await stack.jobs.get_job("exp-cancels")
            return job is not None and job.status is JobStatus.WAITING

        await _wait_for(waiting, 30, "the job WAITING on its pending export")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            codes = await _all_at_once(client, "/jobs/exp-cancels/cancel", 20)
        stack.simulator.set_status("exp-cancels", "READY")
        await _wait_for(
            lambda: _queue_empty(stack, stack.urls.export_jobs_url), 20, "the hand-back consumed"
        )
        stop.set()
        job = await stack.jobs.get_job("exp-cancels")
        assert sorted(codes) == [202] + [409] * 19
        assert job is not None
        assert job.status is JobStatus.CANCELLED
        assert stack.simulator.count("download", export_id="exp-cancels") == 0
