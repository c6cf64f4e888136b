"""The gateway registry (metering.gateways) and the test kit's renderers (testkit.gateways).

The built-in formats agree with the enriched event's ``gateway`` Literal and with the test kit;
the sniff order is the one the parse has always had; and a format that no product module knows
of (tests/unit/tyk_like.py) is registered from here and parsed end to end into the common event.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, get_args

import pytest
import tyk_like
from mmdb import GB_IP
from payloads import NOW_MS, RAW_TOPIC, START_MS, apisix_39, encode, generic, kong_200
from pydantic import TypeAdapter
from test_records import GB_GEO

from metering import gateways
from metering.fastparse import Unsure
from metering.geo import GeoLookup
from metering.records import RecordProcessor, Result, SourceRef, client_rate_key, dumps
from metering.redact import Pseudonymizer
from schemas.events import DeadLetter, EnrichedEvent, GatewayName
from testkit import traffic
from testkit.gateways import RENDERERS, Call, Renderer

SRC = SourceRef(RAW_TOPIC, 0, 7)
KEY = "k3yAcmeAnalytics0123456789abcdef"


class AnyGatewayEvent(EnrichedEvent):
    """The enriched event with any gateway name: a registered plugin's is not in the Literal."""

    gateway: str


def build(pseudonymizer: Pseudonymizer, geo: GeoLookup, *, fast: bool = True) -> RecordProcessor:
    """A processor of the registry as it is now (the session fixture's predates the test)."""
    return RecordProcessor(pseudonymizer, geo.lookup, clock=lambda: NOW_MS / 1000, fast=fast)


def run(processor: RecordProcessor, value: Any, src: SourceRef = SRC) -> Result:
    result = processor.process(value if isinstance(value, bytes) else encode(value), src)
    for event, text in zip(result.events, result.encoded, strict=True):
        AnyGatewayEvent.model_validate(event)
        assert text == dumps(event)
    for letter in result.dead_letters:
        DeadLetter.model_validate(letter)
    return result


def a_call(**changes: Any) -> Call:
    """One identified GET, proxied, with a key in the apikey header."""
    fields: dict[str, Any] = {
        "start_ms": START_MS,
        "method": "GET",
        "uri": "/v1/orders/42?limit=10",
        "url": "https://api.example.com/v1/orders/42?limit=10",
        "query": {"limit": "10"},
        "request_headers": {
            "host": "api.example.com",
            "user-agent": "okhttp/4.12.0",
            "apikey": KEY,
        },
        "request_size": 312,
        "status": 200,
        "response_headers": {"content-type": "application/json"},
        "response_size": 181,
        "client_ip": GB_IP,
        "consumer": "acme-analytics",
        "route": "orders",
        "route_id": "orders",
        "latency_ms": 18,
        "upstream_latency_ms": 15,
        "gateway_latency_ms": 3,
        **changes,
    }
    return Call(**fields)


@pytest.fixture
def tyk_registered() -> Iterator[None]:
    gateways.register(tyk_like)
    try:
        yield
    finally:
        gateways.unregister(tyk_like.NAME)


# -- the built-in formats --------------------------------------------------------------------


def test_the_schema_names_the_built_in_formats_and_takes_a_plugins() -> None:
    schema = EnrichedEvent.model_json_schema()["properties"]["gateway"]
    assert set(schema["examples"]) == {f.NAME for f in gateways.BUILT_IN}
    assert gateways.registered() == gateways.BUILT_IN
    assert TypeAdapter(GatewayName).validate_python(tyk_like.NAME) == "tyk-like"
    with pytest.raises(ValueError, match="not a valid extension name"):
        gateways.register(SimpleNamespace(NAME="Tyk Like"))  # type: ignore[arg-type]


def test_the_test_kit_renders_every_built_in_format_and_traffic_draws_only_those() -> None:
    names = {f.NAME for f in gateways.BUILT_IN}
    assert set(RENDERERS) == names
    assert set(get_args(traffic.Gateway)) <= names


def test_the_sniff_order_is_kong_apisix_generic() -> None:
    assert [f.NAME for f in gateways.BUILT_IN] == ["kong", "apisix", "generic"]


