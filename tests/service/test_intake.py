"""The intake gate: closed while a dependency fails, probing it, open at once; on trio's clock."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import attrs
import httpx
import pytest
import trio
import trio.testing

from pipeline._adapters.exportapi import ExportApiSession
from pipeline._core.backoff import Backoff, CircuitBreaker, DependencyHealth
from pipeline._errors import AwsUnavailable
from pipeline._service.intake import PROBE_SECONDS, AwsFailing, ExportApiBreaker, IntakeGate

Clock = trio.testing.MockClock


@attrs.define
class ScriptedCheck:
    """A readiness check that fails until ``answers_at`` (trio's clock), then answers."""

    answers_at: float
    calls: list[float] = attrs.field(factory=list)

    async def __call__(self) -> None:
        self.calls.append(trio.current_time())
        if trio.current_time() < self.answers_at:
            msg = "DynamoDB DescribeTable: ThrottlingException"
            raise AwsUnavailable(msg, code="ThrottlingException")


@attrs.define
class Paused:
    """A reason switched by hand (as an operator's pause would be), naming one queue."""

    queue: str
    on: bool = True
    name: str = "paused"

    def closes(self, queue_name: str) -> str | None:
        return "paused by an operator" if self.on and queue_name == self.queue else None

    async def probe(self) -> None:
        pass


def failing_health(dependency: str) -> DependencyHealth:
    health = DependencyHealth(threshold=3)
    for _ in range(3):
        health.record(dependency, ok=False)
    return health


class TestDependencyHealth:
    def test_failing_after_threshold_attempts_in_a_row(self) -> None:
        """Three failed attempts in a row mark a dependency failing; one answer clears it."""
        health = DependencyHealth(threshold=3)
        for ok in (False, False, True, False, False):
            health.record("s3", ok=ok)
        assert not health.is_failing("s3")
        health.record("s3", ok=False)
        assert health.is_failing("s3")
        assert not health.is_failing("dynamodb")
        health.record("s3", ok=True)
        assert not health.is_failing("s3")


class TestGate:
    async def test_open_gate_returns_at_once(self, autojump_clock: Clock) -> None:
        """With no reason closing it, wait_open returns without time passing."""
        gate = IntakeGate([AwsFailing(DependencyHealth(), {"s3": ScriptedCheck(0.0)})])
        await gate.wait_open("export_jobs")
        assert trio.current_time() == 0.0
        assert gate.status(["export_jobs"]) == {
            "open": True,
            "queues": {"export_jobs": {"open": True, "reasons": []}},
        }

    async def test_failing_dependency_closes_until_its_probe_answers(
        self, autojump_clock: Clock
    ) -> None:
        """DynamoDB failing closes intake; the gate probes it each second, opens on its answer."""
        check = ScriptedCheck(answers_at=4.5)
        health = failing_health("dynamodb")
        gate = IntakeGate([AwsFailing(health, {"dynamodb": check, "s3": ScriptedCheck(0.0)})])
        assert gate.closed("download_tasks") == ["dynamodb failing"]
        status = gate.status(["export_jobs"])
        assert status["open"] is False
        await gate.wait_open("export_jobs")
        # Probes at 0, 1, 2, 3, 4 failed; the one at 5 answered: open at once.
        assert check.calls == [pytest.approx(t * PROBE_SECONDS) for t in range(6)]
        assert trio.current_time() == pytest.approx(5 * PROBE_SECONDS)
        assert not health.is_failing("dynamodb")

    async def test_many_receivers_share_one_probe(self, autojump_clock: Clock) -> None:
        """Four receivers waiting at once cost one probe per second, not four."""
        check = ScriptedCheck(answers_at=2.5)
        gate = IntakeGate([AwsFailing(failing_health("s3"), {"s3": check})])
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(gate.wait_open, "export_jobs")
        assert len(check.calls) == 4, check.calls

    async def test_a_reason_for_one_queue_leaves_the_other_open(
        self, autojump_clock: Clock
    ) -> None:
        """A reason naming one queue (an operator's pause) closes that queue alone, until lifted."""
        paused = Paused("download_tasks")
        gate = IntakeGate([paused])
        await gate.wait_open("export_jobs")
        assert gate.closed("download_tasks") == ["paused by an operator"]
        opened: list[float] = []

        async def receiver() -> None:
            await gate.wait_open("download_tasks")
            opened.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver)
            await trio.sleep(10)
            assert opened == []
            paused.on = False
        assert opened == [pytest.approx(10 + PROBE_SECONDS, abs=PROBE_SECONDS)]


class TestExportApiReason:
    @pytest.fixture
    async def session(self) -> AsyncIterator[ExportApiSession]:
        async with httpx.AsyncClient() as http:
            yield ExportApiSession(
                http,
                base_url="http://api.invalid",
                token=None,
                allowed_hosts=frozenset(),
                policy=Backoff(max_attempts=1),
                breaker=CircuitBreaker(window=4, min_calls=2, cooldown=5.0),
                rng=random.Random(1),
            )

    async def test_closed_while_the_breaker_is_open_or_half_open(
        self, autojump_clock: Clock, session: ExportApiSession
    ) -> None:
        """An open breaker closes every queue; past its cooldown, until a probe has answered."""
        reason = ExportApiBreaker(session)
        assert reason.closes("export_jobs") is None
        for _ in range(2):
            session.record(ok=False)
        assert reason.closes("export_jobs") == "the Export API's circuit breaker is open"
        assert reason.closes("download_tasks") is not None
        await trio.sleep(6)
        assert reason.closes("export_jobs") is not None
        session.record(ok=True)
        assert reason.closes("export_jobs") is None
