"""Late events on the real cluster: enriched like any other, and corrected into their window.

Deterministic without sleeps: a window's usage record becomes visible only after the watermark
passed its end, so an event for that window produced afterwards is late by construction.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from cluster_helpers import kong_entry, partition_sender, submit, wait_until

from metering import reconciliation
from testkit.traffic import auth_failure_burst, max_event_age_covering
from tools.readback import drain
from tools.topics import job_topic_flags

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000  # a window boundary
W = 10_000


def _await(what: str, probe: Callable[[], bool]) -> None:
    wait_until(what, probe, 240.0)


def _job_flags(kafka_bootstrap: str, unique_topics: dict[str, str], *extra: str) -> list[str]:
    """One-second checkpoints, idleness and reconciliation, no out-of-orderness: the tests see
    each step's output at once."""
    return [
        "--bootstrap-servers", kafka_bootstrap,
        *job_topic_flags(unique_topics),
        "--startup-mode", "earliest-offset",
        "--group-id", f"g-{unique_topics['raw']}",
        "--transactional-id-prefix", f"t-{unique_topics['raw']}",
        "--checkpoint-interval-seconds", "1",
        "--out-of-orderness-seconds", "0",
        "--idle-timeout-seconds", "1",
        "--reconcile-interval-seconds", "1",
        *extra,
    ]  # fmt: skip


# Thread mode too: on a session cluster it failed in PyFlink 2.2.1 until the detector's state TTL
# stopped needing a Py4J gateway (udfs.functions.detector_state_ttl).
@pytest.mark.parametrize("mode", ["process", "thread"])
def test_late_event_is_enriched_and_corrected_and_a_retry_is_dropped(
    mode: str, flink_cluster: Any, kafka_bootstrap: str, unique_topics: dict[str, str]
) -> None:
    send = partition_sender(kafka_bootstrap, unique_topics["raw"])

    flags = _job_flags(
        kafka_bootstrap,
        unique_topics,
        "--execution-mode", mode,
        "--max-event-age-seconds", str(max_event_age_covering(T0)),
    )  # fmt: skip
    run = submit(flink_cluster, *flags)
    assert run.returncode == 0, run.stderr[-4000:]
    job = run.stdout.strip()

    def usage() -> list[dict[str, Any]]:
        return [json.loads(r.value or b"") for r in drain(kafka_bootstrap, unique_topics["usage"])]

    # Window W0 gets 3 events; an event 30 s later on both partitions moves the watermark past
    # W0's end, which fires W0.
    send(0, kong_entry("acme", T0 + 1_000, "r1"), kong_entry("acme", T0 + 2_000, "r2"))
    send(1, kong_entry("acme", T0 + 3_000, "r3"))
    # Committed output means a completed checkpoint, so every operator has processed W0's
    # events. Without this wait, partition 0's r4 could move the watermark past W0 while
    # partition 1's subtask is still idle (1 s), and r3 would be late, correctly but not here.
    _await(
        "W0's events to be enriched",
        lambda: len(drain(kafka_bootstrap, unique_topics["enriched"])) == 3,
    )
    send(0, kong_entry("acme", T0 + 30_000, "r4"))
    send(1, kong_entry("acme", T0 + 30_000, "r5"))
    _await("W0 to close", lambda: any(u["window_start"] == T0 for u in usage()))

    # Now a late event for W0, and a gateway retry of r1 (same request id).
    send(1, kong_entry("acme", T0 + 4_000, "r6"), kong_entry("acme", T0 + 1_000, "r1"))
    _await(
        "the late correction",
        lambda: any(u["kind"] == "late_correction" for u in usage()),
    )
    _await(
        "the retry to be reconciled",
        lambda: (
            reconciliation.totals(
                json.loads(r.value or b"")
                for r in drain(kafka_bootstrap, unique_topics["reconciliation"])
            )["deduplicated"]
            == 1
        ),
    )
    stop = submit(flink_cluster, "--stop-with-savepoint", job, "--drain")
    assert stop.returncode == 0, stop.stderr[-4000:]

    enriched = [
        json.loads(r.value or b"") for r in drain(kafka_bootstrap, unique_topics["enriched"])
    ]
    # The late event is enriched like any other; the retry is not.
    assert sorted(e["request_id"] for e in enriched) == ["r1", "r2", "r3", "r4", "r5", "r6"]

    w0 = [u for u in usage() if u["window_start"] == T0]
    assert sorted((u["kind"], u["count"]) for u in w0) == [
        ("late_correction", 1),
        ("window", 3),
    ]
    assert sum(u["count"] for u in w0) == 4  # what billing adds up for W0
    later = [u for u in usage() if u["window_start"] == T0 + 30_000]
    assert [(u["kind"], u["count"]) for u in later] == [("window", 2)]

    recon = reconciliation.totals(
        json.loads(r.value or b"") for r in drain(kafka_bootstrap, unique_topics["reconciliation"])
    )
    assert recon["records_in"] == 7
    assert recon["enriched_out"] == 6
    assert recon["deduplicated"] == 1
    assert recon["late"] == 1


