"""Large entries: the service against a plain threaded script, the unavoidable work beside them.

One export of one ZIP (about 100 MB) holding two CSV entries of 143 MiB
(150 MB) each, deflated at level 6, goes through:

* **the service**: ``python -m pipeline --mode all`` as a subprocess, fed one
  SQS message; timed from the message's send to the "job finished" log line.
  Its CPU (user + system, all threads) comes from ``/proc/<pid>/stat``
  between those two points, its peak RSS from ``VmHWM`` just before it is
  stopped (the whole life of the process: start-up included);
* **the plain approach**: what a user would write, as a subprocess: list the
  files, download the ZIP to a temporary file with httpx, open it with
  ``zipfile``, look each entry's metadata item up and hand the entry (through
  a SHA-256 hashing reader) to boto3's ``upload_fileobj`` with its defaults
  (threaded multipart, 8 MiB parts, 10 threads); timed and its CPU taken from
  the first request to the last upload;
* **the unavoidable work**: isal inflate + SHA-256 of the same entries, in
  this process, 1 MiB of compressed input per call, best of two.

Both processes get the Dockerfile's glibc ``MALLOC_*`` settings, as the
image does. Both runs share one moto server (a subprocess; its CPU is printed beside
each) and one Export API simulator in this process. CPU per GB is CPU
seconds per 10^9 bytes of entries (uncompressed). Targets (issue 10): the
service's wall time at most the plain approach's, its CPU per GB at most 0.5x
the plain approach's and at most 2.0x the unavoidable work, peak RSS < 100 MB.

The data: CSV rows (order number, time, customer, country, SKU, quantity,
price, status) made from a seeded generator in 1 MiB blocks; a pool of
blocks is compressed once, each segment ending in a full flush, and every
entry is a seeded sequence of them (see ``zip_throughput.py``), so the ZIP
is built in seconds and its bytes are the same in every run.

Run::

    python benchmarks/large_entries.py                  # two 143 MiB entries
    python benchmarks/large_entries.py --entry-mib 32   # a quick look
    BENCH_PROFILE_DIR=/tmp/prof python benchmarks/large_entries.py   # + py-spy of the service
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import re
import resource
import struct
import sys
import tempfile
import time
import zipfile
import zlib
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import (
    TOKEN,
    bench_env,
    cpu_seconds,
    minor_faults,
    moto,
    own_cpu,
    provision_bench,
    sample_rss,
    service_process,
    sys_seconds,
    thread_cpu_seconds,
    vm_hwm_kb,
    vm_rss_kb,
)
from zip_throughput import FINAL_BLOCK, MIB, chain_crc, compress_segment

from pipeline._adapters.aws.clients import AwsClients, open_aws_clients
from pipeline._adapters.aws.jobstore import JobStore
from pipeline._adapters.aws.metadata import MetadataItem
from pipeline._core.backoff import AWS_POLICY
from pipeline._logging import configure_logging
from pipeline.ops.provisioning import seed_metadata
from pipeline.testing.simulator import Simulator, serve_simulator

EXPORT_ID = "exp-large"
POOL_BLOCKS = 32
NAMES = ("acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka", "tyrell")
COUNTRIES = ("DE", "FR", "US", "GB", "NL", "SE", "ES", "IT", "PL", "JP", "BR", "CA")
STATUSES = ("paid", "shipped", "refunded", "pending", "cancelled")
HEADER = b"order,created,customer,country,sku,quantity,price,status\n"


# -- the fixture --


def csv_block(rng: random.Random, size: int = MIB) -> bytes:
    """About ``size`` bytes of CSV rows (about 3:1 under deflate level 6)."""
    rows: list[str] = []
    total = 0
    while total < size:
        row = (
            f"{rng.randrange(10**7):07d},2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} "
            f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d},"
            f"{rng.choice(NAMES)}-{rng.randrange(1000)},{rng.choice(COUNTRIES)},"
            f"SKU-{rng.randrange(5000):05d},{rng.randint(1, 9)},{rng.randrange(100000) / 100:.2f},"
            f"{rng.choice(STATUSES)}\n"
        )
        rows.append(row)
        total += len(row)
    return (HEADER + "".join(rows).encode())[:size]


@attrs.frozen
class Entry:
    """One entry of the fixture ZIP."""

    name: str
    size: int
    compressed_size: int
    sha256: str
    data_offset: int  # where its deflate stream starts in the ZIP


@attrs.frozen
class Fixture:
    """The ZIP's bytes and what its entries are."""

    data: bytes = attrs.field(repr=False)
    entries: tuple[Entry, ...]

    @property
    def entry_bytes(self) -> int:
        return sum(entry.size for entry in self.entries)


