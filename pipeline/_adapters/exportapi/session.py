"""The Export API session: what every request to the API and its downloads shares.

One :class:`ExportApiSession` per process holds the HTTP client, the token's
rule (:class:`OriginBearerAuth`), the allowed download hosts, the backoff
policy, the circuit breaker and the jitter's random generator, and runs the
one attempt loop (:meth:`ExportApiSession.run`) that status calls, listing
pages, ranged reads and downloads all go through. The client (client.py) and
the download (download.py) are each handed the session, as httpcore's
``AsyncHTTPConnection`` is handed its network backend; neither imports the
other's internals, and the session imports neither.

The loop's rules (contract 2):

* An attempt is a request that was made. A call the open breaker refuses is
  not an attempt: it waits for the breaker (its message keeps its lease, the
  heartbeat keeps that), up to ``max_breaker_wait`` seconds.
* Transient failures (429, 5xx, timeouts, broken bodies) are retried with full
  jitter, honouring ``Retry-After``. When ``policy.max_attempts`` attempts of
  one call have failed, or the breaker stayed open past ``max_breaker_wait``,
  :class:`ExportApiExhausted` is raised: a transient error that hands the work
  back for later. It is not a verdict on the export: only the job's age
  (``EXPORT_MAX_WAIT_SECONDS``) turns it into one, in the stages.
* Permanent answers (401, 403, 404, other 4xx, a malformed body) propagate at
  once and count as a healthy API for the breaker: the API did answer.

Cancellation is never caught.
"""

from __future__ import annotations

import contextlib
import random
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import TypeVar

import attrs
import httpx
import structlog
import trio

from pipeline._adapters.exportapi.boundary import (
    DEFAULT_PORTS,
    DEPENDENCY,
    Origin,
    OriginBearerAuth,
    download_allowed,
    parse_allowed,
    translated,
)
from pipeline._adapters.exportapi.models import ExportFile
from pipeline._adapters.retry import circuit_changed, pause
from pipeline._core.backoff import Backoff, CircuitBreaker
from pipeline._errors import (
    DownloadRefused,
    ExportApiExhausted,
    ExportApiUnavailable,
    PermanentError,
    TransientError,
)

__all__ = ["MAX_BREAKER_WAIT_SECONDS", "Attempts", "ExportApiSession"]

T = TypeVar("T")
log = structlog.get_logger("pipeline._adapters.exportapi")

# How long one call waits on an open breaker before its work is handed back:
# long enough to ride out a deploy of the API while holding the message, short
# enough that a long outage does not keep every slot taken by waiting work.
MAX_BREAKER_WAIT_SECONDS = 60.0


@attrs.define
class Attempts:
    """The attempts of one call so far: requests made, not breaker refusals.

    A download shares one across its first request and every resume, so a
    body that keeps breaking spends the same attempts a failing call does.
    """

    made: int = 0


