"""The ZIP reader over the public corpora of ../shared/zip-corpus, suite by suite.

Reads every archive as the file stage does (directory first, then the body)
and tallies, per suite: archives read whole, archives refused whole (the file
fails with a reason), archives with some entries refused, and archives read
*wrong* (an entry another reader does not give, other bytes, an archive a
suite expects to fail read whole): the last column must be 0. It also feeds
each archive of up to 4 MiB at 1 byte (under 64 KiB), 7919 bytes, 64 KiB and
256 KiB and counts those whose events differ between chunkings (must be 0).

The expectations are the suites' own: yauzl's success trees and failure
names, and Python's zipfile as the oracle for Go's testdata, Commons
Compress, the zip-slip samples and the fuzz inputs (``tests/service/test_corpus.py``
checks the same rules one archive at a time).

    python benchmarks/zip_corpus.py
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import attrs
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.service.test_corpus import (
    CORPUS,
    LARGEST,
    Reading,
    assert_nothing_zipfile_would_not_give,
    events_at,
    read_archive,
)

SUITES = ("yauzl/success", "yauzl/failure", "go", "commons-compress", "snyk", "fuzz")
CHUNKED_UP_TO = 4 * 1024 * 1024
BYTEWISE_BELOW = 64 * 1024


@attrs.define
class Tally:
    """One suite's archives, by what the reader made of them."""

    archives: int = 0
    whole: int = 0
    refused: int = 0
    partly: int = 0
    wrong: int = 0
    unstable: int = 0
    skipped: int = 0
    wrong_names: list[str] = attrs.Factory(list)


def _archives(suite: str) -> list[Path]:
    folder = CORPUS / suite
    found = [p for p in folder.rglob("*") if p.suffix in (".zip", ".jar", ".apk")]
    return sorted(p for p in found if p.is_file())


def _expected_tree(path: Path) -> dict[str, bytes]:
    root = path.with_suffix("")
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _is_wrong(suite: str, path: Path, data: bytes, reading: Reading) -> bool:
    try:
        if suite == "yauzl/success":
            tree = _expected_tree(path)
            for name, content in reading.entries.items():
                if name in tree:
                    assert tree[name] == content
            others = {n: c for n, c in reading.entries.items() if n not in tree}
            assert_nothing_zipfile_would_not_give(data, attrs.evolve(reading, entries=others))
        else:
            if suite == "yauzl/failure":
                assert reading.failed is not None or reading.refused
            assert_nothing_zipfile_would_not_give(data, reading)
            assert all(".." not in n.split("/") and not n.startswith("/") for n in reading.entries)
    except (AssertionError, zipfile.BadZipFile):
        return True
    return False


def _stable(data: bytes) -> bool:
    sizes = [7919, 64 * 1024, 256 * 1024] + ([1] if len(data) < BYTEWISE_BELOW else [])
    whole = events_at(data, max(1, len(data)))
    return all(events_at(data, size) == whole for size in sizes)


async def _tally(suite: str) -> Tally:
    tally = Tally()
    for path in _archives(suite):
        if path.stat().st_size > LARGEST:
            tally.skipped += 1
            continue
        tally.archives += 1
        data = path.read_bytes()
        reading = await read_archive(data)
        if reading.failed is not None and not reading.entries:
            tally.refused += 1
        elif reading.failed is not None or reading.refused:
            tally.partly += 1
        else:
            tally.whole += 1
        if _is_wrong(suite, path, data, reading):
            tally.wrong += 1
            tally.wrong_names.append(str(path.relative_to(CORPUS)))
        if len(data) <= CHUNKED_UP_TO and not _stable(data):
            tally.unstable += 1
    return tally


async def main() -> int:
    if not CORPUS.is_dir():
        print(f"{CORPUS} is not on this machine", file=sys.stderr)
        return 2
    print(
        "| suite | archives | read whole | refused whole | some entries refused "
        "| read wrong | events differ by chunking |"
    )
    print("|---|---|---|---|---|---|---|")
    bad = 0
    for suite in SUITES:
        t = await _tally(suite)
        skipped = f" (+{t.skipped} over {LARGEST >> 20} MiB)" if t.skipped else ""
        print(
            f"| {suite} | {t.archives}{skipped} | {t.whole} | {t.refused} | {t.partly} "
            f"| {t.wrong} | {t.unstable} |"
        )
        for name in t.wrong_names:
            print(f"  read wrong: {name}", file=sys.stderr)
        bad += t.wrong + t.unstable
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(trio.run(main))
