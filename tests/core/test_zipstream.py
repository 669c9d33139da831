"""The sans-IO streaming reader, in both modes, at any chunking: pipeline._core.zip.stream."""

from __future__ import annotations

import io
import random
import struct
import zipfile
import zlib
from collections import deque
from collections.abc import Iterable, Sequence

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline._core.zip import stream as _zipstream
from pipeline._core.zip.directory import locate_directory, parse_directory
from pipeline._core.zip.events import EntryCompressed, EntryEnd, EntryRefused, EntryStart, ZipEvent
from pipeline._core.zip.format import CentralEntry, ZipLimits, refusal
from pipeline._core.zip.stream import ReadFault, ZipStreamReader
from pipeline._errors import ZipCorrupt
from tests.support.zipfactory import (
    RawEntry,
    build_zip,
    cp437_entry,
    deflate_raw,
    deflated_with_descriptor,
    encrypted_entry,
    iter_chunks,
    make_zip,
    stored_with_descriptor,
    symlink_entry,
    unsupported_method_entry,
)

LIMITS = ZipLimits(max_entry_size=4096 * 1024 * 1024, max_ratio=200)


@attrs.define
class Outcome:
    """What a reading produced: finished entries with their content, and refusals."""

    entries: list[tuple[CentralEntry, bytes]] = attrs.Factory(list)
    refused: list[tuple[str, str]] = attrs.Factory(list)
    events: list[ZipEvent] = attrs.Factory(list)

    @property
    def contents(self) -> dict[str, bytes]:
        return {entry.name: content for entry, content in self.entries}


def directory(data: bytes) -> tuple[CentralEntry, ...]:
    location = locate_directory(data, 0, len(data))
    return parse_directory(data[location.offset :], location)


def read(
    data: bytes,
    *,
    use_directory: bool,
    chunks: Iterable[bytes] | None = None,
    limits: ZipLimits = LIMITS,
) -> Outcome:
    """Drive the reader as read_zip does, with zlib standing in for the threaded inflater."""
    entries = directory(data) if use_directory else None
    start = min((e.local_header_offset for e in entries), default=0) if entries else 0
    reader = ZipStreamReader(entries, limits)
    outcome = Outcome()
    inflater: zlib._Decompress | None = None
    parts: list[bytes] = []

    def handle(events: Sequence[ZipEvent]) -> None:
        nonlocal inflater, parts
        queue = deque(events)
        while queue:
            event = queue.popleft()
            outcome.events.append(event)
            if isinstance(event, EntryStart):
                inflater = zlib.decompressobj(-15) if event.entry.method == 8 else None
                parts = []
            elif isinstance(event, EntryCompressed):
                assert event.data
                if inflater is None:
                    parts.append(event.data)
                    continue
                parts.append(inflater.decompress(event.data))
                if inflater.eof and reader.awaiting_end:
                    queue.extend(reader.end_found(inflater.unused_data))
            elif isinstance(event, EntryEnd):
                outcome.entries.append((event.entry, b"".join(parts)))
            elif isinstance(event, EntryRefused):
                outcome.refused.append((event.entry.name, event.reason))

    for chunk in chunks if chunks is not None else [data[start:]]:
        handle(reader.feed(chunk))
        if reader.done:
            break
    handle(reader.close())
    return outcome


def one_byte_chunks(data: bytes, start: int = 0) -> list[bytes]:
    return [data[i : i + 1] for i in range(start, len(data))]


def assert_like_zipfile(data: bytes, outcome: Outcome) -> None:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
        assert [e.name for e, _ in outcome.entries] == [i.filename for i in infos]
        for (entry, content), info in zip(outcome.entries, infos, strict=True):
            assert content == archive.read(info)
            assert entry.crc32 == info.CRC
            assert entry.uncompressed_size == info.file_size
            assert entry.compressed_size == info.compress_size
            assert entry.sizes_known


class TestSurface:
    def test_all_is_complete(self) -> None:
        """Every listed public name exists."""
        for name in _zipstream.__all__:
            assert hasattr(_zipstream, name)


MIXED = [
    ("readme.txt", b"hello world\n" * 300),
    ("data/", b""),
    ("data/empty.bin", b""),
    ("data/r\u00e9sum\u00e9.json", b'{"k": 1}' * 50),
    ("data/tiny", b"x"),
]


