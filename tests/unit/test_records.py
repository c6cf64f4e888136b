"""RecordProcessor: every payload shape to exact enriched events, every failure to a dead letter."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mmdb import AU_IP, DE_V6_IP, GB_IP, US_IP
from payloads import (
    NOW_MS,
    RAW_TOPIC,
    START_MS,
    apisix_31,
    apisix_39,
    apisix_210,
    apisix_401,
    apisix_no_route,
    encode,
    generic,
    kong_200,
    kong_401,
)

from metering.geo import GeoLookup
from metering.records import (
    Limits,
    RecordProcessor,
    Result,
    SourceRef,
    _inspect,
    client_rate_key,
    dumps,
    rate_network,
)
from metering.redact import Pseudonymizer
from schemas.events import DeadLetter, EnrichedEvent

SRC = SourceRef(RAW_TOPIC, 3, 1207)
SECRET = "pl4ntedS3cretValue0123456789xyz"

GB_GEO = {
    "country": "GB",
    "region": "ENG",
    "city": "London",
    "latitude": 51.5142,
    "longitude": -0.0931,
}
US_GEO = {
    "country": "US",
    "region": "CA",
    "city": "Mountain View",
    "latitude": 37.386,
    "longitude": -122.0838,
}
DE_GEO = {"country": "DE", "region": None, "city": None, "latitude": 51.2993, "longitude": 9.491}
NO_GEO = {"country": None, "region": None, "city": None, "latitude": None, "longitude": None}


def client_key(ps: Pseudonymizer, ip: str) -> str:
    """The rate key of a rejected call from ``ip``: its network's HMAC."""
    return client_rate_key(ps, ip)


def run(processor: RecordProcessor, value: Any, src: SourceRef = SRC) -> Result:
    raw = value if isinstance(value, bytes) or value is None else encode(value)
    return processor.process(raw, src)


def only_event(result: Result) -> dict[str, Any]:
    assert result.dead_letters == []
    assert len(result.events) == 1
    return result.events[0]


def only_dead_letter(result: Result) -> dict[str, Any]:
    assert result.events == []
    assert len(result.dead_letters) == 1
    return result.dead_letters[0]


# -- APISIX ------------------------------------------------------------------------------------


def test_apisix_single_object_gives_the_exact_event(
    processor: RecordProcessor, pseudonymizer: Pseudonymizer
) -> None:
    entry = apisix_39()
    event = only_event(run(processor, entry))
    assert event == {
        "event_id": f"{RAW_TOPIC}-3-1207-0",
        "request_id": "2f0c3b9e-7a41-4c55-9d1e-6b7f1a2c3d4e",
        "gateway": "apisix",
        "gateway_version": "3.9.0",
        "gateway_host": "apisix-6f9d5c7b8-2xkqv",
        "rate_key": "acme-analytics",
        "consumer": "acme-analytics",
        "key_fingerprint": pseudonymizer.key_fingerprint("k3yAcmeAnalytics0123456789abcdef"),
        "route": "products-v1",
        "service": "catalog",
        "method": "GET",
        "host": "api.example.com",
        "path": "/v1/products/4711",
        "status": 200,
        "auth_failed": False,
        "latency_ms": 18.000047683716,
        "upstream_latency_ms": 15.0,
        "gateway_latency_ms": 3.000047683716,
        "request_bytes": 312,
        "response_bytes": 181,
        "units": 1.0,
        "user_agent": "okhttp/4.12.0",
        "client_hash": pseudonymizer.client_hash(GB_IP),
        "client_prefix": "81.2.69.0/24",
        **GB_GEO,
        "event_time": START_MS,
        "processing_time": NOW_MS,
        "source_partition": 3,
        "source_offset": 1207,
    }


