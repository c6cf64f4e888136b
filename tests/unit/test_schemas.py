"""Every record the job builds matches its output model, and generated traffic is metered exactly.

The output models forbid extra fields, so a field added to (or dropped from) the dicts the job
builds without the model following fails here.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import replace
from typing import Any

import pytest
from mmdb import COUNTRY_IPS
from payloads import (
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
from pydantic import BaseModel, ValidationError

from metering.baseline import BaselineConfig
from metering.detect import DetectorConfig, KeyState, close_due, evaluate, window_record
from metering.records import RecordProcessor, Result, SourceRef, client_rate_key
from metering.redact import Pseudonymizer
from metering.windows import Windows, add_event, as_agg
from schemas.events import Alert, DeadLetter, EnrichedEvent, WindowCount
from testkit.traffic import (
    SCENARIO_LEARN_MINUTES,
    Generated,
    Scenario,
    default_scenario,
    generate,
    scenario_alert_problems,
)


def _broken(entry: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(entry))
    for path, value in changes.items():
        node = out
        *parents, leaf = path.split("__")
        for p in parents:
            node = node[p]
        if value is None:
            del node[leaf]
        else:
            node[leaf] = value
    return out


GOOD: list[bytes] = [
    encode(apisix_39()),
    encode([apisix_39(), apisix_210(), apisix_401(), apisix_no_route()]),
    encode([apisix_31(), apisix_31()], escape_slashes=True),
    encode(kong_200()),
    encode([kong_200(), kong_401()]),
    encode(generic()),
    encode(generic(timestamp="2024-06-13T17:06:30.123+02:00", units=0.25, client_ip="8.8.8.8")),
    encode(apisix_39(client_ip="not-an-ip")),
    encode(apisix_39(client_ip="")),
]
BAD: list[bytes | None] = [
    None,
    b"",
    b"\xff\xfe{}",
    b"{not json",
    b'{"latency": NaN}',
    b"42",
    b"[]",
    b"[" * 5000 + b"]" * 5000,
    b"[" * 40 + b"1" + b"]" * 40,
    encode({"hello": "world"}),
    encode(_broken(apisix_39(), start_time=None)),
    encode(_broken(kong_200(), started_at=None)),
    encode(_broken(generic(), timestamp=None)),
    encode(_broken(apisix_39(), response__status=[200])),
    encode(_broken(apisix_39(), start_time=1_718_291_190)),
    encode([apisix_39(), _broken(kong_200(), response__status="ok"), 7, None, generic()]),
]


def assert_exact_model(model: type[BaseModel], record: dict[str, Any]) -> None:
    model.model_validate(record)
    # Every field is emitted explicitly; none is left to the model's defaults.
    assert set(record) == set(model.model_fields)


def all_records(result: Result) -> list[dict[str, Any]]:
    return result.events + result.dead_letters


# -- RecordProcessor output --------------------------------------------------------------------


@pytest.mark.parametrize("raw", GOOD + BAD)
def test_every_emitted_record_matches_its_model(
    processor: RecordProcessor, raw: bytes | None
) -> None:
    result = processor.process(raw, SourceRef(RAW_TOPIC, 2, 314))
    assert all_records(result)
    for event in result.events:
        assert_exact_model(EnrichedEvent, event)
    for letter in result.dead_letters:
        assert_exact_model(DeadLetter, letter)


def test_good_and_bad_samples_split_as_intended(processor: RecordProcessor) -> None:
    src = SourceRef(RAW_TOPIC, 0, 0)
    assert [len(processor.process(raw, src).events) for raw in GOOD] == [1, 4, 2, 1, 2, 1, 1, 1, 1]
    assert all(processor.process(raw, src).dead_letters == [] for raw in GOOD)
    assert [len(processor.process(raw, src).dead_letters) for raw in BAD] == [1] * 15 + [3]


def test_extra_or_missing_fields_are_caught(processor: RecordProcessor) -> None:
    result = processor.process(encode(apisix_39()), SourceRef(RAW_TOPIC, 0, 0))
    event = result.events[0]
    with pytest.raises(ValidationError, match="extra_forbidden"):
        EnrichedEvent.model_validate({**event, "client_ip": "81.2.69.142"})
    missing = dict(event)
    del missing["event_time"]
    with pytest.raises(ValidationError, match="missing"):
        EnrichedEvent.model_validate(missing)
    letter = processor.process(b"42", SourceRef(RAW_TOPIC, 0, 0)).dead_letters[0]
    with pytest.raises(ValidationError, match="extra_forbidden"):
        DeadLetter.model_validate({**letter, "raw": "42"})
    with pytest.raises(ValidationError, match="literal_error"):
        DeadLetter.model_validate({**letter, "reason": "something_new"})


# -- windows and alerts ------------------------------------------------------------------------


def test_window_records_and_alerts_match_their_models() -> None:
    cfg = DetectorConfig(baseline=BaselineConfig(learn_minutes=SCENARIO_LEARN_MINUTES))
    state: KeyState | None = None
    alerts: list[dict[str, Any]] = []
    counts = [10] * 12 + [150, 16, 40]
    for i, count in enumerate(counts):
        window: Windows = {}
        for n in range(count):
            country = "AU" if i == 13 and n == 0 else "GB"
            add_event(window, 0, "acme", "f" * 32, country, i == 14 and n < 30, 1.0)
        agg = as_agg(window[0])
        rec = window_record("acme", START_MS + i * 10_000, START_MS + (i + 1) * 10_000, agg)
        assert_exact_model(WindowCount, rec)
        state, fired = evaluate(state, rec, cfg, now_ms=START_MS + 10**6)
        alerts += fired
    assert state is not None
    alerts += close_due(state, START_MS + 10**9, cfg, now_ms=START_MS + 10**6)
    assert [(a["status"], a["rule"]) for a in alerts] == [
        ("open", "rate_spike"),
        ("closed", "rate_spike"),
    ]
    assert alerts[-1]["rules"] == ["rate_spike", "new_country", "auth_failures"]
    for alert in alerts:
        assert_exact_model(Alert, alert)


# -- generated traffic, end to end -------------------------------------------------------------


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return default_scenario(COUNTRY_IPS, START_MS)


@pytest.fixture(scope="module")
def generated(scenario: Scenario) -> Generated:
    return generate(scenario, seed=7)


@pytest.fixture(scope="module")
def metered(processor: RecordProcessor, generated: Generated) -> Result:
    total = Result([], [])
    for offset, raw in enumerate(generated.records):
        result = processor.process(raw, SourceRef(RAW_TOPIC, offset % 2, offset))
        total.events += result.events
        total.dead_letters += result.dead_letters
    return total


def test_generated_traffic_gives_exactly_the_truth(
    scenario: Scenario,
    generated: Generated,
    metered: Result,
    pseudonymizer: Pseudonymizer,
) -> None:
    truth = generated.truth
    assert len(metered.events) == truth.events
    assert len(metered.dead_letters) == truth.dead_letters
    assert Counter(d["reason"] for d in metered.dead_letters) == truth.dead_letter_reasons
    assert Counter(e["gateway"] for e in metered.events) == truth.events_by_source
    assert len({e["event_id"] for e in metered.events}) == truth.events

    def translate(rate_key: str) -> str:
        kind, _, raw = rate_key.partition(":")
        if kind == "key":
            return "key:" + pseudonymizer.key_fingerprint(raw)
        if kind == "client":
            return client_rate_key(pseudonymizer, raw)
        return rate_key

    expected = {(translate(k), w): n for (k, w), n in truth.per_key_window.items()}
    got: Counter[tuple[str, int]] = Counter()
    for e in metered.events:
        t = e["event_time"]
        got[(e["rate_key"], t - (t - scenario.start_ms) % scenario.window_ms)] += 1
    assert dict(got) == expected


def test_generated_traffic_is_geolocated_from_the_test_database(
    generated: Generated, metered: Result
) -> None:
    gateway_events = [e for e in metered.events if e["gateway"] != "generic"]
    assert {e["country"] for e in gateway_events} == set(COUNTRY_IPS)
    assert all(e["client_prefix"] and e["client_hash"] for e in gateway_events)
    assert {e["country"] for e in metered.events if e["gateway"] == "generic"} == {None}


def test_generated_traffic_leaks_no_secret_and_no_client_ip(
    generated: Generated, metered: Result
) -> None:
    truth = generated.truth
    assert len(truth.secrets) > 20
    assert truth.client_ips
    for record in all_records(metered):
        text = json.dumps(record, ensure_ascii=False)
        assert not [s for s in truth.secrets if s in text], record.get("reason")
        assert not [ip for ip in truth.client_ips if ip in text], record.get("reason")


def test_generated_traffic_records_match_their_models(metered: Result) -> None:
    for event in metered.events:
        assert_exact_model(EnrichedEvent, event)
    for letter in metered.dead_letters:
        assert_exact_model(DeadLetter, letter)


def test_generated_traffic_alerts_only_on_the_attack_and_the_401_burst(
    scenario: Scenario, generated: Generated, metered: Result, pseudonymizer: Pseudonymizer
) -> None:
    """Windows and rules over the generated events: the planted incidents and nothing else."""
    aggs: dict[str, Windows] = defaultdict(dict)
    for e in metered.events:
        t = e["event_time"]
        start = t - (t - scenario.start_ms) % scenario.window_ms
        add_event(
            aggs[e["rate_key"]],
            start,
            e["consumer"],
            e["key_fingerprint"],
            e["country"],
            e["auth_failed"],
            e["units"],
        )
    cfg = DetectorConfig(
        window_ms=scenario.window_ms,
        baseline=BaselineConfig(learn_minutes=SCENARIO_LEARN_MINUTES),
    )
    fired: list[dict[str, Any]] = []
    for key, windows in aggs.items():
        state: KeyState | None = None
        for start in sorted(windows):
            rec = window_record(key, start, start + scenario.window_ms, as_agg(windows[start]))
            assert_exact_model(WindowCount, rec)
            state, alerts = evaluate(state, rec, cfg, now_ms=0)
            fired += alerts
        assert state is not None
        fired += close_due(state, scenario.start_ms + 10**9, cfg, now_ms=0)
    for a in fired:
        assert_exact_model(Alert, a)
    assert scenario.attack is not None and scenario.auth_failures is not None
    burst_start = scenario.window_start(scenario.auth_failures.window)
    # Pseudonymized client keys, as the job names them.
    truth = replace(generated.truth, attacked_key=scenario.attack.victim)
    assert scenario_alert_problems(fired, truth, burst_start, early=False) == []
    burst_keys = {client_rate_key(pseudonymizer, ip) for ip in scenario.auth_failures.client_ips}
    assert {a["rate_key"] for a in fired} == {scenario.attack.victim} | burst_keys
