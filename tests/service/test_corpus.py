"""The ZIP reader over public corpora (../shared/zip-corpus): it agrees, or it refuses.

For every archive, what the reader lets out (entries with their bytes) is
checked against the suite's own expectations: yauzl's success trees and
failure archives, and Python's zipfile as the oracle for the other suites (Go's
testdata, Commons Compress, Snyk's zip-slip samples). The rule is one-sided:
the reader may refuse where another reader reads (unsafe names, symlinks,
encryption, methods other than stored and deflate, the limits), never the
reverse, and never give other bytes. Every archive is also read at several
chunkings, which must give the same events. Skipped when the corpus is absent.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import attrs
import pytest
import trio

from pipeline._core.zip.directory import locate_directory, parse_directory
from pipeline._core.zip.events import (
    ContentEvent,
    EntryClosed,
    EntryData,
    EntryEnd,
    EntryRefused,
    EntryStart,
)
from pipeline._core.zip.format import TAIL_BYTES, CentralEntry, ZipLimits
from pipeline._core.zip.stream import ReadFault, ZipStreamReader
from pipeline._errors import ZipCorrupt
from pipeline._service.inflate import read_zip

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "zip-corpus"
LIMITS = ZipLimits(max_entry_size=64 * 1024 * 1024, max_ratio=200)
# Bigger archives are read once; only smaller ones are also fed a byte at a time.
BYTEWISE_BELOW = 64 * 1024
LARGEST = 16 * 1024 * 1024

pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"{CORPUS} is not on this machine")


def archives(suite: str) -> list[Path]:
    """The suite's archives small enough for the test suite, by name."""
    folder = CORPUS / suite
    if not folder.is_dir():
        return []
    found = [p for p in folder.rglob("*") if p.suffix in (".zip", ".jar", ".apk")]
    return sorted(p for p in found if p.is_file() and p.stat().st_size <= LARGEST)


def ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(CORPUS)) for p in paths]


@attrs.define
class Reading:
    """What the reader let out of one archive."""

    entries: dict[str, bytes] = attrs.Factory(dict)
    refused: set[str] = attrs.Factory(set)
    failed: str | None = None


def _directory(data: bytes) -> tuple[CentralEntry, ...]:
    tail_start = max(0, len(data) - TAIL_BYTES)
    location = locate_directory(data[tail_start:], tail_start, len(data))
    if location.offset < tail_start:
        tail_start = location.offset
    begin = location.offset - tail_start
    return parse_directory(data[tail_start:][begin : begin + location.size], location)


async def read_archive(data: bytes) -> Reading:
    """Read as the file stage does: the directory first, then read_zip over the body."""
    reading = Reading()
    try:
        directory = _directory(data)
    except ZipCorrupt as err:
        reading.failed = str(err)
        return reading
    start = min((entry.local_header_offset for entry in directory), default=0)

    async def body() -> AsyncIterator[bytes]:
        yield data[start:]

    send, receive = trio.open_memory_channel[ContentEvent](2)

    async def produce() -> None:
        try:
            await read_zip(body(), directory, send, limits=LIMITS, limiter=trio.CapacityLimiter(1))
        except ZipCorrupt as err:
            reading.failed = str(err)

    parts: list[bytes] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        async with receive:
            async for event in receive:
                if isinstance(event, EntryStart):
                    parts = []
                elif isinstance(event, EntryData):
                    parts.append(event.data)
                elif isinstance(event, EntryClosed):
                    reading.entries[event.entry.name] = b"".join(parts)
                elif isinstance(event, EntryRefused):
                    reading.refused.add(event.entry.name)
    return reading


