"""Settings: flags over environment over defaults, and the environment-only hash key."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from metering.baseline import BaselineConfig
from metering.detect import DetectorConfig
from metering.records import Limits
from metering.rules import distributed, geography, guessing, rate
from metering.settings import (
    HASH_KEY_ENV,
    HashKeyError,
    PipelineSettings,
    build_parser,
    detector_settings,
    parse_flink_config,
    read_hash_key,
    settings_from_args,
)
from metering.topics import ROLES

RANDOM_KEY = "3f9a1c7e5b2d8f04a6c1e9b7d3f5a2c8e0b4d6f1a3c5e7b9d2f4a6c8e1b3d5f7"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No PIPELINE_* variable of the developer's shell may leak into these tests."""
    for name in list(os.environ):
        if name.startswith("PIPELINE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("COLUMNS", "100")
    yield


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def env(name: str) -> str:
    return "PIPELINE_" + name.upper()


# -- precedence --------------------------------------------------------------------------------


def test_defaults() -> None:
    s = settings_from_args([])
    assert s == PipelineSettings()
    assert (s.raw_topic, s.enriched_topic, s.alerts_topic, s.dlq_topic, s.usage_topic) == (
        "gateway.raw",
        "gateway.enriched",
        "gateway.alerts",
        "gateway.dlq",
        "gateway.usage",
    )
    assert s.bootstrap_servers == "127.0.0.1:9092"
    assert s.bounded is False
    assert s.window_seconds == 10
    assert s.alerts_delivery == "at-least-once"
    assert s.geoip_db is None


def test_environment_over_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_RAW_TOPIC", "env.raw")
    monkeypatch.setenv("PIPELINE_WINDOW_SECONDS", "30")
    monkeypatch.setenv("PIPELINE_BOUNDED", "true")
    monkeypatch.setenv("PIPELINE_RATE_SENSITIVITY", "7.5")
    monkeypatch.setenv("PIPELINE_STARTUP_MODE", "earliest-offset")
    monkeypatch.setenv("PIPELINE_GROUP_ID", "")  # empty means unset
    s = settings_from_args([])
    assert (s.raw_topic, s.window_seconds, s.bounded, s.rate_sensitivity, s.startup_mode) == (
        "env.raw",
        30,
        True,
        7.5,
        "earliest-offset",
    )
    assert s.group_id == "gateway-pipeline"


def test_flags_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_RAW_TOPIC", "env.raw")
    monkeypatch.setenv("PIPELINE_WINDOW_SECONDS", "30")
    monkeypatch.setenv("PIPELINE_BOUNDED", "true")
    s = settings_from_args(
        ["--raw-topic", "flag.raw", "--window-seconds", "5", "--no-bounded", "--parallelism=4"]
    )
    assert (s.raw_topic, s.window_seconds, s.bounded, s.parallelism) == ("flag.raw", 5, False, 4)
    # A flag that is not given leaves the environment in charge.
    monkeypatch.setenv("PIPELINE_DLQ_TOPIC", "env.dlq")
    assert settings_from_args(["--bounded"]).dlq_topic == "env.dlq"
    assert settings_from_args(["--bounded"]).bounded is True


def test_every_field_has_a_flag() -> None:
    for name, info in PipelineSettings.model_fields.items():
        assert info.description, name
        value = {
            "bootstrap_servers": "broker-1:9092,broker-2:9092",
            "startup_mode": "latest-offset",
            "alerts_delivery": "exactly-once",
            "execution_mode": "thread",
            "parse_execution_mode": "thread",
            "kafka_security_protocol": "SSL",
            # Doubling these would break the timeout's bounds (tested in test_delivery_config).
            "transaction_timeout_ms": "700000",
            "expected_restart_seconds": "60",
            "kafka_sasl_mechanism": None,  # only valid with a SASL protocol: tested on its own
            "flink_config": "python.fn-execution.bundle.size=500",
            "billing_low_balance": "12.50",
        }.get(name)
        if name in ("kafka_sasl_mechanism", "kafka_sasl_username"):
            continue
        if value is None and info.annotation is bool:
            s = settings_from_args([flag(name)])
            assert getattr(s, name) is True, name
            continue
        if value is None:
            default = info.default
            if isinstance(default, bool | int | float) and default is not None:
                value = str(type(default)(default * 2 if name != "auth_failure_ratio" else 1))
            else:
                value = f"x-{name}"
        if name == "startup_timestamp_ms":  # only with its mode
            s = settings_from_args([flag(name), "1767225600000", "--startup-mode", "timestamp"])
            assert s.startup_timestamp_ms == 1_767_225_600_000
            continue
        s = settings_from_args([flag(name), value])
        assert str(getattr(s, name)) == value, name


def test_help_lists_every_flag_and_environment_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        settings_from_args(["--help"], prog="gateway_pipeline", description="the job")
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: gateway_pipeline")
    for name in PipelineSettings.model_fields:
        assert flag(name) in out, name
        assert f"[env {env(name)}]" in " ".join(out.split()), name
    assert "--no-bounded" in out
    assert HASH_KEY_ENV in out  # documented as environment-only...
    assert "--hash-key" not in out  # ...and there is no flag for it


# -- bad values --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--window-seconds", "0"], "window_seconds"),
        (["--window-seconds", "ten"], "window_seconds"),
        (["--startup-mode", "from-the-start"], "startup_mode"),
        (["--startup-mode", "timestamp"], "goes with --startup-mode timestamp"),
        (["--startup-timestamp-ms", "1767225600000"], "goes with --startup-mode timestamp"),
        (["--alerts-delivery", "maybe"], "alerts_delivery"),
        (["--bootstrap-servers", "localhost"], "expected host:port"),
        (["--max-depth", "501"], "max_depth"),
        (["--auth-failure-ratio", "1.5"], "auth_failure_ratio"),
        (["--spike-min-ratio", "1"], "spike_min_ratio"),
        (["--transaction-timeout-ms", "1000"], "transaction_timeout_ms"),
        (["--enriched-topic", "gateway.raw"], "must be distinct"),
        (["--dlq-topic", "t", "--usage-topic", "t"], "must be distinct"),
        (["--hash-key", RANDOM_KEY], "unrecognized arguments: --hash-key; PIPELINE_HASH_KEY"),
        ([f"--hash-key={RANDOM_KEY}"], "unrecognized arguments: --hash-key; PIPELINE_HASH_KEY"),
        (["--raw-topic", "a", RANDOM_KEY], "unrecognized arguments: (values)"),
        (["--no-such-flag"], "unrecognized arguments"),
    ],
)
def test_bad_flags_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exc:
        settings_from_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert RANDOM_KEY not in err


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PIPELINE_PARALLELISM", "0", "parallelism"),
        ("PIPELINE_BOUNDED", "perhaps", "bounded"),
        ("PIPELINE_ALERTS_TOPIC", "gateway.dlq", "must be distinct"),
    ],
)
def test_bad_environment_values_exit_2(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    value: str,
    message: str,
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exc:
        settings_from_args([])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_flink_config_from_flag_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert PipelineSettings().flink_overrides() == {}
    monkeypatch.setenv(
        "PIPELINE_FLINK_CONFIG",
        "python.fn-execution.bundle.size=1000, python.fn-execution.bundle.time=100",
    )
    assert settings_from_args([]).flink_overrides() == {
        "python.fn-execution.bundle.size": "1000",
        "python.fn-execution.bundle.time": "100",
    }
    # The flag wins; a value may itself contain "=" (only the first one splits).
    s = settings_from_args(
        ["--flink-config", "env.java.opts.all=-Dx=1,,state.backend.type=rocksdb"]
    )
    assert s.flink_overrides() == {
        "env.java.opts.all": "-Dx=1",
        "state.backend.type": "rocksdb",
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("python.fn-execution.bundle.size", "expected key=value"),
        ("=5", "expected key=value"),
        ("a=1,a=2", "a given twice"),
        (
            "table.exec.mini-batch.enabled=TRUE,table.exec.mini-batch.size=1000",
            "table.exec.mini-batch.enabled=true is refused: ",
        ),
    ],
)
def test_malformed_flink_config_exits_2(
    capsys: pytest.CaptureFixture[str], value: str, message: str
) -> None:
    with pytest.raises(SystemExit) as exc:
        settings_from_args(["--flink-config", value])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_mini_batch_off_is_accepted() -> None:
    s = PipelineSettings(flink_config="table.exec.mini-batch.enabled=false")
    assert s.flink_overrides() == {"table.exec.mini-batch.enabled": "false"}


