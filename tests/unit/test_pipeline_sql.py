"""The SQL the job runs after the Python parse (jobs/pipeline_sql.py), as text; the pipeline
tests run it on the MiniCluster."""

from __future__ import annotations

from jobs import pipeline_sql as sql
from metering.detect import early_check, early_thresholds
from schemas.stages import FIRST_SIGHTING, PARSED

PLAN = sql.SqlPlan(dedup=True, reconcile_interval_s=10, source_topic="raw", window_s=10)


def test_deduplication_is_an_over_count_by_the_entry_fingerprint() -> None:
    q = sql.events_query(PLAN)
    # By the parse's fingerprint of the entry, never by the client-chosen request id.
    assert "COUNT(*) OVER (PARTITION BY rate_key, dedup_id ORDER BY pt)" in q
    assert "request_id" not in q
    # Events without a fingerprint (generic events without an id) are never retries.
    assert "CASE WHEN dedup_id IS NULL OR seen = 1 THEN 'enriched' ELSE 'dup' END" in q


def test_without_deduplication_every_event_is_a_first_sighting() -> None:
    q = sql.events_query(sql.SqlPlan(False, 10, "raw"))
    assert q.startswith("SELECT 'enriched' AS role,")
    assert "OVER" not in q


def test_events_carry_every_parsed_column_by_name() -> None:
    q = sql.events_query(PLAN)
    for name in PARSED.names:
        if name != "dedup_id":
            assert f"`{name}`" in q


def test_the_windows_count_first_sightings_with_their_rowtime() -> None:
    q = sql.first_sightings_query()
    assert "WHERE role = 'enriched'" in q
    # The JVM windows read the first-sighting fields by name, in the stage's order.
    assert f"SELECT {FIRST_SIGHTING.columns()}, rowtime" in q


def test_window_fires_and_late_events_become_usage_records() -> None:
    w = sql.window_records_query(PLAN)
    # The kind is the fire's own: a closed window or an early record.
    assert "'kind' VALUE kind" in w
    assert "'window_end' VALUE ws + 10000" in w
    late = sql.late_query(PLAN)
    assert "'kind' VALUE 'late_correction'" in late
    assert "'window_start' VALUE event_time - MOD(event_time, 10000)" in late
    assert "'count' VALUE CAST(1 AS BIGINT)" in late
    # Late corrections keep their source partition and second, for the ledger.
    assert "'late_correction' AS kind, p, s" in late
    assert sql.usage_query(PLAN).count("UNION ALL") == 1


def test_early_and_shared_records_never_reach_the_usage_topic() -> None:
    assert sql.usage_sink_query() == (
        "SELECT k, json AS v FROM usage_records WHERE kind NOT IN ('early', 'shared')"
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
    # Late counts the late corrections themselves, one row each.
    assert "FROM usage_records\n  WHERE kind = 'late_correction'" in q
    assert "GROUP BY p, ivl" in q and "s - MOD(s, 10) AS ivl" in q


def test_the_source_topic_is_a_quoted_literal() -> None:
    q = sql.ledger_query(sql.SqlPlan(True, 10, "it's"))
    assert "'source_topic' VALUE 'it''s'" in q


def test_the_parse_hands_sql_the_fingerprint_it_deduplicates_on() -> None:
    assert "dedup_id" in PARSED.names
    assert "request_id" not in PARSED.names


def test_events_keep_their_own_time_and_the_record_processing_time() -> None:
    # The watermark is the record's (from its latest event); each event's rowtime is its own.
    assert "r.pt" in sql.parsed_events_query()
    for plan in (PLAN, sql.SqlPlan(False, 10, "raw")):
        assert f"{sql.EVENT_TS} AS event_ts" in sql.events_query(plan)
