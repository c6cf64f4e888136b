"""The evaluation's fast mode: each key's windows as the job's window records, through the
detector's pure code (metering.detect), one key at a time.

A window record is what the job's usage windows emit for a key: when the window closes, and
``early`` while it is open once its rejected calls reach a threshold (metering.detect
``early_thresholds``). Here the early records assume the window's calls and rejections are
spread evenly over it; a closed window is judged at its end plus the out-of-orderness bound,
when the job's watermark passes it.
"""

from __future__ import annotations

import math
import multiprocessing
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from evaluation.score import SHARED
from evaluation.traffic import (
    HOUR_MS,
    MINUTE_MS,
    POPULATIONS,
    WINDOW_MS,
    Attack,
    Counts,
    KeyTraffic,
    Plan,
    Spec,
    client,
    consumer,
    labels,
    networks_by_country,
    plan,
)
from metering.detect import (
    DetectorConfig,
    KeyState,
    close_due,
    early_thresholds,
    evaluate,
    next_close,
)
from metering.records import CLIENT_KEY_PREFIX, SHARED_KEY
from metering.rules import distributed
from schemas.events import MAX_NETWORKS

END_OF_TIME = 2**62


@dataclass(slots=True)
class Shared:
    """The shared signal's counts so far: per window, the unidentified clients that began to
    fail (distributed.newly_failing), their rejected calls then, and their calls per country,
    as the job's shared windows count them."""

    clients: Counts
    failures: Counts
    countries: dict[int, dict[str, int]]
    quiet_windows: int

    @classmethod
    def empty(cls, windows: int, cfg: DetectorConfig) -> Shared:
        quiet = cfg.rule_config(distributed.NAME).quiet_minutes * MINUTE_MS // cfg.window_ms
        return cls(np.zeros(windows, np.int64), np.zeros(windows, np.int64), {}, quiet)

    def add(self, kt: KeyTraffic) -> None:
        if not kt.rate_key.startswith(CLIENT_KEY_PREFIX):
            return
        began = distributed.newly_failing(np.flatnonzero(kt.failures).tolist(), self.quiet_windows)
        self.clients[began] += 1
        self.failures[began] += kt.failures[began]
        self._add_countries({i: kt.countries[i] for i in began})

    def merge(self, other: Shared) -> None:
        self.clients += other.clients
        self.failures += other.failures
        self._add_countries(other.countries)

    def _add_countries(self, countries: dict[int, dict[str, int]]) -> None:
        for i, by_country in countries.items():
            mine = self.countries.setdefault(i, {})
            for c, n in by_country.items():
                mine[c] = mine.get(c, 0) + n

    def traffic(self) -> KeyTraffic:
        zero = np.zeros_like(self.clients)
        # Each client is one network, as the job's shared windows count them.
        return KeyTraffic(
            SHARED_KEY, SHARED, None, self.clients, self.failures, self.clients, zero,
            self.countries,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Outcome:
    attacks: list[Attack]
    alerts: list[dict[str, Any]]
    populations: dict[str, str]
    key_hours: float
    window_records: int
    spans: dict[int, list[tuple[int, int]]]
    shared: Shared | None = None


def legit_key_hours(kt: KeyTraffic, spec: Spec) -> int:
    """Clock hours of the scored span in which the key made a legit call."""
    per_hour = HOUR_MS // WINDOW_MS
    scored = kt.legit[spec.scored_from :]
    hours = math.ceil(scored.shape[0] / per_hour)
    padded = np.zeros(hours * per_hour, dtype=scored.dtype)
    padded[: scored.shape[0]] = scored
    return int(np.count_nonzero(padded.reshape(hours, per_hour).sum(axis=1)))


def networks(kt: KeyTraffic, i: int) -> int:
    """Window ``i``'s distinct client networks, as the job's windows count them."""
    if kt.consumer is None:
        # A rejected-call key is one network; the shared signal's networks are its clients.
        return int(kt.prefixes[i])
    return min(MAX_NETWORKS, sum(networks_by_country(kt, i).values()))


def window_records(
    kt: KeyTraffic, spec: Spec, cfg: DetectorConfig, out_of_orderness_ms: int
) -> Iterator[tuple[dict[str, Any], int]]:
    """The key's window records, window by window, each with the event time at which the job
    emits it to the detector. The shared signal's are of kind ``shared``, never early."""
    shared = kt.rate_key == SHARED_KEY
    thresholds = early_thresholds(cfg.auth_failure_min) if cfg.early_alerts and not shared else ()
    for i in kt.active().tolist():
        start = spec.start_ms + i * WINDOW_MS
        count = int(kt.counts[i])
        failures = int(kt.failures[i])
        record = {
            "kind": "shared" if shared else "window",
            "rate_key": kt.rate_key,
            "consumer": kt.consumer,
            "key_fingerprint": None,
            "window_start": start,
            "window_end": start + WINDOW_MS,
            "count": count,
            "units": float(count),
            "auth_failures": failures,
            "countries": sorted(kt.countries.get(i, {})),
            "networks": networks(kt, i),
        }
        for f in thresholds:
            if f > failures:
                break
            seen = math.ceil(f * count / failures)
            yield (
                record | {"kind": "early", "count": seen, "auth_failures": f},
                start + WINDOW_MS * f // failures,
            )
        yield record, start + WINDOW_MS + out_of_orderness_ms


def judge(
    kt: KeyTraffic, spec: Spec, cfg: DetectorConfig, out_of_orderness_ms: int
) -> tuple[list[dict[str, Any]], int]:
    """The alerts the detector raises on one key's windows, each with ``event_ms``, and the
    number of window records it judged."""
    state: KeyState | None = None
    out: list[dict[str, Any]] = []
    n = 0
    # In the order the job emits them: a window's early records can come before the previous
    # window closes (its close waits for the watermark, an early record for one event).
    records = sorted(window_records(kt, spec, cfg, out_of_orderness_ms), key=lambda r: r[1])
    for record, at in records:
        n += 1
        # The job's close timer fires once the watermark (the emission time less the
        # out-of-orderness bound) passes it; a closed window's record comes before the timers
        # its own watermark fires.
        due = None if state is None else next_close(state, cfg)
        if state is not None and due is not None and due < at - out_of_orderness_ms:
            out.extend(a | {"event_ms": at} for a in close_due(state, due, cfg, at))
        state, alerts = evaluate(state, record, cfg, at)
        out.extend(a | {"event_ms": at} for a in alerts)
    if state is not None and records:
        # The end of the input: the job's last watermark (the end of time) fires every close
        # timer, however recent the incident's last finding.
        end = spec.end_ms + WINDOW_MS
        out.extend(a | {"event_ms": end} for a in close_due(state, END_OF_TIME, cfg, end))
    return out, n


def _judge_keys(
    p: Plan, cfg: DetectorConfig, out_of_orderness_ms: int, which: str, indexes: range
) -> Outcome:
    spec = p.spec
    alerts: list[dict[str, Any]] = []
    populations: dict[str, str] = {}
    spans: dict[int, list[tuple[int, int]]] = defaultdict(list)
    shared = Shared.empty(spec.windows, cfg)
    key_hours = records = 0
    for index in indexes:
        kt = consumer(p, index) if which == "consumer" else client(p, index)
        shared.add(kt)
        populations[kt.rate_key] = kt.population
        if kt.attack is not None and kt.attack_windows is not None:
            spans[kt.attack].append(kt.attack_windows)
        if kt.population in POPULATIONS:
            key_hours += legit_key_hours(kt, spec)
        got, n = judge(kt, spec, cfg, out_of_orderness_ms)
        alerts.extend(got)
        records += n
    return Outcome([], alerts, populations, float(key_hours), records, dict(spans), shared)


def run(spec: Spec, cfg: DetectorConfig, out_of_orderness_ms: int, workers: int = 2) -> Outcome:
    """Every key judged, in ``workers`` processes (keys are independent: the detector's state is
    per key), and the attacks labelled with the spans their keys were given."""
    p = plan(spec)
    chunk = 50
    tasks = [
        (p, cfg, out_of_orderness_ms, which, range(i, min(i + chunk, n)))
        for which, n in (("consumer", len(p.populations)), ("client", len(p.clients)))
        for i in range(0, n, chunk)
    ]
    if workers > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            # One task at a time: consumer keys cost far more than clients.
            parts = pool.starmap(_judge_keys, tasks, chunksize=1)
    else:
        parts = [_judge_keys(*t) for t in tasks]
    spans: dict[int, list[tuple[int, int]]] = defaultdict(list)
    alerts: list[dict[str, Any]] = []
    populations: dict[str, str] = {}
    shared = Shared.empty(spec.windows, cfg)
    for part in parts:
        alerts.extend(part.alerts)
        populations.update(part.populations)
        for a, got in part.spans.items():
            spans[a].extend(got)
        if part.shared is not None:
            shared.merge(part.shared)
    # The shared signal, once every client is counted.
    on_shared, n = judge(shared.traffic(), spec, cfg, out_of_orderness_ms)
    alerts.extend(on_shared)
    populations[SHARED_KEY] = SHARED
    return Outcome(
        labels(p, spans),
        alerts,
        populations,
        sum(part.key_hours for part in parts),
        sum(part.window_records for part in parts) + n,
        dict(spans),
    )
