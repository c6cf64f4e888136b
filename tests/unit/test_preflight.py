"""jobs.preflight against a stand-in admin client: topics, partitions, timeout, SASL, reach."""

from __future__ import annotations

import logging
from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from jobs.preflight import (
    PreflightError,
    PreflightResult,
    admin_config,
    check_brokers,
)
from metering.kafka_security import SASL_PASSWORD_ENV
from metering.settings import PipelineSettings

BOOTSTRAP = "127.0.0.1:9092"
PASSWORD = "Vq3xT9-not-logged-7Kp2Lm8Zr4"


def _settings(**kw: Any) -> PipelineSettings:
    return PipelineSettings(bootstrap_servers=BOOTSTRAP, **kw)


def _all_topics(cfg: PipelineSettings, partitions: int = 6) -> dict[str, int]:
    return dict.fromkeys(cfg.topics_read_or_written(), partitions)


class FakeAdmin:
    """The two admin calls the preflight makes, answering from fixed broker state."""

    def __init__(
        self,
        topics: dict[str, int],
        broker_max: int | None = 900_000,
        unreachable: bool = False,
        describe_refused: bool = False,
    ) -> None:
        self.topics = topics
        self.broker_max = broker_max
        self.unreachable = unreachable
        self.describe_refused = describe_refused
        self.conf: dict[str, Any] = {}
        self.metadata_requests = 0

    def __call__(self, conf: dict[str, Any]) -> FakeAdmin:  # the admin_factory
        self.conf = conf
        return self

    def list_topics(self, timeout: float) -> Any:
        self.metadata_requests += 1
        if self.unreachable:
            raise KafkaException(
                KafkaError(
                    KafkaError._TRANSPORT, "Failed to get metadata: Local: Broker transport failure"
                )
            )
        topics = {
            name: SimpleNamespace(partitions=dict.fromkeys(range(n)), error=None)
            for name, n in self.topics.items()
        }
        # Another, unrelated topic the broker has.
        topics["__consumer_offsets"] = SimpleNamespace(partitions={0: None}, error=None)
        return SimpleNamespace(topics=topics, brokers={2: None, 1: None})

    def describe_configs(self, resources: list[Any], request_timeout: float) -> dict[Any, Any]:
        (resource,) = resources
        assert resource.name == "1", "the lowest broker id is asked"
        future: Future[dict[str, Any]] = Future()
        if self.describe_refused:
            future.set_exception(
                KafkaException(KafkaError(KafkaError.CLUSTER_AUTHORIZATION_FAILED))
            )
        else:
            entry = SimpleNamespace(value=None if self.broker_max is None else str(self.broker_max))
            future.set_result({"transaction.max.timeout.ms": entry})
        return {resource: future}


# -- topics --------------------------------------------------------------------------------------


def test_a_missing_topic_is_named_in_one_line() -> None:
    cfg = _settings()
    topics = _all_topics(cfg)
    del topics["gateway.usage"]
    with pytest.raises(PreflightError) as exc:
        check_brokers(cfg, {}, FakeAdmin(topics))
    assert str(exc.value) == (
        "topic 'gateway.usage' does not exist on 127.0.0.1:9092; "
        "create it with make topics (or tools.topics)"
    )


def test_every_missing_topic_is_named_with_flagged_names() -> None:
    # The job started with some topic flags but not all: every role is checked.
    cfg = _settings(raw_topic="custom.raw", alerts_topic="custom.alerts")
    topics = _all_topics(_settings())  # the broker has the default names only
    with pytest.raises(PreflightError) as exc:
        check_brokers(cfg, {}, FakeAdmin(topics))
    assert str(exc.value) == (
        "topics 'custom.raw', 'custom.alerts' do not exist on 127.0.0.1:9092; "
        "create them with make topics (or tools.topics)"
    )
    assert "\n" not in str(exc.value)


def test_all_topics_present_reports_the_raw_partitions(caplog: pytest.LogCaptureFixture) -> None:
    cfg = _settings()
    admin = FakeAdmin(_all_topics(cfg, partitions=6))
    with caplog.at_level(logging.INFO, logger="jobs.preflight"):
        result = check_brokers(cfg, {}, admin)
    assert result == PreflightResult(raw_partitions=6, transaction_max_timeout_ms=900_000)
    assert admin.metadata_requests == 1
    assert "raw topic gateway.raw has 6 partitions (parallelism 2)" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_parallelism_above_the_raw_partitions_warns(caplog: pytest.LogCaptureFixture) -> None:
    cfg = _settings(parallelism=4)
    topics = _all_topics(cfg, partitions=6) | {cfg.raw_topic: 2}
    with caplog.at_level(logging.INFO, logger="jobs.preflight"):
        result = check_brokers(cfg, {}, FakeAdmin(topics))
    assert result is not None and result.raw_partitions == 2
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.getMessage().startswith(
        "parallelism 4 exceeds the raw topic's 2 partitions: 2 source subtasks stay idle"
    )


# -- transaction timeout -------------------------------------------------------------------------


def test_a_timeout_above_the_brokers_real_max_is_refused() -> None:
    cfg = _settings()  # 600 s, within the configured 900 s
    with pytest.raises(ValueError, match=r"exceeds the brokers' transaction\.max\.timeout\.ms"):
        check_brokers(cfg, {}, FakeAdmin(_all_topics(cfg), broker_max=300_000))


