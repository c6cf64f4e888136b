"""The Python functions' metrics, against a fake metric group (no JVM): dead letters counted per
reason code once per batch, alerts per rule and status, every reason code and configured rule
registered up front."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyflink.metrics import Counter, Distribution, Meter, MetricGroup

from metering.detect import DetectorConfig
from metering.geo import EMPTY_GEO
from metering.records import Limits, RecordProcessor
from metering.redact import Pseudonymizer
from schemas.events import DEAD_LETTER_REASONS
from udfs.functions import ALERT_STATUSES, DetectAnomalies, KeyedCounters, ParseRecords


class FakeCounter(Counter):
    def __init__(self) -> None:
        self.count = 0
        self.calls = 0

    def inc(self, n: int = 1) -> None:
        self.count += n
        self.calls += 1

    def dec(self, n: int = 1) -> None:
        self.count -= n

    def get_count(self) -> int:
        return self.count


class FakeGroup(MetricGroup):
    """Counters by their path: ((key, value), ..., name)."""

    def __init__(
        self, registry: dict[tuple[Any, ...], FakeCounter], path: tuple[Any, ...] = ()
    ) -> None:
        self.registry = registry
        self.path = path

    def add_group(self, name: str, extra: str | None = None) -> MetricGroup:
        return FakeGroup(self.registry, (*self.path, (name, extra)))

    def counter(self, name: str) -> Counter:
        return self.registry.setdefault((*self.path, name), FakeCounter())

    def gauge(self, name: str, obj: Callable[[], int]) -> None:
        raise AssertionError("no gauges expected")

    def meter(self, name: str, time_span_in_seconds: int = 60) -> Meter:
        raise AssertionError("no meters expected")

    def distribution(self, name: str) -> Distribution:
        raise AssertionError("no distributions expected")


def test_keyed_counters_register_up_front_and_on_first_use() -> None:
    registry: dict[tuple[Any, ...], FakeCounter] = {}
    counters = KeyedCounters(FakeGroup(registry), ("a", "b"), "n", [("x", "y")])
    assert list(registry) == [(("a", "x"), ("b", "y"), "n")]
    counters.get(("x", "z")).inc(2)
    assert registry[(("a", "x"), ("b", "z"), "n")].count == 2
    assert counters.get(("x", "y")) is registry[(("a", "x"), ("b", "y"), "n")]


def test_parse_counts_dead_letters_per_reason_once_per_batch() -> None:
    registry: dict[tuple[Any, ...], FakeCounter] = {}
    fn = ParseRecords("raw", "", 0, Limits(), vectorized=True)
    fn._processor = RecordProcessor(Pseudonymizer(b"k" * 32), lambda ip: EMPTY_GEO, Limits())
    group = FakeGroup(registry)
    fn._records_in = group.counter("records_in")
    fn._events_out = group.counter("events_enriched")
    fn._dead_out = group.counter("dead_letters")
    fn._dead_by_reason = KeyedCounters(
        group, ("dead_letter_reason",), "dead_letters", ((c,) for c in DEAD_LETTER_REASONS)
    )
    fn.parse_records([b"{not json", b"", b"{not json either"], [0, 0, 1], [1, 2, 3])

    def reason(code: str) -> FakeCounter:
        return registry[(("dead_letter_reason", code), "dead_letters")]

    assert {r for (_, r), *_ in (k for k in registry if len(k) == 2)} == set(DEAD_LETTER_REASONS)
    assert (reason("not_json").count, reason("not_json").calls) == (2, 1)
    assert reason("empty_record").count == 1
    assert sum(reason(c).count for c in DEAD_LETTER_REASONS) == registry[("dead_letters",)].count
    assert registry[("records_in",)].count == 3


class FakeRuntimeContext:
    def __init__(self, group: MetricGroup) -> None:
        self.group = group

    def get_metrics_group(self) -> MetricGroup:
        return self.group

    def get_state(self, descriptor: Any) -> Any:
        return None


def test_detector_registers_alerts_per_rule_and_status() -> None:
    registry: dict[tuple[Any, ...], FakeCounter] = {}
    cfg = DetectorConfig()
    fn = DetectAnomalies(cfg, 1)
    fn.open(FakeRuntimeContext(FakeGroup(registry)))
    by_rule = {(rule, status) for k in registry if len(k) == 3 for (_, rule), (_, status), _ in [k]}
    assert by_rule == {(r, s) for r in cfg.rules for s in ALERT_STATUSES}
    fn._alerts_by_rule.get(("auth_failures", "open")).inc()
    assert registry[(("alert_rule", "auth_failures"), ("alert_status", "open"), "alerts")].count
