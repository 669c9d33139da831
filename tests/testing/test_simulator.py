"""The Export API simulator, spoken to over real loopback HTTP with httpx."""

from __future__ import annotations

import functools
import io
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import AsyncIterator

import httpx
import pytest
import trio

from pipeline.testing.simulator import (
    GeneratedBody,
    Simulator,
    SimulatorUrls,
    patterned_body,
    serve_simulator,
)

TOKEN = "sim-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def build_zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
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
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


async def list_all(
    http: httpx.AsyncClient, urls: SimulatorUrls, export_id: str, limit: int = 100
) -> tuple[list[dict[str, object]], list[int]]:
    """Every file of a listing, and the size of each page on the way."""
    files: list[dict[str, object]] = []
    sizes: list[int] = []
    params: dict[str, str | int] = {"limit": limit}
    for _ in range(100):
        answer = await http.get(
            f"{urls.api_url}/exports/{export_id}/files", params=params, headers=AUTH
        )
        assert answer.status_code == 200
        body = answer.json()
        files.extend(body["files"])
        sizes.append(len(body["files"]))
        if body["nextCursor"] is None:
            return files, sizes
        params["cursor"] = body["nextCursor"]
    raise AssertionError("listing did not end")


class TestServing:
    async def test_two_listeners_on_two_addresses(self, urls: SimulatorUrls) -> None:
        """The API and download listeners bind separate loopback addresses with real ports."""
        api = httpx.URL(urls.api_url)
        download = httpx.URL(urls.download_url)
        assert (api.host, download.host) == ("127.0.0.1", "127.0.0.2")
        assert api.port
        assert download.port
        assert urls.download_netloc == f"127.0.0.2:{download.port}"

    async def test_request_delay_holds_every_answer(
        self, nursery: trio.Nursery, http: httpx.AsyncClient
    ) -> None:
        """With a request delay, status, listing and download each answer no sooner than it."""
        sim = Simulator(token=TOKEN, request_delay=0.2)
        sim.add_export("exp-slow", [("a.zip", build_zip({"a.txt": b"a"}))])
        urls = await nursery.start(serve_simulator, sim)
        listing = (await http.get(f"{urls.api_url}/exports/exp-slow/files", headers=AUTH)).json()
        for url, headers in (
            (f"{urls.api_url}/exports/exp-slow", AUTH),
            (listing["files"][0]["downloadUrl"], {}),
        ):
            started = time.monotonic()
            answer = await http.get(url, headers=headers)
            assert answer.status_code == 200
            assert time.monotonic() - started >= 0.2

    def test_command_line_demo_serves_and_stops_on_sigterm(self) -> None:
        """The simulator's command line prints its URLs, answers, exits 0 on SIGTERM."""
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline.testing.simulator",
                "--port",
                "0",
                "--download-port",
                "0",
                "--demo",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert proc.stdout is not None
            api_url = None
            deadline = time.monotonic() + 20
            while api_url is None and time.monotonic() < deadline:
                line = proc.stdout.readline()
                if line.startswith("EXPORT_API_BASE_URL="):
                    api_url = line.strip().split("=", 1)[1]
            assert api_url is not None
            answer = httpx.get(f"{api_url}/exports/demo-0001", timeout=5)
            assert answer.json() == {"exportId": "demo-0001", "status": "READY", "fileCount": 2}
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


class TestSetup:
    def test_bad_export_options_are_refused(self) -> None:
        """add_export refuses an unknown status, download host or a page cap below 1."""
        sim = Simulator()
        with pytest.raises(ValueError, match="status"):
            sim.add_export("e", [], status="DONE")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="download_host"):
            sim.add_export("e", [], download_host="elsewhere")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="page_size_cap"):
            sim.add_export("e", [], page_size_cap=0)

    def test_urls_need_a_running_server(self) -> None:
        """Asking for download URLs before serve_simulator bound the listeners is an error."""
        sim = Simulator()
        sim.add_export("e", [("a.zip", b"x")])
        with pytest.raises(RuntimeError, match="not being served"):
            sim.download_url("e", "e-f0001")


