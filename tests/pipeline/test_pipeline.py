"""The job's topology on the embedded MiniCluster over a bounded in-memory input.

Stateful operators (windows, anomaly detection) run in both Python execution modes, as PyFlink's
own window tests do: thread mode embeds the interpreter and has failure modes of its own. The
stateless parse operator runs in process mode beside either, and in thread mode with thread mode.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pyflink.common import Row
from pyflink.common.typeinfo import Types
from pyflink.table import Table

from jobs.gateway_pipeline import build_pipeline, create_environment
from metering.geo import default_geoip_db
from metering.records import client_rate_key
from metering.redact import Pseudonymizer
from metering.settings import PipelineSettings
from schemas.events import MAX_NETWORKS
from testkit.traffic import (
    SCENARIO_LEARN_MINUTES,
    default_scenario,
    generate,
    ips_for_countries,
    max_event_age_covering,
    scenario_alert_problems,
)
from udfs.functions import RAW_TYPE

EXAMPLE_CATALOG = Path(__file__).resolve().parents[2] / "metering/billing/catalog.example.toml"

pytestmark = pytest.mark.pipeline

START_MS = 1_767_225_600_000
TAGGED = Types.ROW_NAMED(["role", "k", "json"], [Types.STRING(), Types.STRING(), Types.STRING()])
CONSTANT_ID_CALLS = 7


def _poisoned() -> bytes:
    """One APISIX entry stamped a year after now: it used to be enriched and move its parse
    subtask's watermark a year ahead, after which every event was late and nothing alerted."""
    start = int(time.time() * 1000) + 366 * 86_400_000
    return json.dumps(
        {
            "request": {"uri": "/v1/x", "method": "GET", "headers": {"x-request-id": "p"}},
            "response": {"status": 200},
            "consumer": {"username": "poisoner"},
            "client_ip": "10.9.8.7",
            "start_time": start,
        }
    ).encode()


def _constant_request_id_calls() -> list[bytes]:
    """Distinct calls of one consumer, all with the same client-chosen x-request-id: each is
    billed (the dedup key used to be that id, so all but the first were dropped)."""
    return [
        json.dumps(
            {
                "request": {"uri": f"/v1/c/{i}", "method": "GET", "headers": {"x-request-id": "c"}},
                "response": {"status": 200},
                "consumer": {"username": "constant-id-client"},
                "client_ip": "10.9.8.7",
                "start_time": START_MS + 110_000 + i * 1_000,
            }
        ).encode()
        for i in range(CONSTANT_ID_CALLS)
    ]


@pytest.fixture(scope="module")
def generated() -> Any:
    country_ips = ips_for_countries(default_geoip_db(), ["DE", "US", "JP", "GB", "BR"], 4, seed=3)
    return generate(default_scenario(country_ips, START_MS, windows=11), seed=9)