def _apisix(user: str, ts: int, request_id: str, path: str = "/v1/x") -> bytes:
    return json.dumps(
        {
            "request": {"uri": path, "method": "GET", "headers": {"x-request-id": request_id}},
            "response": {"status": 200},
            "consumer": {"username": user},
            "client_ip": "10.1.2.3",
            "start_time": ts,
        }
    ).encode()


def test_a_future_event_time_cannot_blind_the_detector_and_a_constant_request_id_is_billed(
    flink_cluster: Any, kafka_bootstrap: str, unique_topics: dict[str, str]
) -> None:
    """One entry stamped a year ahead used to move its subtask's watermark a year ahead; with
    the other subtask idle, every later event was late: no early alert, only corrections. And
    a client sending one constant x-request-id had every call after its first dropped."""
    send = partition_sender(kafka_bootstrap, unique_topics["raw"])

    run = submit(flink_cluster, *_job_flags(kafka_bootstrap, unique_topics))
    assert run.returncode == 0, run.stderr[-4000:]
    job = run.stdout.strip()

    def values(role: str) -> list[dict[str, Any]]:
        return [json.loads(r.value or b"") for r in drain(kafka_bootstrap, unique_topics[role])]

    now_ms = int(time.time() * 1000)
    t0 = now_ms - now_ms % W - 120_000  # a window boundary two minutes ago
    # The poisoned entry, alone on partition 0; partition 1 stays idle until later.
    send(0, _apisix("poisoner", now_ms + 366 * 86_400_000, "p1"))
    _await("the poisoned entry's dead letter", lambda: len(values("dlq")) == 1)
    [letter] = values("dlq")
    assert letter["reason"] == "event_time_future"
    assert (letter["source_partition"], letter["source_offset"]) == (0, 0)

    # A client guessing keys (40 401s in one window), and 5 distinct calls of one consumer that
    # all carry the same x-request-id, on the partition that carried the poisoned entry.
    burst = auth_failure_burst(t0 + 1_000, 40, "203.0.113.9")
    constant = [_apisix("constant-id", t0 + 2_000 + i, "same-id", f"/v1/c/{i}") for i in range(5)]
    send(0, burst.value, *constant)
    _await(
        "the auth_failures alert",
        lambda: any(a["rule"] == "auth_failures" for a in values("alerts")),
    )
    # Later events on both partitions close t0's window.
    send(0, _apisix("acme", t0 + 30_000, "r-late-0"))
    send(1, _apisix("acme", t0 + 30_000, "r-late-1"))
    _await("t0's window to close", lambda: any(u["window_start"] == t0 for u in values("usage")))
    stop = submit(flink_cluster, "--stop-with-savepoint", job, "--drain")
    assert stop.returncode == 0, stop.stderr[-4000:]

    alerts = [a for a in values("alerts") if a["rule"] == "auth_failures"]
    assert {(a["window_start"], a["window_closed"]) for a in alerts} >= {(t0, False)}
    assert all(a["rate_key"].startswith("client:") for a in alerts)

    enriched = values("enriched")
    assert sum(1 for e in enriched if e["consumer"] == "constant-id") == 5
    assert not any(e["consumer"] == "poisoner" for e in enriched)
    usage = values("usage")
    # Nothing was late: the poisoned entry never moved a watermark.
    assert {u["kind"] for u in usage} == {"window"}
    assert [u["count"] for u in usage if u["rate_key"] == "constant-id"] == [5]
    clients = [u for u in usage if u["rate_key"].startswith("client:")]
    assert [(u["count"], u["auth_failures"]) for u in clients] == [(40, 40)]
    recon = reconciliation.totals(values("reconciliation"))
    assert (recon["dead_lettered"], recon["deduplicated"], recon["late"]) == (1, 0, 0)
    assert recon["enriched_out"] == len(enriched) == 40 + 5 + 2