def test_parse_flink_config() -> None:
    assert parse_flink_config("") == {}
    assert parse_flink_config(" a = 1 ,b=") == {"a": "1", "b": ""}
    with pytest.raises(ValueError, match="expected key=value"):
        parse_flink_config("a=1,b")


def test_duplicate_topics_are_rejected_by_the_model() -> None:
    with pytest.raises(ValidationError, match="must be distinct"):
        PipelineSettings(usage_topic="gateway.enriched")
    s = PipelineSettings(
        raw_topic="a", enriched_topic="b", alerts_topic="c", dlq_topic="d", usage_topic="e"
    )
    assert s.usage_topic == "e"


def test_topics_by_role_names_every_topic_the_job_uses() -> None:
    s = PipelineSettings()
    topics = s.topics_by_role()
    assert tuple(topics) == ROLES
    topic_fields = {name for name in PipelineSettings.model_fields if name.endswith("_topic")}
    assert sorted(topics.values()) == sorted(getattr(s, name) for name in topic_fields)


# -- Kafka security ----------------------------------------------------------------------------

PLAIN_WITHOUT_TLS = [
    "--kafka-security-protocol", "SASL_PLAINTEXT",
    "--kafka-sasl-mechanism", "PLAIN",
    "--kafka-sasl-username", "gateway-pipeline",
]  # fmt: skip


