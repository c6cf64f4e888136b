"""The evaluation's oracle (evaluation.oracle): what an oracle that knows each key's true rate
finds on the counts the detector judges, at the false-alert target."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation import oracle
from evaluation.score import GRACE_WINDOWS, KindScore, Report, table
from evaluation.traffic import WINDOW_MS, Attack, Spec, plan
from metering.detect import DetectorConfig


def test_the_budget_shares_the_allowed_false_alerts_over_every_test() -> None:
    # 1 false alert over 10,000 key-hours of 360 windows, two tests a window.
    assert oracle.budget(1.0, 10_000 * 360) == pytest.approx(1 / 7_200_000)


@pytest.mark.parametrize(
    ("mean", "shape", "count"), [(0.5, 2.0, 4), (3.0, 1.5, 12), (2.0, 50.0, 7)]
)
def test_the_tail_is_the_generator_s_draw(mean: float, shape: float, count: int) -> None:
    # The generator draws a window as Poisson around a gamma rate (evaluation.traffic _sample).
    rng = np.random.default_rng(5)
    draws = rng.poisson(mean * rng.gamma(shape, 1.0 / shape, size=400_000))
    empirical = float((draws >= count).mean())
    assert oracle.tail(count, mean, shape) == pytest.approx(empirical, rel=0.05)
    assert oracle.tail(0, mean, shape) == 1.0
    assert oracle.tail(1, 0.0, shape) == 0.0


def test_the_oracle_alerts_on_a_window_or_on_two() -> None:
    p = 1e-7
    assert oracle.found_within([30, 0], [1.0, 1.0], math.inf, p)
    assert oracle.found_within([0, 30], [1.0, 1.0], math.inf, p)
    assert not oracle.found_within([1, 2], [1.0, 1.0], math.inf, p)
    # 4 then 4 where 0.1 is expected: neither window alone is under the budget, both are.
    assert oracle.tail(4, 0.1, math.inf) > p
    assert oracle.found_within([4, 4], [0.1, 0.1], math.inf, p)
    # A bursty key's own bursts hide the same counts.
    assert not oracle.found_within([4, 4], [0.1, 0.1], 0.5, p)


def _attack(attack_id: str, first: int, last: int) -> Attack:
    return Attack(
        attack_id,
        "guessing_distributed",
        frozenset({attack_id}),
        first * WINDOW_MS,
        (last + 1) * WINDOW_MS,
        None,
    )


def test_a_campaign_whose_first_windows_are_credited_to_an_earlier_one_is_overlapped() -> None:
    a = _attack("a", 100, 200)
    assert oracle.overlapped([a, _attack("b", 150, 400)]) == {"b"}
    # Its first window is a's last credited one, its second its own: it can be credited.
    assert oracle.overlapped([a, _attack("c", 200 + GRACE_WINDOWS, 300)]) == set()
    assert oracle.overlapped([a, _attack("d", 200 + GRACE_WINDOWS - 1, 300)]) == {"d"}
    assert oracle.overlapped([_attack("e", 401 + GRACE_WINDOWS, 500), a]) == set()


def test_the_oracle_on_a_small_evaluation() -> None:
    spec = Spec(keys=120, warmup_hours=6, hours=6, attacks_per_kind=3, stray=200)
    p = plan(spec)
    attacks = [a for a in p.attacks if a.kind in oracle.ORACLE_KINDS]
    found = oracle.recalls(p, attacks, 500.0, DetectorConfig())
    campaigns = [a for a in attacks if a.kind == "guessing_distributed"]
    # No campaign overlaps another here, and each brings more new clients than the background.
    assert oracle.overlapped(campaigns) == set()
    assert found["guessing_distributed"] == 1.0
    # Night-time use at the key's daytime peak (at least 3 calls a window) where the key makes
    # 6 % of it: one of the three victims draws too few calls in its first two windows.
    assert found["night_use"] == pytest.approx(2 / 3)


def test_the_report_shows_the_oracle_beside_the_kinds_it_is_for() -> None:
    kinds = {"night_use": KindScore(2, [0, None]), "leaked_key": KindScore(1, [0])}
    report = Report(kinds, KindScore(3, [0, None, 0]), 100.0, 0, {}, 0, 0, {"night_use": 0.5})
    rows = {line.split()[0]: line.split() for line in table(report).splitlines()[2:5]}
    assert rows["night_use"][-1] == "0.50"
    assert rows["leaked_key"][-1] == "-"
    assert report.as_json()["per_kind"]["night_use"]["oracle_recall_2"] == 0.5
    assert "oracle_recall_2" not in report.as_json()["per_kind"]["leaked_key"]
