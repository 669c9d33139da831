"""Inflating decisions without I/O: batches, inline decodes, the end_found re-entry."""

from __future__ import annotations

import random

import pytest

from pipeline._core.zip.decoder import LimitExceeded
from pipeline._core.zip.directory import locate_directory, parse_directory
from pipeline._core.zip.events import (
    ContentEvent,
    EntryClosed,
    EntryData,
    EntryRefused,
    EntryStart,
)
from pipeline._core.zip.format import ZipLimits
from pipeline._core.zip.inflater import INLINE_BYTES, OPEN_FIRST_BATCH, Decode, ZipInflater
from pipeline._core.zip.stream import ZipStreamReader
from pipeline._errors import ZipCorrupt
from tests.support.zipfactory import (
    RawEntry,
    build_zip,
    deflated_with_descriptor,
    stored_with_descriptor,
)

LIMITS = ZipLimits(max_entry_size=64 * 1024 * 1024, max_ratio=200)
CONTENT = random.Random(7).randbytes(300_000)


def inflater(data: bytes, *, directory: bool, batch_bytes: int = 100_000) -> ZipInflater:
    entries = None
    if directory:
        location = locate_directory(data, 0, len(data))
        entries = parse_directory(data[location.offset :], location)
    reader = ZipStreamReader(entries, LIMITS)
    return ZipInflater(reader, LIMITS, batch_bytes=batch_bytes, max_data_chunk=64 * 1024)


def run(inflating: ZipInflater, chunks: list[bytes]) -> tuple[list[ContentEvent], list[Decode]]:
    """Carry out every step as read_zip does, on this thread; the events and the decodes."""
    events: list[ContentEvent] = []
    decodes: list[Decode] = []
    for chunk in chunks:
        inflating.feed(chunk)
        carry_out(inflating, events, decodes)
        if inflating.done:
            break
    inflating.close()
    carry_out(inflating, events, decodes)
    return events, decodes


def carry_out(inflating: ZipInflater, events: list[ContentEvent], decodes: list[Decode]) -> None:
    """Take steps until the inflater needs more input, decoding on this thread."""
    while (step := inflating.next_step()) is not None:
        if isinstance(step, Decode):
            decodes.append(step)
            try:
                inflating.decoded(step())
            except LimitExceeded as err:
                inflating.limit_exceeded(err.reason)
        else:
            events.append(step)


def cut(data: bytes, size: int) -> list[bytes]:
    return [data[at : at + size] for at in range(0, len(data), size)]


class TestBatches:
    def test_compressed_bytes_go_to_threads_a_batch_at_a_time(self) -> None:
        """An entry's compressed bytes are decoded in batches of batch_bytes, off the loop."""
        data = build_zip([RawEntry("big", CONTENT, method=0)])
        events, decodes = run(inflater(data, directory=True), cut(data, 10_000))
        fed = [len(step.data) for step in decodes if step.data]
        # A batch goes once it holds batch_bytes: within a chunk of the size.
        assert all(100_000 <= size < 110_000 for size in fed[:-1])
        assert sum(fed) == len(CONTENT)
        assert not any(step.inline for step in decodes)
        assert isinstance(events[0], EntryStart)
        assert isinstance(events[-1], EntryClosed)
        assert b"".join(e.data for e in events if isinstance(e, EntryData)) == CONTENT

    def test_a_batch_is_joined_by_the_decode_not_before(self) -> None:
        """A batch's chunks reach its decode as received; the call joins them (in the thread)."""
        data = build_zip([RawEntry("big", CONTENT, method=0)])
        chunks = cut(data, 10_000)
        _, decodes = run(inflater(data, directory=True), chunks)
        first = decodes[0]
        # The first chunk holds the local header; the next ones lie inside the data.
        assert len(first.chunks) > 1
        inside = len(first.chunks) - 1
        assert all(a is b for a, b in zip(first.chunks[1:], chunks[1 : 1 + inside], strict=True))
        assert first.data == b"".join(first.chunks)

    def test_small_entries_are_decoded_inline(self) -> None:
        """An entry of at most INLINE_BYTES is decoded on the event loop, no thread hop."""
        data = build_zip([RawEntry("small", b"x" * 1000), RawEntry("big", CONTENT)])
        _, decodes = run(inflater(data, directory=True, batch_bytes=1 << 20), [data])
        inline = {step.decoder.entry.name: step.inline for step in decodes}
        assert inline == {"small": True, "big": False}
        assert len(CONTENT) > INLINE_BYTES

    def test_a_decode_is_handed_out_until_it_is_reported(self) -> None:
        """next_step repeats the decode in progress; each output piece gets a decode of its own."""
        data = build_zip([RawEntry("big", CONTENT, method=0)])
        inflating = inflater(data, directory=True, batch_bytes=1 << 20)
        inflating.feed(data)
        inflating.close()
        assert isinstance(inflating.next_step(), EntryStart)
        first = inflating.next_step()
        assert isinstance(first, Decode)
        assert inflating.next_step() is first
        inflating.decoded(first())
        assert isinstance(inflating.next_step(), EntryData)
        second = inflating.next_step()
        assert isinstance(second, Decode)
        assert second.data == b""

    def test_unknown_sizes_start_with_small_batches(self) -> None:
        """Without sizes up front the first batch is OPEN_FIRST_BATCH, then batches double."""
        data = build_zip([deflated_with_descriptor("open", CONTENT)])
        _, decodes = run(inflater(data, directory=False, batch_bytes=1 << 20), cut(data, 4096))
        fed = [len(step.data) for step in decodes if step.data]
        assert OPEN_FIRST_BATCH <= fed[0] < OPEN_FIRST_BATCH + 4096
        assert 2 * OPEN_FIRST_BATCH <= fed[1] < 2 * OPEN_FIRST_BATCH + 4096


