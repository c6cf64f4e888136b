"""The SQL the job runs after the Python parse (jobs/pipeline_sql.py), as text; the pipeline
tests run it on the MiniCluster."""

from __future__ import annotations

from jobs import pipeline_sql as sql
from metering.detect import early_check, early_thresholds
from schemas.stages import PARSED

PLAN = sql.SqlPlan(dedup=True, reconcile_interval_s=10, source_topic="raw", window_s=10)


def test_deduplication_is_an_over_count_by_the_entry_fingerprint() -> None:
    q = sql.events_query(PLAN)
    # By the parse's fingerprint of the entry, never by the client-chosen request id.
    assert "COUNT(*) OVER (PARTITION BY rate_key, dedup_id ORDER BY pt)" in q
    assert "request_id" not in q
    # Events without a fingerprint (generic events without an id) are never retries.
    assert "CASE WHEN dedup_id IS NULL OR seen = 1 THEN 'enriched' ELSE 'dup' END" in q


def test_without_deduplication_every_event_is_a_first_sighting_after_one_keyed_exchange() -> None:
    q = sql.events_query(sql.SqlPlan(False, 10, "raw"))
    assert "CASE WHEN TRUE THEN 'enriched'" in q
    # The exchange stays: the lateness test must run downstream of the operator windows read.
    assert "OVER (PARTITION BY rate_key ORDER BY pt)" in q


def test_lateness_is_judged_once_after_the_exchange_and_only_for_first_sightings() -> None:
    q = sql.events_query(PLAN)
    assert "AND COALESCE(rowtime <= CURRENT_WATERMARK(rowtime), FALSE) AS late" in q
    # Windows take the on-time first sightings, corrections the late ones: each row once.
    assert "WHERE role = 'enriched' AND NOT late" in sql.windows_query(PLAN)
    assert "WHERE role = 'enriched' AND late" in sql.late_query(PLAN)


def test_events_carry_every_parsed_column_by_name() -> None:
    q = sql.events_query(PLAN)
    for name in PARSED.names:
        if name != "dedup_id":
            assert f"`{name}`" in q


def test_windows_are_tumbling_event_time_windows_per_rate_key() -> None:
    q = sql.windows_query(PLAN)
    assert "TUMBLE(TABLE events, DESCRIPTOR(rowtime), INTERVAL '10' SECOND)" in q
    assert "GROUP BY rate_key, window_start, window_end" in q
    assert "'window_end' VALUE MIN(ws) + 10000" in q
    assert "'count' VALUE COUNT(*)" in q


def test_early_records_only_when_enabled_and_never_on_the_usage_topic() -> None:
    assert sql.early_query(PLAN) is None
    assert "'early'" not in sql.usage_query(PLAN)
    early = sql.SqlPlan(True, 10, "raw", 10, (20, 40, 80))
    assert "WHERE auth_failed AND af IN (20, 40, 80)" in (sql.early_query(early) or "")
    assert sql.usage_query(early).count("UNION ALL") == 2
    assert sql.usage_sink_query() == (
        "SELECT k, json AS v FROM usage_records WHERE kind <> 'early'"
    )


def test_early_thresholds_are_exactly_the_counts_early_check_accepts() -> None:
    thresholds = early_thresholds(20)
    assert [t for t in range(1, 5000) if early_check(t, 20)] == [t for t in thresholds if t < 5000]
    assert early_thresholds(0) == ()


def test_every_entry_lands_in_exactly_one_ledger_column() -> None:
    q = sql.ledger_query(PLAN)
    # A record is counted by its first event (record_events > 0) or else by its first dead letter.
    assert "'records_in' VALUE SUM(rec)" in q
    assert "'entries_in' VALUE SUM(n) + SUM(dead)" in q
    assert "'enriched_out' VALUE SUM(n) - SUM(dup)" in q
    assert "'deduplicated' VALUE SUM(dup)" in q
    assert "'late' VALUE SUM(lt)" in q
    assert "GROUP BY p, ivl" in q and "s - MOD(s, 10) AS ivl" in q


def test_the_source_topic_is_a_quoted_literal() -> None:
    q = sql.ledger_query(sql.SqlPlan(True, 10, "it's"))
    assert "'source_topic' VALUE 'it''s'" in q


def test_the_parse_hands_sql_the_fingerprint_it_deduplicates_on() -> None:
    assert "dedup_id" in PARSED.names
    assert "request_id" not in PARSED.names