def test_apisix_array_gives_one_event_per_entry_in_array_order(
    processor: RecordProcessor, pseudonymizer: Pseudonymizer
) -> None:
    # Batched in completion order, so start times are not sorted.
    entries = [
        apisix_39(start_time=START_MS + 900),
        apisix_210(start_time=START_MS),
        apisix_401(start_time=START_MS + 450, client_ip=US_IP),
        apisix_39(start_time=START_MS + 20, client_ip=DE_V6_IP, api_key="an0therKey0123456789"),
    ]
    result = run(processor, entries, SourceRef(RAW_TOPIC, 0, 99))
    assert result.dead_letters == []
    fp = pseudonymizer.key_fingerprint
    ch = pseudonymizer.client_hash
    common = {"processing_time": NOW_MS, "source_partition": 0, "source_offset": 99, "units": 1.0}
    v39 = {
        "gateway": "apisix",
        "gateway_version": "3.9.0",
        "gateway_host": "apisix-6f9d5c7b8-2xkqv",
        "request_id": "2f0c3b9e-7a41-4c55-9d1e-6b7f1a2c3d4e",
        "rate_key": "acme-analytics",
        "consumer": "acme-analytics",
        "route": "products-v1",
        "service": "catalog",
        "method": "GET",
        "host": "api.example.com",
        "path": "/v1/products/4711",
        "status": 200,
        "auth_failed": False,
        "latency_ms": 18.000047683716,
        "upstream_latency_ms": 15.0,
        "gateway_latency_ms": 3.000047683716,
        "request_bytes": 312,
        "response_bytes": 181,
        "user_agent": "okhttp/4.12.0",
    }
    assert result.events == [
        {
            **common,
            **v39,
            "event_id": f"{RAW_TOPIC}-0-99-0",
            "event_time": START_MS + 900,
            "key_fingerprint": fp("k3yAcmeAnalytics0123456789abcdef"),
            "client_hash": ch(GB_IP),
            "client_prefix": "81.2.69.0/24",
            **GB_GEO,
        },
        {
            **common,
            "event_id": f"{RAW_TOPIC}-0-99-1",
            "event_time": START_MS,
            "gateway": "apisix",
            "gateway_version": "2.10.4",
            "gateway_host": "gw-edge-eu-1",
            "request_id": None,
            "rate_key": "initech-billing",
            "consumer": "initech-billing",
            "key_fingerprint": fp("1n1techBillingKey0123456789abcde"),
            "route": "payments",
            "service": "billing",
            "method": "POST",
            "host": "api.example.com",
            "path": "/v1/payments",
            "status": 201,
            "auth_failed": False,
            "latency_ms": 57.000112533569,
            "upstream_latency_ms": None,
            "gateway_latency_ms": None,
            "request_bytes": 402,
            "response_bytes": 133,
            "user_agent": "python-requests/2.31.0",
            "client_hash": ch(US_IP),
            "client_prefix": "8.8.8.0/24",
            **US_GEO,
        },
        {
            **common,
            "event_id": f"{RAW_TOPIC}-0-99-2",
            "event_time": START_MS + 450,
            "gateway": "apisix",
            "gateway_version": "3.9.0",
            "gateway_host": "apisix-6f9d5c7b8-2xkqv",
            "request_id": None,
            "rate_key": f"client:{ch(rate_network(US_IP) or '')}",
            "consumer": None,
            "key_fingerprint": None,
            "route": "422421849201183291",
            "service": None,
            "method": "GET",
            "host": "api.example.com",
            "path": "/v1/orders",
            "status": 401,
            "auth_failed": True,
            "latency_ms": 1.0001659393311,
            "upstream_latency_ms": None,
            "gateway_latency_ms": 1.0001659393311,
            "request_bytes": 78,
            "response_bytes": 190,
            "user_agent": "curl/8.6.0",
            "client_hash": ch(US_IP),
            "client_prefix": "8.8.8.0/24",
            **US_GEO,
        },
        {
            **common,
            **v39,
            "event_id": f"{RAW_TOPIC}-0-99-3",
            "event_time": START_MS + 20,
            "key_fingerprint": fp("an0therKey0123456789"),
            "client_hash": ch(DE_V6_IP),
            "client_prefix": "2a02:ff0:1::/48",
            **DE_GEO,
        },
    ]


def test_apisix_before_3_2_with_escaped_slashes(
    processor: RecordProcessor, pseudonymizer: Pseudonymizer
) -> None:
    raw = encode([apisix_31(), apisix_31(start_time=START_MS + 1)], escape_slashes=True)
    # Every slash on the wire is written "\/", as lua-cjson does before APISIX 3.2.
    assert raw.count(b"/") == raw.count(b"\\/") > 10
    result = run(processor, raw)
    assert result.dead_letters == []
    assert len(result.events) == 2
    event = result.events[0]
    assert event["path"] == "/v1/orders"
    assert event["method"] == "POST"
    assert event["status"] == 201
    assert event["gateway_version"] == "3.1.0"
    assert event["route"] == "422421849201183291"
    assert event["service"] is None  # service_id ""
    assert event["key_fingerprint"] == pseudonymizer.key_fingerprint(
        "gl0bexMobileKey0123456789abcdefgh"
    )
    assert event["rate_key"] == "globex-mobile"
    assert event["client_prefix"] == "2a02:ff0:1::/48"
    assert event["client_hash"] == pseudonymizer.client_hash(DE_V6_IP)
    assert {k: event[k] for k in DE_GEO} == DE_GEO
    assert event["latency_ms"] == 120.99999904633
    assert event["upstream_latency_ms"] == 117.0
    assert event["gateway_latency_ms"] == 3.99999904633
    assert [e["event_time"] for e in result.events] == [START_MS, START_MS + 1]


def test_apisix_2_10_fingerprints_the_key_of_the_whole_consumer_object(
    processor: RecordProcessor, pseudonymizer: Pseudonymizer
) -> None:
    key = "1n1techBillingKey0123456789abcde"
    event = only_event(run(processor, apisix_210(api_key=key)))
    assert event["key_fingerprint"] == pseudonymizer.key_fingerprint(key)
    assert event["consumer"] == "initech-billing"
    assert event["rate_key"] == "initech-billing"
    # 2.10 logs only the total latency.
    assert event["latency_ms"] == 57.000112533569
    assert event["upstream_latency_ms"] is None
    assert event["gateway_latency_ms"] is None
    assert event["request_bytes"] == 402
    assert {k: event[k] for k in US_GEO} == US_GEO
    text = json.dumps(event)
    assert key not in text
    assert "canary-pw-0123456789" not in text