class TestZipfileArchives:
    @pytest.mark.parametrize("use_directory", [True, False])
    @pytest.mark.parametrize("descriptors", [True, False])
    @pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
    @pytest.mark.parametrize("zip64", [True, False])
    def test_one_byte_chunks(
        self, use_directory: bool, descriptors: bool, method: int, zip64: bool
    ) -> None:
        """Fed one byte at a time, every mode and option gives zipfile's entries."""
        data = make_zip(MIXED, method=method, data_descriptor=descriptors, zip64=zip64)
        outcome = read(data, use_directory=use_directory, chunks=one_byte_chunks(data))
        assert_like_zipfile(data, outcome)

    def test_directory_mode_stops_before_the_directory(self) -> None:
        """After the last listed entry the reader is done and ignores what follows."""
        data = make_zip(MIXED)
        reader = ZipStreamReader(directory(data), LIMITS)
        location = locate_directory(data, 0, len(data))
        reader.feed(data[: location.offset + 4])
        assert reader.done
        assert reader.feed(b"anything at all") == []
        assert reader.close() == []

    def test_stream_starting_at_the_first_entry(self) -> None:
        """With a directory the stream starts at the smallest local header offset."""
        entries = build_zip([RawEntry("a", b"A" * 10), RawEntry("b", b"B" * 10)])
        listed = directory(entries)[1:]
        reader = ZipStreamReader(listed, LIMITS)
        start = listed[0].local_header_offset
        events = reader.feed(entries[start:])
        assert [type(e) for e in events] == [EntryStart, EntryCompressed, EntryEnd]
        assert reader.done


def is_safe(name: str) -> bool:
    probe = CentralEntry(name, name.encode(), 8, 0x800, 0, 1, 1, 0)
    return refusal(probe, LIMITS) is None


# Names zipfile writes and we accept; unsafe ones have tests of their own.
ENTRY_NAMES = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
    min_size=1,
    max_size=12,
).filter(is_safe)
CONTENTS = st.one_of(
    st.binary(max_size=2000),
    st.builds(lambda word, n: word * n, st.binary(min_size=1, max_size=30), st.integers(0, 300)),
)


@st.composite
def archives(draw: st.DrawFn) -> bytes:
    names = draw(st.lists(ENTRY_NAMES, max_size=5, unique=True))
    entries = [(n, b"" if n.endswith("/") else draw(CONTENTS)) for n in names]
    return make_zip(
        entries,
        method=draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])),
        compresslevel=draw(st.one_of(st.none(), st.integers(0, 9))),
        data_descriptor=draw(st.booleans()),
        zip64=draw(st.booleans()),
        # zipfile cannot read back a comment holding an end-record signature.
        comment=draw(st.binary(max_size=100).filter(lambda c: b"PK\x05\x06" not in c)),
    )


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=archives(), use_directory=st.booleans(), draw=st.data())
def test_any_archive_at_any_chunking(data: bytes, use_directory: bool, draw: st.DataObject) -> None:
    """zipfile-written archives split anywhere read exactly as zipfile reads them."""
    cuts = draw.draw(st.lists(st.integers(0, len(data)), max_size=40))
    outcome = read(data, use_directory=use_directory, chunks=iter_chunks(data, cuts))
    assert_like_zipfile(data, outcome)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    use_directory=st.booleans(),
    descriptors=st.booleans(),
    flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(1, 255)), max_size=3),
    cut=st.integers(min_value=0, max_value=400),
    draw=st.data(),
)
def test_mutated_stream_ends_cleanly(
    use_directory: bool,
    descriptors: bool,
    flips: list[tuple[int, int]],
    cut: int,
    draw: st.DataObject,
) -> None:
    """A damaged or truncated body ends in a result or ZipCorrupt, never a crash or hang."""
    data = make_zip(MIXED, data_descriptor=descriptors)
    entries = directory(data) if use_directory else None
    body = bytearray(data)
    for where, xor in flips:
        body[where % len(body)] ^= xor
    body = body[: max(0, len(body) - cut)]
    cuts = draw.draw(st.lists(st.integers(0, len(body)), max_size=20))
    reader = ZipStreamReader(entries, LIMITS)
    error: ZipCorrupt | None = None
    try:
        # zlib stands in for the inflater; its own error is bad deflate data.
        inflater = zlib.decompressobj(-15)
        for chunk in iter_chunks(bytes(body), cuts):
            pending = deque(reader.feed(chunk))
            while pending:
                event = pending.popleft()
                if isinstance(event, EntryStart):
                    inflater = zlib.decompressobj(-15)
                elif isinstance(event, EntryCompressed) and reader.awaiting_end:
                    inflater.decompress(event.data)
                    if inflater.eof:
                        pending.extend(reader.end_found(inflater.unused_data))
            if reader.done:
                break
        reader.close()
    except ZipCorrupt as err:
        error = err
    except zlib.error:
        return
    if error is not None:
        assert "\n" not in str(error)
        with pytest.raises(ZipCorrupt):
            reader.feed(b"x")


