"""What a simulated file's download serves: bytes held, or bytes generated on demand."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Protocol

import attrs

# Largest body piece handed to hypercorn at once: big enough to stream fast,
# small enough that a break-off point or a throttle is honoured closely.
SEND_CHUNK_BYTES = 64 * 1024

__all__ = ["SEND_CHUNK_BYTES", "BodyProvider", "BytesBody", "GeneratedBody", "patterned_body"]


class BodyProvider(Protocol):
    """A file's bytes, produced on demand from any offset (so Range is cheap)."""

    @property
    def size(self) -> int:
        """Total size in bytes."""
        ...

    def iter_bytes(self, start: int) -> Iterator[bytes]:
        """The bytes from offset ``start`` to the end, in pieces of any size."""
        ...


@attrs.frozen
class BytesBody:
    """A body held in memory."""

    data: bytes = attrs.field(repr=lambda data: f"<{len(data)} bytes>")

    @property
    def size(self) -> int:
        """Total size in bytes."""
        return len(self.data)

    def iter_bytes(self, start: int) -> Iterator[bytes]:
        """The bytes from ``start``, without copying the whole tail at once."""
        view = memoryview(self.data)
        for offset in range(start, len(self.data), SEND_CHUNK_BYTES):
            yield bytes(view[offset : offset + SEND_CHUNK_BYTES])


@attrs.frozen
class GeneratedBody:
    """A body of ``size`` bytes made by ``produce(start)``, e.g. a generator function."""

    size: int
    produce: Callable[[int], Iterator[bytes]]

    def iter_bytes(self, start: int) -> Iterator[bytes]:
        """The bytes from ``start``, as ``produce`` makes them."""
        return self.produce(start)


def patterned_body(size: int, seed: int = 0) -> GeneratedBody:
    """``size`` pseudo-random bytes (a repeated 1 MiB block), addressable by offset.

    For throughput and resume tests on big files that must not sit in memory;
    the same ``seed`` gives the same bytes, so a test can recompute them.
    """
    block = random.Random(seed).randbytes(1 << 20)

    def produce(start: int) -> Iterator[bytes]:
        offset = start
        while offset < size:
            within = offset % len(block)
            piece = block[within : within + min(size - offset, len(block) - within)]
            yield piece
            offset += len(piece)

    return GeneratedBody(size=size, produce=produce)
