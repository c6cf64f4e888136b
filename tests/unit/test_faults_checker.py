"""The fault suite's checker (tools/faults.py verify), tested without any broker: a checker
that cannot fail proves nothing. The suite itself runs with `make faults`."""

from __future__ import annotations

import json
from typing import Any

from tools.faults import verify
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