class ExportApiSession:
    """The HTTP client, auth, hosts, policy, breaker and RNG of the Export API.

    ``http`` is the process's long-lived client; its timeouts bound every
    request. It must not carry an ``Authorization`` header of its own: the
    session decides per request who gets the token. ``allowed_hosts`` holds
    ``host`` or ``host:port`` entries besides the API's own host.
    ``chunk_size`` cuts downloaded bodies into pieces of that size (a copy);
    by default chunks are what the socket gave.
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
        chunk_size: int | None = None,
        rng: random.Random | None = None,
        max_breaker_wait: float = MAX_BREAKER_WAIT_SECONDS,
    ) -> None:
        base = httpx.URL(base_url)
        if base.scheme not in DEFAULT_PORTS or not base.host:
            msg = f"base_url must be an absolute http(s) URL, not {base_url!r}"
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
        self.policy = policy
        self.breaker = breaker
        self.chunk_size = chunk_size
        self._rng = rng
        self._max_breaker_wait = max_breaker_wait

    # -- requests --

    def url(self, *segments: str) -> httpx.URL:
        """An absolute URL on the API's host, each segment quoted."""
        quoted = []
        for segment in segments:
            part = urllib.parse.quote(segment, safe="")
            # "." and ".." are valid export IDs but dot-segments in a path.
            quoted.append(part.replace(".", "%2E") if set(segment) == {"."} else part)
        return httpx.URL(self._base + "/" + "/".join(quoted))

    def is_own(self, url: httpx.URL) -> bool:
        """Whether ``url`` is on the Export API's own origin."""
        return Origin.of(url) == self._origin

    async def get(
        self, url: httpx.URL, params: dict[str, str | int] | None = None
    ) -> httpx.Response:
        """One GET, its body read; the token only where it belongs, no redirects."""
        return await self._http.get(url, params=params, auth=self._auth, follow_redirects=False)

    def stream(
        self, url: httpx.URL, headers: dict[str, str]
    ) -> contextlib.AbstractAsyncContextManager[httpx.Response]:
        """One streamed GET (the body read by the caller); the same rules as :meth:`get`."""
        return self._http.stream(
            "GET", url, headers=headers, auth=self._auth, follow_redirects=False
        )

    def download_url(self, file: ExportFile) -> httpx.URL:
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

    # -- the attempt loop --

    async def run(
        self, what: str, attempt: Callable[[], Awaitable[T]], tries: Attempts | None = None
    ) -> T:
        """Run ``attempt`` until it succeeds, per the rules in the module docstring.

        ``tries`` carries the count across calls that share it (a download's
        resumes); a fresh count otherwise.
        """
        tries = Attempts() if tries is None else tries
        while True:
            await self.wait_for_breaker(what, tries)
            tries.made += 1
            try:
                result = await attempt()
            except ExportApiUnavailable as err:
                self.record(ok=False)
                await self.after_failure(what, err, tries)
                continue
            except PermanentError:
                self.record(ok=True)
                raise
            self.record(ok=True)
            return result

    async def after_failure(self, what: str, err: TransientError, tries: Attempts) -> None:
        """Wait before the next attempt, or raise :class:`ExportApiExhausted` when none is left.

        The download calls this for a body that broke off, which it recorded
        itself, so that a resume follows the same policy as any call.
        """
        if self.policy.gives_up_after(tries.made):
            msg = f"{what}: gave up after {tries.made} attempts: {err}"
            raise ExportApiExhausted(msg) from err
        await pause(
            self.policy,
            tries.made,
            dependency=DEPENDENCY,
            what=what,
            error=str(err),
            retry_after=err.retry_after,
            rng=self._rng,
        )

    async def wait_for_breaker(self, what: str, tries: Attempts) -> None:
        """Return once the breaker lets a request through (half-open: this one is its probe).

        Not an attempt. Past ``max_breaker_wait`` seconds of waiting,
        :class:`ExportApiExhausted` hands the work back instead.
        """
        began = trio.current_time()
        logged = False
        while not self.breaker.allows(trio.current_time()):
            now = trio.current_time()
            if now - began >= self._max_breaker_wait:
                msg = (
                    f"{what}: Export API circuit breaker open for {now - began:.0f} s "
                    f"after {tries.made} attempts"
                )
                raise ExportApiExhausted(msg)
            if not logged:
                log.info("waiting for the Export API's circuit breaker", what=what)
                logged = True
            wait = self.breaker.retry_after(now)
            await trio.sleep(min(max(wait, 0.05), began + self._max_breaker_wait - now))

    def record(self, *, ok: bool) -> None:
        """Tell the breaker how a request went: ok when the API answered at all."""
        was_open = self.breaker.is_open
        self.breaker.record(ok, trio.current_time())
        if self.breaker.is_open != was_open:
            circuit_changed(DEPENDENCY, self.breaker.is_open)

    async def probe(self) -> None:
        """Ask the API's root once, when the breaker is due a probe and nobody is making it.

        Any answer that is not transient (a 404 for the root is the usual one)
        says the API answers again and closes the breaker; a transient one
        opens it for another cooldown. The intake gate calls this while it
        holds new work back, so the breaker learns the API is back without a
        message being taken for the purpose.
        """
        if not self.breaker.allows(trio.current_time()):
            return
        what = "GET / (probe)"
        try:
            with translated(what):
                response = await self.get(self.url())
                response.raise_for_status()
        except ExportApiUnavailable as err:
            self.record(ok=False)
            log.info("Export API probe failed", error=str(err))
            return
        except PermanentError:
            pass
        self.record(ok=True)
