"""The job's own metrics, scraped from Flink's Prometheus reporter on a real session cluster.

Known traffic: N records of one dead-letter reason, a gateway retry, a late event and an auth
failure burst that raises an alert. Then the TaskManager's /metrics must show exactly those
counts, and the watermark lag gauge. Deterministic without sleeps: each step waits on the job's
committed output (as tests/integration/test_late_data.py does), and the scrape on the counters.

Private ports, so it runs beside the other cluster tests: REST 127.0.0.1:48081 (reporter on
49249-49259, scripts/flink-cluster.sh) and a broker on 48092.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import subprocess
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cluster_helpers import kong_entry, partition_sender, submit, wait_until

from jobs.submit import TERMINAL, Rest
from schemas.events import DEAD_LETTER_REASONS
from testkit import stack
from testkit.traffic import auth_failure_burst, max_event_age_covering
from tools.readback import drain
from tools.topics import job_topic_flags

pytestmark = pytest.mark.integration

REST = "127.0.0.1:48081"
BROKER_PORT = 48092
T0 = 1_767_225_600_000  # a window boundary
TIMEOUT_S = 240.0
N_NOT_JSON = 3
OPERATOR = "flink_taskmanager_job_task_operator_"
# Metric names as the reporter exports them (docs/operations.md, "Metrics").
DEAD_BY_REASON = OPERATOR + "dead_letter_reason_dead_letters"
DEDUP = OPERATOR + "deduplicated_retries"
LATE = OPERATOR + "late_events"
ALERTS_BY_RULE = OPERATOR + "alert_rule_alert_status_alerts"
WATERMARK_LAG = OPERATOR + "watermark_lag_ms"

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

Sample = tuple[str, dict[str, str], float]


def parse_exposition(text: str) -> list[Sample]:
    """Prometheus text exposition -> (name, labels, value) per sample line."""
    out = []
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and not line.startswith("#"):
            out.append((m[1], dict(_LABEL.findall(m[2] or "")), float(m[3])))
    return out


@pytest.fixture(scope="module")
def kafka_bootstrap() -> Iterator[str]:
    with stack.broker(BROKER_PORT) as bootstrap:
        yield bootstrap


@pytest.fixture(scope="module")
def flink_cluster() -> Iterator[stack.FlinkCluster]:
    with stack.session_cluster(REST, secrets.token_hex(32)) as cluster:
        yield cluster


def prom_ports() -> list[int]:
    """The reporter's port range of the cluster at REST (scripts/flink-cluster.sh)."""
    proc = subprocess.run(
        [str(stack.SCRIPTS / "flink-cluster.sh"), "prom-ports"],
        env=dict(os.environ, FLINK_REST=REST),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    first, last = proc.stdout.strip().split("-")
    return list(range(int(first), int(last) + 1))


def scrape_taskmanagers(ports: list[int]) -> list[Sample]:
    """Every TaskManager reporter's samples: the ports of the range that answer with
    TaskManager metrics (the JobManager's reporter answers on one of them too)."""
    samples: list[Sample] = []
    for port in ports:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except (urllib.error.URLError, OSError):
            continue
        if "flink_taskmanager_" in text:
            samples.extend(parse_exposition(text))
    return samples


def total(samples: list[Sample], name: str, **labels: str) -> float | None:
    """The sum over subtasks of ``name``'s samples with ``labels``; None if there are none."""
    values = [
        v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items())
    ]
    return sum(values) if values else None


