"""Orchestrator and workers over the download-task queue, in-process and as processes."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import trio

from pipeline._config import Mode
from pipeline._core.accounting import JobStatus
from pipeline._core.messages import decode_download_task
from pipeline.testing.demo import build_zip, metadata_for, records
from pipeline.testing.moto import free_port
from tests.support.stack import Stack, open_stack, sha256
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

Entries = list[tuple[str, bytes]]


def _export_files(export_id: str, files: int, entry_size: int, seed: int) -> list[Entries]:
    """``files`` ZIPs' entries, three compressible entries each, paths unique per export."""
    rng = random.Random(f"{export_id}-{seed}")
    return [
        [(f"part-{n:02d}/rows-{i}.jsonl", records(rng, entry_size)) for i in range(3)]
        for n in range(files)
    ]


async def _add_export(
    stack: Stack, export_id: str, files: int, entry_size: int = 50_000, seed: int = 0
) -> Entries:
    """Serve an export of ``files`` ZIPs and seed its metadata; returns all its entries."""
    per_file = _export_files(export_id, files, entry_size, seed)
    stack.simulator.add_export(
        export_id,
        [(f"part-{n:02d}.zip", build_zip(entries)) for n, entries in enumerate(per_file)],
        page_size_cap=3,
    )
    everything = [entry for entries in per_file for entry in entries]
    await stack.seed(export_id, metadata_for(everything))
    return everything


async def _expect_exact(stack: Stack, export_id: str, entries: Entries, files: int) -> None:
    """The job is COMPLETED with exact counts, one result per file, and exact objects."""
    job = await stack.wait_final(export_id, within=120)
    assert job.status is JobStatus.COMPLETED, job.error
    summary = job.summary
    assert summary.files_total == summary.files_done == files
    assert summary.files_failed == 0
    assert summary.entries_uploaded == len(entries)
    assert (summary.entries_skipped, summary.entries_rejected, summary.entries_missing) == (0, 0, 0)
    assert summary.bytes_uploaded == sum(len(data) for _, data in entries)
    assert len(await stack.jobs.file_results(export_id)) == files
    objects = await stack.objects(export_id)
    assert set(objects) == {name for name, _ in entries}
    for name, data in entries:
        body, metadata = objects[name]
        assert body == data, name
        assert metadata == {"sha256": sha256(data)}, name


async def _wait_depth(stack: Stack, url: str, depth: int, within: float = 30) -> None:
    async def reached() -> bool:
        return await stack.queue_depth(url) == depth

    await eventually(reached, within=within)


def _body_requests(stack: Stack) -> dict[str, int]:
    """Per file, how many downloads asked for the body (not the directory tail)."""
    counts: dict[str, int] = {}
    for record in stack.simulator.requests:
        is_body = record.range is None or not record.range.startswith("bytes=-")
        if record.route == "download" and record.file_id is not None and is_body:
            counts[record.file_id] = counts.get(record.file_id, 0) + 1
    return counts


@contextmanager
def _processes(tmp: Path) -> Iterator[list[tuple[subprocess.Popen[bytes], Path]]]:
    """Service subprocesses started in the block; any still running are killed after it."""
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        yield procs
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, log in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.returncode not in (0, -signal.SIGKILL):
                print(f"--- {log.name} exited {proc.returncode}:\n{log.read_text()[-4000:]}")


def _spawn(
    stack: Stack,
    procs: list[tuple[subprocess.Popen[bytes], Path]],
    tmp: Path,
    mode: Mode,
    **overrides: str,
) -> subprocess.Popen[bytes]:
    """``python -m pipeline --mode <mode>`` with the stack's env; output to a log file.

    A file rather than a pipe: nobody reads a pipe while the test runs, and a
    full pipe would stall the service.
    """
    log = tmp / f"{mode.value}-{len(procs)}.log"
    env = {**os.environ, **stack.env, "HEALTH_PORT": str(free_port()), **overrides}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "--mode", mode.value],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    procs.append((proc, log))
    return proc


def _log_events(log: Path) -> list[str]:
    """The event (``msg``) of every JSON log line the process wrote."""
    events = []
    for line in log.read_text().splitlines():
        try:
            document = json.loads(line)
        except ValueError:
            continue
        if isinstance(document, dict) and "msg" in document:
            events.append(str(document["msg"]))
    return events


class TestInProcess:
    async def test_orchestrator_queues_then_worker_completes(self, aws_endpoint: str) -> None:
        """The orchestrator queues a v1 task per file and deletes the job; a worker finishes it."""
        async with open_stack(aws_endpoint, with_task_queue=True) as stack:
            entries = await _add_export(stack, "exp-split", files=5)
            stop_orchestrator = await stack.run_service(Mode.ORCHESTRATOR)
            await stack.send_job(["exp-split"], correlation_id="c-split")
            await _wait_depth(stack, stack.urls.download_tasks_url, 5)
            await _wait_depth(stack, stack.urls.export_jobs_url, 0)
            job = await stack.jobs.get_job("exp-split")
            assert job is not None
            assert job.status is JobStatus.RUNNING
            assert job.listing_done
            assert job.files_total == 5

            received = await stack.aws.sqs.receive_message(
                QueueUrl=stack.urls.download_tasks_url, MaxNumberOfMessages=10, VisibilityTimeout=0
            )
            bodies = [json.loads(m["Body"]) for m in received["Messages"]]
            assert bodies
            for body in bodies:
                assert body["version"] == 1
                assert body["correlationId"] == "c-split"
                assert body["exportId"] == "exp-split"
                assert decode_download_task(json.dumps(body)).export_id == "exp-split"

            stop_worker = await stack.run_service(Mode.WORKER, HEALTH_PORT=str(free_port()))
            await _expect_exact(stack, "exp-split", entries, files=5)
            job = await stack.jobs.get_job("exp-split")
            assert job is not None
            assert job.correlation_id == "c-split"
            await _wait_depth(stack, stack.urls.download_tasks_url, 0)
            stop_orchestrator.set()
            stop_worker.set()


