"""The queues a process reads, a lane each: their keepers and dead-letter queues.

A stage (export jobs, download tasks) reads its normal queue and, when one is
configured, its high one (``SQS_EXPORT_JOBS_HIGH_URL``,
``SQS_DOWNLOAD_TASKS_HIGH_URL``). Each queue gets its own lease keeper, named
for the metrics and ``/health`` (``export_jobs``, ``export_jobs_high``, ...);
``graph.py`` wires one stage task and its receivers per queue, all sharing the
stage's slots.
"""

from __future__ import annotations

import attrs

from pipeline._adapters.aws import sqs as _sqs
from pipeline._adapters.aws.queues import SqsQueues
from pipeline._config import Settings
from pipeline._core.backoff import AWS_POLICY
from pipeline._core.lanes import Priority
from pipeline._service.deps import Deps
from pipeline._service.lease import LeaseKeeper

__all__ = ["StageQueue", "lanes_of", "open_stage_queues", "queue_names"]


@attrs.frozen
class StageQueue:
    """One queue this process reads: its lane, its lease keeper, its dead-letter queue."""

    lane: Priority
    keeper: LeaseKeeper
    dead_letter_url: str | None


async def open_stage_queues(
    deps: Deps, *, normal: str, high: str | None, name: str
) -> list[StageQueue]:
    """The normal queue of a stage, and its high one when configured."""
    sqs = deps.aws.sqs
    lanes = [(Priority.NORMAL, normal, name)]
    if high is not None:
        lanes.append((Priority.HIGH, high, f"{name}_high"))
    found = []
    for lane, url, queue_name in lanes:
        timeout = await _sqs.queue_visibility_timeout(sqs, url, policy=AWS_POLICY)
        keeper = LeaseKeeper(
            SqsQueues(sqs),
            url,
            timeout,
            AWS_POLICY,
            metrics=deps.metrics,
            queue_name=queue_name,
            lane=lane,
        )
        dead_letter_url = await _sqs.dead_letter_queue_url(sqs, url, policy=AWS_POLICY)
        found.append(StageQueue(lane, keeper, dead_letter_url))
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
