"""ZIP records, sans-IO: where the central directory is, what it says, what is unsafe.

The central directory is the archive's authority. A local header can lie or be
left blank (sizes deferred to a data descriptor), and a stream can hold entries
the directory does not list; the directory alone names every entry with its
sizes, method and offset. The file worker therefore reads the tail first
(``Range: bytes=max(0, size - TAIL_BYTES)-``), finds the end records here, and
parses the directory before a byte of entry data is read. Everything below is
pure: it takes bytes and returns frozen values or raises :class:`ZipCorrupt`
with a one-line reason that names what disagrees.

Refusal is separate from corruption. :func:`refusal` says why an entry must
not reach S3 (an unsafe name, a symlink, encryption, an unsupported method,
declared sizes over the limits): that is a per-entry outcome, and the rest of
the file goes on. A ZIP whose records contradict each other fails the file.

Only single-disk archives are read, with the directory directly before the end
records (what every writer produces); data prepended to an archive (a
self-extractor stub) shifts every offset and is reported as corrupt rather than
guessed at.
"""

from __future__ import annotations

import struct
import unicodedata

import attrs

from pipeline._errors import ZipCorrupt

__all__ = [
    "TAIL_BYTES",
    "CentralEntry",
    "DirectoryLocation",
    "LocalHeader",
    "ZipLimits",
    "decode_name",
    "locate_directory",
    "parse_directory",
    "parse_local_header",
    "refusal",
]

# The first request fetches this much of the archive's end: the end record
# with the longest comment it may carry (65,535 bytes), the ZIP64 locator and
# record, and room for a directory of a couple of thousand entries, so most
# files need one ranged request before the body.
TAIL_BYTES = 256 * 1024

METHOD_STORED = 0
METHOD_DEFLATED = 8

FLAG_ENCRYPTED = 0x0001
FLAG_DATA_DESCRIPTOR = 0x0008
FLAG_UTF8 = 0x0800

SIG_LOCAL = b"PK\x03\x04"
SIG_CENTRAL = b"PK\x01\x02"
SIG_DESCRIPTOR = b"PK\x07\x08"
SIG_EOCD = b"PK\x05\x06"
SIG_ZIP64_EOCD = b"PK\x06\x06"
SIG_ZIP64_LOCATOR = b"PK\x06\x07"

_EOCD = struct.Struct("<4sHHHHIIH")  # 22 bytes, then the comment
_ZIP64_LOCATOR = struct.Struct("<4sIQI")  # 20 bytes
_ZIP64_EOCD = struct.Struct("<4sQHHIIQQQQ")  # 56 bytes, then extensible data
_CENTRAL = struct.Struct("<4sBBHHHHHIIIHHHHHII")  # 46 bytes, then name, extra, comment
_LOCAL = struct.Struct("<4sHHHHHIIIHH")  # 30 bytes, then name, extra
_EXTRA_HEADER = struct.Struct("<HH")

_ZIP64_EXTRA_ID = 0x0001
_MAX16 = 0xFFFF
_MAX32 = 0xFFFFFFFF

_UNIX = 3
_S_IFMT = 0o170000
_S_IFLNK = 0o120000


@attrs.frozen
class ZipLimits:
    """What an entry may inflate to: ``MAX_ENTRY_SIZE_MB`` in bytes, ``MAX_COMPRESSION_RATIO``."""

    max_entry_size: int
    max_ratio: float

    def __attrs_post_init__(self) -> None:
        if self.max_entry_size < 0:
            msg = f"max_entry_size must not be negative, not {self.max_entry_size}"
            raise ValueError(msg)
        if not self.max_ratio > 0:
            msg = f"max_ratio must be positive, not {self.max_ratio}"
            raise ValueError(msg)