def build_fixture(entry_mib: int, count: int = 2, seed: int = 10) -> Fixture:
    """A ZIP of ``count`` CSV entries of ``entry_mib`` MiB each, from a seeded pool."""
    rng = random.Random(seed)
    blocks = [csv_block(rng) for _ in range(POOL_BLOCKS)]
    segments = [compress_segment(block) for block in blocks]
    crcs = [zlib.crc32(block) for block in blocks]
    out = bytearray()
    central = bytearray()
    entries: list[Entry] = []
    for index in range(count):
        name = f"orders/2026-part-{index + 1}.csv"
        raw_name = name.encode()
        order = [rng.randrange(POOL_BLOCKS) for _ in range(entry_mib)]
        sha = hashlib.sha256()
        for block_index in order:
            sha.update(blocks[block_index])
        crc = chain_crc(crcs, order)
        packed = sum(len(segments[i]) for i in order) + len(FINAL_BLOCK)
        size = entry_mib * MIB
        offset = len(out)
        fields = (20, 0, 8, 0, 0x5C21, crc, packed, size, len(raw_name), 0)
        out += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", *fields) + raw_name
        entries.append(Entry(name, size, packed, sha.hexdigest(), len(out)))
        for block_index in order:
            out += segments[block_index]
        out += FINAL_BLOCK
        central += struct.pack(
            "<4sBBHHHHHIIIHHHHHII",
            *(b"PK\x01\x02", 20, 3, 20, 0, 8, 0, 0x5C21, crc, packed, size, len(raw_name)),
            *(0, 0, 0, 0, 0o100644 << 16, offset),
        )
        central += raw_name
    directory_at = len(out)
    out += central
    out += struct.pack(
        "<4sHHHHIIH", b"PK\x05\x06", 0, 0, count, count, len(central), directory_at, 0
    )
    return Fixture(bytes(out), tuple(entries))


# -- the unavoidable work --


def unavoidable(fixture: Fixture) -> tuple[float, float]:
    """Wall and CPU seconds of isal inflate + SHA-256 over the entries, 1 MiB per call."""
    from isal import isal_zlib

    view = memoryview(fixture.data)
    started, cpu_started = time.perf_counter(), time.process_time()
    for entry in fixture.entries:
        inflater = isal_zlib.decompressobj(-15)
        sha = hashlib.sha256()
        end = entry.data_offset + entry.compressed_size
        for at in range(entry.data_offset, end, MIB):
            sha.update(inflater.decompress(view[at : min(at + MIB, end)]))
        if sha.hexdigest() != entry.sha256:
            raise RuntimeError(f"{entry.name}: digest differs")
    return time.perf_counter() - started, time.process_time() - cpu_started


# -- the plain approach (in its own process) --


