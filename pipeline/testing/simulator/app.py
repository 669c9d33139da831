"""The Export API simulator: contract section 2 on loopback, with faults on demand.

Tests, the local demo and people trying the service all need an Export API
that behaves like the real one, including its bad days. This module is that
API: a small hand-written ASGI app (every byte of a response is ours to
control, which a framework would hide when we want to break a body off
midway) served by hypercorn on Trio, on two listeners:

* the **API host** (``/exports/{id}``, ``/exports/{id}/files``), which wants
  ``Authorization: Bearer <token>`` when a token is configured, and may serve
  downloads itself when an export says ``download_host="api"``;
* a **download host** on a second loopback address, standing in for presigned
  storage URLs: absolute URLs with a signature in the query, ``GET`` only
  (anything else is 403, as for a URL signed for one method), no token wanted,
  and a record of whether one arrived anyway.

The state lives in one :class:`Simulator` that tests drive in-process: add
exports (bytes, or a :class:`BodyProvider` that generates big files without
holding them), inject faults (status answers with ``Retry-After``, stalls,
bodies broken off after K bytes, throttled speed, looping cursors), and count
the requests each route received.

Run it alone with ``python -m pipeline.testing.simulator --demo``; it stops on Ctrl-C
or SIGTERM.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import collections
import functools
import hashlib
import hmac
import io
import json
import logging
import random
import secrets
import signal
import sys
import urllib.parse
import zipfile
from collections.abc import Callable, Iterator, Sequence
from typing import Literal, Protocol

import attrs
import structlog
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from hypercorn.typing import (
    ASGIReceiveCallable,
    ASGISendCallable,
    HTTPScope,
    Scope,
)

__all__ = [
    "BodyProvider",
    "BytesBody",
    "GeneratedBody",
    "RequestRecord",
    "Simulator",
    "SimulatorUrls",
    "main",
    "patterned_body",
    "seed_demo",
    "serve_simulator",
]

log = structlog.get_logger(__name__)

Route = Literal["status", "files", "download", "other"]
Listener = Literal["api", "download"]
Status = Literal["PENDING", "READY", "FAILED"]

# Largest body piece handed to hypercorn at once: big enough to stream fast,
# small enough that a break-off point or a throttle is honoured closely.
SEND_CHUNK_BYTES = 64 * 1024
# Recent requests kept for inspection; the counts themselves are exact forever.
RECENT_REQUESTS = 10_000
MAX_PAGE_SIZE = 100
# Shutdown should not wait on a client that keeps a slow download open.
GRACEFUL_TIMEOUT_SECONDS = 1.0


# --- bodies --------------------------------------------------------------------


class BodyProvider(Protocol):
    """A file's bytes, produced on demand from any offset (so Range is cheap)."""

    @property
    def size(self) -> int:
        """Total size in bytes."""
        ...

    def iter_bytes(self, start: int) -> Iterator[bytes]:
        """The bytes from offset ``start`` to the end, in pieces of any size."""
        ...


@attrs.frozen
class BytesBody:
    """A body held in memory."""

    data: bytes = attrs.field(repr=lambda data: f"<{len(data)} bytes>")

    @property
    def size(self) -> int:
        """Total size in bytes."""
        return len(self.data)

    def iter_bytes(self, start: int) -> Iterator[bytes]:
        """The bytes from ``start``, without copying the whole tail at once."""
        view = memoryview(self.data)
        for offset in range(start, len(self.data), SEND_CHUNK_BYTES):
            yield bytes(view[offset : offset + SEND_CHUNK_BYTES])


@attrs.frozen
class GeneratedBody:
    """A body of ``size`` bytes made by ``produce(start)``, e.g. a generator function."""

    size: int
    produce: Callable[[int], Iterator[bytes]]

    def iter_bytes(self, start: int) -> Iterator[bytes]:
        """The bytes from ``start``, as ``produce`` makes them."""
        return self.produce(start)


