"""Cancel, retry and the reads that obey them, against moto's jobs table and queue."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import pytest
import trio

from pipeline._adapters.aws.clients import AwsClients
from pipeline._adapters.aws.jobcontrol import (
    CANCEL_REASON,
    CLI_CANCEL_REASON,
    Answer,
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
            {
                "exportIds": ["exp-r"],
                "correlationId": answer.correlation_id,
                "runGenerations": {"exp-r": 2},
            }
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


class TestRaces:
    async def test_of_racing_retries_exactly_one_is_accepted(
        self, clients: AwsClients, provisioned: tuple[JobStore, str]
    ) -> None:
        """20 concurrent retries of a CANCELLED job: one ACCEPTED, 19 CONFLICT, one message
        naming the next run; the job is WAITING at run 2."""
        store, url = provisioned
        await store.begin_job("exp-rr", "c", JobStatus.RUNNING)
        await cancel_job(store, "exp-rr")
        answers = await _concurrently(20, lambda: retry_job(store, clients.sqs, url, "exp-rr"))
        verdicts = sorted(answer.verdict.value for answer in answers)
        assert verdicts == ["accepted"] + ["conflict"] * 19
        (winner,) = [a for a in answers if a.verdict is Verdict.ACCEPTED]
        messages = await _messages(clients, url)
        assert [m["correlationId"] for m in messages] == [winner.correlation_id]
        assert messages[0]["runGenerations"] == {"exp-rr": 2}
        job = await store.get_job("exp-rr")
        assert job is not None
        assert (job.status, job.generation) == (JobStatus.WAITING, 2)

    async def test_of_racing_cancels_exactly_one_is_accepted(
        self, provisioned: tuple[JobStore, str]
    ) -> None:
        """20 concurrent cancels of a RUNNING job: one ACCEPTED, 19 CONFLICT saying CANCELLED."""
        store, _ = provisioned
        await store.begin_job("exp-rc", "c", JobStatus.RUNNING)
        answers = await _concurrently(20, lambda: cancel_job(store, "exp-rc"))
        assert sorted(a.verdict.value for a in answers) == ["accepted"] + ["conflict"] * 19
        refused = [a for a in answers if a.verdict is Verdict.CONFLICT]
        assert all(a.reason is not None and "CANCELLED" in a.reason for a in refused)

    async def test_a_cancel_names_where_it_came_from(
        self, provisioned: tuple[JobStore, str]
    ) -> None:
        """The command line's cancel records its own reason, not the control API's."""
        store, _ = provisioned
        await store.begin_job("exp-cli", "c", JobStatus.WAITING)
        answer = await cancel_job(store, "exp-cli", CLI_CANCEL_REASON)
        assert answer.job is not None
        assert answer.job.error == "cancelled through the command line"


async def _concurrently(times: int, call: Callable[[], Awaitable[Answer]]) -> list[Answer]:
    answers: list[Answer] = []

    async def one() -> None:
        answers.append(await call())

    async with trio.open_nursery() as nursery:
        for _ in range(times):
            nursery.start_soon(one)
    return answers


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
