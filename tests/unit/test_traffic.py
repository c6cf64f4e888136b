"""The traffic generator: determinism, realism of the payload shapes, and its ground truth.

The ground truth is checked against an independent parse of the produced bytes written here,
not against the generator's own bookkeeping, so a bug in one does not hide in the other.
"""

from __future__ import annotations

import ipaddress
import json
import math
import random
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metering.records import RecordProcessor, SourceRef
from testkit.traffic import (
    ATTACK_MULTIPLIER,
    Attack,
    AuthFailureBurst,
    Consumer,
    Generated,
    Scenario,
    bulk_traffic,
    default_geoip_db,
    default_scenario,
    generate,
    ips_for_countries,
    new_api_key,
    random_public_ips,
    run_live,
)

START_MS = 1_718_291_190_000
# Addresses are only labels for generation; which country they really sit in does not matter.
COUNTRY_IPS: dict[str, list[str]] = {
    "DE": ["88.198.10.1", "88.198.10.2", "88.198.10.3", "88.198.10.4", "2a01:4f8:1c1c:1::1"],
    "US": ["34.201.5.6", "34.201.5.7", "34.201.5.8", "34.201.5.9"],
    "JP": ["133.242.1.1", "133.242.1.2", "133.242.1.3"],
    "GB": ["81.2.69.142", "81.2.69.143", "81.2.69.144"],
    "BR": ["200.147.1.1", "200.147.1.2", "200.147.1.3", "200.147.1.4"],
}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# -- an independent reading of the records ---------------------------------------------------


def _kind(entry: dict[str, Any]) -> str:
    if "started_at" in entry or "latencies" in entry:
        return "kong"
    if "endpoint" in entry:
        return "generic"
    return "apisix"


