"""Contender processes: start them in their own process group, sample the CPU and memory of
their whole process tree (the JVM and the Python workers Beam starts included), stop them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

from bench.metrics import Sample


class TreeSampler:
    """Samples the process trees under ``roots()`` every ``interval_s`` in a background thread.

    CPU is cumulative user + system seconds of every process seen in the trees; a process that
    exits keeps its last reading, so the sum never falls. Memory is the summed RSS of the live
    processes (shared pages count once per process, so it overstates a little).
    """

    def __init__(self, roots: Callable[[], Sequence[int]], interval_s: float = 0.5) -> None:
        self._roots = roots
        self._interval = interval_s
        self._cpu: dict[tuple[int, float], float] = {}
        self._procs: dict[tuple[int, float], psutil.Process] = {}
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-sampler", daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join(timeout=10)
            self.sample()

    def _tree(self) -> list[psutil.Process]:
        out: list[psutil.Process] = []
        for pid in self._roots():
            try:
                root = psutil.Process(pid)
                out.append(root)
                out.extend(root.children(recursive=True))
            except psutil.Error:
                continue
        return out

    def sample(self) -> Sample:
        rss = 0
        for proc in self._tree():
            try:
                key = (proc.pid, proc.create_time())
                # One Process object per process, so psutil's per-object caches stay valid.
                proc = self._procs.setdefault(key, proc)
                with proc.oneshot():
                    times = proc.cpu_times()
                    mem = proc.memory_info().rss
            except psutil.Error:
                continue
            self._cpu[key] = times.user + times.system
            rss += mem
        sample = Sample(time.time(), sum(self._cpu.values()), rss)
        self.samples.append(sample)
        return sample

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self._interval)


class Contender:
    """One contender process (its own session, so the whole group can be stopped at once)."""

    def __init__(
        self, name: str, cmd: Sequence[str], env: dict[str, str], cwd: Path, log: Path
    ) -> None:
        self.name = name
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log
        self._log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.started_at = time.time()
        self.proc = subprocess.Popen(
            list(cmd),
            cwd=cwd,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace_s: float = 20.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``grace_s``; returns the exit code.

        The group is only signalled while its leader is alive (afterwards its id could belong to
        someone else); descendants that outlive the leader are killed one by one, by identity.
        """
        tree: list[psutil.Process] = []
        if self.alive():
            try:
                tree = psutil.Process(self.pid).children(recursive=True)
            except psutil.Error:
                tree = []
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait(timeout=30)
        for proc in tree:
            try:
                if proc.is_running():  # same pid *and* start time: still our process
                    proc.kill()
            except psutil.Error:
                pass
        self._log.close()
        return self.proc.returncode

    def _signal_group(self, sig: signal.Signals) -> None:
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])
