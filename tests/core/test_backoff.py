"""Backoff with full jitter, the circuit breaker, and the retry loop."""

from __future__ import annotations

import random

import pytest
import trio

from pipeline._adapters.retry import retry
from pipeline._core.backoff import (
    AWS_POLICY,
    REDELIVERY_CAP_SECONDS,
    Backoff,
    CircuitBreaker,
    redelivery_delay,
)
from pipeline._errors import (
    AwsUnavailable,
    ExportApiRejected,
    ExportApiUnavailable,
    Fault,
    RetriesExhausted,
)


class TestBackoff:
    def test_full_jitter_ceiling_doubles(self) -> None:
        """The wait is draw x min(cap, base x 2^(attempt-1))."""
        policy = Backoff(base=1.0, cap=5.0)
        assert policy.delay(1, None, 0.5) == 0.5
        assert policy.delay(2, None, 0.5) == 1.0
        assert policy.delay(3, None, 1.0) == 4.0
        assert policy.delay(10, None, 1.0) == 5.0
        assert policy.delay(3, None, 0.0) == 0.0

    def test_retry_after_is_a_floor(self) -> None:
        """A Retry-After is honoured as the least wait, capped at max_retry_after."""
        policy = Backoff(base=1.0, cap=5.0, max_retry_after=60)
        assert policy.delay(1, 7.0, 0.1) == 7.0
        assert policy.delay(4, 0.5, 0.5) == 2.5
        assert policy.delay(1, 3600.0, 0.1) == 60.0

    def test_gives_up(self) -> None:
        """The last allowed attempt is max_attempts."""
        policy = Backoff(max_attempts=3)
        assert not policy.gives_up_after(2)
        assert policy.gives_up_after(3)

    def test_rejects_zero_attempts(self) -> None:
        """At least one attempt is required."""
        with pytest.raises(ValueError, match="max_attempts"):
            Backoff(max_attempts=0)


class TestCircuitBreaker:
    def test_opens_when_most_calls_fail(self) -> None:
        """More than half of the last calls failing opens the breaker for the cooldown."""
        breaker = CircuitBreaker(window=10, min_calls=4, failure_ratio=0.5, cooldown=10)
        for ok in (True, False, False, False):
            assert breaker.allows(0)
            breaker.record(ok, 0)
        assert not breaker.allows(1)
        assert breaker.retry_after(1) == 9
        assert breaker.allows(10)

    def test_half_open_decides_on_next_call(self) -> None:
        """After the cooldown one failure reopens it, one success closes it."""
        breaker = CircuitBreaker(window=4, min_calls=2, cooldown=5)
        breaker.record(False, 0)
        breaker.record(False, 0)
        assert not breaker.allows(1)
        breaker.record(False, 5)
        assert not breaker.allows(6)
        breaker.record(True, 10)
        assert breaker.allows(10)
        assert not breaker.is_open

    def test_half_open_lets_one_probe_through(self) -> None:
        """After the cooldown one caller probes; the others wait until its outcome is known."""
        breaker = CircuitBreaker(window=4, min_calls=2, cooldown=5, probe_wait=1)
        breaker.record(False, 0)
        breaker.record(False, 0)
        assert breaker.allows(5)
        assert not breaker.allows(5)
        assert not breaker.allows(6)
        assert breaker.retry_after(6) == 1
        breaker.record(True, 6)
        assert breaker.allows(6)
        assert breaker.allows(6)

    def test_a_lost_probe_does_not_keep_it_shut(self) -> None:
        """A probe whose outcome never comes (cancelled) is replaced a cooldown later."""
        breaker = CircuitBreaker(window=4, min_calls=2, cooldown=5)
        breaker.record(False, 0)
        breaker.record(False, 0)
        assert breaker.allows(5)
        assert not breaker.allows(9)
        assert breaker.allows(10)

    def test_few_calls_do_not_open(self) -> None:
        """Below min_calls outcomes, failures alone do not open it."""
        breaker = CircuitBreaker(min_calls=5)
        for _ in range(4):
            breaker.record(False, 0)
        assert breaker.allows(0)


