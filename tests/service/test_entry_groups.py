"""A ZIP's entries read as groups over downloads of their own, against moto and the simulator."""

from __future__ import annotations

import functools
import io
import random
import zipfile
from collections.abc import AsyncIterator

import attrs
import pytest
import trio
import trio.testing

from pipeline._adapters.exportapi import ExportFile
from pipeline._config import Mode, load_settings
from pipeline._core.accounting import FileResult
from pipeline._core.zip.format import TAIL_BYTES
from pipeline._service import entry_groups as _entry_groups
from pipeline._service.entry_groups import JUDGE_BYTES, JUDGE_SECONDS, DownloadMeter
from pipeline._service.file_stage import process_file
from pipeline._service.filework import FileLimits
from pipeline._service.graph import file_stage, open_resources
from pipeline.testing.demo import build_zip, metadata_for
from tests.support.stack import Stack, open_stack

pytestmark = pytest.mark.slow

# Four entries of this size, stored: two groups of two at the test's minimum.
ENTRY_BYTES = 300_000
MIN_GROUP = 200_000
NAMES = ("a.bin", "b.bin", "c.bin", "d.bin")


def entries(seed: int = 10) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    return [(name, rng.randbytes(ENTRY_BYTES)) for name in NAMES]


def offsets(data: bytes) -> dict[str, int]:
    """Each entry's local header offset."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {info.filename: info.header_offset for info in archive.infolist()}


def damaged(data: bytes, name: str) -> bytes:
    """``data`` with a byte in the middle of stored entry ``name`` flipped (its CRC-32 fails)."""
    bent = bytearray(data)
    bent[offsets(data)[name] + 30 + len(name) + ENTRY_BYTES // 2] ^= 0xFF
    return bytes(bent)


async def process(
    stack: Stack,
    export_id: str,
    data: bytes,
    *,
    min_group_bytes: int = MIN_GROUP,
    worker_pool_size: int = 2,
) -> tuple[FileResult, list[str | None]]:
    """The file's result, and the Range header of each download request of it."""
    [file_id] = stack.simulator.add_export(export_id, [("part.zip", data)])
    file = ExportFile(
        file_id=file_id,
        name="part.zip",
        download_url=stack.simulator.download_url(export_id, file_id),
        size_bytes=len(data),
    )
    settings = stack.settings(WORKER_POOL_SIZE=str(worker_pool_size))
    async with open_resources(settings) as resources:
        stage = file_stage(resources)
        result = await process_file(file, export_id, stage, min_group_bytes=min_group_bytes)
    ranges = [
        r.range for r in stack.simulator.requests if r.route == "download" and r.file_id == file_id
    ]
    return result, ranges


class TestSurface:
    def test_all_is_complete(self) -> None:
        """Every listed public name exists."""
        for name in _entry_groups.__all__:
            assert hasattr(_entry_groups, name)


class TestStreamsPerFile:
    BASE = {
        "SQS_EXPORT_JOBS_URL": "https://sqs.us-east-1.amazonaws.com/1/jobs",
        "S3_BUCKET_NAME": "bucket",
        "EXPORT_API_BASE_URL": "https://api.example.com",
        "MAX_CONCURRENT_JOBS": "4",
    }

    @pytest.mark.parametrize(
        ("pool", "in_flight", "streams"),
        [("2", 1, 2), ("8", 1, 2), ("1", 1, 1), ("2", 3, 2), ("2", 4, 1), ("4", 9, 1)],
    )
    def test_two_streams_within_threads_and_idle_workers(
        self, pool: str, in_flight: int, streams: int
    ) -> None:
        """Two streams a file, not more than inflate threads, and one when every worker is busy."""
        settings = load_settings({**self.BASE, "WORKER_POOL_SIZE": pool}, Mode.ALL)
        assert _entry_groups.streams_per_file(FileLimits.of(settings), in_flight) == streams


