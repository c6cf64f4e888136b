"""The parse's fast path (metering.fastparse) gives the reference path's Result, record by record.

``RecordProcessor(..., fast=False)`` runs the reference path alone (orjson or json, the depth
walk, pydantic); the default processor tries the fast path first. Both run on one pinned clock,
so every event, encoded text, dedup id and dead letter must be equal, on the bench's traffic, on
the hostile corpus of the integration tests, on the dead-letter corpus of test_records and on
mutated gateway entries.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from payloads import NOW_MS, RAW_TOPIC, START_MS, apisix_39, apisix_210, encode, generic, kong_200
from test_records import _JSON, DEAD_LETTERS, _ascii_json, _mutated_entries

from metering import fastparse, gateways
from metering.gateways.generic import GenericUsageEvent
from metering.geo import GeoLookup, default_geoip_db
from metering.records import Limits, RecordProcessor, Result, SourceRef
from metering.redact import CACHED_HMAC_CHARS, Pseudonymizer
from testkit.hostile import hostile_mix
from testkit.traffic import bulk_traffic

SRC = SourceRef(RAW_TOPIC, 2, 4242)
# Every built-in format's model: a new one gets its twin checked without a change here.
INPUT_MODELS = tuple(f.MODEL for f in gateways.BUILT_IN)


def pair(
    pseudonymizer: Pseudonymizer, geo: Any, now_ms: int, limits: Limits | None = None
) -> tuple[RecordProcessor, RecordProcessor]:
    """(fast-path processor, reference processor) on one pinned clock."""

    def clock() -> float:
        return now_ms / 1000

    return (
        RecordProcessor(pseudonymizer, geo, limits, clock),
        RecordProcessor(pseudonymizer, geo, limits, clock, fast=False),
    )


def same_result(fast: RecordProcessor, ref: RecordProcessor, raw: bytes | None) -> Result:
    got, want = fast.process(raw, SRC), ref.process(raw, SRC)
    assert got == want
    return got


def takes_fast_path(processor: RecordProcessor, raw: bytes | None) -> bool:
    try:
        processor._process_fast(raw, SRC)
    except fastparse.Unsure:
        return False
    return True


@pytest.fixture(scope="module")
def processors(
    pseudonymizer: Pseudonymizer, geo: GeoLookup
) -> tuple[RecordProcessor, RecordProcessor]:
    return pair(pseudonymizer, geo.lookup, NOW_MS)


# -- the twins are the models -----------------------------------------------------------------


def _schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema without what only one of pydantic and msgspec writes: titles, descriptions,
    defaults (compared apart), formats, empty required lists, extra="allow"."""
    drop = {"title", "description", "default", "format"}

    def clean(node: Any) -> Any:
        if isinstance(node, list):
            return [clean(n) for n in node]
        if not isinstance(node, dict):
            return node
        out = {k: clean(v) for k, v in node.items() if k not in drop}
        if out.get("required") == []:
            del out["required"]
        if out.get("additionalProperties") is True:
            del out["additionalProperties"]
        return out

    defs = clean(schema.pop("$defs", {}))
    top = clean(schema)
    if "$ref" in top:
        top = defs.pop(top["$ref"].rsplit("/", 1)[1])
    return {"top": top, "defs": defs}


@pytest.mark.parametrize("model", INPUT_MODELS, ids=lambda m: m.__name__)
def test_twins_have_the_models_fields_types_and_bounds(model: Any) -> None:
    assert _schema(msgspec.json.schema(fastparse.twin(model))) == _schema(model.model_json_schema())


def _nested_models(model: Any) -> set[Any]:
    found = {model}
    for info in model.model_fields.values():
        for arg in [info.annotation, *getattr(info.annotation, "__args__", ())]:
            if isinstance(arg, type) and hasattr(arg, "model_fields"):
                found |= _nested_models(arg)
    return found


@pytest.mark.parametrize("model", INPUT_MODELS, ids=lambda m: m.__name__)
def test_twins_have_the_models_defaults(model: Any) -> None:
    for m in _nested_models(model):
        struct = fastparse.twin(m)
        required = {n for n, f in m.model_fields.items() if f.is_required()}
        assert [f.name for f in msgspec.structs.fields(struct)] == list(m.model_fields)
        for field in msgspec.structs.fields(struct):
            info = m.model_fields[field.name]
            if field.name in required:
                assert field.required
                continue
            default = (
                field.default_factory()
                if field.default_factory is not msgspec.NODEFAULT
                else field.default
            )
            want = info.get_default(call_default_factory=True)
            if hasattr(want, "model_dump"):
                assert msgspec.to_builtins(default) == want.model_dump()
            else:
                assert default == want and type(default) is type(want)


def test_a_model_validator_unknown_to_the_fast_path_has_no_twin() -> None:
    from pydantic import field_validator

    class Shouty(GenericUsageEvent):
        @field_validator("endpoint")
        @classmethod
        def _upper(cls, v: str) -> str:
            return v.upper()

    with pytest.raises(TypeError, match=r"Shouty\._upper"):
        fastparse.twin(Shouty)


