"""Flink SQL for everything after the Python parse except anomaly detection: gateway-retry
deduplication, the lateness split, the usage windows, the early auth-failure records, the
enriched topic and reconciliation. All per-event keyed state lives here, in the JVM, where
checkpoints hold it and its timers; Python sees one call per Kafka record (the parse) and one per
window record (the detector). Built as strings from plain values, so tests need no JVM.

- ``events_query``: one row per parsed event. ``role`` is ``enriched`` for the first sighting of
  its (rate key, dedup id) within the dedup horizon and ``dup`` for a gateway retry: an unbounded
  OVER count whose state expires after the horizon (``table.exec.state.ttl``). The dedup id is the
  parse's fingerprint of the entry's bytes, never a client-chosen header. ``late`` marks a first
  sighting whose window the watermark has already passed.
- ``windows_query``: tumbling event-time windows per rate key over the on-time events, emitted
  when the watermark passes their end.
- ``late_query``: a late event is never dropped: it becomes a ``late_correction`` usage record
  of its own, to be added to its window's count.
- ``early_query``: while a window is open, a running count per (rate key, window); the event
  that takes its auth failures to a threshold (``metering.detect.early_thresholds``) emits the
  window so far, so the detector can alert before the window closes.
- ``enriched_query`` and ``ledger_query``: the enriched topic, and per source partition and
  interval of Kafka record time, what came in and where it went (an updating aggregate, so the
  reconciliation topic is an upsert topic: the latest record per key counts).

Why the lateness split is exact: ``late`` is computed right after the dedup's keyed exchange, and
the window operator reads the output of that same operator. A window operator's watermark is the
minimum over its inputs of what they sent, and each input sent its watermark before the rows it
emits after it, so a row judged on time there arrives at the window before the window's
watermark can pass it: every row is counted by exactly one of its window and a correction. (An
upstream test, before any exchange, would not hold: after a source subtask was idle, the window
operator's watermark can be ahead of that subtask's, and the window would drop the row silently.)
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.stages import PARSED

ROLE_ENRICHED = "enriched"
ROLE_DUP = "dup"
KIND_WINDOW = "window"
KIND_LATE = "late_correction"
KIND_EARLY = "early"


@dataclass(frozen=True)
class SqlPlan:
    dedup: bool
    reconcile_interval_s: int
    source_topic: str
    window_s: int = 10
    early_thresholds: tuple[int, ...] = ()
    """Auth-failure counts at which an open window goes to the detector early (empty: never)."""


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def events_query(plan: SqlPlan, parsed: str = "parsed") -> str:
    """One row per event: role (enriched or dup), late, and what windows, sinks and the ledger
    need. With deduplication off, the count is per rate key and ignored: the keyed exchange stays,
    because the lateness test must run downstream of one (see the module's docstring)."""
    partition = "rate_key, dedup_id" if plan.dedup else "rate_key"
    first = "dedup_id IS NULL OR seen = 1" if plan.dedup else "TRUE"
    columns = ", ".join(f"`{n}`" for n in PARSED.names if n != "dedup_id")
    return f"""
SELECT
  CASE WHEN {first} THEN '{ROLE_ENRICHED}' ELSE '{ROLE_DUP}' END AS role,
  ({first}) AND COALESCE(rowtime <= CURRENT_WATERMARK(rowtime), FALSE) AS late,
  {columns},
  rowtime AS event_ts
FROM (
  SELECT *, COUNT(*) OVER (PARTITION BY {partition} ORDER BY pt) AS seen FROM {parsed}
)"""


def _first_sightings(late: bool) -> str:
    return f"role = '{ROLE_ENRICHED}' AND {'' if late else 'NOT '}late"


def _usage_json(
    kind: str,
    start: str,
    window_s: int,
    count: str,
    units: str,
    failures: str,
    countries: str,
    consumer: str = "consumer",
    fingerprint: str = "key_fingerprint",
) -> str:
    """A usage record's JSON (schemas.events.UsageRecord; metering.detect.window_record)."""
    return f"""JSON_OBJECT(
    'kind' VALUE '{kind}',
    'rate_key' VALUE rate_key,
    'consumer' VALUE {consumer},
    'key_fingerprint' VALUE {fingerprint},
    'window_start' VALUE {start},
    'window_end' VALUE {start} + {window_s * 1000},
    'count' VALUE {count},
    'units' VALUE {units},
    'auth_failures' VALUE {failures},
    'countries' VALUE {countries}
    NULL ON NULL)"""


_FAILED = "CASE WHEN auth_failed THEN 1 ELSE 0 END"
_NO_NULL = "CAST(NULL AS STRING)"


def _window_start(window_s: int) -> str:
    return f"event_time - MOD(event_time, {window_s * 1000})"


def windows_query(plan: SqlPlan, events: str = "events") -> str:
    """Closed windows of on-time first sightings, per rate key. The identity columns take the
    smallest value seen (deterministic on replay); on a consumer's or a key's rate key they are
    constant anyway."""
    record = _usage_json(
        KIND_WINDOW,
        "MIN(ws)",
        plan.window_s,
        "COUNT(*)",
        "SUM(units)",
        f"SUM({_FAILED})",
        f"ARRAY_SORT(ARRAY_REMOVE(ARRAY_AGG(DISTINCT country), {_NO_NULL}))",
        consumer="MIN(consumer)",
        fingerprint="MIN(key_fingerprint)",
    )
    return f"""
SELECT rate_key AS k, {record} AS json, '{KIND_WINDOW}' AS kind
FROM (
  SELECT rate_key, consumer, key_fingerprint, country, auth_failed, units,
    {_window_start(plan.window_s)} AS ws, window_start, window_end
  FROM TABLE(TUMBLE(TABLE {events}, DESCRIPTOR(rowtime), INTERVAL '{plan.window_s}' SECOND))
  WHERE {_first_sightings(late=False)}
)
GROUP BY rate_key, window_start, window_end"""


def late_query(plan: SqlPlan, events: str = "events") -> str:
    """One ``late_correction`` usage record per late event."""
    record = _usage_json(
        KIND_LATE,
        "ws",
        plan.window_s,
        "CAST(1 AS BIGINT)",
        "units",
        _FAILED,
        f"ARRAY_REMOVE(ARRAY[country], {_NO_NULL})",
    )
    return f"""
SELECT rate_key AS k, {record} AS json, '{KIND_LATE}' AS kind
FROM (
  SELECT *, {_window_start(plan.window_s)} AS ws FROM {events}
  WHERE {_first_sightings(late=True)}
)"""


def early_query(plan: SqlPlan, events: str = "events") -> str | None:
    """Open windows whose auth failures just reached a threshold, as ``early`` records; None
    when early alerts are off."""
    if not plan.early_thresholds:
        return None
    thresholds = ", ".join(str(t) for t in plan.early_thresholds)
    record = _usage_json(KIND_EARLY, "ws", plan.window_s, "c", "u", "af", "cs")
    return f"""
SELECT rate_key AS k, {record} AS json, '{KIND_EARLY}' AS kind
FROM (
  SELECT rate_key, ws, auth_failed,
    MIN(consumer) OVER w AS consumer,
    MIN(key_fingerprint) OVER w AS key_fingerprint,
    COUNT(*) OVER w AS c,
    SUM(units) OVER w AS u,
    SUM({_FAILED}) OVER w AS af,
    ARRAY_SORT(ARRAY_REMOVE(ARRAY_AGG(DISTINCT country) OVER w, {_NO_NULL})) AS cs
  FROM (
    SELECT *, {_window_start(plan.window_s)} AS ws FROM {events}
    WHERE {_first_sightings(late=False)}
  )
  WINDOW w AS (PARTITION BY rate_key, ws ORDER BY pt)
)
WHERE auth_failed AND af IN ({thresholds})"""


def usage_query(plan: SqlPlan, events: str = "events") -> str:
    """Closed windows, late corrections and early records as one stream of (rate key, record):
    the usage topic and the detector both read it, so each window is computed once."""
    parts = [windows_query(plan, events), late_query(plan, events)]
    if (early := early_query(plan, events)) is not None:
        parts.append(early)
    union = "\nUNION ALL\n".join(parts)
    return union


def usage_sink_query(usage: str = "usage_records") -> str:
    """The usage topic: every usage record but the early ones, which only the detector reads."""
    return f"SELECT k, json AS v FROM {usage} WHERE kind <> '{KIND_EARLY}'"


def enriched_query(events: str = "events") -> str:
    return f"SELECT rate_key AS k, `value` AS v FROM {events} WHERE role = '{ROLE_ENRICHED}'"


def ledger_query(plan: SqlPlan, events: str = "events", dead: str = "dead_letters") -> str:
    """Per source partition and interval of Kafka record time: records and entries in, and where
    each entry went. It reads one row per record (its first event carries the record's event
    count), plus one per retry, late event and dead letter, not one per event:

        entries_in = enriched + dead_lettered, enriched = enriched_out + deduplicated.
    """
    i = plan.reconcile_interval_s
    return f"""
SELECT CONCAT(CAST(p AS STRING), '@', CAST(ivl * 1000 AS STRING)) AS k,
  JSON_OBJECT(
    'source_topic' VALUE {_quote(plan.source_topic)},
    'source_partition' VALUE p,
    'interval_start' VALUE ivl * 1000,
    'interval_end' VALUE (ivl + {i}) * 1000,
    'offset_first' VALUE MIN(o),
    'offset_last' VALUE MAX(o),
    'records_in' VALUE SUM(rec),
    'entries_in' VALUE SUM(n) + SUM(dead),
    'enriched' VALUE SUM(n),
    'enriched_out' VALUE SUM(n) - SUM(dup),
    'dead_lettered' VALUE SUM(dead),
    'deduplicated' VALUE SUM(dup),
    'late' VALUE SUM(lt)
    NULL ON NULL) AS v
FROM (
  SELECT p, o, s - MOD(s, {i}) AS ivl, CAST(record_events AS BIGINT) AS n,
    CASE WHEN record_events > 0 THEN 1 ELSE 0 END AS rec, 0 AS dead,
    CASE WHEN role = '{ROLE_DUP}' THEN 1 ELSE 0 END AS dup,
    CASE WHEN late THEN 1 ELSE 0 END AS lt
  FROM {events}
  WHERE record_events > 0 OR role = '{ROLE_DUP}' OR late
  UNION ALL
  SELECT p, o, s - MOD(s, {i}), CAST(0 AS BIGINT),
    CASE WHEN first_of_record THEN 1 ELSE 0 END, 1, 0, 0
  FROM {dead}
)
GROUP BY p, ivl"""
