"""PyFlink function wrappers. Thin: the logic they call lives in ``metering`` and is unit-tested
without a JVM. Constructors take plain values only; resources open in ``open()``, once per worker.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

import pandas as pd
from pyflink.common import Row, Time
from pyflink.common.typeinfo import TypeInformation, Types
from pyflink.datastream.functions import (
    KeyedProcessFunction,
    RuntimeContext,
)
from pyflink.datastream.state import StateTtlConfig, ValueStateDescriptor
from pyflink.metrics import Counter as MetricCounter
from pyflink.metrics import MetricGroup
from pyflink.table.udf import FunctionContext, ScalarFunction, udf

from metering.billing.feed import CatalogFeed
from metering.billing.plans import Catalog, load_catalog
from metering.billing.stream import SubjectBilling
from metering.billing.stream import on_usage as billing_on_usage
from metering.detect import DetectorConfig, KeyState, close_due, evaluate, next_close
from metering.geo import GeoLookup
from metering.kafka_security import SASL_PASSWORD_ENV, librdkafka_security
from metering.records import CLIENT_KEY_PREFIX, Limits, RecordProcessor, SourceRef, dumps
from metering.redact import Pseudonymizer
from metering.settings import read_hash_key
from schemas.events import DEAD_LETTER_REASONS
from schemas.stages import (
    KEYED_JSON,
    PARSED_RECORD,
    RAW,
    RECORD_SCALARS,
    ROUTED_JSON,
    USAGE,
    WINDOW_RECORD,
    Stage,
)

log = logging.getLogger(__name__)
# Stands in for RocksdbCompactFilterCleanupStrategy's periodic compaction time, which PyFlink
# 2.2.1 stores but never passes to Java (see DetectAnomalies.open).
_JAVA_DEFAULT_PERIODIC_COMPACTION = "java default (30 days)"

_SQL_TYPES: dict[str, Callable[[], TypeInformation]] = {
    "STRING": Types.STRING,
    "BOOLEAN": Types.BOOLEAN,
    "DOUBLE": Types.DOUBLE,
    "INT": Types.INT,
    "BIGINT": Types.LONG,
    "BYTES": lambda: Types.PRIMITIVE_ARRAY(Types.BYTE()),
    "ARRAY<STRING>": lambda: Types.BASIC_ARRAY(Types.STRING()),
    "MAP<STRING, BIGINT>": lambda: Types.MAP(Types.STRING(), Types.LONG()),
}


def parse_records_function(
    topic: str, geoip_db: str, geo_cache_size: int, limits: Limits, mode: str
) -> Any:
    """The parse as a Table function returning PARSED_RECORD rows: vectorized (Arrow batches)
    in process mode, per record in thread mode."""
    fn = ParseRecords(topic, geoip_db, geo_cache_size, limits, vectorized=mode == "process")
    return udf(
        fn,
        result_type=PARSED_RECORD.sql_type(),
        func_type="pandas" if fn.vectorized else "general",
    )


def row_type(stage: Stage) -> TypeInformation:
    """The PyFlink Row type of a stage's record (schemas.stages), fields by name."""
    return Types.ROW_NAMED(stage.names, [_SQL_TYPES[t]() for _, t in stage.fields])


RAW_TYPE = row_type(RAW)
KEYED_JSON_TYPE = row_type(KEYED_JSON)
ROUTED_JSON_TYPE = row_type(ROUTED_JSON)
USAGE_TYPE = row_type(USAGE)
WINDOW_RECORD_TYPE = row_type(WINDOW_RECORD)
# PARSED_RECORD's fields that parse_records does not return (the record's own) or does not take
# from the events' dicts.
_RECORD_OWN = frozenset(RECORD_SCALARS)
_FROM_RESULT = frozenset({"value", "dedup_id", "dead"})
LOG_INTERVAL_S = 10.0

# Metric names (docs/operations.md, "Metrics"; deploy/grafana/pipeline-dashboard.json reads
# them). A key-value group becomes a label in Prometheus: the reporter exports
# ``dead_letter_reason`` -> ``..._dead_letter_reason_dead_letters{dead_letter_reason="..."}``.
DEAD_LETTER_REASON_GROUP = "dead_letter_reason"
DEAD_LETTERS_METRIC = "dead_letters"
ALERT_RULE_GROUP = "alert_rule"
ALERT_STATUS_GROUP = "alert_status"
ALERTS_METRIC = "alerts"
ALERT_STATUSES = ("open", "update", "closed")
BILLING_SIGNALS_METRIC = "billing_signals"
BILLING_REPRICE_METRIC = "billing_periods_to_reprice"
"""metering.detect's alert statuses, registered up front (KeyedCounters says why)."""


