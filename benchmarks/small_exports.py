"""Small and wide exports: the service against a plain sequential loop, in one run.

Most exports are small and some list thousands of files, so this measures the
per-export and per-file overhead rather than bytes:

* **small**: the same exports (default 200, each one ZIP of five 3 KB
  entries) through the service (``python -m pipeline --mode all``,
  ``MAX_CONCURRENT_JOBS=20``) and through the simplest thing a user could
  write: a sequential loop with boto3, ``zipfile`` and a temporary file, one
  export after another (status, listing, download, one ``GetItem`` and one
  ``PutObject`` per entry, one job item per export);
* **wide**: one export of 200 single-entry ZIPs against one of 2,000, through
  the service, to show whether the work per file stays constant.

Each phase gets freshly provisioned resources on one moto server and its own
Export API simulator (in this process). The service runs as a subprocess with
a botocore ``before-call`` hook counting its AWS calls by operation (this
file, ``--serve``); counts and CPU are snapshotted once it is ready and again
when the last job is final, so start-up is left out. The plain loop runs as a
subprocess too (``--plain``) and counts its calls with the same hook. Printed:
exports or files per second, CPU milliseconds per entry of the service (or
loop) process and of moto, and AWS calls per entry by operation.

Run::

    python benchmarks/small_exports.py                       # 200 small, 200 vs 2000 wide
    python benchmarks/small_exports.py --exports 50 --wide 100 500   # a quick look
    python benchmarks/small_exports.py --exports 0 --task-queue      # wide, as deployed
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import random
import signal
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio
from harness import (
    TOKEN,
    bench_env,
    cpu_seconds,
    moto,
    own_cpu,
    provision_bench,
    service_process,
)

from pipeline._adapters.aws.clients import AwsClients, open_aws_clients
from pipeline._adapters.aws.jobstore import JobStore
from pipeline._core.backoff import AWS_POLICY
from pipeline._logging import configure_logging
from pipeline.ops.provisioning import seed_metadata
from pipeline.testing.demo import build_zip, metadata_for, records
from pipeline.testing.simulator import Simulator, serve_simulator

ENTRY_BYTES = 3 * 1024
ENTRIES_PER_SMALL_EXPORT = 5
CONCURRENCY = 20


# -- counting AWS calls (used inside the service and the plain loop) --


class CallCounter:
    """Counts botocore API calls by ``service.Operation`` (a ``before-call`` hook)."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()

    def __call__(self, **kwargs: Any) -> None:
        _, service, operation = str(kwargs["event_name"]).split(".", 2)
        self.counts[f"{service}.{operation}"] += 1


def _serve_counted(calls_file: str, argv: list[str]) -> int:
    """Run the service with every AWS call counted; SIGUSR1 writes the counts out."""
    from pipeline import __main__ as service_main
    from pipeline._adapters.aws import clients

    counter = CallCounter()
    original = clients.get_session

    def counted_session() -> Any:
        session = original()
        session.register("before-call", counter)
        return session

    clients.get_session = counted_session  # type: ignore[assignment]
    snapshots = 0

    def dump(_signum: int, _frame: Any) -> None:
        nonlocal snapshots
        snapshots += 1
        tmp = f"{calls_file}.tmp"
        Path(tmp).write_text(json.dumps({"seq": snapshots, "counts": dict(counter.counts)}))
        os.replace(tmp, calls_file)

    signal.signal(signal.SIGUSR1, dump)
    return service_main.main(argv)


# -- the plain loop --


