"""CPU per event by stage, from the CPU time of each thread of a contender's processes.

Flink runs each chain of operators in one task thread, named after the chain, and in thread mode
the Python operators run on their chain's task thread too. So a thread's CPU time is its chain's,
Java and Python together, and the sum over all threads is the process tree's CPU: nothing is left
unattributed. The sampler reads every thread's user + system time (``/proc`` through psutil) and,
for a JVM, maps thread ids to Java thread names with ``jcmd <pid> Thread.print`` (its ``nid``).
``by_stage`` groups the threads by ``STAGES``, the first pattern that matches a thread's name.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil

STAGES: tuple[tuple[str, str], ...] = (
    ("Kafka consumer fetch", r"^Source Data Fetcher"),
    ("source, Python parse, watermark", r"^Source: "),
    ("dedup, enriched sink, first sightings", r"^OverAggregate.*TableToDataStream"),
    ("usage windows (window operator), usage records", r"usage windows"),
    ("reconciliation ledger and its sink", r"^GroupAggregate"),
    ("usage records to the detector and usage sink", r"^SinkConversion"),
    ("Python detector and alerts sink", r"anomaly detection"),
    ("Python billing stage and its sinks", r"per-subject pricing"),
    ("Kafka producer I/O", r"^kafka-producer-network-thread"),
    ("checkpoints", r"^AsyncOperations|Checkpoint"),
    ("garbage collection", r"GC|^G1 "),
    ("JIT compiler", r"Compiler"),
    ("Python processes (client; process-mode workers)", r"^python"),
)
OTHER = "runtime, other threads"
_NID = re.compile(r'^"(?P<name>.*)" .*\bnid=(?P<nid>0x[0-9a-f]+|\d+)', re.MULTILINE)


def stage_of(thread_name: str) -> str:
    for stage, pattern in STAGES:
        if re.search(pattern, thread_name):
            return stage
    return OTHER


def java_thread_names(jcmd_output: str) -> dict[int, str]:
    """Native thread id -> Java thread name, from ``jcmd <pid> Thread.print``."""
    return {int(m["nid"], 0): m["name"] for m in _NID.finditer(jcmd_output)}


@dataclass
class ThreadSampler:
    """Samples the CPU seconds of every thread under ``roots()`` every ``interval_s``."""

    roots: Callable[[], Sequence[int]]
    interval_s: float = 2.0
    names_every_s: float = 20.0
    samples: list[tuple[float, dict[tuple[int, int], float]]] = field(default_factory=list)
    names: dict[tuple[int, int], str] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _named_at: float = 0.0

    def __enter__(self) -> ThreadSampler:
        self._thread = threading.Thread(target=self._run, name="thread-cpu", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _processes(self) -> list[psutil.Process]:
        out: list[psutil.Process] = []
        for pid in self.roots():
            try:
                root = psutil.Process(pid)
                out += [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
        return out

    def sample(self) -> None:
        now = time.time()
        name_now = now - self._named_at >= self.names_every_s
        cpu: dict[tuple[int, int], float] = {}
        for proc in self._processes():
            try:
                threads = proc.threads()
                exe = proc.name()
            except psutil.Error:
                continue
            for t in threads:
                cpu[(proc.pid, t.id)] = t.user_time + t.system_time
            if name_now:
                self._name(proc.pid, exe, [t.id for t in threads])
        if name_now:
            self._named_at = now
        self.samples.append((now, cpu))

    def _name(self, pid: int, exe: str, tids: Sequence[int]) -> None:
        if exe == "java":
            try:
                out = subprocess.run(
                    ["jcmd", str(pid), "Thread.print"], capture_output=True, text=True, timeout=20
                ).stdout
            except (OSError, subprocess.TimeoutExpired):
                out = ""
            for tid, name in java_thread_names(out).items():
                self.names[(pid, tid)] = name
        else:
            for tid in tids:
                self.names.setdefault((pid, tid), f"{exe}: {pid}")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def by_stage(self, t0: float, t1: float, events: int) -> list[dict[str, Any]]:
        """CPU-µs per event by stage between the samples nearest ``t0`` and ``t1``."""
        return by_stage(self.samples, self.names, t0, t1, events)


def by_stage(
    samples: Sequence[tuple[float, Mapping[tuple[int, int], float]]],
    names: Mapping[tuple[int, int], str],
    t0: float,
    t1: float,
    events: int,
) -> list[dict[str, Any]]:
    """Per stage, most CPU first: CPU-µs per event and its share, over the samples nearest
    ``t0`` and ``t1``. A thread that starts or ends between them counts from 0 or its last
    reading."""
    if len(samples) < 2 or events <= 0:
        return []
    first = min(samples, key=lambda s: abs(s[0] - t0))
    last = min(samples, key=lambda s: abs(s[0] - t1))
    if last[0] <= first[0]:
        return []
    seen: dict[tuple[int, int], float] = {}
    for t, cpu in samples:
        if first[0] <= t <= last[0]:
            seen.update(cpu)
    totals: dict[str, float] = {}
    for key, end in seen.items():
        delta = end - first[1].get(key, 0.0)
        stage = stage_of(names.get(key, ""))
        totals[stage] = totals.get(stage, 0.0) + max(0.0, delta)
    whole = sum(totals.values()) or 1.0
    rows = [
        {
            "stage": stage,
            "cpu_us_per_event": round(cpu / events * 1e6, 1),
            "percent": round(100 * cpu / whole, 1),
        }
        for stage, cpu in totals.items()
    ]
    return sorted(rows, key=lambda r: -r["cpu_us_per_event"])
