"""Issue 18: event-time bounds, retry fingerprints, numeric and size bounds, client networks.

Each test pins a hostile input that the job used to accept (and that then moved a watermark,
hid a client's calls, overflowed a sum or failed the producer) to its outcome now.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from mmdb import DE_V6_IP
from payloads import NOW_MS, RAW_TOPIC, START_MS, apisix_39, apisix_401, encode, generic, kong_200

from metering.geo import GeoLookup
from metering.records import (
    DEFAULT_MAX_ENRICHED_BYTES,
    DEFAULT_MAX_EVENT_AGE_S,
    DEFAULT_MAX_FUTURE_SKEW_S,
    Limits,
    RecordProcessor,
    Result,
    SourceRef,
    client_rate_key,
    dumps,
    entry_bytes,
    fingerprint,
    rate_network,
)
from metering.redact import Pseudonymizer
from metering.settings import PipelineSettings, check_dedup_horizon
from schemas.events import (
    DEAD_LETTER_REASONS,
    MAX_LATENCY_MS,
    MAX_SIZE_BYTES,
    MAX_UNITS,
    DeadLetter,
    EnrichedEvent,
)

SRC = SourceRef(RAW_TOPIC, 0, 7)
YEAR_MS = 366 * 86_400_000
END_2099_MS = 4_102_358_400_000  # 2099-12-31T00:00:00Z


def run(processor: RecordProcessor, value: Any) -> Result:
    raw = value if isinstance(value, bytes) else encode(value)
    result = processor.process(raw, SRC)
    for event, text in zip(result.events, result.encoded, strict=True):
        EnrichedEvent.model_validate(event)
        assert text == dumps(event)
    for letter in result.dead_letters:
        DeadLetter.model_validate(letter)
    return result


def reasons(result: Result) -> list[str]:
    return [d["reason"] for d in result.dead_letters]


# -- event time ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event_time",
    [NOW_MS + YEAR_MS, END_2099_MS, NOW_MS + DEFAULT_MAX_FUTURE_SKEW_S * 1000 + 1],
    ids=["now+1y", "2099-12-31", "skew+1ms"],
)
def test_event_time_from_the_future_is_dead_lettered(
    processor: RecordProcessor, event_time: int
) -> None:
    for entry in (apisix_39(start_time=event_time), kong_200(started_at=event_time)):
        result = run(processor, entry)
        assert result.events == []
        assert reasons(result) == ["event_time_future"]
        assert result.dead_letters[0]["detail"] == (
            f"event time more than {DEFAULT_MAX_FUTURE_SKEW_S} s after processing time"
        )
    iso = run(processor, generic(timestamp="2099-12-31T23:59:59Z"))
    assert reasons(iso) == ["event_time_future"]


def test_event_times_within_the_bounds_are_kept(processor: RecordProcessor) -> None:
    ahead = NOW_MS + DEFAULT_MAX_FUTURE_SKEW_S * 1000
    behind = NOW_MS - DEFAULT_MAX_EVENT_AGE_S * 1000
    for t in (ahead, behind, START_MS):
        assert len(run(processor, apisix_39(start_time=t)).events) == 1


@pytest.mark.parametrize(
    "event_time",
    [NOW_MS - DEFAULT_MAX_EVENT_AGE_S * 1000 - 1, NOW_MS - YEAR_MS, 978_307_200_000],
    ids=["age+1ms", "now-1y", "2001-01-01"],
)
def test_ancient_event_time_is_dead_lettered(processor: RecordProcessor, event_time: int) -> None:
    result = run(processor, apisix_39(start_time=event_time))
    assert result.events == []
    assert reasons(result) == ["event_time_too_old"]


def test_one_poisoned_element_leaves_the_rest_of_its_batch(processor: RecordProcessor) -> None:
    batch = [apisix_39(), apisix_39(start_time=END_2099_MS), kong_200()]
    result = run(processor, batch)
    assert len(result.events) == 2
    assert [(d["reason"], d["element_index"]) for d in result.dead_letters] == [
        ("event_time_future", 1)
    ]


def test_the_bounds_follow_the_limits_and_the_clock(
    pseudonymizer: Pseudonymizer, geo: GeoLookup
) -> None:
    tight = RecordProcessor(
        pseudonymizer,
        geo.lookup,
        Limits(max_future_skew_s=0, max_event_age_s=60),
        clock=lambda: START_MS / 1000,
    )
    assert len(run(tight, apisix_39(start_time=START_MS)).events) == 1
    assert reasons(run(tight, apisix_39(start_time=START_MS + 1))) == ["event_time_future"]
    assert reasons(run(tight, apisix_39(start_time=START_MS - 60_001))) == ["event_time_too_old"]


def test_every_reason_is_declared_once_and_exported() -> None:
    assert len(set(DEAD_LETTER_REASONS)) == len(DEAD_LETTER_REASONS)
    for reason in ("event_time_future", "event_time_too_old", "enriched_too_large"):
        assert reason in DEAD_LETTER_REASONS
    schema = DeadLetter.model_json_schema()
    assert tuple(schema["properties"]["reason"]["enum"]) == DEAD_LETTER_REASONS


# -- retries: fingerprints, not client-chosen ids -------------------------------------------------


def test_a_lone_entry_is_fingerprinted_by_its_bytes(processor: RecordProcessor) -> None:
    raw = encode(apisix_39())
    result = run(processor, raw)
    assert result.dedup_ids == [fingerprint(raw)]
    # A resend is the same bytes, so the same id; the job drops the second sighting.
    assert run(processor, raw).dedup_ids == result.dedup_ids


def test_a_constant_request_id_does_not_make_distinct_calls_retries(
    processor: RecordProcessor,
) -> None:
    # Same client-chosen x-request-id, three distinct calls (different times): three ids.
    calls = [apisix_39(start_time=START_MS + i) for i in range(3)]
    assert {c["request"]["headers"]["x-request-id"] for c in calls} == {
        "2f0c3b9e-7a41-4c55-9d1e-6b7f1a2c3d4e"
    }
    ids = [run(processor, c).dedup_ids[0] for c in calls]
    assert len(set(ids)) == 3
    batch = run(processor, calls)
    assert len(set(batch.dedup_ids)) == 3
    # The request id is still reported as is.
    assert {e["request_id"] for e in batch.events} == {"2f0c3b9e-7a41-4c55-9d1e-6b7f1a2c3d4e"}


def test_batch_elements_are_fingerprinted_by_their_compact_json(
    processor: RecordProcessor,
) -> None:
    first, second = apisix_39(), kong_200()
    result = run(processor, [first, second, first])
    assert result.dedup_ids == [
        fingerprint(entry_bytes(first)),
        fingerprint(entry_bytes(second)),
        fingerprint(entry_bytes(first)),
    ]
    # The whole batch resent: the same ids again.
    assert run(processor, [first, second, first]).dedup_ids == result.dedup_ids


def test_generic_events_are_retries_by_consumer_and_idempotency_key(
    processor: RecordProcessor,
) -> None:
    a = run(processor, generic(id="evt-1", units=2)).dedup_ids[0]
    # The same id, even with other bytes (a re-serialised resend), is the same event ...
    assert run(processor, generic(id="evt-1", units=2, method="GET")).dedup_ids == [a]
    # ... but only for the same consumer.
    assert run(processor, generic(id="evt-1", user_id="other")).dedup_ids != [a]
    assert run(processor, generic(id="evt-2")).dedup_ids != [a]
    # Without an id a generic event is never a retry, and the id never reaches the output.
    plain = run(processor, generic())
    assert plain.dedup_ids == [None]
    assert "_idempotency_key" not in run(processor, generic(id="evt-1")).encoded[0]


# -- numeric bounds -----------------------------------------------------------------------------


def _numbers(entry: dict[str, Any], path: tuple[str, ...], literal: str) -> bytes:
    node = entry
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = "@@N@@"
    return encode(entry).replace(b'"@@N@@"', literal.encode())


@pytest.mark.parametrize(
    ("entry", "path", "literal", "loc"),
    [
        (generic(), ("units",), "1e308", "units"),
        (generic(), ("units",), repr(MAX_UNITS * 10), "units"),
        (apisix_39(), ("latency",), repr(MAX_LATENCY_MS + 1), "latency"),
        (apisix_39(), ("upstream_latency",), "1e300", "upstream_latency"),
        (apisix_39(), ("request", "size"), repr(MAX_SIZE_BYTES * 2), "request.size"),
        (apisix_39(), ("response", "size"), "1e300", "response.size"),
        (kong_200(), ("latencies", "request"), "1e300", "latencies.request"),
        (kong_200(), ("latencies", "proxy"), "-2", "latencies.proxy"),
        (kong_200(), ("response", "size"), "1e300", "response.size"),
    ],
)
def test_numbers_out_of_bounds_are_dead_lettered(
    processor: RecordProcessor,
    entry: dict[str, Any],
    path: tuple[str, ...],
    literal: str,
    loc: str,
) -> None:
    result = run(processor, _numbers(entry, path, literal))
    assert result.events == []
    assert reasons(result) == ["invalid_event"]
    assert result.dead_letters[0]["detail"].startswith(f"{loc}: ")


def test_numbers_at_their_bounds_are_kept(processor: RecordProcessor) -> None:
    assert run(processor, generic(units=MAX_UNITS)).events[0]["units"] == MAX_UNITS
    kong = kong_200()
    kong["latencies"]["proxy"] = -1
    assert run(processor, kong).events[0]["upstream_latency_ms"] is None
    big = apisix_39()
    big["request"]["size"] = MAX_SIZE_BYTES
    big["latency"] = MAX_LATENCY_MS
    assert run(processor, big).events[0]["request_bytes"] == 2**53


def test_two_huge_units_can_no_longer_sum_to_null(processor: RecordProcessor) -> None:
    events = [run(processor, generic(units=1e308)) for _ in range(2)]
    assert all(reasons(r) == ["invalid_event"] for r in events)


# -- enriched size cap --------------------------------------------------------------------------


def test_an_amplifying_record_is_dead_lettered_not_sent_to_the_producer(
    processor: RecordProcessor,
) -> None:
    # ~600 KB of matrix parameters, each redacted: the enriched copy grew past 1 MB.
    entry = apisix_39()
    entry["request"]["uri"] = "/x;&sig=a" * 66_000
    entry["request"]["url"] = ""
    raw = encode(entry)
    assert len(raw) < 700_000
    result = run(processor, raw)
    if result.events:  # a redaction that no longer amplifies: then it must fit
        assert len(result.encoded[0].encode()) <= DEFAULT_MAX_ENRICHED_BYTES
    else:
        assert reasons(result) == ["enriched_too_large"]


def test_a_consumer_name_copied_into_key_and_value_is_capped(processor: RecordProcessor) -> None:
    # The name is the rate key (the Kafka key) and the consumer: three copies of 400 KB.
    entry = apisix_39(consumer="c" * 400_000)
    result = run(processor, entry)
    assert result.events == []
    assert reasons(result) == ["enriched_too_large"]
    assert result.dead_letters[0]["detail"].endswith(f" bytes > {DEFAULT_MAX_ENRICHED_BYTES}")


def test_the_cap_counts_key_and_value_bytes(pseudonymizer: Pseudonymizer, geo: GeoLookup) -> None:
    entry = apisix_39(consumer="ü" * 200)
    text = dumps(
        run(RecordProcessor(pseudonymizer, geo.lookup, clock=lambda: NOW_MS / 1000), entry).events[
            0
        ]
    )
    size = len(text.encode()) + len(("ü" * 200).encode())
    at = RecordProcessor(
        pseudonymizer, geo.lookup, Limits(max_enriched_bytes=size), clock=lambda: NOW_MS / 1000
    )
    under = RecordProcessor(
        pseudonymizer, geo.lookup, Limits(max_enriched_bytes=size - 1), clock=lambda: NOW_MS / 1000
    )
    assert len(run(at, entry).events) == 1
    assert reasons(run(under, entry)) == ["enriched_too_large"]


# -- rejected calls per client network ----------------------------------------------------------


def test_rotating_ipv6_addresses_inside_a_64_are_one_rate_key(
    processor: RecordProcessor, pseudonymizer: Pseudonymizer
) -> None:
    rotating = [f"2001:db8:7:42:{i:x}::{i + 1:x}" for i in range(50)]
    keys = {run(processor, apisix_401(client_ip=ip)).events[0]["rate_key"] for ip in rotating}
    assert keys == {client_rate_key(pseudonymizer, "2001:db8:7:42::1")}
    # Each address keeps its own client hash.
    hashes = {run(processor, apisix_401(client_ip=ip)).events[0]["client_hash"] for ip in rotating}
    assert len(hashes) == 50
    other_64 = run(processor, apisix_401(client_ip="2001:db8:7:43::1")).events[0]["rate_key"]
    assert other_64 not in keys


def test_rate_networks() -> None:
    assert rate_network("203.0.113.77") == "203.0.113.0/24"
    assert rate_network("::ffff:203.0.113.77") == "203.0.113.0/24"
    assert rate_network(DE_V6_IP) is not None and rate_network(DE_V6_IP).endswith("/64")  # type: ignore[union-attr]
    assert rate_network("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert rate_network("unknown") is None


def test_ipv4_neighbours_share_the_24(processor: RecordProcessor) -> None:
    a = run(processor, apisix_401(client_ip="203.0.113.5")).events[0]["rate_key"]
    b = run(processor, apisix_401(client_ip="203.0.113.200")).events[0]["rate_key"]
    c = run(processor, apisix_401(client_ip="203.0.114.5")).events[0]["rate_key"]
    assert a == b != c
    assert "203.0.113" not in json.dumps([a, b, c])


# -- settings -----------------------------------------------------------------------------------


def test_settings_feed_the_limits() -> None:
    s = PipelineSettings(
        max_future_skew_seconds=60, max_event_age_seconds=3600, max_enriched_bytes=200_000
    )
    lim = s.limits()
    assert (lim.max_future_skew_s, lim.max_event_age_s, lim.max_enriched_bytes) == (
        60,
        3600,
        200_000,
    )
    default = PipelineSettings().limits()
    assert (default.max_future_skew_s, default.max_event_age_s) == (300, 7 * 86_400)


def test_a_dedup_horizon_beyond_the_event_age_bound_is_refused() -> None:
    check_dedup_horizon(900, 600, 300)  # exactly age + skew
    with pytest.raises(ValueError, match="exceeds max_event_age_seconds"):
        check_dedup_horizon(901, 600, 300)
    with pytest.raises(ValueError, match="dedup_horizon_seconds"):
        PipelineSettings(max_event_age_seconds=600, max_future_skew_seconds=0)
    assert (
        PipelineSettings(dedup_horizon_seconds=0, max_event_age_seconds=60).dedup_horizon_seconds
        == 0
    )


def test_client_state_never_outlives_consumer_state() -> None:
    assert PipelineSettings().client_state_ttl_hours == 1
    with pytest.raises(ValueError, match="client_state_ttl_hours"):
        PipelineSettings(state_ttl_hours=2, client_state_ttl_hours=3)
