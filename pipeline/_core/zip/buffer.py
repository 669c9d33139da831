"""The stream reader's input: what is left of the chunks fed so far, and where it is.

Entry data is handed on as soon as it arrives: a chunk lying wholly inside an
entry's data is handed on as the same object, without a copy. Only an
incomplete record is kept over, in a ``bytearray`` that later chunks extend
and that is trimmed once per feed, so the work stays linear in the input even
for one-byte chunks.
"""

from __future__ import annotations

__all__ = ["StreamBuffer"]


class StreamBuffer:
    """Unread input and its archive offset; the base of the stream reader."""

    def __init__(self, base: int) -> None:
        # Unread input: the caller's chunk itself when nothing was left over
        # (so a chunk inside entry data is handed on without a copy), else a
        # bytearray of what was left over with the new chunk appended.
        self._buf: bytes | bytearray = b""
        self._off = 0
        # Archive offset of _buf[0].
        self._base = base

    def _append(self, data: bytes) -> None:
        if self._buf:
            self._buf += data
        else:
            # Kept as is only when immutable: a caller's bytearray may change.
            self._buf = data if type(data) is bytes else bytes(data)

    def _compact(self) -> None:
        """Drop what was read; keep the rest as a bytearray that later chunks extend."""
        if self._off == len(self._buf):
            self._buf = b""
        elif self._off or isinstance(self._buf, bytes):
            self._buf = bytearray(memoryview(self._buf)[self._off :])
        self._base += self._off
        self._off = 0

    @property
    def _available(self) -> int:
        return len(self._buf) - self._off

    @property
    def _position(self) -> int:
        return self._base + self._off

    def _take(self, count: int) -> bytes:
        start, buf = self._off, self._buf
        self._off += count
        if isinstance(buf, bytes):
            # A whole chunk comes back as the very same object.
            return buf[start : start + count]
        with memoryview(buf) as view:
            return bytes(view[start : start + count])