@attrs.frozen
class DirectoryLocation:
    """Where the central directory lies in the archive, and how many entries it lists."""

    offset: int
    size: int
    entries: int
    # The archive's comment, from the end record (informational).
    comment: bytes = b""

    @property
    def end(self) -> int:
        """The offset just past the directory."""
        return self.offset + self.size


@attrs.frozen
class CentralEntry:
    """One entry as the central directory describes it.

    ``sizes_known`` is false only for an entry read from a local header in the
    fallback mode (no directory) whose CRC and sizes follow its data in a data
    descriptor: until then ``crc32`` and both sizes are 0 and mean nothing.
    ``create_system`` and ``external_attr`` are 0 for such entries (local
    headers carry neither), so a symlink cannot be recognised without the
    directory.
    """

    name: str
    raw_name: bytes
    method: int
    flags: int
    crc32: int
    compressed_size: int
    uncompressed_size: int
    local_header_offset: int
    external_attr: int = 0
    create_system: int = 0
    sizes_known: bool = True

    @property
    def is_dir(self) -> bool:
        """A directory entry: its name ends with ``/`` (as zipfile decides)."""
        return self.name.endswith("/")

    @property
    def is_symlink(self) -> bool:
        """A symbolic link: Unix file type ``S_IFLNK`` in the high half of the attributes."""
        mode = self.external_attr >> 16
        return self.create_system == _UNIX and mode & _S_IFMT == _S_IFLNK

    @property
    def is_encrypted(self) -> bool:
        """General-purpose flag bit 0: the data is encrypted."""
        return bool(self.flags & FLAG_ENCRYPTED)

    @property
    def has_data_descriptor(self) -> bool:
        """General-purpose flag bit 3: CRC and sizes also follow the data."""
        return bool(self.flags & FLAG_DATA_DESCRIPTOR)


@attrs.frozen
class LocalHeader:
    """A local file header, as far as it can be trusted.

    ``crc32`` and the sizes are what the header says; with a data descriptor
    they are usually zero. ``zip64`` tells that a ZIP64 extra field was present,
    which by the specification makes the data descriptor's sizes 8 bytes each.
    ``size`` is the header's length including name and extra field.
    """

    flags: int
    method: int
    crc32: int
    compressed_size: int
    uncompressed_size: int
    raw_name: bytes
    zip64: bool
    size: int

    @property
    def has_data_descriptor(self) -> bool:
        """General-purpose flag bit 3: CRC and sizes follow the data."""
        return bool(self.flags & FLAG_DATA_DESCRIPTOR)


def decode_name(raw: bytes, flags: int) -> str:
    """An entry name as zipfile decodes it: UTF-8 under flag bit 11, else CP437.

    A name flagged UTF-8 that is not valid UTF-8 decodes with replacement
    characters; :func:`refusal` then refuses the entry.
    """
    if flags & FLAG_UTF8:
        return raw.decode("utf-8", errors="replace")
    return raw.decode("cp437")


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
    return DirectoryLocation(offset=cd_offset, size=cd_size, entries=entries, comment=comment)


def _find_eocd(tail: bytes) -> int:
    """Index in ``tail`` of the end record whose comment ends exactly at the end."""
    end = len(tail)
    # Without a comment the record is the last 22 bytes: the common case,
    # found without a search.
    search_from = end - _EOCD.size
    lowest = max(0, end - _EOCD.size - _MAX16)
    while search_from >= lowest:
        at = tail.rfind(SIG_EOCD, lowest, search_from + 4)
        if at < 0:
            break
        (comment_len,) = struct.unpack_from("<H", tail, at + 20)
        if at + _EOCD.size + comment_len == end:
            return at
        search_from = at - 1
    raise ZipCorrupt("no end-of-central-directory record: not a ZIP file, or truncated")


