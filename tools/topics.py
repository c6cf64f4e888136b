"""Create (and, for tests, delete) the pipeline's Kafka topics.

    python -m tools.topics --bootstrap-servers 127.0.0.1:9092 [--partitions 2]

creates every topic of the catalog (metering.topics) that is missing, with its local retention and
cleanup policy; existing topics are left untouched, so the command is safe to re-run. ``make
topics``, the compose ``topics`` service, the tests, the bench and the demo create their topics
with it; production clusters are provisioned by deploy/redpanda/provision.sh.
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

from metering.topics import (
    BY_ROLE,
    JOB_SERVICE_INPUTS,
    LOCAL_LONG_RETENTION_MS,
    LOCAL_PARTITIONS,
    ROLES,
    SERVICE_TOPICS,
    TOPICS,
)

SERVICE_ROLES = tuple(t.role for t in SERVICE_TOPICS)

__all__ = [
    "DEFAULT_PARTITIONS",
    "RETENTION_14_DAYS_MS",
    "ROLES",
    "TopicSpec",
    "delete_topics",
    "ensure_topics",
    "job_topic_flags",
    "named_pipeline_topics",
    "pipeline_topics",
]

DEFAULT_PARTITIONS = LOCAL_PARTITIONS
"""Partitions of each topic created here unless the caller asks for others."""
# tests/integration/test_broker.py checks the long-retention topics against this name.
RETENTION_14_DAYS_MS = str(LOCAL_LONG_RETENTION_MS)


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


def named_pipeline_topics(
    names: Mapping[str, str], partitions: int = DEFAULT_PARTITIONS
) -> dict[str, TopicSpec]:
    """Topic name -> how to create it, for role -> topic name (roles of the catalog; any of
    them), and the billing inputs the job reads (under their names, unless ``names`` gives
    them). ValueError for an unknown role or a name given to two roles."""
    unknown = sorted(set(names) - set(BY_ROLE))
    if unknown:
        raise ValueError(f"unknown topic roles {unknown}; the catalog has {list(BY_ROLE)}")
    if len(set(names.values())) != len(names):
        raise ValueError(f"the topic names must be distinct: {dict(names)}")
    names = {t.role: t.name for t in JOB_SERVICE_INPUTS} | dict(names)
    return {name: TopicSpec(partitions, BY_ROLE[role].config()) for role, name in names.items()}


def pipeline_topics(*, partitions: int = DEFAULT_PARTITIONS, **names: str) -> dict[str, TopicSpec]:
    """Every topic of the catalog, under its default name unless ``names`` (role=name) gives
    another: topic name -> how to create it."""
    return named_pipeline_topics({t.role: t.name for t in TOPICS} | names, partitions)


def job_topic_flags(names: Mapping[str, str]) -> list[str]:
    """``--raw-topic X --enriched-topic Y ...`` for the roles in ``names`` (role -> topic)."""
    return [arg for role, topic in names.items() for arg in (BY_ROLE[role].flag, topic)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.topics",
        description="Create the pipeline's Kafka topics (metering.topics) that are missing.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--bootstrap-servers", required=True, metavar="HOST:PORT")
    for topic in (*TOPICS, *SERVICE_TOPICS):
        parser.add_argument(topic.flag, dest=topic.role, default=topic.name, help=topic.about)
    parser.add_argument(
        "--partitions", type=int, default=DEFAULT_PARTITIONS, help="partitions of each topic"
    )
    args = parser.parse_args(argv)
    if args.partitions < 1:
        parser.error("--partitions must be at least 1")

    try:
        topics = named_pipeline_topics(
            {role: getattr(args, role) for role in (*ROLES, *SERVICE_ROLES)}, args.partitions
        )
    except ValueError as e:
        parser.error(str(e))
    ensure_topics(args.bootstrap_servers, topics)
    for name, spec in topics.items():
        extra = "".join(f" {k}={v}" for k, v in sorted(spec.config.items()))
        print(f"topic {name} ready (requested {spec.partitions} partitions{extra})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
