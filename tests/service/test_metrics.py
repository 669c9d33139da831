"""The service's metrics: which families and labels GET /metrics shows."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from pipeline._service.metrics import MESSAGE_OUTCOMES, ServiceMetrics


def _samples(metrics: ServiceMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics.text().decode())
        for sample in family.samples
    }


def test_outcome_labels_show_at_zero_before_anything_happens() -> None:
    """Files, entries and retries show every label of the contract at 0 from the start."""
    samples = _samples(ServiceMetrics())
    for outcome in ("completed", "failed"):
        assert samples[("pipeline_files_total", (("outcome", outcome),))] == 0
    for outcome in ("uploaded", "skipped", "rejected"):
        assert samples[("pipeline_entries_total", (("outcome", outcome),))] == 0
    for dependency in ("export_api", "s3", "dynamodb", "sqs"):
        assert samples[("pipeline_retries_total", (("dependency", dependency),))] == 0


def test_known_queues_show_every_message_outcome() -> None:
    """Each queue a process reads shows received, deleted, handed_back and dead_lettered."""
    metrics = ServiceMetrics()
    metrics.known_queues(["export_jobs", "download_tasks"])
    metrics.message("export_jobs", "received", 3)
    samples = _samples(metrics)
    for queue in ("export_jobs", "download_tasks"):
        for outcome in MESSAGE_OUTCOMES:
            key = ("pipeline_messages_total", (("outcome", outcome), ("queue", queue)))
            expected = 3 if (queue, outcome) == ("export_jobs", "received") else 0
            assert samples[key] == expected
