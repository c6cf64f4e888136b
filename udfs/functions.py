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
    KeyedProcessFunction,
    KeySelector,
    ProcessFunction,
    RuntimeContext,
)
from pyflink.datastream.state import MapStateDescriptor, StateTtlConfig, ValueStateDescriptor

from metering.detect import (
    DetectorConfig,
    KeyState,
    WindowAgg,
    evaluate,
    window_bounds,
    window_closed,
    window_record,
)
from metering.geo import GeoLookup
from metering.ledger import LEDGER_FIELDS, Ledger
from metering.records import Limits, RecordProcessor, SourceRef
from metering.redact import Pseudonymizer
from metering.settings import read_hash_key
from metering.windows import OpenWindows

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
    "request_id",
    "source_partition",
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
        Types.INT(),
        Types.STRING(),
    ],
)
F_RATE_KEY, F_EVENT_TIME, F_REQUEST_ID, F_PARTITION, F_VALUE = 0, 6, 7, 8, 9
LEDGER_TYPE = Types.ROW_NAMED(
    list(LEDGER_FIELDS),
    [Types.INT(), Types.LONG()] + [Types.INT()] * (len(LEDGER_FIELDS) - 2),
)
KEYED_JSON_TYPE = Types.ROW_NAMED(["k", "v"], [Types.STRING(), Types.STRING()])
LOG_INTERVAL_S = 10.0
DEAD_LETTERS = OutputTag("dead-letters", Types.STRING())
# One tag per producing operator: PyFlink mixes up side outputs of one tag used by two operators.
PARSE_LEDGER = OutputTag("parse-ledger", LEDGER_TYPE)
KEYED_LEDGER = OutputTag("keyed-ledger", LEDGER_TYPE)
USAGE = OutputTag("usage", KEYED_JSON_TYPE)
# Event-time timers at this time fire only on MAX_WATERMARK: at the end of a bounded input or on a
# drain, which is when the last reconciliation counts must still go out.
END_OF_TIME = 2**63 - 2
# Past this many armed (key, window) entries, drop those whose window the watermark has passed.
ARMED_SWEEP_SIZE = 100_000


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
                ev["request_id"],
                ev["source_partition"],
                dumps(ev),
            )
        if result.events:
            self._events_out.inc(len(result.events))
        for dl in result.dead_letters:
            yield DEAD_LETTERS, dumps(dl)
        yield (
            PARSE_LEDGER,
            Row(
                value[2],
                value[3],
                1,
                len(result.events) + len(result.dead_letters),
                len(result.events),
                len(result.dead_letters),
                0,
                0,
            ),
        )
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
        return int(value[F_EVENT_TIME])


class SourcePartition(KeySelector):
    def get_key(self, value: Any) -> int:
        return int(value[0])


class RateKey(KeySelector):
    def get_key(self, value: Any) -> str:
        return str(value[F_RATE_KEY])


