"""Duplicate and late download tasks: a recorded file is never redone nor downgraded."""

from __future__ import annotations

from pipeline._adapters.aws import sqs as _sqs
from pipeline._config import Mode
from pipeline._core.accounting import JobStatus
from pipeline._core.backoff import AWS_POLICY
from pipeline._core.messages import DownloadTask, encode_download_task
from pipeline.testing.demo import build_zip, metadata_for
from pipeline.testing.moto import free_port
from tests.support.stack import open_stack
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
        late = DownloadTask(
            export_id="exp-dup",
            correlation_id="c-late",
            file_id=file_id,
            name="p.zip",
            download_url=stack.simulator.download_url("exp-dup", file_id),
            size_bytes=len(build_zip(ENTRIES)),
        )
        tasks_url = stack.env["SQS_DOWNLOAD_TASKS_URL"]
        await _sqs.send(stack.aws.sqs, tasks_url, encode_download_task(late), policy=AWS_POLICY)
        assert await _wait_for(lambda: _is_empty(stack, tasks_url), within=30)
        stop_orchestrator.set()
        stop_worker.set()
        after = await stack.jobs.get_job("exp-dup")
        assert after is not None
        assert after.status is JobStatus.COMPLETED
        assert after.summary == first.summary
        assert stack.simulator.download_requests == downloads
        assert set(await stack.objects("exp-dup")) == {"a.txt", "b.txt"}
