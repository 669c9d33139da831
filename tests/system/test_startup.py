"""Start-up that waits: a process started while AWS does not answer stays up (contract 6).

The service runs as ``python -m pipeline`` with AWS behind the fault proxy.
The suite keeps each outage as short as proves the point; the 30 s run of
the issue is :func:`worker_started_during_outage` with ``seconds=30``, in
``benchmarks/fault_table.py``::

    python benchmarks/fault_table.py --runs 1 --only "started during"
"""

from __future__ import annotations

import random
import signal
import sys
from pathlib import Path

import httpx
import pytest
import trio

from pipeline._config import Mode
from pipeline._core.accounting import JobStatus
from pipeline.testing.demo import build_zip, metadata_for, records
from pipeline.testing.moto import free_port
from tests.support.faultproxy import Fault, FaultProxy, serve_fault_proxy
from tests.support.stack import Stack, open_stack, sha256
from tests.system.test_shutdown import Service, spawned

pytestmark = pytest.mark.slow

EXPORT = "exp-startup"
_RNG = random.Random(29)
ENTRIES = [("rows.jsonl", records(_RNG, 40_000)), ("more/rows.jsonl", records(_RNG, 9_000))]
# From the issue: work is taken within this long after SQS answers again.
TAKES_WORK_WITHIN_SECONDS = 10
# "Promptly": a SIGTERM during the wait ends the process well inside this.
STOP_WITHIN_SECONDS = 10
SUITE_OUTAGE_SECONDS = 9
WAITING = "waiting for AWS before taking work"


