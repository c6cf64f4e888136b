"""The detector evaluation's traffic (evaluation.traffic) and fast mode (evaluation.fast)."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import numpy as np
import pytest

from evaluation import fast
from evaluation.traffic import (
    ATTACKS,
    COUNTRIES,
    GUESSING_SPEEDS,
    HOUR_MS,
    MISCONFIGURED,
    POPULATIONS,
    STRAY,
    WINDOW_MS,
    Spec,
    consumer,
    keys,
    labels,
    plan,
)
from metering.detect import DetectorConfig

SPEC = Spec(keys=160, warmup_hours=2, hours=6, attacks_per_kind=2, misconfigured=3, stray=20)
PER_HOUR = HOUR_MS // WINDOW_MS


@pytest.fixture(scope="module")
def traffic() -> list:
    return list(keys(plan(SPEC)))


def test_the_same_seed_gives_the_same_traffic_and_another_seed_other_traffic() -> None:
    p, q = plan(SPEC), plan(SPEC)
    assert p.populations == q.populations and p.attacks == q.attacks
    a, b = consumer(p, 7), consumer(q, 7)
    assert np.array_equal(a.counts, b.counts) and a.countries == b.countries


def test_another_seed_draws_other_traffic() -> None:
    from dataclasses import replace

    a = consumer(plan(SPEC), 7)
    b = consumer(plan(replace(SPEC, seed=SPEC.seed + 1)), 7)
    assert not np.array_equal(a.counts, b.counts)


def test_every_population_and_attack_kind_is_there(traffic: list) -> None:
    seen = Counter(kt.population for kt in traffic)
    assert set(POPULATIONS) <= set(seen)
    assert seen[MISCONFIGURED] == 3 and seen[STRAY] == 20
    p = plan(SPEC)
    assert Counter(a.kind for a in p.attacks) == dict.fromkeys(ATTACKS, 2)
    victims = [kt.rate_key for kt in traffic if kt.consumer and kt.attack is not None]
    assert len(victims) == len(set(victims)) == 8  # one attack per key at most


def test_windows_add_up(traffic: list) -> None:
    for kt in traffic:
        active = kt.active()
        assert set(kt.countries) == set(active.tolist())
        for i in active.tolist()[:200]:
            assert sum(kt.countries[i].values()) == kt.counts[i]
            assert 1 <= kt.prefixes[i] <= kt.counts[i]
        assert (kt.legit <= kt.counts).all() and (kt.failures <= kt.counts).all()
        if kt.consumer is None:  # rejected-call keys: every call rejected, none legit key-hours
            assert np.array_equal(kt.failures, kt.counts) and not kt.legit.any()
        assert set().union(*kt.countries.values()) <= set(COUNTRIES)


def test_attack_labels_span_the_attack_calls_inside_the_scored_hours(traffic: list) -> None:
    p = plan(SPEC)
    spans: dict[int, list[tuple[int, int]]] = {}
    for kt in traffic:
        if kt.attack is not None and kt.attack_windows is not None:
            spans.setdefault(kt.attack, []).append(kt.attack_windows)
            first, last = kt.attack_windows
            extra = kt.counts - kt.legit
            if kt.consumer:
                assert extra[first] > 0 and extra[last] > 0
                assert not extra[:first].any() and not extra[last + 1 :].any()
    attacks = labels(p, spans)
    assert len(attacks) == len(p.attacks)
    scored_ms = SPEC.start_ms + SPEC.scored_from * WINDOW_MS
    for a in attacks:
        assert scored_ms <= a.start_ms < a.end_ms <= SPEC.end_ms - 30 * WINDOW_MS


def test_populations_behave_as_named(traffic: list) -> None:
    by_pop: dict[str, list] = {}
    for kt in traffic:
        if kt.attack is None:
            by_pop.setdefault(kt.population, []).append(kt)
    for kt in by_pop["traveller"]:
        # The owner moves: the countries before and after the move never overlap in time.
        homes = [set(kt.countries[i]) for i in kt.active().tolist()]
        changes = sum(1 for a, b in itertools.pairwise(homes) if a != b and not a & b)
        assert changes <= 1
    for kt in by_pop["returning"]:
        # At least an hour of silence, and calls again after it.
        calls = np.flatnonzero(kt.legit)
        gaps = np.diff(calls)
        assert gaps.max() >= PER_HOUR
        assert calls[np.argmax(gaps) + 1] >= SPEC.scored_from
    for kt in by_pop["mobile_sdk"]:
        assert len(set().union(*kt.countries.values())) >= 5


def test_nightly_batches_run_every_night_at_the_same_local_time() -> None:
    spec = Spec(keys=60, warmup_hours=0, hours=48, attacks_per_kind=1, misconfigured=0, stray=0)
    p = plan(spec)
    batch = [i for i, pop in enumerate(p.populations) if pop == "nightly_batch"]
    assert batch
    for i in batch:
        kt = consumer(p, i)
        # At 10-30x its base and at least 30 a window; the busiest window of each day within
        # minutes of the other day's.
        days = kt.counts.reshape(2, -1)
        assert days.max() >= 30
        first, second = (int(np.argmax(d)) for d in days)
        assert abs(first - second) <= 60 * 60_000 // WINDOW_MS


def test_single_client_guessing_runs_at_its_speed(traffic: list) -> None:
    guessers = sorted(
        (kt for kt in traffic if kt.population == "guessing_single"), key=lambda kt: kt.rate_key
    )
    for n, kt in enumerate(guessers):
        first, last = kt.attack_windows
        mean = kt.failures[first : last + 1].mean()
        assert mean == pytest.approx(GUESSING_SPEEDS[n % len(GUESSING_SPEEDS)], rel=0.35)


def test_the_fast_mode_is_the_same_in_one_process_and_in_two() -> None:
    spec = Spec(keys=40, warmup_hours=0.5, hours=4, attacks_per_kind=1, misconfigured=1, stray=5)
    cfg = DetectorConfig()
    one = fast.run(spec, cfg, 5_000, workers=1)
    two = fast.run(spec, cfg, 5_000, workers=2)
    assert one.attacks == two.attacks
    assert sorted(a["alert_id"] for a in one.alerts) == sorted(a["alert_id"] for a in two.alerts)
    assert one.key_hours == two.key_hours > 0
    assert one.window_records == two.window_records


def test_fast_mode_window_records_carry_early_records_at_the_thresholds() -> None:
    from evaluation.traffic import KeyTraffic

    # Rejected calls per window: none, just under the threshold (20), at it, 45, and 200.
    failures = np.zeros(SPEC.windows, dtype=np.int64)
    failures[[3, 4, 5, 6]] = [19, 20, 45, 200]
    counts = failures.copy()
    counts[2] = 7
    kt = KeyTraffic(
        "client:x",
        "guessing_single",
        None,
        counts,
        failures,
        np.minimum(counts, 1),
        np.zeros_like(counts),
        {i: {"DE": int(counts[i])} for i in np.flatnonzero(counts).tolist()},
    )
    cfg = DetectorConfig()
    got = list(fast.window_records(kt, SPEC, cfg, 5_000))
    early = Counter(
        (r["window_start"] - SPEC.start_ms) // WINDOW_MS for r, _ in got if r["kind"] == "early"
    )
    # At 20, 40, 80, 100 (5x: the severity rises), 160: as the job's early records.
    assert early == {4: 1, 5: 2, 6: 5}
    closed = [
        (r["window_start"] - SPEC.start_ms) // WINDOW_MS for r, _ in got if r["kind"] == "window"
    ]
    assert closed == [2, 3, 4, 5, 6]
    for r, at in got:
        start = r["window_start"]
        if r["kind"] == "early":
            # Raised inside the window, at the threshold's share of its calls.
            assert start < at <= start + WINDOW_MS
            assert r["auth_failures"] in (20, 40, 80, 100, 160)
        else:
            assert at == start + WINDOW_MS + 5_000


def test_the_fast_mode_judges_records_in_the_order_the_job_emits_them() -> None:
    from evaluation.traffic import KeyTraffic

    # 200 rejections a window: the next window's early records come before this one closes.
    failures = np.zeros(SPEC.windows, dtype=np.int64)
    failures[10:13] = 200
    kt = KeyTraffic(
        "client:y",
        "guessing_single",
        None,
        failures.copy(),
        failures,
        np.minimum(failures, 1),
        np.zeros_like(failures),
        {i: {"DE": 200} for i in range(10, 13)},
    )
    alerts, n = fast.judge(kt, SPEC, DetectorConfig(), 5_000)
    assert n == 3 * 6  # five early records and the close, per window
    times = [a["event_ms"] for a in alerts]
    assert times == sorted(times)
    # One incident: opened by the first window's early record at the threshold, escalated once
    # at 5x, closed at the end of the input; no window's close repeats them.
    assert [(a["status"], a["severity"], a["window_closed"]) for a in alerts] == [
        ("open", "warning", False),
        ("update", "high", False),
        ("closed", "high", True),
    ]


def test_every_country_has_addresses_in_the_geo_database() -> None:
    from testkit.traffic import default_geoip_db, ips_for_countries

    found = ips_for_countries(default_geoip_db(), list(COUNTRIES), 1, 3, ipv6_per_country=0)
    assert all(len(v) == 1 for v in found.values()) and set(found) == set(COUNTRIES)


def test_night_use_happens_at_the_victim_s_night() -> None:
    from evaluation.traffic import COUNTRIES as TZ

    p = plan(SPEC)
    seen = 0
    for index, (a, _, _, _) in p.on_key.items():
        if p.attacks[a].kind != "night_use":
            continue
        kt = consumer(p, index)
        first, _ = kt.attack_windows
        hour = ((SPEC.start_ms + first * WINDOW_MS) / HOUR_MS + TZ[p.homes[index]]) % 24
        # Starts at 01:00-03:30 local time (its first window may draw no call: a few minutes).
        assert 1.0 - 5 / 60 <= hour <= 3.5 + 15 / 60
        seen += 1
    assert seen == SPEC.attacks_per_kind


def test_the_shared_signal_counts_clients_as_they_begin_to_fail() -> None:
    from evaluation.traffic import KeyTraffic

    def key(name: str, failures: dict[int, int], calls: dict[int, int] | None = None) -> Any:
        f = np.zeros(SPEC.windows, dtype=np.int64)
        c = np.zeros(SPEC.windows, dtype=np.int64)
        for i, n in failures.items():
            f[i] = n
        for i, n in (calls or failures).items():
            c[i] = n
        countries = {i: {"DE": int(c[i])} for i in np.flatnonzero(c).tolist()}
        zero = np.zeros_like(c)
        return KeyTraffic(name, "x", None, c, f, zero, zero, countries)

    cfg = DetectorConfig()
    quiet = 3_600_000 // cfg.window_ms  # the default quiet hour, in windows
    shared = fast.Shared.empty(SPEC.windows, cfg)
    # a fails in windows 3 and 4: it began to fail in 3 only.
    shared.add(key("client:a", {3: 2, 4: 1}))
    shared.add(key("client:b", {4: 5}))
    # c fails again after exactly the quiet hour (not new), then after more than it (new).
    shared.add(key("client:c", {10: 1, 10 + quiet: 1, 10 + 2 * quiet + 1: 3}))
    # A consumer key's own rejections are not unidentified clients.
    shared.add(key("c00001", {4: 1}, {4: 100}))
    kt = shared.traffic()
    assert kt.rate_key == "global"
    assert kt.countries[4] == {"DE": 5}
    records = [r for r, _ in fast.window_records(kt, SPEC, cfg, 5_000)]
    assert [(r["window_start"], r["kind"], r["count"], r["auth_failures"]) for r in records] == [
        (SPEC.start_ms + i * cfg.window_ms, "shared", n, f)
        for i, n, f in ((3, 1, 2), (4, 1, 5), (10, 1, 1), (10 + 2 * quiet + 1, 1, 3))
    ]
