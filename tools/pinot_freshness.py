"""How long from a record being produced to the raw topic to its events being queryable in Pinot.

Every ``poll_s`` the probe asks Pinot for the highest source offset it can serve per raw
partition. When that frontier moves from O1 to O2, every raw record O1+1..O2 became queryable
between the previous poll and this one; its latency is this poll's time minus the record's
Kafka timestamp (CreateTime, set by the producer). The raw records of the range are read back
from the raw topic for their timestamps. Latencies are therefore exact to within one poll
interval, and cover every record, not a sample. Records whose events were all dead-lettered
never appear in Pinot and are skipped, as are ranges the probe saw before it started (the
first poll only sets the frontier).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, TopicPartition

FRONTIER_SQL = (
    "SELECT source_partition, MAX(source_offset) AS high FROM {table} "
    "GROUP BY source_partition LIMIT 10000"
)


@dataclass
class Freshness:
    latencies_ms: list[float] = field(default_factory=list)
    polls: int = 0
    poll_s: float = 0.25

    def percentile(self, p: float) -> float | None:
        """Nearest-rank percentile of the latencies, or None when there are none."""
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        rank = max(1, -(-len(ordered) * p // 100))
        return ordered[int(rank) - 1]

    def summary(self) -> str:
        if not self.latencies_ms:
            return "no record became queryable while the probe ran"
        p50, p95, p99 = (self.percentile(p) or 0.0 for p in (50, 95, 99))
        return (
            f"{len(self.latencies_ms)} records, produce -> queryable in Pinot: p50 "
            f"{p50 / 1000:.2f} s, p95 {p95 / 1000:.2f} s, p99 {p99 / 1000:.2f} s, max "
            f"{max(self.latencies_ms) / 1000:.2f} s (polled every {self.poll_s:.2f} s)"
        )


def newly_visible(before: dict[int, int], after: dict[int, int]) -> list[tuple[int, int, int]]:
    """(partition, first offset, last offset) ranges that became visible between two frontiers.

    A partition absent from ``before`` was not yet visible; the probe cannot tell when its
    earlier records appeared, so only its newest record is taken."""
    ranges = []
    for partition, high in sorted(after.items()):
        low = before.get(partition)
        if low is None:
            ranges.append((partition, high, high))
        elif high > low:
            ranges.append((partition, low + 1, high))
    return ranges


def record_timestamps(
    bootstrap: str, topic: str, ranges: Iterable[tuple[int, int, int]]
) -> dict[tuple[int, int], int]:
    """Kafka timestamps (ms) of the raw records in the given offset ranges."""
    out: dict[tuple[int, int], int] = {}
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "pinot-freshness-probe",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        for partition, first, last in ranges:
            consumer.assign([TopicPartition(topic, partition, first)])
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is None or msg.error():
                    continue
                offset = msg.offset()
                if offset is not None and offset <= last:
                    out[(partition, offset)] = msg.timestamp()[1]
                if offset is None or offset >= last:
                    break
    finally:
        consumer.close()
    return out


def probe(
    frontier: Callable[[], dict[int, int]],
    bootstrap: str,
    raw_topic: str,
    until: Callable[[], bool],
    poll_s: float = 0.25,
) -> Freshness:
    """Poll ``frontier`` (partition -> highest source offset queryable) until ``until()``.

    Only records produced after the probe started count: a table still catching up on older
    records would otherwise report their age, not Pinot's freshness."""
    since_ms = time.time() * 1000
    result = Freshness(poll_s=poll_s)
    seen = frontier()
    while not until():
        time.sleep(poll_s)
        now_ms = time.time() * 1000
        current = frontier()
        result.polls += 1
        ranges = newly_visible(seen, current) if seen else []
        if ranges:
            for ts in record_timestamps(bootstrap, raw_topic, ranges).values():
                if ts >= since_ms:
                    result.latencies_ms.append(max(0.0, now_ms - ts))
        if current:
            seen = {**seen, **current}
    return result
