"""Realistic API-gateway access-log traffic for the usage pipeline.

Two modes share one set of payload builders:

* ``generate(scenario, seed)`` renders a scenario deterministically into Kafka record values plus
  the ground truth a correct job must reproduce: events per rate key and window, the compromised
  key and its attack windows, every planted secret and client IP, and the expected dead letters.
  Pure: no Kafka, no GeoIP database.
* ``run_live(...)`` (or ``python -m testkit.traffic``) produces the same shapes to Kafka in real
  time, with a compromised-key attack part-way through.

Payload shapes follow what the gateways really emit (see the gateway-format research notes):
APISIX kafka-logger full logs from ``log-util.lua`` ``get_full_log`` in 3.9.0, 3.1.0 (``\\/``
escaped slashes) and 2.10.4 (whole consumer object with its key, no latency split), batched as
JSON arrays in completion order; Kong ``kong.log.serialize()`` objects and arrays; and flat
generic usage events. This module draws each call and its deployment details; the renderers of
``testkit.gateways`` write it in its gateway's format.
"""

from __future__ import annotations

import argparse
import heapq
import ipaddress
import itertools
import json
import math
import random
import signal
import string
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email.utils import formatdate
from typing import Any, Final, Literal, Protocol

from testkit import gateways
from testkit.gateways import Call, encode

AuthStyle = Literal["apikey-header", "apikey-query", "bearer"]
Gateway = Literal["apisix", "kong", "generic"]
Entry = dict[str, Any]

REASON_NOT_UTF8: Final = "not_utf8"
REASON_NOT_JSON: Final = "not_json"
REASON_WRONG_TYPE: Final = "wrong_type"
REASON_INVALID_EVENT: Final = "invalid_event"
REASON_MISSING_EVENT_TIME: Final = "missing_event_time"
REASON_TOO_DEEP: Final = "too_deep"
REASON_EMPTY_BATCH: Final = "empty_batch"

STEADY_SPREAD: Final = 0.2
"""Steady consumers stay within mean ± 20 % per window, so they never look like a spike."""

ATTACK_MULTIPLIER: Final = 15
SCENARIO_LEARN_MINUTES: Final = 0.5
"""How long the detector learns a key before its baseline rules fire, where the scenario runs
(tests, the demo): 3 windows in the baseline, which the detector has once it also holds back
its latest windows (metering.detect.RECENT_WINDOWS), by the scenario's attack window (8); the
job's default learns 30 minutes (metering.baseline)."""
SCENARIO_JOB_FLAGS: Final = ("--baseline-learn-minutes", f"{SCENARIO_LEARN_MINUTES:g}")
TOO_DEEP_LEVELS: Final = 5000

_URLSAFE: Final = string.ascii_letters + string.digits + "-_"
_API_HOST: Final = "api.example.com"


def new_api_key(rng: random.Random, length: int = 32) -> str:
    """A secret-looking url-safe token (drawn from ``rng``, so scenarios stay reproducible)."""
    return "".join(rng.choice(_URLSAFE) for _ in range(length))


# --------------------------------------------------------------------------------------------
# Scenario model
# --------------------------------------------------------------------------------------------


@dataclass
class Consumer:
    """One API consumer with a steady request rate from a fixed set of home addresses.

    ``gateway="generic"`` consumers emit flat usage events, which carry neither key nor IP, so
    their ``home_ips`` may be empty.
    """

    name: str
    api_key: str
    auth_style: AuthStyle
    home_ips: list[str]
    gateway: Gateway
    mean_per_window: int


@dataclass
class Attack:
    """The victim's key used from ``attacker_ips`` for ``windows`` windows from ``first_window``."""

    victim: str
    first_window: int
    attacker_ips: list[str]
    requests_per_window: int
    windows: int = 2


@dataclass
class AuthFailureBurst:
    """Credential stuffing: ``count`` 401s with wrong keys inside a few seconds of one window.

    ``missing_key`` adds 401s that present no credential at all (counted per client IP).
    """

    client_ips: list[str]
    window: int
    count: int
    missing_key: int = 0


@dataclass
class Scenario:
    consumers: list[Consumer]
    windows: int
    start_ms: int
    window_ms: int = 10_000
    attack: Attack | None = None
    auth_failures: AuthFailureBurst | None = None
    bad_records: bool = False

    def __post_init__(self) -> None:
        if self.window_ms <= 0 or self.windows <= 0:
            raise ValueError("window_ms and windows must be positive")
        if self.start_ms % self.window_ms:
            raise ValueError("start_ms must be aligned to window_ms")
        if not self.consumers:
            raise ValueError("a scenario needs at least one consumer")
        names = [c.name for c in self.consumers]
        if len(set(names)) != len(names):
            raise ValueError("consumer names must be unique")
        for c in self.consumers:
            if c.mean_per_window < 1:
                raise ValueError(f"{c.name}: mean_per_window must be >= 1")
            if c.gateway != "generic" and not c.home_ips:
                raise ValueError(f"{c.name}: gateway consumers need at least one home IP")
            # Every home address must fit into the first window, or a later window would
            # introduce a country the baseline never saw.
            if len(c.home_ips) > _steady_bounds(c.mean_per_window)[0]:
                raise ValueError(f"{c.name}: more home IPs than requests in a quiet window")
        if self.attack is not None:
            a = self.attack
            victim = self.consumer(a.victim)
            if victim.gateway == "generic":
                raise ValueError("the attack victim must sit behind a gateway")
            if a.windows < 1 or a.first_window < 0 or a.first_window + a.windows > self.windows:
                raise ValueError("attack windows must lie inside the scenario")
            if not a.attacker_ips or set(a.attacker_ips) & set(victim.home_ips):
                raise ValueError("attacker IPs must be given and differ from the victim's")
            if a.requests_per_window < 1:
                raise ValueError("attack requests_per_window must be >= 1")
        if self.auth_failures is not None:
            b = self.auth_failures
            if not 0 <= b.window < self.windows or not b.client_ips:
                raise ValueError("auth-failure burst needs client IPs and a window in range")
            if b.count < 0 or b.missing_key < 0:
                raise ValueError("auth-failure counts must be >= 0")

    def consumer(self, name: str) -> Consumer:
        for c in self.consumers:
            if c.name == name:
                return c
        raise KeyError(name)

    def window_start(self, index: int) -> int:
        return self.start_ms + index * self.window_ms

    def attack_window_indexes(self) -> list[int]:
        if self.attack is None:
            return []
        return list(range(self.attack.first_window, self.attack.first_window + self.attack.windows))


@dataclass
class GroundTruth:
    """What a correct job must report for a generated scenario.

    ``per_key_window`` maps ``(rate_key, window_start_ms)`` to a request count. The rate key is
    the consumer username when the gateway identified one (generic events: ``user_id`` or
    ``consumer``), else ``"client:<raw client ip>"``: unidentified requests are all rejected
    ones, which the job counts per client. (The job uses ``"key:<fingerprint>"`` only for
    unidentified calls that were not rejected, which this generator does not produce.)
    """

    events: int
    per_key_window: dict[tuple[str, int], int]
    attacked_key: str | None
    attack_windows: list[int]
    secrets: set[str]
    client_ips: set[str]
    dead_letters: int
    dead_letter_reasons: Counter[str]
    events_by_source: Counter[str]
    max_out_of_order_ms: int
    """Largest event-time lateness against the maximum seen so far, in produce order."""


@dataclass
class Generated:
    records: list[bytes]
    truth: GroundTruth


# --------------------------------------------------------------------------------------------
# Gateway deployment (static facts the renderer draws from)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ApisixNode:
    hostname: str
    version: str
    workers: int
    weight: int


@dataclass(frozen=True)
class _ApisixRoute:
    route_id: str
    service_id: str
    prefix: str
    batch_max_size: int
    weight: int
    include_bodies: bool = False


@dataclass(frozen=True)
class _KongNode:
    hostname: str
    max_batch_size: int


@dataclass(frozen=True)
class _KongRoute:
    name: str
    prefix: str
    service_name: str
    service_host: str
    service_path: str


