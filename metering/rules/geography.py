"""new_country: the key used from a country it does not use, alongside its owner.

Per key, countries are remembered with a familiarity that decays over days (``half_life_days``):
one used last month is new again. A country seen for the first time is *pending*: it becomes
familiar only after ``familiar_after_minutes`` without an open incident, never from the
windows being judged.

A pending country alerts when the evidence adds up:
- the key's familiar countries keep calling while it does, at most ``concurrent_span`` windows
  after the new country's latest call. The owner still calls from home while someone calls
  from elsewhere; an owner who travels does not call from home and from abroad within one
  window. A key seen for ``settled_hours`` has shown its countries, each at its own hours (a
  mobile app's users abroad, a region in another time zone): one window with a familiar
  country is enough, the new country's own included (impossible travel; a VPN that connects
  mid-session is its legit form). A younger key may still have countries to show: it takes
  ``concurrent_windows`` windows with a familiar country, the first of them the window of a
  switch an owner on a VPN makes;
- or the window is busier than the key's normal (tail probability at most ``rise_p``);
- or many countries are new at once (``leak_countries`` within ``concurrent_span`` windows),
  or a window's calls all come from new countries and from ``leak_networks`` client networks
  or more, more than the key's peak of networks in one window: a leaked key. An owner on the move
  takes the few networks it uses along; a key posted where others find it is used by many
  people at once, from the first window.

A key that roams (``roaming_countries`` familiar or pending countries or more: mobile apps)
alerts on a leak, or on concurrent use that also raises its rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from metering.baseline import HOUR_MS, tail_probability
from metering.evolve import Evolvable
from metering.rules import Finding, Window

NAME = "new_country"
ON_EARLY = False
SHARED = False  # judges keys, not the shared signal
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Config:
    half_life_days: float = 7.0
    familiar_weight: float = 0.5
    """Familiarity (decayed windows of use) below which a country counts as new again."""
    familiar_cap: float = 8.0
    """Familiarity never grows past this, so a country unused for about four half-lives
    (four weeks) is new again, however much it was used before."""
    familiar_after_minutes: float = 60.0
    concurrent_windows: int = 2
    concurrent_span: int = 6
    settled_hours: float = 24.0
    """A key seen this long has shown the countries it uses (see the module's docstring)."""
    rise_p: float = 1e-6
    leak_countries: int = 3
    leak_networks: int = 5
    """Distinct client networks (/24, /48) in a window whose calls are all from new countries
    that make it a leak, if they are more than the key's peak in one window (learnt from its
    own windows, outside incidents, fading as familiarity does)."""
    roaming_countries: int = 6
    max_countries: int = 64
    """Countries remembered per key (the least familiar is forgotten first)."""
    max_pending: int = 32


@dataclass(slots=True)
class Pending(Evolvable):
    first_start: int
    last_start: int
    windows: int = 0
    concurrent: int = 0  # windows with a familiar country, its own or within the span after it


@dataclass(slots=True)
class State(Evolvable):
    # country -> (familiarity, event time it was last updated)
    familiar: dict[str, tuple[float, int]] = field(default_factory=dict)
    pending: dict[str, Pending] = field(default_factory=dict)
    # the most client networks the key used in one window (decaying as familiarity does), and
    # the event time it was last updated
    networks_peak: tuple[float, int] = (0.0, 0)


def new_state() -> State:
    return State()


def _familiarity(entry: tuple[float, int], now: int, cfg: Config) -> float:
    weight, at = entry
    return weight * 0.5 ** (max(0, now - at) / (cfg.half_life_days * DAY_MS))


def _split(w: Window, s: State, cfg: Config) -> tuple[list[str], list[str]]:
    familiar, new = [], []
    for c in w.countries:
        entry = s.familiar.get(c)
        if entry is not None and _familiarity(entry, w.start, cfg) >= cfg.familiar_weight:
            familiar.append(c)
        else:
            new.append(c)
    return familiar, new


def check(w: Window, s: State, cfg: Config) -> Finding | None:
    if not (w.closed and w.learned) or not s.familiar:
        return None
    familiar, new = _split(w, s, cfg)
    span = cfg.concurrent_span * w.window_ms
    recent = [c for c, p in s.pending.items() if c not in new and w.start - p.last_start <= span]
    if not new and not (familiar and recent):
        return None
    usual = sorted(
        c for c, e in s.familiar.items() if _familiarity(e, w.start, cfg) >= cfg.familiar_weight
    )
    known = len(usual)
    if not known:
        return None
    # Countries the key uses or has just started to: a young mobile app's roaming shows in its
    # pending countries before they become familiar.
    roaming = known + len(s.pending) >= cfg.roaming_countries
    # New countries of this window and of the last few: a leaked key's thieves spread over
    # many countries, a few of them a window.
    fresh = set(new) | {c for c, p in s.pending.items() if w.start - p.last_start <= span}
    many = len(fresh) >= max(cfg.leak_countries, known // 2 if roaming else 0)
    # Every call of the window from new countries, from more networks at once than the key uses.
    # (A key whose state predates the peak has none yet: it is not judged by it until then.)
    spread = (
        not roaming
        and not familiar
        and bool(new)
        and s.networks_peak[1] != 0
        and w.networks >= max(cfg.leak_networks, _familiarity(s.networks_peak, w.start, cfg) + 1)
    )
    leak = many or spread
    # The owner calls from home while the new country does: at once on a settled key; on a
    # younger one, in the windows after the new country's first (a country not yet pending is in
    # its first window).
    settled = w.age_ms >= cfg.settled_hours * HOUR_MS
    concurrent = bool(familiar) and (
        settled
        or any(
            (s.pending[c].concurrent if c in s.pending else 0) + 1 >= cfg.concurrent_windows
            for c in new + recent
        )
    )
    p = tail_probability(w.count, w.expected.mean, w.expected.variance)
    rise = p <= cfg.rise_p
    if not (leak or (concurrent and (rise or not roaming)) or (rise and not roaming)):
        return None
    evidence = [
        e
        for e, on in (("many new countries", many),
                      (f"{w.networks} networks at once", spread),
                      ("alongside " + ",".join(familiar), concurrent),
                      (f"rate p={p:.1e}", rise))
        if on
    ]  # fmt: skip
    score = -math.log10(max(p, 1e-300)) + 3.0 * len(new or recent) + 3.0 * concurrent
    severity = "critical" if leak or (concurrent and rise) else "high"
    return Finding(
        NAME,
        severity,
        round(score, 2),
        f"first use from {','.join(new or recent)}: {'; '.join(evidence)}",
        probability=p,
        features={
            "new_countries": new or recent,
            "familiar_countries": usual,
            "concurrent": concurrent,
            "leak": leak,
            "networks": w.networks,
            "roaming": roaming,
        },
    )  # fmt: skip


def learn(w: Window, s: State, cfg: Config, incident_open: bool) -> None:
    if not w.closed:
        return
    familiar, new = _split(w, s, cfg)
    # The owner's own windows: none during an incident, when a thief could raise the peak.
    if (not new or not w.learned) and not incident_open:
        peak = _familiarity(s.networks_peak, w.start, cfg)
        if w.networks >= peak:
            s.networks_peak = (float(w.networks), w.start)
    for c in familiar:
        weight = min(cfg.familiar_cap, _familiarity(s.familiar[c], w.start, cfg) + 1.0)
        s.familiar[c] = (weight, w.start)
    if not w.learned:
        # A key's countries while it is learned are its own, learned as they come.
        for c in new:
            s.familiar[c] = (1.0, w.start)
        return
    span = cfg.concurrent_span * w.window_ms
    for c in new:
        p = s.pending.get(c)
        if p is None:
            if len(s.pending) >= cfg.max_pending:
                del s.pending[min(s.pending, key=lambda k: s.pending[k].first_start)]
            p = s.pending[c] = Pending(w.start, w.start)
        p.windows += 1
        p.last_start = w.start
    if familiar:
        for c, p in s.pending.items():
            if c in new or w.start - p.last_start <= span:
                p.concurrent += 1
    if not incident_open:
        ripe = [
            c
            for c, p in s.pending.items()
            if w.start - p.first_start >= cfg.familiar_after_minutes * 60_000
        ]
        for c in ripe:
            s.familiar[c] = (min(cfg.familiar_cap, s.pending.pop(c).windows), w.start)
    if len(s.familiar) > cfg.max_countries:
        keep = sorted(s.familiar, key=lambda c: -_familiarity(s.familiar[c], w.start, cfg))
        s.familiar = {c: s.familiar[c] for c in keep[: cfg.max_countries]}