class TestStatus:
    async def test_ready_export(
        self, sim: Simulator, urls: SimulatorUrls, http: httpx.AsyncClient
    ) -> None:
        """A READY export answers its status and file count."""
        sim.add_export("exp-1", [("a.zip", b"x"), ("b.zip", b"y")])
        answer = await http.get(f"{urls.api_url}/exports/exp-1", headers=AUTH)
        assert answer.status_code == 200
        assert answer.json() == {"exportId": "exp-1", "status": "READY", "fileCount": 2}

    async def test_unknown_export_is_404(
        self, urls: SimulatorUrls, http: httpx.AsyncClient
    ) -> None:
        """An export nobody added answers 404."""
        answer = await http.get(f"{urls.api_url}/exports/nope", headers=AUTH)
        assert answer.status_code == 404

    async def test_pending_for_n_polls_then_ready(
        self, sim: Simulator, urls: SimulatorUrls, http: httpx.AsyncClient
    ) -> None:
        """pending_polls=2: two PENDING answers (null count), then READY; listing 409 till then."""
        sim.add_export("exp-p", [("a.zip", b"x")], pending_polls=2)
        seen = []
        for _ in range(3):
            listing = await http.get(f"{urls.api_url}/exports/exp-p/files", headers=AUTH)
            body = (await http.get(f"{urls.api_url}/exports/exp-p", headers=AUTH)).json()
            seen.append((listing.status_code, body["status"], body["fileCount"]))
        # After the second poll the export is ready: the third listing succeeds.
        assert seen == [(409, "PENDING", None), (409, "PENDING", None), (200, "READY", 1)]

    async def test_pending_for_a_moment(
        self,
        sim: Simulator,
        urls: SimulatorUrls,
        http: httpx.AsyncClient,
        mock_clock: trio.testing.MockClock,
    ) -> None:
        """ready_after_seconds keeps an export PENDING for that long on Trio's clock."""
        sim.add_export("exp-t", [], ready_after_seconds=0.2)
        first = (await http.get(f"{urls.api_url}/exports/exp-t", headers=AUTH)).json()
        mock_clock.jump(0.25)
        second = (await http.get(f"{urls.api_url}/exports/exp-t", headers=AUTH)).json()
        assert (first["status"], second["status"]) == ("PENDING", "READY")

    async def test_failed_export(
        self, sim: Simulator, urls: SimulatorUrls, http: httpx.AsyncClient
    ) -> None:
        """A FAILED export says so and its listing answers 409."""
        sim.add_export("exp-f", [], status="FAILED")
        body = (await http.get(f"{urls.api_url}/exports/exp-f", headers=AUTH)).json()
        assert body == {"exportId": "exp-f", "status": "FAILED", "fileCount": None}
        listing = await http.get(f"{urls.api_url}/exports/exp-f/files", headers=AUTH)
        assert listing.status_code == 409


class TestAuth:
    async def test_api_host_wants_the_token(
        self, sim: Simulator, urls: SimulatorUrls, http: httpx.AsyncClient
    ) -> None:
        """Without or with a wrong bearer token the API host answers 401."""
        sim.add_export("exp-1", [])
        missing = await http.get(f"{urls.api_url}/exports/exp-1")
        wrong = await http.get(
            f"{urls.api_url}/exports/exp-1", headers={"Authorization": "Bearer nope"}
        )
        assert (missing.status_code, wrong.status_code) == (401, 401)

    async def test_no_token_configured_means_open(
        self, http: httpx.AsyncClient, nursery: trio.Nursery
    ) -> None:
        """A simulator without a token answers requests without Authorization."""
        sim = Simulator()
        sim.add_export("exp-1", [])
        urls: SimulatorUrls = await nursery.start(serve_simulator, sim)
        assert (await http.get(f"{urls.api_url}/exports/exp-1")).status_code == 200

    async def test_download_host_needs_no_token_and_records_one(
        self, sim: Simulator, urls: SimulatorUrls, http: httpx.AsyncClient
    ) -> None:
        """The download host serves without a token and remembers whether one arrived."""
        sim.add_export("exp-1", [("a.zip", b"abc")])
        (file,), _ = await list_all(http, urls, "exp-1")
        url = str(file["downloadUrl"])
        assert url.startswith(urls.download_url)
        assert (await http.get(url)).content == b"abc"
        assert sim.authorization_seen_on_download_host is False
        await http.get(url, headers=AUTH)
        assert sim.authorization_seen_on_download_host is True


