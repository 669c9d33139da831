"""The Export API client: status and the file listing, through retries and a breaker.

Thin I/O over one shared :class:`httpx.AsyncClient`. Everything httpx can throw
at us, and every status code the API can answer, is translated in one place,
:func:`_translated`, into the service's own errors, so callers decide with
``err.transient`` and never see an httpx exception. Each request goes through
:func:`~pipeline._adapters.retry.retry` and the circuit breaker: transient failures
(429, 5xx, timeouts, broken connections) are retried with backoff and mark the
breaker; permanent answers (401, 403, 404, other 4xx, malformed JSON) are not
retried and count as a healthy API for the breaker, since the API did answer.

Two safety rules hold for every request:

* The bearer token goes only to the Export API's own origin (scheme, host and
  port of ``base_url``), decided per request by :class:`_OriginBearerAuth`, and
  redirects are never followed, so a ``downloadUrl`` on another host, or a
  redirect to one, cannot carry it away.
* A download URL is fetched only when its host is the API's own or listed in
  ``allowed_hosts``; any other URL raises :class:`DownloadRefused` before a
  request is made.

Downloads are streamed in chunks and resume after a break with
``Range: bytes=<received>-``, so the consumer sees one continuous byte stream
whose memory does not grow with the file.
"""

from __future__ import annotations

import contextlib
import random
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import NoReturn, TypeVar

import httpx
import structlog
import trio

from pipeline._adapters.exportapi.boundary import (
    DEFAULT_PORTS,
    DEPENDENCY,
    Origin,
    OriginBearerAuth,
    checked_span,
    content_range,
    download_allowed,
    parse_allowed,
    translated,
    where,
)
from pipeline._adapters.exportapi.download import DownloadStream, RangeResult
from pipeline._adapters.exportapi.models import ExportFile, ExportStatus, Malformed, Page, structure
from pipeline._adapters.retry import circuit_changed, retry
from pipeline._core.backoff import Backoff, CircuitBreaker
from pipeline._errors import (
    CircuitOpen,
    DownloadRefused,
    ExportApiUnavailable,
    ExportNotFound,
    ExportNotReady,
    ListingFault,
    PermanentError,
)

__all__ = ["ExportApi", "FileListing"]

T = TypeVar("T")
log = structlog.get_logger("pipeline._adapters.exportapi")

# A listing that keeps answering empty pages with fresh cursors is looping in
# a way cursor repetition cannot see; real empty pages come one or two at a time.
MAX_EMPTY_PAGES_IN_A_ROW = 100