def test_a_partition_of_only_unusable_records_does_not_hold_back_the_windows(
    flink_cluster: Any, kafka_bootstrap: str, unique_topics: dict[str, str]
) -> None:
    """A gateway that sends one event and then only garbage to one partition: its source subtask
    sees records, but no event, so it must go idle like a quiet one instead of holding every
    window at that one event's time. (Flink's stock idleness counts every record as activity.)"""
    send = partition_sender(kafka_bootstrap, unique_topics["raw"])

    flags = _job_flags(
        kafka_bootstrap,
        unique_topics,
        "--max-event-age-seconds", str(max_event_age_covering(T0)),
    )  # fmt: skip
    run = submit(flink_cluster, *flags)
    assert run.returncode == 0, run.stderr[-4000:]
    job = run.stdout.strip()

    def values(role: str) -> list[dict[str, Any]]:
        return [json.loads(r.value or b"") for r in drain(kafka_bootstrap, unique_topics[role])]

    # Partition 0's one event, early in W0. Then W0's events on partition 1, and then one that
    # passes W0's end. As in the first test, each step waits until the one before is committed,
    # so every operator has processed it: after idleness the watermark can reach the windows
    # through one channel while earlier events are still in another, and they would be late,
    # correctly but not here.
    send(0, kong_entry("other", T0 + 500, "p0"))
    _await("partition 0's event to be enriched", lambda: len(values("enriched")) == 1)
    send(1, kong_entry("acme", T0 + 1_000, "r1"), kong_entry("acme", T0 + 2_000, "r2"))
    _await("W0's events to be enriched", lambda: len(values("enriched")) == 3)
    send(1, kong_entry("acme", T0 + 30_000, "r3"))
    # Partition 0 now receives only unusable records, more often than the 1 s idle timeout,
    # until W0 closes (the pause paces the garbage; the wait is on W0's usage record). Were they
    # activity, partition 0's watermark would stay at T0 + 500 and W0 would never close.
    garbage = 0
    deadline = time.monotonic() + 240.0
    while not any(u["window_start"] == T0 for u in values("usage")):
        assert time.monotonic() < deadline, "W0 did not close while partition 0 sent garbage"
        send(0, b"{not json")
        garbage += 1
        time.sleep(0.2)
    stop = submit(flink_cluster, "--stop-with-savepoint", job, "--drain")
    assert stop.returncode == 0, stop.stderr[-4000:]

    w0 = sorted(
        (u["rate_key"], u["kind"], u["count"]) for u in values("usage") if u["window_start"] == T0
    )
    assert w0 == [("acme", "window", 2), ("other", "window", 1)]
    assert len(values("dlq")) == garbage
    recon = reconciliation.totals(values("reconciliation"))
    assert (recon["enriched_out"], recon["dead_lettered"], recon["late"]) == (4, garbage, 0)
