"""The benchmark's plain-Python contender: what a user might write instead of the Flink job.

    python -m bench.python_loop --bootstrap-servers H:P --raw-topic T --partitions 0,1 \\
        --enriched-topic E --usage-topic U --dlq-topic D --group-id G --transactional-id X

One confluent-kafka consume -> transform -> produce loop in one process (start one per share of
the partitions for parallelism). The transform is the job's: ``metering.records.RecordProcessor``
(parse, validate, redact, pseudonymize, geo-enrich) and per-key tumbling window counts with a
bounded out-of-orderness watermark (``metering.detect``). Delivery matches the job's
exactly-once sinks: a Kafka transaction per commit interval carries the outputs and the input
offsets (``send_offsets_to_transaction``), and the raw topic is read read_committed.

Not done, as a user writing a loop usually would not: gateway-retry deduplication, anomaly
detection, reconciliation, and keeping window state across a restart (it lives in memory).
PIPELINE_HASH_KEY is read from the environment, as the job does.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from metering.detect import window_bounds, window_record
from metering.geo import GeoLookup, default_geoip_db
from metering.kafka_producer import librdkafka_batching
from metering.records import RecordProcessor, SourceRef, dumps
from metering.redact import Pseudonymizer
from metering.settings import HashKeyError, PipelineSettings, read_hash_key
from metering.windows import as_agg, count_event

log = logging.getLogger("python_loop")


class Windows:
    """Tumbling event-time windows per rate key, closed by a bounded out-of-orderness watermark
    (highest event time seen minus the bound), as the job's windows are."""

    def __init__(self, window_ms: int, out_of_orderness_ms: int) -> None:
        self.window_ms = window_ms
        self.out_of_orderness_ms = out_of_orderness_ms
        # window start -> rate key -> accumulator (metering.windows' layout)
        self.open: dict[int, dict[str, list[Any]]] = {}
        self.max_event_ms: int | None = None

    @property
    def watermark(self) -> int | None:
        if self.max_event_ms is None:
            return None
        return self.max_event_ms - self.out_of_orderness_ms

    def add(self, ev: dict[str, Any]) -> dict[str, Any] | None:
        """Count one enriched event; returns a late correction if its window already closed."""
        t = int(ev["event_time"])
        start, end = window_bounds(t, self.window_ms)
        event = (
            ev["consumer"],
            ev["key_fingerprint"],
            ev["country"],
            ev["auth_failed"],
            ev["units"],
            ev.get("path"),
            ev.get("client_prefix"),
        )
        key = ev["rate_key"]
        wm = self.watermark
        if wm is not None and end - 1 <= wm:
            return window_record(
                key, start, end, as_agg(count_event(None, *event)), "late_correction"
            )
        per_key = self.open.setdefault(start, {})
        per_key[key] = count_event(per_key.get(key), *event)
        if self.max_event_ms is None or t > self.max_event_ms:
            self.max_event_ms = t
        return None

    def close_due(self) -> list[dict[str, Any]]:
        """Usage records of every window the watermark has passed, removed from state."""
        wm = self.watermark
        if wm is None:
            return []
        out = []
        for start in sorted(s for s in self.open if s + self.window_ms - 1 <= wm):
            for key, w in self.open.pop(start).items():
                out.append(window_record(key, start, start + self.window_ms, as_agg(w)))
        return out


def producer_config(args: argparse.Namespace) -> dict[str, Any]:
    """The loop's transactional producer, batching as the job's sinks do."""
    return {
        "bootstrap.servers": args.bootstrap_servers,
        "transactional.id": args.transactional_id,
        "transaction.timeout.ms": args.transaction_timeout_ms,
        "acks": "all",
        "enable.idempotence": True,
        **librdkafka_batching(),
        "queue.buffering.max.messages": 1000000,
        "queue.buffering.max.kbytes": 1048576,
    }


