"""The Pinot freshness probe's pure parts: which raw records became visible, and percentiles."""

from __future__ import annotations

from tools.pinot_freshness import Freshness, newly_visible


def test_ranges_that_became_visible_between_two_frontiers() -> None:
    before = {0: 10, 1: 4}
    after = {0: 13, 1: 4, 2: 7}
    # Partition 0 moved 10 -> 13: records 11..13. Partition 1 did not move. Partition 2 is new:
    # when its earlier records appeared is unknown, so only its newest counts.
    assert newly_visible(before, after) == [(0, 11, 13), (2, 7, 7)]
    assert newly_visible(after, after) == []


def test_nearest_rank_percentiles_and_summary() -> None:
    f = Freshness(latencies_ms=[float(ms) for ms in range(1000, 11000, 1000)], poll_s=0.5)
    assert (f.percentile(50), f.percentile(90), f.percentile(99)) == (5000.0, 9000.0, 10000.0)
    assert f.summary() == (
        "10 records, produce -> queryable in Pinot: p50 5.00 s, p95 10.00 s, p99 10.00 s, "
        "max 10.00 s (polled every 0.50 s)"
    )
    assert Freshness().percentile(50) is None
    assert Freshness().summary() == "no record became queryable while the probe ran"
