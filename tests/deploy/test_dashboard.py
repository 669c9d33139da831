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
    } <= used
