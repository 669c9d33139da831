"""The simulator's state: exports, their files, planned faults, and the requests seen."""

from __future__ import annotations

import collections
import hashlib
import hmac
import secrets
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Literal

import attrs
import structlog
import trio

from pipeline.testing.simulator.bodies import BodyProvider, BytesBody

__all__ = [
    "Listener",
    "PlannedFault",
    "RequestRecord",
    "Route",
    "Simulator",
    "SimulatorUrls",
    "Status",
    "StoredExport",
    "StoredFile",
    "quote_segment",
]

log = structlog.get_logger("pipeline.testing.simulator")

Route = Literal["status", "files", "download", "other"]
Listener = Literal["api", "download"]
Status = Literal["PENDING", "READY", "FAILED"]

# Recent requests kept for inspection; the counts themselves are exact forever.
RECENT_REQUESTS = 10_000


def quote_segment(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


@attrs.define
class StoredFile:
    file_id: str
    name: str
    body: BodyProvider
    signature: str
    bytes_per_second: float | None = None
    bytes_sent: int = 0


@attrs.define
class StoredExport:
    export_id: str
    files: list[StoredFile]
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
class PlannedFault:
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
    # When it arrived, on Trio's clock (the service's clock too, in-process).
    at: float = 0.0


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
    ``request_delay``: seconds every request (on either host) waits before it
    is answered, the round trip and server time of an API in another network.
    """

    def __init__(self, *, token: str | None = None, request_delay: float = 0.0) -> None:
        self.token = token
        self.request_delay = request_delay
        self._exports: dict[str, StoredExport] = {}
        self._faults: list[PlannedFault] = []
        self._counts: collections.Counter[tuple[Listener, Route, str, str | None, str | None]] = (
            collections.Counter()
        )
        self._recent: collections.deque[RequestRecord] = collections.deque(maxlen=RECENT_REQUESTS)
        # Requests being answered now, and the most at once, per route; wait_until
        # parks on _changed, which every request and every piece sent wakes.
        self._open: collections.Counter[Route] = collections.Counter()
        self._most_open: collections.Counter[Route] = collections.Counter()
        self._changed = trio.lowlevel.ParkingLot()
        self._authorization_on_download_host = False
        self._secret = secrets.token_bytes(16)
        self._urls: SimulatorUrls | None = None
        # While set, every request to either host answers this status (an outage).
        self.outage_status: int | None = None

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
            entries.append(StoredFile(file_id, name, provider, self._sign(export_id, file_id)))
        ready_at = None
        if ready_after_seconds is not None:
            ready_at = self._now()
            ready_at = None if ready_at is None else ready_at + ready_after_seconds
        self._exports[export_id] = StoredExport(
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
        path = f"/downloads/{quote_segment(export_id)}/{quote_segment(file_id)}"
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
            PlannedFault(
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
        self._faults.append(PlannedFault(route, export_id, file_id, times, stall=seconds))

    def inject_break(
        self, export_id: str, file_id: str, after_bytes: int, *, times: int = 1
    ) -> None:
        """The next ``times`` downloads of the file close the connection after ``after_bytes``.

        The response announces the full Content-Length, sends fewer bytes and
        hangs up: to the client a body broken off midway.
        """
        self._faults.append(
            PlannedFault("download", export_id, file_id, times, break_after=after_bytes)
        )

    def set_throttle(self, export_id: str, file_id: str, bytes_per_second: float | None) -> None:
        """Serve the file at about ``bytes_per_second`` (None: as fast as possible)."""
        self._file(self._exports[export_id], file_id).bytes_per_second = bytes_per_second

    def begin_outage(self, status: int = 503) -> None:
        """Every request to either host answers ``status`` until :meth:`end_outage`."""
        self.outage_status = status

    def end_outage(self) -> None:
        """The outage is over: requests are answered as before."""
        self.outage_status = None

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

    def bytes_sent(self, export_id: str, file_id: str) -> int:
        """How many of the file's bytes have been sent, over all its downloads."""
        return self._file(self._exports[export_id], file_id).bytes_sent

    def most_at_once(self, route: Route) -> int:
        """The most requests of ``route`` that were being answered at the same time."""
        return self._most_open[route]

    async def wait_until(self, holds: Callable[[], bool]) -> None:
        """Return once ``holds()`` is true, asking again after every request and every
        piece of a download sent."""
        while not holds():
            await self._changed.park()

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
    def _file(export: StoredExport, file_id: str) -> StoredFile:
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
        self._changed.unpark_all()

    def _opened(self, route: Route) -> None:
        self._open[route] += 1
        self._most_open[route] = max(self._most_open[route], self._open[route])

    def _closed(self, route: Route) -> None:
        self._open[route] -= 1

    def _sent(self, file: StoredFile, count: int) -> None:
        file.bytes_sent += count
        self._changed.unpark_all()

    def _take_fault(
        self, route: Route, export_id: str | None, file_id: str | None
    ) -> PlannedFault | None:
        for fault in self._faults:
            if fault.matches(route, export_id, file_id):
                fault.remaining -= 1
                return fault
        return None

    def _bind(self, urls: SimulatorUrls) -> None:
        self._urls = urls
