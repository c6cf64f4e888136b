"""The detector evaluation's scorer: alert records against the injected attacks.

An alert detects an attack when its rate key is one of the attack's (or, for distributed key
guessing, the shared signal's) and its window lies from the attack's first window to
``grace_windows`` after its last. Every other alert in the scored span is false, charged to
the population of its rate key. Pure; no JVM, no Kafka.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from evaluation.traffic import ATTACKS, SHARED_SIGNAL, Attack
from metering.records import SHARED_KEY

RECALL_WINDOWS: Final = (1, 2, 6, 30)
TARGET_RECALL_2: Final = 0.95
TARGET_FALSE_PER_10K: Final = 1.0
TARGET_ALERTS_PER_INCIDENT: Final = 3.0
"""The issue's targets: recall within 2 windows per kind, false alerts per 10,000 legit
key-hours, alert records per incident."""
GRACE_WINDOWS: Final = 6
"""Windows after an attack's last call in which an alert on its keys still belongs to it."""
SHARED: Final = "shared signal"
"""The population false alerts on the shared signal's key (metering.records.SHARED_KEY) are
charged to."""


@dataclass(slots=True)
class KindScore:
    attacks: int = 0
    # delay in windows (0: the attack's first window) of each attack's first alert; None: missed
    delays: list[int | None] = field(default_factory=list)
    detect_s: list[float] = field(default_factory=list)
    alert_records: int = 0

    def recall(self, within: int) -> float | None:
        if not self.attacks:
            return None
        return sum(1 for d in self.delays if d is not None and d < within) / self.attacks

    def median_detect_s(self) -> float | None:
        return statistics.median(self.detect_s) if self.detect_s else None

    def alerts_per_incident(self) -> float | None:
        detected = sum(1 for d in self.delays if d is not None)
        return self.alert_records / detected if detected else None


@dataclass(slots=True)
class Report:
    kinds: dict[str, KindScore]
    overall: KindScore
    key_hours: float
    false_alerts: int
    false_by_population: dict[str, int]
    learning_alerts: int
    alert_records: int
    oracle: dict[str, float] = field(default_factory=dict)
    """Per kind the detector sees only through counts: the recall within 2 windows an oracle
    reaches on the same counts at the false-alert target (evaluation.oracle)."""

    def false_per_10k(self) -> float | None:
        return self.false_alerts / self.key_hours * 10_000 if self.key_hours else None

    def as_json(self) -> dict[str, Any]:
        def kind(k: KindScore, name: str = "") -> dict[str, Any]:
            return {
                "attacks": k.attacks,
                **({"oracle_recall_2": _round(self.oracle[name])} if name in self.oracle else {}),
                **{f"recall_{n}": _round(k.recall(n)) for n in RECALL_WINDOWS},
                "median_detect_s": _round(k.median_detect_s(), 1),
                "alerts_per_incident": _round(k.alerts_per_incident(), 2),
            }

        return {
            "per_kind": {name: kind(k, name) for name, k in self.kinds.items()},
            "overall": kind(self.overall),
            "legit_key_hours": round(self.key_hours, 1),
            "false_alerts": self.false_alerts,
            "false_alerts_per_10k_key_hours": _round(self.false_per_10k(), 1),
            "false_alerts_by_population": dict(sorted(self.false_by_population.items())),
            "alerts_while_learning": self.learning_alerts,
            "alert_records": self.alert_records,
        }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def is_shared(rate_key: str) -> bool:
    return rate_key == SHARED_KEY