class TestCraftedArchives:
    @pytest.mark.parametrize("use_directory", [True, False])
    @pytest.mark.parametrize("zip64", [True, False])
    def test_stored_with_descriptor(self, use_directory: bool, zip64: bool) -> None:
        """A stored entry with a descriptor reads in both modes, fake signatures inside too."""
        tricky = b"before PK\x07\x08 fake descriptor PK\x07\x08\x00\x00\x00\x00 after" * 20
        data = build_zip(
            [
                stored_with_descriptor("s1", tricky, zip64=zip64),
                stored_with_descriptor("s2", b"", zip64=zip64),
                RawEntry("after", b"still here"),
            ]
        )
        outcome = read(data, use_directory=use_directory, chunks=one_byte_chunks(data))
        assert outcome.contents == {"s1": tricky, "s2": b"", "after": b"still here"}

    def test_stored_descriptor_without_signature_needs_the_directory(self) -> None:
        """Without signature a stored entry's end is found only through the directory."""
        data = build_zip([stored_with_descriptor("s", b"abc" * 10, signature=False)])
        assert read(data, use_directory=True).contents == {"s": b"abc" * 10}
        with pytest.raises(ZipCorrupt, match="truncated"):
            read(data, use_directory=False)

    @pytest.mark.parametrize("use_directory", [True, False])
    @pytest.mark.parametrize(
        ("signature", "zip64"), [(True, False), (False, False), (True, True), (False, True)]
    )
    def test_deflated_descriptor_forms(
        self, use_directory: bool, signature: bool, zip64: bool
    ) -> None:
        """Descriptors with or without signature, 32- or 64-bit, read in both modes."""
        content = b"the quick brown fox " * 500
        data = build_zip(
            [
                deflated_with_descriptor("a", content, signature=signature, zip64=zip64),
                deflated_with_descriptor("b", b"", signature=signature, zip64=zip64),
                RawEntry("c", b"tail"),
            ]
        )
        outcome = read(data, use_directory=use_directory, chunks=iter_chunks(data, [7, 50, 99]))
        assert outcome.contents == {"a": content, "b": b"", "c": b"tail"}
        end = outcome.entries[0][0]
        assert (end.crc32, end.uncompressed_size) == (zlib.crc32(content), len(content))

    def test_symlink_encrypted_and_method_12_are_skipped(self) -> None:
        """Refused entries give one EntryRefused, no data, and reading goes on."""
        data = build_zip(
            [
                symlink_entry("link", "/etc/passwd"),
                encrypted_entry("secret", b"top secret" * 10),
                unsupported_method_entry("bz", b"bzip2 data"),
                RawEntry("../evil", b"escape"),
                RawEntry("ok.txt", b"fine"),
            ]
        )
        outcome = read(data, use_directory=True, chunks=one_byte_chunks(data))
        assert outcome.contents == {"ok.txt": b"fine"}
        assert [name for name, _ in outcome.refused] == ["link", "secret", "bz", "../evil"]
        # Nothing of a refused entry is handed out: only ok.txt's bytes are.
        handed = b"".join(e.data for e in outcome.events if isinstance(e, EntryCompressed))
        assert handed == deflate_raw(b"fine")

    def test_local_mode_cannot_see_symlinks(self) -> None:
        """Without the directory a symlink reads as a file: documented, and why Range matters."""
        data = build_zip([symlink_entry("link", "target")])
        assert read(data, use_directory=False).contents == {"link": b"target"}

    def test_local_mode_skips_refused_entries_of_known_size(self) -> None:
        """Without the directory, refused entries with sizes in their header are skipped."""
        data = build_zip(
            [
                encrypted_entry("secret", b"s" * 30),
                unsupported_method_entry("bz", b"b"),
                RawEntry("ok", b"ok"),
            ]
        )
        outcome = read(data, use_directory=False)
        assert outcome.contents == {"ok": b"ok"}
        assert [name for name, _ in outcome.refused] == ["secret", "bz"]

    def test_local_mode_refused_entry_of_unknown_end(self) -> None:
        """Without the directory a refused deflated entry with a descriptor fails the file."""
        data = build_zip([deflated_with_descriptor("../evil", b"x" * 100), RawEntry("ok", b"")])
        with pytest.raises(ZipCorrupt, match="where it ends cannot be found"):
            read(data, use_directory=False)
        # With the directory the same entry is simply skipped.
        outcome = read(data, use_directory=True)
        assert outcome.contents == {"ok": b""}

    def test_cp437_name(self) -> None:
        """A name without the UTF-8 flag decodes as CP437 in both modes."""
        data = build_zip([cp437_entry("\u00c7a va \u2502 \u00e9t\u00e9.txt", b"box")])
        for use_directory in (True, False):
            outcome = read(data, use_directory=use_directory)
            assert outcome.contents == {"\u00c7a va \u2502 \u00e9t\u00e9.txt": b"box"}

    @pytest.mark.parametrize(
        ("bent", "why"),
        [
            (RawEntry("a.txt", b"abc", local_name=b"b.txt"), "names it 'b.txt'"),
            (RawEntry("a.txt", b"abc", local_crc32=1234), "CRC-32 1234 locally"),
        ],
    )
    def test_local_header_disagrees(self, bent: RawEntry, why: str) -> None:
        """A local header contradicting the directory is corrupt, saying how."""
        data = build_zip([RawEntry("first", b"1"), bent])
        outcome = Outcome()
        reader = ZipStreamReader(directory(data), LIMITS)
        with pytest.raises(ZipCorrupt, match="disagrees with the central directory") as caught:
            outcome.events.extend(reader.feed(data))
        assert why in str(caught.value)

    def test_method_disagrees(self) -> None:
        """A local method differing from the directory's is corrupt."""
        data = bytearray(build_zip([RawEntry("a", b"abc", method=0)]))
        struct.pack_into("<H", data, 8, 8)
        with pytest.raises(ZipCorrupt, match="method 8 locally"):
            read(bytes(data), use_directory=True)

    def test_descriptor_disagrees(self) -> None:
        """A data descriptor whose values differ from the directory's is corrupt."""
        data = bytearray(build_zip([deflated_with_descriptor("a", b"abc" * 100)]))
        at = bytes(data).index(b"PK\x07\x08")
        data[at + 4] ^= 0xFF
        with pytest.raises(ZipCorrupt, match="data descriptor of 'a' disagrees"):
            read(bytes(data), use_directory=True)

    @pytest.mark.parametrize("where", ["between", "after"])
    def test_entry_not_in_directory(self, where: str) -> None:
        """An entry in the stream that the directory does not list is corrupt."""
        hidden = RawEntry("hidden.exe", b"MZ" * 100, listed=False)
        entries = [RawEntry("a", b"a"), hidden, RawEntry("b", b"b")]
        if where == "after":
            entries = [RawEntry("a", b"a"), RawEntry("b", b"b"), hidden]
        data = build_zip(entries)
        with pytest.raises(ZipCorrupt, match=r"not in the central directory|follows the last"):
            read(data, use_directory=True, chunks=one_byte_chunks(data))

    def test_overlapping_entries(self) -> None:
        """A directory whose entries overlap is corrupt (streaming never rereads)."""
        data = build_zip([RawEntry("a", b"a" * 50), RawEntry("b", b"b")])
        first, second = directory(data)
        bent = [first, attrs.evolve(second, local_header_offset=first.local_header_offset + 10)]
        with pytest.raises(ZipCorrupt, match="overlap"):
            ZipStreamReader(bent, LIMITS).feed(data)

    def test_no_local_header_where_listed(self) -> None:
        """A directory offset that does not point at a local header is corrupt."""
        data = build_zip([RawEntry("a", b"a" * 50), RawEntry("b", b"b")])
        first, second = directory(data)
        bent = [first, attrs.evolve(second, local_header_offset=second.local_header_offset + 1)]
        with pytest.raises(ZipCorrupt, match="no local header for 'b'"):
            ZipStreamReader(bent, LIMITS).feed(data)

    @pytest.mark.parametrize("use_directory", [True, False])
    @pytest.mark.parametrize("cut", [10, 40, 120, 200])
    def test_truncated(self, use_directory: bool, cut: int) -> None:
        """A stream that ends early raises ZipCorrupt at close, naming where."""
        noise = random.Random(0).randbytes(100)
        data = make_zip([("a.txt", noise), ("b.txt", noise[::-1])])
        listing = directory(data) if use_directory else None
        reader = ZipStreamReader(listing, LIMITS)
        reader.feed(data[:cut])
        with pytest.raises(ZipCorrupt, match="truncated"):
            reader.close()

    def test_local_mode_garbage_instead_of_header(self) -> None:
        """Without the directory, bytes that are no header are corrupt."""
        with pytest.raises(ZipCorrupt, match="expected a local header at offset 0"):
            ZipStreamReader(None, LIMITS).feed(b"GIF89a....")

    def test_declared_limits_refuse_statically(self) -> None:
        """An entry declaring too much is refused before a byte is handed out."""
        data = build_zip([RawEntry("big", b"z" * 5000), RawEntry("ok", b"ok")])
        outcome = read(data, use_directory=True, limits=ZipLimits(4000, 1000))
        assert outcome.contents == {"ok": b"ok"}
        assert "MAX_ENTRY_SIZE_MB" in outcome.refused[0][1]

    def test_end_found_misuse(self) -> None:
        """end_found outside an open-ended entry is a programming error."""
        with pytest.raises(RuntimeError, match="no entry awaits"):
            ZipStreamReader(None, LIMITS).end_found(b"")

    def test_errors_are_sticky(self) -> None:
        """After a ZipCorrupt every call raises it again."""
        reader = ZipStreamReader(None, LIMITS)
        with pytest.raises(ZipCorrupt):
            reader.feed(b"nope")
        with pytest.raises(ZipCorrupt):
            reader.close()

    def test_big_header_fed_bytewise_is_linear(self) -> None:
        """A 64 KiB name fed one byte at a time does not recopy the buffer per byte."""
        data = build_zip([RawEntry("n" * 65000, b"x" * 1000, method=0)])
        outcome = read(data, use_directory=False, chunks=one_byte_chunks(data))
        assert outcome.contents == {"n" * 65000: b"x" * 1000}