_APISIX_NODES: Final = (
    _ApisixNode("apisix-6f9d5c7b8-2xkqv", "3.9.0", workers=2, weight=6),
    _ApisixNode("apisix-legacy-0", "3.1.0", workers=2, weight=3),
    _ApisixNode("gw-edge-eu-1", "2.10.4", workers=1, weight=2),
)
_APISIX_ROUTES: Final = (
    _ApisixRoute("422421849201183291", "", "/v1/orders", 50, weight=5),
    _ApisixRoute("products-v1", "catalog", "/v1/products", 50, weight=4),
    # batch_max_size 1: one Kafka record per request, a bare object instead of an array.
    _ApisixRoute("payments", "billing", "/v1/payments", 1, weight=1, include_bodies=True),
)
_KONG_NODES: Final = (
    _KongNode("kong-dp-7c9b6d5f4-h8x2p", max_batch_size=1),
    _KongNode("kong-dp-7c9b6d5f4-q4m7z", max_batch_size=10),
)
_KONG_ROUTES: Final = (
    _KongRoute("devices", "/v1/devices", "iot-backend", "iot.svc.cluster.local", "/devices"),
    _KongRoute("search", "/v1/search", "search-svc", "search.svc.cluster.local", "/"),
)
_UPSTREAMS: Final = ("10.0.3.17:8080", "10.0.3.18:8080", "10.0.4.21:8080")
_USER_AGENTS: Final = (
    "python-requests/2.31.0",
    "okhttp/4.12.0",
    "Go-http-client/2.0",
    "curl/8.6.0",
    "axios/1.6.8",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0",
)
_GENERIC_ENDPOINTS: Final = ("/v1/reports/export", "/v1/reports/render", "/v1/ocr/pages")
_FLUSH_AGE_MS: Final = 1_000
_APISIX_MAX_BATCH: Final = 50


# --------------------------------------------------------------------------------------------
# Requests, rendering and batching
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Request:
    source: Gateway
    client_ip: str | None
    start_ms: int
    consumer: Consumer | None
    """The consumer the gateway identified; None when it rejected the call."""
    key: str | None
    style: AuthStyle

    @property
    def rate_key(self) -> str:
        if self.consumer is not None:
            return self.consumer.name
        # Every unidentified request here was rejected (401): the job counts rejected calls by
        # client, whatever key they presented, so that key guessing shows up as one burst.
        return f"client:{self.client_ip}"


@dataclass
class _Item:
    entry: Any
    event_ms: int
    rate_key: str | None
    """None for an element that must be dead-lettered."""
    source: str


@dataclass(frozen=True)
class _Sink:
    """One batch buffer: a route's plugin instance in one worker (APISIX) or one Kong queue."""

    name: str
    max_entries: int
    escape_slashes: bool = False


@dataclass
class _Record:
    emit_ms: int
    seq: int
    value: bytes
    items: list[_Item]


# evaluation.endtoend encodes its records under this name.
_encode = encode


def _cjson_number(value: float) -> int | float:
    # lua-cjson prints 14 significant digits and integral doubles without a fraction.
    rounded = float(f"{value:.14g}")
    return int(rounded) if rounded.is_integer() else rounded


def _elapsed_ms(start_ms: int, total_ms: int) -> float:
    # nginx keeps time as float seconds with ms resolution; subtracting two of those and scaling
    # back reproduces the binary noise of real payloads (1200.0000476837).
    return ((start_ms + total_ms) / 1000 - start_ms / 1000) * 1000


def _cjson_order(value: Any, rng: random.Random) -> Any:
    # lua-cjson walks Lua tables in hash order, so key order differs from entry to entry.
    if isinstance(value, dict):
        keys = list(value)
        rng.shuffle(keys)
        return {k: _cjson_order(value[k], rng) for k in keys}
    if isinstance(value, list):
        return [_cjson_order(v, rng) for v in value]
    return value


def _querystring(args: Sequence[tuple[str, str | None]]) -> dict[str, Any]:
    # OpenResty get_uri_args(): valueless arg -> true, repeated name -> array.
    qs: dict[str, Any] = {}
    for name, raw in args:
        value: Any = True if raw is None else raw
        if name not in qs:
            qs[name] = value
        elif isinstance(qs[name], list):
            qs[name].append(value)
        else:
            qs[name] = [qs[name], value]
    return qs


def _request_uri(path: str, args: Sequence[tuple[str, str | None]]) -> str:
    if not args:
        return path
    return path + "?" + "&".join(n if v is None else f"{n}={v}" for n, v in args)


def _http_date(ms: int) -> str:
    return formatdate(ms / 1000, usegmt=True)


def _header_bytes(headers: Mapping[str, Any]) -> int:
    total = 0
    for name, value in headers.items():
        for v in value if isinstance(value, list) else [value]:
            total += len(name) + len(str(v).encode()) + 4
    return total