def parse_directory(data: bytes, location: DirectoryLocation) -> tuple[CentralEntry, ...]:
    """The entries of the central directory, in directory order.

    ``data`` starts at ``location.offset`` and holds at least ``location.size``
    bytes. Besides the records' own consistency (signatures, lengths, ZIP64
    extra fields, the declared count and size), every entry must lie before
    the directory, a stored entry's two sizes must agree, and no name may be
    listed twice: an archive in which one name could mean two contents is not
    read at all.

    Raises :class:`ZipCorrupt` naming the first record that is wrong.
    """
    if len(data) < location.size:
        msg = f"central directory is truncated: {len(data)} of {location.size} bytes"
        raise ZipCorrupt(msg)
    entries: list[CentralEntry] = []
    seen: set[bytes] = set()
    pos = 0
    for index in range(location.entries):
        entry, pos = _parse_central_record(data, pos, location, index)
        if entry.raw_name in seen:
            msg = f"central directory lists {entry.name!r} twice"
            raise ZipCorrupt(msg)
        seen.add(entry.raw_name)
        entries.append(entry)
    if pos != location.size:
        msg = (
            f"central directory is {location.size} bytes but its {location.entries} "
            f"records take {pos}"
        )
        raise ZipCorrupt(msg)
    return tuple(entries)