def test_apisix_latency_split_is_derived_when_only_upstream_latency_is_logged(
    processor: RecordProcessor,
) -> None:
    entry = apisix_39()
    del entry["apisix_latency"]
    entry["latency"] = 20.5
    entry["upstream_latency"] = 18
    event = only_event(run(processor, entry))
    assert event["gateway_latency_ms"] == 2.5
    entry["upstream_latency"] = 25  # clock noise must not give a negative gateway latency
    assert only_event(run(processor, entry))["gateway_latency_ms"] == 0.0


def test_apisix_401_without_consumer_or_upstream(
    processor: RecordProcessor, pseudonymizer: Pseudonymizer
) -> None:
    event = only_event(run(processor, apisix_401()))
    client = pseudonymizer.client_hash(GB_IP)
    assert {k: event[k] for k in event if k not in GB_GEO} == {
        "event_id": f"{RAW_TOPIC}-3-1207-0",
        "request_id": None,
        "gateway": "apisix",
        "gateway_version": "3.9.0",
        "gateway_host": "apisix-6f9d5c7b8-2xkqv",
        "rate_key": client_key(pseudonymizer, GB_IP),
        "consumer": None,
        "key_fingerprint": None,
        "route": "422421849201183291",
        "service": None,
        "method": "GET",
        "host": "api.example.com",
        "path": "/v1/orders",
        "status": 401,
        "auth_failed": True,
        "latency_ms": 1.0001659393311,
        "upstream_latency_ms": None,
        "gateway_latency_ms": 1.0001659393311,
        "request_bytes": 78,
        "response_bytes": 190,
        "units": 1.0,
        "user_agent": "curl/8.6.0",
        "client_hash": client,
        "client_prefix": "81.2.69.0/24",
        "event_time": START_MS,
        "processing_time": NOW_MS,
        "source_partition": 3,
        "source_offset": 1207,
    }


def test_rejected_keys_are_fingerprinted_but_counted_per_client(
    processor: RecordProcessor, pseudonymizer: Pseudonymizer
) -> None:
    rejected = apisix_401()
    rejected["request"]["headers"]["apikey"] = "gu3ssedKey0123456789"
    event = only_event(run(processor, rejected))
    assert event["key_fingerprint"] == pseudonymizer.key_fingerprint("gu3ssedKey0123456789")
    assert event["rate_key"] == client_key(pseudonymizer, GB_IP)
    # The same key accepted without a named consumer is counted by key.
    accepted = apisix_39(consumer=None, api_key="gu3ssedKey0123456789")
    event = only_event(run(processor, accepted))
    assert event["consumer"] is None
    assert event["rate_key"] == "key:" + pseudonymizer.key_fingerprint("gu3ssedKey0123456789")


def test_apisix_without_a_matched_route_has_no_service(processor: RecordProcessor) -> None:
    event = only_event(run(processor, apisix_no_route()))
    assert event["route"] is None
    assert event["service"] is None  # service_id holds the Host, which is not a service
    assert event["host"] == "api.example.com"
    assert event["status"] == 404
    assert event["path"] == "/nope"
    assert event["auth_failed"] is False


def test_anonymous_when_there_is_no_identity_at_all(processor: RecordProcessor) -> None:
    entry = apisix_401()
    entry["client_ip"] = ""
    event = only_event(run(processor, entry))
    assert event["rate_key"] == "anonymous"
    assert event["client_hash"] is None
    assert event["client_prefix"] is None
    assert {k: event[k] for k in NO_GEO} == NO_GEO


def test_lax_numbers_written_as_strings_are_still_good_events(processor: RecordProcessor) -> None:
    entry = apisix_39()
    entry["response"]["status"] = "502"
    entry["request"]["size"] = "75"
    entry["latency"] = "18.5"
    event = only_event(run(processor, entry))
    assert (event["status"], event["request_bytes"], event["latency_ms"]) == (502, 75, 18.5)


# -- headers and query arguments ---------------------------------------------------------------


def test_repeated_headers_are_arrays_and_the_first_value_counts(
    processor: RecordProcessor, pseudonymizer: Pseudonymizer
) -> None:
    entry = apisix_39(api_key="unused")
    headers = entry["request"]["headers"]
    headers["apikey"] = ["f1rstKey0123456789", "s3condKey0123456789"]
    headers["user-agent"] = ["curl/8.6.0", "okhttp/4.12.0"]
    headers["x-request-id"] = ["rid-1", "rid-2"]
    event = only_event(run(processor, entry))
    assert event["key_fingerprint"] == pseudonymizer.key_fingerprint("f1rstKey0123456789")
    assert event["user_agent"] == "curl/8.6.0"
    assert event["request_id"] == "rid-1"


