"""rate_spike: a window far busier than the key's own normal at that time.

The key's normal is its shared baseline (metering.baseline): the highest of its minutes and
hour scales and its hour-of-day profile, with its own variability. The window's count is judged
by its tail probability under a negative binomial of that mean and variance, so a bursty key is
judged against its own bursts and a low-rate key is not held to a fixed ratio; a key's quiet
hours (night-time use) are judged against its quiet hours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from metering.baseline import tail_probability
from metering.rules import Finding, Window, severity_from_score

NAME = "rate_spike"
ON_EARLY = False
SHARED = False  # judges keys, not the shared signal
RUNS = (1, 2, 3, 6)
"""Runs of latest windows judged: one window for a spike, several for a smaller rise that
lasts (at most the windows the detector holds back, metering.detect.RECENT_WINDOWS)."""


@dataclass(frozen=True, slots=True)
class Config:
    sensitivity: float = 9.0
    """Alert when the window's tail probability is at most 10^-sensitivity."""
    min_count: int = 3
    """Fewer calls in a window never count as a spike."""
    min_ratio: float = 3.0
    """Nor fewer than this many times the expected mean."""
    floor_per_hour: float = 1.0
    """The expected rate is never taken below this many calls an hour (a key idle at some hour
    is not infinitely surprised by one call)."""
    high_score: float = 15.0
    critical_score: float = 40.0


def new_state() -> None:
    return None


def run_surprise(
    w: Window, floor_per_hour: float, min_count: int, min_ratio: float
) -> tuple[float, int, int, float] | None:
    """The most surprising run of the latest windows ending with this one: (probability,
    windows, count, expected per window), or None if no run has ``min_count`` calls and
    ``min_ratio`` times its expected count. The runs tried are tests of their own, so their
    probabilities are multiplied by their number (Bonferroni)."""
    floor = floor_per_hour * w.window_ms / 3_600_000
    mean = max(w.expected.mean, floor)
    variance = max(w.expected.variance, mean)
    best: tuple[float, int, int, float] | None = None
    for n in RUNS:
        if n > len(w.recent):
            break
        count = sum(w.recent[-n:])
        if count < min_count or count < min_ratio * mean * n:
            continue
        p = min(1.0, tail_probability(count, mean * n, variance * n) * len(RUNS))
        if best is None or p < best[0]:
            best = (p, n, count, mean)
    return best


def significant_run(
    w: Window, floor_per_hour: float, min_count: int, min_ratio: float, sensitivity: float
) -> tuple[float, int, int, float, float] | None:
    """``run_surprise`` of a closed window of a learned key, if its probability is at most
    10^-sensitivity, with its score (-log10 of it)."""
    if not (w.closed and w.learned):
        return None
    best = run_surprise(w, floor_per_hour, min_count, min_ratio)
    if best is None or best[0] > 10.0**-sensitivity:
        return None
    return (*best, -math.log10(max(best[0], 1e-300)))


def check(w: Window, state: None, cfg: Config) -> Finding | None:
    found = significant_run(w, cfg.floor_per_hour, cfg.min_count, cfg.min_ratio, cfg.sensitivity)
    if found is None:
        return None
    p, n, count, mean, score = found
    over = f"{n} windows" if n > 1 else "the window"
    return Finding(
        NAME,
        severity_from_score(score, cfg.high_score, cfg.critical_score),
        round(score, 2),
        f"{count} requests in {over} where {mean * n:.2f} were expected "
        f"({w.expected.source}), p={p:.1e}",
        probability=p,
        span=n,
        features={"expected_from": w.expected.source, "windows": n, "run_count": count},
    )


def learn(w: Window, state: None, cfg: Config, incident_open: bool) -> None:
    return None
