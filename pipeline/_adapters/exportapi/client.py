"""The Export API client: status, file listing, ranged reads and resumable downloads.

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
import email.utils
import random
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from typing import Any, Literal, NoReturn, TypeVar

import attrs
import cattrs
import cattrs.errors
import httpx
import structlog
import trio
from cattrs.gen import make_dict_structure_fn, override

from pipeline._adapters.retry import retry
from pipeline._core.backoff import Backoff, CircuitBreaker
from pipeline._errors import (
    CircuitOpen,
    DownloadRefused,
    ExportApiRejected,
    ExportApiUnavailable,
    ExportNotFound,
    ExportNotReady,
    ListingFault,
    PermanentError,
    RetriesExhausted,
    TransientError,
)

__all__ = [
    "DownloadStream",
    "ExportApi",
    "ExportFile",
    "ExportStatus",
    "RangeResult",
]

T = TypeVar("T")
log = structlog.get_logger(__name__)

# Big enough that per-chunk overhead (a task switch, a channel send downstream)
# is noise next to inflating the bytes, small enough that a handful of files in
# flight hold only a few MiB.
DOWNLOAD_CHUNK_BYTES = 256 * 1024
# A listing that keeps answering empty pages with fresh cursors is looping in
# a way cursor repetition cannot see; real empty pages come one or two at a time.
MAX_EMPTY_PAGES_IN_A_ROW = 100
# Closing a response only drops its connection; if that takes longer, the
# socket is gone anyway.
CLOSE_TIMEOUT_SECONDS = 5.0
# Status codes that say "not now" rather than "no".
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_DEFAULT_PORTS = {"http": 80, "https": 443}


# --- values ------------------------------------------------------------------


def _non_negative(_: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and value < 0:
        msg = f"{attribute.name} is negative ({value})"
        raise ValueError(msg)


@attrs.frozen
class ExportStatus:
    """What the API says about one export; ``file_count`` is None until it is READY."""

    export_id: str
    status: Literal["PENDING", "READY", "FAILED"]
    file_count: int | None = attrs.field(validator=_non_negative)


@attrs.frozen
class ExportFile:
    """One ZIP file of a READY export, as the listing describes it."""

    file_id: str
    name: str
    download_url: str
    size_bytes: int = attrs.field(validator=_non_negative)


@attrs.frozen
class _Page:
    files: list[ExportFile]
    next_cursor: str | None


# --- JSON at the edge ----------------------------------------------------------


class _Malformed(Exception):
    """An answer whose body is not the JSON the contract describes."""


def _strict_str(value: object, _: object) -> str:
    if not isinstance(value, str):
        msg = f"expected a string, got {type(value).__name__}"
        raise _Malformed(msg)
    return value


def _strict_int(value: object, _: object) -> int:
    # cattrs would happily turn "12" or 12.7 into 12; an API that sends those
    # is not the API we were promised.
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"expected an integer, got {type(value).__name__}"
        raise _Malformed(msg)
    return value


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(detailed_validation=False)
    conv.register_structure_hook(str, _strict_str)
    conv.register_structure_hook(int, _strict_int)
    conv.register_structure_hook(
        ExportStatus,
        make_dict_structure_fn(
            ExportStatus,
            conv,
            _cattrs_detailed_validation=False,
            export_id=override(rename="exportId"),
            file_count=override(rename="fileCount"),
        ),
    )
    conv.register_structure_hook(
        ExportFile,
        make_dict_structure_fn(
            ExportFile,
            conv,
            _cattrs_detailed_validation=False,
            file_id=override(rename="fileId"),
            download_url=override(rename="downloadUrl"),
            size_bytes=override(rename="sizeBytes"),
        ),
    )
    conv.register_structure_hook(
        _Page,
        make_dict_structure_fn(
            _Page,
            conv,
            _cattrs_detailed_validation=False,
            next_cursor=override(rename="nextCursor"),
        ),
    )
    return conv


_converter = _make_converter()


def _structure(response: httpx.Response, cls: type[T]) -> T:
    """``cls`` from the JSON body, or :class:`_Malformed` saying what is wrong."""
    try:
        body = response.json()
    except ValueError as err:
        msg = "body is not JSON"
        raise _Malformed(msg) from err
    if not isinstance(body, dict):
        msg = f"expected a JSON object, got {type(body).__name__}"
        raise _Malformed(msg)
    try:
        return _converter.structure(body, cls)
    except _Malformed:
        raise
    except KeyError as err:
        msg = f"missing field {err}"
        raise _Malformed(msg) from err
    except (cattrs.BaseValidationError, cattrs.errors.CattrsError, TypeError, ValueError) as err:
        msg = " ".join(str(err).split())[:200]
        raise _Malformed(msg) from err


# --- hosts and auth -------------------------------------------------------------


@attrs.frozen
class _Origin:
    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: httpx.URL) -> _Origin:
        return cls(url.scheme, url.host.lower(), url.port or _DEFAULT_PORTS.get(url.scheme, 0))

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _parse_allowed(entry: str) -> tuple[str, int | None]:
    """``host`` or ``host:port`` (IPv6 in brackets) as (lower-case host, port or None)."""
    entry = entry.strip().lower()
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif entry.count(":") == 1:
        host, _, port = entry.partition(":")
    else:
        host, port = entry, ""
    if port and not port.isdigit():
        msg = f"allowed host {entry!r} has a bad port"
        raise ValueError(msg)
    return host, (int(port) if port else None)


def _download_allowed(
    url: httpx.URL, api: _Origin, allowed: frozenset[tuple[str, int | None]]
) -> bool:
    """Whether ``url`` may be fetched: the API's own host, or a listed host[:port].

    A bare host in the list allows any port on it; ``host:port`` only that port.
    """
    target = _Origin.of(url)
    if (target.host, target.port) == (api.host, api.port):
        return True
    return (target.host, None) in allowed or (target.host, target.port) in allowed


class _OriginBearerAuth(httpx.Auth):
    """``Authorization: Bearer`` on requests to one origin only, whatever the URL."""

    def __init__(self, token: str | None, origin: _Origin) -> None:
        self._header = None if token is None else f"Bearer {token}"
        self._origin = origin

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._header is not None and _Origin.of(request.url) == self._origin:
            request.headers["Authorization"] = self._header
        else:
            # Never forward one that leaked in from client-wide defaults.
            request.headers.pop("Authorization", None)
        yield request


def _where(url: httpx.URL, *, own: bool) -> str:
    """Where a request went, for one-line messages: path only, never the query.

    Download URLs are presigned: their query is a credential.
    """
    path = url.raw_path.split(b"?", 1)[0].decode("ascii", "replace")
    return path if own else f"{_Origin.of(url).netloc}{path}"


# --- translation at the boundary ---------------------------------------------------


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = email.utils.localtime()
    return max(0.0, (when - now).total_seconds()) if when.tzinfo else None


def _status_error(
    response: httpx.Response,
    what: str,
    *,
    not_found: type[ExportApiRejected],
    on_conflict: type[PermanentError] | None,
) -> Exception:
    status = response.status_code
    line = f"{what}: {status} {response.reason_phrase}".rstrip()
    if status in _TRANSIENT_STATUS or (status >= 500 and status not in (501, 505)):
        after = _retry_after(response.headers.get("Retry-After"))
        return ExportApiUnavailable(line, retry_after=after)
    if status == 404:
        return not_found(line)
    if status == 409 and on_conflict is not None:
        return on_conflict(f"{line} (the export is still PENDING)")
    if status in (401, 403):
        return ExportApiRejected(f"{line} (check EXPORT_API_TOKEN and the URL's signature)")
    if 300 <= status < 400:
        return ExportApiRejected(f"{line} (redirects are not followed)")
    return ExportApiRejected(line)


@contextlib.contextmanager
def _translated(
    what: str,
    *,
    not_found: type[ExportApiRejected] = ExportApiRejected,
    on_conflict: type[PermanentError] | None = None,
) -> Iterator[None]:
    """Turn httpx errors, bad statuses and malformed bodies into our errors.

    The one place where translation happens, like httpx's own
    ``map_exceptions``: the block calls ``response.raise_for_status()`` and
    parses with :func:`_structure`; whatever escapes is raised here as the
    most specific error of our hierarchy, ``from`` the original. ``what`` is
    "METHOD where" and opens the message; it never holds a query or a token.
    """
    try:
        yield
    except httpx.HTTPStatusError as err:
        raise _status_error(
            err.response, what, not_found=not_found, on_conflict=on_conflict
        ) from err
    except httpx.TimeoutException as err:
        msg = f"{what}: timed out ({type(err).__name__})"
        raise ExportApiUnavailable(msg) from err
    except httpx.TransportError as err:
        reason = " ".join(str(err).split())[:200] or "no detail"
        msg = f"{what}: connection failed ({type(err).__name__}: {reason})"
        raise ExportApiUnavailable(msg) from err
    except httpx.HTTPError as err:
        msg = f"{what}: {type(err).__name__}: {' '.join(str(err).split())[:200]}"
        raise ExportApiRejected(msg) from err
    except _Malformed as err:
        msg = f"{what}: malformed answer: {err}"
        raise ExportApiRejected(msg) from err


def _content_range(header: str | None) -> tuple[int | None, int | None] | None:
    """(first byte, total) from ``bytes a-b/total`` or ``bytes */total``.

    Either part is None when the header leaves it open (``*``); the whole
    is None when the header is missing or unparsable.
    """
    if not header:
        return None
    unit, _, spec = header.strip().partition(" ")
    span, _, total = spec.partition("/")
    first = span.partition("-")[0]
    if unit.lower() != "bytes" or not (first.isdigit() or span == "*"):
        return None
    if not (total.isdigit() or total == "*"):
        return None
    return (int(first) if first.isdigit() else None), (int(total) if total.isdigit() else None)


# --- the client ------------------------------------------------------------------


class ExportApi:
    """The Export API, seen through retries, a circuit breaker and our errors.

    ``http`` is the process's long-lived client; its timeouts bound every
    request (a stall longer than its read timeout is a transient error). It
    must not carry an ``Authorization`` header of its own: this class decides
    per request who gets the token. ``allowed_hosts`` holds ``host`` or
    ``host:port`` entries (case-insensitive) besides the API's own host.

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
        chunk_size: int = DOWNLOAD_CHUNK_BYTES,
        rng: random.Random | None = None,
    ) -> None:
        base = httpx.URL(base_url)
        if base.scheme not in _DEFAULT_PORTS or not base.host:
            msg = f"base_url must be an absolute http(s) URL, not {base_url!r}"
            raise ValueError(msg)
        if not 1 <= page_size <= 100:
            msg = f"page_size must be 1..100, not {page_size}"
            raise ValueError(msg)
        if chunk_size < 1:
            msg = f"chunk_size must be positive, not {chunk_size}"
            raise ValueError(msg)
        if "authorization" in http.headers:
            msg = "the httpx client must not carry a default Authorization header"
            raise ValueError(msg)
        self._http = http
        self._base = base_url.rstrip("/")
        self._origin = _Origin.of(base)
        self._auth = _OriginBearerAuth(token, self._origin)
        self._allowed = frozenset(_parse_allowed(entry) for entry in allowed_hosts if entry.strip())
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
        self._breaker.record(ok, trio.current_time())

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

        return await retry(guarded, self._policy, what=what, rng=self._rng)

    # -- the API --

    async def get_status(self, export_id: str) -> ExportStatus:
        """``GET /exports/{id}``.

        Raises :class:`ExportNotFound` on 404, :class:`ExportApiRejected` on
        other refusals or a malformed body, :class:`RetriesExhausted` when
        transient failures outlive the policy.
        """
        url = self._url("exports", export_id)
        what = f"GET {_where(url, own=True)}"

        async def attempt() -> ExportStatus:
            with _translated(what, not_found=ExportNotFound):
                response = await self._http.get(url, auth=self._auth, follow_redirects=False)
                response.raise_for_status()
                status = _structure(response, ExportStatus)
                if status.export_id != export_id:
                    msg = f"answer is about export {status.export_id!r}"
                    raise _Malformed(msg)
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

    async def _list_page(self, export_id: str, cursor: str | None, page_no: int) -> _Page:
        url = self._url("exports", export_id, "files")
        params: dict[str, str | int] = {"limit": self._page_size}
        if cursor is not None:
            params["cursor"] = cursor
        what = f"GET {_where(url, own=True)}"

        async def attempt() -> _Page:
            with _translated(what, not_found=ExportNotFound, on_conflict=ExportNotReady):
                response = await self._http.get(
                    url, params=params, auth=self._auth, follow_redirects=False
                )
                response.raise_for_status()
                page = _structure(response, _Page)
                if page.next_cursor == "":
                    msg = "nextCursor is an empty string"
                    raise _Malformed(msg)
                return page

        return await self._call(f"{what} page {page_no}", attempt)

    def _checked_download_url(self, file: ExportFile) -> httpx.URL:
        """The file's URL, or :class:`DownloadRefused` before any request is made."""
        try:
            url = httpx.URL(file.download_url)
        except httpx.InvalidURL as err:
            msg = f"file {file.file_id}: downloadUrl is not a valid URL"
            raise DownloadRefused(msg) from err
        if url.scheme not in _DEFAULT_PORTS or not url.host:
            msg = f"file {file.file_id}: downloadUrl is not an absolute http(s) URL"
            raise DownloadRefused(msg)
        if not _download_allowed(url, self._origin, self._allowed):
            netloc = _Origin.of(url).netloc
            msg = (
                f"file {file.file_id}: download host {netloc} is not allowed "
                "(not the Export API's host nor in EXPORT_DOWNLOAD_ALLOWED_HOSTS)"
            )
            log.warning("download refused", fileId=file.file_id, host=netloc)
            raise DownloadRefused(msg)
        return url

    def _is_own(self, url: httpx.URL) -> bool:
        return _Origin.of(url) == self._origin

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
        what = f"GET {_where(url, own=self._is_own(url))}"
        headers = {"Range": f"bytes={start}-", "Accept-Encoding": "identity"}

        async def attempt() -> RangeResult:
            with _translated(what):
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
            unsatisfied = _content_range(response.headers.get("Content-Range"))
            end = None if unsatisfied is None else unsatisfied[1]
            if end is not None and start >= end:
                return RangeResult(api=self, file=file, start=start, total_size=end, data=b"")
        response.raise_for_status()
        if response.status_code == 200:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            return RangeResult(api=self, file=file, start=0, total_size=total, ranged=False)
        span = _checked_span(response, start)
        expected = span - start
        data = bytearray()
        async for chunk in response.aiter_bytes(self._chunk_size):
            data += chunk
            if len(data) > expected:
                msg = f"206 body is longer than Content-Range says ({expected} bytes)"
                raise _Malformed(msg)
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


