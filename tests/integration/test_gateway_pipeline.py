"""The real job on the real broker: produce a known mix, run --bounded, read back committed output.

One job run (module-scoped) feeds every assertion, because a PyFlink job costs a JVM start.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cluster_helpers import wait_until
from confluent_kafka import Producer

from metering import reconciliation
from metering.geo import default_geoip_db
from metering.kpi import KpiRequest, Query
from metering.records import client_rate_key
from metering.redact import Pseudonymizer
from responder.actions import incident_id
from testkit.gateway_admin import FakeApisixAdmin, wait_for
from testkit.receivers import SmtpReceiver
from testkit.responder_harness import (
    ADMIN_KEY,
    DEADLINE_S,
    Responders,
    actions_topic,
    assert_no_secrets,
    http_receivers,
    read_actions,
    smtp_args,
    terminal,
)
from testkit.traffic import (
    SCENARIO_JOB_FLAGS,
    GroundTruth,
    Scenario,
    default_scenario,
    generate,
    ips_for_countries,
    max_event_age_covering,
    scenario_alert_problems,
)
from tools.readback import Record, drain

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a window boundary
WINDOWS = 12
JOB_TIMEOUT_S = 600


@dataclass
class Run:
    scenario: Scenario
    """What was generated: its consumers and their real API keys."""
    truth: GroundTruth
    topics: dict[str, str]
    hash_key: str
    pseudonymizer: Pseudonymizer
    outputs: dict[str, list[Record]]
    job_output: str
    log_text: str
    raw_count: int
    retried_entries: int
    records: list[bytes]
    """What was produced, in order: record i went to partition i % 2, offset i // 2."""

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
    roles = (
        "raw",
        "enriched",
        "alerts",
        "dlq",
        "usage",
        "reconciliation",
        "period_usage",
        "quota_signals",
        "balance_signals",
    )
    topics = {role: f"it-{role}-{suffix}" for role in roles}
    ensure_topics(kafka_bootstrap, pipeline_topics(**topics))
    geo_db = default_geoip_db()
    country_ips = ips_for_countries(geo_db, ["DE", "US", "JP", "GB", "BR"], 4, seed=11)
    scenario = default_scenario(country_ips, START_MS, windows=WINDOWS)
    generated = generate(scenario, seed=5)
    # A gateway retry: the first batch is delivered twice (same entries, same request ids).
    retried = max(
        (r for r in generated.records if r.startswith(b"[") and b"x-request-id" in r),
        key=lambda r: len(json.loads(r)),
    )
    records = [*generated.records, retried]
    _produce(kafka_bootstrap, topics["raw"], records)

    hash_key = secrets.token_hex(32)
    log_dir = tmp_path_factory.mktemp("flink-logs")
    catalog = log_dir.parent / "catalog.toml"
    catalog.write_text(billing_catalog(scenario))
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
        "--period-usage-topic",
        topics["period_usage"],
        "--quota-signals-topic",
        topics["quota_signals"],
        "--balance-signals-topic",
        topics["balance_signals"],
        "--billing-catalog",
        str(catalog),
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
        "--max-event-age-seconds",
        str(max_event_age_covering(START_MS)),
        *SCENARIO_JOB_FLAGS,
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
        scenario=scenario,
        truth=generated.truth,
        topics=topics,
        hash_key=hash_key,
        pseudonymizer=Pseudonymizer(hash_key.encode()),
        outputs=outputs,
        job_output=job_output,
        log_text=log_text,
        raw_count=len(records),
        retried_entries=len(json.loads(retried)),
        records=records,
    )
    delete_topics(kafka_bootstrap, list(topics.values()))


FREE_UNITS = 100
UNIT_PRICE = Decimal("0.0015")


def billing_catalog(scenario: Scenario) -> str:
    """Every consumer of the scenario on one plan: FREE_UNITS free, then UNIT_PRICE a unit."""
    subs = "".join(
        f'[[subscriptions]]\nsubject = "{c.name}"\nplan_id = "it"\n'
        f"effective_from = {START_MS - 86_400_000}\n"
        for c in scenario.consumers
    )
    return (
        '[[plans]]\nid = "it"\nname = "IT"\n'
        f'tiers = [{{ up_to = {FREE_UNITS}, unit_price = "0" }}, '
        f'{{ unit_price = "{UNIT_PRICE}" }}]\n' + subs
    )


