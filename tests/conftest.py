"""Shared pytest fixtures.

Kafka broker (`kafka_bootstrap`, session scope), first match wins:
  1. KAFKA_BOOTSTRAP_SERVERS is set: use that broker as is (nothing is started or stopped).
  2. A Docker engine answers: a throwaway Redpanda container (testcontainers), removed at the end.
  3. Otherwise the local Apache Kafka broker from Maven Central jars, `scripts/kafka.sh up` on
     KAFKA_TEST_PORT (default 19092, so it never touches the dev broker on 9092); it is stopped at
     session end only if this fixture started it. Needs `make setup` first.

`unique_topics` gives each test its own freshly created pipeline topics and deletes them after.
"""

from __future__ import annotations

import importlib
import os
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tools.topics import ROLES, delete_topics, ensure_topics, named_pipeline_topics

REPO_ROOT = Path(__file__).resolve().parent.parent
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


def _script(
    name: str, command: str, env: dict[str, str], drop: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Run scripts/<name> <command> with this environment plus ``env``, minus ``drop``."""
    full = dict(os.environ, **env)
    for var in drop:
        full.pop(var, None)
    return subprocess.run(
        [str(REPO_ROOT / "scripts" / name), command],
        cwd=REPO_ROOT,
        env=full,
        capture_output=True,
        text=True,
        check=False,
    )


def _kafka_sh(command: str, port: int) -> subprocess.CompletedProcess[str]:
    # A controller port chosen for another broker (e.g. the dev one) must not leak into this one;
    # the script derives it from KAFKA_PORT.
    return _script("kafka.sh", command, {"KAFKA_PORT": str(port)}, ("KAFKA_CONTROLLER_PORT",))


def _local_kafka(port: int) -> Iterator[str]:
    already_running = _kafka_sh("status", port).returncode == 0
    up = _kafka_sh("up", port)
    if up.returncode != 0:
        pytest.fail(
            f"scripts/kafka.sh up failed on port {port} (exit {up.returncode}):\n"
            f"{up.stdout}{up.stderr}",
            pytrace=False,
        )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        if not already_running:
            down = _kafka_sh("down", port)
            if down.returncode != 0:
                print(f"scripts/kafka.sh down failed:\n{down.stdout}{down.stderr}")


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
    yield from _local_kafka(int(os.environ.get("KAFKA_TEST_PORT", "19092")))


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


@dataclass(frozen=True)
class FlinkCluster:
    rest: str
    hash_key: str
    """The PIPELINE_HASH_KEY its TaskManagers have, so tests can compute fingerprints."""
    log_dir: Path | None = None
    """The JobManager/TaskManager/client logs, when the fixture started the cluster."""


def _flink_cluster_sh(command: str, rest: str, hash_key: str) -> subprocess.CompletedProcess[str]:
    env = {"FLINK_REST": rest, "PIPELINE_HASH_KEY": hash_key}
    return _script("flink-cluster.sh", command, env, ("FLINK_RPC_PORT",))


@pytest.fixture(scope="session")
def flink_cluster() -> Iterator[FlinkCluster]:
    """A Flink standalone session cluster for the session.

    FLINK_CLUSTER_REST set: use that running cluster (its TaskManagers must have the
    PIPELINE_HASH_KEY this process has). Otherwise scripts/flink-cluster.sh starts one on
    FLINK_TEST_REST (default 127.0.0.1:18081, away from a developer's 8081) with a fresh key,
    and stops it at session end if it was not already running.
    """
    external = os.environ.get("FLINK_CLUSTER_REST", "").strip()
    if external:
        key = os.environ.get("PIPELINE_HASH_KEY", "")
        if not key:
            pytest.fail("FLINK_CLUSTER_REST needs the cluster's PIPELINE_HASH_KEY", pytrace=False)
        yield FlinkCluster(external, key)
        return
    rest = os.environ.get("FLINK_TEST_REST", "127.0.0.1:18081")
    key = secrets.token_hex(32)
    if _flink_cluster_sh("status", rest, key).returncode == 0:
        pytest.fail(
            f"a cluster already runs on {rest} with an unknown hash key; stop it "
            f"(FLINK_REST={rest} scripts/flink-cluster.sh down) or set FLINK_CLUSTER_REST",
            pytrace=False,
        )
    up = _flink_cluster_sh("up", rest, key)
    if up.returncode != 0:
        pytest.fail(f"flink-cluster.sh up failed:\n{up.stdout}{up.stderr}", pytrace=False)
    try:
        yield FlinkCluster(rest, key, REPO_ROOT / f".local/flink-{rest.rsplit(':', 1)[-1]}/log")
    finally:
        down = _flink_cluster_sh("down", rest, key)
        if down.returncode != 0:
            print(f"flink-cluster.sh down failed:\n{down.stdout}{down.stderr}")


@dataclass(frozen=True)
class PinotCluster:
    controller: str
    """Controller base URL, e.g. http://127.0.0.1:19000."""
    broker: str
    """Broker base URL (POST /query/sql), e.g. http://127.0.0.1:18099."""


def _pinot_sh(command: str, ports: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return _script("pinot.sh", command, ports)


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
    port = int(os.environ.get("PINOT_TEST_CONTROLLER_PORT", "19000"))
    ports = {
        "PINOT_CONTROLLER_PORT": str(port),
        "PINOT_BROKER_PORT": str(port - 901),
        "PINOT_ZK_PORT": str(port - 6819),
        "PINOT_SERVER_PORT": str(port - 902),
        "PINOT_SERVER_ADMIN_PORT": str(port - 903),
    }
    already_running = _pinot_sh("status", ports).returncode == 0
    up = _pinot_sh("up", ports)
    if up.returncode != 0:
        pytest.fail(f"scripts/pinot.sh up failed:\n{up.stdout}{up.stderr}", pytrace=False)
    try:
        yield PinotCluster(
            f"http://127.0.0.1:{port}", f"http://127.0.0.1:{ports['PINOT_BROKER_PORT']}"
        )
    finally:
        if not already_running:
            down = _pinot_sh("down", ports)
            if down.returncode != 0:
                print(f"scripts/pinot.sh down failed:\n{down.stdout}{down.stderr}")
