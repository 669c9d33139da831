"""The Export API client against the real simulator on loopback."""

from __future__ import annotations

import email.utils
import io
import random
import time
import zipfile
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpcore
import httpx
import pytest
import structlog
import trio

from pipeline._adapters import exportapi
from pipeline._adapters.exportapi import (
    ExportApi,
    ExportApiSession,
    ExportFile,
    ExportStatus,
    boundary,
)
from pipeline._adapters.retry import observe_retries
from pipeline._core.backoff import Backoff, CircuitBreaker
from pipeline._errors import (
    DownloadRefused,
    ExportApiExhausted,
    ExportApiRejected,
    ExportApiUnavailable,
    ExportNotFound,
    ExportNotReady,
    ListingFault,
)
from pipeline.testing.simulator import Simulator, SimulatorUrls, serve_simulator
from tests.support.observer import Recorder

TOKEN = "client-test-token"
FAST = Backoff(max_attempts=3, base=0.001, cap=0.005, max_retry_after=2.0)

MakeApi = Callable[..., ExportApi]


def build_zip(size: int, seed: int = 1) -> bytes:
    """A stored (uncompressed) ZIP of about ``size`` random bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("data.bin", random.Random(seed).randbytes(size))
        archive.writestr("note.txt", b"hello")
    return buffer.getvalue()


@pytest.fixture
def sim() -> Simulator:
    return Simulator(token=TOKEN)


@pytest.fixture
async def urls(sim: Simulator, nursery: trio.Nursery) -> SimulatorUrls:
    result: SimulatorUrls = await nursery.start(serve_simulator, sim)
    return result


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(5.0)) as client:
        yield client


@pytest.fixture
def make_api(http: httpx.AsyncClient, urls: SimulatorUrls) -> MakeApi:
    def make(**overrides: Any) -> ExportApi:
        options: dict[str, Any] = {
            "base_url": urls.api_url,
            "token": TOKEN,
            "allowed_hosts": frozenset({urls.download_netloc}),
            "policy": FAST,
            "breaker": CircuitBreaker(),
            "page_size": 100,
            "rng": random.Random(0),
        }
        options.update(overrides)
        client = options.pop("http", http)
        page_size = options.pop("page_size")
        return ExportApi(ExportApiSession(client, **options), page_size=page_size)

    return make


async def all_files(api: ExportApi, export_id: str) -> list[ExportFile]:
    return [file async for page in api.list_files(export_id) for file in page]


async def first_file(api: ExportApi, export_id: str) -> ExportFile:
    return (await all_files(api, export_id))[0]


async def download_all(api: ExportApi, file: ExportFile, start: int = 0) -> bytes:
    async with api.download(file, start=start) as chunks:
        return b"".join([chunk async for chunk in chunks])


class TestSurface:
    def test_all_is_sorted_and_real(self) -> None:
        """The module's __all__ is sorted and names only things it defines."""
        assert exportapi.__all__ == sorted(exportapi.__all__)
        assert all(hasattr(exportapi, name) for name in exportapi.__all__)

    async def test_bad_arguments_are_refused_up_front(self, make_api: MakeApi) -> None:
        """A relative base URL, a page size not in 1..100, a default Authorization: ValueError."""
        with pytest.raises(ValueError, match="base_url"):
            make_api(base_url="/exports")
        with pytest.raises(ValueError, match="page_size"):
            make_api(page_size=101)
        async with httpx.AsyncClient(headers={"Authorization": "Bearer x"}) as leaky:
            with pytest.raises(ValueError, match="Authorization"):
                make_api(http=leaky)


