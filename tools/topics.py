"""Create (and, for tests, delete) the pipeline's Kafka topics.

    python -m tools.topics --bootstrap-servers 127.0.0.1:9092 [--partitions 2]

creates gateway.raw, gateway.enriched, gateway.alerts, gateway.dlq, gateway.usage and
gateway.reconciliation if they are missing; existing topics are left untouched, so the command is
safe to re-run. The alerts, dead-letter and reconciliation topics keep 14 days of data; the others
use the broker's retention default. The reconciliation topic is also compacted.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

# confluent_kafka.admin re-exports NewTopic without listing it, which mypy --strict rejects; the
# class itself lives (typed) in the C extension module.
from confluent_kafka.cimpl import NewTopic

RETENTION_14_DAYS_MS = str(14 * 24 * 60 * 60 * 1000)
# The reconciliation topic is an upsert topic: per key, only the latest record counts, and the job
# rewrites an interval's record up to once a second while its events arrive. Compaction drops the
# superseded records; "delete" still ends the retention of old intervals.
COMPACT_AND_DELETE = "compact,delete"
DEFAULT_PARTITIONS = 2


@dataclass(frozen=True)
class TopicSpec:
    """How to create one topic; `config` holds topic-level overrides such as retention.ms."""

    partitions: int = DEFAULT_PARTITIONS
    config: dict[str, str] = field(default_factory=dict)


def _admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def _error_code(exc: BaseException) -> int | None:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        code: int = exc.args[0].code()
        return code
    return None


def _wait_for_metadata(
    admin: AdminClient, names: Iterable[str], *, present: bool, timeout_s: float
) -> None:
    """Wait until every topic is visible with leaders for all partitions (or is gone).

    The CreateTopics/DeleteTopics futures resolve once the controller has committed the change;
    the broker's metadata cache follows a moment later, so a producer started right after
    creation could otherwise see UNKNOWN_TOPIC_OR_PART.
    """
    wanted = set(names)
    deadline = time.monotonic() + timeout_s
    pending = wanted
    while True:
        md = admin.list_topics(timeout=max(1.0, deadline - time.monotonic()))
        if present:
            pending = {
                name
                for name in wanted
                if name not in md.topics
                or md.topics[name].error is not None
                or not md.topics[name].partitions
                or any(p.leader < 0 for p in md.topics[name].partitions.values())
            }
        else:
            pending = wanted & set(md.topics)
        if not pending:
            return
        if time.monotonic() >= deadline:
            state = "appear" if present else "disappear"
            raise TimeoutError(f"topics did not {state} within {timeout_s:.0f}s: {sorted(pending)}")
        time.sleep(0.1)


def ensure_topics(
    bootstrap: str, topics: Mapping[str, TopicSpec], *, timeout_s: float = 60.0
) -> None:
    """Create the topics that do not exist yet; existing ones (TOPIC_ALREADY_EXISTS) are kept.

    Returns once every topic in `topics` exists and has a leader for each partition.
    """
    if not topics:
        return
    admin = _admin(bootstrap)
    new = [
        NewTopic(name, num_partitions=spec.partitions, config=dict(spec.config))
        for name, spec in topics.items()
    ]
    futures: dict[str, Future[None]] = admin.create_topics(
        new, operation_timeout=timeout_s, request_timeout=timeout_s
    )
    failures: dict[str, BaseException] = {}
    for name, fut in futures.items():
        try:
            fut.result(timeout=timeout_s)
        except Exception as exc:
            if _error_code(exc) != KafkaError.TOPIC_ALREADY_EXISTS:
                failures[name] = exc
    if failures:
        detail = "; ".join(f"{name}: {exc}" for name, exc in sorted(failures.items()))
        raise RuntimeError(f"could not create topics: {detail}")
    _wait_for_metadata(admin, topics, present=True, timeout_s=timeout_s)


def delete_topics(bootstrap: str, names: Iterable[str], *, timeout_s: float = 60.0) -> None:
    """Delete topics (missing ones are ignored) and wait until the broker no longer lists them."""
    wanted = sorted(set(names))
    if not wanted:
        return
    admin = _admin(bootstrap)
    futures: dict[str, Future[None]] = admin.delete_topics(
        wanted, operation_timeout=timeout_s, request_timeout=timeout_s
    )
    failures: dict[str, BaseException] = {}
    for name, fut in futures.items():
        try:
            fut.result(timeout=timeout_s)
        except Exception as exc:
            if _error_code(exc) != KafkaError.UNKNOWN_TOPIC_OR_PART:
                failures[name] = exc
    if failures:
        detail = "; ".join(f"{name}: {exc}" for name, exc in sorted(failures.items()))
        raise RuntimeError(f"could not delete topics: {detail}")
    _wait_for_metadata(admin, wanted, present=False, timeout_s=timeout_s)


def pipeline_topics(
    *,
    raw: str = "gateway.raw",
    enriched: str = "gateway.enriched",
    alerts: str = "gateway.alerts",
    dlq: str = "gateway.dlq",
    usage: str = "gateway.usage",
    reconciliation: str = "gateway.reconciliation",
    partitions: int = DEFAULT_PARTITIONS,
) -> dict[str, TopicSpec]:
    """The pipeline's six topics; alerts, dead letters and reconciliation keep 14 days, and
    reconciliation, an upsert topic, is compacted as well."""
    long_retention = {"retention.ms": RETENTION_14_DAYS_MS}
    return {
        raw: TopicSpec(partitions),
        enriched: TopicSpec(partitions),
        alerts: TopicSpec(partitions, dict(long_retention)),
        dlq: TopicSpec(partitions, dict(long_retention)),
        usage: TopicSpec(partitions),
        reconciliation: TopicSpec(
            partitions, long_retention | {"cleanup.policy": COMPACT_AND_DELETE}
        ),
    }


ROLES = ("raw", "enriched", "alerts", "dlq", "usage", "reconciliation")
"""The pipeline's topics by role, as the job's ``--<role>-topic`` flags name them."""


def named_pipeline_topics(
    names: Mapping[str, str], partitions: int = DEFAULT_PARTITIONS
) -> dict[str, TopicSpec]:
    """``pipeline_topics`` for role -> topic name (every role of ``ROLES``)."""
    return pipeline_topics(
        raw=names["raw"],
        enriched=names["enriched"],
        alerts=names["alerts"],
        dlq=names["dlq"],
        usage=names["usage"],
        reconciliation=names["reconciliation"],
        partitions=partitions,
    )


def job_topic_flags(names: Mapping[str, str]) -> list[str]:
    """``--raw-topic X --enriched-topic Y ...`` for the roles in ``names`` (role -> topic)."""
    return [arg for role, topic in names.items() for arg in (f"--{role}-topic", topic)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.topics", description="Create the pipeline's Kafka topics."
    )
    parser.add_argument("--bootstrap-servers", required=True, metavar="HOST:PORT")
    parser.add_argument("--raw-topic", default="gateway.raw")
    parser.add_argument("--enriched-topic", default="gateway.enriched")
    parser.add_argument("--alerts-topic", default="gateway.alerts")
    parser.add_argument("--dlq-topic", default="gateway.dlq")
    parser.add_argument("--usage-topic", default="gateway.usage")
    parser.add_argument("--reconciliation-topic", default="gateway.reconciliation")
    parser.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS)
    args = parser.parse_args(argv)
    if args.partitions < 1:
        parser.error("--partitions must be at least 1")

    topics = pipeline_topics(
        raw=args.raw_topic,
        enriched=args.enriched_topic,
        alerts=args.alerts_topic,
        dlq=args.dlq_topic,
        usage=args.usage_topic,
        reconciliation=args.reconciliation_topic,
        partitions=args.partitions,
    )
    if len(topics) != 6:
        parser.error("the six topic names must be distinct")
    ensure_topics(args.bootstrap_servers, topics)
    for name, spec in topics.items():
        extra = "".join(f" {k}={v}" for k, v in sorted(spec.config.items()))
        print(f"topic {name} ready (requested {spec.partitions} partitions{extra})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
