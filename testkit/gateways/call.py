"""A gateway-neutral description of one API call, and what every renderer shares."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Entry = dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class Call:
    """One API call in no gateway's terms: each format's ``render`` writes it as that gateway
    logs it, leaving out what the gateway does not log. None: unknown, so not logged.

    Containers (headers, query, bodies, ``extra``) go into the entry as they are, not copied.
    """

    start_ms: int
    """When the gateway received the call, epoch ms (the event time)."""
    method: str | None = None
    uri: str = "/"
    """The request target as sent: path and query (a generic event's endpoint)."""
    url: str | None = None
    """The full URL, for gateways that log one."""
    query: Mapping[str, Any] | None = None
    """The query arguments parsed, as OpenResty's get_uri_args (a valueless one is true, a
    repeated one a list)."""
    request_headers: Mapping[str, Any] = field(default_factory=dict)
    request_size: int | None = None
    request_body: Any = None
    status: Any = None
    """The response status (any JSON value: hostile records send others than integers)."""
    response_headers: Mapping[str, Any] | None = None
    response_size: int | None = None
    response_body: Any = None
    client_ip: str | None = None
    consumer: str | None = None
    """The consumer the gateway identified (None: it identified nobody)."""
    consumer_id: str | None = None
    """The gateway's own id of that consumer, for gateways that have one."""
    request_id: str | None = None
    """The id the gateway gives the call; a generic event's idempotency key."""
    route: str | None = None
    """The matched route's name."""
    route_id: str | None = None
    service: str | None = None
    """The service's name."""
    service_id: str | None = None
    upstream: str | None = None
    """The upstream address(es) the gateway proxied to."""
    latency_ms: float | None = None
    """The whole call, as the gateway timed it."""
    upstream_latency_ms: float | None = None
    """The upstream's part; None if the gateway answered itself."""
    gateway_latency_ms: float | None = None
    gateway_host: str | None = None
    gateway_version: str | None = None
    units: float | None = None
    """Billable units, for formats that carry them."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Members no neutral field names (Kong's workspace, an APISIX < 2.11 consumer object):
    merged into the rendered entry last, see ``merged``."""


def merged(entry: Entry, extra: Mapping[str, Any]) -> Entry:
    """``entry`` with ``extra`` merged in, in place: a mapping merges into a rendered object of
    the same name, member by member; anything else replaces or adds the member."""
    for name, value in extra.items():
        current = entry.get(name)
        if isinstance(current, dict) and isinstance(value, Mapping):
            merged(current, value)
        else:
            entry[name] = value
    return entry


def encode(value: Any, *, escape_slashes: bool = False) -> bytes:
    """A record value as gateways write it: compact JSON, UTF-8, non-ASCII kept;
    ``escape_slashes`` writes ``/`` as ``\\/`` (lua-cjson's default)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if escape_slashes:
        text = text.replace("/", "\\/")
    return text.encode()
