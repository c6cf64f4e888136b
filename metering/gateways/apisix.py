"""Apache APISIX kafka-logger, default "full log" format (``log-util.lua`` ``get_full_log``).

Covers 2.10 (the whole consumer object, key-auth key included; no latency split) through 3.x
(``{"username": ...}``; ``upstream_latency`` and ``apisix_latency``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field

from metering.gateways.base import EventBuilder, EventFields, first_header, opt_int
from metering.redact import extract_api_key
from schemas.events import EpochMs, GatewayInput, HeaderValue, Latency, QueryValue, Size

NAME: Final = "apisix"
LABEL: Final = "APISIX"
TIME_FIELD: Final = "start_time"


class ApisixRequest(GatewayInput):
    url: str = ""
    uri: str
    method: str
    headers: dict[str, HeaderValue] = Field(default_factory=dict)
    querystring: dict[str, QueryValue] = Field(default_factory=dict)
    size: Size | None = None
    body: str | None = None


class ApisixResponse(GatewayInput):
    status: Annotated[int, Field(ge=0, le=999)]
    headers: dict[str, HeaderValue] = Field(default_factory=dict)
    size: Size | None = None
    body: str | None = None


class ApisixServer(GatewayInput):
    hostname: str | None = None
    version: str | None = None


class ApisixConsumer(BaseModel):
    """``{"username": ...}`` since 2.11; before, the whole consumer object with credentials."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)
    username: str | None = None


class ApisixEntry(GatewayInput):
    request: ApisixRequest
    response: ApisixResponse
    server: ApisixServer = ApisixServer()
    upstream: str | None = None
    service_id: str | int | None = None
    route_id: str | int | None = None
    consumer: ApisixConsumer | None = None
    client_ip: str
    start_time: EpochMs
    latency: Latency | None = None
    upstream_latency: Latency | None = None
    apisix_latency: Latency | None = None


MODEL: Final = ApisixEntry


def sniff(entry: Mapping[str, Any]) -> bool:
    """An event time of APISIX's name, or a request with its response (Kong, which logs both
    too, is sniffed first)."""
    return "start_time" in entry or ("request" in entry and "response" in entry)


def to_event(e: ApisixEntry, entry: dict[str, Any], event: EventBuilder) -> dict[str, Any]:
    req, resp = e.request, e.response
    gateway_latency = e.apisix_latency
    if gateway_latency is None and e.latency is not None and e.upstream_latency is not None:
        gateway_latency = max(0.0, e.latency - e.upstream_latency)
    # No matched route: APISIX writes the Host into service_id, which is not a service.
    routed = e.route_id not in (None, "")
    fields: EventFields = {
        "gateway": NAME,
        "consumer": (e.consumer.username or None) if e.consumer is not None else None,
        "status": resp.status,
        "request_id": first_header(req.headers, "x-request-id")
        or first_header(req.headers, "request-id"),
        "gateway_version": e.server.version,
        "gateway_host": e.server.hostname,
        "route": str(e.route_id) if routed else None,
        "service": str(e.service_id) if routed and e.service_id not in (None, "") else None,
        "method": req.method,
        "host": first_header(req.headers, "host"),
        "path": req.uri,
        "latency_ms": e.latency,
        "upstream_latency_ms": e.upstream_latency,
        "gateway_latency_ms": gateway_latency,
        "request_bytes": opt_int(req.size),
        "response_bytes": opt_int(resp.size),
        "user_agent": first_header(req.headers, "user-agent"),
        "event_time": int(e.start_time),
    }
    # The consumer object as sent: what the model keeps of it (extra="allow"), where an
    # APISIX < 2.11 key-auth key may sit.
    consumer_obj = entry["consumer"] if e.consumer is not None else None
    return event(
        fields,
        api_key=extract_api_key(req.headers, req.querystring, consumer_obj),
        client_ip=e.client_ip,
    )
