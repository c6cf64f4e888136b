"""volume_cap: the worked example of a detector rule (docs/extending.md), kept in the test kit
so that a test proves the claim: a rule is one module, registered, and the detector runs it.

A key over its contract's ceiling in one window is flagged, whatever its history. No state.
"""

from __future__ import annotations

from dataclasses import dataclass

from metering.rules import Finding, Window, severity_from_score

NAME = "volume_cap"
ON_EARLY = False  # judged on closed windows only
SHARED = False  # judges keys, not the shared signal


@dataclass(frozen=True, slots=True)
class Config:
    max_per_window: int = 1_000
    """Calls in one window above which a key is flagged."""


def new_state() -> None:
    return None


def check(w: Window, state: None, cfg: Config) -> Finding | None:
    if w.count <= cfg.max_per_window:
        return None
    score = w.count / cfg.max_per_window
    return Finding(
        NAME,
        severity_from_score(score, high=2.0, critical=10.0),
        round(score, 2),
        f"{w.count} requests in a window, over the cap of {cfg.max_per_window}",
        anomalous=False,  # a contract matter, not an anomaly: the baseline still learns it
        features={"cap": cfg.max_per_window},
    )


def learn(w: Window, state: None, cfg: Config, incident_open: bool) -> None:
    return None