class TestStatus:
    async def test_ready(self, sim: Simulator, make_api: MakeApi) -> None:
        """A READY export's status and file count come back as an ExportStatus."""
        sim.add_export("exp-1", [("a.zip", b"x")])
        assert await make_api().get_status("exp-1") == ExportStatus("exp-1", "READY", 1)

    async def test_unknown_export_is_not_found_and_not_retried(
        self, sim: Simulator, make_api: MakeApi
    ) -> None:
        """404 raises ExportNotFound after a single request."""
        with pytest.raises(ExportNotFound, match=r"GET /exports/nope: 404"):
            await make_api().get_status("nope")
        assert sim.count("status") == 1

    async def test_pending_then_ready(self, sim: Simulator, make_api: MakeApi) -> None:
        """A PENDING export reads PENDING with no count, then READY on a later poll."""
        sim.add_export("exp-1", [("a.zip", b"x")], pending_polls=1)
        api = make_api()
        assert await api.get_status("exp-1") == ExportStatus("exp-1", "PENDING", None)
        assert await api.get_status("exp-1") == ExportStatus("exp-1", "READY", 1)

    async def test_malformed_json_is_rejected(self, sim: Simulator, make_api: MakeApi) -> None:
        """A body that is not JSON is a permanent ExportApiRejected, not retried."""
        sim.add_export("exp-1", [])
        sim.inject_status("status", 200, body=b"{not json")
        with pytest.raises(ExportApiRejected, match="malformed answer: body is not JSON"):
            await make_api().get_status("exp-1")
        assert sim.count("status") == 1

    @pytest.mark.parametrize(
        "body",
        [
            b'{"exportId": "exp-1", "status": "READY", "fileCount": "3"}',
            b'{"exportId": "exp-1", "status": "DONE", "fileCount": 3}',
            b'{"exportId": "exp-1", "status": "READY"}',
            b'{"exportId": "exp-2", "status": "READY", "fileCount": 3}',
            b'{"exportId": "exp-1", "status": "READY", "fileCount": -1}',
            b'["exp-1"]',
        ],
    )
    async def test_wrong_shape_is_rejected(
        self, sim: Simulator, make_api: MakeApi, body: bytes
    ) -> None:
        """JSON of the wrong shape (types, values, keys, another export) is ExportApiRejected."""
        sim.add_export("exp-1", [])
        sim.inject_status("status", 200, body=body)
        with pytest.raises(ExportApiRejected, match="malformed answer"):
            await make_api().get_status("exp-1")


class TestListing:
    async def test_pages_with_empty_pages(
        self, sim: Simulator, make_api: MakeApi, urls: SimulatorUrls
    ) -> None:
        """Each file arrives once, in order, over capped and empty pages; page one has no cursor."""
        ids = sim.add_export(
            "exp-1",
            [(f"part-{i}.zip", b"x" * i) for i in range(5)],
            page_size_cap=2,
            empty_pages=True,
        )
        pages = [page async for page in make_api(page_size=50).list_files("exp-1")]
        assert [len(page) for page in pages] == [0, 2, 0, 2, 0, 1]
        files = [file for page in pages for file in page]
        assert [file.file_id for file in files] == ids
        assert files[3] == ExportFile(ids[3], "part-3.zip", sim.download_url("exp-1", ids[3]), 3)
        assert files[3].download_url.startswith(urls.download_url)
        listing = [r for r in sim.requests if r.route == "files"]
        assert "cursor" not in listing[0].path
        assert len(listing) == 6

    async def test_a_peeked_page_comes_again(self, sim: Simulator, make_api: MakeApi) -> None:
        """peek() reads the first page once; the iteration gives it again, then the rest."""
        ids = sim.add_export("exp-1", [(f"p-{i}.zip", b"x") for i in range(3)], page_size_cap=2)
        listing = make_api(page_size=50).list_files("exp-1")
        first = await listing.peek()
        assert [f.file_id for f in first] == ids[:2]
        assert not listing.done
        assert await listing.peek() == first
        pages = [page async for page in listing]
        assert pages[0] == first
        assert [f.file_id for f in pages[1]] == ids[2:]
        assert listing.done
        assert len([r for r in sim.requests if r.route == "files"]) == 2
        sim.add_export("exp-2", [("only.zip", b"x")])
        single = make_api(page_size=50).list_files("exp-2")
        assert len(await single.peek()) == 1
        assert single.done

    async def test_pending_listing_is_not_ready(self, sim: Simulator, make_api: MakeApi) -> None:
        """409 on a PENDING export raises ExportNotReady at once."""
        sim.add_export("exp-1", [], pending_polls=5)
        with pytest.raises(ExportNotReady, match="still PENDING"):
            await all_files(make_api(), "exp-1")
        assert sim.count("files") == 1

    async def test_repeated_cursor_is_a_listing_fault(
        self, sim: Simulator, make_api: MakeApi
    ) -> None:
        """A cursor coming back a second time raises ListingFault instead of looping."""
        sim.add_export(
            "exp-1", [("a.zip", b"x"), ("b.zip", b"y")], page_size_cap=1, repeat_cursor=True
        )
        with pytest.raises(ListingFault, match="cursor repeated"):
            await all_files(make_api(), "exp-1")
        assert sim.count("files") == 2

    async def test_repeated_cursor_on_a_single_page(
        self, sim: Simulator, make_api: MakeApi
    ) -> None:
        """A one-page listing that loops back onto itself is caught too."""
        sim.add_export("exp-1", [("a.zip", b"x")], repeat_cursor=True)
        with pytest.raises(ListingFault, match="cursor repeated"):
            await all_files(make_api(), "exp-1")

    async def test_file_listed_twice_is_a_listing_fault(
        self, sim: Simulator, make_api: MakeApi
    ) -> None:
        """A fileId that appears on two pages raises ListingFault."""
        sim.add_export("exp-1", [])
        page = (
            b'{"files": [{"fileId": "f1", "name": "a.zip", "downloadUrl": "http://x/a", '
            b'"sizeBytes": 1}], "nextCursor": "%s"}'
        )
        sim.inject_status("files", 200, body=page % b"c1")
        sim.inject_status("files", 200, body=page % b"c2")
        with pytest.raises(ListingFault, match="f1 listed twice"):
            await all_files(make_api(), "exp-1")

    async def test_bad_page_shape_is_rejected(self, sim: Simulator, make_api: MakeApi) -> None:
        """A page whose files lack fields is ExportApiRejected."""
        sim.add_export("exp-1", [])
        sim.inject_status("files", 200, body=b'{"files": [{"fileId": "f1"}], "nextCursor": null}')
        with pytest.raises(ExportApiRejected, match="malformed answer: missing field"):
            await all_files(make_api(), "exp-1")


