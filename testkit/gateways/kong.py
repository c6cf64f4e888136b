"""Kong ``kong.log.serialize()`` entries (http-log and the other logging plugins) from a
``Call``."""

from __future__ import annotations

from typing import Final

from testkit.gateways.call import Call, Entry, merged

NAME: Final = "kong"

MEMBER_ORDER: Final = (
    "request",
    "upstream_uri",
    "client_ip",
    "started_at",
    "workspace",
    "workspace_name",
    "route",
    "service",
    "response",
    "latencies",
    "tries",
    "upstream_status",
    "source",
    "consumer",
    "authenticated_entity",
)
"""The entry's members in the order this kit writes them (others follow). testkit.traffic
shuffles an entry's members with its seeded generator in this order, so changing it changes
every seeded scenario."""


def _entity(entity_id: str | None, name: str | None) -> Entry | None:
    entity: Entry = {}
    if entity_id is not None:
        entity["id"] = entity_id
    if name is not None:
        entity["name"] = name
    return entity or None


def render(call: Call) -> Entry:
    """The entry Kong logs for ``call``. Kong logs no version and no host name of its own (its
    version shows only in the Via or Server response header), and its upstream only in
    ``tries`` (``Call.extra``)."""
    request: Entry = {}
    if call.request_id is not None:
        request["id"] = call.request_id
    request["uri"] = call.uri
    if call.url is not None:
        request["url"] = call.url
    if call.query is not None:
        request["querystring"] = call.query
    request["method"] = call.method
    request["headers"] = call.request_headers
    if call.request_size is not None:
        request["size"] = call.request_size
    entry: Entry = {"request": request, "client_ip": call.client_ip, "started_at": call.start_ms}
    route = _entity(call.route_id, call.route)
    if route is not None:
        entry["route"] = route
    service = _entity(call.service_id, call.service)
    if service is not None:
        entry["service"] = service
    response: Entry = {"status": call.status}
    if call.response_headers is not None:
        response["headers"] = call.response_headers
    if call.response_size is not None:
        response["size"] = call.response_size
    entry["response"] = response
    if call.latency_ms is not None:
        kong = call.gateway_latency_ms or 0
        proxied = call.upstream_latency_ms is not None
        proxy = call.upstream_latency_ms if call.upstream_latency_ms is not None else -1
        entry["latencies"] = {
            "kong": kong,
            # -1: Kong answered itself and never proxied.
            "proxy": proxy,
            "request": call.latency_ms,
            # What is left of the request once Kong's and the upstream's parts are out.
            "receive": call.latency_ms - kong - proxy if proxied else 0,
        }
    if call.consumer is not None:
        consumer: Entry = {}
        if call.consumer_id is not None:
            consumer["id"] = call.consumer_id
        consumer["username"] = call.consumer
        entry["consumer"] = consumer
    merged(entry, call.extra)
    ordered: Entry = {name: entry[name] for name in MEMBER_ORDER if name in entry}
    ordered.update(entry)
    return ordered
