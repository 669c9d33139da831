"""What the stream reader hands out: an entry's start, its compressed bytes, its end.

Small frozen values, in stream order; a refused entry gives one
:class:`EntryRefused` and nothing else.
"""

from __future__ import annotations

import attrs

from pipeline._core.zip.format import CentralEntry

__all__ = ["EntryCompressed", "EntryEnd", "EntryRefused", "EntryStart", "ZipEvent"]


@attrs.frozen
class EntryStart:
    """An entry begins; its compressed bytes follow as :class:`EntryCompressed`."""

    entry: CentralEntry


@attrs.frozen
class EntryCompressed:
    """Compressed bytes of the entry last started, any length, in order."""

    data: bytes


@attrs.frozen
class EntryEnd:
    """The entry's compressed bytes are complete.

    ``entry`` is the one to verify against: the directory's record, or in the
    local-headers mode the local header completed by its data descriptor.
    """

    entry: CentralEntry


@attrs.frozen
class EntryRefused:
    """An entry that must not be written; its bytes are skipped, never handed out."""

    entry: CentralEntry
    reason: str


ZipEvent = EntryStart | EntryCompressed | EntryEnd | EntryRefused