class TestAwsPolicy:
    def test_sleeps_are_bounded(self) -> None:
        """One AWS call sleeps at most 7.75 s across its retries (draws of 1 every time)."""
        attempts = range(1, AWS_POLICY.max_attempts)
        assert sum(AWS_POLICY.delay(n, None, 0.999999) for n in attempts) < 7.75
        assert AWS_POLICY.gives_up_after(6)


class TestRedeliveryDelay:
    def test_grows_with_each_delivery(self) -> None:
        """The ceiling is 30 s after the first delivery and four times more after each next."""
        ceilings = [redelivery_delay(n, 0.999999) for n in range(1, 6)]
        assert ceilings == [29, 119, 479, 1919, REDELIVERY_CAP_SECONDS - 1]

    def test_jitter_keeps_half_the_ceiling(self) -> None:
        """A draw of 0 still waits half the ceiling: an outage is never a fast loop."""
        assert redelivery_delay(1, 0.0) == 15
        assert redelivery_delay(2, 0.0) == 60

    def test_capped_at_an_hour(self) -> None:
        """However many deliveries, the delay stays within the cap."""
        assert redelivery_delay(50, 0.999999) < REDELIVERY_CAP_SECONDS

    def test_receive_count_starts_at_one(self) -> None:
        """SQS counts deliveries from 1; 0 is a caller's mistake."""
        with pytest.raises(ValueError, match="receive_count"):
            redelivery_delay(0, 0.5)


class TestRetry:
    async def test_retries_transient_then_succeeds(self, autojump_clock: trio.abc.Clock) -> None:
        """Transient errors are retried, waiting at least Retry-After."""
        calls: list[float] = []

        async def flaky() -> str:
            calls.append(trio.current_time())
            if len(calls) < 3:
                raise ExportApiUnavailable("503", retry_after=2.0)
            return "ok"

        assert (
            await retry(flaky, Backoff(max_attempts=5, base=0.1), what="test", dependency="test")
            == "ok"
        )
        assert len(calls) == 3
        assert calls[1] - calls[0] >= 2.0
        assert calls[2] - calls[1] >= 2.0

    async def test_exhausted(self, autojump_clock: trio.abc.Clock) -> None:
        """After max_attempts transient failures the error becomes permanent."""
        attempts = 0

        async def down() -> None:
            nonlocal attempts
            attempts += 1
            raise ExportApiUnavailable("502 Bad Gateway")

        with pytest.raises(
            RetriesExhausted, match="test call: gave up after 4 attempts: 502"
        ) as info:
            await retry(
                down,
                Backoff(max_attempts=4),
                what="test call",
                dependency="test",
                rng=random.Random(1),
            )
        assert attempts == 4
        assert isinstance(info.value.__cause__, ExportApiUnavailable)
        assert info.value.fault is Fault.EXPORT
        assert info.value.verdict

    async def test_exhausted_on_aws_is_no_verdict(self, autojump_clock: trio.abc.Clock) -> None:
        """AWS failing past its retries gives RetriesExhausted of our infrastructure's fault."""

        async def throttled() -> None:
            raise AwsUnavailable("ThrottlingException", code="ThrottlingException")

        with pytest.raises(RetriesExhausted) as info:
            await retry(
                throttled, Backoff(max_attempts=2), what="dynamodb get", dependency="dynamodb"
            )
        assert info.value.fault is Fault.INFRASTRUCTURE
        assert not info.value.verdict

    async def test_permanent_not_retried(self) -> None:
        """A permanent error propagates at once."""
        attempts = 0

        async def refused() -> None:
            nonlocal attempts
            attempts += 1
            raise ExportApiRejected("403 Forbidden")

        with pytest.raises(ExportApiRejected):
            await retry(refused, Backoff(), what="test", dependency="test")
        assert attempts == 1