def patterned_body(size: int, seed: int = 0) -> GeneratedBody:
    """``size`` pseudo-random bytes (a repeated 1 MiB block), addressable by offset.

    For throughput and resume tests on big files that must not sit in memory;
    the same ``seed`` gives the same bytes, so a test can recompute them.
    """
    block = random.Random(seed).randbytes(1 << 20)

    def produce(start: int) -> Iterator[bytes]:
        offset = start
        while offset < size:
            within = offset % len(block)
            piece = block[within : within + min(size - offset, len(block) - within)]
            yield piece
            offset += len(piece)

    return GeneratedBody(size=size, produce=produce)


# --- state ---------------------------------------------------------------------


@attrs.define
class _File:
    file_id: str
    name: str
    body: BodyProvider
    signature: str
    bytes_per_second: float | None = None


@attrs.define
class _Export:
    export_id: str
    files: list[_File]
    final_status: Literal["READY", "FAILED"]
    pending_polls: int
    ready_after_seconds: float | None
    ready_at: float | None
    page_size_cap: int | None
    empty_pages: bool
    download_host: Literal["api", "other"]
    repeat_cursor: bool
    honour_range: bool
    polls: int = 0

    def pending(self, now: float | None) -> bool:
        if self.polls < self.pending_polls:
            return True
        if self.ready_after_seconds is None:
            return False
        if now is None or self.ready_at is None:
            return True
        return now < self.ready_at


@attrs.define
class _Fault:
    route: Route
    export_id: str | None
    file_id: str | None
    remaining: int
    status: int | None = None
    retry_after: float | None = None
    body: bytes | None = None
    stall: float = 0.0
    break_after: int | None = None

    def matches(self, route: Route, export_id: str | None, file_id: str | None) -> bool:
        return (
            self.remaining > 0
            and self.route == route
            and self.export_id in (None, export_id)
            and self.file_id in (None, file_id)
        )


@attrs.frozen
class RequestRecord:
    """One request as the simulator saw it (headers reduced to what tests ask about)."""

    listener: Listener
    method: str
    route: Route
    path: str
    export_id: str | None
    file_id: str | None
    range: str | None
    authorization: str | None


@attrs.frozen
class SimulatorUrls:
    """Where a running simulator listens: ``api_url`` is EXPORT_API_BASE_URL."""

    api_url: str
    download_url: str

    @property
    def download_netloc(self) -> str:
        """``host:port`` of the download host, as EXPORT_DOWNLOAD_ALLOWED_HOSTS wants it."""
        return urllib.parse.urlsplit(self.download_url).netloc


