"""Data descriptors, and whether a local header agrees with its directory record.

A data descriptor (after an entry's data, when the local header deferred its
CRC-32 and sizes) comes in four forms: with or without its signature, with
32- or 64-bit sizes. These helpers read one at a given offset; the stream
reader decides which forms to try.
"""

from __future__ import annotations

import struct
import zlib

import attrs

from pipeline._core.zip.format import (
    FLAG_ENCRYPTED,
    FLAG_UTF8,
    SIG_LOCAL,
    CentralEntry,
    LocalHeader,
    decode_name,
)
from pipeline._errors import ZipCorrupt

try:
    from isal.isal_zlib import crc32
except ImportError:  # pragma: no cover - isal is a dependency; zlib is the fallback
    crc32 = zlib.crc32

__all__ = [
    "FORMS_32",
    "FORMS_64",
    "SIG_LENGTH",
    "check_agreement",
    "completed_by_descriptor",
    "crc32",
    "descriptor_length",
    "descriptor_values",
]

SIG_LENGTH = len(SIG_LOCAL)
# (signature?, 64-bit sizes?) in the order tried when the local header has no
# ZIP64 field; reversed sizes first when it has one (APPNOTE 4.3.9.2).
FORMS_32 = ((True, False), (True, True), (False, False), (False, True))
FORMS_64 = ((True, True), (True, False), (False, True), (False, False))


def descriptor_length(signature: bool, zip64: bool) -> int:
    return (SIG_LENGTH if signature else 0) + 4 + (16 if zip64 else 8)


def descriptor_values(buf: bytes | bytearray, at: int, zip64: bool) -> tuple[int, int, int]:
    """(crc32, compressed size, uncompressed size) of a descriptor body at ``at``."""
    fmt = "<IQQ" if zip64 else "<III"
    crc, csize, usize = struct.unpack_from(fmt, buf, at)
    return int(crc), int(csize), int(usize)


def check_agreement(local: LocalHeader, central: CentralEntry) -> None:
    """Raise :class:`ZipCorrupt` when a local header contradicts its directory record."""
    problem = None
    if local.raw_name != central.raw_name:
        problem = f"the local header names it {decode_name(local.raw_name, local.flags)!r}"
    elif local.method != central.method:
        problem = f"method {local.method} locally, {central.method} in the directory"
    elif (local.flags ^ central.flags) & (FLAG_ENCRYPTED | FLAG_UTF8):
        problem = "encryption or name-encoding flags differ"
    else:
        pairs = (
            ("CRC-32", local.crc32, central.crc32),
            ("compressed size", local.compressed_size, central.compressed_size),
            ("size", local.uncompressed_size, central.uncompressed_size),
        )
        for what, here, there in pairs:
            # With a data descriptor the local values are usually zero.
            if here != there and not (local.has_data_descriptor and here == 0):
                problem = f"{what} {here} locally, {there} in the directory"
                break
    if problem is not None:
        msg = f"local header of {central.name!r} disagrees with the central directory: {problem}"
        raise ZipCorrupt(msg)


def completed_by_descriptor(entry: CentralEntry, crc: int, csize: int, usize: int) -> CentralEntry:
    """``entry`` (from a local header that deferred them) with its descriptor's CRC and sizes."""
    return attrs.evolve(
        entry, crc32=crc, compressed_size=csize, uncompressed_size=usize, sizes_known=True
    )