class TestTransientFailures:
    async def test_429_retry_after_is_honoured(self, sim: Simulator, make_api: MakeApi) -> None:
        """429 with Retry-After waits at least that long, then succeeds."""
        sim.add_export("exp-1", [])
        sim.inject_status("status", 429, retry_after=0.3)
        started = trio.current_time()
        assert (await make_api().get_status("exp-1")).status == "READY"
        assert trio.current_time() - started >= 0.3
        assert sim.count("status") == 2

    async def test_5xx_retried_then_exhausted(self, sim: Simulator, make_api: MakeApi) -> None:
        """500/502/503/504 are retried up to max_attempts; ExportApiExhausted names the last one."""
        sim.add_export("exp-1", [])
        for status in (500, 502, 503, 504):
            sim.inject_status("status", status)
        with pytest.raises(ExportApiExhausted) as caught:
            await make_api(policy=Backoff(max_attempts=4, base=0.001, cap=0.002)).get_status(
                "exp-1"
            )
        assert sim.count("status") == 4
        assert isinstance(caught.value.__cause__, ExportApiUnavailable)
        message = str(caught.value)
        assert "gave up after 4 attempts" in message
        assert "504" in message
        assert "\n" not in message

    async def test_5xx_then_success(self, sim: Simulator, make_api: MakeApi) -> None:
        """A 503 followed by a good answer is invisible to the caller."""
        sim.add_export("exp-1", [])
        sim.inject_status("files", 503)
        assert await all_files(make_api(), "exp-1") == []
        assert sim.count("files") == 2

    async def test_stall_times_out_and_is_retried(self, sim: Simulator, make_api: MakeApi) -> None:
        """An answer slower than the client's read timeout is retried like a 5xx."""
        sim.add_export("exp-1", [])
        sim.inject_stall("status", 2.0)
        async with httpx.AsyncClient(timeout=0.3) as quick:
            assert (await make_api(http=quick).get_status("exp-1")).status == "READY"
        assert sim.count("status") == 2

    async def test_connection_refused_is_transient(self, http: httpx.AsyncClient) -> None:
        """Nobody listening is ExportApiUnavailable, retried, then ExportApiExhausted."""
        with trio.socket.socket() as sock:
            await sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        session = ExportApiSession(
            http,
            base_url=f"http://127.0.0.1:{port}",
            token=None,
            allowed_hosts=frozenset(),
            policy=FAST,
            breaker=CircuitBreaker(),
        )
        api = ExportApi(session)
        with pytest.raises(ExportApiExhausted, match="connection failed") as caught:
            await api.get_status("exp-1")
        assert isinstance(caught.value.__cause__, ExportApiUnavailable)


