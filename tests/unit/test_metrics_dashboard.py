"""deploy/grafana/pipeline-dashboard.json reads only metrics the job registers (or Flink's own),
under the names Flink's Prometheus reporter gives them, through a Prometheus datasource
variable. The names come from the code that registers them: udfs.functions' constants and the
JVM operators' (jvm/, JobMetrics)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from udfs.functions import (
    ALERT_RULE_GROUP,
    ALERT_STATUS_GROUP,
    ALERTS_METRIC,
    DEAD_LETTER_REASON_GROUP,
    DEAD_LETTERS_METRIC,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "pipeline-dashboard.json"
JOB_METRICS_JAVA = REPO_ROOT / "jvm/src/main/java/io/github/gatewaypipeline/flink/JobMetrics.java"
OPERATOR = "flink_taskmanager_job_task_operator_"
FLINK_BUILT_IN = {"flink_jobmanager_job_lastCheckpointDuration"}
"""Flink's own metrics the dashboard reads (the checkpoint panel)."""


def java_metric_names() -> set[str]:
    text = JOB_METRICS_JAVA.read_text(encoding="utf-8")
    return set(re.findall(r'public static final String \w+ = "(\w+)";', text))


def registered_metrics() -> set[str]:
    """Every job-registered metric as the Prometheus reporter names it: scope, then each
    key-value group's key, then the metric (the value becomes a label of the key's name)."""
    python = {
        "records_in",
        "events_enriched",
        DEAD_LETTERS_METRIC,
        f"{DEAD_LETTER_REASON_GROUP}_{DEAD_LETTERS_METRIC}",
        ALERTS_METRIC,
        f"{ALERT_RULE_GROUP}_{ALERT_STATUS_GROUP}_{ALERTS_METRIC}",
    }
    return {OPERATOR + name for name in python | java_metric_names()}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (identifiers in front of a selector)."""
    return set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{", expr))


def test_the_jvm_declares_the_metrics_docs_name() -> None:
    assert java_metric_names() == {"late_events", "deduplicated_retries", "watermark_lag_ms"}


def test_every_panel_query_reads_a_metric_the_job_registers(dashboard: dict[str, Any]) -> None:
    known = registered_metrics() | FLINK_BUILT_IN
    read: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, (panel["title"], target["expr"])
            assert names <= known, (panel["title"], names - known)
            read |= names
    # And every metric the issue asks for has a panel.
    wanted = {
        OPERATOR + n
        for n in (
            "records_in",
            "events_enriched",
            "dead_letter_reason_dead_letters",
            "late_events",
            "deduplicated_retries",
            "alert_rule_alert_status_alerts",
            "watermark_lag_ms",
        )
    } | FLINK_BUILT_IN
    assert wanted <= read, wanted - read


def test_panels_use_the_prometheus_datasource_variable(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ref = {"type": "prometheus", "uid": "${datasource}"}
    for panel in dashboard["panels"]:
        assert panel["datasource"] == ref, panel["title"]
        assert all(t["datasource"] == ref for t in panel["targets"]), panel["title"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
