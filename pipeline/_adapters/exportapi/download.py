"""Ranged reads and resumable downloads of an export's files.

Downloads are streamed in chunks and resume after a break with
``Range: bytes=<received>-``, so the consumer sees one continuous byte stream
whose memory does not grow with the file.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import attrs
import httpx
import structlog
import trio

from pipeline._adapters.exportapi.boundary import DEPENDENCY, checked_span, translated, where
from pipeline._adapters.exportapi.models import ExportFile, Malformed
from pipeline._adapters.retry import pause
from pipeline._errors import (
    CircuitOpen,
    ExportApiRejected,
    Fault,
    RetriesExhausted,
    TransientError,
)

if TYPE_CHECKING:
    from pipeline._adapters.exportapi.client import ExportApi

__all__ = ["CLOSE_TIMEOUT_SECONDS", "DownloadStream", "RangeResult"]

log = structlog.get_logger("pipeline._adapters.exportapi")

# Closing a response only drops its connection; if that takes longer, the
# socket is gone anyway.
CLOSE_TIMEOUT_SECONDS = 5.0


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
        self._what = f"GET {where(url, own=api._is_own(url))}"
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
            raise RetriesExhausted(msg, fault=Fault.EXPORT) from err
        await pause(
            policy,
            self._attempts,
            dependency=DEPENDENCY,
            what=self._what,
            error=str(err),
            retry_after=err.retry_after,
            circuit_open=isinstance(err, CircuitOpen),
            rng=self._api._rng,
        )

    async def _open_once(self) -> None:
        headers = {"Accept-Encoding": "identity"}
        if self._position:
            headers["Range"] = f"bytes={self._position}-"
        exit_stack = contextlib.AsyncExitStack()
        self._exit = exit_stack
        with translated(self._what):
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
