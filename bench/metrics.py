"""The benchmark's arithmetic: percentiles, rates, CPU and memory from samples, the result JSON
and the printed table. Pure (no Kafka, no JVM, no clock), so tests/unit/test_bench.py covers it.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bench.task_time import METRICS as TASK_TIME_METRICS
from bench.task_time import busiest

CONTENDERS = ("job", "java_ceiling", "python_loop")
"""The contenders ``make bench`` runs, in this order, and the result JSON's keys."""
OPTIONAL_CONTENDERS = ("job_session",)
"""Run only when asked (``--only``): the job on a standalone session cluster."""
METRIC_KEYS = ("events_per_s", "latency_ms", "cpu_s_per_million", "peak_rss_mb")
MIN_COMMITS = 4
"""Visible commits needed before first-to-last visible output is trusted as the rate."""
STEADY_SKIP_FRACTION = 0.4
"""Share of a throughput phase's events, by processing stamp, left out of its steady-state
figures: the JVM compiles its hot code during roughly the first minute of a run."""
MIN_STEADY_S = 5.0
"""Shortest steady window worth a figure."""


def parse_contenders(text: str) -> list[str]:
    """``"job,python_loop"`` -> ``["job", "python_loop"]``, in the canonical order.

    Raises ValueError for an unknown name or an empty selection.
    """
    known = CONTENDERS + OPTIONAL_CONTENDERS
    wanted = {part.strip() for part in text.split(",") if part.strip()}
    unknown = sorted(wanted - set(known))
    if unknown:
        raise ValueError(f"unknown contender(s) {', '.join(unknown)}; known: {', '.join(known)}")
    if not wanted:
        raise ValueError("no contender selected")
    return [c for c in known if c in wanted]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's
    default). Raises ValueError on an empty sequence."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError("q must be within [0, 100]")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def latency_summary(latencies_ms: Sequence[float]) -> dict[str, float | None]:
    """``{"p50": .., "p99": ..}`` in ms, rounded to 0.1 ms; both None without samples."""
    if not latencies_ms:
        return {"p50": None, "p99": None}
    return {
        "p50": round(percentile(latencies_ms, 50), 1),
        "p99": round(percentile(latencies_ms, 99), 1),
    }


def bursts(times: Sequence[float], gap_s: float = 0.5) -> int:
    """How many bursts of visibility ``times`` (sorted) form: a transaction commit makes a
    checkpoint's worth of records visible at once, so this counts commits seen by a reader."""
    count = 0
    last: float | None = None
    for t in times:
        if last is None or t - last > gap_s:
            count += 1
        last = t
    return count


def events_per_s(events: int, first_visible: float | None, last_visible: float | None) -> float:
    """Events in divided by the wall time from first to last visible output; 0 if undefined."""
    if first_visible is None or last_visible is None or last_visible <= first_visible:
        return 0.0
    return events / (last_visible - first_visible)


# -- processing-time stamps -------------------------------------------------------------------

_STAMP = re.compile(rb'"processing_time":\s*("(?P<text>[^"]*)"|(?P<ms>-?\d+))')
_INT_FIELDS: dict[str, re.Pattern[bytes]] = {}


def extract_int(value: bytes, field: str) -> int | None:
    """The integer member ``field`` of a flat JSON object, without parsing the whole object."""
    pattern = _INT_FIELDS.get(field)
    if pattern is None:
        pattern = re.compile(rb'"' + re.escape(field.encode()) + rb'":\s*(-?\d+)')
        _INT_FIELDS[field] = pattern
    m = pattern.search(value)
    return int(m.group(1)) if m else None


def stamp_ms(text: str) -> int:
    """Epoch ms of a ``yyyy-MM-dd HH:mm:ss.SSS`` UTC stamp (the Java ceiling's DATE_FORMAT)."""
    moment = datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)