class TestPermanentFailures:
    async def test_wrong_token_is_401_once(self, sim: Simulator, make_api: MakeApi) -> None:
        """A wrong token is ExportApiRejected (401) after one request, and hides the token."""
        sim.add_export("exp-1", [])
        with pytest.raises(ExportApiRejected, match="401") as caught:
            await make_api(token="wrong-token").get_status("exp-1")
        assert "wrong-token" not in str(caught.value)
        assert sim.count("status") == 1

    async def test_403_is_permanent(self, sim: Simulator, make_api: MakeApi) -> None:
        """403 is not retried."""
        sim.add_export("exp-1", [])
        sim.inject_status("files", 403, times=5)
        with pytest.raises(ExportApiRejected, match="403"):
            await all_files(make_api(), "exp-1")
        assert sim.count("files") == 1

    async def test_redirect_is_not_followed(self, sim: Simulator, make_api: MakeApi) -> None:
        """A 3xx on a download is refused rather than followed to a host nobody checked."""
        sim.add_export("exp-1", [("a.zip", b"abc")])
        api = make_api()
        file = await first_file(api, "exp-1")
        sim.inject_status("download", 302)
        with pytest.raises(ExportApiRejected, match="redirects are not followed"):
            await download_all(api, file)


class TestCircuitBreaker:
    async def test_open_breaker_makes_no_request(self, sim: Simulator, make_api: MakeApi) -> None:
        """While the breaker is open a call makes no request and spends no attempt: it waits."""
        sim.add_export("exp-1", [])
        breaker = CircuitBreaker(window=4, min_calls=2, failure_ratio=0.5, cooldown=0.3)
        api = make_api(policy=Backoff(max_attempts=1), breaker=breaker)
        sim.inject_status("status", 503, times=2)
        for _ in range(2):
            with pytest.raises(ExportApiExhausted):
                await api.get_status("exp-1")
        assert breaker.is_open
        started = trio.current_time()
        # One attempt allowed, and the call still succeeds: the wait was not one.
        assert (await api.get_status("exp-1")).status == "READY"
        assert trio.current_time() - started >= 0.25
        assert sim.count("status") == 3
        assert not breaker.is_open

    async def test_breaker_open_too_long_hands_the_work_back(
        self, sim: Simulator, make_api: MakeApi
    ) -> None:
        """A call that waits on the breaker longer than allowed raises ExportApiExhausted."""
        sim.add_export("exp-1", [])
        breaker = CircuitBreaker(window=4, min_calls=2, failure_ratio=0.5, cooldown=10)
        api = make_api(policy=Backoff(max_attempts=1), breaker=breaker, max_breaker_wait=0.2)
        sim.inject_status("status", 503, times=2)
        for _ in range(2):
            with pytest.raises(ExportApiExhausted):
                await api.get_status("exp-1")
        with pytest.raises(ExportApiExhausted, match="circuit breaker open"):
            await api.get_status("exp-1")
        assert sim.count("status") == 2

    async def test_a_call_waits_out_the_breaker(self, sim: Simulator, make_api: MakeApi) -> None:
        """With attempts to spare, a call refused by the breaker waits for half-open, succeeds."""
        sim.add_export("exp-1", [])
        breaker = CircuitBreaker(window=4, min_calls=2, failure_ratio=0.5, cooldown=0.2)
        api = make_api(policy=Backoff(max_attempts=4, base=0.001, cap=0.002), breaker=breaker)
        sim.inject_status("status", 503, times=2)
        started = trio.current_time()
        assert (await api.get_status("exp-1")).status == "READY"
        assert trio.current_time() - started >= 0.2
        assert sim.count("status") == 3

    async def test_observer_hears_it_open_and_close(
        self, sim: Simulator, make_api: MakeApi
    ) -> None:
        """The breaker's opening and closing, and each retry, reach the retry observer."""
        sim.add_export("exp-1", [])
        breaker = CircuitBreaker(window=4, min_calls=2, failure_ratio=0.5, cooldown=0.2)
        api = make_api(policy=Backoff(max_attempts=4, base=0.001, cap=0.002), breaker=breaker)
        sim.inject_status("status", 503, times=2)
        recorder = Recorder()
        with observe_retries(recorder):
            assert (await api.get_status("exp-1")).status == "READY"
        assert recorder.circuits == [("export_api", True), ("export_api", False)]
        assert set(recorder.retries) == {"export_api"}
        assert len(recorder.retries) >= 2

    async def test_permanent_answers_do_not_open_it(
        self, sim: Simulator, make_api: MakeApi
    ) -> None:
        """404s are the API answering: they never open the breaker."""
        breaker = CircuitBreaker(window=4, min_calls=2, failure_ratio=0.5, cooldown=10)
        api = make_api(breaker=breaker)
        for _ in range(4):
            with pytest.raises(ExportNotFound):
                await api.get_status("nope")
        assert not breaker.is_open