def _plain_loop(config: dict[str, Any]) -> dict[str, Any]:
    """What a user would write: one export after another, one entry after another."""
    import boto3

    counter = CallCounter()
    session = boto3.session.Session(
        aws_access_key_id="bench", aws_secret_access_key="bench", region_name="us-east-1"
    )
    session.events.register("before-call", counter)
    endpoint = config["endpoint"]
    s3 = session.client("s3", endpoint_url=endpoint)
    dynamodb = session.client("dynamodb", endpoint_url=endpoint)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    started, cpu_started = time.monotonic(), own_cpu()
    entries = 0
    with httpx.Client(timeout=30) as http:
        for export_id in config["exportIds"]:
            http.get(f"{config['api']}/exports/{export_id}", headers=auth).raise_for_status()
            files: list[dict[str, Any]] = []
            cursor = None
            while True:
                params = {"limit": "100", **({"cursor": cursor} if cursor else {})}
                page = http.get(
                    f"{config['api']}/exports/{export_id}/files", params=params, headers=auth
                ).json()
                files += page["files"]
                cursor = page.get("nextCursor")
                if not cursor:
                    break
            uploaded = skipped = rejected = 0
            for file in files:
                with tempfile.TemporaryFile() as tmp:
                    with http.stream("GET", file["downloadUrl"]) as response:
                        response.raise_for_status()
                        for chunk in response.iter_bytes():
                            tmp.write(chunk)
                    with zipfile.ZipFile(tmp) as archive:
                        for info in archive.infolist():
                            if info.is_dir():
                                continue
                            entries += 1
                            data = archive.read(info)
                            item = dynamodb.get_item(
                                TableName=config["metadataTable"],
                                Key={"exportId": {"S": export_id}, "path": {"S": info.filename}},
                            ).get("Item")
                            if item is None:
                                skipped += 1
                                continue
                            digest = hashlib.sha256(data).hexdigest()
                            if item["sha256"]["S"] != digest or int(item["sizeBytes"]["N"]) != len(
                                data
                            ):
                                rejected += 1
                                continue
                            s3.put_object(
                                Bucket=config["bucket"],
                                Key=f"exports/{export_id}/{info.filename}",
                                Body=data,
                                Metadata={"sha256": digest},
                            )
                            uploaded += 1
            dynamodb.put_item(
                TableName=config["jobsTable"],
                Item={
                    "pk": {"S": export_id},
                    "sk": {"S": "job"},
                    "status": {"S": "COMPLETED"},
                    "filesTotal": {"N": str(len(files))},
                    "entriesUploaded": {"N": str(uploaded)},
                    "entriesSkipped": {"N": str(skipped)},
                    "entriesRejected": {"N": str(rejected)},
                },
            )
    return {
        "seconds": time.monotonic() - started,
        "cpu": own_cpu() - cpu_started,
        "entries": entries,
        "counts": dict(counter.counts),
    }


# -- measuring --


@attrs.frozen
class Result:
    """What one phase measured."""

    label: str
    units: str  # "exports" or "files"
    count: int
    entries: int
    seconds: float
    cpu: float  # of the service or the plain loop's process
    moto_cpu: float
    calls: dict[str, int]
    # Seconds from each message's send to its job's final log line (offered phases).
    latencies: tuple[float, ...] = ()
    # Export API downloads (GETs of ZIPs, tail reads included), counted at the simulator.
    downloads: int = 0

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    def per_entry_ms(self, cpu: float) -> float:
        return cpu / self.entries * 1000

    def line(self) -> str:
        calls = sum(self.calls.values())
        return (
            f"{self.label:<34} {self.rate:8.1f} {self.units}/s  "
            f"{self.seconds:7.2f} s  CPU {self.per_entry_ms(self.cpu):5.1f} ms/entry  "
            f"moto {self.per_entry_ms(self.moto_cpu):5.1f} ms/entry  "
            f"AWS calls {calls / self.entries:5.2f}/entry  "
            f"downloads {self.downloads / self.count:4.2f}/{self.units[:-1]}"
        )


@attrs.frozen
class Exports:
    """Exports to process: ``(export_id, [(zip name, zip bytes)], entries)`` each."""

    exports: list[tuple[str, list[tuple[str, bytes]], list[tuple[str, bytes]]]]

    @property
    def entries(self) -> int:
        return sum(len(entries) for _, _, entries in self.exports)

    @property
    def files(self) -> int:
        return sum(len(zips) for _, zips, _ in self.exports)


