"""The records the job hands between its stages, each declared once as (name, SQL type).

The PyFlink Row types (udfs.functions) and the SQL column lists (jobs.pipeline_sql) are generated
from these declarations, so a field is added, renamed or retyped in one place; nothing reads a
stage's record by position. Pure: no JVM.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """One stage's record: ordered (name, Flink SQL type) pairs."""

    name: str
    fields: tuple[tuple[str, str], ...]

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.fields]

    def select(self, name: str, names: tuple[str, ...]) -> Stage:
        """A stage of some of this one's fields, in the order given, with their types."""
        types = dict(self.fields)
        return Stage(name, tuple((n, types[n]) for n in names))

    def sql_type(self) -> str:
        """The record as one SQL ROW type."""
        return "ROW<" + ", ".join(f"`{n}` {t}" for n, t in self.fields) + ">"

    def columns(self, alias: str = "") -> str:
        """The SQL column list, quoted, optionally qualified by ``alias``."""
        prefix = f"{alias}." if alias else ""
        return ", ".join(f"{prefix}`{n}`" for n in self.names)


RAW = Stage(
    "raw",
    (
        ("payload", "BYTES"),
        ("partition", "INT"),
        ("offset", "BIGINT"),
        ("kafka_s", "BIGINT"),
    ),
)
"""A Kafka record as the parse receives it: value, partition, offset, timestamp (epoch s)."""

PARSED = Stage(
    "parsed",
    (
        ("rate_key", "STRING"),
        ("consumer", "STRING"),
        ("key_fingerprint", "STRING"),
        ("country", "STRING"),
        ("auth_failed", "BOOLEAN"),
        ("units", "DOUBLE"),
        ("path", "STRING"),
        ("client_prefix", "STRING"),
        ("event_time", "BIGINT"),
        ("dedup_id", "STRING"),
        ("p", "INT"),
        ("o", "BIGINT"),
        ("s", "BIGINT"),
        ("record_events", "INT"),
        ("value", "STRING"),
    ),
)
"""One enriched event as the parse emits it. ``dedup_id``: the entry's retry fingerprint (null:
never a retry). ``p``, ``o``, ``s``: the source record's partition, offset and Kafka timestamp
(epoch s). ``record_events``: on the first event of a record, how many events it gave; 0 on the
others, so the ledger counts records and entries from one row per record. ``value``: the
enriched topic's JSON, serialized once, where the dict is."""

RECORD_SCALARS = ("p", "o", "s")
"""The parsed record's fields that are the Kafka record's own; the others are per event."""

PARSED_RECORD = Stage(
    "parsed_record",
    (
        *PARSED.select("source", RECORD_SCALARS).fields,
        *(
            (n, f"ARRAY<{t}>")
            for n, t in PARSED.fields
            if n not in RECORD_SCALARS and n != "record_events"
        ),
        ("dead", "ARRAY<STRING>"),
    ),
)
"""One Kafka record as the parse returns it, in one crossing per batch of records: its source
coordinates, each event field as an array (element i belongs to the record's i-th event), and
its dead letters' JSON. SQL unnests it into PARSED and DEAD rows (jobs.pipeline_sql)."""

DEAD = Stage(
    "dead",
    (
        ("p", "INT"),
        ("o", "BIGINT"),
        ("s", "BIGINT"),
        ("first_of_record", "BOOLEAN"),
        ("v", "STRING"),
    ),
)
"""One dead letter. ``first_of_record``: the record gave no event and this is its first dead
letter (the record is counted once, by its first event or else by this row)."""

KEYED_JSON = Stage("keyed_json", (("k", "STRING"), ("v", "STRING")))
"""A Kafka record of an output topic: key and JSON value."""

ROUTED_JSON = Stage("routed_json", (("role", "STRING"), ("k", "STRING"), ("v", "STRING")))
"""A Kafka record of one of several output topics, by the topic's role (metering.topics)."""

FIRST_SIGHTING = PARSED.select(
    "first_sighting",
    (
        "rate_key",
        "consumer",
        "key_fingerprint",
        "country",
        "auth_failed",
        "units",
        "path",
        "client_prefix",
        "event_time",
        "p",
        "s",
    ),
)
"""An event the windows count: the first sighting of its entry, without the enriched JSON.
The JVM usage windows (jvm/) read its fields by name; its rowtime travels as the record's
timestamp."""

WINDOW_RECORD = Stage(
    "window_record",
    (
        ("k", "STRING"),
        ("ws", "BIGINT"),
        ("consumer", "STRING"),
        ("key_fingerprint", "STRING"),
        ("count", "BIGINT"),
        ("units", "DOUBLE"),
        ("auth_failures", "BIGINT"),
        ("countries", "ARRAY<STRING>"),
        ("networks", "BIGINT"),
        ("paths", "MAP<STRING, BIGINT>"),
        ("kind", "STRING"),
    ),
)
"""One fire of a usage window (jvm/): ``kind`` ``window`` when it closed, ``early`` when its
auth failures reached a threshold while it was open; ``shared`` for the shared signal's closed
window (key ``global``), whose ``count`` is the distinct unidentified clients that began to
fail then (metering.rules.distributed) and ``auth_failures`` their rejected calls.
``countries``: distinct, sorted."""

USAGE = Stage(
    "usage",
    (
        ("k", "STRING"),
        ("json", "STRING"),
        ("kind", "STRING"),
        ("p", "INT"),
        ("s", "BIGINT"),
    ),
)
"""A usage record (a closed window, a late correction) or an early record of an open window,
which only the detector reads, keyed by rate key. ``kind`` is the JSON's own ``kind``. ``p``,
``s``: a late correction's source partition and Kafka second, for the ledger (null otherwise)."""
