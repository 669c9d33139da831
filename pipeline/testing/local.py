"""The embedded default: the whole service on one machine, no AWS account.

``python -m pipeline --mode all --local`` starts a moto server (a subprocess,
spoken to over real HTTP like AWS) and the Export API simulator on loopback,
creates the queues with their dead-letter queues, the tables and the bucket,
seeds the sample exports of ``_demo.py``, sends one export-job message, runs
the real service graph until every job is final, prints a summary and exits.
A rule on a local event bus sends the jobs' lifecycle events to a queue, as a
consumer would subscribe; they are read and printed at the end.
The exit status is 0 when every job ended as the demo expects.
"""

from __future__ import annotations

import json
import os
import sys
import time

import trio
from rich.console import Console

from pipeline._adapters.aws import sqs as _sqs
from pipeline._adapters.aws.clients import open_aws_clients
from pipeline._adapters.aws.jobstore import JobItem, JobStore
from pipeline._config import Mode, Settings, load_settings
from pipeline._core.accounting import JobStatus
from pipeline._core.backoff import AWS_POLICY
from pipeline._core.messages import ExportJob, encode_export_job
from pipeline._logging import configure_logging
from pipeline._service.graph import run_service
from pipeline.ops.jobs import watch_jobs
from pipeline.ops.provisioning import provision, provision_event_listener, seed_metadata
from pipeline.testing.demo import DemoExport, demo_exports
from pipeline.testing.moto import free_port, moto_server
from pipeline.testing.simulator import Simulator, serve_simulator

__all__ = ["run_local"]

# The demo's jobs finish in seconds; this bounds a run that went wrong.
DEMO_TIMEOUT_SECONDS = 300
DEMO_CORRELATION_ID = "c-local-demo"
EVENT_BUS = "pipeline-local"


def run_local(mode: Mode) -> int:
    """Run the demo end to end; returns the exit status."""
    if mode is not Mode.ALL:
        print("pipeline: --local runs the whole service; use --mode all", file=sys.stderr)
        return 2
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    # A person is watching: readable lines unless asked otherwise.
    configure_logging(
        os.environ.get("LOG_LEVEL", "warning").lower(),
        log_format=os.environ.get("LOG_FORMAT", "console").lower(),
    )
    with moto_server() as endpoint:
        return trio.run(_run_demo, endpoint)


async def _run_demo(endpoint: str) -> int:
    exports = demo_exports()
    simulator = Simulator(token="local-demo-token")
    for export in exports:
        simulator.add_export(
            export.export_id,
            [(file.name, file.data) for file in export.files],
            pending_polls=export.pending_polls,
            download_host=export.download_host,
        )
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(serve_simulator, simulator)
        settings, events_url = await _prepare_aws(
            endpoint, urls.api_url, urls.download_netloc, exports
        )
        started = time.perf_counter()
        stop = trio.Event()
        nursery.start_soon(run_service, settings, Mode.ALL, stop)
        jobs = await _wait_for_jobs(settings, [e.export_id for e in exports])
        elapsed = time.perf_counter() - started
        ok = _print_summary(exports, jobs, elapsed)
        await _print_events(settings, events_url)
        stop.set()
        nursery.cancel_scope.deadline = trio.current_time() + settings.shutdown_grace_seconds + 5
    return 0 if ok else 1