class TestListing:
    async def test_pages_follow_the_limit_and_cap(
        self, sim: Simulator, urls: SimulatorUrls, http: httpx.AsyncClient
    ) -> None:
        """Pages hold at most min(limit, cap) files and together list every file once, in order."""
        ids = sim.add_export("exp-1", [(f"p{i}.zip", b"x") for i in range(7)], page_size_cap=3)
        files, sizes = await list_all(http, urls, "exp-1", limit=5)
        assert [f["fileId"] for f in files] == ids
        assert sizes == [3, 3, 1]
        assert files[0]["name"] == "p0.zip"
        assert files[0]["sizeBytes"] == 1

    async def test_empty_pages_carry_a_cursor(
        self, sim: Simulator, urls: SimulatorUrls, http: httpx.AsyncClient
    ) -> None:
        """empty_pages answers every other page empty but with a nextCursor, and loses no file."""
        ids = sim.add_export(
            "exp-1", [(f"p{i}.zip", b"x") for i in range(3)], page_size_cap=2, empty_pages=True
        )
        files, sizes = await list_all(http, urls, "exp-1")
        assert [f["fileId"] for f in files] == ids
        assert sizes == [0, 2, 0, 1]

    async def test_no_files_is_one_empty_last_page(
        self, sim: Simulator, urls: SimulatorUrls, http: httpx.AsyncClient
    ) -> None:
        """An export without files lists one empty page with a null cursor."""
        sim.add_export("exp-0", [])
        files, sizes = await list_all(http, urls, "exp-0")
        assert (files, sizes) == ([], [0])

    @pytest.mark.parametrize("limit", ["0", "101", "x"])
    async def test_limit_out_of_range_is_400(
        self, sim: Simulator, urls: SimulatorUrls, http: httpx.AsyncClient, limit: str
    ) -> None:
        """A limit outside 1..100 answers 400."""
        sim.add_export("exp-1", [])
        answer = await http.get(
            f"{urls.api_url}/exports/exp-1/files", params={"limit": limit}, headers=AUTH
        )
        assert answer.status_code == 400

    async def test_foreign_or_garbage_cursor_is_400(
        self, sim: Simulator, urls: SimulatorUrls, http: httpx.AsyncClient
    ) -> None:
        """A cursor that is not one of this export's answers 400."""
        sim.add_export("exp-1", [(f"p{i}.zip", b"x") for i in range(3)], page_size_cap=1)
        sim.add_export("exp-2", [])
        first = (await http.get(f"{urls.api_url}/exports/exp-1/files", headers=AUTH)).json()
        for cursor in (first["nextCursor"], "garbage!"):
            answer = await http.get(
                f"{urls.api_url}/exports/exp-2/files", params={"cursor": cursor}, headers=AUTH
            )
            assert answer.status_code == 400

    async def test_repeat_cursor_hands_back_a_cursor_seen_before(
        self, sim: Simulator, urls: SimulatorUrls, http: httpx.AsyncClient
    ) -> None:
        """repeat_cursor: where the listing would end, it answers the cursor it was asked with."""
        sim.add_export(
            "exp-1", [("a.zip", b"x"), ("b.zip", b"y")], page_size_cap=1, repeat_cursor=True
        )
        first = (await http.get(f"{urls.api_url}/exports/exp-1/files", headers=AUTH)).json()
        cursor = first["nextCursor"]
        second = (
            await http.get(
                f"{urls.api_url}/exports/exp-1/files", params={"cursor": cursor}, headers=AUTH
            )
        ).json()
        assert second["nextCursor"] == cursor


