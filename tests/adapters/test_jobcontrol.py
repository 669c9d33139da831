"""Cancel, retry and the reads that obey them, against moto's jobs table and queue."""

from __future__ import annotations

import json

import pytest

from pipeline._adapters.aws.clients import AwsClients
from pipeline._adapters.aws.jobcontrol import (
    CANCEL_REASON,
    FileState,
    Verdict,
    cancel_job,
    file_state,
    job_statuses,
    retry_job,
)
from pipeline._adapters.aws.jobstore import JobStore
from pipeline._core.accounting import FileResult, JobStatus
from pipeline._core.backoff import Backoff
from pipeline.testing.moto import provision_fresh

FAST = Backoff(max_attempts=3, base=0.001, cap=0.01)


@pytest.fixture
async def provisioned(clients: AwsClients) -> tuple[JobStore, str]:
    """A fresh jobs table and export-job queue: the store and the queue's URL."""
    name, urls = await provision_fresh(clients)
    return JobStore(clients.dynamodb, f"jobs-{name}", FAST), urls.export_jobs_url


async def _messages(clients: AwsClients, url: str) -> list[dict[str, object]]:
    response = await clients.sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0
    )
    return [json.loads(message["Body"]) for message in response.get("Messages", [])]


class TestCancel:
    async def test_active_job_is_cancelled_with_its_counts(
        self, provisioned: tuple[JobStore, str]
    ) -> None:
        """A RUNNING job ends CANCELLED with a reason and the counts recorded so far."""
        store, _ = provisioned
        await store.begin_job("exp-c", "c", JobStatus.RUNNING)
        await store.record_file("exp-c", FileResult(file_id="f1", name="1.zip", ok=True))
        answer = await cancel_job(store, "exp-c")
        assert answer.verdict is Verdict.ACCEPTED
        assert answer.job is not None
        assert answer.job.status is JobStatus.CANCELLED
        assert answer.job.error == CANCEL_REASON
        assert answer.job.summary.files_done == 1

    async def test_unknown_and_final_jobs_are_refused(
        self, provisioned: tuple[JobStore, str]
    ) -> None:
        """No job: UNKNOWN; a COMPLETED job: CONFLICT, and it stays COMPLETED."""
        store, _ = provisioned
        assert (await cancel_job(store, "exp-none")).verdict is Verdict.UNKNOWN
        await store.begin_job("exp-f", "c", JobStatus.RUNNING)
        await store.finish_job("exp-f", JobStatus.COMPLETED, None, None)
        answer = await cancel_job(store, "exp-f")
        assert answer.verdict is Verdict.CONFLICT
        job = await store.get_job("exp-f")
        assert job is not None
        assert job.status is JobStatus.COMPLETED

    async def test_cancelled_job_is_not_begun_again(
        self, provisioned: tuple[JobStore, str]
    ) -> None:
        """A later delivery's begin_job leaves a CANCELLED job CANCELLED."""
        store, _ = provisioned
        await store.begin_job("exp-k", "c", JobStatus.RUNNING)
        await cancel_job(store, "exp-k")
        again = await store.begin_job("exp-k", "c2", JobStatus.RUNNING)
        assert again.status is JobStatus.CANCELLED


class TestRetry:
    async def test_failed_job_waits_again_and_is_sent(
        self, clients: AwsClients, provisioned: tuple[JobStore, str]
    ) -> None:
        """A FAILED job goes back to WAITING without its failed file's result, and the
        export is sent to the export-job queue under the retry's correlation ID."""
        store, url = provisioned
        await store.begin_job("exp-r", "c", JobStatus.RUNNING)
        await store.record_file("exp-r", FileResult(file_id="f1", name="1.zip", ok=True))
        bad = FileResult(file_id="f2", name="2.zip", ok=False, error="corrupt")
        await store.record_file("exp-r", bad)
        await store.finish_job("exp-r", JobStatus.FAILED, None, "1 of 2 files failed")
        answer = await retry_job(store, clients.sqs, url, "exp-r")
        assert answer.verdict is Verdict.ACCEPTED
        assert answer.job is not None
        assert answer.job.status is JobStatus.WAITING
        assert (answer.job.summary.files_done, answer.job.summary.files_failed) == (1, 0)
        assert [r.file_id for r in await store.file_results("exp-r")] == ["f1"]
        assert await _messages(clients, url) == [
            {"exportIds": ["exp-r"], "correlationId": answer.correlation_id}
        ]

    async def test_only_failed_or_cancelled_jobs_are_retried(
        self, clients: AwsClients, provisioned: tuple[JobStore, str]
    ) -> None:
        """No job: UNKNOWN; a RUNNING or COMPLETED one: CONFLICT; a CANCELLED one runs again."""
        store, url = provisioned
        assert (await retry_job(store, clients.sqs, url, "exp-x")).verdict is Verdict.UNKNOWN
        await store.begin_job("exp-x", "c", JobStatus.RUNNING)
        assert (await retry_job(store, clients.sqs, url, "exp-x")).verdict is Verdict.CONFLICT
        await cancel_job(store, "exp-x")
        assert (await retry_job(store, clients.sqs, url, "exp-x")).verdict is Verdict.ACCEPTED
        assert len(await _messages(clients, url)) == 1


class TestReads:
    async def test_file_state_and_statuses(self, provisioned: tuple[JobStore, str]) -> None:
        """One call tells a file's recorded result and its job's status; statuses come in
        one batch and leave out exports with no job."""
        store, _ = provisioned
        assert await file_state(store, "exp-s", "f1") == FileState(False, None)
        await store.begin_job("exp-s", "c", JobStatus.RUNNING)
        await store.record_file("exp-s", FileResult(file_id="f1", name="1.zip", ok=False))
        assert await file_state(store, "exp-s", "f1") == FileState(True, JobStatus.RUNNING)
        assert await file_state(store, "exp-s", "f2") == FileState(False, JobStatus.RUNNING)
        await store.begin_job("exp-t", "c", JobStatus.RUNNING)
        await cancel_job(store, "exp-t")
        ids = ["exp-s", "exp-t", "exp-none", *(f"exp-{n}" for n in range(120))]
        assert await job_statuses(store, ids) == {
            "exp-s": JobStatus.RUNNING,
            "exp-t": JobStatus.CANCELLED,
        }
