"""Per-key window aggregation and compromised-key rules. Pure: the Flink wrappers call these.

Each rate key (consumer name, else key fingerprint, else client hash) is compared with its own
recent history, never with a global threshold: a big customer's normal is a small one's attack.

Rules, evaluated when a key's event-time window closes:
- rate_spike: the window's count is ``spike_factor`` times the key's baseline (and at least
  ``spike_min_count``).
- new_country: the key is used from a country it has not used before while its rate rises.
- auth_failures: a burst of 401/403 answers for the key.

auth_failures is also evaluated while the window is still open (``early`` records, see
``early_check``): it needs no history, so it can fire on the event that completes the burst
instead of waiting for the watermark to pass the window's end (window length plus the
out-of-orderness bound). A window alerts on a rule at most once, early or at its close. The two
rules that compare with the key's history wait for the close: their baseline is only complete
once the windows before have closed too.

A key is learned for ``min_history_windows`` windows before the baseline rules may fire, and
anomalous windows do not enter the baseline, so an attack never becomes the new normal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    window_ms: int = 10_000
    baseline_windows: int = 12
    min_history_windows: int = 3
    spike_factor: float = 5.0
    spike_min_count: int = 20
    new_country_rise_factor: float = 1.5
    new_country_min_count: int = 5
    auth_failure_min: int = 20
    auth_failure_ratio: float = 0.5
    max_known_countries: int = 64
    early_alerts: bool = True


@dataclass(slots=True)
class WindowAgg:
    """One key's counts in one window, as a usage record reports them (metering.windows
    accumulates them)."""

    count: int = 0
    units: float = 0.0
    auth_failures: int = 0
    countries: set[str] = field(default_factory=set)
    consumer: str | None = None
    key_fingerprint: str | None = None


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
    }


@dataclass(slots=True)
class KeyState:
    """What the detector remembers about one key (kept in Flink keyed state, with a TTL)."""

    first_window_start: int
    # (window_start, count) of recent windows; windows absent here had no traffic.
    history: list[tuple[int, int]] = field(default_factory=list)
    known_countries: list[str] = field(default_factory=list)
    # rule -> window_start of the first window of the ongoing run of alerts
    open_incidents: dict[str, int] = field(default_factory=dict)
    last_window_start: int | None = None
    # rule -> {window_start: severity} of the alerts raised before their window closed
    early_alerts: dict[str, dict[int, str]] = field(default_factory=dict)

    def __setstate__(self, state: Any) -> None:
        # State pickled before a field existed restores with that field's default.
        slots = state[1] if isinstance(state, tuple) else state
        for f in fields(self):
            if f.name in slots:
                value = slots[f.name]
            elif f.default_factory is not MISSING:
                value = f.default_factory()
            else:
                value = f.default
            object.__setattr__(self, f.name, value)


def alert_id(rule: str, rate_key: str, window_start: int, escalated_to: str | None = None) -> str:
    """Same rule, key and window give the same id, so replays after a restart are idempotent.
    A window's later alert at a higher severity (an escalation) has an id of its own, so
    consumers that de-duplicate on the id still see it."""
    text = f"{rule}|{rate_key}|{window_start}"
    if escalated_to is not None:
        text += f"|{escalated_to}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


SEVERITY_RANK = {"warning": 0, "high": 1, "critical": 2}
AUTH_FAILURES_HIGH = 5
"""auth_failures is high from this many times ``auth_failure_min``, else a warning."""


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
    """The auth-failure counts at which ``early_check`` holds, as the SQL that emits early
    records tests them (empty for 0: no early records)."""
    if auth_failure_min <= 0:
        return ()
    multiples = {1 << i for i in range(MAX_EARLY_DOUBLINGS + 1)} | {AUTH_FAILURES_HIGH}
    return tuple(sorted(m * auth_failure_min for m in multiples))


def _baseline(state: KeyState, start: int, cfg: DetectorConfig) -> tuple[float, int]:
    """Mean count per window over the key's recent windows, and how many windows that covers."""
    lower = max(state.first_window_start, start - cfg.baseline_windows * cfg.window_ms)
    slots = max(0, (start - lower) // cfg.window_ms)
    if slots == 0:
        return 0.0, 0
    total = sum(c for s, c in state.history if lower <= s < start)
    return total / slots, slots


def _auth_failures(failures: int, count: int, cfg: DetectorConfig) -> tuple[str, str, str] | None:
    if failures >= cfg.auth_failure_min and failures >= cfg.auth_failure_ratio * count:
        severity = "high" if failures >= AUTH_FAILURES_HIGH * cfg.auth_failure_min else "warning"
        return ("auth_failures", severity, f"{failures} of {count} requests rejected")
    return None


def _alert(
    fired: tuple[str, str, str],
    record: dict[str, Any],
    incident: int,
    baseline: float,
    learned: bool,
    new_countries: list[str],
    known: Iterable[str],
    now_ms: int,
    escalation: bool = False,
) -> dict[str, Any]:
    rule, severity, summary = fired
    start = int(record["window_start"])
    count = int(record["count"])
    return {
        "alert_id": alert_id(rule, record["rate_key"], start, severity if escalation else None),
        "rule": rule,
        "severity": severity,
        "rate_key": record["rate_key"],
        "consumer": record.get("consumer"),
        "key_fingerprint": record.get("key_fingerprint"),
        "window_start": start,
        "window_end": int(record["window_end"]),
        "window_closed": record.get("kind", "window") == "window",
        "incident_start": incident,
        "observed_count": count,
        "baseline": round(baseline, 3),
        "ratio": round(count / max(baseline, 1.0), 3) if learned else None,
        "countries_seen": list(record["countries"]),
        "new_countries": new_countries,
        "known_countries": sorted(known),
        "auth_failures": int(record["auth_failures"]),
        "summary": summary,
        "detected_at": now_ms,
    }


def evaluate(
    state: KeyState | None,
    record: dict[str, Any],
    cfg: DetectorConfig,
    now_ms: int,
) -> tuple[KeyState, list[dict[str, Any]]]:
    """Apply the rules to one window of one key; return the new state and any alerts.

    ``record`` is a usage record: a closed window (kind ``window``), a late correction (never
    alerts), or an ``early`` record of a window still open (only auth_failures is judged)."""
    start = int(record["window_start"])
    count = int(record["count"])
    countries: list[str] = list(record["countries"])
    kind = record.get("kind", "window")
    if state is None:
        state = KeyState(first_window_start=start)
    if kind not in ("window", "early") or (
        state.last_window_start is not None and start <= state.last_window_start
    ):
        # A late correction, or any record of a window already judged: never alert twice on
        # the same window.
        return state, []

    baseline, slots = _baseline(state, start, cfg)
    learned = slots >= cfg.min_history_windows
    known = set(state.known_countries)
    if kind == "early":
        burst = _auth_failures(int(record["auth_failures"]), count, cfg)
        if burst is None:
            return state, []
        rule, severity, _ = burst
        sent = state.early_alerts.get(rule, {}).get(start)
        if sent is not None and SEVERITY_RANK[severity] <= SEVERITY_RANK[sent]:
            return state, []
        state.early_alerts.setdefault(rule, {})[start] = severity
        # The incident continues only from the window right before, if that one is judged yet
        # (with the watermark's delay it often is not; then this window starts one).
        follows = state.last_window_start == start - cfg.window_ms
        incident = state.open_incidents.get(rule, start) if follows else start
        alert = _alert(burst, record, incident, baseline, learned, [], known, now_ms, bool(sent))
        return state, [alert]

    # An early record may have come first and created the state with its later window.
    state.first_window_start = min(state.first_window_start, start)
    floor = max(baseline, 1.0)
    ratio = count / floor
    # On a key's first window every country would be "new"; that says nothing.
    new_countries = sorted(c for c in countries if c not in known) if known else []

    fired: list[tuple[str, str, str]] = []
    spike = learned and count >= cfg.spike_min_count and count >= cfg.spike_factor * floor
    if spike:
        severity = "critical" if ratio >= 4 * cfg.spike_factor else "high"
        fired.append(("rate_spike", severity, f"{count} requests vs baseline {baseline:.1f}"))
    if (
        learned
        and known
        and new_countries
        and count >= cfg.new_country_min_count
        and count >= cfg.new_country_rise_factor * floor
    ):
        severity = "critical" if spike else "high"
        fired.append(
            (
                "new_country",
                severity,
                f"first use from {','.join(new_countries)} while rate rose to {ratio:.1f}x",
            )
        )
    burst = _auth_failures(int(record["auth_failures"]), count, cfg)
    if burst is not None:
        fired.append(burst)

    alerts: list[dict[str, Any]] = []
    fired_rules = {rule for rule, _, _ in fired}
    for rule in list(state.open_incidents):
        if rule not in fired_rules:
            del state.open_incidents[rule]
    for f in fired:
        incident = state.open_incidents.setdefault(f[0], start)
        # Raised already while the window was open: again only at a higher severity.
        sent = state.early_alerts.get(f[0], {}).get(start)
        if sent is None or SEVERITY_RANK[f[1]] > SEVERITY_RANK[sent]:
            alerts.append(
                _alert(
                    f, record, incident, baseline, learned, new_countries, known, now_ms, bool(sent)
                )
            )
    # Early alerts of this window and of earlier ones are settled now; later windows' stay.
    state.early_alerts = {
        rule: later
        for rule, windows in state.early_alerts.items()
        if (later := {s: sev for s, sev in windows.items() if s > start})
    }

    # Anomalous windows enter the history at the baseline level, so a sustained attack keeps
    # being compared with the key's normal traffic rather than with itself.
    anomalous = bool(fired_rules & {"rate_spike", "new_country"})
    kept = round(baseline) if anomalous and learned else count
    horizon = start - cfg.baseline_windows * cfg.window_ms
    state.history = [(s, c) for s, c in state.history if s >= horizon]
    state.history.append((start, kept))
    if not anomalous:
        state.known_countries = _remember(state.known_countries, countries, cfg)
    state.last_window_start = start
    return state, alerts


def _remember(known: list[str], seen: Iterable[str], cfg: DetectorConfig) -> list[str]:
    merged = [c for c in known if c not in set(seen)] + sorted(set(seen))
    return merged[-cfg.max_known_countries :]
