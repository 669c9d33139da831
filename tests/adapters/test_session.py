"""The Export API session's attempt loop and breaker wait, on trio's clock.

The attempts are scripted callables (what a request would raise or return),
so every test runs in virtual time and asserts exact instants: an attempt is
a request made, a breaker refusal is a wait, and spent attempts hand back.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import trio
import trio.testing

from pipeline._adapters.exportapi import ExportApiSession
from pipeline._adapters.retry import observe_retries
from pipeline._core.backoff import Backoff, CircuitBreaker
from pipeline._errors import ExportApiExhausted, ExportApiUnavailable, ExportNotFound
from tests.support.observer import Recorder

Clock = trio.testing.MockClock


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def make_session(
    http: httpx.AsyncClient,
    *,
    attempts: int = 5,
    breaker: CircuitBreaker | None = None,
    max_breaker_wait: float = 60.0,
) -> ExportApiSession:
    return ExportApiSession(
        http,
        base_url="http://api.invalid",
        token=None,
        allowed_hosts=frozenset(),
        policy=Backoff(max_attempts=attempts, base=1.0, cap=30.0),
        breaker=breaker or CircuitBreaker(window=10, min_calls=5, cooldown=5.0),
        rng=random.Random(7),
        max_breaker_wait=max_breaker_wait,
    )


class Script:
    """An attempt that fails with each scripted error in turn, then answers ``"ok"``."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.at: list[float] = []

    async def __call__(self) -> str:
        self.at.append(trio.current_time())
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def unavailable() -> ExportApiUnavailable:
    return ExportApiUnavailable("GET /exports/x: 503 Service Unavailable")


def failures(count: int) -> Callable[[], Script]:
    return lambda: Script(*(unavailable() for _ in range(count)))


class TestAttempts:
    async def test_transient_failures_are_retried(
        self, autojump_clock: Clock, http: httpx.AsyncClient
    ) -> None:
        """Four 503s then an answer: five requests, the call succeeds."""
        session = make_session(http, breaker=CircuitBreaker(min_calls=100))
        script = failures(4)()
        assert await session.run("GET /exports/x", script) == "ok"
        assert len(script.at) == 5

    async def test_spent_attempts_hand_back(
        self, autojump_clock: Clock, http: httpx.AsyncClient
    ) -> None:
        """EXPORT_API_MAX_ATTEMPTS failed requests raise ExportApiExhausted, a transient error."""
        session = make_session(http, attempts=3, breaker=CircuitBreaker(min_calls=100))
        script = failures(10)()
        with pytest.raises(ExportApiExhausted, match=r"gave up after 3 attempts: .*503") as caught:
            await session.run("GET /exports/x", script)
        assert caught.value.transient
        assert len(script.at) == 3

    async def test_permanent_answer_is_not_retried(
        self, autojump_clock: Clock, http: httpx.AsyncClient
    ) -> None:
        """A 404 propagates after one request and counts as the API answering."""
        breaker = CircuitBreaker(window=4, min_calls=2, cooldown=5.0)
        session = make_session(http, breaker=breaker)
        script = Script(ExportNotFound("GET /exports/x: 404 Not Found"))
        with pytest.raises(ExportNotFound):
            await session.run("GET /exports/x", script)
        assert len(script.at) == 1
        assert not breaker.is_open


class TestBreakerWait:
    async def test_refusal_is_no_attempt(
        self, autojump_clock: Clock, http: httpx.AsyncClient
    ) -> None:
        """With the breaker open, a one-attempt call waits for the cooldown and then succeeds."""
        breaker = CircuitBreaker(window=4, min_calls=2, cooldown=5.0)
        session = make_session(http, attempts=1, breaker=breaker)
        for _ in range(2):
            with pytest.raises(ExportApiExhausted):
                await session.run("GET /exports/x", failures(1)())
        opened_at = trio.current_time()
        assert breaker.is_open
        script = Script()
        assert await session.run("GET /exports/x", script) == "ok"
        # The only request was made when the breaker let its probe through.
        assert script.at == [pytest.approx(opened_at + 5.0)]
        assert not breaker.is_open

    async def test_calls_ride_out_a_ten_second_outage(
        self, autojump_clock: Clock, http: httpx.AsyncClient
    ) -> None:
        """Ten calls in a 10 s outage succeed within a cooldown of its end, with few requests."""
        session = make_session(http, attempts=5)
        ends_at = trio.current_time() + 10.0
        requests: list[float] = []
        done: list[float] = []

        async def attempt() -> str:
            requests.append(trio.current_time())
            if trio.current_time() < ends_at:
                raise unavailable()
            return "ok"

        async def call() -> None:
            assert await session.run("GET /exports/x", attempt) == "ok"
            done.append(trio.current_time())

        recorder = Recorder()
        with observe_retries(recorder):
            async with trio.open_nursery() as nursery:
                for _ in range(10):
                    nursery.start_soon(call)
        assert len(done) == 10
        assert max(done) <= ends_at + 5.0 + 1.0
        # The breaker opened on the first failures; after that one probe per cooldown.
        assert len(requests) < 25
        assert recorder.circuits[0] == ("export_api", True)
        assert recorder.circuits[-1] == ("export_api", False)

    async def test_waiting_too_long_hands_back(
        self, autojump_clock: Clock, http: httpx.AsyncClient
    ) -> None:
        """A call the breaker refuses for longer than max_breaker_wait raises ExportApiExhausted."""
        breaker = CircuitBreaker(window=4, min_calls=2, cooldown=100.0)
        session = make_session(http, attempts=1, breaker=breaker, max_breaker_wait=30.0)
        for _ in range(2):
            with pytest.raises(ExportApiExhausted):
                await session.run("GET /exports/x", failures(1)())
        began = trio.current_time()
        script = Script()
        with pytest.raises(ExportApiExhausted, match="circuit breaker open for 30 s"):
            await session.run("GET /exports/x", script)
        assert trio.current_time() - began == pytest.approx(30.0)
        assert script.at == []

    async def test_half_open_lets_one_probe_through(
        self, autojump_clock: Clock, http: httpx.AsyncClient
    ) -> None:
        """After the cooldown one waiting call probes; the others go once it has answered."""
        breaker = CircuitBreaker(window=4, min_calls=2, cooldown=5.0, probe_wait=1.0)
        session = make_session(http, attempts=1, breaker=breaker)
        for _ in range(2):
            with pytest.raises(ExportApiExhausted):
                await session.run("GET /exports/x", failures(1)())
        opened_at = trio.current_time()
        starts: list[float] = []

        async def slow() -> str:
            starts.append(trio.current_time())
            await trio.sleep(0.5)
            return "ok"

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(session.run, "GET /exports/x", slow)
        starts.sort()
        assert starts[0] == pytest.approx(opened_at + 5.0)
        # Nobody else went while the probe was out.
        assert all(start >= opened_at + 5.5 for start in starts[1:])
        assert not breaker.is_open
