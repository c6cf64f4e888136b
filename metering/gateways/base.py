"""What every gateway format module provides, and what the parse hands it.

A format module (``metering.gateways.apisix``, ``.kong``, ``.generic``, or a plugin's) is a
``GatewayFormat``: its input model, its ``sniff``, its event-time member and its ``to_event``.
``to_event`` reads the validated entry and calls the parse's one ``EventBuilder`` with what the
format says about the call; the builder derives everything that is the same for every format
(rate key, identity, geo, redaction of path and user agent, auth failure).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol, Required, TypedDict

from pydantic import BaseModel

from schemas.events import MAX_EVENT_TIME_MS, MIN_EVENT_TIME_MS


class Unusable(Exception):
    """An entry (or record) the job cannot use: it becomes a dead letter with this reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class EventFields(TypedDict, total=False):
    """What a format says about one call, by the enriched event's member names; the members it
    leaves out are null (``units``: 1). ``path`` is the request target as logged (a path, a
    path with query, a URL): the event keeps its path, redacted. ``user_agent`` is as logged:
    the event keeps it redacted."""

    gateway: Required[str]
    path: Required[str]
    event_time: Required[int]
    consumer: str | None
    status: int | None
    request_id: str | None
    gateway_version: str | None
    gateway_host: str | None
    route: str | None
    service: str | None
    method: str | None
    host: str | None
    latency_ms: float | None
    upstream_latency_ms: float | None
    gateway_latency_ms: float | None
    request_bytes: int | None
    response_bytes: int | None
    units: float
    user_agent: str | None


class NoKey:
    """The type of ``NO_KEY``: an ``EventBuilder`` call that names no idempotency key."""


NO_KEY = NoKey()


class EventBuilder(Protocol):
    """The parse's one builder of the common enriched event (``RecordProcessor._event``).

    It adds to ``fields`` what every format shares: the rate key and identity (from the
    consumer, the presented ``api_key`` and the ``client_ip``), geo, ``auth_failed`` (from the
    status), and the redaction of path and user agent. ``idempotency_key``: left out, a retry is
    the gateway resending the entry's bytes; given (None included), the format names retries by
    key, and None means this event has none.
    """

    def __call__(
        self,
        fields: EventFields,
        *,
        api_key: str | None = None,
        client_ip: str | None = None,
        idempotency_key: str | NoKey | None = ...,
    ) -> dict[str, Any]: ...


class GatewayFormat(Protocol):
    """One access-log format. Each module of this package is one; so is any object (a plugin's
    module, a test's namespace) with these members."""

    @property
    def NAME(self) -> str:
        """The enriched event's ``gateway``."""

    @property
    def LABEL(self) -> str:
        """How the unknown_format dead letter names the format."""

    @property
    def MODEL(self) -> type[BaseModel]:
        """The pydantic input model of one entry (the fast path uses its msgspec twin)."""

    @property
    def TIME_FIELD(self) -> str:
        """The member that carries the event time: an entry the format claims without it is
        a missing_event_time dead letter."""

    def sniff(self, entry: Mapping[str, Any]) -> bool:
        """Whether a decoded entry looks like this format (cheap: it runs per entry)."""
        ...

    def to_event(self, e: Any, entry: dict[str, Any], event: EventBuilder) -> dict[str, Any]:
        """The common event of the validated entry ``e`` (the model, or its twin with the same
        attribute names), ``entry`` being its decoded JSON. Raises Unusable for an entry the
        model accepts but the event cannot hold."""
        ...


def first_header(headers: Mapping[str, Any], name: str) -> str | None:
    """A header's first non-empty value; gateways log a repeated header as a list."""
    value = headers.get(name)
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, str) and value else None


def opt_int(value: float | None) -> int | None:
    """A byte count as the event holds it (the models read sizes as floats)."""
    return None if value is None else int(value)


def epoch_ms(value: datetime | float, field: str) -> int:
    """An event time in epoch ms: a number as it is, a datetime (naive: UTC) converted, and
    Unusable if that lands outside the years the models accept as numbers."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        ms = int(value.timestamp() * 1000)
        if not MIN_EVENT_TIME_MS <= ms < MAX_EVENT_TIME_MS:
            raise Unusable("invalid_event", f"{field}: out_of_range")
        return ms
    return int(value)
