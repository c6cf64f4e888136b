"""Where a Flink contender's time goes, per job vertex, from Flink's REST API while it runs.

Flink measures, for every subtask, how many milliseconds of each second it was busy, waited for
output buffers (backpressured) or waited for input (idle). They are its own bottleneck signals:
the vertex that limits a job is busy and not backpressured, and what runs upstream of it is
backpressured. The bench samples them through the throughput phase and keeps, per vertex, the
median over the samples of the subtasks' average and maximum.

Flink averages each of the three over the last 60 s, and its REST API refreshes metrics every
10 s. So a sample taken in a phase's first minute still holds start-up, when a task that is
deploying counts as busy; the bench keeps only the samples taken from 60 s after the first
event was processed to the last one (``TaskTimeSampler.result``).

A Python operator in process mode counts as busy while it waits for its Python worker to finish
a bundle, so "busy" there is not CPU: docs/performance.md sets it beside the CPU split.
"""

from __future__ import annotations

import math
import socket
import statistics
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from jobs.submit import Rest

METRICS = {
    "busyTimeMsPerSecond": "busy_ms_per_s",
    "backPressuredTimeMsPerSecond": "backpressured_ms_per_s",
    "idleTimeMsPerSecond": "idle_ms_per_s",
}
# The REST API's metrics are refreshed every 10 s (metrics.fetcher.update-interval).
INTERVAL_S = 10.0
# Flink's busy, backpressured and idle times are averages over this many seconds.
METRIC_WINDOW_S = 60.0
REQUEST_TIMEOUT_S = 2.0

Sample = dict[str, dict[str, dict[str, float]]]
"""Vertex name -> metric name -> {"avg": ms, "max": ms} over its subtasks."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, for a MiniCluster's REST endpoint."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def minicluster_rest_config(port: int) -> dict[str, str]:
    """Flink options that give an embedded MiniCluster a REST endpoint on 127.0.0.1:``port``."""
    return {"rest.bind-address": "127.0.0.1", "rest.address": "127.0.0.1", "rest.port": str(port)}


def parse_vertex_metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """The answer of ``/jobs/<id>/vertices/<id>/subtasks/metrics?get=…&agg=avg,max`` as
    metric -> {"avg", "max"}; metrics Flink has not measured yet (absent or NaN) are left out."""
    out: dict[str, dict[str, float]] = {}
    for row in rows:
        name = row.get("id")
        if name not in METRICS:
            continue
        values = [row.get("avg"), row.get("max")]
        if all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            out[str(name)] = {"avg": float(row["avg"]), "max": float(row["max"])}
    return out


def summarize(samples: Sequence[Sample], vertex_order: Sequence[str]) -> list[dict[str, Any]]:
    """Per vertex, in the job graph's order: the median over the samples of each metric's
    average and maximum over the subtasks, in ms per second."""
    summary = []
    for vertex in vertex_order:
        row: dict[str, Any] = {"vertex": vertex}
        seen = [s[vertex] for s in samples if vertex in s]
        for metric, key in METRICS.items():
            values = [m[metric] for m in seen if metric in m]
            if values:
                row[key] = {
                    agg: round(statistics.median(v[agg] for v in values), 1)
                    for agg in ("avg", "max")
                }
        row["samples"] = len(seen)
        summary.append(row)
    return summary


def busiest(summary: Sequence[Mapping[str, Any]], n: int = 2) -> list[Mapping[str, Any]]:
    """The ``n`` vertices with the highest busy time of their busiest subtask."""
    measured = [r for r in summary if "busy_ms_per_s" in r]
    return sorted(measured, key=lambda r: -float(r["busy_ms_per_s"]["max"]))[:n]


class TaskTimeSampler:
    """Samples a running job's per-vertex task time in a thread, until the block exits.

    ``job_id`` names the job; without it, the first running job at ``rest`` is taken (an
    embedded MiniCluster runs one). Errors are kept, not raised: a contender whose REST endpoint
    never answers still has its throughput measured, and its result says why this is missing.
    """

    def __init__(self, rest: str, job_id: str | None = None, interval_s: float = INTERVAL_S):
        # "host:port", as scripts/flink-cluster.sh and jobs.submit take it.
        self.rest = Rest(rest, timeout_s=REQUEST_TIMEOUT_S)
        self.job_id = job_id
        self.interval_s = interval_s
        self.samples: list[Sample] = []
        self.sampled_at: list[float] = []  # epoch seconds, one per sample
        self.vertex_order: list[str] = []
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="task-time", daemon=True)

    def __enter__(self) -> TaskTimeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _get(self, path: str) -> Any:
        return self.rest.call("GET", path)

    def _running_job(self) -> str | None:
        if self.job_id:
            return self.job_id
        jobs = self._get("/jobs").get("jobs", [])
        running = [j["id"] for j in jobs if j.get("status") == "RUNNING"]
        return running[0] if running else None

    def _sample(self, job_id: str) -> None:
        job = self._get(f"/jobs/{job_id}")
        if job.get("state") != "RUNNING":
            return
        sample: Sample = {}
        get = ",".join(METRICS)
        for vertex in job.get("vertices", []):
            if self._stop.is_set():
                return
            name = str(vertex["name"])
            if name not in self.vertex_order:
                self.vertex_order.append(name)
            rows = self._get(
                f"/jobs/{job_id}/vertices/{vertex['id']}/subtasks/metrics?get={get}&agg=avg,max"
            )
            metrics = parse_vertex_metrics(rows)
            if metrics:
                sample[name] = metrics
        if sample:
            self.samples.append(sample)
            self.sampled_at.append(time.time())

    def _run(self) -> None:
        job_id: str | None = None
        while not self._stop.wait(self.interval_s):
            try:
                job_id = job_id or self._running_job()
                if job_id:
                    self._sample(job_id)
                    self.error = None
                else:
                    self.error = "no running job"
            except Exception as e:  # a sampler must never end the bench's run
                # Start-up (no endpoint yet), shut-down, or an answer not as expected: keep the
                # last reason, and try again.
                self.error = f"{type(e).__name__}: {e}"

    def result(self, first_s: float | None = None, last_s: float | None = None) -> dict[str, Any]:
        """The summary over the samples taken from ``METRIC_WINDOW_S`` after ``first_s`` (the
        first event processed) to ``last_s`` (the last one), epoch seconds; over all samples,
        with ``steady`` false, if none fall in there (a phase shorter than that window)."""
        kept = steady_samples(self.samples, self.sampled_at, first_s, last_s)
        out: dict[str, Any] = {
            "interval_s": self.interval_s,
            "samples": len(kept or self.samples),
            "steady": bool(kept),
            "vertices": summarize(kept or self.samples, self.vertex_order),
        }
        if not self.samples and self.error:
            out["error"] = self.error
        return out


def steady_samples(
    samples: Sequence[Sample],
    sampled_at: Sequence[float],
    first_s: float | None,
    last_s: float | None,
) -> list[Sample]:
    """The samples whose 60 s metric window lies within [first_s, last_s]."""
    if first_s is None or last_s is None:
        return []
    start = first_s + METRIC_WINDOW_S
    return [s for s, t in zip(samples, sampled_at, strict=True) if start <= t <= last_s]
