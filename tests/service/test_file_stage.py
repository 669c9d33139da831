"""The file stage's directory fetch, in the whole graph against moto and the simulator."""

from __future__ import annotations

import io
import random
import struct
import zipfile

import pytest

from pipeline._core.accounting import JobStatus
from pipeline._core.zip.format import TAIL_BYTES
from pipeline.testing.demo import build_zip, metadata_for
from tests.support.stack import open_stack

pytestmark = pytest.mark.slow

MIB = 1024 * 1024


class TestDirectoryFetch:
    async def test_directory_claiming_byte_zero_fails_without_fetching_it(
        self, aws_endpoint: str
    ) -> None:
        """An end record putting the directory at byte 0 of an 8 MiB file: only the tail is read."""
        size = 8 * MIB
        end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, size - 22, 0, 0)
        data = bytes(size - len(end)) + end
        async with open_stack(aws_endpoint) as stack:
            stack.simulator.add_export("exp-early", [("early.zip", data)])
            stop = await stack.run_service()
            await stack.send_job(["exp-early"])
            job = await stack.wait_final("exp-early")
            stop.set()
            assert job.status is JobStatus.FAILED
            assert job.summary.files_failed == 1
            assert "central directory claims to start at offset 0" in (job.error or "")
            ranges = [r.range for r in stack.simulator.requests if r.route == "download"]
            assert ranges == [f"bytes={size - TAIL_BYTES}-"]

    async def test_directory_before_the_tail_is_streamed(self, aws_endpoint: str) -> None:
        """A directory larger than the tail is streamed from its start; every entry is read."""
        entries = [(f"{'long-name-' * 20}{i:04d}.txt", f"entry {i}".encode()) for i in range(1500)]
        data = build_zip(entries, method=zipfile.ZIP_STORED)
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            assert archive.start_dir < len(data) - TAIL_BYTES
            directory_at = archive.start_dir
        async with open_stack(aws_endpoint) as stack:
            stack.simulator.add_export("exp-wide", [("wide.zip", data)])
            # A few with metadata are uploaded; the rest are read and skipped (quicker).
            await stack.seed("exp-wide", metadata_for(entries[::300]))
            stop = await stack.run_service()
            await stack.send_job(["exp-wide"])
            job = await stack.wait_final("exp-wide", within=120)
            stop.set()
            assert job.status is JobStatus.COMPLETED, job.error
            assert job.summary.entries_uploaded == 5
            assert job.summary.entries_skipped == len(entries) - 5
            objects = await stack.objects("exp-wide")
            assert {name: body for name, (body, _) in objects.items()} == dict(entries[::300])
            ranges = [r.range for r in stack.simulator.requests if r.route == "download"]
            assert ranges == [f"bytes={len(data) - TAIL_BYTES}-", f"bytes={directory_at}-", None]


class TestSmallZip:
    async def test_zip_within_the_tail_costs_one_request(self, aws_endpoint: str) -> None:
        """A ZIP no larger than the tail read is read from that one request, every entry intact."""
        entries = [(f"rows-{i}.jsonl", f'{{"row": {i}}}\n'.encode() * 200) for i in range(5)]
        data = build_zip(entries)
        assert len(data) < TAIL_BYTES
        async with open_stack(aws_endpoint) as stack:
            stack.simulator.add_export("exp-small", [("small.zip", data)])
            await stack.seed("exp-small", metadata_for(entries))
            stop = await stack.run_service()
            await stack.send_job(["exp-small"])
            job = await stack.wait_final("exp-small")
            stop.set()
            assert job.status is JobStatus.COMPLETED, job.error
            assert job.summary.entries_uploaded == len(entries)
            objects = await stack.objects("exp-small")
            assert {name: body for name, (body, _) in objects.items()} == dict(entries)
            ranges = [r.range for r in stack.simulator.requests if r.route == "download"]
            assert ranges == ["bytes=0-"]

    async def test_zip_beyond_the_tail_downloads_its_body(self, aws_endpoint: str) -> None:
        """A ZIP a little larger than the tail read: the tail, then the body from byte 0."""
        entries = [(f"blob-{i}.bin", random.Random(i).randbytes(TAIL_BYTES // 2)) for i in range(3)]
        data = build_zip(entries, method=zipfile.ZIP_STORED)
        assert TAIL_BYTES < len(data) < 2 * TAIL_BYTES
        async with open_stack(aws_endpoint) as stack:
            stack.simulator.add_export("exp-over", [("over.zip", data)])
            await stack.seed("exp-over", metadata_for(entries))
            stop = await stack.run_service()
            await stack.send_job(["exp-over"])
            job = await stack.wait_final("exp-over")
            stop.set()
            assert job.status is JobStatus.COMPLETED, job.error
            objects = await stack.objects("exp-over")
            assert {name: body for name, (body, _) in objects.items()} == dict(entries)
            ranges = [r.range for r in stack.simulator.requests if r.route == "download"]
            assert ranges == [f"bytes={len(data) - TAIL_BYTES}-", None]
