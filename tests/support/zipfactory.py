"""Build ZIP archives for tests: with zipfile, and by hand for what zipfile cannot write.

:func:`make_zip` uses the standard library, so what it builds is what real
writers build. :func:`build_zip` packs :class:`RawEntry` values with
``struct`` and can say anything: stored entries with data descriptors,
descriptors without signature or with 64-bit sizes, symlinks, encryption
flags, unsupported methods, CP437 names, local headers that contradict the
directory, entries the directory does not list, and declared sizes that lie.
The helpers below it name the common cases.
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from typing import Literal

import attrs

__all__ = [
    "DATE_TIME",
    "RawEntry",
    "UnseekableWriter",
    "build_zip",
    "cp437_entry",
    "deflate_raw",
    "deflated_with_descriptor",
    "encrypted_entry",
    "iter_chunks",
    "make_zip",
    "stored_with_descriptor",
    "symlink_entry",
    "unsupported_method_entry",
    "zip_bomb",
]

DATE_TIME = (2026, 1, 2, 3, 4, 6)
Descriptor = Literal["none", "sig32", "nosig32", "sig64", "nosig64"]

_MAX32 = 0xFFFFFFFF
_REGULAR = 0o100644 << 16
_SYMLINK = 0o120777 << 16
_UNIX = 3


class UnseekableWriter(io.RawIOBase):
    """A write-only stream without seek/tell: zipfile then writes data descriptors."""

    def __init__(self) -> None:
        super().__init__()
        self.buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.buffer += data
        return len(data)


def make_zip(
    entries: Sequence[tuple[str, bytes]],
    *,
    method: int = zipfile.ZIP_DEFLATED,
    compresslevel: int | None = None,
    data_descriptor: bool = False,
    zip64: bool = False,
    comment: bytes = b"",
) -> bytes:
    """A ZIP written by zipfile; names ending in ``/`` become directory entries.

    ``data_descriptor`` writes to an unseekable stream, so every entry's CRC
    and sizes follow its data (stored entries included); ``zip64`` forces
    ZIP64 extra fields in the local headers.
    """
    sink: io.BytesIO | UnseekableWriter = UnseekableWriter() if data_descriptor else io.BytesIO()
    with zipfile.ZipFile(sink, "w", compression=method, allowZip64=True) as archive:
        archive.comment = comment
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=DATE_TIME)
            if name.endswith("/"):
                info.external_attr = (0o40755 << 16) | 0x10
                archive.writestr(info, b"")
                continue
            info.compress_type = method
            info.external_attr = _REGULAR
            info._compresslevel = compresslevel  # type: ignore[attr-defined]
            with archive.open(info, "w", force_zip64=zip64) as stream:
                stream.write(data)
    if isinstance(sink, UnseekableWriter):
        return bytes(sink.buffer)
    return sink.getvalue()


def deflate_raw(data: bytes, level: int = 6) -> bytes:
    """``data`` as a raw deflate stream (no zlib header), as ZIP stores it."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


@attrs.frozen
class RawEntry:
    """One entry for :func:`build_zip`, with every field a test may want to bend.

    ``compressed`` is what is stored as the entry's data; by default the raw
    deflate of ``content`` for method 8, ``content`` itself otherwise.
    ``crc32`` and ``declared_size`` override what both headers declare.
    ``zip64`` writes sizes as ``0xFFFFFFFF`` with ZIP64 extra fields in both
    headers. ``listed=False`` leaves the entry out of the central directory;
    ``local_name`` and ``local_crc32`` make the local header disagree.
    ``extra`` is appended to both headers' extra fields as it is.
    """

    name: str | bytes
    content: bytes = b""
    method: int = 8
    compressed: bytes | None = None
    descriptor: Descriptor = "none"
    zip64: bool = False
    flags: int = 0
    utf8: bool | None = None
    external_attr: int = _REGULAR
    create_system: int = _UNIX
    crc32: int | None = None
    declared_size: int | None = None
    listed: bool = True
    local_name: bytes | None = None
    local_crc32: int | None = None
    extra: bytes = b""

    @property
    def raw_name(self) -> bytes:
        if isinstance(self.name, bytes):
            return self.name
        return self.name.encode("utf-8" if self.is_utf8 else "cp437")

    @property
    def is_utf8(self) -> bool:
        if self.utf8 is not None:
            return self.utf8
        return isinstance(self.name, str) and not self.name.isascii()

    @property
    def data(self) -> bytes:
        if self.compressed is not None:
            return self.compressed
        return deflate_raw(self.content) if self.method == 8 else self.content

    @property
    def general_flags(self) -> int:
        flags = self.flags
        if self.descriptor != "none":
            flags |= 0x08
        if self.is_utf8:
            flags |= 0x800
        return flags

    @property
    def crc(self) -> int:
        return zlib.crc32(self.content) if self.crc32 is None else self.crc32

    @property
    def size(self) -> int:
        return len(self.content) if self.declared_size is None else self.declared_size


def build_zip(
    entries: Sequence[RawEntry],
    *,
    comment: bytes = b"",
    zip64_end: bool = False,
    prefix: bytes = b"",
) -> bytes:
    """Pack ``entries`` into a ZIP by hand.

    ``zip64_end`` writes a ZIP64 end record and locator, with the classic end
    record's fields at their maxima. ``prefix`` is put before the first entry
    (offsets do not account for it: a self-extractor stub, as a reader sees it).
    """
    out = bytearray()
    central = bytearray()
    count = 0
    for entry in entries:
        offset = len(out)
        data = entry.data
        out += _local_header(entry, len(data))
        out += data
        out += _descriptor(entry, len(data))
        if entry.listed:
            central += _central_record(entry, len(data), offset)
            count += 1
    cd_offset, cd_size = len(out), len(central)
    out += central
    if zip64_end:
        record_offset = len(out)
        out += struct.pack(
            "<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, cd_size, cd_offset
        )
        out += struct.pack("<4sIQI", b"PK\x06\x07", 0, record_offset, 1)
        out += struct.pack(
            "<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, _MAX32, _MAX32, len(comment)
        )
    else:
        out += struct.pack(
            "<4sHHHHIIH", b"PK\x05\x06", 0, 0, count, count, cd_size, cd_offset, len(comment)
        )
    out += comment
    return prefix + bytes(out)