class ProcessingSpan:
    """Earliest and latest ``processing_time`` stamp seen in output records, and how many records
    carry a stamp in each second.

    The job and the Python loop write epoch ms; the Java ceiling writes a UTC text stamp, which
    sorts like the time it names, so only the extremes and each second's label are converted.
    """

    def __init__(self) -> None:
        self._ms: list[int] = []
        self._text: list[bytes] = []
        self._per_second: Counter[int] = Counter()
        self._per_text_second: Counter[bytes] = Counter()

    def update(self, value: bytes) -> None:
        m = _STAMP.search(value)
        if m is None:
            return
        if m.group("ms") is not None:
            ms = int(m.group("ms"))
            self._per_second[ms // 1000] += 1
            if not self._ms:
                self._ms = [ms, ms]
            elif ms < self._ms[0]:
                self._ms[0] = ms
            elif ms > self._ms[1]:
                self._ms[1] = ms
        else:
            text = m.group("text")
            self._per_text_second[text[:19]] += 1
            if not self._text:
                self._text = [text, text]
            elif text < self._text[0]:
                self._text[0] = text
            elif text > self._text[1]:
                self._text[1] = text

    def bounds_ms(self) -> tuple[int, int] | None:
        if self._ms:
            return self._ms[0], self._ms[1]
        if self._text:
            return stamp_ms(self._text[0].decode()), stamp_ms(self._text[1].decode())
        return None

    def per_second(self) -> dict[int, int]:
        """Records per epoch second of their processing stamp."""
        out = dict(self._per_second)
        for label, n in self._per_text_second.items():
            second = stamp_ms(label.decode() + ".000") // 1000
            out[second] = out.get(second, 0) + n
        return out


# -- CPU and memory samples --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample of a process tree: wall time, cumulative CPU seconds, resident bytes."""

    t: float
    cpu_s: float
    rss_bytes: int


def cpu_at(samples: Sequence[Sample], t: float) -> float:
    """Cumulative CPU seconds at ``t``, linearly interpolated between samples (clamped)."""
    if not samples:
        return 0.0
    if t <= samples[0].t:
        return samples[0].cpu_s
    for a, b in itertools.pairwise(samples):
        if a.t <= t <= b.t:
            if b.t == a.t:
                return b.cpu_s
            return a.cpu_s + (b.cpu_s - a.cpu_s) * (t - a.t) / (b.t - a.t)
    return samples[-1].cpu_s


def cpu_between(samples: Sequence[Sample], t0: float, t1: float) -> float:
    return max(0.0, cpu_at(samples, t1) - cpu_at(samples, t0))


def peak_rss_mb(samples: Iterable[Sample]) -> float:
    return round(max((s.rss_bytes for s in samples), default=0) / 2**20, 1)


# -- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Throughput:
    """What a read_committed reader saw of one contender's output in the throughput phase."""

    events_in: int
    events_out: int
    first_visible: float | None
    last_visible: float | None
    commits: int
    processing_ms: tuple[int, int] | None
    cpu_s: float
    peak_rss_mb: float
    wall_s: float
    complete: bool
    steady: dict[str, Any] | None = None
    """``steady_state`` of the phase (None: too short for one)."""


def events_between(per_second: Mapping[int, int], t0: float, t1: float) -> int:
    """Records stamped in the whole seconds from ``t0`` up to, not including, ``t1``."""
    return sum(n for second, n in per_second.items() if t0 <= second < t1)


def steady_state(
    per_second: Mapping[int, int],
    bounds_ms: tuple[int, int] | None,
    samples: Sequence[Sample],
    skip_fraction: float = STEADY_SKIP_FRACTION,
) -> dict[str, Any] | None:
    """Rate and CPU per event after warm-up: over the processing-stamp seconds that follow the
    first ``skip_fraction`` of the events, up to the last stamp. None when that window is shorter
    than ``MIN_STEADY_S`` (or there are no stamps).

    The window starts at a whole second, so the events counted in it (those stamped in that
    second or later) match the CPU sampled from that moment to the last stamp.
    """
    if not per_second or bounds_ms is None:
        return None
    total = sum(per_second.values())
    skipped = 0
    start: int | None = None
    for second in sorted(per_second):
        if skipped >= skip_fraction * total:
            start = second
            break
        skipped += per_second[second]
    end_s = bounds_ms[1] / 1000
    if start is None or end_s - start < MIN_STEADY_S:
        return None
    events = total - skipped
    window_s = end_s - start
    cpu = cpu_between(samples, float(start), end_s)
    return {
        "events_per_s": round(events / window_s, 1),
        "cpu_s_per_million": round(cpu / events * 1e6, 1),
        "events": events,
        "window_s": round(window_s, 1),
        "cpu_s": round(cpu, 2),
        "skipped_events": skipped,
    }


def throughput_result(tp: Throughput) -> dict[str, Any]:
    """The throughput half of a contender's result.

    ``events_per_s`` is events in over first-to-last visible output. Output becomes visible a
    checkpoint at a time, so with fewer than ``MIN_COMMITS`` visible commits that span says more
    about the checkpoint interval than about the contender (one commit: no span at all), and the
    rate from the records' own processing stamps is used instead (``events_per_s_basis`` says
    which; both are kept).
    """
    rate = events_per_s(tp.events_in, tp.first_visible, tp.last_visible)
    basis = "visible_output"
    processing_rate = None
    if tp.processing_ms is not None and tp.processing_ms[1] > tp.processing_ms[0]:
        processing_rate = tp.events_in / ((tp.processing_ms[1] - tp.processing_ms[0]) / 1000)
    if (tp.commits < MIN_COMMITS or rate == 0.0) and processing_rate is not None:
        rate, basis = processing_rate, "processing_stamps"
    return {
        "events_per_s": round(rate, 1),
        "events_per_s_basis": basis,
        "processing_events_per_s": None if processing_rate is None else round(processing_rate, 1),
        "cpu_s_per_million": round(tp.cpu_s / tp.events_in * 1e6, 1) if tp.events_in else None,
        "steady": tp.steady,
        "peak_rss_mb": tp.peak_rss_mb,
        "throughput": {
            "events_in": tp.events_in,
            "events_out": tp.events_out,
            "complete": tp.complete,
            "visible_commits": tp.commits,
            "visible_span_s": (
                None
                if tp.first_visible is None or tp.last_visible is None
                else round(tp.last_visible - tp.first_visible, 3)
            ),
            "cpu_s": round(tp.cpu_s, 2),
            "wall_s": round(tp.wall_s, 1),
        },
    }


def alert_latencies(
    expected: Sequence[tuple[str, str, int]],
    burst_indexes: Sequence[int],
    alerts: Mapping[tuple[str, str, int], float],
    sent_at: Sequence[float],
) -> list[float | None]:
    """Per attack, in order: ms from handing the producer its burst (``sent_at`` at the
    burst's index) to the first read of its expected alert; None if either is missing."""
    out: list[float | None] = []
    for key, burst_index in zip(expected, burst_indexes, strict=True):
        seen = alerts.get(key)
        if seen is None or not 0 <= burst_index < len(sent_at):
            out.append(None)
        else:
            out.append((seen - sent_at[burst_index]) * 1000)
    return out


def latency_ms(
    visible: Iterable[tuple[int, int, float]],
    produced_ms: Mapping[tuple[int, int], int],
    record_events: Mapping[tuple[int, int], int] | None = None,
    censor_at: float | None = None,
) -> tuple[list[float], int]:
    """End-to-end latency (ms) of each output event, and how many events never showed up.

    ``visible`` holds (source partition, source offset, visible at, in s) per output event;
    latency is the visible time minus the produce time (ms) of its source record. Records whose
    source is not in ``produced_ms`` (warm-up traffic) are skipped. With ``record_events`` (the
    request events each produced record holds) and ``censor_at``, every event that was produced
    but not seen counts as visible at ``censor_at``: a lower bound, not a dropped sample, so a
    contender that falls behind cannot look faster than it is.
    """
    out: list[float] = []
    seen: Counter[tuple[int, int]] = Counter()
    for partition, offset, t in visible:
        produced = produced_ms.get((partition, offset))
        if produced is not None:
            out.append(t * 1000 - produced)
            seen[(partition, offset)] += 1
    missing = 0
    if record_events is not None:
        for source, events in record_events.items():
            lacking = events - seen[source]
            if lacking > 0:
                missing += lacking
                if censor_at is not None:
                    out.extend([censor_at * 1000 - produced_ms[source]] * lacking)
    return out, missing


def assemble(
    results: Mapping[str, Mapping[str, Any]],
    *,
    machine: Mapping[str, Any],
    versions: Mapping[str, Any],
    params: Mapping[str, Any],
    events: int,
    date: str,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The result document: one entry per contender that ran, then the run's context."""
    doc: dict[str, Any] = {name: dict(results[name]) for name in results}
    for name, result in doc.items():
        missing = [k for k in METRIC_KEYS if k not in result]
        if missing:
            raise ValueError(f"{name}: result lacks {', '.join(missing)}")
    doc |= {
        "machine": dict(machine),
        "versions": dict(versions),
        "date": date,
        "events": events,
        "params": dict(params),
    }
    if extra:
        doc |= dict(extra)
    return doc


TASK_TIME_KEYS = tuple(TASK_TIME_METRICS.values())
TASK_TIME_HEAD = "busy / backpressured / idle"


def _num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _task_time_lines(doc: Mapping[str, Any], width: int = 70) -> list[str]:
    """Per Flink contender, its two busiest vertices in the throughput phase (bench.task_time)."""
    lines = []
    for name in CONTENDERS + OPTIONAL_CONTENDERS:
        vertices = ((doc.get(name) or {}).get("task_time") or {}).get("vertices") or []
        for v in busiest(vertices):
            ms = [(v.get(k) or {}).get("max") for k in TASK_TIME_KEYS]
            label = v["vertex"] if len(v["vertex"]) <= width else v["vertex"][: width - 1] + "…"
            lines.append(f"{name:<14}{' / '.join(_num(x) for x in ms):>20}  {label}")
    if lines:
        lines[:0] = ["", "busiest Flink vertices, ms/s (max over subtasks): " + TASK_TIME_HEAD]
    return lines


def format_table(doc: Mapping[str, Any]) -> str:
    """The table ``make bench`` prints: one row per contender, then machine and versions.

    Each throughput figure stands beside its steady-state one (``steady_state``: after the
    first ``STEADY_SKIP_FRACTION`` of the events)."""
    header = (
        f"{'contender':<14}{'events/s':>11}{'steady ev/s':>13}{'p50 ms':>10}{'p99 ms':>10}"
        f"{'CPU s/M ev':>12}{'steady s/M':>12}{'peak RSS MB':>13}  notes"
    )
    lines = [header, "-" * len(header)]
    for name in CONTENDERS + OPTIONAL_CONTENDERS:
        r = doc.get(name)
        if r is None:
            continue
        lat = r.get("latency_ms") or {}
        steady = r.get("steady") or {}
        notes = []
        if r.get("events_per_s_basis") == "processing_stamps":
            notes.append(f"rate from processing stamps (<{MIN_COMMITS} commits seen)")
        tp = r.get("throughput") or {}
        if tp and not tp.get("complete", True):
            notes.append(f"INCOMPLETE {tp.get('events_out')}/{tp.get('events_in')}")
        lp = r.get("latency_phase") or {}
        if lp:
            if lp.get("missing"):
                notes.append(
                    f"latency is a lower bound: {lp['missing']:,} events not visible "
                    f"{lp.get('waited_after_s')} s after the last was produced"
                )
            if lp.get("cpu_cores") is not None:
                notes.append(f"{lp['cpu_cores']:.2f} cores at {_num(lp.get('rate'))}/s")
        if r.get("error"):
            notes.append(f"error: {r['error']}")
        lines.append(
            f"{name:<14}{_num(r.get('events_per_s')):>11}{_num(steady.get('events_per_s')):>13}"
            f"{_num(lat.get('p50')):>10}{_num(lat.get('p99')):>10}"
            f"{_num(r.get('cpu_s_per_million')):>12}{_num(steady.get('cpu_s_per_million')):>12}"
            f"{_num(r.get('peak_rss_mb')):>13}  {'; '.join(notes)}"
        )
    lines += _task_time_lines(doc)
    m, v, p = doc.get("machine", {}), doc.get("versions", {}), doc.get("params", {})
    lines.append("")
    lines.append(
        f"events {doc.get('events', 0):,} | checkpoint {p.get('checkpoint_seconds')} s | "
        f"parallelism {p.get('parallelism')} | mode {p.get('execution_mode')} "
        f"(parse: {p.get('parse_execution_mode', p.get('execution_mode'))}) | "
        f"paced {_num(p.get('rate'))} ev/s x {p.get('latency_seconds')} s | {doc.get('date')}"
    )
    lines.append(
        f"machine: {m.get('cpu_model')}, {m.get('cores')} cores, {m.get('memory_gb')} GB, "
        f"load {m.get('load_avg_1m')} at start"
    )
    lines.append(
        "versions: "
        + ", ".join(f"{k} {val}" for k, val in v.items() if val is not None and val != "")
    )
    return "\n".join(lines)
