"""Duplicate, late and never-started download tasks: nothing redone, downgraded or stranded."""

from __future__ import annotations

import random

from pipeline._adapters.aws import sqs as _sqs
from pipeline._config import Mode
from pipeline._core.accounting import JobStatus
from pipeline._core.backoff import AWS_POLICY
from pipeline._core.messages import DownloadTask, encode_download_task
from pipeline.testing.demo import build_zip, metadata_for
from pipeline.testing.moto import free_port
from tests.support.stack import Stack, open_stack
from tests.system.test_faults import _is_empty, _wait_for

ENTRIES = [("a.txt", b"alpha" * 100), ("b.txt", b"beta" * 100)]


async def test_late_task_for_a_finished_file_changes_nothing(aws_endpoint: str) -> None:
    """A duplicate task arriving after the job completed, its URL now 403, is simply deleted."""
    async with open_stack(aws_endpoint, with_task_queue=True) as stack:
        (file_id,) = stack.simulator.add_export("exp-dup", [("p.zip", build_zip(ENTRIES))])
        await stack.seed("exp-dup", metadata_for(ENTRIES))
        stop_orchestrator = await stack.run_service(Mode.ORCHESTRATOR)
        stop_worker = await stack.run_service(Mode.WORKER, HEALTH_PORT=str(free_port()))
        await stack.send_job(["exp-dup"])
        first = await stack.wait_final("exp-dup")
        assert first.status is JobStatus.COMPLETED
        downloads = stack.simulator.download_requests
        # The presigned URL has expired since: any download now answers 403.
        stack.simulator.inject_status("download", 403, times=10)
        tasks_url = await _send_task(stack, "exp-dup", file_id, "p.zip")
        assert await _wait_for(lambda: _is_empty(stack, tasks_url), within=30)
        stop_orchestrator.set()
        stop_worker.set()
        after = await stack.jobs.get_job("exp-dup")
        assert after is not None
        assert after.status is JobStatus.COMPLETED
        assert after.summary == first.summary
        assert stack.simulator.download_requests == downloads
        assert set(await stack.objects("exp-dup")) == {"a.txt", "b.txt"}


async def test_stop_hands_back_tasks_that_never_started(aws_endpoint: str) -> None:
    """A download task waiting for a busy worker when the grace ends is visible at once."""
    # Incompressible, and served at 20 kB/s: the one worker stays busy for ~25 s.
    slow = [("slow.bin", random.Random(7).randbytes(500_000))]
    async with open_stack(aws_endpoint, with_task_queue=True) as stack:
        (slow_id,) = stack.simulator.add_export("exp-busy", [("s.zip", build_zip(slow))])
        stack.simulator.set_throttle("exp-busy", slow_id, 20_000)
        (file_id,) = stack.simulator.add_export("exp-waits", [("w.zip", build_zip(ENTRIES))])
        stop = await stack.run_service(
            Mode.ALL, MAX_CONCURRENT_JOBS="1", SHUTDOWN_GRACE_SECONDS="1"
        )
        await stack.send_job(["exp-busy"])
        assert await _wait_for(lambda: _downloading(stack, slow_id), within=30)
        tasks_url = await _send_task(stack, "exp-waits", file_id, "w.zip")
        # Received, and parked behind the busy worker.
        assert await _wait_for(lambda: _counts(stack, tasks_url, (0, 1)), within=30)
        stop.set()
        # Handed back when the service stops, not after the 30 s visibility timeout.
        assert await _wait_for(lambda: _counts(stack, tasks_url, (1, 0)), within=10)


async def _send_task(stack: Stack, export_id: str, file_id: str, name: str) -> str:
    """Send a download task for one file of ENTRIES straight to the task queue; its URL."""
    task = DownloadTask(
        export_id=export_id,
        correlation_id=f"c-{export_id}",
        file_id=file_id,
        name=name,
        download_url=stack.simulator.download_url(export_id, file_id),
        size_bytes=len(build_zip(ENTRIES)),
    )
    tasks_url = stack.env["SQS_DOWNLOAD_TASKS_URL"]
    await _sqs.send(stack.aws.sqs, tasks_url, encode_download_task(task), policy=AWS_POLICY)
    return tasks_url


async def _downloading(stack: Stack, file_id: str) -> bool:
    return any(r.route == "download" and r.file_id == file_id for r in stack.simulator.requests)


async def _counts(stack: Stack, url: str, expected: tuple[int, int]) -> bool:
    """Whether the queue holds ``expected`` (visible, in flight) messages."""
    response = await stack.aws.sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    attributes = response["Attributes"]
    found = (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )
    return found == expected
