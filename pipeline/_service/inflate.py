"""Inflate a ZIP's entries in worker threads, between the download and the uploader.

Inflating is the service's CPU work, so :class:`~pipeline._core.zip.decoder.EntryDecoder`
runs off the event loop through ``trio.to_thread.run_sync`` under the
``WORKER_POOL_SIZE`` limiter. isal, zlib and hashlib release the GIL on large
buffers, so two threads inflate two entries nearly twice as fast as one.
:func:`read_zip` feeds the sans-IO stream reader with downloaded chunks,
decodes in threads and sends verified pieces to the uploader as the small
events below.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterable, Callable, Sequence

import attrs
import trio

from pipeline._core.zip.decoder import (
    BATCH_BYTES,
    MAX_DATA_CHUNK,
    OPEN_FIRST_BATCH,
    EntryDecoder,
    EntryDigest,
    LimitExceeded,
)
from pipeline._core.zip.events import EntryCompressed, EntryEnd, EntryRefused, EntryStart, ZipEvent
from pipeline._core.zip.format import CentralEntry, ZipLimits
from pipeline._core.zip.stream import ReadFault, ZipStreamReader
from pipeline._errors import ZipCorrupt

__all__ = ["EntryClosed", "EntryData", "EntryOpened", "EntryRejected", "ZipOutput", "read_zip"]

# Entries up to this size (declared, uncompressed) are decoded without a
# thread hop: at 64 KiB the decode takes well under a millisecond, about what
# a hop costs, so only larger entries gain from running off the event loop.
INLINE_BYTES = 64 * 1024


@attrs.frozen
class EntryOpened:
    """An entry's content follows as :class:`EntryData` (never sent for directories)."""

    entry: CentralEntry


@attrs.frozen
class EntryData:
    """A piece of the open entry's uncompressed content, at most :data:`MAX_DATA_CHUNK` bytes.

    ``crc32`` is the piece's own CRC-32, computed while decoding: the uploader
    builds S3's part checksums from it rather than reading the bytes again.
    """

    data: bytes
    crc32: int


@attrs.frozen
class EntryClosed:
    """The open entry is complete and verified: its CRC-32 and size match its records."""

    entry: CentralEntry
    digest: EntryDigest


@attrs.frozen
class EntryRejected:
    """An entry that must not be written, with a one-line reason.

    Refused by its records: sent alone, without :class:`EntryOpened`. Refused
    while inflating (a limit): sent after :class:`EntryOpened` and some
    :class:`EntryData`, which the consumer discards.
    """

    entry: CentralEntry
    reason: str


ZipOutput = EntryOpened | EntryData | EntryClosed | EntryRejected


async def read_zip(
    chunks: AsyncIterable[bytes],
    directory: Sequence[CentralEntry] | None,
    send: trio.MemorySendChannel[ZipOutput],
    *,
    limits: ZipLimits,
    limiter: trio.CapacityLimiter,
    batch_bytes: int = BATCH_BYTES,
    max_data_chunk: int = MAX_DATA_CHUNK,
    following: CentralEntry | None = None,
) -> None:
    """Read a ZIP from ``chunks`` and send its entries' verified content to ``send``.

    With ``directory`` (from :func:`~pipeline._core.zip.directory.parse_directory`),
    ``chunks`` must start at the smallest ``local_header_offset`` in it; without
    (the server ignored ``Range``), at offset 0. For each entry, in stream
    order: :class:`EntryOpened`, :class:`EntryData` pieces, then
    :class:`EntryClosed` with its digest, or :class:`EntryRejected` (see
    there). Directory entries are read and verified but nothing is sent for
    them. Reading stops after the last entry: the rest of ``chunks`` (the
    central directory) is not consumed, and an async generator given as
    ``chunks`` is closed (``aclose``) whenever reading stops. ``directory``
    may be a run of the archive's entries in stream order, read while other
    readers read the rest; ``following`` is then the entry after the run,
    where reading stops (see :class:`~pipeline._core.zip.stream.ZipStreamReader`).

    ``send`` is closed on return, so the consumer sees ``EndOfChannel`` after
    the last event; a slow consumer slows the reading, as at most one piece is
    produced ahead of it. Corrupt or truncated data raises :class:`ZipCorrupt`
    after every event for what came before it was sent.
    """
    if batch_bytes <= 0 or max_data_chunk <= 0:
        msg = "batch_bytes and max_data_chunk must be positive"
        raise ValueError(msg)
    async with send:
        reading = _Reading(
            ZipStreamReader(directory, limits, following=following),
            send,
            limits,
            limiter,
            batch_bytes,
            max_data_chunk,
        )
        await reading.run(chunks)