def test_an_unreadable_max_still_checks_the_topics(caplog: pytest.LogCaptureFixture) -> None:
    cfg = _settings()
    with caplog.at_level(logging.INFO, logger="jobs.preflight"):
        result = check_brokers(cfg, {}, FakeAdmin(_all_topics(cfg), describe_refused=True))
    assert result == PreflightResult(6, None)
    assert "could not read the brokers' transaction.max.timeout.ms" in caplog.text
    assert "checked against --broker-transaction-max-timeout-ms (900000) only" in caplog.text
    topics = _all_topics(cfg)
    del topics[cfg.dlq_topic]
    with pytest.raises(PreflightError, match=r"topic 'gateway\.dlq' does not exist"):
        check_brokers(cfg, {}, FakeAdmin(topics, describe_refused=True))


# -- reachability and opting out -----------------------------------------------------------------


def test_an_unreachable_broker_is_one_clear_error() -> None:
    cfg = _settings()
    with pytest.raises(PreflightError) as exc:
        check_brokers(cfg, {}, FakeAdmin({}, unreachable=True))
    assert str(exc.value) == (
        "cannot read topic metadata from the Kafka brokers at 127.0.0.1:9092 within 10 s "
        "(Failed to get metadata: Local: Broker transport failure); start them (make kafka-up), "
        "fix --bootstrap-servers, or pass --no-broker-preflight if only the cluster reaches them"
    )


def test_no_broker_preflight_asks_nothing(caplog: pytest.LogCaptureFixture) -> None:
    admin = FakeAdmin({}, unreachable=True)
    with caplog.at_level(logging.INFO, logger="jobs.preflight"):
        assert check_brokers(_settings(broker_preflight=False), {}, admin) is None
    assert admin.metadata_requests == 0
    assert "broker preflight off (--no-broker-preflight)" in caplog.text


# -- client security -----------------------------------------------------------------------------


SASL = {
    "kafka_security_protocol": "SASL_SSL",
    "kafka_sasl_mechanism": "SCRAM-SHA-256",
    "kafka_sasl_username": "gateway-pipeline",
    "kafka_ssl_ca_location": "/etc/kafka/ca.pem",
}


def test_sasl_uses_the_jobs_password_from_the_environment(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = _settings(**SASL)
    admin = FakeAdmin(_all_topics(cfg))
    with caplog.at_level(logging.DEBUG, logger="jobs.preflight"):
        result = check_brokers(cfg, {SASL_PASSWORD_ENV: PASSWORD}, admin)
    assert result == PreflightResult(6, 900_000)
    conf = {k: v for k, v in admin.conf.items() if k != "logger"}
    assert conf == {
        "bootstrap.servers": BOOTSTRAP,
        "security.protocol": "SASL_SSL",
        "ssl.endpoint.identification.algorithm": "https",
        "ssl.ca.location": "/etc/kafka/ca.pem",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "gateway-pipeline",
        "sasl.password": PASSWORD,
    }
    assert isinstance(admin.conf["logger"], logging.Logger)
    assert PASSWORD not in caplog.text


def test_sasl_without_a_password_here_is_skipped_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = _settings(**SASL)
    admin = FakeAdmin({})
    with caplog.at_level(logging.INFO, logger="jobs.preflight"):
        assert check_brokers(cfg, {SASL_PASSWORD_ENV: ""}, admin) is None
    assert admin.metadata_requests == 0
    assert (
        "broker preflight skipped: no SASL password in this environment "
        "(PIPELINE_KAFKA_SASL_PASSWORD is not set)"
    ) in caplog.text


def test_admin_config_per_protocol() -> None:
    assert admin_config(_settings(), {SASL_PASSWORD_ENV: PASSWORD}) == {
        "bootstrap.servers": BOOTSTRAP,
        "security.protocol": "PLAINTEXT",
    }
    assert admin_config(_settings(kafka_security_protocol="SSL"), {}) == {
        "bootstrap.servers": BOOTSTRAP,
        "security.protocol": "SSL",
        "ssl.endpoint.identification.algorithm": "https",
    }
    plain = _settings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="u",
    )
    assert admin_config(plain, {}) is None
    conf = admin_config(plain, {SASL_PASSWORD_ENV: PASSWORD})
    assert conf is not None
    assert (conf["security.protocol"], conf["sasl.mechanism"], conf["sasl.password"]) == (
        "SASL_PLAINTEXT",
        "SCRAM-SHA-512",
        PASSWORD,
    )
    assert "ssl.endpoint.identification.algorithm" not in conf


def test_a_topic_hidden_by_acls_is_named_as_possibly_invisible_to_the_principal() -> None:
    cfg = _settings(**SASL)
    topics = _all_topics(cfg)
    del topics["gateway.alerts"]
    with pytest.raises(PreflightError) as exc:
        check_brokers(cfg, {SASL_PASSWORD_ENV: PASSWORD}, FakeAdmin(topics))
    assert str(exc.value) == (
        f"topic 'gateway.alerts' does not exist on {BOOTSTRAP} or is not visible to principal "
        "'gateway-pipeline'; create it with make topics (or tools.topics)"
    )


def test_an_unreachable_secured_broker_names_the_credentials() -> None:
    cfg = _settings(**SASL)
    with pytest.raises(PreflightError) as exc:
        check_brokers(cfg, {SASL_PASSWORD_ENV: PASSWORD}, FakeAdmin({}, unreachable=True))
    assert f"check --kafka-security-protocol, the SASL/TLS settings and {SASL_PASSWORD_ENV}" in str(
        exc.value
    )
    assert PASSWORD not in str(exc.value)
