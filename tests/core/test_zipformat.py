"""End records, the central directory, and what is refused: pipeline._core.zip.format."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import attrs
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pipeline._core.zip import format as _zipformat
from pipeline._core.zip.directory import locate_directory, parse_directory
from pipeline._core.zip.format import (
    TAIL_BYTES,
    CentralEntry,
    DirectoryLocation,
    ZipLimits,
    refusal,
)
from pipeline._errors import ZipCorrupt
from tests.support.zipfactory import (
    RawEntry,
    build_zip,
    cp437_entry,
    encrypted_entry,
    make_zip,
    symlink_entry,
    unsupported_method_entry,
)

LIMITS = ZipLimits(max_entry_size=4096 * 1024 * 1024, max_ratio=200)


def directory_of(data: bytes, tail_bytes: int = TAIL_BYTES) -> tuple[CentralEntry, ...]:
    """Locate and parse as the file worker does: a tail, then more when needed."""
    start = max(0, len(data) - tail_bytes)
    location = locate_directory(data[start:], start, len(data))
    return parse_directory(data[location.offset :], location)


def entry(name: str, **changes: object) -> CentralEntry:
    fields: dict[str, object] = {
        "name": name,
        "raw_name": name.encode(),
        "method": 8,
        "flags": 0x800,
        "crc32": 0,
        "compressed_size": 100,
        "uncompressed_size": 300,
        "local_header_offset": 0,
        "external_attr": 0o100644 << 16,
        "create_system": 3,
    }
    fields.update(changes)
    return CentralEntry(**fields)  # type: ignore[arg-type]


class TestSurface:
    def test_all_is_complete(self) -> None:
        """Every public name the module defines is in ``__all__``, and every listed one exists."""
        defined = {
            name
            for name, value in vars(_zipformat).items()
            if not name.startswith("_")
            and getattr(value, "__module__", None) == _zipformat.__name__
        }
        assert defined <= set(_zipformat.__all__)
        for name in _zipformat.__all__:
            assert hasattr(_zipformat, name)


class TestLimits:
    def test_rejects_nonsense(self) -> None:
        """A negative size or a non-positive ratio is a programming error."""
        with pytest.raises(ValueError, match="max_entry_size"):
            ZipLimits(max_entry_size=-1, max_ratio=1)
        with pytest.raises(ValueError, match="max_ratio"):
            ZipLimits(max_entry_size=1, max_ratio=0)


class TestLocateDirectory:
    def test_plain_archive(self) -> None:
        """The end record gives the directory's offset, size and count."""
        data = make_zip([("a", b"x" * 100), ("b/", b"")])
        location = locate_directory(data, 0, len(data))
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            assert location.entries == len(archive.infolist())
            assert location.offset == archive.start_dir
        assert location.end == len(data) - 22

    def test_longest_comment(self) -> None:
        """A 65,535-byte comment is searched through and returned."""
        comment = b"PK\x05\x06" + b"c" * 65531
        data = make_zip([("a", b"hello")], comment=comment)
        location = locate_directory(data[-TAIL_BYTES:], 0, len(data))
        assert location.comment == comment
        assert location.entries == 1

    def test_tail_from_the_middle(self) -> None:
        """With a short tail the offset may precede it; the caller fetches from there."""
        data = make_zip([(f"file-{i:04d}.txt", b"x" * i) for i in range(300)])
        tail_start = len(data) - 1000
        location = locate_directory(data[tail_start:], tail_start, len(data))
        assert location.offset < tail_start
        entries = parse_directory(data[location.offset :], location)
        assert [e.name for e in entries] == [f"file-{i:04d}.txt" for i in range(300)]

    def test_zip64_end_records(self) -> None:
        """A ZIP64 locator makes the ZIP64 end record's counts and offsets win."""
        data = build_zip([RawEntry("a.txt", b"abc" * 50)], zip64_end=True, comment=b"hi")
        location = locate_directory(data, 0, len(data))
        assert location.entries == 1
        assert location.comment == b"hi"
        (found,) = parse_directory(data[location.offset :], location)
        assert found.name == "a.txt"
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            assert archive.read("a.txt") == b"abc" * 50

    def test_not_a_zip(self) -> None:
        """Bytes without an end record are corrupt, with a reason a person can act on."""
        with pytest.raises(ZipCorrupt, match="end-of-central-directory"):
            locate_directory(b"hello world" * 10, 0, 110)

    def test_end_record_must_reach_the_end(self) -> None:
        """Bytes after the end record (beyond its comment) are not accepted."""
        data = make_zip([("a", b"x")]) + b"trailing"
        with pytest.raises(ZipCorrupt):
            locate_directory(data, 0, len(data))

    def test_tail_must_end_the_archive(self) -> None:
        """A tail that does not reach the archive's size is the caller's mistake."""
        with pytest.raises(ValueError, match="does not end"):
            locate_directory(b"x" * 10, 0, 11)

    def test_prepended_data(self) -> None:
        """Data before the archive shifts every offset: reported, not guessed at."""
        data = build_zip([RawEntry("a", b"abc")], prefix=b"#!/bin/sh\nexit 0\n")
        with pytest.raises(ZipCorrupt, match="prepended"):
            locate_directory(data, 0, len(data))

    def test_count_that_cannot_fit(self) -> None:
        """An entry count larger than the directory can hold is a lie."""
        data = bytearray(make_zip([("a", b"x")]))
        struct.pack_into("<HH", data, len(data) - 14, 5000, 5000)
        with pytest.raises(ZipCorrupt, match="more than"):
            locate_directory(bytes(data), 0, len(data))

    def test_split_archive(self) -> None:
        """Multi-disk archives are refused with a clear reason."""
        data = bytearray(make_zip([("a", b"x")]))
        struct.pack_into("<H", data, len(data) - 18, 1)
        with pytest.raises(ZipCorrupt, match="several disks"):
            locate_directory(bytes(data), 0, len(data))