def _checked_span(response: httpx.Response, start: int) -> int:
    """The total size from a 206's ``Content-Range``, checked to begin at ``start``."""
    span = _content_range(response.headers.get("Content-Range"))
    first, total = span if span is not None else (None, None)
    if first is None or total is None:
        msg = "206 without a usable Content-Range"
        raise _Malformed(msg)
    if first != start:
        msg = f"206 starts at byte {first}, asked for {start}"
        raise _Malformed(msg)
    return total


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

    def _check(self, page: _Page) -> None:
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


@attrs.frozen(eq=False)
class RangeResult:
    """The answer to :meth:`ExportApi.fetch_range`.

    ``ranged``: the server answered 206 and ``data`` holds bytes ``start``
    to the end of the file, whose size is ``total_size``. Not ``ranged``: it
    answered 200, so nothing was read (``data`` is empty, ``start`` is 0,
    ``total_size`` is the Content-Length or None); use :meth:`stream` to read
    the file from its first byte instead.
    """

    api: ExportApi = attrs.field(repr=False)
    file: ExportFile
    start: int
    total_size: int | None
    data: bytes = attrs.field(default=b"", repr=lambda data: f"<{len(data)} bytes>")
    ranged: bool = True

    def stream(self) -> contextlib.AbstractAsyncContextManager[DownloadStream]:
        """The whole file as a resumable stream, for a server that ignores Range."""
        return self.api.download(self.file, start=0)