# -- identical results ---------------------------------------------------------------------------


def test_bench_traffic_takes_the_fast_path_with_the_reference_results(
    pseudonymizer: Pseudonymizer,
) -> None:
    start_ms = 1_767_225_600_000
    geo = GeoLookup(default_geoip_db())  # bench traffic's addresses resolve in the real database
    fast, ref = pair(pseudonymizer, geo.lookup, start_ms + 3_600_000)
    events = fallbacks = 0
    for record in bulk_traffic(20_000, start_ms=start_ms, keys=5000):
        fallbacks += not takes_fast_path(fast, record.value)
        result = same_result(fast, ref, record.value)
        assert not result.dead_letters
        events += len(result.events)
    geo.close()
    assert events == 20_000
    assert fallbacks == 0


def test_hostile_corpus_gives_the_reference_results(
    pseudonymizer: Pseudonymizer,
) -> None:
    geo = GeoLookup(default_geoip_db())
    mix = hostile_mix(120, [], seed=19, probes=True)
    fast, ref = pair(pseudonymizer, geo.lookup, mix.processing_ms)
    fast_records = 0
    for raw in mix.records:
        fast_records += takes_fast_path(fast, raw)
        same_result(fast, ref, raw)
    geo.close()
    assert 0 < fast_records < len(mix.records)


@pytest.mark.parametrize(("raw", "reason", "detail"), DEAD_LETTERS)
def test_dead_letter_corpus_gives_the_reference_results(
    processors: tuple[RecordProcessor, RecordProcessor], raw: bytes, reason: str, detail: str
) -> None:
    fast, ref = processors
    result = same_result(fast, ref, raw)
    assert [d["reason"] for d in result.dead_letters] == [reason]


