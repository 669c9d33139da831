"""The most memory the byte path holds: per stream of a file in flight, and for the process.

A file in flight is read as one stream: a download, its reader (inflate in a
worker thread) and its uploader. While file slots are idle a file with several
large entries may read a second group of them as a second stream
(:mod:`.entry_groups`), in memory an idle slot would otherwise hold. At most
at once, a stream holds:

* the S3 part being filled: ``PART_SIZE``, which a piece may overshoot before
  the part is cut off (a small entry, up to one part, is held whole until it
  is verified, within the same bound);
* the inflated piece on its way to the uploader (``MAX_DATA_CHUNK``; the
  channel between them is a rendezvous, so the reader holds it until taken);
* the inflate batch (``BATCH_BYTES`` of compressed chunks), its join in the
  worker thread and the inflater's unconsumed input: three batches;
* a download read and the copy httpcore makes of it (``READ_BYTES`` each);
* small entries whose PutObject is out while the next are read
  (``SMALL_PUTS_IN_FLIGHT`` of up to ``SMALL_PUT_BYTES``).

Parts being sent come on top: up to ``PARTS_IN_FLIGHT`` per entry and
``PROCESS_PARTS_IN_FLIGHT`` in the whole process, each at most
``MAX_PART_SIZE`` (a part takes the pieces whole when they overshoot
``PART_SIZE`` by a quarter at most).
Nothing here grows with an entry's size. What the allocator keeps around
them is not counted: measured, 5-10 MB for one file (docs/decisions.md).
"""

from __future__ import annotations

from pipeline._adapters.aws.s3parts import (
    PROCESS_PARTS_IN_FLIGHT,
    SMALL_PUT_BYTES,
    SMALL_PUTS_IN_FLIGHT,
)
from pipeline._adapters.aws.s3sink import MAX_PART_SIZE, PART_SIZE, PARTS_IN_FLIGHT
from pipeline._adapters.httpreads import READ_BYTES
from pipeline._core.zip.decoder import MAX_DATA_CHUNK
from pipeline._core.zip.inflater import BATCH_BYTES

__all__ = ["STREAM_BYTES", "in_flight_bytes"]

STREAM_BYTES = (
    (PART_SIZE + MAX_DATA_CHUNK)
    + MAX_DATA_CHUNK
    + 3 * BATCH_BYTES
    + 2 * READ_BYTES
    + SMALL_PUTS_IN_FLIGHT * SMALL_PUT_BYTES
)
"""What one stream holds besides its parts being sent (18 MiB)."""


def in_flight_bytes(streams: int) -> int:
    """The most the byte path holds with ``streams`` streams in flight, parts being sent included.

    One stream: 18 MiB + 3 parts of up to 10 MiB = 48 MiB. Eight
    (``MAX_CONCURRENT_JOBS=8``, all busy): 8 x 18 MiB + 8 parts = 224 MiB, 28 MiB a file.
    """
    if streams < 0:
        msg = f"streams must not be negative, not {streams}"
        raise ValueError(msg)
    parts = min(streams * PARTS_IN_FLIGHT, PROCESS_PARTS_IN_FLIGHT)
    return streams * STREAM_BYTES + parts * MAX_PART_SIZE
