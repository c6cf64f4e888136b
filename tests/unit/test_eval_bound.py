"""The evaluation's bound (evaluation.bound): what an oracle finds on the counts the detector
judges, at the false-alert target."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from evaluation import bound
from evaluation.score import GRACE_WINDOWS
from evaluation.traffic import WINDOW_MS, Attack, Spec, plan
from metering.detect import DetectorConfig


def test_the_budget_shares_the_allowed_false_alerts_over_every_test() -> None:
    # 1 false alert over 10,000 key-hours of 360 windows, two tests a window.
    assert bound.budget(1.0, 10_000 * 360) == pytest.approx(1 / 7_200_000)


def test_the_tail_is_the_generator_s_draw() -> None:
    assert bound.tail(0, 3.0, 2.0) == 1.0
    assert bound.tail(1, 0.0, 2.0) == 0.0
    assert bound.tail(5, 0.5, math.inf) == pytest.approx(stats.poisson.sf(4, 0.5))
    # Poisson around a gamma rate of shape 2: a negative binomial, with a fatter tail.
    assert bound.tail(5, 0.5, 2.0) == pytest.approx(stats.nbinom.sf(4, 2.0, 2.0 / 2.5))
    assert bound.tail(5, 0.5, 2.0) > bound.tail(5, 0.5, math.inf)


def test_the_oracle_alerts_on_a_window_or_on_two() -> None:
    p = 1e-7
    assert bound.found_within([30, 0], [1.0, 1.0], math.inf, p)
    assert bound.found_within([0, 30], [1.0, 1.0], math.inf, p)
    assert not bound.found_within([1, 2], [1.0, 1.0], math.inf, p)
    # 4 then 4 where 0.1 is expected: neither window alone is under the budget, both are.
    assert bound.tail(4, 0.1, math.inf) > p
    assert bound.found_within([4, 4], [0.1, 0.1], math.inf, p)
    # A bursty key's own bursts hide the same counts.
    assert not bound.found_within([4, 4], [0.1, 0.1], 0.5, p)


def _attack(attack_id: str, first: int, last: int) -> Attack:
    return Attack(
        attack_id,
        "guessing_distributed",
        frozenset({attack_id}),
        first * WINDOW_MS,
        (last + 1) * WINDOW_MS,
        None,
    )


def test_a_campaign_starting_while_an_earlier_one_s_alerts_belong_to_it_is_overlapped() -> None:
    a = _attack("a", 100, 200)
    during = _attack("b", 150, 400)
    grace = _attack("c", 200 + GRACE_WINDOWS, 300)
    after = _attack("d", 401 + GRACE_WINDOWS, 500)
    assert bound.overlapped([a, during, grace, after]) == {"b", "c"}


def test_the_bounds_of_a_small_evaluation() -> None:
    spec = Spec(keys=120, warmup_hours=6, hours=6, attacks_per_kind=3, stray=200)
    p = plan(spec)
    attacks = [a for a in p.attacks if a.kind in bound.BOUND_KINDS]
    found = bound.bounds(p, attacks, 500.0, DetectorConfig())
    campaigns = [a for a in attacks if a.kind == "guessing_distributed"]
    # No campaign overlaps another here, and each brings more new clients than the background.
    assert bound.overlapped(campaigns) == set()
    assert found["guessing_distributed"] == 1.0
    # Night-time use at the key's daytime peak (at least 3 calls a window) where the key makes
    # 6 % of it: one of the three victims draws too few calls in its first two windows.
    assert found["night_use"] == pytest.approx(2 / 3)
