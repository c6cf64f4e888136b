"""The responder's configuration: one pydantic-settings object.

Every setting has a flag (``--alerts-topic``) and an environment variable
(``RESPONDER_ALERTS_TOPIC``); a flag wins over the environment, which wins over the default, as
for the job (metering.settings).

Secrets are read from the environment only, never from flags (flags show in process lists and
shell history): the webhook signing secret, the Slack webhook URL, the PagerDuty routing key,
the SMTP password, the gateways' admin credentials, APISIX's keyring, the Kafka SASL password,
and ``PIPELINE_HASH_KEY`` (shared with the job: the fingerprints must match). A placeholder
(``changeme``, the example Slack URL, APISIX's documented default admin key, ...) is refused
unless ``--demo``. Validation errors never echo a value (``hide_input_in_errors``).
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from metering import topics
from metering.settings import HASH_KEY_ENV
from responder.gateways import ApisixMethod, KongMethod
from responder.notify import PAGERDUTY_EVENTS_URL, SmtpTls

ENV_PREFIX = "RESPONDER_"
MIN_WEBHOOK_SECRET_CHARS = 32
PLACEHOLDERS = (
    "changeme",
    "change-me",
    "placeholder",
    "example",
    "password",
    "secret",
    "xxxx",
    # APISIX's documented default admin key (conf/config.yaml before 3.x generated one).
    "edd1c9f034335f136f87ad84b625c8f1",
)
SECRET_FIELDS = (
    "webhook_secret",
    "slack_webhook_url",
    "pagerduty_routing_key",
    "smtp_password",
    "apisix_admin_key",
    "apisix_keyring",
    "kong_admin_token",
    "kafka_sasl_password",
)
DEFAULT_ACTIONS_TOPIC = topics.BY_ROLE["actions"].name


def placeholder(value: str) -> bool:
    lowered = value.lower()
    return any(p in lowered for p in PLACEHOLDERS)


class ResponderSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_ignore_empty=True,
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
    )

    # Kafka
    bootstrap_servers: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers")
    alerts_topic: str = Field(
        topics.BY_ROLE["alerts"].name, description="the job's alerts topic (read)"
    )
    actions_topic: str = Field(
        DEFAULT_ACTIONS_TOPIC,
        description="the responder's action records (written, and read back at start)",
    )
    group_id: str = Field("gateway-responder", description="consumer group on the alerts topic")
    transactional_id: str = Field(
        "gateway-responder",
        description="transactional id of the action records; keep it stable across restarts: a "
        "second responder with the same id fences the first (one active responder)",
    )
    instance: str = Field(
        socket.gethostname(), description="name of this instance in the action records"
    )
    transaction_timeout_ms: int = Field(
        60_000, ge=1_000, description="Kafka transaction timeout of the action records"
    )
    batch_size: int = Field(50, ge=1, le=10_000, description="alerts planned per transaction")
    poll_timeout_seconds: float = Field(
        0.5, gt=0, le=30, description="longest wait for alerts before checking due unblocks"
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="how the Kafka clients connect"
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] | None = Field(
        None, description="SASL mechanism; the password comes from RESPONDER_KAFKA_SASL_PASSWORD"
    )
    kafka_sasl_username: str | None = Field(None, description="SASL username")
    kafka_ssl_ca_location: str | None = Field(None, description="PEM file of the brokers' CA")
    # Policy and delivery
    policy_file: str = Field("responder-policy.toml", description="the policy (TOML)")
    max_attempts: int = Field(
        5, ge=1, le=50, description="delivery attempts before an action is failed"
    )
    backoff_base_seconds: float = Field(
        0.5, gt=0, description="first retry delay (doubles per attempt, with jitter)"
    )
    backoff_max_seconds: float = Field(30.0, gt=0, description="longest retry delay")
    http_timeout_seconds: float = Field(10.0, gt=0, description="timeout of one HTTP request")
    webhook_url: str | None = Field(
        None, description="generic webhook endpoint (signed with RESPONDER_WEBHOOK_SECRET)"
    )
    pagerduty_url: str = Field(PAGERDUTY_EVENTS_URL, description="PagerDuty Events API v2")
    pagerduty_source: str = Field(
        "gateway-usage-pipeline", description="the PagerDuty event's source"
    )
    smtp_host: str | None = Field(None, description="SMTP server of the email action")
    smtp_port: int = Field(587, ge=1, le=65_535, description="SMTP port")
    smtp_tls: SmtpTls = Field(
        "starttls", description="starttls, tls (implicit, port 465) or none (local relay)"
    )
    smtp_username: str | None = Field(
        None, description="SMTP login (password: RESPONDER_SMTP_PASSWORD)"
    )
    smtp_from: str | None = Field(None, description="sender address of the consumer emails")
    # Gateway
    gateway: Literal["none", "apisix", "kong"] = Field(
        "none", description="the gateway whose Admin API blocks keys"
    )
    apisix_admin_url: str = Field("http://127.0.0.1:9180", description="APISIX Admin API")
    apisix_block_method: ApisixMethod = Field(
        "consumer_restriction",
        description="consumer_restriction (reversible) or delete_credential (irreversible)",
    )
    kong_admin_url: str = Field("http://127.0.0.1:8001", description="Kong Admin API")
    kong_block_method: KongMethod = Field(
        "acl", description="acl (reversible: the blocked group) or delete_credential"
    )
    kong_blocked_group: str = Field(
        "responder-blocked", description="ACL group that the routes' acl plugin denies"
    )
    key_index_refresh_seconds: float = Field(
        30.0, ge=0, description="least time between two listings of the gateway's keys"
    )
    # Operations
    health_host: str = Field("127.0.0.1", description="address of /healthz and /metrics")
    health_port: int = Field(9464, ge=0, le=65_535, description="port of /healthz and /metrics")
    health_stale_seconds: float = Field(
        120.0, gt=0, description="/healthz fails when the loop has not turned for this long"
    )
    demo: bool = Field(
        False, description="demo only: accept placeholder secrets and SMTP login without TLS"
    )
    # Secrets: environment only (no flags).
    webhook_secret: SecretStr | None = Field(None, description="webhook signing secret")
    slack_webhook_url: SecretStr | None = Field(None, description="Slack incoming webhook URL")
    pagerduty_routing_key: SecretStr | None = Field(None, description="PagerDuty routing key")
    smtp_password: SecretStr | None = Field(None, description="SMTP password")
    apisix_admin_key: SecretStr | None = Field(None, description="APISIX X-API-KEY")
    apisix_keyring: SecretStr | None = Field(
        None, description="APISIX data_encryption keyring, comma-separated 16/32-byte keys"
    )
    kong_admin_token: SecretStr | None = Field(None, description="Kong-Admin-Token (RBAC)")
    kafka_sasl_password: SecretStr | None = Field(None, description="Kafka SASL password")

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, v: str) -> str:
        if not all(":" in s for s in v.split(",")):
            raise ValueError("expected host:port[,host:port...]")
        return v

    @model_validator(mode="after")
    def _secrets(self) -> ResponderSettings:
        if not self.demo:
            for name in SECRET_FIELDS:
                value = getattr(self, name)
                if value is not None and placeholder(value.get_secret_value()):
                    env = ENV_PREFIX + name.upper()
                    raise ValueError(f"{env} looks like a placeholder; set the real value")
        if self.webhook_secret is not None:
            secret = self.webhook_secret.get_secret_value()
            if len(secret) < MIN_WEBHOOK_SECRET_CHARS or (len(set(secret)) < 8 and not self.demo):
                raise ValueError(
                    f"{ENV_PREFIX}WEBHOOK_SECRET must be at least {MIN_WEBHOOK_SECRET_CHARS} "
                    "random characters (e.g. `openssl rand -hex 32`)"
                )
        if self.webhook_url and self.webhook_secret is None:
            raise ValueError(f"webhook_url needs {ENV_PREFIX}WEBHOOK_SECRET")
        if any(len(k) not in (16, 32) for k in self.keyring()):
            raise ValueError(f"{ENV_PREFIX}APISIX_KEYRING entries must be 16 or 32 bytes")
        if self.gateway == "apisix" and self.apisix_admin_key is None:
            raise ValueError(f"gateway apisix needs {ENV_PREFIX}APISIX_ADMIN_KEY")
        if self.smtp_password is not None and self.smtp_tls == "none" and not self.demo:
            raise ValueError("an SMTP login without TLS sends the password in clear (demo only)")
        if self.kafka_security_protocol.startswith("SASL") and not (
            self.kafka_sasl_mechanism and self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                f"{self.kafka_security_protocol} needs a SASL mechanism, username and "
                f"{ENV_PREFIX}KAFKA_SASL_PASSWORD"
            )
        return self

    def keyring(self) -> list[bytes]:
        if self.apisix_keyring is None:
            return []
        return [k.strip().encode() for k in self.apisix_keyring.get_secret_value().split(",")]

    def secret_values(self) -> list[str]:
        """Every secret's value, for the log filter that keeps them out of logs."""
        out = []
        for name in SECRET_FIELDS:
            value = getattr(self, name)
            if value is not None:
                out.append(value.get_secret_value())
        return out + [k.decode() for k in self.keyring()]

    def kafka_common(self) -> dict[str, str]:
        """librdkafka settings shared by the responder's clients."""
        conf = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.kafka_security_protocol,
        }
        if self.kafka_ssl_ca_location:
            conf["ssl.ca.location"] = self.kafka_ssl_ca_location
        if self.kafka_sasl_mechanism and self.kafka_sasl_password:
            conf["sasl.mechanisms"] = self.kafka_sasl_mechanism
            conf["sasl.username"] = self.kafka_sasl_username or ""
            conf["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        return conf


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per setting (secrets excepted), its help naming the environment variable."""
    for name, info in ResponderSettings.model_fields.items():
        if name in SECRET_FIELDS:
            continue
        help_text = f"{info.description} [env {ENV_PREFIX}{name.upper()}]"
        default = "hostname" if name == "instance" else info.default
        if info.annotation is bool:
            parser.add_argument(
                _flag(name),
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"{help_text} (default: {default})",
            )
        else:
            parser.add_argument(
                _flag(name),
                dest=name,
                default=None,
                metavar=name.upper(),
                help=f"{help_text} (default: {default})",
            )


SECRETS_EPILOG = (
    "Secrets come from the environment only: "
    + ", ".join(ENV_PREFIX + n.upper() for n in SECRET_FIELDS)
    + f", and {HASH_KEY_ENV} (the job's, to fingerprint the gateway's keys)."
)


def settings_from_namespace(
    parser: argparse.ArgumentParser, ns: argparse.Namespace, unknown: Sequence[str]
) -> ResponderSettings:
    """Flags over environment over defaults; exits with the error (never a value) when bad."""
    if unknown:
        names = sorted({a.split("=", 1)[0] for a in unknown if a.startswith("-")})
        secret_flags = {_flag(n) for n in SECRET_FIELDS}
        hint = (
            "; secrets are read from the environment only"
            if any(n in secret_flags for n in names)
            else ""
        )
        parser.error(f"unrecognized arguments: {' '.join(names) or '(values)'}{hint}")
    given: dict[str, Any] = {
        k: v
        for k, v in vars(ns).items()
        if v is not None and k in ResponderSettings.model_fields and k not in SECRET_FIELDS
    }
    try:
        return ResponderSettings(**given)
    except ValueError as e:
        parser.error(str(e))