def _local_header(entry: RawEntry, packed: int) -> bytes:
    deferred = entry.descriptor != "none"
    crc = 0 if deferred else entry.crc
    if entry.local_crc32 is not None:
        crc = entry.local_crc32
    csize, usize = (0, 0) if deferred else (packed, entry.size)
    extra = b""
    if entry.zip64:
        extra = struct.pack("<HHQQ", 1, 16, usize, csize)
        csize = usize = _MAX32
    extra += entry.extra
    name = entry.raw_name if entry.local_name is None else entry.local_name
    return (
        struct.pack(
            "<4sHHHHHIIIHH",
            b"PK\x03\x04",
            45 if entry.zip64 else 20,
            entry.general_flags,
            entry.method,
            0,
            0x5C21,
            crc,
            csize,
            usize,
            len(name),
            len(extra),
        )
        + name
        + extra
    )


def _descriptor(entry: RawEntry, packed: int) -> bytes:
    kind = entry.descriptor
    if kind == "none":
        return b""
    signature = b"PK\x07\x08" if kind.startswith("sig") else b""
    sizes = "QQ" if kind.endswith("64") else "II"
    return signature + struct.pack("<I" + sizes, entry.crc, packed, entry.size)


def _central_record(entry: RawEntry, packed: int, offset: int) -> bytes:
    csize, usize = packed, entry.size
    extra = b""
    if entry.zip64:
        extra = struct.pack("<HHQQ", 1, 16, usize, csize)
        csize = usize = _MAX32
    extra += entry.extra
    name = entry.raw_name
    return (
        struct.pack(
            "<4sBBHHHHHIIIHHHHHII",
            b"PK\x01\x02",
            45 if entry.zip64 else 20,
            entry.create_system,
            45 if entry.zip64 else 20,
            entry.general_flags,
            entry.method,
            0,
            0x5C21,
            entry.crc,
            csize,
            usize,
            len(name),
            len(extra),
            0,
            0,
            0,
            entry.external_attr,
            offset,
        )
        + name
        + extra
    )


def stored_with_descriptor(
    name: str, content: bytes, *, signature: bool = True, zip64: bool = False
) -> RawEntry:
    """A stored entry whose CRC and sizes follow it in a data descriptor."""
    kind: Descriptor = _descriptor_kind(signature, zip64)
    return RawEntry(name, content, method=0, descriptor=kind, zip64=zip64)


def deflated_with_descriptor(
    name: str, content: bytes, *, signature: bool = True, zip64: bool = False
) -> RawEntry:
    """A deflated entry whose CRC and sizes follow it in a data descriptor."""
    kind: Descriptor = _descriptor_kind(signature, zip64)
    return RawEntry(name, content, method=8, descriptor=kind, zip64=zip64)


def _descriptor_kind(signature: bool, zip64: bool) -> Descriptor:
    if signature:
        return "sig64" if zip64 else "sig32"
    return "nosig64" if zip64 else "nosig32"


def symlink_entry(name: str, target: str) -> RawEntry:
    """A Unix symbolic link to ``target`` (stored, as Info-ZIP writes them)."""
    return RawEntry(name, target.encode(), method=0, external_attr=_SYMLINK)


def encrypted_entry(name: str, content: bytes) -> RawEntry:
    """An entry flagged encrypted (bit 0): a 12-byte header and scrambled stored bytes."""
    scrambled = os.urandom(12) + bytes(b ^ 0x5A for b in content)
    return RawEntry(name, content, method=0, flags=0x01, compressed=scrambled)


def unsupported_method_entry(name: str, content: bytes, method: int = 12) -> RawEntry:
    """An entry with a compression method we do not read (12 is bzip2)."""
    return RawEntry(name, content, method=method, compressed=b"BZh9" + content)


def cp437_entry(name: str, content: bytes) -> RawEntry:
    """An entry whose name is CP437 bytes without the UTF-8 flag (old DOS writers)."""
    return RawEntry(name.encode("cp437"), content, utf8=False)


def zip_bomb(name: str, size: int, *, declared_size: int | None = None) -> RawEntry:
    """``size`` zero bytes deflated (about 1000:1), built without holding them.

    ``declared_size`` makes both headers lie about the inflated size (the CRC
    stays the true one); by default they tell the truth.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = bytes(1024 * 1024)
    packed = bytearray()
    crc = 0
    left = size
    while left:
        piece = block[: min(left, len(block))]
        packed += compressor.compress(piece)
        crc = zlib.crc32(piece, crc)
        left -= len(piece)
    packed += compressor.flush()
    return RawEntry(
        name,
        b"",
        method=8,
        compressed=bytes(packed),
        crc32=crc,
        declared_size=size if declared_size is None else declared_size,
    )


def iter_chunks(data: bytes, cuts: Sequence[int]) -> Iterator[bytes]:
    """``data`` split at the positions ``cuts`` (any order, duplicates allowed)."""
    start = 0
    for cut in sorted({c for c in cuts if 0 < c < len(data)}):
        yield data[start:cut]
        start = cut
    yield data[start:]
