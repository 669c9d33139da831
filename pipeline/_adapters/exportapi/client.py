"""The Export API client: status and the file listing, over the session.

Thin I/O over an :class:`ExportApiSession` (session.py), which holds the HTTP
client, the token's rule, the breaker, the policy and the one attempt loop.
Everything httpx can throw at us, and every status code the API can answer,
is translated in one place (boundary.py's ``translated``) into the service's
own errors, so callers decide with ``err.transient`` and never see an httpx
exception. Downloads live in download.py, handed the same session; this
module offers them as methods so a caller holds one object.

Two safety rules hold for every request (the session keeps them):

* The bearer token goes only to the Export API's own origin (scheme, host and
  port of ``base_url``), and redirects are never followed, so a
  ``downloadUrl`` on another host, or a redirect to one, cannot carry it away.
* A download URL is fetched only when its host is the API's own or listed in
  ``allowed_hosts``; any other URL raises :class:`DownloadRefused` before a
  request is made.
"""

from __future__ import annotations

import contextlib
from typing import NoReturn

import structlog

from pipeline._adapters.exportapi.boundary import translated, where
from pipeline._adapters.exportapi.download import (
    DownloadStream,
    RangeResult,
    fetch_range,
    open_download,
)
from pipeline._adapters.exportapi.models import ExportFile, ExportStatus, Malformed, Page, structure
from pipeline._adapters.exportapi.session import ExportApiSession
from pipeline._core.backoff import Backoff
from pipeline._errors import ExportNotFound, ExportNotReady, ListingFault

__all__ = ["ExportApi", "FileListing"]

log = structlog.get_logger("pipeline._adapters.exportapi")

# A listing that keeps answering empty pages with fresh cursors is looping in
# a way cursor repetition cannot see; real empty pages come one or two at a time.
MAX_EMPTY_PAGES_IN_A_ROW = 100


class ExportApi:
    """The Export API's calls: status, listing pages, ranged reads and downloads.

    Every call goes through ``session.run`` (see session.py): transient
    failures are retried, a call refused by the open breaker waits for it,
    and :class:`ExportApiExhausted` hands the work back when one call's
    attempts are spent. Cancellation is never caught; a cancelled call leaves
    no open response.
    """

    def __init__(self, session: ExportApiSession, *, page_size: int = 100) -> None:
        if not 1 <= page_size <= 100:
            msg = f"page_size must be 1..100, not {page_size}"
            raise ValueError(msg)
        self.session = session
        self._page_size = page_size

    @property
    def policy(self) -> Backoff:
        """The backoff policy every call and every download resume follows."""
        return self.session.policy

    async def get_status(self, export_id: str) -> ExportStatus:
        """``GET /exports/{id}``.

        Raises :class:`ExportNotFound` on 404, :class:`ExportApiRejected` on
        other refusals or a malformed body, :class:`ExportApiExhausted` when
        transient failures outlive the policy.
        """
        url = self.session.url("exports", export_id)
        what = f"GET {where(url, own=True)}"

        async def attempt() -> ExportStatus:
            with translated(what, not_found=ExportNotFound):
                response = await self.session.get(url)
                response.raise_for_status()
                status = structure(response, ExportStatus)
                if status.export_id != export_id:
                    msg = f"answer is about export {status.export_id!r}"
                    raise Malformed(msg)
                return status

        return await self.session.run(what, attempt)

    def list_files(self, export_id: str) -> FileListing:
        """The export's files, page by page: ``async for page in api.list_files(id)``.

        Pages may be empty. Raises :class:`ExportNotReady` when the export is
        still PENDING (409), :class:`ExportNotFound` on 404, and
        :class:`ListingFault` when a cursor comes back a second time, a file ID
        is listed twice, or empty pages never end.
        """
        return FileListing(self, export_id)

    async def list_page(self, export_id: str, cursor: str | None, page_no: int) -> Page:
        """One page of the listing (``page_no`` only names it in messages)."""
        url = self.session.url("exports", export_id, "files")
        params: dict[str, str | int] = {"limit": self._page_size}
        if cursor is not None:
            params["cursor"] = cursor
        what = f"GET {where(url, own=True)}"

        async def attempt() -> Page:
            with translated(what, not_found=ExportNotFound, on_conflict=ExportNotReady):
                response = await self.session.get(url, params)
                response.raise_for_status()
                page = structure(response, Page)
                if page.next_cursor == "":
                    msg = "nextCursor is an empty string"
                    raise Malformed(msg)
                return page

        return await self.session.run(f"{what} page {page_no}", attempt)

    async def fetch_range(self, file: ExportFile, start: int) -> RangeResult:
        """The file's bytes from ``start`` to its end: see :func:`download.fetch_range`."""
        return await fetch_range(self.session, file, start)

    def download(
        self, file: ExportFile, start: int = 0
    ) -> contextlib.AbstractAsyncContextManager[DownloadStream]:
        """Stream the file from ``start``: see :func:`download.open_download`."""
        return open_download(self.session, file, start)


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
        # A page read by peek(), given again by the iteration.
        self._peeked: list[ExportFile] | None = None

    def __aiter__(self) -> FileListing:
        return self

    @property
    def done(self) -> bool:
        """Whether the last page has been read (the listing's files are all known)."""
        return self._done

    async def peek(self) -> list[ExportFile]:
        """The next page, read now and given again by the iteration."""
        if self._peeked is None:
            self._peeked = await anext(self)
        return self._peeked

    async def __anext__(self) -> list[ExportFile]:
        if self._peeked is not None:
            peeked, self._peeked = self._peeked, None
            return peeked
        if self._done:
            raise StopAsyncIteration
        page = await self._api.list_page(self._export_id, self._cursor, self._pages + 1)
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
