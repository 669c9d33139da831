"""Ranged reads and resumable downloads of an export's files, over the session.

Downloads are streamed in chunks and resume after a break with
``Range: bytes=<received>-``, so the consumer sees one continuous byte stream
whose memory does not grow with the file. Every request, first or resumed,
goes through the session's one attempt loop (:meth:`ExportApiSession.run`);
a body that breaks off is one more failed attempt of the same count.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import attrs
import httpx
import structlog
import trio

from pipeline._adapters.exportapi.boundary import checked_span, content_range, translated, where
from pipeline._adapters.exportapi.models import ExportFile, Malformed
from pipeline._adapters.exportapi.session import Attempts, ExportApiSession
from pipeline._errors import ExportApiRejected, TransientError

__all__ = ["CLOSE_TIMEOUT_SECONDS", "DownloadStream", "RangeResult", "fetch_range", "open_download"]

log = structlog.get_logger("pipeline._adapters.exportapi")

# Closing a response only drops its connection; if that takes longer, the
# socket is gone anyway.
CLOSE_TIMEOUT_SECONDS = 5.0


@attrs.frozen(eq=False)
class RangeResult:
    """The answer to :func:`fetch_range`.

    ``ranged``: the server answered 206 and ``data`` holds bytes ``start``
    to the end of the file, whose size is ``total_size``. Not ``ranged``: it
    answered 200, so nothing was read (``data`` is empty, ``start`` is 0,
    ``total_size`` is the Content-Length or None); use :meth:`stream` to read
    the file from its first byte instead.
    """

    session: ExportApiSession = attrs.field(repr=False)
    file: ExportFile
    start: int
    total_size: int | None
    data: bytes = attrs.field(default=b"", repr=lambda data: f"<{len(data)} bytes>")
    ranged: bool = True

    def stream(self) -> contextlib.AbstractAsyncContextManager[DownloadStream]:
        """The whole file as a resumable stream, for a server that ignores Range."""
        return open_download(self.session, self.file, start=0)


class DownloadStream:
    """One file's bytes as one continuous async iterator of chunks.

    Behind it, one response at a time: when the body breaks off, the next
    ``__anext__`` waits per the backoff policy and opens a new response with
    ``Range: bytes=<position>-``. Errors: :class:`ExportApiRejected` for a
    refusal or a server that cannot resume properly,
    :class:`ExportApiExhausted` when the attempts are spent.
    """

    def __init__(
        self, session: ExportApiSession, file: ExportFile, url: httpx.URL, start: int
    ) -> None:
        self._session = session
        self._file = file
        self._url = url
        self._what = f"GET {where(url, own=session.is_own(url))}"
        self._start = start
        self._position = start
        self._total: int | None = None
        self._tries = Attempts()
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
                await self.open()
                continue
            try:
                with translated(self._what):
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
                self._session.record(ok=False)
                await self._close_response()
                self._resumes += 1
                log.warning(
                    "download broke off; resuming",
                    fileId=self._file.file_id,
                    position=self._position,
                    error=str(err),
                )
                try:
                    await self._session.after_failure(self._what, err, self._tries)
                except TransientError:
                    self._finished = True
                    raise
                continue
            if chunk:
                self._position += len(chunk)
                return chunk

    async def open(self) -> None:
        """Open a response at the current position (with retries), learning the total size."""
        try:
            await self._session.run(self._what, self._open_once, self._tries)
        except TransientError:
            self._finished = True
            raise

    async def aclose(self) -> None:
        """Close the current response, if any; the stream gives nothing more."""
        self._finished = True
        await self._close_response()

    async def _open_once(self) -> None:
        headers = {"Accept-Encoding": "identity"}
        if self._position:
            headers["Range"] = f"bytes={self._position}-"
        await self._close_response()
        exit_stack = contextlib.AsyncExitStack()
        self._exit = exit_stack
        try:
            with translated(self._what):
                response = await exit_stack.enter_async_context(
                    self._session.stream(self._url, headers)
                )
                response.raise_for_status()
                self._total = self._checked_total(response)
        except BaseException:
            # No failed response stays open while the loop waits to try again.
            await self._close_response()
            raise
        self._chunks = response.aiter_bytes(self._session.chunk_size)
        if self._position >= self._total:
            # Nothing (left) to read, e.g. an empty file.
            self._finished = self._position == self._total

    def _checked_total(self, response: httpx.Response) -> int:
        if self._position == 0:
            if response.status_code == 206:
                return checked_span(response, 0)
            length = response.headers.get("Content-Length")
            if response.status_code != 200 or not length or not length.isdigit():
                msg = f"{response.status_code} without a Content-Length"
                raise Malformed(msg)
            return int(length)
        if response.status_code != 206:
            msg = (
                f"answered {response.status_code} to Range: bytes={self._position}-; "
                "refusing to restart the file and repeat bytes"
            )
            raise Malformed(msg)
        total = checked_span(response, self._position)
        if self._total is not None and total != self._total:
            msg = f"file size changed from {self._total} to {total} bytes between requests"
            raise Malformed(msg)
        return total

    async def _close_response(self) -> None:
        self._chunks = None
        exit_stack, self._exit = self._exit, None
        if exit_stack is not None:
            # Closing must happen even when we are being cancelled, or the
            # pool keeps a half-read connection; it is quick, but bounded anyway.
            with trio.move_on_after(CLOSE_TIMEOUT_SECONDS, shield=True):
                await exit_stack.aclose()


@contextlib.asynccontextmanager
async def open_download(
    session: ExportApiSession, file: ExportFile, start: int = 0
) -> AsyncIterator[DownloadStream]:
    """Stream the file from ``start``: ``async with open_download(s, f) as chunks``.

    The first response is opened before the block runs, so
    ``chunks.total_size`` is known at once (the caller can refuse a file too
    large before reading it). A break mid-body resumes with ``Range``; the
    resumes count against the same attempts as the first request, and
    :class:`ExportApiExhausted` ends the stream when they are spent. A server
    that answers 200 to a resume is refused (:class:`ExportApiRejected`)
    rather than repeating bytes. Raises :class:`DownloadRefused` for a host
    not allowed, with no request made.
    """
    if start < 0:
        msg = f"start must not be negative, not {start}"
        raise ValueError(msg)
    url = session.download_url(file)
    stream = DownloadStream(session, file, url, start)
    try:
        await stream.open()
        yield stream
    finally:
        await stream.aclose()


async def fetch_range(session: ExportApiSession, file: ExportFile, start: int) -> RangeResult:
    """The file's bytes from ``start`` to its end, for reading a ZIP's tail.

    Sends ``Range: bytes=<start>-``. On 206 the result is ``ranged`` and
    holds the bytes (the caller picks ``start`` so they are few). On 200 the
    server ignored the range: the body is NOT read (it is the whole file);
    the result says ``ranged=False`` with the size from ``Content-Length``,
    and :meth:`RangeResult.stream` streams the whole file instead. A
    ``start`` at or past the end gives an empty ranged result. Raises
    :class:`DownloadRefused` for a host not allowed.
    """
    if start < 0:
        msg = f"start must not be negative, not {start}"
        raise ValueError(msg)
    url = session.download_url(file)
    what = f"GET {where(url, own=session.is_own(url))}"
    headers = {"Range": f"bytes={start}-", "Accept-Encoding": "identity"}

    async def attempt() -> RangeResult:
        with translated(what):
            async with session.stream(url, headers) as response:
                return await _range_answer(session, response, file, start)

    return await session.run(f"{what} from byte {start}", attempt)


async def _range_answer(
    session: ExportApiSession, response: httpx.Response, file: ExportFile, start: int
) -> RangeResult:
    if response.status_code == 416:
        # Asked for bytes past the end (an empty file, a tiny one): the tail is empty.
        unsatisfied = content_range(response.headers.get("Content-Range"))
        end = None if unsatisfied is None else unsatisfied[1]
        if end is not None and start >= end:
            return RangeResult(session=session, file=file, start=start, total_size=end, data=b"")
    response.raise_for_status()
    if response.status_code == 200:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        return RangeResult(session=session, file=file, start=0, total_size=total, ranged=False)
    span = checked_span(response, start)
    expected = span - start
    data = bytearray()
    async for chunk in response.aiter_bytes(session.chunk_size):
        data += chunk
        if len(data) > expected:
            msg = f"206 body is longer than Content-Range says ({expected} bytes)"
            raise Malformed(msg)
    return RangeResult(session=session, file=file, start=start, total_size=span, data=bytes(data))
