"""Memory of a huge central directory: a ZIP of 1,000,000 empty files, read in a fresh process.

Run from the repository root: ``python benchmarks/huge_directory.py`` (about
two minutes). It builds the archive deterministically in a temporary
directory (stored empty entries named ``0000000`` .. ``0999999``, ZIP64 end
records: 86 MiB, the directory 51 MiB of it) and reads it in a fresh
subprocess per case, printing the process's peak RSS (``VmHWM``) after the
imports and after the reading, and the time:

* **core**: the sans-IO reader as the file stage drives it: the tail, the
  directory fed to ``DirectoryParser`` in 64 KiB pieces, then every entry
  through ``ZipStreamReader`` and ``EntryDecoder``.
* **service**: the file stage's own directory fetch (``_read_directory``:
  ``ExportApi.fetch_range`` for the tail, the directory streamed through
  ``ExportApi.download``) and the body through ``read_zip``, against a
  loopback HTTP server that honours ``Range``. Not the metadata lookup nor S3.
* the 100k-file archives of Commons Compress (``zip64support.tar.bz2`` in
  ``../shared/zip-corpus/commons-compress``), core case, when present.

Target: the 1,000,000-entry archive read in under 100 MB of RSS. ``--entries``
changes the count; ``--pythonpath DIR`` reads with another checkout's code (the
"before" figures: a tree from before the directory was parsed in pieces).
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "zip-corpus" / "commons-compress" / "zip64support.tar.bz2"
CHUNK = 64 * 1024
TARGET_MB = 100


def vmhwm_mb() -> float:
    """Peak resident set of this process so far, in MB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1000
    return float("nan")


def build(path: Path, entries: int) -> None:
    """``entries`` empty stored files and ZIP64 end records, byte for byte the same each run."""
    local = struct.Struct("<4sHHHHHIIIHH")
    central = struct.Struct("<4sBBHHHHHIIIHHHHHII")
    date = (0 << 9) | (1 << 5) | 1  # 1980-01-01
    with path.open("wb") as out:
        for index in range(entries):
            name = b"%07d" % index
            out.write(local.pack(b"PK\x03\x04", 20, 0, 0, 0, date, 0, 0, 0, len(name), 0) + name)
        cd_offset = out.tell()
        offset = 0
        for index in range(entries):
            name = b"%07d" % index
            fields = (20, 3, 20, 0, 0, 0, date, 0, 0, 0, len(name), 0, 0, 0, 0)
            out.write(central.pack(b"PK\x01\x02", *fields, 0o100644 << 16, offset) + name)
            offset += local.size + len(name)
        cd_size = out.tell() - cd_offset
        z64_offset = out.tell()
        counts = (entries, entries, cd_size, cd_offset)
        out.write(struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, *counts))
        out.write(struct.pack("<4sIQI", b"PK\x06\x07", 0, z64_offset, 1))
        out.write(
            struct.pack(
                "<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0
            )
        )


# -- the children: one fresh process per case ---------------------------------


