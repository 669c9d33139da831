r"""The pieces of an S3 upload that carry its bytes: zero-copy bodies, checksums, parts in flight.

:class:`PartBody` sends buffers already in memory as one request body without
joining them; :class:`Pieces` cuts them into :class:`Part`\ s, each with the
CRC-32 for its ``x-amz-checksum-crc32``, joined from the pieces' own CRC-32s
(isal) so that neither botocore nor we read the bytes again;
:class:`PartWindow` keeps a bounded number of an upload's parts in flight as
tasks of the caller's nursery, as boto3's transfer manager does with threads,
and the process as a whole at most :data:`PROCESS_PARTS_IN_FLIGHT`, so its
memory stays flat however many large entries are open at once.
"""

from __future__ import annotations

import base64
import functools
import zlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any

import trio

_crc32_combine: Callable[[int, int, int], int] | None
try:
    from isal.isal_zlib import crc32 as _crc32
    from isal.isal_zlib import crc32_combine as _crc32_combine
except ImportError:  # pragma: no cover - isal is a dependency; zlib is the fallback
    _crc32 = zlib.crc32
    _crc32_combine = None

__all__ = [
    "PROCESS_PARTS_IN_FLIGHT",
    "SMALL_PUTS_IN_FLIGHT",
    "SMALL_PUT_BYTES",
    "Part",
    "PartBody",
    "PartWindow",
    "Pieces",
]

Buffer = bytes | memoryview

# Parts in flight in the whole process, whatever the number of uploads: each
# holds a part (8 to 10 MiB) in memory, so this bounds that memory (80 MiB);
# one upload still gets its own limit when it is alone.
PROCESS_PARTS_IN_FLIGHT = 8
# An entry up to this size is one PutObject that its file's reader sends
# while it reads the next entries (a PartWindow of their own), up to
# SMALL_PUTS_IN_FLIGHT of a file at once: a ZIP of small entries otherwise
# waits one S3 round trip per entry (issue 22). Memory: 1 MiB per file.
SMALL_PUT_BYTES = 256 * 1024
SMALL_PUTS_IN_FLIGHT = 4
# One limiter per trio run, as trio keeps its default thread limiter.
_process_limiter: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar(
    "pipeline_parts_in_flight"
)


def _shared_limiter() -> trio.CapacityLimiter:
    try:
        return _process_limiter.get()
    except LookupError:
        limiter = trio.CapacityLimiter(PROCESS_PARTS_IN_FLIGHT)
        _process_limiter.set(limiter)
        return limiter


class Part:
    """The buffers of one part as they were written, and their CRC-32."""

    def __init__(self, buffers: list[Buffer], crc32: int) -> None:
        self.buffers = buffers
        self.crc32 = crc32
        self.size = sum(len(buffer) for buffer in buffers)

    @property
    def checksum(self) -> str:
        """The CRC-32, base64 as S3's ``x-amz-checksum-crc32`` wants."""
        return base64.b64encode(self.crc32.to_bytes(4, "big")).decode()


class Pieces:
    """Bytes written and not yet sent, held as written: never joined, never copied.

    A piece may come with its CRC-32 (the decoder computes it anyway); a
    part's CRC-32 is then joined from its pieces' (``crc32_combine``), and
    only where a part boundary splits a piece are bytes read again, those of
    the piece's first side. A piece without one is read once when taken.
    """

    def __init__(self) -> None:
        self._pieces: deque[tuple[Buffer, int | None]] = deque()
        self.size = 0

    def add(self, data: bytes, crc32: int | None = None) -> None:
        """Keep ``data`` (which must not change until it is sent: ``bytes`` cannot).

        ``crc32``, when given, must be the CRC-32 of ``data``.
        """
        if data:
            self._pieces.append((data, crc32))
            self.size += len(data)

    def take(self, size: int) -> Part:
        """The first ``size`` bytes (at most :attr:`size`), as the buffers or views holding them."""
        buffers: list[Buffer] = []
        crc = 0
        need = size
        while need:
            piece, piece_crc = self._pieces[0]
            if len(piece) <= need:
                self._pieces.popleft()
                need -= len(piece)
            else:
                view = memoryview(piece)
                piece, rest = view[:need], view[need:]
                head_crc = _crc32(piece)
                self._pieces[0] = (rest, _rest_crc(piece_crc, head_crc, len(rest)))
                piece_crc = head_crc
                need = 0
            buffers.append(piece)
            crc = _join_crc(crc, piece, piece_crc)
        self.size -= size
        return Part(buffers, crc)

    def clear(self) -> None:
        self._pieces.clear()
        self.size = 0


def _join_crc(crc: int, piece: Buffer, piece_crc: int | None) -> int:
    """The CRC-32 of the bytes behind ``crc`` followed by ``piece``."""
    if _crc32_combine is None or piece_crc is None:
        return _crc32(piece, crc)
    return _crc32_combine(crc, piece_crc, len(piece))


def _rest_crc(whole: int | None, head: int, rest_size: int) -> int | None:
    """The CRC-32 of a piece's bytes after its head, from the whole's and the head's."""
    if whole is None or _crc32_combine is None:
        return None
    # combine(head, rest, n) = shift(head, n) ^ rest, and shift(head, n) = combine(head, 0, n).
    return whole ^ _crc32_combine(head, 0, rest_size)


