"""Threaded inflating, verification, limits and the read_zip glue: pipeline._service.inflate."""

from __future__ import annotations

import hashlib
import io
import random
import threading
import zipfile
import zlib
from collections.abc import AsyncIterator, Sequence

import attrs
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline._core.zip import decoder as _inflate
from pipeline._core.zip.decoder import MAX_DATA_CHUNK, RATIO_GRACE, EntryDecoder, LimitExceeded
from pipeline._core.zip.directory import locate_directory, parse_directory
from pipeline._core.zip.events import ContentEvent, EntryClosed, EntryData, EntryRefused, EntryStart
from pipeline._core.zip.format import CentralEntry, ZipLimits
from pipeline._errors import ZipCorrupt
from pipeline._service.inflate import read_zip
from tests.support.zipfactory import (
    RawEntry,
    build_zip,
    deflate_raw,
    deflated_with_descriptor,
    encrypted_entry,
    iter_chunks,
    make_zip,
    stored_with_descriptor,
    symlink_entry,
    zip_bomb,
)

LIMITS = ZipLimits(max_entry_size=4096 * 1024 * 1024, max_ratio=200)
TEXT = b"".join(
    b'{"id": %d, "name": "user-%d", "score": %d}\n' % (i, i * 7919 % 1000, i % 97)
    for i in range(20000)
)


def central(content: bytes, *, method: int = 8, **changes: object) -> CentralEntry:
    """A directory record for ``content`` as deflated (or stored) by deflate_raw."""
    packed = deflate_raw(content) if method == 8 else content
    fields: dict[str, object] = {
        "name": "entry.txt",
        "raw_name": b"entry.txt",
        "method": method,
        "flags": 0,
        "crc32": zlib.crc32(content),
        "compressed_size": len(packed),
        "uncompressed_size": len(content),
        "local_header_offset": 0,
    }
    fields.update(changes)
    return CentralEntry(**fields)  # type: ignore[arg-type]


def drain(decoder: EntryDecoder, packed: bytes, piece: int, max_output: int) -> list[bytes]:
    """Feed ``packed`` in ``piece``-byte batches, collecting every output piece."""
    out: list[bytes] = []
    for at in range(0, len(packed), piece):
        out.append(decoder.decode(packed[at : at + piece], max_output))
        while decoder.has_pending:
            out.append(decoder.decode(b"", max_output))
    return out


def directory(data: bytes) -> tuple[CentralEntry, ...]:
    location = locate_directory(data, 0, len(data))
    return parse_directory(data[location.offset :], location)


class TestSurface:
    def test_all_is_complete(self) -> None:
        """Every listed public name exists."""
        for name in _inflate.__all__:
            assert hasattr(_inflate, name)

    def test_inflater_library(self) -> None:
        """isal is used when it imports."""
        assert _inflate.INFLATE_LIBRARY == "isal"


