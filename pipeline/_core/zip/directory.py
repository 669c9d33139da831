"""Find the central directory from the archive's tail, and parse it into entries.

Only single-disk archives are read, with the directory directly before the end
records (what every writer produces). Everything here is pure: bytes in,
frozen values out, or :class:`ZipCorrupt` with a one-line reason.
"""

from __future__ import annotations

import struct

from pipeline._core.zip.compact import CompactDirectory, Record
from pipeline._core.zip.format import (
    FLAG_ENCRYPTED,
    FLAG_UTF8,
    LOCAL_HEADER_SIZE,
    MAX16,
    MAX32,
    MAX_VERSION_NEEDED,
    METHOD_STORED,
    SIG_CENTRAL,
    SIG_EOCD,
    SIG_ZIP64_EOCD,
    SIG_ZIP64_LOCATOR,
    DirectoryLocation,
    extra_fields,
    resolve_zip64,
    unicode_path,
    zip64_field,
)
from pipeline._errors import ZipCorrupt

__all__ = ["MAX_DIRECTORY_BYTES", "DirectoryParser", "locate_directory", "parse_directory"]

_EOCD = struct.Struct("<4sHHHHIIH")  # 22 bytes, then the comment
_ZIP64_LOCATOR = struct.Struct("<4sIQI")  # 20 bytes
_ZIP64_EOCD = struct.Struct("<4sQHHIIQQQQ")  # 56 bytes, then extensible data
_CENTRAL = struct.Struct("<4sBBHHHHHIIIHHHHHII")  # 46 bytes, then name, extra, comment
# A record's name, extra field and comment lengths, 28 bytes into it.
_LENGTHS = struct.Struct("<HHH")
_LENGTHS_AT = 28
# A record with the longest name, extra field and comment.
_LARGEST_RECORD = _CENTRAL.size + 3 * MAX16
# The largest central directory read. Parsed, an entry takes at most 43 bytes
# plus its raw name (compact.py), less than its record took here: so a file's
# directory never takes more than this much memory (and 4 bytes an entry for
# the duplicate check while it is parsed), whatever it lists.
MAX_DIRECTORY_BYTES = 64 * 1024 * 1024


def locate_directory(tail: bytes, tail_start: int, archive_size: int) -> DirectoryLocation:
    """Find the central directory from the last bytes of an archive.

    ``tail`` holds the archive's bytes from ``tail_start`` to its end
    (``archive_size``). The end record is searched backwards for a signature
    whose comment length reaches exactly the end of the archive; when a ZIP64
    locator precedes it, the ZIP64 record's counts and offsets win. The
    directory must end where the end records begin: the caller reads it from
    ``tail`` when ``offset >= tail_start`` and fetches from ``offset`` otherwise.

    Raises :class:`ZipCorrupt` when there is no end record or the records
    contradict each other, and :class:`ValueError` when ``tail`` does not
    reach ``archive_size``.
    """
    if tail_start < 0 or tail_start + len(tail) != archive_size:
        msg = (
            f"tail of {len(tail)} bytes from {tail_start} does not end at "
            f"the archive's size {archive_size}"
        )
        raise ValueError(msg)
    eocd = _find_eocd(tail)
    (_, disk, cd_disk, disk_entries, entries, cd_size, cd_offset, comment_len) = _EOCD.unpack_from(
        tail, eocd
    )
    comment = bytes(tail[eocd + _EOCD.size : eocd + _EOCD.size + comment_len])
    records_start = tail_start + eocd
    locator = eocd - _ZIP64_LOCATOR.size
    if locator >= 0 and tail[locator : locator + 4] == SIG_ZIP64_LOCATOR:
        _, z64_disk, z64_offset, disks = _ZIP64_LOCATOR.unpack_from(tail, locator)
        if z64_disk != 0 or disks > 1:
            raise ZipCorrupt("archive spans several disks; only single-file ZIPs are read")
        at = z64_offset - tail_start
        if at < 0 or at + _ZIP64_EOCD.size > locator:
            msg = f"ZIP64 end record offset {z64_offset} lies outside the archive's end records"
            raise ZipCorrupt(msg)
        if tail[at : at + 4] != SIG_ZIP64_EOCD:
            msg = f"no ZIP64 end record at offset {z64_offset}, where the locator points"
            raise ZipCorrupt(msg)
        (_, _, _, _, disk, cd_disk, disk_entries, entries, cd_size, cd_offset) = (
            _ZIP64_EOCD.unpack_from(tail, at)
        )
        records_start = z64_offset
    if disk != 0 or cd_disk != 0 or disk_entries != entries:
        raise ZipCorrupt("archive spans several disks; only single-file ZIPs are read")
    if cd_offset + cd_size != records_start:
        msg = (
            f"central directory ({cd_size} bytes at offset {cd_offset}) does not end "
            f"where the end record begins ({records_start}): data prepended or corrupt"
        )
        raise ZipCorrupt(msg)
    # Each directory record takes at least 46 bytes: a count that cannot fit
    # is a lie, and would otherwise drive a long loop over nothing.
    if entries * _CENTRAL.size > cd_size:
        msg = f"end record lists {entries} entries, more than a {cd_size}-byte directory holds"
        raise ZipCorrupt(msg)
    _check_claims(cd_offset, cd_size, entries)
    return DirectoryLocation(offset=cd_offset, size=cd_size, entries=entries, comment=comment)


