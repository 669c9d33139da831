"""Decode one ZIP entry: inflate, CRC-32, SHA-256 and limits in one pass, sans-IO.

Inflating is the service's CPU work, so it runs off the event loop through
``trio.to_thread.run_sync`` under the ``WORKER_POOL_SIZE`` limiter, with
python-isal's inflater when it imports (about twice zlib's speed here) and
zlib otherwise. isal, zlib and hashlib release the GIL on large buffers, so
two threads inflate two entries nearly twice as fast as one.

A thread hop costs 0.06-0.13 ms here, so the compressed bytes of an entry are
gathered into batches (:data:`~pipeline._core.zip.inflater.BATCH_BYTES`, 1 MiB,
which inflates for 3-10 ms; the batching is decided in :mod:`.inflater`)
and each call turns out at most :data:`MAX_DATA_CHUNK` bytes: memory per entry
is one batch plus one output piece whatever the entry's size or ratio, and a
bomb never materialises more than one piece. CRC-32, SHA-256 and the size are
updated on each piece in the same thread call (the piece's own CRC-32 is kept
for the uploader's part checksums: :attr:`EntryDecoder.last_crc32`), and the
limits are enforced on the bytes actually produced, each call asking the
inflater for no more than one byte past the limit.

Limits: when the entry's sizes are known up front (from the central
directory, or a local header without descriptor), the output may not exceed
the declared size (more is :class:`ZipCorrupt`: the records lie), nor
``MAX_ENTRY_SIZE_MB``, nor ``MAX_COMPRESSION_RATIO`` times the compressed
size, which the reader enforces on the input. When they are not known
(local headers only, sizes in a trailing descriptor) the ratio is checked
against the compressed bytes consumed so far, with :data:`RATIO_GRACE` of
slack for a very compressible beginning, and exactly once the entry ends.
Going over a limit refuses the entry (:class:`LimitExceeded`), not the file.

:func:`pipeline._service.inflate.read_zip` runs this decoder in worker threads
between the downloaded chunks and the uploader, as :mod:`.inflater` decides.
"""

from __future__ import annotations

import hashlib
import zlib
from typing import Any

import attrs

from pipeline._core.zip.format import METHOD_DEFLATED, METHOD_STORED, CentralEntry, ZipLimits
from pipeline._errors import ZipCorrupt

_inflater_module: Any
try:
    from isal import isal_zlib as _inflater_module

    INFLATE_LIBRARY = "isal"
    _INFLATE_ERRORS: tuple[type[Exception], ...] = (_inflater_module.error, zlib.error)
except ImportError:  # pragma: no cover - isal is a dependency; zlib is the fallback
    _inflater_module = zlib
    INFLATE_LIBRARY = "zlib"
    _INFLATE_ERRORS = (zlib.error,)

_crc32 = _inflater_module.crc32
# isal can join two CRC-32s (zlib's C function; Python's zlib does not offer
# it): each piece is then run through CRC-32 once, for its own CRC, which the
# uploader reuses for S3's part checksums, and the entry's follows by joining.
_crc32_combine: Any = getattr(_inflater_module, "crc32_combine", None)

__all__ = [
    "INFLATE_LIBRARY",
    "MAX_DATA_CHUNK",
    "RATIO_GRACE",
    "EntryDecoder",
    "EntryDigest",
    "LimitExceeded",
]

# Most uncompressed bytes one call produces and one EntryData carries: the
# pieces waiting for a part to fill and their fragments in the allocator are
# most of an entry's memory. Measured: 8 MiB pieces ran at 0.7x the speed of
# 4 MiB ones on one thread (allocator and cache effects); 2 MiB pieces cost
# the same CPU as 4 MiB ones end to end and take 9 MB less peak RSS with the
# rendezvous channel of the file stage (issue 10); 1 MiB ones cost more hops.
MAX_DATA_CHUNK = 2 * 1024 * 1024
# Without sizes up front the ratio is checked on the bytes consumed so far;
# a file may well begin far more compressible than it ends, so this much
# output is allowed beyond the ratio before the running check refuses.
RATIO_GRACE = 4 * 1024 * 1024


