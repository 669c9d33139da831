"""Worker scaling: the same load through one worker, then two, measured in one run.

Why this shape: the question for capacity planning is what one worker task
does per second on realistic ZIPs, and whether a second task adds to it. So
both phases process the same export (the same bytes) with the service started
as real processes, ``python -m pipeline --mode orchestrator`` and ``--mode
worker``, exactly as deployed; only the number of workers changes. Timing
starts when the export-job message is sent (every process already answers
``/ready``) and stops when the job item is ``COMPLETED``, so process start-up
is left out and listing, queueing, download, inflate, verification, upload and
finalisation are in.

Everything runs on this one machine: moto (S3, SQS, DynamoDB) is a separate
process competing for the same cores, and the Export API simulator runs in
this script's process. The CPU seconds each process used are printed next to
the figures, so the share spent by the stand-ins is visible.

Run::

    python benchmarks/worker_scaling.py            # 8 ZIPs of ~16 MB uncompressed
    python benchmarks/worker_scaling.py --files 16 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys

import attrs
import trio
from harness import TOKEN, bench_env, cpu_seconds, moto, provision_bench, wait_ready

from pipeline._adapters.aws import sqs as _sqs
from pipeline._adapters.aws.clients import AwsClients, open_aws_clients
from pipeline._adapters.aws.jobstore import JobStore
from pipeline._core.accounting import JobStatus
from pipeline._core.backoff import AWS_POLICY
from pipeline._logging import configure_logging
from pipeline.ops.provisioning import seed_metadata
from pipeline.testing.demo import build_zip, metadata_for, records
from pipeline.testing.moto import free_port
from pipeline.testing.simulator import Simulator, serve_simulator

# Each ZIP holds this many entries; ~16 MB of JSON lines split in four is
# closer to real exports than one huge entry, and exercises per-entry work.
ENTRIES_PER_ZIP = 4
# Per-worker concurrency for both phases. SQS hands out up to ten messages per
# receive, so with the default (20) one worker would take all eight files
# before the second one asked; four per worker lets two workers share them.
WORKER_CONCURRENCY = 4


@attrs.frozen
class Load:
    """The export both phases process."""

    zips: list[tuple[str, bytes]]
    entries: list[tuple[str, bytes]]

    @property
    def uncompressed(self) -> int:
        return sum(len(data) for _, data in self.entries)

    @property
    def compressed(self) -> int:
        return sum(len(data) for _, data in self.zips)


@attrs.frozen
class Phase:
    """What one phase measured."""

    workers: int
    seconds: float
    files: int
    uncompressed: int
    compressed: int
    cpu: dict[str, float]

    def line(self) -> str:
        cpu = ", ".join(f"{name} {seconds:.1f}" for name, seconds in self.cpu.items())
        return (
            f"1 orchestrator + {self.workers} worker(s): {self.files} files in "
            f"{self.seconds:.2f} s = {self.files / self.seconds:.2f} files/s, "
            f"{self.uncompressed / self.seconds / 1e6:.1f} MB/s uncompressed "
            f"({self.compressed / self.seconds / 1e6:.1f} MB/s of ZIP downloaded); "
            f"CPU s: {cpu}"
        )


def make_load(files: int, mb: int, seed: int = 5) -> Load:
    """``files`` ZIPs of about ``mb`` MB of compressible JSON lines each."""
    rng = random.Random(seed)
    entry_size = mb * 1024 * 1024 // ENTRIES_PER_ZIP
    zips, entries = [], []
    for n in range(files):
        own = [(f"part-{n:03d}/rows-{i}.jsonl", records(rng, entry_size)) for i in range(4)]
        zips.append((f"part-{n:03d}.zip", build_zip(own)))
        entries.extend(own)
    return Load(zips=zips, entries=entries)


async def run_phase(
    aws: AwsClients,
    endpoint: str,
    moto_proc: subprocess.Popen[bytes],
    load: Load,
    workers: int,
) -> Phase:
    """Provision fresh resources, start the processes, time one export end to end."""
    name, urls = await provision_bench(aws, visibility_timeout=60, download_tasks=True)
    export_id = f"exp-bench-{name}"
    await seed_metadata(aws.dynamodb, f"metadata-{name}", export_id, metadata_for(load.entries))
    simulator = Simulator(token=TOKEN)
    simulator.add_export(export_id, load.zips)
    async with trio.open_nursery() as nursery:
        sim_urls = await nursery.start(serve_simulator, simulator)
        env = {
            **os.environ,
            **bench_env(
                endpoint,
                name,
                urls.export_jobs_url,
                sim_urls,
                SQS_DOWNLOAD_TASKS_URL=str(urls.download_tasks_url),
                MAX_CONCURRENT_JOBS=str(WORKER_CONCURRENCY),
                LOG_LEVEL="warning",
            ),
        }
        procs: dict[str, trio.Process] = {}
        try:
            modes = ["orchestrator"] + ["worker"] * workers
            for index, mode in enumerate(modes):
                port = free_port()
                label = mode if mode == "orchestrator" else f"worker{index}"
                procs[label] = await trio.lowlevel.open_process(
                    [sys.executable, "-m", "pipeline", "--mode", mode],
                    env={**env, "HEALTH_PORT": str(port)},
                    stdout=subprocess.DEVNULL,
                )
                await wait_ready(port, procs[label])
            jobs = JobStore(aws.dynamodb, f"jobs-{name}", AWS_POLICY)
            pids = {"moto": moto_proc.pid, **{k: p.pid for k, p in procs.items()}}
            pids["bench+simulator"] = os.getpid()
            cpu_before = {label: cpu_seconds(pid) for label, pid in pids.items()}
            started = trio.current_time()
            await _sqs.send(
                aws.sqs,
                urls.export_jobs_url,
                f'{{"exportIds": ["{export_id}"], "correlationId": "c-bench"}}',
                policy=AWS_POLICY,
            )
            with trio.fail_after(900):
                while True:
                    job = await jobs.get_job(export_id)
                    if job is not None and job.status.is_final:
                        break
                    await trio.sleep(0.05)
            seconds = trio.current_time() - started
            cpu = {label: cpu_seconds(pid) - cpu_before[label] for label, pid in pids.items()}
        finally:
            for proc in procs.values():
                proc.terminate()
            with trio.move_on_after(30):
                for proc in procs.values():
                    await proc.wait()
        nursery.cancel_scope.cancel()
    if job.status is not JobStatus.COMPLETED or job.summary.entries_uploaded != len(load.entries):
        msg = f"benchmark job ended {job.status.value}: {job.error} {job.summary}"
        raise RuntimeError(msg)
    return Phase(
        workers=workers,
        seconds=seconds,
        files=len(load.zips),
        uncompressed=load.uncompressed,
        compressed=load.compressed,
        cpu=cpu,
    )


async def bench(
    endpoint: str, moto_proc: subprocess.Popen[bytes], load: Load, rounds: int
) -> list[Phase]:
    """Alternate one worker and two workers ``rounds`` times, so drift hits both alike."""
    phases = []
    async with open_aws_clients(region="us-east-1", endpoint_url=endpoint, pool_size=10) as aws:
        for _ in range(rounds):
            for workers in (1, 2):
                phase = await run_phase(aws, endpoint, moto_proc, load, workers)
                print(phase.line(), flush=True)
                phases.append(phase)
    return phases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=8, help="ZIPs in the export (default 8)")
    parser.add_argument("--mb", type=int, default=16, help="MB uncompressed per ZIP (default 16)")
    parser.add_argument("--rounds", type=int, default=1, help="measure each phase N times")
    args = parser.parse_args(argv)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    configure_logging("warning", stream=sys.stderr)
    load = make_load(args.files, args.mb)
    print(
        f"load: {len(load.zips)} ZIPs, {load.uncompressed / 1e6:.1f} MB uncompressed, "
        f"{load.compressed / 1e6:.1f} MB compressed; {os.cpu_count()} CPUs; "
        f"MAX_CONCURRENT_JOBS={WORKER_CONCURRENCY} per worker",
        flush=True,
    )
    with moto() as (endpoint, moto_proc):
        phases = trio.run(bench, endpoint, moto_proc, load, args.rounds)
    for workers in (1, 2):
        times = sorted(p.seconds for p in phases if p.workers == workers)
        median = times[len(times) // 2]
        print(
            f"median, {workers} worker(s): {median:.2f} s = {len(load.zips) / median:.2f} files/s, "
            f"{load.uncompressed / median / 1e6:.1f} MB/s uncompressed"
        )
    one = sorted(p.seconds for p in phases if p.workers == 1)[len(phases) // 4]
    two = sorted(p.seconds for p in phases if p.workers == 2)[len(phases) // 4]
    print(f"two workers vs one (median times): {one / two:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