class KeyedCounters:
    """Counters per key in key-value metric groups: those of ``keys`` registered in ``open()``,
    any other key on first use. Registered up front, a thread-mode counter exports 0 before its
    first inc (a dashboard shows 0, not no data); a process-mode one reaches Flink with its
    first update, as Beam reports only counters that changed."""

    def __init__(
        self,
        group: MetricGroup,
        labels: tuple[str, ...],
        name: str,
        keys: Iterable[tuple[str, ...]] = (),
    ) -> None:
        self._group = group
        self._labels = labels
        self._name = name
        self._counters: dict[tuple[str, ...], MetricCounter] = {}
        for key in keys:
            self.get(key)

    def get(self, key: tuple[str, ...]) -> MetricCounter:
        counter = self._counters.get(key)
        if counter is None:
            group = self._group
            for label, value in zip(self._labels, key, strict=True):
                group = group.add_group(label, value)
            counter = self._counters[key] = group.counter(self._name)
        return counter


class ParseRecords(ScalarFunction):
    """Raw Kafka records -> validated, redacted, geo-enriched events and dead letters, returned
    per record as one PARSED_RECORD row (schemas.stages), which SQL unnests.

    ``vectorized`` (process mode): called once per Arrow batch of records with pandas Series,
    so the JVM and the Python worker exchange batches, not a serialized row per event. Otherwise
    (thread mode, which has no vectorized functions) called once per record.
    """

    def __init__(
        self, topic: str, geoip_db: str, geo_cache_size: int, limits: Limits, vectorized: bool
    ) -> None:
        self._topic = topic
        self._geoip_db = geoip_db
        self._geo_cache_size = geo_cache_size
        self._limits = limits
        self.vectorized = vectorized
        self._geo: GeoLookup | None = None
        self._processor: RecordProcessor | None = None
        self._dead_by_reason: KeyedCounters | None = None
        self._dead_reasons: Counter[str] = Counter()
        self._last_dead: tuple[str, int, int] = ("", 0, 0)
        self._last_log = 0.0

    def open(self, function_context: FunctionContext) -> None:
        # The key comes from the worker's environment, so it never travels in the job graph.
        pseudonymizer = Pseudonymizer(read_hash_key())
        self._geo = GeoLookup(self._geoip_db, self._geo_cache_size)
        self._processor = RecordProcessor(pseudonymizer, self._geo.lookup, self._limits)
        metrics = function_context.get_metric_group()
        self._records_in = metrics.counter("records_in")
        self._events_out = metrics.counter("events_enriched")
        self._dead_out = metrics.counter(DEAD_LETTERS_METRIC)
        # Per reason code: which kind of bad input is arriving is what an operator acts on.
        self._dead_by_reason = KeyedCounters(
            metrics,
            (DEAD_LETTER_REASON_GROUP,),
            DEAD_LETTERS_METRIC,
            ((code,) for code in DEAD_LETTER_REASONS),
        )

    def close(self) -> None:
        self._log_dead_letters(force=True)
        if self._geo is not None:
            self._geo.close()

    def eval(self, payload: Any, partition: Any, offset: Any, kafka_s: Any) -> Any:
        if not self.vectorized:
            columns = self.parse_records([payload], [partition], [offset])
            return Row(partition, offset, kafka_s, *(c[0] for c in columns.values()))
        columns = self.parse_records(payload, partition, offset)
        return pd.DataFrame({"p": partition, "o": offset, "s": kafka_s, **columns})

    def parse_records(
        self, payloads: Iterable[bytes], partitions: Iterable[int], offsets: Iterable[int]
    ) -> dict[str, list[list[Any]]]:
        """PARSED_RECORD's per-record arrays, by field, for a batch of records."""
        assert self._processor is not None
        process, topic = self._processor.process, self._topic
        fields = [n for n in PARSED_RECORD.names if n not in _RECORD_OWN]
        columns: dict[str, list[list[Any]]] = {n: [] for n in fields}
        event_columns = [(n, columns[n]) for n in fields if n not in _FROM_RESULT]
        values, dedup_ids, dead = columns["value"], columns["dedup_id"], columns["dead"]
        records = events = dead_letters = 0
        batch_reasons: Counter[str] = Counter()
        for payload, p, o in zip(payloads, partitions, offsets, strict=True):
            result = process(payload, SourceRef(topic, int(p), int(o)))
            evs = result.events
            for name, column in event_columns:
                column.append([ev[name] for ev in evs])
            values.append(result.encoded)
            dedup_ids.append(result.dedup_ids)
            dead.append([dumps(dl) for dl in result.dead_letters])
            records += 1
            events += len(evs)
            if result.dead_letters:
                dead_letters += len(result.dead_letters)
                batch_reasons.update(d["reason"] for d in result.dead_letters)
                self._last_dead = (topic, int(p), int(o))
        self._records_in.inc(records)
        self._events_out.inc(events)
        if dead_letters:
            self._dead_out.inc(dead_letters)
            # Once per batch and reason, not per dead letter: a metric call crosses into Java.
            if self._dead_by_reason is not None:  # None: not opened (unit tests)
                for reason, n in batch_reasons.items():
                    self._dead_by_reason.get((reason,)).inc(n)
            self._dead_reasons.update(batch_reasons)
            self._log_dead_letters()
        return columns

    def _log_dead_letters(self, force: bool = False) -> None:
        # Reasons, counts and coordinates only (a payload may hold credentials), and at most one
        # line per interval: a flood of bad input must not become a flood of log lines.
        now = time.monotonic()
        if not self._dead_reasons or (not force and now - self._last_log < LOG_INTERVAL_S):
            return
        reasons = ", ".join(f"{r}={n}" for r, n in sorted(self._dead_reasons.items()))
        topic, partition, offset = self._last_dead
        log.warning("dead-lettered %s; latest from %s-%s@%s", reasons, topic, partition, offset)
        self._dead_reasons.clear()
        self._last_log = now


