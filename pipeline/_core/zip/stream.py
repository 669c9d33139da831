"""A sans-IO ZIP reader: network chunks in, entries and their compressed bytes out.

Fed chunks of any size, it hands out each entry's start, compressed bytes and
end (:mod:`.events`) in stream order; no inflating, no I/O. Input kept between
chunks: :mod:`.buffer`; the two modes: the docstring of :mod:`pipeline._core.zip`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from pipeline._core.zip.buffer import StreamBuffer
from pipeline._core.zip.compact import in_stream_order
from pipeline._core.zip.descriptor import (
    FORMS_32,
    FORMS_64,
    SIG_LENGTH,
    check_agreement,
    completed_by_descriptor,
    crc32,
    descriptor_length,
    descriptor_values,
)
from pipeline._core.zip.events import EntryCompressed, EntryEnd, EntryRefused, EntryStart, ZipEvent
from pipeline._core.zip.format import (
    METHOD_STORED,
    SIG_CENTRAL,
    SIG_DESCRIPTOR,
    SIG_EOCD,
    SIG_LOCAL,
    CentralEntry,
    LocalHeader,
    ZipLimits,
    local_entry,
    parse_local_header,
    refusal,
)
from pipeline._errors import ZipCorrupt

__all__ = ["ReadFault", "ZipStreamReader"]


class ReadFault(ZipCorrupt):
    """A fault, and the ``events`` completed before it: act on those first, then fail."""

    def __init__(self, fault: ZipCorrupt, events: list[ZipEvent]) -> None:
        super().__init__(str(fault))
        self.events = events


class _State(enum.Enum):
    HEADER = "at a local header"
    DATA = "in counted entry data"
    DESCRIPTOR = "at a data descriptor"
    SCAN = "in stored data, looking for its descriptor"
    OPEN = "in deflated data, waiting for the inflater to find its end"
    TRAILER = "after the last entry"
    DONE = "done"


class ZipStreamReader(StreamBuffer):
    """Turns a ZIP byte stream into :data:`ZipEvent` values; see the module doc.

    ``directory`` is the parsed central directory (directory-first mode) or
    ``None`` (local headers only). Call :meth:`feed` with each chunk and
    :meth:`close` when the input ends; in the local-headers mode, when
    :attr:`awaiting_end` is true after a call, report where the deflate
    stream ended with :meth:`end_found`. Once a call raised
    :class:`ZipCorrupt`, every later call raises it again.

    ``directory`` may be a run of the archive's entries; then ``following`` is
    the entry after the run, which another reader reads: the bytes up to it
    are checked as before any next entry, and the reader is done there.
    """

    def __init__(
        self,
        directory: Sequence[CentralEntry] | None,
        limits: ZipLimits,
        *,
        following: CentralEntry | None = None,
    ) -> None:
        self._limits = limits
        self._directory = in_stream_order(directory)
        self._following = following
        self._next = 0
        super().__init__(0 if not self._directory else self._directory[0].local_header_offset)
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
        self._append(data)
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
            events, self._events = self._events, []
            raise ReadFault(err, events) from err
        self._compact()
        events, self._events = self._events, []
        return events

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
            missing = self._listed_next()
            assert missing is not None
            return f"archive is truncated: it ends before entry {missing.name!r}"
        return f"archive is truncated: it ends inside entry {name!r}"

    # -- directory-first mode -------------------------------------------------

    def _listed_next(self) -> CentralEntry | None:
        """The next entry to read, or the one after the run; None after the last of all."""
        assert self._directory is not None
        if self._next < len(self._directory):
            return self._directory[self._next]
        return self._following

    def _directory_header(self) -> bool:
        central = self._listed_next()
        if central is None:
            self._state = _State.TRAILER
            return True
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
        if self._next == len(self._directory or ()):  # the following entry: another reader's
            self._state = _State.DONE
            return True
        if self._available < SIG_LENGTH:
            return False
        if self._buf[self._off : self._off + SIG_LENGTH] != SIG_LOCAL:
            msg = f"no local header for {central.name!r} at offset {target}"
            raise ZipCorrupt(msg)
        local = parse_local_header(self._buf, self._off)
        if local is None:
            return False
        check_agreement(local, central)
        self._off += local.size
        self._begin(central, local)
        self._remaining = central.compressed_size
        self._state = _State.DATA
        return True

    def _skip_gap(self, target: int) -> bool:
        """Skip bytes before the next listed entry, unless they hold an unlisted one."""
        gap = target - self._position
        if not self._gap_checked:
            needed = min(gap, SIG_LENGTH)
            if self._available < needed:
                return False
            if needed == SIG_LENGTH and self._buf[self._off : self._off + SIG_LENGTH] == SIG_LOCAL:
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
        if final and self._available < descriptor_length(False, False):
            raise ZipCorrupt(self._truncation())
        for signature, zip64 in FORMS_64 if local.zip64 else FORMS_32:
            length = descriptor_length(signature, zip64)
            if self._available < length:
                if final:
                    continue
                return False
            at = self._off
            if signature:
                if self._buf[at : at + SIG_LENGTH] != SIG_DESCRIPTOR:
                    continue
                at += SIG_LENGTH
            if descriptor_values(self._buf, at, zip64) == expected:
                self._off += length
                self._finish(entry)
                return True
        msg = f"data descriptor of {entry.name!r} disagrees with the central directory"
        raise ZipCorrupt(msg)

    def _trailer(self, final: bool) -> bool:
        if self._available < SIG_LENGTH and not final:
            return False
        if self._buf[self._off : self._off + SIG_LENGTH] == SIG_LOCAL:
            msg = (
                f"local entry at offset {self._position} follows the last entry "
                "the central directory lists"
            )
            raise ZipCorrupt(msg)
        self._state = _State.DONE
        return True

    # -- local-headers mode ---------------------------------------------------

    def _local_header(self) -> bool:
        if self._available < SIG_LENGTH:
            return False
        signature = bytes(self._buf[self._off : self._off + SIG_LENGTH])
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
        entry = local_entry(local, self._position)
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
        length = descriptor_length(True, local.zip64)
        while True:
            found = self._buf.find(SIG_DESCRIPTOR, self._off)
            if found < 0:
                # The last three bytes may begin a signature.
                self._hand_out(max(0, self._available - (SIG_LENGTH - 1)))
                return False
            self._hand_out(found - self._off)
            if self._available < length:
                return False
            crc, csize, usize = descriptor_values(self._buf, self._off + SIG_LENGTH, local.zip64)
            if crc == self._crc and csize == usize == self._taken:
                entry = self._entry
                assert entry is not None
                self._off += length
                self._finish(completed_by_descriptor(entry, crc, csize, usize))
                return True
            # A signature inside the data: it is data.
            self._hand_out(1)

    def _hand_out(self, count: int) -> None:
        if count <= 0:
            return
        with memoryview(self._buf) as view:
            self._crc = crc32(view[self._off : self._off + count], self._crc)
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
        if self._available < SIG_LENGTH:
            return False
        signature = self._buf[self._off : self._off + SIG_LENGTH] == SIG_DESCRIPTOR
        length = descriptor_length(signature, local.zip64)
        if self._available < length:
            return False
        crc, csize, usize = descriptor_values(
            self._buf, self._off + (SIG_LENGTH if signature else 0), local.zip64
        )
        if csize != self._taken:
            msg = (
                f"data descriptor of {entry.name!r} says {csize} compressed bytes, "
                f"but its deflate stream took {self._taken}"
            )
            raise ZipCorrupt(msg)
        self._off += length
        self._finish(completed_by_descriptor(entry, crc, csize, usize))
        return True

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
