"""A key's expected calls per window, learned from its own windows at several time scales.

The detector's rules judge a window against what the key usually does then. That expectation
is kept here, once per key, for every rule to read:

- exponentially weighted mean and second moment of the count per window at three time scales
  (minutes, an hour, a day), zeros included: a window without a record is a window of 0 calls;
- an hour-of-day profile (UTC hours; a key's owner keeps one time zone): per clock hour, the
  mean and second moment over that hour's windows, weighted over days, so a nightly batch or a
  quiet night is the key's normal at that hour.

The expectation for a window is the highest of the minutes and hour scales and, where the
profile has learned the window's hour (and the hours either side: a batch drifts), that
profile; the day scale stands in for the profile until it has learned a day. The variance is
the highest of the same, never below Poisson's. So a key that grows, that comes back after a
silence, or that bursts on a schedule is judged against its own normal, and a key's quiet hours
are judged against its quiet hours.

Pure and small: a few dozen floats per key (``Baseline.FLOATS``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from scipy import special

from metering.evolve import Evolvable

HOURS_PER_DAY = 24
HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class BaselineConfig:
    scales_minutes: tuple[float, float, float] = (5.0, 60.0, 1440.0)
    """Time constants of the minutes, hour and day scales."""
    profile_day_weight: float = 0.35
    """Weight of the latest day in each hour-of-day bucket (older days decay by 1 minus it)."""
    learn_minutes: float = 30.0
    """Event time from a key's first window before the rules that compare with the baseline
    may fire."""
    min_burstiness: float = 0.05
    """The least c in variance = mean + c * mean^2 a key is credited with: no key's traffic
    is quite Poisson, and a young key's estimate is noisy."""


@dataclass(slots=True)
class Baseline(Evolvable):
    """Running statistics of one key's calls per window."""

    first_index: int
    last_index: int
    # per scale: EW mean and EW second moment, not yet debiased (see ``_debias``)
    means: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    squares: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    # hour-of-day profile: per UTC hour, mean and second moment per window, and days learned
    hour_mean: list[float] = field(default_factory=lambda: [0.0] * HOURS_PER_DAY)
    hour_square: list[float] = field(default_factory=lambda: [0.0] * HOURS_PER_DAY)
    hour_days: list[int] = field(default_factory=lambda: [0] * HOURS_PER_DAY)
    # the clock hour being accumulated (absolute hour number) and its sums so far
    hour: int = -1
    hour_sum: float = 0.0
    hour_sumsq: float = 0.0
    # the key's burstiness: day-scale EW of (count - minutes-scale mean)^2, of that mean and of
    # its square; (first - second) / third estimates c in variance = mean + c * mean^2
    spread: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])

    FLOATS = 3 * 2 + 24 * 3 + 3 + 3

    def learned(self, index: int, window_ms: int, cfg: BaselineConfig) -> bool:
        return (index - self.first_index) * window_ms >= cfg.learn_minutes * 60_000


def new_baseline(index: int) -> Baseline:
    return Baseline(first_index=index, last_index=index - 1)


def _alpha(scale_minutes: float, window_ms: int) -> float:
    return 1.0 - math.exp(-window_ms / (scale_minutes * 60_000))


def _debias(value: float, alpha: float, n: int) -> float:
    """An EW average started from 0 over ``n`` windows, corrected for that start."""
    weight = 1.0 - (1.0 - alpha) ** n
    return value / weight if weight > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Expected:
    """What a window's count is expected to be: mean and variance per window, and where they
    come from."""

    mean: float
    variance: float
    source: str


def expected(
    b: Baseline, index: int, window_ms: int, cfg: BaselineConfig, pending: int = 0
) -> Expected:
    """The key's expected count for window ``index``, from the windows added so far (up to
    ``last_index``). ``pending``: the windows right before ``index`` the caller holds back
    (not added yet, and not silent); the windows between are taken as silent."""
    n = max(0, b.last_index - b.first_index + 1)
    gap = max(0, index - pending - b.last_index - 1)
    c = burstiness(b, window_ms, cfg)
    candidates: list[tuple[float, float, str]] = []
    names = ("minutes", "hour", "day")
    profile = _profile(b, index, window_ms)
    for scale, name, m in zip(cfg.scales_minutes, names, b.means, strict=True):
        if name == "day" and profile is not None:
            continue
        a = _alpha(scale, window_ms)
        mean = _debias(m * (1.0 - a) ** gap, a, n + gap)
        candidates.append((mean, mean + c * mean * mean, name))
    if profile is not None:
        mean, variance = profile
        candidates.append((mean, max(variance, mean + c * mean * mean), "hour-of-day"))
    mean, _, source = max(candidates)
    variance = max(v for _, v, _ in candidates)
    return Expected(mean, max(variance, mean), source)


