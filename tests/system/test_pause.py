"""Pause and resume a queue across service processes: intake stops, work in flight goes on."""

from __future__ import annotations

import random
import subprocess
import zipfile
from collections.abc import Awaitable, Callable

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from pipeline._config import Mode
from pipeline._core.accounting import JobStatus
from pipeline.testing.demo import build_zip, metadata_for
from pipeline.testing.moto import free_port
from tests.support.stack import Stack, open_stack, terminate

ADMIN = "admin-token-pause"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
QUICK = [("q/a.txt", b"alpha" * 100)]
# Incompressible and stored, served at 200 kB/s: about 10 s in flight.
SLOW = [("s/b.bin", random.Random(3).randbytes(2 * 1024 * 1024))]

pytestmark = pytest.mark.slow


async def _wait_for(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    with trio.move_on_after(within) as scope:
        while True:
            if await check():
                return
            await trio.sleep(0.2)
    assert not scope.cancelled_caught, f"not within {within} s: {what}"


async def _spawn(stack: Stack) -> tuple[subprocess.Popen[bytes], str]:
    """A service subprocess in all mode with the admin token; it and its base URL once healthy."""
    port = free_port()
    proc = stack.spawn(Mode.ALL, HEALTH_PORT=str(port), ADMIN_TOKEN=ADMIN, LOG_LEVEL="error")
    base = f"http://127.0.0.1:{port}"

    async def healthy() -> bool:
        try:
            async with httpx.AsyncClient() as client:
                return (await client.get(f"{base}/health")).status_code == 200
        except httpx.TransportError:
            return False

    await _wait_for(healthy, 60, "the service answered /health")
    return proc, base


async def _heartbeats(client: httpx.AsyncClient, bases: list[str]) -> float:
    total = 0.0
    for base in bases:
        text = (await client.get(f"{base}/metrics")).text
        for family in text_string_to_metric_families(text):
            if family.name == "pipeline_heartbeats":
                total += sum(
                    sample.value for sample in family.samples if sample.name.endswith("_total")
                )
    return total


async def test_pause_stops_intake_in_two_processes_and_resume_restarts_it(
    aws_endpoint: str,
) -> None:
    """Paused through one process: within 10 s neither takes a new message, the job in
    flight finishes (its lease kept), GET /queues says paused; resumed, the waiting job runs."""
    async with open_stack(aws_endpoint, visibility_timeout=4) as stack:
        slow_zip = build_zip(SLOW, method=zipfile.ZIP_STORED)
        (slow_id,) = stack.simulator.add_export("exp-inflight", [("slow.zip", slow_zip)])
        stack.simulator.set_throttle("exp-inflight", slow_id, 200_000)
        stack.simulator.add_export("exp-later", [("quick.zip", build_zip(QUICK))])
        await stack.seed("exp-inflight", metadata_for(SLOW))
        await stack.seed("exp-later", metadata_for(QUICK))
        procs: list[subprocess.Popen[bytes]] = []
        try:
            bases = []
            for _ in range(2):
                proc, base = await _spawn(stack)
                procs.append(proc)
                bases.append(base)
            async with httpx.AsyncClient(timeout=10) as client:
                await stack.send_job(["exp-inflight"])

                async def running() -> bool:
                    job = await stack.jobs.get_job("exp-inflight")
                    return job is not None and job.status is JobStatus.RUNNING

                await _wait_for(running, 30, "the slow job is RUNNING")
                answer = await client.post(f"{bases[0]}/queues/export-jobs/pause", headers=AUTH)
                assert answer.status_code == 202
                assert answer.json() == {"queue": "export-jobs", "paused": True}

                async def both_paused() -> bool:
                    for base in bases:
                        health = (await client.get(f"{base}/health")).json()
                        if not health["paused"].get("export-jobs"):
                            return False
                    return True

                await _wait_for(both_paused, 10, "both processes paused export-jobs")
                beats = await _heartbeats(client, bases)
                await stack.send_job(["exp-later"])
                await trio.sleep(6)
                # Neither process took it; the job in flight went on meanwhile.
                assert await stack.jobs.get_job("exp-later") is None
                queues = (await client.get(f"{bases[1]}/queues")).json()
                assert queues["exportJobs"]["paused"] is True
                inflight = await stack.wait_final("exp-inflight", within=60)
                assert inflight.status is JobStatus.COMPLETED
                assert await stack.jobs.get_job("exp-later") is None
                # Leases of the work in flight were extended while paused.
                assert await _heartbeats(client, bases) > beats
                metrics = (await client.get(f"{bases[0]}/metrics")).text
                assert "pipeline_queues_paused 1.0" in metrics

                answer = await client.post(f"{bases[1]}/queues/export-jobs/resume", headers=AUTH)
                assert answer.status_code == 202
                later = await stack.wait_final("exp-later", within=30)
                assert later.status is JobStatus.COMPLETED

                async def both_resumed() -> bool:
                    for base in bases:
                        health = (await client.get(f"{base}/health")).json()
                        if health["paused"].get("export-jobs") is not False:
                            return False
                    return True

                await _wait_for(both_resumed, 10, "both processes resumed export-jobs")
        finally:
            for proc in procs:
                terminate(proc)
            for proc in procs:
                proc.wait(timeout=30)


async def test_a_pause_survives_a_restart(aws_endpoint: str) -> None:
    """A process started while the queue is paused takes nothing until it is resumed."""
    async with open_stack(aws_endpoint) as stack:
        stack.simulator.add_export("exp-held", [("quick.zip", build_zip(QUICK))])
        await stack.seed("exp-held", metadata_for(QUICK))
        base, stop = await stack.serve_http(ADMIN_TOKEN=ADMIN)
        async with httpx.AsyncClient(base_url=base) as client:
            paused = await client.post("/queues/export-jobs/pause", headers=AUTH)
            unknown = await client.post("/queues/nowhere/pause", headers=AUTH)
            unauthorised = await client.post("/queues/export-jobs/resume")
        stop.set()
        assert paused.status_code == 202
        assert unknown.status_code == 404
        assert unauthorised.status_code == 401
        await stack.send_job(["exp-held"])
        base, stop = await stack.serve_http(ADMIN_TOKEN=ADMIN)
        await trio.sleep(5)
        assert await stack.jobs.get_job("exp-held") is None
        async with httpx.AsyncClient(base_url=base) as client:
            assert (await client.get("/queues")).json()["exportJobs"]["paused"] is True
            assert (await client.post("/queues/export-jobs/resume", headers=AUTH)).is_success
        assert (await stack.wait_final("exp-held", within=30)).status is JobStatus.COMPLETED
        stop.set()
