"""The fault suite's checker (testkit/faults.py verify) and its other pure logic (plan parsing,
when to kill, the progress reader's stall detection), tested without any broker: a checker
that cannot fail proves nothing. The suite itself runs with `make faults`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from metering.settings import check_transaction_timeout
from testkit.faults import (
    FAULT_KINDS,
    FULL_PLAN,
    PARTITIONS,
    SILENCE_SEND_INTO_MS,
    VANISHING_EVENTS,
    VANISHING_KEYS,
    CheckpointKills,
    FaultsConfig,
    Report,
    StallWatch,
    billing_catalog,
    check_alerts,
    check_billing,
    expected_alerts,
    initial_parallelism,
    main,
    rescale_step,
    restoring_tasks,
    short_transaction_flags,
    silence_kill_deadline,
    silence_send_moment,
    silent_events,
    source_events,
    thresholds_by_hand,
    tm_kill_phase,
    vanishing_keys,
    verify,
    window_truth,
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
    assert different.conflicting_ids == [(("auth_failures", "fb0", T0), "warning/open", ["a", "b"])]
    assert len(different.problems()) == 1

    # The incident's close names the burst's window, with an id of its own: not a conflict.
    closed = check_alerts(
        expected, [_alert("fb0", T0, "a"), {**_alert("fb0", T0, "z"), "status": "closed"}]
    )
    assert closed.problems() == []

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


def test_a_pause_past_the_transaction_timeout_keeps_the_jobs_default_restart_bound() -> None:
    # A shorter restart bound than the job's default is one its other faults do not keep (the
    # restart delay alone reaches 60 s late in a run), and a recovery past the timeout loses the
    # output of the checkpoint it restores.
    timeout_ms, restart_s = short_transaction_flags(3)
    assert (timeout_ms, restart_s) == (124_000, 120)
    check_transaction_timeout(timeout_ms, 900_000, 3, restart_s)
    with pytest.raises(ValueError):
        check_transaction_timeout(timeout_ms - 1000, 900_000, 3, restart_s)


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


# --- tm-kill:after-silence: keys that stop sending right before the kill ---------------------


def test_after_silence_is_a_plan_kind_of_the_full_plan_and_listed_in_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert "tm-kill:after-silence" in FAULT_KINDS and "tm-kill:after-silence" in FULL_PLAN
    plan = FaultsConfig(plan=("tm-kill:after-silence", "tm-kill:during")).fault_plan()
    assert plan == ["tm-kill:after-silence", "tm-kill:during"]
    assert FaultsConfig().fault_plan().count("tm-kill:after-silence") == 1  # make faults
    assert tm_kill_phase("tm-kill:after-silence") == "after-silence"
    assert tm_kill_phase("tm-kill:during") == "during"
    assert tm_kill_phase("tm-pause") == ""
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "tm-kill:after-silence" in "".join(capsys.readouterr().out.split())


def test_vanishing_keys_are_their_own_per_fault() -> None:
    keys = vanishing_keys(3)
    assert keys == [f"fv3k{i}" for i in range(VANISHING_KEYS)]
    assert not set(keys) & set(vanishing_keys(4))
    # Never a steady traffic key ("fk..") nor an alert-burst key ("fb..").
    assert all(k.startswith("fv") for k in keys)


@pytest.mark.parametrize("into_ms", [30, 1_000, 4_500, 9_999])
def test_silent_events_are_sequenced_and_all_in_the_window_of_now(into_ms: int) -> None:
    now = T0 + 5 * WINDOW_MS + into_ms
    batches = silent_events(["fv1k0", "fv1k1"], VANISHING_EVENTS, now, WINDOW_MS, seed=9)
    assert [k for k, _ in batches] == ["fv1k0", "fv1k1"]
    raw = [
        Record(0, i, None, json.dumps(entries).encode()) for i, (_, entries) in enumerate(batches)
    ]
    events, repeated, _ = source_events(raw)
    assert repeated == 0
    assert sorted(events) == sorted(
        f"{k}-{seq}" for k in ("fv1k0", "fv1k1") for seq in range(1, VANISHING_EVENTS + 1)
    )
    start = now - now % WINDOW_MS
    assert all(start <= ev.event_ms <= now for ev in events.values())
    assert window_truth(events, WINDOW_MS) == {
        ("fv1k0", start): VANISHING_EVENTS,
        ("fv1k1", start): VANISHING_EVENTS,
    }


def test_silence_is_sent_early_in_a_window_just_before_a_checkpoint_is_due() -> None:
    start = T0 + 7 * WINDOW_MS
    # Due at +3.0 s into the window, sent 200 ms ahead of it.
    assert silence_send_moment(start, 3_000, 200, WINDOW_MS) == start + 2_800
    # Due at +0.5 s (too early: the previous window) or +8 s (too late to be committed).
    assert silence_send_moment(start - 2_500, 3_000, 200, WINDOW_MS) is None
    assert silence_send_moment(start + 5_000, 3_000, 200, WINDOW_MS) is None
    # Whatever the phase of the checkpoints against the windows, one of those triggered within
    # a window's time fits: the wait is bounded.
    low, high = SILENCE_SEND_INTO_MS
    for phase in range(0, WINDOW_MS, 100):
        triggers = [start + phase + i * 3_000 for i in range(4)]
        moments = [silence_send_moment(t, 3_000, 400, WINDOW_MS) for t in triggers]
        fits = [m for m in moments if m is not None]
        assert fits, phase
        assert all(low <= m % WINDOW_MS <= high for m in fits)


def test_the_kill_comes_while_the_silent_window_is_surely_open() -> None:
    start = T0 + 3 * WINDOW_MS
    deadline = silence_kill_deadline(start, WINDOW_MS, 2_000)
    assert deadline == start + WINDOW_MS + 1_000
    # At the deadline the watermark (newest event time, at most the wall clock plus a few ms
    # of skew, less the out-of-orderness) is still a second short of the window's end.
    assert deadline + 50 - 2_000 < start + WINDOW_MS
    # The send moments leave at least 5.5 s until then for a checkpoint to cover the events.
    assert deadline - (start + SILENCE_SEND_INTO_MS[1]) >= 5_500


def _silent_run(
    usage_counts: dict[str, int], extra_event_ms: int | None = None
) -> tuple[list[Record], list[Record], list[Record], dict[str, int]]:
    """Two vanishing keys (3 events each in window T0) killed at T0 + 6 s, plus a steady key
    that goes on into the next window; usage as given for the vanishing keys."""
    kill = T0 + 6_000
    events = [("fv1k0", s, T0 + 1_500 + s) for s in (1, 2, 3)]
    events += [("fv1k1", s, T0 + 1_600 + s) for s in (1, 2, 3)]
    events += [("fk01", 1, T0 + 100), ("fk01", 2, T0 + WINDOW_MS + 100)]
    if extra_event_ms is not None:
        events.append(("fv1k0", 4, extra_event_ms))
    raw = [_raw(0, i, ev) for i, ev in enumerate(events)]
    enriched = [_enriched(f"{k}-{s}", 0) for k, s, _ in events]
    usage = [_usage("fk01", T0, 1), _usage("fk01", T0 + WINDOW_MS, 1)]
    usage += [_usage(k, T0, n) for k, n in usage_counts.items()]
    return raw, enriched, usage, {"fv1k0": kill, "fv1k1": kill}


def test_verify_names_the_vanishing_keys_windows_when_exact() -> None:
    raw, enriched, usage, vanishing = _silent_run({"fv1k0": 3, "fv1k1": 3})
    v = verify(raw, enriched, usage, [], None, vanishing=vanishing)
    assert v.problems() == []
    assert v.vanishing_windows == {("fv1k0", T0): (3, 3), ("fv1k1", T0): (3, 3)}
    assert v.vanishing_line() == "vanishing keys: 2 keys, 2 windows, all exact"
    report = Report(events_checked=v.events, verification=v)
    assert report.ok
    assert report.line() == (
        "faults injected 0, events checked 8, lost 0, duplicated 0, windows differing 0; "
        "vanishing keys: 2 keys, 2 windows, all exact"
    )


def test_verify_fails_a_lost_vanishing_window_and_names_it() -> None:
    raw, enriched, usage, vanishing = _silent_run({"fv1k0": 3})  # fv1k1's window never came
    v = verify(raw, enriched, usage, [], None, vanishing=vanishing)
    assert v.window_mismatches == {("fv1k1", T0): (3, 0)}
    assert v.vanishing_line() == (
        "vanishing keys: 2 keys, 2 windows, 1 differ; (key, start): (truth, got) "
        f"[(('fv1k1', {T0}), (3, 0))]"
    )
    assert v.vanishing_line() in v.problems()
    report = Report(events_checked=v.events, verification=v, windows_differing=1)
    assert not report.ok and report.line().endswith(v.vanishing_line())


def test_verify_fails_a_vanishing_key_that_sent_after_the_kill() -> None:
    raw, enriched, usage, vanishing = _silent_run(
        {"fv1k0": 4, "fv1k1": 3}, extra_event_ms=T0 + 7_000
    )
    v = verify(raw, enriched, usage, [], None, vanishing=vanishing)
    assert v.window_mismatches == {}
    assert v.vanishing_after_kill == ["fv1k0-4"]
    assert v.vanishing_line().endswith("all exact; 1 events after the kill")
    assert v.problems() == [v.vanishing_line()]


def test_verify_without_vanishing_keys_reports_nothing_about_them() -> None:
    raw, enriched, usage, _ = _silent_run({"fv1k0": 3, "fv1k1": 3})
    v = verify(raw, enriched, usage, [], None)
    assert v.vanishing_keys == 0 and v.vanishing_windows == {} and v.problems() == []
    assert Report(events_checked=v.events, verification=v).line().endswith("windows differing 0")
    # Vanishing keys none of whose events reached the raw topic: a problem, not a pass.
    empty = verify([], [], [], [], None, vanishing={"fv9k0": T0})
    assert empty.vanishing_line() == "vanishing keys: 1 keys, 0 windows, none in the source"
    assert empty.problems() == [empty.vanishing_line()]


def test_a_python_worker_kill_runs_the_parse_in_process_mode_unless_told() -> None:
    # Thread mode, the default, has no Python worker processes to kill.
    assert FaultsConfig(plan=("tm-kill:during",)).effective_job_args() == ()
    killing = FaultsConfig(plan=("tm-kill:during", "py-worker-kill"), job_args=("--x", "1"))
    assert killing.effective_job_args() == ("--x", "1", "--parse-execution-mode", "process")
    told = ("--parse-execution-mode", "process", "--execution-mode", "process")
    assert FaultsConfig(plan=("py-worker-kill",), job_args=told).effective_job_args() == told


# -- billing ---------------------------------------------------------------------------------


def _period(subject: str, calls: int, unpriced: int = 0) -> dict[str, Any]:
    return {"subject": subject, "period": "2026-01", "calls": calls, "unpriced_calls": unpriced}


def _quota(subject: str, pct: int, signal_id: str | None = None) -> dict[str, Any]:
    return {
        "signal_id": signal_id or f"{subject}/{pct}",
        "kind": "threshold",
        "subject": subject,
        "period": "2026-01",
        "threshold_percent": pct,
    }


def test_thresholds_by_hand() -> None:
    assert thresholds_by_hand(7, 16) == set()
    assert thresholds_by_hand(8, 16) == {50}
    assert thresholds_by_hand(16, 16) == {50, 80, 100}
    assert thresholds_by_hand(47, 16) == {50, 80, 100, 200}


def test_the_billing_check_finds_lost_counts_repeats_and_wrong_thresholds() -> None:
    raw = [_raw(0, i, ("fk00", i + 1, T0 + i)) for i in range(16)]
    raw += [_raw(1, 0, ("fb1", 1, T0))]
    events, _, _ = source_events(raw)
    subscribed = {"fk00"}
    good = check_billing(
        events,
        [_period("fk00", 16), _period("fb1", 0, 1)],
        [_quota("fk00", p) for p in (50, 80, 100)],
        subscribed,
    )
    assert good.problems() == [] and good.periods == 2
    bad = check_billing(
        events,
        [_period("fk00", 15), _period("fb1", 1)],  # one call lost; an unsubscribed key priced
        [_quota("fk00", 50), _quota("fk00", 50), _quota("fk00", 200)],
        subscribed,
    )
    assert bad.mismatches == {"fk00@2026-01": (16, 15), "fb1@2026-01": (1, 0)}
    assert bad.repeated_signals == 1
    assert bad.missing_thresholds == [("fk00@2026-01", 80), ("fk00@2026-01", 100)]
    assert bad.unexpected_thresholds == [("fk00@2026-01", 200)]
    assert len(bad.problems()) == 4


def test_the_faults_catalog_puts_every_steady_key_on_the_plan() -> None:
    from metering.billing.plans import parse_catalog

    catalog = parse_catalog(billing_catalog(3))
    assert catalog.subjects() == ("fk00", "fk01", "fk02")
    assert catalog.plan("faults").included_units == 16
