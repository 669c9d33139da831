"""Hosts, the token and error translation: the rules every Export API request follows.

* The bearer token goes only to the Export API's own origin (scheme, host and
  port of its base URL), decided per request by :class:`OriginBearerAuth`.
* A download URL is fetched only from the API's own host or an allowed one
  (:func:`download_allowed`).
* Everything httpx can throw, every status code and every malformed body is
  translated in one place, :func:`translated`, into the service's own errors.
"""

from __future__ import annotations

import contextlib
import email.utils
from collections.abc import Generator, Iterator

import attrs
import httpx

from pipeline._adapters.exportapi.models import Malformed
from pipeline._errors import ExportApiRejected, ExportApiUnavailable, PermanentError

__all__ = [
    "DEFAULT_PORTS",
    "DEPENDENCY",
    "Origin",
    "OriginBearerAuth",
    "checked_span",
    "content_range",
    "download_allowed",
    "parse_allowed",
    "retry_after_seconds",
    "translated",
    "where",
]

# The Export API's name in logs and metrics (pipeline_retries_total{dependency}).
DEPENDENCY = "export_api"

# Status codes that say "not now" rather than "no".
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
DEFAULT_PORTS = {"http": 80, "https": 443}


@attrs.frozen
class Origin:
    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: httpx.URL) -> Origin:
        return cls(url.scheme, url.host.lower(), url.port or DEFAULT_PORTS.get(url.scheme, 0))

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_allowed(entry: str) -> tuple[str, int | None]:
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


def download_allowed(
    url: httpx.URL, api: Origin, allowed: frozenset[tuple[str, int | None]]
) -> bool:
    """Whether ``url`` may be fetched: the API's own host, or a listed host[:port].

    A bare host in the list allows any port on it; ``host:port`` only that port.
    """
    target = Origin.of(url)
    if (target.host, target.port) == (api.host, api.port):
        return True
    return (target.host, None) in allowed or (target.host, target.port) in allowed


class OriginBearerAuth(httpx.Auth):
    """``Authorization: Bearer`` on requests to one origin only, whatever the URL."""

    def __init__(self, token: str | None, origin: Origin) -> None:
        self._header = None if token is None else f"Bearer {token}"
        self._origin = origin

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._header is not None and Origin.of(request.url) == self._origin:
            request.headers["Authorization"] = self._header
        else:
            # Never forward one that leaked in from client-wide defaults.
            request.headers.pop("Authorization", None)
        yield request


def where(url: httpx.URL, *, own: bool) -> str:
    """Where a request went, for one-line messages: path only, never the query.

    Download URLs are presigned: their query is a credential.
    """
    path = url.raw_path.split(b"?", 1)[0].decode("ascii", "replace")
    return path if own else f"{Origin.of(url).netloc}{path}"


def retry_after_seconds(value: str | None) -> float | None:
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


def status_error(
    response: httpx.Response,
    what: str,
    *,
    not_found: type[ExportApiRejected],
    on_conflict: type[PermanentError] | None,
) -> Exception:
    status = response.status_code
    line = f"{what}: {status} {response.reason_phrase}".rstrip()
    if status in TRANSIENT_STATUS or (status >= 500 and status not in (501, 505)):
        after = retry_after_seconds(response.headers.get("Retry-After"))
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
def translated(
    what: str,
    *,
    not_found: type[ExportApiRejected] = ExportApiRejected,
    on_conflict: type[PermanentError] | None = None,
) -> Iterator[None]:
    """Turn httpx errors, bad statuses and malformed bodies into our errors.

    The one place where translation happens, like httpx's own
    ``map_exceptions``: the block calls ``response.raise_for_status()`` and
    parses with :func:`structure`; whatever escapes is raised here as the
    most specific error of our hierarchy, ``from`` the original. ``what`` is
    "METHOD where" and opens the message; it never holds a query or a token.
    """
    try:
        yield
    except httpx.HTTPStatusError as err:
        raise status_error(
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
    except Malformed as err:
        msg = f"{what}: malformed answer: {err}"
        raise ExportApiRejected(msg) from err


def content_range(header: str | None) -> tuple[int | None, int | None] | None:
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


def checked_span(response: httpx.Response, start: int) -> int:
    """The total size from a 206's ``Content-Range``, checked to begin at ``start``."""
    span = content_range(response.headers.get("Content-Range"))
    first, total = span if span is not None else (None, None)
    if first is None or total is None:
        msg = "206 without a usable Content-Range"
        raise Malformed(msg)
    if first != start:
        msg = f"206 starts at byte {first}, asked for {start}"
        raise Malformed(msg)
    return total
