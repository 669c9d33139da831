"""The one vocabulary of a ZIP's entries, spoken by the reader, the inflater and the uploader.

Small frozen values, in stream order, shared as hypercorn's ``protocol/events.py``
is shared by its protocol and its trio side: the seam between the sans-IO
reader and the threads that inflate adds no vocabulary of its own.

- The stream reader (:class:`~pipeline._core.zip.stream.ZipStreamReader`)
  says :class:`EntryStart`, :class:`EntryCompressed`..., :class:`EntryEnd`, or
  :class:`EntryRefused` alone: :data:`ZipEvent`.
- The inflater (:class:`~pipeline._core.zip.inflater.ZipInflater`, run by
  :func:`pipeline._service.inflate.read_zip`) passes the starts and refusals
  on as they are and turns the rest into :class:`EntryData`..., then
  :class:`EntryClosed`: :data:`ContentEvent`, what the uploader consumes.
"""

from __future__ import annotations

import attrs

from pipeline._core.zip.decoder import EntryDigest
from pipeline._core.zip.format import CentralEntry

__all__ = [
    "ContentEvent",
    "EntryClosed",
    "EntryCompressed",
    "EntryData",
    "EntryEnd",
    "EntryRefused",
    "EntryStart",
    "ZipEvent",
]


@attrs.frozen
class EntryStart:
    """An entry begins; its bytes follow (compressed from the reader, content from the inflater).

    The inflater passes it on for every entry but directories.
    """

    entry: CentralEntry


@attrs.frozen
class EntryCompressed:
    """Compressed bytes of the entry last started, any length, in order (reader only)."""

    data: bytes


@attrs.frozen
class EntryEnd:
    """The entry's compressed bytes are complete (reader only).

    ``entry`` is the one to verify against: the directory's record, or in the
    local-headers mode the local header completed by its data descriptor.
    """

    entry: CentralEntry


@attrs.frozen
class EntryRefused:
    """An entry that must not be written, with a one-line reason.

    Refused by its records: the reader says it alone, without
    :class:`EntryStart`, and its bytes are skipped. Refused while inflating (a
    limit): the inflater says it after :class:`EntryStart` and some
    :class:`EntryData`, which the consumer discards. Never said for directories
    by the inflater.
    """

    entry: CentralEntry
    reason: str


@attrs.frozen
class EntryData:
    """A piece of the open entry's content, at most ``MAX_DATA_CHUNK`` bytes (inflater only).

    ``crc32`` is the piece's own CRC-32, computed while decoding: the uploader
    builds S3's part checksums from it rather than reading the bytes again.
    """

    data: bytes
    crc32: int


@attrs.frozen
class EntryClosed:
    """The open entry is complete and verified: its CRC-32 and size match its records."""

    entry: CentralEntry
    digest: EntryDigest


ZipEvent = EntryStart | EntryCompressed | EntryEnd | EntryRefused
"""What the stream reader says."""

ContentEvent = EntryStart | EntryData | EntryClosed | EntryRefused
"""What the inflater says: the entries' verified content."""