class TestParseDirectory:
    def test_matches_zipfile(self) -> None:
        """Names, sizes, CRC, offsets, method and flags equal zipfile's reading."""
        data = make_zip(
            [("a.txt", b"hello" * 100), ("dir/", b""), ("héllo/wörld.txt", b"x"), ("e", b"")],
            data_descriptor=True,
        )
        ours = directory_of(data)
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            theirs = archive.infolist()
        assert [e.name for e in ours] == [i.filename for i in theirs]
        for mine, info in zip(ours, theirs, strict=True):
            assert mine.crc32 == info.CRC
            assert mine.compressed_size == info.compress_size
            assert mine.uncompressed_size == info.file_size
            assert mine.local_header_offset == info.header_offset
            assert mine.method == info.compress_type
            assert mine.flags == info.flag_bits
            assert mine.external_attr == info.external_attr
            assert mine.create_system == info.create_system
            assert mine.is_dir == info.is_dir()
            assert mine.has_data_descriptor

    def test_cp437_name(self) -> None:
        """A name without the UTF-8 flag is CP437, as zipfile decodes it."""
        data = build_zip([cp437_entry("Ç├─┐.txt", b"box")])
        (found,) = directory_of(data)
        assert found.name == "Ç├─┐.txt"
        assert found.raw_name == "Ç├─┐.txt".encode("cp437")
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            assert archive.namelist() == [found.name]

    def test_zip64_extra_field(self) -> None:
        """Sizes at 0xFFFFFFFF are read from the ZIP64 extra field."""
        data = build_zip([RawEntry("big", b"q" * 1000, zip64=True)])
        (found,) = directory_of(data)
        assert found.uncompressed_size == 1000
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            assert found.compressed_size == archive.getinfo("big").compress_size

    def test_missing_zip64_value(self) -> None:
        """A record that defers a size to a ZIP64 field it lacks is corrupt."""
        data = build_zip([RawEntry("a", b"x", declared_size=0xFFFFFFFF)])
        with pytest.raises(ZipCorrupt, match="ZIP64"):
            directory_of(data)

    def test_properties(self) -> None:
        """Directory, symlink, encryption and descriptor properties read their bits."""
        data = build_zip(
            [
                symlink_entry("link", "/etc/passwd"),
                encrypted_entry("secret", b"s" * 20),
                RawEntry("d/", b"", method=0, descriptor="sig32"),
            ]
        )
        link, secret, folder = directory_of(data)
        assert link.is_symlink
        assert not link.is_dir
        assert secret.is_encrypted
        assert not secret.is_symlink
        assert folder.is_dir
        assert folder.has_data_descriptor

    def test_duplicate_names(self) -> None:
        """One name listed twice could mean two contents: the archive is not read."""
        data = build_zip([RawEntry("same", b"1"), RawEntry("same", b"2")])
        with pytest.raises(ZipCorrupt, match="twice"):
            directory_of(data)

    def test_stored_sizes_disagree(self) -> None:
        """A stored entry's two sizes must be equal."""
        data = build_zip([RawEntry("s", b"abc", method=0, declared_size=4)])
        with pytest.raises(ZipCorrupt, match="stored entry"):
            directory_of(data)

    def test_truncated_directory(self) -> None:
        """Fewer bytes than the directory's size are reported as truncated."""
        data = make_zip([("a", b"x")])
        location = locate_directory(data, 0, len(data))
        with pytest.raises(ZipCorrupt, match="truncated"):
            parse_directory(data[location.offset : location.end - 1], location)

    def test_entry_overlapping_the_directory(self) -> None:
        """An entry whose data would run into the directory is corrupt."""
        data = bytearray(make_zip([("a", b"x" * 10)], method=zipfile.ZIP_STORED))
        location = locate_directory(bytes(data), 0, len(data))
        struct.pack_into("<II", data, location.offset + 20, 5000, 5000)
        with pytest.raises(ZipCorrupt, match="overlaps"):
            parse_directory(bytes(data[location.offset :]), location)

    def test_size_disagrees_with_count(self) -> None:
        """Records that do not fill the declared directory size exactly are corrupt."""
        data = make_zip([("a", b"x")])
        location = locate_directory(data, 0, len(data))
        bigger = DirectoryLocation(location.offset, location.size + 10, 1)
        with pytest.raises(ZipCorrupt, match="records take"):
            parse_directory(data[location.offset :] + bytes(10), bigger)


