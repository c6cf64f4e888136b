"""The generic usage event: one flat JSON object per billable call, from anything that is not
a supported gateway (a backend, a batch job, a metering SDK)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Final

from pydantic import Field, field_validator

from metering.gateways.base import EventBuilder, EventFields, Unusable, epoch_ms
from schemas.events import MAX_UNITS, EpochMs, GatewayInput

NAME: Final = "generic"
LABEL: Final = "a generic usage event"
TIME_FIELD: Final = "timestamp"

Units = Annotated[float, Field(ge=0, le=MAX_UNITS)]


class GenericUsageEvent(GatewayInput):
    user_id: str | None = None
    consumer: str | None = None
    endpoint: str
    units: Units = 1
    timestamp: datetime | EpochMs
    id: str | None = Field(
        None,
        description="idempotency key (CloudEvents, Stripe meter events): a second event with "
        "the same consumer and id within the dedup horizon is a retry",
    )
    client_ip: str | None = None
    method: str | None = None
    status: Annotated[int, Field(ge=0, le=999)] | None = None

    @field_validator("user_id", "consumer")
    @classmethod
    def _not_blank(cls, v: str | None) -> str | None:
        return v if v is None or v.strip() else None


MODEL: Final = GenericUsageEvent


def sniff(entry: Mapping[str, Any]) -> bool:
    """An endpoint, in an entry no gateway format claimed (sniffed last)."""
    return "endpoint" in entry


def to_event(e: GenericUsageEvent, entry: dict[str, Any], event: EventBuilder) -> dict[str, Any]:
    consumer = e.user_id or e.consumer
    if not consumer:
        raise Unusable("invalid_event", "user_id: missing")
    if not math.isfinite(e.units):
        raise Unusable("invalid_event", "units: not_finite")
    fields: EventFields = {
        "gateway": NAME,
        "consumer": consumer,
        "status": e.status,
        "method": e.method,
        "path": e.endpoint,
        "units": float(e.units),
        "event_time": epoch_ms(e.timestamp, TIME_FIELD),
    }
    # The emitter names its retries: two events alike in every byte may be two calls.
    return event(fields, client_ip=e.client_ip, idempotency_key=e.id)