@pytest.mark.parametrize(
    ("entry", "gateway"),
    [
        # Kong's members win over APISIX's request and response.
        pytest.param({**apisix_39(), "started_at": START_MS}, "kong", id="apisix+started_at"),
        # APISIX's event time wins over a generic endpoint.
        pytest.param({**apisix_39(), "endpoint": "/x"}, "apisix", id="apisix+endpoint"),
        pytest.param({**generic(), "latencies": {}, "started_at": START_MS}, None, id="kong-ish"),
    ],
)
def test_an_entry_two_formats_could_claim_goes_to_the_first_in_sniff_order(
    processor: RecordProcessor, entry: dict[str, Any], gateway: str | None
) -> None:
    result = run(processor, entry)
    if gateway is None:
        # Kong claims it, and it has no request: an invalid Kong entry, not a generic event.
        assert [d["reason"] for d in result.dead_letters] == ["invalid_event"]
        assert "request: missing" in result.dead_letters[0]["detail"]
    else:
        assert [e["gateway"] for e in result.events] == [gateway]


def test_a_claimed_entry_without_its_event_time_names_the_format_s_member(
    processor: RecordProcessor,
) -> None:
    entry = {k: v for k, v in kong_200().items() if k != "started_at"}
    (letter,) = run(processor, entry).dead_letters
    assert (letter["reason"], letter["detail"]) == ("missing_event_time", "started_at: missing")


def test_the_registry_refuses_a_second_format_of_a_name_and_an_unknown_place() -> None:
    with pytest.raises(ValueError, match="already registered"):
        gateways.register(gateways.BUILT_IN[0])
    with pytest.raises(ValueError, match="no registered gateway format named 'envoy'"):
        gateways.register(tyk_like, before="envoy")
    with pytest.raises(ValueError, match="no registered gateway format named 'envoy'"):
        gateways.unregister("envoy")
    assert gateways.registered() == gateways.BUILT_IN


def test_a_format_registered_before_another_is_sniffed_before_it() -> None:
    gateways.register(tyk_like, before="generic")
    try:
        assert [f.NAME for f in gateways.registered()] == ["kong", "apisix", "tyk-like", "generic"]
    finally:
        gateways.unregister(tyk_like.NAME)
    assert gateways.registered() == gateways.BUILT_IN


# -- a format from outside the product ---------------------------------------------------------


def test_a_registered_format_is_parsed_end_to_end_into_the_common_event(
    tyk_registered: None, pseudonymizer: Pseudonymizer, geo: GeoLookup
) -> None:
    raw = encode(tyk_like.render(a_call()))
    fast, reference = build(pseudonymizer, geo), build(pseudonymizer, geo, fast=False)
    fast._process_fast(raw, SRC)  # its model has a fast-path twin: no Unsure
    result = run(fast, raw)
    assert result == run(reference, raw)
    assert result.dead_letters == []
    assert result.events == [
        {
            "event_id": f"{RAW_TOPIC}-0-7-0",
            "request_id": None,
            "gateway": "tyk-like",
            "gateway_version": None,
            "gateway_host": None,
            "rate_key": "acme-analytics",
            "consumer": "acme-analytics",
            "key_fingerprint": None,
            "route": "orders",
            "service": None,
            "method": "GET",
            "host": "api.example.com",
            "path": "/v1/orders/42",
            "status": 200,
            "auth_failed": False,
            "latency_ms": 18.0,
            "upstream_latency_ms": 15.0,
            "gateway_latency_ms": 3.0,
            "request_bytes": 312,
            "response_bytes": None,
            "units": 1.0,
            "user_agent": "okhttp/4.12.0",
            "client_hash": pseudonymizer.client_hash(GB_IP),
            "client_prefix": "81.2.69.0/24",
            **GB_GEO,
            "event_time": START_MS,
            "processing_time": NOW_MS,
            "source_partition": 0,
            "source_offset": 7,
        }
    ]


