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
from pyflink.datastream import OutputTag
from pyflink.datastream.functions import (
    KeyedProcessFunction,
    KeySelector,
    ProcessFunction,
    RuntimeContext,
)
from pyflink.datastream.state import StateTtlConfig, ValueStateDescriptor

from metering.detect import (
    DetectorConfig,
    KeyState,
    early_check,
    evaluate,
    window_bounds,
    window_closed,
    window_record,
)
from metering.geo import GeoLookup
from metering.records import CLIENT_KEY_PREFIX, Limits, RecordProcessor, SourceRef, dumps
from metering.redact import Pseudonymizer
from metering.settings import read_hash_key
from metering.windows import (
    Windows,
    add_event,
    admits,
    as_agg,
    auth_failures,
    count_event,
    from_state,
    pop_due,
)

log = logging.getLogger(__name__)
# Stands in for RocksdbCompactFilterCleanupStrategy's periodic compaction time, which PyFlink
# 2.2.1 stores but never passes to Java (see DetectAnomalies.open).
_JAVA_DEFAULT_PERIODIC_COMPACTION = "java default (30 days)"

# What the parse/enrich operator hands downstream: the fields SQL deduplicates, windows and
# reconciles on, plus the finished JSON for the enriched topic (serialised once, where the dict
# already is). ``dedup_id`` is the entry's retry fingerprint (metering.records.Result).
# ``kafka_s`` (the record's Kafka timestamp, epoch seconds) and ``first_of_record`` let the
# ledger count records per interval without a row of its own per record.
PARSED_FIELDS = [
    "rate_key",
    "consumer",
    "key_fingerprint",
    "country",
    "auth_failed",
    "units",
    "event_time",
    "dedup_id",
    "source_partition",
    "source_offset",
    "kafka_s",
    "first_of_record",
    "value",
]
PARSED_TYPES = [
    Types.STRING(),
    Types.STRING(),
    Types.STRING(),
    Types.STRING(),
    Types.BOOLEAN(),
    Types.DOUBLE(),
    Types.LONG(),
    Types.STRING(),
    Types.INT(),
    Types.LONG(),
    Types.LONG(),
    Types.BOOLEAN(),
    Types.STRING(),
]
PARSED_TYPE = Types.ROW_NAMED(PARSED_FIELDS, PARSED_TYPES)
DEAD_FIELDS = ["source_partition", "source_offset", "kafka_s", "first_of_record", "v"]
DEAD_TYPE = Types.ROW_NAMED(
    DEAD_FIELDS, [Types.INT(), Types.LONG(), Types.LONG(), Types.BOOLEAN(), Types.STRING()]
)
# The raw records the parser takes: value, partition, offset, Kafka timestamp (epoch seconds).
RAW_FIELDS = ["payload", "partition", "offset", "kafka_s"]
RAW_TYPE = Types.ROW_NAMED(
    RAW_FIELDS, [Types.PRIMITIVE_ARRAY(Types.BYTE()), Types.INT(), Types.LONG(), Types.LONG()]
)
KEYED_JSON_TYPE = Types.ROW_NAMED(["k", "v"], [Types.STRING(), Types.STRING()])
# What the window operator reads: the parsed fields it aggregates, then partition and Kafka
# second for reconciliation (jobs/pipeline_sql.py windows_query selects them in this order).
WINDOW_FIELDS = [*PARSED_FIELDS[:7], "p", "s"]
WINDOW_TYPE = Types.ROW_NAMED(WINDOW_FIELDS, [*PARSED_TYPES[:7], Types.INT(), Types.LONG()])
W_RATE_KEY, W_EVENT_TIME, W_PARTITION, W_KAFKA_S = 0, 6, 7, 8
LATE_TYPE = Types.ROW_NAMED(["p", "s"], [Types.INT(), Types.LONG()])
LOG_INTERVAL_S = 10.0
DEAD_LETTERS = OutputTag("dead-letters", DEAD_TYPE)
LATE = OutputTag("late", LATE_TYPE)
# The window operator's output: (rate key, usage record JSON, open_window). ``open_window``
# rows are ``early`` records of windows still open, for the detector only: the usage topic
# drops them. They share the output with the usage records, not a side output, so that the
# detector receives a window's early records before its close record (one channel per key).
USAGE_TYPE = Types.ROW_NAMED(
    ["k", "v", "open_window"], [Types.STRING(), Types.STRING(), Types.BOOLEAN()]
)
# Past this many armed (key, window) entries, drop those whose window the watermark has passed.
ARMED_SWEEP_SIZE = 100_000


class ParseEnrich(ProcessFunction):
    """Raw Kafka record -> validated, redacted, geo-enriched events; dead letters to a side tag."""

    def __init__(self, topic: str, geoip_db: str, geo_cache_size: int, limits: Limits) -> None:
        self._topic = topic
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
        partition, offset, kafka_s = value[1], value[2], value[3]
        result = self._processor.process(value[0], SourceRef(self._topic, partition, offset))
        first = True
        for ev, text, dedup_id in zip(result.events, result.encoded, result.dedup_ids, strict=True):
            yield Row(
                ev["rate_key"],
                ev["consumer"],
                ev["key_fingerprint"],
                ev["country"],
                ev["auth_failed"],
                ev["units"],
                ev["event_time"],
                dedup_id,
                partition,
                offset,
                kafka_s,
                first,
                text,
            )
            first = False
        if result.events:
            self._events_out.inc(len(result.events))
        for dl in result.dead_letters:
            yield DEAD_LETTERS, Row(partition, offset, kafka_s, first, dumps(dl))
            first = False
        if result.dead_letters:
            self._dead_out.inc(len(result.dead_letters))
            self._dead_reasons.update(d["reason"] for d in result.dead_letters)
            self._last_dead = (self._topic, partition, offset)
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