NAMES = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
    min_size=1,
    max_size=20,
).filter(lambda n: not n.endswith("/"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    names=st.lists(NAMES, min_size=0, max_size=6, unique=True),
    method=st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]),
    descriptors=st.booleans(),
    zip64=st.booleans(),
    comment=st.binary(max_size=300),
    tail=st.integers(min_value=22, max_value=3000),
)
def test_directory_equals_zipfile(
    names: list[str],
    method: int,
    descriptors: bool,
    zip64: bool,
    comment: bytes,
    tail: int,
) -> None:
    """For any zipfile-written archive and tail size, the directory equals zipfile's."""
    # zipfile itself mistakes an end-record signature inside the comment for
    # the record; that case is checked on its own below.
    assume(b"PK\x05\x06" not in comment)
    data = make_zip(
        [(n, n.encode() * 3) for n in names],
        method=method,
        data_descriptor=descriptors,
        zip64=zip64,
        comment=comment,
    )
    tail = max(tail, 22 + len(comment))
    ours = directory_of(data, tail)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        theirs = archive.infolist()
    assert [(e.name, e.crc32, e.uncompressed_size, e.local_header_offset) for e in ours] == [
        (i.filename, i.CRC, i.file_size, i.header_offset) for i in theirs
    ]


def test_end_signature_inside_the_comment() -> None:
    """A comment holding the end-record signature does not fool the directory search."""
    entries = [("a.txt", b"alpha"), ("b.txt", b"beta")]
    data = make_zip(entries, comment=b"PK\x05\x06")
    ours = directory_of(data, len(data))
    assert [e.name for e in ours] == ["a.txt", "b.txt"]