def _truth_key(run: Run, key: str) -> str:
    if key.startswith("client:"):
        return client_rate_key(run.pseudonymizer, key.removeprefix("client:"))
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
    want: Counter[tuple[str, int]] = Counter()
    for (k, start), n in run.truth.per_key_window.items():
        want[(_truth_key(run, k), start)] += n  # addresses of one client network count as one
    assert got == dict(want)


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
    totals = reconciliation.totals(reports)
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
        reported = reconciliation.totals_by_partition(reports)[partition]["enriched_out"]
        assert reported == in_topic


def test_compromised_key_raises_alert_and_steady_consumers_do_not(run: Run) -> None:
    alerts = run.values("alerts")
    assert scenario_alert_problems(alerts, run.truth, START_MS + 4 * 10_000) == []
    opened = next(a for a in alerts if a["rate_key"] == run.truth.attacked_key)
    assert opened["consumer"] == run.truth.attacked_key
    assert opened["key_fingerprint"] is not None
    assert opened["severity"] == "critical"
    assert opened["observed_count"] > 10 * opened["expected_count"]
    assert opened["window_end"] - opened["window_start"] == 10_000
    # Alert keys are the rate key, so every alert for one key lands on one partition in order.
    assert all(
        r.key == json.loads(r.value or b"")["rate_key"].encode() for r in run.outputs["alerts"]
    )
    burst = [a for a in alerts if a["rate_key"].startswith("client:") and a["status"] == "open"]
    assert all(a["consumer"] is None and a["auth_failures"] >= 20 for a in burst)


NEVER_BLOCK = "initech-billing"
"""A steady APISIX consumer the responder must never block."""
VICTIM_CONTACT = "security@acme.example"
RESPONDER_POLICY = """
dry_run = false
block_ttl_seconds = 3
never_block = ["{never_block}"]

[contacts]
{victim} = "{contact}"
{never_block} = "ops@initech.example"

[[respond]]
actions = ["pagerduty", "slack", "webhook"]

[[respond]]
statuses = ["open"]
actions = ["email"]

[[respond]]
min_severity = "critical"
actions = ["block"]
"""


