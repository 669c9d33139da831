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

The file's tally is shared (the counts do not depend on the order). Failure
follows what one stream would have done: a verdict on the file (a corrupt
entry) in one group lets the groups before it finish, since one stream would
have read them before reaching the fault, and cancels those after it; the
entries already committed stay, and the earliest group's error is the
file's. Any other error (our infrastructure past its retries, a bug) cancels
every group and is raised. Cancellation from outside (the export cancelled,
shutdown) reaches every group through the nursery.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable, Sequence

import structlog
import trio

from pipeline._adapters.aws.metadata import MetadataItem
from pipeline._adapters.exportapi import ExportFile
from pipeline._config import Settings
from pipeline._core.zip.compact import CompactDirectory
from pipeline._core.zip.format import CentralEntry
from pipeline._core.zip.groups import MIN_GROUP_BYTES, plan_groups
from pipeline._errors import PermanentError
from pipeline._logging import bound
from pipeline._service.deps import Deps
from pipeline._service.lookahead import AheadLookup

__all__ = ["STREAMS_PER_FILE", "Lookup", "StreamEntries", "read_entries", "streams_per_file"]

log = structlog.get_logger("pipeline.files")

# Downloads one file may read at once. Each stream holds its own part being
# filled (up to 8 MiB) and a piece or two while it runs, and the inflate
# threads (WORKER_POOL_SIZE) serve the whole process, so more streams than
# threads gain nothing; two already overlap one connection's latency and
# rate with the other's and keep two threads busy on one file.
STREAMS_PER_FILE = 2

# A metadata lookup: the item of an entry's path, or None when it has none.
Lookup = Callable[[str], Awaitable[MetadataItem | None]]
# The file stage's reader and uploader over one download: chunks starting at
# the first entry's local header, the entries (a run in stream order, or the
# whole directory), their lookup, and the entry after the run (None: the last).
StreamEntries = Callable[
    [AsyncIterable[bytes], Sequence[CentralEntry], Lookup, CentralEntry | None],
    Awaitable[None],
]


def streams_per_file(settings: Settings, files_in_flight: int) -> int:
    """Downloads a file may read at once: :data:`STREAMS_PER_FILE`, within WORKER_POOL_SIZE.

    A second stream only while the file workers are not all busy
    (``files_in_flight``, this file included, below MAX_CONCURRENT_JOBS): a
    full pool is already parallel, and its memory stays one stream a file.
    """
    idle = settings.max_concurrent_jobs - files_in_flight
    return max(1, min(STREAMS_PER_FILE, settings.worker_pool_size, 1 + idle))


async def read_entries(
    file: ExportFile,
    directory: CompactDirectory,
    export_id: str,
    deps: Deps,
    stream: StreamEntries,
    *,
    min_group_bytes: int = MIN_GROUP_BYTES,
) -> None:
    """Read every entry of ``directory`` through ``stream``, in groups when worth it.

    Raises what ``stream`` raises (see the module doc for which error wins).
    """
    entries = directory.by_offset
    end = directory.entries_end
    groups = (
        [range(len(entries))]
        if end is None
        else plan_groups(
            entries,
            end,
            streams=streams_per_file(deps.settings, deps.pool.in_flight),
            min_bytes=min_group_bytes,
        )
    )
    if len(groups) == 1:
        await _read_group(file, entries, directory.first_offset, None, export_id, deps, stream)
        return
    log.info("entries read in groups", entriesPerGroup=[len(g) for g in groups])
    faults: dict[int, Exception] = {}
    scopes = [trio.CancelScope() for _ in groups]

    async def read(index: int, group: range) -> None:
        run = directory.stream_run(group.start, group.stop)
        following = entries[group.stop] if group.stop < len(entries) else None
        start = run[0].local_header_offset
        with scopes[index], bound(group=str(index + 1)):
            try:
                await _read_group(file, run, start, following, export_id, deps, stream)
            except Exception as err:
                faults[index] = err
                verdict = isinstance(err, PermanentError) and err.verdict
                for other, scope in enumerate(scopes):
                    if other > index or not verdict:
                        scope.cancel()

    async with trio.open_nursery() as nursery:
        for index, group in enumerate(groups):
            nursery.start_soon(read, index, group)
    if faults:
        raise faults[min(faults)]


async def _read_group(
    file: ExportFile,
    entries: Sequence[CentralEntry],
    start: int,
    following: CentralEntry | None,
    export_id: str,
    deps: Deps,
    stream: StreamEntries,
) -> None:
    # Looked up a window ahead of this group's reader, not all at once: see lookahead.py.
    ahead = AheadLookup(
        deps.aws.dynamodb,
        deps.settings.dynamodb_metadata_table,
        export_id,
        entries,
        policy=deps.aws_policy,
    )
    async with deps.api.download(file, start=start) as chunks:
        await stream(chunks, entries, ahead.get, following)
