"""Large entries: the service against a plain threaded script, the unavoidable work beside them.

Three phases, each with its own service process, plain process and moto
buckets (``--phases`` picks; all by default):

* **one file**: one ZIP (about 100 MB) of two CSV entries of 143 MiB
  (150 MB) each, deflated at level 6;
* **8 files**: one export of eight such ZIPs of one 143 MiB entry each, all
  in flight at once (``MAX_CONCURRENT_JOBS=8``; the plain script runs eight
  threads, one a file);
* **10x**: one ZIP of one entry ten times as large (1,430 MiB): memory must
  not grow with the entry.

Each goes through:

* **the service**: ``python -m pipeline --mode all`` as a subprocess, fed one
  SQS message; timed from the message's send to the "job finished" log line.
  Its CPU (user + system, all threads) comes from ``/proc/<pid>/stat``
  between those two points, its peak RSS from ``VmHWM`` just before it is
  stopped (the whole life of the process: start-up included), its idle RSS
  once ready, before the message;
* **the plain approach**: what a user would write, as a subprocess: list the
  files, download each ZIP to a temporary file with httpx, open it with
  ``zipfile``, look each entry's metadata item up and hand the entry (through
  a SHA-256 hashing reader) to boto3's ``upload_fileobj`` with its defaults
  (threaded multipart, 8 MiB parts, 10 threads, a CRC-32 of each part); timed
  and its CPU taken from the first request to the last upload. Its S3 client
  does not sign the parts' bodies, as botocore does not over HTTPS (against
  real S3): over plain HTTP (moto) it would add a SHA-256 pass over every
  part that a user's script never pays (about 15 % of its CPU here, issue 22);
* **the unavoidable work**: isal inflate + SHA-256 of the same entries, in
  this process, 1 MiB of compressed input per call, one thread, best of two
  (one for the 10x phase).

Both processes get the Dockerfile's glibc ``MALLOC_*`` settings, as the
image does. Both runs share one moto server (a subprocess; its CPU is printed
beside each) and one Export API simulator in this process. CPU per GB is CPU
seconds per 10^9 bytes of entries (uncompressed). Targets (issue 22): the
service's wall time at most the plain approach's, its CPU at most 0.5x the
plain approach's and at most 1.7x the unavoidable work; peak RSS with 8 files
in flight at most idle + 8 x 48 MB, and the same with entries 10x larger.
The fixture: ``large_fixture.py``.

Run::

    python benchmarks/large_entries.py                  # all three phases, ~3 min
    python benchmarks/large_entries.py --phases one     # one file only, ~30 s
    python benchmarks/large_entries.py --entry-mib 32   # a quick look
    python benchmarks/large_entries.py --phases one --no-plain  # the service alone
    BENCH_PROFILE_DIR=/tmp/prof python benchmarks/large_entries.py --phases one  # + py-spy
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import io
import json
import os
import re
import resource
import sys
import tempfile
import time
import zipfile
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
from large_fixture import Fixture, build_fixture, unavoidable

from pipeline._adapters.aws.clients import AwsClients, open_aws_clients
from pipeline._adapters.aws.jobstore import JobStore
from pipeline._adapters.aws.metadata import MetadataItem
from pipeline._core.backoff import AWS_POLICY
from pipeline._logging import configure_logging
from pipeline.ops.provisioning import seed_metadata
from pipeline.testing.simulator import Simulator, serve_simulator

EXPORT_ID = "exp-large"
# The bound on memory per file in flight, over the idle process.
MB_PER_FILE = 48


@attrs.frozen
class Phase:
    """One export's shape, and the service's settings for it."""

    name: str
    title: str
    files: int
    entries: int
    scale: int  # times --entry-mib
    env: dict[str, str] = attrs.field(factory=dict)


PHASES = {
    "one": Phase("one", "one file of two entries", 1, 2, 1),
    "eight": Phase("eight", "8 files in flight", 8, 1, 1, {"MAX_CONCURRENT_JOBS": "8"}),
    "10x": Phase("10x", "one file, one entry 10x larger", 1, 1, 10),
}


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
    """Download to a temporary file, ``zipfile``, boto3 ``upload_fileobj`` with its defaults.

    ``config["threads"]`` files at once, one thread each.
    """
    import boto3
    import botocore.config

    session = boto3.session.Session(
        aws_access_key_id="bench", aws_secret_access_key="bench", region_name="us-east-1"
    )
    # As against S3 over HTTPS: botocore signs the body of a streamed upload
    # (a SHA-256 pass over every part) only over plain HTTP, as moto is here.
    s3 = session.client(
        "s3",
        endpoint_url=config["endpoint"],
        config=botocore.config.Config(s3={"payload_signing_enabled": False}),
    )
    dynamodb = session.client("dynamodb", endpoint_url=config["endpoint"])
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def one_file(http: httpx.Client, url: str) -> int:
        uploaded = 0
        with tempfile.TemporaryFile() as tmp:
            with http.stream("GET", url) as response:
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
        return uploaded

    started, cpu_started = time.monotonic(), own_cpu()
    sys_started = resource.getrusage(resource.RUSAGE_SELF).ru_stime
    with httpx.Client(timeout=60) as http:
        listing = http.get(f"{config['api']}/exports/{EXPORT_ID}/files", headers=auth)
        urls = [file["downloadUrl"] for file in listing.raise_for_status().json()["files"]]
        with concurrent.futures.ThreadPoolExecutor(config["threads"]) as pool:
            uploaded = sum(pool.map(lambda url: one_file(http, url), urls))
    return {
        "seconds": time.monotonic() - started,
        "cpu": own_cpu() - cpu_started,
        "sys": resource.getrusage(resource.RUSAGE_SELF).ru_stime - sys_started,
        "uploaded": uploaded,
        "hwm_kb": vm_hwm_kb("self"),
    }


# -- running them --


@attrs.frozen
class Measured:
    """One row of the table."""

    label: str
    seconds: float
    cpu: float
    moto_cpu: float | None = None
    hwm_kb: int | None = None
    idle_kb: int | None = None


@attrs.frozen
class Stack:
    """Freshly provisioned resources, the simulator serving the fixture."""

    env: dict[str, str]
    aws: AwsClients
    endpoint: str
    moto_pid: int


async def _prepare(
    aws: AwsClients,
    endpoint: str,
    moto_pid: int,
    fixture: Fixture,
    simulator: Simulator,
    api: Any,
    phase: Phase,
) -> Stack:
    name, urls = await provision_bench(aws, visibility_timeout=300)
    items = [MetadataItem(path=e.name, size_bytes=e.size, sha256=e.sha256) for e in fixture.entries]
    await seed_metadata(aws.dynamodb, f"metadata-{name}", EXPORT_ID, items)
    simulator.add_export(EXPORT_ID, [(file.name, file.data) for file in fixture.files])
    env = bench_env(
        endpoint,
        name,
        urls.export_jobs_url,
        api,
        LOG_LEVEL="info",
        **image_malloc_env(),
        **phase.env,
    )
    return Stack(env, aws, endpoint, moto_pid)


def image_malloc_env() -> dict[str, str]:
    """The glibc ``MALLOC_*`` settings the Dockerfile gives the service (both runs get them)."""
    dockerfile = Path(__file__).resolve().parent.parent / "Dockerfile"
    found = re.findall(r"\b(MALLOC_[A-Z_]+)=(\S+)", dockerfile.read_text())
    return dict(found)


async def run_service(stack: Stack, fixture: Fixture, phase: Phase) -> Measured:
    env = stack.env
    command = [sys.executable, "-m", "pipeline", "--mode", "all"]
    async with service_process(command, env, f"large-{phase.name}") as service:
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
        f"  service: peak RSS {ready_kb / 1024:.0f} MB once ready "
        f"(RSS {ready_rss_kb / 1024:.0f} MB), before the export; "
        f"of its CPU {system:.2f} s in the kernel; {faults} minor page faults",
        flush=True,
    )
    by_thread = ", ".join(
        f"{name} {seconds - threads0.get(name, 0.0):.2f} s"
        for name, seconds in sorted(threads.items(), key=lambda item: -item[1])
    )
    print(f"  service: CPU by thread: {by_thread}", flush=True)
    step = max(1, len(rss_samples) // 40)
    timeline = " ".join(f"{kb / 1024:.0f}" for _, kb in rss_samples[::step])
    print(f"  service: RSS (MB) every {0.05 * step:.1f} s: {timeline}", flush=True)
    return Measured("service (--mode all)", seconds, cpu, moto_cpu, hwm, ready_rss_kb)


async def _check_objects(stack: Stack, fixture: Fixture, bucket: str, prefix: str) -> None:
    for entry in fixture.entries:
        head = await stack.aws.s3.head_object(Bucket=bucket, Key=f"{prefix}{entry.name}")
        if head["ContentLength"] != entry.size or head["Metadata"]["sha256"] != entry.sha256:
            raise RuntimeError(f"{prefix}{entry.name} is not the entry")
        # Nothing of the phase stays in moto's memory or temporary files.
        await stack.aws.s3.delete_object(Bucket=bucket, Key=f"{prefix}{entry.name}")


async def run_plain(
    stack: Stack, fixture: Fixture, api: Any, workdir: Path, phase: Phase
) -> Measured:
    config = {
        "endpoint": stack.endpoint,
        "api": api.api_url,
        "bucket": stack.env["S3_BUCKET_NAME"],
        "metadataTable": stack.env["DYNAMODB_METADATA_TABLE"],
        "threads": phase.files,
    }
    config_file, out_file = workdir / "plain.json", workdir / "plain.out.json"
    config_file.write_text(json.dumps(config))
    moto0 = cpu_seconds(stack.moto_pid)
    await trio.run_process(
        [sys.executable, __file__, "--plain", str(config_file), str(out_file)],
        env={**os.environ, **stack.env, "TMPDIR": str(workdir)},
    )
    moto_cpu = cpu_seconds(stack.moto_pid) - moto0
    out = json.loads(out_file.read_text())
    print(f"  plain: of its CPU {out['sys']:.2f} s in the kernel", flush=True)
    await _check_objects(stack, fixture, config["bucket"], "plain/")
    label = "plain (httpx, zipfile, upload_fileobj)"
    return Measured(label, out["seconds"], out["cpu"], moto_cpu, out["hwm_kb"])


async def bench(
    phase: Phase, fixture: Fixture, endpoint: str, moto_pid: int, runs: tuple[str, ...]
) -> list[Measured]:
    results = []
    async with open_aws_clients(region="us-east-1", endpoint_url=endpoint, pool_size=4) as aws:
        with tempfile.TemporaryDirectory(prefix="large-entries-") as tmp:
            for run in runs:
                simulator = Simulator(token=TOKEN)
                async with trio.open_nursery() as nursery:
                    api = await nursery.start(serve_simulator, simulator)
                    stack = await _prepare(aws, endpoint, moto_pid, fixture, simulator, api, phase)
                    if run == "service":
                        results.append(await run_service(stack, fixture, phase))
                    else:
                        results.append(await run_plain(stack, fixture, api, Path(tmp), phase))
                    nursery.cancel_scope.cancel()
                print(_row(results[-1], fixture), flush=True)
    return results


HEAD = f"{'':<40} {'wall':>19}  {'CPU, CPU-s/GB':>16}  {'moto/GB':>8}  {'peak RSS':>9}"


def _row(result: Measured, fixture: Fixture) -> str:
    gb = fixture.entry_bytes / 1e9
    wall = f"{result.seconds:7.2f} s {fixture.entry_bytes / result.seconds / 1e6:6.0f} MB/s"
    cpu = f"{result.cpu:6.2f} s {result.cpu / gb:6.2f}"
    moto_cpu = "" if result.moto_cpu is None else f"{result.moto_cpu / gb:6.2f}"
    hwm = "" if result.hwm_kb is None else f"{result.hwm_kb / 1024:6.0f} MB"
    return f"{result.label:<40} {wall}  {cpu:>16}  {moto_cpu:>8}  {hwm:>9}"


@attrs.frozen
class Outcome:
    """A phase's three rows."""

    phase: Phase
    service: Measured
    plain: Measured | None
    floor: Measured