def _parse_central_record(
    data: bytes, pos: int, location: DirectoryLocation, index: int
) -> tuple[CentralEntry, int]:
    if pos + _CENTRAL.size > location.size:
        msg = f"central directory ends inside record {index + 1} of {location.entries}"
        raise ZipCorrupt(msg)
    (
        sig,
        _version_made,
        create_system,
        _version_needed,
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
    if end > location.size:
        msg = f"central directory record {index + 1} runs past the directory's end"
        raise ZipCorrupt(msg)
    raw_name = bytes(data[name_at:extra_at])
    name = decode_name(raw_name, flags)
    usize, csize, offset, disk = _resolve_zip64(
        ((usize, _MAX32, 8), (csize, _MAX32, 8), (offset, _MAX32, 8), (disk, _MAX16, 4)),
        _zip64_field(data[extra_at : extra_at + extra_len]),
        name,
    )
    if disk != 0:
        msg = f"{name!r} starts on disk {disk}; only single-file ZIPs are read"
        raise ZipCorrupt(msg)
    # The data cannot reach into the directory: the local header (30 bytes
    # and the same name) and the compressed bytes both lie before it.
    if offset + _LOCAL.size + name_len + csize > location.offset:
        msg = f"{name!r} at offset {offset} ({csize} bytes) overlaps the central directory"
        raise ZipCorrupt(msg)
    if method == METHOD_STORED and not flags & FLAG_ENCRYPTED and csize != usize:
        msg = f"stored entry {name!r} declares {csize} bytes stored but {usize} bytes of content"
        raise ZipCorrupt(msg)
    entry = CentralEntry(
        name=name,
        raw_name=raw_name,
        method=method,
        flags=flags,
        crc32=crc,
        compressed_size=csize,
        uncompressed_size=usize,
        local_header_offset=offset,
        external_attr=external,
        create_system=create_system,
    )
    return entry, end


def _zip64_field(extra: bytes) -> bytes | None:
    """The ZIP64 extended information field's data in an extra field, if present."""
    pos = 0
    while pos + _EXTRA_HEADER.size <= len(extra):
        header_id, size = _EXTRA_HEADER.unpack_from(extra, pos)
        start = pos + _EXTRA_HEADER.size
        if header_id == _ZIP64_EXTRA_ID:
            return bytes(extra[start : start + size])
        pos = start + size
    return None


def _resolve_zip64(
    fields: tuple[tuple[int, int, int], ...], zip64: bytes | None, name: str
) -> list[int]:
    """Record values with those at their sentinel replaced from the ZIP64 field, in order.

    Each field is ``(value, sentinel, width)``; only fields at their sentinel
    take the next ``width`` bytes of the ZIP64 data (APPNOTE 4.5.3).
    """
    values: list[int] = []
    taken = 0
    for value, sentinel, width in fields:
        if value != sentinel:
            values.append(value)
            continue
        if zip64 is None or taken + width > len(zip64):
            msg = f"{name!r}: record defers a value to a ZIP64 extra field that lacks it"
            raise ZipCorrupt(msg)
        values.append(int.from_bytes(zip64[taken : taken + width], "little"))
        taken += width
    return values


def parse_local_header(buf: bytes | bytearray | memoryview, pos: int) -> LocalHeader | None:
    """The local header at ``buf[pos:]``, or ``None`` when more bytes are needed.

    The caller has checked the signature. A ZIP64 extra field replaces the
    sizes that are ``0xFFFFFFFF``; a header that defers to a ZIP64 field it
    does not carry raises :class:`ZipCorrupt`.
    """
    if len(buf) - pos < _LOCAL.size:
        return None
    (_, _, flags, method, _, _, crc, csize, usize, name_len, extra_len) = _LOCAL.unpack_from(
        buf, pos
    )
    size = _LOCAL.size + name_len + extra_len
    if len(buf) - pos < size:
        return None
    name_at = pos + _LOCAL.size
    raw_name = bytes(buf[name_at : name_at + name_len])
    zip64 = _zip64_field(bytes(buf[name_at + name_len : pos + size]))
    if zip64 is not None:
        usize, csize = _resolve_zip64(
            ((usize, _MAX32, 8), (csize, _MAX32, 8)), zip64, decode_name(raw_name, flags)
        )
    return LocalHeader(
        flags=flags,
        method=method,
        crc32=crc,
        compressed_size=csize,
        uncompressed_size=usize,
        raw_name=raw_name,
        zip64=zip64 is not None,
        size=size,
    )


def refusal(entry: CentralEntry, limits: ZipLimits) -> str | None:
    """Why ``entry`` must not be written, in one line, or ``None`` when it may be.

    Checked in order: the name (see :func:`_unsafe_name`), a symlink, encryption,
    a method other than stored (0) or deflated (8), then the declared size and
    ratio against ``limits``. Declared sizes are only a first filter: the
    inflater enforces the same limits on the bytes it actually produces.
    """
    reason = _unsafe_name(entry)
    if reason is not None:
        return reason
    if entry.is_symlink:
        return "symbolic link"
    if entry.is_encrypted:
        return "encrypted entry"
    if entry.method not in (METHOD_STORED, METHOD_DEFLATED):
        return f"unsupported compression method {entry.method} (only stored and deflated are read)"
    if not entry.sizes_known:
        return None
    size, packed = entry.uncompressed_size, entry.compressed_size
    if size > limits.max_entry_size:
        return (
            f"declared size {size} bytes is over the limit of "
            f"{limits.max_entry_size} bytes (MAX_ENTRY_SIZE_MB)"
        )
    if size > 0 and (packed == 0 or size / packed > limits.max_ratio):
        ratio = "infinite" if packed == 0 else f"{size / packed:.0f}:1"
        return (
            f"declared compression ratio {ratio} is over the limit of "
            f"{limits.max_ratio:g}:1 (MAX_COMPRESSION_RATIO)"
        )
    return None


def _unsafe_name(entry: CentralEntry) -> str | None:
    """Why a name could escape its prefix or mislead a reader, or ``None``."""
    name = entry.name
    if entry.flags & FLAG_UTF8:
        try:
            entry.raw_name.decode("utf-8")
        except UnicodeDecodeError:
            return "name is flagged UTF-8 but is not valid UTF-8"
    if not name:
        return "empty name"
    if name.startswith("/"):
        return "absolute path"
    if "\\" in name:
        return "backslash in name"
    if any(unicodedata.category(char) == "Cc" for char in name):
        return "NUL or control character in name"
    if len(name) >= 2 and name[1] == ":" and name[0].isascii() and name[0].isalpha():
        return "drive letter in name"
    if ".." in name.split("/"):
        return "'..' segment in name"
    return None