ALL_RENDERERS: dict[str, Renderer] = {**RENDERERS, tyk_like.NAME: tyk_like.render}
SAME_EVERYWHERE = (
    *("rate_key", "consumer", "client_hash", "client_prefix", *GB_GEO),
    *("path", "method", "status", "auth_failed", "event_time"),
)
"""What every format says about the call (a generic event logs no HTTP exchange)."""
SAME_IN_GATEWAY_LOGS = (
    *("route", "host", "user_agent", "request_bytes"),
    *("latency_ms", "upstream_latency_ms", "gateway_latency_ms"),
)
"""What every gateway log says about it besides."""


def _events_of(processor: RecordProcessor, call: Call, names: list[str]) -> dict[str, Any]:
    events = {}
    for name in names:
        result = run(processor, ALL_RENDERERS[name](call))
        assert result.dead_letters == [], name
        (events[name],) = result.events
        assert events[name]["gateway"] == name
    return events


def test_one_call_reads_the_same_through_every_format(
    tyk_registered: None, pseudonymizer: Pseudonymizer, geo: GeoLookup
) -> None:
    processor = build(pseudonymizer, geo)
    events = _events_of(processor, a_call(), list(ALL_RENDERERS))
    for fields in (SAME_EVERYWHERE, SAME_IN_GATEWAY_LOGS):
        projections = {
            name: {k: e[k] for k in fields}
            for name, e in events.items()
            if fields is SAME_EVERYWHERE or name != "generic"
        }
        assert len({dumps(p) for p in projections.values()}) == 1, projections
    assert events["apisix"]["key_fingerprint"] == pseudonymizer.key_fingerprint(KEY)
    assert events["kong"]["key_fingerprint"] == pseudonymizer.key_fingerprint(KEY)


def test_one_rejected_call_is_counted_per_client_network_in_every_gateway_log(
    tyk_registered: None, pseudonymizer: Pseudonymizer, geo: GeoLookup
) -> None:
    call = a_call(status=401, consumer=None, upstream_latency_ms=None)
    events = _events_of(build(pseudonymizer, geo), call, ["apisix", "kong", "tyk-like"])
    for event in events.values():
        assert event["rate_key"] == client_rate_key(pseudonymizer, GB_IP)
        assert event["auth_failed"] is True


def test_a_registered_format_gets_the_parse_s_contract(
    tyk_registered: None, pseudonymizer: Pseudonymizer, geo: GeoLookup
) -> None:
    processor = build(pseudonymizer, geo)
    entry = tyk_like.render(a_call())
    # A resent entry is a retry by its bytes, as for any format that names no idempotency key.
    batch = run(processor, [entry, kong_200(), entry])
    assert [e["gateway"] for e in batch.events] == ["tyk-like", "kong", "tyk-like"]
    assert batch.dedup_ids[0] == batch.dedup_ids[2] != batch.dedup_ids[1]
    without_time = {k: v for k, v in entry.items() if k != "timestamp"}
    bad_status = {**entry, "response_code": "abc"}
    letters = run(processor, [without_time, bad_status, {"hello": "world"}]).dead_letters
    assert [(d["reason"], d["detail"]) for d in letters] == [
        ("missing_event_time", "timestamp: missing"),
        ("invalid_event", "response_code: int_parsing"),
        ("unknown_format", "neither Kong, APISIX, a generic usage event nor a Tyk-like record"),
    ]


def test_a_processor_keeps_the_registry_it_was_built_with(
    pseudonymizer: Pseudonymizer, geo: GeoLookup
) -> None:
    before = build(pseudonymizer, geo)
    gateways.register(tyk_like)
    try:
        raw = encode(tyk_like.render(a_call()))
        assert [d["reason"] for d in run(before, raw).dead_letters] == ["unknown_format"]
        assert [e["gateway"] for e in run(build(pseudonymizer, geo), raw).events] == ["tyk-like"]
    finally:
        gateways.unregister(tyk_like.NAME)


def test_a_made_up_format_is_unknown_once_unregistered(
    processor: RecordProcessor,
) -> None:
    raw = encode(tyk_like.render(a_call()))
    with pytest.raises(Unsure):
        processor._process_fast(raw, SRC)
    (letter,) = run(processor, raw).dead_letters
    assert (letter["reason"], letter["detail"]) == (
        "unknown_format",
        "neither Kong, APISIX nor a generic usage event",
    )
