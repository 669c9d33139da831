"""The queues' depths as ``GET /queues`` shows them, at most :data:`MAX_AGE_SECONDS` old.

Asked per call, the figures cost SQS several requests each (each queue's
depths, its redrive policy, its dead-letter queue's URL and depth), so anyone
who can reach the port turns callers into SQS traffic, and 200 callers at once
queue up behind one connection pool. Instead the figures are kept for
:data:`MAX_AGE_SECONDS` (contract 7 allows that much), and a refresh is
single-flight: callers that find them stale while one refresh runs wait for
that refresh instead of starting their own. One refresh asks each queue once
for its depths and redrive policy and each dead-letter queue once for its
depth; the dead-letter queue's URL is looked up once per redrive policy.

If a refresh fails, its waiters get the same error and the next caller starts
a new refresh; if its caller is cancelled (the client went away), a waiter
takes over.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar

import trio

from pipeline._adapters.aws.clients import aws_call
from pipeline._adapters.aws.clienttypes import AwsAnswer
from pipeline._core.backoff import AWS_POLICY, Backoff

__all__ = ["MAX_AGE_SECONDS", "Depths", "QueueAttributes", "QueueDepths", "SingleFlight"]

T = TypeVar("T")

# How old the figures may be (contract 7).
MAX_AGE_SECONDS = 5.0
_DEPTHS = {
    "visible": "ApproximateNumberOfMessages",
    "inFlight": "ApproximateNumberOfMessagesNotVisible",
    "delayed": "ApproximateNumberOfMessagesDelayed",
}
# Figures of one queue: visible, inFlight, delayed, deadLetter.
Depths = dict[str, int]


class QueueAttributes(Protocol):
    """The SQS calls a refresh makes (an aiobotocore SQS client has them)."""

    async def get_queue_attributes(self, **kwargs: Any) -> AwsAnswer: ...

    async def get_queue_url(self, **kwargs: Any) -> AwsAnswer: ...


class _Flight:
    """One refresh under way, and how it ended for those who wait on it."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.failure: Exception | None = None


class SingleFlight(Generic[T]):
    """A value kept for ``max_age`` seconds and refreshed by one caller at a time."""

    def __init__(self, fetch: Callable[[], Awaitable[T]], max_age: float) -> None:
        self._fetch = fetch
        self._max_age = max_age
        self._value: T | None = None
        self._fetched_at = float("-inf")
        self._flight: _Flight | None = None

    async def get(self) -> T:
        """The value, fetched anew when older than ``max_age`` (raises what the fetch raised)."""
        while True:
            if self._value is not None and trio.current_time() - self._fetched_at < self._max_age:
                return self._value
            flight = self._flight
            if flight is None:
                return await self._refresh()
            await flight.done.wait()
            if flight.failure is not None:
                raise flight.failure
            # A value now, or the refresh was cancelled and this caller takes over.

    async def _refresh(self) -> T:
        flight = self._flight = _Flight()
        started = trio.current_time()
        try:
            value = await self._fetch()
        except Exception as err:
            flight.failure = err
            raise
        finally:
            self._flight = None
            flight.done.set()
        self._value, self._fetched_at = value, started
        return value


class QueueDepths:
    """The depths of the export-job queue and (when configured) the download-task queue."""

    def __init__(
        self,
        sqs: QueueAttributes,
        export_jobs_url: str,
        download_tasks_url: str | None,
        *,
        export_jobs_high_url: str | None = None,
        download_tasks_high_url: str | None = None,
        max_age: float = MAX_AGE_SECONDS,
        policy: Backoff = AWS_POLICY,
    ) -> None:
        self._sqs = sqs
        self._queues = {"exportJobs": export_jobs_url, "downloadTasks": download_tasks_url}
        # The high lanes' queues, only where configured (SQS_*_HIGH_URL).
        for name, url in (
            ("exportJobsHigh", export_jobs_high_url),
            ("downloadTasksHigh", download_tasks_high_url),
        ):
            if url is not None:
                self._queues[name] = url
        self._policy = policy
        self._dead_letter_urls: dict[str, str] = {}
        self._cache = SingleFlight(self._read, max_age)

    async def figures(self) -> dict[str, Depths | None]:
        """``exportJobs`` and ``downloadTasks`` (None when not configured), each its depths,
        and ``exportJobsHigh``/``downloadTasksHigh`` where a high lane is configured."""
        return await self._cache.get()

    async def _attributes(self, url: str, names: list[str]) -> dict[str, str]:
        response = await aws_call(
            "sqs get queue attributes",
            self._sqs.get_queue_attributes,
            policy=self._policy,
            QueueUrl=url,
            AttributeNames=names,
        )
        return dict(response.get("Attributes") or {})

    async def _dead_letter_url(self, redrive_policy: str) -> str:
        arn = str(json.loads(redrive_policy)["deadLetterTargetArn"])
        known = self._dead_letter_urls.get(arn)
        if known is None:
            _, _, _, _, account, name = arn.split(":", 5)
            response = await aws_call(
                "sqs get dead-letter queue url",
                self._sqs.get_queue_url,
                policy=self._policy,
                QueueName=name,
                QueueOwnerAWSAccountId=account,
            )
            known = self._dead_letter_urls[arn] = str(response["QueueUrl"])
        return known

    async def _queue(self, url: str) -> Depths:
        attributes = await self._attributes(url, [*_DEPTHS.values(), "RedrivePolicy"])
        depths = {name: int(attributes.get(attribute, 0)) for name, attribute in _DEPTHS.items()}
        depths["deadLetter"] = 0
        redrive_policy = attributes.get("RedrivePolicy")
        if redrive_policy:
            dead_letters = await self._dead_letter_url(redrive_policy)
            visible = await self._attributes(dead_letters, [_DEPTHS["visible"]])
            depths["deadLetter"] = int(visible.get(_DEPTHS["visible"], 0))
        return depths

    async def _read(self) -> dict[str, Depths | None]:
        # One queue after the other: a refresh is rare, and a failure stays one error.
        return {
            name: None if url is None else await self._queue(url)
            for name, url in self._queues.items()
        }
