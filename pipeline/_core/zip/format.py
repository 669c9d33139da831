"""ZIP records, sans-IO: what an entry's records say, and what is unsafe.

The central directory is the archive's authority. A local header can lie or be
left blank (sizes deferred to a data descriptor), and a stream can hold entries
the directory does not list; the directory alone names every entry with its
sizes, method and offset. The file worker therefore reads the tail first
(``Range: bytes=max(0, size - TAIL_BYTES)-``), finds the end records and
parses the directory (:mod:`.directory`) before a byte of entry data is read. Everything below is
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
import zlib

import attrs

from pipeline._errors import ZipCorrupt

__all__ = [
    "FLAG_PATCHED",
    "FLAG_STRONG_ENCRYPTION",
    "LOCAL_HEADER_SIZE",
    "MAX16",
    "MAX32",
    "MAX_VERSION_NEEDED",
    "TAIL_BYTES",
    "CentralEntry",
    "DirectoryLocation",
    "LocalHeader",
    "ZipLimits",
    "decode_name",
    "extra_fields",
    "local_entry",
    "parse_local_header",
    "refusal",
    "resolve_zip64",
    "unicode_path",
    "zip64_field",
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

_LOCAL = struct.Struct("<4sHHHHHIIIHH")  # 30 bytes, then name, extra
LOCAL_HEADER_SIZE = _LOCAL.size
_EXTRA_HEADER = struct.Struct("<HH")

_ZIP64_EXTRA_ID = 0x0001
MAX16 = 0xFFFF
MAX32 = 0xFFFFFFFF

# Hosts whose external attributes carry a Unix mode: Unix, and macOS (Darwin),
# which writes symlinks the same way (Go's archive/zip reads both alike).
_UNIX_HOSTS = (3, 19)
# General-purpose flag bits we cannot honour: patched data, strong encryption.
FLAG_PATCHED = 0x0020
FLAG_STRONG_ENCRYPTION = 0x0040
_UNICODE_PATH_ID = 0x7075
# The newest "version needed to extract" read (APPNOTE 6.3). An archive that
# names a newer one is refused whole, as zipfile refuses it.
MAX_VERSION_NEEDED = 63
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
        return self.create_system in _UNIX_HOSTS and mode & _S_IFMT == _S_IFLNK

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
    characters; the directory parser refuses the archive before that matters.
    """
    if flags & FLAG_UTF8:
        return raw.decode("utf-8", errors="replace")
    return raw.decode("cp437")


def extra_fields(extra: bytes, name: str) -> dict[int, bytes]:
    """The extra field's records by header ID; :class:`ZipCorrupt` when one overruns it.

    As zipfile does, up to three bytes left at the end (too few for a header)
    are tolerated as padding; a record claiming more bytes than remain is not.
    """
    fields: dict[int, bytes] = {}
    pos = 0
    while len(extra) - pos >= _EXTRA_HEADER.size:
        header_id, size = _EXTRA_HEADER.unpack_from(extra, pos)
        start = pos + _EXTRA_HEADER.size
        if start + size > len(extra):
            msg = f"{name!r}: extra field {header_id:#06x} overruns its record"
            raise ZipCorrupt(msg)
        fields.setdefault(header_id, bytes(extra[start : start + size]))
        pos = start + size
    return fields


def zip64_field(extra: bytes) -> bytes | None:
    """The ZIP64 extended information field's data in an extra field, if present."""
    pos = 0
    while pos + _EXTRA_HEADER.size <= len(extra):
        header_id, size = _EXTRA_HEADER.unpack_from(extra, pos)
        start = pos + _EXTRA_HEADER.size
        if header_id == _ZIP64_EXTRA_ID:
            return bytes(extra[start : start + size])
        pos = start + size
    return None


def unicode_path(fields: dict[int, bytes], raw_name: bytes) -> str | None:
    """The Info-ZIP Unicode Path (0x7075) of an entry, when present and still current.

    Windows zippers write a non-ASCII name in the local code page and its
    UTF-8 form in this field, with the CRC-32 of the raw name it replaces: a
    field whose CRC does not match belongs to an older name and is ignored.
    """
    field = fields.get(_UNICODE_PATH_ID)
    if field is None or len(field) < 5 or field[0] != 1:
        return None
    if int.from_bytes(field[1:5], "little") != zlib.crc32(raw_name):
        return None
    try:
        return field[5:].decode("utf-8")
    except UnicodeDecodeError:
        return None


def resolve_zip64(
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
    extra = bytes(buf[name_at + name_len : pos + size])
    extra_fields(extra, decode_name(raw_name, flags))
    zip64 = zip64_field(extra)
    if zip64 is not None:
        usize, csize = resolve_zip64(
            ((usize, MAX32, 8), (csize, MAX32, 8)), zip64, decode_name(raw_name, flags)
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


def local_entry(local: LocalHeader, offset: int) -> CentralEntry:
    """The entry a local header at ``offset`` describes, for reading without the directory.

    Sizes and CRC-32 deferred to a data descriptor are 0 and ``sizes_known``
    false. A stored entry whose two declared sizes differ raises :class:`ZipCorrupt`.
    """
    deferred = local.has_data_descriptor
    entry = CentralEntry(
        name=decode_name(local.raw_name, local.flags),
        raw_name=local.raw_name,
        method=local.method,
        flags=local.flags,
        crc32=0 if deferred else local.crc32,
        compressed_size=0 if deferred else local.compressed_size,
        uncompressed_size=0 if deferred else local.uncompressed_size,
        local_header_offset=offset,
        sizes_known=not deferred,
    )
    if (
        not deferred
        and local.method == METHOD_STORED
        and not local.flags & FLAG_ENCRYPTED
        and local.compressed_size != local.uncompressed_size
    ):
        msg = (
            f"stored entry {entry.name!r} declares {local.compressed_size} bytes "
            f"stored but {local.uncompressed_size} bytes of content"
        )
        raise ZipCorrupt(msg)
    return entry


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
    if entry.is_encrypted or entry.flags & FLAG_STRONG_ENCRYPTION:
        return "encrypted entry"
    if entry.flags & FLAG_PATCHED:
        return "patched data (general-purpose flag bit 5) is not supported"
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
