"""auth_failures: someone trying keys, fast or slowly.

Two signals per rate key (a ``client:`` key is one client network's rejected calls):
- a burst: at least ``min_per_window`` rejected calls (401/403) in one window, at least
  ``min_share`` of its calls. It needs no history, so it is judged on early records too: the
  job's windows send one when an open window's rejections reach a threshold, and the alert
  comes on the event that completes the burst;
- slow guessing: rejected calls accumulated over ``span_minutes`` (decaying), so a guesser
  under the per-window threshold still adds up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from metering.rules import Finding, Window

NAME = "auth_failures"
ON_EARLY = True
SHARED = False  # judges keys, not the shared signal
HIGH_MULTIPLE = 5
"""A burst is high from this many times ``min_per_window``, else a warning."""


@dataclass(frozen=True, slots=True)
class Config:
    min_per_window: int = 20
    min_share: float = 0.5
    slow_min: float = 10.0
    """Accumulated (decaying) rejected calls that make slow guessing."""
    span_minutes: float = 5.0
    """Time constant of the accumulation."""


@dataclass(slots=True)
class State:
    failures: float = 0.0
    calls: float = 0.0
    last_index: int = -1


def new_state() -> State:
    return State()


def _accumulated(w: Window, s: State, cfg: Config) -> tuple[float, float]:
    """Rejected calls and calls accumulated up to and including this window."""
    if s.last_index < 0:
        return float(w.auth_failures), float(w.count)
    keep = math.exp(-(w.index - s.last_index) * w.window_ms / (cfg.span_minutes * 60_000))
    return s.failures * keep + w.auth_failures, s.calls * keep + w.count


def check(w: Window, s: State, cfg: Config) -> Finding | None:
    f = w.auth_failures
    if f >= cfg.min_per_window and f >= cfg.min_share * w.count:
        severity = "high" if f >= HIGH_MULTIPLE * cfg.min_per_window else "warning"
        return Finding(
            NAME,
            severity,
            float(f),
            f"{f} of {w.count} requests rejected",
            anomalous=False,
            features={"signal": "burst"},
        )
    if not w.closed:
        return None
    failures, calls = _accumulated(w, s, cfg)
    if failures >= cfg.slow_min and failures >= cfg.min_share * calls:
        return Finding(
            NAME,
            "warning",
            round(failures, 2),
            f"{failures:.1f} rejected calls accumulated over ~{cfg.span_minutes:g} min",
            anomalous=False,
            features={"signal": "slow", "accumulated_failures": round(failures, 2)},
        )
    return None


def learn(w: Window, s: State, cfg: Config, incident_open: bool) -> None:
    if w.closed and w.index > s.last_index:
        s.failures, s.calls = _accumulated(w, s, cfg)
        s.last_index = w.index