class TestDownloads:
    async def test_full_and_ranged_get(
        self, sim: Simulator, urls: SimulatorUrls, http: httpx.AsyncClient
    ) -> None:
        """GET gives the bytes with Content-Length; Range bytes=N- gives 206 and Content-Range."""
        data = build_zip({"a.txt": os.urandom(50_000)})
        sim.add_export("exp-1", [("a.zip", data)])
        (file,), _ = await list_all(http, urls, "exp-1")
        full = await http.get(str(file["downloadUrl"]))
        assert (full.status_code, full.content) == (200, data)
        assert full.headers["content-length"] == str(len(data))
        part = await http.get(str(file["downloadUrl"]), headers={"Range": "bytes=1000-"})
        assert part.status_code == 206
        assert part.content == data[1000:]
        assert part.headers["content-range"] == f"bytes 1000-{len(data) - 1}/{len(data)}"

    async def test_range_past_the_end_is_416(
        self, sim: Simulator, urls: SimulatorUrls, http: httpx.AsyncClient
    ) -> None:
        """A range starting at or after the end answers 416 with bytes */size."""
        sim.add_export("exp-1", [("a.zip", b"abc")])
        url = sim.download_url("exp-1", "exp-1-f0001")
        answer = await http.get(url, headers={"Range": "bytes=3-"})
        assert answer.status_code == 416
        assert answer.headers["content-range"] == "bytes */3"

    async def test_range_ignored_when_asked(
        self, sim: Simulator, urls: SimulatorUrls, http: httpx.AsyncClient
    ) -> None:
        """honour_range=False answers 200 with the whole file to a ranged GET."""
        sim.add_export("exp-1", [("a.zip", b"abcdef")], honour_range=False)
        answer = await http.get(
            sim.download_url("exp-1", "exp-1-f0001"), headers={"Range": "bytes=2-"}
        )
        assert (answer.status_code, answer.content) == (200, b"abcdef")

    @pytest.mark.parametrize("method", ["HEAD", "POST", "PUT", "DELETE"])
    async def test_only_get_on_a_download_url(
        self, sim: Simulator, urls: SimulatorUrls, http: httpx.AsyncClient, method: str
    ) -> None:
        """HEAD and every other method but GET answer 403 on a download URL."""
        sim.add_export("exp-1", [("a.zip", b"abc")])
        answer = await http.request(method, sim.download_url("exp-1", "exp-1-f0001"))
        assert answer.status_code == 403

    async def test_bad_signature_is_403(
        self, sim: Simulator, urls: SimulatorUrls, http: httpx.AsyncClient
    ) -> None:
        """A download URL whose signature was dropped or changed answers 403."""
        sim.add_export("exp-1", [("a.zip", b"abc")])
        url = sim.download_url("exp-1", "exp-1-f0001")
        bare = url.split("?", 1)[0]
        assert (await http.get(bare)).status_code == 403
        assert (await http.get(bare + "?sig=0000")).status_code == 403

    async def test_download_on_the_api_host(
        self, sim: Simulator, urls: SimulatorUrls, http: httpx.AsyncClient
    ) -> None:
        """download_host='api' puts downloadUrls on the API host, which then wants the token."""
        sim.add_export("exp-1", [("a.zip", b"abc")], download_host="api")
        url = sim.download_url("exp-1", "exp-1-f0001")
        assert url.startswith(urls.api_url)
        assert (await http.get(url)).status_code == 401
        assert (await http.get(url, headers=AUTH)).content == b"abc"
        other_host = url.replace(urls.api_url, urls.download_url)
        assert (await http.get(other_host)).status_code == 404

    async def test_generated_body_streams_from_any_offset(
        self, sim: Simulator, urls: SimulatorUrls, http: httpx.AsyncClient
    ) -> None:
        """A body provider serves big files by offset without holding them, including ranges."""
        size = 3 * (1 << 20) + 123
        body = patterned_body(size, seed=7)
        sim.add_export("exp-big", [("big.zip", body)])
        url = sim.download_url("exp-big", "exp-big-f0001")
        expected = b"".join(body.iter_bytes(0))
        assert len(expected) == size
        async with http.stream("GET", url, headers={"Range": f"bytes={size - 5000}-"}) as answer:
            tail = await answer.aread()
        assert tail == expected[-5000:]
        full = await http.get(url)
        assert full.content == expected

    async def test_custom_generated_body(
        self, sim: Simulator, urls: SimulatorUrls, http: httpx.AsyncClient
    ) -> None:
        """A GeneratedBody made from a generator function is served as it produces."""

        def produce(start: int):  # type: ignore[no-untyped-def]
            yield bytes(range(256))[start:]

        sim.add_export("exp-g", [("g.zip", GeneratedBody(size=256, produce=produce))])
        answer = await http.get(
            sim.download_url("exp-g", "exp-g-f0001"), headers={"Range": "bytes=250-"}
        )
        assert answer.content == bytes(range(250, 256))


