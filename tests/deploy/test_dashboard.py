"""The Grafana dashboard reads only what the service's /metrics exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from pipeline._core.accounting import FileResult
from pipeline._service.metrics import ServiceMetrics

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana-dashboard.json"
NAME = re.compile(r"\bpipeline_[a-z_]+\b")


def _exposed_series() -> set[str]:
    """Every series name a fresh service's exposition has (counters, buckets and all)."""
    metrics = ServiceMetrics()
    metrics.retried("export_api")
    metrics.message("export_jobs", "received")
    metrics.file_finished(FileResult(file_id="f", name="f.zip", ok=True, entries_uploaded=1), 1.0)
    depths = {"visible": 3, "inFlight": 1, "delayed": 0, "deadLetter": 2}
    metrics.queues_seen({"exportJobs": depths, "downloadTasks": None}, {"export-jobs": True})
    text = metrics.text().decode()
    return {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    } | {family.name for family in text_string_to_metric_families(text)}


def test_every_panel_queries_series_the_service_serves() -> None:
    """Each panel has a query, and each metric name in it is one /metrics serves."""
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    exposed = _exposed_series()
    panels = dashboard["panels"]
    assert panels
    used: set[str] = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(NAME.findall(target["expr"]))
            assert names, target["expr"]
            assert names <= exposed, (panel["title"], names - exposed)
            used |= names
    # The alarms of docs/operations.md each have a panel to look at.
    assert {
        "pipeline_messages_total",
        "pipeline_files_total",
        "pipeline_circuit_open",
        "pipeline_heartbeats_total",
        # The backlog panel: queue depth by state, dead letters, paused queues.
        "pipeline_queue_messages",
        "pipeline_dead_letter_messages",
        "pipeline_queues_paused",
    } <= used


def test_queue_figures_become_series() -> None:
    """The /queues figures and the paused queues show as labelled gauges."""
    metrics = ServiceMetrics()
    depths = {"visible": 3, "inFlight": 1, "delayed": 4, "deadLetter": 2}
    metrics.queues_seen(
        {"exportJobs": depths, "downloadTasks": {**depths, "visible": 7}},
        {"export-jobs": True, "download-tasks": False},
    )
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics.text().decode())
        for sample in family.samples
    }
    assert (
        samples[("pipeline_queue_messages", (("queue", "export-jobs"), ("state", "visible")))] == 3
    )
    assert (
        samples[("pipeline_queue_messages", (("queue", "download-tasks"), ("state", "visible")))]
        == 7
    )
    assert (
        samples[("pipeline_queue_messages", (("queue", "export-jobs"), ("state", "in_flight")))]
        == 1
    )
    assert samples[("pipeline_dead_letter_messages", (("queue", "export-jobs"),))] == 2
    assert samples[("pipeline_queues_paused", ())] == 1