class ExportApi:
    """The Export API, seen through retries, a circuit breaker and our errors.

    ``http`` is the process's long-lived client; its timeouts bound every
    request (a stall longer than its read timeout is a transient error). It
    must not carry an ``Authorization`` header of its own: this class decides
    per request who gets the token. ``allowed_hosts`` holds ``host`` or
    ``host:port`` entries (case-insensitive) besides the API's own host.

    Downloads come in chunks as read from the socket (at most httpcore's read
    size, see :mod:`pipeline._adapters.httpreads`); ``chunk_size`` cuts them
    into pieces of that size instead, at the cost of a copy.

    Cancellation is never caught; a cancelled call leaves no open response.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        token: str | None,
        allowed_hosts: frozenset[str],
        policy: Backoff,
        breaker: CircuitBreaker,
        page_size: int = 100,
        chunk_size: int | None = None,
        rng: random.Random | None = None,
    ) -> None:
        base = httpx.URL(base_url)
        if base.scheme not in DEFAULT_PORTS or not base.host:
            msg = f"base_url must be an absolute http(s) URL, not {base_url!r}"
            raise ValueError(msg)
        if not 1 <= page_size <= 100:
            msg = f"page_size must be 1..100, not {page_size}"
            raise ValueError(msg)
        if chunk_size is not None and chunk_size < 1:
            msg = f"chunk_size must be positive, not {chunk_size}"
            raise ValueError(msg)
        if "authorization" in http.headers:
            msg = "the httpx client must not carry a default Authorization header"
            raise ValueError(msg)
        self._http = http
        self._base = base_url.rstrip("/")
        self._origin = Origin.of(base)
        self._auth = OriginBearerAuth(token, self._origin)
        self._allowed = frozenset(parse_allowed(entry) for entry in allowed_hosts if entry.strip())
        self._policy = policy
        self._breaker = breaker
        self._page_size = page_size
        self._chunk_size = chunk_size
        self._rng = rng

    @property
    def policy(self) -> Backoff:
        """The backoff policy every call and every download resume follows."""
        return self._policy

    # -- plumbing shared by every call --

    def _url(self, *segments: str) -> httpx.URL:
        quoted = []
        for segment in segments:
            part = urllib.parse.quote(segment, safe="")
            # "." and ".." are valid export IDs but dot-segments in a path.
            quoted.append(part.replace(".", "%2E") if set(segment) == {"."} else part)
        return httpx.URL(self._base + "/" + "/".join(quoted))

    def _breaker_check(self, what: str) -> None:
        now = trio.current_time()
        if not self._breaker.allows(now):
            wait = self._breaker.retry_after(now)
            msg = f"{what}: Export API circuit breaker is open; calls resume in {wait:.1f} s"
            raise CircuitOpen(msg, retry_after=wait)

    def _record(self, ok: bool) -> None:
        was_open = self._breaker.is_open
        self._breaker.record(ok, trio.current_time())
        if self._breaker.is_open != was_open:
            circuit_changed(DEPENDENCY, self._breaker.is_open)

    async def _guarded(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """One attempt, refused while the breaker is open, its outcome recorded.

        Only transient failures count against the API: a 4xx or a bad body is
        the API answering, which is what the breaker wants to know.
        """
        self._breaker_check(what)
        try:
            result = await attempt()
        except ExportApiUnavailable:
            self._record(False)
            raise
        except PermanentError:
            self._record(True)
            raise
        self._record(True)
        return result

    async def _call(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        async def guarded() -> T:
            return await self._guarded(what, attempt)

        return await retry(guarded, self._policy, what=what, dependency=DEPENDENCY, rng=self._rng)

    # -- the API --

    async def get_status(self, export_id: str) -> ExportStatus:
        """``GET /exports/{id}``.

        Raises :class:`ExportNotFound` on 404, :class:`ExportApiRejected` on
        other refusals or a malformed body, :class:`RetriesExhausted` when
        transient failures outlive the policy.
        """
        url = self._url("exports", export_id)
        what = f"GET {where(url, own=True)}"

        async def attempt() -> ExportStatus:
            with translated(what, not_found=ExportNotFound):
                response = await self._http.get(url, auth=self._auth, follow_redirects=False)
                response.raise_for_status()
                status = structure(response, ExportStatus)
                if status.export_id != export_id:
                    msg = f"answer is about export {status.export_id!r}"
                    raise Malformed(msg)
                return status

        return await self._call(what, attempt)

    def list_files(self, export_id: str) -> FileListing:
        """The export's files, page by page: ``async for page in api.list_files(id)``.

        Pages may be empty. Raises :class:`ExportNotReady` when the export is
        still PENDING (409), :class:`ExportNotFound` on 404, and
        :class:`ListingFault` when a cursor comes back a second time, a file ID
        is listed twice, or empty pages never end.
        """
        return FileListing(self, export_id)

    async def _list_page(self, export_id: str, cursor: str | None, page_no: int) -> Page:
        url = self._url("exports", export_id, "files")
        params: dict[str, str | int] = {"limit": self._page_size}
        if cursor is not None:
            params["cursor"] = cursor
        what = f"GET {where(url, own=True)}"

        async def attempt() -> Page:
            with translated(what, not_found=ExportNotFound, on_conflict=ExportNotReady):
                response = await self._http.get(
                    url, params=params, auth=self._auth, follow_redirects=False
                )
                response.raise_for_status()
                page = structure(response, Page)
                if page.next_cursor == "":
                    msg = "nextCursor is an empty string"
                    raise Malformed(msg)
                return page

        return await self._call(f"{what} page {page_no}", attempt)

    def _checked_download_url(self, file: ExportFile) -> httpx.URL:
        """The file's URL, or :class:`DownloadRefused` before any request is made."""
        try:
            url = httpx.URL(file.download_url)
        except httpx.InvalidURL as err:
            msg = f"file {file.file_id}: downloadUrl is not a valid URL"
            raise DownloadRefused(msg) from err
        if url.scheme not in DEFAULT_PORTS or not url.host:
            msg = f"file {file.file_id}: downloadUrl is not an absolute http(s) URL"
            raise DownloadRefused(msg)
        if not download_allowed(url, self._origin, self._allowed):
            netloc = Origin.of(url).netloc
            msg = (
                f"file {file.file_id}: download host {netloc} is not allowed "
                "(not the Export API's host nor in EXPORT_DOWNLOAD_ALLOWED_HOSTS)"
            )
            log.warning("download refused", fileId=file.file_id, host=netloc)
            raise DownloadRefused(msg)
        return url

    def _is_own(self, url: httpx.URL) -> bool:
        return Origin.of(url) == self._origin

    async def fetch_range(self, file: ExportFile, start: int) -> RangeResult:
        """The file's bytes from ``start`` to its end, for reading a ZIP's tail.

        Sends ``Range: bytes=<start>-``. On 206 the result is ``ranged`` and
        holds the bytes (the caller picks ``start`` so they are few). On 200
        the server ignored the range: the body is NOT read (it is the whole
        file); the result says ``ranged=False`` with the size from
        ``Content-Length``, and :meth:`RangeResult.stream` streams the whole
        file instead. A ``start`` at or past the end gives an empty ranged
        result. Raises :class:`DownloadRefused` for a host not allowed.
        """
        if start < 0:
            msg = f"start must not be negative, not {start}"
            raise ValueError(msg)
        url = self._checked_download_url(file)
        what = f"GET {where(url, own=self._is_own(url))}"
        headers = {"Range": f"bytes={start}-", "Accept-Encoding": "identity"}

        async def attempt() -> RangeResult:
            with translated(what):
                async with self._http.stream(
                    "GET", url, headers=headers, auth=self._auth, follow_redirects=False
                ) as response:
                    return await self._range_answer(response, file, start)

        return await self._call(f"{what} from byte {start}", attempt)

    async def _range_answer(
        self, response: httpx.Response, file: ExportFile, start: int
    ) -> RangeResult:
        if response.status_code == 416:
            # Asked for bytes past the end (an empty file, a tiny one): the tail is empty.
            unsatisfied = content_range(response.headers.get("Content-Range"))
            end = None if unsatisfied is None else unsatisfied[1]
            if end is not None and start >= end:
                return RangeResult(api=self, file=file, start=start, total_size=end, data=b"")
        response.raise_for_status()
        if response.status_code == 200:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            return RangeResult(api=self, file=file, start=0, total_size=total, ranged=False)
        span = checked_span(response, start)
        expected = span - start
        data = bytearray()
        async for chunk in response.aiter_bytes(self._chunk_size):
            data += chunk
            if len(data) > expected:
                msg = f"206 body is longer than Content-Range says ({expected} bytes)"
                raise Malformed(msg)
        return RangeResult(api=self, file=file, start=start, total_size=span, data=bytes(data))

    @contextlib.asynccontextmanager
    async def download(self, file: ExportFile, start: int = 0) -> AsyncIterator[DownloadStream]:
        """Stream the file from ``start``: ``async with api.download(f) as chunks``.

        The first response is opened before the block runs, so
        ``chunks.total_size`` is known at once (the caller can refuse a file
        too large before reading it). A break mid-body resumes with ``Range``;
        the resumes count against the same :class:`Backoff` attempts as the
        first request, and :class:`RetriesExhausted` ends the stream when they
        are spent. A server that answers 200 to a resume is refused
        (:class:`ExportApiRejected`) rather than repeating bytes. Raises
        :class:`DownloadRefused` for a host not allowed, with no request made.
        """
        if start < 0:
            msg = f"start must not be negative, not {start}"
            raise ValueError(msg)
        url = self._checked_download_url(file)
        stream = DownloadStream(self, file, url, start)
        try:
            await stream.open()
            yield stream
        finally:
            await stream.aclose()


