"""Entries in parallel: a ZIP's large entries over two downloads at once against one stream.

One export of one ZIP holding two CSV entries of 64 MiB each (deflated, about
22 MB each; the fixture of ``large_entries.py``) is served by the Export API
simulator at a per-connection rate (``--rate-mb``, 40 MB/s by default: a
download that one connection cannot speed up, as a remote store's per-request
throughput). The service (``python -m pipeline --mode all``, a subprocess, as
in ``large_entries.py``) reads it twice in the same run, on fresh resources:

* **two streams**: ``WORKER_POOL_SIZE=2``; the file stage cuts the entries
  into two groups (``pipeline/_service/entry_groups.py``), each fetched with
  its own ranged GET and inflated beside the other (the second starts as
  soon as the first group's reader is seen waiting on its download, which a
  per-connection rate makes it do);
* **one stream**: ``WORKER_POOL_SIZE=1``; streams per file are
  ``min(2, WORKER_POOL_SIZE)``, so the file is one download, read exactly as
  before groups existed. For one file this costs nothing else: one stream
  inflates one entry at a time, in one thread, whatever the pool size.

Printed per run: wall time (the job message's send to the "job finished"
log line), the service's CPU (user + system, all threads) over that time, its
peak RSS (``VmHWM``, the whole life of the process), and the download
requests the simulator served with their ``Range`` headers; then the ratios.
Expected: the download's share of the wall time halved (the job's fixed
costs, listing and S3 stay); CPU about the same; peak RSS up by the second
stream's upload buffers: its part being filled and up to three parts in
flight, 8 MiB each (measured: +20 to +37 MB).

Run::

    python benchmarks/parallel_entries.py                         # 2 x 64 MiB at 40 MB/s
    python benchmarks/parallel_entries.py --entry-mib 32 --rate-mb 20
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import attrs
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import TOKEN, bench_env, moto, provision_bench
from large_entries import EXPORT_ID, PHASES, Measured, Stack, image_malloc_env
from large_entries import run_service as run_large_service
from large_fixture import Fixture, build_fixture

from pipeline._adapters.aws.clients import AwsClients, open_aws_clients
from pipeline._adapters.aws.metadata import MetadataItem
from pipeline._logging import configure_logging
from pipeline.ops.provisioning import seed_metadata
from pipeline.testing.simulator import Simulator, serve_simulator

RUNS = (("two streams (WORKER_POOL_SIZE=2)", "2"), ("one stream (WORKER_POOL_SIZE=1)", "1"))


@attrs.frozen
class Run:
    """One service run and the download requests it made."""

    measured: Measured
    ranges: list[str | None]


async def _run_once(
    aws: AwsClients,
    endpoint: str,
    moto_pid: int,
    fixture: Fixture,
    rate: float,
    pool_size: str,
) -> Run:
    simulator = Simulator(token=TOKEN)
    async with trio.open_nursery() as nursery:
        api = await nursery.start(serve_simulator, simulator)
        name, urls = await provision_bench(aws, visibility_timeout=300)
        items = [
            MetadataItem(path=e.name, size_bytes=e.size, sha256=e.sha256) for e in fixture.entries
        ]
        await seed_metadata(aws.dynamodb, f"metadata-{name}", EXPORT_ID, items)
        [file] = fixture.files
        [file_id] = simulator.add_export(EXPORT_ID, [(file.name, file.data)])
        simulator.set_throttle(EXPORT_ID, file_id, rate)
        env = bench_env(
            endpoint,
            name,
            urls.export_jobs_url,
            api,
            LOG_LEVEL="info",
            WORKER_POOL_SIZE=pool_size,
            **image_malloc_env(),
        )
        stack = Stack(env, aws, endpoint, moto_pid)
        measured = await run_large_service(stack, fixture, PHASES["one"])
        ranges = [r.range for r in simulator.requests if r.route == "download"]
        nursery.cancel_scope.cancel()
    return Run(measured, ranges)


async def bench(fixture: Fixture, endpoint: str, moto_pid: int, rate: float) -> list[Run]:
    runs = []
    async with open_aws_clients(region="us-east-1", endpoint_url=endpoint, pool_size=4) as aws:
        for label, pool_size in RUNS:
            print(f"-- {label}", flush=True)
            run = await _run_once(aws, endpoint, moto_pid, fixture, rate, pool_size)
            runs.append(attrs.evolve(run, measured=attrs.evolve(run.measured, label=label)))
            print(f"downloads (Range): {run.ranges}", flush=True)
    return runs


def _row(run: Run, fixture: Fixture) -> str:
    result = run.measured
    rate = fixture.entry_bytes / result.seconds / 1e6
    hwm = (result.hwm_kb or 0) / 1024
    return (
        f"{result.label:<34} {result.seconds:7.2f} s {rate:6.0f} MB/s  "
        f"CPU {result.cpu:6.2f} s  peak RSS {hwm:5.0f} MB  downloads {len(run.ranges)}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--entry-mib", type=int, default=64, help="size of each entry")
    parser.add_argument("--entries", type=int, default=2, help="number of entries")
    parser.add_argument(
        "--rate-mb", type=float, default=40.0, help="download rate per connection (MB/s)"
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    configure_logging("warning", stream=sys.stderr)
    fixture = build_fixture(args.entry_mib, entries=args.entries)
    print(
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; one ZIP of "
        f"{fixture.zip_bytes / 1e6:.0f} MB, {len(fixture.entries)} CSV entries of "
        f"{fixture.entries[0].size / 1e6:.0f} MB; {args.rate_mb:.0f} MB/s per connection",
        flush=True,
    )
    with moto() as (endpoint, moto_proc):
        runs = trio.run(bench, fixture, endpoint, moto_proc.pid, args.rate_mb * 1e6)
    print()
    for run in runs:
        print(_row(run, fixture))
    two, one = runs[0].measured, runs[1].measured
    print(
        f"\ntwo streams / one stream: wall {two.seconds / one.seconds:.2f}, "
        f"CPU {two.cpu / one.cpu:.2f}, peak RSS {(two.hwm_kb or 0) / (one.hwm_kb or 1):.2f}; "
        f"load {os.getloadavg()[0]:.2f} at the end"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