def test_sasl_plain_without_tls_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        settings_from_args(PLAIN_WITHOUT_TLS)
    assert exc.value.code == 2
    assert "PLAIN over SASL_PLAINTEXT sends the password unencrypted" in capsys.readouterr().err
    with pytest.raises(ValidationError, match="kafka_allow_plain_without_tls"):
        PipelineSettings(
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism="PLAIN",
            kafka_sasl_username="u",
        )


def test_sasl_plain_without_tls_only_with_the_demo_allowance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = settings_from_args([*PLAIN_WITHOUT_TLS, "--kafka-allow-plain-without-tls"])
    assert s.kafka_security()["properties.sasl.mechanism"] == "PLAIN"
    monkeypatch.setenv("PIPELINE_KAFKA_ALLOW_PLAIN_WITHOUT_TLS", "true")
    assert settings_from_args(PLAIN_WITHOUT_TLS).kafka_allow_plain_without_tls is True


@pytest.mark.parametrize(
    ("protocol", "mechanism"),
    [("SASL_SSL", "PLAIN"), ("SASL_PLAINTEXT", "SCRAM-SHA-256"), ("SASL_SSL", "SCRAM-SHA-512")],
)
def test_other_sasl_combinations_need_no_allowance(protocol: str, mechanism: str) -> None:
    s = settings_from_args(
        [
            "--kafka-security-protocol", protocol,
            "--kafka-sasl-mechanism", mechanism,
            "--kafka-sasl-username", "u",
        ]
    )  # fmt: skip
    assert s.kafka_security()["properties.security.protocol"] == protocol


def test_broker_preflight_is_on_by_default() -> None:
    assert settings_from_args([]).broker_preflight is True
    assert settings_from_args(["--no-broker-preflight"]).broker_preflight is False


# -- the hash key ------------------------------------------------------------------------------


def test_no_hash_key_setting_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "hash_key" not in PipelineSettings.model_fields
    assert all(a.dest != "hash_key" for a in build_parser("p", "d")._actions)
    with pytest.raises(ValidationError):
        PipelineSettings(hash_key=RANDOM_KEY)  # type: ignore[call-arg]
    # The secret in the environment neither breaks the settings nor ends up in them.
    monkeypatch.setenv(HASH_KEY_ENV, RANDOM_KEY)
    s = settings_from_args([])
    assert RANDOM_KEY not in repr(s)
    assert RANDOM_KEY not in s.model_dump_json()