class _Hashing(io.RawIOBase):
    """A read-only, unseekable stream that hashes what is read through it."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self.sha = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._raw.read(size)
        self.sha.update(data)
        self.size += len(data)
        return data


def plain(config: dict[str, Any]) -> dict[str, Any]:
    """Download to a temporary file, ``zipfile``, boto3 ``upload_fileobj`` with its defaults."""
    import boto3

    session = boto3.session.Session(
        aws_access_key_id="bench", aws_secret_access_key="bench", region_name="us-east-1"
    )
    s3 = session.client("s3", endpoint_url=config["endpoint"])
    dynamodb = session.client("dynamodb", endpoint_url=config["endpoint"])
    auth = {"Authorization": f"Bearer {TOKEN}"}
    started, cpu_started = time.monotonic(), own_cpu()
    sys_started = resource.getrusage(resource.RUSAGE_SELF).ru_stime
    uploaded = 0
    with httpx.Client(timeout=60) as http:
        listing = http.get(f"{config['api']}/exports/{EXPORT_ID}/files", headers=auth)
        for file in listing.raise_for_status().json()["files"]:
            with tempfile.TemporaryFile() as tmp:
                with http.stream("GET", file["downloadUrl"]) as response:
                    response.raise_for_status()
                    for chunk in response.iter_bytes():
                        tmp.write(chunk)
                with zipfile.ZipFile(tmp) as archive:
                    for info in archive.infolist():
                        item = dynamodb.get_item(
                            TableName=config["metadataTable"],
                            Key={"exportId": {"S": EXPORT_ID}, "path": {"S": info.filename}},
                        )["Item"]
                        key = f"plain/{info.filename}"
                        with archive.open(info) as raw:
                            reader = _Hashing(raw)
                            s3.upload_fileobj(
                                reader,
                                config["bucket"],
                                key,
                                ExtraArgs={"Metadata": {"sha256": item["sha256"]["S"]}},
                            )
                        if reader.sha.hexdigest() != item["sha256"]["S"]:
                            s3.delete_object(Bucket=config["bucket"], Key=key)
                            raise RuntimeError(f"{info.filename}: digest differs")
                        uploaded += 1
    return {
        "seconds": time.monotonic() - started,
        "cpu": own_cpu() - cpu_started,
        "sys": resource.getrusage(resource.RUSAGE_SELF).ru_stime - sys_started,
        "uploaded": uploaded,
        "hwm_kb": vm_hwm_kb("self"),
    }


# -- running both --


@attrs.frozen
class Measured:
    """One row of the table."""

    label: str
    seconds: float
    cpu: float
    moto_cpu: float | None = None
    hwm_kb: int | None = None


@attrs.frozen
class Stack:
    """Freshly provisioned resources, the simulator serving the fixture."""

    env: dict[str, str]
    aws: AwsClients
    endpoint: str
    moto_pid: int


async def _prepare(
    aws: AwsClients, endpoint: str, moto_pid: int, fixture: Fixture, simulator: Simulator, api: Any
) -> Stack:
    name, urls = await provision_bench(aws, visibility_timeout=300)
    items = [MetadataItem(path=e.name, size_bytes=e.size, sha256=e.sha256) for e in fixture.entries]
    await seed_metadata(aws.dynamodb, f"metadata-{name}", EXPORT_ID, items)
    simulator.add_export(EXPORT_ID, [("part-0001.zip", fixture.data)])
    env = bench_env(
        endpoint, name, urls.export_jobs_url, api, LOG_LEVEL="info", **image_malloc_env()
    )
    return Stack(env, aws, endpoint, moto_pid)


def image_malloc_env() -> dict[str, str]:
    """The glibc ``MALLOC_*`` settings the Dockerfile gives the service (both runs get them)."""
    dockerfile = Path(__file__).resolve().parent.parent / "Dockerfile"
    found = re.findall(r"\b(MALLOC_[A-Z_]+)=(\S+)", dockerfile.read_text())
    return dict(found)


async def run_service(stack: Stack, fixture: Fixture) -> Measured:
    env = stack.env
    command = [sys.executable, "-m", "pipeline", "--mode", "all"]
    async with service_process(command, env, "large") as service:
        pid = service.proc.pid
        ready_kb, ready_rss_kb = vm_hwm_kb(pid), vm_rss_kb(pid)
        rss_samples: list[tuple[float, int]] = []
        service.nursery.start_soon(sample_rss, pid, rss_samples)
        cpu0, moto0 = cpu_seconds(pid), cpu_seconds(stack.moto_pid)
        threads0 = thread_cpu_seconds(pid)
        sys0, faults0 = sys_seconds(pid), minor_faults(pid)
        started = trio.current_time()
        await stack.aws.sqs.send_message(
            QueueUrl=env["SQS_EXPORT_JOBS_URL"],
            MessageBody=json.dumps({"exportIds": [EXPORT_ID]}),
        )
        with trio.fail_after(1800):
            await service.finished.wait_for(1)
        seconds = trio.current_time() - started
        cpu = cpu_seconds(pid) - cpu0
        threads = thread_cpu_seconds(pid)
        system = sys_seconds(pid) - sys0
        faults = minor_faults(pid) - faults0
        moto_cpu = cpu_seconds(stack.moto_pid) - moto0
        hwm = vm_hwm_kb(pid)
    job = await JobStore(stack.aws.dynamodb, env["DYNAMODB_JOBS_TABLE"], AWS_POLICY).get_job(
        EXPORT_ID
    )
    assert job is not None
    if job.status.value != "COMPLETED" or job.summary.entries_uploaded != len(fixture.entries):
        raise RuntimeError(f"the job ended {job.status.value}: {job.error} {job.summary}")
    await _check_objects(stack, fixture, env["S3_BUCKET_NAME"], "exports/exp-large/")
    print(
        f"service: peak RSS {ready_kb / 1024:.0f} MB once ready "
        f"(RSS {ready_rss_kb / 1024:.0f} MB), before the export; "
        f"of its CPU {system:.2f} s in the kernel; {faults} minor page faults",
        flush=True,
    )
    by_thread = ", ".join(
        f"{name} {seconds - threads0.get(name, 0.0):.2f} s"
        for name, seconds in sorted(threads.items(), key=lambda item: -item[1])
    )
    print(f"service: CPU by thread: {by_thread}", flush=True)
    timeline = " ".join(f"{kb / 1024:.0f}" for _, kb in rss_samples[::4])
    print(f"service: RSS (MB) every 0.2 s during the export: {timeline}", flush=True)
    return Measured("service (--mode all)", seconds, cpu, moto_cpu, hwm)


async def _check_objects(stack: Stack, fixture: Fixture, bucket: str, prefix: str) -> None:
    for entry in fixture.entries:
        head = await stack.aws.s3.head_object(Bucket=bucket, Key=f"{prefix}{entry.name}")
        if head["ContentLength"] != entry.size or head["Metadata"]["sha256"] != entry.sha256:
            raise RuntimeError(f"{prefix}{entry.name} is not the entry")


async def run_plain(stack: Stack, fixture: Fixture, api: Any, workdir: Path) -> Measured:
    config = {
        "endpoint": stack.endpoint,
        "api": api.api_url,
        "bucket": stack.env["S3_BUCKET_NAME"],
        "metadataTable": stack.env["DYNAMODB_METADATA_TABLE"],
    }
    config_file, out_file = workdir / "plain.json", workdir / "plain.out.json"
    config_file.write_text(json.dumps(config))
    moto0 = cpu_seconds(stack.moto_pid)
    await trio.run_process(
        [sys.executable, __file__, "--plain", str(config_file), str(out_file)],
        env={**os.environ, **stack.env},
    )
    moto_cpu = cpu_seconds(stack.moto_pid) - moto0
    out = json.loads(out_file.read_text())
    print(f"plain: of its CPU {out['sys']:.2f} s in the kernel", flush=True)
    await _check_objects(stack, fixture, config["bucket"], "plain/")
    label = "plain (httpx, zipfile, upload_fileobj)"
    return Measured(label, out["seconds"], out["cpu"], moto_cpu, out["hwm_kb"])


async def bench(fixture: Fixture, endpoint: str, moto_pid: int) -> list[Measured]:
    results = []
    async with open_aws_clients(region="us-east-1", endpoint_url=endpoint, pool_size=4) as aws:
        with tempfile.TemporaryDirectory() as tmp:
            for run in (run_service, run_plain):
                simulator = Simulator(token=TOKEN)
                async with trio.open_nursery() as nursery:
                    api = await nursery.start(serve_simulator, simulator)
                    stack = await _prepare(aws, endpoint, moto_pid, fixture, simulator, api)
                    if run is run_service:
                        results.append(await run_service(stack, fixture))
                    else:
                        results.append(await run_plain(stack, fixture, api, Path(tmp)))
                    nursery.cancel_scope.cancel()
                print(_row(results[-1], fixture), flush=True)
    return results


def _row(result: Measured, fixture: Fixture) -> str:
    gb = fixture.entry_bytes / 1e9
    wall = f"{result.seconds:7.2f} s {fixture.entry_bytes / result.seconds / 1e6:6.0f} MB/s"
    cpu = f"{result.cpu:6.2f} s {result.cpu / gb:6.2f}"
    moto_cpu = "" if result.moto_cpu is None else f"{result.moto_cpu / gb:6.2f}"
    hwm = "" if result.hwm_kb is None else f"{result.hwm_kb / 1024:6.0f} MB"
    return f"{result.label:<40} {wall}  {cpu:>16}  {moto_cpu:>8}  {hwm:>9}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--plain"]:
        out = plain(json.loads(Path(argv[1]).read_text()))
        Path(argv[2]).write_text(json.dumps(out))
        return 0
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--entry-mib", type=int, default=143, help="size of each entry")
    args = parser.parse_args(argv)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    configure_logging("warning", stream=sys.stderr)
    fixture = build_fixture(args.entry_mib)
    gb = fixture.entry_bytes / 1e9
    print(
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; one ZIP of "
        f"{len(fixture.data) / 1e6:.0f} MB, {len(fixture.entries)} CSV entries of "
        f"{fixture.entries[0].size / 1e6:.0f} MB ({fixture.entry_bytes / 1e6:.0f} MB in all)",
        flush=True,
    )
    head = f"{'':<40} {'wall':>19}  {'CPU, CPU-s/GB':>16}  {'moto/GB':>8}  {'peak RSS':>9}"
    print(head, flush=True)
    with moto() as (endpoint, moto_proc):
        service, plain_run = trio.run(bench, fixture, endpoint, moto_proc.pid)
    seconds, cpu = min(unavoidable(fixture) for _ in range(2))
    floor = Measured("unavoidable (isal inflate + SHA-256)", seconds, cpu)
    print(_row(floor, fixture))
    hwm = (service.hwm_kb or 0) / 1024
    print(
        f"\nservice wall / plain wall      {service.seconds / plain_run.seconds:5.2f}  "
        f"(target <= 1.0)\n"
        f"service CPU / plain CPU        {service.cpu / plain_run.cpu:5.2f}  (target <= 0.5)\n"
        f"service CPU / unavoidable CPU  {service.cpu / floor.cpu:5.2f}  (target <= 2.0)\n"
        f"service peak RSS               {hwm:5.0f} MB (target < 100)\n"
        f"CPU-s/GB: service {service.cpu / gb:.2f}, plain {plain_run.cpu / gb:.2f}, "
        f"unavoidable {floor.cpu / gb:.2f}; load {os.getloadavg()[0]:.2f} at the end"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
