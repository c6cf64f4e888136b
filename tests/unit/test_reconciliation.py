"""Reading the reconciliation upsert stream: the latest record per (partition, interval) counts."""

from __future__ import annotations

from metering.reconciliation import latest, totals, totals_by_partition


def report(p: int, start: int, **counts: int) -> dict[str, int]:
    return {"source_partition": p, "interval_start": start} | counts


def test_later_reports_of_an_interval_supersede_earlier_ones() -> None:
    reports = [
        report(0, 1000, records_in=1, entries_in=3, enriched_out=3),
        report(1, 1000, records_in=2, entries_in=2, enriched_out=1, dead_lettered=1),
        report(0, 1000, records_in=2, entries_in=5, enriched_out=4, deduplicated=1),
        report(0, 2000, records_in=1, entries_in=1, enriched_out=1, late=1),
    ]
    assert latest(reports) == [reports[2], reports[1], reports[3]]
    by_partition = totals_by_partition(reports)
    assert by_partition[0]["records_in"] == 3
    assert by_partition[0]["entries_in"] == 6
    assert by_partition[0]["deduplicated"] == 1
    assert by_partition[1]["dead_lettered"] == 1
    t = totals(reports)
    assert (t["records_in"], t["entries_in"], t["enriched_out"], t["late"]) == (5, 8, 6, 1)
    assert t["entries_in"] == t["enriched_out"] + t["dead_lettered"] + t["deduplicated"]


def test_no_reports_no_totals() -> None:
    assert latest([]) == [] and totals([]) == {} and totals_by_partition([]) == {}
