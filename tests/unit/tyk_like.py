"""A made-up gateway format, shaped after Tyk's analytics records: everything a new format needs,
in one module that no product module knows of (tests/unit/test_gateways.py registers it).

The parse's side is ``metering.gateways.GatewayFormat``: NAME, LABEL, MODEL, TIME_FIELD,
``sniff`` and ``to_event``. The test kit's side is ``render``: a ``testkit.gateways.Call`` as
this gateway logs it. docs/extending-gateways.md walks through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final

from pydantic import Field

from metering.gateways import EventBuilder, EventFields, epoch_ms, opt_int
from schemas.events import EpochMs, GatewayInput, Latency, Size
from testkit.gateways import Call, Entry, merged

NAME: Final = "tyk-like"
LABEL: Final = "a Tyk-like record"
TIME_FIELD: Final = "timestamp"


class TykLatency(GatewayInput):
    total: Latency | None = None
    upstream: Latency | None = None


class TykLikeRecord(GatewayInput):
    api_id: str
    api_name: str | None = None
    alias: str | None = None
    """The alias of the key the caller presented: who called (empty: nobody identified)."""
    method: str
    host: str | None = None
    raw_path: str
    user_agent: str | None = None
    response_code: Annotated[int, Field(ge=0, le=999)]
    content_length: Size | None = None
    ip_address: str | None = None
    latency: TykLatency = TykLatency()
    timestamp: datetime | EpochMs


MODEL: Final = TykLikeRecord


def sniff(entry: Mapping[str, Any]) -> bool:
    """Tyk's API id with a response code: members none of the built-in formats write."""
    return "api_id" in entry and "response_code" in entry


def to_event(e: TykLikeRecord, entry: dict[str, Any], event: EventBuilder) -> dict[str, Any]:
    total, upstream = e.latency.total, e.latency.upstream
    fields: EventFields = {
        "gateway": NAME,
        "consumer": e.alias or None,
        "status": e.response_code,
        "route": e.api_name or e.api_id,
        "method": e.method,
        "host": e.host,
        "path": e.raw_path,
        "latency_ms": total,
        "upstream_latency_ms": upstream,
        "gateway_latency_ms": None if total is None or upstream is None else total - upstream,
        "request_bytes": opt_int(e.content_length),
        "user_agent": e.user_agent,
        "event_time": epoch_ms(e.timestamp, TIME_FIELD),
    }
    # Tyk logs only a hash of the key it was shown, so there is no key to fingerprint.
    return event(fields, client_ip=e.ip_address)


def render(call: Call) -> Entry:
    """The record this gateway logs for ``call``: its time as RFC 3339 text, in ms."""
    moment = datetime.fromtimestamp(call.start_ms // 1000, UTC)
    moment += timedelta(milliseconds=call.start_ms % 1000)
    entry: Entry = {
        "api_id": call.route_id,
        "api_name": call.route,
        "alias": call.consumer or "",
        "method": call.method,
        "host": call.request_headers.get("host"),
        "raw_path": call.uri,
        "user_agent": call.request_headers.get("user-agent"),
        "response_code": call.status,
        "content_length": call.request_size,
        "ip_address": call.client_ip,
        "latency": {"total": call.latency_ms, "upstream": call.upstream_latency_ms},
        "timestamp": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
    return merged(entry, call.extra)
