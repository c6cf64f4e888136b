"""Shared pytest fixtures.

Kafka broker (`kafka_bootstrap`, session scope), first match wins:
  1. KAFKA_BOOTSTRAP_SERVERS is set: use that broker as is (nothing is started or stopped).
  2. A Docker engine answers: a throwaway Redpanda container (testcontainers), removed at the end.
  3. Otherwise the local Apache Kafka broker from Maven Central jars, `scripts/kafka.sh up` on
     KAFKA_TEST_PORT (default 19092, so it never touches the dev broker on 9092); it is stopped at
     session end only if this fixture started it. Needs `make setup` first.

The local broker, session cluster and Pinot are started, reused and stopped by testkit.stack,
as for the benchmark and the fault suite.

`unique_topics` gives each test its own freshly created pipeline topics and deletes them after.
"""

from __future__ import annotations

import importlib
import os
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from testkit import stack
from testkit.stack import FlinkCluster, PinotCluster, StackError
from tools.topics import ROLES, delete_topics, ensure_topics, named_pipeline_topics

TOPIC_ROLES = ROLES
# Where testcontainers keeps RedpandaContainer: 4.15+ moved it to testcontainers.community.kafka
# (testcontainers.kafka still re-exports it there, with a DeprecationWarning); 4.0-4.14 have it in
# testcontainers.kafka; testcontainers.redpanda is tried last in case a release ships it alone.
REDPANDA_MODULES = (
    "testcontainers.community.kafka",
    "testcontainers.kafka",
    "testcontainers.redpanda",
)


def _docker_available() -> bool:
    try:
        import docker
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=5)
    except Exception:  # docker.errors.DockerException: no socket, no permission, bad DOCKER_HOST
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


def _redpanda_container_class() -> Any:
    """testcontainers' RedpandaContainer, wherever this testcontainers version keeps it."""
    for module in REDPANDA_MODULES:
        try:
            return importlib.import_module(module).RedpandaContainer
        except (ImportError, AttributeError):
            continue
    return None


def _port(var: str, default: int) -> int:
    return int(os.environ.get(var, "") or default)


@contextmanager
def _failing_test_on_stack_error() -> Iterator[None]:
    """A component that cannot be started fails the test that needs it, with the script's
    output and no traceback (the cause is in the output, not in this code)."""
    try:
        yield
    except StackError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers ("host:port") of a Kafka-compatible broker for the whole session."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if external:
        yield external
        return
    redpanda_cls = _redpanda_container_class()
    if redpanda_cls is not None and _docker_available():
        with redpanda_cls() as redpanda:
            yield redpanda.get_bootstrap_server()
        return
    with _failing_test_on_stack_error(), stack.broker(_port("KAFKA_TEST_PORT", 19092)) as local:
        yield local


@pytest.fixture
def unique_topics(kafka_bootstrap: str) -> Iterator[dict[str, str]]:
    """Role -> name of freshly created topics (raw/enriched/alerts/dlq/usage, 2 partitions each)."""
    suffix = uuid.uuid4().hex[:12]
    names = {role: f"test.{role}.{suffix}" for role in TOPIC_ROLES}
    specs = named_pipeline_topics(names, partitions=2)
    ensure_topics(kafka_bootstrap, specs)
    try:
        yield names
    finally:
        delete_topics(kafka_bootstrap, names.values())


@pytest.fixture(scope="session")
def flink_cluster() -> Iterator[FlinkCluster]:
    """A Flink standalone session cluster for the session.

    FLINK_CLUSTER_REST set: use that running cluster (its TaskManagers must have the
    PIPELINE_HASH_KEY this process has). Otherwise scripts/flink-cluster.sh starts one on
    FLINK_TEST_REST (default 127.0.0.1:18081, away from a developer's 8081) with a fresh key,
    and stops it at session end; one already answering there is refused, since its
    TaskManagers' key is unknown.
    """
    external = os.environ.get("FLINK_CLUSTER_REST", "").strip()
    if external:
        key = os.environ.get("PIPELINE_HASH_KEY", "")
        if not key:
            pytest.fail("FLINK_CLUSTER_REST needs the cluster's PIPELINE_HASH_KEY", pytrace=False)
        yield FlinkCluster(external, key)
        return
    rest = os.environ.get("FLINK_TEST_REST", "127.0.0.1:18081")
    with (
        _failing_test_on_stack_error(),
        stack.session_cluster(
            rest, secrets.token_hex(32), hint=" or set FLINK_CLUSTER_REST"
        ) as cluster,
    ):
        yield cluster


@pytest.fixture(scope="session")
def pinot() -> Iterator[PinotCluster]:
    """Apache Pinot (ZooKeeper, controller, broker, server) for the session.

    PINOT_CONTROLLER_URL and PINOT_BROKER_URL set: use that running Pinot (its servers must
    reach the test broker). Otherwise scripts/pinot.sh starts one from the Maven Central jars
    (`make pinot-jars`) on ports away from a developer's 9000/8099 (PINOT_TEST_CONTROLLER_PORT,
    default 19000; broker 18099, ZooKeeper 12181, server 18098/18097), and stops it at session
    end if it was not already running.
    """
    controller = os.environ.get("PINOT_CONTROLLER_URL", "").strip()
    broker = os.environ.get("PINOT_BROKER_URL", "").strip()
    if controller and broker:
        yield PinotCluster(controller.rstrip("/"), broker.rstrip("/"))
        return
    port = _port("PINOT_TEST_CONTROLLER_PORT", 19000)
    with _failing_test_on_stack_error(), stack.pinot(port) as local:
        yield local