def test_a_random_key_is_accepted() -> None:
    assert read_hash_key({HASH_KEY_ENV: RANDOM_KEY}) == RANDOM_KEY.encode()
    other = "kR7#pQ2!vX9@mZ4$wL6%nB8^tH3&jF5*"
    assert read_hash_key({HASH_KEY_ENV: other}) == other.encode()


def test_the_key_is_read_from_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HASH_KEY_ENV, RANDOM_KEY)
    assert read_hash_key() == RANDOM_KEY.encode()
    monkeypatch.delenv(HASH_KEY_ENV)
    with pytest.raises(HashKeyError, match="is not set"):
        read_hash_key()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "is not set"),
        ("", "is not set"),
        ("3f9a1c7e5b2d8f04a6c1e9b7d3f5a2c", "at least 32 characters"),  # 31 characters
        ("changeme" * 4, "placeholder"),
        ("CHANGE-ME-" + RANDOM_KEY[:30], "placeholder"),
        ("my-secret-hmac-key-for-the-pipeline", "placeholder"),
        ("example-" + RANDOM_KEY[:30], "placeholder"),
        ("password" + RANDOM_KEY[:30], "placeholder"),
        ("x" * 64, "placeholder"),
        ("ab" * 32, "placeholder"),  # too little variety
        ("0123456" * 6, "placeholder"),
    ],
)
def test_unusable_keys_are_refused(value: str | None, message: str) -> None:
    environ = {} if value is None else {HASH_KEY_ENV: value}
    with pytest.raises(HashKeyError, match=message) as exc:
        read_hash_key(environ)
    if value:
        assert value not in str(exc.value)


# -- derived configuration ---------------------------------------------------------------------


def test_detector_and_limits_follow_the_settings() -> None:
    s = settings_from_args(
        [
            "--window-seconds", "30",
            "--baseline-learn-minutes", "5",
            "--rate-sensitivity", "8",
            "--spike-min-count", "50",
            "--spike-min-ratio", "4",
            "--country-half-life-days", "3",
            "--country-familiar-after-minutes", "30",
            "--slow-guessing-min", "12",
            "--distributed-sensitivity", "5",
            "--incident-quiet-minutes", "2",
            "--auth-failure-min", "30",
            "--auth-failure-ratio", "0.8",
            "--max-record-bytes", "4096",
            "--max-depth", "10",
            "--max-batch-entries", "7",
            "--dlq-payload-chars", "512",
        ]
    )  # fmt: skip
    assert s.detector() == DetectorConfig(
        window_ms=30_000,
        quiet_minutes=2.0,
        baseline=BaselineConfig(learn_minutes=5.0),
        rules={
            rate.NAME: rate.Config(sensitivity=8.0, min_count=50, min_ratio=4.0),
            geography.NAME: geography.Config(half_life_days=3.0, familiar_after_minutes=30.0),
            guessing.NAME: guessing.Config(min_per_window=30, min_share=0.8, slow_min=12.0),
            distributed.NAME: distributed.Config(sensitivity=5.0),
        },
    )
    assert s.limits() == Limits(
        max_record_bytes=4096, max_depth=10, max_batch_entries=7, dlq_payload_chars=512
    )
    assert PipelineSettings().detector() == DetectorConfig()


def test_every_detector_setting_has_a_place_and_its_default() -> None:
    cfg = DetectorConfig()
    places = detector_settings()
    assert len(places) == len(set(places.values())) >= 12
    for name, path in places.items():
        part, _, attr = path.rpartition(".")
        holder = cfg.rules[part] if part in cfg.rules else getattr(cfg, part) if part else cfg
        assert PipelineSettings.model_fields[name].default == getattr(holder, attr), name
    assert PipelineSettings().limits() == Limits()


def test_resolved_paths(tmp_path: Path) -> None:
    jar = tmp_path / "flink-sql-connector-kafka-5.0.0-2.2.jar"
    jar.write_bytes(b"PK")
    assert PipelineSettings(connector_jar=str(jar)).resolved_connector_jar() == str(jar)
    with pytest.raises(FileNotFoundError, match="PIPELINE_CONNECTOR_JAR"):
        PipelineSettings(connector_jar=str(tmp_path / "missing.jar")).resolved_connector_jar()
    db = str(tmp_path / "city.mmdb")
    assert PipelineSettings(geoip_db=db).resolved_geoip_db() == db
