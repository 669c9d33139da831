"""``python -m pipeline.ops.provision``: names from the environment, idempotent, exit codes."""

from __future__ import annotations

import functools
import json
import uuid

import pytest
import trio

import pipeline.ops.provision as cli
from pipeline._adapters.aws.clients import open_aws_clients
from pipeline._config import ConfigError


def _env(aws_endpoint: str, tag: str, *, tasks: bool = True) -> dict[str, str]:
    env = {
        "AWS_ENDPOINT_URL": aws_endpoint,
        "AWS_REGION": "us-east-1",
        "SQS_EXPORT_JOBS_URL": f"{aws_endpoint}/123456789012/jobs-{tag}",
        "S3_BUCKET_NAME": f"bucket-{tag}",
        "DYNAMODB_METADATA_TABLE": f"meta-{tag}",
        "DYNAMODB_JOBS_TABLE": f"jobs-{tag}",
    }
    if tasks:
        env["SQS_DOWNLOAD_TASKS_URL"] = f"{aws_endpoint}/123456789012/tasks-{tag}"
        env["SQS_DOWNLOAD_TASKS_HIGH_URL"] = f"{aws_endpoint}/123456789012/tasks-high-{tag}"
    return env


def test_public_surface_is_complete() -> None:
    """Every name in __all__ exists, once, sorted."""
    assert cli.__all__ == sorted(set(cli.__all__))
    assert all(hasattr(cli, name) for name in cli.__all__)


def test_names_come_from_the_environment() -> None:
    """Queue names are the URLs' last segments; unset tables take the service's defaults."""
    request = cli.request_from_env(
        {
            "SQS_EXPORT_JOBS_URL": "http://moto:5000/123456789012/export-jobs",
            "S3_BUCKET_NAME": "pipeline-local",
            "DYNAMODB_JOBS_TABLE": "  ",
        }
    )
    assert request.export_jobs_queue == "export-jobs"
    assert request.download_tasks_queue is None
    assert request.export_jobs_high_queue is None
    assert request.download_tasks_high_queue is None
    assert (request.metadata_table, request.jobs_table) == ("export-metadata", "export-jobs")
    assert request.region == "us-east-1"
    assert request.endpoint_url is None


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"S3_BUCKET_NAME": "b"}, "SQS_EXPORT_JOBS_URL"),
        ({"SQS_EXPORT_JOBS_URL": "http://h/1/q"}, "S3_BUCKET_NAME"),
        ({"SQS_EXPORT_JOBS_URL": "queue", "S3_BUCKET_NAME": "b"}, "SQS_EXPORT_JOBS_URL"),
        (
            {
                "SQS_EXPORT_JOBS_URL": "http://h/1/q",
                "S3_BUCKET_NAME": "b",
                "SQS_EXPORT_JOBS_HIGH_URL": "high",
            },
            "SQS_EXPORT_JOBS_HIGH_URL",
        ),
    ],
)
def test_bad_environment_names_the_variable(environ: dict[str, str], named: str) -> None:
    """A missing or malformed variable raises ConfigError naming it."""
    with pytest.raises(ConfigError, match=named):
        cli.request_from_env(environ)


def test_bad_environment_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """The command line prints one line on stderr and exits 2 on a bad variable."""
    assert cli.main([], {"S3_BUCKET_NAME": "b"}) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "SQS_EXPORT_JOBS_URL" in err


async def test_creates_everything_twice(aws_endpoint: str) -> None:
    """Two runs succeed; queues with DLQs and the visibility asked, tables and bucket exist."""
    tag = uuid.uuid4().hex[:10]
    env = _env(aws_endpoint, tag)
    argv = ["--visibility-timeout", "17", "--max-receive-count", "2"]
    for _ in range(2):
        status = await trio.to_thread.run_sync(functools.partial(cli.main, argv, env))
        assert status == 0
    async with open_aws_clients(region="us-east-1", endpoint_url=aws_endpoint, pool_size=2) as aws:
        for name in (f"jobs-{tag}", f"tasks-{tag}", f"tasks-high-{tag}"):
            url = (await aws.sqs.get_queue_url(QueueName=name))["QueueUrl"]
            attributes = (await aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]))[
                "Attributes"
            ]
            assert attributes["VisibilityTimeout"] == "17"
            redrive = json.loads(attributes["RedrivePolicy"])
            assert redrive["deadLetterTargetArn"].endswith(f"{name}-dlq")
            assert int(redrive["maxReceiveCount"]) == 2
        for table in (f"meta-{tag}", f"jobs-{tag}"):
            described = await aws.dynamodb.describe_table(TableName=table)
            assert described["Table"]["TableStatus"] == "ACTIVE"
        await aws.s3.head_bucket(Bucket=f"bucket-{tag}")


async def test_unreachable_backend_fails_after_wait(capsys: pytest.CaptureFixture[str]) -> None:
    """With nothing listening, it keeps trying for --wait seconds, then exits 1."""
    env = _env("http://127.0.0.1:9", uuid.uuid4().hex[:10], tasks=False)
    status = await trio.to_thread.run_sync(functools.partial(cli.main, ["--wait", "0.5"], env))
    assert status == cli.EXIT_FAILED
    assert "failed" in capsys.readouterr().err
