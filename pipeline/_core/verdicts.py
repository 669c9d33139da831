"""Entry verdicts: what an export promises about an entry, and whether the entry keeps it.

Contract 4: an entry is uploaded only when its size and SHA-256 match its
metadata item; an entry with no item is not ours to upload (skipped); an item
that is itself malformed matches no entry, so its entry is rejected with the
item's problem as the reason, and only that entry. These rules are the same
whoever fetched the item, so they live here; the metadata adapter
(:mod:`pipeline._adapters.aws.metadata`) only reads items from DynamoDB and
builds them with :func:`item_from_fields`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import TypeGuard

import attrs

from pipeline._core.accounting import EntryOutcome
from pipeline._core.zip.decoder import EntryDigest

__all__ = ["MetadataItem", "Verdict", "item_from_fields", "verdict", "worth_uploading"]

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@attrs.frozen
class MetadataItem:
    """What the export promises about one entry; ``None`` where it promises nothing.

    ``problem`` says why the item itself is malformed (a size that is not a
    whole number, a SHA-256 that is not 64 hex digits): no entry can match
    such an item, so its entry is rejected with that reason, and only it.
    """

    path: str
    size_bytes: int | None = None
    sha256: str | None = None
    problem: str | None = None

    def mismatch(self, size: int, sha256_hex: str) -> str | None:
        """Why an entry of ``size`` and ``sha256_hex`` does not match, ``None`` when it does."""
        if self.size_bytes is not None and self.size_bytes != size:
            return f"size {size} differs from the metadata's {self.size_bytes}"
        if self.sha256 is not None and self.sha256.lower() != sha256_hex:
            return "SHA-256 differs from the metadata's"
        return None


def item_from_fields(path: str, fields: Mapping[str, str | None]) -> MetadataItem:
    """The item for ``path`` from its stored fields, as text: ``sizeBytes`` and ``sha256``.

    A field absent from ``fields`` promises nothing; one present but not
    well-formed (``None`` included: stored with another type) makes the item's
    :attr:`~MetadataItem.problem`. An empty ``sha256`` promises nothing.
    """
    size: int | None = None
    problems: list[str] = []
    if "sizeBytes" in fields:
        number = fields["sizeBytes"]
        try:
            value = Decimal("NaN" if number is None else number)
        except InvalidOperation:
            value = Decimal("NaN")
        if not value.is_finite() or value != value.to_integral_value() or value < 0:
            problems.append(f"sizeBytes {number!r} is not a whole number")
        else:
            size = int(value)
    sha = fields.get("sha256")
    sha = sha.lower() if sha else None
    if sha is not None and not _SHA256_HEX.fullmatch(sha):
        problems.append("sha256 is not 64 hex digits")
        sha = None
    problem = f"metadata item is malformed: {'; '.join(problems)}" if problems else None
    return MetadataItem(path=path, size_bytes=size, sha256=sha, problem=problem)


def worth_uploading(item: MetadataItem | None) -> TypeGuard[MetadataItem]:
    """Whether an entry's bytes should go to S3 while it is read (its verdict comes at the end).

    Without an item, or with a malformed one, the entry cannot be uploaded,
    so it is only read and verified.
    """
    return item is not None and item.problem is None


@attrs.frozen
class Verdict:
    """What happens to an entry read to its end: its outcome, and why when rejected."""

    outcome: EntryOutcome
    reason: str | None = None


def verdict(item: MetadataItem | None, digest: EntryDigest) -> Verdict:
    """The verdict on a verified entry of ``digest`` whose metadata item is ``item``."""
    if item is None:
        return Verdict(EntryOutcome.SKIPPED)
    reason = item.problem or item.mismatch(digest.size, digest.sha256_hex)
    if reason is not None:
        return Verdict(EntryOutcome.REJECTED, reason)
    return Verdict(EntryOutcome.UPLOADED)