def small_exports(count: int, seed: int = 9) -> Exports:
    rng = random.Random(seed)
    out = []
    for n in range(count):
        entries = [
            (f"data/rows-{i}.jsonl", records(rng, ENTRY_BYTES))
            for i in range(ENTRIES_PER_SMALL_EXPORT)
        ]
        out.append((f"exp-small-{n:04d}", [("part-0001.zip", build_zip(entries))], entries))
    return Exports(out)


def wide_export(files: int, seed: int = 11) -> Exports:
    rng = random.Random(seed)
    zips, entries = [], []
    for n in range(files):
        entry = (f"part-{n:05d}/rows.jsonl", records(rng, ENTRY_BYTES))
        zips.append((f"part-{n:05d}.zip", build_zip([entry])))
        entries.append(entry)
    return Exports([(f"exp-wide-{files}", zips, entries)])


@attrs.frozen
class Phase:
    """Resources provisioned for one phase."""

    name: str
    env: dict[str, str]
    jobs: JobStore


async def _prepare(
    aws: AwsClients,
    endpoint: str,
    exports: Exports,
    simulator: Simulator,
    api: Any,
    *,
    task_queue: bool = False,
) -> Phase:
    """Resources for ``exports``; the service's environment points it at ``endpoint``.

    ``task_queue``: a download-task queue too, where the service's files
    overflow when its own workers are busy (as deployed).
    """
    name, urls = await provision_bench(aws, visibility_timeout=60, download_tasks=task_queue)
    extra = {"SQS_DOWNLOAD_TASKS_URL": urls.download_tasks_url} if urls.download_tasks_url else {}
    for export_id, zips, entries in exports.exports:
        await seed_metadata(aws.dynamodb, f"metadata-{name}", export_id, metadata_for(entries))
        simulator.add_export(export_id, zips)
    env = bench_env(
        endpoint,
        name,
        urls.export_jobs_url,
        api,
        MAX_CONCURRENT_JOBS=str(CONCURRENCY),
        LOG_LEVEL="info",
        **extra,
    )
    return Phase(name, env, JobStore(aws.dynamodb, f"jobs-{name}", AWS_POLICY))


async def _snapshot(proc: trio.Process, calls_file: Path, seq: int) -> dict[str, int]:
    proc.send_signal(signal.SIGUSR1)
    with trio.fail_after(10):
        while True:
            try:
                data = json.loads(await trio.Path(calls_file).read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                data = {"seq": 0}
            if data["seq"] >= seq:
                return dict(data["counts"])
            await trio.sleep(0.02)


async def _queue_drained(aws: AwsClients, url: str) -> None:
    with trio.move_on_after(15):
        while True:
            response = await aws.sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )
            if not any(int(v) for v in response["Attributes"].values()):
                return
            await trio.sleep(0.1)