def _with(entry: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    node = entry
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return entry


def _nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


# Records the fast path takes, and records it leaves to the reference path; both must give the
# reference results.
FAST = [
    pytest.param(encode(apisix_39()), id="apisix"),
    pytest.param(encode([apisix_39(), kong_200(), generic()]), id="mixed-batch"),
    pytest.param(encode(apisix_39(), escape_slashes=True), id="escaped-slashes"),
    pytest.param(encode(apisix_210()), id="consumer-object-with-key"),
    pytest.param(encode([_with(apisix_39(), ("extra",), 2**70)]), id="long-int-in-batch"),
    pytest.param(encode([_with(kong_200(), ("tries",), _nested(5))]), id="nested-5"),
    pytest.param(encode(generic(timestamp="2024-06-13T15:06:30.123456+02:00")), id="iso-time"),
    pytest.param(
        b'{"endpoint":"/a","user_id":"u","timestamp":1718291190123,"user_id":"v"}',
        id="duplicate-key",
    ),
    pytest.param(encode(generic(user_id="M\u00fcller \U0001f600")), id="non-ascii"),
    pytest.param(
        b'{"endpoint":"/a","user_id":"\\ud83d\\ude00","timestamp":1718291190123}', id="escaped-pair"
    ),
    # Bounds apply to the value as a double, as in pydantic.
    pytest.param(encode(_with(kong_200(), ("request", "size"), 2**53 + 1)), id="size-2^53+1"),
    pytest.param(encode(_with(apisix_39(), ("start_time",), START_MS + 0.5)), id="fraction-ms"),
]
SLOW = [
    pytest.param(encode(_with(apisix_39(), ("response", "status"), "200")), id="status-text"),
    pytest.param(encode(_with(apisix_39(), ("response", "status"), 200.0)), id="status-float"),
    pytest.param(encode(_with(kong_200(), ("latencies", "proxy"), True)), id="latency-bool"),
    pytest.param(encode(generic(timestamp="2024-06-13T15:06:30.1234567Z")), id="7-digit-fraction"),
    # msgspec would round this into the next second; pydantic truncates.
    pytest.param(encode(generic(timestamp="2024-06-13T15:06:30.9999995Z")), id="fraction-carry"),
    pytest.param(encode(generic(timestamp="2024-06-13")), id="date-only"),
    pytest.param(encode(generic(timestamp="1718291190123")), id="epoch-text"),
    pytest.param(encode(generic(user_id="  ", consumer="c")), id="blank-user-id"),
    pytest.param(encode([_with(kong_200(), ("tries",), _nested(12))]), id="nested-12"),
    pytest.param(encode(apisix_39()).replace(b'"upstream"', b'"x":1e400,"upstream"'), id="1e400"),
    pytest.param(encode(apisix_39()).replace(b"okhttp", b"okhttp\\udc00"), id="lone-surrogate"),
    pytest.param(encode(apisix_39(start_time=NOW_MS + 3_600_000)), id="future"),
    pytest.param(encode([apisix_39(), {"nothing": 1}]), id="one-bad-element"),
]


@pytest.mark.parametrize("raw", FAST)
def test_records_the_fast_path_takes(
    processors: tuple[RecordProcessor, RecordProcessor], raw: bytes
) -> None:
    fast, ref = processors
    assert takes_fast_path(fast, raw)
    assert same_result(fast, ref, raw).events


@pytest.mark.parametrize("raw", SLOW)
def test_records_left_to_the_reference_path(
    processors: tuple[RecordProcessor, RecordProcessor], raw: bytes
) -> None:
    fast, ref = processors
    assert not takes_fast_path(fast, raw)
    same_result(fast, ref, raw)


def test_tighter_limits_than_the_fast_decoders_bound(
    pseudonymizer: Pseudonymizer, geo: GeoLookup
) -> None:
    fast, ref = pair(pseudonymizer, geo.lookup, NOW_MS, Limits(max_depth=6))
    deep = encode([_with(apisix_39(), ("extra",), _nested(5))])  # 7 containers deep
    assert not takes_fast_path(fast, deep)
    assert [d["reason"] for d in same_result(fast, ref, deep).dead_letters] == ["too_deep"]
    shallow = encode([_with(apisix_39(), ("extra",), _nested(4))])
    assert takes_fast_path(fast, shallow)
    same_result(fast, ref, shallow)


_NUMBER_TEXT = st.sampled_from(
    ["-0", "-0.0", "1E2", "1e-400", "2e400", "18446744073709551616", "0.1e1", "999", "1000", "-1"]
)


@settings(max_examples=300, deadline=None)
@given(
    raw=_mutated_entries().map(_ascii_json)
    | st.lists(_mutated_entries(), min_size=1, max_size=3).map(_ascii_json)
    | _mutated_entries().map(lambda e: json.dumps(e, ensure_ascii=False).encode("utf-8", "replace"))
    | _JSON.map(_ascii_json)
    | st.binary(max_size=300),
    number=_NUMBER_TEXT,
)
def test_mutated_entries_give_the_reference_results(
    processors: tuple[RecordProcessor, RecordProcessor], raw: bytes, number: str
) -> None:
    fast, ref = processors
    same_result(fast, ref, raw)
    # The same record with its first integer written another way.
    digits = next((i for i, b in enumerate(raw) if raw[i : i + 1].isdigit()), None)
    if digits is not None:
        end = digits
        while raw[end : end + 1].isdigit():
            end += 1
        same_result(fast, ref, raw[:digits] + number.encode() + raw[end:])


@settings(max_examples=200, deadline=None)
@given(
    age_us=st.integers(min_value=0, max_value=2 * 86_400_000_000),
    zone_min=st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59) | st.just(0),
    digits=st.integers(min_value=0, max_value=9),
    extra=st.integers(min_value=0, max_value=999),
    sep=st.sampled_from(["T", " ", "t"]),
    zone_style=st.sampled_from(["Z", "z", "+00:00", "-00:00", "hh:mm", "hhmm", ""]),
)
def test_generic_timestamps_as_text_give_the_reference_results(
    processors: tuple[RecordProcessor, RecordProcessor],
    age_us: int,
    zone_min: int,
    digits: int,
    extra: int,
    sep: str,
    zone_style: str,
) -> None:
    fast, ref = processors
    zone = timezone(timedelta(minutes=zone_min))
    when = datetime.fromtimestamp(NOW_MS / 1000, zone) - timedelta(microseconds=age_us)
    text = when.strftime("%Y-%m-%d") + sep + when.strftime("%H:%M:%S")
    if digits:
        text += "." + f"{when.microsecond:06d}{extra:03d}"[:digits]
    sign, hh, mm = "+" if zone_min >= 0 else "-", abs(zone_min) // 60, abs(zone_min) % 60
    if zone_style == "hh:mm" or (zone_style in ("Z", "z", "+00:00", "-00:00") and zone_min):
        text += f"{sign}{hh:02d}:{mm:02d}"
    elif zone_style == "hhmm":
        text += f"{sign}{hh:02d}{mm:02d}"
    else:
        text += zone_style
    result = same_result(fast, ref, encode(generic(timestamp=text)))
    assert len(result.events) + len(result.dead_letters) == 1


# -- the HMAC caches -------------------------------------------------------------------------


def test_cached_fingerprints_are_the_hmacs_and_long_values_are_not_kept() -> None:
    ps = Pseudonymizer(b"c" * 32)
    for _ in range(2):
        assert ps.key_fingerprint("k3y") == ps._mac("apikey", "k3y")
        assert ps.client_hash("203.0.113.9") == ps._mac("ip", "203.0.113.9")
    assert ps._key_fingerprint.cache_info().hits == 1
    assert ps._client_hash.cache_info().hits == 1
    long_key = "k" * (CACHED_HMAC_CHARS + 1)
    assert ps.key_fingerprint(long_key) == ps._mac("apikey", long_key)
    assert ps.client_hash(long_key) == ps._mac("ip", long_key)
    assert ps._key_fingerprint.cache_info().currsize == 1
    assert ps._client_hash.cache_info().currsize == 1
