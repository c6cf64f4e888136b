"""APISIX kafka-logger full-log entries (``log-util.lua`` ``get_full_log``) from a ``Call``."""

from __future__ import annotations

from typing import Final

from testkit.gateways.call import Call, Entry, merged

NAME: Final = "apisix"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def escapes_slashes(version: str) -> bool:
    """lua-cjson escapes "/" by default; APISIX switched that off in 3.2.0."""
    return _version(version) < (3, 2, 0)


def logs_whole_consumer(version: str) -> bool:
    """Before 2.11.0 the log carried ctx.consumer whole, credentials included."""
    return _version(version) < (2, 11, 0)


def splits_latency(version: str) -> bool:
    """``upstream_latency`` and ``apisix_latency`` exist since 2.12.0."""
    return _version(version) >= (2, 12, 0)


def whole_consumer(name: str, key: str) -> Entry:
    """What an APISIX < 2.11 consumer object adds to ``{"username": ...}``: its key-auth key
    among the rest (``Call.extra["consumer"]``)."""
    return {"plugins": {"key-auth": {"key": key}}, "consumer_name": name}


def render(call: Call) -> Entry:
    """The entry APISIX logs for ``call``. With ``gateway_version``, what that version does not
    log (the latency split before 2.12) is left out."""
    request: Entry = {}
    if call.url is not None:
        request["url"] = call.url
    request["uri"] = call.uri
    request["method"] = call.method
    request["headers"] = call.request_headers
    if call.query is not None:
        request["querystring"] = call.query
    if call.request_size is not None:
        request["size"] = call.request_size
    if call.request_body is not None:
        request["body"] = call.request_body
    response: Entry = {"status": call.status}
    if call.response_headers is not None:
        response["headers"] = call.response_headers
    if call.response_size is not None:
        response["size"] = call.response_size
    if call.response_body is not None:
        response["body"] = call.response_body
    entry: Entry = {"request": request, "response": response}
    server: Entry = {}
    if call.gateway_host is not None:
        server["hostname"] = call.gateway_host
    if call.gateway_version is not None:
        server["version"] = call.gateway_version
    if server:
        entry["server"] = server
    if call.service_id is not None:
        entry["service_id"] = call.service_id
    if call.route_id is not None:
        entry["route_id"] = call.route_id
    entry["client_ip"] = call.client_ip
    entry["start_time"] = call.start_ms
    if call.latency_ms is not None:
        entry["latency"] = call.latency_ms
    if call.upstream is not None:
        entry["upstream"] = call.upstream
    if call.consumer is not None:
        entry["consumer"] = {"username": call.consumer}
    if call.gateway_version is None or splits_latency(call.gateway_version):
        if call.upstream_latency_ms is not None:
            entry["upstream_latency"] = call.upstream_latency_ms
        if call.gateway_latency_ms is not None:
            entry["apisix_latency"] = call.gateway_latency_ms
    return merged(entry, call.extra)