class TestToken:
    async def test_token_goes_to_the_api_host_only(self, sim: Simulator, make_api: MakeApi) -> None:
        """API calls carry the bearer token; downloads and ranged reads on the other host do not."""
        data = build_zip(10_000)
        sim.add_export("exp-1", [("a.zip", data)])
        api = make_api()
        file = await first_file(api, "exp-1")
        assert await download_all(api, file) == data
        await api.fetch_range(file, len(data) - 100)
        assert sim.authorization_seen_on_download_host is False
        api_side = [r.authorization for r in sim.requests if r.listener == "api"]
        assert api_side == [f"Bearer {TOKEN}"]
        assert sim.count("download", listener="download") == 2

    async def test_downloads_on_the_api_host_carry_it(
        self, sim: Simulator, make_api: MakeApi
    ) -> None:
        """A downloadUrl on the API's own host gets the token (and needs no allow-list entry)."""
        sim.add_export("exp-1", [("a.zip", b"abc")], download_host="api")
        api = make_api(allowed_hosts=frozenset())
        file = await first_file(api, "exp-1")
        assert await download_all(api, file) == b"abc"
        (record,) = [r for r in sim.requests if r.route == "download"]
        assert record.authorization == f"Bearer {TOKEN}"

    async def test_token_never_logged(self, sim: Simulator, make_api: MakeApi) -> None:
        """No log line of a run with failures and a resume contains the token or a URL signature."""
        data = build_zip(300_000)
        sim.add_export("exp-1", [("a.zip", data)])
        sim.inject_status("status", 503)
        api = make_api()
        with structlog.testing.capture_logs() as logs:
            await api.get_status("exp-1")
            file = await first_file(api, "exp-1")
            sim.inject_break("exp-1", file.file_id, 50_000)
            assert await download_all(api, file) == data
        text = repr(logs)
        assert logs
        assert TOKEN not in text
        assert "sig=" not in text


class TestAllowedHosts:
    async def test_disallowed_host_makes_no_request(
        self, sim: Simulator, make_api: MakeApi
    ) -> None:
        """A download URL on a host not allowed raises DownloadRefused and nothing is requested."""
        sim.add_export("exp-1", [("a.zip", b"abc")])
        api = make_api(allowed_hosts=frozenset({"files.example.com", "127.0.0.2:1"}))
        file = await first_file(api, "exp-1")
        with pytest.raises(DownloadRefused, match="not allowed"):
            await download_all(api, file)
        with pytest.raises(DownloadRefused, match="not allowed"):
            await api.fetch_range(file, 0)
        assert sim.download_requests == 0

    @pytest.mark.parametrize("entry", ["127.0.0.2", "{netloc}", "{NETLOC}"])
    async def test_allowed_forms(
        self, sim: Simulator, make_api: MakeApi, urls: SimulatorUrls, entry: str
    ) -> None:
        """A bare host, host:port, in any case, all allow the download host."""
        entry = entry.format(netloc=urls.download_netloc, NETLOC=urls.download_netloc.upper())
        sim.add_export("exp-1", [("a.zip", b"abc")])
        api = make_api(allowed_hosts=frozenset({entry}))
        assert await download_all(api, await first_file(api, "exp-1")) == b"abc"

    def test_host_matching(self) -> None:
        """A bare entry allows any port, host:port only that one; default ports and IPv6 work."""
        api = boundary.Origin.of(httpx.URL("https://api.example.com/v1"))
        allowed = frozenset(
            boundary.parse_allowed(e)
            for e in ["Files.Example.com", "cdn.example.com:8443", "[::1]:9000"]
        )

        def ok(url: str) -> bool:
            return boundary.download_allowed(httpx.URL(url), api, allowed)

        assert ok("https://API.example.com:443/f")
        assert not ok("https://api.example.com:444/f")
        assert ok("http://files.example.com:1234/f")
        assert ok("https://cdn.example.com:8443/f")
        assert not ok("https://cdn.example.com/f")
        assert ok("http://[::1]:9000/f")
        assert not ok("http://[::1]:9001/f")
        assert not ok("https://evil.example.com/f")

    async def test_not_an_absolute_url(self, make_api: MakeApi) -> None:
        """A relative or non-http downloadUrl is refused without a request."""
        api = make_api()
        for url in ("/relative/a.zip", "ftp://127.0.0.2/a.zip"):
            with pytest.raises(DownloadRefused, match="absolute"):
                await download_all(api, ExportFile("f1", "a.zip", url, 3))