def burstiness(b: Baseline, window_ms: int, cfg: BaselineConfig) -> float:
    """c in variance = mean + c * mean^2: how much more than Poisson the key varies from
    window to window around its own level."""
    dev, level, square = b.spread
    if square <= 0:
        return cfg.min_burstiness
    return max(cfg.min_burstiness, (dev - level) / square)


def _profile(b: Baseline, index: int, window_ms: int) -> tuple[float, float] | None:
    """The profile's mean and variance at the window's hour, the highest of that hour and its
    neighbours, if the profile has learned them; else None."""
    hour = (index * window_ms // HOUR_MS) % HOURS_PER_DAY
    buckets = [(hour + d) % HOURS_PER_DAY for d in (-1, 0, 1)]
    if any(b.hour_days[h] == 0 for h in buckets):
        return None
    mean = max(b.hour_mean[h] for h in buckets)
    variance = max(b.hour_square[h] - b.hour_mean[h] ** 2 for h in buckets)
    return mean, max(0.0, variance)


def add(
    b: Baseline,
    index: int,
    count: float,
    window_ms: int,
    cfg: BaselineConfig,
    seen: float | None = None,
) -> None:
    """Add window ``index`` with ``count`` calls (the windows since the last one had none).
    ``seen``: the calls the window really had, where ``count`` is less (an anomalous window
    kept out of the scales): the hour-of-day profile takes those, so what recurs at an hour
    every day (a nightly batch) becomes that hour's normal by the next day."""
    seen = count if seen is None else seen
    if index <= b.last_index:
        return
    gap = index - b.last_index - 1
    n = max(0, b.last_index - b.first_index + 1)
    a0 = _alpha(cfg.scales_minutes[0], window_ms)
    level = _debias(b.means[0] * (1.0 - a0) ** gap, a0, n + gap)
    if n:
        a = _alpha(cfg.scales_minutes[2], window_ms)
        if gap:
            # The silent windows count too, each 0 against the level decaying over the gap.
            start = _debias(b.means[0], a0, n)
            quiet = start * (1.0 - (1.0 - a0) ** gap) / (gap * a0)
            weight = 1.0 - (1.0 - a) ** gap
            for i, v in enumerate((quiet * quiet, quiet, quiet * quiet)):
                b.spread[i] += weight * (v - b.spread[i])
        for i, v in enumerate(((count - level) ** 2, level, level * level)):
            b.spread[i] += a * (v - b.spread[i])
    for i, scale in enumerate(cfg.scales_minutes):
        a = _alpha(scale, window_ms)
        keep = (1.0 - a) ** gap
        b.means[i] = (1.0 - a) * b.means[i] * keep + a * count
        b.squares[i] = (1.0 - a) * b.squares[i] * keep + a * count * count
    hour = index * window_ms // HOUR_MS
    if hour != b.hour:
        _close_hours(b, hour, window_ms, cfg)
    b.hour_sum += seen
    b.hour_sumsq += seen * seen
    b.last_index = index


def _close_hours(b: Baseline, hour: int, window_ms: int, cfg: BaselineConfig) -> None:
    """Fold the hour being accumulated, and the silent hours since, into the profile."""
    per_hour = HOUR_MS // window_ms
    if b.hour >= 0:
        # The key's first hour counts from its first window only.
        first = max(b.hour * per_hour, b.first_index)
        windows = max(1, (b.hour + 1) * per_hour - first)
        _fold(b, b.hour % HOURS_PER_DAY, b.hour_sum / windows, b.hour_sumsq / windows, cfg)
        # A silence longer than a day leaves every hour at 0 after a day's folds.
        for h in range(b.hour + 1, min(hour, b.hour + 1 + HOURS_PER_DAY)):
            _fold(b, h % HOURS_PER_DAY, 0.0, 0.0, cfg)
    b.hour = hour
    b.hour_sum = b.hour_sumsq = 0.0


def _fold(b: Baseline, bucket: int, mean: float, square: float, cfg: BaselineConfig) -> None:
    if b.hour_days[bucket] == 0:
        b.hour_mean[bucket], b.hour_square[bucket] = mean, square
    else:
        w = cfg.profile_day_weight
        b.hour_mean[bucket] += w * (mean - b.hour_mean[bucket])
        b.hour_square[bucket] += w * (square - b.hour_square[bucket])
    b.hour_days[bucket] += 1


def tail_probability(count: int, mean: float, variance: float) -> float:
    """P(X >= count) for X negative binomial with this mean and variance (Poisson where the
    variance is not above the mean): how unlikely a window at least this busy is for the key.
    scipy's regularized incomplete gamma and beta keep the small probabilities exact."""
    if count <= 0:
        return 1.0
    if mean <= 0:
        return 0.0
    if variance <= mean * (1.0 + 1e-9):
        return float(special.gammainc(count, mean))
    r = mean * mean / (variance - mean)
    return float(special.betainc(count, r, mean / (r + mean)))
