"""Inflate a ZIP's entries in worker threads, between the download and the uploader.

Inflating is the service's CPU work, so :class:`~pipeline._core.zip.decoder.EntryDecoder`
runs off the event loop through ``trio.to_thread.run_sync`` under the
``WORKER_POOL_SIZE`` limiter. isal, zlib and hashlib release the GIL on large
buffers, so two threads inflate two entries nearly twice as fast as one.
What to decode when, and what to send, is decided sans-IO by
:class:`~pipeline._core.zip.inflater.ZipInflater`; :func:`read_zip` only
feeds it downloaded chunks, runs its decodes and sends its events
(:data:`~pipeline._core.zip.events.ContentEvent`) to the uploader.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Sequence

import trio

from pipeline._core.zip.decoder import MAX_DATA_CHUNK, LimitExceeded
from pipeline._core.zip.events import ContentEvent
from pipeline._core.zip.format import CentralEntry, ZipLimits
from pipeline._core.zip.inflater import BATCH_BYTES, Decode, ZipInflater
from pipeline._core.zip.stream import ZipStreamReader

__all__ = ["read_zip"]


async def read_zip(
    chunks: AsyncIterable[bytes],
    directory: Sequence[CentralEntry] | None,
    send: trio.MemorySendChannel[ContentEvent],
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
    order: :class:`~pipeline._core.zip.events.EntryStart`,
    :class:`~pipeline._core.zip.events.EntryData` pieces, then
    :class:`~pipeline._core.zip.events.EntryClosed` with its digest, or
    :class:`~pipeline._core.zip.events.EntryRefused` (see there). Directory
    entries are read and verified but nothing is sent for them. Reading stops
    after the last entry: the rest of ``chunks`` (the central directory) is
    not consumed, and an async generator given as ``chunks`` is closed
    (``aclose``) whenever reading stops. ``directory`` may be a run of the
    archive's entries in stream order, read while other readers read the
    rest; ``following`` is then the entry after the run, where reading stops
    (see :class:`~pipeline._core.zip.stream.ZipStreamReader`).

    ``send`` is closed on return, so the consumer sees ``EndOfChannel`` after
    the last event; a slow consumer slows the reading, as at most one piece is
    produced ahead of it. Corrupt or truncated data raises :class:`ZipCorrupt`
    after every event for what came before it was sent.
    """
    inflater = ZipInflater(
        ZipStreamReader(directory, limits, following=following),
        limits,
        batch_bytes=batch_bytes,
        max_data_chunk=max_data_chunk,
    )
    async with send:
        iterator = aiter(chunks)
        try:
            async for chunk in iterator:
                inflater.feed(chunk)
                await _carry_out(inflater, send, limiter)
                if inflater.done:
                    break
        finally:
            # Stopping early (done, corrupt, cancelled) must not leave an async
            # generator for the garbage collector to finalise.
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()
        inflater.close()
        await _carry_out(inflater, send, limiter)


async def _carry_out(
    inflater: ZipInflater,
    send: trio.MemorySendChannel[ContentEvent],
    limiter: trio.CapacityLimiter,
) -> None:
    """Do the inflater's steps until it needs more input."""
    while (step := inflater.next_step()) is not None:
        if not isinstance(step, Decode):
            await send.send(step)
            continue
        try:
            piece = await _decode(step, limiter)
        except LimitExceeded as err:
            inflater.limit_exceeded(err.reason)
        else:
            inflater.decoded(piece)


async def _decode(step: Decode, limiter: trio.CapacityLimiter) -> bytes:
    if step.inline:
        await trio.lowlevel.checkpoint()
        return step()
    return await trio.to_thread.run_sync(step, limiter=limiter)
