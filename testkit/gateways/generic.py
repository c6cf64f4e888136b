"""Generic usage events from a ``Call``."""

from __future__ import annotations

from typing import Final, Literal

from testkit.gateways.call import Call, Entry, merged

NAME: Final = "generic"


def render(call: Call, *, consumer_field: Literal["user_id", "consumer"] = "user_id") -> Entry:
    """The usage event of ``call``: its consumer under ``consumer_field`` (the format takes
    either name), the request target as its endpoint, and the start time in epoch ms (an
    RFC 3339 text instead goes in ``Call.extra["timestamp"]``)."""
    entry: Entry = {}
    if call.consumer is not None:
        entry[consumer_field] = call.consumer
    entry["endpoint"] = call.uri
    if call.units is not None:
        entry["units"] = call.units
    entry["timestamp"] = call.start_ms
    if call.request_id is not None:
        entry["id"] = call.request_id
    if call.client_ip is not None:
        entry["client_ip"] = call.client_ip
    if call.method is not None:
        entry["method"] = call.method
    if call.status is not None:
        entry["status"] = call.status
    return merged(entry, call.extra)
