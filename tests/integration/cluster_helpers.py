"""Helpers the cluster tests share: submitting through jobs.submit, and awaiting a condition."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def submit(
    cluster: Any, *args: str, timeout_s: float | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m jobs.submit --flink-rest <cluster> <args>``, captured."""
    env = dict(os.environ, FLINK_REST=cluster.rest)
    # The submitting client needs no hash key: the TaskManagers have it.
    env.pop("PIPELINE_HASH_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "jobs.submit", "--flink-rest", cluster.rest, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def wait_until(
    what: str,
    reached: Callable[[], bool],
    timeout_s: float,
    interval_s: float = 1.0,
    detail: Callable[[], str] = lambda: "",
) -> None:
    """Poll ``reached`` every ``interval_s`` until it is true; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not reached():
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}" + (
            f": {detail()}" if detail() else ""
        )
        time.sleep(interval_s)