class _Reading:
    """One ZIP's reading: the reader's events in, threaded decoding, output events out."""

    def __init__(
        self,
        reader: ZipStreamReader,
        send: trio.MemorySendChannel[ZipOutput],
        limits: ZipLimits,
        limiter: trio.CapacityLimiter,
        batch_bytes: int,
        max_data_chunk: int,
    ) -> None:
        self._reader = reader
        self._send = send
        self._limits = limits
        self._limiter = limiter
        self._batch_bytes = batch_bytes
        self._max_data_chunk = max_data_chunk
        # Events not yet acted on; the reader's answer to end_found() joins
        # the queue rather than recursing, so many small entries stay flat.
        self._queue: deque[ZipEvent] = deque()
        self._decoder: EntryDecoder | None = None
        self._fault: ReadFault | None = None
        self._rejected = False
        self._batch: list[bytes] = []
        self._batched = 0
        self._threshold = batch_bytes

    async def run(self, chunks: AsyncIterable[bytes]) -> None:
        iterator = aiter(chunks)
        try:
            async for chunk in iterator:
                if chunk:
                    await self._handle(self._read(self._reader.feed, chunk))
                if self._reader.done:
                    break
        finally:
            # Stopping early (done, corrupt, cancelled) must not leave an async
            # generator for the garbage collector to finalise.
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()
        # Input ended: a deflated entry awaiting its end may still find it in
        # the last batch, and what follows it is then read from the queue.
        while self._batch or self._queue:
            if self._batch:
                await self._flush()
            await self._handle([])
        await self._handle(self._read(self._reader.close))

    def _read(self, call: Callable[..., list[ZipEvent]], *args: bytes) -> list[ZipEvent]:
        """The reader's events; on a fault, those before it, the fault kept for after them."""
        try:
            return call(*args)
        except ReadFault as fault:
            self._fault = fault
            return fault.events

    async def _handle(self, events: list[ZipEvent]) -> None:
        await self._act_on(events)
        if self._fault is not None:
            # Every entry that ended before the fault has been sent on.
            raise self._fault

    async def _act_on(self, events: list[ZipEvent]) -> None:
        self._queue.extend(events)
        while self._queue:
            event = self._queue.popleft()
            if isinstance(event, EntryCompressed):
                await self._compressed(event.data)
            elif isinstance(event, EntryStart):
                await self._start(event.entry)
            elif isinstance(event, EntryEnd):
                await self._end(event.entry)
            elif isinstance(event, EntryRefused) and not event.entry.is_dir:
                await self._send.send(EntryRejected(event.entry, event.reason))

    async def _start(self, entry: CentralEntry) -> None:
        self._decoder = EntryDecoder(entry, self._limits)
        self._rejected = False
        self._threshold = (
            self._batch_bytes if entry.sizes_known else min(self._batch_bytes, OPEN_FIRST_BATCH)
        )
        if not entry.is_dir:
            await self._send.send(EntryOpened(entry))

    async def _compressed(self, data: bytes) -> None:
        if self._rejected:
            return
        self._batch.append(data)
        self._batched += len(data)
        if self._batched >= self._threshold:
            await self._flush()

    async def _end(self, entry: CentralEntry) -> None:
        decoder = self._decoder
        assert decoder is not None
        if self._rejected:
            self._decoder = None
            return
        if self._batch:
            await self._flush()
        self._decoder = None
        if self._rejected:
            return
        try:
            digest = decoder.finish(entry)
        except LimitExceeded as err:
            if not entry.is_dir:
                await self._send.send(EntryRejected(entry, err.reason))
            return
        if not entry.is_dir:
            await self._send.send(EntryClosed(entry, digest))

    async def _flush(self) -> None:
        """Decode the batch in worker threads, one call per output piece, and send it on."""
        decoder = self._decoder
        assert decoder is not None
        data = self._batch[0] if len(self._batch) == 1 else b"".join(self._batch)
        self._batch.clear()
        self._batched = 0
        self._threshold = min(self._batch_bytes, self._threshold * 2)
        silent = decoder.entry.is_dir
        # A small entry is decoded on the event loop: its output is bounded by
        # its declared size, and a thread hop would cost more than the work.
        entry = decoder.entry
        inline = entry.sizes_known and max(entry.uncompressed_size, len(data)) <= INLINE_BYTES
        try:
            while True:
                if inline:
                    await trio.lowlevel.checkpoint()
                    piece = decoder.decode(data, self._max_data_chunk)
                else:
                    piece = await trio.to_thread.run_sync(
                        decoder.decode, data, self._max_data_chunk, limiter=self._limiter
                    )
                data = b""
                if piece and not silent:
                    await self._send.send(EntryData(piece, decoder.last_crc32))
                if not decoder.has_pending:
                    break
        except LimitExceeded as err:
            await self._reject(decoder.entry, err.reason)
            return
        if decoder.ended and self._reader.awaiting_end:
            self._queue.extend(self._read(self._reader.end_found, decoder.unused))

    async def _reject(self, entry: CentralEntry, reason: str) -> None:
        self._rejected = True
        if not entry.is_dir:
            await self._send.send(EntryRejected(entry, reason))
        if self._reader.awaiting_end:
            msg = (
                f"{entry.name!r} is refused ({reason}) and, without the central "
                "directory, where it ends cannot be found"
            )
            raise ZipCorrupt(msg)