def detector_state_ttl(hours: int) -> StateTtlConfig:
    """The detector state's TTL, with Flink's default background cleanup spelled out.

    Left implicit, PyFlink 2.2.1's thread mode builds the default RocksDB strategy's 30-day
    Duration through Py4J: get_gateway() inside a TaskManager then launches a second JVM
    (MiniCluster) or fails with FileNotFoundError (session cluster, whose scripts export an
    empty JAVA_HOME), and the job restarts forever. No mode hands that Duration to Java, which
    applies its own 30-day default; any non-empty value stops PyFlink building it (apache/flink
    PR 29155, FLINK-40628).
    """
    return (
        StateTtlConfig.new_builder(Time.hours(hours))
        .set_update_type(StateTtlConfig.UpdateType.OnCreateAndWrite)
        .set_state_visibility(StateTtlConfig.StateVisibility.NeverReturnExpired)
        .disable_cleanup_in_background()
        .cleanup_incrementally(5, False)  # heap state backend
        .cleanup_in_rocksdb_compact_filter(1000, _JAVA_DEFAULT_PERIODIC_COMPACTION)
        .build()
    )


DETECTOR_STATE = "key-state"
CLIENT_DETECTOR_STATE = "client-state"


def detector_state_name(rate_key: str) -> str:
    """Which of the detector's two states holds a key's: rejected-call keys (``client:``) are
    many and short-lived (a guesser rotating networks makes one per network), so they have a
    state of their own with a much shorter TTL. PyFlink sets a TTL per state descriptor."""
    return CLIENT_DETECTOR_STATE if rate_key.startswith(CLIENT_KEY_PREFIX) else DETECTOR_STATE


def detector_state_descriptors(
    ttl_hours: int, client_ttl_hours: int
) -> dict[str, ValueStateDescriptor]:
    """The detector's state descriptors by name, each with its TTL: keys that stop calling must
    not keep state forever."""
    out = {}
    for name, hours in ((DETECTOR_STATE, ttl_hours), (CLIENT_DETECTOR_STATE, client_ttl_hours)):
        descriptor = ValueStateDescriptor(name, Types.PICKLED_BYTE_ARRAY())
        descriptor.enable_time_to_live(detector_state_ttl(hours))
        out[name] = descriptor
    return out