async def run_service_phase(
    label: str,
    units: str,
    aws: AwsClients,
    endpoint: str,
    moto_pid: int,
    exports: Exports,
    workdir: Path,
    *,
    api_delay: float = 0.0,
    offer_rate: float | None = None,
    task_queue: bool = False,
) -> Result:
    """The service on ``exports`` (AWS at ``endpoint``, the API ``api_delay`` s per request).

    The messages (one export each) are sent at once, or with ``offer_rate``
    one every ``1 / offer_rate`` seconds, each one's latency measured.
    """
    simulator = Simulator(token=TOKEN, request_delay=api_delay)
    sent_at: dict[str, float] = {}
    async with trio.open_nursery() as nursery:
        api = await nursery.start(serve_simulator, simulator)
        phase = await _prepare(aws, endpoint, exports, simulator, api, task_queue=task_queue)
        calls_file = workdir / f"calls-{phase.name}.json"
        command = [sys.executable, __file__, "--serve", str(calls_file), "--mode", "all"]
        async with service_process(command, phase.env, phase.name) as service:
            proc = service.proc
            before = await _snapshot(proc, calls_file, 1)
            cpu0, moto0 = cpu_seconds(proc.pid), cpu_seconds(moto_pid)
            started = trio.current_time()
            ids = [export_id for export_id, _, _ in exports.exports]
            queue_url = phase.env["SQS_EXPORT_JOBS_URL"]
            if offer_rate is None:
                for start in range(0, len(ids), 10):
                    await aws.sqs.send_message_batch(
                        QueueUrl=queue_url,
                        Entries=[
                            {"Id": str(i), "MessageBody": json.dumps({"exportIds": [export_id]})}
                            for i, export_id in enumerate(ids[start : start + 10])
                        ],
                    )
            else:
                nursery.start_soon(_offer, aws, queue_url, ids, offer_rate, sent_at)
            with trio.fail_after(1800):
                await service.finished.wait_for(len(ids))
            seconds = trio.current_time() - started
            finished_at = dict(service.finished.at)
            downloads = simulator.count("download")
            cpu, moto_cpu = cpu_seconds(proc.pid) - cpu0, cpu_seconds(moto_pid) - moto0
            # The message is deleted just after its job is final: wait for it,
            # so the calls counted are the whole work of the exports.
            await _queue_drained(aws, phase.env["SQS_EXPORT_JOBS_URL"])
            after = await _snapshot(proc, calls_file, 2)
        nursery.cancel_scope.cancel()
    for export_id, _, entries in exports.exports:
        job = await phase.jobs.get_job(export_id)
        assert job is not None
        if job.status.value != "COMPLETED" or job.summary.entries_uploaded != len(entries):
            msg = f"{export_id} ended {job.status.value}: {job.error} {job.summary}"
            raise RuntimeError(msg)
    calls = {op: after.get(op, 0) - before.get(op, 0) for op in after}
    count = len(exports.exports) if units == "exports" else exports.files
    latencies = tuple(finished_at[export_id] - sent_at[export_id] for export_id in sent_at)
    return Result(
        label,
        units,
        count,
        exports.entries,
        seconds,
        cpu,
        moto_cpu,
        _nonzero(calls),
        latencies,
        downloads,
    )


async def _offer(
    aws: AwsClients, queue_url: str, ids: list[str], rate: float, sent_at: dict[str, float]
) -> None:
    """Send one message per export, ``rate`` a second, each in a task of its own."""

    async def send(export_id: str) -> None:
        sent_at[export_id] = trio.current_time()
        await aws.sqs.send_message(
            QueueUrl=queue_url, MessageBody=json.dumps({"exportIds": [export_id]})
        )

    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        for n, export_id in enumerate(ids):
            await trio.sleep_until(started + n / rate)
            nursery.start_soon(send, export_id)


async def run_plain_phase(
    aws: AwsClients,
    endpoint: str,
    moto_pid: int,
    exports: Exports,
    workdir: Path,
    *,
    api_delay: float = 0.0,
    label: str = "plain sequential loop",
) -> Result:
    """The plain loop on ``exports`` (AWS at ``endpoint``, the API ``api_delay`` s per request)."""
    simulator = Simulator(token=TOKEN, request_delay=api_delay)
    async with trio.open_nursery() as nursery:
        api = await nursery.start(serve_simulator, simulator)
        phase = await _prepare(aws, endpoint, exports, simulator, api)
        config = {
            "endpoint": endpoint,
            "api": api.api_url,
            "exportIds": [export_id for export_id, _, _ in exports.exports],
            "bucket": phase.env["S3_BUCKET_NAME"],
            "metadataTable": phase.env["DYNAMODB_METADATA_TABLE"],
            "jobsTable": phase.env["DYNAMODB_JOBS_TABLE"],
        }
        config_file = workdir / f"plain-{phase.name}.json"
        config_file.write_text(json.dumps(config))
        out_file = workdir / f"plain-{phase.name}.out.json"
        moto0 = cpu_seconds(moto_pid)
        await trio.run_process(
            [sys.executable, __file__, "--plain", str(config_file), str(out_file)],
            env={**os.environ, **phase.env},
        )
        moto_cpu = cpu_seconds(moto_pid) - moto0
        downloads = simulator.count("download")
        nursery.cancel_scope.cancel()
    out = json.loads(out_file.read_text())
    return Result(
        label,
        "exports",
        len(exports.exports),
        out["entries"],
        out["seconds"],
        out["cpu"],
        moto_cpu,
        _nonzero(out["counts"]),
        downloads=downloads,
    )