class TestEntryDecoder:
    def test_deflated_in_bounded_pieces(self) -> None:
        """Output comes in pieces of at most max_output, with CRC-32 and SHA-256 of the whole."""
        decoder = EntryDecoder(central(TEXT), LIMITS)
        pieces = drain(decoder, deflate_raw(TEXT), 1000, 64 * 1024)
        assert b"".join(pieces) == TEXT
        assert max(map(len, pieces)) <= 64 * 1024
        digest = decoder.finish()
        assert digest.size == len(TEXT)
        assert digest.crc32 == zlib.crc32(TEXT)
        assert digest.sha256_hex == hashlib.sha256(TEXT).hexdigest()

    def test_stored_passes_through(self) -> None:
        """Stored bytes come back unchanged, split only when over max_output."""
        decoder = EntryDecoder(central(TEXT, method=0), LIMITS)
        small = TEXT[:100]
        assert decoder.decode(small, 1000) is small
        rest = drain(decoder, TEXT[100:], len(TEXT), 100_000)
        assert max(map(len, rest)) <= 100_000
        assert small + b"".join(rest) == TEXT
        assert decoder.finish().sha256_hex == hashlib.sha256(TEXT).hexdigest()

    def test_zlib_fallback(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """With zlib instead of isal the results are the same, end detection included."""
        monkeypatch.setattr(_inflate, "_inflater_module", zlib)
        packed = deflate_raw(TEXT)
        entry = central(TEXT, sizes_known=False, crc32=0, compressed_size=0, uncompressed_size=0)
        decoder = EntryDecoder(entry, LIMITS)
        pieces = drain(decoder, packed + b"NEXT ENTRY", 5000, 30_000)
        assert b"".join(pieces) == TEXT
        assert decoder.ended
        assert decoder.unused == b"NEXT ENTRY"
        assert decoder.finish(central(TEXT)).crc32 == zlib.crc32(TEXT)

    def test_lying_bomb_stops_at_its_declared_size(self) -> None:
        """A bomb whose records understate its size fails once one byte past them is made."""
        bomb = zip_bomb("bomb", 64 * 1024 * 1024, declared_size=10_000)
        entry = central(b"", compressed_size=len(bomb.data), uncompressed_size=10_000)
        decoder = EntryDecoder(entry, LIMITS)
        with pytest.raises(ZipCorrupt, match="more than the 10000 bytes"):
            drain(decoder, bomb.data, len(bomb.data), MAX_DATA_CHUNK)
        assert decoder.size == 10_001

    def test_size_limit_while_inflating(self) -> None:
        """Past MAX_ENTRY_SIZE_MB the entry is refused, one byte past the limit at most."""
        entry = central(TEXT)
        decoder = EntryDecoder(entry, ZipLimits(max_entry_size=50_000, max_ratio=1000))
        with pytest.raises(LimitExceeded, match="MAX_ENTRY_SIZE_MB"):
            drain(decoder, deflate_raw(TEXT), 10_000, MAX_DATA_CHUNK)
        assert decoder.size == 50_001

    def test_ratio_limit_with_known_sizes(self) -> None:
        """With the compressed size known, output past ratio times it is refused at once."""
        bomb = zip_bomb("bomb", 8 * 1024 * 1024)
        entry = central(b"", compressed_size=len(bomb.data), uncompressed_size=8 * 1024 * 1024)
        decoder = EntryDecoder(entry, LIMITS)
        with pytest.raises(LimitExceeded, match="MAX_COMPRESSION_RATIO"):
            drain(decoder, bomb.data, len(bomb.data), MAX_DATA_CHUNK)
        assert decoder.size == 200 * len(bomb.data) + 1

    def test_running_ratio_without_sizes(self) -> None:
        """Without sizes the ratio is watched on the bytes consumed, with a grace allowance."""
        bomb = zip_bomb("bomb", 64 * 1024 * 1024)
        entry = central(b"", sizes_known=False, crc32=0, compressed_size=0, uncompressed_size=0)
        decoder = EntryDecoder(entry, LIMITS)
        with pytest.raises(LimitExceeded, match="MAX_COMPRESSION_RATIO"):
            drain(decoder, bomb.data, 64 * 1024, MAX_DATA_CHUNK)
        assert decoder.size <= RATIO_GRACE + 200 * 128 * 1024 + MAX_DATA_CHUNK

    def test_final_ratio_without_sizes(self) -> None:
        """An entry under the grace but over the ratio is refused when it ends."""
        content = bytes(1024 * 1024)
        entry = central(content, sizes_known=False, crc32=0, compressed_size=0)
        decoder = EntryDecoder(entry, LIMITS)
        drain(decoder, deflate_raw(content), 1 << 20, MAX_DATA_CHUNK)
        with pytest.raises(LimitExceeded, match="MAX_COMPRESSION_RATIO"):
            decoder.finish(central(content))

    def test_crc_mismatch(self) -> None:
        """A CRC that differs from the records fails, naming the entry."""
        decoder = EntryDecoder(central(TEXT, crc32=1), LIMITS)
        drain(decoder, deflate_raw(TEXT), 1 << 20, MAX_DATA_CHUNK)
        with pytest.raises(ZipCorrupt, match=r"'entry\.txt': CRC-32 mismatch"):
            decoder.finish()

    def test_size_mismatch(self) -> None:
        """Fewer bytes than declared fail at the end."""
        decoder = EntryDecoder(central(TEXT, uncompressed_size=len(TEXT) + 1), LIMITS)
        drain(decoder, deflate_raw(TEXT), 1 << 20, MAX_DATA_CHUNK)
        with pytest.raises(ZipCorrupt, match="its records say"):
            decoder.finish()

    def test_truncated_deflate(self) -> None:
        """A deflate stream without its last block is truncated."""
        packed = deflate_raw(TEXT)
        decoder = EntryDecoder(central(TEXT), LIMITS)
        drain(decoder, packed[:-10], 1 << 20, MAX_DATA_CHUNK)
        with pytest.raises(ZipCorrupt, match="truncated"):
            decoder.finish()

    def test_bytes_after_the_stream_within_its_size_are_padding(self) -> None:
        """Bytes between the deflate stream's end and the compressed size are ignored, as
        zipfile does (Commons Compress's archive_with_bytes_after_data.zip); size and CRC
        still decide."""
        packed = deflate_raw(b"short")
        decoder = EntryDecoder(central(b"short", compressed_size=len(packed) + 3), LIMITS)
        out = decoder.decode(packed + b"xyz", MAX_DATA_CHUNK)
        assert out == b"short"
        assert decoder.finish().size == 5

    def test_empty_deflated_entry_without_a_stream(self) -> None:
        """A deflated entry of 0 bytes stored as 0 compressed bytes (no stream) is empty."""
        decoder = EntryDecoder(central(b"", compressed_size=0), LIMITS)
        assert decoder.finish().size == 0

    def test_bad_deflate_data(self) -> None:
        """Bytes that are not deflate data are corrupt, naming the entry."""
        decoder = EntryDecoder(central(TEXT), LIMITS)
        with pytest.raises(ZipCorrupt, match=r"'entry\.txt': deflate data is corrupt"):
            drain(decoder, b"\xff" * 100, 100, MAX_DATA_CHUNK)

    def test_misuse(self) -> None:
        """New data while output is pending, or finishing early, is a programming error."""
        with pytest.raises(ValueError, match="method 12"):
            EntryDecoder(central(b"x", method=12), LIMITS)
        decoder = EntryDecoder(central(TEXT), LIMITS)
        decoder.decode(deflate_raw(TEXT), 10)
        assert decoder.has_pending
        with pytest.raises(RuntimeError, match="pending"):
            decoder.decode(b"more", 10)
        with pytest.raises(RuntimeError, match="pending"):
            decoder.finish()


class TestPieceCrc:
    @pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
    def test_each_piece_carries_its_crc(self, method: int) -> None:
        """last_crc32 is each piece's own CRC-32, and the digest's CRC-32 is the whole entry's."""
        content = random.Random(3).randbytes(700_000) + TEXT
        data = make_zip([("a.bin", content)], method=method)
        (entry,) = directory(data)
        decoder = EntryDecoder(entry, LIMITS)
        start = entry.local_header_offset + 30 + len(entry.name)
        packed = data[start : start + entry.compressed_size]
        pieces = []
        piece = decoder.decode(packed, 100_000)
        while True:
            assert decoder.last_crc32 == zlib.crc32(piece)
            pieces.append(piece)
            if not decoder.has_pending:
                break
            piece = decoder.decode(b"", 100_000)
        assert len(pieces) > 1
        assert b"".join(pieces) == content
        assert decoder.finish().crc32 == zlib.crc32(content)


# -- read_zip -------------------------------------------------------------------


@attrs.define
class Result:
    """What read_zip sent, grouped per entry, and how it ended."""

    events: list[ContentEvent] = attrs.Factory(list)
    error: ZipCorrupt | None = None
    pulled: int = 0

    def contents(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        current: list[bytes] = []
        for event in self.events:
            if isinstance(event, EntryStart):
                current = []
            elif isinstance(event, EntryData):
                current.append(event.data)
            elif isinstance(event, EntryClosed):
                out[event.entry.name] = b"".join(current)
        return out

    def rejected(self) -> list[tuple[str, str]]:
        return [(e.entry.name, e.reason) for e in self.events if isinstance(e, EntryRefused)]


async def collect(
    data: bytes,
    *,
    use_directory: bool,
    cuts: Sequence[int] = (),
    chunk_size: int | None = None,
    limits: ZipLimits = LIMITS,
    limiter: trio.CapacityLimiter | None = None,
) -> Result:
    """Run read_zip over ``data`` split as asked, with a consumer that keeps up."""
    entries = directory(data) if use_directory else None
    start = min((e.local_header_offset for e in entries), default=0) if entries else 0
    result = Result()
    if chunk_size is not None:
        cuts = range(0, len(data), chunk_size)

    async def chunks() -> AsyncIterator[bytes]:
        for chunk in iter_chunks(data[start:], cuts):
            result.pulled += 1
            yield chunk

    send, receive = trio.open_memory_channel[ContentEvent](2)

    async def produce() -> None:
        try:
            await read_zip(
                chunks(),
                entries,
                send,
                limits=limits,
                limiter=limiter or trio.CapacityLimiter(2),
            )
        except ZipCorrupt as err:
            result.error = err

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        async with receive:
            async for event in receive:
                if isinstance(event, EntryData):
                    assert 0 < len(event.data) <= MAX_DATA_CHUNK
                    assert event.crc32 == zlib.crc32(event.data)
                result.events.append(event)
    return result


def leftovers(receive: trio.MemoryReceiveChannel[ContentEvent]) -> list[ContentEvent]:
    """Everything left in a channel whose sender is closed."""
    received: list[ContentEvent] = []
    while True:
        try:
            received.append(receive.receive_nowait())
        except trio.EndOfChannel:
            return received


def expected_events(data: bytes) -> list[tuple[str, str, str]]:
    """What read_zip should send for a clean archive: (kind, name, sha256) per entry."""
    out = []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            out.append(("closed", info.filename, hashlib.sha256(archive.read(info)).hexdigest()))
    return out


def closed_events(result: Result) -> list[tuple[str, str, str]]:
    return [
        ("closed", e.entry.name, e.digest.sha256_hex)
        for e in result.events
        if isinstance(e, EntryClosed)
    ]


MIXED = [
    ("text.jsonl", TEXT),
    ("dir/", b""),
    ("dir/empty", b""),
    ("dir/small.txt", b"small"),
    ("noise.bin", random.Random(1).randbytes(300_000)),
]


class TestReadZip:
    @pytest.mark.parametrize("use_directory", [True, False])
    @pytest.mark.parametrize("descriptors", [True, False])
    @pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
    async def test_like_zipfile(self, use_directory: bool, descriptors: bool, method: int) -> None:
        """Every mode gives zipfile's content and digests; directories send nothing."""
        data = make_zip(MIXED, method=method, data_descriptor=descriptors)
        result = await collect(data, use_directory=use_directory, chunk_size=65536)
        assert result.error is None
        assert closed_events(result) == expected_events(data)
        assert result.contents()["text.jsonl"] == TEXT
        kinds = [type(e) for e in result.events if not isinstance(e, EntryData)]
        assert kinds == [EntryStart, EntryClosed] * 4
        for event in result.events:
            if isinstance(event, EntryClosed):
                assert event.digest.size == event.entry.uncompressed_size

    async def test_statically_refused_entries(self) -> None:
        """Refused entries are sent as EntryRefused alone, and reading goes on."""
        data = build_zip(
            [
                symlink_entry("link", "/etc"),
                encrypted_entry("secret", b"s" * 10),
                RawEntry("..\\evil", b"x"),
                zip_bomb("bomb", 16 * 1024 * 1024),
                RawEntry("ok", b"fine"),
            ]
        )
        result = await collect(data, use_directory=True)
        assert result.error is None
        assert [name for name, _ in result.rejected()] == ["link", "secret", "..\\evil", "bomb"]
        assert result.contents() == {"ok": b"fine"}
        assert not any(isinstance(e, EntryStart) and e.entry.name != "ok" for e in result.events)

    async def test_refused_while_inflating_then_goes_on(self) -> None:
        """An entry over the limit while inflating is refused after its start; the next reads."""
        big = random.Random(2).randbytes(200_000)
        data = build_zip([stored_with_descriptor("big", big), RawEntry("next", b"next one")])
        result = await collect(
            data, use_directory=False, limits=ZipLimits(100_000, 200), chunk_size=4096
        )
        assert result.error is None
        names = [(type(e).__name__, e.entry.name) for e in result.events if hasattr(e, "entry")]
        assert names == [
            ("EntryStart", "big"),
            ("EntryRefused", "big"),
            ("EntryStart", "next"),
            ("EntryClosed", "next"),
        ]
        sent = sum(len(e.data) for e in result.events[:3] if isinstance(e, EntryData))
        assert sent <= 100_001

    async def test_ratio_refused_at_the_end_without_directory(self) -> None:
        """Without sizes, an entry over the ratio but under the grace is refused at its end."""
        data = build_zip([deflated_with_descriptor("zeros", bytes(1 << 20)), RawEntry("n", b"n")])
        result = await collect(data, use_directory=False)
        assert [name for name, _ in result.rejected()] == ["zeros"]
        assert result.contents() == {"n": b"n"}

    async def test_honest_bomb_never_inflates(self) -> None:
        """A bomb that declares its size is refused by its records, in no time."""
        data = build_zip([zip_bomb("bomb", 64 * 1024 * 1024)])
        with trio.fail_after(2):
            result = await collect(data, use_directory=True)
        assert result.rejected()[0][0] == "bomb"
        assert "MAX_COMPRESSION_RATIO" in result.rejected()[0][1]

    async def test_lying_bomb_fails_the_file_at_its_declared_size(self) -> None:
        """A bomb whose records lie fails the file once one byte past them is inflated."""
        data = build_zip(
            [RawEntry("good", b"good"), zip_bomb("bomb", 64 * 1024 * 1024, declared_size=5000)]
        )
        result = await collect(data, use_directory=True)
        assert result.error is not None
        assert "'bomb' inflates to more than the 5000 bytes" in str(result.error)
        assert result.contents() == {"good": b"good"}
        bomb_data = sum(len(e.data) for e in result.events if isinstance(e, EntryData)) - 4
        assert bomb_data <= 5001

    async def test_bomb_without_directory(self) -> None:
        """Without the directory a bomb is stopped by the running ratio and fails the file."""
        bomb = zip_bomb("bomb", 64 * 1024 * 1024)
        data = build_zip([attrs.evolve(bomb, descriptor="sig32")])
        result = await collect(data, use_directory=False, chunk_size=65536)
        assert [name for name, _ in result.rejected()] == ["bomb"]
        assert result.error is not None
        assert "where it ends cannot be found" in str(result.error)
        sent = sum(len(e.data) for e in result.events if isinstance(e, EntryData))
        assert sent <= RATIO_GRACE + 200 * len(bomb.data) + MAX_DATA_CHUNK

    async def test_corrupt_after_good_entries(self) -> None:
        """Entries complete before a fault are all sent; then ZipCorrupt is raised."""
        data = build_zip(
            [RawEntry("one", b"1" * 1000), RawEntry("two", b"2" * 1000, crc32=7), RawEntry("x")]
        )
        result = await collect(data, use_directory=True)
        assert result.contents() == {"one": b"1" * 1000}
        assert isinstance(result.events[-1], EntryData)
        assert result.error is not None
        assert "'two': CRC-32 mismatch" in str(result.error)

    @pytest.mark.parametrize("use_directory", [True, False])
    async def test_truncated(self, use_directory: bool) -> None:
        """A download that breaks off mid-entry fails the file with a clear reason."""
        data = make_zip([("a", random.Random(3).randbytes(5000))])
        entries = directory(data) if use_directory else None
        send, receive = trio.open_memory_channel[ContentEvent](10)

        async def chunks() -> AsyncIterator[bytes]:
            yield data[:3000]

        with pytest.raises(ZipCorrupt, match="truncated"):
            await read_zip(chunks(), entries, send, limits=LIMITS, limiter=trio.CapacityLimiter(1))
        received = leftovers(receive)
        assert isinstance(received[0], EntryStart)
        assert not any(isinstance(e, EntryClosed) for e in received)

    async def test_inflates_in_worker_threads_in_batches(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Decoding runs off the event loop, one thread call per batch, not per chunk."""
        calls: list[tuple[bool, int]] = []
        original = EntryDecoder.decode

        def spy(self: EntryDecoder, data: bytes, max_output: int) -> bytes:
            calls.append((threading.current_thread() is threading.main_thread(), len(data)))
            return original(self, data, max_output)

        monkeypatch.setattr(EntryDecoder, "decode", spy)
        noise = random.Random(4).randbytes(3 * 1024 * 1024)
        data = make_zip([("noise", noise)])
        result = await collect(data, use_directory=True, chunk_size=16384)
        assert result.contents() == {"noise": noise}
        assert not any(on_main for on_main, _ in calls)
        assert 3 <= len(calls) <= 6
        assert result.pulled > 190

    async def test_backpressure(self) -> None:
        """With nobody receiving, read_zip stops pulling chunks instead of reading ahead."""
        data = make_zip([(f"f{i}", TEXT) for i in range(8)])
        pulled = 0

        async def chunks() -> AsyncIterator[bytes]:
            nonlocal pulled
            for at in range(0, len(data), 4096):
                pulled += 1
                yield data[at : at + 4096]

        send, receive = trio.open_memory_channel[ContentEvent](2)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: read_zip(
                    chunks(), None, send, limits=LIMITS, limiter=trio.CapacityLimiter(1)
                )
            )
            with trio.move_on_after(0.3):
                await trio.sleep_forever()
            assert pulled < len(data) // 4096 / 2
            nursery.cancel_scope.cancel()
        receive.close()

    async def test_cancellation_propagates(self) -> None:
        """Cancelling a reading stops it promptly and is not swallowed."""
        data = make_zip([("t", TEXT * 10)])
        send, receive = trio.open_memory_channel[ContentEvent](0)

        async def chunks() -> AsyncIterator[bytes]:
            yield data

        with trio.move_on_after(0.2) as scope:
            await read_zip(chunks(), None, send, limits=LIMITS, limiter=trio.CapacityLimiter(1))
        assert scope.cancelled_caught
        with pytest.raises(trio.ClosedResourceError):
            send.send_nowait(EntryData(b"x", zlib.crc32(b"x")))
        receive.close()

    async def test_stops_after_the_last_entry(self) -> None:
        """With the directory, later chunks are not pulled and the generator is closed."""
        data = make_zip([("a", b"a")], comment=b"c" * 60000)
        pulled: list[int] = []
        closed = trio.Event()

        async def chunks() -> AsyncIterator[bytes]:
            try:
                for at in range(0, len(data), 100):
                    pulled.append(at)
                    yield data[at : at + 100]
            finally:
                closed.set()

        send, receive = trio.open_memory_channel[ContentEvent](10)
        await read_zip(
            chunks(), directory(data), send, limits=LIMITS, limiter=trio.CapacityLimiter(1)
        )
        assert closed.is_set()
        assert len(pulled) < 10
        assert [type(e) for e in leftovers(receive)] == [EntryStart, EntryData, EntryClosed]

    async def test_many_small_entries_without_directory(self) -> None:
        """Thousands of small deflated entries with descriptors read flat and quickly."""
        entries = [(f"f{i:05d}", b"%d," % i * 20) for i in range(3000)]
        data = make_zip(entries, data_descriptor=True)
        with trio.fail_after(20):
            result = await collect(data, use_directory=False, chunk_size=1 << 20)
        assert result.error is None
        assert len(closed_events(result)) == 3000

    async def test_empty_archive(self) -> None:
        """An archive with no entries sends nothing and ends cleanly."""
        data = make_zip([])
        assert (await collect(data, use_directory=False)).events == []
        assert (await collect(data, use_directory=True)).events == []


NAMES = st.sampled_from(["a", "b/c.txt", "d/", "e f", "gé", "h/i/j", "k/"])


@st.composite
def archives(draw: st.DrawFn) -> bytes:
    names = draw(st.lists(NAMES, max_size=4, unique=True))
    content = st.one_of(
        st.binary(max_size=3000), st.sampled_from([TEXT[:50_000], b"", bytes(70_000)])
    )
    return make_zip(
        [(n, b"" if n.endswith("/") else draw(content)) for n in names],
        method=draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])),
        compresslevel=draw(st.one_of(st.none(), st.integers(0, 9))),
        data_descriptor=draw(st.booleans()),
        zip64=draw(st.booleans()),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=archives(), use_directory=st.booleans(), draw=st.data())
def test_read_zip_equals_zipfile(data: bytes, use_directory: bool, draw: st.DataObject) -> None:
    """Any zipfile archive, split anywhere, gives zipfile's entries with their digests."""
    cuts = draw.draw(st.lists(st.integers(0, len(data)), max_size=30))

    async def main() -> Result:
        with trio.fail_after(20):
            # A generous ratio: zipfile's compresslevel 9 packs zeros past 200:1.
            return await collect(
                data, use_directory=use_directory, cuts=cuts, limits=ZipLimits(1 << 32, 1e5)
            )

    result = trio.run(main)
    assert result.error is None
    assert closed_events(result) == expected_events(data)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name, content in result.contents().items():
            assert content == archive.read(name)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    use_directory=st.booleans(),
    descriptors=st.booleans(),
    flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(1, 255)), max_size=3),
    cut=st.integers(min_value=0, max_value=2000),
    chunk=st.integers(1, 5000),
)
def test_damaged_archives_end_cleanly(
    use_directory: bool, descriptors: bool, flips: list[tuple[int, int]], cut: int, chunk: int
) -> None:
    """Flipped or cut bytes end in verified entries, refusals or ZipCorrupt: nothing else."""
    good = make_zip(
        [("a.txt", TEXT[:20_000]), ("b/", b""), ("c", b"cc" * 999)], data_descriptor=descriptors
    )
    body = bytearray(good)
    for where, xor in flips:
        body[where % len(body)] ^= xor
    data = bytes(body[: max(0, len(body) - cut)])

    async def main() -> Result:
        # A hang would fail here rather than stall the suite.
        with trio.fail_after(20):
            try:
                return await collect(data, use_directory=use_directory, chunk_size=chunk)
            except ZipCorrupt as err:  # the end records or directory are damaged
                return Result(error=err)

    result = trio.run(main)
    with zipfile.ZipFile(io.BytesIO(good)) as archive:
        originals = {info.filename: archive.read(info) for info in archive.infolist()}
    for event in result.events:
        if isinstance(event, EntryClosed) and event.entry.name in originals:
            # Whatever was verified is what the undamaged archive holds.
            content = originals[event.entry.name]
            assert event.digest.sha256_hex == hashlib.sha256(content).hexdigest()
    if result.error is not None:
        assert "\n" not in str(result.error)


@pytest.mark.parametrize("chunk_size", [1, 7919, 256 * 1024])
async def test_entries_before_a_fault_are_sent_at_any_chunking(chunk_size: int) -> None:
    """read_zip sends every entry that ended before a bad local header, then fails the file."""
    entries = [(f"e{n:02}.txt", f"entry {n}\n".encode() * 50) for n in range(51)]
    data = bytearray(make_zip(entries))
    last = max(directory(bytes(data)), key=lambda entry: entry.local_header_offset)
    data[last.local_header_offset + 30] = ord("x")  # the local header names another file
    result = await collect(bytes(data), use_directory=True, chunk_size=chunk_size)
    assert result.error is not None
    assert "disagrees with the central directory" in str(result.error)
    assert result.contents() == dict(entries[:50])