class TestProcesses:
    async def test_worker_killed_mid_file(self, aws_endpoint: str, tmp_path: Path) -> None:
        """One orchestrator, two workers; one is SIGKILLed mid-file; every job ends exact."""
        async with open_stack(aws_endpoint, with_task_queue=True, visibility_timeout=4) as stack:
            exports = {
                export_id: await _add_export(stack, export_id, files=3, entry_size=200_000)
                for export_id in ("exp-k1", "exp-k2", "exp-k3")
            }
            # Each ZIP is ~150 KB; at 60 KB/s a file takes ~2.5 s, long enough to
            # kill a worker in the middle of one.
            for export_id in exports:
                for n in range(1, 4):
                    stack.simulator.set_throttle(export_id, f"{export_id}-f{n:04d}", 60_000)
            with _processes(tmp_path) as procs:
                # Two files at a time per worker, so both workers hold some.
                workers = [
                    _spawn(stack, procs, tmp_path, Mode.WORKER, MAX_CONCURRENT_JOBS="2")
                    for _ in range(2)
                ]
                _spawn(stack, procs, tmp_path, Mode.ORCHESTRATOR)
                await stack.send_job(["exp-k1", "exp-k2"], correlation_id="c-kill-1")
                await stack.send_job(["exp-k3"], correlation_id="c-kill-2")

                # Three bodies streaming at once: with two per worker, both have one.
                with trio.fail_after(60):
                    await stack.simulator.wait_until(lambda: len(_body_requests(stack)) >= 3)
                workers[0].send_signal(signal.SIGKILL)
                for export_id, entries in exports.items():
                    await _expect_exact(stack, export_id, entries, files=3)
                assert workers[0].wait(timeout=5) == -signal.SIGKILL
                assert workers[1].poll() is None
                # The killed worker's file was fetched again by the survivor.
                assert sum(_body_requests(stack).values()) > 9
                await _wait_depth(stack, stack.urls.download_tasks_url, 0)
                await _wait_depth(stack, stack.urls.export_jobs_url, 0)

    async def test_all_mode_overflow_shared(self, aws_endpoint: str, tmp_path: Path) -> None:
        """Two all-mode processes: a burst overflows to the task queue and both process files."""
        async with open_stack(aws_endpoint, with_task_queue=True, visibility_timeout=10) as stack:
            exports = {
                export_id: await _add_export(stack, export_id, files=5, entry_size=100_000)
                for export_id in ("exp-h1", "exp-h2")
            }

            def throttle(bytes_per_second: int) -> None:
                for export_id in exports:
                    for n in range(1, 6):
                        file_id = f"{export_id}-f{n:04d}"
                        stack.simulator.set_throttle(export_id, file_id, bytes_per_second)

            # Held to a crawl until the second process is up: the first cannot
            # empty the task queue however long the second takes to start.
            throttle(2_000)
            with _processes(tmp_path) as procs:
                first = _spawn(
                    stack, procs, tmp_path, Mode.ALL, MAX_CONCURRENT_JOBS="1", LOG_LEVEL="info"
                )
                # Only the first takes the export jobs: it is alone when they arrive.
                await stack.send_job(["exp-h1", "exp-h2"], correlation_id="c-burst")

                async def overflowed() -> bool:
                    return await stack.queue_depth(stack.urls.download_tasks_url) > 0

                await eventually(overflowed, within=60)
                port = free_port()
                second = _spawn(
                    stack,
                    procs,
                    tmp_path,
                    Mode.ALL,
                    MAX_CONCURRENT_JOBS="2",
                    LOG_LEVEL="info",
                    HEALTH_PORT=str(port),
                )

                async def second_has_a_file() -> bool:
                    # The first's slots are held by its crawling files, so the
                    # tasks still queued wait for the second.
                    try:
                        async with httpx.AsyncClient() as client:
                            metrics = await client.get(f"http://127.0.0.1:{port}/metrics")
                    except httpx.TransportError:
                        return False
                    gauge = re.search(r"^pipeline_files_in_flight (\S+)$", metrics.text, re.M)
                    return gauge is not None and float(gauge[1]) >= 1

                await eventually(second_has_a_file, within=60)
                throttle(100_000)
                for export_id, entries in exports.items():
                    await _expect_exact(stack, export_id, entries, files=5)
                await _wait_depth(stack, stack.urls.download_tasks_url, 0)
                await _wait_depth(stack, stack.urls.export_jobs_url, 0)
                assert first.poll() is None
                assert second.poll() is None
            logs = [log for _, log in procs]
            first_events, second_events = _log_events(logs[0]), _log_events(logs[1])
            assert "download tasks queued" in first_events
            assert "export job received" not in second_events
            assert second_events.count("file done") >= 1
            assert first_events.count("file done") + second_events.count("file done") >= 10
