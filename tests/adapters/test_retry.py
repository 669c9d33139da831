"""The one retry loop: its observer hook, its dependency names and its own jitter."""

from __future__ import annotations

import random

import pytest
import trio
from structlog.testing import capture_logs

from pipeline._adapters.aws.clients import aws_call
from pipeline._adapters.retry import observe_retries, pause, retry
from pipeline._core.backoff import Backoff
from pipeline._errors import AwsUnavailable, RetriesExhausted
from tests.support.observer import Recorder


async def test_observer_hears_every_retry(autojump_clock: trio.abc.Clock) -> None:
    """Each wait before another attempt is reported once, under the call's dependency."""
    recorder = Recorder()
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise AwsUnavailable("SlowDown", code="SlowDown")
        return "ok"

    with observe_retries(recorder):
        assert await retry(flaky, Backoff(max_attempts=5), what="s3 put", dependency="s3") == "ok"
    assert recorder.retries == ["s3", "s3"]


async def test_observer_reaches_tasks_started_inside(autojump_clock: trio.abc.Clock) -> None:
    """Trio hands the observer to tasks started in the block; outside it nobody hears."""
    recorder = Recorder()

    async def one_pause() -> None:
        await pause(Backoff(), 1, dependency="sqs", what="sqs receive", error="500")

    with observe_retries(recorder):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(one_pause)
            nursery.start_soon(one_pause)
    await one_pause()
    assert recorder.retries == ["sqs", "sqs"]


async def test_aws_call_names_its_service(autojump_clock: trio.abc.Clock) -> None:
    """aws_call counts its retries under the AWS service its name starts with."""
    recorder = Recorder()

    async def throttled() -> None:
        raise AwsUnavailable("ThrottlingException", code="ThrottlingException")

    with observe_retries(recorder), pytest.raises(RetriesExhausted):
        await aws_call("dynamodb get job", throttled, policy=Backoff(max_attempts=3))
    assert recorder.retries == ["dynamodb", "dynamodb"]


async def test_jitter_leaves_the_global_random_alone(autojump_clock: trio.abc.Clock) -> None:
    """Retries draw from their own generator, never from the module-level random state."""
    random.seed(14)
    before = random.getstate()

    async def down() -> None:
        raise AwsUnavailable("InternalError", code="InternalError")

    with pytest.raises(RetriesExhausted):
        await retry(down, Backoff(max_attempts=4), what="s3 put", dependency="s3")
    assert random.getstate() == before


async def test_an_outer_loop_logs_failures_in_a_row_not_attempts(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A loop around calls that spent their retries logs its failures in a row, not an
    'attempt' beside an error that says the call gave up after 6 attempts."""
    with capture_logs() as logs:
        await pause(
            Backoff(),
            1,
            dependency="sqs",
            what="sqs receive",
            error="sqs receive: gave up after 6 attempts: 500",
            failures=3,
        )
    (line,) = logs
    assert line["event"] == "failed again; trying later"
    assert line["failures_in_a_row"] == 3
    assert "attempt" not in line