class KeyedWindows(KeyedProcessFunction):
    """Per rate key: drop gateway retries, count tumbling event-time windows, correct late events.

    One keyed operator instead of Flink's window operator, because the three decisions share the
    key's state and the order of its events:
    - a request id seen within the dedup horizon is a gateway retry: dropped, counted, reported;
    - an event whose window is still open joins its accumulator; the window is emitted to the
      usage side output when the watermark passes its end (an event-time timer);
    - an event whose window already closed is never dropped: it goes on to the enriched topic
      like any other, and a ``late_correction`` usage record adds it to its window.
    Main output: the deduplicated events, for the enriched topic.
    """

    def __init__(self, window_ms: int, dedup_horizon_s: int) -> None:
        self._window_ms = window_ms
        self._dedup_horizon_s = dedup_horizon_s

    def open(self, runtime_context: RuntimeContext) -> None:
        # Open windows need no TTL: each has an event-time timer that emits and removes it.
        # One value per key (metering/windows.py says why not a map state).
        self._windows = runtime_context.get_state(
            ValueStateDescriptor("open-windows", Types.PICKLED_BYTE_ARRAY())
        )
        # (key, window end) whose timer this worker has registered. A timer is registered once
        # per window per worker, not on every event: each registration costs a write to the
        # JVM. A restored job starts new workers with an empty set, so the first event of a
        # window after a restore registers its timer again (see the timer note below).
        self._armed: set[tuple[str, int]] = set()
        seen = MapStateDescriptor("request-ids", Types.STRING(), Types.BOOLEAN())
        if self._dedup_horizon_s > 0:
            seen.enable_time_to_live(
                StateTtlConfig.new_builder(Time.seconds(self._dedup_horizon_s))
                .set_update_type(StateTtlConfig.UpdateType.OnCreateAndWrite)
                .set_state_visibility(StateTtlConfig.StateVisibility.NeverReturnExpired)
                .build()
            )
        self._seen = runtime_context.get_map_state(seen)
        metrics = runtime_context.get_metrics_group()
        self._late_events = metrics.counter("late_events")
        self._deduplicated = metrics.counter("deduplicated")

    def process_element(self, value: Any, ctx: KeyedProcessFunction.Context) -> Iterable[Any]:
        request_id = value[F_REQUEST_ID]
        if request_id and self._dedup_horizon_s > 0:
            if self._seen.contains(request_id):
                self._deduplicated.inc()
                yield KEYED_LEDGER, Row(value[F_PARTITION], -1, 0, 0, 0, 0, 1, 0)
                return
            self._seen.put(request_id, True)
        yield value

        start, end = window_bounds(int(value[F_EVENT_TIME]), self._window_ms)
        agg = WindowAgg().add(value[1], value[2], value[3], bool(value[4]), float(value[5]))
        if window_closed(end, ctx.timer_service().current_watermark()):
            self._late_events.inc()
            yield KEYED_LEDGER, Row(value[F_PARTITION], -1, 0, 0, 0, 0, 0, 1)
            key = str(ctx.get_current_key())
            yield USAGE, Row(key, dumps(window_record(key, start, end, agg, "late_correction")))
            return
        windows: OpenWindows = self._windows.value() or OpenWindows()
        windows.add(start, agg)
        self._windows.update(windows)
        # Process mode can lose a timer registered just before a checkpoint barrier while its
        # state is kept (see README, Guarantees). The window's next event after the restore
        # registers it again, since the restored worker's set is empty; Flink keeps one timer
        # per timestamp.
        armed = (str(ctx.get_current_key()), end)
        if armed not in self._armed:
            ctx.timer_service().register_event_time_timer(end - 1)
            self._armed.add(armed)
            if len(self._armed) > ARMED_SWEEP_SIZE:
                watermark = ctx.timer_service().current_watermark()
                self._armed = {a for a in self._armed if a[1] - 1 > watermark}

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterable[Any]:
        key = str(ctx.get_current_key())
        windows: OpenWindows | None = self._windows.value()
        if windows is None:
            return
        # Emit this window and any earlier one whose timer was lost (same cause as above).
        due = windows.pop_due(timestamp, self._window_ms)
        if windows:
            self._windows.update(windows)
        else:
            self._windows.clear()
        for start, agg in due:
            self._armed.discard((key, start + self._window_ms))
            record = window_record(key, start, start + self._window_ms, agg)
            yield USAGE, Row(key, dumps(record))


class Reconcile(KeyedProcessFunction):
    """Per source partition: sums ledger deltas and reports them every interval."""

    def __init__(self, source_topic: str, interval_ms: int) -> None:
        self._topic = source_topic
        self._interval_ms = interval_ms

    def open(self, runtime_context: RuntimeContext) -> None:
        self._ledger = runtime_context.get_state(
            ValueStateDescriptor("ledger", Types.PICKLED_BYTE_ARRAY())
        )
        self._since = runtime_context.get_state(ValueStateDescriptor("since", Types.LONG()))
        # Per partition, the report time this worker last registered a timer for (None: only
        # the end-of-time timer so far). Registering once per interval, not per delta, saves a
        # write to the JVM per record; a restored worker starts empty and registers again.
        self._armed: dict[int, int | None] = {}

    def process_element(self, value: Any, ctx: KeyedProcessFunction.Context) -> Iterable[Row]:
        ledger: Ledger | None = self._ledger.value()
        now = ctx.timer_service().current_processing_time()
        if ledger is None:
            ledger = Ledger()
            self._since.update(now)
        # Aligned times, so Flink keeps one timer of each kind. A timer registered just before
        # a checkpoint barrier can be lost in process mode: after a restore this worker's
        # memory is empty and the first delta registers both again.
        partition = int(ctx.get_current_key())
        due = now - now % self._interval_ms + self._interval_ms
        if partition not in self._armed:
            ctx.timer_service().register_event_time_timer(END_OF_TIME)
            self._armed[partition] = None
        if self._armed[partition] != due:
            ctx.timer_service().register_processing_time_timer(due)
            self._armed[partition] = due
        ledger.add(value)
        self._ledger.update(ledger)
        return []

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterable[Row]:
        ledger: Ledger | None = self._ledger.value()
        if ledger is None or ledger.empty():
            return
        partition = int(ctx.get_current_key())
        since = self._since.value() or timestamp
        now = ctx.timer_service().current_processing_time()
        self._ledger.clear()
        yield Row(str(partition), dumps(ledger.record(self._topic, partition, since, now)))


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
