"""Gateway log entries as the gateways write them, for the record, redaction and schema tests.

Shapes follow APISIX kafka-logger ``get_full_log`` (3.9, 3.1 and 2.10) and Kong
``kong.log.serialize()`` (3.8). Every builder returns a fresh dict, so tests may mutate it.
"""

from __future__ import annotations

import json
from typing import Any

from mmdb import DE_V6_IP, GB_IP, US_IP

START_MS = 1_718_291_190_123  # 2024-06-13T15:06:30.123Z
RAW_TOPIC = "gateway.raw"
NOW_MS = 1_718_300_000_000  # the processors' clock in the tests

Entry = dict[str, Any]


def apisix_39(
    *,
    start_time: int = START_MS,
    client_ip: str = GB_IP,
    api_key: str = "k3yAcmeAnalytics0123456789abcdef",
    consumer: str | None = "acme-analytics",
) -> Entry:
    """APISIX 3.9: {"username": ...} consumer, split latencies, key in the apikey header."""
    uri = "/v1/products/4711?limit=20&expand&status=open&status=shipped"
    entry: Entry = {
        "request": {
            "url": f"https://api.example.com:9443{uri}",
            "uri": uri,
            "method": "GET",
            "headers": {
                "host": "api.example.com",
                "user-agent": "okhttp/4.12.0",
                "accept": ["application/json", "text/plain"],
                "x-request-id": "2f0c3b9e-7a41-4c55-9d1e-6b7f1a2c3d4e",
                "apikey": api_key,
            },
            "querystring": {"limit": "20", "expand": True, "status": ["open", "shipped"]},
            "size": 312,
        },
        "response": {
            "status": 200,
            "headers": {
                "content-type": "application/json",
                "content-length": "24",
                "server": "APISIX/3.9.0",
            },
            "size": 181,
        },
        "server": {"hostname": "apisix-6f9d5c7b8-2xkqv", "version": "3.9.0"},
        "upstream": "10.0.3.17:8080",
        "service_id": "catalog",
        "route_id": "products-v1",
        "client_ip": client_ip,
        "start_time": start_time,
        "latency": 18.000047683716,
        "upstream_latency": 15,
        "apisix_latency": 3.000047683716,
    }
    if consumer is not None:
        entry["consumer"] = {"username": consumer}
    return entry


def apisix_31(
    *, start_time: int = START_MS, api_key: str = "gl0bexMobileKey0123456789abcdefgh"
) -> Entry:
    """APISIX 3.1 (slashes escaped on the wire): key in the querystring, IPv6 client."""
    uri = f"/v1/orders?apikey={api_key}&limit=10"
    return {
        "request": {
            "url": f"https://api.example.com:9443{uri}",
            "uri": uri,
            "method": "POST",
            "headers": {"host": "api.example.com", "user-agent": "Go-http-client/2.0"},
            "querystring": {"apikey": api_key, "limit": "10"},
            "size": 230,
        },
        "response": {"status": 201, "headers": {"server": "APISIX/3.1.0"}, "size": 96},
        "server": {"hostname": "apisix-legacy-0", "version": "3.1.0"},
        "upstream": "10.0.3.18:8080",
        "service_id": "",
        "route_id": "422421849201183291",
        "consumer": {"username": "globex-mobile"},
        "client_ip": DE_V6_IP,
        "start_time": start_time,
        "latency": 120.99999904633,
        "upstream_latency": 117,
        "apisix_latency": 3.99999904633,
    }


def apisix_210(
    *, start_time: int = START_MS, api_key: str = "1n1techBillingKey0123456789abcde"
) -> Entry:
    """APISIX 2.10: the whole consumer object (key-auth key included), no latency split.

    key-auth's ``hide_credentials`` removed the key header before the log phase, so the key is
    only in the consumer object.
    """
    return {
        "request": {
            "url": "https://api.example.com:9443/v1/payments",
            "uri": "/v1/payments",
            "method": "POST",
            "headers": {
                "host": "api.example.com",
                "user-agent": "python-requests/2.31.0",
                "content-type": "application/json",
            },
            "querystring": {},
            "size": 402,
            "body": '{"amount":4200,"password":"canary-pw-0123456789"}',
        },
        "response": {"status": 201, "headers": {"server": "APISIX/2.10.4"}, "size": 133},
        "server": {"hostname": "gw-edge-eu-1", "version": "2.10.4"},
        "upstream": "10.0.4.21:8080",
        "service_id": "billing",
        "route_id": "payments",
        "consumer": {
            "username": "initech-billing",
            "plugins": {"key-auth": {"key": api_key}},
            "consumer_name": "initech-billing",
        },
        "client_ip": US_IP,
        "start_time": start_time,
        "latency": 57.000112533569,
    }


