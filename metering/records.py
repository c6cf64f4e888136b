"""From one Kafka record value to enriched events and dead letters. Pure: no Flink, no Kafka.

A record is one entry of a registered gateway format (``metering.gateways``: APISIX, Kong, a
generic usage event), or a JSON array of them (gateways batch). Each good entry becomes one flat
enriched event; each unusable record, or unusable element of an otherwise good array, becomes one
dead letter carrying its reason and source coordinates. Nothing raises: a bug in here would
restart the job on every replay of the same record.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import msgspec
import orjson
from pydantic import BaseModel, ValidationError

from metering import fastparse, gateways
from metering.gateways import NO_KEY, EventBuilder, EventFields, NoKey
from metering.gateways import Unusable as _Unusable
from metering.geo import Geo
from metering.redact import (
    REDACTED,
    Pseudonymizer,
    ip_prefix,
    is_secret_name,
    parse_ip,
    path_of,
    redact_headers,
    redact_query,
    redact_uri,
    redact_user_agent,
    scrub_text,
)

CLIENT_KEY_PREFIX = "client:"
"""Rate keys of rejected calls, counted per client network."""
SHARED_KEY = "global"
"""The rate key of the shared signal: rejected calls of every unidentified client together."""
AUTH_FAILURE_STATUSES = frozenset({401, 403})


DAY_S = 86_400
DEFAULT_MAX_FUTURE_SKEW_S = 300
DEFAULT_MAX_EVENT_AGE_S = 7 * DAY_S
SINK_MAX_REQUEST_BYTES = 1_048_576
"""The sinks' producer max.request.size at least: Kafka's default, set explicitly. Brokers accept
it with their default message.max.bytes (1,048,588)."""
SINK_RECORD_FRAMING_BYTES = 1024
"""Room for a record's batch header, timestamps and lengths around its key and value."""
DEFAULT_MAX_ENRICHED_BYTES = 1_000_000


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what a single record may cost."""

    max_record_bytes: int = 2 * 1024 * 1024
    max_depth: int = 32
    max_batch_entries: int = 10_000
    dlq_payload_chars: int = 4096
    max_future_skew_s: int = DEFAULT_MAX_FUTURE_SKEW_S
    """An entry's event time may lead processing time by this much (gateway clock skew)."""
    max_event_age_s: int = DEFAULT_MAX_EVENT_AGE_S
    """An entry's event time may trail processing time by this much."""
    max_enriched_bytes: int = DEFAULT_MAX_ENRICHED_BYTES
    """The enriched record's Kafka key plus value, UTF-8."""


@dataclass(frozen=True, slots=True)
class SourceRef:
    topic: str
    partition: int
    offset: int


@dataclass(slots=True)
class Result:
    events: list[dict[str, Any]]
    dead_letters: list[dict[str, Any]]
    encoded: list[str] = field(default_factory=list)
    """Each event's compact JSON (what the enriched topic carries), same order as ``events``."""
    dedup_ids: list[str | None] = field(default_factory=list)
    """Each event's retry fingerprint (see ``dedup_id``), same order; None: never a retry."""


# Marks a dead letter of a whole undecodable record, as opposed to a parsed entry.
_NO_ELEMENT: Any = object()


def _reject_constant(name: str) -> float:
    # NaN / Infinity are not JSON; accepting them would poison latencies and the output topics.
    raise ValueError(f"non-standard JSON constant {name}")


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(value: Any) -> bool:
    # json.loads joins escaped surrogate pairs into one character; a lone half stays a surrogate.
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


# orjson turns an integer outside 64 bits into a float; json keeps it exact.
_LOSSY = float(2**63)


def _inspect(value: Any, limit: int) -> tuple[bool, bool]:
    """(whether ``value`` nests deeper than ``limit`` containers, whether it holds a float
    orjson may have made of an integer too long for 64 bits).

    One pass over the containers, iteratively: its cost is per container and value, not per
    byte of text. It does not see a subtree that a later duplicate key replaced: the parser
    already dropped it, so nothing after this sees it either.
    """
    t = type(value)
    if t is not dict and t is not list:
        return False, t is float and not -_LOSSY < value < _LOSSY
    suspect = False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        container, depth = stack.pop()
        if depth > limit:
            return True, suspect
        for child in container.values() if type(container) is dict else container:
            t = type(child)
            if t is dict or t is list:
                stack.append((child, depth + 1))
            elif t is float and not -_LOSSY < child < _LOSSY:
                suspect = True
    return False, suspect