class _Renderer:
    """Turns requests into gateway log entries and remembers every secret and IP it planted."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.secrets: set[str] = set()
        self.client_ips: set[str] = set()
        self._sinks: dict[str, _Sink] = {}
        self._user_agents: dict[str, str] = {}
        # Kong entity ids are fixed for a deployment, so they are drawn once up front.
        self._workspace = self._uuid()
        self._kong_entities = {r.name: (self._uuid(), self._uuid()) for r in _KONG_ROUTES}
        self._kong_consumers: dict[str, tuple[str, str, int]] = {}

    # -- small draws ---------------------------------------------------------------------------

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def secret(self, prefix: str = "", length: int = 32) -> str:
        value = prefix + new_api_key(self.rng, length)
        self.secrets.add(value)
        return value

    def _user_agent(self, req: _Request) -> str:
        who = req.consumer.name if req.consumer is not None else f"anon:{req.client_ip}"
        if who not in self._user_agents:
            self._user_agents[who] = self.rng.choice(_USER_AGENTS)
        return self._user_agents[who]

    def _upstream_ms(self) -> int:
        roll = self.rng.random()
        if roll < 0.85:
            return self.rng.randint(4, 120)
        if roll < 0.97:
            return self.rng.randint(120, 900)
        return self.rng.randint(900, 2500)

    def _sink(self, name: str, max_entries: int, escape_slashes: bool = False) -> _Sink:
        if name not in self._sinks:
            self._sinks[name] = _Sink(name, max_entries, escape_slashes)
        return self._sinks[name]

    # -- shared request parts ------------------------------------------------------------------

    def _path_and_args(
        self, prefix: str, method: str, req: _Request
    ) -> tuple[str, list[tuple[str, str | None]]]:
        rng = self.rng
        path = prefix
        if method == "GET" and rng.random() < 0.4:
            path = f"{prefix}/{rng.randint(1000, 99999)}"
        args: list[tuple[str, str | None]] = []
        # Ordinary args only: names such as "key" or "token" would themselves read as credentials.
        if method == "GET":
            if rng.random() < 0.5:
                args.append(("limit", rng.choice(["10", "20", "50"])))
            if rng.random() < 0.15:
                args.append(("expand", None))
            if rng.random() < 0.1:
                args += [("status", "open"), ("status", "shipped")]
            if rng.random() < 0.05:
                args.append(("cursor", ""))
        if req.key is not None and req.style == "apikey-query":
            args.insert(rng.randint(0, len(args)), ("apikey", req.key))
        return path, args

    def _request_headers(self, req: _Request, host: str, *, kong: bool) -> dict[str, Any]:
        rng = self.rng
        headers: dict[str, Any] = {"host": host, "user-agent": self._user_agent(req)}
        headers["accept"] = (
            ["application/json", "text/plain"] if rng.random() < 0.08 else "application/json"
        )
        headers["x-request-id"] = self._uuid()
        if rng.random() < 0.25 and req.client_ip is not None:
            headers["x-forwarded-for"] = req.client_ip
        if req.key is not None:
            if req.style == "apikey-header":
                headers["apikey"] = req.key
            elif req.style == "bearer":
                # Kong's serializer masks authorization itself; APISIX logs it verbatim.
                headers["authorization"] = "REDACTED" if kong else f"Bearer {req.key}"
        if rng.random() < 0.1:
            session = self.secret()
            if rng.random() < 0.5:
                headers["cookie"] = f"session={session}; theme=dark"
            else:
                headers["cookie"] = [f"session={session}", f"jwt={self.secret('eyJ', 40)}"]
        if rng.random() < 0.04:
            headers["x-client-name"] = "Müller Datenanalyse GmbH"
        return headers

    # -- APISIX --------------------------------------------------------------------------------

    def apisix(self, req: _Request) -> tuple[_Sink, Entry, int]:
        rng = self.rng
        node = rng.choices(_APISIX_NODES, weights=[n.weight for n in _APISIX_NODES])[0]
        routes = _APISIX_ROUTES if req.consumer is not None else _APISIX_ROUTES[:2]
        route = rng.choices(routes, weights=[r.weight for r in routes])[0]
        worker = rng.randrange(node.workers)
        entry, done = self.apisix_entry(req, node, route)
        batched = route.batch_max_size != 1
        sink = self._sink(
            f"apisix/{node.hostname}/{worker}/{route.route_id}",
            _APISIX_MAX_BATCH if batched else 1,
            gateways.apisix.escapes_slashes(node.version),
        )
        return sink, entry, done

    def apisix_entry(
        self, req: _Request, node: _ApisixNode, route: _ApisixRoute
    ) -> tuple[Entry, int]:
        rng = self.rng
        if req.client_ip is not None:
            self.client_ips.add(req.client_ip)
        rejected = req.consumer is None
        if route.include_bodies:
            method = "POST" if rng.random() < 0.85 else "GET"
        else:
            method = "POST" if rng.random() < 0.15 else "GET"
        path, args = self._path_and_args(route.prefix, method, req)
        uri = _request_uri(path, args)
        headers = self._request_headers(req, _API_HOST, kong=False)
        body = None
        if method == "POST" and route.include_bodies:
            body = (
                f'{{"amount":{rng.randint(100, 99999)},"password":"{self.secret("canary-", 24)}"}}'
            )
        if body is not None:
            headers["content-type"] = "application/json"
            headers["content-length"] = str(len(body))
        request_size = len(f"{method} {uri} HTTP/1.1\r\n") + _header_bytes(headers) + 2
        request_size += len(body or "")

        upstream_ms: int | None = None
        upstream: str | None = None
        resp_body: str | None = None
        if rejected:
            status = 401
            gateway_ms = rng.randint(0, 2)
            message = "Missing API key in request" if req.key is None else "Invalid API key"
            payload = f'{{"message":"{message}"}}'
        else:
            upstream_ms = self._upstream_ms()
            gateway_ms = rng.randint(0, 4)
            roll = rng.random()
            if roll < 0.02:
                # A failed first try: nginx reports every upstream it contacted.
                status = 502
                upstream = ", ".join(rng.sample(_UPSTREAMS, 2))
            else:
                status = 404 if roll < 0.05 else (201 if method == "POST" else 200)
                upstream = rng.choice(_UPSTREAMS)
            payload = '{"items":[],"next":null}' if method == "GET" else '{"id":"ord_1"}'
            if route.include_bodies and status < 300:
                payment = f"pay_{rng.getrandbits(48):x}"
                resp_body = f'{{"id":"{payment}","client_secret":"{self.secret("pi_", 24)}"}}'
                payload = resp_body
        total_ms = gateway_ms + (upstream_ms or 0)
        latency = _elapsed_ms(req.start_ms, total_ms)
        resp_headers: dict[str, Any] = {
            "content-type": "text/plain; charset=utf-8" if rejected else "application/json",
            "content-length": str(len(payload)),
            "connection": rng.choice(["close", "keep-alive"]),
            "date": _http_date(req.start_ms + total_ms),
            "server": f"APISIX/{node.version}",
        }
        if not rejected and rng.random() < 0.1:
            resp_headers["vary"] = ["Accept-Encoding", "Origin"]
        if not rejected and rng.random() < 0.06:
            cookie = f"sid={self.secret()}; Path=/; HttpOnly; Secure"
            resp_headers["set-cookie"] = (
                [cookie, "consent=1; Path=/"] if rng.random() < 0.5 else cookie
            )
        extra: Entry = {}
        if req.consumer is not None and gateways.apisix.logs_whole_consumer(node.version):
            extra["consumer"] = gateways.apisix.whole_consumer(
                req.consumer.name, req.consumer.api_key
            )
        call = Call(
            start_ms=req.start_ms,
            method=method,
            uri=uri,
            url=f"https://{_API_HOST}:9443{uri}",
            query=_querystring(args),
            request_headers=headers,
            request_size=request_size,
            request_body=body,
            status=status,
            response_headers=resp_headers,
            response_size=len(payload) + _header_bytes(resp_headers) + 17,
            response_body=resp_body,
            client_ip=req.client_ip,
            consumer=req.consumer.name if req.consumer is not None else None,
            route_id=route.route_id,
            service_id=route.service_id,
            upstream=upstream,
            latency_ms=_cjson_number(latency),
            upstream_latency_ms=upstream_ms,
            gateway_latency_ms=_cjson_number(max(0.0, latency - (upstream_ms or 0))),
            gateway_host=node.hostname,
            gateway_version=node.version,
            extra=extra,
        )
        entry = gateways.apisix.render(call)
        return _cjson_order(entry, rng), req.start_ms + math.ceil(latency)

    # -- Kong ----------------------------------------------------------------------------------

    def _kong_consumer(self, consumer: Consumer) -> tuple[str, str, int]:
        if consumer.name not in self._kong_consumers:
            created = 1_700_000_000 + self.rng.randrange(10_000_000)
            self._kong_consumers[consumer.name] = (self._uuid(), self._uuid(), created)
        return self._kong_consumers[consumer.name]

    def kong(self, req: _Request) -> tuple[_Sink, Entry, int]:
        node = self.rng.choice(_KONG_NODES)
        route = self.rng.choice(_KONG_ROUTES)
        entry, done = self.kong_entry(req, route)
        return self._sink(f"kong/{node.hostname}", node.max_batch_size), entry, done

    def kong_entry(self, req: _Request, route: _KongRoute) -> tuple[Entry, int]:
        rng = self.rng
        if req.client_ip is not None:
            self.client_ips.add(req.client_ip)
        rejected = req.consumer is None
        method = "POST" if rng.random() < 0.1 else "GET"
        path, args = self._path_and_args(route.prefix, method, req)
        uri = _request_uri(path, args)
        headers = self._request_headers(req, _API_HOST, kong=True)
        request_id = f"{rng.getrandbits(128):032x}"
        route_id, service_id = self._kong_entities[route.name]
        # strip_path: the upstream sees the service path plus whatever followed the route
        # prefix, and Kong appends the raw query string (credentials included).
        upstream_path = (route.service_path.rstrip("/") + path[len(route.prefix) :]) or "/"
        upstream_uri = upstream_path + (uri[len(path) :] if args else "")
        kong_ms = rng.randint(0, 3)
        receive_ms = rng.randint(0, 1)
        extra: Entry = {
            "upstream_uri": upstream_uri,
            "workspace": self._workspace,
            "workspace_name": "default",
            "route": {
                "paths": [route.prefix],
                "protocols": ["http", "https"],
                "methods": ["GET", "POST"],
                "strip_path": True,
                "preserve_host": False,
                "regex_priority": 0,
                "path_handling": "v0",
                "https_redirect_status_code": 426,
                "request_buffering": True,
                "response_buffering": True,
                "service": {"id": service_id},
                "ws_id": self._workspace,
                "created_at": 1_726_782_477,
                "updated_at": 1_726_782_477,
                "tags": ["public-api"],
            },
            "service": {
                "host": route.service_host,
                "port": 8080,
                "protocol": "http",
                "path": route.service_path,
                "retries": 5,
                "connect_timeout": 60000,
                "read_timeout": 60000,
                "write_timeout": 60000,
                "enabled": True,
                "ws_id": self._workspace,
                "created_at": 1_726_782_459,
                "updated_at": 1_726_782_459,
            },
        }
        consumer: Consumer | None = None
        consumer_id: str | None = None
        upstream_ms: int | None = None
        if rejected:
            total = kong_ms + receive_ms
            body = '{"message":"No API key found in request"}'
            if req.key is not None:
                body = '{"message":"Unauthorized"}'
            status = 401
            resp_headers: dict[str, Any] = {
                "content-type": "application/json; charset=utf-8",
                "content-length": str(len(body)),
                "date": _http_date(req.start_ms + total),
                "connection": "keep-alive",
                "www-authenticate": 'Key realm="kong"',
                "server": "kong/3.8.0",
                "x-kong-response-latency": str(kong_ms),
                "x-kong-request-id": request_id,
            }
            resp_size = len(body) + 260
            # Kong answered itself: no upstream try, source "kong".
            extra["upstream_status"] = ""
            extra["source"] = "kong"
        else:
            assert req.consumer is not None
            consumer = req.consumer
            upstream_ms = self._upstream_ms()
            total = kong_ms + upstream_ms + receive_ms
            retried = rng.random() < 0.02
            upstream_ip = rng.choice(_UPSTREAMS).split(":")[0]
            status = 201 if method == "POST" else (404 if rng.random() < 0.03 else 200)
            body_len = rng.randint(60, 4000)
            resp_headers = {
                "content-type": "application/json",
                "content-length": str(body_len),
                "date": _http_date(req.start_ms + total),
                "connection": "keep-alive",
                "server": "uvicorn",
                "via": "1.1 kong/3.8.0",
                "x-kong-upstream-latency": str(upstream_ms),
                "x-kong-proxy-latency": str(kong_ms),
                "x-kong-request-id": request_id,
            }
            resp_size = body_len + 320
            start = req.start_ms + kong_ms
            tries: list[Entry] = []
            if retried:
                tries.append(
                    {
                        "balancer_start": start,
                        "ip": "10.0.4.21",
                        "port": 8080,
                        "balancer_latency": 0,
                        "state": "next",
                        "code": 502,
                    }
                )
            tries.append(
                {
                    "balancer_start": start,
                    "balancer_start_ns": float(f"{start * 1e6 + rng.randrange(10**6):.14g}"),
                    "ip": upstream_ip,
                    "port": 8080,
                    "balancer_latency": 0,
                    "balancer_latency_ns": rng.randint(9_000, 60_000),
                }
            )
            extra["tries"] = tries
            extra["upstream_status"] = f"502, {status}" if retried else str(status)
            extra["source"] = "upstream"
            consumer_id, credential_id, created = self._kong_consumer(consumer)
            extra["consumer"] = {
                "custom_id": f"crm-{created % 100_000:05d}",
                "created_at": created,
                "updated_at": created,
                "type": 0,
                "tags": ["partner"],
            }
            extra["authenticated_entity"] = {"id": credential_id, "consumer_id": consumer_id}
        call = Call(
            start_ms=req.start_ms,
            method=method,
            uri=uri,
            url=f"https://{_API_HOST}:8443{uri}",
            query=_querystring(args),
            request_headers=headers,
            request_size=len(f"{method} {uri} HTTP/1.1\r\n") + _header_bytes(headers) + 2,
            status=status,
            response_headers=resp_headers,
            response_size=resp_size,
            client_ip=req.client_ip,
            consumer=consumer.name if consumer is not None else None,
            consumer_id=consumer_id,
            request_id=request_id,
            route=route.name,
            route_id=route_id,
            service=route.service_name,
            service_id=service_id,
            latency_ms=total,
            upstream_latency_ms=upstream_ms,
            gateway_latency_ms=kong_ms,
            extra=extra,
        )
        return _cjson_order(gateways.kong.render(call), rng), req.start_ms + total

    # -- generic usage events ------------------------------------------------------------------

    def _iso(self, ms: int) -> str:
        offset = self.rng.choice([0, 0, 2, -5, 5.5])
        tz = UTC if offset == 0 else timezone(timedelta(hours=offset))
        # Integer arithmetic: ms / 1000 as a float can land a millisecond early.
        moment = datetime.fromtimestamp(ms // 1000, tz) + timedelta(milliseconds=ms % 1000)
        text = moment.isoformat(timespec="milliseconds")
        if offset == 0 and self.rng.random() < 0.5:
            text = text.replace("+00:00", "Z")
        return text

    def generic(self, req: _Request) -> tuple[_Sink, Entry, int]:
        assert req.consumer is not None
        rng = self.rng
        who: Literal["user_id", "consumer"] = "consumer" if rng.random() < 0.3 else "user_id"
        endpoint = rng.choice(_GENERIC_ENDPOINTS)
        units = rng.randint(1, 5)
        as_text = rng.random() < 0.5
        call = Call(
            start_ms=req.start_ms,
            consumer=req.consumer.name,
            uri=endpoint,
            units=units,
            extra={"timestamp": self._iso(req.start_ms)} if as_text else {},
        )
        event = gateways.generic.render(call, consumer_field=who)
        # Usage events are emitted once the work is billed, a little after it started.
        return self._sink("generic", 1), event, req.start_ms + rng.randint(20, 600)

    def render(self, req: _Request) -> tuple[_Sink, _Item, int]:
        if req.source == "apisix":
            sink, entry, done = self.apisix(req)
        elif req.source == "kong":
            sink, entry, done = self.kong(req)
        elif req.source == "generic":
            sink, entry, done = self.generic(req)
        else:
            raise ValueError(f"no deployment of {req.source!r} to draw calls from")
        return sink, _Item(entry, req.start_ms, req.rate_key, req.source), done


class _Engine:
    """Gateway-side batching: entries join their buffer on completion, not in start order.

    A buffer is flushed when it holds ``max_entries`` or its first entry is ``_FLUSH_AGE_MS``
    old, like the APISIX batch processor and Kong's queue. Records come out in flush order.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[int, int, _Sink, _Item]] = []
        self._buffers: dict[str, tuple[_Sink, int, list[_Item]]] = {}
        self._seq = 0

    def submit(self, sink: _Sink, item: _Item, done_ms: int) -> None:
        self._seq += 1
        heapq.heappush(self._pending, (done_ms, self._seq, sink, item))

    def _record(self, emit_ms: int, sink: _Sink, items: list[_Item]) -> _Record:
        self._seq += 1
        entries = [i.entry for i in items]
        value = entries[0] if sink.max_entries == 1 else entries
        return _Record(emit_ms, self._seq, encode(value, escape_slashes=sink.escape_slashes), items)

    def _expire(self, now_ms: int, out: list[_Record]) -> None:
        due = [
            (first + _FLUSH_AGE_MS, name)
            for name, (_, first, _) in self._buffers.items()
            if first + _FLUSH_AGE_MS <= now_ms
        ]
        for deadline, name in sorted(due):
            sink, _, items = self._buffers.pop(name)
            out.append(self._record(deadline, sink, items))

    def advance(self, now_ms: int) -> list[_Record]:
        """Every record a gateway would have sent by ``now_ms``, in send order."""
        out: list[_Record] = []
        while self._pending and self._pending[0][0] <= now_ms:
            done, _, sink, item = heapq.heappop(self._pending)
            self._expire(done, out)
            if sink.max_entries == 1:
                out.append(self._record(done, sink, [item]))
                continue
            _, _, items = self._buffers.setdefault(sink.name, (sink, done, []))
            items.append(item)
            if len(items) >= sink.max_entries:
                del self._buffers[sink.name]
                out.append(self._record(done, sink, items))
        self._expire(now_ms, out)
        out.sort(key=lambda r: (r.emit_ms, r.seq))
        return out

    def drain(self) -> list[_Record]:
        return self.advance(sys.maxsize)


