"""Read a topic back the way downstream readers do: read_committed, from the beginning."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, TopicPartition


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def drain(
    bootstrap: str,
    topic: str,
    *,
    isolation: str = "read_committed",
    timeout_s: float = 60.0,
) -> list[Record]:
    """Every record visible to an ``isolation`` reader, up to each partition's end right now.

    Returns when every partition reported end-of-partition; for read_committed that is the last
    stable offset, so a transaction left open by a crashed writer shows up as a timeout here.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"readback-{uuid.uuid4().hex}",
            "isolation.level": isolation,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10)
        partitions = sorted(meta.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        pending = set(partitions)
        out: list[Record] = []
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{topic}: partitions {sorted(pending)} did not reach their end in "
                    f"{timeout_s}s ({len(out)} records read)"
                )
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
                    continue
                raise RuntimeError(f"{topic}: {err}")
            partition, offset = msg.partition(), msg.offset()
            assert partition is not None and offset is not None
            out.append(Record(partition, offset, msg.key(), msg.value()))
        return out
    finally:
        consumer.close()