def dumps(value: Any) -> str:
    """Compact JSON text, non-ASCII kept. orjson (8x json.dumps on enriched events), and json
    for what orjson refuses: integers beyond 64 bits, lone surrogates, non-string keys.

    The values are json.dumps's; the text can differ in float notation (``1e-05`` is written
    ``0.00001``), and a non-finite float is written ``null``, where json writes ``Infinity``,
    which no JSON reader accepts.
    """
    try:
        return orjson.dumps(value).decode()
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _validation_detail(err: ValidationError) -> str:
    # Only locations and error types: pydantic's messages would echo the (secret) input values.
    parts = []
    for e in err.errors(include_url=False, include_input=False, include_context=False)[:5]:
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        parts.append(f"{loc}: {e['type']}")
    return "; ".join(parts)


def redact_structure(value: Any) -> Any:
    """A copy of a parsed payload with credential-bearing members removed or replaced."""
    if isinstance(value, list):
        return [redact_structure(v) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for k, v in value.items():
        key = k.lower() if isinstance(k, str) else k
        if key == "headers":
            # Any other shape (a flat list, pairs) is unknown: fail closed, keep nothing.
            out[k] = redact_headers(v) if isinstance(v, dict) else REDACTED
        elif key == "querystring":
            out[k] = redact_query(v) if isinstance(v, dict) else REDACTED
        elif key in ("uri", "url", "request_uri", "upstream_uri", "endpoint") and isinstance(
            v, str
        ):
            out[k] = redact_uri(v)
        elif key == "body":
            out[k] = REDACTED
        elif key == "consumer" and isinstance(v, dict):
            out[k] = {n: v[n] for n in ("username", "id", "custom_id") if n in v}
        elif key in ("client_ip", "remote_addr", "ip"):
            out[k] = "[IP]"
        elif isinstance(k, str) and is_secret_name(k):
            # accessToken, client-secret, access%5Ftoken, x-hub-signature-256, ...
            out[k] = REDACTED
        else:
            out[k] = redact_structure(v)
    return out


# Where the event builder hands an event's idempotency key to process(); never in the output.
_IDEMPOTENCY_KEY = "_idempotency_key"

_EVENT_TEMPLATE: dict[str, Any] = {
    "rate_key": None,
    "consumer": None,
    "key_fingerprint": None,
    "client_hash": None,
    "client_prefix": None,
    "country": None,
    "region": None,
    "city": None,
    "latitude": None,
    "longitude": None,
    "request_id": None,
    "gateway": None,
    "gateway_version": None,
    "gateway_host": None,
    "route": None,
    "service": None,
    "method": None,
    "host": None,
    "path": None,
    "status": None,
    "auth_failed": None,
    "latency_ms": None,
    "upstream_latency_ms": None,
    "gateway_latency_ms": None,
    "request_bytes": None,
    "response_bytes": None,
    "units": 1.0,
    "user_agent": None,
    "event_time": None,
}
"""What the event builder writes, in the order the enriched topic's JSON has it, each member with
its value when neither the format nor the builder sets it. Copying it and updating the copy
costs less per event than a call with a keyword per member."""


def fingerprint(data: bytes) -> str:
    """The retry fingerprint of an entry's bytes: 128 bits of SHA-256, which hashlib runs on the
    CPU's SHA instructions, cheaper than BLAKE2b or MD5 there (xxhash would be a dependency
    more; docs/performance.md has the figures). Unkeyed: it never leaves the job's dedup
    state."""
    return hashlib.sha256(data).hexdigest()[:32]


def entry_bytes(entry: Any) -> bytes:
    """A batch element's compact JSON: the same bytes whenever a gateway resends the batch."""
    try:
        return orjson.dumps(entry)
    except (TypeError, orjson.JSONEncodeError):  # integers beyond 64 bits
        return json.dumps(entry, separators=(",", ":"), ensure_ascii=False).encode()


@lru_cache(maxsize=65_536)
def rate_network(ip: str) -> str | None:
    """The network rejected calls are counted by: the /24 of an IPv4 address, the /64 of an
    IPv6 one (one subscriber's LAN, inside which addresses rotate freely), so guessing keys from
    rotating addresses is one burst. None if ``ip`` is not an address."""
    addr = parse_ip(ip)
    if addr is None:
        return None
    bits = 24 if addr.version == 4 else 64
    return str(ipaddress.ip_network(f"{addr}/{bits}", strict=False))


def client_rate_key(pseudonymizer: Pseudonymizer, client_ip: str) -> str:
    """The rate key of a rejected call: the HMAC of the client's network (or of the raw value,
    which is then no address, so never echoed)."""
    return CLIENT_KEY_PREFIX + pseudonymizer.client_hash(
        rate_network(client_ip) or client_ip.strip()
    )


Validate = Callable[[type[BaseModel], dict[str, Any]], Any]
"""Validates an entry against an input model: the model itself, or its fast twin."""
_Claim = tuple[str, type[BaseModel], Callable[[Any, dict[str, Any], EventBuilder], dict[str, Any]]]
"""What the parse needs of the format that claims an entry: its TIME_FIELD, MODEL and to_event."""


class RecordProcessor:
    """Validates, redacts and geo-enriches records. One instance per Flink worker.

    Each record first takes the fast path (metering.fastparse: msgspec decode and twins of the
    input models); a record it is unsure of, including every record with a dead letter, takes
    the reference path (orjson or json, the depth walk, pydantic) from the start, so the result
    is the reference path's either way. ``fast=False`` runs the reference path alone (tests
    compare the two).
    """

    def __init__(
        self,
        pseudonymizer: Pseudonymizer,
        geo: Callable[[str], Geo],
        limits: Limits | None = None,
        clock: Callable[[], float] = time.time,
        *,
        fast: bool = True,
    ) -> None:
        self._ps = pseudonymizer
        self._geo = geo
        self._limits = limits or Limits()
        self._clock = clock
        self._fast = fast
        self._fast_decoder = fastparse.decoder(self._limits.max_depth)
        formats = gateways.registered()
        # Each format's members read once, as plain tuples: the sniff loop runs per entry, and
        # a module's attributes cost a lookup each.
        self._formats: tuple[tuple[Callable[[dict[str, Any]], bool], _Claim], ...] = tuple(
            (f.sniff, (f.TIME_FIELD, f.MODEL, f.to_event)) for f in formats
        )
        self._time_fields = frozenset(f.TIME_FIELD for f in formats)
        self._unknown_format = gateways.unknown_format_detail(formats)

    # -- entry point ---------------------------------------------------------------------------

    def process(self, payload: bytes | None, src: SourceRef) -> Result:
        if self._fast:
            try:
                return self._process_fast(payload, src)
            except fastparse.Unsure:
                pass
        return self._process_reference(payload, src)

    def _process_fast(self, payload: bytes | None, src: SourceRef) -> Result:
        """The result of a record with good entries only, or Unsure."""
        lim = self._limits
        if not payload or len(payload) > lim.max_record_bytes:
            raise fastparse.Unsure
        try:
            if not payload.isascii():
                payload.decode("utf-8")
            value = self._fast_decoder.decode(payload)
        except (UnicodeDecodeError, msgspec.DecodeError):
            raise fastparse.Unsure from None
        if type(value) is list:
            if not value or len(value) > lim.max_batch_entries:
                raise fastparse.Unsure
        elif type(value) is not dict:
            raise fastparse.Unsure
        return self._process_entries(value, payload, src, Result([], []), fast=True)

    def _process_reference(self, payload: bytes | None, src: SourceRef) -> Result:
        result = Result([], [])
        try:
            entries = self._decode(payload)
        except _Unusable as u:
            result.dead_letters.append(self._dead_letter(u, src, payload, _NO_ELEMENT, None))
            return result
        return self._process_entries(entries, payload, src, result, fast=False)

    def _process_entries(
        self, entries: Any, payload: bytes | None, src: SourceRef, result: Result, *, fast: bool
    ) -> Result:
        # The fast path makes no dead letter: it gives the record up to the reference path.
        validate: Validate = fastparse.convert if fast else self._validate
        now = int(self._clock() * 1000)
        batched = isinstance(entries, list)
        items = entries if isinstance(entries, list) else [entries]
        # A lone entry is the whole record, whose size is known; a batch element's is not.
        whole = None if batched else payload
        max_bytes = self._limits.max_enriched_bytes
        for idx, entry in enumerate(items):
            index = idx if batched else None
            try:
                event = self._enrich(entry, src, idx, now, validate)
                idempotency_key = event.pop(_IDEMPOTENCY_KEY, NO_KEY)
                text = dumps(event)
                # Key (the rate key) and value, as the producer counts them. A record over the
                # sinks' max.request.size would fail in the producer and restart the job forever.
                size = (len(text) if text.isascii() else len(text.encode())) + len(
                    event["rate_key"].encode()
                )
                if size > max_bytes:
                    raise _Unusable("enriched_too_large", f"{size} bytes > {max_bytes}")
                if idempotency_key is NO_KEY:
                    # A gateway retry resends the same bytes; a client-chosen header alone
                    # (x-request-id) never decides.
                    dedup: str | None = fingerprint(whole if whole else entry_bytes(entry))
                elif idempotency_key is not None:
                    dedup = fingerprint(f"{event['consumer']}\x00{idempotency_key}".encode())
                else:
                    dedup = None
                result.events.append(event)
                result.encoded.append(text)
                result.dedup_ids.append(dedup)
            except _Unusable as unusable:
                if fast:
                    raise fastparse.Unsure from None
                result.dead_letters.append(self._dead_letter(unusable, src, whole, entry, index))
            except fastparse.Unsure:
                raise
            except Exception as exc:  # a bug must dead-letter the entry, not restart the job
                if fast:
                    raise fastparse.Unsure from None
                internal = _Unusable("invalid_event", f"internal: {type(exc).__name__}")
                result.dead_letters.append(self._dead_letter(internal, src, whole, entry, index))
        return result

    # -- decoding ------------------------------------------------------------------------------

    def _decode(self, payload: bytes | None) -> Any:
        lim = self._limits
        if not payload:
            raise _Unusable("empty_record", "record value is empty or null")
        if len(payload) > lim.max_record_bytes:
            raise _Unusable("too_large", f"{len(payload)} bytes > {lim.max_record_bytes}")
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as e:
            raise _Unusable("not_utf8", f"invalid UTF-8 at byte {e.start}") from None
        # orjson parses the bench's records in half json's time. What it refuses, json decides,
        # so rejects keep json's reasons and messages; what it may have read inexactly (long
        # integers, see _inspect), json reads again.
        try:
            value = orjson.loads(payload)
            too_deep, reread = _inspect(value, lim.max_depth)
        except orjson.JSONDecodeError:
            reread = True
        if reread:
            value = self._json_loads(text)
            too_deep, _ = _inspect(value, lim.max_depth)
        if too_deep:
            raise _Unusable("too_deep", f"nesting deeper than {lim.max_depth}")
        if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
            # "\ud800" parses, but no UTF-8 encoder (Kafka, Flink) can write it back out.
            raise _Unusable("not_utf8", "lone UTF-16 surrogate escape in a JSON string")
        if isinstance(value, list):
            if not value:
                raise _Unusable("empty_batch", "array without entries")
            if len(value) > lim.max_batch_entries:
                raise _Unusable("too_large", f"{len(value)} entries > {lim.max_batch_entries}")
            return value
        if isinstance(value, dict):
            return value
        raise _Unusable("wrong_type", f"top-level JSON {type(value).__name__}")

    def _json_loads(self, text: str) -> Any:
        try:
            return json.loads(text, parse_constant=_reject_constant)
        except RecursionError:
            raise _Unusable("too_deep", f"nesting deeper than {self._limits.max_depth}") from None
        except ValueError as e:
            msg = e.msg if isinstance(e, json.JSONDecodeError) else "invalid constant"
            pos = e.pos if isinstance(e, json.JSONDecodeError) else 0
            raise _Unusable("not_json", f"{msg} at char {pos}") from None

    # -- one entry -----------------------------------------------------------------------------

    def _enrich(
        self, entry: Any, src: SourceRef, idx: int, now: int, validate: Validate
    ) -> dict[str, Any]:
        if not isinstance(entry, dict):
            raise _Unusable("wrong_type", f"entry is JSON {type(entry).__name__}")
        for sniff, claim in self._formats:
            if sniff(entry):
                time_field, model, to_event = claim
                break
        else:
            raise _Unusable("unknown_format", self._unknown_format)
        if time_field not in entry:
            raise _Unusable("missing_event_time", f"{time_field}: missing")
        event = to_event(validate(model, entry), entry, self._event)
        lim = self._limits
        if event["event_time"] > now + lim.max_future_skew_s * 1000:
            # One such entry would move its source subtask's watermark ahead, and every later
            # event would be late: never counted in an open window, never alerted on.
            raise _Unusable(
                "event_time_future",
                f"event time more than {lim.max_future_skew_s} s after processing time",
            )
        if event["event_time"] < now - lim.max_event_age_s * 1000:
            raise _Unusable(
                "event_time_too_old",
                f"event time more than {lim.max_event_age_s} s before processing time",
            )
        event["event_id"] = f"{src.topic}-{src.partition}-{src.offset}-{idx}"
        event["processing_time"] = now
        event["source_partition"] = src.partition
        event["source_offset"] = src.offset
        return event

    def _event(
        self,
        fields: EventFields,
        *,
        api_key: str | None = None,
        client_ip: str | None = None,
        idempotency_key: str | NoKey | None = NO_KEY,
    ) -> dict[str, Any]:
        """The common enriched event (gateways.EventBuilder): what a format says about the call,
        with the identity, geo, redaction and auth failure every format shares."""
        event = _EVENT_TEMPLATE.copy()
        event.update(fields)
        consumer = event["consumer"]
        auth_failed = event["status"] in AUTH_FAILURE_STATUSES
        fingerprint = self._ps.key_fingerprint(api_key) if api_key else None
        if consumer:
            rate_key = consumer
        elif fingerprint and not auth_failed:
            rate_key = f"key:{fingerprint}"
        elif client_ip:
            # A rejected key identifies nobody; counting rejections per client network makes
            # key guessing from one address, or from addresses rotated inside one network, a
            # single burst instead of one request per guessed key (see rate_network).
            rate_key = client_rate_key(self._ps, client_ip)
        else:
            rate_key = "anonymous"
        event["rate_key"] = rate_key
        event["key_fingerprint"] = fingerprint
        if client_ip:
            geo = self._geo(client_ip)
            # An unparseable "IP" could be anything, so it is hashed but never echoed.
            event["client_hash"] = self._ps.client_hash(client_ip.strip())
            event["client_prefix"] = ip_prefix(client_ip)
            event["country"] = geo.country_code
            event["region"] = geo.region
            event["city"] = geo.city
            event["latitude"] = geo.latitude
            event["longitude"] = geo.longitude
        event["path"] = path_of(event["path"])
        event["auth_failed"] = auth_failed
        event["user_agent"] = redact_user_agent(event["user_agent"])
        if idempotency_key is not NO_KEY:
            event[_IDEMPOTENCY_KEY] = idempotency_key
        return event

    def _validate(self, model: type[BaseModel], entry: dict[str, Any]) -> Any:
        try:
            return model.model_validate(entry)
        except ValidationError as e:
            missing_time = any(
                err["loc"] and err["loc"][0] in self._time_fields
                for err in e.errors(include_url=False, include_input=False)
            )
            reason = "invalid_event"
            if missing_time and any(
                err["type"] == "missing" for err in e.errors(include_url=False, include_input=False)
            ):
                reason = "missing_event_time"
            raise _Unusable(reason, _validation_detail(e)) from None

    # -- dead letters --------------------------------------------------------------------------

    def _dead_letter(
        self,
        u: _Unusable,
        src: SourceRef,
        payload: bytes | None,
        element: Any,
        index: int | None,
    ) -> dict[str, Any]:
        limit = self._limits.dlq_payload_chars
        if element is not _NO_ELEMENT:  # a parsed entry (which may be JSON null)
            text = json.dumps(redact_structure(element), ensure_ascii=False, default=str)
            if payload is not None:
                size = len(payload)
            else:
                # The element's own compact JSON: its size, not that of the redacted copy.
                compact = json.dumps(element, ensure_ascii=False, separators=(",", ":"))
                size = len(compact.encode("utf-8", "replace"))
        else:
            size = len(payload) if payload else 0
            # Only a bounded prefix is decoded and scrubbed: a 1 MiB record costs no more than this.
            # NULs go first: UTF-16/32 text would otherwise interleave every credential with
            # them and slip past the patterns.
            raw = (payload or b"")[: limit * 4].replace(b"\x00", b"")
            text = raw.decode("utf-8", "backslashreplace")
        scrubbed = scrub_text(text)
        truncated = len(scrubbed) > limit or size > limit * 4
        if len(scrubbed) > limit:
            # Scrub again: the cut may leave the head of a secret that no longer matches as a pair.
            # Re-scrubbing can lengthen the text (a cut marker is replaced whole), so cut again:
            # cutting scrubbed text only ever removes characters.
            scrubbed = scrub_text(scrubbed[:limit])[:limit]
        return {
            "reason": u.reason,
            "detail": scrub_text(u.detail),
            "source_topic": src.topic,
            "source_partition": src.partition,
            "source_offset": src.offset,
            "element_index": index,
            "payload": scrubbed,
            "payload_bytes": size,
            "payload_truncated": truncated,
            "dead_lettered_at": int(self._clock() * 1000),
        }
