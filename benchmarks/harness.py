"""What the benchmarks share: a moto server to measure, the service as a process, /proc.

Each benchmark runs the service (``python -m pipeline``) as a subprocess
against a moto server subprocess and the Export API simulator, and reads CPU
time, peak RSS and page faults of those processes from ``/proc``. The moto
server is the project's launcher (``python -m pipeline.testing.moto``), which
leaves out costs of moto's that AWS does not put on the service's cores
(whole-table transaction backups, a connection and a thread per request, the
service looked up per request, update expressions parsed twice).
"""

from __future__ import annotations

import collections
import json
import os
import resource
import socket
import subprocess
import sys
import time
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
    # When each export's line was read (trio's clock), by export ID.
    at: dict[str, float] = attrs.field(factory=dict)

    async def count_from(self, stdout: trio.abc.ReceiveStream) -> None:
        """Count from ``stdout``; with BENCH_SERVICE_LOG set, also append it to that file."""
        copy = os.environ.get("BENCH_SERVICE_LOG")
        partial = b""
        async for chunk in stdout:
            if copy:
                with open(copy, "ab") as out:  # noqa: ASYNC230 (a local file, rarely)
                    out.write(chunk)
            *lines, partial = (partial + chunk).split(b"\n")
            now = trio.current_time()
            for line in lines:
                if b'"msg": "job finished"' in line:
                    self.count += 1
                    self.at[json.loads(line)["exportId"]] = now
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


# -- the latency model --

# Seconds added to each call, drawn uniformly: what a task in the same region
# as its S3 bucket, DynamoDB tables and SQS queue waits per call, roughly.
AWS_LATENCY = {"s3": (0.015, 0.030), "dynamodb": (0.004, 0.010), "sqs": (0.008, 0.016)}
# Seconds each Export API request waits (the simulator's ``request_delay``).
EXPORT_API_LATENCY = 0.040


def aws_service(method: str, target: str, headers: dict[str, str]) -> str:
    """Which AWS service a request is for, the way its credential scope names it."""
    scope = headers.get("authorization", "").split("Credential=", 1)[-1].split("/")
    if len(scope) >= 4 and scope[3] in AWS_LATENCY:
        return scope[3]
    amz_target = headers.get("x-amz-target", "")
    if amz_target.startswith("DynamoDB_"):
        return "dynamodb"
    if amz_target.startswith("AmazonSQS.") or "Action=" in target:
        return "sqs"
    return "s3"


async def _proxy_connection(client: trio.SocketStream, upstream: tuple[str, int]) -> None:
    """Answer one client connection's requests (kept alive) through moto, each after its delay.

    The client's requests go one after another, so they share one connection
    to moto, opened again when moto closed it.
    """
    import random

    import h11

    rng = random.Random()
    conn = h11.Connection(h11.SERVER)
    to_moto = _Upstream(upstream)
    async with client:
        try:
            while True:
                request, body = await _read_message(conn, client)
                if request is None:
                    return
                assert isinstance(request, h11.Request)
                headers = {k.decode().lower(): v.decode() for k, v in request.headers}
                target = request.target.decode()
                if target.startswith(("http://", "https://")):  # absolute-form
                    target = "/" + target.split("/", 3)[3] if target.count("/") >= 3 else "/"
                low, high = AWS_LATENCY[aws_service(request.method.decode(), target, headers)]
                await trio.sleep(rng.uniform(low, high))
                status, response_headers, response_body = await to_moto.forward(
                    request.method, target, headers, body
                )
                response_headers.append(("content-length", str(len(response_body))))
                await client.send_all(
                    conn.send(h11.Response(status_code=status, headers=response_headers))
                    + conn.send(h11.Data(data=response_body))
                    + conn.send(h11.EndOfMessage())
                )
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        finally:
            await to_moto.aclose()


async def _read_message(conn: Any, stream: trio.SocketStream) -> tuple[Any, bytes]:
    """The next request or response on ``conn`` and its whole body; (None, b"") at the end."""
    import h11

    head = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            if conn.they_are_waiting_for_100_continue:
                await stream.send_all(
                    conn.send(h11.InformationalResponse(status_code=100, headers=[]))
                )
            conn.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Request | h11.Response):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return head, bytes(body)
        elif isinstance(event, h11.ConnectionClosed):
            return None, b""
        # InformationalResponse: skip it


_HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "expect"}


class _Upstream:
    """A connection to moto kept between requests (the project's launcher keeps them alive)."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.stream: trio.SocketStream | None = None
        self.conn: Any = None

    async def forward(
        self, method: bytes, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """One request to moto; its answer. A kept connection moto closed is opened again."""
        import h11

        for attempt in (1, 2):
            fresh = self.stream is None
            if self.stream is None:
                self.stream = await trio.open_tcp_stream(*self.address)
                self.conn = h11.Connection(h11.CLIENT)
            request_headers = [(k, v) for k, v in headers.items() if k not in _HOP_HEADERS]
            request_headers += [
                ("host", f"{self.address[0]}:{self.address[1]}"),
                ("content-length", str(len(body))),
            ]
            try:
                head = h11.Request(method=method, target=target, headers=request_headers)
                await self.stream.send_all(
                    self.conn.send(head)
                    + self.conn.send(h11.Data(data=body))
                    + self.conn.send(h11.EndOfMessage())
                )
                response, response_body = await _read_message(self.conn, self.stream)
            except (trio.BrokenResourceError, h11.RemoteProtocolError):
                response = None
            if response is None:  # closed before answering
                await self.aclose()
                if fresh or attempt == 2:
                    raise RuntimeError("moto closed the connection without answering")
                continue
            assert isinstance(response, h11.Response)
            if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
                self.conn.start_next_cycle()
            else:  # moto closes it ("Connection: close")
                await self.aclose()
            response_headers = [
                (k.decode(), v.decode())
                for k, v in response.headers
                if k.decode().lower() not in _HOP_HEADERS
            ]
            return response.status_code, response_headers, response_body
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        if self.stream is not None:
            await self.stream.aclose()
        self.stream = self.conn = None


async def serve_latency_proxy(port: int, upstream_url: str) -> None:
    """Listen on ``port``; forward every AWS call to ``upstream_url`` after the model's delay."""
    host, upstream_port = upstream_url.split("//", 1)[1].rsplit(":", 1)
    upstream = (host, int(upstream_port))
    await trio.serve_tcp(lambda stream: _proxy_connection(stream, upstream), port, host="127.0.0.1")


@contextmanager
def latency_proxy(upstream_url: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The latency model's proxy in front of ``upstream_url`` (moto), as a subprocess.

    A process of its own, so that its work competes with neither the
    simulator in the benchmark's process nor the service for a GIL. Its URL
    and its process.
    """
    port = free_port()
    command = [sys.executable, __file__, "--latency-proxy", str(port), upstream_url]
    proc = subprocess.Popen(command)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the latency proxy did not start") from None
                time.sleep(0.05)
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    if sys.argv[1:2] != ["--latency-proxy"] or len(sys.argv) != 4:
        sys.exit("usage: python benchmarks/harness.py --latency-proxy PORT UPSTREAM_URL")
    trio.run(serve_latency_proxy, int(sys.argv[2]), sys.argv[3])
