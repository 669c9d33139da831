"""``python -m pipeline redrive``: dead letters back to their queue, or listed with --dry-run."""

from __future__ import annotations

import functools
import subprocess
import sys
import uuid

import pytest
import trio

import pipeline.ops.provision as provision_cli
import pipeline.ops.redrive as cli
from pipeline._adapters.aws import sqs
from pipeline._adapters.aws.clients import AwsClients, open_aws_clients
from pipeline._core.messages import DownloadTask, encode_download_task
from pipeline.testing.demo import build_zip, metadata_for
from pipeline.testing.moto import free_port
from tests.support.stack import open_stack
from tests.support.waiting import eventually


def _env(aws_endpoint: str, tag: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": aws_endpoint,
        "AWS_REGION": "us-east-1",
        "SQS_EXPORT_JOBS_URL": f"{aws_endpoint}/123456789012/jobs-{tag}",
        "SQS_DOWNLOAD_TASKS_URL": f"{aws_endpoint}/123456789012/tasks-{tag}",
        "S3_BUCKET_NAME": f"bucket-{tag}",
        "DYNAMODB_METADATA_TABLE": f"meta-{tag}",
        "DYNAMODB_JOBS_TABLE": f"jobs-{tag}",
    }


async def _provisioned(aws_endpoint: str) -> dict[str, str]:
    env = _env(aws_endpoint, uuid.uuid4().hex[:10])
    main = functools.partial(provision_cli.main, ["--visibility-timeout", "30"], env)
    assert await trio.to_thread.run_sync(main) == 0
    return env


async def _bodies(aws: AwsClients, url: str) -> list[str]:
    """Every visible message's body, each handed back at once."""
    seen: list[str] = []
    while batch := await sqs.receive(aws.sqs, url, max_messages=10, wait_seconds=0):
        seen += [message.body for message in batch]
        for message in batch:
            await sqs.delete(aws.sqs, url, message.receipt_handle)
    return seen


def _task(export_id: str) -> str:
    """A download-task body the service accepts."""
    file = DownloadTask(export_id, "c-1", "f-1", "p.zip", "http://127.0.0.1:1/p.zip", 10)
    return encode_download_task(file)


async def _dead_letter(aws: AwsClients, queue_url: str, bodies: list[str]) -> str:
    dlq = await sqs.dead_letter_queue_url(aws.sqs, queue_url)
    assert dlq is not None
    await sqs.send_batch(aws.sqs, dlq, bodies)
    return dlq


async def test_moves_every_dead_letter_back(aws_endpoint: str) -> None:
    """All dead letters reach the source queue once and leave the dead-letter queue."""
    env = await _provisioned(aws_endpoint)
    bodies = [f'{{"exportIds": ["exp-{n}"]}}' for n in range(23)]
    async with open_aws_clients(region="us-east-1", endpoint_url=aws_endpoint, pool_size=2) as aws:
        dlq = await _dead_letter(aws, env["SQS_EXPORT_JOBS_URL"], bodies)
        main = functools.partial(cli.main, ["export-jobs"], env)
        assert await trio.to_thread.run_sync(main) == 0
        assert sorted(await _bodies(aws, env["SQS_EXPORT_JOBS_URL"])) == sorted(bodies)
        assert await _bodies(aws, dlq) == []


async def test_dry_run_moves_nothing_and_lists_each(
    aws_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--dry-run prints one line per dead letter and leaves them visible where they were."""
    env = await _provisioned(aws_endpoint)
    bodies = [_task("exp-a"), _task("exp-b")]
    async with open_aws_clients(region="us-east-1", endpoint_url=aws_endpoint, pool_size=2) as aws:
        dlq = await _dead_letter(aws, env["SQS_DOWNLOAD_TASKS_URL"], bodies)
        main = functools.partial(cli.main, ["download-tasks", "--dry-run"], env)
        assert await trio.to_thread.run_sync(main) == 0
        out = capsys.readouterr().out
        assert "exp-a" in out
        assert "exp-b" in out
        assert "would move 2 message(s)" in out
        assert await _bodies(aws, env["SQS_DOWNLOAD_TASKS_URL"]) == []
        assert sorted(await _bodies(aws, dlq)) == sorted(bodies)


async def test_max_limits_how_many_move(aws_endpoint: str) -> None:
    """--max N moves N dead letters and leaves the rest."""
    env = await _provisioned(aws_endpoint)
    bodies = [f'{{"exportIds": ["exp-{n}"]}}' for n in range(5)]
    async with open_aws_clients(region="us-east-1", endpoint_url=aws_endpoint, pool_size=2) as aws:
        dlq = await _dead_letter(aws, env["SQS_EXPORT_JOBS_URL"], bodies)
        main = functools.partial(cli.main, ["export-jobs", "--max", "3"], env)
        assert await trio.to_thread.run_sync(main) == 0
        assert len(await _bodies(aws, env["SQS_EXPORT_JOBS_URL"])) == 3
        assert len(await _bodies(aws, dlq)) == 2


def test_missing_queue_variable_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """Without the queue's variable the command prints one line naming it and exits 2."""
    assert cli.main(["download-tasks"], {}) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "SQS_DOWNLOAD_TASKS_URL" in err


def test_reached_through_the_service_command_line() -> None:
    """``python -m pipeline redrive --help`` is the redrive command's own usage."""
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "redrive", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    assert "dead-letter queue" in done.stdout


async def test_poison_stays_and_good_bodies_move_once_while_the_service_runs(
    aws_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the service running, redrive ends: the poison body the service dead-lettered
    stays (kept, with its reason), the good one moves once and its job completes."""
    entries = [("a.txt", b"alpha")]
    async with open_stack(aws_endpoint) as stack:
        stack.simulator.add_export("exp-rd", [("p.zip", build_zip(entries))])
        await stack.seed("exp-rd", metadata_for(entries))
        dlq = await sqs.dead_letter_queue_url(stack.aws.sqs, stack.urls.export_jobs_url)
        assert dlq is not None
        stop = await stack.run_service(HEALTH_PORT=str(free_port()))
        await stack.send_raw("this is not json \x1b[31m")
        await eventually(functools.partial(stack.queue_depth, dlq), within=30)
        await sqs.send(stack.aws.sqs, dlq, '{"exportIds": ["exp-rd"], "correlationId": "c-rd"}')
        main = functools.partial(cli.main, ["export-jobs"], stack.env)
        with trio.fail_after(60):
            code = await trio.to_thread.run_sync(main)
        job = await stack.wait_final("exp-rd")
        left = await _bodies(stack.aws, dlq)
        stop.set()
    out = capsys.readouterr().out
    assert code == 0
    assert "moved 1 message(s)" in out
    assert "kept 1" in out
    assert "body is not valid JSON" in out
    assert "\x1b" not in out  # the escape code is shown, not sent
    assert "\\x1b[31m" in out
    assert job.correlation_id == "c-rd"
    assert left == ["this is not json \x1b[31m"]
