"""The catalog as the billing topics hold it, followed while the job runs.

Each billing subtask opens one consumer (no group: it assigns every partition of the plans,
subscriptions and grants topics from the beginning), reads them to their end before it prices
anything, and then reads what was added every poll interval, without blocking. The topics are
compacted and small (a plan, a subscription, a grant is one record), so reading them whole at
each start is what makes a restarted job price by the same catalog.

A change takes effect at the subject's next usage record. Pricing depends on when a
subscription starts (``effective_from``), not on when it was read, so a subscription put before
the usage it covers prices the same whatever the job's lag; one put retroactively is flagged
(metering.billing.stream). A put that would make the catalog invalid (a subscription to a plan
that does not exist yet) is held until the catalog is valid again, and logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition
from pydantic import ValidationError

from metering.billing.plans import Catalog, loads_json, validation_problems

log = logging.getLogger(__name__)

SECTIONS = ("plans", "subscriptions", "grants")
NS = 1_000_000_000


class CatalogFeed:
    """The latest record per key of the three billing topics, as a Catalog."""

    def __init__(
        self,
        client_config: Mapping[str, Any],
        topics: Sequence[str],
        poll_interval_s: int,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        if len(topics) != len(SECTIONS):
            raise ValueError(f"expected the {', '.join(SECTIONS)} topics")
        self._section = dict(zip(topics, SECTIONS, strict=True))
        self._latest: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
        self._config = dict(client_config)
        self._interval = poll_interval_s * NS
        self._clock = clock
        self._next = 0
        self._consumer: Consumer | None = None
        self.catalog = Catalog()

    def open(self, timeout_s: int) -> Catalog:
        """Read the topics to their end; TimeoutError if they cannot be read in time."""
        consumer = Consumer(
            self._config
            | {
                "group.id": "billing-catalog-feed",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
            }
        )
        self._consumer = consumer
        assigned: list[TopicPartition] = []
        for topic in self._section:
            meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
            if meta is None or meta.error is not None or not meta.partitions:
                raise TimeoutError(f"billing topic {topic} is missing; create it with make topics")
            assigned.extend(TopicPartition(topic, p, 0) for p in sorted(meta.partitions))
        consumer.assign(assigned)
        pending = {(tp.topic, tp.partition) for tp in assigned}
        deadline = self._clock() + timeout_s * NS
        while pending:
            if self._clock() > deadline:
                raise TimeoutError(f"billing topics not read to their end in {timeout_s}s")
            for msg in consumer.consume(1000, timeout=1):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard((msg.topic(), msg.partition()))
                        continue
                    raise TimeoutError(f"reading the billing topics: {err}")
                self._put(str(msg.topic()), msg.key(), msg.value())
        self._rebuild()
        self._next = self._clock() + self._interval
        return self.catalog

    def poll(self) -> Catalog:
        """The catalog, with what was added since the last poll once the interval has passed."""
        if self._consumer is None or self._clock() < self._next:
            return self.catalog
        self._next = self._clock() + self._interval
        changed = False
        while True:
            msgs = self._consumer.consume(1000, timeout=0)
            for msg in msgs:
                if msg.error() is None:
                    self._put(str(msg.topic()), msg.key(), msg.value())
                    changed = True
            if len(msgs) < 1000:
                break
        if changed:
            self._rebuild()
        return self.catalog

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def _put(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        latest = self._latest[self._section[topic]]
        k = key.decode("utf-8", "replace")
        if value is None:
            latest.pop(k, None)
            return
        try:
            latest[k] = loads_json(value)
        except ValueError:
            log.warning("billing topic %s: key %s holds no JSON; ignored", topic, k)

    def _rebuild(self) -> None:
        data = {s: list(self._latest[s].values()) for s in SECTIONS}
        try:
            self.catalog = Catalog.model_validate(data)
        except ValidationError as e:
            log.warning(
                "the billing topics do not hold a valid catalog (%s); pricing by the last valid "
                "one until they do",
                validation_problems(e),
            )
