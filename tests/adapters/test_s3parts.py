"""Part bodies, part checksums, buffered pieces and the window of parts in flight."""

from __future__ import annotations

import base64
import random
import zlib

import pytest
import trio
import trio.testing

import pipeline._adapters.aws.s3parts as s3parts_module
from pipeline._adapters.aws.s3parts import Part, PartBody, PartWindow, Pieces


def test_public_surface_is_complete() -> None:
    """Every name in __all__ exists, once."""
    assert len(set(s3parts_module.__all__)) == len(s3parts_module.__all__)
    assert all(hasattr(s3parts_module, name) for name in s3parts_module.__all__)


class TestPartBody:
    def test_iterates_the_buffers_themselves(self) -> None:
        """Whole ``bytes`` buffers are sent as they are: the very objects, not copies."""
        first, second = b"a" * 10, b"b" * 5
        pieces = list(PartBody([first, second]))
        assert pieces[0] is first
        assert pieces[1] is second

    def test_read_seek_and_length(self) -> None:
        """read(n) walks across buffers, seek(0) rewinds, len is the total."""
        body = PartBody([b"abc", memoryview(b"defg")[1:], b"h"])
        assert len(body) == 7
        assert body.read(2) == b"ab"
        assert body.read(3) == b"cef"
        assert body.tell() == 5
        assert body.read() == b"gh"
        assert body.read() == b""
        assert body.seek(0) == 0
        assert body.read() == b"abcefgh"
        assert body.seek(-2, 2) == 5
        assert b"".join(body) == b"gh"
        with pytest.raises(ValueError, match="whence"):
            body.seek(0, 1)

    async def test_async_iteration_matches(self) -> None:
        """The async iteration aiobotocore's httpx session uses gives the same bytes."""
        body = PartBody([b"xy", memoryview(b"z")])
        assert b"".join([bytes(piece) async for piece in body]) == b"xyz"


def test_part_checksum_is_s3s_base64_of_the_whole() -> None:
    """A part's checksum is the base64 big-endian CRC-32 of its pieces' concatenation."""
    pieces = Pieces()
    pieces.add(b"hello ")
    pieces.add(b"world", zlib.crc32(b"world"))
    crc = zlib.crc32(b"hello world")
    assert pieces.take(11).checksum == base64.b64encode(crc.to_bytes(4, "big")).decode()
    assert Part([], 0).checksum == "AAAAAA=="


class TestPieces:
    def test_take_splits_without_losing_bytes(self) -> None:
        """take() returns exactly the first bytes asked for; the rest stays, in order."""
        pieces = Pieces()
        for data in (b"0123", b"", b"4567", b"89"):
            pieces.add(data)
        assert pieces.size == 10
        part = pieces.take(6)
        assert b"".join(bytes(p) for p in part.buffers) == b"012345"
        assert part.size == 6
        assert pieces.size == 4
        assert b"".join(bytes(p) for p in pieces.take(4).buffers) == b"6789"
        assert pieces.size == 0

    def test_whole_pieces_are_not_copied(self) -> None:
        """A piece that fits whole is handed on as the same object."""
        pieces = Pieces()
        data = b"x" * 100
        pieces.add(data)
        pieces.add(b"y")
        assert pieces.take(100).buffers[0] is data

    @pytest.mark.parametrize("with_crcs", [True, False])
    def test_part_crc_is_the_crc_of_its_bytes(self, with_crcs: bool) -> None:
        """A part's CRC-32 is its bytes', from the pieces' CRCs or read, also across cut pieces."""
        rng = random.Random(7)
        written = [rng.randbytes(rng.randrange(1, 5000)) for _ in range(40)]
        pieces = Pieces()
        for data in written:
            pieces.add(data, zlib.crc32(data) if with_crcs else None)
        stream = b"".join(written)
        at = 0
        while pieces.size:
            part = pieces.take(min(pieces.size, rng.randrange(1, 9000)))
            expected = stream[at : at + part.size]
            assert b"".join(bytes(p) for p in part.buffers) == expected
            assert part.crc32 == zlib.crc32(expected)
            assert base64.b64decode(part.checksum) == zlib.crc32(expected).to_bytes(4, "big")
            at += part.size
        assert at == len(stream)


