"""PyFlink function wrappers. Thin: the logic they call lives in ``metering`` and is unit-tested
without a JVM. Constructors take plain values only; resources open in ``open()``, once per worker.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from pyflink.common import Row, Time
from pyflink.common.typeinfo import Types
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import OutputTag
from pyflink.datastream.functions import (
    AggregateFunction,
    KeyedProcessFunction,
    KeySelector,
    ProcessFunction,
    ProcessWindowFunction,
    RuntimeContext,
)
from pyflink.datastream.state import StateTtlConfig, ValueStateDescriptor

from metering.detect import DetectorConfig, KeyState, WindowAgg, evaluate, window_record
from metering.geo import GeoLookup
from metering.records import Limits, RecordProcessor, SourceRef
from metering.redact import Pseudonymizer
from metering.settings import read_hash_key

log = logging.getLogger(__name__)

# What the parse/enrich operator hands downstream: the few fields windows need, plus the finished
# JSON for the enriched topic (serialised once, where the dict already is).
ENRICHED_FIELDS = [
    "rate_key",
    "consumer",
    "key_fingerprint",
    "country",
    "auth_failed",
    "units",
    "event_time",
    "value",
]
ENRICHED_TYPE = Types.ROW_NAMED(
    ENRICHED_FIELDS,
    [
        Types.STRING(),
        Types.STRING(),
        Types.STRING(),
        Types.STRING(),
        Types.BOOLEAN(),
        Types.DOUBLE(),
        Types.LONG(),
        Types.STRING(),
    ],
)
KEYED_JSON_TYPE = Types.ROW_NAMED(["k", "v"], [Types.STRING(), Types.STRING()])
LOG_INTERVAL_S = 10.0
DEAD_LETTERS = OutputTag("dead-letters", Types.STRING())


def dumps(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class ParseEnrich(ProcessFunction):
    """Raw Kafka record -> validated, redacted, geo-enriched events; dead letters to a side tag."""

    def __init__(self, geoip_db: str, geo_cache_size: int, limits: Limits) -> None:
        self._geoip_db = geoip_db
        self._geo_cache_size = geo_cache_size
        self._limits = limits
        self._geo: GeoLookup | None = None
        self._processor: RecordProcessor | None = None
        self._dead_reasons: Counter[str] = Counter()
        self._last_dead: tuple[str, int, int] = ("", 0, 0)
        self._last_log = 0.0

    def open(self, runtime_context: RuntimeContext) -> None:
        # The key comes from the worker's environment, so it never travels in the job graph.
        pseudonymizer = Pseudonymizer(read_hash_key())
        self._geo = GeoLookup(self._geoip_db, self._geo_cache_size)
        self._processor = RecordProcessor(pseudonymizer, self._geo.lookup, self._limits)
        metrics = runtime_context.get_metrics_group()
        self._records_in = metrics.counter("records_in")
        self._events_out = metrics.counter("events_enriched")
        self._dead_out = metrics.counter("dead_letters")

    def close(self) -> None:
        self._log_dead_letters(force=True)
        if self._geo is not None:
            self._geo.close()

    def process_element(self, value: Row, ctx: ProcessFunction.Context) -> Iterable[Any]:
        assert self._processor is not None
        self._records_in.inc()
        result = self._processor.process(value[0], SourceRef(value[1], value[2], value[3]))
        for ev in result.events:
            yield Row(
                ev["rate_key"],
                ev["consumer"],
                ev["key_fingerprint"],
                ev["country"],
                ev["auth_failed"],
                ev["units"],
                ev["event_time"],
                dumps(ev),
            )
        if result.events:
            self._events_out.inc(len(result.events))
        for dl in result.dead_letters:
            yield DEAD_LETTERS, dumps(dl)
        if result.dead_letters:
            self._dead_out.inc(len(result.dead_letters))
            self._dead_reasons.update(d["reason"] for d in result.dead_letters)
            self._last_dead = (value[1], value[2], value[3])
            self._log_dead_letters()

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


class EventTime(TimestampAssigner):
    """Event time is the request start from the payload, never the Kafka record timestamp."""

    def extract_timestamp(self, value: Any, record_timestamp: int) -> int:
        return int(value[6])


class RateKey(KeySelector):
    def get_key(self, value: Any) -> str:
        return str(value[0])


class CountPerKey(AggregateFunction):
    """Incremental window aggregate: the window keeps one small accumulator per key."""

    def create_accumulator(self) -> WindowAgg:
        return WindowAgg()

    def add(self, value: Any, accumulator: WindowAgg) -> WindowAgg:
        return accumulator.add(value[1], value[2], value[3], bool(value[4]), float(value[5]))

    def get_result(self, accumulator: WindowAgg) -> WindowAgg:
        return accumulator

    def merge(self, acc_a: WindowAgg, acc_b: WindowAgg) -> WindowAgg:
        return acc_a.merge(acc_b)


class EmitWindowCount(ProcessWindowFunction):
    """Attach key and window bounds to the aggregate; emits the usage record as (key, json)."""

    def process(self, key: str, context: Any, elements: Iterable[WindowAgg]) -> Iterable[Row]:
        window = context.window()
        for agg in elements:
            yield Row(key, dumps(window_record(key, window.start, window.end, agg)))


class DetectAnomalies(KeyedProcessFunction):
    """Per-key baseline and known countries in keyed state; emits alerts as (key, json)."""

    def __init__(self, cfg: DetectorConfig, state_ttl_hours: int) -> None:
        self._cfg = cfg
        self._ttl_hours = state_ttl_hours

    def open(self, runtime_context: RuntimeContext) -> None:
        descriptor = ValueStateDescriptor("key-state", Types.PICKLED_BYTE_ARRAY())
        # Keys that stop calling must not keep state forever.
        ttl = (
            StateTtlConfig.new_builder(Time.hours(self._ttl_hours))
            .set_update_type(StateTtlConfig.UpdateType.OnCreateAndWrite)
            .set_state_visibility(StateTtlConfig.StateVisibility.NeverReturnExpired)
            .build()
        )
        descriptor.enable_time_to_live(ttl)
        self._state = runtime_context.get_state(descriptor)
        self._alerts = runtime_context.get_metrics_group().counter("alerts")

    def process_element(self, value: Any, ctx: KeyedProcessFunction.Context) -> Iterable[Row]:
        record = json.loads(value[1])
        state: KeyState | None = self._state.value()
        state, alerts = evaluate(state, record, self._cfg, int(time.time() * 1000))
        self._state.update(state)
        for alert in alerts:
            self._alerts.inc()
            yield Row(alert["rate_key"], dumps(alert))