class Loop:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stop = False
        self.geo = GeoLookup(args.geoip_db or default_geoip_db(), args.geo_cache_size)
        # The job's parse, with the job's limits: its settings come from the same PIPELINE_*
        # environment (udfs.functions.ParseRecords builds the same processor).
        self.processor = RecordProcessor(
            Pseudonymizer(read_hash_key()), self.geo.lookup, PipelineSettings().limits()
        )
        self.windows = Windows(args.window_seconds * 1000, args.out_of_orderness_seconds * 1000)
        self.consumer = Consumer(
            {
                "bootstrap.servers": args.bootstrap_servers,
                "group.id": args.group_id,
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.max.bytes": 52428800,
                "max.partition.fetch.bytes": 10485760,
            }
        )
        self.producer = Producer(producer_config(args))
        self.records = 0

    def _produce(self, topic: str, key: str | None, value: str) -> None:
        while True:
            try:
                self.producer.produce(
                    topic, value=value.encode(), key=key.encode() if key else None
                )
                return
            except BufferError:
                self.producer.poll(0.05)

    def _commit(self) -> None:
        for record in self.windows.close_due():
            self._produce(self.args.usage_topic, record["rate_key"], dumps(record))
        positions = self.consumer.position(self.consumer.assignment())
        self.producer.send_offsets_to_transaction(
            positions, self.consumer.consumer_group_metadata(), 60
        )
        self.producer.commit_transaction(120)
        self.producer.begin_transaction()

    def run(self) -> int:
        args = self.args
        partitions = [int(p) for p in args.partitions.split(",") if p.strip()]
        self.consumer.assign([TopicPartition(args.raw_topic, p) for p in partitions])
        self.producer.init_transactions(60)
        self.producer.begin_transaction()
        pending = 0
        last_commit = time.monotonic()
        log.info("consuming %s partitions %s", args.raw_topic, partitions)
        try:
            while not self.stop:
                for msg in self.consumer.consume(500, timeout=0.2):
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            continue
                        raise KafkaException(err)
                    self._handle(msg.topic() or "", msg.partition() or 0, msg.offset() or 0, msg)
                    pending += 1
                self.producer.poll(0)
                due = time.monotonic() - last_commit >= args.commit_seconds
                if pending and (due or pending >= args.commit_records):
                    self._commit()
                    self.records += pending
                    pending = 0
                    last_commit = time.monotonic()
        finally:
            if pending:
                self.producer.abort_transaction(30)
            self.consumer.close()
            self.geo.close()
        log.info("stopped after %d committed records", self.records)
        return 0

    def _handle(self, topic: str, partition: int, offset: int, msg: Any) -> None:
        result = self.processor.process(msg.value(), SourceRef(topic, partition, offset))
        # ``encoded`` is each event's JSON as the job writes it, already within the size limit.
        for ev, text in zip(result.events, result.encoded, strict=True):
            self._produce(self.args.enriched_topic, ev["rate_key"], text)
            late = self.windows.add(ev)
            if late is not None:
                self._produce(self.args.usage_topic, late["rate_key"], dumps(late))
        for dl in result.dead_letters:
            self._produce(self.args.dlq_topic, None, dumps(dl))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.python_loop", description=__doc__)
    p.add_argument("--bootstrap-servers", required=True)
    p.add_argument("--raw-topic", required=True)
    p.add_argument("--partitions", required=True, help="raw partitions to read, e.g. 0,1")
    p.add_argument("--enriched-topic", required=True)
    p.add_argument("--usage-topic", required=True)
    p.add_argument("--dlq-topic", required=True)
    p.add_argument("--group-id", required=True)
    p.add_argument("--transactional-id", required=True)
    p.add_argument("--commit-seconds", type=float, default=10.0, help="transaction interval")
    p.add_argument("--commit-records", type=int, default=1_000_000, help="or after this many")
    p.add_argument("--transaction-timeout-ms", type=int, default=600_000)
    p.add_argument("--window-seconds", type=int, default=10)
    p.add_argument("--out-of-orderness-seconds", type=int, default=5)
    p.add_argument("--geoip-db", help="MaxMind City mmdb (default: the bundled GeoLite2)")
    p.add_argument("--geo-cache-size", type=int, default=65_536)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args = build_parser().parse_args(argv)
    try:
        loop = Loop(args)
    except (HashKeyError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    def _stop(*_: object) -> None:
        loop.stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    return loop.run()


if __name__ == "__main__":
    sys.exit(main())
