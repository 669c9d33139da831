"""Which jobs this process has just changed: the source of ``GET /events``.

The job store notes every export whose summary item it wrote (a begin, a
listing, a file's counts, the end). Noting is a set insertion per listener,
and nothing at all when nobody listens, so the live view costs the work
nothing while no page is open.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["JobChanges"]


class JobChanges:
    """Listeners told the export ID of each job item this process writes."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[str], None]] = []

    def note(self, export_id: str) -> None:
        for listener in self._listeners:
            listener(export_id)

    @property
    def listened(self) -> bool:
        return bool(self._listeners)

    def add(self, listener: Callable[[str], None]) -> None:
        """Call ``listener`` for every change from now on."""
        self._listeners.append(listener)
