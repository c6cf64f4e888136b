"""The job's configuration: one pydantic-settings object, built once in ``main()``.

Every setting has a command-line flag (``--raw-topic``) and an environment variable
(``PIPELINE_RAW_TOPIC``); a flag wins over the environment, which wins over the default.

The hash key is the one exception: it is a secret, so it is read from ``PIPELINE_HASH_KEY`` only,
never from a flag (flags show up in process lists, shell history and Flink's job graph). The job
refuses to start without a real one.
"""

from __future__ import annotations

import argparse
import glob
import os
from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from metering import topics
from metering.detect import DetectorConfig
from metering.kafka_security import kafka_security_options
from metering.records import (
    DEFAULT_MAX_ENRICHED_BYTES,
    DEFAULT_MAX_EVENT_AGE_S,
    DEFAULT_MAX_FUTURE_SKEW_S,
    SINK_MAX_REQUEST_BYTES,
    SINK_RECORD_FRAMING_BYTES,
    Limits,
)
from metering.topics import Delivery, Topic, sink_of

ENV_PREFIX = "PIPELINE_"
HASH_KEY_ENV = "PIPELINE_HASH_KEY"
MIN_HASH_KEY_CHARS = 32
REPO_ROOT = Path(__file__).resolve().parent.parent
_PLACEHOLDERS = ("changeme", "change-me", "secret", "example", "placeholder", "password", "xxxx")


class HashKeyError(RuntimeError):
    """PIPELINE_HASH_KEY is missing, too short, or a placeholder."""


def read_hash_key(environ: dict[str, str] | None = None) -> bytes:
    """The HMAC key for fingerprints, from the environment; raises ``HashKeyError`` if unusable."""
    value = (environ if environ is not None else os.environ).get(HASH_KEY_ENV, "")
    if not value:
        raise HashKeyError(
            f"{HASH_KEY_ENV} is not set. Generate one, e.g. "
            f"`export {HASH_KEY_ENV}=$(openssl rand -hex 32)`, and keep it stable: "
            "changing it changes every key fingerprint and client hash."
        )
    if len(value) < MIN_HASH_KEY_CHARS:
        raise HashKeyError(f"{HASH_KEY_ENV} must be at least {MIN_HASH_KEY_CHARS} characters")
    lowered = value.lower()
    if any(p in lowered for p in _PLACEHOLDERS) or len(set(value)) < 8:
        raise HashKeyError(f"{HASH_KEY_ENV} looks like a placeholder; use a random value")
    return value.encode()


def check_transaction_timeout(
    timeout_ms: int, broker_max_ms: int, checkpoint_interval_s: int, restart_s: int
) -> None:
    """The exactly-once sinks' transaction timeout must sit between two limits.

    Above the broker's transaction.max.timeout.ms, the producer is refused at start
    (InitProducerId fails). At or below checkpoint interval + restart time, Kafka may abort a
    transaction that a completed checkpoint promised to commit: data loss.
    """
    if timeout_ms > broker_max_ms:
        raise ValueError(
            f"transaction_timeout_ms {timeout_ms} exceeds the brokers' "
            f"transaction.max.timeout.ms {broker_max_ms}"
        )
    floor_ms = (checkpoint_interval_s + restart_s) * 1000
    if timeout_ms <= floor_ms:
        raise ValueError(
            f"transaction_timeout_ms {timeout_ms} must exceed checkpoint interval + expected "
            f"restart time ({floor_ms} ms), or Kafka may abort checkpointed transactions"
        )


def check_dedup_horizon(horizon_s: int, max_age_s: int, max_skew_s: int) -> None:
    """The dedup horizon must not outlast what the event-time bounds let through.

    A resend is processed at most max age + max skew after its original (later, its event time
    is too old and it is dead-lettered), so a fingerprint kept longer could never match: state
    for nothing. What the pair guarantees: a resend within the horizon is dropped, one older
    than the max age is dead-lettered, one in between is counted twice.
    """
    if horizon_s > max_age_s + max_skew_s:
        raise ValueError(
            f"dedup_horizon_seconds {horizon_s} exceeds max_event_age_seconds + "
            f"max_future_skew_seconds ({max_age_s + max_skew_s}): older entries are "
            "dead-lettered, so no retry could match that state"
        )


