"""Hostile input at volume: a seeded mix of unusable and awkward records around good traffic.

``hostile_mix(n_hostile, good, seed)`` interleaves ``n_hostile`` hostile Kafka record values with
the caller's good ones (kept in their order) and says exactly what a correct job must do with
every record: how many enriched events it yields, and the reason of each dead letter, in the job's
reason codes. The expectations come from how each record was built, never from running the job's
parser; ``self_check`` runs ``metering.records.RecordProcessor`` over every record to confirm them.

Hostile kinds: malformed JSON (truncated, trailing garbage, single quotes, NaN/Infinity literals,
raw control characters, a UTF-8 BOM, comments, 5000-digit numbers), wrong types (status as a list,
an object or "abc", garbage and null event times, headers as a list, ...), wrong top-level types,
missing event times, unknown formats, empty arrays and values, tombstones, too many entries,
deep nesting (33, 50, 5000 and 100000 levels), invalid UTF-8 (lone continuation bytes, overlongs,
truncated sequences, UTF-16, CESU-8 surrogates, code points above U+10FFFF, Latin-1, escaped lone
surrogates), arrays of scalars, arrays with one bad element among good ones, gateway retries
inside a batch, and records near the broker's size limit: ~950 KB strings and header arrays and
batches of ~2300 entries, good and one bad. Unicode edge cases that are VALID (emoji, RTL marks,
zero-width joiners, escaped NUL, combining characters, escaped surrogate pairs, U+2028, U+FFFF)
must be enriched. Hostile records carry credentials (all starting ``hsk``) and client IPs from the
documentation ranges, so a reader of the job's output can check that none of them leaks.

``PROBES`` are records that once broke the job (non-finite numbers, over-long dead-letter
payloads, UTF-16 text, list-shaped headers and query strings), kept as regression probes;
``hostile_mix(..., probes=True)`` adds one of each, with the expectation the job's contract
gives, and ``HostileMix.probe_indexes`` names them.

    python -m testkit.hostile --bootstrap-servers 127.0.0.1:9092 --topic gateway.raw \\
        [--hostile 100000] [--seed 7] [--probes] [--self-check]

produces the mix (idempotent producer, acks=all, record i to partition i mod partitions) around
the good records of ``testkit.traffic``'s default scenario, and prints the expectation summary as
JSON. ``--self-check`` runs the job's parser over the mix instead of producing.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import re
import string
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Sequence, Set
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote, unquote

from testkit import gateways
from testkit.gateways import Call, encode

# The broker's default message.max.bytes (scripts/kafka.sh keeps Kafka's default): the largest
# record batch it accepts. Producers must stay under it with a single record plus framing.
BROKER_MESSAGE_MAX_BYTES: Final = 1_048_588
PRODUCER_MESSAGE_MAX_BYTES: Final = 1_048_576
"""The producer's message.max.bytes (librdkafka defaults to 1000000, too small for huge kinds)."""
HUGE_RECORD_BYTES: Final = 950_000
"""Target size of the huge kinds: under both limits, with room for the job's enriched copy."""
MAX_DEPTH: Final = 32
"""The job's default max_depth: deeper JSON is dead-lettered as too_deep."""
MAX_BATCH_ENTRIES: Final = 10_000
DEFAULT_START_MS: Final = 1_767_225_600_000
SECRET_PREFIX: Final = "hsk"
SECRET_LENGTH: Final = 32
SECRET_PATTERN: Final = re.compile(rf"{SECRET_PREFIX}[A-Za-z0-9_-]{{{SECRET_LENGTH - 3}}}")
"""Finds hostile-record credentials in any text; check candidates against ``HostileMix.secrets``."""

_URLSAFE: Final = string.ascii_letters + string.digits + "-_"
_API_HOST: Final = "api.example.com"
_CHUNK: Final = "Mozilla/5.0 (compatible; hostile-probe) AppleWebKit/537.36 KHTML Gecko "


@dataclass(frozen=True, slots=True)
class Expected:
    """What a correct job does with one record."""

    kind: str
    """``good`` for a caller's record, else the hostile kind."""
    events: int
    """Enriched events it yields (after dropping in-record gateway retries)."""
    reasons: tuple[str, ...]
    """Reasons of its dead letters, in element order."""
    deduplicated: int = 0
    """Entries that repeat an earlier entry's request id (gateway retries), dropped by the job."""
    secrets: tuple[str, ...] = ()
    client_ips: tuple[str, ...] = ()

    @property
    def entries(self) -> int:
        """Entries the job counts in (each good entry, each dead letter, each retry)."""
        return self.events + len(self.reasons) + self.deduplicated


@dataclass
class HostileMix:
    records: list[bytes | None]
    """Kafka record values in produce order; None is a tombstone (a null value)."""
    expected: list[Expected]
    """One per record, same order."""
    probe_indexes: list[int] = field(default_factory=list)
    secrets: set[str] = field(default_factory=set)
    """Credentials planted in hostile records (the good records' are the caller's to know)."""
    client_ips: set[str] = field(default_factory=set)
    processing_ms: int = DEFAULT_START_MS
    """A processing time at which every good entry's event time is within the job's bounds (the
    newest event time of the mix): the clock to run the parser with in a self-check."""

    @property
    def events(self) -> int:
        return sum(e.events for e in self.expected)

    @property
    def dead_letters(self) -> int:
        return sum(len(e.reasons) for e in self.expected)

    @property
    def deduplicated(self) -> int:
        return sum(e.deduplicated for e in self.expected)

    @property
    def entries(self) -> int:
        return sum(e.entries for e in self.expected)

    @property
    def reasons(self) -> Counter[str]:
        return Counter(r for e in self.expected for r in e.reasons)

    def kinds(self) -> Counter[str]:
        return Counter(e.kind for e in self.expected)

    def without_probes(self) -> list[int]:
        """Indexes of every record that is not a probe."""
        probes = set(self.probe_indexes)
        return [i for i in range(len(self.records)) if i not in probes]

    def summary(self) -> dict[str, Any]:
        sizes = [len(r) for r in self.records if r is not None]
        main = self.without_probes()
        kinds = self.kinds()
        return {
            "records": len(self.records),
            "good_records": kinds.get("good", 0),
            "hostile_records": len(self.records) - kinds.get("good", 0),
            "probes": [self.expected[i].kind for i in self.probe_indexes],
            "bytes": sum(sizes),
            "largest_record_bytes": max(sizes, default=0),
            "expected_enriched": self.events,
            "expected_dead_letters": self.dead_letters,
            "expected_deduplicated": self.deduplicated,
            "expected_entries_in": self.entries,
            "expected_reasons": dict(sorted(self.reasons.items())),
            "expected_without_probes": {
                "enriched": sum(self.expected[i].events for i in main),
                "dead_letters": sum(len(self.expected[i].reasons) for i in main),
                "reasons": dict(
                    sorted(Counter(r for i in main for r in self.expected[i].reasons).items())
                ),
            },
            "hostile_kinds": dict(sorted((k, n) for k, n in kinds.items() if k != "good")),
            "planted_secrets": len(self.secrets),
            "planted_client_ips": len(self.client_ips),
        }


def partition_of(index: int, partitions: int) -> int:
    """Where ``python -m testkit.hostile`` and the tests put record ``index``."""
    return index % partitions


def index_of(partition: int, offset: int, partitions: int) -> int:
    """The record index behind (partition, offset) on a fresh topic filled by ``partition_of``."""
    return offset * partitions + partition


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


@dataclass
class _Out:
    value: bytes | None
    events: int
    reasons: tuple[str, ...]
    deduplicated: int = 0


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _nested_lists(levels: int) -> Any:
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