def test_the_responder_acts_on_the_jobs_alerts(
    run: Run, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The responder, not in dry run, reads the alerts the job committed on the same broker and
    acts on them against the fake APISIX holding the scenario's consumers and real keys."""
    bootstrap = kafka_bootstrap
    alerts = run.values("alerts")
    victim = run.scenario.consumer(run.truth.attacked_key or "")
    steady = [c.name for c in run.scenario.consumers if c.name != victim.name]
    assert NEVER_BLOCK in steady
    assert not any(a["consumer"] == NEVER_BLOCK for a in alerts)
    # The job fingerprinted the victim's key as the responder will, under the run's hash key.
    victim_fp = run.pseudonymizer.key_fingerprint(victim.api_key)
    victim_alerts = [a for a in alerts if a["consumer"] == victim.name]
    assert victim_alerts and {a["key_fingerprint"] for a in victim_alerts} == {victim_fp}
    # Incidents the job opened: one per rate key and incident start with an open record.
    opens = Counter(
        incident_id(a["rate_key"], a["incident_start"]) for a in alerts if a["status"] == "open"
    )
    incidents = set(opens)
    assert set(opens.values()) == {1}
    victim_incident = incident_id(victim.name, victim_alerts[0]["incident_start"])
    victim_opens = sum(1 for a in victim_alerts if a["status"] == "open")
    closes = sum(1 for a in alerts if a["status"] == "closed")
    api_keys = [c.api_key for c in run.scenario.consumers]
    policy = RESPONDER_POLICY.format(
        victim=victim.name, contact=VICTIM_CONTACT, never_block=NEVER_BLOCK
    )

    with (
        actions_topic(bootstrap) as actions,
        http_receivers() as receivers,
        SmtpReceiver() as smtp,
        FakeApisixAdmin(ADMIN_KEY) as apisix,
    ):
        for c in run.scenario.consumers:
            apisix.add_consumer(c.name)
            apisix.add_credential(c.name, f"{c.name}-primary", c.api_key)
        never_block_before = json.dumps(apisix.consumers[NEVER_BLOCK], sort_keys=True)
        r = Responders(
            tmp_path,
            bootstrap,
            {"alerts": run.topics["alerts"], "actions": actions},
            receivers,
            policy,
            ["--gateway", "apisix", "--apisix-admin-url", apisix.url, *smtp_args(smtp)],
            {"RESPONDER_APISIX_ADMIN_KEY": ADMIN_KEY},
            hash_key=run.hash_key,
        )
        try:
            responder = r.start()
            wait_for(
                lambda: apisix.restriction(victim.name) is not None, DEADLINE_S, "victim blocked"
            )
            blocked_at = time.monotonic()
            wait_for(
                lambda: apisix.restriction(victim.name) is None, DEADLINE_S, "victim unblocked"
            )
            assert time.monotonic() - blocked_at >= 2.0  # the 3 s TTL, less the polling slack
            pd = receivers.pagerduty
            wait_for(lambda: len(pd.events) == len(alerts), DEADLINE_S, "a PagerDuty event each")
            wait_for(lambda: len(receivers.webhooks) == len(alerts), DEADLINE_S, "webhooks")
            wait_for(lambda: len(smtp.messages) == victim_opens, DEADLINE_S, "the victim's mail")

            def unblock_recorded() -> bool:
                records = terminal(read_actions(bootstrap, actions))
                return any(x.action == "unblock" for x in records)

            wait_for(unblock_recorded, DEADLINE_S, "the unblock's committed record")
            r.stop(responder)
        finally:
            r.kill_all()

        # PagerDuty: exactly one page per incident the job opened, each resolved at its close.
        assert sorted(pd.pages) == sorted(incidents)
        assert len(pd.pages) == len(incidents)
        assert Counter(e["event_action"] for e in pd.events) == Counter(
            {"trigger": len(alerts) - closes, "resolve": closes}
        )
        assert receivers.invalid == []
        # Webhooks: one per alert record, every signature verifies.
        assert [w.verified for w in receivers.webhooks] == [True] * len(alerts)
        assert len(set(receivers.webhook_ids())) == len(alerts)
        # Email: the compromised consumer's contact, once per open.
        assert [rcpts for rcpts, _ in smtp.messages] == [[VICTIM_CONTACT]] * victim_opens
        # The gateway: the victim's consumer rewritten twice (block, unblock), nothing else.
        assert apisix.writes() == [("PUT", "/apisix/admin/consumers")] * 2
        assert apisix.restriction(victim.name) is None
        assert apisix.plain_keys(victim.name) == [victim.api_key]
        assert json.dumps(apisix.consumers[NEVER_BLOCK], sort_keys=True) == never_block_before
        assert apisix.violations == []
        records = read_actions(bootstrap, actions)

    done = Counter((x.action, x.consumer, x.outcome) for x in terminal(records))
    n = len(victim_alerts)
    others = [a for a in alerts if a["consumer"] != victim.name]
    assert others and all(a["consumer"] is None for a in others)  # the 401 burst's clients
    # Blocks of the clients' incidents (critical ones): skipped, no key and no consumer to block.
    client_blocks = len(
        {
            incident_id(a["rate_key"], a["incident_start"])
            for a in others
            if a["severity"] == "critical" and a["status"] in ("open", "update")
        }
    )
    want = Counter(
        {
            ("pagerduty", victim.name, "done"): n,
            ("slack", victim.name, "done"): n,
            ("webhook", victim.name, "done"): n,
            ("email", victim.name, "done"): victim_opens,
            ("block", victim.name, "done"): 1,
            ("unblock", victim.name, "done"): 1,
            ("pagerduty", None, "done"): len(others),
            ("slack", None, "done"): len(others),
            ("webhook", None, "done"): len(others),
            ("email", None, "skipped_by_policy"): sum(1 for a in others if a["status"] == "open"),
            ("block", None, "skipped_by_policy"): client_blocks,
        }
    )
    assert done == +want  # (+: without zero counts)
    assert not any(x.consumer == NEVER_BLOCK or x.gateway_consumer == NEVER_BLOCK for x in records)
    (block,) = [x for x in terminal(records) if x.action == "block" and x.outcome == "done"]
    assert (block.incident_id, block.gateway_consumer, block.credential_id) == (
        victim_incident,
        victim.name,
        f"{victim.name}-primary",
    )
    assert block.target == f"apisix:key:{victim_fp}"
    assert_no_secrets(r.output() + "".join(map(str, records)), run.hash_key, *api_keys)


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


# --------------------------------------------------------------------------------------------
# Pinot: the enriched and alerts topics ingested, and the KPIs answered from them
# --------------------------------------------------------------------------------------------

PINOT_TIMEOUT_S = 180
KPI_RANGE = (START_MS, START_MS + 3_600_000)
# PERCENTILETDIGEST is approximate: an answer passes if it lies between the exact nearest-rank
# percentiles one point either side, widened by one rank (small groups have few ranks).
PERCENTILE_SLACK_POINTS = 1


@dataclass
class PinotRun:
    kpis: Any
    expected: list[dict[str, Any]]
    """The enriched events the generated records must produce, from the pure parser."""
    alerts_rows: int
    ingest_s: float


def _expected_events(run: Run) -> list[dict[str, Any]]:
    """The generated records through the job's own pure parser, minus the retried batch (the
    last record, dropped whole as a duplicate)."""
    from metering.geo import GeoLookup
    from metering.records import Limits, RecordProcessor, SourceRef

    geo = GeoLookup(default_geoip_db())
    try:
        limits = Limits(max_event_age_s=max_event_age_covering(START_MS))
        processor = RecordProcessor(run.pseudonymizer, geo.lookup, limits)
        events = []
        for i, value in enumerate(run.records[:-1]):
            src = SourceRef(run.topics["raw"], i % 2, i // 2)
            events.extend(processor.process(value, src).events)
    finally:
        geo.close()
    return events


def _count(pinot_sql: Any, sql: str) -> int:
    _, rows = pinot_sql(sql)
    return int(rows[0][0]) if rows else 0


@pytest.fixture(scope="module")
def pinot_run(run: Run, pinot: Any, kafka_bootstrap: str) -> Iterator[PinotRun]:
    from jobs.kpi import PinotKpis
    from tools.pinot_tables import (
        PinotController,
        apply_definitions,
        load_definitions,
        placeholder_values,
    )

    definitions = load_definitions(
        placeholder_values(
            bootstrap_servers=kafka_bootstrap,
            enriched_topic=run.topics["enriched"],
            alerts_topic=run.topics["alerts"],
            period_usage_topic=run.topics["period_usage"],
            dlq_topic=run.topics["dlq"],
            reconciliation_topic=run.topics["reconciliation"],
        ),
        ("api_events", "alerts", "period_usage", "dead_letters", "reconciliation"),
    )
    controller = PinotController(pinot.controller)
    controller.wait_healthy(60)
    started = time.monotonic()
    apply_definitions(controller, definitions, recreate=True)
    kpis = PinotKpis(pinot.broker)
    expected = _expected_events(run)
    alerts = len(run.outputs["alerts"])

    def sql(text: str) -> tuple[list[str], list[list[Any]]]:
        return kpis.run(Query(text))

    periods = len(_latest_period_usage(run))
    want = (len(expected), alerts, periods)
    counts = (-1, -1, -1)

    def ingested() -> bool:
        nonlocal counts
        try:
            counts = (
                _count(sql, "SELECT COUNT(*) FROM api_events"),
                _count(sql, "SELECT COUNT(*) FROM alerts"),
                # An upsert table: the latest row per (subject, period) only.
                _count(sql, "SELECT COUNT(*) FROM period_usage"),
            )
        except Exception:  # tables still being created: the broker has no route for them yet
            counts = (-1, -1, -1)
        return counts == want

    wait_until(
        "Pinot to ingest every enriched event and alert",
        ingested,
        PINOT_TIMEOUT_S - (time.monotonic() - started),
        interval_s=0.5,
        detail=lambda: f"rows (events, alerts, period usage) {counts} of {want}",
    )
    yield PinotRun(kpis, expected, alerts, time.monotonic() - started)
    kpis.close()


def _null(value: Any) -> Any:
    """Pinot answers a null dimension with its default null value unless the query enables
    null handling; the KPIs don't, so group keys of strings read "null"."""
    return "null" if value is None else value


def _nearest_rank(ordered: list[float], p: float) -> float:
    rank = max(1, min(len(ordered), -(-len(ordered) * p // 100)))
    return ordered[int(rank) - 1]


def test_pinot_ingests_every_enriched_event_and_alert(run: Run, pinot_run: PinotRun) -> None:
    assert len(pinot_run.expected) == run.truth.events
    assert {e["event_id"] for e in pinot_run.expected} == {
        e["event_id"] for e in run.values("enriched")
    }
    _, rows = pinot_run.kpis.run(Query("SELECT alert_id FROM alerts LIMIT 100000"))
    assert sorted(r[0] for r in rows) == sorted(a["alert_id"] for a in run.values("alerts"))


def _kpi(pinot_run: PinotRun, name: str, **kw: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = pinot_run.kpis.kpi(name, KpiRequest(*KPI_RANGE, **kw))
    return rows


def test_kpi_calls_per_consumer_over_time(pinot_run: PinotRun) -> None:
    want: Counter[tuple[str, int]] = Counter()
    units: Counter[tuple[str, int]] = Counter()
    for e in pinot_run.expected:
        key = (_null(e["consumer"]), e["event_time"] // 60_000 * 60_000)
        want[key] += 1
        units[key] += e["units"]
    got = _kpi(pinot_run, "calls", bucket="minute")
    assert {(r["consumer"], r["bucket_start"]): r["calls"] for r in got} == dict(want)
    assert {(r["consumer"], r["bucket_start"]): r["units"] for r in got} == dict(units)
    # One consumer, by parameter.
    consumer = next(c for c, _ in want if c != "null")
    mine = _kpi(pinot_run, "calls", bucket="minute", consumer=consumer)
    assert {r["consumer"] for r in mine} == {consumer}
    assert sum(r["calls"] for r in mine) == sum(n for (c, _), n in want.items() if c == consumer)


def test_kpi_latency_percentiles_per_route(pinot_run: PinotRun) -> None:
    by_route: dict[str, list[float]] = {}
    for e in pinot_run.expected:
        if e["latency_ms"] is not None:
            by_route.setdefault(_null(e["route"]), []).append(e["latency_ms"])
    got = {r["route"]: r for r in _kpi(pinot_run, "latency")}
    assert set(got) == set(by_route)
    for route, values in by_route.items():
        ordered = sorted(values)
        assert got[route]["calls"] == len(values)
        for p in (50, 95, 99):
            lo = _nearest_rank(ordered, max(0, p - PERCENTILE_SLACK_POINTS) - 100 / len(ordered))
            hi = _nearest_rank(ordered, min(100, p + PERCENTILE_SLACK_POINTS + 100 / len(ordered)))
            assert lo <= got[route][f"p{p}_ms"] <= hi, (route, p, lo, got[route], hi)


def test_kpi_unique_callers_per_route(pinot_run: PinotRun) -> None:
    callers: dict[str, set[str]] = {}
    calls: Counter[str] = Counter()
    for e in pinot_run.expected:
        callers.setdefault(_null(e["route"]), set()).add(_null(e["client_hash"]))
        calls[_null(e["route"])] += 1
    got = _kpi(pinot_run, "unique-callers")
    assert {r["route"]: r["unique_callers"] for r in got} == {k: len(v) for k, v in callers.items()}
    assert {r["route"]: r["calls"] for r in got} == dict(calls)


def test_kpi_geographic_distribution(pinot_run: PinotRun) -> None:
    want = Counter(_null(e["country"]) for e in pinot_run.expected)
    got = _kpi(pinot_run, "geo")
    assert {r["country"]: r["calls"] for r in got} == dict(want)
    assert [r["calls"] for r in got] == sorted((r["calls"] for r in got), reverse=True)


def test_kpi_errors_by_route_and_status_and_error_rate(pinot_run: PinotRun) -> None:
    errors = Counter(
        (_null(e["route"]), e["status"]) for e in pinot_run.expected if (e["status"] or 0) >= 400
    )
    assert errors, "the scenario has error responses"
    got = _kpi(pinot_run, "errors")
    assert {(r["route"], r["status"]): r["errors"] for r in got} == dict(errors)
    calls = Counter(_null(e["route"]) for e in pinot_run.expected)
    rates = {r["route"]: r for r in _kpi(pinot_run, "error-rate")}
    assert set(rates) == set(calls)
    for route, n in calls.items():
        e4 = sum(v for (r, _), v in errors.items() if r == route)
        e5 = sum(v for (r, s), v in errors.items() if r == route and s >= 500)
        assert (rates[route]["calls"], rates[route]["errors"]) == (n, e4)
        assert rates[route]["server_errors"] == e5
        assert rates[route]["error_rate"] == round(e4 / n, 6)


def test_kpi_month_to_date_usage_per_consumer(pinot_run: PinotRun) -> None:
    calls = Counter(_null(e["consumer"]) for e in pinot_run.expected)
    units: Counter[str] = Counter()
    for e in pinot_run.expected:
        units[_null(e["consumer"])] += e["units"]
    got = _kpi(pinot_run, "mtd-usage")
    assert {r["consumer"]: (r["calls"], r["units"]) for r in got} == {
        c: (n, units[c]) for c, n in calls.items()
    }


def _latest_period_usage(run: Run) -> dict[str, dict[str, Any]]:
    """The period-usage topic as an upsert reader sees it: the latest record per key."""
    latest: dict[str, dict[str, Any]] = {}
    for r in run.outputs["period_usage"]:
        latest[(r.key or b"").decode()] = json.loads(r.value or b"")
    return latest


def test_period_usage_reconciles_with_the_enriched_topic(run: Run) -> None:
    """What a customer pays for equals what the enriched topic holds: per subject, its calls in
    the period are its enriched events (identified keys; anonymous clients are never billed),
    and the amount is their price by hand."""
    calls: Counter[str] = Counter(
        e["rate_key"] for e in run.values("enriched") if not e["rate_key"].startswith("client:")
    )
    latest = _latest_period_usage(run)
    assert sorted(latest) == sorted(f"{s}@2026-01" for s in calls)
    subscribed = {c.name for c in run.scenario.consumers}
    for subject, n in calls.items():
        got = latest[f"{subject}@2026-01"]
        if subject in subscribed:
            assert (got["calls"], got["units"], got["unpriced_calls"]) == (n, n, 0), subject
            assert Decimal(got["amount"]) == max(0, n - FREE_UNITS) * UNIT_PRICE, subject
        else:  # an API key without a consumer, and no subscription: counted, not priced
            assert (got["calls"], got["unpriced_calls"]) == (0, n), subject
    assert any(Decimal(v["amount"]) > 0 for v in latest.values())
    # No plan has a quota or a balance here: no signal.
    assert run.outputs["quota_signals"] == [] and run.outputs["balance_signals"] == []


def test_the_billing_estimate_answers_from_pinot(run: Run, pinot_run: PinotRun) -> None:
    latest = _latest_period_usage(run)
    rows = pinot_run.kpis.kpi("billing-estimate", KpiRequest(0, START_MS + 86_400_000))
    # Pinot's BIG_DECIMAL drops trailing zeros (0.3840 is 0.384): equal as numbers, exactly.
    assert {r["subject"]: (r["calls"], r["units"], Decimal(r["amount"])) for r in rows} == {
        v["subject"]: (v["calls"], v["units"], Decimal(v["amount"])) for v in latest.values()
    }
    (one,) = pinot_run.kpis.kpi(
        "billing-estimate", KpiRequest(0, START_MS + 1000, consumer=rows[0]["subject"])
    )
    assert one == rows[0]


# --------------------------------------------------------------------------------------------
# The dashboard in a real browser: Streamlit over the Pinot tables above, read by Chromium
# --------------------------------------------------------------------------------------------

VICTIM = "acme-analytics"
JAN_1 = "from=2026-01-01&to=2026-01-01"
SCREENSHOTS = REPO / "build" / "screenshots"
# The consumer page's last panel: once it shows, every panel above it has rendered.
LAST = ("Responder actions on your keys",)


@dataclass
class Page:
    url: str
    secret: str
    driver: Any

    def token(self, consumer: str, ttl_s: int = 3600, secret: str | None = None) -> str:
        from dashboard import tokens

        key = (secret or self.secret).encode()
        return tokens.create_token(consumer, key, int(time.time()), ttl_s=ttl_s)

    def open(self, query: str, *phrases: str) -> str:
        from testkit.browser import open_until

        return open_until(self.driver, f"{self.url}/?{query}", phrases)

    def rows(self) -> list[tuple[str, ...]]:
        from testkit.browser import table_rows

        return table_rows(self.driver)

    def screenshot(self, name: str) -> None:
        from testkit.browser import screenshot

        assert screenshot(self.driver, SCREENSHOTS / f"{name}.png").stat().st_size > 10_000


@pytest.fixture(scope="module")
def page(
    pinot_run: PinotRun, pinot: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Page]:
    from testkit import stack
    from testkit.browser import chromium

    secret = secrets.token_hex(32)
    port = int(os.environ.get("DASHBOARD_TEST_PORT", "") or 18501)
    log = tmp_path_factory.mktemp("dashboard") / "streamlit.log"
    with stack.dashboard(pinot.broker, port, secret, log_path=log) as url, chromium() as driver:
        yield Page(url, secret, driver)


def _metric(text: str, label: str) -> str:
    from testkit.browser import metric

    return metric(text, label)


def _usage(events: list[dict[str, Any]]) -> dict[str, str]:
    """The summary metrics as the page prints them."""
    calls = len(events)
    errors = sum(1 for e in events if (e["status"] or 0) >= 400)
    return {
        "Calls": f"{calls:,}",
        "Billable units": f"{sum(e['units'] for e in events):,.0f}",
        "Errors": f"{errors:,}",
        "Error rate": f"{errors / calls:.2%}" if calls else "n/a",
    }


def test_the_consumer_page_shows_exactly_their_usage_and_bill(
    run: Run, pinot_run: PinotRun, page: Page
) -> None:
    from metering.billing.money import round_money

    mine = [e for e in pinot_run.expected if e["consumer"] == VICTIM]
    assert mine
    period = _latest_period_usage(run)[f"{VICTIM}@2026-01"]
    estimate = f"{round_money(Decimal(period['amount']), period['currency'])} {period['currency']}"
    text = page.open(
        f"token={page.token(VICTIM)}&{JAN_1}", f"API usage: {VICTIM}", "Estimate so far", *LAST
    )
    assert {label: _metric(text, label) for label in _usage(mine)} == _usage(mine)
    assert _metric(text, "Units in 2026-01") == f"{period['units']:,}"
    assert _metric(text, "Estimate so far") == estimate
    # The per-route table: calls and errors per route.
    errors = Counter(_null(e["route"]) for e in mine if (e["status"] or 0) >= 400)
    want = {
        (r, str(n), str(errors[r])) for r, n in Counter(_null(e["route"]) for e in mine).items()
    }
    assert {row[:3] for row in page.rows() if len(row) == 5} >= want
    page.screenshot("consumer")
    # The alerts on their keys were detected while the job ran: in the last 24 hours.
    alerts = [a for a in run.values("alerts") if a["consumer"] == VICTIM]
    assert alerts
    text = page.open(f"token={page.token(VICTIM)}", "Alert records", *LAST)
    assert (_metric(text, "Alert records"), _metric(text, "Calls")) == (f"{len(alerts):,}", "0")


def test_a_consumer_token_never_shows_another_consumer(
    run: Run, pinot_run: PinotRun, page: Page
) -> None:
    from dashboard import tokens

    others = {c.name for c in run.scenario.consumers} - {VICTIM}
    mine = [e for e in pinot_run.expected if e["consumer"] == VICTIM]
    token = page.token(VICTIM)
    # Another consumer named in the link, as a parameter or a view, changes nothing.
    # The page's feeds are static tables: their every cell is in the text searched.
    for extra in ("consumer=hooli-search", "view=ops", "view=product"):
        text = page.open(f"token={token}&{JAN_1}&{extra}", f"API usage: {VICTIM}", *LAST)
        assert _metric(text, "Calls") == f"{len(mine):,}"
        assert not [o for o in others if o in text]
    # The last day holds the run's alerts: the victim's are shown, nobody else's.
    text = page.open(f"token={token}&consumer=hooli-search", "Alert records", *LAST)
    theirs = {a["key_fingerprint"] for a in run.values("alerts") if a["consumer"] != VICTIM}
    assert not [o for o in others if o in text] and not [f for f in theirs if f and f in text]
    victim_fps = {a["key_fingerprint"] for a in run.values("alerts") if a["consumer"] == VICTIM}
    assert all(fp in text for fp in victim_fps)
    # A token re-signed for another consumer with a guessed secret, a payload swapped under a
    # valid signature, and an expired token are refused, and show nothing.
    refused = "This portal link is invalid or has expired."
    forged = page.token("hooli-search", secret=secrets.token_hex(32))
    version, _, signature = token.split(".")
    swapped = ".".join((version, page.token("hooli-search").split(".")[1], signature))
    expired = tokens.create_token(VICTIM, page.secret.encode(), int(time.time()) - 7200, 60)
    for bad in (forged, swapped, expired, token[:-2]):
        text = page.open(f"token={bad}&{JAN_1}", refused)
        assert "Calls" not in text and "hooli-search" not in text


def test_a_missing_table_shows_its_message(page: Page) -> None:
    # The responder's `actions` table was never created here.
    text = page.open(
        f"token={page.token(VICTIM)}&{JAN_1}",
        "Responder actions on your keys: none yet.",
    )
    assert "Traceback" not in text and "Exception" not in text


def test_the_ops_and_product_pages_show_the_exact_totals(
    run: Run, pinot_run: PinotRun, page: Page
) -> None:
    text = page.open(f"view=ops&{JAN_1}", "API usage: ops", "Calls", "Actions taken")
    want = _usage(pinot_run.expected)
    assert {label: _metric(text, label) for label in want} == want
    page.screenshot("ops")
    # Alerts, dead letters and the ledger are stamped with the time the job ran: the last day.
    totals = reconciliation.totals(run.values("reconciliation"))
    balance = (
        f"Reconciliation: every interval balances. entries in {totals['entries_in']:,} = "
        f"enriched {totals['enriched_out']:,} + dead-lettered {totals['dead_lettered']:,} + "
        f"deduplicated {totals['deduplicated']:,}."
    )
    # The page refreshes on its own until Pinot has ingested the ledger whole.
    text = page.open("view=ops", "API usage: ops", "Alert records", balance)
    assert _metric(text, "Alert records") == f"{len(run.outputs['alerts']):,}"
    # Pinot ingested the run's events minutes ago at most: all inside the freshness span.
    assert _metric(text, "Events ingested (5 min)") == f"{len(pinot_run.expected):,}"
    assert _metric(text, "Records in") == f"{run.raw_count:,}"
    assert _metric(text, "Unbalanced intervals") == "0"
    reasons = Counter(d["reason"] for d in run.values("dlq"))
    assert _metric(text, "Dead letters") == f"{sum(reasons.values()):,}"
    assert {r[0]: r[1] for r in page.rows() if r[0] in reasons} == {
        r: str(n) for r, n in reasons.items()
    }
    page.screenshot("ops-health")
    page.open(f"view=product&{JAN_1}", "API usage: product", "Country distribution")
    consumers = Counter(_null(e["consumer"]) for e in pinot_run.expected)
    shown = {row[0]: row[1] for row in page.rows()}
    assert {c: shown.get(c) for c in consumers} == {c: str(n) for c, n in consumers.items()}
    page.screenshot("product")