class PartBody:
    """A request body over buffers already in memory, sent without joining them.

    botocore accepts any object with ``read`` as a streaming body, and
    aiobotocore's httpx session sends an async-iterable body piece by piece:
    each buffer goes to the socket as it is (a ``bytes`` buffer passes h11
    without a copy). ``read`` is there for botocore's checks and for callers
    that want the bytes; the sending path never calls it. ``seek(0)`` rewinds,
    which botocore does before it sends a request again. A fresh body is
    still made for every attempt.
    """

    def __init__(self, pieces: Sequence[Buffer]) -> None:
        self._pieces = tuple(pieces)
        self._size = sum(len(piece) for piece in self._pieces)
        self._position = 0

    def __len__(self) -> int:
        return self._size

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = 0) -> int:
        """Move to ``offset`` from the start (``whence`` 0) or the end (2)."""
        base = {0: 0, 2: self._size}.get(whence)
        if base is None:
            msg = f"whence must be 0 or 2, not {whence}"
            raise ValueError(msg)
        self._position = min(max(0, base + offset), self._size)
        return self._position

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes from the position (all that is left when negative)."""
        end = self._size if size < 0 else min(self._size, self._position + size)
        out = b"".join(self._slices(self._position, end))
        self._position = end
        return out

    def _slices(self, start: int, end: int) -> Iterator[Buffer]:
        at = 0
        for piece in self._pieces:
            piece_end = at + len(piece)
            if piece_end > start and at < end:
                lo, hi = max(start - at, 0), min(end, piece_end) - at
                yield piece if (lo, hi) == (0, len(piece)) else memoryview(piece)[lo:hi]
            at = piece_end

    def __iter__(self) -> Iterator[Buffer]:
        end = self._size
        yield from self._slices(self._position, end)
        self._position = end

    async def __aiter__(self) -> AsyncIterator[Buffer]:
        for piece in self:
            yield piece


class PartWindow:
    """At most ``limit`` sends of one upload in flight, as tasks of ``nursery``.

    Each send also holds a token of ``shared`` (by default the process's
    limiter of :data:`PROCESS_PARTS_IN_FLIGHT`) while it runs; :meth:`submit`
    waits for both.

    Without a nursery every send runs in the caller's task, one after another.
    A send that fails (its retries spent, or a bug) cancels the others of the
    window and is re-raised to the writer by the next :meth:`submit` or
    :meth:`drain`: the error never reaches the nursery, so the caller's other
    tasks go on and the upload is aborted by its owner. Cancellation of the
    nursery cancels the sends as any of its tasks.
    """

    def __init__(
        self,
        nursery: trio.Nursery | None,
        limit: int,
        shared: trio.CapacityLimiter | None = None,
    ) -> None:
        if limit < 1:
            msg = f"limit must be at least 1, not {limit}"
            raise ValueError(msg)
        self._nursery = nursery
        self._limit = limit
        self._shared = shared
        self._running = 0
        self._scopes: set[trio.CancelScope] = set()
        self._changed = trio.Event()
        self._error: BaseException | None = None

    @property
    def in_flight(self) -> int:
        """Sends started and not yet finished."""
        return self._running

    def raise_failure(self) -> None:
        """Re-raise the first failed send's error, if any."""
        if self._error is not None:
            raise self._error

    async def submit(self, send: Callable[[], Awaitable[Any]]) -> None:
        """Start ``send`` once fewer than ``limit`` are in flight (or run it, without a nursery)."""
        self.raise_failure()
        if self._nursery is None:
            await send()
            return
        while self._running >= self._limit and self._error is None:
            await self._changed.wait()
        self.raise_failure()
        shared = self._shared or _shared_limiter()
        token = object()
        await shared.acquire_on_behalf_of(token)
        release = functools.partial(shared.release_on_behalf_of, token)
        if self._error is not None:  # a send failed while this one waited
            release()
            self.raise_failure()
        self._running += 1
        # Made here, not in the task: a stop() before the task first runs
        # must still reach it.
        scope = trio.CancelScope()
        self._scopes.add(scope)
        self._nursery.start_soon(self._run, send, scope, release)

    async def drain(self) -> None:
        """Wait until nothing is in flight; raises the first failed send's error."""
        while self._running:
            await self._changed.wait()
        self.raise_failure()

    async def stop(self) -> None:
        """Cancel what is in flight and wait for it to end (failures are not raised)."""
        for scope in self._scopes:
            scope.cancel()
        while self._running:
            await self._changed.wait()

    async def _run(
        self,
        send: Callable[[], Awaitable[Any]],
        scope: trio.CancelScope,
        release: Callable[[], None],
    ) -> None:
        try:
            with scope:
                await send()
        except Exception as err:
            # Kept for the writer, which aborts the upload; the rest is moot.
            if self._error is None:
                self._error = err
            for other in self._scopes:
                other.cancel()
        finally:
            release()
            self._scopes.discard(scope)
            self._running -= 1
            self._changed.set()
            self._changed = trio.Event()
