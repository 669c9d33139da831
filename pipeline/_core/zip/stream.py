"""A sans-IO ZIP reader: network chunks in, entries and their compressed bytes out.

It is fed chunks of any size (one byte included) and hands out, in stream
order, each entry's start, its compressed bytes and its end; it never inflates
and never does I/O. Entry data is handed on as soon as it arrives (a chunk
lying wholly inside an entry's data is handed on as the same object, without
a copy); only an incomplete record is kept over, in a ``bytearray`` that
later chunks extend and that is trimmed once per :meth:`ZipStreamReader.feed`,
so the work stays linear in the input even for one-byte chunks.

Two modes, chosen by whether a central directory is given:

**Directory-first** (the normal case). The directory says where each entry
starts and how many compressed bytes it has, so the reader counts bytes and
never scans for a data descriptor: stored entries with descriptors read like
any other. The stream must begin at the smallest ``local_header_offset`` of the
directory (``Range: bytes=<that>-``). Each local header is checked against its
directory record (name, method, flags, and CRC and sizes unless deferred to a
descriptor) and each descriptor against the directory's values; any
disagreement, two entries overlapping, or a local header where the directory
lists none (between entries or after the last) is :class:`ZipCorrupt`. Bytes
between entries that are not a local header are skipped. After the last
listed entry the reader is :attr:`~ZipStreamReader.done` and ignores the rest
(the directory itself).

**Local headers only** (the server ignored ``Range``; the stream starts at
offset 0). Entries are read from their local headers; the directory, when
reached, ends the archive. An entry whose header carries its sizes reads like
the directory mode. A deflated entry with a data descriptor has no length up
front: only the inflater can tell where its deflate stream ends, so the reader
hands out every byte it has as that entry's data and waits
(:attr:`~ZipStreamReader.awaiting_end`) until the caller reports the end with
:meth:`~ZipStreamReader.end_found`, giving back the bytes past it. A stored
entry with a data descriptor is read by looking for a descriptor signature
whose CRC-32 and sizes match the bytes before it (a running CRC on the event
loop, cheap next to inflating); a descriptor without signature there is not
found and ends as a truncated archive. In this mode symlinks cannot be
recognised (local headers carry no file attributes), and an entry refused by
its local header whose end is unknown (deflated with a descriptor, or
encrypted) fails the file, since nothing after it can be found.

Refused entries (:func:`~pipeline._core.zip.format.refusal`) produce one
:class:`EntryRefused` and no data: their bytes are skipped. Directory entries
are read like any other entry (usually with no data); deciding to ignore them
is the caller's business.
"""

from __future__ import annotations

import enum
import struct
import zlib
from collections.abc import Sequence

import attrs

from pipeline._core.zip.format import (
    FLAG_ENCRYPTED,
    FLAG_UTF8,
    METHOD_STORED,
    SIG_CENTRAL,
    SIG_DESCRIPTOR,
    SIG_EOCD,
    SIG_LOCAL,
    CentralEntry,
    LocalHeader,
    ZipLimits,
    decode_name,
    parse_local_header,
    refusal,
)
from pipeline._errors import ZipCorrupt

try:
    from isal.isal_zlib import crc32 as _crc32
except ImportError:  # pragma: no cover - isal is a dependency; zlib is the fallback
    _crc32 = zlib.crc32

__all__ = [
    "EntryCompressed",
    "EntryEnd",
    "EntryRefused",
    "EntryStart",
    "ZipEvent",
    "ZipStreamReader",
]


@attrs.frozen
class EntryStart:
    """An entry begins; its compressed bytes follow as :class:`EntryCompressed`."""

    entry: CentralEntry


@attrs.frozen
class EntryCompressed:
    """Compressed bytes of the entry last started, any length, in order."""

    data: bytes


@attrs.frozen
class EntryEnd:
    """The entry's compressed bytes are complete.

    ``entry`` is the one to verify against: the directory's record, or in the
    local-headers mode the local header completed by its data descriptor.
    """

    entry: CentralEntry


@attrs.frozen
class EntryRefused:
    """An entry that must not be written; its bytes are skipped, never handed out."""

    entry: CentralEntry
    reason: str


ZipEvent = EntryStart | EntryCompressed | EntryEnd | EntryRefused


class _State(enum.Enum):
    HEADER = "at a local header"
    DATA = "in counted entry data"
    DESCRIPTOR = "at a data descriptor"
    SCAN = "in stored data, looking for its descriptor"
    OPEN = "in deflated data, waiting for the inflater to find its end"
    TRAILER = "after the last entry"
    DONE = "done"


_SIG = len(SIG_LOCAL)
# (signature?, 64-bit sizes?) in the order tried when the local header has no
# ZIP64 field; reversed sizes first when it has one (APPNOTE 4.3.9.2).
_FORMS_32 = ((True, False), (True, True), (False, False), (False, True))
_FORMS_64 = ((True, True), (True, False), (False, True), (False, False))


