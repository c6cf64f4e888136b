"""The real job on the real broker: produce a known mix, run --bounded, read back committed output.

One job run (module-scoped) feeds every assertion, because a PyFlink job costs a JVM start.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from metering.geo import default_geoip_db
from metering.redact import Pseudonymizer
from tools.readback import Record, drain
from tools.traffic import GroundTruth, default_scenario, generate, ips_for_countries

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a window boundary
WINDOWS = 12
JOB_TIMEOUT_S = 600


@dataclass
class Run:
    truth: GroundTruth
    topics: dict[str, str]
    hash_key: str
    pseudonymizer: Pseudonymizer
    outputs: dict[str, list[Record]]
    job_output: str
    log_text: str
    raw_count: int
    retried_entries: int

    def values(self, role: str) -> list[dict[str, Any]]:
        return [json.loads(r.value or b"") for r in self.outputs[role]]


def _produce(bootstrap: str, topic: str, records: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    errors: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    # Spread over both partitions in produce order, as a multi-worker gateway would.
    for i, value in enumerate(records):
        producer.produce(topic, value=value, partition=i % 2, on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(30) == 0
    assert errors == []


@pytest.fixture(scope="module")
def run(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    from tools.topics import delete_topics, ensure_topics, pipeline_topics

    suffix = secrets.token_hex(4)
    roles = ("raw", "enriched", "alerts", "dlq", "usage", "reconciliation")
    topics = {role: f"it-{role}-{suffix}" for role in roles}
    ensure_topics(kafka_bootstrap, pipeline_topics(**topics))
    geo_db = default_geoip_db()
    country_ips = ips_for_countries(geo_db, ["DE", "US", "JP", "GB", "BR"], 4, seed=11)
    generated = generate(default_scenario(country_ips, START_MS, windows=WINDOWS), seed=5)
    # A gateway retry: the first batch is delivered twice (same entries, same request ids).
    retried = max(
        (r for r in generated.records if r.startswith(b"[") and b"x-request-id" in r),
        key=lambda r: len(json.loads(r)),
    )
    records = [*generated.records, retried]
    _produce(kafka_bootstrap, topics["raw"], records)

    hash_key = secrets.token_hex(32)
    log_dir = tmp_path_factory.mktemp("flink-logs")
    env = dict(os.environ, PIPELINE_HASH_KEY=hash_key, FLINK_LOG_DIR=str(log_dir))
    cmd = [
        sys.executable,
        "-m",
        "jobs.gateway_pipeline",
        "--bootstrap-servers",
        kafka_bootstrap,
        "--raw-topic",
        topics["raw"],
        "--enriched-topic",
        topics["enriched"],
        "--alerts-topic",
        topics["alerts"],
        "--dlq-topic",
        topics["dlq"],
        "--usage-topic",
        topics["usage"],
        "--reconciliation-topic",
        topics["reconciliation"],
        "--geoip-db",
        geo_db,
        "--bounded",
        "--startup-mode",
        "earliest-offset",
        "--group-id",
        f"it-{suffix}",
        "--transactional-id-prefix",
        f"it-{suffix}",
        "--checkpoint-interval-seconds",
        "2",
    ]
    proc = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S, check=False
    )
    job_output = proc.stdout + proc.stderr
    assert proc.returncode == 0, job_output[-5000:]
    outputs = {
        role: drain(kafka_bootstrap, topic, timeout_s=60)
        for role, topic in topics.items()
        if role != "raw"
    }
    log_text = "\n".join(
        p.read_text(errors="replace") for p in sorted(log_dir.rglob("*")) if p.is_file()
    )
    yield Run(
        truth=generated.truth,
        topics=topics,
        hash_key=hash_key,
        pseudonymizer=Pseudonymizer(hash_key.encode()),
        outputs=outputs,
        job_output=job_output,
        log_text=log_text,
        raw_count=len(records),
        retried_entries=len(json.loads(retried)),
    )
    delete_topics(kafka_bootstrap, list(topics.values()))


def _truth_key(run: Run, key: str) -> str:
    if key.startswith("client:"):
        return "client:" + run.pseudonymizer.client_hash(key.removeprefix("client:"))
    if key.startswith("key:"):
        return "key:" + run.pseudonymizer.key_fingerprint(key.removeprefix("key:"))
    return key


def test_every_good_event_is_enriched_exactly_once(run: Run) -> None:
    events = run.values("enriched")
    assert len(events) == run.truth.events
    assert len({e["event_id"] for e in events}) == run.truth.events
    assert Counter(e["gateway"] for e in events) == run.truth.events_by_source
    # Keyed by rate key, so one key's events stay in order on one partition.
    assert all(
        r.key == json.loads(r.value or b"")["rate_key"].encode() for r in run.outputs["enriched"]
    )


def test_per_key_window_counts_equal_ground_truth(run: Run) -> None:
    windows = run.values("usage")
    got = {(w["rate_key"], w["window_start"]): w["count"] for w in windows}
    assert len(got) == len(windows), "a (key, window) was emitted twice"
    want = {(_truth_key(run, k), start): n for (k, start), n in run.truth.per_key_window.items()}
    assert got == want


def test_dead_letters_have_reason_and_source_coordinates(run: Run) -> None:
    dead = run.values("dlq")
    assert len(dead) == run.truth.dead_letters
    assert Counter(d["reason"] for d in dead) == run.truth.dead_letter_reasons
    for d in dead:
        assert d["source_topic"] == run.topics["raw"]
        assert d["source_partition"] in (0, 1)
        assert 0 <= d["source_offset"] < run.raw_count
    mixed = [d for d in dead if d["element_index"] is not None]
    assert [d["element_index"] for d in mixed] == [1]


def test_nothing_is_lost(run: Run) -> None:
    # Each raw record is accounted for: its entries enriched, or itself (or an element of it)
    # dead-lettered, except the retried batch, dropped whole as duplicates (and reconciled
    # below). Records are identified by their source partition and offset.
    enriched_sources = {(e["source_partition"], e["source_offset"]) for e in run.values("enriched")}
    dead_sources = {(d["source_partition"], d["source_offset"]) for d in run.values("dlq")}
    assert len(enriched_sources | dead_sources) == run.raw_count - 1
    last = run.raw_count - 1  # the retry, produced last, to partition last % 2
    assert (last % 2, last // 2) not in enriched_sources | dead_sources


def test_reconciliation_accounts_for_every_entry_and_the_retry(run: Run) -> None:
    reports = run.values("reconciliation")
    totals: Counter[str] = Counter()
    for r in reports:
        totals.update(
            {
                k: v
                for k, v in r.items()
                if isinstance(v, int)
                and k.endswith(("_in", "_out", "lettered", "deduplicated", "late", "enriched"))
            }
        )
    assert totals["records_in"] == run.raw_count
    assert totals["deduplicated"] == run.retried_entries
    assert totals["enriched_out"] == run.truth.events
    assert totals["dead_lettered"] == run.truth.dead_letters
    assert totals["entries_in"] == (
        totals["enriched_out"] + totals["dead_lettered"] + totals["deduplicated"]
    )
    assert totals["late"] == 0
    for partition in (0, 1):
        in_topic = sum(1 for e in run.values("enriched") if e["source_partition"] == partition)
        reported = sum(r["enriched_out"] for r in reports if r["source_partition"] == partition)
        assert reported == in_topic


def test_compromised_key_raises_alert_and_steady_consumers_do_not(run: Run) -> None:
    alerts = run.values("alerts")
    victim = run.truth.attacked_key
    attack = [a for a in alerts if a["rate_key"] == victim]
    assert {a["rule"] for a in attack} == {"rate_spike", "new_country"}
    assert {a["window_start"] for a in attack} <= set(run.truth.attack_windows)
    assert min(a["window_start"] for a in attack) == run.truth.attack_windows[0]
    first = [a for a in attack if a["window_start"] == run.truth.attack_windows[0]]
    for a in first:
        assert a["consumer"] == victim
        assert a["key_fingerprint"] is not None
        assert a["observed_count"] > 10 * a["baseline"]
        assert a["window_end"] - a["window_start"] == 10_000
        assert a["severity"] in ("high", "critical")
    new_country = next(a for a in first if a["rule"] == "new_country")
    assert new_country["new_countries"] == ["BR"]
    # Alert keys are the rate key, so every alert for one key lands on one partition in order.
    assert all(
        r.key == json.loads(r.value or b"")["rate_key"].encode() for r in run.outputs["alerts"]
    )
    others = {a["rate_key"] for a in alerts if a["rate_key"] != victim}
    # The only other alerts are for the planted 401 burst (wrong keys from two clients), which is
    # counted per client.
    assert others and all(k.startswith("client:") for k in others)
    burst = [a for a in alerts if a["rate_key"] in others]
    assert {a["rule"] for a in burst} == {"auth_failures"}
    assert {a["window_start"] for a in burst} == {START_MS + 4 * 10_000}
    assert all(a["consumer"] is None and a["auth_failures"] >= 20 for a in burst)


def test_alert_ids_are_deterministic_and_unique(run: Run) -> None:
    alerts = run.values("alerts")
    ids = [a["alert_id"] for a in alerts]
    assert len(ids) == len(set(ids))


def test_no_secret_or_client_ip_in_any_topic_or_log(run: Run) -> None:
    blobs = [run.job_output, run.log_text]
    for records in run.outputs.values():
        blobs.extend((r.value or b"").decode("utf-8", "replace") for r in records)
        blobs.extend((r.key or b"").decode("utf-8", "replace") for r in records)
    text = "\n".join(blobs)
    assert run.hash_key not in text
    leaked = sorted(s for s in run.truth.secrets if s in text)
    assert leaked == []
    leaked_ips = sorted(ip for ip in run.truth.client_ips if ip in text)
    assert leaked_ips == []