def _problem(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return "wrong_type"
    kind = _kind(entry)
    time_field = {"kong": "started_at", "apisix": "start_time", "generic": "timestamp"}[kind]
    if time_field not in entry:
        return "missing_event_time"
    if kind != "generic":
        status = entry.get("response", {}).get("status")
        if not isinstance(status, int) or isinstance(status, bool):
            return "invalid_event"
    return None


def classify(value: bytes) -> tuple[list[dict[str, Any]], list[str]]:
    """Good entries and dead-letter reasons of one record value."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return [], ["not_utf8"]
    try:
        parsed = json.loads(text)
    except RecursionError:
        return [], ["too_deep"]
    except json.JSONDecodeError:
        return [], ["not_json"]
    if isinstance(parsed, list):
        if not parsed:
            return [], ["empty_batch"]
        elements = parsed
    elif isinstance(parsed, dict):
        elements = [parsed]
    else:
        return [], ["wrong_type"]
    good: list[dict[str, Any]] = []
    reasons: list[str] = []
    for element in elements:
        problem = _problem(element)
        if problem is None:
            good.append(element)
        else:
            reasons.append(problem)
    return good, reasons


def event_ms(entry: dict[str, Any]) -> int:
    kind = _kind(entry)
    if kind == "kong":
        return int(entry["started_at"])
    if kind == "apisix":
        return int(entry["start_time"])
    ts = entry["timestamp"]
    if isinstance(ts, int):
        return ts
    return (datetime.fromisoformat(ts) - EPOCH) // timedelta(milliseconds=1)


def rate_key(entry: dict[str, Any]) -> str:
    if _kind(entry) == "generic":
        return str(entry.get("user_id") or entry["consumer"])
    consumer = entry.get("consumer")
    if isinstance(consumer, dict) and consumer.get("username"):
        return str(consumer["username"])
    # Unidentified calls are rejected ones; the job counts those per client, whatever the key.
    return f"client:{entry['client_ip']}"


def good_entries(generated: Generated) -> Iterator[tuple[bytes, Any, dict[str, Any]]]:
    """(raw record, parsed record, entry) for every good entry, in produce order."""
    for raw in generated.records:
        good, _ = classify(raw)
        if good:
            parsed = json.loads(raw)
            for entry in good:
                yield raw, parsed, entry


def walk(value: Any) -> Iterator[Any]:
    yield value
    if isinstance(value, dict):
        for v in value.values():
            yield from walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from walk(v)


def window_of(scenario: Scenario, ms: int) -> int:
    return ms - (ms - scenario.start_ms) % scenario.window_ms


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return default_scenario(COUNTRY_IPS, START_MS + 4321)


@pytest.fixture(scope="module")
def generated(scenario: Scenario) -> Generated:
    return generate(scenario, seed=11)


# -- determinism -------------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes(scenario: Scenario, generated: Generated) -> None:
    again = generate(default_scenario(COUNTRY_IPS, START_MS + 4321), seed=11)
    assert again.records == generated.records
    assert again.truth == generated.truth
    assert generate(scenario, seed=12).records != generated.records


def test_default_scenario_is_deterministic_and_aligned(scenario: Scenario) -> None:
    assert default_scenario(COUNTRY_IPS, START_MS + 4321) == scenario
    assert scenario.start_ms == START_MS
    assert any(":" in ip for c in scenario.consumers for ip in c.home_ips)
    assert {c.auth_style for c in scenario.consumers} == {"apikey-header", "apikey-query", "bearer"}
    assert {c.gateway for c in scenario.consumers} >= {"apisix", "kong"}
    assert scenario.attack is not None and scenario.attack.first_window == 8
    assert scenario.consumer(scenario.attack.victim).gateway == "apisix"


# -- payload realism ---------------------------------------------------------------------------


def test_apisix_arrays_are_in_completion_order_not_start_order(generated: Generated) -> None:
    unordered = 0
    arrays = singles = 0
    for raw in generated.records:
        good, reasons = classify(raw)
        if reasons or not good or _kind(good[0]) != "apisix":
            continue
        if not raw.startswith(b"["):
            singles += 1
            continue
        arrays += 1
        assert 1 <= len(good) <= 50
        starts = [e["start_time"] for e in good]
        done = [e["start_time"] + math.ceil(e["latency"]) for e in good]
        assert done == sorted(done), "a gateway pushes entries when requests complete"
        unordered += starts != sorted(starts)
    assert unordered > 0
    assert arrays > singles > 0


def test_arrays_mix_consumers(generated: Generated) -> None:
    assert any(
        len({rate_key(e) for e in classify(raw)[0]}) > 1
        for raw in generated.records
        if raw.startswith(b"[")
    )


def test_slashes_are_escaped_exactly_before_apisix_3_2(generated: Generated) -> None:
    seen: Counter[str] = Counter()
    for raw, _, entry in good_entries(generated):
        if _kind(entry) != "apisix":
            continue
        version = entry["server"]["version"]
        seen[version] += 1
        if version in ("3.1.0", "2.10.4"):
            assert b"\\/" in raw
            assert b"/" not in raw.replace(b"\\/", b"")
        else:
            assert b"\\/" not in raw
    assert set(seen) == {"3.9.0", "3.1.0", "2.10.4"}


def test_old_apisix_logs_the_whole_consumer_and_no_latency_split(
    scenario: Scenario, generated: Generated
) -> None:
    keys = {c.name: c.api_key for c in scenario.consumers}
    old_consumers = 0
    for _, _, entry in good_entries(generated):
        if _kind(entry) != "apisix":
            continue
        consumer = entry.get("consumer")
        if entry["server"]["version"] == "2.10.4":
            assert "upstream_latency" not in entry and "apisix_latency" not in entry
            if consumer is not None:
                assert consumer["consumer_name"] == consumer["username"]
                assert consumer["plugins"]["key-auth"]["key"] == keys[consumer["username"]]
                old_consumers += 1
        else:
            assert "apisix_latency" in entry
            assert consumer is None or set(consumer) == {"username"}
    assert old_consumers > 0


def test_entries_have_no_nulls_and_lowercase_headers(generated: Generated) -> None:
    shapes: Counter[str] = Counter()
    for _, _, entry in good_entries(generated):
        assert all(v is not None for v in walk(entry))
        if _kind(entry) == "generic":
            continue
        for part in ("request", "response"):
            headers = entry[part]["headers"]
            assert all(name == name.lower() for name in headers)
            shapes.update("array-header" for v in headers.values() if isinstance(v, list))
        for value in entry["request"]["querystring"].values():
            shapes["query-true" if value is True else type(value).__name__] += 1
        shapes.update(k for k in ("body", "cookie") if k in entry["request"])
        shapes.update(h for h in ("cookie", "authorization") if h in entry["request"]["headers"])
        shapes.update(h for h in ("set-cookie",) if h in entry["response"]["headers"])
        if "body" in entry["response"]:
            shapes["response-body"] += 1
    for shape in ("array-header", "query-true", "list", "body", "response-body", "cookie"):
        assert shapes[shape] > 0, shape
    assert shapes["set-cookie"] > 0 and shapes["authorization"] > 0


def test_query_keys_also_appear_in_uri_and_url(generated: Generated) -> None:
    found = 0
    for _, _, entry in good_entries(generated):
        if _kind(entry) == "generic" or "apikey" not in entry["request"]["querystring"]:
            continue
        key = entry["request"]["querystring"]["apikey"]
        assert f"apikey={key}" in entry["request"]["uri"]
        assert f"apikey={key}" in entry["request"]["url"]
        if _kind(entry) == "kong":
            assert f"apikey={key}" in entry["upstream_uri"]
        found += 1
    assert found > 0


def test_auth_failures_look_like_gateway_rejections(generated: Generated) -> None:
    apisix = kong = 0
    for _, _, entry in good_entries(generated):
        if _kind(entry) == "generic" or entry["response"]["status"] != 401:
            continue
        assert "consumer" not in entry
        if _kind(entry) == "apisix":
            assert "upstream" not in entry and "upstream_latency" not in entry
            if "apisix_latency" in entry:
                assert entry["apisix_latency"] == entry["latency"]
            apisix += 1
        else:
            assert entry["latencies"]["proxy"] == -1 and entry["source"] == "kong"
            assert "tries" not in entry and "authenticated_entity" not in entry
            kong += 1
    assert apisix > 0 and kong > 0


def test_kong_masks_authorization_but_not_apikey(generated: Generated) -> None:
    for _, _, entry in good_entries(generated):
        if _kind(entry) != "kong":
            continue
        auth = entry["request"]["headers"].get("authorization")
        assert auth in (None, "REDACTED")
        assert isinstance(entry["upstream_status"], str)
        assert "kong/" in entry["response"]["headers"].get("via", "kong/")


def test_generic_events_use_both_identity_fields_and_time_formats(generated: Generated) -> None:
    seen: Counter[str] = Counter()
    for _, _, entry in good_entries(generated):
        if _kind(entry) == "generic":
            seen.update(k for k in ("user_id", "consumer") if k in entry)
            seen[type(entry["timestamp"]).__name__] += 1
    assert set(seen) == {"user_id", "consumer", "int", "str"}


# -- ground truth ------------------------------------------------------------------------------


def test_truth_matches_an_independent_parse(scenario: Scenario, generated: Generated) -> None:
    per_key: Counter[tuple[str, int]] = Counter()
    sources: Counter[str] = Counter()
    for _, _, entry in good_entries(generated):
        per_key[(rate_key(entry), window_of(scenario, event_ms(entry)))] += 1
        sources[_kind(entry)] += 1
    truth = generated.truth
    assert truth.events == sum(per_key.values()) == sum(truth.per_key_window.values())
    assert dict(per_key) == truth.per_key_window
    assert sources == truth.events_by_source
    assert {k.split(":")[0] for k, _ in per_key if ":" in k} == {"client"}
    windows = {scenario.window_start(i) for i in range(scenario.windows)}
    assert {w for _, w in per_key} == windows


def test_out_of_order_bound_is_reported(scenario: Scenario, generated: Generated) -> None:
    newest, lateness = 0, 0
    for _, _, entry in good_entries(generated):
        t = event_ms(entry)
        lateness, newest = max(lateness, newest - t), max(newest, t)
    assert lateness == generated.truth.max_out_of_order_ms
    assert 0 < lateness < scenario.window_ms / 2


def test_dead_letters_match_the_planted_bad_records(generated: Generated) -> None:
    reasons: Counter[str] = Counter()
    for raw in generated.records:
        reasons.update(classify(raw)[1])
    expected = Counter(
        not_utf8=1,
        not_json=1,
        wrong_type=2,
        invalid_event=2,
        missing_event_time=1,
        too_deep=1,
        empty_batch=1,
    )
    assert reasons == expected == generated.truth.dead_letter_reasons
    assert generated.truth.dead_letters == 9
    mixed = [r for r in generated.records if r.startswith(b"[{") and classify(r)[1]]
    assert len(mixed) == 1
    good, bad = classify(mixed[0])
    assert len(good) == 2 and bad == ["invalid_event"]
    assert _problem(json.loads(mixed[0])[1]) == "invalid_event"


def test_no_bad_records_unless_asked(scenario: Scenario) -> None:
    clean = Scenario(scenario.consumers, windows=2, start_ms=START_MS)
    gen = generate(clean, seed=3)
    assert gen.truth.dead_letters == 0 and not gen.truth.dead_letter_reasons
    assert all(classify(r)[1] == [] for r in gen.records)


def test_attack_windows_carry_the_victims_key_from_a_new_country(
    scenario: Scenario, generated: Generated
) -> None:
    attack = scenario.attack
    assert attack is not None
    victim = scenario.consumer(attack.victim)
    truth = generated.truth
    assert truth.attacked_key == victim.name
    assert truth.attack_windows == [scenario.window_start(i) for i in range(8, 8 + attack.windows)]
    assert attack.windows >= 2 and attack.requests_per_window == ATTACK_MULTIPLIER * 24
    assert not set(attack.attacker_ips) & {ip for c in scenario.consumers for ip in c.home_ips}
    for w in range(scenario.windows):
        count = truth.per_key_window[(victim.name, scenario.window_start(w))]
        if scenario.window_start(w) in truth.attack_windows:
            assert count >= 10 * victim.mean_per_window
        else:
            assert count <= 1.2 * victim.mean_per_window
    for _, _, entry in good_entries(generated):
        if rate_key(entry) != victim.name:
            continue
        attacked = window_of(scenario, event_ms(entry)) in truth.attack_windows
        if entry["client_ip"] in attack.attacker_ips:
            assert attacked
        else:
            assert entry["client_ip"] in victim.home_ips


def test_steady_consumers_never_spike_or_move(scenario: Scenario, generated: Generated) -> None:
    assert scenario.attack is not None
    victim = scenario.attack.victim
    first = scenario.window_start(0)
    ips_first: dict[str, set[str]] = {}
    for _, _, entry in good_entries(generated):
        name = rate_key(entry)
        if _kind(entry) == "generic" or ":" in name or name == victim:
            continue
        assert entry["client_ip"] in scenario.consumer(name).home_ips
        if window_of(scenario, event_ms(entry)) == first:
            ips_first.setdefault(name, set()).add(entry["client_ip"])
    for c in scenario.consumers:
        if c.home_ips and c.name != victim:
            assert ips_first[c.name] == set(c.home_ips)
        for w in range(scenario.windows):
            if c.name == victim and w >= scenario.attack.first_window:
                continue
            count = generated.truth.per_key_window[(c.name, scenario.window_start(w))]
            # +2: the mixed bad batch adds good entries for steady consumers in the last window.
            assert 0.8 * c.mean_per_window <= count <= 1.2 * c.mean_per_window + 2


def test_every_secret_is_planted_and_every_ip_recorded(
    scenario: Scenario, generated: Generated
) -> None:
    blob = b"\n".join(generated.records)
    # Kong logs bearer tokens as "REDACTED" and generic events carry no key at all.
    never_logged = {
        c.api_key
        for c in scenario.consumers
        if c.gateway == "generic" or (c.gateway == "kong" and c.auth_style == "bearer")
    }
    assert all(c.api_key in generated.truth.secrets for c in scenario.consumers)
    missing = [s for s in generated.truth.secrets - never_logged if s.encode() not in blob]
    assert not missing
    assert len(generated.truth.secrets) > len(scenario.consumers) + 20
    used = {e["client_ip"] for _, _, e in good_entries(generated) if "client_ip" in e}
    assert used <= generated.truth.client_ips
    assert generated.truth.client_ips <= {ip for ips in COUNTRY_IPS.values() for ip in ips}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    windows=st.integers(1, 4),
    means=st.lists(st.integers(1, 30), min_size=1, max_size=4),
    bad=st.booleans(),
)
def test_truth_matches_parse_for_random_scenarios(
    seed: int, windows: int, means: list[int], bad: bool
) -> None:
    rng = random.Random(seed)
    gateways = ["apisix", "kong", "generic"]
    styles = ["apikey-header", "apikey-query", "bearer"]
    consumers = [
        Consumer(
            name=f"c{i}",
            api_key=new_api_key(rng),
            auth_style=styles[i % 3],  # type: ignore[arg-type]
            home_ips=[f"198.51.100.{i + 1}"],
            gateway=gateways[(seed + i) % 3],  # type: ignore[arg-type]
            mean_per_window=mean,
        )
        for i, mean in enumerate(means)
    ]
    if all(c.gateway == "generic" for c in consumers):
        consumers[0].gateway = "apisix"
    sc = Scenario(
        consumers,
        windows=windows,
        start_ms=START_MS,
        window_ms=5_000,
        auth_failures=AuthFailureBurst(["192.0.2.7", "192.0.2.8"], windows - 1, 5, 2),
        bad_records=bad,
    )
    gen = generate(sc, seed)
    per_key: Counter[tuple[str, int]] = Counter()
    reasons: Counter[str] = Counter()
    for raw in gen.records:
        good, why = classify(raw)
        reasons.update(why)
        for entry in good:
            per_key[(rate_key(entry), window_of(sc, event_ms(entry)))] += 1
    assert dict(per_key) == gen.truth.per_key_window
    assert reasons == gen.truth.dead_letter_reasons
    assert gen.truth.dead_letters == (9 if bad else 0)


# -- scenario validation -----------------------------------------------------------------------


def _consumer(**overrides: Any) -> Consumer:
    fields: dict[str, Any] = {
        "name": "a",
        "api_key": "k" * 32,
        "auth_style": "apikey-header",
        "home_ips": ["198.51.100.1"],
        "gateway": "apisix",
        "mean_per_window": 10,
    }
    fields.update(overrides)
    return Consumer(**fields)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start_ms": START_MS + 1}, "aligned"),
        ({"consumers": []}, "at least one consumer"),
        ({"consumers": [_consumer(), _consumer()]}, "unique"),
        ({"consumers": [_consumer(home_ips=[f"198.51.100.{i}" for i in range(9)])]}, "home IPs"),
        ({"attack": Attack("a", 1, ["203.0.113.9"], 100, windows=2)}, "inside the scenario"),
        ({"attack": Attack("a", 0, ["198.51.100.1"], 100)}, "differ"),
        ({"auth_failures": AuthFailureBurst([], 0, 3)}, "client IPs"),
    ],
)
def test_invalid_scenarios_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {"consumers": [_consumer()], "windows": 2, "start_ms": START_MS}
    base.update(kwargs)
    with pytest.raises(ValueError, match=message):
        Scenario(**base)


def test_default_scenario_needs_ipv6_and_enough_windows() -> None:
    v4_only = {c: [ip for ip in ips if ":" not in ip] for c, ips in COUNTRY_IPS.items()}
    with pytest.raises(ValueError, match="IPv6"):
        default_scenario(v4_only, START_MS)
    with pytest.raises(ValueError, match="10 windows"):
        default_scenario(COUNTRY_IPS, START_MS, windows=9)
    with pytest.raises(ValueError, match="too few"):
        default_scenario({"DE": COUNTRY_IPS["DE"], "BR": COUNTRY_IPS["BR"][:1]}, START_MS)


# -- GeoIP sampling ----------------------------------------------------------------------------


def test_ips_for_countries_finds_public_addresses_in_each_country() -> None:
    geoip2_database = pytest.importorskip("geoip2.database")
    db = default_geoip_db()
    found = ips_for_countries(db, ["de", "US"], per_country=3, seed=5)
    assert found == ips_for_countries(db, ["DE", "US"], per_country=3, seed=5)
    with geoip2_database.Reader(db) as reader:
        for country, ips in found.items():
            assert len(ips) == 4 and sum(":" in ip for ip in ips) == 1
            for ip in ips:
                assert reader.city(ip).country.iso_code == country


def test_ips_for_countries_gives_up_on_unknown_countries() -> None:
    with pytest.raises(LookupError, match="ZZ"):
        ips_for_countries(default_geoip_db(), ["ZZ"], 1, seed=1, max_draws=2_000)


# -- live mode, without Kafka ------------------------------------------------------------------


class FakeProducer:
    def __init__(self) -> None:
        self.values: list[bytes] = []
        self.flushed = False

    def produce(self, topic: str, value: bytes, *, on_delivery: Any) -> None:
        assert topic == "gateway.raw"
        self.values.append(value)
        on_delivery(None, None)

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        self.flushed = True
        return 0


def test_run_live_produces_in_real_time_and_reports_without_secrets() -> None:
    now = [1_718_291_195.25]
    lines: list[str] = []
    producer = FakeProducer()

    def sleep(seconds: float) -> None:
        now[0] += seconds

    stats = run_live(
        "unused:9092",
        "gateway.raw",
        rate=40,
        duration=32,
        attack_at=15,
        country_ips=COUNTRY_IPS,
        seed=7,
        bad_every=3,
        report=lines.append,
        producer=producer,
        clock=lambda: now[0],
        sleep=sleep,
        tick=0.05,
    )
    assert producer.flushed and stats.records == len(producer.values)
    assert stats.delivery_errors == 0 and stats.bad_records >= 9

    scenario = default_scenario(COUNTRY_IPS, int(1_718_291_195.25 * 1000), seed=7)
    assert scenario.attack is not None
    victim_rate = 40 * 24 / sum(c.mean_per_window for c in scenario.consumers)
    assert stats.attack_events >= 0.9 * ATTACK_MULTIPLIER * victim_rate * (32 - 15)
    victim = scenario.consumer(scenario.attack.victim)
    events = attacker = 0
    start = 1_718_291_195_250
    for raw in producer.values:
        for entry in classify(raw)[0]:
            events += 1
            assert start - 3_000 <= event_ms(entry) <= start + 33_000
            if entry.get("client_ip") in scenario.attack.attacker_ips:
                assert rate_key(entry) == victim.name
                assert event_ms(entry) >= start + 15_000 - 100
                attacker += 1
    assert events == stats.events and attacker == stats.attack_events

    summaries = [line for line in lines if line.startswith("traffic: t=")]
    assert len(summaries) == 3
    assert "attack=off" in summaries[0] and "attack=on" in summaries[-1]
    text = "\n".join(lines)
    assert not [c.api_key for c in scenario.consumers if c.api_key in text]
    assert not [ip for ips in COUNTRY_IPS.values() for ip in ips if ip in text]


def test_run_live_stops_on_event() -> None:
    stop = threading.Event()
    producer = FakeProducer()
    ticks = [0]
    now = [1_718_291_195.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds
        ticks[0] += 1
        if ticks[0] == 40:
            stop.set()

    run_live(
        "unused:9092",
        "gateway.raw",
        rate=100,
        duration=None,
        attack_at=None,
        country_ips=COUNTRY_IPS,
        bad_every=None,
        stop=stop,
        report=lambda _line: None,
        producer=producer,
        clock=lambda: now[0],
        sleep=sleep,
    )
    assert ticks[0] == 40 and producer.flushed and producer.values
    assert all(not classify(raw)[1] for raw in producer.values)


# -- bulk traffic (bench/) ----------------------------------------------------------------------


def test_bulk_traffic_gives_exactly_the_events_asked_for_deterministically() -> None:
    records = list(bulk_traffic(3000, start_ms=START_MS, keys=300, seed=5))
    assert sum(r.events for r in records) == 3000
    assert records == list(bulk_traffic(3000, start_ms=START_MS, keys=300, seed=5))
    other = list(bulk_traffic(3000, start_ms=START_MS, keys=300, seed=5, stream=1))
    assert [r.value for r in other] != [r.value for r in records]
    for rec in records:
        good, problems = classify(rec.value)
        assert not problems
        assert len(good) == rec.events
    emitted = [r.emit_ms for r in records]
    assert emitted == sorted(emitted)


def test_bulk_traffic_looks_like_production() -> None:
    records = list(bulk_traffic(20_000, start_ms=START_MS, keys=2000, rate=5000, seed=9))
    entries = [e for r in records for e in classify(r.value)[0]]
    kinds = Counter(_kind(e) for e in entries)
    # Mostly APISIX, then Kong, a few generic events.
    assert kinds["apisix"] > kinds["kong"] > kinds["generic"] > 0
    arrays = [r for r in records if r.value.startswith(b"[")]
    objects = [r for r in records if r.value.startswith(b"{")]
    assert arrays and objects
    assert max(r.events for r in arrays) == 50  # APISIX batch_max_size
    assert sum(r.events for r in arrays) > sum(r.events for r in objects)
    # Thousands of keys and thousands of addresses, with a long tail of rarely seen keys.
    keys = Counter(rate_key(e) for e in entries if not rate_key(e).startswith("client:"))
    assert len(keys) > 1000
    assert keys.most_common(1)[0][1] > 20 * sorted(keys.values())[len(keys) // 2]
    ips = {e["client_ip"] for e in entries if e.get("client_ip")}
    assert len(ips) > 2000
    assert any(":" in ip for ip in ips)
    rejected = [e for e in entries if e.get("response", {}).get("status") == 401]
    assert 0.002 < len(rejected) / len(entries) < 0.03
    # Event time follows the simulated rate: 20,000 events at 5,000/s span about 4 s.
    times = [event_ms(e) for e in entries]
    assert 3_500 <= max(times) - min(times) <= 7_000


def test_bulk_records_pass_the_job_parser(processor: RecordProcessor) -> None:
    records = list(bulk_traffic(2000, start_ms=START_MS, keys=200, seed=2))
    for i, rec in enumerate(records):
        result = processor.process(rec.value, SourceRef("bench.raw", 0, i))
        assert not result.dead_letters
        assert len(result.events) == rec.events


def test_random_public_ips_are_distinct_and_public() -> None:
    ips = random_public_ips(500, seed=1, ipv6_share=0.1)
    assert len(ips) == len(set(ips)) == 500
    addrs = [ipaddress.ip_address(ip) for ip in ips]
    assert all(a.is_global and not a.is_multicast for a in addrs)
    assert 20 < sum(a.version == 6 for a in addrs) < 100
    assert random_public_ips(500, seed=1, ipv6_share=0.1) == ips
    with pytest.raises(ValueError):
        random_public_ips(1, seed=1, ipv6_share=2)