def _fifty_good_then_a_lying_header() -> bytes:
    """50 good entries, then one whose local header names another file than the directory."""
    entries = [(f"e{n:02}.txt", f"entry {n}\n".encode() * 50) for n in range(51)]
    data = bytearray(make_zip(entries))
    last = max(directory(bytes(data)), key=lambda entry: entry.local_header_offset)
    data[last.local_header_offset + 30] = ord("x")  # first byte of the local name
    return bytes(data)


def _ends_before_the_fault(data: bytes, chunk_size: int) -> tuple[list[str], str]:
    """Names of the entries that ended before the reader's fault, and the fault."""
    entries = directory(data)
    reader = ZipStreamReader(entries, LIMITS)
    start = min(entry.local_header_offset for entry in entries)
    ended: list[str] = []
    body = data[start:]
    try:
        for at in range(0, len(body), chunk_size):
            events = reader.feed(body[at : at + chunk_size])
            ended += [e.entry.name for e in events if isinstance(e, EntryEnd)]
        reader.close()
    except ReadFault as fault:
        ended += [e.entry.name for e in fault.events if isinstance(e, EntryEnd)]
        return ended, str(fault)
    raise AssertionError("the lying header was not noticed")


@pytest.mark.parametrize("chunk_size", [1, 7919, 64 * 1024, 256 * 1024])
def test_entries_before_a_fault_come_out_at_any_chunking(chunk_size: int) -> None:
    """All 50 good entries before a bad local header come out, in one chunk or byte by byte."""
    data = _fifty_good_then_a_lying_header()
    ended, fault = _ends_before_the_fault(data, chunk_size)
    assert ended == [f"e{n:02}.txt" for n in range(50)]
    assert "disagrees with the central directory" in fault


