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

It also stops h11 copying each read twice more. h11 appends a read to its
receive buffer (a ``bytearray``), and hands body bytes out with
``maybe_extract_at_most``, which slices the buffer once to see whether it is
empty and again to hand the slice out, before httpcore copies that into
``bytes``: three copies of every downloaded byte on the event loop, 1.5 GB
of ``memcpy`` for a 500 MB ZIP. When the whole buffer goes out (a read that
holds only body bytes, the usual case for a large body) the buffer itself is
handed out and a new one started: one copy left, httpcore's. Handing out the
buffer is what the slice gave the caller anyway, a ``bytearray`` of its own.
"""

from __future__ import annotations

import h11._receivebuffer
import httpcore

__all__ = ["READ_BYTES", "use_large_reads"]

# The receive buffer's state that its own extract resets; a test fails if h11 renames it.
_BUFFER_FIELDS = ("_data", "_next_line_search", "_multiple_lines_search")

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
    buffer = h11._receivebuffer.ReceiveBuffer
    if not all(hasattr(buffer(), field) for field in _BUFFER_FIELDS):
        msg = "h11's ReceiveBuffer has other fields: h11 changed"
        raise RuntimeError(msg)
    buffer.maybe_extract_at_most = _maybe_extract_at_most  # type: ignore[method-assign]


def _maybe_extract_at_most(self: h11._receivebuffer.ReceiveBuffer, count: int) -> bytearray | None:
    """h11's own, without its two slices when the whole buffer goes out."""
    data: bytearray = self._data
    if not data:
        return None
    if count < len(data):
        out: bytearray = self._extract(count)
        return out
    self._data = bytearray()
    self._next_line_search = 0
    self._multiple_lines_search = 0
    return data