class _Ctx:
    """Draws for one mix; remembers the credentials and addresses each record carries."""

    def __init__(self, rng: random.Random, seed: int) -> None:
        self.rng = rng
        self.seed = seed
        self.t = DEFAULT_START_MS
        self.secrets: set[str] = set()
        self.client_ips: set[str] = set()
        self.record_secrets: list[str] = []
        self.record_ips: list[str] = []
        self._ids = 0
        # Documentation ranges (RFC 5737 / RFC 3849): no geo, never anyone's real address.
        nets = ("203.0.113", "198.51.100", "192.0.2")
        self._v4 = [f"{net}.{h}" for net in nets for h in range(11, 250)]
        self._v6 = [f"2001:db8:{a:x}::{b:x}" for a in range(1, 40) for b in range(17, 60)]

    def begin(self) -> None:
        self.record_secrets = []
        self.record_ips = []

    def secret(self) -> str:
        body = "".join(self.rng.choice(_URLSAFE) for _ in range(SECRET_LENGTH - 3))
        value = SECRET_PREFIX + body
        self.secrets.add(value)
        self.record_secrets.append(value)
        return value

    def ip(self) -> str:
        value = self.rng.choice(self._v6) if self.rng.random() < 0.2 else self.rng.choice(self._v4)
        self.client_ips.add(value)
        self.record_ips.append(value)
        return value

    def rid(self) -> str:
        self._ids += 1
        return f"hostile-{self.seed}-{self._ids}"

    def _credential(self, headers: dict[str, Any], path: str) -> str:
        roll = self.rng.random()
        if roll < 0.5:
            headers["apikey"] = self.secret()
        elif roll < 0.75:
            headers["authorization"] = f"Bearer {self.secret()}"
        else:
            return f"{path}?limit=10&apikey={self.secret()}"
        return path

    def apisix(
        self,
        *,
        consumer: str | None = "probe-apisix",
        ua: str = "hostile-probe/1.0",
        path: str | None = None,
        status: Any = 200,
        lean: bool | None = None,
    ) -> dict[str, Any]:
        if lean is None:  # most hostile entries are lean, to keep 100k records cheap to move
            lean = self.rng.random() < 0.7
        path = path or f"/v1/orders/{self.rng.randint(1000, 99999)}"
        headers: dict[str, Any] = {"host": _API_HOST, "user-agent": ua, "x-request-id": self.rid()}
        uri = self._credential(headers, path)
        query = {"limit": "10", "apikey": uri.rsplit("=", 1)[1]} if "?" in uri else {}
        call = Call(
            start_ms=self.t,
            method="GET",
            uri=uri,
            request_headers=headers,
            status=status,
            client_ip=self.ip(),
            consumer=consumer,
        )
        if not lean:
            call = replace(
                call,
                url=f"https://{_API_HOST}:9443{uri}",
                query=query,
                request_size=120,
                response_headers={"server": "APISIX/3.9.0"},
                response_size=80,
                gateway_host="apisix-hostile-0",
                gateway_version="3.9.0",
                route_id="hostile-orders",
                service_id="orders",
                latency_ms=12.000047683716,
                upstream_latency_ms=10,
                gateway_latency_ms=2.000047683716,
            )
        return gateways.apisix.render(call)

    def kong(
        self, *, consumer: str = "probe-kong", ua: str = "hostile-probe/1.0", status: Any = 200
    ) -> dict[str, Any]:
        path = f"/v1/devices/{self.rng.randint(1000, 99999)}"
        headers: dict[str, Any] = {"host": _API_HOST, "user-agent": ua}
        uri = self._credential(headers, path)
        query = {"limit": "10", "apikey": uri.rsplit("=", 1)[1]} if "?" in uri else {}
        call = Call(
            start_ms=self.t,
            method="GET",
            uri=uri,
            url=f"https://{_API_HOST}:8443{uri}",
            query=query,
            request_headers=headers,
            request_id=self.rid(),
            status=status,
            response_headers={"via": "1.1 kong/3.8.0"},
            client_ip=self.ip(),
            consumer=consumer,
            consumer_id="7c5e0f0e-hostile",
            route="devices",
            service="iot-backend",
            latency_ms=11,
            upstream_latency_ms=10,
            gateway_latency_ms=1,
        )
        return gateways.kong.render(call)

    def generic(self, *, user: str = "probe-generic", timestamp: Any = None) -> dict[str, Any]:
        call = Call(
            start_ms=self.t,
            consumer=user,
            uri="/v1/reports/export",
            units=2,
            extra={} if timestamp is None else {"timestamp": timestamp},
        )
        return gateways.generic.render(call)

    def any_entry(self, **kw: Any) -> dict[str, Any]:
        roll = self.rng.random()
        if roll < 0.6:
            return self.apisix(**kw)
        if roll < 0.9:
            return self.kong(**{k: v for k, v in kw.items() if k in ("ua", "status")})
        return self.generic()


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def _good(entry: Any) -> _Out:
    return _Out(encode(entry), 1, ())


def _bad(value: bytes | None, *reasons: str) -> _Out:
    return _Out(value, 0, reasons)


def _with(entry: dict[str, Any], path: Sequence[str], value: Any) -> dict[str, Any]:
    node = entry
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return entry


def _without(entry: dict[str, Any], name: str) -> dict[str, Any]:
    del entry[name]
    return entry


def _with_ua_bytes(c: _Ctx, middle: bytes) -> bytes:
    # Invalid bytes inside the user agent, away from the credential and the address.
    marker = "@@UA@@"
    text = _dumps(c.apisix(ua=f"hostile-probe/1.0 {marker} end"))
    head, tail = text.encode().split(marker.encode())
    return head + middle + tail