class DownloadStream:
    """One file's bytes as one continuous async iterator of chunks.

    Behind it, one response at a time: when the body breaks off, the next
    ``__anext__`` waits per the backoff policy and opens a new response with
    ``Range: bytes=<position>-``. Errors: :class:`ExportApiRejected` for a
    refusal or a server that cannot resume properly, :class:`RetriesExhausted`
    when the attempts are spent.
    """

    def __init__(self, api: ExportApi, file: ExportFile, url: httpx.URL, start: int) -> None:
        self._api = api
        self._file = file
        self._url = url
        self._what = f"GET {_where(url, own=api._is_own(url))}"
        self._start = start
        self._position = start
        self._total: int | None = None
        self._attempts = 0
        self._resumes = 0
        self._exit: contextlib.AsyncExitStack | None = None
        self._chunks: AsyncIterator[bytes] | None = None
        self._finished = False

    @property
    def total_size(self) -> int:
        """The file's size in bytes, from Content-Length or Content-Range."""
        if self._total is None:
            msg = "the download is not open yet"
            raise RuntimeError(msg)
        return self._total

    @property
    def position(self) -> int:
        """Offset in the file of the next byte the iterator will give."""
        return self._position

    @property
    def resumes(self) -> int:
        """How many times the body broke off and was resumed."""
        return self._resumes

    def __aiter__(self) -> DownloadStream:
        return self

    async def __anext__(self) -> bytes:
        while True:
            if self._finished:
                raise StopAsyncIteration
            if self._chunks is None:
                await self._open_with_retries()
                continue
            try:
                with _translated(self._what):
                    chunk = await anext(self._chunks)
            except StopAsyncIteration:
                await self._close_response()
                self._finished = True
                if self._total is not None and self._position != self._total:
                    msg = f"{self._what}: body ended at byte {self._position} of {self._total}"
                    raise ExportApiRejected(msg) from None
                raise
            except TransientError as err:
                # The body broke off; whatever was given stays given.
                self._api._record(False)
                await self._close_response()
                self._resumes += 1
                log.warning(
                    "download broke off; resuming",
                    fileId=self._file.file_id,
                    position=self._position,
                    error=str(err),
                )
                await self._wait_or_give_up(err)
                continue
            if chunk:
                self._position += len(chunk)
                return chunk

    async def open(self) -> None:
        """Open the first response (with retries), learning the total size."""
        await self._open_with_retries()

    async def aclose(self) -> None:
        """Close the current response, if any; the stream gives nothing more."""
        self._finished = True
        await self._close_response()

    async def _open_with_retries(self) -> None:
        while True:
            self._attempts += 1
            try:
                await self._api._guarded(self._what, self._open_once)
                return
            except TransientError as err:
                await self._close_response()
                await self._wait_or_give_up(err)

    async def _wait_or_give_up(self, err: TransientError) -> None:
        policy = self._api.policy
        if policy.gives_up_after(self._attempts):
            self._finished = True
            msg = (
                f"download of file {self._file.file_id}: "
                f"gave up after {self._attempts} attempts: {err}"
            )
            raise RetriesExhausted(msg) from err
        draw = (self._api._rng or random).random()
        await trio.sleep(policy.delay(self._attempts, err.retry_after, draw))

    async def _open_once(self) -> None:
        headers = {"Accept-Encoding": "identity"}
        if self._position:
            headers["Range"] = f"bytes={self._position}-"
        exit_stack = contextlib.AsyncExitStack()
        self._exit = exit_stack
        with _translated(self._what):
            response = await exit_stack.enter_async_context(
                self._api._http.stream(
                    "GET",
                    self._url,
                    headers=headers,
                    auth=self._api._auth,
                    follow_redirects=False,
                )
            )
            response.raise_for_status()
            self._total = self._checked_total(response)
        self._chunks = response.aiter_bytes(self._api._chunk_size)
        if self._position >= self._total:
            # Nothing (left) to read, e.g. an empty file.
            self._finished = self._position == self._total

    def _checked_total(self, response: httpx.Response) -> int:
        if self._position == 0:
            if response.status_code == 206:
                return _checked_span(response, 0)
            length = response.headers.get("Content-Length")
            if response.status_code != 200 or not length or not length.isdigit():
                msg = f"{response.status_code} without a Content-Length"
                raise _Malformed(msg)
            return int(length)
        if response.status_code != 206:
            msg = (
                f"answered {response.status_code} to Range: bytes={self._position}-; "
                "refusing to restart the file and repeat bytes"
            )
            raise _Malformed(msg)
        total = _checked_span(response, self._position)
        if self._total is not None and total != self._total:
            msg = f"file size changed from {self._total} to {total} bytes between requests"
            raise _Malformed(msg)
        return total

    async def _close_response(self) -> None:
        self._chunks = None
        exit_stack, self._exit = self._exit, None
        if exit_stack is not None:
            # Closing must happen even when we are being cancelled, or the
            # pool keeps a half-read connection; it is quick, but bounded anyway.
            with trio.move_on_after(CLOSE_TIMEOUT_SECONDS, shield=True):
                await exit_stack.aclose()
