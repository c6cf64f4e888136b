"""The billing CLI's settings (``tools/billing.py``): one pydantic-settings object.

Every setting has a flag (``--plans-topic``) and an environment variable
(``BILLING_PLANS_TOPIC``); a flag wins over the environment, which wins over the default, as for
the job (metering.settings).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from metering.billing.invoice import DEFAULT_STRIPE_EVENT_NAME
from metering.billing.plans import validation_problems
from metering.settings import PipelineSettings
from metering.topics import GRANTS, PLANS, SUBSCRIPTIONS

ENV_PREFIX = "BILLING_"
JOB_WINDOW_SECONDS: int = PipelineSettings.model_fields["window_seconds"].default
"""The job's default window, which reconciliation must cut the enriched events by."""


class BillingSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_ignore_empty=True,
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
    )

    bootstrap_servers: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers")
    plans_topic: str = Field(PLANS.name, description=PLANS.about)
    subscriptions_topic: str = Field(SUBSCRIPTIONS.name, description=SUBSCRIPTIONS.about)
    grants_topic: str = Field(GRANTS.name, description=GRANTS.about)
    kafka_timeout_seconds: int = Field(
        30, ge=1, description="how long to wait for the brokers (reading a topic, delivery)"
    )
    stripe_event_name: str = Field(
        DEFAULT_STRIPE_EVENT_NAME,
        min_length=1,
        max_length=100,
        description="the Stripe meter's event_name in the exported meter events",
    )
    window_seconds: int = Field(
        JOB_WINDOW_SECONDS,
        ge=1,
        le=86_400,
        description="the job's usage window (its --window-seconds): reconciliation cuts the "
        "enriched events into the same windows, so plan changes fall on the same side",
    )

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, v: str) -> str:
        if not all(":" in s for s in v.split(",")):
            raise ValueError("expected host:port[,host:port...]")
        return v


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """A flag per setting, defaulting to None (unset: the environment or the default)."""
    group = parser.add_argument_group("settings (flag > environment > default)")
    for name, info in BillingSettings.model_fields.items():
        env = ENV_PREFIX + name.upper()
        group.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=None,
            metavar=name.upper(),
            help=f"{info.description} [env {env}] (default: {info.default})",
        )


def settings_from(values: dict[str, Any]) -> BillingSettings:
    """The settings from the parsed flags (None: not given); ValueError names the field."""
    given = {k: v for k, v in values.items() if k in BillingSettings.model_fields and v is not None}
    try:
        return BillingSettings(**given)
    except ValidationError as e:
        raise ValueError(validation_problems(e)) from None


def setting_names() -> Sequence[str]:
    return tuple(BillingSettings.model_fields)
