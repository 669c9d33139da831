"""The exports of the chaos benchmark: mixed shapes, each with the outcome it must reach.

Every fixture says what its export must end as, whatever happened on the
way: the job's final status and exact counts, the objects in S3 (bytes, and
``sha256`` metadata), and for a FAILED job a word its reason must contain.
The shapes are drawn from a seeded generator, so a seed replays the same
exports.

* ``small``: one ZIP of a few entries;
* ``mixed``: three ZIPs with a directory entry, an entry without metadata
  (skipped), one whose metadata item disagrees (rejected) and a metadata
  item no ZIP contains (missing);
* ``paged``: eight one-entry ZIPs listed three at a time with empty pages;
* ``pending``: PENDING for two polls, then READY;
* ``stored``: stored entries with data descriptors (ZIP64 records);
* ``large``: a 9 MiB entry (a multipart upload);
* ``corrupt``: a good ZIP and one whose second entry has a bad CRC: FAILED,
  with the good ZIP's entries and the first entry of the bad one uploaded;
* ``unknown``: never added to the Export API: FAILED on its 404;
* ``failed``: the Export API says the export FAILED: FAILED.
"""

from __future__ import annotations

import hashlib
import random
import sys
import zipfile
from pathlib import Path
from typing import Any

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline._adapters.aws.metadata import MetadataItem
from pipeline._core.accounting import JobStatus, JobSummary
from pipeline.testing.demo import build_zip, metadata_for, records
from pipeline.testing.simulator import Simulator
from tests.support.zipfactory import make_zip

__all__ = ["SHAPES", "Fixture", "make_fixture", "make_fixtures", "sha256"]

# How often each shape is drawn (weights).
SHAPES: dict[str, int] = {
    "small": 30,
    "mixed": 18,
    "paged": 10,
    "pending": 10,
    "stored": 10,
    "large": 4,
    "corrupt": 6,
    "unknown": 6,
    "failed": 6,
}
LARGE_ENTRY_BYTES = 9 * 1024 * 1024


@attrs.frozen
class Fixture:
    """One export and the outcome it must reach."""

    export_id: str
    shape: str
    files: list[tuple[str, bytes]]
    metadata: list[MetadataItem]
    objects: dict[str, bytes]
    status: JobStatus
    summary: JobSummary
    # A FAILED job's reason must contain this.
    reason: str | None = None
    # How the Export API serves it (Simulator.add_export); None: it does not know it.
    serve: dict[str, Any] | None = attrs.field(factory=dict)

    def add_to(self, simulator: Simulator) -> None:
        if self.serve is not None:
            simulator.add_export(self.export_id, self.files, **self.serve)


def _entries(
    rng: random.Random, prefix: str, count: int, low: int, high: int
) -> list[tuple[str, bytes]]:
    return [(f"{prefix}/e{n}.jsonl", records(rng, rng.randrange(low, high))) for n in range(count)]


def _completed(
    export_id: str, shape: str, zips: list[list[tuple[str, bytes]]], **serve: Any
) -> Fixture:
    """Every entry has its metadata item: all uploaded, COMPLETED."""
    entries = [entry for files in zips for entry in files]
    objects = {name: data for name, data in entries if not name.endswith("/")}
    return Fixture(
        export_id,
        shape,
        files=[(f"part-{n:04d}.zip", build_zip(files)) for n, files in enumerate(zips, 1)],
        metadata=metadata_for(entries),
        objects=objects,
        status=JobStatus.COMPLETED,
        summary=JobSummary(
            files_total=len(zips),
            files_done=len(zips),
            entries_uploaded=len(objects),
            bytes_uploaded=sum(map(len, objects.values())),
        ),
        serve=serve,
    )


def _mixed(rng: random.Random, export_id: str) -> Fixture:
    good = _entries(rng, "good", 4, 500, 20_000)
    skipped = ("nometa/readme.txt", b"no metadata item for this entry\n")
    rejected = ("wrong/sha.txt", records(rng, 3_000))
    zips = [
        [("dir/", b""), *good[:2]],
        [*good[2:], skipped],
        [rejected],
    ]
    metadata = [
        *metadata_for(good),
        MetadataItem(path=rejected[0], size_bytes=len(rejected[1]), sha256="0" * 64),
        MetadataItem(path="never/in/any/zip.txt", size_bytes=5, sha256="1" * 64),
    ]
    objects = dict(good)
    return Fixture(
        export_id,
        "mixed",
        files=[(f"part-{n:04d}.zip", build_zip(files)) for n, files in enumerate(zips, 1)],
        metadata=metadata,
        objects=objects,
        status=JobStatus.COMPLETED,
        summary=JobSummary(
            files_total=3,
            files_done=3,
            entries_uploaded=len(objects),
            entries_skipped=1,
            entries_rejected=1,
            entries_missing=1,
            bytes_uploaded=sum(map(len, objects.values())),
        ),
    )


