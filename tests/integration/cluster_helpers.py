"""Helpers the cluster tests share: submitting through jobs.submit, and awaiting a condition."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

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


def kong_entry(user: str, ts: int, request_id: str) -> bytes:
    """A minimal Kong entry for ``user`` at event time ``ts``. It carries a request id, so a
    retry (the same entry again) is recognised."""
    return json.dumps(
        {
            "request": {"id": request_id, "uri": "/v1/x", "method": "GET", "headers": {}},
            "response": {"status": 200, "headers": {}},
            "consumer": {"username": user},
            "client_ip": "10.1.2.3",
            "started_at": ts,
        }
    ).encode()


def partition_sender(bootstrap: str, topic: str) -> Callable[..., None]:
    """send(partition, *values): produce them to that partition of ``topic`` and flush."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})

    def send(partition: int, *values: bytes) -> None:
        for v in values:
            producer.produce(topic, value=v, partition=partition)
        assert producer.flush(30) == 0

    return send