class TestDownload:
    async def test_broken_download_resumes_with_exact_bytes(
        self, sim: Simulator, make_api: MakeApi
    ) -> None:
        """Two breaks mid-body resume with Range from the bytes received; the stream is exact."""
        data = build_zip(600_000)
        sim.add_export("exp-1", [("a.zip", data)])
        # Chunks that divide the break-off point, so every byte received was handed over.
        api = make_api(chunk_size=10_000)
        file = await first_file(api, "exp-1")
        sim.inject_break("exp-1", file.file_id, 100_000, times=2)
        async with api.download(file) as chunks:
            assert chunks.total_size == len(data)
            received = b"".join([chunk async for chunk in chunks])
            assert chunks.resumes == 2
        assert received == data
        ranges = [r.range for r in sim.requests if r.route == "download"]
        assert ranges == [None, "bytes=100000-", "bytes=200000-"]

    async def test_bytes_of_a_partial_chunk_are_fetched_again(
        self, sim: Simulator, make_api: MakeApi
    ) -> None:
        """Bytes received but not yet handed over when the body breaks are asked for again, once."""
        data = build_zip(300_000)
        sim.add_export("exp-1", [("a.zip", data)])
        api = make_api(chunk_size=64_000)
        file = await first_file(api, "exp-1")
        sim.inject_break("exp-1", file.file_id, 100_000)
        assert await download_all(api, file) == data
        ranges = [r.range for r in sim.requests if r.route == "download"]
        assert ranges == [None, "bytes=64000-"]

    async def test_resumes_count_against_the_attempts(
        self, sim: Simulator, make_api: MakeApi
    ) -> None:
        """A body that keeps breaking ends in ExportApiExhausted after max_attempts requests."""
        data = build_zip(200_000)
        sim.add_export("exp-1", [("a.zip", data)])
        api = make_api()
        file = await first_file(api, "exp-1")
        sim.inject_break("exp-1", file.file_id, 10_000, times=10)
        with pytest.raises(ExportApiExhausted, match="gave up after 3 attempts"):
            await download_all(api, file)
        assert sim.count("download") == 3

    async def test_200_to_a_resume_fails_clearly(self, sim: Simulator, make_api: MakeApi) -> None:
        """A server that answers a resume with the whole file again is refused, not duplicated."""
        data = build_zip(200_000)
        sim.add_export("exp-1", [("a.zip", data)], honour_range=False)
        api = make_api(chunk_size=10_000)
        file = await first_file(api, "exp-1")
        sim.inject_break("exp-1", file.file_id, 50_000)
        received = bytearray()

        async def read() -> None:
            async with api.download(file) as chunks:
                async for chunk in chunks:
                    received.extend(chunk)

        with pytest.raises(ExportApiRejected, match="refusing to restart"):
            await read()
        assert bytes(received) == data[:50_000]

    async def test_start_offset(self, sim: Simulator, make_api: MakeApi) -> None:
        """download(start=N) streams from byte N with a 206."""
        data = build_zip(50_000)
        sim.add_export("exp-1", [("a.zip", data)])
        api = make_api()
        file = await first_file(api, "exp-1")
        assert await download_all(api, file, start=1234) == data[1234:]

    async def test_empty_file(self, sim: Simulator, make_api: MakeApi) -> None:
        """A zero-byte file streams nothing and reports size 0."""
        sim.add_export("exp-1", [("a.zip", b"")])
        api = make_api()
        async with api.download(await first_file(api, "exp-1")) as chunks:
            assert chunks.total_size == 0
            assert [chunk async for chunk in chunks] == []

    async def test_failed_open_is_retried(self, sim: Simulator, make_api: MakeApi) -> None:
        """A 503 on the first download request is retried before the stream is handed over."""
        sim.add_export("exp-1", [("a.zip", b"abc")])
        api = make_api()
        file = await first_file(api, "exp-1")
        sim.inject_status("download", 503)
        assert await download_all(api, file) == b"abc"
        assert sim.count("download") == 2

    async def test_error_message_hides_the_signature(
        self, sim: Simulator, make_api: MakeApi
    ) -> None:
        """A download error names host and path in one line, never the presigned query."""
        sim.add_export("exp-1", [("a.zip", b"abc")])
        api = make_api()
        file = await first_file(api, "exp-1")
        sim.inject_status("download", 404)
        with pytest.raises(ExportApiRejected) as caught:
            await download_all(api, file)
        message = str(caught.value)
        assert message.startswith("GET 127.0.0.2:")
        assert "/downloads/exp-1/" in message
        assert "sig" not in message
        assert "\n" not in message

    async def test_throughput(self, sim: Simulator, make_api: MakeApi) -> None:
        """A 64 MiB file streams through in chunks of at most one read each (throughput printed)."""
        from pipeline.testing.simulator import patterned_body

        size = 64 << 20
        sim.add_export("exp-big", [("big.zip", patterned_body(size))])
        api = make_api()
        file = await first_file(api, "exp-big")
        started = time.perf_counter()
        total, biggest = 0, 0
        async with api.download(file) as chunks:
            async for chunk in chunks:
                total += len(chunk)
                biggest = max(biggest, len(chunk))
        elapsed = time.perf_counter() - started
        assert total == size
        assert biggest <= httpcore.AsyncHTTP11Connection.READ_NUM_BYTES
        print(f"download throughput: {size / elapsed / 1e6:.0f} MB/s over loopback")


