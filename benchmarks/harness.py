"""What the benchmarks share: a moto server to measure, the service as a process, /proc.

Each benchmark runs the service (``python -m pipeline``) as a subprocess
against a moto server subprocess and the Export API simulator, and reads CPU
time, peak RSS and page faults of those processes from ``/proc``. The moto
server is the project's launcher (``python -m pipeline.testing.moto``), which
leaves out two of moto's costs that DynamoDB does not have.
"""

from __future__ import annotations

import collections
import os
import resource
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from pipeline._adapters.aws.clients import AwsClients
from pipeline.ops.provisioning import ProvisionedUrls
from pipeline.testing.moto import free_port, moto_process, provision_fresh

TOKEN = "bench-token"
CLK_TCK = os.sysconf("SC_CLK_TCK")


async def provision_bench(
    aws: AwsClients, *, visibility_timeout: int, download_tasks: bool = False
) -> tuple[str, ProvisionedUrls]:
    """Fresh queues, tables and bucket (``bench-<name>``) under a new name: the name and URLs."""
    return await provision_fresh(
        aws,
        bucket_prefix="bench",
        visibility_timeout=visibility_timeout,
        with_task_queue=download_tasks,
    )


def bench_env(
    endpoint: str, name: str, export_jobs_url: str, api: Any, **extra: str
) -> dict[str, str]:
    """The service's environment for resources provisioned under ``name``."""
    return {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": "us-east-1",
        "SQS_EXPORT_JOBS_URL": export_jobs_url,
        "S3_BUCKET_NAME": f"bench-{name}",
        "DYNAMODB_METADATA_TABLE": f"metadata-{name}",
        "DYNAMODB_JOBS_TABLE": f"jobs-{name}",
        "EXPORT_API_BASE_URL": api.api_url,
        "EXPORT_API_TOKEN": TOKEN,
        "EXPORT_DOWNLOAD_ALLOWED_HOSTS": api.download_netloc,
        **extra,
    }


# -- /proc --


def own_cpu() -> float:
    """User plus system CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of a process so far (Linux /proc)."""
    return _cpu(_stat_fields(Path(f"/proc/{pid}/stat").read_text()))


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """User plus system CPU seconds so far of each thread of a process, summed by thread name.

    The main thread is named for the process (``python``); trio's worker
    threads for their job (``trio.to_thread.run_sync``).
    """
    totals: dict[str, float] = collections.defaultdict(float)
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except FileNotFoundError:  # the thread ended
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        totals[name] += _cpu(_stat_fields(stat))
    return dict(totals)


def sys_seconds(pid: int) -> float:
    """System (kernel) CPU seconds of a process so far."""
    return int(_stat_fields(Path(f"/proc/{pid}/stat").read_text())[12]) / CLK_TCK


def minor_faults(pid: int) -> int:
    """Minor page faults of a process so far."""
    return int(_stat_fields(Path(f"/proc/{pid}/stat").read_text())[7])


def _stat_fields(stat: str) -> list[str]:
    """The fields of a ``stat`` line after the command name (which may hold spaces)."""
    return stat.rsplit(")", 1)[1].split()


def _cpu(fields: list[str]) -> float:
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def vm_hwm_kb(pid: int | str) -> int:
    """Peak RSS (VmHWM) of a process, in KiB."""
    return _status_kb(pid, "VmHWM")


def vm_rss_kb(pid: int | str) -> int:
    """Current RSS (VmRSS) of a process, in KiB."""
    return _status_kb(pid, "VmRSS")


def _status_kb(pid: int | str, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return -1


async def sample_rss(pid: int, samples: list[tuple[float, int]], interval: float = 0.05) -> None:
    """Append (seconds, VmRSS KiB) of a process to ``samples`` every ``interval``."""
    started = trio.current_time()
    while True:
        try:
            samples.append((trio.current_time() - started, vm_rss_kb(pid)))
        except FileNotFoundError:  # the process is gone
            return
        await trio.sleep(interval)


# -- moto --


@contextmanager
def moto() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The project's moto server subprocess (its pid is needed for its CPU time).

    That is ``python -m pipeline.testing.moto``, whose transactions back up only
    the items they touch, as the tests' and the demo's.
    """
    port = free_port()
    command = [sys.executable, "-m", "pipeline.testing.moto", str(port)]
    with moto_process(command, port) as running:
        yield running


# -- the service as a process --


async def wait_ready(port: int, proc: trio.Process) -> None:
    async with httpx.AsyncClient() as client:
        with trio.fail_after(60):
            while True:
                if proc.poll() is not None:
                    msg = f"service exited with {proc.returncode} before it was ready"
                    raise RuntimeError(msg)
                try:
                    if (await client.get(f"http://127.0.0.1:{port}/ready")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await trio.sleep(0.2)


@attrs.define
class FinishedJobs:
    """Counts "job finished" lines in the service's log as they are written."""

    count: int = 0
    changed: trio.Event = attrs.field(factory=trio.Event)

    async def count_from(self, stdout: trio.abc.ReceiveStream) -> None:
        partial = b""
        async for chunk in stdout:
            *lines, partial = (partial + chunk).split(b"\n")
            self.count += sum(b'"msg": "job finished"' in line for line in lines)
            self.changed.set()
            self.changed = trio.Event()

    async def wait_for(self, jobs: int) -> None:
        while self.count < jobs:
            await self.changed.wait()


@attrs.frozen
class ServiceProcess:
    """The service running as a subprocess, ready; its finished jobs counted as they are logged."""

    proc: trio.Process
    finished: FinishedJobs
    # For the caller's own tasks beside the service (say, sampling its RSS).
    nursery: trio.Nursery


@asynccontextmanager
async def service_process(
    command: list[str], env: dict[str, str], profile_name: str
) -> AsyncIterator[ServiceProcess]:
    """Run ``command`` (the service) with ``env`` until the block exits, once it is ready.

    Jobs are counted from the service's own "job finished" log lines: polling
    the jobs table would load moto, which the service shares. With
    BENCH_PROFILE_DIR set, py-spy samples it (:func:`profile`). The service is
    sent SIGTERM when the block exits and given 30 s to stop.
    """
    port = free_port()
    async with trio.open_nursery() as nursery:
        proc = await trio.lowlevel.open_process(
            command, env={**os.environ, **env, "HEALTH_PORT": str(port)}, stdout=subprocess.PIPE
        )
        finished = FinishedJobs()
        assert proc.stdout is not None
        nursery.start_soon(finished.count_from, proc.stdout)
        spy: trio.Process | None = None
        try:
            await wait_ready(port, proc)
            spy = await profile(proc.pid, profile_name)
            yield ServiceProcess(proc, finished, nursery)
        finally:
            proc.terminate()
            with trio.move_on_after(30):
                await proc.wait()
                if spy is not None:  # it writes its file once the service is gone
                    await spy.wait()
        nursery.cancel_scope.cancel()


async def profile(pid: int, name: str) -> trio.Process | None:
    """With BENCH_PROFILE_DIR set, sample the service with py-spy until it exits.

    The folded stacks (``service-<phase>.folded``) say where its CPU goes;
    ``BENCH_PROFILE_ARGS`` adds py-spy options (``--rate 1000 --native``).
    """
    profile_dir = os.environ.get("BENCH_PROFILE_DIR")
    if not profile_dir:
        return None
    out = Path(profile_dir) / f"service-{name}.folded"
    return await trio.lowlevel.open_process(
        [
            *("py-spy", "record", "--pid", str(pid), "--format", "raw", "-o", str(out)),
            *os.environ.get("BENCH_PROFILE_ARGS", "").split(),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
