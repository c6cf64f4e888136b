"""The compromised-key detector: registered rules over one shared per-key state, and the
incidents their findings open, update and close. Pure: the Flink wrapper (udfs.functions) and
the evaluation (evaluation.fast) call ``evaluate`` and ``close_due``.

The detector runs on window records only (the job's usage windows per rate key): a closed
window (kind ``window``), or an ``early`` record of a window still open whose rejected calls
just reached a threshold (``early_check``). Each key's state (``KeyState``) holds its baseline
(metering.baseline: what the key usually does, at several time scales and per hour of day),
each rule's own slice, and its open incidents. Rules (metering.rules, one module each) judge a
window against that state and return findings.

Alert hygiene: the findings on a key, of any rule, form one incident while they keep coming;
it closes after ``quiet_minutes`` without one. An incident gives at most three records:
``open`` when it starts, one ``update`` if its severity rises, ``closed`` when it ends (with
its peak). Ids are
deterministic (key, incident start, status), so a replay after a restart repeats them.
Windows a rule finds anomalous stay out of the baseline, so an attack never becomes the new
normal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from metering import baseline as bl
from metering.evolve import Evolvable
from metering.rules import SEVERITY_RANK, Finding, Window, guessing, registry

RECENT_WINDOWS = 6
"""Closed windows a key holds back from its baseline: the rules judge runs of up to this many
windows, and a run found anomalous stays out of the baseline as a whole."""
HELD, JUDGED, KEPT_OUT = 0, 1, 2
"""What became of a held window: nothing yet; a finding judged it (it counts towards no other
finding, and stays out of the baseline); it stays out of the baseline, though no finding judged
it (the shared signal's windows during a campaign). State pickled when this was a bool restores
True as JUDGED (which then also stands for the few KEPT_OUT windows held at the upgrade)."""


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    window_ms: int = 10_000
    early_alerts: bool = True
    quiet_minutes: float = 10.0
    """An incident closes after this long without a finding."""
    baseline: bl.BaselineConfig = field(default_factory=bl.BaselineConfig)
    rules: Mapping[str, Any] = field(default_factory=registry.default_configs)
    """The rules the detector runs (metering.rules.registry), by name: each one's config."""

    @property
    def auth_failure_min(self) -> int:
        return int(self.rules[guessing.NAME].min_per_window)

    @property
    def quiet_windows(self) -> int:
        return max(1, round(self.quiet_minutes * 60_000 / self.window_ms))

    def rule_config(self, name: str) -> Any:
        return self.rules[name]

    def with_rule(self, name: str, **values: Any) -> DetectorConfig:
        """A copy with some of rule ``name``'s settings changed."""
        return replace(self, rules={**self.rules, name: replace(self.rules[name], **values)})


@dataclass(slots=True)
class WindowAgg:
    """One key's counts in one window, as a usage record reports them (metering.windows
    accumulates them)."""

    count: int = 0
    units: float = 0.0
    auth_failures: int = 0
    countries: set[str] = field(default_factory=set)
    networks: set[str] = field(default_factory=set)
    """Distinct client networks, at most schemas.events.MAX_NETWORKS."""
    consumer: str | None = None
    key_fingerprint: str | None = None
    paths: dict[str, int] | None = None
    """Calls per request path, of a key billing prices (None: none counted)."""


def window_bounds(event_time_ms: int, window_ms: int) -> tuple[int, int]:
    """The tumbling window [start, end) an event time falls in (epoch-aligned)."""
    start = event_time_ms - event_time_ms % window_ms
    return start, start + window_ms


def window_closed(window_end: int, watermark: int) -> bool:
    """Whether a window already fired: its timer is at ``end - 1`` and fires once the watermark
    reaches it. An event for a closed window is late and becomes a correction."""
    return window_end - 1 <= watermark


def window_record(
    rate_key: str, start: int, end: int, agg: WindowAgg, kind: str = "window"
) -> dict[str, Any]:
    """A usage record: a closed window (``window``), or the events that arrived after it closed
    (``late_correction``, to be added to that window's count)."""
    return {
        "kind": kind,
        "rate_key": rate_key,
        "consumer": agg.consumer,
        "key_fingerprint": agg.key_fingerprint,
        "window_start": start,
        "window_end": end,
        "count": agg.count,
        "units": agg.units,
        "auth_failures": agg.auth_failures,
        "countries": sorted(agg.countries),
        "networks": len(agg.networks),
        "paths": dict(sorted(agg.paths.items())) if agg.paths else None,
    }


@dataclass(slots=True)
class Incident(Evolvable):
    """A key's ongoing incident."""

    rule: str  # the rule of the finding that opened it, or of its peak
    start: int  # window_start of the window that opened it
    last: int  # window_start of its latest finding
    severity: str
    score: float
    rules: list[str] = field(default_factory=list)  # every rule that found something, in order
    windows: int = 1
    updated: bool = False
    summary: str = ""
    # the key, as its records name it (a close has no record of its own)
    rate_key: str = ""
    consumer: str | None = None
    key_fingerprint: str | None = None


@dataclass(slots=True)
class KeyState(Evolvable):
    """What the detector remembers about one key (Flink keyed state, with a TTL): its baseline,
    each rule's slice, its open incidents. Bounded: see docs/detection.md, State."""

    baseline: bl.Baseline
    rules: dict[str, Any] = field(default_factory=dict)
    incident: Incident | None = None
    last_window_start: int | None = None  # the latest closed window judged
    # (index, count, HELD/JUDGED/KEPT_OUT) of the latest closed windows, not yet in the baseline
    recent: list[tuple[int, int, int]] = field(default_factory=list)

    def _restore_missing(self, name: str) -> Any:
        # No default (the baseline): the state is of an older detector, learned afresh
        # (``evaluate``).
        return None


def alert_id(rate_key: str, incident_start: int, status: str | None = None) -> str:
    """Same key and incident give the same id, so replays after a restart are idempotent; an
    incident's update and close records have ids of their own."""
    text = f"{rate_key}|{incident_start}"
    if status is not None:
        text += f"|{status}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


AUTH_FAILURES_HIGH = guessing.HIGH_MULTIPLE


def early_check(auth_failures: int, auth_failure_min: int) -> bool:
    """Whether an open window whose auth-failure count just became ``auth_failures`` goes to the
    detector early: at the threshold, at each doubling of it (the share of failures may only
    reach the rule's ratio later) and where the severity rises, so a window sends a handful of
    early records at most."""
    if auth_failures < auth_failure_min or auth_failures % auth_failure_min:
        return False
    multiple = auth_failures // auth_failure_min
    return multiple == AUTH_FAILURES_HIGH or multiple & (multiple - 1) == 0


MAX_EARLY_DOUBLINGS = 40
"""Early records stop after 2**40 times the threshold: no window holds that many calls."""


def early_thresholds(auth_failure_min: int) -> tuple[int, ...]:
    """The auth-failure counts at which ``early_check`` holds, as the job's windows test them
    (empty for 0: no early records)."""
    if auth_failure_min <= 0:
        return ()
    multiples = {1 << i for i in range(MAX_EARLY_DOUBLINGS + 1)} | {AUTH_FAILURES_HIGH}
    return tuple(sorted(m * auth_failure_min for m in multiples))


def _record(
    status: str,
    inc: Incident,
    window_ms: int,
    w: Window | None,
    f: Finding | None,
    now_ms: int,
) -> dict[str, Any]:
    """An alert record: the incident's, with the window and finding that caused it (none for a
    close, which reports the incident's peak)."""
    ws = inc.last if w is None else w.start
    exp = None if w is None else w.expected
    suffix = {"open": None, "update": f"update:{inc.severity}", "closed": "closed"}[status]
    return {
        "alert_id": alert_id(inc.rate_key, inc.start, suffix),
        "status": status,
        "rule": inc.rule if f is None else f.rule,
        "rules": list(inc.rules),
        "severity": inc.severity if f is None else f.severity,
        "score": inc.score if f is None else f.score,
        "probability": None if f is None else f.probability,
        "rate_key": inc.rate_key,
        "consumer": inc.consumer,
        "key_fingerprint": inc.key_fingerprint,
        "window_start": ws,
        "window_end": ws + window_ms,
        "window_closed": True if w is None else w.closed,
        "incident_start": inc.start,
        "incident_windows": inc.windows,
        "observed_count": None if w is None else w.count,
        "expected_count": None if exp is None else round(exp.mean, 4),
        "expected_sd": None if exp is None else round(exp.variance**0.5, 4),
        "expected_from": None if exp is None else exp.source,
        "countries_seen": [] if w is None else list(w.countries),
        "auth_failures": None if w is None else w.auth_failures,
        "summary": inc.summary if f is None else f.summary,
        "features": {} if f is None else f.features,
        "detected_at": now_ms,
    }


def close_due(
    state: KeyState, before_start: int, cfg: DetectorConfig, now_ms: int
) -> list[dict[str, Any]]:
    """Close the key's incident if its last finding is more than ``quiet_minutes`` before the
    window starting at ``before_start``."""
    inc = state.incident
    if inc is None or before_start - inc.last <= cfg.quiet_windows * cfg.window_ms:
        return []
    state.incident = None
    return [_record("closed", inc, cfg.window_ms, None, None, now_ms)]


def next_close(state: KeyState, cfg: DetectorConfig) -> int | None:
    """The window start at which the open incident is due to close (for a timer)."""
    if state.incident is None:
        return None
    return state.incident.last + (cfg.quiet_windows + 1) * cfg.window_ms


def _found(
    state: KeyState, f: Finding, w: Window, record: dict[str, Any], now_ms: int
) -> list[dict[str, Any]]:
    inc = state.incident
    if inc is None:
        inc = state.incident = Incident(
            f.rule, w.start, w.start, f.severity, f.score, [f.rule], summary=f.summary,
            rate_key=w.rate_key, consumer=record.get("consumer"),
            key_fingerprint=record.get("key_fingerprint"),
        )  # fmt: skip
        return [_record("open", inc, w.window_ms, w, f, now_ms)]
    if f.rule not in inc.rules:
        inc.rules.append(f.rule)
    if w.start > inc.last:
        inc.windows += 1
        inc.last = w.start
    inc.score = max(inc.score, f.score)
    if SEVERITY_RANK[f.severity] <= SEVERITY_RANK[inc.severity]:
        return []
    inc.severity, inc.rule, inc.summary = f.severity, f.rule, f.summary
    if inc.updated:
        return []  # the close record carries the peak
    inc.updated = True
    return [_record("update", inc, w.window_ms, w, f, now_ms)]


def _settle(state: KeyState, keep_from: int, cfg: DetectorConfig, shared: bool) -> None:
    """Add the held windows before ``keep_from`` to the baseline; an anomalous one counts as
    the key's expected count then, so an attack never becomes the new normal. A key's
    hour-of-day profile takes the window as it was (see metering.baseline ``add``): what recurs
    at an hour every day is its owner's, a nightly batch. The shared signal's does not: a surge
    of rejected clients is a campaign however often it comes, and one at noon must not raise
    what the afternoon's hours expect."""
    b = state.baseline
    while state.recent and state.recent[0][0] < keep_from:
        i, c, mark = state.recent.pop(0)
        kept = c
        if mark:
            kept = min(c, round(bl.expected(b, i, cfg.window_ms, cfg.baseline).mean))
        bl.add(b, i, kept, cfg.window_ms, cfg.baseline, seen=kept if shared else c)


def evaluate(
    state: KeyState | None,
    record: dict[str, Any],
    cfg: DetectorConfig,
    now_ms: int,
) -> tuple[KeyState, list[dict[str, Any]]]:
    """Judge one window record of one key; return the new state and any alert records.

    ``record`` is a usage record: a closed window (kind ``window``), a late correction (never
    judged), an ``early`` record of a window still open (only rules with ``ON_EARLY``), or a
    closed window of the shared signal (kind ``shared``, only rules with ``SHARED``)."""
    start = int(record["window_start"])
    kind = record.get("kind", "window")
    index = start // cfg.window_ms
    if state is None or state.baseline is None:
        # A new key, or the state of an older detector (no baseline): learned afresh.
        state = KeyState(bl.new_baseline(index), {})
    rules = registry.active(cfg.rules)
    for r in rules:
        if r.NAME not in state.rules:  # a new key, or a rule added since its state was saved
            state.rules[r.NAME] = r.new_state()
    if kind not in ("window", "early", "shared") or (
        state.last_window_start is not None and start <= state.last_window_start
    ):
        # A late correction, or any record of a window already judged.
        return state, []
    if state.last_window_start is None and index < state.baseline.first_index:
        # An early record of a later window came first.
        state.baseline = bl.new_baseline(index)
    closed = kind != "early"
    shared = kind == "shared"
    if closed:
        alerts = close_due(state, start, cfg, now_ms)
    elif state.incident is not None and start - state.incident.last > cfg.quiet_windows * (
        cfg.window_ms
    ):
        # An early record never closes an incident: the closed windows between the last finding
        # and this window may still arrive (the watermark lags, more so in a replay where one
        # partition runs ahead) and extend it. Whether this window opens a new incident or
        # continues the old one is settled when it closes, after those windows or the close
        # timer; until then its early finding waits.
        return state, []
    else:
        alerts = []
    b = state.baseline
    if closed:
        _settle(state, index - RECENT_WINDOWS + 1, cfg, shared)
    exp = bl.expected(b, index, cfg.window_ms, cfg.baseline, pending=RECENT_WINDOWS - 1)
    # Runs of windows end at this one and reach back to the latest window a finding already
    # judged, never over it: a window counts towards one finding.
    after = max((i for i, _, m in state.recent if m == JUDGED), default=index - RECENT_WINDOWS)
    held = {i: c for i, c, _ in state.recent}
    count = int(record["count"])
    w = Window(
        rate_key=record["rate_key"],
        start=start,
        index=index,
        window_ms=cfg.window_ms,
        closed=closed,
        count=count,
        auth_failures=int(record["auth_failures"]),
        countries=tuple(record["countries"]),
        networks=int(record.get("networks") or 0),
        age_ms=(index - b.first_index) * cfg.window_ms,
        expected=exp,
        # Learning counts the windows the baseline holds, not the ones held back: a key's first
        # window is often partial (it began mid-window), and alone it would be the expectation.
        learned=b.learned(index - RECENT_WINDOWS + 1, cfg.window_ms, cfg.baseline),
        recent=(
            *(held.get(i, 0) for i in range(max(after + 1, index - RECENT_WINDOWS + 1), index)),
            count,
        ),
    )
    findings = [
        f
        for r in rules
        if (closed or r.ON_EARLY)
        and shared == r.SHARED
        and (f := r.check(w, state.rules[r.NAME], cfg.rule_config(r.NAME))) is not None
    ]
    for f in findings:
        alerts.extend(_found(state, f, w, record, now_ms))
    if closed:
        # A finding marks the windows it judged (a run of ``span`` windows) as anomalous.
        span = max((f.span for f in findings if f.anomalous), default=0)
        # On the shared signal, while an incident is open, a window above the expected count is
        # the campaign's too, though no rule fired on it alone: campaigns that follow each
        # other must not lift the baseline (a key's own incidents end when its findings do).
        # It is kept out, not judged: the next run may take it, so a campaign that goes on
        # keeps finding, and its incident open.
        during = shared and state.incident is not None and count > exp.mean
        state.recent = [(i, c, JUDGED if i > index - span else m) for i, c, m in state.recent] + [
            (index, count, JUDGED if span else KEPT_OUT if during else HELD)
        ]
        for r in rules:
            r.learn(w, state.rules[r.NAME], cfg.rule_config(r.NAME), state.incident is not None)
        state.last_window_start = start
    return state, alerts