class DetectAnomalies(KeyedProcessFunction):
    """The detector (metering.detect) over each rate key's window records, its state in keyed
    state; emits alert records as (key, json). An event-time timer closes an incident whose key
    has gone quiet, as the key's next record would."""

    def __init__(
        self, cfg: DetectorConfig, state_ttl_hours: int, client_state_ttl_hours: int | None = None
    ) -> None:
        self._cfg = cfg
        self._ttl_hours = state_ttl_hours
        self._client_ttl_hours = client_state_ttl_hours or state_ttl_hours

    def open(self, runtime_context: RuntimeContext) -> None:
        descriptors = detector_state_descriptors(self._ttl_hours, self._client_ttl_hours)
        self._states = {
            name: runtime_context.get_state(descriptor) for name, descriptor in descriptors.items()
        }
        metrics = runtime_context.get_metrics_group()
        self._alerts = metrics.counter(ALERTS_METRIC)
        # Per rule and status: which rule is firing, and whether incidents close.
        self._alerts_by_rule = KeyedCounters(
            metrics,
            (ALERT_RULE_GROUP, ALERT_STATUS_GROUP),
            ALERTS_METRIC,
            ((rule, status) for rule in self._cfg.rules for status in ALERT_STATUSES),
        )

    def _emit(
        self, state: KeyState, alerts: list[dict[str, Any]], ctx: KeyedProcessFunction.Context
    ) -> Iterable[Row]:
        due = next_close(state, self._cfg)
        if due is not None:
            ctx.timer_service().register_event_time_timer(due)
        for alert in alerts:
            self._alerts.inc()
            self._alerts_by_rule.get((str(alert["rule"]), str(alert["status"]))).inc()
            yield Row(k=alert["rate_key"], v=dumps(alert))

    def process_element(self, value: Row, ctx: KeyedProcessFunction.Context) -> Iterable[Row]:
        record = json.loads(value.json)
        store = self._states[detector_state_name(record["rate_key"])]
        state: KeyState | None = store.value()
        state, alerts = evaluate(state, record, self._cfg, int(time.time() * 1000))
        store.update(state)
        yield from self._emit(state, alerts, ctx)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterable[Row]:
        key = ctx.get_current_key()
        rate_key = key[0] if isinstance(key, Row | tuple) else key
        store = self._states[detector_state_name(rate_key)]
        state: KeyState | None = store.value()
        if state is None:
            return
        alerts = close_due(state, timestamp, self._cfg, int(time.time() * 1000))
        if alerts:
            store.update(state)
        yield from self._emit(state, alerts, ctx)


BILLING_STATE = "billing-state"


class PriceUsage(KeyedProcessFunction):
    """The billing stage (metering.billing.stream) over each subject's usage records (closed
    windows and late corrections), its state in keyed state without TTL (a prepaid balance
    lasts as long as the account); emits (topic role, key, json) rows for the period-usage,
    quota-signal and balance-signal topics.

    The catalog comes from a file given by ``--billing-catalog`` (fixed), else from the billing
    topics (metering.billing.feed), read whole in ``open()`` and then polled."""

    def __init__(
        self,
        catalog_file: str | None,
        catalog_topics: tuple[str, str, str],
        client: dict[str, str | None],
        poll_seconds: int,
        low_balance: str,
    ) -> None:
        self._catalog_file = catalog_file
        self._topics = catalog_topics
        # Plain values: the SASL password is read from the worker's environment in open().
        self._client = client
        self._poll_seconds = poll_seconds
        self._low = Decimal(low_balance)
        self._feed: CatalogFeed | None = None
        self._catalog = Catalog()

    def open(self, runtime_context: RuntimeContext) -> None:
        self._state = runtime_context.get_state(
            ValueStateDescriptor(BILLING_STATE, Types.PICKLED_BYTE_ARRAY())
        )
        metrics = runtime_context.get_metrics_group()
        self._signals = metrics.counter(BILLING_SIGNALS_METRIC)
        self._reprice = metrics.counter(BILLING_REPRICE_METRIC)
        if self._catalog_file:
            self._catalog = load_catalog(self._catalog_file)
            return
        c = self._client
        config = {"bootstrap.servers": str(c["bootstrap_servers"])} | librdkafka_security(
            str(c["protocol"]),
            c["sasl_mechanism"],
            c["sasl_username"],
            c["ssl_ca_location"],
            os.environ.get(SASL_PASSWORD_ENV) or None,
        )
        self._feed = CatalogFeed(config, self._topics, self._poll_seconds)
        self._catalog = self._feed.open(timeout_s=60)
        log.info(
            "billing catalog: %d plans, %d subscriptions, %d grants",
            len(self._catalog.plans),
            len(self._catalog.subscriptions),
            len(self._catalog.grants),
        )

    def close(self) -> None:
        if self._feed is not None:
            self._feed.close()

    def process_element(self, value: Row, ctx: KeyedProcessFunction.Context) -> Iterable[Row]:
        if self._feed is not None:
            self._catalog = self._feed.poll()
        before: SubjectBilling | None = self._state.value()
        state, outputs = billing_on_usage(before, json.loads(value.json), self._catalog, self._low)
        if state is not before:
            self._state.update(state)
            if state is not None and before is not None and state.repricing != before.repricing:
                self._reprice.inc()
        for role, k, v in outputs:
            if role != "period_usage":
                self._signals.inc()
            yield Row(role=role, k=k, v=v)
