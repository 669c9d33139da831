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

And one to its cost: before applying a ``TransactWriteItems``, moto backs up
every table the transaction names with a deep copy, to restore them if it is
cancelled. That costs time (and memory) in proportion to the whole table, so a
job's per-file transactions slow down as the job grows, and every figure taken
against moto measures moto's copies. DynamoDB's cost does not grow with the
table. Here only the items the transaction names are backed up, and put back
if it fails (:func:`back_up_touched_items_only`).

And one to its S3's answers: an ``UploadPart`` to an upload that was aborted
(or never began) fails with S3's ``404 NoSuchUpload`` rather than moto's
``500`` from a ``KeyError`` (:func:`answer_no_such_upload`). The difference
matters: a 500 is retried as an outage, while the service reads
``NoSuchUpload`` as its upload gone (another delivery of the same entry
started over it) and hands the message back without retrying.

And some to its cost per request, none to its answers (:mod:`pipeline.testing.motolean`).
"""

from __future__ import annotations

import copy
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import httpx

from pipeline.testing.motolean import lean_serving, parse_update_expressions_once

if TYPE_CHECKING:  # the moto subprocess runs this module; it needs no AWS client code
    from pipeline._adapters.aws.clients import AwsClients
    from pipeline.ops.provisioning import ProvisionedUrls

__all__ = [
    "back_up_touched_items_only",
    "free_port",
    "main",
    "moto_process",
    "moto_server",
    "provision_fresh",
    "serialise_dynamodb",
]

# moto imports every service's models on start; on a busy CI machine that
# takes several seconds.
START_TIMEOUT_SECONDS = 60


# Where a listening port is picked: below the kernel's range for outgoing
# connections (Linux: 32768-60999). A port from that range, found free and let
# go, can be taken by any process's next connect before the server binds it:
# a suite of six workers each connecting to moto did so ("Address already in use").
LISTEN_PORTS = range(20_000, 32_768)
_pick = random.SystemRandom()


def _outgoing_ports_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
            return int(ports.read().split()[0])
    except (OSError, ValueError, IndexError):
        return LISTEN_PORTS.stop


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now, outside the range
    the kernel gives outgoing connections (when that range leaves room)."""
    top = min(LISTEN_PORTS.stop, _outgoing_ports_start())
    for _ in range(50 if top - LISTEN_PORTS.start >= 1_000 else 0):
        port = _pick.randrange(LISTEN_PORTS.start, top)
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
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
        # One client for all the probes, and no TLS context: the server is plain
        # HTTP, and each httpx.get made a client that loaded the CA bundle
        # (0.03 CPU-s a probe, a dozen probes while moto imports).
        with httpx.Client(timeout=1, verify=False) as probe:
            deadline = time.monotonic() + START_TIMEOUT_SECONDS
            while True:
                try:
                    probe.get(f"{url}/moto-api/")
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
    with_high_queues: bool = False,
) -> tuple[str, ProvisionedUrls]:
    """A bucket, tables and queues of their own under a new random name; the name and the URLs.

    For ``name``: bucket ``<bucket_prefix>-<name>``, tables ``metadata-<name>``
    and ``jobs-<name>``, queues ``jobs-<name>`` and (asked for) ``tasks-<name>``;
    with the high lane ``jobs-high-<name>`` (and ``tasks-high-<name>`` beside
    the task queue).
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
        export_jobs_high_queue=f"jobs-high-{name}" if with_high_queues else None,
        download_tasks_high_queue=(
            f"tasks-high-{name}" if with_high_queues and with_task_queue else None
        ),
        visibility_timeout=visibility_timeout,
    )
    return name, urls


def serve(port: int, host: str = "127.0.0.1") -> None:
    """moto's server on ``host:port``, changed as the module says."""
    from moto.server import main

    serialise_dynamodb()
    back_up_touched_items_only()
    answer_no_such_upload()
    lean_serving()
    parse_update_expressions_once()
    main(["-H", host, "-p", str(port)])


def serialise_dynamodb() -> None:
    """moto's DynamoDB answers one request at a time, in this process."""
    from moto.dynamodb.responses import DynamoHandler

    one_at_a_time = threading.Lock()
    call_action = DynamoHandler.call_action

    def atomic_call_action(self: Any) -> Any:
        with one_at_a_time:
            return call_action(self)

    DynamoHandler.call_action = atomic_call_action  # type: ignore[method-assign]