# --------------------------------------------------------------------------------------------
# Unusable records
# --------------------------------------------------------------------------------------------

BAD_RECORD_KINDS: Final = (
    "not_utf8",
    "not_json",
    "wrong_type_number",
    "wrong_type_string",
    "status_list",
    "missing_start_time",
    "too_deep",
    "empty_batch",
    "mixed_batch",
)


@dataclass
class _Bad:
    value: bytes
    reasons: list[str]
    good: list[_Item]


def _bad_record(kind: str, renderer: _Renderer, consumers: Sequence[Consumer], at_ms: int) -> _Bad:
    """One unusable record; secrets in it take the forms real broken payloads would have."""
    node, route = _APISIX_NODES[0], _APISIX_ROUTES[0]
    # These are APISIX-shaped, so they use consumers that really sit behind APISIX if any do.
    consumers = [c for c in consumers if c.gateway == "apisix"] or list(consumers)
    if kind == "not_utf8":
        # The realistic way to get invalid UTF-8: a Latin-1 encoder somewhere upstream.
        req = _Request(
            "apisix", _home_ip(consumers, 0), at_ms, None, renderer.secret(), "apikey-header"
        )
        entry, _ = renderer.apisix_entry(req, node, route)
        entry["request"]["headers"]["x-client-name"] = "Müller Datenanalyse GmbH"
        text = json.dumps(entry, ensure_ascii=False, separators=(",", ":"))
        return _Bad(text.encode("latin-1"), [REASON_NOT_UTF8], [])
    if kind == "not_json":
        return _Bad(f"apikey={renderer.secret()} garbage{{".encode(), [REASON_NOT_JSON], [])
    if kind == "wrong_type_number":
        return _Bad(b"42", [REASON_WRONG_TYPE], [])
    if kind == "wrong_type_string":
        return _Bad(encode(f"Bearer {renderer.secret()}"), [REASON_WRONG_TYPE], [])
    if kind in ("status_list", "missing_start_time"):
        c = consumers[0]
        req = _Request("apisix", _home_ip(consumers, 0), at_ms, c, c.api_key, c.auth_style)
        entry, _ = renderer.apisix_entry(req, node, route)
        if kind == "status_list":
            entry["response"]["status"] = [200]
            return _Bad(encode(entry), [REASON_INVALID_EVENT], [])
        del entry["start_time"]
        return _Bad(encode(entry), [REASON_MISSING_EVENT_TIME], [])
    if kind == "too_deep":
        inner = encode(f"apikey={renderer.secret()}")
        return _Bad(b"[" * TOO_DEEP_LEVELS + inner + b"]" * TOO_DEEP_LEVELS, [REASON_TOO_DEEP], [])
    if kind == "empty_batch":
        return _Bad(b"[]", [REASON_EMPTY_BATCH], [])
    if kind == "mixed_batch":
        good: list[_Item] = []
        entries: list[Entry] = []
        for i in range(3):
            c = consumers[i % len(consumers)]
            ip = _home_ip(consumers, i % len(consumers))
            req = _Request("apisix", ip, at_ms + 100 * i, c, c.api_key, c.auth_style)
            entry, _ = renderer.apisix_entry(req, node, route)
            if i == 1:
                entry["response"]["status"] = {"code": 200}
            else:
                good.append(_Item(entry, req.start_ms, req.rate_key, "apisix"))
            entries.append(entry)
        return _Bad(encode(entries), [REASON_INVALID_EVENT], good)
    raise ValueError(f"unknown bad record kind {kind!r}")


