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


def check(w: Window, state: None, cfg: Config) -> Finding | None:
    if not (w.closed and w.learned):
        return None
    floor = cfg.floor_per_hour * w.window_ms / 3_600_000
    mean = max(w.expected.mean, floor)
    variance = max(w.expected.variance, mean)
    best: tuple[float, int, int] | None = None  # (p, windows, count)
    for n in RUNS:
        if n > len(w.recent):
            break
        count = sum(w.recent[-n:])
        if count < cfg.min_count or count < cfg.min_ratio * mean * n:
            continue
        # The runs tried are tests of their own: their chances add up (Bonferroni).
        p = min(1.0, tail_probability(count, mean * n, variance * n) * len(RUNS))
        if best is None or p < best[0]:
            best = (p, n, count)
    if best is None or best[0] > 10.0**-cfg.sensitivity:
        return None
    p, n, count = best
    score = -math.log10(max(p, 1e-300))
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