def answer_no_such_upload() -> None:
    """moto's ``UploadPart`` to an unknown upload answers ``NoSuchUpload``, as S3 does."""
    from moto.s3.exceptions import NoSuchUpload
    from moto.s3.models import S3Backend

    upload_part = S3Backend.upload_part

    def upload_part_or_no_such_upload(
        self: S3Backend, bucket_name: str, multipart_id: str, part_id: int, value: bytes
    ) -> Any:
        if multipart_id not in self.get_bucket(bucket_name).multiparts:
            raise NoSuchUpload(upload_id=multipart_id)
        return upload_part(self, bucket_name, multipart_id, part_id, value)

    S3Backend.upload_part = upload_part_or_no_such_upload  # type: ignore[method-assign]


def back_up_touched_items_only() -> None:
    """moto's ``TransactWriteItems`` backs up the items it names, not whole tables, in this process.

    The items a transaction names are deep-copied (an ``Update`` changes an
    item in place) before moto applies it; if it raises (cancelled, or
    invalid), each is put back as it was, or removed if it did not exist. moto's
    own rollback then puts back the same table objects, which this leaves
    uncopied. Stream records of a cancelled transaction stay (moto's whole-table
    copy took them back too); the project's tables have no streams.
    """
    from moto.dynamodb import models
    from moto.dynamodb.models.table import Table

    transact_write_items = models.DynamoDBBackend.transact_write_items

    def lean_transact_write_items(
        self: models.DynamoDBBackend, transact_items: list[dict[str, Any]]
    ) -> None:
        backup = _touched_items(self.tables, transact_items)
        try:
            transact_write_items(self, transact_items)
        except BaseException:
            for (table, hash_key, range_key), previous in backup.items():
                _put_back(table, hash_key, range_key, previous)
            raise

    class TablesUncopied:
        """moto's dynamodb models' ``copy`` module, but a table's deep copy is the table.

        moto deep-copies tables only for the transaction backup replaced above.
        """

        @staticmethod
        def deepcopy(value: object) -> object:
            return value if isinstance(value, Table) else copy.deepcopy(value)

    models.DynamoDBBackend.transact_write_items = lean_transact_write_items  # type: ignore[method-assign]
    models.copy = TablesUncopied  # type: ignore[attr-defined,assignment]


if TYPE_CHECKING:
    from moto.dynamodb.models.dynamo_type import DynamoType, Item
    from moto.dynamodb.models.table import Table

    ItemKey = tuple[Table, DynamoType, DynamoType | None]


def _touched_items(
    tables: Mapping[str, Table], transact_items: list[dict[str, Any]]
) -> dict[ItemKey, Item | None]:
    """A deep copy of each item the transaction names (None if absent), by table and key."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    backup: dict[ItemKey, Item | None] = {}
    for transact_item in transact_items:
        for op_type, op in transact_item.items():
            table = tables.get(op.get("TableName", ""))
            key = op.get("Item") if op_type == "Put" else op.get("Key")
            if table is None or not isinstance(key, dict):
                continue  # moto refuses the operation before it changes anything
            try:
                hash_key = DynamoType(key[table.hash_key_attr])
                range_attr = table.range_key_attr
                range_key = DynamoType(key[range_attr]) if range_attr else None
            except (KeyError, TypeError):
                continue  # a malformed key: refused likewise
            previous: Item | None
            if range_key is None:  # moto types items as if every table had a range key
                previous = table.items.get(hash_key)  # type: ignore[assignment]
            else:
                previous = table.items.get(hash_key, {}).get(range_key)
            backup.setdefault((table, hash_key, range_key), copy.deepcopy(previous))
    return backup


def _put_back(
    table: Table, hash_key: DynamoType, range_key: DynamoType | None, previous: Item | None
) -> None:
    """Make ``table``'s item at (``hash_key``, ``range_key``) ``previous`` again (None: absent)."""
    if range_key is None:
        if previous is None:
            table.items.pop(hash_key, None)
        else:
            table.items[hash_key] = previous  # type: ignore[assignment]
        return
    by_range = table.items[hash_key]
    if previous is not None:
        by_range[range_key] = previous
        return
    by_range.pop(range_key, None)
    if not by_range:
        del table.items[hash_key]


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m pipeline.testing.moto [PORT] [--host HOST]``: serve until interrupted."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m pipeline.testing.moto",
        description="A moto server (the local AWS) whose DynamoDB answers one request at a "
        "time and backs up only the items a transaction names, as the service's tests and "
        "local runs use it. Point the service at it with "
        "AWS_ENDPOINT_URL=http://HOST:PORT and any credentials (AWS_ACCESS_KEY_ID=testing, "
        "AWS_SECRET_ACCESS_KEY=testing); python -m pipeline.ops.provision creates the resources.",
    )
    parser.add_argument("port", nargs="?", type=int, default=5000, help="default: 5000")
    parser.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    args = parser.parse_args(argv)
    serve(args.port, args.host)


if __name__ == "__main__":
    main()
