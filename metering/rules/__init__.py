"""The detector's rules, one module each: its config, its per-key state, its check.

A rule sees one window of one key (``Window``: the window record's features and what the key's
shared baseline expects of it) and its own slice of the key's state; it returns a ``Finding``
or None, then learns from the window. The detector (metering.detect) runs the registered rules
(``RULES``) over one shared per-key state and turns findings into incidents and alert records,
so a new rule is one module, its tests and a line in ``RULES``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from metering.baseline import Expected

SEVERITIES = ("warning", "high", "critical")
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}


@dataclass(frozen=True, slots=True)
class Window:
    """One window record of one key, as the rules see it."""

    rate_key: str
    start: int
    index: int  # start // window_ms
    window_ms: int
    closed: bool  # False: an early record of a window still open
    count: int
    auth_failures: int
    countries: tuple[str, ...]
    expected: Expected  # of one window
    learned: bool  # the key's baseline has learned long enough to be compared with
    recent: tuple[int, ...]  # counts of the latest windows, oldest first, this one last
    networks: int = 0  # distinct client networks (/24, /48), up to schemas.events.MAX_NETWORKS
    age_ms: int = 0  # event time from the key's first window to this one


@dataclass(frozen=True, slots=True)
class Finding:
    """A rule's verdict on a window: how bad, why, and the figures behind it."""

    rule: str
    severity: str
    score: float  # higher is more certain; -log10 of a probability where there is one
    summary: str
    probability: float | None = None
    anomalous: bool = True  # keep the windows judged out of the baseline
    span: int = 1  # how many of the latest windows the finding judged
    features: dict[str, Any] = field(default_factory=dict)


def severity_from_score(score: float, high: float, critical: float) -> str:
    if score >= critical:
        return "critical"
    return "high" if score >= high else "warning"


class Rule(Protocol):
    """What a rule module provides (each module is one; see ``RULES``)."""

    NAME: str
    ON_EARLY: bool  # also judged on early records of open windows
    SHARED: bool  # judges the shared signal's records (kind ``shared``), not keys

    def new_state(self) -> Any: ...

    def check(self, w: Window, state: Any, cfg: Any) -> Finding | None: ...

    def learn(self, w: Window, state: Any, cfg: Any, incident_open: bool) -> None: ...