class TestEnds:
    def test_end_found_reads_on_after_a_deflated_entry(self) -> None:
        """Bytes past a deflate stream's end go back to the reader, and the next entry follows."""
        data = build_zip(
            [deflated_with_descriptor("one", CONTENT), deflated_with_descriptor("two", b"second")]
        )
        events, _ = run(inflater(data, directory=False), [data])
        closed = [e.entry.name for e in events if isinstance(e, EntryClosed)]
        assert closed == ["one", "two"]

    def test_limit_refuses_the_entry_and_reading_goes_on(self) -> None:
        """A limit crossed while decoding refuses the entry after its start; the next is read."""
        big = random.Random(2).randbytes(200_000)
        data = build_zip([stored_with_descriptor("big", big), RawEntry("next", b"next one")])
        reader = ZipStreamReader(None, ZipLimits(100_000, 200))
        inflating = ZipInflater(
            reader, ZipLimits(100_000, 200), batch_bytes=1 << 20, max_data_chunk=64 * 1024
        )
        events, _ = run(inflating, cut(data, 4096))
        kinds = [(type(e).__name__, e.entry.name) for e in events if not isinstance(e, EntryData)]
        assert kinds == [
            ("EntryStart", "big"),
            ("EntryRefused", "big"),
            ("EntryStart", "next"),
            ("EntryClosed", "next"),
        ]

    def test_refused_open_entry_fails_the_file_after_its_refusal(self) -> None:
        """A deflated entry refused while its end is unknown: its refusal, then ZipCorrupt."""
        bomb = deflated_with_descriptor("bomb", b"\0" * 2_000_000)
        data = build_zip([bomb, RawEntry("after", b"x")])
        reader = ZipStreamReader(None, ZipLimits(1_000_000, 200))
        inflating = ZipInflater(
            reader, ZipLimits(1_000_000, 200), batch_bytes=1 << 20, max_data_chunk=64 * 1024
        )
        seen: list[ContentEvent] = []
        inflating.feed(data)
        inflating.close()
        with pytest.raises(ZipCorrupt, match="where it ends cannot be found"):
            carry_out(inflating, seen, [])
        assert isinstance(seen[-1], EntryRefused)
        assert seen[-1].entry.name == "bomb"

    def test_reporting_without_a_decode_is_a_bug(self) -> None:
        """decoded() and limit_exceeded() with no decode handed out raise."""
        inflating = inflater(build_zip([RawEntry("a", b"a")]), directory=False)
        with pytest.raises(RuntimeError):
            inflating.decoded(b"")
        with pytest.raises(RuntimeError):
            inflating.limit_exceeded("no")

    def test_batch_sizes_are_checked(self) -> None:
        """A batch or piece size below one is refused up front."""
        reader = ZipStreamReader(None, LIMITS)
        with pytest.raises(ValueError, match="must be positive"):
            ZipInflater(reader, LIMITS, batch_bytes=0, max_data_chunk=1)
