"""Gateway log entries as the gateways write them, for the record, redaction and schema tests.

Each fixture describes its call once (``testkit.gateways.Call``) and lets that gateway's renderer
write it. Shapes follow APISIX kafka-logger ``get_full_log`` (3.9, 3.1 and 2.10) and Kong
``kong.log.serialize()`` (3.8). Every builder returns a fresh dict, so tests may mutate it.
"""

from __future__ import annotations

from typing import Any

from mmdb import DE_V6_IP, GB_IP, US_IP

from testkit import gateways
from testkit.gateways import Call
from testkit.gateways import encode as encode

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
    return gateways.apisix.render(
        Call(
            start_ms=start_time,
            method="GET",
            uri=uri,
            url=f"https://api.example.com:9443{uri}",
            query={"limit": "20", "expand": True, "status": ["open", "shipped"]},
            request_headers={
                "host": "api.example.com",
                "user-agent": "okhttp/4.12.0",
                "accept": ["application/json", "text/plain"],
                "x-request-id": "2f0c3b9e-7a41-4c55-9d1e-6b7f1a2c3d4e",
                "apikey": api_key,
            },
            request_size=312,
            status=200,
            response_headers={
                "content-type": "application/json",
                "content-length": "24",
                "server": "APISIX/3.9.0",
            },
            response_size=181,
            client_ip=client_ip,
            consumer=consumer,
            route_id="products-v1",
            service_id="catalog",
            upstream="10.0.3.17:8080",
            latency_ms=18.000047683716,
            upstream_latency_ms=15,
            gateway_latency_ms=3.000047683716,
            gateway_host="apisix-6f9d5c7b8-2xkqv",
            gateway_version="3.9.0",
        )
    )


def apisix_31(
    *, start_time: int = START_MS, api_key: str = "gl0bexMobileKey0123456789abcdefgh"
) -> Entry:
    """APISIX 3.1 (slashes escaped on the wire): key in the querystring, IPv6 client."""
    uri = f"/v1/orders?apikey={api_key}&limit=10"
    return gateways.apisix.render(
        Call(
            start_ms=start_time,
            method="POST",
            uri=uri,
            url=f"https://api.example.com:9443{uri}",
            query={"apikey": api_key, "limit": "10"},
            request_headers={"host": "api.example.com", "user-agent": "Go-http-client/2.0"},
            request_size=230,
            status=201,
            response_headers={"server": "APISIX/3.1.0"},
            response_size=96,
            client_ip=DE_V6_IP,
            consumer="globex-mobile",
            route_id="422421849201183291",
            service_id="",
            upstream="10.0.3.18:8080",
            latency_ms=120.99999904633,
            upstream_latency_ms=117,
            gateway_latency_ms=3.99999904633,
            gateway_host="apisix-legacy-0",
            gateway_version="3.1.0",
        )
    )


def apisix_210(
    *, start_time: int = START_MS, api_key: str = "1n1techBillingKey0123456789abcde"
) -> Entry:
    """APISIX 2.10: the whole consumer object (key-auth key included), no latency split.

    key-auth's ``hide_credentials`` removed the key header before the log phase, so the key is
    only in the consumer object.
    """
    return gateways.apisix.render(
        Call(
            start_ms=start_time,
            method="POST",
            uri="/v1/payments",
            url="https://api.example.com:9443/v1/payments",
            query={},
            request_headers={
                "host": "api.example.com",
                "user-agent": "python-requests/2.31.0",
                "content-type": "application/json",
            },
            request_size=402,
            request_body='{"amount":4200,"password":"canary-pw-0123456789"}',
            status=201,
            response_headers={"server": "APISIX/2.10.4"},
            response_size=133,
            client_ip=US_IP,
            consumer="initech-billing",
            route_id="payments",
            service_id="billing",
            upstream="10.0.4.21:8080",
            latency_ms=57.000112533569,
            gateway_host="gw-edge-eu-1",
            gateway_version="2.10.4",
            extra={"consumer": gateways.apisix.whole_consumer("initech-billing", api_key)},
        )
    )


def apisix_401(*, start_time: int = START_MS, client_ip: str = GB_IP) -> Entry:
    """APISIX rejecting a call without a key: no consumer, no upstream, no upstream latency."""
    return gateways.apisix.render(
        Call(
            start_ms=start_time,
            method="GET",
            uri="/v1/orders",
            url="https://api.example.com:9443/v1/orders",
            query={},
            request_headers={"host": "api.example.com", "user-agent": "curl/8.6.0"},
            request_size=78,
            status=401,
            response_headers={
                "content-type": "text/plain; charset=utf-8",
                "server": "APISIX/3.9.0",
            },
            response_size=190,
            client_ip=client_ip,
            route_id="422421849201183291",
            service_id="",
            latency_ms=1.0001659393311,
            gateway_latency_ms=1.0001659393311,
            gateway_host="apisix-6f9d5c7b8-2xkqv",
            gateway_version="3.9.0",
        )
    )


