"""The central directory parsed in pieces into columns: pipeline._core.zip.directory, .compact."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline._core.zip import compact as _compact
from pipeline._core.zip.compact import Ascending, CompactDirectory, in_stream_order
from pipeline._core.zip.directory import (
    MAX_DIRECTORY_BYTES,
    DirectoryParser,
    locate_directory,
    parse_directory,
)
from pipeline._core.zip.format import CentralEntry
from pipeline._errors import ZipCorrupt
from tests.support.zipfactory import RawEntry, build_zip, cp437_entry, iter_chunks, make_zip

MIB = 1024 * 1024


def unicode_path_entry(name: str, content: bytes) -> RawEntry:
    """A CP437-named entry whose Info-ZIP Unicode Path field gives its real (UTF-8) name."""
    raw = name.encode("cp437", "replace")
    field = b"\x01" + struct.pack("<I", zlib.crc32(raw)) + name.encode()
    return RawEntry(raw, content, utf8=False, extra=struct.pack("<HH", 0x7075, len(field)) + field)


def mixed_archive() -> bytes:
    """Stored and deflated entries, CP437 and UTF-8 names, a Unicode Path, a directory, ZIP64."""
    return build_zip(
        [
            RawEntry("plain.txt", b"plain " * 40),
            RawEntry("stored.bin", b"\x00\x01" * 30, method=0),
            cp437_entry("caf\u00e9-dos.txt", b"dos"),
            RawEntry("r\u00e9sum\u00e9.txt", b"utf-8 name"),
            unicode_path_entry("\u0436\u0443\u0440\u043d\u0430\u043b.txt", b"unicode path"),
            RawEntry("dir/", b"", method=0),
            RawEntry("big.bin", b"z" * 500, zip64=True),
        ],
        zip64_end=True,
        comment=b"an archive",
    )


def whole(data: bytes) -> tuple[list[CentralEntry], bytes]:
    location = locate_directory(data, 0, len(data))
    return list(parse_directory(data[location.offset :], location)), data[location.offset :]


def in_pieces(data: bytes, cuts: list[int]) -> list[CentralEntry]:
    location = locate_directory(data, 0, len(data))
    parser = DirectoryParser(location)
    for piece in iter_chunks(data[location.offset :], cuts):
        parser.feed(piece)
    return list(parser.close())


class TestParsedInPieces:
    def test_every_split_gives_the_same_entries(self) -> None:
        """Fed in two pieces split at any byte, the directory gives the entries parsed at once."""
        data = mixed_archive()
        expected, rest = whole(data)
        assert [e.name for e in expected][4] == "\u0436\u0443\u0440\u043d\u0430\u043b.txt"
        for cut in range(len(rest) + 1):
            assert in_pieces(data, [cut]) == expected, cut

    def test_one_byte_pieces(self) -> None:
        """Fed a byte at a time, the directory gives the same entries."""
        data = mixed_archive()
        expected, rest = whole(data)
        assert in_pieces(data, list(range(len(rest)))) == expected

    def test_entries_equal_zipfile(self) -> None:
        """Rebuilt from the columns, every field equals what zipfile reads."""
        data = make_zip([(f"d/{i}.txt", b"x" * i) for i in range(40)] + [("d/", b"")])
        entries, _ = whole(data)
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for mine, info in zip(entries, archive.infolist(), strict=True):
                assert mine.name == info.filename
                assert mine.crc32 == info.CRC
                assert (mine.compressed_size, mine.uncompressed_size) == (
                    info.compress_size,
                    info.file_size,
                )
                assert mine.local_header_offset == info.header_offset
                assert (mine.external_attr, mine.create_system) == (
                    info.external_attr,
                    info.create_system,
                )
                assert (mine.method, mine.flags) == (info.compress_type, info.flag_bits)

    def test_bytes_after_the_directory_are_ignored(self) -> None:
        """A stream that runs on past the directory (the end records) is cut at its end."""
        data = mixed_archive()
        expected, rest = whole(data)
        location = locate_directory(data, 0, len(data))
        parser = DirectoryParser(location)
        parser.feed(rest + b"more bytes past the end")
        assert parser.complete
        assert list(parser.close()) == expected

    def test_truncated_stream(self) -> None:
        """A stream that ends before the directory does is refused as truncated."""
        data = mixed_archive()
        location = locate_directory(data, 0, len(data))
        parser = DirectoryParser(location)
        parser.feed(data[location.offset : location.end - 5])
        assert not parser.complete
        with pytest.raises(ZipCorrupt, match="truncated"):
            parser.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    names=st.lists(
        st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12),
        max_size=8,
        unique=True,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
    flips=st.lists(st.tuples(st.integers(0, 2000), st.integers(1, 255)), max_size=2),
)
def test_pieces_equal_whole_for_any_split(
    names: list[str], cuts: list[int], flips: list[tuple[int, int]]
) -> None:
    """Any archive, intact or with flipped directory bytes, split anywhere: the same verdict."""
    data = bytearray(
        make_zip([(n or "x", n.encode()) for n in dict.fromkeys(n or "x" for n in names)])
    )
    location = locate_directory(bytes(data), 0, len(data))
    for where, xor in flips:
        data[location.offset + where % max(1, location.size)] ^= xor
    outcomes: list[object] = []
    for pieces in ([], cuts):
        try:
            outcomes.append(in_pieces(bytes(data), pieces))
        except ZipCorrupt as err:
            outcomes.append(str(err))
    assert outcomes[0] == outcomes[1]


class TestClaims:
    def end_record(self, *, entries: int, size: int, offset: int) -> bytes:
        return struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, entries, entries, size, offset, 0)

    def test_directory_at_byte_zero_of_a_big_file(self) -> None:
        """An end record putting the directory at byte 0 of 96 MiB is refused from the tail."""
        total = 96 * MIB
        tail = self.end_record(entries=1, size=total - 22, offset=0)
        with pytest.raises(ZipCorrupt, match="central directory claims"):
            locate_directory(tail, total - 22, total)
        # Even were its count high enough to start that early, it could not be that long.
        tail = self.end_record(entries=200, size=total - 22 - 60_000, offset=60_000)
        with pytest.raises(ZipCorrupt, match="more than its 200 records can take"):
            locate_directory(tail, total - 22, total)

    def test_directory_too_early_for_its_entries(self) -> None:
        """A directory starting before its entries' local headers could fit is refused."""
        total = 96 * MIB
        tail = self.end_record(entries=60_000, size=total - 22 - 1000, offset=1000)
        with pytest.raises(ZipCorrupt, match="too early"):
            locate_directory(tail, total - 22, total)

    def test_directory_over_the_cap(self) -> None:
        """A directory larger than MAX_DIRECTORY_BYTES is refused before it is fetched."""
        size = MAX_DIRECTORY_BYTES + 1
        offset = 400 * 30
        tail = self.end_record(entries=400, size=size, offset=offset)
        with pytest.raises(ZipCorrupt, match="over the 64 MiB"):
            locate_directory(tail, offset + size, offset + size + 22)


