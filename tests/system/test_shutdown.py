"""The service as a process: SIGTERM and SIGINT mid-work, SIGKILL mid-file, restarts.

Each test runs ``python -m pipeline`` (stack.spawn) against moto and the
simulator, with a large file slowed down by the simulator so that a signal
lands in the middle of it, while a multipart upload is open.
"""

from __future__ import annotations

import functools
import os
import random
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import httpx
import pytest
import trio

from pipeline._adapters.aws.jobstore import JobItem
from pipeline._config import Mode
from pipeline._core.accounting import JobStatus, JobSummary
from pipeline.testing.demo import build_zip, metadata_for, records
from tests.support.stack import Stack, open_stack
from tests.system.test_faults import Outcome

pytestmark = pytest.mark.slow

# Bound from the issue: SIGTERM to exit, with SHUTDOWN_GRACE_SECONDS=5.
EXIT_WITHIN_SECONDS = 30
GRACE_SECONDS = "5"
# Slow enough that the big entry takes well over the grace period after its
# multipart upload opens (its last 5 MiB alone take about 13 s).
THROTTLE_BYTES_PER_SECOND = 400_000


@functools.cache
def large_entries() -> list[tuple[str, bytes]]:
    """Two small entries, then a 13 MiB one: a multipart upload that opens early.

    Its first 8 MiB compress well (they arrive within seconds, and the
    multipart upload opens); the last 5 MiB are noise that arrives slowly, so
    the entry is still open long after the grace period.
    """
    rng = random.Random(23)
    return [
        ("first/one.txt", records(rng, 20_000)),
        ("first/two.txt", records(rng, 3_000)),
        ("big/mixed.bin", records(rng, 8 * 1024 * 1024) + rng.randbytes(5 * 1024 * 1024)),
    ]


@functools.cache
def large_zip() -> bytes:
    return build_zip(large_entries())


def expected_summary() -> JobSummary:
    entries = large_entries()
    return JobSummary(
        files_total=1,
        files_done=1,
        entries_uploaded=len(entries),
        bytes_uploaded=sum(len(data) for _, data in entries),
    )


@attrs.define
class Service:
    """One ``python -m pipeline`` process and everything it printed."""

    proc: subprocess.Popen[bytes]
    output: bytearray = attrs.field(factory=bytearray)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    async def exit_code(self, within: float) -> int:
        """Wait for the process to end; fails the test after ``within`` seconds."""
        with trio.fail_after(within):
            return await trio.to_thread.run_sync(self.proc.wait, abandon_on_cancel=True)

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")


@asynccontextmanager
async def spawned(
    stack: Stack, mode: Mode = Mode.ALL, aws_endpoint: str | None = None, **overrides: str
) -> AsyncIterator[Service]:
    """The service as a subprocess for the block; killed if the block leaves it running.

    ``aws_endpoint`` points it elsewhere than the stack's moto (a fault proxy).
    """
    proc = stack.spawn(mode, aws_endpoint, **{"SHUTDOWN_GRACE_SECONDS": GRACE_SECONDS, **overrides})
    service = Service(proc)

    def drain() -> None:
        # The pipe must be read, or a chatty process would block on a full pipe.
        assert proc.stdout is not None
        while chunk := os.read(proc.stdout.fileno(), 65536):
            service.output += chunk

    async with trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(trio.to_thread.run_sync, drain))
        try:
            yield service
        finally:
            if proc.poll() is None:
                proc.kill()
            await trio.to_thread.run_sync(proc.wait)


async def _wait_until_uploading(stack: Stack, service: Service) -> None:
    """Return once a multipart upload is open: the big entry is on its way."""
    with trio.fail_after(60):
        while True:
            if await stack.open_uploads():
                return
            assert service.proc.poll() is None, service.text
            await trio.sleep(0.1)


