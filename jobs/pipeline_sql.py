"""Flink SQL for everything after the Python parse except the usage windows (a JVM operator,
jvm/) and anomaly detection: gateway-retry deduplication, the usage records' JSON, the enriched
topic and reconciliation. All per-event keyed state lives in the JVM, where checkpoints hold it and
its timers; Python sees one call per batch of Kafka records (the parse) and one per window record
(the detector). Built as strings from plain values, so tests need no JVM.

- ``events_query``: one row per parsed event. ``role`` is ``enriched`` for the first sighting of
  its (rate key, dedup id) within the dedup horizon and ``dup`` for a gateway retry: an unbounded
  OVER count whose state expires after the horizon (``table.exec.state.ttl``). The dedup id is the
  parse's fingerprint of the entry's bytes, never a client-chosen header.
- ``first_sightings_query``: what the usage windows count. The windows split late events from
  on-time ones against their own watermark (jvm/, UsageWindows says why a SQL window cannot).
- ``window_records_query`` and ``late_query``: the windows' fires (closed windows, and early
  records of open windows whose auth failures reached a threshold) and the late events, as usage
  records. A late event is never dropped: it becomes a ``late_correction`` of its own, to be
  added to its window's count.
- ``enriched_query`` and ``ledger_query``: the enriched topic, and per source partition and
  interval of Kafka record time, what came in and where it went (an updating aggregate, so the
  reconciliation topic is an upsert topic: the latest record per key counts).
"""

from __future__ import annotations

from dataclasses import dataclass

from metering.records import CLIENT_KEY_PREFIX
from schemas.stages import DEAD, FIRST_SIGHTING, PARSED, RECORD_SCALARS

ROLE_ENRICHED = "enriched"
ROLE_DUP = "dup"
KIND_WINDOW = "window"
KIND_LATE = "late_correction"
KIND_EARLY = "early"
KIND_SHARED = "shared"
DETECTOR_ONLY_KINDS = (KIND_EARLY, KIND_SHARED)
"""Window records only the detector reads: early fires of open windows, and the shared signal
(jvm/ UsageWindows.sharedFailures), which counts clients, not usage."""
EVENT_TS = "TO_TIMESTAMP_LTZ(event_time, 3)"
"""An event's own time, from the payload (``event_time``: epoch ms)."""


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


def _parsed_record_field(name: str, records: str, entry: str) -> str:
    """A PARSED field of the unnested entry: the record's own, or element i of its array."""
    if name in RECORD_SCALARS:
        return f"{records}.`{name}`"
    if name == "record_events":
        # The record's event count on its first event, 0 on the others (PARSED says why).
        return f"CASE WHEN {entry}.i = 1 THEN CARDINALITY({records}.`value`) ELSE 0 END"
    if name == "value":
        return f"{entry}.v"
    return f"{records}.`{name}`[{entry}.i]"


def parsed_events_query(records: str = "parsed_records") -> str:
    """The parse's records (PARSED_RECORD) unnested into one PARSED row per event, with the
    record's processing-time attribute ``pt``."""
    fields = ",\n  ".join(f"{_parsed_record_field(n, 'r', 'e')} AS `{n}`" for n in PARSED.names)
    return f"""
SELECT
  {fields},
  r.pt
FROM {records} AS r
CROSS JOIN UNNEST(r.`value`) WITH ORDINALITY AS e(v, i)"""


def dead_letters_query(records: str = "parsed_records") -> str:
    """The parse's records unnested into one DEAD row per dead letter."""
    columns = {
        **{n: f"r.`{n}`" for n in RECORD_SCALARS},
        # The record gave no event and this is its first dead letter (DEAD says why).
        "first_of_record": "(d.i = 1 AND CARDINALITY(r.`value`) = 0)",
        "v": "d.v",
    }
    fields = ", ".join(f"{columns[n]} AS `{n}`" for n in DEAD.names)
    return f"""
SELECT {fields}
FROM {records} AS r
CROSS JOIN UNNEST(r.dead) WITH ORDINALITY AS d(v, i)"""


def events_query(plan: SqlPlan, parsed: str = "parsed") -> str:
    """One row per event: its role (enriched or dup) and what the windows, sinks and the ledger
    need."""
    columns = ", ".join(f"`{n}`" for n in PARSED.names if n != "dedup_id")
    if not plan.dedup:
        return f"SELECT '{ROLE_ENRICHED}' AS role, {columns}, {EVENT_TS} AS event_ts FROM {parsed}"
    return f"""
SELECT
  CASE WHEN dedup_id IS NULL OR seen = 1 THEN '{ROLE_ENRICHED}' ELSE '{ROLE_DUP}' END AS role,
  {columns},
  {EVENT_TS} AS event_ts
FROM (
  SELECT *, COUNT(*) OVER (PARTITION BY rate_key, dedup_id ORDER BY pt) AS seen FROM {parsed}
)"""


def first_sightings_query(events: str = "events") -> str:
    """What the usage windows count: the first sightings, with the rowtime that becomes each
    record's timestamp when the table turns into a DataStream."""
    return f"""
SELECT {FIRST_SIGHTING.columns()}, rowtime
FROM {events}
WHERE role = '{ROLE_ENRICHED}'"""


