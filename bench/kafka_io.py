"""The benchmark's Kafka side: generate and pre-load traffic, pace live traffic, and watch a
contender's output topics the way a downstream reader sees them (read_committed)."""

from __future__ import annotations

import contextlib
import json
import os
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from bench.metrics import ProcessingSpan, extract_int
from testkit.traffic import BulkRecord, bulk_traffic

_HEADER = struct.Struct("<IIq")  # value length, events, emit ms


@dataclass(frozen=True)
class TrafficSpec:
    """What to generate: ``events`` request events from ``keys`` consumers at ``rate`` per
    second of event time, from ``start_ms`` on."""

    events: int
    start_ms: int
    keys: int
    rate: float
    seed: int


def _generate_part(spec: TrafficSpec, part: int, parts: int, path: str) -> tuple[int, int]:
    """Worker: one time slice of ``spec`` into a file; returns (records, events)."""
    share = spec.events // parts + (1 if part < spec.events % parts else 0)
    before = sum(spec.events // parts + (1 if i < spec.events % parts else 0) for i in range(part))
    start_ms = spec.start_ms + int(before / spec.rate * 1000)
    records = events = 0
    with open(path, "wb") as f:
        for rec in bulk_traffic(
            share,
            start_ms=start_ms,
            keys=spec.keys,
            rate=spec.rate,
            seed=spec.seed,
            stream=part,
        ):
            f.write(_HEADER.pack(len(rec.value), rec.events, rec.emit_ms))
            f.write(rec.value)
            records += 1
            events += rec.events
    return records, events


def _read_part(path: Path) -> Iterator[BulkRecord]:
    with open(path, "rb") as f:
        while header := f.read(_HEADER.size):
            size, events, emit_ms = _HEADER.unpack(header)
            yield BulkRecord(f.read(size), events, emit_ms)


class GeneratedTraffic:
    """``spec`` generated in ``workers`` processes (consecutive time slices of one population of
    consumers) into temporary files, read back in event-time order."""

    def __init__(self, spec: TrafficSpec, workers: int, tmp_root: Path) -> None:
        self.spec = spec
        tmp_root.mkdir(parents=True, exist_ok=True)
        self._dir = Path(tempfile.mkdtemp(prefix="bench-traffic-", dir=tmp_root))
        parts = max(1, min(workers, spec.events // 10_000 or 1))
        self._paths = [self._dir / f"part-{i}.bin" for i in range(parts)]
        if parts == 1:
            counts = [_generate_part(spec, 0, 1, str(self._paths[0]))]
        else:
            with ProcessPoolExecutor(parts, mp_context=get_context("fork")) as pool:
                futures = [
                    pool.submit(_generate_part, spec, i, parts, str(p))
                    for i, p in enumerate(self._paths)
                ]
                counts = [f.result() for f in futures]
        self.records = sum(c[0] for c in counts)
        self.events = sum(c[1] for c in counts)

    def __iter__(self) -> Iterator[BulkRecord]:
        for path in self._paths:
            yield from _read_part(path)

    def load_and_remove(self) -> list[BulkRecord]:
        """Every record in memory (for data produced more than once); the files go."""
        try:
            return list(self)
        finally:
            self.remove()

    def remove(self) -> None:
        for path in self._paths:
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self._dir.rmdir()


def bulk_producer(bootstrap: str, extra: Mapping[str, Any] | None = None) -> Producer:
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 50,
        "batch.size": 1048576,
        "queue.buffering.max.messages": 1000000,
        "queue.buffering.max.kbytes": 2097152,
        "compression.type": "none",
    }
    conf.update(extra or {})
    return Producer(conf)


def preload(bootstrap: str, topic: str, records: Iterator[BulkRecord]) -> tuple[int, int]:
    """Produce every record as fast as the broker takes it; returns (records, events)."""
    producer = bulk_producer(bootstrap)
    errors: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    n = events = 0
    for rec in records:
        while True:
            try:
                producer.produce(topic, rec.value, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        n += 1
        events += rec.events
        if n % 1000 == 0:
            producer.poll(0)
    remaining = producer.flush(120)
    if remaining or errors:
        raise RuntimeError(f"preload: {remaining} undelivered, errors: {errors[:3]}")
    return n, events


@dataclass
class Paced:
    """Produce times (ms, the records' CreateTime) and request events of paced records, by
    (partition, offset)."""

    produced_ms: dict[tuple[int, int], int] = field(default_factory=dict)
    record_events: dict[tuple[int, int], int] = field(default_factory=dict)
    events: int = 0
    records: int = 0
    started: float = 0.0
    ended: float = 0.0
    errors: list[str] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)
    """When each record (by index in the paced list) was handed to the producer."""


STOP_CHECK_S = 0.25
"""How often ``pace`` asks whether to stop."""


def pace(
    producer: Producer,
    topic: str,
    records: Sequence[BulkRecord],
    rate: float,
    stop: Callable[[], bool] = lambda: False,
    result: Paced | None = None,
) -> Paced:
    """Produce ``records`` so that request events go out at ``rate`` per second.

    The delivery report of each record gives its partition, offset and CreateTime, which the
    client set when ``produce()`` was called: the start of the end-to-end latency.
    """
    out = result or Paced()

    def delivered(events: int) -> Callable[[Any, Any], None]:
        def on_delivery(err: Any, msg: Any) -> None:
            if err is not None:
                out.errors.append(str(err))
                return
            _, ts = msg.timestamp()
            source = (msg.partition(), msg.offset())
            out.produced_ms[source] = ts
            out.record_events[source] = events

        return on_delivery

    out.started = time.time()
    sent_events = 0
    next_check = 0.0
    for rec in records:
        # ``stop`` may ask a JobManager over REST: once per record would cap the rate at what
        # those calls allow (about 2,100 events/s against a session cluster).
        if (now := time.monotonic()) >= next_check:
            if stop():
                break
            next_check = now + STOP_CHECK_S
        target = out.started + sent_events / rate
        delay = target - time.time()
        if delay > 0:
            producer.poll(min(delay, 0.05))
            while (delay := target - time.time()) > 0:
                time.sleep(min(delay, 0.01))
        while True:
            try:
                producer.produce(topic, rec.value, on_delivery=delivered(rec.events))
                break
            except BufferError:
                producer.poll(0.05)
        out.sent_at.append(time.time())
        sent_events += rec.events
        out.records += 1
        out.events += rec.events
        producer.poll(0)
    producer.flush(60)
    out.ended = time.time()
    return out


class OutputWatcher:
    """Reads a contender's output topics from the beginning, read_committed, in a thread.

    Records when each enriched record became visible, the span of the records' processing
    stamps, and, with ``track_sources``, (source partition, source offset, visible at) per
    enriched record, to map each one back to the produce time of its raw record.
    """

    def __init__(
        self,
        bootstrap: str,
        enriched_topic: str,
        other_topics: Sequence[str] = (),
        *,
        track_sources: bool = False,
        alerts_topic: str | None = None,
    ) -> None:
        self.enriched_topic = enriched_topic
        self.alerts_topic = alerts_topic
        # (rule, rate key, window start) -> when its first alert became visible
        self.alerts: dict[tuple[str, str, int], float] = {}
        self.enriched = 0
        self.other = 0
        self.visible_times: list[float] = []  # one per poll batch with enriched records
        self.first_visible: float | None = None
        self.last_visible: float | None = None
        self.span = ProcessingSpan()
        self.sources: list[tuple[int, int, float]] = []
        self.errors: list[str] = []
        self._track = track_sources
        self._stop = threading.Event()
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-watch-{os.getpid()}-{time.monotonic_ns()}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                # Wake up often: visibility is timed at poll return, so this bounds the error.
                "fetch.wait.max.ms": 50,
                "fetch.max.bytes": 52428800,
            }
        )
        assignment = []
        extra = [alerts_topic] if alerts_topic else []
        for topic in (enriched_topic, *other_topics, *extra):
            meta = self._consumer.list_topics(topic, timeout=10).topics[topic]
            assignment += [TopicPartition(topic, p, 0) for p in meta.partitions]
        self._consumer.assign(assignment)
        self._thread = threading.Thread(target=self._run, name="output-watcher", daemon=True)
        self._thread.start()

    @property
    def total(self) -> int:
        return self.enriched + self.other

    def _run(self) -> None:
        consumer = self._consumer
        topic = self.enriched_topic
        try:
            while not self._stop.is_set():
                msgs = consumer.consume(2000, timeout=0.1)
                if not msgs:
                    continue
                now = time.time()
                seen = 0
                for msg in msgs:
                    err = msg.error()
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF:
                            self.errors.append(str(err))
                        continue
                    if msg.topic() == self.alerts_topic:
                        alert = json.loads(msg.value() or b"{}")
                        self.alerts.setdefault(
                            (alert["rule"], alert["rate_key"], alert["window_start"]), now
                        )
                        continue
                    if msg.topic() != topic:
                        self.other += 1
                        continue
                    value = msg.value() or b""
                    seen += 1
                    self.span.update(value)
                    if self._track:
                        p = extract_int(value, "source_partition")
                        o = extract_int(value, "source_offset")
                        if p is not None and o is not None:
                            self.sources.append((p, o, now))
                if seen:
                    self.enriched += seen
                    self.visible_times.append(now)
                    if self.first_visible is None:
                        self.first_visible = now
                    self.last_visible = now
        finally:
            consumer.close()

    def wait_for(
        self, events: int, timeout_s: float, alive: Callable[[], bool] = lambda: True
    ) -> bool:
        """Block until ``events`` enriched records are visible; False on timeout or death."""
        deadline = time.monotonic() + timeout_s
        while self.enriched < events:
            if time.monotonic() > deadline or not alive() or not self._thread.is_alive():
                return False
            time.sleep(0.2)
        return True

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)