class TestDuplicates:
    def test_equivalent_names_far_apart(self) -> None:
        """A CP437 and a UTF-8 name for the same text, thousands of entries apart, are refused."""
        filler = [RawEntry(f"f/{i:05d}", b"", method=0) for i in range(3000)]
        data = build_zip(
            [cp437_entry("caf\u00e9.txt", b"one"), *filler, RawEntry("caf\u00e9.txt", b"two")]
        )
        with pytest.raises(ZipCorrupt, match=r"lists 'café\.txt' twice"):
            whole(data)

    def test_names_sharing_a_slot_are_compared_not_refused(self) -> None:
        """Thousands of distinct names in 1,024 hash slots: candidates compared, none refused."""
        directory = CompactDirectory(expected=0)
        for index in range(5000):
            name = f"n{index}"
            directory.add(name, False, name.encode(), 0, 0, 0, 0, 0, index * 40, 0, 0)
        directory.seal()
        assert len(directory) == 5000

    def test_every_hash_colliding(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Were every name to hash alike, distinct names still pass and equivalent ones fail."""
        monkeypatch.setattr(_compact, "_name_hash", lambda name: 0)
        distinct = build_zip([RawEntry(f"{i}.txt", b"") for i in range(50)])
        assert len(whole(distinct)[0]) == 50
        equivalent = build_zip(
            [RawEntry("a", b""), cp437_entry("\u00e9", b""), RawEntry("\u00e9", b"")]
        )
        with pytest.raises(ZipCorrupt, match="twice"):
            whole(equivalent)


class TestCompact:
    def add(self, directory: CompactDirectory, entry: CentralEntry) -> None:
        directory.add(
            entry.name,
            False,
            entry.raw_name,
            entry.method,
            entry.flags,
            entry.crc32,
            entry.compressed_size,
            entry.uncompressed_size,
            entry.local_header_offset,
            entry.external_attr,
            entry.create_system,
        )

    def test_columns_widen_for_large_values(self) -> None:
        """Values past 1, 2 and 4 bytes widen their column and come back exact."""
        entries = [
            CentralEntry(f"e{i}", f"e{i}".encode(), 8, 0, value, value, value, value)
            for i, value in enumerate([0, 200, 70_000, 5_000_000_000, 2**64 - 1, 3])
        ]
        directory = CompactDirectory(expected=len(entries))
        for entry in entries:
            self.add(directory, entry)
        directory.seal()
        assert list(directory) == entries

    def test_many_kinds_become_plain_columns(self) -> None:
        """Past 256 combinations of method, flags and attributes, each entry keeps its own."""
        entries = [
            CentralEntry(f"k{i}", f"k{i}".encode(), i % 3, i % 7, 0, 0, 0, i * 50, i << 16, i % 20)
            for i in range(600)
        ]
        directory = CompactDirectory(expected=len(entries))
        for entry in entries:
            self.add(directory, entry)
        directory.seal()
        assert list(directory) == entries

    def test_unordered_directory_read_in_stream_order(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A directory not in offset order is given to the reader sorted, through short runs."""
        monkeypatch.setattr(_compact, "_SORT_RUN", 7)
        offsets = [(i * 7919) % 100 * 40 for i in range(100)]
        directory = CompactDirectory(expected=100)
        for index, offset in enumerate(offsets):
            self.add(
                directory, CentralEntry(f"u{index}", f"u{index}".encode(), 0, 0, 0, 0, 0, offset)
            )
        directory.seal()
        ordered = in_stream_order(directory)
        assert ordered is not None
        assert [e.local_header_offset for e in ordered] == sorted(offsets)
        assert directory.first_offset == 0
        assert [e.name for e in directory][:2] == ["u0", "u1"]

    @pytest.mark.parametrize("unordered", [False, True])
    def test_stream_run_is_a_view_in_stream_order(self, unordered: bool) -> None:
        """A run of the entries in stream order reads like that slice, and the reader keeps it."""
        offsets = [i * 40 for i in range(20)]
        if unordered:
            offsets.reverse()
        directory = CompactDirectory(expected=20, entries_end=800)
        for index, offset in enumerate(offsets):
            self.add(
                directory, CentralEntry(f"r{index}", f"r{index}".encode(), 0, 0, 0, 0, 0, offset)
            )
        directory.seal()
        run = directory.stream_run(5, 12)
        assert list(run) == list(directory.by_offset)[5:12]
        assert run[-1] == directory.by_offset[11]
        assert in_stream_order(run) is run
        with pytest.raises(IndexError):
            run[7]
        assert directory.entries_end == 800

    def test_parsed_directory_knows_where_the_entries_end(self) -> None:
        """The parser gives the directory's offset as the end of the entries' data."""
        data = build_zip([RawEntry("a", b"a" * 100), RawEntry("b", b"b")])
        location = locate_directory(data, 0, len(data))
        assert parse_directory(data[location.offset :], location).entries_end == location.offset

    def test_small_files_cost_fourteen_bytes_each(self) -> None:
        """10,000 empty files with 7-byte names take 14 bytes per entry, names included."""
        data = build_zip([RawEntry(f"{i:07d}", b"", method=0) for i in range(10_000)])
        location = locate_directory(data, 0, len(data))
        directory = parse_directory(data[location.offset :], location)
        assert directory.nbytes() <= 14 * len(directory)
        assert attrs.evolve(directory[9999], name="x").raw_name == b"0009999"

    def test_ascending_values_come_back(self) -> None:
        """Steps small and large, over many blocks: every value and the plain column are exact."""
        values = []
        value = 0
        for index in range(1000):
            value += (index * 7919) % 300 if index % 97 else 2**40
            values.append(value)
        column = Ascending()
        for value in values:
            column.append(value)
        assert [column[i] for i in range(len(values))] == values
        assert list(column.plain()) == values
        assert column.span(0) == (0, values[0])
        assert column.span(500) == (values[499], values[500])
