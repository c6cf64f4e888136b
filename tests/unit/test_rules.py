"""The detector's rules (metering/rules/) and the shared baseline (metering/baseline.py), on
window records of made-up keys: what each rule must see, and what it must let pass."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytest

from metering import baseline as bl
from metering.detect import DetectorConfig, KeyState, WindowAgg, evaluate, window_record
from metering.rules import Window

CFG = DetectorConfig()
W = CFG.window_ms
PER_HOUR = 3_600_000 // W
T0 = 1_767_225_600_000  # a midnight (UTC)
NOW = T0


def rec(
    i: int, count: int, countries: list[str], failures: int = 0, key: str = "k", networks: int = 1
) -> dict[str, Any]:
    agg = WindowAgg(count=count, units=float(count), auth_failures=failures,
                    countries=set(countries), networks={f"10.0.{n}.0/24" for n in range(networks)},
                    consumer=key, key_fingerprint=None)  # fmt: skip
    return window_record(key, T0 + i * W, T0 + (i + 1) * W, agg)


def run(
    counts: Any, countries: Any = None, failures: Any = None, key: str = "k",
    state: KeyState | None = None, offset: int = 0, networks: Any = None,
) -> tuple[KeyState | None, list[tuple[int, dict[str, Any]]]]:  # fmt: skip
    """Judge the windows with a call; return the state and (window index, record) alerts.
    ``networks``: the distinct client networks of window i (a function of i; one if None)."""
    out = []
    for i, c in enumerate(counts):
        if not c:
            continue
        where = countries(i) if callable(countries) else (countries or ["GB"])
        f = int(failures[i]) if failures is not None else 0
        nets = min(int(c), networks(i)) if networks is not None else 1
        record = rec(offset + i, int(c), where, f, key, nets)
        state, alerts = evaluate(state, record, CFG, NOW)
        out.extend((offset + i, a) for a in alerts)
    return state, out


def opened(alerts: list[tuple[int, dict[str, Any]]]) -> list[tuple[int, str]]:
    return [(i, a["rule"]) for i, a in alerts if a["status"] == "open"]


def poisson_gamma(rate: Any, shape: float, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    rate = np.asarray(rate, dtype=float)
    return rng.poisson(rate * rng.gamma(shape, 1 / shape, size=rate.shape))


def diurnal(hours: float, peak: float, days: float = 2.0) -> Any:
    h = (np.arange(int(days * 24 * PER_HOUR)) / PER_HOUR) % 24
    return peak * (0.06 + 0.94 * np.clip(np.sin(math.pi * (h - 7) / 15), 0, 1))


# -- the baseline ------------------------------------------------------------------------------


def test_tail_probability_is_poisson_or_negative_binomial() -> None:
    assert bl.tail_probability(10, 2.0, 2.0) == pytest.approx(4.6498e-5, rel=1e-3)
    assert bl.tail_probability(0, 2.0, 2.0) == 1.0
    # Burstier (variance 10 at mean 2): the same window is far less surprising.
    assert bl.tail_probability(10, 2.0, 10.0) > 100 * bl.tail_probability(10, 2.0, 2.0)


def test_the_baseline_learns_a_steady_rate_and_its_burstiness() -> None:
    b = bl.new_baseline(0)
    counts = poisson_gamma(np.full(6 * PER_HOUR, 20.0), 4.0, 1)  # variance 20 + 20^2/4
    for i, c in enumerate(counts):
        bl.add(b, i, float(c), W, CFG.baseline)
    exp = bl.expected(b, len(counts), W, CFG.baseline)
    assert exp.mean == pytest.approx(20, rel=0.15)
    assert bl.burstiness(b, W, CFG.baseline) == pytest.approx(0.25, rel=0.35)


def test_silent_windows_count_as_zero_and_the_day_scale_remembers() -> None:
    b = bl.new_baseline(0)
    for i in range(2 * PER_HOUR):
        bl.add(b, i, 10.0, W, CFG.baseline)
    later = bl.expected(b, 5 * PER_HOUR, W, CFG.baseline)  # 3 silent hours later
    assert later.source == "day"
    assert 2 < later.mean < 10


def test_the_hour_of_day_profile_learns_yesterday_at_this_hour() -> None:
    b = bl.new_baseline(0)
    day = [50.0 if 9 <= (i // PER_HOUR) % 24 < 17 else 1.0 for i in range(24 * PER_HOUR)]
    for i, c in enumerate(day):
        bl.add(b, i, c, W, CFG.baseline)
    at_night = bl.expected(b, 24 * PER_HOUR + 3 * PER_HOUR, W, CFG.baseline)
    at_noon = bl.expected(b, 24 * PER_HOUR + 12 * PER_HOUR, W, CFG.baseline)
    assert at_noon.source == "hour-of-day" and at_noon.mean == pytest.approx(50)
    assert at_night.mean < 2


# -- rate_spike --------------------------------------------------------------------------------


@pytest.mark.parametrize(("peak", "shape"), [(0.05, 2.0), (2.0, 1.5), (50.0, 5.0), (300.0, 50.0)])
def test_diurnal_keys_of_any_rate_and_burstiness_raise_nothing(peak: float, shape: float) -> None:
    counts = poisson_gamma(diurnal(24, peak), shape, int(peak * 100))
    _, alerts = run(counts)
    assert opened(alerts) == []


def test_a_nightly_batch_alerts_the_first_night_and_is_normal_the_next() -> None:
    rate = np.full(2 * 24 * PER_HOUR, 2.0)
    for night in (0, 1):
        at = night * 24 * PER_HOUR + 3 * PER_HOUR
        rate[at : at + 20 * 6] = 60.0  # 20 minutes at 30x, 03:00 every night
    counts = poisson_gamma(rate, 20.0, 3)
    _, alerts = run(counts)
    assert [i // (24 * PER_HOUR) for i, _ in opened(alerts)] == [0]


def test_night_time_use_at_the_owners_daytime_rate_is_found_within_two_windows() -> None:
    rate = diurnal(24, 5.0)
    at = 24 * PER_HOUR + 2 * PER_HOUR  # 02:00 on day 2, when the key makes 0.3 calls a window
    rate[at : at + 30 * 6] += 8.0
    counts = poisson_gamma(rate, 10.0, 14)
    _, alerts = run(counts)
    first = opened(alerts)
    assert first and first[0][1] == "rate_spike" and at <= first[0][0] <= at + 1


def test_a_key_back_from_hours_of_silence_is_not_an_attack() -> None:
    rate = np.full(2 * 24 * PER_HOUR, 5.0)
    rate[30 * PER_HOUR : 36 * PER_HOUR] = 0.0
    _, alerts = run(poisson_gamma(rate, 20.0, 5))
    assert opened(alerts) == []


def test_a_bursty_key_is_judged_against_its_own_bursts() -> None:
    counts = poisson_gamma(np.full(24 * PER_HOUR, 10.0), 1.5, 6)
    _, alerts = run(counts)
    assert opened(alerts) == []
    assert max(counts) > 6 * 10  # bursts a fixed 5x rule would have called spikes


def test_nothing_fires_while_a_key_is_learned() -> None:
    counts = [1] * 10 + [500] * 5
    _, alerts = run(counts)
    assert alerts == []


# -- new_country -------------------------------------------------------------------------------


def test_a_thief_calling_alongside_the_owner_is_found_within_two_windows() -> None:
    rate = np.full(26 * PER_HOUR, 4.0)
    counts = poisson_gamma(rate, 20.0, 7)
    at = 25 * PER_HOUR
    _, alerts = run(counts, lambda i: ["GB", "BR"] if at <= i < at + 360 else ["GB"])
    assert opened(alerts) and opened(alerts)[0] in [(at, "new_country"), (at + 1, "new_country")]
    found = next(a for _, a in alerts if a["status"] == "open")
    assert found["features"]["new_countries"] == ["BR"]
    assert found["features"]["concurrent"] is True


def test_the_owner_calling_from_home_after_a_thiefs_first_call_is_found_then() -> None:
    # A low-rate key: the thief's first window has no call of the owner's, the next one has.
    counts = poisson_gamma(np.full(26 * PER_HOUR, 0.3), 20.0, 12)
    at = 25 * PER_HOUR
    counts[at : at + 2] = 1
    _, alerts = run(counts, lambda i: ["BR"] if i == at else ["GB"])
    assert opened(alerts) == [(at + 1, "new_country")]
    assert alerts[0][1]["features"]["concurrent"] is True


def test_a_key_younger_than_a_day_takes_two_windows_from_home() -> None:
    # A day has not shown all of its countries yet (a user abroad at their own hours): the
    # owner's first call from home after the new country's is not enough, the second is.
    counts = poisson_gamma(np.full(5 * PER_HOUR, 0.3), 20.0, 12)
    at = 4 * PER_HOUR
    counts[at : at + 4] = [1, 1, 0, 1]
    _, alerts = run(counts, lambda i: ["BR"] if i == at else ["GB"])
    assert opened(alerts) == [(at + 3, "new_country")]


def test_a_settled_keys_window_from_home_and_a_new_country_is_impossible_travel() -> None:
    counts = poisson_gamma(np.full(26 * PER_HOUR, 0.3), 20.0, 14)
    at = 25 * PER_HOUR
    counts[at] = 2
    _, alerts = run(counts, lambda i: ["GB", "ZA"] if i == at else ["GB"])
    assert opened(alerts) == [(at, "new_country")]
    assert alerts[0][1]["features"]["concurrent"] is True


@pytest.mark.parametrize(("at", "alerts_at"), [(24 * PER_HOUR - 1, []), (24 * PER_HOUR, [0])])
def test_a_key_is_settled_a_day_of_event_time_after_its_first_window(
    at: int, alerts_at: list[int]
) -> None:
    counts = poisson_gamma(np.full(at + 1, 0.3), 20.0, 15)
    counts[0] = 1  # the key's first window; the window of both countries at `at`, none after
    counts[at] = 2
    _, alerts = run(counts, lambda i: ["GB", "ZA"] if i == at else ["GB"])
    assert opened(alerts) == [(at + d, "new_country") for d in alerts_at]


def test_a_settled_roaming_key_with_a_new_country_beside_home_raises_nothing() -> None:
    # A mobile app's key: its users call from many countries, so one more beside home is no
    # evidence unless the rate rises.
    where = ["GB", "FR", "DE", "ES", "IT", "NL"]
    counts = np.full(26 * PER_HOUR, 6)
    at = 25 * PER_HOUR
    _, alerts = run(counts, lambda i: [*where, "BR"] if i == at else where)
    assert opened(alerts) == []


def test_a_young_keys_switch_window_with_both_countries_raises_nothing() -> None:
    # The owner's last call from home and first from abroad in one window (a VPN connecting
    # mid-session), none from home later, on a key not yet seen for a day.
    counts = poisson_gamma(np.full(8 * PER_HOUR, 4.0), 20.0, 13)
    leave = 4 * PER_HOUR
    counts[leave] = max(2, counts[leave])
    _, alerts = run(
        counts, lambda i: ["GB"] if i < leave else ["GB", "JP"] if i == leave else ["JP"]
    )
    assert opened(alerts) == []


def test_a_traveller_who_stops_calling_from_home_raises_nothing() -> None:
    counts = poisson_gamma(np.full(30 * PER_HOUR, 4.0), 20.0, 8)
    leave = 26 * PER_HOUR
    _, alerts = run(counts, lambda i: ["GB"] if i < leave else ["JP"])
    assert opened(alerts) == []


def test_a_leaked_key_used_from_many_countries_at_once_is_critical() -> None:
    counts = poisson_gamma(np.full(26 * PER_HOUR, 3.0), 20.0, 9)
    at = 25 * PER_HOUR
    counts[at] += 12
    _, alerts = run(counts, lambda i: ["US", "BR", "DE", "JP", "NG"] if i == at else ["US"])
    assert opened(alerts) == [(at, "new_country")]
    assert alerts[0][1]["severity"] == "critical" and alerts[0][1]["features"]["leak"]


def test_a_leaked_key_used_from_many_networks_while_its_owner_sleeps_is_critical() -> None:
    # A low-rate key, silent at night; the leak's first window has calls from one new country
    # only, but each from a network of its own.
    counts = poisson_gamma(np.full(26 * PER_HOUR, 0.5), 20.0, 11)
    at = 25 * PER_HOUR
    counts[at:] = 0
    counts[at] = 5
    _, alerts = run(
        counts,
        lambda i: ["VN"] if i >= at else ["US"],
        networks=lambda i: 5 if i >= at else 2,
    )
    assert opened(alerts) == [(at, "new_country")]
    found = alerts[0][1]
    assert found["severity"] == "critical"
    assert found["features"]["leak"] and found["features"]["networks"] == 5
    assert "5 networks at once" in found["summary"]


@pytest.mark.parametrize(("at_home", "away"), [(1, 1), (4, 4), (6, 6), (8, 8)])
def test_an_owner_who_moves_with_the_networks_it_uses_raises_nothing(
    at_home: int, away: int
) -> None:
    # As many networks at once abroad as at home: a team or its servers moving, not a leak.
    counts = poisson_gamma(np.full(30 * PER_HOUR, 12.0), 20.0, 8)
    leave = 26 * PER_HOUR
    _, alerts = run(
        counts,
        lambda i: ["GB"] if i < leave else ["JP"],
        networks=lambda i: at_home if i < leave else away,
    )
    assert opened(alerts) == []


def test_the_networks_peak_is_learnt_from_the_owners_windows_outside_incidents() -> None:
    from metering.rules import geography

    cfg = geography.Config()
    state = geography.State(familiar={"US": (8.0, T0)}, networks_peak=(2.0, T0))

    def window(i: int, countries: tuple[str, ...], networks: int) -> Window:
        exp = bl.Expected(4.0, 4.0, "minutes")
        return Window("k", T0 + i * W, i, W, True, 64, 0, countries, exp, True, (64,), networks)

    # A thief from the owner's country with many networks, during its incident: not learnt.
    geography.learn(window(1, ("US",), 64), state, cfg, incident_open=True)
    assert state.networks_peak == (2.0, T0)
    # A window with a new country is not the owner's own either.
    geography.learn(window(2, ("US", "VN"), 64), state, cfg, incident_open=False)
    assert state.networks_peak == (2.0, T0)
    geography.learn(window(3, ("US",), 3), state, cfg, incident_open=False)
    assert state.networks_peak == (3.0, T0 + 3 * W)


def test_a_key_restored_without_a_networks_peak_is_not_judged_by_it() -> None:
    from metering.rules import geography

    cfg = geography.Config()
    restored = geography.State(familiar={"US": (8.0, T0)})  # saved before the peak existed
    exp = bl.Expected(1.0, 1.0, "minutes")
    w = Window("k", T0 + W, 1, W, True, 6, 0, ("VN",), exp, True, (6,), 6)
    assert geography.check(w, restored, cfg) is None
    learned = geography.State(familiar={"US": (8.0, T0)}, networks_peak=(2.0, T0))
    found = geography.check(w, learned, cfg)
    assert found is not None and found.features["leak"]


def test_a_roaming_key_seeing_another_country_raises_nothing() -> None:
    rng = random.Random(10)
    roam = [f"R{i}" for i in range(40)]
    counts = poisson_gamma(np.full(30 * PER_HOUR, 20.0), 20.0, 10)
    # Home plus a country drawn from ever more of the 40 (new ones keep appearing).
    _, alerts = run(counts, lambda i: ["US", rng.choice(roam[: 8 + i // PER_HOUR])])
    assert opened(alerts) == []


def test_a_country_is_not_learned_from_the_windows_judged_and_fades_over_days() -> None:
    counts = np.full(26 * PER_HOUR, 4)
    at = 25 * PER_HOUR
    state, alerts = run(counts, lambda i: ["GB", "BR"] if i >= at else ["GB"])
    assert opened(alerts) == [(at, "new_country")]  # a settled key: at once
    assert state is not None
    assert "BR" not in state.rules["new_country"].familiar  # an incident is open
    # A month without GB: it is new again.
    geo = state.rules["new_country"]
    later = T0 + (at + 30 * 24 * PER_HOUR) * W
    from metering.rules import geography

    assert geography._familiarity(geo.familiar["GB"], later, CFG.rules["new_country"]) < 0.5


# -- auth_failures -----------------------------------------------------------------------------


@pytest.mark.parametrize(("per_window", "within"), [(200, 0), (50, 0), (10, 1), (2, 1)])
def test_guessing_is_found_at_any_speed(per_window: int, within: int) -> None:
    tries = [per_window] * 60
    _, alerts = run(tries, [], failures=tries, key="client:x")
    assert opened(alerts)[0] == (opened(alerts)[0][0], "auth_failures")
    assert opened(alerts)[0][0] <= within


def test_a_misconfigured_client_or_a_stray_rejection_raises_nothing() -> None:
    retry = [1 if i % 6 == 0 else 0 for i in range(24 * PER_HOUR)]  # every minute, all day
    _, alerts = run(retry, [], failures=retry, key="client:m")
    assert alerts == []
    _, alerts = run([6], [], failures=[6], key="client:s")
    assert alerts == []
    # Two mistyped tries either side of a window's end are not a run worth a warning.
    _, alerts = run([1, 1], [], failures=[1, 1], key="client:t")
    assert alerts == []


def test_a_guesser_at_a_few_tries_a_window_is_found_in_its_second_window() -> None:
    tries = [1, 2, 0, 1, 1, 1]
    _, alerts = run(tries, [], failures=tries, key="client:g")
    ((at, a),) = alerts
    assert at == 1 and a["status"] == "open" and a["severity"] == "warning"
    assert a["features"] == {"signal": "persistent", "run_windows": 2, "run_failures": 3}
    # After the gap, windows 3-5 are a run of their own: the same incident, no new record.


def test_guessing_state_saved_before_the_run_existed_restores_with_no_run() -> None:
    from metering.rules import guessing

    old = guessing.State.__new__(guessing.State)
    old.__setstate__((None, {"failures": 4.0, "calls": 4.0, "last_index": 7}))
    assert (old.failures, old.last_index, old.run_windows, old.run_failures) == (4.0, 7, 0, 0)


def test_an_owners_few_rejections_among_many_calls_raise_nothing() -> None:
    counts = np.full(3 * PER_HOUR, 100)
    failures = np.full(3 * PER_HOUR, 3)
    _, alerts = run(counts, failures=failures)
    assert alerts == []


# -- distributed_guessing ----------------------------------------------------------------------


def test_a_client_counts_in_the_shared_signal_as_it_begins_to_fail() -> None:
    from metering.rules.distributed import newly_failing

    assert newly_failing([], 360) == []
    # A job retrying a revoked key every minute all day: once.
    assert newly_failing(list(range(5, 8640, 6)), 360) == [5]
    # Back after more than the quiet span: again; after exactly it: not.
    assert newly_failing([0, 1, 361, 723, 724], 360) == [0, 723]


def shared(i: int, clients: int, failures: int) -> dict[str, Any]:
    return {**rec(i, clients, ["DE"], failures, key="global"), "kind": "shared"}


def test_many_clients_failing_at_once_is_one_signal_on_the_shared_key() -> None:
    background = poisson_gamma(np.full(2 * PER_HOUR, 1.0), 5.0, 11)
    at = PER_HOUR + 30
    clients = background.copy()
    clients[at : at + 120] += 12  # 12 more networks a window, a try or two each
    state = None
    found = []
    for i, c in enumerate(clients):
        if c:
            state, alerts = evaluate(state, shared(i, int(c), int(c) * 2), CFG, NOW)
            found += [(i, a) for a in alerts]
    first = [(i, a["rule"]) for i, a in found if a["status"] == "open"]
    assert first and first[0][1] == "distributed_guessing" and at <= first[0][0] <= at + 1
    # The key rules never judge the shared signal, nor does the shared rule judge keys.
    assert {a["rule"] for _, a in found} == {"distributed_guessing"}


def test_fewer_newly_failing_clients_than_the_floor_never_count() -> None:
    # A quiet API: three stray rejected clients an hour. 9 new failing clients in a window are
    # improbable, but under the floor (min_clients 10: a small fleet whose key was revoked); 10
    # are a campaign.
    def run(burst: int) -> list[str]:
        state = None
        out: list[str] = []
        for i in range(0, 2 * PER_HOUR, PER_HOUR // 3):
            state, alerts = evaluate(state, shared(i, 1, 1), CFG, NOW)
            out += [a["status"] for a in alerts]
        state, alerts = evaluate(state, shared(2 * PER_HOUR, burst, burst), CFG, NOW)
        return out + [a["status"] for a in alerts]

    assert run(9) == []
    assert run(10) == ["open"]


def test_the_usual_trickle_of_failing_clients_raises_nothing() -> None:
    clients = poisson_gamma(np.full(2 * 24 * PER_HOUR, 1.0) + diurnal(24, 2.0), 5.0, 12)
    state = None
    for i, c in enumerate(clients):
        if c:
            state, alerts = evaluate(state, shared(i, int(c), int(c)), CFG, NOW)
            assert alerts == []


def test_a_campaign_does_not_raise_what_the_next_hours_expect_of_the_shared_signal() -> None:
    # Two days of the usual trickle, then a campaign at noon of the second day and another an
    # hour after the first ends. A key's profile takes its bursts (a nightly batch is its
    # owner's); the shared signal's does not, so the second campaign is found at once too.
    clients = poisson_gamma(np.full(2 * 24 * PER_HOUR, 1.0), 5.0, 13)
    first, second = (24 + 12) * PER_HOUR, (24 + 12) * PER_HOUR + 90 * 6
    for at in (first, second):
        clients[at : at + 30 * 6] += 10
    state = None
    opens = []
    for i, c in enumerate(clients):
        if c:
            state, alerts = evaluate(state, shared(i, int(c), int(c)), CFG, NOW)
            opens += [i for a in alerts if a["status"] == "open"]
    assert len(opens) == 2
    assert first <= opens[0] <= first + 1 and second <= opens[1] <= second + 1