class Simulator:
    """The simulated Export API's whole state; tests call its methods directly.

    ``token``: when set, API-host requests without ``Authorization: Bearer
    <token>`` answer 401. The download host never asks for it.
    """

    def __init__(self, *, token: str | None = None) -> None:
        self.token = token
        self._exports: dict[str, _Export] = {}
        self._faults: list[_Fault] = []
        self._counts: collections.Counter[tuple[Listener, Route, str, str | None, str | None]] = (
            collections.Counter()
        )
        self._recent: collections.deque[RequestRecord] = collections.deque(maxlen=RECENT_REQUESTS)
        self._authorization_on_download_host = False
        self._secret = secrets.token_bytes(16)
        self._urls: SimulatorUrls | None = None

    # -- exports --

    def add_export(
        self,
        export_id: str,
        files: Sequence[tuple[str, bytes | BodyProvider]],
        *,
        status: Literal["READY", "FAILED"] = "READY",
        pending_polls: int = 0,
        ready_after_seconds: float | None = None,
        page_size_cap: int | None = None,
        empty_pages: bool = False,
        download_host: Literal["api", "other"] = "other",
        repeat_cursor: bool = False,
        honour_range: bool = True,
    ) -> list[str]:
        """Add (or replace) an export; returns its file IDs in listing order.

        ``pending_polls``: that many status polls answer PENDING first;
        ``ready_after_seconds``: PENDING until that long after this call on
        Trio's clock (after the first poll when called outside ``trio.run``).
        Then ``status``. ``page_size_cap`` makes pages smaller than asked;
        ``empty_pages`` answers every other page empty (still with a
        ``nextCursor``). ``download_host`` chooses whose URLs the listing
        gives: the separate download host or the API host itself.
        ``repeat_cursor`` makes the listing hand back, instead of ending, the
        cursor it was just asked with: a loop for the client to notice.
        ``honour_range=False`` answers 200 with the whole file to any Range.
        """
        if status not in ("READY", "FAILED"):
            msg = f"status must be READY or FAILED, not {status!r}"
            raise ValueError(msg)
        if download_host not in ("api", "other"):
            msg = f"download_host must be 'api' or 'other', not {download_host!r}"
            raise ValueError(msg)
        if page_size_cap is not None and page_size_cap < 1:
            msg = f"page_size_cap must be at least 1, not {page_size_cap}"
            raise ValueError(msg)
        entries = []
        for index, (name, body) in enumerate(files, start=1):
            file_id = f"{export_id}-f{index:04d}"
            provider: BodyProvider = BytesBody(body) if isinstance(body, bytes) else body
            entries.append(_File(file_id, name, provider, self._sign(export_id, file_id)))
        ready_at = None
        if ready_after_seconds is not None:
            ready_at = self._now()
            ready_at = None if ready_at is None else ready_at + ready_after_seconds
        self._exports[export_id] = _Export(
            export_id=export_id,
            files=entries,
            final_status=status,
            pending_polls=pending_polls,
            ready_after_seconds=ready_after_seconds,
            ready_at=ready_at,
            page_size_cap=page_size_cap,
            empty_pages=empty_pages,
            download_host=download_host,
            repeat_cursor=repeat_cursor,
            honour_range=honour_range,
        )
        return [entry.file_id for entry in entries]

    def set_status(self, export_id: str, status: Status) -> None:
        """Force an export's status from now on (PENDING stays until changed again)."""
        export = self._exports[export_id]
        if status == "PENDING":
            export.pending_polls = 1 << 62
        else:
            export.pending_polls = 0
            export.ready_after_seconds = None
            export.final_status = status

    def download_url(self, export_id: str, file_id: str) -> str:
        """The absolute ``downloadUrl`` the listing gives for a file."""
        export = self._exports[export_id]
        file = self._file(export, file_id)
        urls = self.urls
        base = urls.api_url if export.download_host == "api" else urls.download_url
        path = f"/downloads/{_quote(export_id)}/{_quote(file_id)}"
        return f"{base}{path}?sig={file.signature}"

    @property
    def urls(self) -> SimulatorUrls:
        """Where the simulator listens (set by :func:`serve_simulator`)."""
        if self._urls is None:
            msg = "the simulator is not being served yet"
            raise RuntimeError(msg)
        return self._urls

    # -- faults --

    def inject_status(
        self,
        route: Route,
        status: int,
        *,
        times: int = 1,
        retry_after: float | None = None,
        body: bytes | None = None,
        export_id: str | None = None,
        file_id: str | None = None,
    ) -> None:
        """The next ``times`` matching requests answer ``status`` (429, 5xx, 403, ...).

        ``retry_after`` adds a ``Retry-After`` header (seconds; fractions are
        sent as they are). ``body`` replaces the default JSON error body, e.g.
        ``inject_status("status", 200, body=b"{oops")`` for a malformed answer.
        """
        self._faults.append(
            _Fault(
                route, export_id, file_id, times, status=status, retry_after=retry_after, body=body
            )
        )

    def inject_stall(
        self,
        route: Route,
        seconds: float,
        *,
        times: int = 1,
        export_id: str | None = None,
        file_id: str | None = None,
    ) -> None:
        """The next ``times`` matching requests wait ``seconds`` before answering."""
        self._faults.append(_Fault(route, export_id, file_id, times, stall=seconds))

    def inject_break(
        self, export_id: str, file_id: str, after_bytes: int, *, times: int = 1
    ) -> None:
        """The next ``times`` downloads of the file close the connection after ``after_bytes``.

        The response announces the full Content-Length, sends fewer bytes and
        hangs up: to the client a body broken off midway.
        """
        self._faults.append(_Fault("download", export_id, file_id, times, break_after=after_bytes))

    def set_throttle(self, export_id: str, file_id: str, bytes_per_second: float | None) -> None:
        """Serve the file at about ``bytes_per_second`` (None: as fast as possible)."""
        self._file(self._exports[export_id], file_id).bytes_per_second = bytes_per_second

    def clear_faults(self) -> None:
        """Forget every injected fault not yet used."""
        self._faults.clear()

    # -- what happened --

    def count(
        self,
        route: Route | None = None,
        *,
        listener: Listener | None = None,
        method: str | None = None,
        export_id: str | None = None,
        file_id: str | None = None,
    ) -> int:
        """How many requests matched every filter given."""
        total = 0
        for (lis, rou, met, exp, fil), seen in self._counts.items():
            if (
                route in (None, rou)
                and listener in (None, lis)
                and method in (None, met)
                and export_id in (None, exp)
                and file_id in (None, fil)
            ):
                total += seen
        return total

    @property
    def requests(self) -> list[RequestRecord]:
        """The most recent requests (up to ``RECENT_REQUESTS``), oldest first."""
        return list(self._recent)

    @property
    def download_requests(self) -> int:
        """Requests to download URLs, on either host, any method."""
        return self.count("download")

    @property
    def authorization_seen_on_download_host(self) -> bool:
        """Whether any request to the download host carried an Authorization header."""
        return self._authorization_on_download_host

    # -- internals --

    def _sign(self, export_id: str, file_id: str) -> str:
        message = f"GET {export_id}/{file_id}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:32]

    @staticmethod
    def _now() -> float | None:
        try:
            return trio.current_time()
        except RuntimeError:
            return None

    @staticmethod
    def _file(export: _Export, file_id: str) -> _File:
        for file in export.files:
            if file.file_id == file_id:
                return file
        msg = f"export {export.export_id} has no file {file_id}"
        raise KeyError(msg)

    def _record(self, record: RequestRecord) -> None:
        key = (record.listener, record.route, record.method, record.export_id, record.file_id)
        self._counts[key] += 1
        self._recent.append(record)
        if record.listener == "download" and record.authorization is not None:
            self._authorization_on_download_host = True

    def _take_fault(
        self, route: Route, export_id: str | None, file_id: str | None
    ) -> _Fault | None:
        for fault in self._faults:
            if fault.matches(route, export_id, file_id):
                fault.remaining -= 1
                return fault
        return None

    def _bind(self, urls: SimulatorUrls) -> None:
        self._urls = urls


