"""Pydantic models: what gateway input models share, and the records the job emits.

Input models validate one log entry each; each lives in its format's module of
``metering.gateways`` and derives from ``GatewayInput``, with the field types below. They use
pydantic's lax mode on purpose: custom APISIX log formats and old Kong versions write numbers as
strings ("status": "502", "size": "75"), and those are still good events. Anything that cannot
be coerced is a dead letter.

Output models document the topics' record schemas; ``python -m schemas.export`` writes them as JSON
Schema to ``schemas/json/``. The job builds plain dicts for speed; the unit tests check every dict
it emits against these models with ``extra="forbid"``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

# Event times outside this range are not clock skew but garbage (seconds instead of ms, 0, ...).
MIN_EVENT_TIME_MS = 946_684_800_000  # 2000-01-01
MAX_EVENT_TIME_MS = 4_102_444_800_000  # 2100-01-01

# Bounds on the numbers an entry carries: anything beyond them is an invalid_event, so no sum
# downstream (window units, latency percentiles) can overflow to infinity, which JSON writes as
# null.
MAX_UNITS = 1e9
"""Billable units of one generic usage event."""
MAX_LATENCY_MS = 86_400_000.0
"""One day: a gateway times out long before."""
MAX_SIZE_BYTES = float(2**53)
"""Request and response sizes: the largest integer a double (and JSON readers) hold exactly."""

HeaderValue = str | list[str]
QueryValue = str | bool | list[str | bool]
EpochMs = Annotated[float, Field(ge=MIN_EVENT_TIME_MS, lt=MAX_EVENT_TIME_MS)]
Size = Annotated[float, Field(ge=0, le=MAX_SIZE_BYTES)]
Latency = Annotated[float, Field(ge=0, le=MAX_LATENCY_MS)]

DeadLetterReason = Literal[
    "empty_record",
    "too_large",
    "not_utf8",
    "not_json",
    "too_deep",
    "wrong_type",
    "empty_batch",
    "unknown_format",
    "missing_event_time",
    "invalid_event",
    "event_time_future",
    "event_time_too_old",
    "enriched_too_large",
]
"""Why a record or entry was dead-lettered: the one list of reason codes."""
DEAD_LETTER_REASONS: tuple[str, ...] = get_args(DeadLetterReason)


class GatewayInput(BaseModel):
    """The base of every gateway input model (``metering.gateways``: one module per format)."""

    # 1e400 parses as inf: a number no output may carry (it would be written as Infinity, which
    # is not JSON), so it makes the entry invalid.
    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)


EXTENSION_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,39}$"
ExtensionName = Annotated[str, Field(pattern=EXTENSION_NAME_PATTERN)]
"""The name of a registered extension: a gateway format (``metering.gateways``) or a detector
rule (``metering.rules``). Not a closed list: a plugin's formats and rules register at run time,
and readers of the outputs (the responder among them) must accept their records."""

GatewayName = Annotated[
    ExtensionName,
    Field(
        description="the NAME of the format that parsed the entry: apisix, kong, generic, or a "
        "registered plugin's (metering.gateways)",
        examples=["apisix", "kong", "generic"],
    ),
]
RuleName = Annotated[
    ExtensionName,
    Field(
        description="a detector rule's NAME: rate_spike, new_country, auth_failures, "
        "distributed_guessing, or a registered plugin's (metering.rules)",
        examples=["rate_spike", "new_country", "auth_failures", "distributed_guessing"],
    ),
]


def check_extension_name(name: str) -> str:
    """``name`` if a registry may take it (it will be written into records); ValueError if
    not."""
    if not re.fullmatch(EXTENSION_NAME_PATTERN, name):
        raise ValueError(f"{name!r} is not a valid extension name ({EXTENSION_NAME_PATTERN})")
    return name


# --- Records the job emits ----------------------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EnrichedEvent(_Out):
    """One flat record per request on the enriched topic (one row of the Pinot real-time table)."""

    event_id: str = Field(description="topic-partition-offset-index of the source entry; unique")
    request_id: str | None = Field(
        None, description="gateway request id, when the gateway sets one"
    )
    gateway: GatewayName
    gateway_version: str | None = None
    gateway_host: str | None = None
    rate_key: str = Field(
        description="what windows count by: consumer name, else key:<fingerprint>, else "
        "client:<HMAC of the client's /24 (IPv4) or /64 (IPv6) network>"
    )
    consumer: str | None = Field(None, description="consumer name the gateway identified")
    key_fingerprint: str | None = Field(None, description="HMAC-SHA256 of the presented API key")
    route: str | None = None
    service: str | None = None
    method: str | None = None
    host: str | None = None
    path: str = Field(description="request path without query string")
    status: int | None = None
    auth_failed: bool = Field(description="status 401 or 403")
    latency_ms: float | None = None
    upstream_latency_ms: float | None = None
    gateway_latency_ms: float | None = None
    request_bytes: int | None = None
    response_bytes: int | None = None
    units: float = Field(1.0, description="billable units (1 per request unless the event says)")
    user_agent: str | None = None
    client_hash: str | None = Field(None, description="HMAC-SHA256 of the client IP")
    client_prefix: str | None = Field(None, description="client network, /24 or /48")
    country: str | None = Field(None, description="ISO 3166-1 alpha-2")
    region: str | None = None
    city: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    event_time: int = Field(description="request start, epoch ms (from the payload)")
    processing_time: int = Field(description="when the job enriched it, epoch ms")
    source_partition: int
    source_offset: int


class DeadLetter(_Out):
    """A record (or one element of a batch) the job could not use."""

    reason: DeadLetterReason
    detail: str = Field(description="field paths and error types; never input values")
    source_topic: str
    source_partition: int
    source_offset: int
    element_index: int | None = Field(None, description="index inside a batch array, if any")
    payload: str = Field(description="the payload, credentials and IPs scrubbed, truncated")
    payload_bytes: int = Field(description="size of the original payload or element")
    payload_truncated: bool
    dead_lettered_at: int


MAX_NETWORKS = 64
"""A window counts its distinct client networks (/24, /48) up to this many: enough to tell a key
used from a handful of networks from one used from everywhere, and a window's state stays
bounded however many networks call it."""


class WindowCount(_Out):
    """Requests per rate key and event-time window (the usage topic).

    A window's count is the sum of its ``window`` record and any ``late_correction`` records:
    events that arrived after the window had closed are added by a correction, never dropped.
    """

    kind: Literal["window", "late_correction"]
    rate_key: str
    consumer: str | None = None
    key_fingerprint: str | None = None
    window_start: int
    window_end: int
    count: int
    units: float
    auth_failures: int
    countries: list[str]
    networks: int = Field(
        0,
        ge=0,
        le=MAX_NETWORKS,
        description="distinct client networks (/24 IPv4, /48 IPv6) in the window, counted up to "
        f"{MAX_NETWORKS}; a late correction's are its own (distinct counts do not add up)",
    )
    paths: dict[str, int] | None = Field(
        None,
        description="calls per request path (without its query string), for keys billing "
        "prices (a consumer or an API key); null for anonymous clients and calls without a path",
    )


class Alert(_Out):
    """A record of an incident on a key (a suspected compromise), on the alerts topic keyed by
    rate key: ``open`` when it starts, one ``update`` if its severity rises, ``closed`` when
    it ends. docs/detection.md explains the rules."""

    alert_id: str = Field(
        description="deterministic: the same key, incident and status give the same id"
    )
    status: Literal["open", "update", "closed"]
    rule: RuleName = Field(
        description="the rule of the finding behind this record (a close: of the incident's peak)"
    )
    rules: list[RuleName] = Field(description="every rule that found something in the incident")
    severity: Literal["warning", "high", "critical"]
    score: float = Field(description="the finding's strength: -log10 of its probability, or "
                         "the rejected calls behind it")  # fmt: skip
    probability: float | None = Field(
        None, description="how likely the window is under the key's own normal (null: no model)"
    )
    rate_key: str
    consumer: str | None = None
    key_fingerprint: str | None = None
    window_start: int = Field(description="the window judged (a close: the incident's last)")
    window_end: int
    window_closed: bool = Field(
        description="false: raised while the window was still open (auth_failures), so the "
        "counts are those seen until then"
    )
    incident_start: int = Field(description="window_start of the window that opened it")
    incident_windows: int = Field(description="windows with a finding so far")
    observed_count: int | None = Field(None, description="requests in the window (null: a close)")
    expected_count: float | None = Field(
        None, description="the key's expected requests per window then"
    )
    expected_sd: float | None = Field(None, description="and their standard deviation")
    expected_from: str | None = Field(
        None, description="the baseline it came from: minutes, hour, day or hour-of-day"
    )
    countries_seen: list[str] = Field(description="countries in this window")
    auth_failures: int | None = None
    summary: str
    features: dict[str, Any] = Field(
        default_factory=dict, description="the rule's figures: what it saw and compared"
    )
    detected_at: int


class Reconciliation(_Out):
    """Per source partition and interval of Kafka record time, an upsert keyed by
    ``<partition>@<interval_start>``: the latest record of a key holds its counts, with
    entries_in == enriched_out + dead_lettered + deduplicated. Late events are part of
    enriched_out; ``late`` counts the corrected ones."""

    source_topic: str
    source_partition: int
    interval_start: int
    interval_end: int
    offset_first: int | None
    offset_last: int | None
    records_in: int
    entries_in: int
    enriched: int
    enriched_out: int
    dead_lettered: int
    deduplicated: int
    late: int


DecimalText = Annotated[str, Field(pattern=r"^-?[0-9]+(\.[0-9]+)?$")]
"""An exact decimal amount as text: JSON numbers are read as floats by most readers."""


class TierUsage(_Out):
    index: int = Field(description="the tier's place in the plan's tiers, from 0")
    up_to: int | None = Field(description="the tier's last unit in the period (null: no end)")
    unit_price: DecimalText
    units: int
    amount: DecimalText


class SegmentUsage(_Out):
    start_ms: int = Field(description="when the segment's subscription took effect in the period")
    plan_id: str
    calls: int
    units: int
    position: int = Field(description="the period's units before this segment's")
    amount: DecimalText
    tiers: list[TierUsage]


class PeriodUsage(_Out):
    """A subject's period-to-date usage, priced (the period-usage topic, an upsert keyed by
    ``<subject>@<period>``: the latest record of a key holds the period so far).
    metering.billing.pricing states the pricing rule."""

    subject: str = Field(description="the consumer, or key:<fingerprint> of an API key")
    period: str = Field(description="YYYY-MM (calendar month, UTC)")
    currency: str | None = Field(description="the plans' currency (null: nothing priced yet)")
    calls: int = Field(description="priced calls")
    units: int = Field(description="priced units (calls by their route weights): the quota's")
    unpriced_calls: int = Field(description="calls in windows no subscription covered")
    amount: DecimalText = Field(description="exact; rounded only on the invoice line")
    latest_window_start: int | None
    segments: list[SegmentUsage]
    repricing_needed: bool = Field(
        description="a subscription changed retroactively, so this stream stopped pricing the "
        "period: the invoice command re-prices it from the usage topic"
    )
    included_units: int | None = Field(
        description="the quota of the plan in force at the latest window (null: unlimited, or "
        "no plan)"
    )
    hard_limit: bool = Field(description="that plan blocks calls at its quota")
    balance: DecimalText | None = Field(
        description="a prepaid subject's exact balance after this update (null: not prepaid)"
    )


class QuotaSignal(_Out):
    """A quota threshold reached, or a hard limit to enforce (the quota-signals topic, keyed by
    ``<subject>@<period>``), once per (subject, period, plan, threshold)."""

    signal_id: str = Field(description="deterministic: subject, period, plan and threshold")
    kind: Literal["threshold", "enforce"]
    subject: str
    period: str
    plan_id: str
    threshold_percent: int
    included_units: int
    units: int = Field(description="the period's units when the signal was raised")
    window_start: int | None = Field(description="the latest window when it was raised")
    until_ms: int | None = Field(
        None, description="enforce: the end of the period (calls blocked until then)"
    )


BalanceKind = Literal["low", "exhausted"]


class BalanceSignal(_Out):
    """A prepaid balance crossing its low threshold or zero (the balance-signals topic, keyed
    by subject), once per crossing."""

    signal_id: str = Field(description="deterministic: subject, kind and sequence")
    kind: BalanceKind
    subject: str
    sequence: int = Field(description="this kind's crossings for the subject so far, from 1")
    balance: DecimalText = Field(description="exact balance after the update that crossed")
    threshold: DecimalText
    currency: str


OUTPUT_MODELS: dict[str, type[BaseModel]] = {
    "enriched_event": EnrichedEvent,
    "dead_letter": DeadLetter,
    "window_count": WindowCount,
    "alert": Alert,
    "reconciliation": Reconciliation,
    "period_usage": PeriodUsage,
    "quota_signal": QuotaSignal,
    "balance_signal": BalanceSignal,
}