@settings(max_examples=150, deadline=None)
@given(
    flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(1, 255)), max_size=4),
    cut=st.integers(min_value=0, max_value=40),
)
def test_mutated_end_never_crashes(flips: list[tuple[int, int]], cut: int) -> None:
    """Flipped or cut bytes in the records give a clean ZipCorrupt or a consistent result."""
    data = bytearray(
        make_zip([("a.txt", b"a" * 50), ("b/", b""), ("c", b"c" * 9)], zip64=True, comment=b"x")
    )
    for where, xor in flips:
        data[where % len(data)] ^= xor
    blob = bytes(data[: len(data) - cut])
    error: ZipCorrupt | None = None
    try:
        location = locate_directory(blob, 0, len(blob))
        entries = parse_directory(blob[location.offset :], location)
    except ZipCorrupt as err:
        error = err
    if error is not None:
        assert str(error)
        assert "\n" not in str(error)
        return
    assert len(entries) == location.entries
    for found in entries:
        assert found.local_header_offset + found.compressed_size <= location.offset


class TestRefusal:
    @pytest.mark.parametrize(
        ("name", "why"),
        [
            ("/etc/passwd", "absolute"),
            ("../up.txt", "'..'"),
            ("a/../../b", "'..'"),
            ("a/..", "'..'"),
            ("a\\b.txt", "backslash"),
            ("nul\x00byte", "control"),
            ("bell\x07", "control"),
            ("del\x7f", "control"),
            ("c1\x85", "control"),
            ("C:/Windows/x", "drive"),
            ("c:relative", "drive"),
            ("", "empty"),
        ],
    )
    def test_unsafe_names(self, name: str, why: str) -> None:
        """Names that could escape the prefix or mislead are refused, saying why."""
        reason = refusal(entry(name), LIMITS)
        assert reason is not None
        assert why in reason

    @pytest.mark.parametrize(
        "name", ["a/b.txt", "dir/", "a..b", "..hidden", "ünïcødé/文件.txt", "ab:c", "./x"]
    )
    def test_safe_names(self, name: str) -> None:
        """Ordinary relative names, dots inside segments and Unicode are accepted."""
        assert refusal(entry(name), LIMITS) is None

    def test_invalid_utf8_name(self) -> None:
        """A name flagged UTF-8 that is not UTF-8 makes the directory corrupt, as in zipfile."""
        data = build_zip([RawEntry(b"ok.txt", b"x"), RawEntry(b"bad\xff\xfe", b"x", utf8=True)])
        with pytest.raises(ZipCorrupt, match="flagged UTF-8 but is not valid UTF-8"):
            directory_of(data)

    def test_symlink_encrypted_method(self) -> None:
        """Symlinks, encrypted entries and methods other than 0 and 8 are refused."""
        data = build_zip(
            [
                symlink_entry("link", "../../etc"),
                encrypted_entry("secret", b"s"),
                unsupported_method_entry("bz", b"b"),
            ]
        )
        reasons = [refusal(found, LIMITS) for found in directory_of(data)]
        assert reasons == [
            "symbolic link",
            "encrypted entry",
            "unsupported compression method 12 (only stored and deflated are read)",
        ]

    def test_declared_size_over_limit(self) -> None:
        """A declared size over MAX_ENTRY_SIZE_MB is refused before inflating."""
        limits = ZipLimits(max_entry_size=1000, max_ratio=200)
        reason = refusal(entry("big", uncompressed_size=1001, compressed_size=900), limits)
        assert reason is not None
        assert "MAX_ENTRY_SIZE_MB" in reason
        assert refusal(entry("ok", uncompressed_size=1000, compressed_size=900), limits) is None

    def test_declared_ratio_over_limit(self) -> None:
        """A declared ratio over MAX_COMPRESSION_RATIO is refused; exactly at it is not."""
        reason = refusal(entry("bomb", uncompressed_size=20001, compressed_size=100), LIMITS)
        assert reason is not None
        assert "MAX_COMPRESSION_RATIO" in reason
        assert refusal(entry("ok", uncompressed_size=20000, compressed_size=100), LIMITS) is None
        nothing = refusal(entry("zero", uncompressed_size=5, compressed_size=0), LIMITS)
        assert nothing is not None
        assert "infinite" in nothing

    def test_empty_entries_pass(self) -> None:
        """An empty entry has no ratio to speak of."""
        assert refusal(entry("e", uncompressed_size=0, compressed_size=0), LIMITS) is None

    def test_unknown_sizes_are_not_judged(self) -> None:
        """Sizes deferred to a descriptor are left to the inflater's checks."""
        pending = entry("later", uncompressed_size=0, compressed_size=0, sizes_known=False)
        assert refusal(pending, ZipLimits(max_entry_size=0, max_ratio=1)) is None


