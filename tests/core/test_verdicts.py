"""Entry verdicts: what a metadata item promises, and whether an entry keeps it."""

from __future__ import annotations

import hashlib

from pipeline._core.accounting import EntryOutcome
from pipeline._core.verdicts import (
    MetadataItem,
    Verdict,
    item_from_fields,
    verdict,
    worth_uploading,
)
from pipeline._core.zip.decoder import EntryDigest

CONTENT = b"hello"
DIGEST = EntryDigest(size=5, crc32=0, sha256_hex=hashlib.sha256(CONTENT).hexdigest())
MALFORMED = "metadata item is malformed"


def test_mismatch_names_what_differs() -> None:
    """Size is checked before SHA-256 (any case); an item that promises nothing matches all."""
    digest = "ab" * 32
    item = MetadataItem(path="a.txt", size_bytes=3, sha256=digest.upper())
    assert item.mismatch(3, digest) is None
    assert item.mismatch(4, digest) == "size 4 differs from the metadata's 3"
    assert item.mismatch(3, "cd" * 32) == "SHA-256 differs from the metadata's"
    assert MetadataItem(path="a.txt").mismatch(99, "cd" * 32) is None


class TestItemFromFields:
    def test_well_formed(self) -> None:
        """A whole size and a 64-hex SHA-256 (any case) are kept, lower-cased."""
        item = item_from_fields("p", {"sizeBytes": "5", "sha256": "AB" * 32})
        assert item == MetadataItem(path="p", size_bytes=5, sha256="ab" * 32)

    def test_absent_fields_promise_nothing(self) -> None:
        """No sizeBytes and an empty or missing sha256: no promise, no problem."""
        assert item_from_fields("p", {}) == MetadataItem(path="p")
        assert item_from_fields("p", {"sha256": ""}) == MetadataItem(path="p")
        assert item_from_fields("p", {"sha256": None}) == MetadataItem(path="p")

    def test_malformed_fields_are_the_items_problem(self) -> None:
        """A size not a whole number (or stored as another type), a short SHA-256: named."""
        odd = item_from_fields("p", {"sizeBytes": "1.5", "sha256": "abc"})
        assert odd.problem == (
            f"{MALFORMED}: sizeBytes '1.5' is not a whole number; sha256 is not 64 hex digits"
        )
        assert odd.size_bytes is None
        assert odd.sha256 is None
        for number in (None, "-1", "NaN", "Infinity", "x"):
            item = item_from_fields("p", {"sizeBytes": number})
            assert item.problem == f"{MALFORMED}: sizeBytes {number!r} is not a whole number"
        assert item_from_fields("p", {"sizeBytes": "2E+1"}).size_bytes == 20


class TestVerdict:
    def test_no_item_is_skipped(self) -> None:
        """An entry without an item is not ours: skipped, and not uploaded while read."""
        assert verdict(None, DIGEST) == Verdict(EntryOutcome.SKIPPED)
        assert not worth_uploading(None)

    def test_matching_item_is_uploaded(self) -> None:
        """Size and SHA-256 as promised: uploaded."""
        item = MetadataItem("p", size_bytes=5, sha256=DIGEST.sha256_hex)
        assert worth_uploading(item)
        assert verdict(item, DIGEST) == Verdict(EntryOutcome.UPLOADED)

    def test_mismatch_is_rejected_with_its_reason(self) -> None:
        """A size that differs rejects the entry, naming both sizes."""
        item = MetadataItem("p", size_bytes=6)
        assert verdict(item, DIGEST) == Verdict(
            EntryOutcome.REJECTED, "size 5 differs from the metadata's 6"
        )

    def test_malformed_item_rejects_its_entry(self) -> None:
        """A malformed item matches nothing: rejected with its problem, never uploaded."""
        item = item_from_fields("p", {"sizeBytes": "1.5"})
        assert not worth_uploading(item)
        assert verdict(item, DIGEST) == Verdict(EntryOutcome.REJECTED, item.problem)
