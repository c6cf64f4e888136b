"""The SQL the job runs after the Python parse (jobs/pipeline_sql.py), as text; the pipeline
tests run it on the MiniCluster."""

from __future__ import annotations

from jobs import pipeline_sql as sql
from udfs.functions import (
    PARSED_FIELDS,
    W_EVENT_TIME,
    W_KAFKA_S,
    W_PARTITION,
    W_RATE_KEY,
    WINDOW_FIELDS,
)

PLAN = sql.SqlPlan(dedup=True, reconcile_interval_s=10, source_topic="raw")


def test_deduplication_is_an_over_count_only_when_enabled() -> None:
    # By the parse's fingerprint of the entry, never by the client-chosen request id.
    over = "COUNT(*) OVER (PARTITION BY rate_key, dedup_id ORDER BY pt)"
    assert over in sql.events_query(PLAN)
    assert "request_id" not in sql.events_query(PLAN)
    # Events without a fingerprint (generic events without an id) are never retries.
    assert "CASE WHEN dedup_id IS NULL THEN CAST(1 AS BIGINT)" in sql.events_query(PLAN)
    off = sql.events_query(sql.SqlPlan(False, 10, "raw"))
    assert "OVER" not in off and "CAST(1 AS BIGINT) AS seen" in off


def test_the_window_operator_reads_the_columns_it_indexes() -> None:
    cols = WINDOW_FIELDS
    assert (cols[W_RATE_KEY], cols[W_EVENT_TIME], cols[W_PARTITION], cols[W_KAFKA_S]) == (
        "rate_key",
        "event_time",
        "p",
        "s",
    )
    assert sql.keyed_query(cols) == (
        "SELECT rate_key AS k, ROW(rate_key, consumer, key_fingerprint, country, auth_failed, "
        "units, event_time, p, s) AS v FROM events WHERE role = 'enriched'"
    )


def test_every_entry_lands_in_exactly_one_ledger_column() -> None:
    q = sql.ledger_query(PLAN)
    # An entry is an enriched, dup or dead row; late rows only count as late.
    assert "'entries_in' VALUE SUM(CASE WHEN role <> 'late' THEN 1 ELSE 0 END)" in q
    assert "'enriched_out' VALUE SUM(CASE WHEN role = 'enriched'" in q
    assert "'deduplicated' VALUE SUM(CASE WHEN role = 'dup'" in q
    assert "'dead_lettered' VALUE SUM(CASE WHEN role = 'dead'" in q
    assert "'late' VALUE SUM(CASE WHEN role = 'late'" in q
    assert "GROUP BY p, ivl" in q and "s - MOD(s, 10) AS ivl" in q


def test_the_source_topic_is_a_quoted_literal() -> None:
    q = sql.ledger_query(sql.SqlPlan(True, 10, "it's"))
    assert "'source_topic' VALUE 'it''s'" in q


def test_the_parse_hands_sql_the_fingerprint_it_deduplicates_on() -> None:
    assert "dedup_id" in PARSED_FIELDS
    assert "request_id" not in PARSED_FIELDS
