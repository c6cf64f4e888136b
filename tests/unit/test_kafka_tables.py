"""Kafka source and sink DDL (strings only: no JVM) and the transaction timeout bounds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jobs.kafka_tables import SinkSpec, SourceSpec, sink_ddl, sink_specs, source_ddl
from metering.kafka_producer import flink_sink_batching
from metering.records import SINK_MAX_REQUEST_BYTES, SINK_RECORD_FRAMING_BYTES
from metering.settings import PipelineSettings

KAFKA_SH = Path(__file__).resolve().parents[2] / "scripts" / "kafka.sh"
_OPTION = re.compile(r"^  '((?:[^']|'')*)' = '((?:[^']|'')*)',?$")


def options(ddl: str) -> dict[str, str]:
    """The WITH (...) options of a DDL statement, unquoted."""
    body = ddl.split(") WITH (\n", 1)[1].rsplit("\n)", 1)[0]
    out: dict[str, str] = {}
    for line in body.split("\n"):
        match = _OPTION.match(line)
        assert match, line
        key, value = (g.replace("''", "'") for g in match.groups())
        assert key not in out
        out[key] = value
    return out


def columns(ddl: str) -> list[str]:
    head = ddl.split(" (\n", 1)[1].split("\n) WITH (", 1)[0]
    return [line.strip().rstrip(",") for line in head.split("\n")]


def source(bounded: bool, topic: str = "gateway.raw") -> SourceSpec:
    return SourceSpec(
        table="raw_source",
        topic=topic,
        bootstrap_servers="127.0.0.1:9092",
        group_id="gateway-pipeline",
        startup_mode="group-offsets",
        bounded=bounded,
    )


def sink(delivery: str, keyed: bool = True, prefix: str | None = "gp-enriched") -> SinkSpec:
    return SinkSpec(
        table="enriched_sink",
        topic="gateway.enriched",
        bootstrap_servers="127.0.0.1:9092",
        delivery=delivery,  # type: ignore[arg-type]
        transactional_id_prefix=prefix,
        transaction_timeout_ms=600_000,
        keyed=keyed,
    )


# -- source ------------------------------------------------------------------------------------


def test_source_ddl_unbounded() -> None:
    ddl = source_ddl(source(bounded=False))
    assert ddl.startswith("CREATE TEMPORARY TABLE `raw_source` (\n")
    assert columns(ddl) == [
        "`payload` BYTES",
        "`partition` INT METADATA VIRTUAL",
        "`offset` BIGINT METADATA VIRTUAL",
        "`timestamp` TIMESTAMP_LTZ(3) METADATA VIRTUAL",
    ]
    assert options(ddl) == {
        "connector": "kafka",
        "topic": "gateway.raw",
        "properties.bootstrap.servers": "127.0.0.1:9092",
        "properties.group.id": "gateway-pipeline",
        "properties.auto.offset.reset": "earliest",
        "properties.isolation.level": "read_committed",
        "scan.startup.mode": "group-offsets",
        "format": "raw",
    }


def test_source_ddl_bounded_stops_at_the_latest_offsets() -> None:
    opts = options(source_ddl(source(bounded=True)))
    assert opts["scan.bounded.mode"] == "latest-offset"
    assert opts["properties.isolation.level"] == "read_committed"
    assert opts["format"] == "raw"
    assert "scan.bounded.mode" not in options(source_ddl(source(bounded=False)))


def test_source_ddl_from_a_timestamp() -> None:
    from dataclasses import replace

    spec = replace(
        source(bounded=False), startup_mode="timestamp", startup_timestamp_ms=1_767_225_600_000
    )
    opts = options(source_ddl(spec))
    assert (opts["scan.startup.mode"], opts["scan.startup.timestamp-millis"]) == (
        "timestamp",
        "1767225600000",
    )
    assert "scan.startup.timestamp-millis" not in options(source_ddl(source(bounded=False)))


def test_quotes_in_values_are_escaped() -> None:
    topic = "it's a 'topic'"
    ddl = source_ddl(source(bounded=False, topic=topic))
    assert "'topic' = 'it''s a ''topic'''" in ddl
    assert options(ddl)["topic"] == topic
    # No value can close the string literal and inject options.
    evil = "t', 'properties.security.protocol' = 'PLAINTEXT"
    opts = options(source_ddl(source(bounded=False, topic=evil)))
    assert opts["topic"] == evil
    assert "properties.security.protocol" not in opts


# -- sinks -------------------------------------------------------------------------------------


def test_exactly_once_sink() -> None:
    ddl = sink_ddl(sink("exactly-once"))
    assert ddl.startswith("CREATE TEMPORARY TABLE `enriched_sink` (\n")
    assert columns(ddl) == ["`k` STRING", "`v` STRING"]
    assert options(ddl) == {
        "connector": "kafka",
        "topic": "gateway.enriched",
        "properties.bootstrap.servers": "127.0.0.1:9092",
        "sink.delivery-guarantee": "exactly-once",
        "value.format": "raw",
        "properties.acks": "all",
        "properties.enable.idempotence": "true",
        "properties.max.request.size": "1048576",
        "key.format": "raw",
        "key.fields": "k",
        "value.fields-include": "EXCEPT_KEY",
        "sink.transactional-id-prefix": "gp-enriched",
        "properties.transaction.timeout.ms": "600000",
        **flink_sink_batching(),
    }


def test_at_least_once_sink_has_no_transactions() -> None:
    opts = options(sink_ddl(sink("at-least-once", prefix="ignored")))
    assert opts["sink.delivery-guarantee"] == "at-least-once"
    assert "sink.transactional-id-prefix" not in opts
    assert "properties.transaction.timeout.ms" not in opts
    assert (opts["properties.acks"], opts["properties.enable.idempotence"]) == ("all", "true")


def test_every_sink_takes_the_largest_enriched_record_the_job_emits() -> None:
    # Set deliberately: the producer's max.request.size fits --max-enriched-bytes plus framing,
    # so no record that passed the job's size check fails in the producer.
    default = PipelineSettings()
    assert default.max_enriched_bytes + SINK_RECORD_FRAMING_BYTES <= SINK_MAX_REQUEST_BYTES
    sizes = {options(sink_ddl(s))["properties.max.request.size"] for s in sink_specs(default)}
    assert sizes == {str(SINK_MAX_REQUEST_BYTES)}
    raised = PipelineSettings(max_enriched_bytes=2_000_000)
    sizes = {options(sink_ddl(s))["properties.max.request.size"] for s in sink_specs(raised)}
    assert sizes == {str(2_000_000 + SINK_RECORD_FRAMING_BYTES)}


def test_reconciliation_sink_upserts_by_partition_and_interval() -> None:
    spec = {s.table: s for s in sink_specs(PipelineSettings())}["reconciliation_sink"]
    ddl = sink_ddl(spec)
    assert columns(ddl) == ["`k` STRING NOT NULL", "`v` STRING", "PRIMARY KEY (`k`) NOT ENFORCED"]
    opts = options(ddl)
    assert opts["connector"] == "upsert-kafka"
    assert opts["sink.delivery-guarantee"] == "exactly-once"
    assert opts["sink.transactional-id-prefix"].endswith("-reconciliation")
    assert "key.fields" not in opts  # the primary key is the key
    assert {s.upsert for s in sink_specs(PipelineSettings())} == {True, False}


def test_unkeyed_sink_has_only_a_value_column() -> None:
    ddl = sink_ddl(sink("exactly-once", keyed=False))
    assert columns(ddl) == ["`v` STRING"]
    opts = options(ddl)
    assert not {"key.format", "key.fields", "value.fields-include"} & set(opts)
    assert opts["sink.transactional-id-prefix"] == "gp-enriched"


@pytest.mark.parametrize("prefix", [None, ""])
def test_exactly_once_needs_a_transactional_id_prefix(prefix: str | None) -> None:
    with pytest.raises(ValueError, match="enriched_sink: exactly-once needs a transactional id"):
        sink_ddl(sink("exactly-once", prefix=prefix))


# -- transaction timeout -----------------------------------------------------------------------


def broker_max_transaction_timeout_ms() -> int:
    found = re.findall(r"^transaction\.max\.timeout\.ms=(\d+)\s*$", KAFKA_SH.read_text(), re.M)
    assert len(found) == 1
    return int(found[0])


def test_default_transaction_timeout_fits_the_broker_and_the_checkpoints() -> None:
    s = PipelineSettings()
    broker_max = broker_max_transaction_timeout_ms()
    assert broker_max == 900_000
    assert s.transaction_timeout_ms <= broker_max
    assert s.transaction_timeout_ms > s.checkpoint_interval_seconds * 1000
    ddl = sink_ddl(
        SinkSpec(
            table="t",
            topic="gateway.dlq",
            bootstrap_servers=s.bootstrap_servers,
            delivery="exactly-once",
            transactional_id_prefix=s.transactional_id_prefix + "-dlq",
            transaction_timeout_ms=s.transaction_timeout_ms,
        )
    )
    assert options(ddl)["properties.transaction.timeout.ms"] == str(s.transaction_timeout_ms)


def test_sasl_scram_over_tls_keeps_the_password_out_of_the_job() -> None:
    from metering.settings import settings_from_args

    cfg = settings_from_args(
        [
            "--kafka-security-protocol", "SASL_SSL",
            "--kafka-sasl-mechanism", "SCRAM-SHA-512",
            "--kafka-sasl-username", "gateway-pipeline",
            "--kafka-ssl-ca-location", "/etc/kafka/ca.pem",
        ]
    )  # fmt: skip
    shaded = "org.apache.flink.kafka.shaded.org.apache.kafka"
    assert cfg.kafka_security() == {
        "properties.security.protocol": "SASL_SSL",
        "properties.ssl.endpoint.identification.algorithm": "https",
        "properties.ssl.truststore.type": "PEM",
        "properties.ssl.truststore.location": "/etc/kafka/ca.pem",
        "properties.sasl.mechanism": "SCRAM-SHA-512",
        "properties.config.providers": "env",
        "properties.config.providers.env.class": (
            f"{shaded}.common.config.provider.EnvVarConfigProvider"
        ),
        "properties.config.providers.env.param.allowlist.pattern": (
            "^PIPELINE_KAFKA_SASL_PASSWORD$"
        ),
        "properties.sasl.jaas.config": (
            f"{shaded}.common.security.scram.ScramLoginModule required "
            'username="gateway-pipeline" password="${env:PIPELINE_KAFKA_SASL_PASSWORD}";'
        ),
    }
    # Every source and sink gets the same client security.
    src = source_ddl(
        SourceSpec("raw", "t", "b:9093", "g", "group-offsets", False, cfg.kafka_security())
    )
    assert "'properties.sasl.mechanism' = 'SCRAM-SHA-512'" in src
    assert "${env:PIPELINE_KAFKA_SASL_PASSWORD}" in src


def test_shaded_security_classes_exist_in_the_connector_jar() -> None:
    import zipfile

    from metering.kafka_security import _LOGIN_MODULES, SHADED
    from metering.settings import find_connector_jar

    jar = find_connector_jar()
    assert jar is not None, "make test runs make setup first"
    names = set(zipfile.ZipFile(jar).namelist())
    classes = {*_LOGIN_MODULES.values(), f"{SHADED}.common.config.provider.EnvVarConfigProvider"}
    for cls in classes:
        assert cls.replace(".", "/") + ".class" in names, cls


@pytest.mark.parametrize(
    "argv",
    [
        ["--kafka-security-protocol", "SASL_SSL"],  # no mechanism / username
        ["--kafka-sasl-mechanism", "PLAIN", "--kafka-sasl-username", "u"],  # PLAINTEXT + SASL
    ],
)
def test_inconsistent_security_settings_are_refused(argv: list[str]) -> None:
    from metering.settings import settings_from_args

    with pytest.raises(SystemExit) as exc:
        settings_from_args(argv)
    assert exc.value.code == 2


def test_tls_only() -> None:
    from metering.kafka_security import kafka_security_options

    assert kafka_security_options("SSL") == {
        "properties.security.protocol": "SSL",
        "properties.ssl.endpoint.identification.algorithm": "https",
    }