def _check_claims(offset: int, size: int, entries: int) -> None:
    """Refuse a directory that could not be what it claims, or that is too large to read.

    Checked before a byte of it is fetched: an end record pointing the
    directory far before its real start would otherwise have the whole span
    downloaded and parsed before the lie shows.
    """
    if offset < entries * LOCAL_HEADER_SIZE:
        msg = (
            f"central directory claims to start at offset {offset}, too early for the "
            f"local headers of its {entries} entries (30 bytes each) to lie before it"
        )
        raise ZipCorrupt(msg)
    if size > entries * _LARGEST_RECORD:
        msg = (
            f"central directory claims {size} bytes, more than its {entries} records "
            f"can take ({_LARGEST_RECORD} bytes each at most)"
        )
        raise ZipCorrupt(msg)
    if size > MAX_DIRECTORY_BYTES:
        msg = (
            f"central directory is {size} bytes, over the {MAX_DIRECTORY_BYTES // 2**20} MiB "
            "this reader holds (about a million entries with short names)"
        )
        raise ZipCorrupt(msg)


def _find_eocd(tail: bytes) -> int:
    """Index in ``tail`` of the end record whose comment ends exactly at the end."""
    end = len(tail)
    # Without a comment the record is the last 22 bytes: the common case,
    # found without a search.
    search_from = end - _EOCD.size
    lowest = max(0, end - _EOCD.size - MAX16)
    while search_from >= lowest:
        at = tail.rfind(SIG_EOCD, lowest, search_from + 4)
        if at < 0:
            break
        (comment_len,) = struct.unpack_from("<H", tail, at + 20)
        if at + _EOCD.size + comment_len == end:
            return at
        search_from = at - 1
    raise ZipCorrupt("no end-of-central-directory record: not a ZIP file, or truncated")


class DirectoryParser:
    """Parses a central directory fed in pieces of any size, as they arrive.

    Records are parsed as soon as they are complete; only an incomplete
    record (at most 46 + 3 x 65,535 bytes) is kept over between pieces, so a
    directory streamed from the network is never held whole. Bytes past the
    directory's end are ignored. The result is a :class:`CompactDirectory`.
    """

    def __init__(self, location: DirectoryLocation) -> None:
        self._location = location
        self._directory = CompactDirectory(location.entries, entries_end=location.offset)
        self._buf = bytearray()
        # Directory bytes before _buf[0], and records parsed so far.
        self._consumed = 0
        self._count = 0

    @property
    def complete(self) -> bool:
        """Every byte of the directory has been fed."""
        return self._consumed + len(self._buf) >= self._location.size

    def feed(self, data: bytes) -> None:
        """Take the next piece; :class:`ZipCorrupt` as soon as a record is wrong."""
        room = self._location.size - self._consumed - len(self._buf)
        if room <= 0:
            return
        self._buf += data[:room] if len(data) > room else data
        location, buf = self._location, self._buf
        pos = 0
        while self._count < location.entries and len(buf) - pos >= _CENTRAL.size:
            length = _CENTRAL.size + sum(_LENGTHS.unpack_from(buf, pos + _LENGTHS_AT))
            if len(buf) - pos < length:
                if self._consumed + pos + length > location.size:
                    index = self._count + 1
                    msg = f"central directory record {index} runs past the directory's end"
                    raise ZipCorrupt(msg)
                break
            base = self._consumed
            record, end = _parse_central_record(buf, pos, location, self._count, base=base)
            self._directory.add(*record)
            self._count += 1
            pos = end
        if self._count == location.entries and self._consumed + pos < location.size:
            msg = (
                f"central directory is {location.size} bytes but its {location.entries} "
                f"records take {self._consumed + pos}"
            )
            raise ZipCorrupt(msg)
        del buf[:pos]
        self._consumed += pos

    def close(self) -> CompactDirectory:
        """The entries, once every byte was fed; :class:`ZipCorrupt` when short or duplicated."""
        location = self._location
        fed = self._consumed + len(self._buf)
        if fed < location.size:
            msg = f"central directory is truncated: {fed} of {location.size} bytes"
            raise ZipCorrupt(msg)
        if self._count < location.entries:
            msg = f"central directory ends inside record {self._count + 1} of {location.entries}"
            raise ZipCorrupt(msg)
        self._directory.seal()
        return self._directory


