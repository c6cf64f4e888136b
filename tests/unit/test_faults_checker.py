"""The fault suite's checker (tools/faults.py verify) and its other pure logic (plan parsing,
when to kill, the progress reader's stall detection), tested without any broker: a checker
that cannot fail proves nothing. The suite itself runs with `make faults`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from metering.settings import check_transaction_timeout
from tools.faults import (
    FAULT_KINDS,
    FULL_PLAN,
    PARTITIONS,
    CheckpointKills,
    FaultsConfig,
    Report,
    StallWatch,
    check_alerts,
    expected_alerts,
    initial_parallelism,
    rescale_step,
    restoring_tasks,
    short_transaction_flags,
    source_events,
    verify,
)
from tools.readback import Record

WINDOW_MS = 10_000
T0 = 1_767_225_600_000  # aligned to a window


def _raw(partition: int, offset: int, *events: tuple[str, int, int]) -> Record:
    entries = [
        {
            "request": {"uri": "/", "method": "GET", "headers": {"x-request-id": f"{k}-{s}"}},
            "response": {"status": 200},
            "consumer": {"username": k},
            "client_ip": "10.0.0.1",
            "start_time": t,
        }
        for k, s, t in events
    ]
    value: Any = entries if len(entries) > 1 else entries[0]
    return Record(partition, offset, None, json.dumps(value).encode())


def _out(value: dict[str, Any], partition: int = 0) -> Record:
    return Record(partition, 0, None, json.dumps(value).encode())


def _enriched(rid: str, partition: int) -> Record:
    return _out({"request_id": rid, "source_partition": partition})


def _usage(key: str, start: int, count: int, kind: str = "window") -> Record:
    return _out({"kind": kind, "rate_key": key, "window_start": start, "count": count})


RAW = [
    _raw(0, 0, ("a", 1, T0 + 1), ("b", 1, T0 + 2)),
    _raw(1, 0, ("a", 2, T0 + 9_999)),
    _raw(0, 1, ("a", 3, T0 + 10_000)),
]


def test_verify_accepts_exact_output_with_a_late_correction() -> None:
    enriched = [_enriched("a-1", 0), _enriched("b-1", 0), _enriched("a-2", 1), _enriched("a-3", 0)]
    usage = [
        _usage("a", T0, 1),
        _usage("b", T0, 1),
        _usage("a", T0 + WINDOW_MS, 1),
        _usage("a", T0, 1, kind="late_correction"),
    ]
    v = verify(RAW, enriched, usage, [], None)
    assert v.problems() == []
    assert (v.events, v.windows, v.late_corrections, v.late_events) == (4, 3, 1, 1)


def test_verify_counts_lost_duplicated_and_wrong_windows() -> None:
    enriched = [_enriched("a-1", 0), _enriched("a-1", 0), _enriched("a-2", 1)]
    usage = [
        _usage("a", T0, 2),
        _usage("a", T0, 2),  # the same window emitted twice
        _usage("a", T0 + WINDOW_MS, 1),
    ]
    v = verify(RAW, enriched, usage, [], None)
    assert v.lost == ["a-3", "b-1"]
    assert v.duplicated == 1 and v.duplicated_ids == ["a-1"]
    assert v.windows_emitted_twice == [("a", T0)]
    assert v.window_mismatches == {("a", T0): (2, 4), ("b", T0): (1, 0)}
    assert len(v.problems()) == 4


def test_verify_checks_the_reconciliation_against_the_topics() -> None:
    enriched = [_enriched("a-1", 0), _enriched("b-1", 0), _enriched("a-2", 1), _enriched("a-3", 0)]
    usage = [_usage("a", T0, 2), _usage("b", T0, 1), _usage("a", T0 + WINDOW_MS, 1)]

    def recon(partition: int, records: int, entries: int, out: int, start: int = 0) -> Record:
        return _out(
            {
                "source_partition": partition,
                "interval_start": start,
                "records_in": records,
                "entries_in": entries,
                "enriched_out": out,
                "dead_lettered": 0,
                "deduplicated": 0,
            }
        )

    # An interval's earlier, partial report is superseded by its latest.
    good = verify(
        RAW, enriched, usage, [], [recon(0, 1, 1, 1), recon(0, 2, 3, 3), recon(1, 1, 1, 1)]
    )
    assert good.reconciliation_checked and good.problems() == []
    # Partition 1 reports a record in a second interval that the raw topic does not hold.
    bad = verify(
        RAW,
        enriched,
        usage,
        [],
        [recon(0, 2, 3, 3), recon(1, 1, 1, 1), recon(1, 1, 1, 1, start=10_000)],
    )
    assert any("partition 1: records_in 2, raw 1" in p for p in bad.reconciliation)


# --- the alerts check ------------------------------------------------------------------------


def _refused(key: str, n: int, start: int, status: int = 403, first_seq: int = 1) -> list[Record]:
    out = []
    for seq in range(first_seq, first_seq + n):
        rec = json.loads(_raw(0, seq, (key, seq, start + seq)).value or b"")
        rec["response"]["status"] = status
        out.append(Record(0, seq, None, json.dumps(rec).encode()))
    return out


def _alert(key: str, start: int, alert_id: str, severity: str = "warning") -> dict[str, Any]:
    return {
        "alert_id": alert_id,
        "rule": "auth_failures",
        "severity": severity,
        "rate_key": key,
        "window_start": start,
    }


def test_expected_alerts_follow_the_auth_failure_rule_from_ground_truth() -> None:
    raw = [
        *_refused("fb0", 20, T0),  # at the threshold: alerts
        *_refused("fb1", 19, T0),  # one short: no alert
        *_refused("fb2", 25, T0 + WINDOW_MS, status=200),  # accepted calls: no alert
    ]
    events, _, _ = source_events(raw)
    assert expected_alerts(events, WINDOW_MS, 20, 0.5) == {("auth_failures", "fb0", T0)}
    # Under half of the window's calls refused: no alert.
    mixed, _, _ = source_events(
        [*_refused("fb3", 20, T0), *_refused("fb3", 21, T0, status=200, first_seq=21)]
    )
    assert expected_alerts(mixed, WINDOW_MS, 20, 0.5) == set()


def test_check_alerts_perfect_missing_and_unexpected() -> None:
    expected = {("auth_failures", "fb0", T0), ("auth_failures", "fb1", T0 + WINDOW_MS)}
    perfect = check_alerts(expected, [_alert("fb0", T0, "a"), _alert("fb1", T0 + WINDOW_MS, "b")])
    assert perfect.problems() == [] and perfect.repeated == 0 and perfect.alerts == 2

    missing = check_alerts(expected, [_alert("fb0", T0, "a"), _alert("fk1", T0, "x")])
    assert missing.missing == [("auth_failures", "fb1", T0 + WINDOW_MS)]
    assert missing.unexpected == [("auth_failures", "fk1", T0)]
    assert len(missing.problems()) == 2


def test_check_alerts_allows_repeats_only_with_the_same_id() -> None:
    expected = {("auth_failures", "fb0", T0)}
    same = check_alerts(expected, [_alert("fb0", T0, "a"), _alert("fb0", T0, "a")])
    assert same.problems() == [] and same.repeated == 1

    different = check_alerts(expected, [_alert("fb0", T0, "a"), _alert("fb0", T0, "b")])
    assert different.conflicting_ids == [(("auth_failures", "fb0", T0), "warning", ["a", "b"])]
    assert len(different.problems()) == 1

    # An escalation is another severity with an id of its own: not a conflict.
    escalated = check_alerts(
        expected, [_alert("fb0", T0, "a"), _alert("fb0", T0, "c", severity="high")]
    )
    assert escalated.problems() == []


def test_verify_reports_alert_problems_and_windows_differing_in_the_figures() -> None:
    raw = _refused("fb0", 25, T0)
    enriched = [_enriched(f"fb0-{i}", 0) for i in range(1, 26)]
    usage = [_usage("fb0", T0, 25)]
    good = verify(raw, enriched, usage, [], None, alerts=[_out(_alert("fb0", T0, "a"))])
    assert good.problems() == [] and good.alerts is not None and good.alerts.expected == 1
    bad = verify(raw, enriched, [_usage("fb0", T0, 24)], [], None, alerts=[])
    assert bad.alerts is not None and bad.alerts.missing == [("auth_failures", "fb0", T0)]
    assert len(bad.problems()) == 2  # a window differs, an alert is missing

    report = Report(events_checked=25, verification=bad, windows_differing=1)
    assert report.line() == (
        "faults injected 0, events checked 25, lost 0, duplicated 0, windows differing 1"
    )
    assert not report.ok
    assert Report(events_checked=25, verification=good).ok


# --- the plan --------------------------------------------------------------------------------


def test_the_full_plan_is_valid_and_starts_at_parallelism_1_for_its_rescale() -> None:
    cfg = FaultsConfig(faults=len(FULL_PLAN))
    assert cfg.fault_plan() == list(FULL_PLAN)
    assert set(FULL_PLAN) == FAULT_KINDS
    assert initial_parallelism(FULL_PLAN) == 1
    assert initial_parallelism(["tm-pause", "jm-kill"]) == PARTITIONS


def test_plan_parsing_refuses_unknown_kinds_and_broken_rescale_chains() -> None:
    with pytest.raises(ValueError, match="unknown fault kinds"):
        FaultsConfig(plan=("tm-kill:sometimes",)).fault_plan()
    assert rescale_step("rescale:1-2") == (1, 2)
    assert rescale_step("tm-pause") is None
    for bad in ("rescale:1", "rescale:a-2", "rescale:0-2"):
        with pytest.raises(ValueError, match="bad rescale"):
            rescale_step(bad)
    with pytest.raises(ValueError, match="follows a rescale to parallelism 2"):
        initial_parallelism(["rescale:1-2", "rescale:1-2"])
    with pytest.raises(ValueError, match="more subtasks than"):
        initial_parallelism(["rescale:2-3"])


def test_a_pause_past_the_transaction_timeout_gets_the_shortest_timeout_the_job_accepts() -> None:
    timeout_ms, restart_s = short_transaction_flags(3)
    assert (timeout_ms, restart_s) == (60_000, 56)
    check_transaction_timeout(timeout_ms, 900_000, 3, restart_s)
    with pytest.raises(ValueError):
        check_transaction_timeout(timeout_ms, 900_000, 3, restart_s + 1)


def test_every_checkpoint_kills_follow_the_restored_jobs_first_completed_checkpoint() -> None:
    kills = CheckpointKills(3, since=100.0)
    seen = {7: 99.0, 8: 99.5}  # existed before the fault: not the fault's checkpoints
    dirs = {7: True, 8: False}
    assert kills.due(dirs, seen) is None
    dirs[9], seen[9] = False, 101.0  # triggered, in progress
    assert kills.due(dirs, seen) is None
    dirs[9] = True
    assert kills.due(dirs, seen) == 9
    kills.record(9, 102.0)
    # Checkpoint 10 completed by the dying job (its directory predates the kill): not counted.
    dirs[10], seen[10] = True, 101.5
    assert kills.due(dirs, seen) is None
    dirs[11], seen[11] = True, 110.0
    assert kills.due(dirs, seen) == 11
    kills.record(11, 111.0)
    dirs[12], seen[12] = True, 120.0
    assert kills.due(dirs, seen) == 12
    kills.record(12, 121.0)
    assert kills.finished and kills.killed == [9, 11, 12]
    dirs[13], seen[13] = True, 130.0
    assert kills.due(dirs, seen) is None


def test_restoring_tasks_counts_initializing_tasks() -> None:
    job = {
        "vertices": [
            {"tasks": {"RUNNING": 1, "INITIALIZING": 1}},
            {"tasks": {"DEPLOYING": 2}},
            {"tasks": {"INITIALIZING": 2}},
        ]
    }
    assert restoring_tasks(job) == 3
    assert restoring_tasks({"vertices": [{"tasks": {"RUNNING": 2}}]}) == 0


# --- the progress reader's stall detection ---------------------------------------------------


def test_stall_watch_flags_a_reader_that_stops_while_committed_data_grows() -> None:
    w = StallWatch(stall_after_s=30.0)
    w.progress(0, 100)
    w.progress(1, 50)
    assert w.stalled(0.0, {0: 100, 1: 50}) == []  # caught up
    assert w.stalled(1.0, {0: 180, 1: 50}) == []  # behind since t=1
    assert w.stalled(30.0, {0: 400, 1: 50}) == []  # 29 s
    assert w.stalled(31.0, {0: 400, 1: 50}) == [0]
    # A new consumer gets its own time to show progress, from where the old one stopped.
    w.restart(31.0)
    assert w.stalled(60.0, {0: 400, 1: 50}) == []
    assert w.progress(0, 250)  # progress resets the clock
    assert w.stalled(70.0, {0: 400, 1: 50}) == []
    assert w.stalled(99.0, {0: 400, 1: 50}) == []
    assert w.stalled(100.0, {0: 400, 1: 50}) == [0]


def test_stall_watch_accepts_an_end_reached_past_transaction_markers() -> None:
    """Trailing transaction markers (or aborted records) leave the last record's offset below
    the committed end; the end-of-partition event at the end is progress, not a stall."""
    w = StallWatch(stall_after_s=30.0)
    w.progress(0, 99)  # last record at offset 98
    assert w.stalled(0.0, {0: 100}) == []
    assert w.progress(0, 100)  # end of partition at 100, past the commit marker at 99
    assert not w.progress(0, 100)  # the same end again is no progress
    assert w.stalled(100.0, {0: 100}) == []
