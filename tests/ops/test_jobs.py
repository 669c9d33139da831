"""The job commands (submit, status, cancel, retry) as a person runs them, against a stack."""

from __future__ import annotations

import json
import os
import sys

import pytest
import trio

from pipeline._core.accounting import JobStatus
from pipeline.ops.jobs import main
from pipeline.testing.demo import build_zip, metadata_for
from pipeline.testing.moto import free_port
from tests.support.stack import Stack, open_stack

ENTRIES = [("a.txt", b"alpha" * 40), ("b.txt", b"beta" * 40)]


async def _run(stack: Stack, *args: str) -> tuple[int, str]:
    """Run ``python -m pipeline ARGS`` with the stack's environment; exit status and output."""
    done = await trio.run_process(
        [sys.executable, "-m", "pipeline", *args],
        env={**os.environ, **stack.env, "COLUMNS": "160"},
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    return done.returncode, (done.stdout + done.stderr).decode()


@pytest.mark.slow
async def test_submit_wait_follows_the_job_to_its_end(aws_endpoint: str) -> None:
    """submit --wait exits 0 once the job is COMPLETED and shows its counts; a job that
    fails makes it exit 1."""
    async with open_stack(aws_endpoint) as stack:
        stack.simulator.add_export("exp-cli", [("p.zip", build_zip(ENTRIES))])
        stack.simulator.add_export("exp-cli-bad", [], status="FAILED")
        await stack.seed("exp-cli", metadata_for(ENTRIES))
        stop = await stack.run_service(HEALTH_PORT=str(free_port()))
        code, out = await _run(stack, "submit", "exp-cli", "--wait", "--correlation-id", "c-cli")
        bad_code, bad_out = await _run(stack, "submit", "exp-cli-bad", "--wait")
        stop.set()
    assert code == 0, out
    assert "submitted exp-cli (correlationId c-cli)" in out
    assert "COMPLETED" in out
    assert "1/0/1" in out  # files done/failed/total in the final table
    assert bad_code == 1, bad_out
    assert "FAILED" in bad_out


async def test_status_cancel_and_retry(
    aws_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """status shows a job (table or JSON) and says when there is none; cancel stops an
    active job (recording that the command line did) and refuses a final one with one
    line and exit 1; retry sends a cancelled job back to WAITING, and refuses it again."""

    async def run(*args: str) -> tuple[int, str]:
        # The command's own trio.run, in a thread: what a shell runs, without its start-up.
        code = await trio.to_thread.run_sync(main, list(args), stack.env)
        out, err = capsys.readouterr()
        return code, out + err

    async with open_stack(aws_endpoint) as stack:
        await stack.jobs.begin_job("exp-op", "c-op", JobStatus.RUNNING)
        unknown_code, unknown_out = await run("status", "exp-none")
        table_code, table_out = await run("status", "exp-op")
        cancel_code, cancel_out = await run("cancel", "exp-op")
        again_code, again_out = await run("cancel", "exp-op")
        cancelled = await stack.jobs.get_job("exp-op")
        retry_code, retry_out = await run("retry", "exp-op")
        twice_code, twice_out = await run("retry", "exp-op")
        json_code, json_out = await run("status", "exp-op", "--json")
        depth = await stack.queue_depth(stack.urls.export_jobs_url)
    assert (unknown_code, "no job for export 'exp-none'" in unknown_out) == (1, True)
    assert table_code == 0
    assert "exp-op" in table_out
    assert "RUNNING" in table_out
    assert (cancel_code, cancel_out.strip()) == (0, "exp-op: CANCELLED")
    assert cancelled is not None
    assert cancelled.error == "cancelled through the command line"
    assert again_code == 1
    assert again_out.strip().startswith("pipeline cancel: refused (conflict): the job is CANCELLED")
    assert (retry_code, retry_out.strip()) == (0, "exp-op: WAITING")
    assert twice_code == 1
    assert twice_out.strip().startswith("pipeline retry: refused (conflict): the job is WAITING")
    assert json_code == 0
    view = json.loads(json_out)
    assert (view["exportId"], view["status"]) == ("exp-op", "WAITING")
    assert depth == 1


@pytest.mark.parametrize("bad", ["bad/id", "../x", "ééé", "", "x" * 129])
async def test_submit_refuses_a_bad_export_id_and_sends_nothing(
    aws_endpoint: str, bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """submit with an ID POST /jobs would refuse exits 2, names it, and sends no message."""
    async with open_stack(aws_endpoint) as stack:
        args = ["submit", "exp-good", bad, "--wait"]
        code = await trio.to_thread.run_sync(main, args, stack.env)
        depth = await stack.queue_depth(stack.urls.export_jobs_url)
    err = capsys.readouterr().err
    assert code == 2
    assert "is not 1-128 characters" in err
    assert "nothing was sent" in err
    assert depth == 0


async def test_status_shows_full_ids_one_line_errors_and_true_progress(
    aws_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """At 80 columns, status prints long export IDs whole, a FAILED job's error on one
    line under the table (escape codes escaped), and a job CANCELLED at 0/4 as 0 %."""
    long_ids = ["slowrunning-export-00001", "slowrunning-export-00002"]
    error = "the Export API answered 401 for every request \x1b[31m; check EXPORT_API_TOKEN"
    async with open_stack(aws_endpoint) as stack:
        for export_id in long_ids:
            await stack.jobs.begin_job(export_id, "c", JobStatus.RUNNING)
            await stack.jobs.set_listing_done(export_id, files_total=4)
        await stack.jobs.finish_job(long_ids[0], JobStatus.CANCELLED, None, None)
        await stack.jobs.finish_job(long_ids[1], JobStatus.FAILED, None, error)
        code = await trio.to_thread.run_sync(main, ["status", *long_ids], stack.env)
    out = capsys.readouterr().out
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith(long_ids[0])]
    assert "CANCELLED" in rows[0]
    assert rows[0].rstrip().endswith(" 0%")
    assert f"{long_ids[1]}: the Export API answered 401 for every request \\x1b[31m;" in out
    assert "\x1b" not in out


async def test_submit_high_and_delayed(
    aws_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """submit --priority high sends to the high queue when there is one (else to the
    normal queue), with --not-before in the body; a bad time exits 2, nothing sent."""

    async def submit(env: dict[str, str], *args: str) -> int:
        code = await trio.to_thread.run_sync(main, ["submit", *args], env)
        capsys.readouterr()
        return code

    async def bodies(url: str) -> list[dict[str, object]]:
        got = await stack.aws.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
        return [json.loads(m["Body"]) for m in got.get("Messages", [])]

    async with open_stack(aws_endpoint, with_high_queues=True) as stack:
        high_url = stack.urls.export_jobs_high_url
        when = "2030-01-31T23:00:00+01:00"
        args = ("exp-hi", "--priority", "high", "--not-before", when, "--correlation-id", "c-hi")
        assert await submit(stack.env, *args) == 0
        one_lane = {k: v for k, v in stack.env.items() if k != "SQS_EXPORT_JOBS_HIGH_URL"}
        assert await submit(one_lane, "exp-one", "--priority", "high") == 0
        with pytest.raises(SystemExit) as refused:
            main(["submit", "exp-bad", "--not-before", "2030-01-31 23:00"], stack.env)
        high, normal = await bodies(high_url), await bodies(stack.urls.export_jobs_url)
    assert high == [
        {
            "exportIds": ["exp-hi"],
            "correlationId": "c-hi",
            "priority": "high",
            "notBefore": "2030-01-31T22:00:00Z",
        }
    ]
    assert [(b["exportIds"], b["priority"]) for b in normal] == [(["exp-one"], "high")]
    assert refused.value.code == 2
    assert "with its zone" in capsys.readouterr().err


@pytest.mark.parametrize("verb", ["cancel", "retry", "status"])
async def test_other_commands_refuse_a_bad_export_id_with_exit_2(
    aws_endpoint: str, verb: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """cancel, retry and status validate the ID as submit does: exit 2, nothing sent."""
    async with open_stack(aws_endpoint) as stack:
        code = await trio.to_thread.run_sync(main, [verb, "bad/id"], stack.env)
        depth = await stack.queue_depth(stack.urls.export_jobs_url)
    err = capsys.readouterr().err
    assert code == 2
    assert f"pipeline {verb}: export ID" in err
    assert depth == 0