async def timed_chunks(
    count: int, pause: float, closed: list[bool] | None = None
) -> AsyncIterator[bytes]:
    """``count`` chunks of 64 KiB, each ``pause`` seconds after the last (a download's pace)."""
    try:
        for _ in range(count):
            await trio.sleep(pause)
            yield bytes(64 * 1024)
    finally:
        if closed is not None:
            closed.append(True)


class TestDownloadMeter:
    async def test_a_download_slower_than_its_reader_lets_the_next_group_start(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A reader that waits for every chunk sets the event within the first window."""
        after = trio.Event()
        meter = DownloadMeter(timed_chunks(100, 0.01), after)
        got = 0
        async for chunk in meter:
            got += len(chunk)
            if after.is_set():
                break
        assert after.is_set()
        assert got <= JUDGE_BYTES
        assert trio.current_time() <= JUDGE_SECONDS + 0.02

    async def test_a_reader_slower_than_its_download_keeps_one_stream(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A reader busy between chunks that come at once never sets the event."""
        after = trio.Event()
        got = 0
        async for chunk in DownloadMeter(timed_chunks(200, 0.0), after):
            got += len(chunk)
            await trio.sleep(0.01)  # inflating, or S3 pushing back on the parts
        assert got == 200 * 64 * 1024
        assert not after.is_set()

    async def test_closing_the_meter_closes_the_download(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """aclose reaches the download underneath (read_zip closes what it stops reading)."""
        closed: list[bool] = []
        meter = DownloadMeter(timed_chunks(5, 0.0, closed), trio.Event())
        assert len(await anext(meter)) == 64 * 1024
        await meter.aclose()
        assert closed == [True]


class TestGroups:
    async def test_two_groups_give_the_one_stream_result(self, aws_endpoint: str) -> None:
        """Two groups, one ranged download each: the same objects and counts as one stream."""
        content = entries()
        # An entry without metadata (skipped) and a directory entry count as before.
        data = build_zip([*content[:2], ("dir/", b""), *content[2:]], method=zipfile.ZIP_STORED)
        listed = [item for item in content if item[0] != "c.bin"]
        async with open_stack(aws_endpoint) as stack:
            for export_id in ("exp-groups", "exp-one"):
                await stack.seed(export_id, metadata_for(listed))
            grouped, ranges = await process(stack, "exp-groups", data)
            single, single_ranges = await process(stack, "exp-one", data, min_group_bytes=2**40)
            assert grouped.ok, grouped.error
            assert (grouped.entries_uploaded, grouped.entries_skipped) == (3, 1)
            assert attrs.evolve(grouped, file_id="f") == attrs.evolve(single, file_id="f")
            objects = await stack.objects("exp-groups")
            assert {name: body for name, (body, _) in objects.items()} == dict(listed)
            tail = f"bytes={len(data) - TAIL_BYTES}-"
            second = f"bytes={offsets(data)['c.bin']}-"
            assert sorted(ranges, key=str) == sorted([tail, None, second], key=str)
            assert single_ranges == [tail, None]

    async def test_one_inflate_thread_means_one_stream(self, aws_endpoint: str) -> None:
        """With WORKER_POOL_SIZE=1 the file is one download, as before."""
        content = entries()
        data = build_zip(content, method=zipfile.ZIP_STORED)
        async with open_stack(aws_endpoint) as stack:
            await stack.seed("exp-pool", metadata_for(content))
            result, ranges = await process(stack, "exp-pool", data, worker_pool_size=1)
            assert result.ok, result.error
            assert result.entries_uploaded == 4
            assert ranges == [f"bytes={len(data) - TAIL_BYTES}-", None]

    async def test_corrupt_entry_in_the_second_group(self, aws_endpoint: str) -> None:
        """A corrupt entry of the second group fails the file; what precedes it is committed."""
        content = entries()
        data = damaged(build_zip(content, method=zipfile.ZIP_STORED), "d.bin")
        async with open_stack(aws_endpoint) as stack:
            await stack.seed("exp-bad2", metadata_for(content))
            result, ranges = await process(stack, "exp-bad2", data)
            assert not result.ok
            assert "d.bin" in (result.error or "")
            assert len(ranges) == 3
            # As one stream would: every entry before the fault.
            objects = await stack.objects("exp-bad2")
            assert {name: body for name, (body, _) in objects.items()} == dict(content[:3])
            assert result.entries_uploaded == 3
            assert await stack.open_uploads() == 0

    async def test_corrupt_entry_in_the_first_group(self, aws_endpoint: str) -> None:
        """A corrupt entry of the first group is the file's error; the entry before it stays."""
        content = entries()
        data = damaged(build_zip(content, method=zipfile.ZIP_STORED), "b.bin")
        async with open_stack(aws_endpoint) as stack:
            await stack.seed("exp-bad1", metadata_for(content))
            result, _ = await process(stack, "exp-bad1", data)
            assert not result.ok
            assert "b.bin" in (result.error or "")
            objects = await stack.objects("exp-bad1")
            assert objects["a.bin"][0] == content[0][1]
            assert "b.bin" not in objects
            assert await stack.open_uploads() == 0

    async def test_broken_group_downloads_resume(self, aws_endpoint: str) -> None:
        """Both groups' downloads break off midway, resume from where they were, and are exact."""
        content = entries()
        data = build_zip(content, method=zipfile.ZIP_STORED)
        second = offsets(data)["c.bin"]
        cut = 400_000
        assert TAIL_BYTES < cut < len(data) - second
        async with open_stack(aws_endpoint) as stack:
            await stack.seed("exp-break", metadata_for(content))
            # Every request is cut at 400 kB: the tail and the second group's
            # resume are shorter, the first group's resume is closed by its
            # reader before (its group ends first), whichever order they come in.
            stack.simulator.inject_break("exp-break", "exp-break-f0001", cut, times=10)
            result, ranges = await process(stack, "exp-break", data)
            assert result.ok, result.error
            assert result.entries_uploaded == 4
            objects = await stack.objects("exp-break")
            assert {name: body for name, (body, _) in objects.items()} == dict(content)
            assert f"bytes={cut}-" in ranges
            assert f"bytes={second + cut}-" in ranges
            assert len(ranges) == 5

    async def test_cancel_reaches_every_group(self, aws_endpoint: str) -> None:
        """Cancelled while both groups stream: both stop, nothing is committed or left open."""
        content = entries()
        data = build_zip(content, method=zipfile.ZIP_STORED)
        async with open_stack(aws_endpoint) as stack:
            await stack.seed("exp-stop", metadata_for(content))
            [file_id] = stack.simulator.add_export("exp-stop", [("part.zip", data)])
            # An entry takes 1.5 s at this rate: the first group's reader waits
            # on its download, so the second starts at once; both are inside
            # their first entry when the cancel comes.
            stack.simulator.set_throttle("exp-stop", file_id, 200_000)
            file = ExportFile(
                file_id=file_id,
                name="part.zip",
                download_url=stack.simulator.download_url("exp-stop", file_id),
                size_bytes=len(data),
            )

            def ranges() -> list[str | None]:
                return [r.range for r in stack.simulator.requests if r.file_id == file_id]

            settings = stack.settings(WORKER_POOL_SIZE="2")
            async with open_resources(settings) as resources, trio.open_nursery() as nursery:
                run = functools.partial(process_file, min_group_bytes=MIN_GROUP)
                nursery.start_soon(run, file, "exp-stop", file_stage(resources))
                with trio.fail_after(30):
                    await stack.simulator.wait_until(lambda: len(ranges()) == 3)
                    # 100 kB more over both downloads (a quarter second at their
                    # rate): both groups are inside their first entry.
                    begun = stack.simulator.bytes_sent("exp-stop", file_id) + 100_000
                    sent = functools.partial(stack.simulator.bytes_sent, "exp-stop", file_id)
                    await stack.simulator.wait_until(lambda: sent() >= begun)
                nursery.cancel_scope.cancel()
            assert len(ranges()) == 3
            assert await stack.objects("exp-stop") == {}
            assert await stack.open_uploads() == 0