def _stored(rng: random.Random, export_id: str) -> Fixture:
    entries = _entries(rng, "raw", 3, 100, 30_000)
    objects = dict(entries)
    data = make_zip(entries, method=zipfile.ZIP_STORED, data_descriptor=True, zip64=True)
    return Fixture(
        export_id,
        "stored",
        files=[("stored.zip", data)],
        metadata=metadata_for(entries),
        objects=objects,
        status=JobStatus.COMPLETED,
        summary=JobSummary(
            files_total=1,
            files_done=1,
            entries_uploaded=3,
            bytes_uploaded=sum(map(len, objects.values())),
        ),
    )


def _corrupt(rng: random.Random, export_id: str) -> Fixture:
    good = _entries(rng, "good", 2, 500, 10_000)
    first = ("bad/first.txt", b"complete and verified " * 200)
    second = ("bad/second.txt", b"this one is damaged " * 200)
    damaged = bytearray(build_zip([first, second], method=zipfile.ZIP_STORED))
    damaged[damaged.index(b"this one is damaged")] ^= 0xFF
    objects = {**dict(good), first[0]: first[1]}
    return Fixture(
        export_id,
        "corrupt",
        files=[("good.zip", build_zip(good)), ("damaged.zip", bytes(damaged))],
        metadata=metadata_for([*good, first, second]),
        objects=objects,
        status=JobStatus.FAILED,
        # The damaged entry's item: no ZIP delivered it whole.
        summary=JobSummary(
            files_total=2,
            files_done=1,
            files_failed=1,
            entries_uploaded=3,
            entries_missing=1,
            bytes_uploaded=sum(map(len, objects.values())),
        ),
        reason="CRC",
    )


def _failed(export_id: str, shape: str, reason: str, serve: dict[str, Any] | None) -> Fixture:
    return Fixture(
        export_id,
        shape,
        files=[],
        metadata=[],
        objects={},
        status=JobStatus.FAILED,
        summary=JobSummary(),
        reason=reason,
        serve=serve,
    )


def make_fixture(rng: random.Random, export_id: str, shape: str) -> Fixture:
    """One export of ``shape``, its content drawn from ``rng``."""
    if shape == "small":
        return _completed(export_id, shape, [_entries(rng, "s", rng.randrange(1, 5), 200, 40_000)])
    if shape == "mixed":
        return _mixed(rng, export_id)
    if shape == "paged":
        zips = [[(f"p{n}/only.jsonl", records(rng, rng.randrange(100, 4_000)))] for n in range(8)]
        return _completed(export_id, shape, zips, page_size_cap=3, empty_pages=True)
    if shape == "pending":
        return _completed(export_id, shape, [_entries(rng, "w", 2, 200, 8_000)], pending_polls=2)
    if shape == "stored":
        return _stored(rng, export_id)
    if shape == "large":
        big = [("big/rows.jsonl", records(rng, LARGE_ENTRY_BYTES)), ("big/tail.txt", b"t" * 99)]
        return _completed(export_id, shape, [big])
    if shape == "corrupt":
        return _corrupt(rng, export_id)
    if shape == "unknown":
        return _failed(export_id, shape, "404", None)
    if shape == "failed":
        return _failed(export_id, shape, "FAILED", {"status": "FAILED"})
    msg = f"unknown shape {shape!r}"
    raise ValueError(msg)


def make_fixtures(rng: random.Random, count: int, tag: str) -> list[Fixture]:
    """``count`` exports of shapes drawn by weight (every shape at least once when it fits)."""
    names = list(SHAPES)
    extra = max(0, count - len(names))
    shapes = names[:count] + rng.choices(names, weights=list(SHAPES.values()), k=extra)
    rng.shuffle(shapes)
    return [
        make_fixture(rng, f"exp-chaos-{tag}-{n:03d}-{shape}", shape)
        for n, shape in enumerate(shapes[:count])
    ]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