def child_core(path: str) -> dict[str, Any]:
    from pipeline._core.zip import directory as _directory
    from pipeline._core.zip.decoder import EntryDecoder
    from pipeline._core.zip.events import EntryCompressed, EntryEnd, EntryStart
    from pipeline._core.zip.format import TAIL_BYTES, ZipLimits
    from pipeline._core.zip.stream import ZipStreamReader

    limits = ZipLimits(max_entry_size=4096 * 2**20, max_ratio=200)
    before = vmhwm_mb()
    began = time.perf_counter()
    with open(path, "rb") as source:
        size = source.seek(0, os.SEEK_END)
        tail_start = max(0, size - TAIL_BYTES)
        source.seek(tail_start)
        location = _directory.locate_directory(source.read(), tail_start, size)
        source.seek(location.offset)
        parser_class = getattr(_directory, "DirectoryParser", None)
        if parser_class is None:  # the code before: the directory fetched to the file's end
            data = source.read()
            directory: Any = _directory.parse_directory(data[: location.size], location)
            del data
            start = min(entry.local_header_offset for entry in directory)
        else:
            parser = parser_class(location)
            while not parser.complete:
                parser.feed(source.read(CHUNK))
            directory = parser.close()
            start = directory.first_offset
        directory_seconds = time.perf_counter() - began
        directory_mb = vmhwm_mb()
        reader = ZipStreamReader(directory, limits)
        source.seek(start)
        decoder: EntryDecoder | None = None
        done = 0
        while not reader.done:
            chunk = source.read(CHUNK)
            events = reader.feed(chunk) if chunk else reader.close()
            for event in events:
                if isinstance(event, EntryStart):
                    decoder = EntryDecoder(event.entry, limits)
                elif isinstance(event, EntryCompressed) and decoder is not None:
                    decoder.decode(event.data, 4 * 2**20)
                elif isinstance(event, EntryEnd) and decoder is not None:
                    decoder.finish(event.entry)
                    done += 1
            if not chunk:
                break
    return {
        "entries": done,
        "rss_imports_mb": before,
        "rss_directory_mb": directory_mb,
        "rss_peak_mb": vmhwm_mb(),
        "directory_s": directory_seconds,
        "total_s": time.perf_counter() - began,
    }


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves one file with ``Range: bytes=N-`` (206) from disk, a chunk at a time."""

    path_on_disk = ""

    def do_GET(self) -> None:
        size = os.path.getsize(self.path_on_disk)
        start = 0
        wanted = self.headers.get("Range")
        if wanted:
            start = min(size, int(wanted.removeprefix("bytes=").rstrip("-")))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(size - start))
        self.end_headers()
        with open(self.path_on_disk, "rb") as source:
            source.seek(start)
            try:
                while block := source.read(CHUNK):
                    self.wfile.write(block)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client had what it needed (the directory), and closed

    def log_message(self, format: str, *args: Any) -> None:
        pass


def child_service(path: str) -> dict[str, Any]:
    import httpx
    import trio

    from pipeline._adapters.exportapi import ExportApi, ExportApiSession, ExportFile
    from pipeline._core.backoff import Backoff, CircuitBreaker
    from pipeline._core.zip.events import ContentEvent, EntryClosed
    from pipeline._core.zip.format import TAIL_BYTES, ZipLimits
    from pipeline._service import file_stage
    from pipeline._service.inflate import read_zip

    _RangeHandler.path_on_disk = path
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/file.zip"
    size = os.path.getsize(path)
    limits = ZipLimits(max_entry_size=4096 * 2**20, max_ratio=200)
    result: dict[str, Any] = {}

    async def run() -> None:
        async with httpx.AsyncClient(timeout=httpx.Timeout(60.0)) as client:
            session = ExportApiSession(
                client,
                base_url=url,
                token=None,
                allowed_hosts=frozenset(),
                policy=Backoff(max_attempts=1, base=0.1, cap=0.1),
                breaker=CircuitBreaker(),
            )
            api = ExportApi(session)
            file = ExportFile(file_id="f", name="f.zip", download_url=url, size_bytes=size)
            result["rss_imports_mb"] = vmhwm_mb()
            began = time.perf_counter()
            tail = await api.fetch_range(file, max(0, size - TAIL_BYTES))
            stage: Any = argparse.Namespace(api=api)  # _read_directory uses stage.api alone
            directory = await file_stage._read_directory(file, tail, stage)
            result["directory_s"] = time.perf_counter() - began
            result["rss_directory_mb"] = vmhwm_mb()
            send, receive = trio.open_memory_channel[ContentEvent](2)
            closed = 0
            first = getattr(directory, "first_offset", None)
            if first is None:  # the code before
                first = min(entry.local_header_offset for entry in directory)
            async with api.download(file, start=first) as chunks, trio.open_nursery() as nursery:
                nursery.start_soon(
                    lambda: read_zip(
                        chunks, directory, send, limits=limits, limiter=trio.CapacityLimiter(2)
                    )
                )
                async with receive:
                    async for event in receive:
                        closed += isinstance(event, EntryClosed)
            result["entries"] = closed
            result["total_s"] = time.perf_counter() - began

    trio.run(run)
    server.shutdown()
    result["rss_peak_mb"] = vmhwm_mb()
    return result


# -- the parent ---------------------------------------------------------------


def measure(case: str, path: Path, pythonpath: Path) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(pythonpath))
    command = [sys.executable, __file__, "--child", case, str(path)]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    measured: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return measured


def report(label: str, measured: dict[str, Any]) -> None:
    imports, peak = measured["rss_imports_mb"], measured["rss_peak_mb"]
    print(
        f"{label:<40} {measured['entries']:>9,} entries; peak RSS: {imports:5.1f} MB after "
        f"imports, {measured['rss_directory_mb']:5.1f} MB after the directory, {peak:5.1f} MB "
        f"at the end (+{peak - imports:.1f}); directory {measured['directory_s']:4.1f} s, "
        f"all {measured['total_s']:5.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--pythonpath", type=Path, default=ROOT)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--skip-corpus", action="store_true")
    args = parser.parse_args()
    if args.child:
        case, path = args.child
        measured = child_core(path) if case == "core" else child_service(path)
        print(json.dumps(measured))
        return
    with tempfile.TemporaryDirectory() as temp:
        archive = Path(temp) / "huge.zip"
        began = time.perf_counter()
        build(archive, args.entries)
        size_mib = archive.stat().st_size / 2**20
        seconds = time.perf_counter() - began
        print(f"built {args.entries:,} empty files, {size_mib:.1f} MiB, in {seconds:.1f} s")
        worst = 0.0
        for case in ("core", "service"):
            measured = measure(case, archive, args.pythonpath)
            report(f"{case}: {archive.name}", measured)
            worst = max(worst, measured["rss_peak_mb"])
        archive.unlink()
        if CORPUS.exists() and not args.skip_corpus:
            with tarfile.open(CORPUS) as bundle:
                members = [m for m in bundle.getmembers() if m.name.startswith("100k_Files")]
                for member in members:
                    bundle.extract(member, temp, filter="data")
                    extracted = Path(temp) / member.name
                    report(f"core: {member.name}", measure("core", extracted, args.pythonpath))
                    extracted.unlink()
        shutil.rmtree(temp, ignore_errors=True)
    verdict = "met" if worst < TARGET_MB else "NOT met"
    print(f"target: peak RSS under {TARGET_MB} MB for the huge archive: {verdict} ({worst:.1f} MB)")


if __name__ == "__main__":
    main()
