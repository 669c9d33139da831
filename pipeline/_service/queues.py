"""The queues a process reads, a lane each: their keepers and dead-letter queues.

A stage (export jobs, download tasks) reads its normal queue and, when one is
configured, its high one (``SQS_EXPORT_JOBS_HIGH_URL``,
``SQS_DOWNLOAD_TASKS_HIGH_URL``). Each queue gets its own lease keeper, named
for the metrics and ``/health`` (``export_jobs``, ``export_jobs_high``, ...);
``graph.py`` wires one stage task and its receivers per queue, all sharing the
stage's slots.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from pipeline._adapters.aws.queues import Queues
from pipeline._config import Settings
from pipeline._core.lanes import Priority
from pipeline._service.lease import LeaseKeeper
from pipeline._service.metrics import ServiceMetrics
from pipeline._service.startup import QueueFacts

__all__ = ["StageQueue", "lanes_of", "queue_names", "stage_queues"]


@attrs.frozen
class StageQueue:
    """One queue this process reads: its lane, its lease keeper, its dead-letter queue."""

    lane: Priority
    keeper: LeaseKeeper
    dead_letter_url: str | None


def stage_queues(
    queues: Queues,
    metrics: ServiceMetrics,
    facts: Mapping[str, QueueFacts],
    urls: tuple[str | None, str | None],
    *,
    name: str,
) -> list[StageQueue]:
    """A stage's queues from their ``(normal, high)`` URLs (None: not read), with what
    start-up read of each (``facts``: visibility timeout, dead-letter queue)."""
    normal, high = urls
    lanes = [(Priority.NORMAL, normal, name), (Priority.HIGH, high, f"{name}_high")]
    found = []
    for lane, url, queue_name in lanes:
        if url is None or (lane is Priority.HIGH and normal is None):
            continue
        queue = facts[url]
        keeper = LeaseKeeper(
            queues,
            url,
            queue.visibility_timeout,
            queues.policy,
            metrics=metrics,
            queue_name=queue_name,
            lane=lane,
        )
        found.append(StageQueue(lane, keeper, queue.dead_letter_url))
    return found


def lanes_of(queues: list[StageQueue]) -> tuple[Priority, ...]:
    """The lanes of a stage's queues, for its slots (normal alone when it reads none)."""
    return tuple(queue.lane for queue in queues) or (Priority.NORMAL,)


def queue_names(settings: Settings, takes_jobs: bool, takes_tasks: bool) -> list[str]:
    """The queues this process receives from, by the names the keepers and /health use."""
    return [
        name
        for name, taken in (
            ("export_jobs", takes_jobs),
            ("export_jobs_high", takes_jobs and settings.sqs_export_jobs_high_url is not None),
            ("download_tasks", takes_tasks),
            (
                "download_tasks_high",
                takes_tasks and settings.sqs_download_tasks_high_url is not None,
            ),
        )
        if taken
    ]
