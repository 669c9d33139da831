"""One ZIP's inflating as decisions: the reader's events in, decode steps and content out.

A thread hop costs 0.06-0.13 ms here, so an entry's compressed bytes are
gathered into batches of :data:`BATCH_BYTES` before they are inflated, and an
entry small enough that a hop would cost more than the work is decoded on
the event loop (:data:`INLINE_BYTES`). In the local-headers mode a deflated
entry's end is only found by inflating: the bytes past it go back to the
reader (:meth:`~pipeline._core.zip.stream.ZipStreamReader.end_found`), whose
answer joins the queue of events still to act on rather than recursing, so
many small entries stay flat.

:class:`ZipInflater` makes those decisions and does no I/O. Its caller (the
trio side, :func:`pipeline._service.inflate.read_zip`) feeds it chunks, asks
:meth:`~ZipInflater.next_step` what to do, and does it: send a
:data:`~pipeline._core.zip.events.ContentEvent` on, or run a :class:`Decode`
(in a worker thread unless ``inline``) and report what it gave.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import attrs

from pipeline._core.zip.decoder import EntryDecoder, LimitExceeded
from pipeline._core.zip.events import (
    ContentEvent,
    EntryClosed,
    EntryCompressed,
    EntryData,
    EntryEnd,
    EntryRefused,
    EntryStart,
    ZipEvent,
)
from pipeline._core.zip.format import ZipLimits
from pipeline._core.zip.stream import ReadFault, ZipStreamReader
from pipeline._errors import ZipCorrupt

__all__ = ["BATCH_BYTES", "INLINE_BYTES", "OPEN_FIRST_BATCH", "Decode", "Step", "ZipInflater"]

# Compressed bytes per batch. Measured (docs/decisions-zip.md): at 64 KiB the
# hops take 9-17 % of the time, at 1 MiB under 3 %; 2 MiB and more are slower
# again (a bounded inflater call copies its unconsumed input).
BATCH_BYTES = 1024 * 1024
# In the local-headers mode a deflated entry's end is only found by inflating,
# and bytes past it are handed back to the reader: batches start this small
# for such entries (and double), so many small entries are not re-copied
# a full batch at a time.
OPEN_FIRST_BATCH = 64 * 1024
# Entries up to this size (declared, uncompressed) are decoded without a
# thread hop: at 64 KiB the decode takes well under a millisecond, about what
# a hop costs, so only larger entries gain from running off the event loop.
INLINE_BYTES = 64 * 1024


@attrs.frozen
class Decode:
    """Run ``decoder.decode(data, max_output)``: in a worker thread, or on the loop if ``inline``.

    ``data`` is the batch's ``chunks`` joined, by the call: in the worker
    thread, where a join of 1 MiB or more releases the GIL, not on the event
    loop. Report its piece with :meth:`ZipInflater.decoded`, or its
    :class:`~pipeline._core.zip.decoder.LimitExceeded` with
    :meth:`ZipInflater.limit_exceeded`; a :class:`ZipCorrupt` it raises fails the file.
    """

    decoder: EntryDecoder
    chunks: tuple[bytes, ...]
    max_output: int
    inline: bool

    @property
    def data(self) -> bytes:
        """The compressed bytes this decode takes (none when it takes pending output)."""
        chunks = self.chunks
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def __call__(self) -> bytes:
        return self.decoder.decode(self.data, self.max_output)


Step = Decode | ContentEvent
"""What the caller does next: a decode to run, or an event to send on."""


class ZipInflater:
    """Decides how one ZIP's entries are inflated; see the module doc.

    Call :meth:`feed` with each chunk (while not :attr:`done`) and
    :meth:`close` when the input ends; after each, take :meth:`next_step`
    until it returns ``None`` (more input needed). A :class:`Decode` step is
    handed out until its outcome is reported. A corrupt archive raises
    :class:`ZipCorrupt` from :meth:`next_step` once every event for the
    entries that ended before the fault has been handed out.
    """

    def __init__(
        self, reader: ZipStreamReader, limits: ZipLimits, *, batch_bytes: int, max_data_chunk: int
    ) -> None:
        if batch_bytes <= 0 or max_data_chunk <= 0:
            msg = "batch_bytes and max_data_chunk must be positive"
            raise ValueError(msg)
        self._reader = reader
        self._limits = limits
        self._batch_bytes = batch_bytes
        self._max_data_chunk = max_data_chunk
        # The reader's events not yet acted on, and what is to be sent on.
        self._queue: deque[ZipEvent] = deque()
        self._out: deque[ContentEvent] = deque()
        self._decoding: Decode | None = None
        self._decoder: EntryDecoder | None = None
        self._fault: ZipCorrupt | None = None
        self._rejected = False
        self._batch: list[bytes] = []
        self._batched = 0
        self._threshold = batch_bytes
        self._closing = False
        self._closed = False

    @property
    def done(self) -> bool:
        """The reader has read every entry: the rest of the input is not needed."""
        return self._reader.done

    def feed(self, chunk: bytes) -> None:
        """Take the next chunk of the stream."""
        if chunk:
            self._queue.extend(self._read(self._reader.feed, chunk))

    def close(self) -> None:
        """The input has ended: what is batched is decoded, then the reader is closed."""
        self._closing = True

    def next_step(self) -> Step | None:
        """What to do next; ``None`` when more input is needed (after :meth:`close`: the end)."""
        while True:
            if self._out:
                return self._out.popleft()
            if self._decoding is not None:
                return self._decoding
            if self._queue:
                self._act_on(self._queue.popleft())
                continue
            if self._fault is not None:
                # Every entry that ended before the fault has been handed out.
                raise self._fault
            if not self._closing:
                return None
            # Input ended: a deflated entry awaiting its end may still find it
            # in the last batch, and what follows it is then read from the queue.
            if self._batch:
                self._flush()
                continue
            if self._closed:
                return None
            self._closed = True
            self._queue.extend(self._read(self._reader.close))

    def decoded(self, piece: bytes) -> None:
        """The :class:`Decode` handed out gave ``piece``."""
        step = self._decoding
        if step is None:
            msg = "decoded() called while no decode is handed out"
            raise RuntimeError(msg)
        decoder = step.decoder
        if piece and not decoder.entry.is_dir:
            self._out.append(EntryData(piece, decoder.last_crc32))
        if decoder.has_pending:
            self._decoding = Decode(decoder, (), step.max_output, step.inline)
            return
        self._decoding = None
        if decoder.ended and self._reader.awaiting_end:
            self._queue.extend(self._read(self._reader.end_found, decoder.unused))

    def limit_exceeded(self, reason: str) -> None:
        """The :class:`Decode` handed out went over a limit: the entry is refused."""
        step = self._decoding
        if step is None:
            msg = "limit_exceeded() called while no decode is handed out"
            raise RuntimeError(msg)
        self._decoding = None
        self._rejected = True
        entry = step.decoder.entry
        if not entry.is_dir:
            self._out.append(EntryRefused(entry, reason))
        if self._reader.awaiting_end and self._fault is None:
            msg = (
                f"{entry.name!r} is refused ({reason}) and, without the central "
                "directory, where it ends cannot be found"
            )
            self._fault = ZipCorrupt(msg)

    # -- machinery ------------------------------------------------------------

    def _read(self, call: Callable[..., list[ZipEvent]], *args: bytes) -> list[ZipEvent]:
        """The reader's events; on a fault, those before it, the fault kept for after them."""
        try:
            return call(*args)
        except ReadFault as fault:
            self._fault = fault
            return fault.events

    def _act_on(self, event: ZipEvent) -> None:
        if isinstance(event, EntryCompressed):
            if self._rejected:
                return
            self._batch.append(event.data)
            self._batched += len(event.data)
            if self._batched >= self._threshold:
                self._flush()
        elif isinstance(event, EntryStart):
            entry = event.entry
            self._decoder = EntryDecoder(entry, self._limits)
            self._rejected = False
            self._threshold = (
                self._batch_bytes if entry.sizes_known else min(self._batch_bytes, OPEN_FIRST_BATCH)
            )
            if not entry.is_dir:
                self._out.append(event)
        elif isinstance(event, EntryEnd):
            self._end(event)
        elif not event.entry.is_dir:
            self._out.append(event)

    def _end(self, event: EntryEnd) -> None:
        if self._batch and not self._rejected:
            # Decode the rest first; the end is acted on again after it.
            self._queue.appendleft(event)
            self._flush()
            return
        decoder, self._decoder = self._decoder, None
        assert decoder is not None
        if self._rejected:
            return
        entry = event.entry
        try:
            digest = decoder.finish(entry)
        except LimitExceeded as err:
            if not entry.is_dir:
                self._out.append(EntryRefused(entry, err.reason))
            return
        if not entry.is_dir:
            self._out.append(EntryClosed(entry, digest))

    def _flush(self) -> None:
        """Hand the batch out as one :class:`Decode` (then one more per output piece)."""
        decoder = self._decoder
        assert decoder is not None
        chunks, size = tuple(self._batch), self._batched
        self._batch.clear()
        self._batched = 0
        self._threshold = min(self._batch_bytes, self._threshold * 2)
        # A small entry is decoded on the event loop: its output is bounded by
        # its declared size, and a thread hop would cost more than the work.
        entry = decoder.entry
        inline = entry.sizes_known and max(entry.uncompressed_size, size) <= INLINE_BYTES
        self._decoding = Decode(decoder, chunks, self._max_data_chunk, inline)