def _descriptor_length(signature: bool, zip64: bool) -> int:
    return (_SIG if signature else 0) + 4 + (16 if zip64 else 8)


def _descriptor_values(buf: bytes | bytearray, at: int, zip64: bool) -> tuple[int, int, int]:
    """(crc32, compressed size, uncompressed size) of a descriptor body at ``at``."""
    fmt = "<IQQ" if zip64 else "<III"
    crc, csize, usize = struct.unpack_from(fmt, buf, at)
    return int(crc), int(csize), int(usize)


class ZipStreamReader:
    """Turns a ZIP byte stream into :data:`ZipEvent` values; see the module doc.

    ``directory`` is the parsed central directory (directory-first mode) or
    ``None`` (local headers only). Call :meth:`feed` with each chunk and
    :meth:`close` when the input ends; in the local-headers mode, when
    :attr:`awaiting_end` is true after a call, report where the deflate
    stream ended with :meth:`end_found`. Once a call raised
    :class:`ZipCorrupt`, every later call raises it again.
    """

    def __init__(self, directory: Sequence[CentralEntry] | None, limits: ZipLimits) -> None:
        self._limits = limits
        self._directory = (
            None
            if directory is None
            else sorted(directory, key=lambda entry: entry.local_header_offset)
        )
        self._next = 0
        # Unread input: the caller's chunk itself when nothing was left over
        # (so a chunk inside entry data is handed on without a copy), else a
        # bytearray of what was left over with the new chunk appended.
        self._buf: bytes | bytearray = b""
        self._off = 0
        # Archive offset of _buf[0].
        self._base = 0 if not self._directory else self._directory[0].local_header_offset
        self._state = _State.HEADER
        self._entry: CentralEntry | None = None
        self._local: LocalHeader | None = None
        self._refused = False
        self._remaining = 0
        self._gap_checked = False
        # Data bytes of the current entry handed out (or skipped) so far, and
        # their CRC-32 while scanning for a stored entry's descriptor.
        self._taken = 0
        self._crc = 0
        self._events: list[ZipEvent] = []
        self._error: ZipCorrupt | None = None

    @property
    def done(self) -> bool:
        """Every entry has been read; further input is ignored."""
        return self._state is _State.DONE

    @property
    def awaiting_end(self) -> bool:
        """The current entry's end must be reported with :meth:`end_found`."""
        return self._state is _State.OPEN

    def feed(self, data: bytes) -> list[ZipEvent]:
        """Take the next chunk of the stream and return the events it completes."""
        self._check_usable()
        if self._state is _State.DONE:
            return []
        if self._buf:
            self._buf += data
        else:
            # Kept as is only when immutable: a caller's bytearray may change.
            self._buf = data if type(data) is bytes else bytes(data)
        return self._run(final=False)

    def end_found(self, unused: bytes) -> list[ZipEvent]:
        """Report that the current deflated entry ended; ``unused``: bytes handed out past it.

        Only valid while :attr:`awaiting_end`. The bytes are taken back and
        reading goes on with the entry's data descriptor.
        """
        self._check_usable()
        if self._state is not _State.OPEN:
            msg = "end_found() called while no entry awaits its end"
            raise RuntimeError(msg)
        if len(unused) > self._taken:
            msg = f"{len(unused)} bytes given back, but only {self._taken} were handed out"
            raise ValueError(msg)
        self._taken -= len(unused)
        self._compact()
        self._buf = bytearray(unused) + self._buf
        self._base -= len(unused)
        self._state = _State.DESCRIPTOR
        return self._run(final=False)

    def close(self) -> list[ZipEvent]:
        """The input has ended: return the last events, or raise :class:`ZipCorrupt` if truncated.

        In the local-headers mode, call it only after every byte handed out
        for an entry awaiting its end went to the inflater: an entry still
        awaiting its end here is truncated.
        """
        self._check_usable()
        events = self._run(final=True)
        if self._state is not _State.DONE:
            self._fail(ZipCorrupt(self._truncation()))
        return events

    # -- machinery ------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._error is not None:
            raise self._error

    def _fail(self, error: ZipCorrupt) -> None:
        self._error = error
        raise error

    def _run(self, *, final: bool) -> list[ZipEvent]:
        try:
            while self._step(final):
                pass
        except ZipCorrupt as err:
            self._error = err
            raise
        self._compact()
        events, self._events = self._events, []
        return events

    def _compact(self) -> None:
        """Drop what was read; keep the rest as a bytearray that later chunks extend."""
        if self._off == len(self._buf):
            self._buf = b""
        elif self._off or isinstance(self._buf, bytes):
            self._buf = bytearray(memoryview(self._buf)[self._off :])
        self._base += self._off
        self._off = 0

    @property
    def _available(self) -> int:
        return len(self._buf) - self._off

    @property
    def _position(self) -> int:
        return self._base + self._off

    def _take(self, count: int) -> bytes:
        start, buf = self._off, self._buf
        self._off += count
        if isinstance(buf, bytes):
            # A whole chunk comes back as the very same object.
            return buf[start : start + count]
        with memoryview(buf) as view:
            return bytes(view[start : start + count])

    def _step(self, final: bool) -> bool:
        """Advance by one state transition or chunk of data; false when more input is needed."""
        state = self._state
        if state is _State.HEADER:
            if self._directory is None:
                return self._local_header()
            return self._directory_header()
        if state is _State.DATA:
            return self._data()
        if state is _State.DESCRIPTOR:
            if self._directory is None:
                return self._local_descriptor(final)
            return self._directory_descriptor(final)
        if state is _State.SCAN:
            return self._scan()
        if state is _State.OPEN:
            return self._open()
        if state is _State.TRAILER:
            return self._trailer(final)
        # DONE: what follows (the central directory) is not needed.
        self._off = len(self._buf)
        return False

    def _truncation(self) -> str:
        name = self._entry.name if self._entry is not None else None
        if self._state is _State.HEADER:
            if self._directory is None:
                return "archive is truncated: it ends before its central directory"
            missing = self._directory[self._next].name
            return f"archive is truncated: it ends before entry {missing!r}"
        return f"archive is truncated: it ends inside entry {name!r}"

    # -- directory-first mode -------------------------------------------------

    def _directory_header(self) -> bool:
        assert self._directory is not None
        if self._next == len(self._directory):
            self._state = _State.TRAILER
            return True
        central = self._directory[self._next]
        target = central.local_header_offset
        if self._position > target:
            previous = self._entry.name if self._entry is not None else "the stream's start"
            msg = (
                f"entries overlap: {previous!r} runs to offset {self._position}, "
                f"past the start of {central.name!r} at {target}"
            )
            raise ZipCorrupt(msg)
        if self._position < target:
            return self._skip_gap(target)
        if self._available < _SIG:
            return False
        if self._buf[self._off : self._off + _SIG] != SIG_LOCAL:
            msg = f"no local header for {central.name!r} at offset {target}"
            raise ZipCorrupt(msg)
        local = parse_local_header(self._buf, self._off)
        if local is None:
            return False
        _check_agreement(local, central)
        self._off += local.size
        self._begin(central, local)
        self._remaining = central.compressed_size
        self._state = _State.DATA
        return True

    def _skip_gap(self, target: int) -> bool:
        """Skip bytes before the next listed entry, unless they hold an unlisted one."""
        gap = target - self._position
        if not self._gap_checked:
            needed = min(gap, _SIG)
            if self._available < needed:
                return False
            if needed == _SIG and self._buf[self._off : self._off + _SIG] == SIG_LOCAL:
                msg = f"local entry at offset {self._position} is not in the central directory"
                raise ZipCorrupt(msg)
            self._gap_checked = True
        count = min(gap, self._available)
        if count == 0:
            return False
        self._off += count
        if count == gap:
            self._gap_checked = False
        return True

    def _directory_descriptor(self, final: bool) -> bool:
        entry, local = self._entry, self._local
        assert entry is not None
        assert local is not None
        expected = (entry.crc32, entry.compressed_size, entry.uncompressed_size)
        if final and self._available < _descriptor_length(False, False):
            raise ZipCorrupt(self._truncation())
        for signature, zip64 in _FORMS_64 if local.zip64 else _FORMS_32:
            length = _descriptor_length(signature, zip64)
            if self._available < length:
                if final:
                    continue
                return False
            at = self._off
            if signature:
                if self._buf[at : at + _SIG] != SIG_DESCRIPTOR:
                    continue
                at += _SIG
            if _descriptor_values(self._buf, at, zip64) == expected:
                self._off += length
                self._finish(entry)
                return True
        msg = f"data descriptor of {entry.name!r} disagrees with the central directory"
        raise ZipCorrupt(msg)

    def _trailer(self, final: bool) -> bool:
        if self._available < _SIG and not final:
            return False
        if self._buf[self._off : self._off + _SIG] == SIG_LOCAL:
            msg = (
                f"local entry at offset {self._position} follows the last entry "
                "the central directory lists"
            )
            raise ZipCorrupt(msg)
        self._state = _State.DONE
        return True

    # -- local-headers mode ---------------------------------------------------

    def _local_header(self) -> bool:
        if self._available < _SIG:
            return False
        signature = bytes(self._buf[self._off : self._off + _SIG])
        if signature in (SIG_CENTRAL, SIG_EOCD):
            self._state = _State.DONE
            return True
        if signature != SIG_LOCAL:
            msg = f"expected a local header at offset {self._position}, found {signature.hex()}"
            raise ZipCorrupt(msg)
        local = parse_local_header(self._buf, self._off)
        if local is None:
            return False
        deferred = local.has_data_descriptor
        entry = CentralEntry(
            name=decode_name(local.raw_name, local.flags),
            raw_name=local.raw_name,
            method=local.method,
            flags=local.flags,
            crc32=0 if deferred else local.crc32,
            compressed_size=0 if deferred else local.compressed_size,
            uncompressed_size=0 if deferred else local.uncompressed_size,
            local_header_offset=self._position,
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
        self._off += local.size
        self._begin(entry, local)
        if not deferred:
            self._remaining = local.compressed_size
            self._state = _State.DATA
        elif local.method == METHOD_STORED and not entry.is_encrypted:
            self._state = _State.SCAN
        elif self._refused:
            reason = refusal(entry, self._limits)
            msg = (
                f"{entry.name!r} is refused ({reason}) and, without the central "
                "directory, where it ends cannot be found"
            )
            raise ZipCorrupt(msg)
        else:
            self._state = _State.OPEN
        return True

    def _open(self) -> bool:
        count = self._available
        if count == 0:
            return False
        self._events.append(EntryCompressed(self._take(count)))
        self._taken += count
        return False

    def _scan(self) -> bool:
        """Hand out stored data up to a descriptor whose CRC-32 and sizes match it."""
        local = self._local
        assert local is not None
        length = _descriptor_length(True, local.zip64)
        while True:
            found = self._buf.find(SIG_DESCRIPTOR, self._off)
            if found < 0:
                # The last three bytes may begin a signature.
                self._hand_out(max(0, self._available - (_SIG - 1)))
                return False
            self._hand_out(found - self._off)
            if self._available < length:
                return False
            crc, csize, usize = _descriptor_values(self._buf, self._off + _SIG, local.zip64)
            if crc == self._crc and csize == usize == self._taken:
                entry = self._entry
                assert entry is not None
                self._off += length
                self._finish_with_descriptor(entry, crc, csize, usize)
                return True
            # A signature inside the data: it is data.
            self._hand_out(1)

    def _hand_out(self, count: int) -> None:
        if count <= 0:
            return
        with memoryview(self._buf) as view:
            self._crc = _crc32(view[self._off : self._off + count], self._crc)
        if self._refused:
            self._off += count
        else:
            self._events.append(EntryCompressed(self._take(count)))
        self._taken += count

    def _local_descriptor(self, final: bool) -> bool:
        """The descriptor after a deflated entry whose end the inflater found."""
        entry, local = self._entry, self._local
        assert entry is not None
        assert local is not None
        if self._available < _SIG:
            return False
        signature = self._buf[self._off : self._off + _SIG] == SIG_DESCRIPTOR
        length = _descriptor_length(signature, local.zip64)
        if self._available < length:
            return False
        crc, csize, usize = _descriptor_values(
            self._buf, self._off + (_SIG if signature else 0), local.zip64
        )
        if csize != self._taken:
            msg = (
                f"data descriptor of {entry.name!r} says {csize} compressed bytes, "
                f"but its deflate stream took {self._taken}"
            )
            raise ZipCorrupt(msg)
        self._off += length
        self._finish_with_descriptor(entry, crc, csize, usize)
        return True

    def _finish_with_descriptor(
        self, entry: CentralEntry, crc: int, csize: int, usize: int
    ) -> None:
        """End an entry whose sizes and CRC came from its data descriptor."""
        self._finish(
            attrs.evolve(
                entry, crc32=crc, compressed_size=csize, uncompressed_size=usize, sizes_known=True
            )
        )

    # -- both modes -----------------------------------------------------------

    def _begin(self, entry: CentralEntry, local: LocalHeader) -> None:
        self._entry, self._local = entry, local
        self._taken = 0
        self._crc = 0
        reason = refusal(entry, self._limits)
        self._refused = reason is not None
        if reason is not None:
            self._events.append(EntryRefused(entry, reason))
        else:
            self._events.append(EntryStart(entry))

    def _data(self) -> bool:
        count = min(self._available, self._remaining)
        if count:
            if self._refused:
                self._off += count
            else:
                self._events.append(EntryCompressed(self._take(count)))
            self._remaining -= count
            self._taken += count
        if self._remaining:
            return False
        local, entry = self._local, self._entry
        assert local is not None
        assert entry is not None
        if local.has_data_descriptor:
            self._state = _State.DESCRIPTOR
        else:
            self._finish(entry)
        return True

    def _finish(self, entry: CentralEntry) -> None:
        if not self._refused:
            self._events.append(EntryEnd(entry))
        self._next += 1
        self._state = _State.HEADER


def _check_agreement(local: LocalHeader, central: CentralEntry) -> None:
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
