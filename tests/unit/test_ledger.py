"""Reconciliation arithmetic."""

from __future__ import annotations

from metering.ledger import Ledger
from schemas.events import Reconciliation


def test_ledger_sums_deltas_and_tracks_the_offset_range() -> None:
    ledger = Ledger()
    # (partition, offset, records, entries, enriched, dead, dedup, late)
    ledger.add((0, 10, 1, 50, 49, 1, 0, 0))
    ledger.add((0, 12, 1, 1, 0, 1, 0, 0))
    ledger.add((0, 11, 1, 3, 3, 0, 0, 0))
    ledger.add((0, -1, 0, 0, 0, 0, 2, 0))  # two retries dropped downstream
    ledger.add((0, -1, 0, 0, 0, 0, 0, 1))  # one late event corrected
    record = ledger.record("gateway.raw", 0, 1000, 2000)
    assert record == {
        "source_topic": "gateway.raw",
        "source_partition": 0,
        "interval_start": 1000,
        "interval_end": 2000,
        "offset_first": 10,
        "offset_last": 12,
        "records_in": 3,
        "entries_in": 54,
        "enriched": 52,
        "enriched_out": 50,
        "dead_lettered": 2,
        "deduplicated": 2,
        "late": 1,
    }
    assert record["entries_in"] == (
        record["enriched_out"] + record["dead_lettered"] + record["deduplicated"]
    )
    Reconciliation.model_validate(record)


def test_an_empty_ledger_reports_nothing() -> None:
    assert Ledger().empty()
    ledger = Ledger()
    ledger.add((1, -1, 0, 0, 0, 0, 1, 0))
    assert not ledger.empty()
    assert ledger.record("t", 1, 0, 1)["offset_first"] is None
