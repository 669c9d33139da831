"""The sweeper: quiet RUNNING jobs are submitted again; others are left alone.

The jobs table is moto's; the export-job queue is the scripted fake.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from pipeline._adapters.aws.clients import AwsClients
from pipeline._adapters.aws.jobstore import JobStore
from pipeline._core.accounting import JobStatus
from pipeline._service.sweeper import STALE_AFTER_SECONDS, sweep_once
from pipeline.testing.moto import provision_fresh
from tests.support.fakesqs import FakeSqs

START = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


async def test_only_quiet_running_jobs_are_submitted_again(clients: AwsClients) -> None:
    """A RUNNING job quiet past the threshold is sent again; fresh, waiting and final ones not."""
    name, _ = await provision_fresh(clients)
    clock = Clock()
    jobs = JobStore(clients.dynamodb, f"jobs-{name}", clock=clock)
    await jobs.begin_job("exp-stranded", "c-stranded", JobStatus.RUNNING)
    await jobs.begin_job("exp-waiting", "c-waiting", JobStatus.WAITING)
    await jobs.begin_job("exp-done", "c-done", JobStatus.RUNNING)
    await jobs.finish_job("exp-done", JobStatus.COMPLETED, None, None)
    clock.now = START + timedelta(seconds=STALE_AFTER_SECONDS - 60)
    await jobs.begin_job("exp-busy", "c-busy", JobStatus.RUNNING)

    now = START + timedelta(seconds=STALE_AFTER_SECONDS + 1)
    sqs = FakeSqs()
    export_jobs = sqs.create_queue("export-jobs")
    sent = await sweep_once(jobs, sqs, export_jobs, now=now)

    assert sent == ["exp-stranded"]
    (message,) = sqs.messages(export_jobs)
    assert json.loads(message.body) == {
        "exportIds": ["exp-stranded"],
        "correlationId": "c-stranded",
        # For the job's run 1 only: once retried, a late copy starts nothing.
        "runGenerations": {"exp-stranded": 1},
    }