class LimitExceeded(Exception):
    """An entry inflates past ``MAX_ENTRY_SIZE_MB`` or ``MAX_COMPRESSION_RATIO``.

    A per-entry refusal, not a file failure: the inflater turns it into an
    :class:`~pipeline._core.zip.events.EntryRefused` and goes on with the next
    entry. ``reason`` is one line.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@attrs.frozen
class EntryDigest:
    """What an entry's content turned out to be: verified size, CRC-32 and SHA-256."""

    size: int
    crc32: int
    sha256_hex: str


class EntryDecoder:
    """Inflates (or passes through) one entry's compressed bytes, verifying as it goes.

    Feed it the entry's compressed bytes in order with :meth:`decode`; while
    :attr:`has_pending` is true, call ``decode(b"", ...)`` for the rest of the
    output before giving new bytes. :meth:`finish` checks the result. Every
    method is safe to run in a worker thread, one call at a time.

    Raises :class:`ZipCorrupt` (naming the entry) for bad deflate data, output
    past the declared size, a CRC or size mismatch, or a deflate stream that
    ends early or not at all; :class:`LimitExceeded` for output over a limit.
    """

    def __init__(self, entry: CentralEntry, limits: ZipLimits) -> None:
        if entry.method not in (METHOD_STORED, METHOD_DEFLATED):
            msg = f"cannot decode method {entry.method}; refuse the entry instead"
            raise ValueError(msg)
        self.entry = entry
        self._limits = limits
        self._inflater: Any = (
            _inflater_module.decompressobj(-15) if entry.method == METHOD_DEFLATED else None
        )
        self._pending: bytes | memoryview = b""
        self._more = False
        self._ended = False
        self._unused = b""
        self._taken = 0
        self._size = 0
        self._crc = 0
        self._last_crc = 0
        self._sha = hashlib.sha256()
        # The most output that is not yet an error of one kind or the other.
        known = entry.sizes_known
        self._corrupt_above = entry.uncompressed_size if known else None
        self._limit_above = limits.max_entry_size
        if known and self._inflater is not None:
            ratio_cap = int(limits.max_ratio * entry.compressed_size)
            self._limit_above = min(self._limit_above, ratio_cap)

    @property
    def has_pending(self) -> bool:
        """Output is left from input already given: call ``decode(b"", ...)``."""
        if self._inflater is None:
            return bool(self._pending)
        return not self._ended and (bool(self._pending) or self._more)

    @property
    def ended(self) -> bool:
        """The deflate stream's last block has been inflated."""
        return self._ended

    @property
    def unused(self) -> bytes:
        """Bytes given after the end of the deflate stream."""
        return self._unused

    @property
    def size(self) -> int:
        """Uncompressed bytes produced so far."""
        return self._size

    @property
    def last_crc32(self) -> int:
        """CRC-32 of the piece the last :meth:`decode` returned (0 for none)."""
        return self._last_crc

    def decode(self, data: bytes, max_output: int) -> bytes:
        """Take ``data`` and return at most ``max_output`` uncompressed bytes."""
        if max_output <= 0:
            msg = f"max_output must be positive, not {max_output}"
            raise ValueError(msg)
        if data and self.has_pending:
            msg = "decode() given new data while output is pending"
            raise RuntimeError(msg)
        self._taken += len(data)
        if self._inflater is None:
            out = self._pass_through(data, max_output)
        else:
            out = self._inflate(data, max_output)
        if out:
            self._size += len(out)
            self._last_crc = _crc32(out)
            if _crc32_combine is not None:
                self._crc = _crc32_combine(self._crc, self._last_crc, len(out))
            else:  # pragma: no cover - zlib fallback: a second pass instead
                self._crc = _crc32(out, self._crc)
            self._sha.update(out)
            self._check_limits()
        else:
            self._last_crc = 0
        return out

    def _pass_through(self, data: bytes, max_output: int) -> bytes:
        if data:
            if len(data) <= max_output:
                return data
            self._pending = memoryview(data)
        out = bytes(self._pending[:max_output])
        self._pending = self._pending[max_output:]
        return out

    def _inflate(self, data: bytes, max_output: int) -> bytes:
        name = self.entry.name
        if self._ended:
            if not self.entry.sizes_known:
                self._unused += data
            # With sizes known, bytes between the deflate stream's end and the
            # compressed size are padding: ignored, as zipfile does (the
            # content is still checked against its size and CRC-32).
            return b""
        ceiling = self._limit_above
        if self._corrupt_above is not None:
            ceiling = min(ceiling, self._corrupt_above)
        # One byte past the tightest bound is enough to tell it was crossed.
        want = max(1, min(max_output, ceiling - self._size + 1))
        try:
            out: bytes = self._inflater.decompress(data or self._pending, want)
        except _INFLATE_ERRORS as err:
            msg = f"{name!r}: deflate data is corrupt ({err})"
            raise ZipCorrupt(msg) from err
        if self._inflater.eof:
            self._ended = True
            self._more = False
            self._pending = b""
            # zlib also leaves these bytes in unconsumed_tail: read only this.
            # With sizes known they are padding before the next record (see above).
            self._unused = b"" if self.entry.sizes_known else self._inflater.unused_data
        else:
            self._pending = self._inflater.unconsumed_tail
            self._more = len(out) == want
        return out

    def _check_limits(self) -> None:
        size, entry, limits = self._size, self.entry, self._limits
        if size > limits.max_entry_size:
            reason = f"inflates past the limit of {limits.max_entry_size} bytes (MAX_ENTRY_SIZE_MB)"
            raise LimitExceeded(reason)
        if self._corrupt_above is not None:
            if size > self._limit_above:
                raise LimitExceeded(self._ratio_reason(entry.compressed_size))
            if size > self._corrupt_above:
                msg = (
                    f"{entry.name!r} inflates to more than the "
                    f"{self._corrupt_above} bytes its records declare"
                )
                raise ZipCorrupt(msg)
        elif self._inflater is not None:
            consumed = self._taken - len(self._pending) - len(self._unused)
            if size > limits.max_ratio * consumed + RATIO_GRACE:
                raise LimitExceeded(self._ratio_reason(consumed))

    def _ratio_reason(self, packed: int) -> str:
        return (
            f"inflates past {self._limits.max_ratio:g} times its {packed} compressed "
            "bytes (MAX_COMPRESSION_RATIO)"
        )

    def finish(self, entry: CentralEntry | None = None) -> EntryDigest:
        """Check the content against ``entry`` (default: the one decoded) and digest it.

        Pass the entry of the reader's :class:`~pipeline._core.zip.events.EntryEnd`:
        in the local-headers mode it carries the data descriptor's values.
        """
        expected = self.entry if entry is None else entry
        name = expected.name
        if self.has_pending:
            msg = "finish() called while output is pending"
            raise RuntimeError(msg)
        # A deflated entry of no bytes may carry no deflate stream at all.
        empty = self._taken == 0 and expected.compressed_size == 0
        if self._inflater is not None and not self._ended and not empty:
            msg = (
                f"{name!r}: deflate stream is truncated "
                f"(no end within its {self._taken} compressed bytes)"
            )
            raise ZipCorrupt(msg)
        if self._size != expected.uncompressed_size:
            msg = (
                f"{name!r} inflates to {self._size} bytes, "
                f"its records say {expected.uncompressed_size}"
            )
            raise ZipCorrupt(msg)
        if self._crc != expected.crc32:
            msg = (
                f"{name!r}: CRC-32 mismatch (content {self._crc:08x}, "
                f"records say {expected.crc32:08x})"
            )
            raise ZipCorrupt(msg)
        packed = expected.compressed_size
        if self._inflater is not None and self._size > self._limits.max_ratio * packed:
            raise LimitExceeded(self._ratio_reason(packed))
        return EntryDigest(size=self._size, crc32=self._crc, sha256_hex=self._sha.hexdigest())