@pytest.mark.parametrize(
    ("querystring", "expected_key"),
    [
        ({"apikey": True, "limit": "10"}, None),  # valueless arg: true, not a key
        ({"apikey": ["qF1rst0123456789", "qS3cond0123456789"]}, "qF1rst0123456789"),
        ({"expand": True, "api_key": "qUnderscore0123456789"}, "qUnderscore0123456789"),
        ({"API-KEY": "qDash0123456789"}, "qDash0123456789"),
        ({"status": ["open", "shipped"], "access_token": "qT0ken0123456789"}, "qT0ken0123456789"),
        ({"status": ["open", True]}, None),
    ],
)
def test_querystring_shapes(
    processor: RecordProcessor,
    pseudonymizer: Pseudonymizer,
    querystring: dict[str, Any],
    expected_key: str | None,
) -> None:
    entry = apisix_39(consumer=None)
    del entry["request"]["headers"]["apikey"]
    entry["request"]["querystring"] = querystring
    event = only_event(run(processor, entry))
    expected = pseudonymizer.key_fingerprint(expected_key) if expected_key else None
    assert event["key_fingerprint"] == expected
    if expected_key is None:
        assert event["rate_key"] == client_key(pseudonymizer, GB_IP)
    else:
        assert event["rate_key"] == f"key:{expected}"


def test_ipv4_mapped_and_unparseable_client_addresses(
    processor: RecordProcessor, pseudonymizer: Pseudonymizer
) -> None:
    mapped = only_event(run(processor, apisix_39(client_ip="::ffff:81.2.69.142")))
    assert mapped["client_prefix"] == "81.2.69.0/24"
    assert mapped["client_hash"] == pseudonymizer.client_hash("::ffff:81.2.69.142")
    assert {k: mapped[k] for k in GB_GEO} == GB_GEO
    garbage = only_event(run(processor, apisix_39(client_ip="unknown")))
    assert garbage["client_prefix"] is None
    assert garbage["client_hash"] == pseudonymizer.client_hash("unknown")
    assert {k: garbage[k] for k in NO_GEO} == NO_GEO
    private = only_event(run(processor, apisix_39(client_ip="10.1.2.3")))
    assert private["client_prefix"] == "10.1.2.0/24"
    assert {k: private[k] for k in NO_GEO} == NO_GEO


def test_escaped_surrogate_pairs_are_ordinary_characters(processor: RecordProcessor) -> None:
    raw = encode(apisix_39()).replace(b"okhttp/4.12.0", b"okhttp \\ud83d\\ude80 \\u00fc")
    event = only_event(run(processor, raw))
    assert event["user_agent"] == "okhttp \U0001f680 \u00fc"
    assert "\U0001f680".encode() in json.dumps(event, ensure_ascii=False).encode("utf-8")


# -- Kong --------------------------------------------------------------------------------------


def test_kong_object_gives_the_exact_event(
    processor: RecordProcessor, pseudonymizer: Pseudonymizer
) -> None:
    event = only_event(run(processor, kong_200()))
    assert event == {
        "event_id": f"{RAW_TOPIC}-3-1207-0",
        "request_id": "8f1e2d3c4b5a69788796a5b4c3d2e1f0",
        "gateway": "kong",
        "gateway_version": "3.8.0",
        "gateway_host": None,
        "rate_key": "umbrella-iot",
        "consumer": "umbrella-iot",
        # authorization "REDACTED" is Kong's mask, not a key: the apikey header is fingerprinted.
        "key_fingerprint": pseudonymizer.key_fingerprint("umbr3llaIotKey0123456789abcdefgh"),
        "route": "devices",
        "service": "iot-backend",
        "method": "GET",
        "host": "api.example.com",
        "path": "/v1/devices/77",
        "status": 200,
        "auth_failed": False,
        "latency_ms": 43.0,
        "upstream_latency_ms": 40.0,
        "gateway_latency_ms": 2.0,
        "request_bytes": 281,
        "response_bytes": 1300,
        "units": 1.0,
        "user_agent": "axios/1.6.8",
        "client_hash": pseudonymizer.client_hash(US_IP),
        "client_prefix": "8.8.8.0/24",
        **US_GEO,
        "event_time": START_MS,
        "processing_time": NOW_MS,
        "source_partition": 3,
        "source_offset": 1207,
    }


def test_kong_array_and_a_401_that_never_reached_the_upstream(
    processor: RecordProcessor, pseudonymizer: Pseudonymizer
) -> None:
    result = run(processor, [kong_200(started_at=START_MS + 5), kong_401()])
    assert result.dead_letters == []
    ok, rejected = result.events
    assert (ok["event_id"], ok["event_time"]) == (f"{RAW_TOPIC}-3-1207-0", START_MS + 5)
    assert rejected["event_id"] == f"{RAW_TOPIC}-3-1207-1"
    assert rejected["request_id"] == "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
    assert rejected["gateway_version"] == "3.8.0"  # from "server: kong/3.8.0"
    assert rejected["upstream_latency_ms"] is None  # proxy -1: Kong answered itself
    assert rejected["gateway_latency_ms"] == 1.0
    assert rejected["latency_ms"] == 1.0
    assert rejected["auth_failed"] is True
    assert rejected["consumer"] is None
    assert rejected["key_fingerprint"] == pseudonymizer.key_fingerprint(
        "wr0ngGuessedKey0123456789abcdefg"
    )
    assert rejected["rate_key"] == client_key(pseudonymizer, DE_V6_IP)
    assert rejected["route"] == "search"
    assert rejected["service"] == "search-svc"
    assert rejected["path"] == "/v1/search"
    assert {k: rejected[k] for k in DE_GEO} == DE_GEO


