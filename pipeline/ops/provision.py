"""Command line: ``python -m pipeline.ops.provision`` creates the resources the service expects.

The deployment's one-shot step (``compose.yaml``'s ``provision`` service, a CI
job against moto or LocalStack): it reads the same variables as the service
(contract 5), so the names can never drift from what the service is told to
use. Queue names are the last segment of ``SQS_EXPORT_JOBS_URL``,
``SQS_DOWNLOAD_TASKS_URL`` and, for the high lane, ``SQS_EXPORT_JOBS_HIGH_URL``
and ``SQS_DOWNLOAD_TASKS_HIGH_URL`` (each made only when set); table and
bucket names are taken as they are, with the service's defaults. The work
itself is :func:`pipeline.ops.provisioning.provision`, idempotent, so running
it at every start is safe.

A backend that is still starting (compose starts moto and this together) is
waited for, up to ``--wait`` seconds, instead of failing at the first refused
connection. A missing or bad variable prints one line and exits 2, like the
service; a resource that cannot be made exits 1.

``--backfill-index``, instead of provisioning, is the one-time step after an
upgrade that brought the jobs table's status index: it gives the summary
items an earlier version wrote their ``jobStatus``
(:func:`pipeline._adapters.aws.statusbackfill.backfill_status_index`), so
``GET /jobs`` and ``POST /jobs/retry`` find old jobs too. It creates nothing
(on AWS the stack owns the resources, and the task roles may not create
them), prints how many items it scanned and updated, and a second run
updates none.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar
from urllib.parse import urlsplit

import attrs
import trio

from pipeline._adapters.aws.clients import AwsClients, open_aws_clients
from pipeline._adapters.aws.statusbackfill import Backfilled, backfill_status_index
from pipeline._config import ConfigError, Settings
from pipeline._errors import AwsRejected, PipelineError
from pipeline.ops.provisioning import ProvisionedUrls, provision

__all__ = ["ProvisionRequest", "backfill", "main", "request_from_env", "run"]

T = TypeVar("T")

EXIT_FAILED = 1
EXIT_CONFIG = 2
# Between attempts while the backend is not up yet.
RETRY_EVERY_SECONDS = 1.0


@attrs.frozen
class ProvisionRequest:
    """The resource names and endpoint read from the environment."""

    region: str
    endpoint_url: str | None
    bucket: str
    metadata_table: str
    jobs_table: str
    export_jobs_queue: str
    download_tasks_queue: str | None
    export_jobs_high_queue: str | None = None
    download_tasks_high_queue: str | None = None


def _default(name: str) -> str:
    default = getattr(attrs.fields(Settings), name).default
    return str(default)


def _queue_name(variable: str, url: str) -> str:
    parts = urlsplit(url)
    name = parts.path.rstrip("/").rsplit("/", 1)[-1]
    if parts.scheme not in ("http", "https") or not parts.netloc or not name:
        msg = f"{variable} must be an absolute http(s) queue URL ending in the queue name"
        raise ConfigError(msg)
    return name


def request_from_env(environ: Mapping[str, str]) -> ProvisionRequest:
    """Read the names from ``environ``; raise :class:`ConfigError` naming a bad variable."""

    def get(name: str) -> str | None:
        value = environ.get(name, "").strip()
        return value or None

    jobs_url = get("SQS_EXPORT_JOBS_URL")
    if jobs_url is None:
        msg = "SQS_EXPORT_JOBS_URL is required but not set"
        raise ConfigError(msg)
    bucket = get("S3_BUCKET_NAME")
    if bucket is None:
        msg = "S3_BUCKET_NAME is required but not set"
        raise ConfigError(msg)

    def queue(variable: str) -> str | None:
        url = get(variable)
        return None if url is None else _queue_name(variable, url)

    return ProvisionRequest(
        region=get("AWS_REGION") or _default("aws_region"),
        endpoint_url=get("AWS_ENDPOINT_URL"),
        bucket=bucket,
        metadata_table=get("DYNAMODB_METADATA_TABLE") or _default("dynamodb_metadata_table"),
        jobs_table=get("DYNAMODB_JOBS_TABLE") or _default("dynamodb_jobs_table"),
        export_jobs_queue=_queue_name("SQS_EXPORT_JOBS_URL", jobs_url),
        download_tasks_queue=queue("SQS_DOWNLOAD_TASKS_URL"),
        export_jobs_high_queue=queue("SQS_EXPORT_JOBS_HIGH_URL"),
        download_tasks_high_queue=queue("SQS_DOWNLOAD_TASKS_HIGH_URL"),
    )


async def run(
    request: ProvisionRequest,
    *,
    visibility_timeout: int = 60,
    max_receive_count: int = 5,
    wait_seconds: float = 60.0,
) -> ProvisionedUrls:
    """Provision everything ``request`` names, retrying transient failures for ``wait_seconds``.

    Raises the last :class:`PipelineError` when the time is up, or at once
    when AWS refuses for good (a name owned by someone else, no access).
    """

    async def work(aws: AwsClients) -> ProvisionedUrls:
        return await provision(
            aws,
            bucket=request.bucket,
            metadata_table=request.metadata_table,
            jobs_table=request.jobs_table,
            export_jobs_queue=request.export_jobs_queue,
            download_tasks_queue=request.download_tasks_queue,
            export_jobs_high_queue=request.export_jobs_high_queue,
            download_tasks_high_queue=request.download_tasks_high_queue,
            visibility_timeout=visibility_timeout,
            max_receive_count=max_receive_count,
        )

    return await _when_ready(request, work, wait_seconds)


async def backfill(request: ProvisionRequest, *, wait_seconds: float = 60.0) -> Backfilled:
    """Give old summary items ``jobStatus``, waiting for the backend as :func:`run` does."""

    async def work(aws: AwsClients) -> Backfilled:
        return await backfill_status_index(aws.dynamodb, request.jobs_table)

    return await _when_ready(request, work, wait_seconds)


async def _when_ready(
    request: ProvisionRequest, work: Callable[[AwsClients], Awaitable[T]], wait_seconds: float
) -> T:
    deadline = trio.current_time() + wait_seconds
    while True:
        try:
            async with open_aws_clients(
                region=request.region, endpoint_url=request.endpoint_url, pool_size=2
            ) as aws:
                return await work(aws)
        except PipelineError as err:
            # "Retries exhausted" on connection trouble is what a backend
            # still starting looks like; a refusal with a code is final.
            if not _worth_waiting(err) or trio.current_time() >= deadline:
                raise
            print(f"provision: backend not ready ({err}); trying again", file=sys.stderr)
            await trio.sleep(RETRY_EVERY_SECONDS)


def _worth_waiting(err: PipelineError) -> bool:
    return not isinstance(err, AwsRejected)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.ops.provision",
        description="Create the queues (with dead-letter queues), tables and bucket "
        "named by the service's environment variables; safe to run again.",
    )
    parser.add_argument(
        "--visibility-timeout", type=int, default=60, help="queue visibility timeout, s"
    )
    parser.add_argument(
        "--max-receive-count",
        type=int,
        default=5,
        help="deliveries before SQS moves a message to its dead-letter queue",
    )
    parser.add_argument(
        "--wait", type=float, default=60.0, help="how long to wait for the backend, s"
    )
    parser.add_argument(
        "--backfill-index",
        action="store_true",
        help="instead of provisioning, give job items written before the status index "
        "their jobStatus (once, after an upgrade; safe to repeat)",
    )
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        request = request_from_env(os.environ if environ is None else environ)
    except ConfigError as err:
        print(f"pipeline.ops.provision: configuration error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    if args.backfill_index:
        return _backfill_main(request, args.wait)
    try:
        urls = trio.run(
            lambda: run(
                request,
                visibility_timeout=args.visibility_timeout,
                max_receive_count=args.max_receive_count,
                wait_seconds=args.wait,
            )
        )
    except (PipelineError, ValueError) as err:
        print(f"pipeline.ops.provision: failed: {err}", file=sys.stderr)
        return EXIT_FAILED
    print(f"bucket {request.bucket}")
    print(f"tables {request.metadata_table}, {request.jobs_table}")
    print(f"queue {urls.export_jobs_url} (dead letters: {urls.export_jobs_dlq_url})")
    for url, dlq in (
        (urls.download_tasks_url, urls.download_tasks_dlq_url),
        (urls.export_jobs_high_url, urls.export_jobs_high_dlq_url),
        (urls.download_tasks_high_url, urls.download_tasks_high_dlq_url),
    ):
        if url is not None:
            print(f"queue {url} (dead letters: {dlq})")
    return 0


def _backfill_main(request: ProvisionRequest, wait_seconds: float) -> int:
    try:
        done = trio.run(lambda: backfill(request, wait_seconds=wait_seconds))
    except PipelineError as err:
        print(f"pipeline.ops.provision: backfill failed: {err}", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"backfill {request.jobs_table}: scanned {done.scanned} items, "
        f"updated {done.updated} of {done.missing} jobs without jobStatus "
        f"({done.raced} changed meanwhile by the service)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