# --- HTTP ----------------------------------------------------------------------


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _encode_cursor(export_id: str, offset: int, page: int) -> str:
    raw = json.dumps([export_id, offset, page], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, export_id: str) -> tuple[int, int] | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        owner, offset, page = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        return None
    if owner != export_id or not isinstance(offset, int) or not isinstance(page, int):
        return None
    return offset, page


def _parse_range(
    header: str | None, size: int
) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """(first, last) inclusive from ``bytes=N-`` or ``bytes=N-M``; None to ignore it."""
    if header is None:
        return None
    unit, _, spec = header.strip().partition("=")
    first, dash, last = spec.strip().partition("-")
    if unit.strip().lower() != "bytes" or not dash or not first.isdigit():
        return None
    if last and not last.isdigit():
        return None
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        return "unsatisfiable"
    return start, end


@attrs.frozen
class _Request:
    listener: Listener
    method: str
    segments: tuple[str, ...]
    query: dict[str, list[str]]
    headers: dict[str, str]
    path: str


class _Response:
    """Thin helpers over the ASGI ``send`` callable."""

    def __init__(self, send: ASGISendCallable) -> None:
        self._send = send

    async def start(self, status: int, headers: dict[str, str]) -> None:
        raw = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
        await self._send({"type": "http.response.start", "status": status, "headers": raw})

    async def body(self, data: bytes, *, more: bool) -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": more})

    async def json(
        self, status: int, payload: object, headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        await self.start(
            status,
            {
                "content-type": "application/json",
                "content-length": str(len(data)),
                **(headers or {}),
            },
        )
        await self.body(data, more=False)

    async def error(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        await self.json(status, {"error": reason}, headers)


class _App:
    """The ASGI app of one listener; both share the :class:`Simulator`."""

    def __init__(self, sim: Simulator, listener: Listener) -> None:
        self._sim = sim
        self._listener: Listener = listener

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif scope["type"] == "http":
            await self._http(scope, _Response(send))

    async def _http(self, scope: HTTPScope, response: _Response) -> None:
        raw_path = scope["raw_path"].decode("latin-1")
        request = _Request(
            listener=self._listener,
            method=scope["method"].upper(),
            segments=tuple(urllib.parse.unquote(part) for part in raw_path.split("/")[1:]),
            query=urllib.parse.parse_qs(scope["query_string"].decode("latin-1")),
            headers={
                name.decode("latin-1").lower(): value.decode("latin-1")
                for name, value in scope["headers"]
            },
            path=raw_path,
        )
        route, export_id, file_id = _route(request.segments)
        self._sim._record(
            RequestRecord(
                listener=self._listener,
                method=request.method,
                route=route,
                path=request.path,
                export_id=export_id,
                file_id=file_id,
                range=request.headers.get("range"),
                authorization=request.headers.get("authorization"),
            )
        )
        log.debug("simulator request", listener=self._listener, method=request.method, route=route)
        await _answer(self._sim, request, route, export_id, file_id, response)


def _route(segments: tuple[str, ...]) -> tuple[Route, str | None, str | None]:
    match segments:
        case ("exports", export_id):
            return "status", export_id, None
        case ("exports", export_id, "files"):
            return "files", export_id, None
        case ("downloads", export_id, file_id):
            return "download", export_id, file_id
    return "other", None, None


async def _answer(
    sim: Simulator,
    request: _Request,
    route: Route,
    export_id: str | None,
    file_id: str | None,
    response: _Response,
) -> None:
    """Auth, method, injected faults, then the route itself: the order a gateway uses."""
    if request.listener == "api" and sim.token is not None:
        expected = f"Bearer {sim.token}"
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            await response.error(401, "missing or wrong bearer token")
            return
    if route == "download" and request.method != "GET":
        # A presigned URL is signed for one method; S3 answers 403 to others.
        await response.error(403, "this URL is signed for GET only")
        return
    if route in ("status", "files") and request.method != "GET":
        await response.error(405, "only GET", {"allow": "GET"})
        return
    fault = sim._take_fault(route, export_id, file_id)
    if fault is not None and fault.stall:
        await trio.sleep(fault.stall)
    if fault is not None and fault.status is not None:
        headers = {}
        if fault.retry_after is not None:
            after = fault.retry_after
            headers["retry-after"] = str(int(after)) if after == int(after) else str(after)
        if fault.body is not None:
            await response.start(
                fault.status,
                {
                    "content-type": "application/json",
                    "content-length": str(len(fault.body)),
                    **headers,
                },
            )
            await response.body(fault.body, more=False)
        else:
            await response.error(fault.status, "injected fault", headers)
        return
    export = None if export_id is None else sim._exports.get(export_id)
    if route == "other" or export is None:
        await response.error(404, "not found")
        return
    if route == "status":
        await _status(sim, export, response)
    elif route == "files":
        await _files(sim, export, request, response)
    else:
        assert file_id is not None
        break_after = None if fault is None else fault.break_after
        await _download(export, file_id, request, response, break_after)


async def _status(sim: Simulator, export: _Export, response: _Response) -> None:
    now = sim._now()
    if export.ready_after_seconds is not None and export.ready_at is None and now is not None:
        export.ready_at = now + export.ready_after_seconds
    pending = export.pending(now)
    export.polls += 1
    status: Status = "PENDING" if pending else export.final_status
    count = len(export.files) if status == "READY" else None
    await response.json(200, {"exportId": export.export_id, "status": status, "fileCount": count})


async def _files(sim: Simulator, export: _Export, request: _Request, response: _Response) -> None:
    if export.pending(sim._now()):
        await response.error(409, "export is PENDING")
        return
    if export.final_status != "READY":
        await response.error(409, "export is FAILED")
        return
    limits = request.query.get("limit", [str(MAX_PAGE_SIZE)])
    if len(limits) != 1 or not limits[0].isdigit() or not 1 <= int(limits[0]) <= MAX_PAGE_SIZE:
        await response.error(400, f"limit must be an integer 1..{MAX_PAGE_SIZE}")
        return
    limit = int(limits[0])
    if export.page_size_cap is not None:
        limit = min(limit, export.page_size_cap)
    cursors = request.query.get("cursor")
    offset, page = 0, 0
    if cursors is not None:
        decoded = _decode_cursor(cursors[0], export.export_id) if len(cursors) == 1 else None
        if decoded is None:
            await response.error(400, "bad cursor")
            return
        offset, page = decoded
    total = len(export.files)
    if export.empty_pages and page % 2 == 0:
        chosen: list[_File] = []
        next_cursor: str | None = _encode_cursor(export.export_id, offset, page + 1)
    else:
        chosen = export.files[offset : offset + limit]
        end = offset + len(chosen)
        next_cursor = _encode_cursor(export.export_id, end, page + 1) if end < total else None
    if next_cursor is None and export.repeat_cursor:
        next_cursor = cursors[0] if cursors else _encode_cursor(export.export_id, 0, 0)
    files = [
        {
            "fileId": file.file_id,
            "name": file.name,
            "downloadUrl": sim.download_url(export.export_id, file.file_id),
            "sizeBytes": file.body.size,
        }
        for file in chosen
    ]
    await response.json(200, {"files": files, "nextCursor": next_cursor})


async def _download(
    export: _Export,
    file_id: str,
    request: _Request,
    response: _Response,
    break_after: int | None,
) -> None:
    wanted_listener = "api" if export.download_host == "api" else "download"
    file = next((f for f in export.files if f.file_id == file_id), None)
    if file is None or request.listener != wanted_listener:
        await response.error(404, "no such file")
        return
    signature = request.query.get("sig", [""])[0]
    if not hmac.compare_digest(signature.encode(), file.signature.encode()):
        await response.error(403, "signature does not match")
        return
    size = file.body.size
    span = _parse_range(request.headers.get("range"), size) if export.honour_range else None
    if span == "unsatisfiable":
        await response.error(416, "range not satisfiable", {"content-range": f"bytes */{size}"})
        return
    headers = {"content-type": "application/zip", "accept-ranges": "bytes"}
    if span is None:
        first, last, status = 0, size - 1, 200
    else:
        first, last = span
        status = 206
        headers["content-range"] = f"bytes {first}-{last}/{size}"
    length = last - first + 1
    headers["content-length"] = str(length)
    await response.start(status, headers)
    await _send_body(response, file, first, length, break_after)


async def _send_body(
    response: _Response, file: _File, first: int, length: int, break_after: int | None
) -> None:
    """Send ``length`` bytes from ``first``, throttled, or hang up after ``break_after``."""
    rate = file.bytes_per_second
    piece_limit = (
        SEND_CHUNK_BYTES if rate is None else max(1, min(SEND_CHUNK_BYTES, int(rate / 20)))
    )
    budget = length if break_after is None else min(length, break_after)
    sent = 0
    for piece in file.body.iter_bytes(first):
        view = memoryview(piece)
        while view and sent < budget:
            part = bytes(view[: min(piece_limit, budget - sent)])
            view = view[len(part) :]
            await response.body(part, more=True)
            sent += len(part)
            if rate is not None:
                await trio.sleep(len(part) / rate)
        if sent >= budget:
            break
    if sent < length:
        # Returning without the final body message makes hypercorn close the
        # connection with the body short of its Content-Length.
        return
    await response.body(b"", more=False)


# --- serving -------------------------------------------------------------------


def _config(host: str, port: int) -> Config:
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("pipeline.testing.simulator.hypercorn")
    config.graceful_timeout = GRACEFUL_TIMEOUT_SECONDS
    return config


async def serve_simulator(
    sim: Simulator,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    download_host: str = "127.0.0.2",
    download_port: int = 0,
    task_status: trio.TaskStatus[SimulatorUrls] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``sim`` on the API listener and the download listener until cancelled.

    Port 0 picks a free port; the real URLs are reported through
    ``task_status.started(SimulatorUrls(...))``, so
    ``urls = await nursery.start(serve_simulator, sim)``. Cancelling the
    surrounding scope stops both listeners (in-flight responses get
    ``GRACEFUL_TIMEOUT_SECONDS``).
    """
    async with trio.open_nursery() as nursery:
        api_binds = await nursery.start(
            functools.partial(serve, _App(sim, "api"), _config(host, port), mode="asgi")
        )
        download_binds = await nursery.start(
            functools.partial(
                serve, _App(sim, "download"), _config(download_host, download_port), mode="asgi"
            )
        )
        urls = SimulatorUrls(api_url=api_binds[0], download_url=download_binds[0])
        sim._bind(urls)
        log.info("simulator serving", api_url=urls.api_url, download_url=urls.download_url)
        task_status.started(urls)


# --- demo and command line -----------------------------------------------------


def _demo_zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def seed_demo(sim: Simulator) -> list[str]:
    """Add a few sample exports with small ZIPs; returns their IDs."""
    rows = b"".join(b'{"row": %d, "value": "demo"}\n' % n for n in range(1000))
    sim.add_export(
        "demo-0001",
        [
            ("part-0001.zip", _demo_zip({"data/a.jsonl": rows, "readme.txt": b"demo export\n"})),
            ("part-0002.zip", _demo_zip({"data/b.jsonl": rows[::-1], "data/empty.txt": b""})),
        ],
        page_size_cap=1,
        empty_pages=True,
    )
    sim.add_export(
        "demo-0002",
        [("part-0001.zip", _demo_zip({"c.csv": b"id,name\n1,alpha\n2,beta\n"}))],
        pending_polls=2,
        download_host="api",
    )
    sim.add_export("demo-0003", [], status="FAILED")
    return ["demo-0001", "demo-0002", "demo-0003"]


async def _run(args: argparse.Namespace) -> None:
    sim = Simulator(token=args.token)
    demo = seed_demo(sim) if args.demo else []
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            urls: SimulatorUrls = await nursery.start(
                functools.partial(
                    serve_simulator,
                    sim,
                    host=args.host,
                    port=args.port,
                    download_host=args.download_host,
                    download_port=args.download_port,
                )
            )
            print(f"EXPORT_API_BASE_URL={urls.api_url}")
            print(f"EXPORT_DOWNLOAD_ALLOWED_HOSTS={urls.download_netloc}")
            if args.token:
                print("EXPORT_API_TOKEN is required (the value given with --token)")
            for export_id in demo:
                print(f"demo export: {export_id}")
            print("Ctrl-C or SIGTERM stops the simulator", flush=True)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipeline.testing.simulator``: serve until Ctrl-C or SIGTERM; returns 0."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.testing.simulator", description="The Export API simulator."
    )
    parser.add_argument("--host", default="127.0.0.1", help="API host address")
    parser.add_argument("--port", type=int, default=8081, help="API port (0: any free port)")
    parser.add_argument("--download-host", default="127.0.0.2", help="download host address")
    parser.add_argument("--download-port", type=int, default=8082, help="download port (0: any)")
    parser.add_argument("--token", default=None, help="bearer token the API host requires")
    parser.add_argument("--demo", action="store_true", help="seed sample exports")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    trio.run(_run, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