class TestStrictAndLenientLikeOtherReaders:
    """Issue 13's cases: agree with zipfile and Go where they read, refuse where they refuse."""

    def test_cp437_and_utf8_spellings_of_one_name_are_duplicates(self) -> None:
        """A CP437 'caf\\x82.txt' and a UTF-8 'café.txt' name one S3 key: the file fails."""
        data = build_zip([cp437_entry("café.txt", b"one"), RawEntry("café.txt", b"two")])
        with pytest.raises(ZipCorrupt, match=r"lists 'café\.txt' twice"):
            directory_of(data)

    def test_symlink_made_by_macos_is_a_symlink(self) -> None:
        """A symlink from macOS (made by 19) is refused like one from Unix (3)."""
        link = RawEntry("link", b"/etc/passwd", method=0, external_attr=0o120777 << 16)
        (parsed,) = directory_of(build_zip([attrs.evolve(link, create_system=19)]))
        assert parsed.is_symlink
        assert refusal(parsed, LIMITS) == "symbolic link"

    def test_extra_field_overrunning_its_record_fails_the_file(self) -> None:
        """An extra field claiming more bytes than the record holds is corrupt, as zipfile says."""
        bad = RawEntry("a.txt", b"x", extra=struct.pack("<HH", 0xCAFE, 40) + b"short")
        with pytest.raises(ZipCorrupt, match="extra field 0xcafe overruns its record"):
            directory_of(build_zip([bad]))

    def test_padding_after_the_last_extra_record_is_tolerated(self) -> None:
        """Up to three bytes after the last extra record are padding (zipfile reads them)."""
        padded = RawEntry(
            "a.txt", b"x", extra=struct.pack("<HH", 0xCAFE, 1) + b"\x00" + b"\x00\x00"
        )
        (parsed,) = directory_of(build_zip([padded]))
        assert parsed.name == "a.txt"

    @pytest.mark.parametrize(
        ("flag", "reason"),
        [(0x0020, "patched data"), (0x0040 | 0x0001, "encrypted entry")],
    )
    def test_patched_and_strongly_encrypted_entries_are_refused(
        self, flag: int, reason: str
    ) -> None:
        """General-purpose bits 5 (patched data) and 6 (strong encryption) refuse the entry."""
        (parsed,) = directory_of(build_zip([RawEntry("a.txt", b"x", flags=flag)]))
        found = refusal(parsed, LIMITS)
        assert found is not None
        assert reason in found

    def test_unicode_path_extra_field_names_the_entry(self) -> None:
        """An Info-ZIP Unicode Path field (0x7075) with the raw name's CRC gives the name."""
        raw = "résumé.txt".encode("cp437")
        utf8 = "résumé.txt".encode()
        field = bytes([1]) + struct.pack("<I", zlib.crc32(raw)) + utf8
        extra = struct.pack("<HH", 0x7075, len(field)) + field
        (parsed,) = directory_of(build_zip([RawEntry(raw, b"cv", utf8=False, extra=extra)]))
        assert parsed.name == "résumé.txt"
        assert refusal(parsed, LIMITS) is None

    def test_stale_unicode_path_is_ignored(self) -> None:
        """A Unicode Path whose CRC is of another raw name belongs to an old name: ignored."""
        field = bytes([1]) + struct.pack("<I", zlib.crc32(b"old.txt")) + b"neu.txt"
        extra = struct.pack("<HH", 0x7075, len(field)) + field
        (parsed,) = directory_of(build_zip([RawEntry(b"cur.txt", b"x", extra=extra)]))
        assert parsed.name == "cur.txt"