class TestFaults:
    async def test_outage_answers_every_request_until_it_ends(
        self, sim: Simulator, urls: SimulatorUrls, http: httpx.AsyncClient
    ) -> None:
        """begin_outage answers every request on both hosts with 503 until end_outage."""
        sim.add_export("exp-1", [("a.zip", b"x")])
        sim.begin_outage()
        status = await http.get(f"{urls.api_url}/exports/exp-1", headers=AUTH)
        files = await http.get(f"{urls.api_url}/exports/exp-1/files", headers=AUTH)
        root = await http.get(f"{urls.download_url}/", headers=AUTH)
        assert [a.status_code for a in (status, files, root)] == [503, 503, 503]
        sim.end_outage()
        assert (await http.get(f"{urls.api_url}/exports/exp-1", headers=AUTH)).status_code == 200

    async def test_status_fault_with_retry_after(
        self, sim: Simulator, urls: SimulatorUrls, http: httpx.AsyncClient
    ) -> None:
        """inject_status answers the next N matching calls with status and Retry-After."""
        sim.add_export("exp-1", [])
        sim.inject_status("status", 429, times=2, retry_after=3)
        answers = [await http.get(f"{urls.api_url}/exports/exp-1", headers=AUTH) for _ in range(3)]
        assert [a.status_code for a in answers] == [429, 429, 200]
        assert answers[0].headers["retry-after"] == "3"

    async def test_fault_scoped_to_one_export(
        self, sim: Simulator, urls: SimulatorUrls, http: httpx.AsyncClient
    ) -> None:
        """A fault for one export leaves other exports alone."""
        sim.add_export("exp-1", [])
        sim.add_export("exp-2", [])
        sim.inject_status("status", 503, export_id="exp-2")
        first = await http.get(f"{urls.api_url}/exports/exp-1", headers=AUTH)
        second = await http.get(f"{urls.api_url}/exports/exp-2", headers=AUTH)
        assert (first.status_code, second.status_code) == (200, 503)

    async def test_malformed_body_fault(
        self, sim: Simulator, urls: SimulatorUrls, http: httpx.AsyncClient
    ) -> None:
        """inject_status with a body answers exactly that body."""
        sim.add_export("exp-1", [])
        sim.inject_status("files", 200, body=b"{not json")
        answer = await http.get(f"{urls.api_url}/exports/exp-1/files", headers=AUTH)
        assert (answer.status_code, answer.content) == (200, b"{not json")

    async def test_break_closes_mid_body(
        self, sim: Simulator, urls: SimulatorUrls, http: httpx.AsyncClient
    ) -> None:
        """inject_break sends K bytes of a longer Content-Length, hangs up; next GET is whole."""
        data = os.urandom(300_000)
        sim.add_export("exp-1", [("a.zip", data)])
        sim.inject_break("exp-1", "exp-1-f0001", after_bytes=100_000)
        url = sim.download_url("exp-1", "exp-1-f0001")
        received = bytearray()

        async def read() -> None:
            async with http.stream("GET", url) as answer:
                assert answer.headers["content-length"] == str(len(data))
                async for chunk in answer.aiter_bytes():
                    received.extend(chunk)

        with pytest.raises(httpx.RemoteProtocolError):
            await read()
        assert bytes(received) == data[:100_000]
        assert (await http.get(url)).content == data

    async def test_stall_delays_the_answer(
        self, sim: Simulator, urls: SimulatorUrls, http: httpx.AsyncClient
    ) -> None:
        """inject_stall holds the answer back long enough for a client timeout to fire."""
        sim.add_export("exp-1", [])
        sim.inject_stall("status", 2.0)
        with pytest.raises(httpx.ReadTimeout):
            await http.get(f"{urls.api_url}/exports/exp-1", headers=AUTH, timeout=0.2)
        assert (await http.get(f"{urls.api_url}/exports/exp-1", headers=AUTH)).status_code == 200

    async def test_throttle_slows_a_download(
        self, sim: Simulator, urls: SimulatorUrls, http: httpx.AsyncClient
    ) -> None:
        """set_throttle serves a file at about the given bytes per second."""
        data = os.urandom(100_000)
        sim.add_export("exp-1", [("a.zip", data)])
        sim.set_throttle("exp-1", "exp-1-f0001", 400_000)
        started = trio.current_time()
        answer = await http.get(sim.download_url("exp-1", "exp-1-f0001"))
        elapsed = trio.current_time() - started
        assert answer.content == data
        assert 0.2 <= elapsed < 2.0

    async def test_most_at_once_counts_answers_open_together(
        self, sim: Simulator, urls: SimulatorUrls, http: httpx.AsyncClient
    ) -> None:
        """most_at_once is the most requests of a route being answered at one time."""
        sim.add_export("exp-1", [])
        sim.inject_stall("status", 0.2, times=3)
        status = f"{urls.api_url}/exports/exp-1"
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(functools.partial(http.get, status, headers=AUTH))
        await http.get(status, headers=AUTH)
        assert sim.count("status") == 4
        assert sim.most_at_once("status") == 3
        assert sim.most_at_once("files") == 0

    async def test_wait_until_wakes_on_the_request_that_makes_it_true(
        self, sim: Simulator, urls: SimulatorUrls, http: httpx.AsyncClient
    ) -> None:
        """wait_until returns after the request that makes its condition hold, not before."""
        sim.add_export("exp-1", [])
        status = f"{urls.api_url}/exports/exp-1"
        seen: list[int] = []

        async def wait_for_two() -> None:
            await sim.wait_until(lambda: sim.count("status") >= 2)
            seen.append(sim.count("status"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_for_two)
            await http.get(status, headers=AUTH)
            await trio.testing.wait_all_tasks_blocked()
            assert seen == []
            await http.get(status, headers=AUTH)
        assert seen == [2]

    async def test_bytes_sent_adds_every_download_of_the_file(
        self, sim: Simulator, urls: SimulatorUrls, http: httpx.AsyncClient
    ) -> None:
        """bytes_sent counts the body bytes sent for a file, whole and ranged downloads."""
        data = os.urandom(100_000)
        sim.add_export("exp-1", [("a.zip", data)])
        url = sim.download_url("exp-1", "exp-1-f0001")
        assert sim.bytes_sent("exp-1", "exp-1-f0001") == 0
        assert (await http.get(url)).content == data
        assert (await http.get(url, headers={"Range": "bytes=10-19"})).content == data[10:20]
        assert sim.bytes_sent("exp-1", "exp-1-f0001") == 100_010

    async def test_a_throttle_changed_mid_download_applies_at_once(
        self, sim: Simulator, urls: SimulatorUrls, http: httpx.AsyncClient
    ) -> None:
        """set_throttle during a download sets its pace from the next piece on."""
        data = os.urandom(200_000)
        sim.add_export("exp-1", [("a.zip", data)])
        sim.set_throttle("exp-1", "exp-1-f0001", 1_000)  # 200 s at this pace
        async with http.stream("GET", sim.download_url("exp-1", "exp-1-f0001")) as response:
            pieces = response.aiter_raw()
            first = await anext(pieces)
            sim.set_throttle("exp-1", "exp-1-f0001", None)
            with trio.fail_after(5):
                rest = b"".join([piece async for piece in pieces])
        assert len(first) < 1_000
        assert first + rest == data

    async def test_requests_are_counted_per_route(
        self, sim: Simulator, urls: SimulatorUrls, http: httpx.AsyncClient
    ) -> None:
        """count() tells requests apart by route, listener, method, export and file."""
        sim.add_export("exp-1", [("a.zip", b"abc"), ("b.zip", b"def")])
        await http.get(f"{urls.api_url}/exports/exp-1", headers=AUTH)
        await http.get(f"{urls.api_url}/exports/exp-1/files", headers=AUTH)
        url = sim.download_url("exp-1", "exp-1-f0002")
        await http.get(url)
        await http.head(url)
        assert sim.count("status") == 1
        assert sim.count("files", export_id="exp-1") == 1
        assert sim.count("download", file_id="exp-1-f0002") == 2
        assert sim.count("download", file_id="exp-1-f0002", method="GET", listener="download") == 1
        assert sim.count("download", file_id="exp-1-f0001") == 0
        assert sim.download_requests == 2
        assert [r.route for r in sim.requests] == ["status", "files", "download", "download"]