def run_phase(
    phase: Phase, entry_mib: int, endpoint: str, moto_pid: int, *, with_plain: bool
) -> Outcome:
    fixture = build_fixture(entry_mib * phase.scale, files=phase.files, entries=phase.entries)
    print(
        f"\n== {phase.title}: {len(fixture.files)} ZIP(s) of {fixture.zip_bytes / 1e6:.0f} MB "
        f"in all, {len(fixture.entries)} CSV entries of {fixture.entries[0].size / 1e6:.0f} MB "
        f"({fixture.entry_bytes / 1e6:.0f} MB); load {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    print(HEAD, flush=True)
    runs = ("service", "plain") if with_plain else ("service",)
    service, *plain_run = trio.run(bench, phase, fixture, endpoint, moto_pid, runs)
    seconds, cpu = min(unavoidable(fixture) for _ in range(1 if phase.scale > 1 else 2))
    floor = Measured("unavoidable (isal inflate + SHA-256)", seconds, cpu)
    print(_row(floor, fixture), flush=True)
    return Outcome(phase, service, plain_run[0] if plain_run else None, floor)


def summary(outcomes: list[Outcome], entry_mib: int) -> None:
    print(
        f"\n{'':<34} {'wall/plain':>10} {'CPU/plain':>10} {'CPU/unavoid.':>12} "
        f"{'idle RSS':>9} {'peak RSS':>9} {'per file':>9}"
    )
    for outcome in outcomes:
        service, phase = outcome.service, outcome.phase
        idle = (service.idle_kb or 0) / 1024
        peak = (service.hwm_kb or 0) / 1024
        plain_run = outcome.plain
        wall = "" if plain_run is None else f"{service.seconds / plain_run.seconds:.2f}"
        cpu = "" if plain_run is None else f"{service.cpu / plain_run.cpu:.2f}"
        print(
            f"{phase.title:<34} {wall:>10} {cpu:>10} {service.cpu / outcome.floor.cpu:12.2f} "
            f"{idle:6.0f} MB {peak:6.0f} MB {(peak - idle) / phase.files:6.0f} MB"
        )
    print(
        f"targets: wall/plain <= 1.0, CPU/plain <= 0.5, CPU/unavoidable <= 1.7 (toward 1.5); "
        f"peak RSS <= idle + {MB_PER_FILE} MB a file in flight, the same for 10x entries "
        f"(--entry-mib {entry_mib}); load {os.getloadavg()[0]:.2f} at the end"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--plain"]:
        out = plain(json.loads(Path(argv[1]).read_text()))
        Path(argv[2]).write_text(json.dumps(out))
        return 0
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--entry-mib", type=int, default=143, help="size of each entry")
    parser.add_argument(
        "--phases", default="one,eight,10x", help=f"comma-separated, of {', '.join(PHASES)}"
    )
    parser.add_argument(
        "--no-plain", action="store_true", help="skip the plain approach (profiling, a quick look)"
    )
    args = parser.parse_args(argv)
    phases = [PHASES[name] for name in args.phases.split(",")]
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    configure_logging("warning", stream=sys.stderr)
    print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}", flush=True)
    with moto() as (endpoint, moto_proc):
        outcomes = [
            run_phase(phase, args.entry_mib, endpoint, moto_proc.pid, with_plain=not args.no_plain)
            for phase in phases
        ]
    summary(outcomes, args.entry_mib)
    return 0


if __name__ == "__main__":
    sys.exit(main())
