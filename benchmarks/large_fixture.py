"""The fixture of ``large_entries.py``: ZIPs of large CSV entries, and the unavoidable work on them.

CSV rows (order number, time, customer, country, SKU, quantity, price,
status) are made from a seeded generator in 1 MiB blocks; a pool of blocks is
compressed once, each segment ending in a full flush, and every entry is a
seeded sequence of them (see ``zip_throughput.py``), so even a 1.4 GB entry
is built in seconds, from little memory besides its compressed bytes, and
its bytes are the same in every run.
"""

from __future__ import annotations

import hashlib
import random
import struct
import time
import zlib

import attrs
from zip_throughput import FINAL_BLOCK, MIB, chain_crc, compress_segment

__all__ = ["Entry", "Fixture", "ZipFile", "build_fixture", "csv_block", "unavoidable"]

POOL_BLOCKS = 32
NAMES = ("acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka", "tyrell")
COUNTRIES = ("DE", "FR", "US", "GB", "NL", "SE", "ES", "IT", "PL", "JP", "BR", "CA")
STATUSES = ("paid", "shipped", "refunded", "pending", "cancelled")
HEADER = b"order,created,customer,country,sku,quantity,price,status\n"


def csv_block(rng: random.Random, size: int = MIB) -> bytes:
    """About ``size`` bytes of CSV rows (about 3:1 under deflate level 6)."""
    rows: list[str] = []
    total = 0
    while total < size:
        row = (
            f"{rng.randrange(10**7):07d},2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} "
            f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d},"
            f"{rng.choice(NAMES)}-{rng.randrange(1000)},{rng.choice(COUNTRIES)},"
            f"SKU-{rng.randrange(5000):05d},{rng.randint(1, 9)},{rng.randrange(100000) / 100:.2f},"
            f"{rng.choice(STATUSES)}\n"
        )
        rows.append(row)
        total += len(row)
    return (HEADER + "".join(rows).encode())[:size]


@attrs.frozen
class Entry:
    """One entry of a fixture ZIP."""

    name: str
    size: int
    compressed_size: int
    sha256: str
    data_offset: int  # where its deflate stream starts in the ZIP


@attrs.frozen
class ZipFile:
    """One ZIP's name, bytes and entries."""

    name: str
    data: bytes = attrs.field(repr=False)
    entries: tuple[Entry, ...]


@attrs.frozen
class Fixture:
    """An export's ZIP files."""

    files: tuple[ZipFile, ...]

    @property
    def entries(self) -> tuple[Entry, ...]:
        return tuple(entry for file in self.files for entry in file.entries)

    @property
    def entry_bytes(self) -> int:
        return sum(entry.size for entry in self.entries)

    @property
    def zip_bytes(self) -> int:
        return sum(len(file.data) for file in self.files)


def build_fixture(entry_mib: int, *, files: int = 1, entries: int = 2, seed: int = 10) -> Fixture:
    """``files`` ZIPs of ``entries`` CSV entries of ``entry_mib`` MiB each, from a seeded pool.

    Entry names differ across files (they are S3 keys of one export).
    """
    rng = random.Random(seed)
    blocks = [csv_block(rng) for _ in range(POOL_BLOCKS)]
    segments = [compress_segment(block) for block in blocks]
    crcs = [zlib.crc32(block) for block in blocks]
    built = []
    for file_index in range(files):
        names = [f"orders/file-{file_index + 1}/part-{i + 1}.csv" for i in range(entries)]
        built.append(
            _build_zip(
                f"part-{file_index + 1:04d}.zip", names, entry_mib, rng, blocks, segments, crcs
            )
        )
    return Fixture(tuple(built))


def _build_zip(
    zip_name: str,
    names: list[str],
    entry_mib: int,
    rng: random.Random,
    blocks: list[bytes],
    segments: list[bytes],
    crcs: list[int],
) -> ZipFile:
    parts: list[bytes] = []
    written = 0
    central = bytearray()
    entries: list[Entry] = []
    for name in names:
        raw_name = name.encode()
        order = [rng.randrange(POOL_BLOCKS) for _ in range(entry_mib)]
        sha = hashlib.sha256()
        for block_index in order:
            sha.update(blocks[block_index])
        crc = chain_crc(crcs, order)
        packed = sum(len(segments[i]) for i in order) + len(FINAL_BLOCK)
        size = entry_mib * MIB
        offset = written
        fields = (20, 0, 8, 0, 0x5C21, crc, packed, size, len(raw_name), 0)
        header = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", *fields) + raw_name
        parts.append(header)
        written += len(header)
        entries.append(Entry(name, size, packed, sha.hexdigest(), written))
        parts.extend(segments[i] for i in order)
        parts.append(FINAL_BLOCK)
        written += packed
        central += struct.pack(
            "<4sBBHHHHHIIIHHHHHII",
            *(b"PK\x01\x02", 20, 3, 20, 0, 8, 0, 0x5C21, crc, packed, size, len(raw_name)),
            *(0, 0, 0, 0, 0o100644 << 16, offset),
        )
        central += raw_name
    count = len(names)
    parts.append(bytes(central))
    parts.append(
        struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, count, count, len(central), written, 0)
    )
    return ZipFile(zip_name, b"".join(parts), tuple(entries))


def unavoidable(fixture: Fixture) -> tuple[float, float]:
    """Wall and CPU seconds of isal inflate + SHA-256 of the entries, 1 MiB a call, one thread."""
    from isal import isal_zlib

    started, cpu_started = time.perf_counter(), time.process_time()
    for file in fixture.files:
        view = memoryview(file.data)
        for entry in file.entries:
            inflater = isal_zlib.decompressobj(-15)
            sha = hashlib.sha256()
            end = entry.data_offset + entry.compressed_size
            for at in range(entry.data_offset, end, MIB):
                sha.update(inflater.decompress(view[at : min(at + MIB, end)]))
            if sha.hexdigest() != entry.sha256:
                raise RuntimeError(f"{entry.name}: digest differs")
    return time.perf_counter() - started, time.process_time() - cpu_started