def _huge_text(n: int) -> str:
    return (_CHUNK * (n // len(_CHUNK) + 1))[:n]


def _fit(build: Callable[[str], Any], target: int = HUGE_RECORD_BYTES) -> bytes:
    """The record ``build(s)`` with a filler string ``s`` sized so the record is ``target``."""
    base = len(encode(build("")))
    value = encode(build(_huge_text(target - base)))
    assert len(value) == target, (len(value), target)
    return value


def _batch_to_size(c: _Ctx, bad_index: int | None) -> _Out:
    """A batch of lean entries up to HUGE_RECORD_BYTES; with one bad element if asked."""
    entries: list[Any] = []
    size = 2
    while True:
        entry = c.apisix(lean=True) if c.rng.random() < 0.7 else c.kong()
        piece = len(encode(entry)) + 1
        if size + piece > HUGE_RECORD_BYTES:
            break
        entries.append(entry)
        size += piece
    reasons: tuple[str, ...] = ()
    if bad_index is not None:
        index = bad_index % len(entries)
        entries[index] = _with(entries[index], ("response", "status"), "abc")
        reasons = ("invalid_event",)
    return _Out(encode(entries), len(entries) - len(reasons), reasons)


# --------------------------------------------------------------------------------------------
# Kinds
# --------------------------------------------------------------------------------------------


def _truncated(c: _Ctx) -> _Out:
    text = _dumps(c.any_entry())
    return _bad(text[: c.rng.randrange(1, len(text))].encode(), "not_json")


def _trailing_garbage(c: _Ctx) -> _Out:
    tail = c.rng.choice(["x", "}", ",{}", " null", "\n{}", "]"])
    return _bad(encode(c.any_entry()) + tail.encode(), "not_json")


def _single_quotes(c: _Ctx) -> _Out:
    return _bad(repr(c.apisix()).encode(), "not_json")


def _literal(c: _Ctx, literal: str) -> _Out:
    text = _dumps(_with(c.apisix(), ("latency",), "@@LIT@@"))
    return _bad(text.replace('"@@LIT@@"', literal).encode(), "not_json")


def _raw_control(c: _Ctx) -> _Out:
    char = c.rng.choice(["\t", "\n", "\x00", "\x1b", "\r"])
    text = _dumps(c.apisix(ua="hostile@@CTL@@probe")).replace("@@CTL@@", char)
    return _bad(text.encode(), "not_json")


def _number_text(c: _Ctx, field_path: tuple[str, ...], literal: str, reason: str) -> _Out:
    text = _dumps(_with(c.apisix(), field_path, "@@NUM@@"))
    return _bad(text.replace('"@@NUM@@"', literal).encode(), reason)


def _number_good(c: _Ctx, field_path: tuple[str, ...], literal: str) -> _Out:
    text = _dumps(_with(c.apisix(), field_path, "@@NUM@@"))
    return _Out(text.replace('"@@NUM@@"', literal).encode(), 1, ())


def _deep_in_entry(c: _Ctx, levels: int) -> _Out:
    # The entry itself is depth 1, so `levels` nested lists under it reach depth levels + 1.
    entry = c.apisix()
    entry["extra"] = _nested_lists(levels)
    if levels + 1 > MAX_DEPTH:
        return _bad(encode(entry), "too_deep")
    return _good(entry)


def _deep_objects(levels: int) -> _Out:
    return _bad(('{"a":' * levels + "1" + "}" * levels).encode(), "too_deep")


def _lone_surrogate(c: _Ctx, escape: str) -> _Out:
    text = _dumps(c.apisix(ua="hostile @@S@@ probe")).replace("@@S@@", escape)
    return _bad(text.encode(), "not_utf8")


def _unicode(c: _Ctx, ua: str, path: str | None = None) -> _Out:
    return _good(c.apisix(ua=ua, path=path))


def _escaped_pair(c: _Ctx) -> _Out:
    text = _dumps(c.apisix(ua="grinning @@E@@ face")).replace("@@E@@", "\\ud83d\\ude00")
    return _Out(text.encode(), 1, ())


def _duplicate_keys(c: _Ctx) -> _Out:
    # The last of a repeated member wins (Python's json, like most parsers).
    text = _dumps(c.apisix())
    return _Out(('{"start_time":"garbage",' + text[1:]).encode(), 1, ())


def _mixed_small(c: _Ctx) -> _Out:
    n = c.rng.randint(2, 5)
    entries: list[Any] = [c.any_entry() for _ in range(n)]
    index = c.rng.randrange(n + 1)
    choices: list[tuple[Callable[[], Any], str]] = [
        (lambda: _with(c.apisix(), ("response", "status"), "abc"), "invalid_event"),
        (lambda: _without(c.apisix(), "start_time"), "missing_event_time"),
        (lambda: {"hello": "world"}, "unknown_format"),
        (lambda: 42, "wrong_type"),
        (lambda: None, "wrong_type"),
        (lambda: [c.apisix()], "wrong_type"),
        (lambda: _with(c.kong(), ("response", "status"), [200]), "invalid_event"),
    ]
    make, reason = c.rng.choice(choices)
    entries.insert(index, make())
    return _Out(encode(entries), n, (reason,))


def _scalars(c: _Ctx) -> _Out:
    items: list[Any] = [1, "Bearer " + c.secret(), None, True, [], {}]
    c.rng.shuffle(items)
    reasons = tuple("unknown_format" if item == {} else "wrong_type" for item in items)
    return _bad(encode(items), *reasons)


def _retry_batch(c: _Ctx) -> _Out:
    # A gateway retry logged twice in one batch: same request id, same consumer.
    first, second = c.apisix(), c.apisix()
    again = json.loads(_dumps(first))
    return _Out(encode([first, second, again]), 2, (), deduplicated=1)


def _deep_element(c: _Ctx) -> _Out:
    # Depth is checked on the whole record before any element is looked at.
    deep = c.apisix()
    deep["extra"] = _nested_lists(40)
    return _bad(encode([c.apisix(), deep, c.apisix()]), "too_deep")


def _surrogate_element(c: _Ctx) -> _Out:
    text = _dumps([c.apisix(), c.apisix(ua="x @@S@@ y")]).replace("@@S@@", "\\udfff")
    return _bad(text.encode(), "not_utf8")


def _latin1(c: _Ctx) -> _Out:
    entry = c.apisix(ua="Müller Datenanalyse GmbH/1.0")
    return _bad(_dumps(entry).encode("latin-1"), "not_utf8")


def _utf16(c: _Ctx) -> _Out:
    # No credentials or addresses here: scrubbing cannot see through UTF-16 (see PROBES).
    entry = gateways.generic.render(Call(start_ms=c.t, consumer="probe-utf16", uri="/v1/reports"))
    encoding = c.rng.choice(["utf-16", "utf-32"])
    return _bad(_dumps(entry).encode(encoding), "not_utf8")


def _huge_ua(c: _Ctx) -> _Out:
    entry = c.apisix()
    value = _fit(lambda s: _with(entry, ("request", "headers", "user-agent"), s))
    return _Out(value, 1, ())


def _huge_uri(c: _Ctx) -> _Out:
    entry = c.apisix(path="/v1/files")
    request = entry["request"]
    if "?" in request["uri"]:  # the credential goes to a header: the uri is all filler
        request["headers"]["apikey"] = request["uri"].rsplit("=", 1)[1]
    request["querystring"] = {}
    request.pop("url", None)
    return _Out(_fit(lambda s: _with(entry, ("request", "uri"), "/" + s.replace(" ", "/"))), 1, ())


def _huge_dropped_header(c: _Ctx) -> _Out:
    entry = c.apisix()
    return _Out(_fit(lambda s: _with(entry, ("request", "headers", "x-debug-trace"), s)), 1, ())


def _huge_header_list(c: _Ctx) -> _Out:
    entry = c.apisix()
    base = len(encode(entry)) + len(',"accept":[]')
    item = "application/json"
    n = (HUGE_RECORD_BYTES - base) // (len(item) + 3)
    entry["request"]["headers"]["accept"] = [item] * n
    return _Out(encode(entry), 1, ())


def _huge_bad(c: _Ctx) -> _Out:
    entry = c.apisix(status="abc")
    return _bad(
        _fit(lambda s: _with(entry, ("request", "headers", "user-agent"), s)), "invalid_event"
    )


def _huge_truncated(c: _Ctx) -> _Out:
    entry = c.apisix()
    value = _fit(lambda s: _with(entry, ("request", "headers", "user-agent"), s))
    return _bad(value[: len(value) - c.rng.randint(2, 400_000)], "not_json")


# Event times no clock of this century accepts: ahead of it by far more than the skew bound,
# behind it by far more than the age bound. The mix's good entries stay within both.
FAR_FUTURE_MS: Final = 4_102_358_400_000  # 2099-12-31
ANCIENT_MS: Final = 978_307_200_000  # 2001-01-01
CONSTANT_REQUEST_ID: Final = "hostile-constant-request-id"


def _event_time_batch(c: _Ctx, t: int, reason: str) -> _Out:
    entries: list[Any] = [c.any_entry() for _ in range(c.rng.randint(2, 4))]
    index = c.rng.randrange(len(entries) + 1)
    entries.insert(index, _with(c.apisix(), ("start_time",), t))
    return _Out(encode(entries), len(entries) - 1, (reason,))


def _constant_request_id(c: _Ctx, n: int) -> _Out:
    # Distinct calls that all carry the same client-chosen x-request-id: each is billed.
    entries = []
    for _ in range(n):
        entry = c.apisix(consumer="probe-constant-id")
        entry["request"]["headers"]["x-request-id"] = CONSTANT_REQUEST_ID
        entries.append(entry)
    return _Out(encode(entries[0] if n == 1 else entries), n, ())


def _amplifying_path(c: _Ctx) -> _Out:
    # ~600 KB of matrix parameters that redaction rewrites one by one: the enriched copy grew to
    # twice the record, past the producer's max.request.size.
    entry = c.apisix(path="/x")
    request = entry["request"]
    if "?" in request["uri"]:
        request["headers"]["apikey"] = request["uri"].rsplit("=", 1)[1]
    request["uri"] = "/x;&sig=a" * 66_000
    request["querystring"] = {}
    request.pop("url", None)
    return _bad(encode(entry), "enriched_too_large")


def _amplifying_consumer(c: _Ctx) -> _Out:
    # A 400 KB consumer name is the rate key (the Kafka key) and the consumer: three copies.
    return _bad(encode(c.apisix(consumer="c" * 400_000)), "enriched_too_large")


def _rotating_ipv6(c: _Ctx) -> _Out:
    # Key guessing from addresses rotated inside one /64: 401s, each from another address and
    # with another wrong key; the job counts them as one client network (one burst).
    net = c.rng.randrange(0x100, 0xFFFF)
    entries = []
    for i in range(c.rng.randint(5, 30)):
        ip = f"2001:db8:{net:x}::{i + 1:x}"
        c.client_ips.add(ip)
        c.record_ips.append(ip)
        entry = c.apisix(consumer=None, status=401)
        entry["client_ip"] = ip
        entries.append(entry)
    return _Out(encode(entries), len(entries), ())


def _huge_not_utf8(c: _Ctx) -> _Out:
    entry = c.apisix()
    entry["request"]["headers"]["x-client-name"] = "@@BAD@@"
    value = _fit(lambda s: _with(entry, ("request", "headers", "user-agent"), s))
    return _bad(value.replace(b"@@BAD@@", b"M\xfcller@@"), "not_utf8")


# --------------------------------------------------------------------------------------------
# Secret shapes: credentials recognised by their form wherever they stand, not by their name
# --------------------------------------------------------------------------------------------

_ALNUM: Final = string.ascii_letters + string.digits
_WRAPPED_FIELD: Final = "hsk_wrapped"
SHAPED_SECRET_PATTERN: Final = re.compile(
    r"(?:AKIA|ASIA)HSK[0-9A-Z]{13}"
    r"|(?<!\d)4\d{3}(?:[ -]?\d{4}){3}(?!\d)"
    r"|(?<![0-9a-f])[0-9a-f]{40}(?![0-9a-f])"
    r"|eyJoc2tfd3JhcHBlZCI6[A-Za-z0-9+/_-]+={0,2}"
)
"""Finds the planted credentials that cannot carry the ``hsk`` marker: AWS key ids, card
numbers, hex keys, and base64-wrapped records (``{"hsk_wrapped": ...`` encodes to
``eyJoc2tfd3JhcHBlZCI6``); check candidates against ``HostileMix.secrets``."""


def _plant(c: _Ctx, value: str) -> str:
    c.secrets.add(value)
    c.record_secrets.append(value)
    return value


def _hsk(c: _Ctx, alphabet: str = _ALNUM) -> str:
    """A planted ``hsk`` credential drawn from ``alphabet``, with upper and lower case and
    digits, as real keys have (the job's randomness test asks for all three)."""
    while True:
        body = "".join(c.rng.choice(alphabet) for _ in range(SECRET_LENGTH - 3))
        if (
            any(ch.isupper() for ch in body)
            and any(ch.islower() for ch in body)
            and any(ch.isdigit() for ch in body)
        ):
            return _plant(c, SECRET_PREFIX + body)


def _luhn_card(c: _Ctx) -> str:
    digits = [4] + [c.rng.randrange(10) for _ in range(14)]
    total = sum(d if i % 2 else (d * 2 - 9 if d > 4 else d * 2) for i, d in enumerate(digits))
    number = "".join(map(str, digits)) + str(-total % 10)
    sep = c.rng.choice(["", " ", "-"])
    return _plant(c, sep.join(number[i : i + 4] for i in range(0, 16, 4)) if sep else number)


def _shaped(c: _Ctx) -> dict[str, str]:
    """One planted credential of each shape the job recognises by form."""
    more = "".join(c.rng.choice(_ALNUM) for _ in range(11))
    digits = "".join(c.rng.choice(string.digits) for _ in range(25))
    return {
        "stripe": c.rng.choice(["sk_live_", "rk_live_"]) + _hsk(c),
        "github": "ghp_" + _hsk(c) + more[:4],
        "github_pat": "github_pat_" + _hsk(c, _ALNUM + "_") + "_" + more,
        "slack": f"xoxb-{digits[:12]}-{digits[12:]}-{_hsk(c)}",
        "google": "AIza" + _hsk(c, _URLSAFE) + more[:3],
        "telegram": f"{c.rng.randint(10**8, 10**9 - 1)}:{_hsk(c, _URLSAFE)}{more[:3]}",
        "jwt": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJob3N0aWxlIn0."
        + _hsk(c, _URLSAFE)
        + more,
        "aws_key_id": _plant(
            c,
            c.rng.choice(["AKIA", "ASIA"])
            + "HSK"
            + "".join(c.rng.choice(string.ascii_uppercase + string.digits) for _ in range(13)),
        ),
        "aws_secret": _hsk(c) + "".join(c.rng.choice(_ALNUM + "+/") for _ in range(8)),
        "hex": _plant(c, "".join(c.rng.choice("0123456789abcdef") for _ in range(40))),
        "card": _luhn_card(c),
        # 40 base62 characters: the length of many real keys.
        "random": _hsk(c) + more[:8],
    }


def _pct_all(text: str) -> str:
    return "".join(f"%{b:02X}" for b in text.encode())


def _secret_path(c: _Ctx) -> _Out:
    # Every shape as a path segment (one percent-encoded), a Telegram-style /bot<token>/ and
    # a ;jsessionid= matrix parameter: the enriched path must hold none of them.
    s = _shaped(c)
    segments = [quote(s[name], safe="") for name in sorted(s) if name != "telegram"]
    pct = c.rng.randrange(len(segments))
    segments[pct] = _pct_all(unquote(segments[pct]))
    path = f"/bot{s['telegram']}/v1/" + "/".join(segments) + f";jsessionid={_hsk(c, _URLSAFE)}"
    if c.rng.random() < 0.5:
        return _good(c.apisix(path=path))
    entry = c.kong()
    entry["request"]["uri"] = path
    entry["request"]["url"] = f"https://{_API_HOST}:8443{path}"
    return _good(entry)


def _secret_agent(c: _Ctx) -> _Out:
    s = _shaped(c)
    ua = (
        f"deploy-bot/1.0 (token={s['github']}; {s['aws_key_id']}) {s['jwt']} Bearer {_hsk(c)} "
        f"{s['stripe']} key={_hsk(c)} card {s['card']} {s['aws_secret']} {s['random']} "
        f"{s['slack']} {s['google']} {s['hex']}"
    )
    if c.rng.random() < 0.5:
        return _good(c.apisix(ua=ua))
    return _good(c.kong(ua=ua))


def _secret_key_headers(c: _Ctx) -> _Out:
    # Credential headers beyond apikey/Authorization: dropped from the event, the key
    # fingerprinted.
    entry = c.apisix()
    headers = entry["request"]["headers"]
    headers["x-goog-api-key"] = "AIza" + _hsk(c, _URLSAFE) + "abc"
    headers["ocp-apim-subscription-key"] = _hsk(c)
    headers["x-hub-signature-256"] = "sha256=" + _shaped(c)["hex"]
    headers["cookie"] = f"theme=dark; session_token={_hsk(c)}"
    return _good(entry)


def _free_text(c: _Ctx) -> str:
    s = _shaped(c)
    return (
        f"upstream said {s['stripe']} and {s['github']}, retried with {s['aws_key_id']} / "
        f"{s['aws_secret']} (jwt {s['jwt']}); card {s['card']}; {s['slack']} {s['google']} "
        f"{s['telegram']} {s['hex']} {s['random']} {s['github_pat']} "
        f"Cookie: theme=dark; session_token={_hsk(c)}"
    )


def _secret_custom_fields(c: _Ctx) -> _Out:
    # Custom fields named in camelCase, with inner underscores, percent-encoded; a card in a
    # body field; every shape in free text. Status "abc": dead-lettered.
    entry = c.apisix(status="abc")
    entry["accessToken"] = _hsk(c)
    entry["clientSecret"] = _hsk(c)
    entry["sessionToken"] = _hsk(c)
    entry["aws_secret_access_key"] = _shaped(c)["aws_secret"]
    entry["access%5Ftoken"] = _hsk(c)
    entry["x-hub-signature-256"] = "sha256=" + _shaped(c)["hex"]
    entry["request"]["body"] = {"cardNumber": _luhn_card(c), "note": _free_text(c)}
    entry["note"] = _free_text(c)
    return _bad(encode(entry), "invalid_event")


def _raw_http(c: _Ctx, newline: str = "\r\n") -> str:
    s = _shaped(c)
    lines = [
        f"POST /v1/keys/{s['stripe']}/charges?apikey={_hsk(c)}&limit=1 HTTP/1.1",
        f"Host: {_API_HOST}",
        f"apikey: {_hsk(c)}",
        f"x-goog-api-key: {s['google']}",
        f"X-Hub-Signature-256: sha256={s['hex']}",
        f"Cookie: theme=dark; session_token={_hsk(c)}",
        f"Authorization: Basic {_hsk(c)}",
        f"User-Agent: deploy-bot/1.0 token={s['github']}",
        f"X-Client-IP: {c.ip()}",
        "",
        _dumps({"accessToken": _hsk(c), "card": s["card"], "note": _free_text(c)}),
    ]
    return newline.join(lines)


def _secret_base64(c: _Ctx) -> _Out:
    entry = {_WRAPPED_FIELD: True, **c.apisix(status="abc")}
    entry["accessToken"] = _hsk(c)
    entry["note"] = _free_text(c)
    b64encode = base64.b64encode if c.rng.random() < 0.5 else base64.urlsafe_b64encode
    blob = _plant(c, b64encode(encode(entry)).decode())
    if c.rng.random() < 0.5:
        return _bad(blob.encode(), "not_json")
    return _bad(encode({"data": blob}), "unknown_format")


def _secret_double_escaped(c: _Ctx) -> _Out:
    s = _shaped(c)
    inner = _dumps({"apikey": _hsk(c), "accessToken": _hsk(c), "note": f"{s['stripe']} {s['jwt']}"})
    envelope = encode({"envelope": _dumps({"payload": inner, "note": s["github"]})})
    if c.rng.random() < 0.5:
        return _bad(envelope, "unknown_format")
    return _bad(b"garbage " + envelope, "not_json")


@dataclass(frozen=True)
class Kind:
    name: str
    weight: float
    build: Callable[[_Ctx], _Out]
    huge: bool = False
    """Near the broker's size limit: a fixed few per mix instead of a share of it."""


def _k(name: str, weight: float, build: Callable[[_Ctx], _Out], huge: bool = False) -> Kind:
    return Kind(name, weight, build, huge)


KINDS: Final[tuple[Kind, ...]] = (
    # malformed JSON
    _k("truncated_json", 6, _truncated),
    _k("trailing_garbage", 4, _trailing_garbage),
    _k("single_quotes", 3, _single_quotes),
    _k("nan_literal", 2, lambda c: _literal(c, "NaN")),
    _k("infinity_literal", 2, lambda c: _literal(c, c.rng.choice(["Infinity", "-Infinity"]))),
    _k("raw_control_char", 2, _raw_control),
    _k("utf8_bom", 1, lambda c: _bad(b"\xef\xbb\xbf" + encode(c.apisix()), "not_json")),
    _k("comment", 1, lambda c: _bad(b"// access log\n" + encode(c.apisix()), "not_json")),
    _k("whitespace_only", 1, lambda c: _bad(c.rng.choice([b" ", b"\n\t ", b"\x00"]), "not_json")),
    _k("unquoted_keys", 1, lambda c: _bad(b"{status: 200, start_time: 1}", "not_json")),
    _k("huge_int_literal", 0.2, lambda c: _number_text(c, ("latency",), "9" * 5000, "not_json")),
    # wrong types inside an entry
    _k("status_list", 3, lambda c: _bad(encode(c.apisix(status=[200])), "invalid_event")),
    _k("status_dict", 2, lambda c: _bad(encode(c.apisix(status={"code": 200})), "invalid_event")),
    _k("status_abc", 3, lambda c: _bad(encode(c.apisix(status="abc")), "invalid_event")),
    _k("status_1000", 1, lambda c: _bad(encode(c.apisix(status=1000)), "invalid_event")),
    _k("status_negative", 1, lambda c: _bad(encode(c.apisix(status=-1)), "invalid_event")),
    _k(
        "status_1e400",
        1,
        lambda c: _number_text(c, ("response", "status"), "1e400", "invalid_event"),
    ),
    _k(
        "status_400_digits",
        0.5,
        lambda c: _number_text(c, ("response", "status"), "1" + "0" * 400, "invalid_event"),
    ),
    _k(
        "start_time_garbage",
        3,
        lambda c: _bad(encode(_with(c.apisix(), ("start_time",), "yesterday")), "invalid_event"),
    ),
    _k(
        "start_time_null",
        1,
        lambda c: _bad(encode(_with(c.apisix(), ("start_time",), None)), "invalid_event"),
    ),
    _k(
        "start_time_seconds",
        1,
        lambda c: _bad(encode(_with(c.apisix(), ("start_time",), c.t // 1000)), "invalid_event"),
    ),
    _k("start_time_1e400", 1, lambda c: _number_text(c, ("start_time",), "1e400", "invalid_event")),
    # (List-shaped headers and query strings that carry a credential are PROBES.)
    _k(
        "headers_list",
        2,
        lambda c: _bad(
            encode(_with(c.apisix(), ("request", "headers"), [["accept", "application/json"]])),
            "invalid_event",
        ),
    ),
    _k(
        "header_value_number",
        1,
        lambda c: _bad(
            encode(_with(c.apisix(), ("request", "headers", "content-length"), 12)),
            "invalid_event",
        ),
    ),
    _k(
        "request_string",
        1,
        lambda c: _bad(
            encode(_with(c.apisix(), ("request",), f"GET /?apikey={c.secret()}")), "invalid_event"
        ),
    ),
    _k(
        "client_ip_number",
        1,
        lambda c: _bad(encode(_with(c.apisix(), ("client_ip",), 3405803783)), "invalid_event"),
    ),
    _k(
        "querystring_list",
        1,
        lambda c: _bad(
            encode(_with(c.apisix(), ("request", "querystring"), ["limit", "10"])),
            "invalid_event",
        ),
    ),
    # A 1e400 size reaches int(inf) in the job: dead-lettered through its internal-error path.
    _k(
        "size_1e400",
        1,
        lambda c: _number_text(c, ("request", "size"), "1e400", "invalid_event"),
    ),
    _k(
        "latency_400_digits",
        0.5,
        lambda c: _number_text(c, ("latency",), "1" + "0" * 400, "invalid_event"),
    ),
    _k("kong_status_abc", 2, lambda c: _bad(encode(c.kong(status="abc")), "invalid_event")),
    _k(
        "generic_bad_timestamp",
        1,
        lambda c: _bad(encode(c.generic(timestamp="not a date")), "invalid_event"),
    ),
    _k(
        "generic_year_9999",
        1,
        lambda c: _bad(encode(c.generic(timestamp="9999-12-31T23:59:59Z")), "invalid_event"),
    ),
    _k(
        "generic_negative_units",
        1,
        lambda c: _bad(encode(_with(c.generic(), ("units",), -1)), "invalid_event"),
    ),
    _k(
        "generic_inf_units",
        1,
        lambda c: _bad(encode(_with(c.generic(), ("units",), "1e400")), "invalid_event"),
    ),
    _k("generic_blank_user", 1, lambda c: _bad(encode(c.generic(user="   ")), "invalid_event")),
    # wrong top-level types
    _k("json_null", 2, lambda c: _bad(b"null", "wrong_type")),
    _k("json_number", 1, lambda c: _bad(b"-0.5e3", "wrong_type")),
    _k("json_string", 1, lambda c: _bad(encode(f"apikey={c.secret()}"), "wrong_type")),
    _k("json_true", 1, lambda c: _bad(b"true", "wrong_type")),
    _k("array_of_scalars", 2, _scalars),
    _k("array_of_arrays", 1, lambda c: _bad(encode([[c.apisix()]]), "wrong_type")),
    # missing event time, unknown format
    _k(
        "apisix_no_start_time",
        2,
        lambda c: _bad(encode(_without(c.apisix(), "start_time")), "missing_event_time"),
    ),
    _k(
        "kong_no_started_at",
        1,
        lambda c: _bad(encode(_without(c.kong(), "started_at")), "missing_event_time"),
    ),
    _k(
        "generic_no_timestamp",
        1,
        lambda c: _bad(encode(_without(c.generic(), "timestamp")), "missing_event_time"),
    ),
    _k("empty_object", 1, lambda c: _bad(b"{}", "unknown_format")),
    _k("unknown_object", 1, lambda c: _bad(encode({"msg": "GET /", "ts": c.t}), "unknown_format")),
    _k(
        "request_only",
        1,
        lambda c: _bad(encode({"request": c.apisix()["request"]}), "unknown_format"),
    ),
    # empty
    _k("empty_array", 1, lambda c: _bad(b"[]", "empty_batch")),
    _k("empty_array_spaced", 1, lambda c: _bad(b" [ \n ] ", "empty_batch")),
    _k("empty_value", 2, lambda c: _bad(b"", "empty_record")),
    _k("tombstone", 1, lambda c: _bad(None, "empty_record")),
    _k(
        "too_many_entries",
        0.05,
        lambda c: _bad(b"[" + b",".join([b"{}"] * (MAX_BATCH_ENTRIES + 1)) + b"]", "too_large"),
    ),
    # deep nesting
    _k("depth_33", 1, lambda c: _deep_in_entry(c, MAX_DEPTH)),
    _k("deep_arrays_50", 1, lambda c: _bad(b"[" * 50 + b"]" * 50, "too_deep")),
    _k("deep_objects_50", 1, lambda c: _deep_objects(50)),
    _k("deep_5000", 0.2, lambda c: _bad(b"[" * 5000 + b"]" * 5000, "too_deep")),
    _k("deep_element_in_batch", 1, _deep_element),
    # invalid UTF-8
    _k("lone_continuation", 2, lambda c: _bad(_with_ua_bytes(c, b"\x80\xbf"), "not_utf8")),
    _k("overlong", 2, lambda c: _bad(_with_ua_bytes(c, b"\xc0\xaf\xe0\x80\xaf"), "not_utf8")),
    _k(
        "truncated_multibyte_mid",
        1,
        lambda c: _bad(_with_ua_bytes(c, b"\xe2\x82 \xf0\x9f\x98"), "not_utf8"),
    ),
    _k(
        "truncated_multibyte_end",
        1,
        lambda c: _bad(encode(c.apisix()) + b"\xf0\x9f\x98", "not_utf8"),
    ),
    _k("cesu_surrogate", 1, lambda c: _bad(_with_ua_bytes(c, b"\xed\xa0\xbd"), "not_utf8")),
    _k("above_u10ffff", 1, lambda c: _bad(_with_ua_bytes(c, b"\xf4\x90\x80\x80"), "not_utf8")),
    _k("invalid_start_byte", 1, lambda c: _bad(_with_ua_bytes(c, b"\xff\xfe"), "not_utf8")),
    _k("latin1", 2, _latin1),
    _k("utf16_or_32", 1, _utf16),
    _k("escaped_lone_high_surrogate", 2, lambda c: _lone_surrogate(c, "\\ud800")),
    _k("escaped_lone_low_surrogate", 1, lambda c: _lone_surrogate(c, "\\udc00")),
    _k("escaped_reversed_pair", 1, lambda c: _lone_surrogate(c, "\\ude00\\ud83d")),
    _k("lone_surrogate_in_batch", 1, _surrogate_element),
    # arrays with bad elements; retries
    _k("mixed_batch_one_bad", 4, _mixed_small),
    _k("batch_with_retry", 1, _retry_batch),
    # valid, awkward: must be enriched
    _k("unicode_emoji", 1, lambda c: _unicode(c, "app/2.0 (📱; 🇩🇪)", "/v1/café/😀/✓")),
    _k("unicode_rtl", 1, lambda c: _unicode(c, "\u200fمتصفح\u200e/1.0 \u202eevil\u202c")),
    _k("unicode_zwj", 1, lambda c: _unicode(c, "family 👨\u200d👩\u200d👧 zwnj a\u200cb")),
    _k("unicode_nul_escape", 1, lambda c: _unicode(c, "nul\u0000inside", "/v1/a\u0000b")),
    _k("unicode_combining", 1, lambda c: _unicode(c, "e\u0301a\u0308 Z\u0336\u0337\u0338")),
    _k("escaped_surrogate_pair", 1, _escaped_pair),
    _k("unicode_bom_in_string", 1, lambda c: _unicode(c, "\ufeffbom-agent")),
    _k("unicode_line_separators", 1, lambda c: _unicode(c, "a\u2028b\u2029c\u0085d")),
    _k("unicode_noncharacters", 1, lambda c: _unicode(c, "\uffff\ufffe\U0010ffff")),
    _k("unicode_consumer", 1, lambda c: _good(c.apisix(consumer="顧客-αβγ-🙂"))),
    _k("kong_unicode", 1, lambda c: _good(c.kong(ua="Kong-Prüfung/😀\u200d"))),
    _k("status_numeric_string", 1, lambda c: _good(c.apisix(status="502"))),
    _k("latency_1e-400", 1, lambda c: _number_good(c, ("latency",), "1e-400")),
    _k("duplicate_keys", 1, _duplicate_keys),
    _k("trailing_whitespace", 1, lambda c: _Out(encode(c.kong()) + b" \r\n\t", 1, ())),
    _k("depth_32", 1, lambda c: _deep_in_entry(c, MAX_DEPTH - 1)),
    _k("generic_iso_timestamp", 1, lambda c: _good(c.generic(timestamp=_iso(c.t)))),
    # near the broker's size limit
    _k("huge_user_agent", 1, _huge_ua, huge=True),
    _k("huge_uri", 1, _huge_uri, huge=True),
    _k("huge_dropped_header", 1, _huge_dropped_header, huge=True),
    _k("huge_header_list", 1, _huge_header_list, huge=True),
    _k("huge_bad_status", 1, _huge_bad, huge=True),
    _k("huge_truncated", 1, _huge_truncated, huge=True),
    _k("huge_not_utf8", 1, _huge_not_utf8, huge=True),
    _k("big_batch", 1, lambda c: _batch_to_size(c, None), huge=True),
    _k("big_batch_one_bad", 1, lambda c: _batch_to_size(c, c.rng.randrange(10**6)), huge=True),
    _k("deep_100000", 1, lambda c: _bad(b"[" * 100_000 + b"]" * 100_000, "too_deep"), huge=True),
    # issue 18: event-time bounds, retries by fingerprint, numeric and size bounds
    _k(
        "future_event_time",
        2,
        lambda c: _bad(
            encode(_with(c.apisix(), ("start_time",), FAR_FUTURE_MS)), "event_time_future"
        ),
    ),
    _k(
        "kong_future_event_time",
        1,
        lambda c: _bad(
            encode(_with(c.kong(), ("started_at",), FAR_FUTURE_MS)), "event_time_future"
        ),
    ),
    _k("future_in_batch", 1, lambda c: _event_time_batch(c, FAR_FUTURE_MS, "event_time_future")),
    _k(
        "ancient_event_time",
        2,
        lambda c: _bad(
            encode(_with(c.apisix(), ("start_time",), ANCIENT_MS)), "event_time_too_old"
        ),
    ),
    _k(
        "generic_ancient_iso",
        1,
        lambda c: _bad(encode(c.generic(timestamp=_iso(ANCIENT_MS))), "event_time_too_old"),
    ),
    _k("ancient_in_batch", 1, lambda c: _event_time_batch(c, ANCIENT_MS, "event_time_too_old")),
    _k("constant_request_id", 2, lambda c: _constant_request_id(c, 1)),
    _k("constant_request_id_batch", 1, lambda c: _constant_request_id(c, 3)),
    _k(
        "huge_units",
        1,
        lambda c: _bad(encode(_with(c.generic(), ("units",), 1e308)), "invalid_event"),
    ),
    _k(
        "units_over_max",
        1,
        lambda c: _bad(encode(_with(c.generic(), ("units",), 1e10)), "invalid_event"),
    ),
    _k(
        "latency_over_a_day",
        1,
        lambda c: _bad(encode(_with(c.apisix(lean=False), ("latency",), 1e12)), "invalid_event"),
    ),
    _k(
        "size_over_2_53",
        1,
        lambda c: _bad(encode(_with(c.kong(), ("request", "size"), 2.0**60)), "invalid_event"),
    ),
    _k("ipv6_rotation", 1, _rotating_ipv6),
    _k("amplifying_path", 1, _amplifying_path, huge=True),
    _k("amplifying_consumer", 1, _amplifying_consumer, huge=True),
    # issue 18: secrets recognised by shape and by normalized name
    _k("secret_shapes_in_path", 2, _secret_path),
    _k("secret_shapes_in_user_agent", 2, _secret_agent),
    _k("secret_key_headers", 1, _secret_key_headers),
    _k("secret_custom_fields", 2, _secret_custom_fields),
    _k("secret_raw_http", 1, lambda c: _bad(_raw_http(c).encode(), "not_json")),
    _k(
        "secret_raw_http_in_field",
        1,
        lambda c: _bad(
            encode({"raw": _raw_http(c, c.rng.choice(["\r\n", "\n"]))}), "unknown_format"
        ),
    ),
    _k("secret_free_text", 1, lambda c: _bad(_free_text(c).encode(), "not_json")),
    _k("secret_base64_wrapped", 1, _secret_base64),
    _k("secret_double_escaped_json", 1, _secret_double_escaped),
)
KIND_NAMES: Final = frozenset(k.name for k in KINDS)


# --------------------------------------------------------------------------------------------
# Probes: regressions (each broke the job once)
# --------------------------------------------------------------------------------------------


def _probe_inf_latency(c: _Ctx) -> _Out:
    # 1e400 is valid JSON syntax that json.loads turns into inf; the job must not emit Infinity.
    return _number_text(c, ("latency",), "1e400", "invalid_event")


def _probe_inf_kong(c: _Ctx) -> _Out:
    text = _dumps(_with(c.kong(), ("latencies", "request"), "@@NUM@@"))
    return _bad(text.replace('"@@NUM@@"', "1e400").encode(), "invalid_event")


def _probe_dlq_cut(c: _Ctx) -> _Out:
    # Scrubbed, the record reads ...","apikey":"[REDACTED]"... with the cut at 4096 characters
    # inside the marker; scrubbing the cut text again re-expands it past the limit.
    limit = 4096
    head = '{"request":{"headers":{"user-agent":"'
    pad = limit - len(head) - len('","apikey":"[RE')
    text = head + "a" * pad + '","apikey":"' + c.secret() + '"}}'
    return _bad(text.encode(), "not_json")


def _probe_utf16_credentials(c: _Ctx) -> _Out:
    # UTF-16 text decodes (with backslash escapes) to ASCII interleaved with NULs, which no
    # scrubbing pattern matches: the credential and the address reach the dead letter.
    return _bad(_dumps(c.apisix()).encode("utf-16"), "not_utf8")


def _probe_headers_as_list(c: _Ctx) -> _Out:
    # Node's rawHeaders shape: a flat name, value, name, value list. Not a valid entry, and the
    # dead letter's payload is the parsed entry, in which only dict-shaped headers are redacted.
    entry = c.apisix()
    entry["request"]["headers"] = ["host", _API_HOST, "apikey", c.secret()]
    return _bad(encode(entry), "invalid_event")


def _probe_querystring_as_pairs(c: _Ctx) -> _Out:
    entry = c.apisix()
    entry["request"]["querystring"] = [["limit", "10"], ["apikey", c.secret()]]
    return _bad(encode(entry), "invalid_event")


PROBES: Final[dict[str, tuple[Callable[[_Ctx], _Out], str]]] = {
    "probe_inf_latency_apisix": (
        _probe_inf_latency,
        "APISIX latency 1e400 parses to inf and is enriched: the enriched JSON carries "
        "latency_ms Infinity (not JSON); the contract dead-letters non-finite numbers",
    ),
    "probe_inf_latency_kong": (
        _probe_inf_kong,
        "Kong latencies.request 1e400: same as APISIX, latency_ms Infinity on the enriched topic",
    ),
    "probe_dlq_payload_over_limit": (
        _probe_dlq_cut,
        "the dead-letter payload exceeds dlq_payload_chars when the cut lands inside a "
        "[REDACTED] marker (the re-scrub of the cut text expands it again)",
    ),
    "probe_utf16_credentials": (
        _probe_utf16_credentials,
        "a UTF-16 record's credentials and client IP survive scrubbing in the dead letter "
        "(NUL-interleaved text matches no pattern)",
    ),
    "probe_headers_as_list": (
        _probe_headers_as_list,
        "headers logged as a flat [name, value, ...] list: the entry is dead-lettered with the "
        "credential in its payload (redact_structure only redacts dict-shaped headers, and no "
        'scrub pattern matches "apikey", "value")',
    ),
    "probe_querystring_as_pairs": (
        _probe_querystring_as_pairs,
        "querystring logged as [[name, value], ...] pairs: same leak as list-shaped headers",
    ),
}


# --------------------------------------------------------------------------------------------
# The mix
# --------------------------------------------------------------------------------------------


def _event_times(value: bytes) -> Iterable[int]:
    try:
        parsed = json.loads(value)
    except ValueError:
        return
    for entry in parsed if isinstance(parsed, list) else [parsed]:
        if isinstance(entry, dict):
            for name in ("start_time", "started_at", "timestamp"):
                t = entry.get(name)
                if isinstance(t, int | float) and not isinstance(t, bool):
                    yield int(t)


def _good_entries(value: bytes) -> int:
    parsed = json.loads(value)
    return len(parsed) if isinstance(parsed, list) else 1


def hostile_mix(
    n_hostile: int,
    good: list[bytes],
    seed: int,
    *,
    probes: bool = False,
    start_ms: int = DEFAULT_START_MS,
    huge_per_100k: int = 2,
) -> HostileMix:
    """``n_hostile`` hostile records interleaved with ``good`` (every entry of which is good).

    Every kind appears at least once when ``n_hostile`` allows; the huge kinds
    (near 1 MB each) appear ``huge_per_100k`` times per 100k hostile records (at least once); the
    rest of the slots are drawn by weight. ``probes`` spends one hostile slot on each of
    ``PROBES``. Good entries inside hostile records take the newest event time of the good records
    before them (``start_ms`` before the first), so they are not late.
    """
    if n_hostile < 0:
        raise ValueError("n_hostile must be >= 0")
    rng = random.Random(seed)
    ctx = _Ctx(rng, seed)
    by_name = {k.name: k for k in KINDS}
    repeat = max(1, round(n_hostile * huge_per_100k / 100_000))
    cover = [k.name for k in KINDS]
    cover += [k.name for k in KINDS if k.huge for _ in range(repeat - 1)]
    rng.shuffle(cover)
    plan = ((list(PROBES) if probes else []) + cover)[:n_hostile]
    bulk = [k for k in KINDS if not k.huge]
    drawn = rng.choices(bulk, [k.weight for k in bulk], k=n_hostile - len(plan))
    plan += [k.name for k in drawn]
    rng.shuffle(plan)

    total = n_hostile + len(good)
    good_at = set(rng.sample(range(total), len(good)))
    mix = HostileMix([], [])
    good_iter = iter(good)
    hostile_iter = iter(plan)
    newest = start_ms
    for i in range(total):
        if i in good_at:
            value = next(good_iter)
            mix.records.append(value)
            mix.expected.append(Expected("good", _good_entries(value), ()))
            newest = max([newest, *_event_times(value)])
            continue
        name = next(hostile_iter)
        ctx.begin()
        ctx.t = newest
        if name in PROBES:
            out = PROBES[name][0](ctx)
            mix.probe_indexes.append(i)
        else:
            out = by_name[name].build(ctx)
        mix.records.append(out.value)
        mix.expected.append(
            Expected(
                name,
                out.events,
                out.reasons,
                out.deduplicated,
                tuple(ctx.record_secrets),
                tuple(ctx.record_ips),
            )
        )
    mix.secrets = ctx.secrets
    mix.processing_ms = newest
    mix.client_ips = ctx.client_ips
    return mix


# --------------------------------------------------------------------------------------------
# Checking outputs
# --------------------------------------------------------------------------------------------


ADDRESS_PATTERN: Final = re.compile(
    r"(?:203\.0\.113|198\.51\.100|192\.0\.2)\.\d{1,3}|2001:db8:[0-9a-f]{1,4}::[0-9a-f]{1,4}",
    re.IGNORECASE,
)
"""Finds addresses of the kind ``hostile_mix`` plants (also inside other text, e.g. after a
backslash escape); check them against ``client_ips``."""


def normalized(text: str) -> str:
    """Output text with NULs removed, so NUL-interleaved (UTF-16/32) copies of a value show."""
    return text.replace("\x00", "").replace("\\u0000", "")


def find_planted(text: str, secrets: Set[str], client_ips: Set[str]) -> set[str]:
    """The planted credentials and addresses that occur in ``text`` (after ``normalized``)."""
    flat = normalized(text)
    found = {m.group(0) for m in SECRET_PATTERN.finditer(flat)} & secrets
    found |= {m.group(0) for m in SHAPED_SECRET_PATTERN.finditer(flat)} & secrets
    found |= {m.group(0).lower() for m in ADDRESS_PATTERN.finditer(flat)} & client_ips
    return found


_TOKEN_RUN: Final = re.compile(r"[A-Za-z0-9_-]{16,}")


def find_tokens(text: str, tokens: Set[str]) -> set[str]:
    """The ``tokens`` that occur in ``text``: fast for many url-safe tokens (API keys) in a
    large text, where one substring search per token would take minutes.

    Scans each run of url-safe characters once and looks up every window of a token length;
    tokens with other characters, or shorter than 16, are searched for plainly.
    """
    plain = {t for t in tokens if len(t) < 16 or not _TOKEN_RUN.fullmatch(t)}
    found = {t for t in plain if t in text}
    lengths = sorted({len(t) for t in tokens - plain})
    if not lengths:
        return found
    wanted = tokens - plain
    for match in _TOKEN_RUN.finditer(text):
        run = match.group(0)
        for length in lengths:
            if length > len(run):
                break
            found.update(
                w
                for w in (run[i : i + length] for i in range(len(run) - length + 1))
                if w in wanted
            )
    return found


@dataclass(frozen=True)
class Finding:
    index: int
    kind: str
    problem: str


def check_outputs(
    index: int,
    exp: Expected,
    events: Sequence[dict[str, Any]],
    dead_letters: Sequence[dict[str, Any]],
    dlq_payload_chars: int,
    *,
    enriched_events: int | None = None,
) -> list[Finding]:
    """Compare one record's outputs with its expectation: counts, reasons, payload size, strict
    JSON, planted credentials and addresses. ``enriched_events`` overrides ``len(events)`` (a
    reader of the enriched topic sees events after the job dropped retries)."""
    out: list[Finding] = []

    def bad(problem: str) -> None:
        out.append(Finding(index, exp.kind, problem))

    got_events = len(events) if enriched_events is None else enriched_events
    want_events = exp.events if enriched_events is not None else exp.events + exp.deduplicated
    got_reasons = tuple(d["reason"] for d in dead_letters)
    if got_events != want_events:
        bad(f"{got_events} events, expected {want_events}")
    if got_reasons != exp.reasons:
        bad(f"dead letters {got_reasons}, expected {exp.reasons}")
    for d in dead_letters:
        if len(d["payload"]) > dlq_payload_chars:
            bad(f"dead-letter payload of {len(d['payload'])} chars > {dlq_payload_chars}")
    texts = []
    for item in (*events, *dead_letters):
        try:
            texts.append(json.dumps(item, ensure_ascii=False, allow_nan=False))
        except ValueError:
            bad("output is not strict JSON (NaN/Infinity): " + json.dumps(item)[:300])
            texts.append(json.dumps(item, ensure_ascii=False))
    found = find_planted("\n".join(texts), set(exp.secrets), set(exp.client_ips))
    if found:
        bad(f"{len(found)} planted credentials/addresses leaked")
    return out


def self_check(
    mix: HostileMix,
    processor: Any,
    *,
    topic: str = "hostile",
    partitions: int = 2,
    dlq_payload_chars: int = 4096,
) -> list[Finding]:
    """Run ``processor`` (a ``metering.records.RecordProcessor``) over every record of the mix.

    Returns every disagreement with the expectations (probes included).
    """
    from metering.records import SourceRef

    findings: list[Finding] = []
    for i, (value, exp) in enumerate(zip(mix.records, mix.expected, strict=True)):
        src = SourceRef(topic, partition_of(i, partitions), i // partitions)
        result = processor.process(value, src)
        findings += check_outputs(i, exp, result.events, result.dead_letters, dlq_payload_chars)
        for d in result.dead_letters:
            coords = (d["source_topic"], d["source_partition"], d["source_offset"])
            if coords != (src.topic, src.partition, src.offset):
                findings.append(Finding(i, exp.kind, f"dead letter names {coords}"))
    return findings


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def default_good_records(seed: int, windows: int = 12, start_ms: int = DEFAULT_START_MS) -> Any:
    """``testkit.traffic``'s default scenario without its own bad records: (records, truth)."""
    from testkit.traffic import default_geoip_db, default_scenario, generate, ips_for_countries

    country_ips = ips_for_countries(default_geoip_db(), ["DE", "US", "JP", "GB", "BR"], 4, seed)
    scenario = replace(default_scenario(country_ips, start_ms, windows=windows), bad_records=False)
    generated = generate(scenario, seed=seed)
    return generated.records, generated.truth


def producer_config(bootstrap_servers: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap_servers,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 20,
        "message.max.bytes": PRODUCER_MESSAGE_MAX_BYTES,
        "client.id": "hostile-generator",
    }


def produce(
    bootstrap_servers: str, topic: str, records: Sequence[bytes | None], partitions: int
) -> int:
    """Produce record i to partition i mod ``partitions``; returns the delivery errors."""
    from confluent_kafka import Producer

    producer = Producer(producer_config(bootstrap_servers))
    errors: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    for i, value in enumerate(records):
        while True:
            try:
                producer.produce(
                    topic,
                    value=value,
                    partition=partition_of(i, partitions),
                    on_delivery=on_delivery,
                )
                break
            except BufferError:
                producer.poll(0.5)
        producer.poll(0)
    remaining = producer.flush(120)
    if errors:
        print(f"hostile: {len(errors)} delivery errors, first: {errors[0]}", file=sys.stderr)
    return len(errors) + remaining


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m testkit.hostile",
        description="Produce hostile records mixed with good gateway traffic; print expectations.",
    )
    parser.add_argument("--bootstrap-servers", metavar="HOST:PORT")
    parser.add_argument("--topic")
    parser.add_argument("--hostile", type=int, default=100_000, help="hostile records")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--windows", type=int, default=12, help="windows of good traffic")
    parser.add_argument("--probes", action="store_true", help="add the regression probes")
    parser.add_argument(
        "--self-check",
        action="store_true",
        help="run the job's parser over the mix instead of producing; exit 1 on disagreement",
    )
    args = parser.parse_args(argv)
    if not args.self_check and not (args.bootstrap_servers and args.topic):
        parser.error("--bootstrap-servers and --topic are required unless --self-check")

    good, truth = default_good_records(args.seed, args.windows)
    mix = hostile_mix(args.hostile, good, args.seed, probes=args.probes)
    summary = mix.summary()
    summary["good_events"] = truth.events
    if args.self_check:
        import secrets as pysecrets

        from metering.geo import GeoLookup, default_geoip_db
        from metering.records import RecordProcessor
        from metering.redact import Pseudonymizer

        geo = GeoLookup(default_geoip_db())
        processor = RecordProcessor(
            Pseudonymizer(pysecrets.token_bytes(32)),
            geo.lookup,
            clock=lambda: mix.processing_ms / 1000,
        )
        findings = self_check(mix, processor)
        geo.close()
        probes = set(mix.probe_indexes)
        main_findings = [f for f in findings if f.index not in probes]
        summary["self_check"] = {
            "disagreements": len(main_findings),
            "first_disagreements": [f"{f.index} {f.kind}: {f.problem}" for f in main_findings[:50]],
            "probe_failures": [f"{f.kind}: {f.problem}" for f in findings if f.index in probes],
        }
        print(json.dumps(summary, indent=2, ensure_ascii=False))
        return 1 if summary["self_check"]["disagreements"] else 0

    from confluent_kafka.admin import AdminClient

    meta = AdminClient({"bootstrap.servers": args.bootstrap_servers}).list_topics(
        args.topic, timeout=10
    )
    topic_meta = meta.topics.get(args.topic)
    if topic_meta is None or topic_meta.error is not None or not topic_meta.partitions:
        print(f"error: topic {args.topic} not found", file=sys.stderr)
        return 1
    summary["partitions"] = len(topic_meta.partitions)
    failed = produce(args.bootstrap_servers, args.topic, mix.records, len(topic_meta.partitions))
    summary["delivery_errors"] = failed
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