# Flink configuration the job refuses, as key -> (refused value, why). Each was seen to break the
# job's output without an error.
REFUSED_FLINK_CONFIG = {
    "table.exec.mini-batch.enabled": (
        "true",
        "Flink SQL then puts processing-time mini-batch assigners into the plans, whose "
        "watermarks can replace the event-time ones the windows read "
        "(with windows after a conversion to a DataStream, every event became a late correction)",
    ),
}


def refuse_flink_config(config: dict[str, str]) -> None:
    """Raise ValueError for a key of REFUSED_FLINK_CONFIG set to its refused value."""
    for key, (bad, why) in REFUSED_FLINK_CONFIG.items():
        if config.get(key, "").lower() == bad:
            raise ValueError(f"flink_config: {key}={bad} is refused: {why}")


def parse_flink_config(text: str) -> dict[str, str]:
    """``"k1=v1,k2=v2"`` -> ``{"k1": "v1", "k2": "v2"}``; blanks around items are ignored.

    Raises ValueError for an item without ``=``, an empty key, or a key given twice.
    """
    out: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise ValueError(f"flink_config: expected key=value, got {item.strip()!r}")
        if key in out:
            raise ValueError(f"flink_config: {key} given twice")
        out[key] = value
    return out


def find_connector_jar() -> str | None:
    jars = sorted(glob.glob(str(REPO_ROOT / "build/jars/flink/flink-sql-connector-kafka-*.jar")))
    return jars[-1] if jars else None


OPERATORS_JAR = REPO_ROOT / "build/jars/pipeline/gateway-pipeline-operators.jar"
"""The job's JVM operators (jvm/), built by make setup."""


def _topic_field(role: str) -> Any:
    """The settings field of a catalog topic's name: its default name and help."""
    topic = topics.BY_ROLE[role]
    return Field(topic.name, description=topic.about)


_DETECTOR_PATH = "detector"


def _detector_default(path: str) -> Any:
    part, _, attr = path.rpartition(".")
    cfg = DetectorConfig()
    return getattr(
        cfg.rules[part] if part in cfg.rules else getattr(cfg, part) if part else cfg, attr
    )


def detector_setting(path: str, **field: Any) -> Any:
    """A setting of the detector: ``path`` names its place in ``DetectorConfig``: a rule's
    (``"rate_spike.sensitivity"``), the baseline's (``"baseline.learn_minutes"``) or the
    detector's own (``"quiet_minutes"``). Its value there is the default, so a rule's defaults
    are stated once, in the rule's module."""
    return Field(_detector_default(path), json_schema_extra={_DETECTOR_PATH: path}, **field)


def detector_settings() -> dict[str, str]:
    """Setting name -> its place in ``DetectorConfig``."""
    out = {}
    for name, info in PipelineSettings.model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, dict) and isinstance(extra.get(_DETECTOR_PATH), str):
            out[name] = str(extra[_DETECTOR_PATH])
    return out


class PipelineSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_ignore_empty=True, extra="forbid", frozen=True
    )

    # Kafka
    bootstrap_servers: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers")
    # One field per topic of the catalog (metering.topics), which gives its default and help;
    # declared here so that the type checker knows them (a unit test checks they match).
    raw_topic: str = _topic_field("raw")
    enriched_topic: str = _topic_field("enriched")
    usage_topic: str = _topic_field("usage")
    dlq_topic: str = _topic_field("dlq")
    alerts_topic: str = _topic_field("alerts")
    reconciliation_topic: str = _topic_field("reconciliation")
    period_usage_topic: str = _topic_field("period_usage")
    quota_signals_topic: str = _topic_field("quota_signals")
    balance_signals_topic: str = _topic_field("balance_signals")
    group_id: str = Field("gateway-pipeline", description="consumer group of the raw source")
    startup_mode: Literal["group-offsets", "earliest-offset", "latest-offset", "timestamp"] = Field(
        "group-offsets",
        description="where a job without a checkpoint starts reading; group-offsets falls "
        "back to earliest when the group has none; timestamp: the first records written at "
        "or after --startup-timestamp-ms",
    )
    startup_timestamp_ms: int | None = Field(
        None, ge=0, description="with --startup-mode timestamp: where to start (epoch ms)"
    )
    bounded: bool = Field(
        False,
        description="read up to the offsets that are latest at start, close every window, exit",
    )
    transactional_id_prefix: str = Field(
        "gateway-pipeline",
        description="prefix of the exactly-once sinks' transactional ids (+ -enriched, -dlq, "
        "-usage); keep it stable across restarts",
    )
    transaction_timeout_ms: int = Field(
        600_000,
        ge=60_000,
        description="Kafka transaction timeout of the exactly-once sinks; must not exceed the "
        "broker's transaction.max.timeout.ms and must exceed checkpoint interval + restart time",
    )
    broker_transaction_max_timeout_ms: int = Field(
        900_000,
        ge=1,
        description="the brokers' transaction.max.timeout.ms; the job checks the broker's real "
        "value at start when it can, and refuses a sink timeout above it",
    )
    expected_restart_seconds: int = Field(
        120,
        ge=1,
        description="longest restart the job must survive (failure to running again); the "
        "transaction timeout must exceed it plus a checkpoint interval, or Kafka aborts "
        "transactions Flink has already checkpointed",
    )
    alerts_delivery: Delivery = Field(
        sink_of(topics.BY_ROLE["alerts"]).delivery,
        description="at-least-once makes alerts readable at once (ids are deterministic, so "
        "duplicates after a restart are recognisable); exactly-once delays them to the checkpoint",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="how the job's Kafka clients connect to the brokers"
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] | None = Field(
        None,
        description="SASL mechanism; the password is read by each TaskManager from its "
        "environment variable PIPELINE_KAFKA_SASL_PASSWORD, never passed to the job",
    )
    kafka_sasl_username: str | None = Field(None, description="SASL username (job principal)")
    kafka_ssl_ca_location: str | None = Field(
        None, description="PEM file of the CA that signed the brokers' certificates"
    )
    kafka_allow_plain_without_tls: bool = Field(
        False,
        description="demo only: accept SASL mechanism PLAIN over SASL_PLAINTEXT, which sends the "
        "password unencrypted; refused otherwise",
    )
    broker_preflight: bool = Field(
        True,
        description="before building the job, check on the brokers that every topic exists and "
        "the transaction timeout fits; --no-broker-preflight for a client that cannot reach the "
        "brokers the cluster uses",
    )
    # Input and enrichment
    geoip_db: str | None = Field(
        None,
        description="MaxMind City mmdb; default: the 2018 GeoLite2 snapshot from the "
        "maxminddb-geolite2 package (demo only, stale)",
    )
    geo_cache_size: int = Field(65_536, ge=0, description="per-worker LRU cache of IP lookups")
    max_record_bytes: int = Field(2 * 1024 * 1024, ge=1024, description="larger records are DLQ'd")
    max_depth: int = Field(32, ge=4, le=500, description="deeper JSON nesting is dead-lettered")
    max_batch_entries: int = Field(10_000, ge=1, description="larger arrays are dead-lettered")
    dlq_payload_chars: int = Field(
        4096, ge=256, description="scrubbed payload kept in a DLQ record"
    )
    dedup_horizon_seconds: int = Field(
        900,
        ge=0,
        description="an entry whose bytes repeat an entry of the same rate key seen this "
        "recently is a gateway retry and is dropped (generic usage events: same consumer and "
        "id); at most max-event-age + max-future-skew, since anything older is dead-lettered "
        "before it could match (0 turns deduplication off)",
    )
    max_future_skew_seconds: int = Field(
        DEFAULT_MAX_FUTURE_SKEW_S,
        ge=0,
        le=86_400,
        description="entries whose event time is further ahead of processing time are "
        "dead-lettered (event_time_future): one would move the watermark ahead and make every "
        "later event late",
    )
    max_event_age_seconds: int = Field(
        DEFAULT_MAX_EVENT_AGE_S,
        ge=60,
        description="entries whose event time is further behind processing time are "
        "dead-lettered (event_time_too_old); keep it within the usage topic's retention, or a "
        "late correction refers to a window record readers no longer have; a job that is down "
        "longer than this dead-letters its backlog",
    )
    max_enriched_bytes: int = Field(
        DEFAULT_MAX_ENRICHED_BYTES,
        ge=65_536,
        description="entries whose enriched record (key + value) is larger are dead-lettered "
        "(enriched_too_large) instead of failing in the producer; the sinks' max.request.size "
        f"is this + {SINK_RECORD_FRAMING_BYTES}, at least {SINK_MAX_REQUEST_BYTES}, and the "
        "brokers' message.max.bytes (or the topics' max.message.bytes) must be at least that",
    )
    reconcile_interval_seconds: int = Field(
        10, ge=1, description="how often each source partition's reconciliation is emitted"
    )
    # Billing (metering/billing/, docs/billing.md)
    billing_catalog: str | None = Field(
        None,
        description="a catalog file (TOML: plans, subscriptions, grants) to price usage by, "
        "fixed for the run, for development and tests; default: the billing topics (plans, "
        "subscriptions, grants), read whole at start and followed while the job runs",
    )
    billing_catalog_poll_seconds: int = Field(
        5,
        ge=1,
        le=3600,
        description="how often each billing subtask reads what was added to the billing topics",
    )
    billing_low_balance: Decimal = Field(
        Decimal("5"),
        ge=0,
        description="a prepaid balance at or below this (in the subject's currency) signals "
        "low, once per crossing",
    )
    # Time and windows
    window_seconds: int = Field(
        10, ge=1, le=86_400, description="tumbling event-time window per rate key (at most a day)"
    )
    out_of_orderness_seconds: int = Field(
        5, ge=0, description="bounded out-of-orderness of the event-time watermark"
    )
    idle_timeout_seconds: int = Field(
        30, ge=1, description="a source subtask without events this long stops holding watermarks"
    )
    # Detection: each default is its rule's own (metering.rules), stated there once.
    rate_sensitivity: float = detector_setting(
        "rate_spike.sensitivity",
        gt=0,
        description="rate_spike fires when a window's tail probability under the key's own "
        "baseline is at most 10^-this (higher: fewer, surer alerts)",
    )
    spike_min_count: int = detector_setting(
        "rate_spike.min_count", ge=1, description="fewer requests never count as a spike"
    )
    spike_min_ratio: float = detector_setting(
        "rate_spike.min_ratio",
        gt=1,
        description="nor fewer than this many times the expected count",
    )
    baseline_learn_minutes: float = detector_setting(
        "baseline.learn_minutes",
        gt=0,
        description="event time a key is learned before the baseline rules fire",
    )
    country_half_life_days: float = detector_setting(
        "new_country.half_life_days",
        gt=0,
        description="a country's familiarity to a key halves in this many idle days",
    )
    country_familiar_after_minutes: float = detector_setting(
        "new_country.familiar_after_minutes",
        ge=0,
        description="a new country becomes familiar after this long without an open incident",
    )
    leak_networks: int = detector_setting(
        "new_country.leak_networks",
        ge=2,
        description="client networks (/24, /48) in one window whose calls all come from new "
        "countries that make a leaked key, if more than the key's peak in one window",
    )
    slow_guessing_min: float = detector_setting(
        "auth_failures.slow_min",
        gt=0,
        description="rejected calls accumulated over ~5 min (decaying) that make slow guessing",
    )
    persistent_guessing_min: int = detector_setting(
        "auth_failures.persist_min",
        ge=1,
        description="rejected calls over 2 or more windows in a row, each mostly rejected, that "
        "make persistent guessing",
    )
    distributed_sensitivity: float = detector_setting(
        "distributed_guessing.sensitivity",
        gt=0,
        description="distributed_guessing fires when a run of windows with many rejected "
        "unidentified clients has a tail probability of at most 10^-this",
    )
    distributed_quiet_minutes: int = detector_setting(
        "distributed_guessing.quiet_minutes",
        ge=1,
        description="a rejected unidentified client counts in the shared signal in its first "
        "window after this long without a rejected call (one that keeps failing counts once)",
    )
    incident_quiet_minutes: float = detector_setting(
        "quiet_minutes", gt=0, description="an incident closes after this long without a finding"
    )
    auth_failure_min: int = detector_setting(
        "auth_failures.min_per_window", ge=1, description="401/403 answers per window to alert"
    )
    auth_failure_ratio: float = detector_setting(
        "auth_failures.min_share", gt=0, le=1, description="and their share of requests"
    )
    early_alerts: bool = detector_setting(
        "early_alerts",
        description="raise auth_failures alerts on the event that crosses the threshold, not "
        "when the window closes (after the window and the out-of-orderness bound)",
    )
    state_ttl_hours: int = Field(168, ge=1, description="per-key detector state expires after")
    client_state_ttl_hours: int = Field(
        1,
        ge=1,
        description="detector state of client:<network> keys (rejected calls) expires after; at "
        "most state-ttl-hours: such keys are many and short-lived",
    )
    # Runtime
    parallelism: int = Field(2, ge=1, description="job parallelism (match the raw partitions)")
    execution_mode: Literal["process", "thread"] = Field(
        "thread",
        description="PyFlink execution mode of the keyed Python anomaly detector, which sees "
        "only window records: thread runs it in the interpreter embedded in the TaskManager's "
        "JVM; it is also the job's python.execution-mode",
    )
    parse_execution_mode: Literal["process", "thread"] = Field(
        "process",
        description="PyFlink execution mode of the stateless parse/redact/geo operator: process "
        "runs it in Python worker processes (also on the embedded MiniCluster), one per "
        "subtask, in parallel; thread in the interpreter embedded in the TaskManager's JVM, "
        "which the detector shares; see docs/performance.md, Execution mode",
    )
    checkpoint_interval_seconds: int = Field(
        10, ge=1, description="checkpoint interval; exactly-once output is visible after each"
    )
    checkpoint_dir: str | None = Field(
        None,
        description="durable checkpoint storage URI, e.g. file:///var/flink/checkpoints; on the "
        "embedded MiniCluster the default is .local/checkpoints in the repository (a cluster "
        "uses its own execution.checkpointing.dir)",
    )
    connector_jar: str | None = Field(
        None, description="flink-sql-connector-kafka jar; default: the one make setup resolved"
    )
    operators_jar: str | None = Field(
        None, description="the job's JVM operators (jvm/); default: the one make setup built"
    )
    job_name: str = Field("gateway-pipeline", description="Flink job name")
    flink_config: str = Field(
        "",
        description="extra Flink configuration for the job, as comma-separated key=value pairs, "
        "e.g. python.fn-execution.bundle.size=1000,python.fn-execution.bundle.time=100; set after "
        "the job's own configuration keys (parallelism and checkpoint interval keep their own "
        "settings); values cannot contain commas; it ends up in the job graph, so no secrets",
    )

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, v: str) -> str:
        if not all(":" in s for s in v.split(",")):
            raise ValueError("expected host:port[,host:port...]")
        return v

    @field_validator("flink_config")
    @classmethod
    def _flink_config(cls, v: str) -> str:
        refuse_flink_config(parse_flink_config(v))  # ValueError: malformed or refused
        return v

    @model_validator(mode="after")
    def _distinct_topics(self) -> PipelineSettings:
        names = self.topics_by_role()
        if len(set(names.values())) != len(names):
            raise ValueError(f"the topics ({', '.join(names)}) must be distinct")
        return self

    @model_validator(mode="after")
    def _transaction_timeout(self) -> PipelineSettings:
        check_transaction_timeout(
            self.transaction_timeout_ms,
            self.broker_transaction_max_timeout_ms,
            self.checkpoint_interval_seconds,
            self.expected_restart_seconds,
        )
        return self

    @model_validator(mode="after")
    def _event_time_bounds(self) -> PipelineSettings:
        check_dedup_horizon(
            self.dedup_horizon_seconds, self.max_event_age_seconds, self.max_future_skew_seconds
        )
        if self.client_state_ttl_hours > self.state_ttl_hours:
            raise ValueError("client_state_ttl_hours must not exceed state_ttl_hours")
        return self

    @model_validator(mode="after")
    def _startup(self) -> PipelineSettings:
        if (self.startup_mode == "timestamp") != (self.startup_timestamp_ms is not None):
            raise ValueError("--startup-timestamp-ms goes with --startup-mode timestamp, and only")
        return self

    @model_validator(mode="after")
    def _security(self) -> PipelineSettings:
        self.kafka_security()  # raises ValueError on an inconsistent combination
        return self

    def kafka_security(self) -> dict[str, str]:
        return kafka_security_options(
            self.kafka_security_protocol,
            self.kafka_sasl_mechanism,
            self.kafka_sasl_username,
            self.kafka_ssl_ca_location,
            self.kafka_allow_plain_without_tls,
        )

    def topics_by_role(self) -> dict[str, str]:
        """Every topic the job reads or writes (the catalog's), by role."""
        return {t.role: str(getattr(self, t.setting)) for t in topics.TOPICS}

    def topics_read_or_written(self) -> list[str]:
        """The job's topics and the billing inputs it follows (none with a catalog file)."""
        inputs = [] if self.billing_catalog else [t.name for t in topics.JOB_SERVICE_INPUTS]
        return [*self.topics_by_role().values(), *inputs]

    def delivery(self, topic: Topic) -> Delivery:
        """The guarantee of the job's sink to ``topic``: its setting's, where it has one."""
        sink = sink_of(topic)
        if sink.configurable:
            chosen: Delivery = getattr(self, f"{topic.role}_delivery")
            return chosen
        return sink.delivery

    def resolved_geoip_db(self) -> str:
        if self.geoip_db:
            return self.geoip_db
        from metering.geo import default_geoip_db

        return default_geoip_db()

    def resolved_connector_jar(self) -> str:
        jar = self.connector_jar or find_connector_jar()
        if not jar or not Path(jar).is_file():
            raise FileNotFoundError(
                "flink-sql-connector-kafka jar not found; run `make setup` or set "
                "PIPELINE_CONNECTOR_JAR"
            )
        return jar

    def resolved_operators_jar(self) -> str:
        jar = self.operators_jar or str(OPERATORS_JAR)
        if not Path(jar).is_file():
            raise FileNotFoundError(
                f"the job's operators jar ({jar}) not found; run `make setup` or set "
                "PIPELINE_OPERATORS_JAR"
            )
        return jar

    def pipeline_jars(self) -> str:
        """``pipeline.jars``: the connector and the job's operators, uploaded at submission."""
        jars = (self.resolved_connector_jar(), self.resolved_operators_jar())
        return ";".join(Path(j).resolve().as_uri() for j in jars)

    def sql_state_ttl_seconds(self) -> int:
        """The TTL of the SQL state the watermark does not clean up: at least the dedup horizon,
        and at least a window plus the out-of-orderness bound, so an open window's early count
        (and a key counted with deduplication off) outlives the window."""
        return max(self.dedup_horizon_seconds, self.window_seconds + self.out_of_orderness_seconds)

    def detector(self) -> DetectorConfig:
        """The detector's config: its defaults, with every detector setting (``detector_setting``)
        put in its place."""
        cfg = DetectorConfig(window_ms=self.window_seconds * 1000)
        by_part: dict[str, dict[str, Any]] = {}
        for name, path in detector_settings().items():
            part, _, attr = path.rpartition(".")
            by_part.setdefault(part, {})[attr] = getattr(self, name)
        top = by_part.pop("", {})
        rules = {n: replace(c, **by_part.pop(n, {})) for n, c in cfg.rules.items()}
        parts = {part: replace(getattr(cfg, part), **values) for part, values in by_part.items()}
        return replace(cfg, **top, **parts, rules=rules)

    def flink_overrides(self) -> dict[str, str]:
        """``flink_config`` as a dict, for ``create_environment(overrides=...)``."""
        return parse_flink_config(self.flink_config)

    def sink_max_request_bytes(self) -> int:
        """The sinks' max.request.size: room for the largest enriched record the job emits."""
        return max(SINK_MAX_REQUEST_BYTES, self.max_enriched_bytes + SINK_RECORD_FRAMING_BYTES)

    def limits(self) -> Limits:
        return Limits(
            max_record_bytes=self.max_record_bytes,
            max_depth=self.max_depth,
            max_batch_entries=self.max_batch_entries,
            dlq_payload_chars=self.dlq_payload_chars,
            max_future_skew_s=self.max_future_skew_seconds,
            max_event_age_s=self.max_event_age_seconds,
            max_enriched_bytes=self.max_enriched_bytes,
        )


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=f"Secrets: {HASH_KEY_ENV} (required, at least {MIN_HASH_KEY_CHARS} random "
        "characters) is read from the environment only.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for name, info in PipelineSettings.model_fields.items():
        env = ENV_PREFIX + name.upper()
        help_text = f"{info.description} [env {env}]"
        if info.annotation is bool:
            parser.add_argument(
                _flag(name),
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text + f" (default: {info.default})",
            )
        else:
            parser.add_argument(
                _flag(name),
                dest=name,
                default=None,
                metavar=name.upper(),
                help=help_text + f" (default: {info.default})",
            )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def settings_from_args(
    argv: Sequence[str] | None, prog: str = "gateway_pipeline", description: str = ""
) -> PipelineSettings:
    """Flags over environment over defaults; raises SystemExit(2) with the error on bad values."""
    parser = build_parser(prog, description)
    ns, unknown = parser.parse_known_args(argv)
    if unknown:
        # Name the unknown flags but never echo values: "--hash-key <key>" must not reach a log.
        names = sorted({a.split("=", 1)[0] for a in unknown if a.startswith("-")})
        hint = (
            f"; {HASH_KEY_ENV} is read from the environment only"
            if any("hash" in n for n in names)
            else ""
        )
        parser.error(f"unrecognized arguments: {' '.join(names) or '(values)'}{hint}")
    given: dict[str, Any] = {k: v for k, v in vars(ns).items() if v is not None}
    try:
        return PipelineSettings(**given)
    except ValueError as e:
        parser.error(str(e))