def _run(
    mode: str, parse_mode: str, records: list[bytes], hash_key: str
) -> dict[str, list[dict[str, Any]]]:
    cfg = PipelineSettings(
        baseline_learn_minutes=SCENARIO_LEARN_MINUTES,
        execution_mode=mode,
        parse_execution_mode=parse_mode,
        parallelism=2,
        bounded=True,
        max_event_age_seconds=max_event_age_covering(START_MS),
        billing_catalog=str(EXAMPLE_CATALOG),
    )
    # The test's collecting maps would otherwise be fused into the uid'd Python operators.
    # Mini-batch stands for a cluster configuration that enables it: the job must switch it off
    # (its processing-time watermarks made every event late).
    mini_batch = {
        "table.exec.mini-batch.enabled": "true",
        "table.exec.mini-batch.allow-latency": "1 s",
        "table.exec.mini-batch.size": "1000",
    }
    env, t_env = create_environment(cfg, {"python.operator-chaining.enabled": "false"} | mini_batch)
    # The exact outputs below hold with the job's object reuse (rows handed on without a copy).
    assert env.get_config().is_object_reuse_enabled()
    # Two partitions, Kafka timestamps one second apart per 100 records: several intervals.
    rows = [Row(value, i % 2, i // 2, 1_767_225_600 + i // 100) for i, value in enumerate(records)]
    raw = t_env.from_data_stream(env.from_collection(rows, type_info=RAW_TYPE))
    out = build_pipeline(t_env, raw, cfg)

    def tag(role: str, table: Table) -> Any:
        # Keyed tables carry (k, v); the dead letters only v.
        keyed = len(table.get_schema().get_field_names()) == 2
        return t_env.to_changelog_stream(table).map(
            lambda r: Row(role, r[0] if keyed else None, r[-1]), output_type=TAGGED
        )

    tagged = tag("enriched", out.enriched).union(
        tag("dlq", out.dead_letters),
        tag("usage", out.usage),
        tag("alerts", out.alerts),
        tag("recon", out.reconciliation),
    )
    got: dict[str, list[dict[str, Any]]] = {r: [] for r in ("enriched", "dlq", "usage", "alerts")}
    # Reconciliation is an upsert stream: the latest row per key holds the counts.
    latest: dict[str, dict[str, Any]] = {}
    with tagged.execute_and_collect(f"pipeline-test-{mode}-{parse_mode}") as results:
        for row in results:
            if row[0] == "recon":
                latest[row[1]] = json.loads(row[2])
            else:
                got[row[0]].append(json.loads(row[2]))
    got["recon"] = list(latest.values())
    return got


# (keyed functions, parse operator): thread throughout, the default (the parse in worker
# processes), and process mode throughout.
@pytest.mark.parametrize(
    ("mode", "parse_mode"), [("thread", "thread"), ("thread", "process"), ("process", "process")]
)
def test_topology_produces_exact_outputs(
    mode: str, parse_mode: str, generated: Any, pipeline_hash_key: str
) -> None:
    hash_key = pipeline_hash_key
    truth = generated.truth
    # The poisoned entry first, twice, so that both parse subtasks see one before any good
    # record; the constant-id calls after the scenario.
    constant = _constant_request_id_calls()
    records = [_poisoned(), _poisoned(), *generated.records, *constant]
    out = _run(mode, parse_mode, records, hash_key)
    ps = Pseudonymizer(hash_key.encode())

    events = truth.events + CONSTANT_ID_CALLS
    assert len(out["enriched"]) == events
    assert len({e["event_id"] for e in out["enriched"]}) == events
    client = [e for e in out["enriched"] if e["consumer"] == "constant-id-client"]
    assert len(client) == CONSTANT_ID_CALLS
    assert {e["request_id"] for e in client} == {"c"}

    assert len(out["dlq"]) == truth.dead_letters + 2
    assert Counter(d["reason"] for d in out["dlq"]) == truth.dead_letter_reasons + Counter(
        event_time_future=2
    )

    def key(k: str) -> str:
        return client_rate_key(ps, k[7:]) if k.startswith("client:") else k

    # No late data in this input: the poisoned entries did not move the watermark.
    assert {u["kind"] for u in out["usage"]} == {"window"}
    want: Counter[tuple[str, int]] = Counter()
    for (k, start), n in truth.per_key_window.items():
        want[(key(k), start)] += n
    for value in constant:
        t = json.loads(value)["start_time"]
        want[("constant-id-client", t - t % 10_000)] += 1
    got = {(w["rate_key"], w["window_start"]): w["count"] for w in out["usage"]}
    assert got == dict(want)
    assert len(out["usage"]) == len(want)
    # Each window's distinct client networks are those of its enriched events.
    networks: dict[tuple[str, int], set[str]] = {k: set() for k in got}
    for e in out["enriched"]:
        if e["client_prefix"] is not None:
            t = e["event_time"]
            networks[(e["rate_key"], t - t % 10_000)].add(e["client_prefix"])
    assert {(w["rate_key"], w["window_start"]): w["networks"] for w in out["usage"]} == {
        k: min(MAX_NETWORKS, len(v)) for k, v in networks.items()
    }
    assert max(w["networks"] for w in out["usage"]) > 1

    # Reconciliation per source partition: every record and entry accounted for.
    recon: dict[int, Counter[str]] = {0: Counter(), 1: Counter()}
    for r in out["recon"]:
        recon[r["source_partition"]].update(
            {k: r[k] for k in ("records_in", "entries_in", "enriched_out", "dead_lettered")}
        )
    assert recon[0]["records_in"] + recon[1]["records_in"] == len(records)
    assert sum(r["entries_in"] for r in recon.values()) == events + truth.dead_letters + 2
    for p in (0, 1):
        events_p = sum(1 for e in out["enriched"] if e["source_partition"] == p)
        dead_p = sum(1 for d in out["dlq"] if d["source_partition"] == p)
        assert recon[p]["enriched_out"] == events_p
        assert recon[p]["dead_lettered"] == dead_p
        assert recon[p]["entries_in"] == events_p + dead_p

    # The 401 burst, in window 4 of 10, is judged as its events arrive, long before the
    # watermark closes its window; the attack when its windows close; every incident is closed
    # at the end of the input.
    assert scenario_alert_problems(out["alerts"], truth, START_MS + 4 * 10_000) == []