class RateKey(KeySelector):
    """The rate key of a (k, v) usage row."""

    def get_key(self, value: Any) -> str:
        return str(value[0])


class KeyedWindows(KeyedProcessFunction):
    """Per rate key: count tumbling event-time windows, and correct late events.

    A Python keyed function rather than a SQL window, because the lateness decision and the
    window must see the same watermark: a SQL window drops late rows silently, and a lateness
    test in an operator upstream of it can see a lower watermark than the window does (after a
    source subtask was idle), so an event could be neither counted nor corrected.
    - an event whose window is still open joins its accumulator; the window is emitted when the
      watermark passes its end (an event-time timer);
    - an event whose window already closed is never dropped: a ``late_correction`` usage record
      adds it to its window, and a (partition, Kafka second) row tells reconciliation. So is an
      event for a further window of a key that already holds ``max_open_windows`` (a bound on
      the per-key state, see metering.windows.admits).
    - an event that takes its open window's auth failures to ``early_auth_failures`` (or a
      doubling of it, or 5 times it) also emits the window so far, flagged ``open_window``,
      so the detector can alert before the window closes (0: never).
    Input: first sightings only (SQL drops gateway retries before this). Output: USAGE_TYPE.
    """

    def __init__(
        self, window_ms: int, early_auth_failures: int = 0, max_open_windows: int = 64
    ) -> None:
        self._window_ms = window_ms
        self._early_auth_failures = early_auth_failures
        self._max_open_windows = max_open_windows

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
        metrics = runtime_context.get_metrics_group()
        self._late_events = metrics.counter("late_events")
        self._over_cap = metrics.counter("events_over_open_window_cap")

    def process_element(self, value: Any, ctx: KeyedProcessFunction.Context) -> Iterable[Any]:
        start, end = window_bounds(int(value[W_EVENT_TIME]), self._window_ms)
        key = str(value[W_RATE_KEY])
        windows: Windows | None = None
        if window_closed(end, ctx.timer_service().current_watermark()):
            self._late_events.inc()
        else:
            windows = from_state(self._windows.value())
            if not admits(windows, start, self._max_open_windows):
                self._over_cap.inc()
                windows = None
        if windows is None:
            # Counted by a correction record of its own: reconciliation counts it as late.
            agg = as_agg(
                count_event(None, value[1], value[2], value[3], bool(value[4]), float(value[5]))
            )
            yield LATE, Row(value[W_PARTITION], value[W_KAFKA_S])
            yield Row(key, dumps(window_record(key, start, end, agg, "late_correction")), False)
            return
        add_event(windows, start, value[1], value[2], value[3], bool(value[4]), float(value[5]))
        self._windows.update(windows)
        if (
            value[4]
            and self._early_auth_failures
            and early_check(auth_failures(windows[start]), self._early_auth_failures)
        ):
            so_far = window_record(key, start, end, as_agg(windows[start]), "early")
            yield Row(key, dumps(so_far), True)
        # Process mode can lose a timer registered just before a checkpoint barrier while its
        # state is kept (see README, Guarantees). The window's next event after the restore
        # registers it again, since the restored worker's set is empty; Flink keeps one timer
        # per timestamp.
        armed = (key, end)
        if armed not in self._armed:
            ctx.timer_service().register_event_time_timer(end - 1)
            self._armed.add(armed)
            if len(self._armed) > ARMED_SWEEP_SIZE:
                watermark = ctx.timer_service().current_watermark()
                self._armed = {a for a in self._armed if a[1] - 1 > watermark}

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterable[Any]:
        key = str(ctx.get_current_key())
        windows = from_state(self._windows.value())
        if not windows:
            return
        # Emit this window and any earlier one whose timer was lost (same cause as above).
        due = pop_due(windows, timestamp, self._window_ms)
        if windows:
            self._windows.update(windows)
        else:
            self._windows.clear()
        for start, agg in due:
            self._armed.discard((key, start + self._window_ms))
            yield Row(key, dumps(window_record(key, start, start + self._window_ms, agg)), False)


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
    """Per-key baseline and known countries in keyed state; emits alerts as (key, json)."""

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
        self._alerts = runtime_context.get_metrics_group().counter("alerts")

    def process_element(self, value: Any, ctx: KeyedProcessFunction.Context) -> Iterable[Row]:
        record = json.loads(value[1])
        store = self._states[detector_state_name(str(value[0]))]
        state: KeyState | None = store.value()
        state, alerts = evaluate(state, record, self._cfg, int(time.time() * 1000))
        store.update(state)
        for alert in alerts:
            self._alerts.inc()
            yield Row(alert["rate_key"], dumps(alert))
