"""Hostile input at volume, on the real session cluster.

100,000 hostile records (testkit/hostile.py: malformed JSON, wrong types, ~950 KB strings and
batches, invalid UTF-8, deep nesting, unicode edge cases, arrays with one bad element, ...) are
interleaved with a default scenario of good gateway traffic. The job runs bounded on the cluster.
Then, read back with read_committed:
- every good entry is enriched once, and every unusable record or element is dead-lettered once,
  per source record, with the reason the generator expects;
- every dead letter names its source and keeps at most dlq_payload_chars of payload;
- the reconciliation balances: records_in is what was produced, and
  entries_in == enriched_out + dead_lettered + deduplicated;
- no planted credential or client IP appears in any output topic;
- the job never restarted.

The mix also holds the regression probes (testkit.hostile.PROBES): records that once broke the
job. They are held to the same exact expectations as every other record.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
import urllib.error
from collections import Counter, defaultdict
from dataclasses import replace
from typing import Any

import pytest
from cluster_helpers import submit

from jobs.submit import Rest
from metering import reconciliation as recon
from metering.geo import GeoLookup, default_geoip_db
from metering.records import Limits, RecordProcessor
from metering.redact import Pseudonymizer, path_of, redact_user_agent
from testkit.hostile import (
    PROBES,
    Finding,
    HostileMix,
    check_outputs,
    find_planted,
    find_tokens,
    hostile_mix,
    index_of,
    normalized,
    produce,
    self_check,
)
from testkit.traffic import (
    Generated,
    default_scenario,
    generate,
    ips_for_countries,
    max_event_age_covering,
)
from tools.readback import Record, drain
from tools.topics import job_topic_flags

pytestmark = pytest.mark.integration

N_HOSTILE = 100_000
SEED = 20_260_101
START_MS = 1_767_225_600_000
PARTITIONS = 2
JOB_TIMEOUT_S = 900
DLQ_PAYLOAD_CHARS = Limits().dlq_payload_chars


@pytest.fixture(scope="module")
def good_traffic() -> Generated:
    """The default scenario's good traffic (its own bad records left out: the mix has plenty)."""
    country_ips = ips_for_countries(default_geoip_db(), ["DE", "US", "JP", "GB", "BR"], 4, seed=2)
    scenario = default_scenario(country_ips, START_MS, windows=12)
    return generate(replace(scenario, bad_records=False), seed=21)


@pytest.fixture(scope="module")
def mix(good_traffic: Generated) -> HostileMix:
    return hostile_mix(N_HOSTILE, good_traffic.records, SEED, probes=True, start_ms=START_MS)


def _probe_report(findings: list[Finding]) -> str:
    lines = []
    for f in findings:
        lines.append(f"record {f.index} {f.kind}: {f.problem[:240]}")
    known = "\n".join(f"  {name}: {PROBES[name][1]}" for name in PROBES)
    return "regression probes failed:\n" + "\n".join(lines) + "\nprobes:\n" + known


def test_expectations_agree_with_the_job_parser(mix: HostileMix) -> None:
    """Unit-style: the job's parser, run on every record, does what the generator expects."""
    geo = GeoLookup(default_geoip_db())
    try:
        processor = RecordProcessor(
            Pseudonymizer(secrets.token_bytes(32)),
            geo.lookup,
            clock=lambda: mix.processing_ms / 1000,
        )
        findings = self_check(mix, processor, partitions=PARTITIONS)
    finally:
        geo.close()
    probes = set(mix.probe_indexes)
    assert [f for f in findings if f.index not in probes] == []
    every_kind = {e.kind for e in mix.expected}
    assert every_kind >= set(PROBES), "every probe is in the mix"
    probe_findings = [f for f in findings if f.index in probes]
    assert probe_findings == [], _probe_report(probe_findings)


