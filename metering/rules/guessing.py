"""auth_failures: someone trying keys, fast or slowly.

Three signals per rate key (a ``client:`` key is one client network's rejected calls):
- a burst: at least ``min_per_window`` rejected calls (401/403) in one window, at least
  ``min_share`` of its calls. It needs no history, so it is judged on early records too: the
  job's windows send one when an open window's rejections reach a threshold, and the alert
  comes on the event that completes the burst;
- slow guessing: rejected calls accumulated over ``span_minutes`` (decaying), so a guesser
  under the per-window threshold still adds up;
- persistence: a run of consecutive windows whose calls were (at least ``min_share``) rejected,
  holding ``persist_min`` rejected calls or more. A guesser at a few tries a window is found in
  its second window; a misconfigured client retrying every minute is not, nor are two mistyped
  tries; where a run keeps going, slow guessing takes over. A key the responder blocked (403s)
  makes such a run too, which keeps its incident open while the blocked client keeps calling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from metering.evolve import Evolvable
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
    persist_min: int = 3
    """Rejected calls over a run of at least ``PERSIST_WINDOWS`` consecutive windows that make
    persistence."""


PERSIST_WINDOWS = 2


@dataclass(slots=True)
class State(Evolvable):
    failures: float = 0.0
    calls: float = 0.0
    last_index: int = -1
    run_windows: int = 0  # the run of consecutive rejected windows up to last_index
    run_failures: int = 0


def new_state() -> State:
    return State()


def _accumulated(w: Window, s: State, cfg: Config) -> tuple[float, float]:
    """Rejected calls and calls accumulated up to and including this window."""
    if s.last_index < 0:
        return float(w.auth_failures), float(w.count)
    keep = math.exp(-(w.index - s.last_index) * w.window_ms / (cfg.span_minutes * 60_000))
    return s.failures * keep + w.auth_failures, s.calls * keep + w.count


def _run(w: Window, s: State, cfg: Config) -> tuple[int, int]:
    """The run of consecutive windows with rejected calls (their share at least ``min_share``)
    that ends at this window: (windows, rejected calls); (0, 0) if this window is not one."""
    if not w.auth_failures or w.auth_failures < cfg.min_share * w.count:
        return 0, 0
    if s.run_windows and w.index == s.last_index + 1:
        return s.run_windows + 1, s.run_failures + w.auth_failures
    return 1, w.auth_failures


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
    windows, rejected = _run(w, s, cfg)
    if windows >= PERSIST_WINDOWS and rejected >= cfg.persist_min:
        return Finding(
            NAME,
            "warning",
            float(rejected),
            f"{rejected} rejected calls in {windows} windows in a row",
            anomalous=False,
            features={"signal": "persistent", "run_windows": windows, "run_failures": rejected},
        )
    return None


def learn(w: Window, s: State, cfg: Config, incident_open: bool) -> None:
    if w.closed and w.index > s.last_index:
        s.run_windows, s.run_failures = _run(w, s, cfg)
        s.failures, s.calls = _accumulated(w, s, cfg)
        s.last_index = w.index