class TestPartWindow:
    async def test_at_most_limit_in_flight(self) -> None:
        """submit waits while ``limit`` sends run; all of them finish."""
        gate = trio.Event()
        done: list[int] = []
        most = 0

        async with trio.open_nursery() as nursery:
            window = PartWindow(nursery, 2)

            async def send(n: int) -> None:
                nonlocal most
                most = max(most, window.in_flight)
                await gate.wait()
                done.append(n)

            async def submit_all() -> None:
                for n in range(5):
                    await window.submit(lambda n=n: send(n))  # type: ignore[misc]
                await window.drain()

            nursery.start_soon(submit_all)
            await trio.testing.wait_all_tasks_blocked()
            assert window.in_flight == 2
            gate.set()
        assert sorted(done) == [0, 1, 2, 3, 4]
        assert most == 2

    async def test_a_failure_cancels_the_rest_and_reaches_the_writer(self) -> None:
        """A failed send cancels the others and is raised by drain, not into the nursery."""
        cancelled: list[int] = []

        async def slow(n: int) -> None:
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                cancelled.append(n)
                raise

        async def fail() -> None:
            await trio.lowlevel.checkpoint()
            raise RuntimeError("part 3 failed")

        async with trio.open_nursery() as nursery:
            window = PartWindow(nursery, 3)
            await window.submit(lambda: slow(1))
            await window.submit(lambda: slow(2))
            await window.submit(fail)
            with pytest.raises(RuntimeError, match="part 3"):
                await window.drain()
            with pytest.raises(RuntimeError, match="part 3"):
                await window.submit(fail)
        assert sorted(cancelled) == [1, 2]
        assert window.in_flight == 0

    async def test_stop_cancels_and_waits(self) -> None:
        """stop() cancels what is in flight and returns once it has ended."""
        async with trio.open_nursery() as nursery:
            window = PartWindow(nursery, 2)
            await window.submit(trio.sleep_forever)
            await window.submit(trio.sleep_forever)
            await window.stop()
            assert window.in_flight == 0

    async def test_without_a_nursery_sends_run_inline(self) -> None:
        """With no nursery each submit runs its send to the end before returning."""
        window = PartWindow(None, 3)
        done: list[int] = []

        async def send() -> None:
            await trio.lowlevel.checkpoint()
            done.append(1)

        await window.submit(send)
        assert done == [1]
        with pytest.raises(ValueError, match="limit"):
            PartWindow(None, 0)

    async def test_the_process_bounds_all_windows_together(self) -> None:
        """Two windows sharing one limiter of 3 never run more than 3 sends between them."""
        shared = trio.CapacityLimiter(3)
        gate = trio.Event()
        running = most = 0

        async def send() -> None:
            nonlocal running, most
            running += 1
            most = max(most, running)
            await gate.wait()
            running -= 1

        async def submit_four(window: PartWindow) -> None:
            for _ in range(4):
                await window.submit(send)
            await window.drain()

        async with trio.open_nursery() as nursery:
            for _ in range(2):
                nursery.start_soon(submit_four, PartWindow(nursery, 3, shared))
            await trio.testing.wait_all_tasks_blocked()
            assert running == 3
            gate.set()
        assert most == 3
        assert shared.borrowed_tokens == 0

    async def test_the_default_limiter_is_the_process_one(self) -> None:
        """Without a limiter given, sends hold tokens of one limiter per trio run."""
        async with trio.open_nursery() as nursery:
            window = PartWindow(nursery, 2)
            await window.submit(trio.sleep_forever)
            shared = s3parts_module._shared_limiter()
            assert shared.total_tokens == s3parts_module.PROCESS_PARTS_IN_FLIGHT
            assert shared.borrowed_tokens == 1
            await window.stop()
            assert shared.borrowed_tokens == 0