def _submit(cluster: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return submit(cluster, *args, timeout_s=JOB_TIMEOUT_S + 120)


def _restarts(rest: Rest, job_id: str) -> dict[str, Any]:
    """Every trace a restart leaves on a FINISHED job.

    Checked on Flink 2.2.1: a finished job keeps its archived execution graph, so the state
    timestamps, the exception history and each subtask's execution attempt stay readable. The
    numRestarts job metric is a snapshot the JobManager's metric fetcher took while the job ran
    (every 10 s), so it is reported but can miss a restart in the job's last seconds.
    """
    info = rest.job(job_id)
    attempts: list[int] = []
    for vertex in info["vertices"]:
        detail = rest.call("GET", f"/jobs/{job_id}/vertices/{vertex['id']}")
        attempts += [int(s["attempt"]) for s in detail["subtasks"]]
    history = rest.call("GET", f"/jobs/{job_id}/exceptions")["exceptionHistory"]["entries"]
    try:
        metrics = rest.call("GET", f"/jobs/{job_id}/metrics?get=numRestarts") or []
    except urllib.error.HTTPError:
        metrics = []
    restarts_metric = next((int(m["value"]) for m in metrics if m["id"] == "numRestarts"), None)
    return {
        "state": info["state"],
        "restarting_at": info["timestamps"].get("RESTARTING", 0),
        "failing_at": info["timestamps"].get("FAILING", 0),
        "max_attempt": max(attempts),
        "subtasks": len(attempts),
        "exception_history": len(history),
        "numRestarts_metric": restarts_metric,
        "duration_ms": info["duration"],
    }


def _round_trip(
    index: int, kind: str, value: bytes | None, events: list[dict[str, Any]]
) -> list[Finding]:
    """Awkward strings (emoji, RTL marks, NUL, U+2028, U+FFFF, ~950 KB) come out unchanged."""
    parsed = json.loads(value or b"")
    entries = parsed if isinstance(parsed, list) else [parsed]
    out = []
    for event in events:
        entry = entries[int(event["event_id"].rsplit("-", 1)[1])]
        request = entry.get("request")
        if isinstance(request, dict):
            agent = request["headers"].get("user-agent")
            want = (redact_user_agent(agent), path_of(request["uri"]))
        else:
            want = (None, path_of(entry["endpoint"]))
        if (event["user_agent"], event["path"]) != want:
            got = (event["user_agent"], event["path"])
            out.append(Finding(index, kind, f"user agent/path {got!r:.200} != {want!r:.200}"))
    return out


def _element_order(dead_letter: dict[str, Any]) -> int:
    index = dead_letter["element_index"]
    return -1 if index is None else int(index)


def _text(raw: bytes | None) -> str:
    return (raw or b"").decode("utf-8", "replace")


def _values(records: list[Record]) -> list[dict[str, Any]]:
    return [json.loads(r.value or b"null") for r in records]


def test_hostile_input_at_volume(
    flink_cluster: Any,
    kafka_bootstrap: str,
    unique_topics: dict[str, str],
    mix: HostileMix,
    good_traffic: Generated,
) -> None:
    t0 = time.monotonic()
    assert produce(kafka_bootstrap, unique_topics["raw"], mix.records, PARTITIONS) == 0
    t_produced = time.monotonic()

    done = _submit(
        flink_cluster,
        "--bootstrap-servers", kafka_bootstrap,
        *job_topic_flags(unique_topics),
        "--startup-mode", "earliest-offset",
        "--group-id", f"hx-{unique_topics['raw']}",
        "--transactional-id-prefix", f"hx-{unique_topics['raw']}",
        "--parallelism", str(PARTITIONS),
        "--checkpoint-interval-seconds", "3",
        "--dlq-payload-chars", str(DLQ_PAYLOAD_CHARS),
        "--geoip-db", default_geoip_db(),
        # The mix's event times start at START_MS; its future and ancient kinds lie decades out.
        "--max-event-age-seconds", str(max_event_age_covering(START_MS)),
        "--bounded",
        "--wait",
        "--timeout", str(JOB_TIMEOUT_S),
    )  # fmt: skip
    t_job = time.monotonic()
    assert done.returncode == 0, done.stderr[-4000:]
    job_id = done.stdout.strip().splitlines()[0]

    # The job never restarted: no restart, failure or retried subtask on record.
    restarts = _restarts(Rest(flink_cluster.rest), job_id)
    assert restarts["state"] == "FINISHED", restarts
    assert restarts["restarting_at"] == 0, restarts
    assert restarts["failing_at"] == 0, restarts
    assert restarts["max_attempt"] == 0, restarts
    assert restarts["exception_history"] == 0, restarts
    assert restarts["numRestarts_metric"] in (0, None), restarts

    out = {
        role: drain(kafka_bootstrap, unique_topics[role], timeout_s=300)
        for role in ("enriched", "dlq", "reconciliation", "usage", "alerts")
    }
    t_drained = time.monotonic()
    enriched = _values(out["enriched"])
    dead = _values(out["dlq"])
    reconciliation = _values(out["reconciliation"])

    # Per source record: events, dead letters (in element order), payload bounds, leaks.
    events_at: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for e in enriched:
        events_at[index_of(e["source_partition"], e["source_offset"], PARTITIONS)].append(e)
    dead_at: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for d in dead:
        assert d["source_topic"] == unique_topics["raw"], d["source_topic"]
        dead_at[index_of(d["source_partition"], d["source_offset"], PARTITIONS)].append(d)
    n = len(mix.records)
    assert set(events_at) | set(dead_at) <= set(range(n)), "output names an unknown source record"
    assert len({e["event_id"] for e in enriched}) == len(enriched), "duplicate event ids"

    findings: list[Finding] = []
    probes = set(mix.probe_indexes)
    for i, exp in enumerate(mix.expected):
        letters = sorted(dead_at.get(i, []), key=_element_order)
        evs = events_at.get(i, [])
        findings += check_outputs(i, exp, evs, letters, DLQ_PAYLOAD_CHARS, enriched_events=len(evs))
        value = mix.records[i]
        for d in letters:
            if d["element_index"] is None and d["payload_bytes"] != len(value or b""):
                findings.append(Finding(i, exp.kind, f"payload_bytes {d['payload_bytes']}"))
        if evs and exp.kind != "good" and i not in probes:
            findings += _round_trip(i, exp.kind, value, evs)
        if exp.kind == "ipv6_rotation" and len({e["rate_key"] for e in evs}) != 1:
            findings.append(Finding(i, exp.kind, "rotated addresses of one /64: several keys"))
    main = list(range(n))
    assert findings[:20] == [], _probe_report([f for f in findings if f.index in probes])

    # Exact totals, probes included, and the reasons.
    want_events = sum(mix.expected[i].events for i in main)
    want_reasons = Counter(r for i in main for r in mix.expected[i].reasons)
    assert sum(len(events_at.get(i, [])) for i in main) == want_events
    got_reasons = Counter(d["reason"] for i in main for d in dead_at.get(i, []))
    assert got_reasons == want_reasons

    # Reconciliation: everything produced came in, and every entry is accounted for.
    assert {r["source_topic"] for r in reconciliation} == {unique_topics["raw"]}
    totals = recon.totals(reconciliation)
    assert totals["records_in"] == n
    assert totals["entries_in"] == mix.entries
    assert totals["entries_in"] == (
        totals["enriched_out"] + totals["dead_lettered"] + totals["deduplicated"]
    )
    assert totals["enriched_out"] == len(enriched)
    assert totals["dead_lettered"] == len(dead)
    assert totals["deduplicated"] == mix.deduplicated

    # No credential, client IP or hash key in any output topic, the probes' included.
    text = normalized(
        "\n".join(f"{_text(r.key)}\t{_text(r.value)}" for records in out.values() for r in records)
    )
    hostile_leaks = find_planted(text, mix.secrets, mix.client_ips)
    assert sorted(hostile_leaks)[:5] == []
    truth = good_traffic.truth
    assert sorted(find_tokens(text, truth.secrets | truth.client_ips)) == []
    assert flink_cluster.hash_key not in text
    t_checked = time.monotonic()

    seconds = restarts["duration_ms"] / 1000
    stamps = [e["processing_time"] for e in enriched] + [d["dead_lettered_at"] for d in dead]
    busy = (max(stamps) - min(stamps)) / 1000
    print(
        f"\nhostile: {n} records ({N_HOSTILE} hostile, {len(good_traffic.records)} good), "
        f"{sum(len(v or b'') for v in mix.records) / 1e6:.1f} MB; enriched {len(enriched)}, "
        f"dead-lettered {len(dead)}, deduplicated {totals['deduplicated']}\n"
        f"reasons {dict(sorted(got_reasons.items()))}\n"
        f"job {job_id}: {seconds:.1f}s running, {n / seconds:.0f} records/s, "
        f"{totals['entries_in'] / seconds:.0f} entries/s; first to last output {busy:.1f}s, "
        f"{n / busy:.0f} records/s, {totals['entries_in'] / busy:.0f} entries/s\n"
        f"restarts {restarts}\n"
        f"phases: produce {t_produced - t0:.1f}s, submit+run {t_job - t_produced:.1f}s, "
        f"drain {t_drained - t_job:.1f}s, checks {t_checked - t_drained:.1f}s"
    )
