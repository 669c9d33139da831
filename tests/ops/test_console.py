"""The console commands (jobs, files, pause, resume) as a person runs them, against a stack."""

from __future__ import annotations

import json
import os
import sys

import trio

from pipeline._adapters.aws.pauses import read_pauses
from pipeline._core.accounting import JobStatus
from pipeline.testing.demo import build_zip, metadata_for
from pipeline.testing.moto import free_port
from tests.support.stack import Stack, open_stack

ENTRIES = [("a.txt", b"alpha" * 40), ("b.txt", b"beta" * 40)]


async def _run(stack: Stack, *args: str) -> tuple[int, str]:
    """Run ``python -m pipeline ARGS`` with the stack's environment; exit status and output."""
    done = await trio.run_process(
        [sys.executable, "-m", "pipeline", *args],
        env={**os.environ, **stack.env, "COLUMNS": "200"},
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    return done.returncode, (done.stdout + done.stderr).decode()


async def test_jobs_files_pause_and_resume(aws_endpoint: str) -> None:
    """jobs lists newest first and by status, files names the failed file's reason, pause
    and resume write the queue's control item, and bad arguments exit 2."""
    async with open_stack(aws_endpoint) as stack:
        stack.simulator.add_export("exp-good", [("p.zip", build_zip(ENTRIES))])
        stack.simulator.add_export("exp-bad", [("bad.zip", b"not a zip")])
        await stack.seed("exp-good", metadata_for(ENTRIES))
        stop = await stack.run_service(HEALTH_PORT=str(free_port()))
        await stack.send_job(["exp-good"])
        await stack.wait_final("exp-good")
        await stack.send_job(["exp-bad"])
        assert (await stack.wait_final("exp-bad")).status is JobStatus.FAILED
        stop.set()
        code, listed = await _run(stack, "jobs")
        failed_code, failed = await _run(stack, "jobs", "--status", "failed", "--json")
        files_code, files = await _run(stack, "files", "exp-bad", "--status", "failed")
        none_code, none = await _run(stack, "files", "exp-nobody")
        bad_id_code, _ = await _run(stack, "files", "exp/../x")
        pause_code, paused = await _run(stack, "pause", "export-jobs")
        after_pause = await read_pauses(stack.jobs)
        resume_code, _ = await _run(stack, "resume", "export-jobs")
        after_resume = await read_pauses(stack.jobs)
        wrong_code, _ = await _run(stack, "pause", "nowhere")
    assert code == 0, listed
    assert listed.index("exp-bad") < listed.index("exp-good")  # newest first
    assert "2 jobs, newest first" in listed
    assert failed_code == 0, failed
    assert [job["exportId"] for job in json.loads(failed)["jobs"]] == ["exp-bad"]
    assert files_code == 0, files
    assert "bad.zip" in files
    assert "failed" in files
    assert "1 files of exp-bad, 1 failed" in files
    assert none_code == 1
    assert "no job for export 'exp-nobody'" in none
    assert bad_id_code == 2
    assert pause_code == 0, paused
    assert "export-jobs paused" in paused
    assert after_pause["export-jobs"] is True
    assert resume_code == 0
    assert after_resume["export-jobs"] is False
    assert wrong_code == 2