def _nonzero(calls: dict[str, int]) -> dict[str, int]:
    return {op: n for op, n in sorted(calls.items()) if n}


def _calls_table(results: list[Result]) -> str:
    ops = sorted({op for r in results for op in r.calls})
    head = "AWS calls per entry".ljust(36) + "".join(f"{r.label[:22]:>24}" for r in results)
    rows = [head]
    for op in ops:
        cells = "".join(f"{r.calls.get(op, 0) / r.entries:24.3f}" for r in results)
        rows.append(f"  {op:<34}{cells}")
    total = "".join(f"{sum(r.calls.values()) / r.entries:24.3f}" for r in results)
    rows.append(f"  {'total':<34}{total}")
    return "\n".join(rows)


async def bench(args: argparse.Namespace, endpoint: str, moto_pid: int) -> list[Result]:
    results = []
    small = small_exports(args.exports)
    async with open_aws_clients(region="us-east-1", endpoint_url=endpoint, pool_size=10) as aws:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            if args.exports:
                label = f"service, {args.exports} small exports"
                phase = run_service_phase(label, "exports", aws, endpoint, moto_pid, small, workdir)
                results.append(await phase)
                print(results[-1].line(), flush=True)
                results.append(await run_plain_phase(aws, endpoint, moto_pid, small, workdir))
                print(results[-1].line(), flush=True)
            for files in args.wide:
                label = f"service, 1 export of {files} files"
                wide = wide_export(files)
                results.append(
                    await run_service_phase(
                        label, "files", aws, endpoint, moto_pid, wide, workdir,
                        task_queue=args.task_queue,
                    )
                )  # fmt: skip
                print(results[-1].line(), flush=True)
    return results


def _summary(results: list[Result], wide: list[int]) -> str:
    lines = [""]
    if len(results) > len(wide):
        service, plain = results[0], results[1]
        lines.append(
            f"small: service {service.rate / plain.rate:.2f}x the plain loop's exports/s, "
            f"{service.per_entry_ms(service.cpu) / plain.per_entry_ms(plain.cpu):.2f}x "
            "its CPU per entry"
        )
    if len(wide) == 2:
        narrow, broad = results[-2], results[-1]
        time_ratio = (broad.seconds / broad.count) / (narrow.seconds / narrow.count)
        cpu_ratio = (broad.cpu / broad.count) / (narrow.cpu / narrow.count)
        lines.append(
            f"wide: {broad.count} files take {time_ratio:.2f}x the time per file and "
            f"{cpu_ratio:.2f}x the CPU per file of {narrow.count} (targets <= 1.5, <= 1.2)"
        )
    lines.append("")
    lines.append(_calls_table(results))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve"]:
        return _serve_counted(argv[1], argv[2:])
    if argv[:1] == ["--plain"]:
        out = _plain_loop(json.loads(Path(argv[1]).read_text()))
        Path(argv[2]).write_text(json.dumps(out))
        return 0
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--exports", type=int, default=200, help="small exports (default 200)")
    parser.add_argument(
        "--wide", type=int, nargs="*", default=[200, 2000], help="files of the wide exports"
    )
    parser.add_argument(
        "--task-queue",
        action="store_true",
        help="wide exports with a download-task queue to overflow to (as deployed)",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    configure_logging("warning", stream=sys.stderr)
    print(
        f"{os.cpu_count()} CPUs; small: {args.exports} exports x 1 ZIP x "
        f"{ENTRIES_PER_SMALL_EXPORT} entries of {ENTRY_BYTES} B; wide: {args.wide} "
        f"single-entry ZIPs; MAX_CONCURRENT_JOBS={CONCURRENCY}, LOG_LEVEL=info",
        flush=True,
    )
    with moto() as (endpoint, moto_proc):
        results = trio.run(bench, args, endpoint, moto_proc.pid)
        print(_summary(results, args.wide), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