def _usage_json(
    kind: str,
    start: str,
    window_s: int,
    count: str,
    units: str,
    failures: str,
    countries: str,
    networks: str,
    paths: str,
) -> str:
    """A usage record's JSON (schemas.events.UsageRecord; metering.detect.window_record)."""
    return f"""JSON_OBJECT(
    'kind' VALUE {kind},
    'rate_key' VALUE rate_key,
    'consumer' VALUE consumer,
    'key_fingerprint' VALUE key_fingerprint,
    'window_start' VALUE {start},
    'window_end' VALUE {start} + {window_s * 1000},
    'count' VALUE {count},
    'units' VALUE {units},
    'auth_failures' VALUE {failures},
    'countries' VALUE {countries},
    'networks' VALUE {networks},
    'paths' VALUE {paths}
    NULL ON NULL)"""


def window_records_query(plan: SqlPlan, windows: str = "window_records") -> str:
    """The usage windows' fires (closed windows and early records) as usage records."""
    record = _usage_json(
        "kind",
        "ws",
        plan.window_s,
        "`count`",
        "units",
        "auth_failures",
        "countries",
        "networks",
        "paths",
    )
    return f"""
SELECT k, {record} AS json, kind, CAST(NULL AS INT) AS p, CAST(NULL AS BIGINT) AS s
FROM (SELECT *, k AS rate_key FROM {windows})"""


def late_query(plan: SqlPlan, late: str = "late_events") -> str:
    """One ``late_correction`` usage record per late event, with its source partition and Kafka
    second for the ledger."""
    record = _usage_json(
        f"'{KIND_LATE}'",
        "event_time - MOD(event_time, " + str(plan.window_s * 1000) + ")",
        plan.window_s,
        "CAST(1 AS BIGINT)",
        "units",
        "CAST(CASE WHEN auth_failed THEN 1 ELSE 0 END AS BIGINT)",
        "ARRAY_REMOVE(ARRAY[country], CAST(NULL AS STRING))",
        "CAST(CASE WHEN client_prefix IS NULL THEN 0 ELSE 1 END AS BIGINT)",
        # As the windows count paths: only for a key billing prices.
        "CASE WHEN path IS NULL OR (consumer IS NULL AND key_fingerprint IS NULL) "
        "THEN CAST(NULL AS MAP<STRING, BIGINT>) ELSE MAP[path, CAST(1 AS BIGINT)] END",
    )
    return f"""
SELECT rate_key AS k, {record} AS json, '{KIND_LATE}' AS kind, p, s
FROM {late}"""


def usage_query(plan: SqlPlan, windows: str = "window_records", late: str = "late_events") -> str:
    """Window fires and late corrections as one stream of (rate key, record): the usage topic
    and the detector both read it, so each window is computed once."""
    return window_records_query(plan, windows) + "\nUNION ALL\n" + late_query(plan, late)


def usage_sink_query(usage: str = "usage_records") -> str:
    """The usage topic: every usage record but those only the detector reads."""
    kinds = ", ".join(f"'{k}'" for k in DETECTOR_ONLY_KINDS)
    return f"SELECT k, json AS v FROM {usage} WHERE kind NOT IN ({kinds})"


def billable_usage_query(usage: str = "usage_records") -> str:
    """The usage records billing prices: closed windows and late corrections of identified
    keys (a consumer, an API key), never an anonymous client's nor a detector-only record."""
    return f"""
SELECT * FROM {usage}
WHERE kind IN ('{KIND_WINDOW}', '{KIND_LATE}')
  AND k NOT LIKE '{CLIENT_KEY_PREFIX}%'"""


def enriched_query(events: str = "events") -> str:
    return f"SELECT rate_key AS k, `value` AS v FROM {events} WHERE role = '{ROLE_ENRICHED}'"


def ledger_query(
    plan: SqlPlan,
    events: str = "events",
    dead: str = "dead_letters",
    usage: str = "usage_records",
) -> str:
    """Per source partition and interval of Kafka record time: records and entries in, and where
    each entry went. It reads one row per record (its first event carries the record's event
    count), plus one per retry, dead letter and late correction, not one per event:

        entries_in = enriched + dead_lettered, enriched = enriched_out + deduplicated.

    ``late`` counts the late corrections themselves, so it matches the usage topic exactly.
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
    CASE WHEN role = '{ROLE_DUP}' THEN 1 ELSE 0 END AS dup, 0 AS lt
  FROM {events}
  WHERE record_events > 0 OR role = '{ROLE_DUP}'
  UNION ALL
  SELECT p, o, s - MOD(s, {i}), CAST(0 AS BIGINT),
    CASE WHEN first_of_record THEN 1 ELSE 0 END, 1, 0, 0
  FROM {dead}
  UNION ALL
  SELECT p, CAST(NULL AS BIGINT), s - MOD(s, {i}), CAST(0 AS BIGINT), 0, 0, 0, 1
  FROM {usage}
  WHERE kind = '{KIND_LATE}'
)
GROUP BY p, ivl"""