def score(
    attacks: Sequence[Attack],
    alerts: Iterable[Mapping[str, Any]],
    populations: Mapping[str, str],
    key_hours: float,
    window_ms: int,
    scored_from_ms: int,
) -> Report:
    """``alerts``: alert records with ``rate_key``, ``window_start`` and, where known, the
    event time at which the detector raised them (``event_ms``; else the window's end).
    ``populations``: rate key -> legit population, for charging false alerts."""
    by_key: dict[str, list[int]] = defaultdict(list)
    shared: list[int] = []
    for i, a in enumerate(attacks):
        for key in a.targets:
            by_key[key].append(i)
        if a.kind in SHARED_SIGNAL:
            shared.append(i)
    first_window: dict[int, int] = {}  # attack -> delay in windows of its earliest alert window
    first_s: dict[int, float] = {}  # attack -> seconds to its earliest alert
    records: Counter[int] = Counter()
    false_by: Counter[str] = Counter()
    learning = total = 0
    for alert in alerts:
        total += 1
        key = str(alert["rate_key"])
        ws = int(alert["window_start"])
        at = int(alert.get("event_ms") or alert.get("window_end") or ws + window_ms)
        w = ws // window_ms
        # An incident's update and close records are more records, not more alerts.
        new_alert = alert.get("status", "open") == "open"
        hits = [
            i
            for i in (shared if is_shared(key) else by_key.get(key, []))
            if attacks[i].start_ms // window_ms
            <= w
            <= (attacks[i].end_ms - 1) // window_ms + GRACE_WINDOWS
        ]
        if hits:
            # A shared key's alert may fall inside several guessing attacks: it is one alert,
            # credited to the one that started first.
            i = min(hits, key=lambda j: (attacks[j].start_ms, j))
            records[i] += 1
            delay = w - attacks[i].start_ms // window_ms
            first_window[i] = min(first_window.get(i, delay), delay)
            seconds = max(0.0, (at - attacks[i].start_ms) / 1000)
            first_s[i] = min(first_s.get(i, seconds), seconds)
        elif not new_alert:
            continue
        elif ws < scored_from_ms:
            learning += 1
        else:
            false_by[SHARED if is_shared(key) else populations.get(key, "unknown")] += 1
    kinds = {k: KindScore() for k in ATTACKS}
    overall = KindScore()
    for i, a in enumerate(attacks):
        for ks in (kinds.setdefault(a.kind, KindScore()), overall):
            ks.attacks += 1
            ks.alert_records += records[i]
            if i in first_window:
                ks.delays.append(first_window[i])
                ks.detect_s.append(first_s[i])
            else:
                ks.delays.append(None)
    return Report(
        kinds, overall, key_hours, sum(false_by.values()), dict(false_by), learning, total
    )


def table(report: Report) -> str:
    """The report as a fixed-width table, one row per attack kind and one overall, then the
    false alerts by population."""
    head = (
        f"{'attack':<22}{'n':>5}"
        + "".join(f"{'@' + str(n):>7}" for n in RECALL_WINDOWS)
        + f"{'median s':>10}{'alerts/inc':>12}{'oracle@2':>10}"
    )
    lines = [head, "-" * len(head)]

    def row(name: str, k: KindScore) -> str:
        cells = "".join(f"{_fmt(k.recall(n)):>7}" for n in RECALL_WINDOWS)
        med = k.median_detect_s()
        api = k.alerts_per_incident()
        return (
            f"{name:<22}{k.attacks:>5}{cells}"
            f"{'-' if med is None else f'{med:.0f}':>10}"
            f"{'-' if api is None else f'{api:.1f}':>12}"
            f"{_fmt(report.oracle.get(name)):>10}"
        )

    lines += [row(name, k) for name, k in report.kinds.items() if k.attacks]
    lines.append(row("all", report.overall))
    if report.oracle:
        lines.append(
            "oracle@2: what an oracle that knows each key's true rate finds within 2 windows on "
            "the same counts at the false-alert target (docs/evaluation.md)"
        )
    lines.append("")
    per = report.false_per_10k()
    lines.append(
        f"false alerts: {report.false_alerts} over {report.key_hours:,.0f} legit key-hours"
        f" = {'-' if per is None else f'{per:.1f}'} per 10,000"
    )
    for pop, n in sorted(report.false_by_population.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {pop:<22}{n:>7}")
    lines.append(
        f"alert records: {report.alert_records} (while learning: {report.learning_alerts})"
    )
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