class TestFetchRange:
    async def test_tail_bytes(self, sim: Simulator, make_api: MakeApi) -> None:
        """A 206 gives the bytes from start to the end and the total size."""
        data = build_zip(100_000)
        sim.add_export("exp-1", [("a.zip", data)])
        api = make_api()
        file = await first_file(api, "exp-1")
        tail = await api.fetch_range(file, len(data) - 4096)
        assert (tail.ranged, tail.start, tail.total_size) == (True, len(data) - 4096, len(data))
        assert tail.data == data[-4096:]
        assert sim.requests[-1].range == f"bytes={len(data) - 4096}-"

    async def test_range_ignored_gives_a_stream_instead(
        self, sim: Simulator, make_api: MakeApi
    ) -> None:
        """A 200 to a ranged read is not read into memory; stream() then gives the whole file."""
        data = build_zip(100_000)
        sim.add_export("exp-1", [("a.zip", data)], honour_range=False)
        api = make_api()
        file = await first_file(api, "exp-1")
        tail = await api.fetch_range(file, len(data) - 4096)
        assert (tail.ranged, tail.data, tail.total_size, tail.start) == (False, b"", len(data), 0)
        async with tail.stream() as chunks:
            assert b"".join([chunk async for chunk in chunks]) == data

    async def test_start_past_the_end_is_empty(self, sim: Simulator, make_api: MakeApi) -> None:
        """A range at the end of the file (416) is an empty ranged result, not an error."""
        sim.add_export("exp-1", [("a.zip", b"")])
        api = make_api()
        tail = await api.fetch_range(await first_file(api, "exp-1"), 0)
        assert (tail.ranged, tail.data, tail.total_size) == (True, b"", 0)

    async def test_break_in_the_tail_is_retried(self, sim: Simulator, make_api: MakeApi) -> None:
        """A ranged read that breaks off is simply asked again."""
        data = build_zip(100_000)
        sim.add_export("exp-1", [("a.zip", data)])
        api = make_api()
        file = await first_file(api, "exp-1")
        sim.inject_break("exp-1", file.file_id, 1000)
        tail = await api.fetch_range(file, 50_000)
        assert tail.data == data[50_000:]
        assert sim.count("download") == 2


class TestRetryAfter:
    def test_parsing(self) -> None:
        """Retry-After as seconds or an HTTP date becomes seconds; junk becomes None."""
        assert boundary.retry_after_seconds("3") == 3.0
        assert boundary.retry_after_seconds("0.25") == 0.25
        assert boundary.retry_after_seconds(None) is None
        assert boundary.retry_after_seconds("soon") is None
        later = email.utils.formatdate(time.time() + 60, usegmt=True)
        value = boundary.retry_after_seconds(later)
        assert value is not None
        assert 55 <= value <= 61