def zipfile_reads(data: bytes) -> dict[str, bytes]:
    """The files zipfile reads with a verified CRC, by name (none when it refuses the archive)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except Exception:  # zipfile's many ways of refusing an archive
        return {}
    found: dict[str, bytes] = {}
    with archive:
        for info in archive.infolist():
            if info.filename.endswith("/"):  # is_dir() fails on an empty name
                continue
            if info.file_size > LIMITS.max_entry_size:
                # Refused here by its declared size: nothing of it to compare.
                continue
            try:
                found.setdefault(info.filename, archive.read(info))
            except Exception:  # a refused entry: bad CRC, encryption, a method it lacks
                continue
    return found


def assert_nothing_zipfile_would_not_give(data: bytes, reading: Reading) -> None:
    oracle = zipfile_reads(data)
    for name, content in reading.entries.items():
        if name in oracle:
            assert oracle[name] == content, f"{name!r}: bytes differ from zipfile's"
        else:
            # A name zipfile decodes otherwise (a Unicode Path field it ignores):
            # the same bytes must still be among what zipfile reads.
            assert content in oracle.values(), f"{name!r}: read here, refused by zipfile"


YAUZL_SUCCESS = archives("yauzl/success")
YAUZL_FAILURE = archives("yauzl/failure")
ORACLE_SUITES = [*archives("go"), *archives("commons-compress"), *archives("snyk")]


@pytest.mark.parametrize("path", YAUZL_SUCCESS, ids=ids(YAUZL_SUCCESS))
async def test_yauzl_success_trees(path: Path) -> None:
    """Every entry let out has the bytes of yauzl's expected tree (zipfile's where the tree,
    as copied here, folds a non-ASCII name or leaves an empty file out)."""
    tree = trio.Path(path.with_suffix(""))
    expected = {
        str(Path(p).relative_to(path.with_suffix(""))): await p.read_bytes()
        for p in await tree.rglob("*")
        if await p.is_file()
    }
    data = await trio.Path(path).read_bytes()
    reading = await read_archive(data)
    in_tree = {name: content for name, content in reading.entries.items() if name in expected}
    for name, content in in_tree.items():
        assert expected[name] == content, name
    others = attrs.evolve(
        reading, entries={n: c for n, c in reading.entries.items() if n not in expected}
    )
    assert_nothing_zipfile_would_not_give(data, others)


@pytest.mark.parametrize("path", YAUZL_FAILURE, ids=ids(YAUZL_FAILURE))
async def test_yauzl_failures_are_refused(path: Path) -> None:
    """An archive yauzl refuses fails here too, or has the offending entries refused."""
    data = await trio.Path(path).read_bytes()
    reading = await read_archive(data)
    assert reading.failed is not None or reading.refused, reading
    assert_nothing_zipfile_would_not_give(data, reading)


@pytest.mark.parametrize("path", ORACLE_SUITES, ids=ids(ORACLE_SUITES))
async def test_never_reads_what_zipfile_refuses(path: Path) -> None:
    """Go's testdata, Commons Compress, zip-slip: entries let out are zipfile's, byte for byte."""
    data = await trio.Path(path).read_bytes()
    reading = await read_archive(data)
    assert_nothing_zipfile_would_not_give(data, reading)
    for name in reading.entries:
        assert ".." not in name.split("/"), name
        assert not name.startswith("/"), name


def events_at(data: bytes, chunk_size: int) -> list[tuple[str, str]]:
    """The sans-IO reader's events (kind, name) and its fault, fed ``chunk_size`` at a time."""
    try:
        directory = _directory(data)
    except ZipCorrupt as err:
        return [("fault", str(err))]
    reader = ZipStreamReader(directory, LIMITS)
    start = min((entry.local_header_offset for entry in directory), default=0)
    seen: list[tuple[str, str]] = []

    def note(events: list[object]) -> None:
        for event in events:
            if isinstance(event, EntryEnd):
                seen.append(("end", event.entry.name))
            elif isinstance(event, EntryRefused):
                seen.append(("refused", event.entry.name))

    body = data[start:]
    try:
        for at in range(0, len(body), chunk_size):
            note(list(reader.feed(body[at : at + chunk_size])))
            if reader.done:
                break
        note(list(reader.close()))
    except ReadFault as fault:
        note(list(fault.events))
        seen.append(("fault", str(fault)))
    except ZipCorrupt as fault:
        seen.append(("fault", str(fault)))
    return seen


def _all_archives() -> Iterator[Path]:
    yield from YAUZL_SUCCESS
    yield from YAUZL_FAILURE
    yield from ORACLE_SUITES


CHUNKED = [p for p in _all_archives() if p.stat().st_size <= 4 * 1024 * 1024]


@pytest.mark.parametrize("path", CHUNKED, ids=ids(CHUNKED))
def test_same_events_at_every_chunking(path: Path) -> None:
    """Byte by byte (small archives), a prime, 64 KiB or 256 KiB: the same events, same fault."""
    data = path.read_bytes()
    sizes = [7919, 64 * 1024, 256 * 1024]
    if len(data) < BYTEWISE_BELOW:
        sizes.append(1)
    whole = events_at(data, max(1, len(data)))
    for size in sizes:
        assert events_at(data, size) == whole, size