def parse_directory(data: bytes, location: DirectoryLocation) -> CompactDirectory:
    """The entries of the central directory, in directory order.

    ``data`` starts at ``location.offset`` and holds at least ``location.size``
    bytes. Besides the records' own consistency (signatures, lengths, ZIP64
    extra fields, the declared count and size), every entry must lie before
    the directory, a stored entry's two sizes must agree, and no name may be
    listed twice: an archive in which one name could mean two contents is not
    read at all. The same as feeding ``data`` to a :class:`DirectoryParser`
    in any pieces.

    Raises :class:`ZipCorrupt` naming the first record that is wrong.
    """
    if len(data) < location.size:
        msg = f"central directory is truncated: {len(data)} of {location.size} bytes"
        raise ZipCorrupt(msg)
    parser = DirectoryParser(location)
    parser.feed(data)
    return parser.close()


def _parse_central_record(
    data: bytes | bytearray, pos: int, location: DirectoryLocation, index: int, *, base: int
) -> tuple[Record, int]:
    """The record at ``data[pos:]`` and where it ends; ``data[0]`` is directory byte ``base``."""
    if base + pos + _CENTRAL.size > location.size:
        msg = f"central directory ends inside record {index + 1} of {location.entries}"
        raise ZipCorrupt(msg)
    (
        sig,
        _version_made,
        create_system,
        version_needed,
        flags,
        method,
        _time,
        _date,
        crc,
        csize,
        usize,
        name_len,
        extra_len,
        comment_len,
        disk,
        _internal,
        external,
        offset,
    ) = _CENTRAL.unpack_from(data, pos)
    if sig != SIG_CENTRAL:
        msg = f"central directory record {index + 1} has a bad signature"
        raise ZipCorrupt(msg)
    name_at = pos + _CENTRAL.size
    extra_at = name_at + name_len
    end = extra_at + extra_len + comment_len
    if base + end > location.size:
        msg = f"central directory record {index + 1} runs past the directory's end"
        raise ZipCorrupt(msg)
    raw_name = bytes(data[name_at:extra_at])
    decoded = _decoded(raw_name, flags, index)
    name = decoded
    zip64 = None
    if extra_len:
        extra = bytes(data[extra_at : extra_at + extra_len])
        name = unicode_path(extra_fields(extra, decoded), raw_name) or decoded
        zip64 = zip64_field(extra)
    if usize == MAX32 or csize == MAX32 or offset == MAX32 or disk == MAX16:
        usize, csize, offset, disk = resolve_zip64(
            ((usize, MAX32, 8), (csize, MAX32, 8), (offset, MAX32, 8), (disk, MAX16, 4)),
            zip64,
            name,
        )
    if disk != 0:
        msg = f"{name!r} starts on disk {disk}; only single-file ZIPs are read"
        raise ZipCorrupt(msg)
    # The low byte is the version (times ten); the high one is reserved.
    if version_needed & 0xFF > MAX_VERSION_NEEDED:
        needed = (version_needed & 0xFF) / 10
        msg = f"{name!r} needs ZIP version {needed:.1f} to extract; 6.3 is the newest read"
        raise ZipCorrupt(msg)
    # The data cannot reach into the directory: the local header (30 bytes
    # and the same name) and the compressed bytes both lie before it.
    if offset + LOCAL_HEADER_SIZE + name_len + csize > location.offset:
        msg = f"{name!r} at offset {offset} ({csize} bytes) overlaps the central directory"
        raise ZipCorrupt(msg)
    if method == METHOD_STORED and not flags & FLAG_ENCRYPTED and csize != usize:
        msg = f"stored entry {name!r} declares {csize} bytes stored but {usize} bytes of content"
        raise ZipCorrupt(msg)
    record = (
        name,
        name != decoded,
        raw_name,
        method,
        flags,
        crc,
        csize,
        usize,
        offset,
        external,
        create_system,
    )
    return record, end


def _decoded(raw_name: bytes, flags: int, index: int) -> str:
    if not flags & FLAG_UTF8:
        return raw_name.decode("cp437")
    try:
        return raw_name.decode("utf-8")
    except UnicodeDecodeError:
        # zipfile refuses the whole archive here, so no entry of it may be read.
        msg = f"central directory record {index + 1}: name is flagged UTF-8 but is not valid UTF-8"
        raise ZipCorrupt(msg) from None
