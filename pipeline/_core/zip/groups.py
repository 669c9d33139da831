"""A ZIP's entries cut into contiguous groups, each worth a download of its own.

One download reads a ZIP's entries one after another, so a file of a few
large entries takes as long as its bytes take over one connection, and only
one entry inflates at a time. The central directory, read first, says where
every entry starts, so the entries can be cut into groups of neighbours, each
fetched with its own ranged GET from its first local header and inflated
beside the others. A group costs a request, a connection and, while it
streams, its own part being filled and pieces in flight: worth it only when
every group is large (:data:`MIN_GROUP_BYTES`).

A group's bytes are counted from its first local header to the next group's
(or to the end of the entries' data): its compressed bytes plus a few dozen
bytes of headers per entry. Each cut goes to the entry boundary nearest an
equal share; an archive that cannot be cut so that every group holds at
least the minimum stays one group, read exactly as before.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from itertools import pairwise

from pipeline._core.zip.format import CentralEntry

__all__ = ["MIN_GROUP_BYTES", "plan_groups"]

# Fewest bytes a group of its own must hold. At a download rate of tens of
# MB/s such a group streams for a good part of a second, so the extra request
# and connection are noise beside what the overlap saves; below that the gain
# is a fraction of a second, and each stream still holds up to a part (8 MiB)
# being filled while it runs.
MIN_GROUP_BYTES = 16 * 1024 * 1024


def plan_groups(
    entries: Sequence[CentralEntry],
    end: int,
    *,
    streams: int,
    min_bytes: int = MIN_GROUP_BYTES,
) -> list[range]:
    """Index ranges of ``entries`` (in stream order) to read as separate streams.

    ``end`` is where the entries' data ends (the central directory's offset).
    At most ``streams`` groups, each of at least ``min_bytes``; fewer groups
    are tried when that many cannot all be large enough, and when no two can,
    the one group of every entry comes back. Looks at O(streams x log n)
    entries, so a directory of millions of entries is not walked.
    """
    if streams < 1 or min_bytes < 1:
        msg = f"streams and min_bytes must be positive, not {streams} and {min_bytes}"
        raise ValueError(msg)
    whole = [range(len(entries))]
    for count in range(min(streams, len(entries)), 1, -1):
        starts = _cuts(entries, end, count)
        if starts is None:
            continue
        offsets = [entries[start].local_header_offset for start in starts] + [end]
        if all(after - before >= min_bytes for before, after in pairwise(offsets)):
            bounds = [*starts, len(entries)]
            return [range(start, stop) for start, stop in pairwise(bounds)]
    return whole


def _cuts(entries: Sequence[CentralEntry], end: int, count: int) -> list[int] | None:
    """The first entry of each of ``count`` groups, each cut nearest an equal share."""
    first = entries[0].local_header_offset
    starts = [0]
    for share in range(1, count):
        target = first + (end - first) * share // count
        low = starts[-1] + 1
        if low >= len(entries):
            return None
        at = bisect_left(entries, target, lo=low, key=_offset)
        # The boundary at or after the target, or the one before it: the nearer.
        if at == len(entries) or (
            at > low
            and target - entries[at - 1].local_header_offset
            < entries[at].local_header_offset - target
        ):
            at -= 1
        starts.append(at)
    return starts


def _offset(entry: CentralEntry) -> int:
    return entry.local_header_offset
