"""Exactly-once configuration pitfalls, caught before the job runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jobs.kafka_tables import sink_specs
from metering.settings import PipelineSettings, check_transaction_timeout, settings_from_args

REPO = Path(__file__).resolve().parents[2]


def _broker_max_ms() -> int:
    text = (REPO / "scripts/kafka.sh").read_text()
    match = re.search(r"transaction\.max\.timeout\.ms=(\d+)", text)
    assert match
    return int(match.group(1))


def test_default_timeout_sits_between_restart_time_and_the_local_brokers_max() -> None:
    cfg = PipelineSettings()
    assert cfg.broker_transaction_max_timeout_ms == _broker_max_ms()
    assert cfg.transaction_timeout_ms <= _broker_max_ms()
    floor = (cfg.checkpoint_interval_seconds + cfg.expected_restart_seconds) * 1000
    assert cfg.transaction_timeout_ms > floor


def test_a_timeout_above_the_brokers_max_is_refused() -> None:
    with pytest.raises(ValueError, match=r"exceeds the brokers' transaction\.max\.timeout\.ms"):
        check_transaction_timeout(3_600_000, 900_000, 10, 120)  # the connector's 1 h default
    with pytest.raises(SystemExit) as exc:
        settings_from_args(["--transaction-timeout-ms", "3600000"])
    assert exc.value.code == 2


def test_a_timeout_within_checkpoint_plus_restart_is_refused() -> None:
    with pytest.raises(ValueError, match="must exceed checkpoint interval"):
        check_transaction_timeout(120_000, 900_000, 10, 120)
    with pytest.raises(SystemExit):
        settings_from_args(["--checkpoint-interval-seconds", "600"])
    check_transaction_timeout(130_001, 900_000, 10, 120)


def test_exactly_once_sinks_have_distinct_prefixes() -> None:
    specs = sink_specs(PipelineSettings())
    eos = [s for s in specs if s.delivery == "exactly-once"]
    assert {s.table for s in eos} == {
        "enriched_sink",
        "usage_sink",
        "dlq_sink",
        "reconciliation_sink",
        "period_usage_sink",
        "quota_signals_sink",
        "balance_signals_sink",
    }
    prefixes = [s.transactional_id_prefix for s in eos]
    assert len(set(prefixes)) == len(prefixes)
    # No prefix is a prefix of another: Flink appends -<subtask>-<counter>, and a shared
    # leading part would let one sink's recovery abort the other's transactions.
    for a in prefixes:
        for b in prefixes:
            assert a == b or not (b or "").startswith(f"{a}-"), (a, b)
    assert all(s.transaction_timeout_ms == 600_000 for s in eos)


def test_prefixes_are_stable_across_restarts_and_follow_the_setting() -> None:
    first = [s.transactional_id_prefix for s in sink_specs(PipelineSettings())]
    again = [s.transactional_id_prefix for s in sink_specs(PipelineSettings())]
    assert first == again
    assert first == [
        "gateway-pipeline-enriched",
        "gateway-pipeline-usage",
        "gateway-pipeline-dlq",
        "gateway-pipeline-alerts",
        "gateway-pipeline-reconciliation",
        "gateway-pipeline-period_usage",
        "gateway-pipeline-quota_signals",
        "gateway-pipeline-balance_signals",
    ]
    custom = sink_specs(PipelineSettings(transactional_id_prefix="billing-eu"))
    assert custom[0].transactional_id_prefix == "billing-eu-enriched"


def test_alerts_are_at_least_once_unless_asked() -> None:
    by_table = {s.table: s for s in sink_specs(PipelineSettings())}
    assert by_table["alerts_sink"].delivery == "at-least-once"
    eos = sink_specs(PipelineSettings(alerts_delivery="exactly-once"))
    assert {s.table: s.delivery for s in eos}["alerts_sink"] == "exactly-once"
