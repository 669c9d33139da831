"""A moto server in a subprocess: the AWS of the local mode, the tests and the benchmarks.

:func:`provision_fresh` gives a test or a benchmark resources of its own in it.

A subprocess rather than moto's in-process threaded server, so that its work
does not compete with the service for the GIL: the local demo's MB/s then
measures the service, not moto sharing its interpreter.

One change to moto (``python -m pipeline.testing.moto PORT``): its DynamoDB
answers one request at a time. moto applies the items of a
``TransactWriteItems`` one after another while other requests run in other
threads, so a reader could see a transaction's result item without the counts
the same transaction adds: DynamoDB's transactions are atomic and serializable
with reads, and the job store relies on it (a file refused as "recorded
already" finds the counts of the record that beat it).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:  # the moto subprocess runs this module; it needs no AWS client code
    from pipeline._adapters.aws.clients import AwsClients
    from pipeline.ops.provisioning import ProvisionedUrls

__all__ = ["free_port", "main", "moto_process", "moto_server", "provision_fresh"]

# moto imports every service's models on start; on a busy CI machine that
# takes several seconds.
START_TIMEOUT_SECONDS = 60


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_server(port: int | None = None) -> Iterator[str]:
    """Run moto's server in a subprocess; yields its URL."""
    port = port or free_port()
    with moto_process([sys.executable, "-m", "pipeline.testing.moto", str(port)], port) as (url, _):
        yield url


@contextmanager
def moto_process(
    command: Sequence[str], port: int
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run ``command``, a moto server listening on ``port``; yields its URL and its process.

    Returns once the server answers; the process is stopped when the block exits.
    """
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            try:
                httpx.get(f"{url}/moto-api/", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    msg = "moto server did not start (is moto[server] installed?)"
                    raise RuntimeError(msg) from None
                time.sleep(0.1)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def provision_fresh(
    aws: AwsClients,
    *,
    bucket_prefix: str = "bucket",
    visibility_timeout: int = 30,
    with_task_queue: bool = False,
) -> tuple[str, ProvisionedUrls]:
    """A bucket, tables and queues of their own under a new random name; the name and the URLs.

    For ``name``: bucket ``<bucket_prefix>-<name>``, tables ``metadata-<name>``
    and ``jobs-<name>``, queues ``jobs-<name>`` and (asked for) ``tasks-<name>``.
    """
    from pipeline.ops.provisioning import provision

    name = uuid.uuid4().hex[:10]
    urls = await provision(
        aws,
        bucket=f"{bucket_prefix}-{name}",
        metadata_table=f"metadata-{name}",
        jobs_table=f"jobs-{name}",
        export_jobs_queue=f"jobs-{name}",
        download_tasks_queue=f"tasks-{name}" if with_task_queue else None,
        visibility_timeout=visibility_timeout,
    )
    return name, urls


def serve(port: int, host: str = "127.0.0.1") -> None:
    """moto's server on ``host:port``, its DynamoDB one request at a time (see above)."""
    from moto.dynamodb.responses import DynamoHandler
    from moto.server import main

    one_at_a_time = threading.Lock()
    call_action = DynamoHandler.call_action

    def atomic_call_action(self: Any) -> Any:
        with one_at_a_time:
            return call_action(self)

    DynamoHandler.call_action = atomic_call_action  # type: ignore[method-assign]
    main(["-H", host, "-p", str(port)])


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m pipeline.testing.moto [PORT] [--host HOST]``: serve until interrupted."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m pipeline.testing.moto",
        description="A moto server (the local AWS) whose DynamoDB answers one request at a "
        "time, as the service's tests and local runs use it. Point the service at it with "
        "AWS_ENDPOINT_URL=http://HOST:PORT and any credentials (AWS_ACCESS_KEY_ID=testing, "
        "AWS_SECRET_ACCESS_KEY=testing); python -m pipeline.ops.provision creates the resources.",
    )
    parser.add_argument("port", nargs="?", type=int, default=5000, help="default: 5000")
    parser.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    args = parser.parse_args(argv)
    serve(args.port, args.host)


if __name__ == "__main__":
    main()