async def _prepare_aws(
    endpoint: str, api_url: str, download_netloc: str, exports: list[DemoExport]
) -> tuple[Settings, str]:
    """Resources, sample data and the message; the settings and the events' queue URL."""
    async with open_aws_clients(
        region="us-east-1", endpoint_url=endpoint, pool_size=10, events=True
    ) as aws:
        assert aws.events is not None  # opened with events=True
        events_url = await provision_event_listener(
            aws.events, aws.sqs, EVENT_BUS, "pipeline-local-events"
        )
        urls = await provision(
            aws,
            bucket="pipeline-local",
            metadata_table="export-metadata",
            jobs_table="export-jobs",
            export_jobs_queue="export-jobs",
            download_tasks_queue=None,
            # The high lane too, so `submit --priority high` works against it.
            export_jobs_high_queue="export-jobs-high",
            visibility_timeout=30,
        )
        for export in exports:
            await seed_metadata(aws.dynamodb, "export-metadata", export.export_id, export.metadata)
        export_ids = tuple(export.export_id for export in exports)
        body = encode_export_job(
            ExportJob(export_ids=export_ids, correlation_id=DEMO_CORRELATION_ID)
        )
        await _sqs.send(aws.sqs, urls.export_jobs_url, body, policy=AWS_POLICY)
    environ = {
        "AWS_ENDPOINT_URL": endpoint,
        "SQS_EXPORT_JOBS_URL": urls.export_jobs_url,
        "SQS_EXPORT_JOBS_HIGH_URL": str(urls.export_jobs_high_url),
        "S3_BUCKET_NAME": "pipeline-local",
        "EXPORT_API_BASE_URL": api_url,
        "EXPORT_API_TOKEN": "local-demo-token",
        "EXPORT_DOWNLOAD_ALLOWED_HOSTS": download_netloc,
        "EXPORT_POLL_INTERVAL_SECONDS": "1",
        "HEALTH_PORT": str(free_port()),
        "SHUTDOWN_GRACE_SECONDS": "5",
        "EVENT_BUS_NAME": EVENT_BUS,
    }
    return load_settings(environ, Mode.ALL), events_url


async def _wait_for_jobs(settings: Settings, export_ids: list[str]) -> dict[str, JobItem]:
    """Each job once final, with a live progress bar per export meanwhile."""
    async with open_aws_clients(
        region=settings.aws_region, endpoint_url=settings.aws_endpoint_url, pool_size=4
    ) as aws:
        store = JobStore(aws.dynamodb, settings.dynamodb_jobs_table, AWS_POLICY)
        with trio.fail_after(DEMO_TIMEOUT_SECONDS):
            return await watch_jobs(store, export_ids, DEMO_CORRELATION_ID, Console(), every=0.25)


async def _print_events(settings: Settings, url: str) -> None:
    """The lifecycle events the consumer's queue got, one line each, in arrival order."""
    async with open_aws_clients(
        region=settings.aws_region, endpoint_url=settings.aws_endpoint_url, pool_size=2
    ) as aws:
        print("lifecycle events (EventBridge rule on bus 'pipeline-local' -> SQS queue):")
        quiet = 0
        # The last events go out a moment after the final writes: read until quiet.
        while quiet < 2:
            response = await aws.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            messages = response.get("Messages", [])
            quiet = 0 if messages else quiet + 1
            for message in messages:
                event = json.loads(message["Body"])
                detail = event["detail"]
                print(
                    f"  {event['detail-type']}: {detail['exportId']:<16}{detail['status']:<10}"
                    f"run {detail['runGeneration']}  {detail['transitionId']}"
                )
                await aws.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def _print_summary(exports: list[DemoExport], jobs: dict[str, JobItem], elapsed: float) -> bool:
    ok = True
    total_bytes = 0
    print()
    print("pipeline --local: export jobs processed against moto and the Export API simulator")
    print(
        f"{'export':<16}{'status':<11}{'files':>6}{'uploaded':>10}{'skipped':>9}"
        f"{'rejected':>10}{'missing':>9}{'MB':>9}"
    )
    for export in exports:
        job = jobs[export.export_id]
        s = job.summary
        total_bytes += s.bytes_uploaded
        ok &= job.status is JobStatus(export.expected_status)
        print(
            f"{export.export_id:<16}{job.status.value:<11}{s.files_done:>3}/{s.files_total:<2}"
            f"{s.entries_uploaded:>10}{s.entries_skipped:>9}{s.entries_rejected:>10}"
            f"{s.entries_missing:>9}{s.bytes_uploaded / 1e6:>9.1f}"
        )
        if job.error:
            print(f"    error: {job.error}")
    rate = total_bytes / 1e6 / elapsed if elapsed else 0.0
    print(
        f"{total_bytes / 1e6:.1f} MB verified into S3 in {elapsed:.1f} s: {rate:.1f} MB/s "
        "(including one PENDING export polled until READY)"
    )
    print("result:", "as expected" if ok else "NOT as expected")
    return ok
