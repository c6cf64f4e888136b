"""distributed_guessing: many unidentified clients rejected at once, each of them too quiet to
be a guesser on its own.

The job's windows count, per window, the distinct unidentified clients (``client:`` rate keys)
that began to fail: whose calls were rejected in that window and not in the ``quiet_minutes``
before (``newly_failing``). They come as one shared window record (key ``global``, kind
``shared``). A client that keeps failing (a job with a revoked key, a single guesser, which its
own rate key's rules judge) counts once, so it does not raise the level a campaign of new
clients is judged against; a campaign's clients, a few tries each, count once each. That count
has a baseline like any key's (metering.baseline: its usual level, its hour of day, its
burstiness), and a run of windows with far more failing clients than usual is one finding on
the shared key, however the guesses are spread over networks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from metering.rules import Finding, Window, severity_from_score
from metering.rules.rate import significant_run

NAME = "distributed_guessing"
ON_EARLY = False
SHARED = True


@dataclass(frozen=True, slots=True)
class Config:
    sensitivity: float = 6.0
    """Alert when a run's tail probability is at most 10^-sensitivity. Lower than a key's
    rate rule: there is one shared signal, not one per key, so its false alerts per day are
    about windows x runs x 10^-sensitivity (8,640 x 4 x 10^-6: 0.03 a day)."""
    min_clients: int = 10
    """Fewer newly failing clients in a run never count: a floor for an API whose background is
    near 0. A fleet whose key was revoked begins to fail on all its networks at once; under
    this floor it does not page."""
    min_ratio: float = 3.0
    floor_per_hour: float = 6.0
    """The expected failing clients are never taken below this many an hour."""
    high_score: float = 15.0
    critical_score: float = 40.0
    quiet_minutes: int = 60
    """A rejected client counts in the shared signal in its first window after this long without
    a rejected call (the job's shared windows, jvm/ UsageWindows.sharedFailures)."""


def newly_failing(failing_windows: Iterable[int], quiet_windows: int) -> list[int]:
    """The windows, of those a client had rejected calls in (ascending), where it began to fail:
    the first, and each after more than ``quiet_windows`` without one. As the job's shared
    windows count a client."""
    out: list[int] = []
    last: int | None = None
    for i in failing_windows:
        if last is None or i - last > quiet_windows:
            out.append(i)
        last = i
    return out


def new_state() -> None:
    return None


def check(w: Window, state: None, cfg: Config) -> Finding | None:
    found = significant_run(w, cfg.floor_per_hour, cfg.min_clients, cfg.min_ratio, cfg.sensitivity)
    if found is None:
        return None
    p, n, clients, mean, score = found
    return Finding(
        NAME,
        severity_from_score(score, cfg.high_score, cfg.critical_score),
        round(score, 2),
        f"{clients} unidentified clients began to fail in {n} window(s) where {mean * n:.1f} were "
        f"expected, {w.auth_failures} rejected calls in the latest, p={p:.1e}",
        probability=p,
        span=n,
        features={"windows": n, "failing_clients": clients},
    )


def learn(w: Window, state: None, cfg: Config, incident_open: bool) -> None:
    return None