def _home_ip(consumers: Sequence[Consumer], index: int) -> str:
    # Bad records reuse a known home address, so they never introduce a new country.
    return consumers[index].home_ips[0]


def _gateway_consumers(consumers: Sequence[Consumer]) -> list[Consumer]:
    return [c for c in consumers if c.gateway != "generic"]


# --------------------------------------------------------------------------------------------
# Deterministic generation
# --------------------------------------------------------------------------------------------


def _steady_bounds(mean: int) -> tuple[int, int]:
    low = max(1, math.ceil(mean * (1 - STEADY_SPREAD)))
    return low, max(low, math.floor(mean * (1 + STEADY_SPREAD)))


def _steady_count(rng: random.Random, mean: int) -> int:
    low, high = _steady_bounds(mean)
    return min(high, max(low, round(rng.triangular(low, high, mean))))


def _plan(scenario: Scenario, rng: random.Random, renderer: _Renderer) -> list[_Request]:
    reqs: list[_Request] = []
    span = scenario.window_ms
    attack = scenario.attack
    attacked = set(scenario.attack_window_indexes())
    burst = scenario.auth_failures
    for w in range(scenario.windows):
        base = scenario.window_start(w)
        for c in scenario.consumers:
            n = _steady_count(rng, c.mean_per_window)
            ips: list[str | None]
            if not c.home_ips:
                ips = [None] * n
            else:
                # Window 0 shows every home address, so no later window adds a new country.
                ips = list(c.home_ips) if w == 0 else []
                ips += [rng.choice(c.home_ips) for _ in range(n - len(ips))]
            for ip in ips:
                start = base + rng.randrange(span)
                reqs.append(_Request(c.gateway, ip, start, c, c.api_key, c.auth_style))
        if attack is not None and w in attacked:
            victim = scenario.consumer(attack.victim)
            for i in range(attack.requests_per_window):
                ip = attack.attacker_ips[i % len(attack.attacker_ips)]
                start = base + rng.randrange(span)
                reqs.append(
                    _Request(victim.gateway, ip, start, victim, victim.api_key, victim.auth_style)
                )
        if burst is not None and w == burst.window:
            reqs += _burst_requests(burst, base, span, rng, renderer)
    reqs.sort(key=lambda r: r.start_ms)
    return reqs


