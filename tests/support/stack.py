"""A whole stack for service tests: moto, the Export API simulator, provisioned
resources, and the service itself (in-process, or as subprocesses).

Each stack gets fresh resource names, so tests share one moto server safely.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import trio

from pipeline._adapters.aws import sqs as _sqs
from pipeline._adapters.aws.clients import AwsClients, open_aws_clients
from pipeline._adapters.aws.jobstore import JobItem, JobStore
from pipeline._adapters.aws.metadata import MetadataItem
from pipeline._config import Mode, Settings, load_settings
from pipeline._core.backoff import AWS_POLICY
from pipeline._service.graph import run_service
from pipeline.ops.provisioning import seed_metadata
from pipeline.testing.moto import free_port, provision_fresh
from pipeline.testing.simulator import Simulator, serve_simulator
from tests.support.waiting import eventually

TOKEN = "test-token-1234"


@attrs.define
class Stack:
    """Handles on one provisioned stack."""

    aws: AwsClients
    simulator: Simulator
    env: dict[str, str]
    urls: Any
    nursery: trio.Nursery
    jobs: JobStore
    bucket: str
    prefix: str = "exports/"

    def settings(self, mode: Mode = Mode.ALL, **overrides: str) -> Settings:
        return load_settings({**self.env, **overrides}, mode)

    async def seed(self, export_id: str, items: Iterable[MetadataItem]) -> None:
        await seed_metadata(
            self.aws.dynamodb, self.env["DYNAMODB_METADATA_TABLE"], export_id, items
        )

    async def send_job(
        self, export_ids: list[str], correlation_id: str | None = "c-test", *, sns: bool = False
    ) -> None:
        document: dict[str, Any] = {"exportIds": export_ids}
        if correlation_id is not None:
            document["correlationId"] = correlation_id
        body = json.dumps(document)
        if sns:
            body = json.dumps({"Type": "Notification", "MessageId": "m-1", "Message": body})
        await self.send_raw(body)

    async def send_raw(self, body: str) -> None:
        await _sqs.send(self.aws.sqs, self.urls.export_jobs_url, body, policy=AWS_POLICY)

    async def wait_final(self, export_id: str, within: float = 60) -> JobItem:
        """The job item once it is final and settled (its events sent, its items' expiry
        followed, a moment after the final write); fails the test after ``within`` seconds."""

        async def settled() -> JobItem | None:
            try:
                job = await self.jobs.get_job(export_id)
            except KeyError:
                # moto (unlike DynamoDB) can show an item half-way through an
                # UpdateItem that creates it; the next read sees it whole.
                return None
            if job is None or not job.status.is_final:
                return None
            return None if job.events_owed or job.expiry_owed else job

        return await eventually(settled, within=within)

    async def objects(self, export_id: str) -> dict[str, tuple[bytes, dict[str, str]]]:
        """Every object under the export's prefix: path → (body, user metadata)."""
        found: dict[str, tuple[bytes, dict[str, str]]] = {}
        prefix = f"{self.prefix}{export_id}/"
        paginator = self.aws.s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                response = await self.aws.s3.get_object(Bucket=self.bucket, Key=item["Key"])
                async with response["Body"] as body:
                    data = await body.read()
                found[item["Key"][len(prefix) :]] = (data, response["Metadata"])
        return found

    async def open_uploads(self) -> int:
        """How many multipart uploads are still open in the bucket."""
        response = await self.aws.s3.list_multipart_uploads(Bucket=self.bucket)
        return len(response.get("Uploads", []))

    async def queue_depth(self, url: str) -> int:
        """Visible plus in-flight messages of a queue."""
        response = await self.aws.sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
        attributes = response["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )

    async def run_service(self, mode: Mode = Mode.ALL, **overrides: str) -> trio.Event:
        """Start the service in-process; set the returned event to stop it."""
        stop = trio.Event()
        self.nursery.start_soon(run_service, self.settings(mode, **overrides), mode, stop)
        return stop

    async def serve_http(self, mode: Mode = Mode.ALL, **overrides: str) -> tuple[str, trio.Event]:
        """Start the service with its HTTP side on a free port; its base URL and stop event."""
        port = free_port()
        stop = await self.run_service(mode, HEALTH_PORT=str(port), **overrides)
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as client:

            async def healthy() -> bool:
                try:
                    return (await client.get(f"{base}/health")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(healthy, within=30)
        return base, stop

    def spawn(
        self, mode: Mode, aws_endpoint: str | None = None, **overrides: str
    ) -> subprocess.Popen[bytes]:
        """Start the service as a subprocess (``python -m pipeline --mode ...``)."""
        env = {**os.environ, **self.env, **overrides}
        if aws_endpoint is not None:
            env["AWS_ENDPOINT_URL"] = aws_endpoint
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline", "--mode", mode.value],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def terminate(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)


@asynccontextmanager
async def open_stack(
    aws_endpoint: str,
    *,
    visibility_timeout: int = 30,
    with_task_queue: bool = False,
    with_high_queues: bool = False,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[Stack]:
    """Provision fresh resources and start the simulator; the service is started by the test.

    ``with_high_queues``: the high lane's queues too (the task one with the task queue).
    """
    async with open_aws_clients(region="us-east-1", endpoint_url=aws_endpoint, pool_size=20) as aws:
        name, urls = await provision_fresh(
            aws,
            visibility_timeout=visibility_timeout,
            with_task_queue=with_task_queue,
            with_high_queues=with_high_queues,
        )
        simulator = Simulator(token=TOKEN)
        async with trio.open_nursery() as nursery:
            sim_urls = await nursery.start(serve_simulator, simulator)
            settings_env = {
                "AWS_ENDPOINT_URL": aws_endpoint,
                "AWS_REGION": "us-east-1",
                "SQS_EXPORT_JOBS_URL": urls.export_jobs_url,
                "S3_BUCKET_NAME": f"bucket-{name}",
                "DYNAMODB_METADATA_TABLE": f"metadata-{name}",
                "DYNAMODB_JOBS_TABLE": f"jobs-{name}",
                "EXPORT_API_BASE_URL": sim_urls.api_url,
                "EXPORT_API_TOKEN": TOKEN,
                "EXPORT_DOWNLOAD_ALLOWED_HOSTS": sim_urls.download_netloc,
                "EXPORT_POLL_INTERVAL_SECONDS": "1",
                "HEALTH_PORT": str(free_port()),
                "SHUTDOWN_GRACE_SECONDS": "5",
                # A stop waits for the long poll in flight: keep it short here.
                "SQS_WAIT_SECONDS": "1",
                "LOG_LEVEL": "warning",
                **(env or {}),
            }
            for variable, url in (
                ("SQS_DOWNLOAD_TASKS_URL", urls.download_tasks_url),
                ("SQS_EXPORT_JOBS_HIGH_URL", urls.export_jobs_high_url),
                ("SQS_DOWNLOAD_TASKS_HIGH_URL", urls.download_tasks_high_url),
            ):
                if url is not None:
                    settings_env[variable] = url
            stack = Stack(
                aws=aws,
                simulator=simulator,
                env=settings_env,
                urls=urls,
                nursery=nursery,
                jobs=JobStore(aws.dynamodb, f"jobs-{name}", AWS_POLICY),
                bucket=f"bucket-{name}",
            )
            yield stack
            nursery.cancel_scope.cancel()
