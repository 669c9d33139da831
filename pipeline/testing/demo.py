"""The sample export set of the embedded default (``--local``).

A handful of ZIPs that exercise what real exporters produce and what the
contract refuses: deflated and stored entries, data descriptors, ZIP64, UTF-8
names, empty and directory entries, an unsafe path, an entry without metadata,
an entry whose SHA-256 disagrees with its metadata, and a metadata item no ZIP
contains. One export starts PENDING. The data is generated from a fixed seed,
compressible like the JSON and CSV of real exports.
"""

from __future__ import annotations

import hashlib
import io
import random
import zipfile
from collections.abc import Iterable
from typing import Literal

import attrs

from pipeline._adapters.aws.metadata import MetadataItem

__all__ = ["DemoExport", "DemoFile", "build_zip", "demo_exports", "metadata_for", "records"]


@attrs.frozen
class DemoFile:
    """One ZIP of a demo export."""

    name: str
    data: bytes


@attrs.frozen
class DemoExport:
    """A demo export: its ZIPs, its metadata items, and what the demo expects."""

    export_id: str
    files: tuple[DemoFile, ...]
    metadata: tuple[MetadataItem, ...]
    pending_polls: int = 0
    # Serve downloads from the second loopback host (an allowed host) or the API's own.
    download_host: Literal["api", "other"] = "other"
    expected_status: str = "COMPLETED"


class _Unseekable(io.RawIOBase):
    """A write-only stream without seek/tell, so zipfile writes data descriptors."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.buffer += data
        return len(data)


def records(rng: random.Random, size: int) -> bytes:
    """About ``size`` bytes of JSON-lines records (compresses roughly 4:1)."""
    words = ["alpha", "beta", "gamma", "delta", "omega", "export", "record", "status", "ready"]
    out = bytearray()
    while len(out) < size:
        out += (
            f'{{"id":{rng.randrange(10**9)},"name":"{rng.choice(words)}-{rng.randrange(10**4)}",'
            f'"value":{rng.random():.6f},"tags":["{rng.choice(words)}","{rng.choice(words)}"]}}\n'
        ).encode()
    return bytes(out[:size])


def build_zip(
    entries: Iterable[tuple[str, bytes]],
    *,
    method: int = zipfile.ZIP_DEFLATED,
    descriptors: bool = False,
    zip64: bool = False,
) -> bytes:
    """A ZIP of ``entries``; names ending in ``/`` become directory entries.

    ``descriptors`` writes through an unseekable stream, so sizes and CRCs
    follow each entry in a data descriptor; ``zip64`` forces ZIP64 records.
    """
    sink: _Unseekable | io.BytesIO = _Unseekable() if descriptors else io.BytesIO()
    with zipfile.ZipFile(sink, "w", compression=method, allowZip64=True) as archive:
        for name, data in entries:
            if name.endswith("/"):
                archive.writestr(zipfile.ZipInfo(name), b"")
                continue
            info = zipfile.ZipInfo(name, date_time=(2026, 11, 1, 0, 0, 0))
            info.compress_type = method
            with archive.open(info, "w", force_zip64=zip64) as entry:
                entry.write(data)
    if isinstance(sink, _Unseekable):
        return bytes(sink.buffer)
    assert isinstance(sink, io.BytesIO)
    return sink.getvalue()


def metadata_for(entries: Iterable[tuple[str, bytes]]) -> list[MetadataItem]:
    """Metadata items (size and SHA-256) matching ``entries``, directories left out."""
    """Metadata items (size and SHA-256) matching ``entries``, directories left out."""
    return [
        MetadataItem(path=name, size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
        for name, data in entries
        if not name.endswith("/")
    ]


def demo_exports(scale_mb: int = 64) -> list[DemoExport]:
    """The demo's exports; ``scale_mb`` sets the size of the large entries."""
    rng = random.Random(20261123)
    reports = [(f"reports/2026-11-{day:02d}.jsonl", records(rng, 400_000)) for day in range(1, 31)]
    tree = [
        ("reports/", b""),
        *reports,
        ("données/résumé.txt", "Résumé de l'export, encodé en UTF-8.\n".encode() * 50),
        ("empty.txt", b""),
    ]
    big = records(rng, scale_mb * 1024 * 1024)
    stored = [(f"raw/block-{i:03d}.bin", rng.randbytes(200_000)) for i in range(8)]
    unsafe = [("../escape.txt", b"should never be written"), ("notes/readme.txt", b"hello\n")]
    extra = [("unlisted/extra.csv", b"a,b\n1,2\n")]
    tampered = ("ledger/balance.csv", b"account,balance\n1,100\n")

    first = DemoExport(
        export_id="exp-demo-0001",
        files=(
            DemoFile("part-0001.zip", build_zip(tree, method=zipfile.ZIP_DEFLATED)),
            DemoFile(
                "part-0002.zip",
                build_zip(
                    [("big/events.jsonl", big)],
                    method=zipfile.ZIP_DEFLATED,
                    descriptors=True,
                    zip64=True,
                ),
            ),
            DemoFile(
                "part-0003.zip", build_zip(stored, method=zipfile.ZIP_STORED, descriptors=True)
            ),
            DemoFile(
                "part-0004.zip", build_zip([*unsafe, *extra, tampered], method=zipfile.ZIP_DEFLATED)
            ),
        ),
        metadata=(
            *metadata_for(tree),
            *metadata_for([("big/events.jsonl", big)]),
            *metadata_for(stored),
            *metadata_for(unsafe),
            MetadataItem(path=tampered[0], size_bytes=len(tampered[1]), sha256="0" * 64),
            MetadataItem(path="never/shipped.csv", size_bytes=10, sha256=None),
        ),
    )
    later = [("summary.json", b'{"total": 3}\n'), ("detail/a.jsonl", records(rng, 300_000))]
    second = DemoExport(
        export_id="exp-demo-0002",
        files=(DemoFile("part-0001.zip", build_zip(later, method=zipfile.ZIP_DEFLATED)),),
        metadata=tuple(metadata_for(later)),
        pending_polls=2,
        download_host="api",
    )
    return [first, second]
