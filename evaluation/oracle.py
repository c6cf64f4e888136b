"""A reference for the attack kinds the detector sees only through counts: an oracle's recall.

Night-time use comes from the key's own country and networks, and distributed guessing from
clients no different from stray rejected calls: what tells them from legit traffic is how many
calls (or newly failing clients) a window holds. For these kinds the evaluation reports what an
**oracle** finds within 2 windows on the same counts, at the false-alert target: it knows what
the detector has to estimate (each key's true legit rate in each window and its burstiness, the
shared signal's background rate) and spends the false-alert budget on this one kind, evenly
over its tests.

It is a reference, not a ceiling: a test that spread its budget unevenly (more of it on a key's
quiet hours), or used the slack of whole-number thresholds, would find somewhat more. Where the
detector's recall is well under it, the rules leave something to find; where they are close, the
misses are attacks that draw few calls in their first windows.

The oracle tests, like ``rate_spike``, the latest window and the latest two (the tail
probability of their sum), and alerts where one is at most the budget per test: the false
alerts allowed (``TARGET_FALSE_PER_10K`` per 10,000 legit key-hours) over the tests it makes on
legit traffic. On the shared signal it also needs a record the scorer can credit: a campaign
whose first 2 windows fall while an earlier one's alerts still belong to that one
(evaluation.score) cannot be told apart on the one shared key.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

from scipy import stats

from evaluation.fast import Shared
from evaluation.score import GRACE_WINDOWS, TARGET_FALSE_PER_10K
from evaluation.traffic import (
    MISCONFIGURED,
    STRAY,
    WINDOW_MS,
    Attack,
    Counts,
    Plan,
    client,
    consumer,
    legit_model,
)
from metering.detect import DetectorConfig

ORACLE_KINDS: Final = ("night_use", "guessing_distributed")
"""The kinds the detector sees only through counts: the oracle's recall is reported."""
TESTS_PER_WINDOW: Final = 2
"""The oracle's tests ending at each window: the window alone, and it with the one before."""
WITHIN: Final = 2


def budget(false_alerts: float, tested_windows: float) -> float:
    """The tail probability at which a test alerts, so that ``false_alerts`` are expected over
    ``tested_windows`` of legit traffic."""
    return false_alerts / (tested_windows * TESTS_PER_WINDOW)


def tail(count: int, mean: float, shape: float) -> float:
    """P(X >= count) for X Poisson around a gamma-distributed rate of this mean and shape (a
    negative binomial; Poisson for an infinite shape): how the generator draws a window."""
    if count <= 0:
        return 1.0
    if mean <= 0:
        return 0.0
    if math.isinf(shape):
        return float(stats.poisson.sf(count - 1, mean))
    return float(stats.nbinom.sf(count - 1, shape, shape / (shape + mean)))


def found_within(counts: Sequence[int], means: Sequence[float], shape: float, p: float) -> bool:
    """Whether the oracle alerts on an attack's first ``WITHIN`` windows (their counts, and the
    legit means there): a window alone, or a window and the one before (two windows' sum is
    taken as one draw of twice the shape, exact where their means are equal)."""
    for i in range(min(WITHIN, len(counts))):
        if tail(counts[i], means[i], shape) <= p:
            return True
        if i and tail(counts[i - 1] + counts[i], means[i - 1] + means[i], 2 * shape) <= p:
            return True
    return False


def overlapped(attacks: Sequence[Attack]) -> set[str]:
    """The shared-signal attacks whose first ``WITHIN`` windows all fall while an earlier one's
    alerts still belong to it: the scorer credits a shared alert then to the earlier one."""
    out = set()
    for a in attacks:
        last_counted = a.start_ms // WINDOW_MS + WITHIN - 1
        for b in attacks:
            if (b.start_ms, b.attack_id) < (a.start_ms, a.attack_id) and last_counted <= (
                b.end_ms - 1
            ) // WINDOW_MS + GRACE_WINDOWS:
                out.add(a.attack_id)
    return out


def recalls(
    p: Plan, attacks: Sequence[Attack], key_hours: float, cfg: DetectorConfig
) -> dict[str, float]:
    """Per kind of ``ORACLE_KINDS`` with attacks: the share the oracle finds within 2 windows.
    ``attacks``: the labelled attacks (their first window is their first call); ``key_hours``:
    the legit key-hours, which set the false-alert budget."""
    spec = p.spec
    allowed = key_hours * TARGET_FALSE_PER_10K / 10_000
    scored = spec.windows - spec.scored_from
    by_id = {a.attack_id: a for a in attacks}
    out: dict[str, float] = {}
    night = [a for a in attacks if a.kind == "night_use"]
    if night:
        # A key is tested in every window of the key-hours the budget is counted over.
        per_test = budget(allowed, key_hours * 3_600_000 / WINDOW_MS)
        hits = 0
        for index, (a, _, _, _) in p.on_key.items():
            attack = by_id.get(p.attacks[a].attack_id)
            if attack is None or attack.kind != "night_use":
                continue
            first = (attack.start_ms - spec.start_ms) // WINDOW_MS
            rate, shape = legit_model(p, index)
            counts = consumer(p, index).counts[first : first + WITHIN]
            means = rate[first : first + WITHIN].tolist()
            hits += found_within(counts.tolist(), means, shape, per_test)
        out["night_use"] = hits / len(night)
    campaigns = [a for a in attacks if a.kind == "guessing_distributed"]
    if campaigns:
        clients, background = _shared(p, cfg)
        # One shared signal, tested in every scored window.
        per_test = budget(allowed, scored)
        mean = float(background[spec.scored_from :].mean())
        alone = {a.attack_id for a in campaigns} - overlapped(campaigns)
        hits = 0
        for attack in campaigns:
            first = (attack.start_ms - spec.start_ms) // WINDOW_MS
            counts = clients[first : first + WITHIN].tolist()
            hits += attack.attack_id in alone and found_within(
                counts, [mean] * len(counts), math.inf, per_test
            )
        out["guessing_distributed"] = hits / len(campaigns)
    return out


def _shared(p: Plan, cfg: DetectorConfig) -> tuple[Counts, Counts]:
    """The shared signal's newly failing clients per window (as the job counts them), all and
    legit only."""
    every, legit = Shared.empty(p.spec.windows, cfg), Shared.empty(p.spec.windows, cfg)
    for index, (_, population, _) in enumerate(p.clients):
        kt = client(p, index)
        every.add(kt)
        if population in (MISCONFIGURED, STRAY):
            legit.add(kt)
    return every.clients, legit.clients
