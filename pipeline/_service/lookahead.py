"""Metadata items looked up a window ahead of the reader, in the order the body brings entries.

The central directory names every entry before the body arrives, in stream
order. Looking them all up first held a name and an item per entry (about
290 bytes: 290 MB for an archive of a million entries with metadata); looking
each up as it comes would cost one DynamoDB call per entry. The window takes
the next :data:`LOOKAHEAD_NAMES` names in one go (BatchGetItem, 100 keys a
call) when the uploader asks for one it does not hold: memory is one window,
the calls as many as before.

The only ZIP of an export with no more than :data:`LOOKAHEAD_NAMES` metadata
items has them all read in one Query instead (:func:`known_metadata`): the
same call also tells its job's ``entriesMissing``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping

import trio

from pipeline._adapters.aws.metadata import MetadataTable
from pipeline._core.verdicts import MetadataItem
from pipeline._core.zip.format import CentralEntry

__all__ = ["LOOKAHEAD_NAMES", "AheadLookup", "known_lookup", "known_metadata", "one_by_one"]

# Names looked up per window: ten BatchGetItem calls, about 300 KB of items.
LOOKAHEAD_NAMES = 1000


class AheadLookup:
    """``get(name)`` for entries asked in ``entries``' order (directories left out).

    A name asked again right away (an entry refused after it was opened) is
    answered from the last answer; a name not in the next window (which the
    reader never asks for) is looked up alone. Errors are the metadata
    adapter's (:class:`~pipeline._errors.RetriesExhausted` past the retries).
    """

    def __init__(
        self,
        table: MetadataTable,
        export_id: str,
        entries: Iterable[CentralEntry],
        *,
        window: int = LOOKAHEAD_NAMES,
    ) -> None:
        if window <= 0:
            msg = f"window must be positive, not {window}"
            raise ValueError(msg)
        self._table = table
        self._export_id = export_id
        self._names = (entry.name for entry in entries if not entry.is_dir)
        self._size = window
        # Looked up and not asked for yet; a name without an item maps to None.
        self._window: dict[str, MetadataItem | None] = {}
        self._last: tuple[str, MetadataItem | None] | None = None

    async def get(self, name: str) -> MetadataItem | None:
        """The metadata item of ``name``, or ``None`` when it has none."""
        await trio.lowlevel.checkpoint()
        if self._last is not None and self._last[0] == name:
            return self._last[1]
        if name not in self._window:
            await self._next_window()
        if name in self._window:
            item = self._window.pop(name)
        else:
            item = (await self._lookup([name])).get(name)
        self._last = (name, item)
        return item

    async def _next_window(self) -> None:
        names = []
        for name in self._names:
            names.append(name)
            if len(names) == self._size:
                break
        found = await self._lookup(names) if names else {}
        # What the last window held and nobody asked for is dropped: memory
        # stays one window whatever happens.
        self._window = {name: found.get(name) for name in names}

    async def _lookup(self, names: list[str]) -> dict[str, MetadataItem]:
        return await self._table.lookup(self._export_id, names)


Lookup = Callable[[str], Awaitable[MetadataItem | None]]


def known_lookup(metadata: Mapping[str, MetadataItem] | None) -> Lookup | None:
    """``get(name)`` over every metadata item of the export, read already; ``None`` without."""
    if metadata is None:
        return None

    async def get(name: str) -> MetadataItem | None:
        await trio.lowlevel.checkpoint()
        return metadata.get(name)

    return get


async def known_metadata(table: MetadataTable, export_id: str) -> dict[str, MetadataItem] | None:
    """Every metadata item of the export in one Query; ``None`` when it has more than a window."""
    return await table.all_items(export_id, most=LOOKAHEAD_NAMES)


def one_by_one(table: MetadataTable, export_id: str) -> Lookup:
    """``get(name)`` entry by entry: without the directory there is no window to read ahead."""

    async def get(name: str) -> MetadataItem | None:
        return (await table.lookup(export_id, [name])).get(name)

    return get