def test_kong_masked_authorization_alone_is_no_key(
    processor: RecordProcessor, pseudonymizer: Pseudonymizer
) -> None:
    entry = kong_401()
    entry["request"]["querystring"] = {"q": "shoes"}
    event = only_event(run(processor, entry))
    assert event["key_fingerprint"] is None
    assert event["rate_key"] == client_key(pseudonymizer, DE_V6_IP)


def test_kong_consumer_falls_back_to_custom_id_then_id(processor: RecordProcessor) -> None:
    entry = kong_200()
    del entry["consumer"]["username"]
    assert only_event(run(processor, entry))["consumer"] == "crm-00042"
    del entry["consumer"]["custom_id"]
    assert only_event(run(processor, entry))["consumer"] == "d1c2b3a4-0000-4000-8000-000000000001"


def test_kong_entities_without_names_use_ids_and_no_kong_header_means_no_version(
    processor: RecordProcessor,
) -> None:
    entry = kong_200()
    del entry["route"]["name"]
    entry["service"] = None
    entry["response"]["headers"] = {"via": "1.1 varnish"}
    event = only_event(run(processor, entry))
    assert event["route"] == "6c1f0a55-0d7e-4a3c-9a4c-1b2d3e4f5a6b"
    assert event["service"] is None
    assert event["gateway_version"] is None


# -- generic usage events ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timestamp", "event_time"),
    [
        (START_MS, START_MS),
        ("2024-06-13T15:06:30.123Z", START_MS),
        ("2024-06-13T15:06:30.123+00:00", START_MS),
        ("2024-06-13T17:06:30.123+02:00", START_MS),
        ("2024-06-13T10:06:30.123-05:00", START_MS),
        ("2024-06-13T20:36:30.123+05:30", START_MS),
        ("2024-06-13T15:06:30Z", START_MS - 123),
        ("2024-06-13T15:06:30.123", START_MS),  # no offset: UTC
        (float(START_MS), START_MS),
        (str(START_MS), START_MS),
    ],
)
def test_generic_event_times(
    processor: RecordProcessor, timestamp: str | int | float, event_time: int
) -> None:
    event = only_event(run(processor, generic(timestamp=timestamp)))
    assert event["event_time"] == event_time


def test_generic_event_fields(processor: RecordProcessor) -> None:
    event = only_event(run(processor, generic(units=2.5, endpoint="/v1/ocr/pages?lang=de")))
    assert event == {
        "event_id": f"{RAW_TOPIC}-3-1207-0",
        "request_id": None,
        "gateway": "generic",
        "gateway_version": None,
        "gateway_host": None,
        "rate_key": "ledger-batch",
        "consumer": "ledger-batch",
        "key_fingerprint": None,
        "route": None,
        "service": None,
        "method": None,
        "host": None,
        "path": "/v1/ocr/pages",
        "status": None,
        "auth_failed": False,
        "latency_ms": None,
        "upstream_latency_ms": None,
        "gateway_latency_ms": None,
        "request_bytes": None,
        "response_bytes": None,
        "units": 2.5,
        "user_agent": None,
        "client_hash": None,
        "client_prefix": None,
        **NO_GEO,
        "event_time": START_MS,
        "processing_time": NOW_MS,
        "source_partition": 3,
        "source_offset": 1207,
    }


def test_generic_consumer_field_client_ip_and_status(
    processor: RecordProcessor, pseudonymizer: Pseudonymizer
) -> None:
    entry = generic(consumer="ledger-batch", client_ip=AU_IP, method="POST", status=403)
    del entry["user_id"]
    event = only_event(run(processor, entry))
    assert event["rate_key"] == event["consumer"] == "ledger-batch"
    assert event["units"] == 3.0
    assert event["method"] == "POST"
    assert (event["status"], event["auth_failed"]) == (403, True)
    assert event["client_hash"] == pseudonymizer.client_hash(AU_IP)
    assert (event["country"], event["client_prefix"]) == ("AU", "1.1.1.0/24")
    # user_id wins over consumer when both are given
    both = generic(user_id="u-7", consumer="ledger-batch")
    assert only_event(run(processor, both))["rate_key"] == "u-7"


# -- dead letters ------------------------------------------------------------------------------


def _without(entry: dict[str, Any], field: str) -> dict[str, Any]:
    del entry[field]
    return entry


def _status_list() -> dict[str, Any]:
    entry = apisix_39(api_key=SECRET)
    entry["response"]["status"] = [200]
    return entry