def apisix_no_route(*, start_time: int = START_MS) -> Entry:
    """No route matched: APISIX writes the request's Host into service_id."""
    return gateways.apisix.render(
        Call(
            start_ms=start_time,
            method="GET",
            uri="/nope",
            url="http://api.example.com/nope",
            query={},
            request_headers={"host": "api.example.com"},
            request_size=60,
            status=404,
            response_headers={},
            response_size=230,
            client_ip=US_IP,
            route_id="",
            service_id="api.example.com",
            latency_ms=0.99992752075195,
            gateway_latency_ms=0.99992752075195,
            gateway_host="apisix-6f9d5c7b8-2xkqv",
            gateway_version="3.9.0",
        )
    )


def kong_200(*, started_at: int = START_MS, client_ip: str = US_IP) -> Entry:
    """Kong 3.8: proxied, apikey header, masked authorization, consumer and entities."""
    uri = "/v1/devices/77?limit=50"
    return gateways.kong.render(
        Call(
            start_ms=started_at,
            method="GET",
            uri=uri,
            url=f"https://api.example.com:8443{uri}",
            query={"limit": "50"},
            request_headers={
                "host": "api.example.com",
                "user-agent": "axios/1.6.8",
                "apikey": "umbr3llaIotKey0123456789abcdefgh",
                "authorization": "REDACTED",
            },
            request_size=281,
            request_id="8f1e2d3c4b5a69788796a5b4c3d2e1f0",
            status=200,
            response_headers={
                "content-type": "application/json",
                "server": "uvicorn",
                "via": "1.1 kong/3.8.0",
                "x-kong-upstream-latency": "40",
            },
            response_size=1300,
            client_ip=client_ip,
            consumer="umbrella-iot",
            consumer_id="d1c2b3a4-0000-4000-8000-000000000001",
            route="devices",
            route_id="6c1f0a55-0d7e-4a3c-9a4c-1b2d3e4f5a6b",
            service="iot-backend",
            service_id="0b9c8d7e-6f5a-4b3c-2d1e-0f9a8b7c6d5e",
            latency_ms=43,
            upstream_latency_ms=40,
            gateway_latency_ms=2,
            extra={
                "upstream_uri": "/devices/77?limit=50",
                "tries": [{"balancer_start": started_at + 2, "ip": "10.0.3.17", "port": 8080}],
                "consumer": {"custom_id": "crm-00042"},
                "workspace_name": "default",
                "source": "upstream",
            },
        )
    )


def kong_401(*, started_at: int = START_MS, client_ip: str = DE_V6_IP) -> Entry:
    """Kong answering 401 itself: proxy latency -1, bearer masked as "REDACTED", key in query."""
    uri = "/v1/search?q=shoes&apikey=wr0ngGuessedKey0123456789abcdefg"
    return gateways.kong.render(
        Call(
            start_ms=started_at,
            method="GET",
            uri=uri,
            url=f"https://api.example.com:8443{uri}",
            query={"q": "shoes", "apikey": "wr0ngGuessedKey0123456789abcdefg"},
            request_headers={"host": "api.example.com", "authorization": "REDACTED"},
            request_size=140,
            request_id="0a1b2c3d4e5f60718293a4b5c6d7e8f9",
            status=401,
            response_headers={"server": "kong/3.8.0", "www-authenticate": 'Key realm="kong"'},
            response_size=300,
            client_ip=client_ip,
            route="search",
            route_id="7d2e1f00-1111-4222-8333-444455556666",
            service="search-svc",
            service_id="8e3f2a11-2222-4333-9444-555566667777",
            latency_ms=1,
            gateway_latency_ms=1,
            extra={
                "upstream_uri": "/?q=shoes&apikey=wr0ngGuessedKey0123456789abcdefg",
                "source": "kong",
            },
        )
    )


def generic(**fields: Any) -> Entry:
    """A generic usage event; ``fields`` replace or add members as given (any JSON value)."""
    call = Call(start_ms=START_MS, consumer="ledger-batch", uri="/v1/reports/export", units=3)
    entry = gateways.generic.render(call)
    entry.update(fields)
    return entry
