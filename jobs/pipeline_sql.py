"""Flink SQL for the steps after the Python parse that need no Python: gateway-retry
deduplication, the enriched topic, and reconciliation. Built as strings from plain values, so
tests need no JVM.

Why SQL: as a Python keyed function, deduplication cost every event a blocking state request
from the Python worker to the JVM (every request id is new, so no cache helps). In SQL the
state lives in the JVM.

- ``events_query``: one row per event, ``role`` ``enriched`` for the first sighting of its
  (rate key, dedup id) within the dedup horizon and ``dup`` for a gateway retry. The dedup id
  is the parse's fingerprint of the entry's bytes (metering.records), never a client-chosen
  header: a client sending one constant x-request-id is billed for every call. The sightings
  are an unbounded OVER count whose state expires after the horizon (``table.exec.state.ttl``).
  Deterministic, so it can be read by several plans.
- ``windows_query``: the first sightings, as the Python window operator reads them. Windows stay
  in Python (udfs.functions.KeyedWindows) because the lateness decision must see the window's
  own watermark: a SQL window drops late rows silently.
- ``enriched_query`` and ``ledger_query``: the enriched topic, and per source partition and
  interval of Kafka record time, what came in and where it went. The ledger is an updating
  aggregate, so the reconciliation topic is an upsert topic: the latest record per key counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

ROLE_ENRICHED = "enriched"
ROLE_DUP = "dup"
ROLE_DEAD = "dead"
ROLE_LATE = "late"


@dataclass(frozen=True)
class SqlPlan:
    dedup: bool
    reconcile_interval_s: int
    source_topic: str


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def events_query(plan: SqlPlan, parsed: str = "parsed") -> str:
    """One row per event: role (enriched or dup), and what windows, sinks and the ledger need."""
    seen = (
        "CASE WHEN dedup_id IS NULL THEN CAST(1 AS BIGINT) ELSE "
        "COUNT(*) OVER (PARTITION BY rate_key, dedup_id ORDER BY pt) END"
        if plan.dedup
        else "CAST(1 AS BIGINT)"
    )
    return f"""
SELECT
  CASE WHEN seen = 1 THEN '{ROLE_ENRICHED}' ELSE '{ROLE_DUP}' END AS role,
  rate_key, consumer, key_fingerprint, country, auth_failed, units, event_time, `value`,
  source_partition AS p, kafka_s AS s, source_offset AS o, first_of_record AS `first`,
  rowtime AS event_ts
FROM (
  SELECT *, {seen} AS seen FROM {parsed}
)"""


def keyed_query(columns: Sequence[str], events: str = "events") -> str:
    """The first sightings as (rate key, row of ``columns``): the shape of a keyed stream."""
    return (
        f"SELECT rate_key AS k, ROW({', '.join(columns)}) AS v "
        f"FROM {events} WHERE role = '{ROLE_ENRICHED}'"
    )


def enriched_query(events: str = "events") -> str:
    return f"SELECT rate_key AS k, `value` AS v FROM {events} WHERE role = '{ROLE_ENRICHED}'"


def ledger_query(
    plan: SqlPlan, events: str = "events", dead: str = "dead_letters", late: str = "late_events"
) -> str:
    """Per source partition and interval of Kafka record time: records and entries in, and where
    each entry went. Every input entry is exactly one enriched, dup or dead row; a late event is
    an enriched row, and its late row only adds to ``late``."""
    i = plan.reconcile_interval_s

    def count(cond: str) -> str:
        return f"SUM(CASE WHEN {cond} THEN 1 ELSE 0 END)"

    entry = f"role <> '{ROLE_LATE}'"
    return f"""
SELECT CONCAT(CAST(p AS STRING), '@', CAST(ivl * 1000 AS STRING)) AS k,
  JSON_OBJECT(
    'source_topic' VALUE {_quote(plan.source_topic)},
    'source_partition' VALUE p,
    'interval_start' VALUE ivl * 1000,
    'interval_end' VALUE (ivl + {i}) * 1000,
    'offset_first' VALUE MIN(o),
    'offset_last' VALUE MAX(o),
    'records_in' VALUE {count(f"{entry} AND `first`")},
    'entries_in' VALUE {count(entry)},
    'enriched' VALUE {count(f"role IN ('{ROLE_ENRICHED}', '{ROLE_DUP}')")},
    'enriched_out' VALUE {count(f"role = '{ROLE_ENRICHED}'")},
    'dead_lettered' VALUE {count(f"role = '{ROLE_DEAD}'")},
    'deduplicated' VALUE {count(f"role = '{ROLE_DUP}'")},
    'late' VALUE {count(f"role = '{ROLE_LATE}'")}
    NULL ON NULL) AS v
FROM (
  SELECT role, p, o, `first`, s - MOD(s, {i}) AS ivl FROM {events}
  UNION ALL
  SELECT '{ROLE_DEAD}', source_partition, source_offset, first_of_record,
    kafka_s - MOD(kafka_s, {i})
  FROM {dead}
  UNION ALL
  SELECT '{ROLE_LATE}', p, CAST(NULL AS BIGINT), FALSE, s - MOD(s, {i}) FROM {late}
)
GROUP BY p, ivl"""
