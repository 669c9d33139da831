"""The file workers' figures for ``GET /health``: how busy the pool is, and how it did.

Plain counters the file stage moves (sans-IO); the HTTP side reads them.
"""

from __future__ import annotations

import attrs

__all__ = ["PoolFigures"]


@attrs.define
class PoolFigures:
    """Files in flight and finished in this process since it started."""

    in_flight: int = 0
    completed: int = 0
    failed: int = 0
    _total_seconds: float = 0.0

    def started(self) -> None:
        """A worker took a file."""
        self.in_flight += 1

    def finished(self, *, ok: bool | None, seconds: float) -> None:
        """A file's processing ended: done (True), failed for good (False), or handed
        back to be tried again (None, counted as neither)."""
        self.in_flight -= 1
        if ok is None:
            return
        if ok:
            self.completed += 1
        else:
            self.failed += 1
        self._total_seconds += seconds

    @property
    def avg_processing_ms(self) -> float:
        """Mean processing time of the finished files (0 before the first)."""
        finished = self.completed + self.failed
        return 0.0 if finished == 0 else round(1000 * self._total_seconds / finished, 1)
