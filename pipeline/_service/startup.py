"""Start-up that waits for SQS, S3 and DynamoDB before taking work (contract 6).

The settings are checked before this (a bad one exits 2 at once); what the
process still needs from AWS to begin is what its queues say of themselves
(visibility timeout, dead-letter queue) and that S3 and DynamoDB answer. Each
round looks at all three at once, each look under its own deadline and made
once (no per-call retries: the round is the retry); between rounds the wait
backs off up to a cap, for as long as it takes (:mod:`pipeline._core.startup`).
A line is logged when what is known changes, not per round. Meanwhile the
health server already answers: ``/health`` 200, ``/ready`` 503 with the
reason (:class:`StartGate`). A stop (SIGTERM) ends the wait at once.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence

import attrs
import structlog
import trio

from pipeline._adapters.aws import sqs as _sqs
from pipeline._adapters.aws.clients import AwsClients
from pipeline._adapters.http.health import readiness_checks
from pipeline._config import Settings
from pipeline._core.startup import START_POLICY, Standing, StartupWatch
from pipeline._errors import PipelineError, RetriesExhausted, TransientError

__all__ = ["PROBE_SECONDS", "QueueFacts", "StartGate", "wait_for_dependencies"]

log = structlog.get_logger("pipeline.startup")

# One look at one dependency: a stalled connection counts as not answering
# after this long, instead of holding the round for the clients' 30-60 s.
PROBE_SECONDS = 10.0

_JITTER = random.Random()

Probe = Callable[[], Awaitable[None]]


@attrs.frozen
class QueueFacts:
    """What a queue says of itself, read once at start."""

    url: str
    visibility_timeout: int
    dead_letter_url: str | None


class StartGate:
    """``/ready`` says 503 until the work has begun, even once AWS answers again."""

    def __init__(self) -> None:
        self._open = False

    def open(self) -> None:
        self._open = True

    async def check(self) -> None:
        """A readiness check: fails while start-up still waits."""
        if not self._open:
            msg = "waiting for SQS, S3 and DynamoDB to answer before taking work"
            raise TransientError(msg)


async def _queue_facts(aws: AwsClients, url: str) -> QueueFacts:
    return QueueFacts(
        url,
        await _sqs.queue_visibility_timeout(aws.sqs, url, policy=START_POLICY),
        await _sqs.dead_letter_queue_url(aws.sqs, url, policy=START_POLICY),
    )


def _standing(err: PipelineError) -> tuple[Standing, str]:
    # One attempt per look: a transient error arrives as RetriesExhausted.
    cause = err.__cause__ if isinstance(err, RetriesExhausted) else err
    if isinstance(cause, TransientError):
        return Standing.NOT_ANSWERING, str(cause)
    return Standing.REFUSES, str(err)


async def _look(name: str, probe: Probe, found: dict[str, tuple[Standing, str]]) -> None:
    try:
        with trio.fail_after(PROBE_SECONDS):
            await probe()
    except trio.TooSlowError:
        found[name] = (Standing.NOT_ANSWERING, f"no answer within {PROBE_SECONDS:g} s")
    except PipelineError as err:
        found[name] = _standing(err)
    else:
        found[name] = (Standing.ANSWERS, "")


def _say(found: dict[str, tuple[Standing, str]], watch: StartupWatch, waited: float) -> None:
    if watch.all_answer:
        if watch.rounds > 1:
            log.info("AWS answers: starting", waited_seconds=round(waited, 1))
        return
    not_answering = {n: why for n, (s, why) in found.items() if s is Standing.NOT_ANSWERING}
    refusing = {n: why for n, (s, why) in found.items() if s is Standing.REFUSES}
    answering = sorted(n for n, (s, _) in found.items() if s is Standing.ANSWERS)
    # Refusals need a person (a missing queue, bucket or table, a denied
    # role); an outage usually passes by itself.
    say = log.error if refusing else log.warning
    say(
        "waiting for AWS before taking work",
        not_answering=not_answering,
        refusing=refusing,
        answering=answering,
        waited_seconds=round(waited, 1),
    )


async def _look_until_all_answer(
    settings: Settings, aws: AwsClients, queues: Sequence[str], rng: random.Random
) -> dict[str, QueueFacts]:
    checks = readiness_checks(settings, aws)
    facts: dict[str, QueueFacts] = {}

    async def sqs() -> None:
        for url in queues:
            facts[url] = await _queue_facts(aws, url)

    probes: dict[str, Probe] = {
        "sqs": sqs if queues else checks["sqs"],
        "s3": checks["s3"],
        "dynamodb": checks["dynamodb"],
    }
    watch = StartupWatch()
    began = trio.current_time()
    while True:
        found: dict[str, tuple[Standing, str]] = {}
        async with trio.open_nursery() as nursery:
            for name, probe in probes.items():
                nursery.start_soon(_look, name, probe, found)
        if watch.record({name: standing for name, (standing, _) in found.items()}):
            _say(found, watch, trio.current_time() - began)
        if watch.all_answer:
            return facts
        await trio.sleep(watch.delay(rng.random()))


async def wait_for_dependencies(
    settings: Settings,
    aws: AwsClients,
    *,
    queues: Sequence[str],
    stop: trio.Event,
    rng: random.Random | None = None,
) -> dict[str, QueueFacts] | None:
    """Wait until SQS, S3 and DynamoDB answer; the facts of ``queues`` by URL.

    ``None`` when ``stop`` was set first: the process ends without starting.
    There is no limit on the total time; errors of every kind are waited
    out, and only a change in what is known is logged.
    """
    result: dict[str, QueueFacts] | None = None
    async with trio.open_nursery() as nursery:

        async def stop_waiting() -> None:
            await stop.wait()
            log.info("stopped while waiting for AWS")
            nursery.cancel_scope.cancel()

        nursery.start_soon(stop_waiting)
        result = await _look_until_all_answer(settings, aws, queues, rng or _JITTER)
        nursery.cancel_scope.cancel()
    return result
