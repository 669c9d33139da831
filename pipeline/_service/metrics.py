"""The service's Prometheus metrics (``GET /metrics``), one registry per service.

A registry of its own rather than prometheus-client's global one: two services
in one process (the tests run several) keep their counts apart, and nothing
global is owned. Stages call the small methods here; gauges that mirror state
read it when scraped. It is also the retry observer
(:func:`pipeline._adapters.retry.observe_retries`), so every retry and breaker
change of every call is counted without the adapters knowing about metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from pipeline._core.accounting import FileResult

__all__ = ["MESSAGE_OUTCOMES", "ServiceMetrics"]

# From a small file to a multi-GB one; beyond an hour it is all "slow".
# GET /queues's depth names → the state label.
_STATES = {"visible": "visible", "inFlight": "in_flight", "delayed": "delayed"}
_DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)


# What becomes of a message (contract 7's outcome label of pipeline_messages_total).
MESSAGE_OUTCOMES = ("received", "deleted", "handed_back", "dead_lettered")


class ServiceMetrics:
    """Counters, gauges and a histogram of one service, in one registry."""

    def __init__(self) -> None:
        registry = self.registry = CollectorRegistry()
        self.messages = Counter(
            "pipeline_messages",
            "Messages by queue and what became of them",
            ["queue", "outcome"],
            registry=registry,
        )
        self.files = Counter(
            "pipeline_files", "Files finished, by outcome", ["outcome"], registry=registry
        )
        self.entries = Counter(
            "pipeline_entries",
            "Entries of finished files, by outcome",
            ["outcome"],
            registry=registry,
        )
        self.bytes_uploaded = Counter(
            "pipeline_bytes_uploaded", "Uncompressed bytes written to S3", registry=registry
        )
        self.files_in_flight = Gauge(
            "pipeline_files_in_flight", "Files being processed now", registry=registry
        )
        self.inflate_threads_busy = Gauge(
            "pipeline_inflate_threads_busy", "Inflate threads busy now", registry=registry
        )
        self.retries = Counter(
            "pipeline_retries",
            "Calls tried again, by dependency",
            ["dependency"],
            registry=registry,
        )
        self.circuit_open = Gauge(
            "pipeline_circuit_open",
            "1 while the breaker in front of a dependency is open",
            ["dependency"],
            registry=registry,
        )
        self.heartbeats = Counter(
            "pipeline_heartbeats", "Message leases extended", registry=registry
        )
        self.file_duration = Histogram(
            "pipeline_file_duration_seconds",
            "Time to process one file",
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.queue_messages = Gauge(
            "pipeline_queue_messages",
            "Messages in a queue by state (from the GET /queues figures)",
            ["queue", "state"],
            registry=registry,
        )
        self.dead_letters = Gauge(
            "pipeline_dead_letter_messages",
            "Messages in a queue's dead-letter queue",
            ["queue"],
            registry=registry,
        )
        self.queues_paused = Gauge(
            "pipeline_queues_paused", "Queues paused for every process", registry=registry
        )
        self.circuit_open.labels("export_api").set(0)
        # Every label a dashboard or an alert names shows from the start, at 0,
        # rather than appearing with its first event.
        for outcome in ("completed", "failed"):
            self.files.labels(outcome)
        for outcome in ("uploaded", "skipped", "rejected"):
            self.entries.labels(outcome)
        for dependency in ("export_api", "s3", "dynamodb", "sqs"):
            self.retries.labels(dependency)

    def known_queues(self, queues: Iterable[str]) -> None:
        """Show every outcome of the queues this process reads, at 0 until it happens."""
        for queue in queues:
            for outcome in MESSAGE_OUTCOMES:
                self.messages.labels(queue, outcome)

    def watch(
        self, *, files_in_flight: Callable[[], float], threads_busy: Callable[[], float]
    ) -> None:
        """Gauges that read the live state when scraped."""
        self.files_in_flight.set_function(files_in_flight)
        self.inflate_threads_busy.set_function(threads_busy)

    def message(self, queue: str, outcome: str, count: int = 1) -> None:
        """``count`` messages of ``queue`` were received, deleted, handed back or dead-lettered."""
        if count:
            self.messages.labels(queue, outcome).inc(count)

    def file_finished(self, result: FileResult, seconds: float) -> None:
        """A file's result was recorded: its outcome, entries, bytes and time."""
        self.files.labels("completed" if result.ok else "failed").inc()
        self.entries.labels("uploaded").inc(result.entries_uploaded)
        self.entries.labels("skipped").inc(result.entries_skipped)
        self.entries.labels("rejected").inc(result.entries_rejected)
        self.bytes_uploaded.inc(result.bytes_uploaded)
        self.file_duration.observe(seconds)

    def retried(self, dependency: str) -> None:
        self.retries.labels(dependency).inc()

    def circuit_changed(self, dependency: str, is_open: bool) -> None:
        self.circuit_open.labels(dependency).set(1 if is_open else 0)

    def queues_seen(self, figures: Mapping[str, Any], paused: Mapping[str, bool]) -> None:
        """The ``GET /queues`` figures and the paused queues, for the next scrape."""
        for name, queue in (
            ("exportJobs", "export-jobs"),
            ("downloadTasks", "download-tasks"),
            ("exportJobsHigh", "export-jobs-high"),
            ("downloadTasksHigh", "download-tasks-high"),
        ):
            depths = figures.get(name)
            if depths is None:
                continue
            for key, state in _STATES.items():
                self.queue_messages.labels(queue, state).set(depths[key])
            self.dead_letters.labels(queue).set(depths["deadLetter"])
        self.queues_paused.set(sum(1 for now in paused.values() if now))

    def text(self) -> bytes:
        """The exposition, in Prometheus's text format."""
        return generate_latest(self.registry)