def _burst_requests(
    burst: AuthFailureBurst, base: int, span: int, rng: random.Random, renderer: _Renderer
) -> list[_Request]:
    # A few seconds of stuffing from a handful of clients, some keys tried more than once.
    length = min(span, 3_000)
    begin = base + rng.randrange(span - length + 1)
    pool = [renderer.secret() for _ in range(max(1, burst.count // 3))]
    out: list[_Request] = []
    for i in range(burst.count + burst.missing_key):
        ip = burst.client_ips[i % len(burst.client_ips)]
        gateway: Gateway = "apisix" if burst.client_ips.index(ip) % 2 == 0 else "kong"
        key = rng.choice(pool) if i < burst.count else None
        roll = rng.random()
        style: AuthStyle = "apikey-header" if roll < 0.6 else "apikey-query"
        if gateway == "apisix" and roll >= 0.85:
            style = "bearer"
        out.append(_Request(gateway, ip, begin + rng.randrange(length), None, key, style))
    return out


def generate(scenario: Scenario, seed: int) -> Generated:
    """Render ``scenario`` into Kafka record values (in produce order) and its ground truth."""
    rng = random.Random(seed)
    renderer = _Renderer(rng)
    for c in scenario.consumers:
        renderer.secrets.add(c.api_key)
    engine = _Engine()
    for req in _plan(scenario, rng, renderer):
        sink, item, done = renderer.render(req)
        engine.submit(sink, item, done)
    produced: list[tuple[bytes, list[_Item]]] = [(r.value, r.items) for r in engine.drain()]

    reasons: Counter[str] = Counter()
    if scenario.bad_records:
        last = scenario.window_start(scenario.windows - 1)
        # Late in the last window, so the good entries of the mixed batch are not late data.
        at = max(last, last + scenario.window_ms - 1_500)
        gateway_consumers = _gateway_consumers(scenario.consumers)
        victim = scenario.attack.victim if scenario.attack else None
        steady = [c for c in gateway_consumers if c.name != victim] or gateway_consumers
        for kind in BAD_RECORD_KINDS:
            bad = _bad_record(kind, renderer, steady, at)
            produced.append((bad.value, bad.good))
            reasons.update(bad.reasons)

    per_key: Counter[tuple[str, int]] = Counter()
    by_source: Counter[str] = Counter()
    events = 0
    newest = -sys.maxsize
    lateness = 0
    for _, items in produced:
        for item in items:
            assert item.rate_key is not None
            window = item.event_ms - (item.event_ms - scenario.start_ms) % scenario.window_ms
            per_key[(item.rate_key, window)] += 1
            by_source[item.source] += 1
            events += 1
            lateness = max(lateness, newest - item.event_ms)
            newest = max(newest, item.event_ms)

    truth = GroundTruth(
        events=events,
        per_key_window=dict(per_key),
        attacked_key=scenario.attack.victim if scenario.attack else None,
        attack_windows=[scenario.window_start(i) for i in scenario.attack_window_indexes()],
        secrets=set(renderer.secrets),
        client_ips=set(renderer.client_ips),
        dead_letters=sum(reasons.values()),
        dead_letter_reasons=reasons,
        events_by_source=by_source,
        max_out_of_order_ms=lateness,
    )
    return Generated(records=[value for value, _ in produced], truth=truth)


# --------------------------------------------------------------------------------------------
# Default scenario and addresses
# --------------------------------------------------------------------------------------------


def _is_v6(ip: str) -> bool:
    return ":" in ip


class _AddressPool:
    """Hands out each caller-supplied address at most once, preferring a given country."""

    def __init__(self, country_ips: Mapping[str, Sequence[str]], home: Sequence[str]) -> None:
        self._free = {c: list(dict.fromkeys(ips)) for c, ips in country_ips.items()}
        self._home = list(home)

    def has_v6(self, country: str) -> bool:
        return any(_is_v6(ip) for ip in self._free[country])

    def take(self, country: str, *, v6: bool = False, fallback: bool = True) -> str:
        order = [country] + ([c for c in self._home if c != country] if fallback else [])
        for c in order:
            for ip in self._free[c]:
                if _is_v6(ip) == v6:
                    self._free[c].remove(ip)
                    return ip
        family = "IPv6" if v6 else "IPv4"
        raise ValueError(f"country_ips has too few unused {family} addresses (wanted {country})")


def max_event_age_covering(start_ms: int, now_s: float | None = None) -> int:
    """The ``--max-event-age-seconds`` a job needs to accept traffic generated from
    ``start_ms`` on (tests replay fixed dates): the age of ``start_ms`` now, plus a day."""
    now = time.time() if now_s is None else now_s
    return max(0, int(now - start_ms / 1000)) + 86_400


def default_scenario(
    country_ips: Mapping[str, Sequence[str]],
    start_ms: int,
    windows: int = 12,
    seed: int = 20240613,
    *,
    window_ms: int = 10_000,
) -> Scenario:
    """Six gateway consumers and one generic one, an attack, a 401 burst and bad records.

    The LAST country of ``country_ips`` is reserved for the attacker; the others are home
    countries. At least one home country must offer an IPv6 address (a mobile consumer uses
    it). About 4 IPv4 addresses per country are enough. The attack hits APISIX consumer
    ``acme-analytics`` from window 8 for up to 3 windows at 15x its mean; the 401 burst is in
    window 4. ``start_ms`` is rounded down to a window boundary.
    """
    if windows < 10:
        raise ValueError("the default scenario needs >= 10 windows (8 of baseline, 2+ of attack)")
    countries = list(country_ips)
    if len(countries) < 2:
        raise ValueError("country_ips needs a home country and, last, the attacker's country")
    rng = random.Random(seed)
    home, attacker_country = countries[:-1], countries[-1]
    pool = _AddressPool(country_ips, home)
    v6_home = next((c for c in home if pool.has_v6(c)), None)
    if v6_home is None:
        raise ValueError("country_ips needs at least one IPv6 address in a home country")

    def home_country(i: int) -> str:
        return home[i % len(home)]

    specs: list[tuple[str, Gateway, AuthStyle, int, list[tuple[str, bool]]]] = [
        ("acme-analytics", "apisix", "apikey-header", 24, [(home_country(0), False)] * 2),
        ("globex-mobile", "apisix", "apikey-query", 40, [(v6_home, False), (v6_home, True)]),
        ("initech-billing", "apisix", "bearer", 16, [(home_country(2), False)]),
        (
            "umbrella-iot",
            "kong",
            "apikey-header",
            48,
            [(home_country(3), False), (home_country(0), False)],
        ),
        ("hooli-search", "kong", "bearer", 30, [(home_country(1), False)]),
        ("stark-partners", "kong", "apikey-query", 20, [(home_country(2), False)]),
        ("ledger-batch", "generic", "apikey-header", 12, []),
    ]
    consumers = [
        Consumer(
            name=name,
            api_key=new_api_key(rng),
            auth_style=style,
            home_ips=[pool.take(country, v6=v6) for country, v6 in addresses],
            gateway=gateway,
            mean_per_window=mean,
        )
        for name, gateway, style, mean, addresses in specs
    ]
    attacker_ips = [pool.take(attacker_country, fallback=False) for _ in range(3)]
    burst_ips = [pool.take(home_country(i + 1)) for i in range(2)]
    victim = consumers[0]
    return Scenario(
        consumers=consumers,
        windows=windows,
        start_ms=start_ms - start_ms % window_ms,
        window_ms=window_ms,
        attack=Attack(
            victim=victim.name,
            first_window=8,
            attacker_ips=attacker_ips,
            requests_per_window=ATTACK_MULTIPLIER * victim.mean_per_window,
            windows=min(3, windows - 8),
        ),
        auth_failures=AuthFailureBurst(client_ips=burst_ips, window=4, count=40, missing_key=6),
        bad_records=True,
    )


# Random addresses inside the five RIRs' big IPv6 blocks hit GeoLite2 entries often enough for
# rejection sampling; a uniform draw over 2000::/3 almost never does.
_V6_BLOCKS: Final = tuple(
    ipaddress.IPv6Network(n)
    for n in ("2a00::/12", "2600::/12", "2400::/12", "2800::/12", "2c00::/12")
)


def default_geoip_db() -> str:
    """Path of the GeoLite2-City database bundled with the ``maxminddb-geolite2`` package."""
    from geolite2 import geolite2

    return str(geolite2.filename)


def ips_for_countries(
    db_path: str,
    countries: Sequence[str],
    per_country: int,
    seed: int,
    *,
    ipv6_per_country: int = 1,
    max_draws: int = 5_000_000,
) -> dict[str, list[str]]:
    """Public addresses the GeoIP2 City database at ``db_path`` places in each country.

    Seeded rejection sampling: ``per_country`` IPv4 addresses (drawn uniformly from the global
    IPv4 space) followed by ``ipv6_per_country`` IPv6 addresses per ISO code, in the order of
    ``countries``. Raises LookupError if ``max_draws`` draws per family do not suffice.
    """
    import geoip2.database
    import geoip2.errors

    wanted = list(dict.fromkeys(c.upper() for c in countries))
    rng = random.Random(seed)
    found: dict[str, dict[int, list[str]]] = {c: {4: [], 6: []} for c in wanted}
    need = {4: per_country, 6: ipv6_per_country}
    with geoip2.database.Reader(db_path) as reader:
        for family in (4, 6):
            draws = 0
            while any(len(found[c][family]) < need[family] for c in wanted):
                draws += 1
                if draws > max_draws:
                    short = [c for c in wanted if len(found[c][family]) < need[family]]
                    raise LookupError(f"no IPv{family} addresses found for {short}")
                addr: ipaddress.IPv4Address | ipaddress.IPv6Address
                if family == 4:
                    addr = ipaddress.IPv4Address(rng.getrandbits(32))
                else:
                    block = rng.choice(_V6_BLOCKS)
                    offset = rng.getrandbits(128 - block.prefixlen)
                    addr = ipaddress.IPv6Address(int(block.network_address) + offset)
                if not addr.is_global or addr.is_multicast or addr.is_reserved:
                    continue
                try:
                    country = reader.city(str(addr)).country.iso_code
                except geoip2.errors.AddressNotFoundError:
                    continue
                if country in found:
                    bucket = found[country][family]
                    if len(bucket) < need[family] and str(addr) not in bucket:
                        bucket.append(str(addr))
    return {c: found[c][4] + found[c][6] for c in wanted}


# --------------------------------------------------------------------------------------------
# Sequenced events (fault-injection runs, testkit/faults.py)
# --------------------------------------------------------------------------------------------


def sequenced_request_id(key: str, seq: int) -> str:
    """``<key>-<seq>``: the request id of a key's ``seq``-th event (1, 2, 3, ... no gaps)."""
    return f"{key}-{seq}"


def parse_sequenced_request_id(request_id: str) -> tuple[str, int]:
    """The (key, seq) a ``sequenced_request_id`` encodes; ValueError for any other id."""
    key, _, seq = request_id.rpartition("-")
    if not key or not seq.isdigit():
        raise ValueError(f"not a sequenced request id: {request_id!r}")
    return key, int(seq)


class SequencedEvents:
    """APISIX 3.9 full-log entries that carry a per-key sequence number in ``x-request-id``.

    Each key is one consumer (its rate key in the job); its events are numbered 1, 2, 3, ...
    without gaps, so a reader of the job's output can tell exactly which event is missing or
    repeated. Deterministic for a seed, apart from the event times the caller passes in.
    """

    def __init__(self, keys: Sequence[str], seed: int) -> None:
        if not keys or len(set(keys)) != len(keys):
            raise ValueError("keys must be given and distinct")
        self.keys = list(keys)
        self.rng = random.Random(seed)
        self.next_seq: dict[str, int] = dict.fromkeys(self.keys, 1)
        # Private addresses: geo fields stay empty, and no real network is named.
        self._ips = {k: f"10.77.{i // 250}.{i % 250 + 1}" for i, k in enumerate(self.keys)}

    def next_entry(self, start_ms: int) -> tuple[Entry, str, int]:
        """The next event of a randomly chosen key: (entry, key, seq)."""
        rng = self.rng
        key = rng.choice(self.keys)
        seq = self.next_seq[key]
        self.next_seq[key] = seq + 1
        upstream_ms = rng.randint(3, 80)
        gateway_ms = rng.randint(0, 3)
        path = f"/v1/orders/{rng.randint(1000, 99999)}"
        headers = {
            "host": _API_HOST,
            "user-agent": "faults/1.0",
            "accept": "application/json",
            "x-request-id": sequenced_request_id(key, seq),
        }
        call = Call(
            start_ms=start_ms,
            method="GET",
            uri=path,
            url=f"https://{_API_HOST}:9443{path}",
            query={},
            request_headers=headers,
            request_size=len(f"GET {path} HTTP/1.1\r\n") + _header_bytes(headers) + 2,
            status=200,
            response_headers={"content-type": "application/json", "server": "APISIX/3.9.0"},
            response_size=180,
            client_ip=self._ips[key],
            consumer=key,
            route_id="orders-v1",
            service_id="orders",
            upstream=rng.choice(_UPSTREAMS),
            latency_ms=upstream_ms + gateway_ms,
            upstream_latency_ms=upstream_ms,
            gateway_latency_ms=gateway_ms,
            gateway_host="apisix-faults-0",
            gateway_version="3.9.0",
        )
        entry = gateways.apisix.render(call)
        return entry, key, seq


# --------------------------------------------------------------------------------------------
# Bulk traffic (benchmarks, bench/)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BulkRecord:
    """One Kafka record value of bulk traffic: ``events`` request events, sent at ``emit_ms``."""

    value: bytes
    events: int
    emit_ms: int


def auth_failure_burst(start_ms: int, count: int, client_ip: str, seed: int = 0) -> BulkRecord:
    """One APISIX batch of ``count`` 401s from ``client_ip``, each with a different wrong key,
    one per millisecond from ``start_ms``: what the auth_failures rule alerts on (the bench's
    alert latency)."""
    rng = random.Random(f"burst-{seed}")
    renderer = _Renderer(rng)
    entries = [
        renderer.apisix(
            _Request("apisix", client_ip, start_ms + i, None, new_api_key(rng), "apikey-header")
        )[1]
        for i in range(count)
    ]
    return BulkRecord(encode(entries), count, start_ms + count)


def random_public_ips(count: int, seed: int, ipv6_share: float = 0.05) -> list[str]:
    """``count`` distinct public addresses, no GeoIP database needed.

    IPv4 addresses are drawn uniformly from the global unicast space, so countries come out in
    proportion to their share of it; about ``ipv6_share`` are IPv6 from the RIRs' big blocks.
    """
    if count < 0 or not 0 <= ipv6_share <= 1:
        raise ValueError("count must be >= 0 and ipv6_share within [0, 1]")
    rng = random.Random(seed)
    found: dict[str, None] = {}
    while len(found) < count:
        addr: ipaddress.IPv4Address | ipaddress.IPv6Address
        if rng.random() < ipv6_share:
            block = rng.choice(_V6_BLOCKS)
            addr = ipaddress.IPv6Address(
                int(block.network_address) + rng.getrandbits(128 - block.prefixlen)
            )
        else:
            addr = ipaddress.IPv4Address(rng.getrandbits(32))
        if addr.is_global and not addr.is_multicast and not addr.is_reserved:
            found[str(addr)] = None
    return list(found)


def bulk_consumers(keys: int, seed: int, ips: Sequence[str]) -> list[Consumer]:
    """``keys`` consumers, each with its own API key, for bulk traffic.

    Gateways: about 60 % APISIX, 30 % Kong, 10 % generic usage events. Rates follow a Zipf-like
    curve (``mean_per_window`` is the consumer's relative weight): a few heavy callers and a long
    tail. Most consumers are servers calling from one to three addresses; about one in five is a
    mobile or browser app whose calls come from many addresses.
    """
    if keys < 1 or not ips:
        raise ValueError("bulk traffic needs at least one key and one address")
    rng = random.Random(seed)
    gateways: tuple[Gateway, ...] = ("apisix", "kong", "generic")
    styles: tuple[AuthStyle, ...] = ("apikey-header", "apikey-query", "bearer")
    out: list[Consumer] = []
    for i in range(keys):
        gateway = rng.choices(gateways, weights=(6, 3, 1))[0]
        many = rng.random() < 0.2
        n_ips = rng.randint(5, 50) if many else rng.randint(1, 3)
        out.append(
            Consumer(
                name=f"tenant-{i:05d}",
                api_key=new_api_key(rng),
                auth_style=rng.choices(styles, weights=(5, 2, 3))[0],
                home_ips=[] if gateway == "generic" else rng.sample(ips, min(n_ips, len(ips))),
                gateway=gateway,
                mean_per_window=max(1, round(1000 / (i + 1) ** 0.9)),
            )
        )
    rng.shuffle(out)
    return out


def bulk_traffic(
    events: int,
    *,
    start_ms: int,
    keys: int = 5000,
    rate: float = 5000.0,
    seed: int = 11,
    stream: int = 0,
    rejected_share: float = 0.01,
    ip_pool: int | None = None,
) -> Iterator[BulkRecord]:
    """Exactly ``events`` request events from ``keys`` consumers, as gateway records in send order.

    The same renderer and batching as ``generate`` and ``run_live`` (APISIX arrays of up to 50
    entries and single objects, Kong objects and arrays, generic events), on a simulated clock:
    requests start at ``rate`` per second from ``start_ms``. About ``rejected_share`` of the
    requests are 401s from unknown clients presenting a wrong key or none. There are no bad
    records. The consumers, their keys and addresses depend on ``seed`` only; ``stream`` picks
    an independent request sequence over them (several streams, e.g. time slices generated in
    parallel, share one population). Deterministic; yields as it goes, so a million events
    never sit in memory at once.
    """
    if events < 0 or rate <= 0 or not 0 <= rejected_share < 1:
        raise ValueError("events must be >= 0, rate > 0 and rejected_share within [0, 1)")
    rng = random.Random(f"bulk-{seed}-{stream}")
    ips = random_public_ips(ip_pool or max(100, keys * 3), seed)
    consumers = bulk_consumers(keys, seed + 1, ips)
    scanners = random_public_ips(max(10, keys // 5), seed + 2)
    cum_weights = list(itertools.accumulate(c.mean_per_window for c in consumers))
    renderer = _Renderer(rng)
    engine = _Engine()
    step_ms = 100
    per_step = rate * step_ms / 1000
    carry = 0.0
    planned = 0
    now_ms = start_ms
    while planned < events:
        carry += per_step
        n = min(int(carry), events - planned)
        carry -= int(carry)
        for _ in range(n):
            start = now_ms + rng.randrange(step_ms)
            req: _Request
            if rng.random() < rejected_share:
                gateway: Gateway = "apisix" if rng.random() < 0.6 else "kong"
                key = new_api_key(rng) if rng.random() < 0.8 else None
                req = _Request(gateway, rng.choice(scanners), start, None, key, "apikey-header")
            else:
                c = rng.choices(consumers, cum_weights=cum_weights)[0]
                ip = rng.choice(c.home_ips) if c.home_ips else None
                req = _Request(c.gateway, ip, start, c, c.api_key, c.auth_style)
            engine.submit(*renderer.render(req))
        planned += n
        now_ms += step_ms
        for record in engine.advance(now_ms):
            yield BulkRecord(record.value, len(record.items), record.emit_ms)
        # The renderer remembers every secret and address for ground truth; bulk needs none.
        renderer.secrets.clear()
        renderer.client_ips.clear()
    for record in engine.drain():
        yield BulkRecord(record.value, len(record.items), record.emit_ms)


# --------------------------------------------------------------------------------------------
# Live mode
# --------------------------------------------------------------------------------------------

LIVE_COUNTRIES: Final = ("DE", "US", "JP", "GB", "BR")
"""Home countries for live mode, then (last) the attacker's."""


class ProducerLike(Protocol):
    def produce(
        self, topic: str, value: bytes, *, on_delivery: Callable[[Any, Any], None]
    ) -> None: ...

    def poll(self, timeout: float) -> int: ...

    def flush(self, timeout: float) -> int: ...


@dataclass
class LiveStats:
    records: int = 0
    events: int = 0
    attack_events: int = 0
    bad_records: int = 0
    delivery_errors: int = 0
    by_source: Counter[str] = field(default_factory=Counter)


def _kafka_producer(bootstrap_servers: str) -> ProducerLike:
    from confluent_kafka import Producer

    return Producer(
        {
            "bootstrap.servers": bootstrap_servers,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 20,
            "client.id": "traffic-generator",
        }
    )


def run_live(
    bootstrap_servers: str,
    topic: str,
    *,
    rate: float = 200.0,
    duration: float | None = 120.0,
    attack_at: float | None = 60.0,
    geoip_db: str | None = None,
    country_ips: Mapping[str, Sequence[str]] | None = None,
    seed: int = 7,
    bad_every: float | None = 20.0,
    stop: threading.Event | None = None,
    report: Callable[[str], None] = print,
    producer: ProducerLike | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    tick: float = 0.05,
) -> LiveStats:
    """Produce realistic gateway logs to ``topic`` in real time until ``duration`` or ``stop``.

    Steady consumers share ``rate`` requests/s; from ``attack_at`` seconds the victim's key is
    also used from the attacker country at 15x its rate. A credential-stuffing burst runs for
    3 s half-way to the attack, and one unusable record goes out every ``bad_every`` seconds.
    Event time is the wall clock. ``report`` receives one line every 10 s with counts only,
    never keys or addresses. Returns the totals once everything is flushed.
    """
    stop = stop or threading.Event()
    if country_ips is None:
        country_ips = ips_for_countries(geoip_db or default_geoip_db(), LIVE_COUNTRIES, 4, seed)
    t0 = clock()
    scenario = default_scenario(country_ips, int(t0 * 1000), seed=seed)
    assert scenario.attack is not None and scenario.auth_failures is not None
    rng = random.Random(seed)
    renderer = _Renderer(rng)
    engine = _Engine()
    sink = producer or _kafka_producer(bootstrap_servers)
    stats = LiveStats()

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            stats.delivery_errors += 1

    def send(value: bytes, items: Sequence[_Item]) -> None:
        while True:
            try:
                sink.produce(topic, value, on_delivery=on_delivery)
                break
            except BufferError:
                # librdkafka's local queue is full: serve callbacks until it drains a little.
                sink.poll(0.5)
        stats.records += 1
        stats.events += len(items)
        stats.by_source.update(i.source for i in items)

    total_mean = sum(c.mean_per_window for c in scenario.consumers)
    rates = {c.name: rate * c.mean_per_window / total_mean for c in scenario.consumers}
    victim = scenario.consumer(scenario.attack.victim)
    attack_rate = ATTACK_MULTIPLIER * rates[victim.name]
    burst = scenario.auth_failures
    burst_keys = [renderer.secret() for _ in range(8)]
    burst_at = attack_at / 2 if attack_at is not None else None
    gateway_consumers = _gateway_consumers(scenario.consumers)
    carry: dict[str, float] = {}
    last = t0
    next_report = t0 + 10
    next_bad = t0 + bad_every if bad_every else math.inf
    bad_index = 0
    reported_events = 0

    def arrivals(name: str, per_second: float, dt: float) -> int:
        # Carry the fraction over, so a steady rate stays steady at any tick length.
        carry[name] = carry.get(name, 0.0) + per_second * dt
        n = int(carry[name])
        carry[name] -= n
        return n

    report(
        f"traffic: producing to {topic} at ~{rate:.0f} req/s"
        + (f", compromised-key attack from t={attack_at:.0f}s" if attack_at is not None else "")
    )
    try:
        while not stop.is_set():
            now = clock()
            elapsed = now - t0
            if duration is not None and elapsed >= duration:
                break
            dt, last = now - last, now
            now_ms = int(now * 1000)
            spread = max(1, int(dt * 1000))
            requests: list[_Request] = []
            for c in scenario.consumers:
                for _ in range(arrivals(c.name, rates[c.name], dt)):
                    ip = rng.choice(c.home_ips) if c.home_ips else None
                    start = now_ms - rng.randrange(spread)
                    requests.append(_Request(c.gateway, ip, start, c, c.api_key, c.auth_style))
            attacking = attack_at is not None and elapsed >= attack_at
            if attacking:
                for _ in range(arrivals("<attack>", attack_rate, dt)):
                    ip = rng.choice(scenario.attack.attacker_ips)
                    start = now_ms - rng.randrange(spread)
                    requests.append(
                        _Request(
                            victim.gateway,
                            ip,
                            start,
                            victim,
                            victim.api_key,
                            victim.auth_style,
                        )
                    )
                    stats.attack_events += 1
            if burst_at is not None and burst_at <= elapsed < burst_at + 3:
                for _ in range(arrivals("<burst>", 15.0, dt)):
                    i = rng.randrange(len(burst.client_ips))
                    gateway: Gateway = "apisix" if i % 2 == 0 else "kong"
                    key = rng.choice(burst_keys) if rng.random() < 0.85 else None
                    ip = burst.client_ips[i]
                    requests.append(
                        _Request(
                            gateway, ip, now_ms - rng.randrange(spread), None, key, "apikey-header"
                        )
                    )
            for req in requests:
                engine.submit(*renderer.render(req))
            for record in engine.advance(now_ms):
                send(record.value, record.items)
            if now >= next_bad and gateway_consumers:
                kind = BAD_RECORD_KINDS[bad_index % len(BAD_RECORD_KINDS)]
                bad = _bad_record(kind, renderer, gateway_consumers, now_ms)
                send(bad.value, bad.good)
                stats.bad_records += 1
                bad_index += 1
                next_bad += bad_every or math.inf
            if now >= next_report:
                report(
                    f"traffic: t={elapsed:4.0f}s produced {stats.records} records / "
                    f"{stats.events} events (+{stats.events - reported_events} in 10s), "
                    f"attack={'on' if attacking else 'off'}, bad={stats.bad_records}, "
                    f"delivery_errors={stats.delivery_errors}"
                )
                reported_events = stats.events
                next_report += 10
            sink.poll(0)
            sleep(tick)
    finally:
        for record in engine.drain():
            send(record.value, record.items)
        sink.flush(30)
    report(
        f"traffic: done, {stats.records} records / {stats.events} events "
        f"({stats.attack_events} attack), delivery_errors={stats.delivery_errors}"
    )
    return stats


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m testkit.traffic",
        description="Produce realistic API-gateway access logs (APISIX, Kong, generic) to Kafka.",
    )
    parser.add_argument("--bootstrap-servers", required=True, help="host:port[,host:port]")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--rate", type=float, default=200.0, help="steady requests per second")
    parser.add_argument(
        "--duration", type=float, default=120.0, help="seconds to run; 0 runs until Ctrl-C"
    )
    parser.add_argument(
        "--attack-at", type=float, default=60.0, help="seconds until the attack; < 0 disables it"
    )
    parser.add_argument("--geoip-db", help="GeoIP2 City mmdb (default: the bundled GeoLite2)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--bad-every", type=float, default=20.0, help="seconds between unusable records; 0 = none"
    )
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stats = run_live(
        args.bootstrap_servers,
        args.topic,
        rate=args.rate,
        duration=args.duration or None,
        attack_at=args.attack_at if args.attack_at >= 0 else None,
        geoip_db=args.geoip_db,
        seed=args.seed,
        bad_every=args.bad_every or None,
        stop=stop,
    )
    return 1 if stats.delivery_errors else 0


if __name__ == "__main__":
    sys.exit(main())


def scenario_alert_problems(
    alerts: Sequence[Mapping[str, Any]],
    truth: GroundTruth,
    burst_window_start: int,
    early: bool = True,
) -> list[str]:
    """What is wrong with the job's alert records for the default scenario (empty: nothing).

    The detector must raise exactly: one incident on the attacked key, opened by rate_spike on
    the attack's first window, in which new_country also fires, and closed by the end of the
    input; and one auth_failures incident per client of the 401 burst, opened on its window
    (before the window closed, if ``early``). Every record's id is its own."""
    problems = []
    victim = [a for a in alerts if a["rate_key"] == truth.attacked_key]
    first = truth.attack_windows[0] if truth.attack_windows else None
    if [a["status"] for a in victim] != ["open", "closed"]:
        problems.append(f"attacked key: records {[a['status'] for a in victim]}, not open, closed")
    else:
        opened, closed = victim
        if (opened["rule"], opened["window_start"], opened["incident_start"]) != (
            "rate_spike", first, first,
        ):  # fmt: skip
            problems.append(f"attacked key: opened by {opened['rule']} at {opened['window_start']}")
        if closed["rules"] != ["rate_spike", "new_country"] or closed["incident_start"] != first:
            problems.append(f"attacked key: closed with rules {closed['rules']}")
    others = [a for a in alerts if a["rate_key"] != truth.attacked_key]
    clients = {a["rate_key"] for a in others}
    for key in sorted(clients):
        mine = [a for a in others if a["rate_key"] == key]
        shape = [(a["status"], a["rule"], a["window_start"]) for a in mine]
        want = [
            ("open", "auth_failures", burst_window_start),
            ("closed", "auth_failures", burst_window_start),
        ]
        if not key.startswith("client:") or shape != want:
            problems.append(f"{key}: {shape}, want {want}")
        if early and mine and mine[0]["window_closed"]:
            problems.append(f"{key}: the burst was judged only when its window closed")
    if len(clients) != 2:
        problems.append(f"burst: {len(clients)} client keys alerted, want 2")
    if len({a["alert_id"] for a in alerts}) != len(alerts):
        problems.append("an alert id repeats")
    return problems