def _kong_status_list() -> dict[str, Any]:
    entry = kong_200()
    entry["request"]["headers"]["apikey"] = SECRET
    entry["response"]["status"] = [200]
    return entry


def _lone_surrogate() -> bytes:
    # A valid JSON escape, but half a UTF-16 pair: no UTF-8 encoder can write it back out.
    return encode(apisix_39(api_key=SECRET)).replace(b"okhttp/4.12.0", b"okhttp\\ud800")


def _deep(levels: int) -> bytes:
    inner = encode(f"apikey={SECRET} from {GB_IP}")
    return b"[" * levels + inner + b"]" * levels


UMLAUT = "\u00fc".encode("latin-1")
# A Latin-1 encoder somewhere upstream: the realistic way to get invalid UTF-8.
LATIN1 = json.dumps(
    {"apikey": SECRET, "client": "M\u00fcller", "client_ip": GB_IP}, ensure_ascii=False
).encode("latin-1")

DEAD_LETTERS = [
    pytest.param(
        LATIN1,
        "not_utf8",
        f"invalid UTF-8 at byte {LATIN1.index(UMLAUT)}",
        id="latin-1",
    ),
    pytest.param(
        f"apikey={SECRET} garbage{{ client={GB_IP}".encode(),
        "not_json",
        "Expecting value at char 0",
        id="not-json",
    ),
    pytest.param(
        f'{{"latency": NaN, "apikey": "{SECRET}"}}'.encode(),
        "not_json",
        "invalid constant at char 0",
        id="nan",
    ),
    pytest.param(b'{"latency": -Infinity}', "not_json", "invalid constant at char 0", id="inf"),
    pytest.param(b"42", "wrong_type", "top-level JSON int", id="number"),
    pytest.param(encode(f"Bearer {SECRET}"), "wrong_type", "top-level JSON str", id="string"),
    pytest.param(b"null", "wrong_type", "top-level JSON NoneType", id="null"),
    pytest.param(b"true", "wrong_type", "top-level JSON bool", id="bool"),
    pytest.param(b"", "empty_record", "record value is empty or null", id="empty"),
    pytest.param(None, "empty_record", "record value is empty or null", id="tombstone"),
    pytest.param(b"[]", "empty_batch", "array without entries", id="empty-array"),
    pytest.param(
        _lone_surrogate(),
        "not_utf8",
        "lone UTF-16 surrogate escape in a JSON string",
        id="lone-surrogate",
    ),
    pytest.param(_deep(5000), "too_deep", "nesting deeper than 32", id="5000-deep"),
    pytest.param(_deep(40), "too_deep", "nesting deeper than 32", id="40-deep"),
    pytest.param(
        encode(_without(apisix_39(api_key=SECRET), "start_time")),
        "missing_event_time",
        "start_time: missing",
        id="apisix-no-start_time",
    ),
    pytest.param(
        encode(_without(kong_200(), "started_at")),
        "missing_event_time",
        "started_at: missing",
        id="kong-no-started_at",
    ),
    pytest.param(
        encode(_without(generic(), "timestamp")),
        "missing_event_time",
        "timestamp: missing",
        id="generic-no-timestamp",
    ),
    pytest.param(
        encode(_status_list()), "invalid_event", "response.status: int_type", id="status-list"
    ),
    pytest.param(
        encode(_kong_status_list()),
        "invalid_event",
        "response.status: int_type",
        id="kong-status-list",
    ),
    pytest.param(
        encode(apisix_39(start_time=START_MS // 1000, api_key=SECRET)),  # seconds, not ms
        "invalid_event",
        "start_time: greater_than_equal",
        id="start_time-in-seconds",
    ),
    pytest.param(
        encode(apisix_39(start_time=5_000_000_000_000, api_key=SECRET)),
        "invalid_event",
        "start_time: less_than",
        id="start_time-after-2100",
    ),
    pytest.param(
        encode(kong_200(started_at=0)),
        "invalid_event",
        "started_at: greater_than_equal",
        id="started_at-zero",
    ),
    pytest.param(
        encode(generic(timestamp="1999-12-31T23:59:59Z")),
        "invalid_event",
        "timestamp: out_of_range",
        id="generic-before-2000",
    ),
    pytest.param(
        encode(generic(user_id="  ")), "invalid_event", "user_id: missing", id="blank-user"
    ),
    pytest.param(
        encode({"apikey": SECRET, "client_ip": GB_IP, "hello": "world"}),
        "unknown_format",
        "neither Kong, APISIX nor a generic usage event",
        id="unknown-format",
    ),
]


@pytest.mark.parametrize(("raw", "reason", "detail"), DEAD_LETTERS)
def test_unusable_records_are_dead_lettered(
    processor: RecordProcessor, raw: bytes | None, reason: str, detail: str
) -> None:
    letter = only_dead_letter(run(processor, raw))
    assert letter["reason"] == reason
    assert letter["detail"] == detail
    assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == (
        RAW_TOPIC,
        3,
        1207,
    )
    assert letter["element_index"] is None
    assert letter["dead_lettered_at"] == NOW_MS
    assert letter["payload_bytes"] == (len(raw) if raw else 0)
    text = json.dumps(letter)
    for planted in (SECRET, GB_IP, "k3yAcmeAnalytics0123456789abcdef"):
        assert planted not in text
    assert len(letter["payload"]) <= Limits().dlq_payload_chars


def test_dead_letter_of_an_element_is_the_redacted_element(processor: RecordProcessor) -> None:
    entry = apisix_39(api_key=SECRET)
    entry["response"]["status"] = [200]
    raw = encode(entry)
    letter = only_dead_letter(run(processor, raw))
    assert letter["payload_bytes"] == len(raw)
    payload = json.loads(letter["payload"])
    assert payload["request"]["headers"] == {
        "host": "api.example.com",
        "user-agent": "okhttp/4.12.0",
        "accept": ["application/json", "text/plain"],
        "x-request-id": "2f0c3b9e-7a41-4c55-9d1e-6b7f1a2c3d4e",
        "apikey": "[REDACTED]",
    }
    assert payload["client_ip"] == "[IP]"
    assert payload["consumer"] == {"username": "acme-analytics"}
    assert payload["response"]["status"] == [200]
    assert payload["upstream"] == "[IP]:8080"
    assert letter["payload_truncated"] is False


def test_mixed_array_gives_good_events_and_one_dead_letter(
    processor: RecordProcessor, pseudonymizer: Pseudonymizer
) -> None:
    bad = apisix_39(api_key=SECRET, client_ip=US_IP)
    bad["response"]["status"] = {"code": 200}
    result = run(processor, [apisix_39(), bad, kong_200()], SourceRef(RAW_TOPIC, 1, 5))
    assert [e["event_id"] for e in result.events] == [f"{RAW_TOPIC}-1-5-0", f"{RAW_TOPIC}-1-5-2"]
    assert [e["gateway"] for e in result.events] == ["apisix", "kong"]
    [letter] = result.dead_letters
    assert letter["reason"] == "invalid_event"
    assert letter["detail"] == "response.status: int_type"
    assert letter["element_index"] == 1
    assert letter["payload_bytes"] == len(encode(bad))
    assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == (
        RAW_TOPIC,
        1,
        5,
    )
    text = json.dumps(result.dead_letters) + json.dumps(result.events)
    assert SECRET not in text
    assert US_IP not in text
    assert GB_IP not in text


def test_non_object_elements_of_an_array(processor: RecordProcessor) -> None:
    result = run(processor, [7, apisix_39(), None, "x"])
    assert len(result.events) == 1
    assert [
        (d["reason"], d["detail"], d["element_index"], d["payload"]) for d in result.dead_letters
    ] == [
        ("wrong_type", "entry is JSON int", 0, "7"),
        ("wrong_type", "entry is JSON NoneType", 2, "null"),
        ("wrong_type", "entry is JSON str", 3, '"x"'),
    ]
    assert [d["payload_bytes"] for d in result.dead_letters] == [1, 4, 3]


def test_too_large_records_and_batches(
    pseudonymizer: Pseudonymizer, geo: GeoLookup, processor: RecordProcessor
) -> None:
    entry = apisix_39(api_key=SECRET)
    entry["request"]["headers"]["x-padding"] = "p" * (2 * 1024 * 1024)
    raw = encode(entry)
    letter = only_dead_letter(run(processor, raw))
    assert letter["reason"] == "too_large"
    assert letter["detail"] == f"{len(raw)} bytes > {2 * 1024 * 1024}"
    assert letter["payload_bytes"] == len(raw)
    assert letter["payload_truncated"] is True
    assert len(letter["payload"]) <= Limits().dlq_payload_chars
    assert SECRET not in json.dumps(letter)
    assert GB_IP not in json.dumps(letter)

    small = RecordProcessor(
        pseudonymizer, geo.lookup, Limits(max_batch_entries=3), clock=lambda: NOW_MS / 1000
    )
    letter = only_dead_letter(run(small, [apisix_39()] * 4))
    assert (letter["reason"], letter["detail"]) == ("too_large", "4 entries > 3")
    assert letter["payload_bytes"] == len(encode([apisix_39()] * 4))
    assert [e["event_id"] for e in run(small, [apisix_39()] * 3).events] == [
        f"{RAW_TOPIC}-3-1207-{i}" for i in range(3)
    ]


def test_long_element_payloads_are_truncated_and_still_scrubbed(
    pseudonymizer: Pseudonymizer, geo: GeoLookup
) -> None:
    small = RecordProcessor(
        pseudonymizer, geo.lookup, Limits(dlq_payload_chars=256), clock=lambda: NOW_MS / 1000
    )
    entry = apisix_39(api_key=SECRET)
    entry["start_time"] = 1
    entry["request"]["uri"] = "/v1/x?" + "&".join(f"a{i}=b" for i in range(200)) + f"&key={SECRET}"
    letter = only_dead_letter(run(small, entry))
    assert letter["reason"] == "invalid_event"
    assert letter["payload_truncated"] is True
    assert len(letter["payload"]) <= 256
    assert SECRET not in json.dumps(letter)


def test_process_never_raises_on_a_broken_geo_lookup(pseudonymizer: Pseudonymizer) -> None:
    def broken(ip: str) -> Any:
        raise RuntimeError(f"db gone while looking up {ip}")

    proc = RecordProcessor(pseudonymizer, broken, clock=lambda: NOW_MS / 1000)
    result = run(proc, [apisix_39(api_key=SECRET), generic()])
    assert len(result.events) == 1  # the generic event has no client IP to look up
    [letter] = result.dead_letters
    assert (letter["reason"], letter["detail"], letter["element_index"]) == (
        "invalid_event",
        "internal: RuntimeError",
        0,
    )
    assert SECRET not in json.dumps(letter)
    assert GB_IP not in json.dumps(letter)


# -- robustness --------------------------------------------------------------------------------

_TEXT = st.text(alphabet=st.characters(categories=["L", "N", "P", "S", "Zs", "Cc", "Cs"]))
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=12,
)
_BASES = (
    apisix_39,
    apisix_31,
    apisix_210,
    apisix_401,
    apisix_no_route,
    kong_200,
    kong_401,
    generic,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def _mutated_entries(draw: st.DrawFn) -> dict[str, Any]:
    """A real entry with a few members replaced by arbitrary JSON or removed."""
    entry: dict[str, Any] = draw(st.sampled_from(_BASES))()
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(_paths(entry)))
        node = entry
        for part in path[:-1]:
            node = node[part]
        if draw(st.booleans()) or isinstance(node, list):
            node[path[-1]] = draw(_JSON)
        else:
            del node[path[-1]]
    return entry


def _ascii_json(value: Any) -> bytes:
    return json.dumps(value).encode()  # escapes every non-ASCII character, surrogates included


@settings(max_examples=150, deadline=None)
@given(
    raw=_mutated_entries().map(_ascii_json)
    | st.lists(_mutated_entries(), min_size=1, max_size=3).map(_ascii_json)
    | _JSON.map(_ascii_json)
    | st.binary(max_size=300)
)
def test_process_never_raises_and_every_output_is_writable(
    processor: RecordProcessor, raw: bytes
) -> None:
    result = processor.process(raw, SRC)
    assert result.events or result.dead_letters
    for event in result.events:
        EnrichedEvent.model_validate(event)
    for letter in result.dead_letters:
        DeadLetter.model_validate(letter)
        # "internal:" would mean an unexpected exception inside the processor.
        assert not letter["detail"].startswith("internal:"), letter["detail"]
    # Everything must survive the UTF-8 encoding of the Kafka sinks.
    json.dumps(result.events + result.dead_letters, ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize(
    ("value", "limit", "exceeds"),
    [
        ([[[]]], 3, False),
        ([[[]]], 2, True),
        ({"x": {"y": []}}, 3, False),
        # Siblings do not add depth; a nested pair inside a sibling does.
        ([{}, {}, [[]]], 3, False),
        ([{}, {}, [[]]], 2, True),
        # "{[]}" must take two passes, not one.
        ({"a": [{"b": []}]}, 3, True),
        # Brackets inside strings, escaped quotes and escaped backslashes are not structure.
        ({"k": "[[[[[[{{{{{{"}, 1, False),
        ({"k\\": ['\\"[[[[[[[[\\', '"{{{{{{']}, 2, False),
        ({"k\\": ['\\"[[[[[[[[\\', '"{{{{{{', [[]]]}, 2, True),
    ],
)
def test_depth_check_reads_structure_not_strings(value: Any, limit: int, exceeds: bool) -> None:
    assert _inspect(value, limit) == (exceeds, False)

    # Agrees with a recursive walk of the parsed value.
    def depth(v: Any) -> int:
        children = v.values() if isinstance(v, dict) else v if isinstance(v, list) else None
        return 0 if children is None else 1 + max((depth(c) for c in children), default=0)

    assert (depth(value) > limit) is exceeds


@pytest.mark.parametrize(
    "number",
    [2**64, -(2**63) - 1, 10**30, -(10**30)],
)
def test_integers_beyond_64_bits_stay_exact(processor: RecordProcessor, number: int) -> None:
    # orjson reads these as floats; the parser must notice and read the record with json.
    assert _inspect(float(number), 32) == (False, True)
    assert _inspect({"n": [1.5, float(number)]}, 32) == (False, True)
    record = {"n": [number], "m": 1.5}
    assert processor._decode(json.dumps(record).encode()) == record


def test_dumps_matches_json_and_takes_what_orjson_refuses() -> None:
    value = {"a": [1, 2.5, None, True], "ü": '€ \n "q"', "n": {"x": -0.0}}
    assert dumps(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for refused in ({"big": 2**70}, {"s": "\ud800"}, {1: "non-string key"}):
        assert dumps(refused) == json.dumps(refused, separators=(",", ":"), ensure_ascii=False)