async def _get(port: int, path: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(f"http://127.0.0.1:{port}{path}")


async def _health_up(port: int, service: Service) -> None:
    """Return once /health answers (the process may still be starting Python)."""
    with trio.fail_after(60):
        while True:
            assert service.proc.poll() is None, service.text
            try:
                if (await _get(port, "/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await trio.sleep(0.1)


async def _outage_begun(outage: Fault) -> float:
    """When the outage ends, once the service's first call has begun it."""
    with trio.fail_after(60):
        while True:
            if outage.ends_at is not None:
                return outage.ends_at
            await trio.sleep(0.05)


async def _taken(stack: Stack) -> None:
    """Return once the download task is in flight (received) or its file is done."""
    while True:
        response = await stack.aws.sqs.get_queue_attributes(
            QueueUrl=stack.urls.download_tasks_url,
            AttributeNames=["ApproximateNumberOfMessagesNotVisible"],
        )
        if int(response["Attributes"]["ApproximateNumberOfMessagesNotVisible"]):
            return
        try:
            job = await stack.jobs.get_job(EXPORT)
        except KeyError:  # moto shows an item being created half-way; look again
            job = None
        if job is not None and job.summary.files_done:
            return
        await trio.sleep(0.1)


async def worker_started_during_outage(endpoint: str, seconds: float) -> None:
    """A worker started while SQS breaks every connection for ``seconds`` waits, then works.

    It does not exit; meanwhile /health is 200 and /ready 503; it takes the
    download task within 10 s of SQS answering; the job then completes
    exactly; it logged the wait once, not once per look.
    """
    async with (
        open_stack(endpoint, with_task_queue=True) as stack,
        trio.open_nursery() as nursery,
    ):
        proxy = FaultProxy(endpoint)
        proxy_url = await nursery.start(serve_fault_proxy, proxy)
        outage = proxy.add(Fault("sqs", "*", "reset", for_seconds=seconds))
        stack.simulator.add_export(EXPORT, [("part-1.zip", build_zip(ENTRIES))])
        await stack.seed(EXPORT, metadata_for(ENTRIES))
        port = free_port()
        async with spawned(
            stack, Mode.WORKER, proxy_url, HEALTH_PORT=str(port), LOG_LEVEL="info"
        ) as worker:
            await _health_up(port, worker)
            ends_at = await _outage_begun(outage)
            ready = await _get(port, "/ready")
            assert trio.current_time() < ends_at, "the process took the whole outage to start"
            assert ready.status_code == 503
            assert ready.json()["checks"]["started"] != "ok"
            # Work for it, from an orchestrator that talks to SQS directly.
            stop_orchestrator = await stack.run_service(
                Mode.ORCHESTRATOR, HEALTH_PORT=str(free_port())
            )
            await stack.send_job([EXPORT])
            while trio.current_time() < ends_at:
                assert worker.proc.poll() is None, worker.text
                assert (await _get(port, "/health")).status_code == 200
                await trio.sleep(0.5)
            with trio.fail_after(60):
                await _taken(stack)
            took = trio.current_time() - ends_at
            job = await stack.wait_final(EXPORT)
            assert (await _get(port, "/ready")).status_code == 200
            stop_orchestrator.set()
            worker.signal(signal.SIGTERM)
            assert await worker.exit_code(within=30) == 0, worker.text
        # The figure for benchmarks/fault_table.py's log (pytest captures it).
        print(f"work taken {took:.1f} s after SQS answered", file=sys.stderr)
        assert took < TAKES_WORK_WITHIN_SECONDS, f"work taken {took:.1f} s after SQS answered"
        assert job.status is JobStatus.COMPLETED, job.error
        objects = await stack.objects(EXPORT)
        assert {name: (body, meta) for name, (body, meta) in objects.items()} == {
            name: (data, {"sha256": sha256(data)}) for name, data in ENTRIES
        }
        # Many looks, one line about the wait and one about its end.
        assert proxy.injected[("sqs", "GetQueueAttributes", "reset")] >= 3
        assert worker.text.count(WAITING) == 1, worker.text
        assert worker.text.count("AWS answers: starting") == 1, worker.text
        assert "service stopped by an error" not in worker.text
        nursery.cancel_scope.cancel()


async def test_worker_started_during_an_sqs_outage(aws_endpoint: str) -> None:
    """A worker started during a 9 s SQS outage stays up (/health 200, /ready 503), then works."""
    await worker_started_during_outage(aws_endpoint, SUITE_OUTAGE_SECONDS)


async def test_sigterm_while_waiting_exits_0(aws_endpoint: str) -> None:
    """With SQS, S3 and DynamoDB all down at start, /ready names each; SIGTERM exits 0 at once."""
    async with open_stack(aws_endpoint) as stack, trio.open_nursery() as nursery:
        proxy = FaultProxy(aws_endpoint)
        proxy_url = await nursery.start(serve_fault_proxy, proxy)
        proxy.add(Fault("sqs", "*", "reset", for_seconds=600))
        proxy.add(Fault("s3", "*", "status", status=503, code="SlowDown", for_seconds=600))
        proxy.add(
            Fault(
                "dynamodb", "*", "status", status=400, code="ThrottlingException", for_seconds=600
            )
        )
        port = free_port()
        async with spawned(
            stack, Mode.ALL, proxy_url, HEALTH_PORT=str(port), LOG_LEVEL="info"
        ) as service:
            await _health_up(port, service)
            with trio.fail_after(30):
                while True:
                    ready = await _get(port, "/ready")
                    checks = ready.json()["checks"]
                    if all(checks[name] != "ok" for name in ("sqs", "s3", "dynamodb")):
                        break
                    await trio.sleep(0.2)
            assert ready.status_code == 503
            service.signal(signal.SIGTERM)
            assert await service.exit_code(within=STOP_WITHIN_SECONDS) == 0, service.text
        assert WAITING in service.text
        assert "service started" not in service.text
        nursery.cancel_scope.cancel()


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has a handler for SIGTERM yet (Linux: SigCgt in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


async def test_sigterm_before_start_exits_0(aws_endpoint: str) -> None:
    """A SIGTERM as soon as the process catches it, before it has started, exits 0 unstarted."""
    async with open_stack(aws_endpoint) as stack:
        async with spawned(
            stack, Mode.ALL, HEALTH_PORT=str(free_port()), LOG_LEVEL="info"
        ) as service:
            with trio.fail_after(30):
                while not _catches_sigterm(service.proc.pid):
                    assert service.proc.poll() is None, service.text
                    await trio.sleep(0.005)
            service.signal(signal.SIGTERM)
            assert await service.exit_code(within=30) == 0, service.text
        assert "service started" not in service.text