def apisix_401(*, start_time: int = START_MS, client_ip: str = GB_IP) -> Entry:
    """APISIX rejecting a call without a key: no consumer, no upstream, no upstream latency."""
    return {
        "request": {
            "url": "https://api.example.com:9443/v1/orders",
            "uri": "/v1/orders",
            "method": "GET",
            "headers": {"host": "api.example.com", "user-agent": "curl/8.6.0"},
            "querystring": {},
            "size": 78,
        },
        "response": {
            "status": 401,
            "headers": {"content-type": "text/plain; charset=utf-8", "server": "APISIX/3.9.0"},
            "size": 190,
        },
        "server": {"hostname": "apisix-6f9d5c7b8-2xkqv", "version": "3.9.0"},
        "service_id": "",
        "route_id": "422421849201183291",
        "client_ip": client_ip,
        "start_time": start_time,
        "latency": 1.0001659393311,
        "apisix_latency": 1.0001659393311,
    }


def apisix_no_route(*, start_time: int = START_MS) -> Entry:
    """No route matched: APISIX writes the request's Host into service_id."""
    return {
        "request": {
            "url": "http://api.example.com/nope",
            "uri": "/nope",
            "method": "GET",
            "headers": {"host": "api.example.com"},
            "querystring": {},
            "size": 60,
        },
        "response": {"status": 404, "headers": {}, "size": 230},
        "server": {"hostname": "apisix-6f9d5c7b8-2xkqv", "version": "3.9.0"},
        "service_id": "api.example.com",
        "route_id": "",
        "client_ip": US_IP,
        "start_time": start_time,
        "latency": 0.99992752075195,
        "apisix_latency": 0.99992752075195,
    }


def kong_200(*, started_at: int = START_MS, client_ip: str = US_IP) -> Entry:
    """Kong 3.8: proxied, apikey header, masked authorization, consumer and entities."""
    uri = "/v1/devices/77?limit=50"
    return {
        "request": {
            "id": "8f1e2d3c4b5a69788796a5b4c3d2e1f0",
            "uri": uri,
            "url": f"https://api.example.com:8443{uri}",
            "querystring": {"limit": "50"},
            "method": "GET",
            "headers": {
                "host": "api.example.com",
                "user-agent": "axios/1.6.8",
                "apikey": "umbr3llaIotKey0123456789abcdefgh",
                "authorization": "REDACTED",
            },
            "size": 281,
        },
        "upstream_uri": "/devices/77?limit=50",
        "response": {
            "status": 200,
            "headers": {
                "content-type": "application/json",
                "server": "uvicorn",
                "via": "1.1 kong/3.8.0",
                "x-kong-upstream-latency": "40",
            },
            "size": 1300,
        },
        "latencies": {"kong": 2, "proxy": 40, "request": 43, "receive": 1},
        "tries": [{"balancer_start": started_at + 2, "ip": "10.0.3.17", "port": 8080}],
        "client_ip": client_ip,
        "started_at": started_at,
        "route": {"id": "6c1f0a55-0d7e-4a3c-9a4c-1b2d3e4f5a6b", "name": "devices"},
        "service": {"id": "0b9c8d7e-6f5a-4b3c-2d1e-0f9a8b7c6d5e", "name": "iot-backend"},
        "consumer": {
            "id": "d1c2b3a4-0000-4000-8000-000000000001",
            "username": "umbrella-iot",
            "custom_id": "crm-00042",
        },
        "workspace_name": "default",
        "source": "upstream",
    }


def kong_401(*, started_at: int = START_MS, client_ip: str = DE_V6_IP) -> Entry:
    """Kong answering 401 itself: proxy latency -1, bearer masked as "REDACTED", key in query."""
    uri = "/v1/search?q=shoes&apikey=wr0ngGuessedKey0123456789abcdefg"
    return {
        "request": {
            "id": "0a1b2c3d4e5f60718293a4b5c6d7e8f9",
            "uri": uri,
            "url": f"https://api.example.com:8443{uri}",
            "querystring": {"q": "shoes", "apikey": "wr0ngGuessedKey0123456789abcdefg"},
            "method": "GET",
            "headers": {"host": "api.example.com", "authorization": "REDACTED"},
            "size": 140,
        },
        "upstream_uri": "/?q=shoes&apikey=wr0ngGuessedKey0123456789abcdefg",
        "response": {
            "status": 401,
            "headers": {"server": "kong/3.8.0", "www-authenticate": 'Key realm="kong"'},
            "size": 300,
        },
        "latencies": {"kong": 1, "proxy": -1, "request": 1, "receive": 0},
        "client_ip": client_ip,
        "started_at": started_at,
        "route": {"id": "7d2e1f00-1111-4222-8333-444455556666", "name": "search"},
        "service": {"id": "8e3f2a11-2222-4333-9444-555566667777", "name": "search-svc"},
        "source": "kong",
    }


def generic(**fields: Any) -> Entry:
    entry: Entry = {"user_id": "ledger-batch", "endpoint": "/v1/reports/export", "units": 3}
    entry["timestamp"] = START_MS
    entry.update(fields)
    return entry


def encode(value: Any, *, escape_slashes: bool = False) -> bytes:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if escape_slashes:
        text = text.replace("/", "\\/")
    return text.encode()