def test_a_fault_is_raised_again_on_every_later_call() -> None:
    """After a fault the reader keeps raising it, with no events the second time."""
    data = _fifty_good_then_a_lying_header()
    entries = directory(data)
    reader = ZipStreamReader(entries, LIMITS)
    with pytest.raises(ReadFault):
        reader.feed(data[min(entry.local_header_offset for entry in entries) :])
    with pytest.raises(ZipCorrupt) as again:
        reader.close()
    assert not isinstance(again.value, ReadFault)


class TestRuns:
    """A run of the directory's entries, read while another reader reads the rest."""

    def _read_run(self, data: bytes, start: int, stop: int) -> Outcome:
        listed = directory(data)
        run, following = listed[start:stop], (listed[stop] if stop < len(listed) else None)
        reader = ZipStreamReader(run, LIMITS, following=following)
        outcome = Outcome()
        for chunk in one_byte_chunks(data, run[0].local_header_offset):
            for event in reader.feed(chunk):
                if isinstance(event, EntryEnd):
                    outcome.entries.append((event.entry, b""))
            if reader.done:
                break
        assert reader.done
        assert reader.close() == []
        return outcome

    @pytest.mark.parametrize(("start", "stop"), [(0, 1), (0, 2), (1, 2), (1, 3), (2, 3)])
    def test_a_run_stops_at_the_following_entry(self, start: int, stop: int) -> None:
        """Each run gives its own entries and is done where the next run begins."""
        data = build_zip([RawEntry(name, name.encode() * 40) for name in ("a", "b", "c")])
        outcome = self._read_run(data, start, stop)
        assert [entry.name for entry, _ in outcome.entries] == ["a", "b", "c"][start:stop]

    def test_unlisted_entry_before_the_following_is_corrupt(self) -> None:
        """Bytes between a run and the following entry are checked as a gap is."""
        hidden = RawEntry("hidden.exe", b"MZ" * 100, listed=False)
        data = build_zip([RawEntry("a", b"a"), hidden, RawEntry("b", b"b")])
        first, second = directory(data)
        with pytest.raises(ZipCorrupt, match="not in the central directory"):
            ZipStreamReader([first], LIMITS, following=second).feed(data)

    def test_run_overlapping_the_following_is_corrupt(self) -> None:
        """A run's last entry reaching past the following entry's start is an overlap."""
        data = build_zip([RawEntry("a", b"a" * 50), RawEntry("b", b"b")])
        first, second = directory(data)
        bent = attrs.evolve(second, local_header_offset=first.local_header_offset + 10)
        with pytest.raises(ZipCorrupt, match="entries overlap: 'a' runs to offset"):
            ZipStreamReader([first], LIMITS, following=bent).feed(data)

    def test_run_ending_before_the_following_is_truncated(self) -> None:
        """Input that ends between the run and the following entry names that entry."""
        data = build_zip([RawEntry("a", b"a" * 50), RawEntry("b", b"b")])
        first, second = directory(data)
        gap = attrs.evolve(second, local_header_offset=second.local_header_offset + 100)
        reader = ZipStreamReader([first], LIMITS, following=gap)
        reader.feed(data[: second.local_header_offset])
        with pytest.raises(ZipCorrupt, match="ends before entry 'b'"):
            reader.close()

    def test_without_following_a_run_meets_the_next_entry_as_corrupt(self) -> None:
        """Without ``following``, what comes after the last listed entry must be no entry."""
        data = build_zip([RawEntry("a", b"a"), RawEntry("b", b"b")])
        with pytest.raises(ZipCorrupt, match="follows the last entry"):
            ZipStreamReader(directory(data)[:1], LIMITS).feed(data)