async def _visible_and_in_flight(stack: Stack) -> tuple[int, int]:
    response = await stack.aws.sqs.get_queue_attributes(
        QueueUrl=stack.urls.export_jobs_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    attributes = response["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


async def _setup(stack: Stack, export_id: str) -> str:
    (file_id,) = stack.simulator.add_export(export_id, [("large.zip", large_zip())])
    stack.simulator.set_throttle(export_id, file_id, THROTTLE_BYTES_PER_SECOND)
    await stack.seed(export_id, metadata_for(large_entries()))
    return file_id


async def sigterm_scenario(aws_endpoint: str) -> Outcome:
    """SIGTERM mid-file, then a restart; asserts what happens at the signal.

    The exit (status 0 within 30 s), the state right after it (nothing
    partial, no open upload, the message visible at once) and the restart's
    speed are asserted here; the final state is returned for an exact check.
    """
    # A visibility timeout far longer than the restart may take: finishing
    # before it proves the message was handed back, not left to expire.
    visibility = 120
    async with open_stack(aws_endpoint, visibility_timeout=visibility) as stack:
        file_id = await _setup(stack, "exp-term")
        async with spawned(stack) as service:
            await stack.send_job(["exp-term"])
            await _wait_until_uploading(stack, service)
            stopped_at = trio.current_time()
            service.signal(signal.SIGTERM)
            assert await service.exit_code(EXIT_WITHIN_SECONDS) == 0, service.text
        assert trio.current_time() - stopped_at < EXIT_WITHIN_SECONDS
        # The big entry was cut short: no partial object, no upload left
        # open, the job still open and its message visible again right away.
        assert set(await stack.objects("exp-term")) <= {"first/one.txt", "first/two.txt"}
        assert await stack.open_uploads() == 0
        job = await stack.jobs.get_job("exp-term")
        assert job is not None
        assert job.status is JobStatus.RUNNING
        assert await _visible_and_in_flight(stack) == (1, 0)

        stack.simulator.set_throttle("exp-term", file_id, None)
        async with spawned(stack) as service:
            restarted_at = trio.current_time()
            final = await stack.wait_final("exp-term", within=60)
            assert trio.current_time() - restarted_at < visibility
            service.signal(signal.SIGTERM)
            assert await service.exit_code(EXIT_WITHIN_SECONDS) == 0, service.text
        return await _outcome(stack, "exp-term", final, "SIGTERM mid-file, then restart")


async def sigkill_scenario(aws_endpoint: str) -> Outcome:
    """SIGKILL mid-file, then a restart once the visibility timeout (4 s) has run out."""
    async with open_stack(aws_endpoint, visibility_timeout=4) as stack:
        file_id = await _setup(stack, "exp-kill")
        async with spawned(stack) as service:
            await stack.send_job(["exp-kill"])
            await _wait_until_uploading(stack, service)
            # The small entries are in; the big one is half-way.
            assert set(await stack.objects("exp-kill")) == {"first/one.txt", "first/two.txt"}
            service.signal(signal.SIGKILL)
            assert await service.exit_code(EXIT_WITHIN_SECONDS) == -signal.SIGKILL

        stack.simulator.set_throttle("exp-kill", file_id, None)
        async with spawned(stack) as service:
            final = await stack.wait_final("exp-kill", within=60)
            service.signal(signal.SIGTERM)
            assert await service.exit_code(EXIT_WITHIN_SECONDS) == 0, service.text
        # The killed process could not abort its upload: the restart's upload of
        # the same entry aborted it first (the lifecycle rule remains the backstop).
        lifecycle = await stack.aws.s3.get_bucket_lifecycle_configuration(Bucket=stack.bucket)
        assert any("AbortIncompleteMultipartUpload" in rule for rule in lifecycle["Rules"])
        return await _outcome(stack, "exp-kill", final, "SIGKILL mid-file, then restart")


async def _outcome(
    stack: Stack, export_id: str, job: JobItem, case: str, abandoned_uploads: int = 0
) -> Outcome:
    return await Outcome.of(
        stack,
        export_id,
        job,
        case=case,
        hits=1,
        expected_hits=1,
        expected_objects=dict(large_entries()),
        expected_summary=expected_summary(),
        abandoned_uploads=abandoned_uploads,
    )


class TestSigterm:
    async def test_mid_file_exits_clean_and_restart_finishes_at_once(
        self, aws_endpoint: str
    ) -> None:
        """SIGTERM mid-file: exit 0 within 30 s, nothing partial, message back at once."""
        outcome = await sigterm_scenario(aws_endpoint)
        outcome.check()

    async def test_sigint_idle_exits_zero(self, aws_endpoint: str) -> None:
        """SIGINT stops an idle service like SIGTERM: exit status 0, well within 30 s."""
        async with open_stack(aws_endpoint) as stack, spawned(stack) as service:
            url = f"http://127.0.0.1:{stack.env['HEALTH_PORT']}/health"
            async with httpx.AsyncClient() as client:
                with trio.fail_after(30):
                    while True:
                        assert service.proc.poll() is None, service.text
                        try:
                            if (await client.get(url)).status_code == 200:
                                break
                        except httpx.TransportError:
                            pass
                        await trio.sleep(0.2)
            service.signal(signal.SIGINT)
            assert await service.exit_code(EXIT_WITHIN_SECONDS) == 0, service.text


class TestSigkill:
    async def test_mid_file_then_restart_gives_the_same_result(self, aws_endpoint: str) -> None:
        """SIGKILL mid-file: after the visibility timeout a restart ends the job exactly."""
        outcome = await sigkill_scenario(aws_endpoint)
        outcome.check()

    async def test_second_sigterm_stops_at_once(self, aws_endpoint: str) -> None:
        """A second SIGTERM ends a long grace period at once; the message is still handed back."""
        async with open_stack(aws_endpoint, visibility_timeout=120) as stack:
            await _setup(stack, "exp-twice")
            async with spawned(stack, SHUTDOWN_GRACE_SECONDS="300") as service:
                await stack.send_job(["exp-twice"])
                await _wait_until_uploading(stack, service)
                service.signal(signal.SIGTERM)
                await trio.sleep(1)
                assert service.proc.poll() is None, "the first signal only starts the grace"
                service.signal(signal.SIGTERM)
                assert await service.exit_code(EXIT_WITHIN_SECONDS) == 0, service.text
            assert await stack.open_uploads() == 0
            assert await _visible_and_in_flight(stack) == (1, 0)
