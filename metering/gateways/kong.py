"""Kong http-log and the other logging plugins (``kong.log.serialize()``), Kong 2.x and 3.x."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Final

from pydantic import Field

from metering.gateways.base import EventBuilder, EventFields, first_header, opt_int
from metering.redact import extract_api_key
from schemas.events import MAX_LATENCY_MS, EpochMs, GatewayInput, HeaderValue, QueryValue, Size

NAME: Final = "kong"
LABEL: Final = "Kong"
TIME_FIELD: Final = "started_at"

# Kong writes -1 for a phase that did not happen (proxy: Kong answered itself).
KongLatency = Annotated[float, Field(ge=-1, le=MAX_LATENCY_MS)]
_VERSION = re.compile(r"kong/([0-9][\w.\-]*)", re.IGNORECASE)


class KongRequest(GatewayInput):
    id: str | None = None
    uri: str
    url: str = ""
    querystring: dict[str, QueryValue] = Field(default_factory=dict)
    method: str
    headers: dict[str, HeaderValue] = Field(default_factory=dict)
    size: Size | None = None


class KongResponse(GatewayInput):
    status: Annotated[int, Field(ge=0, le=999)]
    headers: dict[str, HeaderValue] = Field(default_factory=dict)
    size: Size | None = None


class KongLatencies(GatewayInput):
    kong: KongLatency | None = None
    proxy: KongLatency | None = None
    request: KongLatency | None = None
    receive: KongLatency | None = None


class KongConsumer(GatewayInput):
    id: str | None = None
    username: str | None = None
    custom_id: str | None = None


class KongEntity(GatewayInput):
    id: str | None = None
    name: str | None = None


class KongEntry(GatewayInput):
    request: KongRequest
    response: KongResponse
    latencies: KongLatencies = KongLatencies()
    consumer: KongConsumer | None = None
    route: KongEntity | None = None
    service: KongEntity | None = None
    client_ip: str
    started_at: EpochMs


MODEL: Final = KongEntry


def sniff(entry: Mapping[str, Any]) -> bool:
    """Kong's event time or its latencies: members no other format writes."""
    return "started_at" in entry or "latencies" in entry


def _version(headers: Mapping[str, Any]) -> str | None:
    # Kong logs no version of its own, only the Via (proxied) or Server (answered itself)
    # header it adds to the response.
    for name in ("via", "server"):
        header = first_header(headers, name)
        match = _VERSION.search(header) if header else None
        if match:
            return match.group(1)
    return None


def to_event(e: KongEntry, entry: dict[str, Any], event: EventBuilder) -> dict[str, Any]:
    req, resp, lat = e.request, e.response, e.latencies
    consumer = None
    if e.consumer is not None:
        consumer = e.consumer.username or e.consumer.custom_id or e.consumer.id
    fields: EventFields = {
        "gateway": NAME,
        "consumer": consumer,
        "status": resp.status,
        "request_id": req.id or first_header(req.headers, "x-request-id"),
        "gateway_version": _version(resp.headers),
        "route": (e.route.name or e.route.id) if e.route else None,
        "service": (e.service.name or e.service.id) if e.service else None,
        "method": req.method,
        "host": first_header(req.headers, "host"),
        "path": req.uri,
        "latency_ms": lat.request,
        # -1 means Kong answered itself and never proxied.
        "upstream_latency_ms": lat.proxy if lat.proxy is not None and lat.proxy >= 0 else None,
        "gateway_latency_ms": lat.kong,
        "request_bytes": opt_int(req.size),
        "response_bytes": opt_int(resp.size),
        "user_agent": first_header(req.headers, "user-agent"),
        "event_time": int(e.started_at),
    }
    return event(
        fields, api_key=extract_api_key(req.headers, req.querystring), client_ip=e.client_ip
    )
