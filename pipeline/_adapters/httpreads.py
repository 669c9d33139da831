"""How much of a response httpcore asks the socket for at a time: 1 MiB, not 64 KiB.

httpcore receives a body ``READ_NUM_BYTES`` (64 KiB) per read, and every
read passes through trio, h11, httpcore and httpx: about 95 µs of Python
per read, whatever its size. A 100 MB ZIP is then 1,500 reads and 0.19
CPU-seconds on the event loop; at 1 MiB a read it is 100 reads and 0.04
(``python benchmarks/large_entries.py``, issue 10). A read returns what the
socket holds, never waits for the whole amount, so small answers (SQS,
DynamoDB, the Export API's JSON) are unchanged; a read's buffer is at most
1 MiB, once per connection receiving at that moment.

httpcore has no setting for it: the size is a class attribute of its HTTP/1.1
connection (upstream chose 64 KiB by measuring 4-160 KiB reads of a 1 MB
body, encode/httpcore#135). :func:`use_large_reads` sets it, once, when the
service opens its clients; a test fails if httpcore renames it.
"""

from __future__ import annotations

import httpcore

__all__ = ["READ_BYTES", "use_large_reads"]

READ_BYTES = 1024 * 1024


def use_large_reads(read_bytes: int = READ_BYTES) -> None:
    """Make every httpx client of this process read responses ``read_bytes`` at a time."""
    if read_bytes < 1:
        msg = f"read_bytes must be positive, not {read_bytes}"
        raise ValueError(msg)
    for connection in (httpcore.AsyncHTTP11Connection, httpcore.HTTP11Connection):
        if not isinstance(getattr(connection, "READ_NUM_BYTES", None), int):
            msg = f"{connection.__qualname__} has no READ_NUM_BYTES: httpcore changed"
            raise RuntimeError(msg)
        connection.READ_NUM_BYTES = read_bytes