def test_the_reporter_shows_the_jobs_metrics_with_exact_values(
    flink_cluster: stack.FlinkCluster, kafka_bootstrap: str, unique_topics: dict[str, str]
) -> None:
    send = partition_sender(kafka_bootstrap, unique_topics["raw"])
    flags = [
        "--bootstrap-servers", kafka_bootstrap,
        *job_topic_flags(unique_topics),
        "--startup-mode", "earliest-offset",
        "--group-id", f"g-{unique_topics['raw']}",
        "--transactional-id-prefix", f"t-{unique_topics['raw']}",
        "--checkpoint-interval-seconds", "1",
        "--out-of-orderness-seconds", "0",
        "--idle-timeout-seconds", "1",
        "--reconcile-interval-seconds", "1",
        "--incident-quiet-minutes", "1",
        "--max-event-age-seconds", str(max_event_age_covering(T0)),
    ]  # fmt: skip
    run = submit(flink_cluster, *flags)
    assert run.returncode == 0, run.stderr[-4000:]
    job = run.stdout.strip()
    rest = Rest(flink_cluster.rest)
    try:
        _produce_known_traffic(send, kafka_bootstrap, unique_topics)
        ports = prom_ports()
        samples: list[Sample] = []
        want = {
            (DEAD_BY_REASON, "not_json"): float(N_NOT_JSON),
            (DEDUP, ""): 1.0,
            (LATE, ""): 1.0,
        }

        def seen() -> dict[tuple[str, str], float | None]:
            return {
                (DEAD_BY_REASON, "not_json"): total(
                    samples, DEAD_BY_REASON, dead_letter_reason="not_json"
                ),
                (DEDUP, ""): total(samples, DEDUP),
                (LATE, ""): total(samples, LATE),
            }

        def reached() -> bool:
            nonlocal samples
            samples = scrape_taskmanagers(ports)
            return (
                seen() == want
                and (total(samples, ALERTS_BY_RULE, alert_rule="auth_failures") or 0) >= 1
                and total(samples, WATERMARK_LAG) is not None
            )

        wait_until(
            "the custom metrics on the TaskManager's reporter",
            reached,
            TIMEOUT_S,
            detail=lambda: (
                f"{seen()}, alerts "
                f"{total(samples, ALERTS_BY_RULE, alert_rule='auth_failures')}, lag "
                f"{total(samples, WATERMARK_LAG)}"
            ),
        )
    finally:
        if rest.call("GET", f"/jobs/{job}")["state"] not in TERMINAL:
            with contextlib.suppress(urllib.error.HTTPError):
                rest.call("PATCH", f"/jobs/{job}?mode=cancel")

    print(  # the values seen, for the record (pytest -s)
        "metrics seen:",
        {k[0].removeprefix(OPERATOR): v for k, v in seen().items()},
        "alerts:",
        {
            (lab["alert_rule"], lab["alert_status"]): v
            for n, lab, v in samples
            if n == ALERTS_BY_RULE and v
        },
        "watermark_lag_ms:",
        [v for n, _, v in samples if n == WATERMARK_LAG],
    )
    # Exact, per label. (Codes never seen may be absent: process-mode Python counters reach
    # Flink with their first update.)
    reasons: Counter[str] = Counter()
    for n, lab, v in samples:
        if n == DEAD_BY_REASON:
            reasons[lab["dead_letter_reason"]] += int(v)
    assert +reasons == {"not_json": N_NOT_JSON}
    assert set(reasons) <= set(DEAD_LETTER_REASONS)
    alerts = {
        (lab["alert_rule"], lab["alert_status"])
        for n, lab, v in samples
        if n == ALERTS_BY_RULE and v
    }
    assert ("auth_failures", "open") in alerts
    lag = [v for n, _, v in samples if n == WATERMARK_LAG and v == v]  # not NaN
    assert lag and all(v > 0 for v in lag)  # the events are from the past: the lag is positive


def _produce_known_traffic(
    send: Callable[..., None], bootstrap: str, topics: dict[str, str]
) -> None:
    """N not_json records, W0's events with an auth-failure burst, events that close W0, then a
    late event for W0 and a retry of one of its entries, then events two minutes on, which
    close the burst's incident. Each step waits until the one before is
    committed, so nothing is late but the one event meant to be."""

    def values(role: str) -> list[dict[str, Any]]:
        return [json.loads(r.value or b"") for r in drain(bootstrap, topics[role])]

    send(0, *(b"{not json" for _ in range(N_NOT_JSON)))
    burst = auth_failure_burst(T0 + 5_000, 40, "203.0.113.9")
    send(0, kong_entry("acme", T0 + 1_000, "r1"), kong_entry("acme", T0 + 2_000, "r2"), burst.value)
    send(1, kong_entry("acme", T0 + 3_000, "r3"))
    wait_until("W0's events to be enriched", lambda: len(values("enriched")) == 3 + 40, TIMEOUT_S)
    wait_until(
        "the auth_failures alert",
        lambda: any(a["rule"] == "auth_failures" for a in values("alerts")),
        TIMEOUT_S,
    )
    send(0, kong_entry("acme", T0 + 30_000, "r4"))
    send(1, kong_entry("acme", T0 + 30_000, "r5"))
    wait_until(
        "W0 to close",
        lambda: any(u["window_start"] == T0 and u["kind"] == "window" for u in values("usage")),
        TIMEOUT_S,
    )
    # One late event for W0, and a gateway retry of r1 (the same entry again).
    send(1, kong_entry("acme", T0 + 4_000, "r6"), kong_entry("acme", T0 + 1_000, "r1"))
    wait_until(
        "the late correction",
        lambda: any(u["kind"] == "late_correction" for u in values("usage")),
        TIMEOUT_S,
    )
    # The burst's client never calls again: only the detector's event-time timer can close its
    # incident, once the watermark that reaches the detector passes its quiet time (1 minute).
    send(0, kong_entry("acme", T0 + 120_000, "r7"))
    send(1, kong_entry("acme", T0 + 120_000, "r8"))
    wait_until(
        "the burst's incident to close on the detector's timer",
        lambda: any(
            a["status"] == "closed" and a["rule"] == "auth_failures" for a in values("alerts")
        ),
        TIMEOUT_S,
    )
