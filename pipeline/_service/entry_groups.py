"""A ZIP's entries read as groups side by side, each over its own ranged download.

The central directory, read first, gives every entry's offset, so a ZIP with
several large entries is cut into contiguous groups
(:func:`~pipeline._core.zip.groups.plan_groups`) and each group is read like
a file of its own: a download from its first local header
(``Range: bytes=<offset>-``, resumed after a break like any download), its
own reader and uploader (the file stage's, given as ``stream``), its own
metadata lookahead over its entries. One connection's rate and one inflate
thread no longer bound the file. The group's reader stops at the entry the
next group begins with and the response is closed there. A ZIP that cannot be
cut into large groups is read as one stream, exactly as before.

A group's stream starts only where that is faster: when the previous group's
reader turns out to spend most of its time waiting for its download
(:class:`DownloadMeter`), or when the previous group ends. A download faster
than the reader (inflate, or S3 pushing back on the parts, is the slower
side) then reads its groups one after another, as one stream would, without
a second stream's memory and CPU.

The file's tally is shared (the counts do not depend on the order). Failure
follows what one stream would have done: a verdict on the file (a corrupt
entry) in one group lets the groups before it finish, since one stream would
have read them before reaching the fault, and cancels those after it; the
entries already committed stay, and the earliest group's error is the
file's. Any other error (our infrastructure past its retries, a bug) cancels
every group and is raised. Cancellation from outside (the export cancelled,
shutdown) reaches every group through the nursery.

A group whose bytes the tail read already holds (a ZIP no larger than
``TAIL_BYTES`` is all tail) is read from those bytes, with no second request:
:func:`download_from`.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import structlog
import trio

from pipeline._adapters.aws.metadata import MetadataTable
from pipeline._adapters.exportapi import ExportApi, ExportFile, RangeResult
from pipeline._core.verdicts import MetadataItem
from pipeline._core.zip.compact import CompactDirectory
from pipeline._core.zip.format import CentralEntry
from pipeline._core.zip.groups import MIN_GROUP_BYTES, plan_groups
from pipeline._errors import PermanentError
from pipeline._logging import bound
from pipeline._service.filework import FileLimits
from pipeline._service.lookahead import AheadLookup

__all__ = [
    "HELD_CHUNK_BYTES",
    "JUDGE_BYTES",
    "JUDGE_SECONDS",
    "NETWORK_BOUND_SHARE",
    "STREAMS_PER_FILE",
    "DownloadMeter",
    "Lookup",
    "StreamEntries",
    "download_from",
    "read_entries",
    "streams_per_file",
]

log = structlog.get_logger("pipeline.files")

# Downloads one file may read at once. Each stream holds its own part being
# filled (up to 8 MiB) and a piece or two while it runs, and the inflate
# threads (WORKER_POOL_SIZE) serve the whole process, so more streams than
# threads gain nothing; two already overlap one connection's latency and
# rate with the other's and keep two threads busy on one file.
STREAMS_PER_FILE = 2

# The next group's stream starts when the reader of this one waited for its
# download at least this share of a window: of JUDGE_BYTES, or of JUDGE_SECONDS
# on a slow link. Short, so a slow download is doubled early; long enough to
# span many chunks.
NETWORK_BOUND_SHARE = 0.5
JUDGE_BYTES = 4 * 1024 * 1024
JUDGE_SECONDS = 0.25

# Chunks the bytes of a tail read are handed on in, as a download's would be.
HELD_CHUNK_BYTES = 64 * 1024

# A metadata lookup: the item of an entry's path, or None when it has none.
Lookup = Callable[[str], Awaitable[MetadataItem | None]]
# The file stage's reader and uploader over one download: chunks starting at
# the first entry's local header, the entries (a run in stream order, or the
# whole directory), their lookup, and the entry after the run (None: the last).
StreamEntries = Callable[
    [AsyncIterable[bytes], Sequence[CentralEntry], Lookup, CentralEntry | None],
    Awaitable[None],
]


def streams_per_file(limits: FileLimits, files_in_flight: int) -> int:
    """Downloads a file may read at once: :data:`STREAMS_PER_FILE`, within WORKER_POOL_SIZE.

    A second stream only while the file workers are not all busy
    (``files_in_flight``, this file included, below MAX_CONCURRENT_JOBS): a
    full pool is already parallel, and its memory stays one stream a file.
    """
    idle = limits.workers - files_in_flight
    return max(1, min(STREAMS_PER_FILE, limits.threads, 1 + idle))


async def read_entries(
    file: ExportFile,
    directory: CompactDirectory,
    export_id: str,
    stream: StreamEntries,
    *,
    api: ExportApi,
    table: MetadataTable,
    streams: int,
    min_group_bytes: int = MIN_GROUP_BYTES,
    held: RangeResult | None = None,
) -> None:
    """Read every entry of ``directory`` through ``stream``, in groups when worth it.

    Up to ``streams`` groups at once (:func:`streams_per_file`), each
    downloaded through ``api`` and its metadata looked up in ``table``.
    ``held``: the tail read, whose bytes serve a group they reach back to.
    Raises what ``stream`` raises (see the module doc for which error wins).
    """
    entries = directory.by_offset
    end = directory.entries_end
    groups = (
        [range(len(entries))]
        if end is None
        else plan_groups(entries, end, streams=streams, min_bytes=min_group_bytes)
    )
    read_group = functools.partial(_read_group, file, export_id, api, table, stream)
    if len(groups) == 1:
        await read_group(entries, directory.first_offset, None, held=held)
        return
    log.info("entries read in groups", entriesPerGroup=[len(g) for g in groups])
    faults: dict[int, Exception] = {}
    scopes = [trio.CancelScope() for _ in groups]
    # Group i begins once group i-1 turns out to wait on its download, or ends.
    may_start = [trio.Event() for _ in groups]
    may_start[0].set()

    async def read(index: int, group: range) -> None:
        run = directory.stream_run(group.start, group.stop)
        following = entries[group.stop] if group.stop < len(entries) else None
        start = run[0].local_header_offset
        after = may_start[index + 1] if index + 1 < len(groups) else None
        with scopes[index], bound(group=str(index + 1)):
            try:
                await may_start[index].wait()
                meter = None if after is None else functools.partial(DownloadMeter, after=after)
                await read_group(run, start, following, meter, held)
            except Exception as err:
                faults[index] = err
                verdict = isinstance(err, PermanentError) and err.verdict
                for other, scope in enumerate(scopes):
                    if other > index or not verdict:
                        scope.cancel()
            finally:
                if after is not None:
                    after.set()

    async with trio.open_nursery() as nursery:
        for index, group in enumerate(groups):
            nursery.start_soon(read, index, group)
    if faults:
        raise faults[min(faults)]


class DownloadMeter:
    """A group's chunks, passed on as they come, timed: is the reader waiting on the download?

    A second stream pays off only when one download is slower than the file's
    reader and uploader can go: then the reader spends most of its time
    waiting for bytes. When the reader is the slower side (inflate, or S3
    pushing back on the parts) a second stream only adds memory, CPU for the
    threads to contend over and a request. So each window of
    :data:`JUDGE_BYTES` or :data:`JUDGE_SECONDS`, whichever ends first, the
    share of it spent waiting for the next chunk is measured, and the first
    window over :data:`NETWORK_BOUND_SHARE` sets ``after``, which lets the
    next group begin.
    """

    def __init__(self, chunks: AsyncIterable[bytes], after: trio.Event) -> None:
        self._chunks = aiter(chunks)
        self._network_bound = after
        self._window_start: float | None = None
        self._window_bytes = 0
        self._waited = 0.0

    def __aiter__(self) -> DownloadMeter:
        return self

    async def __anext__(self) -> bytes:
        asked = trio.current_time()
        if self._window_start is None:
            self._window_start = asked
        chunk = await anext(self._chunks)
        now = trio.current_time()
        self._waited += now - asked
        self._window_bytes += len(chunk)
        elapsed = now - self._window_start
        if self._window_bytes >= JUDGE_BYTES or elapsed >= JUDGE_SECONDS:
            share = self._waited / elapsed if elapsed > 0 else 0.0
            if share >= NETWORK_BOUND_SHARE and not self._network_bound.is_set():
                log.info(
                    "download is the slower side; next group starts",
                    waitedShare=round(share, 2),
                    windowBytes=self._window_bytes,
                )
                self._network_bound.set()
            self._window_start, self._window_bytes, self._waited = now, 0, 0.0
        return chunk

    async def aclose(self) -> None:
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            await aclose()


async def _read_group(
    file: ExportFile,
    export_id: str,
    api: ExportApi,
    table: MetadataTable,
    stream: StreamEntries,
    entries: Sequence[CentralEntry],
    start: int,
    following: CentralEntry | None,
    meter: Callable[[AsyncIterable[bytes]], AsyncIterable[bytes]] | None = None,
    held: RangeResult | None = None,
) -> None:
    # Looked up a window ahead of this group's reader, not all at once: see lookahead.py.
    ahead = AheadLookup(table, export_id, entries)
    async with download_from(api, file, start, held) as chunks:
        await stream(chunks if meter is None else meter(chunks), entries, ahead.get, following)


@asynccontextmanager
async def download_from(
    api: ExportApi, file: ExportFile, start: int, held: RangeResult | None
) -> AsyncIterator[AsyncIterable[bytes]]:
    """``file`` from ``start`` to its end: from ``held`` when it holds all that, else downloaded.

    A ranged tail read holds the file from its ``start`` to the end; a ZIP no
    larger than the tail read is all in it, and a second GET would fetch the
    same bytes again (and count against EXPORT_API_RATE_PER_SECOND).
    """
    if held is not None and held.ranged and held.start <= start:
        yield _held_chunks(memoryview(held.data)[start - held.start :])
        return
    async with api.download(file, start=start) as chunks:
        yield chunks


async def _held_chunks(data: memoryview) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), HELD_CHUNK_BYTES):
        yield bytes(data[offset : offset + HELD_CHUNK_BYTES])