class FileListing:
    """An async iterator over the pages of one export's listing.

    A plain class rather than an async generator: nothing is held open
    between pages, so abandoning the loop midway needs no cleanup.
    """

    def __init__(self, api: ExportApi, export_id: str) -> None:
        self._api = api
        self._export_id = export_id
        self._cursor: str | None = None
        self._done = False
        self._pages = 0
        self._empty_in_a_row = 0
        self._seen_cursors: set[str] = set()
        self._seen_files: set[str] = set()

    def __aiter__(self) -> FileListing:
        return self

    async def __anext__(self) -> list[ExportFile]:
        if self._done:
            raise StopAsyncIteration
        page = await self._api._list_page(self._export_id, self._cursor, self._pages + 1)
        self._pages += 1
        self._check(page)
        if page.next_cursor is None:
            self._done = True
        else:
            self._seen_cursors.add(page.next_cursor)
            self._cursor = page.next_cursor
        log.debug(
            "listing page",
            exportId=self._export_id,
            page=self._pages,
            files=len(page.files),
            last=self._done,
        )
        return page.files

    def _check(self, page: Page) -> None:
        where = f"listing of export {self._export_id}, page {self._pages}"
        if page.next_cursor is not None and page.next_cursor in self._seen_cursors:
            self._fault(f"{where}: cursor repeated; the API is looping")
        for file in page.files:
            if file.file_id in self._seen_files:
                self._fault(f"{where}: file {file.file_id} listed twice")
            self._seen_files.add(file.file_id)
        self._empty_in_a_row = 0 if page.files else self._empty_in_a_row + 1
        if self._empty_in_a_row >= MAX_EMPTY_PAGES_IN_A_ROW:
            self._fault(f"{where}: {self._empty_in_a_row} empty pages in a row")

    def _fault(self, msg: str) -> NoReturn:
        self._done = True
        raise ListingFault(msg)
