"""Fault injection on the real session cluster and broker, checked against ground truth.

    python -m testkit.faults [--faults N | --plan KIND,...] [--duration S] [--rate R] [--seed X]
    make faults                       (the full run: 16 faults at 40 events/s)
    make faults ARGS="--rate 2000 --duration 120 --plan ..."   (a realistic rate, see Makefile)

What one run does:

1. Starts its own Kafka broker (``scripts/kafka.sh``, port ``--kafka-port`` / FAULTS_KAFKA_PORT,
   default 29092) and its own Flink session cluster (``scripts/flink-cluster.sh``, REST
   ``--flink-rest`` / FAULTS_FLINK_REST, default 127.0.0.1:28081), so a developer's broker and
   cluster (9092/8081) and the test fixtures' (19092/18081) are never touched. Both are stopped
   at the end, also on failure or Ctrl-C. The JobManagers and TaskManagers this run restarts
   use the cluster's own environment and pid files (``.local/flink-<port>/``).
2. Creates fresh topics for the run and submits the job with ``jobs.submit``: 3 s checkpoints,
   parallelism 2 (1 when the plan rescales from 1), 5 s idle timeout, 2 s out-of-orderness, a
   transactional-id prefix and group id stable for the run. With ``tm-pause-past-txn`` in the
   plan, the sinks' transaction timeout is the shortest the job's own check accepts with its
   default ``--expected-restart-seconds`` (120 s: 124 s), so a pause past it fits the run. A
   fault whose recovery takes longer than that restart bound is a problem of the run: Kafka
   may then abort transactions a completed checkpoint holds.
3. Produces sequenced APISIX log entries in real time (``testkit.traffic.SequencedEvents``) for
   256 rate keys: event time is the wall clock, and every event's ``x-request-id`` is
   ``<key>-<seq>`` with per-key sequence numbers 1, 2, 3, ... without gaps. Records go to
   explicit partitions: partition 1 starts late (the first 15 % of the run only partition 0
   gets data), and half-way through partition 0 goes idle for longer than the job's idle
   timeout. The producer is idempotent and retries through broker outages (10 min delivery
   timeout. After each fault has recovered, a key of its own ("fb<n>") sends one batch of
   30 refused calls (403) within one window, and the run goes on once the enriched topic holds
   it: each must raise one ``auth_failures`` alert (``alert_bursts``).
4. Injects the faults one after another, each once the job has recovered from the previous
   one (job RUNNING, every task RUNNING, and a checkpoint triggered after the fault
   COMPLETED), with deadlines. After each recovery, every output partition's read_committed
   end must reach the high watermark it had then: nothing the dead writers left open may
   block readers.

   - ``tm-kill:before|during|after|random``: ``kill -9`` the TaskManager just before a
     checkpoint is due, while one is in progress (its ``chk-N`` directory exists without
     ``_metadata``), right after one completed (its ``_metadata`` appeared, so the sinks'
     transactions of that checkpoint are not committed yet; preferably a checkpoint triggered
     as windows open, which holds the newest window state and timers), or at a random moment.
     A new TaskManager is started at once, with the cluster's environment.
   - ``tm-kill:after-silence``: keys of their own (``VANISHING_KEYS`` of them, "fv<n>k<i>")
     send ``VANISHING_EVENTS`` events each, early in a window and just before a checkpoint is
     due, and never send again. Once the enriched topic holds all of them (a checkpoint that
     covers them completed; their window's state and timer are in it), and while their window
     is surely still open (the kill comes before window end + out-of-orderness - 1 s, and the
     watermark trails the newest event time by the out-of-orderness), ``kill -9`` the
     TaskManager. After recovery the other keys' traffic moves the watermark on, and the
     vanishing keys' windows must reach the usage topic without any further event of theirs
     (waited for, not left to the final drain) with their exact counts; the final check names
     them (``vanishing keys: N windows, all exact``) and fails if any of their events came
     after the kill.
   - ``tm-pause``: SIGSTOP the TaskManager and its Python workers for 2.5 checkpoint
     intervals, then SIGCONT.
   - ``broker-restart``: stop the broker (``kafka.sh down``), keep it down a few seconds while
     the producer and the job retry, start it again.
   - ``jm-kill``: ``kill -9`` the JobManager, see below.
   - ``tm-kill:every-checkpoint``: ``kill -9`` the TaskManager right after each of 3
     checkpoints in a row, each the first one the restored job completed.
   - ``kill-during-recovery``: ``kill -9`` the TaskManager, then its successor while tasks
     restore their state on it (INITIALIZING).
   - ``tm-pause-past-txn``: SIGSTOP the TaskManager and its workers at a moment its sinks'
     transactions hold records, until Kafka has aborted them (the transaction timeout passed
     and every output partition's read_committed end reached its high watermark), then
     SIGCONT. The JobManager declares the TaskManager lost meanwhile, and the TaskManager may
     exit once it runs again.

   Whenever no TaskManager process runs while the job recovers, the run starts one, as a
   supervisor (Kubernetes, systemd) would, and says so in the fault's line.
   - ``py-worker-kill``: ``kill -9`` one Python worker (``beam_boot``) of the TaskManager. Only
     process mode has workers, so a plan with this fault runs the parse operator in process
     mode (``--parse-execution-mode process``, unless ``--job-arg`` sets it); the detector
     keeps its mode.
   - ``broker-kill9``: ``kill -9`` the broker, keep it down a few seconds, start it again (log
     recovery after an unclean shutdown).
   - ``broker-stop``: SIGSTOP the broker for 32 to 40 s, longer than the clients' 30 s request
     timeout, then SIGCONT.
   - ``rescale:1-2``: stop with a savepoint (no drain) at parallelism 1, resubmit from it at
     parallelism 2.

   The full plan (``make faults``, about 19 minutes) is rescale:1-2, tm-kill:during,
   broker-restart, tm-kill:after, py-worker-kill, broker-kill9, tm-pause, tm-kill:before,
   tm-kill:after-silence, jm-kill, tm-kill:every-checkpoint, broker-stop,
   kill-during-recovery, tm-pause-past-txn, tm-kill:random, tm-kill:after; ``--faults N``
   takes the first N, cycling for N > 16.
5. Stops producing, waits until the enriched topic (read_committed) holds every source event,
   stops the job with ``--stop-with-savepoint --drain`` (closing every window), and checks:

   - every event in the raw topic is in the enriched topic exactly once (by request id);
   - per rate key and 10 s window, the usage records (``window`` plus any
     ``late_correction``) add up to the count computed from the raw events' event times, and
     no window is emitted twice;
   - no dead letters; the reconciliation topic balances per source partition and matches the
     raw and enriched topics;
   - no transaction is left open: on every output partition the read_committed end (last
     stable offset) equals the high watermark;
   - the alerts topic holds every alert the ground truth calls for (``expected_alerts``) and no
     other; an alert sent more than once (at-least-once delivery) always has the same
     ``alert_id``.

   It ends with one line, ``faults injected N, events checked M, lost L, duplicated D, windows
   differing W`` (followed by ``; vanishing keys: K keys, N windows, all exact`` when the plan
   has ``tm-kill:after-silence``), and exits non-zero if L, D or W is not 0 or any check
   failed.

The progress reader (``CommittedIds``) reads the enriched topic throughout the run and must
survive every fault: one that stops fetching while committed data grows is replaced by a new
consumer from where it stopped, and fails the run if that does not help (``StallWatch``). The
final wait never sits out its timeout: it ends once the job's committed output stops growing.

JobManager failure without high availability
--------------------------------------------

The local session cluster runs without HA (no ZooKeeper or Kubernetes HA services), so a
JobManager that dies takes its jobs with it: the restarted JobManager knows no jobs, and the
TaskManager cancels the old job's tasks once its JobManager heartbeat times out (about a
minute), which frees its slots. Recovery is a resubmission from the latest *retained*
checkpoint:

- Checkpoints are externalized and retained (``execution.checkpointing.
  externalized-checkpoint-retention: RETAIN_ON_CANCELLATION``, ``num-retained: 3``), so the
  last completed ones stay in ``<checkpoint dir>/<job id>/chk-<n>/`` (each with a
  ``_metadata`` file) after the JobManager is gone.
- Take the highest ``chk-<n>`` that has ``_metadata`` and resubmit the same job, with the
  same ``--transactional-id-prefix``, from it::

      python -m jobs.submit <same job flags> --from-savepoint <checkpoint dir>/<job id>/chk-<n>

  (If that checkpoint cannot be restored, e.g. its ``_metadata`` was cut short by the crash,
  take the next lower one.) The job restores the Kafka offsets, open windows and the sinks'
  pending transactions of that checkpoint; its sinks commit what that checkpoint covered and
  abort the transactions the dead job left open under the same prefix, so read_committed
  readers see every event once.

This suite does exactly that for ``jm-kill``. With HA (the Kubernetes deployment in
``deploy/k8s``), the JobManager recovers the job itself from the latest checkpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.parse
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from confluent_kafka import (
    Consumer,
    IsolationLevel,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

# confluent_kafka.admin re-exports OffsetSpec without listing it, which mypy --strict rejects.
from confluent_kafka.admin._listoffsets import OffsetSpec

from metering import reconciliation
from metering.billing.periods import period_of
from metering.records import AUTH_FAILURE_STATUSES
from metering.settings import PipelineSettings, check_transaction_timeout
from testkit.stack import (
    Broker,
    SessionCluster,
    StackError,
    alive,
    cmdline,
    descendants,
    send_signal,
    wait_gone,
)
from testkit.traffic import Entry, SequencedEvents, parse_sequenced_request_id
from tools.readback import Record, drain
from tools.topics import (
    ROLES,
    delete_topics,
    ensure_topics,
    job_topic_flags,
    named_pipeline_topics,
)

REPO: Final = Path(__file__).resolve().parent.parent
LOCAL: Final = REPO / ".local"
DEFAULT_KAFKA_PORT: Final = 29092
DEFAULT_FLINK_REST: Final = "127.0.0.1:28081"
WINDOW_SECONDS: Final = 10
PARTITIONS: Final = 2

FULL_PLAN: Final = (
    "rescale:1-2",
    "tm-kill:during",
    "broker-restart",
    "tm-kill:after",
    "py-worker-kill",
    "broker-kill9",
    "tm-pause",
    "tm-kill:before",
    "tm-kill:after-silence",
    "jm-kill",
    "tm-kill:every-checkpoint",
    "broker-stop",
    "kill-during-recovery",
    "tm-pause-past-txn",
    "tm-kill:random",
    "tm-kill:after",
)
FAULT_KINDS: Final = frozenset(
    {
        "tm-kill:before",
        "tm-kill:during",
        "tm-kill:after",
        "tm-kill:random",
        "tm-kill:after-silence",
        "tm-kill:every-checkpoint",
        "kill-during-recovery",
        "tm-pause",
        "tm-pause-past-txn",
        "py-worker-kill",
        "broker-restart",
        "broker-kill9",
        "broker-stop",
        "jm-kill",
        "rescale:1-2",
    }
)
VANISHING_KEYS: Final = 4
"""``tm-kill:after-silence``: keys of their own that send their last events just before the
kill and never again."""
VANISHING_EVENTS: Final = 5
"""Events per vanishing key, all in the window open at the kill."""
EVERY_CHECKPOINT_KILLS: Final = 3
"""``tm-kill:every-checkpoint`` kills the TaskManager on this many completed checkpoints in a
row, each the first one the restored job completes."""
ALERT_BURST_EVENTS_OVER_MIN: Final = 10
"""An alert burst is ``auth_failure_min`` + this many refused calls: over the threshold, under
its doubling and under the high severity, so each burst window alerts exactly once."""
_PY_WORKER_MODULE: Final = "pyflink.fn_execution.beam.beam_boot"
_TERMINAL: Final = frozenset({"FAILED", "CANCELED", "FINISHED", "SUSPENDED"})
_POLL_S: Final = 0.5
_PHASE_POLL_S: Final = 0.005


class FaultsError(RuntimeError):
    """A step of the run failed (infrastructure, recovery deadline, submission)."""


# --------------------------------------------------------------------------------------------
# Configuration and results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultsConfig:
    faults: int = len(FULL_PLAN)
    duration_s: float = 300.0
    """Traffic runs at least this long; the run stretches until every fault has recovered."""
    rate: float = 40.0
    """Events per second (in records of 1 to 5 entries)."""
    seed: int = 1
    kafka_port: int = DEFAULT_KAFKA_PORT
    flink_rest: str = DEFAULT_FLINK_REST
    plan: tuple[str, ...] = ()
    """Fault kinds in order; empty: FULL_PLAN, cycled or cut to ``faults``."""
    keys: int = 256
    """Rate keys; with many keys most events open a (key, window), so every checkpoint holds
    new window state and timers."""
    checkpoint_interval_s: int = 3
    idle_timeout_s: int = 5
    out_of_orderness_s: int = 2
    recovery_timeout_s: float = 300.0
    final_timeout_s: float = 300.0
    keep_topics: bool = False
    job_args: tuple[str, ...] = ()
    """Extra ``jobs.gateway_pipeline`` flags, e.g. ("--execution-mode", "thread")."""
    alert_bursts: bool = True
    """After each recovered fault, a refused-call burst by a key of its own, which must raise
    one auth_failures alert (see ``expected_alerts``). Sent once the job has recovered: refused
    calls that reach the job after the watermark passed their window (a partition held up by a
    broker outage while the other one's events move the watermark on) raise no alert."""
    stall_after_s: float = 30.0
    """The progress reader is stalled when a partition's committed end stays ahead of what it
    read for this long without any progress on it (``StallWatch``)."""

    def effective_job_args(self) -> tuple[str, ...]:
        """``job_args``, plus the parse operator in process mode when the plan kills a Python
        worker: in thread mode the Python operators have no worker processes."""
        if "py-worker-kill" in self.fault_plan() and "--parse-execution-mode" not in self.job_args:
            return (*self.job_args, "--parse-execution-mode", "process")
        return self.job_args

    def fault_plan(self) -> list[str]:
        plan = (
            list(self.plan)
            if self.plan
            else [FULL_PLAN[i % len(FULL_PLAN)] for i in range(self.faults)]
        )
        unknown = sorted(set(plan) - FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown}; known: {sorted(FAULT_KINDS)}")
        initial_parallelism(plan)  # a rescale chain that does not add up is refused here
        return plan


def rescale_step(kind: str) -> tuple[int, int] | None:
    """(from, to) parallelism of a ``rescale:<from>-<to>`` fault; None for any other kind."""
    if not kind.startswith("rescale:"):
        return None
    low, sep, high = kind.removeprefix("rescale:").partition("-")
    if not sep or not low.isdigit() or not high.isdigit() or min(int(low), int(high)) < 1:
        raise ValueError(f"bad rescale fault {kind!r}; expected rescale:<from>-<to>")
    return int(low), int(high)


def initial_parallelism(plan: Sequence[str], default: int = PARTITIONS) -> int:
    """The parallelism the job starts at: the first rescale's ``from``, else ``default``. Each
    rescale must start from the parallelism the previous one ended at."""
    current: int | None = None
    for kind in plan:
        step = rescale_step(kind)
        if step is None:
            continue
        if current is not None and step[0] != current:
            raise ValueError(f"{kind} follows a rescale to parallelism {current}")
        current = step[1]
        if current > PARTITIONS:
            raise ValueError(f"{kind}: more subtasks than the raw topic's {PARTITIONS} partitions")
    first = next((s for s in map(rescale_step, plan) if s is not None), None)
    return first[0] if first is not None else default


def _setting_floor(name: str) -> int:
    """The ``ge`` bound of an integer PipelineSettings field."""
    for meta in PipelineSettings.model_fields[name].metadata:
        bound = getattr(meta, "ge", None)
        if isinstance(bound, int):
            return bound
    raise LookupError(f"PipelineSettings.{name} has no lower bound")


def short_transaction_flags(checkpoint_interval_s: int) -> tuple[int, int]:
    """(transaction timeout ms, expected restart s) for a run with ``tm-pause-past-txn``: the
    job's default expected restart, and the shortest sink transaction timeout the job's own
    check (``check_transaction_timeout``) accepts with it, so a pause past it fits the run.

    The restart bound must be one the run's other faults keep: a transaction a completed
    checkpoint holds is committed by the restored job, and Kafka aborts it once the timeout has
    passed, losing that checkpoint's output (the guarantee's stated limit, docs/guarantees.md).
    Late in a run the job's exponential restart delay reaches its 60 s cap, and a killed
    TaskManager's job then runs again about 85 s after the kill: a 60 s timeout lost the events
    of one checkpoint interval."""
    restart_s = int(PipelineSettings.model_fields["expected_restart_seconds"].default)
    timeout_ms = max(
        _setting_floor("transaction_timeout_ms"), (restart_s + checkpoint_interval_s + 1) * 1000
    )
    check_transaction_timeout(
        timeout_ms,
        PipelineSettings.model_fields["broker_transaction_max_timeout_ms"].default,
        checkpoint_interval_s,
        restart_s,
    )
    return timeout_ms, restart_s


@dataclass
class FaultResult:
    index: int
    kind: str
    at_s: float
    """Seconds since traffic started."""
    detail: str = ""
    recovery_s: float | None = None

    def describe(self) -> str:
        rec = (
            f"recovered in {self.recovery_s:.1f}s" if self.recovery_s is not None else "no recovery"
        )
        return f"{self.index:2d} {self.kind:<15} t+{self.at_s:6.1f}s  {self.detail}; {rec}"


@dataclass
class Verification:
    """The output topics checked against the raw topic (pure; see ``verify``)."""

    events: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: int = 0
    duplicated_ids: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    raw_duplicates: int = 0
    sequence_gaps: int = 0
    windows: int = 0
    window_mismatches: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)
    windows_emitted_twice: list[tuple[str, int]] = field(default_factory=list)
    late_corrections: int = 0
    late_events: int = 0
    dead_letters: int = 0
    reconciliation: list[str] = field(default_factory=list)
    reconciliation_checked: bool = False
    alerts: AlertCheck | None = None
    """None when the alerts topic was not read."""
    vanishing_keys: int = 0
    """Keys that went silent just before a TaskManager kill (``tm-kill:after-silence``)."""
    vanishing_windows: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)
    """(key, window start) -> (truth, got) for every window of a vanishing key."""
    vanishing_after_kill: list[str] = field(default_factory=list)
    """Events of a vanishing key with an event time after its kill (must be none)."""
    billing: BillingCheck | None = None
    """None when the billing topics were not read."""

    def vanishing_line(self) -> str:
        """What became of the vanishing keys' windows, e.g. ``vanishing keys: 4 keys, 4
        windows, all exact``."""
        head = f"vanishing keys: {self.vanishing_keys} keys, {len(self.vanishing_windows)} windows"
        differ = sorted(k for k, (truth, got) in self.vanishing_windows.items() if truth != got)
        if not self.vanishing_windows:
            text = f"{head}, none in the source"
        elif differ:
            sample = [(k, self.vanishing_windows[k]) for k in differ[:10]]
            text = f"{head}, {len(differ)} differ; (key, start): (truth, got) {sample}"
        else:
            text = f"{head}, all exact"
        if self.vanishing_after_kill:
            text += f"; {len(self.vanishing_after_kill)} events after the kill"
        return text

    def problems(self) -> list[str]:
        out: list[str] = []
        if self.vanishing_keys and (
            not self.vanishing_windows
            or self.vanishing_after_kill
            or any(truth != got for truth, got in self.vanishing_windows.values())
        ):
            out.append(self.vanishing_line())
        if self.lost:
            out.append(f"lost {len(self.lost)} events, e.g. {self.lost[:10]}")
        if self.duplicated:
            out.append(
                f"{self.duplicated} duplicate enriched events, e.g. {self.duplicated_ids[:10]}"
            )
        if self.unexpected:
            out.append(
                f"{len(self.unexpected)} enriched events not in the source: {self.unexpected[:10]}"
            )
        if self.window_mismatches:
            sample = sorted(self.window_mismatches.items())[:10]
            absent = sum(1 for _, got in self.window_mismatches.values() if got == 0)
            out.append(
                f"{len(self.window_mismatches)} of {self.windows} windows differ from ground "
                f"truth, {absent} of them absent from the usage topic; (key, start): "
                f"(truth, got) {sample}"
            )
        if self.windows_emitted_twice:
            out.append(f"windows emitted twice: {self.windows_emitted_twice[:10]}")
        if self.dead_letters:
            out.append(f"{self.dead_letters} dead letters (every source record is valid)")
        out.extend(f"reconciliation: {p}" for p in self.reconciliation)
        if self.alerts is not None:
            out.extend(f"alerts: {p}" for p in self.alerts.problems())
        if self.billing is not None:
            out.extend(f"billing: {p}" for p in self.billing.problems())
        return out


@dataclass
class Report:
    faults: list[FaultResult] = field(default_factory=list)
    events_checked: int = 0
    lost: int = 0
    duplicated: int = 0
    windows_differing: int = 0
    problems: list[str] = field(default_factory=list)
    verification: Verification | None = None
    interrupted: bool = False
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            not self.problems
            and not self.interrupted
            and self.verification is not None
            and self.lost == 0
            and self.duplicated == 0
            and self.windows_differing == 0
        )

    def line(self) -> str:
        text = (
            f"faults injected {len(self.faults)}, events checked {self.events_checked}, "
            f"lost {self.lost}, duplicated {self.duplicated}, "
            f"windows differing {self.windows_differing}"
        )
        if self.verification is not None and self.verification.vanishing_keys:
            text += "; " + self.verification.vanishing_line()
        return text


# --------------------------------------------------------------------------------------------
# Ground truth and verification (pure)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceEvent:
    key: str
    seq: int
    event_ms: int
    partition: int
    status: int = 200


def source_events(raw: Sequence[Record]) -> tuple[dict[str, SourceEvent], int, Counter[int]]:
    """request id -> event, from the raw topic as read back; also repeated ids and records per
    partition. The raw topic, not the producer's bookkeeping, is what the job had to process."""
    events: dict[str, SourceEvent] = {}
    repeated = 0
    records: Counter[int] = Counter()
    for rec in raw:
        records[rec.partition] += 1
        value = json.loads(rec.value or b"null")
        for entry in value if isinstance(value, list) else [value]:
            rid = entry["request"]["headers"]["x-request-id"]
            key, seq = parse_sequenced_request_id(rid)
            if rid in events:
                repeated += 1
                continue
            status = int(entry.get("response", {}).get("status", 200))
            events[rid] = SourceEvent(key, seq, int(entry["start_time"]), rec.partition, status)
    return events, repeated, records


def window_truth(events: dict[str, SourceEvent], window_ms: int) -> Counter[tuple[str, int]]:
    truth: Counter[tuple[str, int]] = Counter()
    for ev in events.values():
        truth[(ev.key, ev.event_ms - ev.event_ms % window_ms)] += 1
    return truth


def sequence_gaps(events: dict[str, SourceEvent]) -> int:
    """Missing sequence numbers per key in the source (producer-side loss, not the job's)."""
    seqs: defaultdict[str, set[int]] = defaultdict(set)
    for ev in events.values():
        seqs[ev.key].add(ev.seq)
    return sum(max(s) - len(s) for s in seqs.values())


AlertSlot = tuple[str, str, int]
"""(rule, rate key, window start): what an alert is about; its ``alert_id`` hashes the same."""


def expected_alerts(
    events: dict[str, SourceEvent],
    window_ms: int,
    auth_failure_min: int = PipelineSettings.model_fields["auth_failure_min"].default,
    auth_failure_ratio: float = PipelineSettings.model_fields["auth_failure_ratio"].default,
) -> set[AlertSlot]:
    """The auth_failures alerts the source events call for, from ground truth: per (key,
    window), at least ``auth_failure_min`` refused calls that are at least ``auth_failure_ratio``
    of the window's calls. (The traffic's steady keys stay far below every rule.)"""
    calls: Counter[tuple[str, int]] = Counter()
    refused: Counter[tuple[str, int]] = Counter()
    for ev in events.values():
        slot = (ev.key, ev.event_ms - ev.event_ms % window_ms)
        calls[slot] += 1
        if ev.status in AUTH_FAILURE_STATUSES:
            refused[slot] += 1
    return {
        ("auth_failures", key, start)
        for (key, start), n in refused.items()
        if n >= auth_failure_min and n >= auth_failure_ratio * calls[(key, start)]
    }


@dataclass
class AlertCheck:
    """The alerts topic against the expected alerts (pure; see ``check_alerts``)."""

    expected: int = 0
    alerts: int = 0
    missing: list[AlertSlot] = field(default_factory=list)
    unexpected: list[AlertSlot] = field(default_factory=list)
    repeated: int = 0
    """Alerts sent again with the same ``alert_id`` (at-least-once delivery; allowed)."""
    conflicting_ids: list[tuple[AlertSlot, str, list[str]]] = field(default_factory=list)
    """(slot, severity, ids): one alert sent under different ids (not allowed)."""

    def problems(self) -> list[str]:
        out: list[str] = []
        if self.missing:
            out.append(
                f"{len(self.missing)} of {self.expected} expected missing: {self.missing[:5]}"
            )
        if self.unexpected:
            out.append(f"{len(self.unexpected)} unexpected: {self.unexpected[:5]}")
        if self.conflicting_ids:
            out.append(f"duplicates with different alert ids: {self.conflicting_ids[:5]}")
        return out


def check_alerts(expected: set[AlertSlot], alerts: Sequence[dict[str, Any]]) -> AlertCheck:
    """Every expected alert present; no other alert; an alert sent more than once always with
    the same ``alert_id`` (per slot, severity and status: an incident's escalation and its
    close have ids of their own; a burst's close names the burst's window)."""
    ids: defaultdict[tuple[AlertSlot, str], set[str]] = defaultdict(set)
    sent: Counter[str] = Counter()
    for a in alerts:
        slot = (str(a["rule"]), str(a["rate_key"]), int(a["window_start"]))
        ids[(slot, f"{a.get('severity')}/{a.get('status', 'open')}")].add(str(a["alert_id"]))
        sent[str(a["alert_id"])] += 1
    seen = {slot for slot, _ in ids}
    return AlertCheck(
        expected=len(expected),
        alerts=len(alerts),
        missing=sorted(expected - seen),
        unexpected=sorted(seen - expected),
        repeated=sum(n - 1 for n in sent.values()),
        conflicting_ids=sorted(
            (slot, severity, sorted(found))
            for (slot, severity), found in ids.items()
            if len(found) > 1
        ),
    )


FAULTS_PLAN = "faults"
FAULTS_INCLUDED_UNITS = 16
"""Small enough that every steady key crosses several thresholds in a run (about 47 calls
each at the default rate, duration and keys)."""


def billing_catalog(keys: int) -> str:
    """Every steady key ("fk..") on one plan with a quota, from long before the run; the other
    keys (bursts, vanishing) have no subscription: counted, not priced."""
    subs = "".join(
        f'[[subscriptions]]\nsubject = "fk{i:02d}"\nplan_id = "{FAULTS_PLAN}"\neffective_from = 0\n'
        for i in range(keys)
    )
    return (
        f'[[plans]]\nid = "{FAULTS_PLAN}"\nname = "Faults"\n'
        f'included_units = {FAULTS_INCLUDED_UNITS}\noverage = "0.001"\n' + subs
    )


def thresholds_by_hand(units: int, included: int) -> set[int]:
    """50, 80 and 100 % of the included units, then every further 100 %: those reached."""
    out = {p for p in (50, 80, 100) if units * 100 >= included * p}
    pct = 200
    while units * 100 >= included * pct:
        out.add(pct)
        pct += 100
    return out


@dataclass
class BillingCheck:
    """The billing topics against ground truth from the raw topic (pure; ``check_billing``)."""

    periods: int = 0
    signals: int = 0
    mismatches: dict[str, tuple[int, int]] = field(default_factory=dict)
    """<subject>@<period> -> (calls in the source, calls in its latest period-usage record)."""
    repeated_signals: int = 0
    missing_thresholds: list[tuple[str, int]] = field(default_factory=list)
    unexpected_thresholds: list[tuple[str, int]] = field(default_factory=list)

    def problems(self) -> list[str]:
        out: list[str] = []
        if self.mismatches:
            out.append(
                f"{len(self.mismatches)} periods differ: {sorted(self.mismatches.items())[:5]}"
            )
        if self.repeated_signals:
            out.append(f"{self.repeated_signals} quota signals written twice")
        if self.missing_thresholds:
            out.append(f"thresholds missing: {self.missing_thresholds[:5]}")
        if self.unexpected_thresholds:
            out.append(f"thresholds not reached but signalled: {self.unexpected_thresholds[:5]}")
        return out

    def line(self) -> str:
        return (
            f"billing: {self.periods} subject periods, {len(self.mismatches)} differ; "
            f"{self.signals} quota signals, {self.repeated_signals} written twice, "
            f"{len(self.missing_thresholds)} missing, {len(self.unexpected_thresholds)} unexpected"
        )


def check_billing(
    events: Mapping[str, SourceEvent],
    period_usage: Sequence[dict[str, Any]],
    quota_signals: Sequence[dict[str, Any]],
    subscribed: set[str],
) -> BillingCheck:
    """Per (subject, period) the latest period usage holds every source call (priced for a
    subscribed key, unpriced otherwise); every threshold the final units reach is signalled
    once, and no other."""
    truth: Counter[str] = Counter(f"{ev.key}@{period_of(ev.event_ms)}" for ev in events.values())
    latest = {f"{u['subject']}@{u['period']}": u for u in period_usage}
    c = BillingCheck(periods=len(truth), signals=len(quota_signals))
    for key in set(truth) | set(latest):
        got = latest.get(key, {})
        subject = key.rpartition("@")[0]
        calls = got.get("calls", 0) if subject in subscribed else got.get("unpriced_calls", 0)
        if calls != truth[key] or got.get("calls", 0) + got.get("unpriced_calls", 0) != truth[key]:
            c.mismatches[key] = (truth[key], calls)
    ids = Counter(str(q["signal_id"]) for q in quota_signals)
    c.repeated_signals = sum(n - 1 for n in ids.values())
    want = {
        (key, pct)
        for key, n in truth.items()
        if key.rpartition("@")[0] in subscribed
        for pct in thresholds_by_hand(n, FAULTS_INCLUDED_UNITS)
    }
    got_thresholds = {
        (f"{q['subject']}@{q['period']}", int(q["threshold_percent"]))
        for q in quota_signals
        if q["kind"] == "threshold"
    }
    c.missing_thresholds = sorted(want - got_thresholds)
    c.unexpected_thresholds = sorted(got_thresholds - want)
    return c


def _json_values(records: Sequence[Record]) -> list[dict[str, Any]]:
    return [json.loads(r.value or b"null") for r in records]


def verify(
    raw: Sequence[Record],
    enriched: Sequence[Record],
    usage: Sequence[Record],
    dead_letters: Sequence[Record],
    reconciliation: Sequence[Record] | None,
    window_ms: int = WINDOW_SECONDS * 1000,
    alerts: Sequence[Record] | None = None,
    vanishing: Mapping[str, int] | None = None,
) -> Verification:
    """The outputs against ground truth from ``raw``. ``vanishing``: key -> epoch ms of the
    TaskManager kill it went silent before; their windows are also reported on their own."""
    events, repeated, raw_records = source_events(raw)
    v = Verification(events=len(events), raw_duplicates=repeated)
    if alerts is not None:
        v.alerts = check_alerts(expected_alerts(events, window_ms), _json_values(alerts))
    v.sequence_gaps = sequence_gaps(events)

    enriched_values = _json_values(enriched)
    found = Counter(str(e.get("request_id")) for e in enriched_values)
    v.lost = sorted(set(events) - set(found))
    v.duplicated = sum(n - 1 for n in found.values() if n > 1)
    v.duplicated_ids = sorted(rid for rid, n in found.items() if n > 1)
    v.unexpected = sorted(set(found) - set(events))

    truth = window_truth(events, window_ms)
    got: Counter[tuple[str, int]] = Counter()
    emitted: Counter[tuple[str, int]] = Counter()
    for u in _json_values(usage):
        slot = (str(u["rate_key"]), int(u["window_start"]))
        got[slot] += int(u["count"])
        kind = u.get("kind", "window")
        if kind == "window":
            emitted[slot] += 1
        else:
            v.late_corrections += 1
            v.late_events += int(u["count"])
    v.windows = len(truth)
    v.window_mismatches = {
        k: (truth.get(k, 0), got.get(k, 0))
        for k in set(truth) | set(got)
        if truth.get(k, 0) != got.get(k, 0)
    }
    v.windows_emitted_twice = sorted(k for k, n in emitted.items() if n > 1)
    if vanishing:
        v.vanishing_keys = len(vanishing)
        v.vanishing_windows = {
            k: (truth.get(k, 0), got.get(k, 0)) for k in set(truth) | set(got) if k[0] in vanishing
        }
        v.vanishing_after_kill = sorted(
            rid
            for rid, ev in events.items()
            if ev.key in vanishing and ev.event_ms >= vanishing[ev.key]
        )
    v.dead_letters = len(dead_letters)

    if reconciliation is not None:
        enriched_by_partition = Counter(int(e.get("source_partition", -1)) for e in enriched_values)
        raw_entries = Counter(ev.partition for ev in events.values())
        v.reconciliation, v.reconciliation_checked = _check_reconciliation(
            _json_values(reconciliation),
            raw_records,
            raw_entries,
            repeated,
            enriched_by_partition,
            len(dead_letters),
        )
    return v


_RECON_FIELDS: Final = (
    "source_partition",
    "interval_start",
    "records_in",
    "entries_in",
    "enriched_out",
)


def _check_reconciliation(
    reports: list[dict[str, Any]],
    raw_records: Counter[int],
    raw_entries: Counter[int],
    raw_repeated: int,
    enriched_by_partition: Counter[int],
    dead_letters: int,
) -> tuple[list[str], bool]:
    """Per source partition, summed over the latest report of each interval: records_in and
    entries_in equal the raw topic's, entries_in == enriched_out + dead_lettered +
    deduplicated, and enriched_out equals what the enriched topic holds for that partition."""
    if not reports:
        return ["no reconciliation records"], True
    if any(any(f not in r for f in _RECON_FIELDS) for r in reports):
        return [], False  # a format this check does not know; reported as not checked
    sums = reconciliation.totals_by_partition(reports)
    problems: list[str] = []
    for p in sorted(set(sums) | set(raw_records)):
        s = sums.get(p, Counter())
        if s["records_in"] != raw_records.get(p, 0):
            problems.append(f"partition {p}: records_in {s['records_in']}, raw {raw_records[p]}")
        if raw_repeated == 0 and s["entries_in"] != raw_entries.get(p, 0):
            problems.append(f"partition {p}: entries_in {s['entries_in']}, raw {raw_entries[p]}")
        balance = s["enriched_out"] + s["dead_lettered"] + s["deduplicated"]
        if s["entries_in"] != balance:
            problems.append(
                f"partition {p}: entries_in {s['entries_in']} != enriched_out + dead_lettered + "
                f"deduplicated = {balance}"
            )
        if s["enriched_out"] != enriched_by_partition.get(p, 0):
            problems.append(
                f"partition {p}: enriched_out {s['enriched_out']}, enriched topic "
                f"{enriched_by_partition.get(p, 0)}"
            )
    total_dead = sum(s["dead_lettered"] for s in sums.values())
    if total_dead != dead_letters:
        problems.append(f"dead_lettered {total_dead}, dead-letter topic {dead_letters}")
    return problems, True


# --------------------------------------------------------------------------------------------
# Traffic
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrafficPlan:
    """Which partitions get records when: one starts late, the other goes idle for a while."""

    rate: float
    late_partition: int
    late_start_s: float
    idle_partition: int
    idle_from_s: float
    idle_until_s: float

    @classmethod
    def for_run(cls, duration_s: float, rate: float, idle_timeout_s: int) -> TrafficPlan:
        idle_from = 0.5 * duration_s
        return cls(
            rate=rate,
            late_partition=1,
            late_start_s=max(2.0 * idle_timeout_s, 0.15 * duration_s),
            idle_partition=0,
            idle_from_s=idle_from,
            idle_until_s=idle_from + max(3.0 * idle_timeout_s, 0.08 * duration_s),
        )

    def partitions(self, t: float) -> list[int]:
        parts = list(range(PARTITIONS))
        if t < self.late_start_s:
            parts.remove(self.late_partition)
        if self.idle_from_s <= t < self.idle_until_s and len(parts) > 1:
            parts.remove(self.idle_partition)
        return parts

    def describe(self) -> str:
        return (
            f"partition {self.late_partition} starts at t+{self.late_start_s:.0f}s, partition "
            f"{self.idle_partition} idle t+{self.idle_from_s:.0f}s..t+{self.idle_until_s:.0f}s"
        )


class Traffic(threading.Thread):
    """Produces sequenced events in real time to explicit partitions; records deliveries."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        plan: TrafficPlan,
        keys: int,
        seed: int,
        client_log: logging.Logger,
        burst_events: int = 0,
    ) -> None:
        super().__init__(name="faults-traffic", daemon=True)
        self.bootstrap = bootstrap
        self.topic = topic
        self.plan = plan
        self.events = SequencedEvents([f"fk{i:02d}" for i in range(keys)], seed)
        # Each burst is a key of its own ("fb<n>"): no history, so no baseline rule can fire
        # for it, and its window's calls are all refused.
        self.burst_events = burst_events
        self.bursts_requested = 0
        self.bursts_sent = 0
        self.requested: list[tuple[list[list[Entry]], threading.Event]] = []
        """Batches the main thread asked for (``send_batches``), sent at the next turn."""
        self.rng = random.Random(seed * 7919 + 1)
        self.client_log = client_log
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.started_at = 0.0
        self.produced = 0
        self.records = 0
        self.delivered = 0
        self.failed: list[str] = []
        self.by_partition: Counter[int] = Counter()
        self.unflushed = 0
        self.error: BaseException | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self.started_at if self.started_at else 0.0

    def run(self) -> None:
        try:
            self._produce()
        except BaseException as e:  # reported by the main thread
            self.error = e

    def _on_delivery(self, ids: list[str], partition: int) -> Callable[[Any, Any], None]:
        def done(err: Any, _msg: Any) -> None:
            with self.lock:
                if err is None:
                    self.delivered += len(ids)
                    self.by_partition[partition] += len(ids)
                else:
                    self.failed.extend(ids)

        return done

    def _produce(self) -> None:
        producer = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 10,
                # Keep retrying through a broker restart; what still fails is reported.
                "message.timeout.ms": 600_000,
                "client.id": "faults-traffic",
                "logger": self.client_log,
            }
        )
        self.started_at = time.monotonic()
        last = self.started_at
        due = 0.0
        try:
            while not self.stop_event.is_set():
                now = time.monotonic()
                due += self.plan.rate * (now - last)
                last = now
                n = int(due)
                due -= n
                parts = self.plan.partitions(now - self.started_at)
                while n > 0:
                    size = min(n, self.rng.randint(1, 5))
                    n -= size
                    partition = self.rng.choice(parts)
                    now_ms = int(time.time() * 1000)
                    entries = []
                    ids = []
                    for _ in range(size):
                        entry, key, seq = self.events.next_entry(now_ms - self.rng.randint(0, 200))
                        entries.append(entry)
                        ids.append(f"{key}-{seq}")
                    # APISIX batches arrive as arrays; batch_max_size 1 routes as bare objects.
                    value: Any = entries if size > 1 or self.rng.random() < 0.5 else entries[0]
                    payload = json.dumps(value, separators=(",", ":")).encode()
                    while True:
                        try:
                            producer.produce(
                                self.topic,
                                value=payload,
                                partition=partition,
                                on_delivery=self._on_delivery(ids, partition),
                            )
                            break
                        except BufferError:
                            producer.poll(0.5)
                    with self.lock:
                        self.produced += size
                        self.records += 1
                if self.bursts_sent < self.bursts_requested:
                    self._burst(producer, parts)
                self._send_requested(producer, parts)
                producer.poll(0)
                self.stop_event.wait(0.05)
        finally:
            self.unflushed = producer.flush(120)

    def _burst(self, producer: Producer, parts: list[int]) -> None:
        """One APISIX batch of refused calls by one key, all in one window: sent only early in
        a window (1 to 5 s in), so the batch cannot straddle a window boundary."""
        now_ms = int(time.time() * 1000)
        into = now_ms % (WINDOW_SECONDS * 1000)
        if not 1000 <= into <= 5000:
            return
        key = self.burst_key(self.bursts_sent)
        self.bursts_sent += 1
        events = SequencedEvents([key], self.rng.randrange(1 << 30))
        entries = []
        ids = []
        refused = min(AUTH_FAILURE_STATUSES)
        for i in range(self.burst_events):
            entry, _, seq = events.next_entry(now_ms + i)
            entry["response"]["status"] = refused
            entries.append(entry)
            ids.append(f"{key}-{seq}")
        partition = self.rng.choice(parts)
        payload = json.dumps(entries, separators=(",", ":")).encode()
        producer.produce(
            self.topic, value=payload, partition=partition,
            on_delivery=self._on_delivery(ids, partition),
        )  # fmt: skip
        with self.lock:
            self.produced += len(entries)
            self.records += 1

    def send_batches(self, batches: Sequence[Sequence[Entry]]) -> threading.Event:
        """Produce each batch as one APISIX batch record (to a partition that gets traffic now)
        at the thread's next turn; the event is set once every record's delivery is known (a
        failed one lists its ids in ``failed``)."""
        done = threading.Event()
        with self.lock:
            self.requested.append(([list(b) for b in batches if b], done))
        return done

    def _send_requested(self, producer: Producer, parts: list[int]) -> None:
        with self.lock:
            requested, self.requested = self.requested, []
        for batches, done in requested:
            if not batches:
                done.set()
            pending = [len(batches)]
            for entries in batches:
                ids = [str(e["request"]["headers"]["x-request-id"]) for e in entries]
                partition = self.rng.choice(parts)
                producer.produce(
                    self.topic,
                    value=json.dumps(entries, separators=(",", ":")).encode(),
                    partition=partition,
                    on_delivery=self._counted(self._on_delivery(ids, partition), pending, done),
                )
                with self.lock:
                    self.produced += len(entries)
                    self.records += 1

    def _counted(
        self, inner: Callable[[Any, Any], None], pending: list[int], done: threading.Event
    ) -> Callable[[Any, Any], None]:
        """``inner``, then ``done`` set once the last of ``pending[0]`` records is known."""

        def callback(err: Any, msg: Any) -> None:
            inner(err, msg)
            with self.lock:
                pending[0] -= 1
                last = pending[0] == 0
            if last:
                done.set()

        return callback

    @staticmethod
    def burst_key(n: int) -> str:
        return f"fb{n}"

    def request_burst(self) -> str:
        """Ask for the next burst (sent within a window's first seconds); its key."""
        with self.lock:
            self.bursts_requested += 1
            return self.burst_key(self.bursts_requested - 1)

    def snapshot(self) -> tuple[int, int, int]:
        with self.lock:
            return self.produced, self.delivered, len(self.failed)


@dataclass
class StallWatch:
    """Decides, without any broker, whether an incremental reader is stalled (pure).

    Per partition, ``reached`` is how far the reader is known to have read: the offset after
    its last record, or the offset of an end-of-partition event (for a read_committed reader
    that is the last stable offset, past aborted records and transaction markers). The reader
    is stalled on a partition whose committed end (from the broker) stays above ``reached``
    for ``stall_after_s`` while ``reached`` does not move: committed data it does not fetch.
    A reader that merely has not been polled is not judged: only observations count.
    """

    stall_after_s: float
    reached: dict[int, int] = field(default_factory=dict)
    behind_since: dict[int, float] = field(default_factory=dict)

    def progress(self, partition: int, offset: int) -> bool:
        """The reader got a record at ``offset - 1`` or reached the end at ``offset``; whether
        that is further than before."""
        if offset <= self.reached.get(partition, 0):
            return False
        self.reached[partition] = offset
        self.behind_since.pop(partition, None)
        return True

    def stalled(self, now: float, committed_ends: dict[int, int]) -> list[int]:
        """Partitions stalled at ``now`` given the broker's committed ends (read_committed
        end offsets) observed at ``now``."""
        out = []
        for p, end in committed_ends.items():
            if end <= self.reached.get(p, 0):
                self.behind_since.pop(p, None)
                continue
            since = self.behind_since.setdefault(p, now)
            if now - since >= self.stall_after_s:
                out.append(p)
        return sorted(out)

    def restart(self, now: float) -> None:
        """A new reader starts from ``reached``: its own time to show progress."""
        for p in self.behind_since:
            self.behind_since[p] = now


class CommittedIds:
    """An incremental read_committed reader of the enriched topic: request ids seen so far.

    It must survive every fault the run injects. A librdkafka consumer with assigned partitions
    can stop fetching after a broker restart without any error (librdkafka issue 5153; seen in
    ``make faults`` on 2026-12-05: stuck at 2,546 of 17,096 events). So every few seconds it
    compares what it read with the topic's committed ends (``StallWatch``); a stalled consumer
    is replaced by a new one that starts where the old one stopped, and if that does not help
    either, the run fails with the reader named as the cause.
    """

    CHECK_EVERY_S: Final = 2.0
    MAX_RESTARTS_WITHOUT_PROGRESS: Final = 3

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        client_log: logging.Logger,
        stall_after_s: float = 30.0,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.client_log = client_log
        self.log = log or (lambda _m: None)
        self.ids: Counter[str] = Counter()
        self.watch = StallWatch(stall_after_s)
        self.restarts = 0
        self.restarts_without_progress = 0
        self.errors = 0
        admin_conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": client_log}
        self._admin = AdminClient(admin_conf)
        self._next_check = 0.0
        self._pending: tuple[float, dict[TopicPartition, Any]] | None = None
        self.committed_ends: dict[int, int] = {}
        self.consumer = self._consumer(dict.fromkeys(range(PARTITIONS), 0))

    def _consumer(self, start: dict[int, int]) -> Consumer:
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"faults-progress-{secrets.token_hex(4)}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
                "logger": self.client_log,
            }
        )
        consumer.assign([TopicPartition(self.topic, p, o) for p, o in sorted(start.items())])
        return consumer

    def poll(self, budget_s: float = 1.0) -> None:
        deadline = time.monotonic() + budget_s
        while time.monotonic() < deadline:
            msgs = self.consumer.consume(num_messages=5000, timeout=0.2)
            for m in msgs:
                partition, offset, err = m.partition(), m.offset(), m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        if (
                            partition is not None
                            and offset is not None
                            and self.watch.progress(partition, offset)
                        ):
                            self.restarts_without_progress = 0
                    else:
                        self.errors += 1
                        self.client_log.warning("progress reader: %s", err)
                    continue
                value = json.loads(m.value() or b"null")
                self.ids[str(value.get("request_id"))] += 1
                if partition is not None and offset is not None:
                    self.watch.progress(partition, offset + 1)
                    self.restarts_without_progress = 0
            if not msgs:
                break
        self._check()

    def _check(self) -> None:
        """Judge the reader by the committed ends; the request is asynchronous, so a broker
        that is down delays the judgement, never the caller."""
        now = time.monotonic()
        if self._pending is None:
            if now >= self._next_check:
                request = {
                    TopicPartition(self.topic, p): OffsetSpec.latest() for p in range(PARTITIONS)
                }
                futures = self._admin.list_offsets(
                    request, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=10
                )
                self._pending = (now, futures)
            return
        asked_at, futures = self._pending
        if not all(f.done() for f in futures.values()):
            return
        self._pending = None
        self._next_check = now + self.CHECK_EVERY_S
        try:
            self.committed_ends = {tp.partition: f.result().offset for tp, f in futures.items()}
        except KafkaException:
            return  # the broker is down or busy: nothing to judge the reader by
        # Judged as of the request: what the reader reached since then only helps it.
        stalled = self.watch.stalled(asked_at, self.committed_ends)
        if not stalled:
            return
        if self.restarts_without_progress >= self.MAX_RESTARTS_WITHOUT_PROGRESS:
            raise FaultsError(
                f"progress reader of {self.topic} stalled on partitions {stalled} at "
                f"{self.watch.reached} (committed ends {self.committed_ends}) through "
                f"{self.restarts_without_progress} new consumers"
            )
        self.restarts += 1
        self.restarts_without_progress += 1
        self.log(
            f"progress reader stalled on partitions {stalled} at {self.watch.reached} while "
            f"the committed ends are {self.committed_ends}; new consumer from there"
        )
        with suppress(KafkaException, RuntimeError):
            self.consumer.close()
        self.consumer = self._consumer({p: self.watch.reached.get(p, 0) for p in range(PARTITIONS)})
        self.watch.restart(now)

    def caught_up(self) -> bool:
        """Read everything committed as of the last check."""
        return bool(self.committed_ends) and all(
            end <= self.watch.reached.get(p, 0) for p, end in self.committed_ends.items()
        )

    @property
    def total(self) -> int:
        return sum(self.ids.values())

    def close(self) -> None:
        self.consumer.close()


def _end_offsets(
    admin: AdminClient, topics: Sequence[str], level: IsolationLevel, timeout_s: float = 30
) -> dict[tuple[str, int], int]:
    request = {TopicPartition(t, p): OffsetSpec.latest() for t in topics for p in range(PARTITIONS)}
    futures = admin.list_offsets(request, isolation_level=level, request_timeout=timeout_s)
    return {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}


def stuck_transactions(
    bootstrap: str, topics: Sequence[str], client_log: logging.Logger, timeout_s: float
) -> list[str]:
    """Partitions whose read_committed end (last stable offset) does not reach, within
    ``timeout_s``, the high watermark they had when called: a transaction left open there
    blocks every read_committed reader. Empty when every transaction got committed or aborted.
    """
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": client_log}
    admin = AdminClient(conf)
    deadline = time.monotonic() + timeout_s
    high: dict[tuple[str, int], int] | None = None
    stable: dict[tuple[str, int], int] = {}
    while True:
        try:
            if high is None:
                high = _end_offsets(admin, topics, IsolationLevel.READ_UNCOMMITTED)
            stable = _end_offsets(admin, topics, IsolationLevel.READ_COMMITTED)
        except KafkaException as e:
            if time.monotonic() > deadline:
                return [f"offsets not available: {e}"]
            time.sleep(_POLL_S)
            continue
        behind = sorted(tp for tp, end in high.items() if stable[tp] < end)
        if not behind:
            return []
        if time.monotonic() > deadline:
            return [
                f"{t}[{p}]: last stable offset {stable[(t, p)]} < high watermark {high[(t, p)]}"
                for t, p in behind
            ]
        time.sleep(_POLL_S)


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def _checkpoint_dirs(root: Path) -> dict[int, bool]:
    """chk-<n> directories of one job: n -> completed (has _metadata)."""
    out: dict[int, bool] = {}
    try:
        entries = list(os.scandir(root))
    except OSError:
        return out
    for e in entries:
        if e.name.startswith("chk-") and e.name[4:].isdigit():
            out[int(e.name[4:])] = os.path.exists(os.path.join(e.path, "_metadata"))
    return out


@dataclass
class CheckpointKills:
    """When ``tm-kill:every-checkpoint`` kills (pure): on the first checkpoint that completes
    after the previous kill, ``kills`` times in a row.

    ``seen_at`` is when each ``chk-<n>`` directory was first seen. A checkpoint counts only if
    its directory appeared after the previous kill (after the fault began, for the first): one
    the dying job completed (its acks were in before the kill) is not the restored job's.
    """

    kills: int
    since: float
    """Monotonic time of the previous kill (of the fault's start, before the first)."""
    killed: list[int] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return len(self.killed) >= self.kills

    def due(self, dirs: dict[int, bool], seen_at: dict[int, float]) -> int | None:
        """The checkpoint to kill on now, or None to keep waiting."""
        if self.finished:
            return None
        done = [
            n
            for n, complete in dirs.items()
            if complete
            and seen_at.get(n, self.since) > self.since
            and n > max(self.killed, default=0)
        ]
        return max(done, default=None)

    def record(self, checkpoint: int, at: float) -> None:
        self.killed.append(checkpoint)
        self.since = at


def restoring_tasks(job: dict[str, Any]) -> int:
    """Tasks of a job (REST ``/jobs/<id>``) that are INITIALIZING: deployed on a TaskManager
    and restoring their state, the moment ``kill-during-recovery`` kills again."""
    return sum(int(v.get("tasks", {}).get("INITIALIZING", 0)) for v in job.get("vertices", []))


def tm_kill_phase(kind: str) -> str:
    """The phase of a ``tm-kill:<phase>`` fault (``after-silence``, ``during``, ...); "" for any
    other kind."""
    return kind.split(":", 1)[1] if kind.startswith("tm-kill:") else ""


# --- tm-kill:after-silence (pure parts) ------------------------------------------------------

SILENCE_SEND_INTO_MS: Final = (1000, 4500)
"""Where in a window (ms into it) the vanishing keys send: late enough that none of their event
times falls into the previous window, early enough that the checkpoint covering them completes,
and its output is read, well before their window can close."""


def vanishing_keys(index: int, n: int = VANISHING_KEYS) -> list[str]:
    """The keys that go silent before fault ``index``: their own ("fv<index>k<i>"), used by no
    other traffic (steady keys are "fk..", alert bursts "fb..")."""
    return [f"fv{index}k{i}" for i in range(n)]


def silence_send_moment(
    trigger_ms: int,
    interval_ms: int,
    lead_ms: int,
    window_ms: int,
    into: tuple[int, int] = SILENCE_SEND_INTO_MS,
) -> int | None:
    """When to send the vanishing keys' events, for a checkpoint triggered at ``trigger_ms``
    (epoch ms): ``lead_ms`` before the next one is due, so they are among the last records
    before its barrier, if that moment lies ``into`` its window; else None (wait for the next
    checkpoint: with an interval shorter than ``into`` is wide, one always fits a window)."""
    at = trigger_ms + interval_ms - lead_ms
    return at if into[0] <= at % window_ms <= into[1] else None


def silence_kill_deadline(
    window_start: int, window_ms: int, out_of_orderness_ms: int, margin_ms: int = 1000
) -> int:
    """The latest epoch ms at which a kill still finds the window starting at ``window_start``
    open. The watermark trails the newest event time by the out-of-orderness, the traffic's
    event times are never ahead of the wall clock by more than a few ms, and the window closes
    once the watermark reaches its end: until end + out-of-orderness, less ``margin_ms``."""
    return window_start + window_ms + out_of_orderness_ms - margin_ms


def silent_events(
    keys: Sequence[str], per_key: int, now_ms: int, window_ms: int, seed: int
) -> list[tuple[str, list[Entry]]]:
    """Per key, its ``per_key`` sequenced events (request ids <key>-1, <key>-2, ...), with event
    times in the last 200 ms before ``now_ms`` but not before its window: all in the window
    ``now_ms`` is in."""
    rng = random.Random(seed)
    start = now_ms - now_ms % window_ms
    out: list[tuple[str, list[Entry]]] = []
    for key in keys:
        events = SequencedEvents([key], rng.randrange(1 << 30))
        times = sorted(max(start, now_ms - rng.randint(0, 200)) for _ in range(per_key))
        out.append((key, [events.next_entry(t)[0] for t in times]))
    return out


@dataclass
class Silence:
    """One ``tm-kill:after-silence`` fault: keys that sent their last events just before the
    TaskManager kill."""

    index: int
    keys: list[str]
    window_start: int
    ids: list[str]
    sent_ms: int
    killed_ms: int = 0
    committed: bool = False
    """The enriched topic held all their events at the kill: a completed checkpoint covers
    them, so their window's state (and timer) came back from it, not from a replay."""
    emitted_s: float | None = None
    """Seconds from the kill until the usage topic was seen holding all their windows."""
    counts: dict[str, int] = field(default_factory=dict)
    """Key -> its window's count in the usage topic then."""

    def describe(self) -> str:
        start = self.window_start
        sent, killed = (self.sent_ms - start) / 1000, (self.killed_ms - start) / 1000
        head = (
            f"fault {self.index}: vanishing keys {self.keys[0]}..{self.keys[-1]}, window "
            f"{start}..{start + WINDOW_SECONDS * 1000}, sent at +{sent:.1f}s, killed at "
            f"+{killed:.1f}s"
            f" ({'committed' if self.committed else 'not yet committed'} at the kill)"
        )
        if self.emitted_s is None:
            return head + "; windows not seen in the usage topic after recovery"
        return (
            f"{head}; windows in the usage topic {self.emitted_s:.1f}s after the kill, counts "
            f"{[self.counts[k] for k in self.keys]}"
        )


class Harness:
    def __init__(self, cfg: FaultsConfig, log: Callable[[str], None]) -> None:
        self.cfg = cfg
        self._log = log
        self.rng = random.Random(cfg.seed)
        self.run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-s{cfg.seed}"
        self.run_dir = LOCAL / "faults" / self.run_id
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.client_log = logging.getLogger(f"testkit.faults.clients.{self.run_id}")
        self.client_log.propagate = False
        self.client_log.setLevel(logging.INFO)
        self._client_handler = logging.FileHandler(self.run_dir / "kafka-clients.log")
        self.client_log.addHandler(self._client_handler)
        # The scripts' output only in errors: this run's log is about the faults.
        self.broker = Broker(cfg.kafka_port, self.log, echo=False)
        self.cluster = SessionCluster(
            cfg.flink_rest, secrets.token_hex(32), log=self.log, echo=False
        )
        self.topics = {role: f"faults.{self.run_id}.{role}" for role in ROLES}
        # Read by the TaskManagers, which run on this machine.
        self.billing_catalog = self.run_dir / "billing-catalog.toml"
        self.billing_catalog.write_text(billing_catalog(cfg.keys))
        self.plan = TrafficPlan.for_run(cfg.duration_s, cfg.rate, cfg.idle_timeout_s)
        faults = cfg.fault_plan()
        self.parallelism = initial_parallelism(faults)
        # A pause past the sinks' transaction timeout must fit the run: the shortest timeout
        # the job accepts, for the whole run (a restored job keeps its sinks' settings).
        self.transaction: tuple[int, int] | None = (
            short_transaction_flags(cfg.checkpoint_interval_s)
            if "tm-pause-past-txn" in faults
            else None
        )
        self.traffic: Traffic | None = None
        self.progress: CommittedIds | None = None
        self.job_id: str | None = None
        self.job_ids: list[str] = []
        self.paused: list[int] = []
        self.orphan_candidates: list[tuple[int, list[str]]] = []
        self.orphans_killed = 0
        self.supervised = 0
        """TaskManagers started because none ran (see ``_supervise``)."""
        self.silences: list[Silence] = []
        self.vanishing: dict[str, int] = {}
        """Vanishing key -> epoch ms of the kill it went silent before (``Silence``)."""
        self.problems: list[str] = []
        self.t_start = time.monotonic()

    def log(self, message: str) -> None:
        self._log(f"[{time.monotonic() - self.t_start:6.1f}s] {message}")

    def now_s(self) -> float:
        return self.traffic.elapsed() if self.traffic is not None else 0.0

    # -- infrastructure ------------------------------------------------------------------------

    def start(self) -> None:
        # The cluster first: one already answering (unknown hash key) ends the run before a
        # broker is started for it. Both are stopped in teardown if started here.
        self.cluster.ensure(reuse=False, hint=" or choose --flink-rest")
        self.broker.ensure()
        ensure_topics(
            self.broker.bootstrap,
            named_pipeline_topics(self.topics, PARTITIONS),
        )
        self.log(f"topics faults.{self.run_id}.*; logs in {self.run_dir}")

    def teardown(self, success: bool) -> None:
        with _shielded():
            if self.traffic is not None and self.traffic.is_alive():
                self.traffic.stop_event.set()
                self.traffic.join(150)
            if self.paused:
                send_signal(self.paused, signal.SIGCONT)
                self.paused = []
            self.reap_orphans()
            if self.progress is not None:
                self.progress.close()
            if self.job_id is not None and self.cluster.answering():
                try:
                    if self.cluster.api.job(self.job_id)["state"] not in _TERMINAL:
                        self.log(f"cancelling job {self.job_id}")
                        self.cluster.api.call("PATCH", f"/jobs/{self.job_id}?mode=cancel")
                except (urllib.error.URLError, OSError, ValueError, KeyError) as e:
                    self.log(f"could not cancel job {self.job_id}: {e}")
            self.cluster.release()
            if not success or self.cfg.keep_topics:
                self.log(
                    f"kept for inspection: topics faults.{self.run_id}.* (broker state in "
                    f".local/kafka-{self.cfg.kafka_port}), checkpoints of jobs {self.job_ids} in "
                    f"{self.cluster.checkpoints}, logs in {self.run_dir} and "
                    f"{self.cluster.state / 'log'}"
                )
            else:
                try:
                    delete_topics(self.broker.bootstrap, self.topics.values(), timeout_s=30)
                    for job in self.job_ids:
                        _remove_tree(self.cluster.checkpoints / job)
                except Exception as e:  # cleanup only
                    self.log(f"cleanup of topics/checkpoints failed: {e}")
            self.broker.release()
            self.client_log.removeHandler(self._client_handler)
            self._client_handler.close()

    # -- the job -------------------------------------------------------------------------------

    def job_flags(self) -> list[str]:
        flags = [
            "--bootstrap-servers", self.broker.bootstrap,
            *job_topic_flags(self.topics),
            "--startup-mode", "earliest-offset",
            "--group-id", f"faults-{self.run_id}",
            "--transactional-id-prefix", f"faults-{self.run_id}",
            "--checkpoint-interval-seconds", str(self.cfg.checkpoint_interval_s),
            "--idle-timeout-seconds", str(self.cfg.idle_timeout_s),
            "--out-of-orderness-seconds", str(self.cfg.out_of_orderness_s),
            "--window-seconds", str(WINDOW_SECONDS),
            "--parallelism", str(self.parallelism),
            "--job-name", f"faults-{self.run_id}",
            "--billing-catalog", str(self.billing_catalog),
        ]  # fmt: skip
        if self.transaction is not None:
            timeout_ms, restart_s = self.transaction
            flags += [
                "--transaction-timeout-ms", str(timeout_ms),
                "--expected-restart-seconds", str(restart_s),
            ]  # fmt: skip
        return flags + list(self.cfg.effective_job_args())

    def _submit_cli(self, *args: str, timeout_s: float = 420) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        env.pop("PIPELINE_HASH_KEY", None)  # the TaskManagers have it; the client needs none
        try:
            return subprocess.run(
                [sys.executable, "-m", "jobs.submit", "--flink-rest", self.cfg.flink_rest, *args],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                check=False,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired as e:
            raise FaultsError(
                f"jobs.submit {' '.join(args[:2])} timed out after {timeout_s}s"
            ) from e

    def submit(self, from_checkpoint: Path | None = None) -> str:
        args = [*self.job_flags(), "--timeout", "300"]
        if from_checkpoint is not None:
            args += ["--from-savepoint", from_checkpoint.as_uri()]
        t0 = time.monotonic()
        proc = self._submit_cli(*args)
        if proc.returncode != 0:
            raise FaultsError(f"submission failed:\n{proc.stderr[-3000:]}")
        job = proc.stdout.strip().splitlines()[-1]
        self.job_id = job
        self.job_ids.append(job)
        source = f" from {from_checkpoint}" if from_checkpoint else ""
        self.log(f"job {job} running{source} ({time.monotonic() - t0:.1f}s)")
        return job

    def stop_with_drain(self) -> None:
        assert self.job_id is not None
        proc = self._submit_cli("--stop-with-savepoint", self.job_id, "--drain", "--timeout", "300")
        if proc.returncode != 0:
            raise FaultsError(f"stop-with-savepoint --drain failed:\n{proc.stderr[-3000:]}")
        self.log(f"job {self.job_id} stopped with drain: {proc.stdout.strip()}")

    def _checkpoints(self) -> dict[str, Any]:
        assert self.job_id is not None
        result: dict[str, Any] = self.cluster.api.call("GET", f"/jobs/{self.job_id}/checkpoints")
        return result

    def restarts(self) -> int | None:
        try:
            metrics = self.cluster.api.call("GET", f"/jobs/{self.job_id}/metrics?get=numRestarts")
            return int(metrics[0]["value"]) if metrics else None
        except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError):
            return None

    def _recovered(self, since_ms: int) -> tuple[bool, str]:
        assert self.job_id is not None
        try:
            info = self.cluster.api.job(self.job_id)
            state = str(info["state"])
            if state in _TERMINAL:
                raise FaultsError(f"job {self.job_id} ended {state}")
            tasks = [str(v["status"]) for v in info.get("vertices", [])]
            if state != "RUNNING" or any(t != "RUNNING" for t in tasks):
                return False, f"job {state}, tasks {sorted(set(tasks))}"
            latest = (self._checkpoints().get("latest") or {}).get("completed") or {}
            trigger = int(latest.get("trigger_timestamp") or 0)
            if trigger < since_ms:
                return False, "no checkpoint completed since the fault"
            return True, f"checkpoint {latest.get('id')} completed"
        except (urllib.error.URLError, OSError, ValueError, KeyError) as e:
            return False, f"REST: {e}"

    def wait_recovered(self, since_ms: int, what: str) -> float:
        """Block until the job RUNS with every task RUNNING and a checkpoint triggered after
        ``since_ms`` (wall clock) COMPLETED; return the seconds since ``since_ms``."""
        deadline = time.monotonic() + self.cfg.recovery_timeout_s
        status = ""
        while True:
            self._check_traffic()
            self.poll_progress()
            self._supervise()
            ok, status = self._recovered(since_ms)
            if ok:
                return time.time() - since_ms / 1000 if since_ms else 0.0
            if time.monotonic() > deadline:
                raise FaultsError(
                    f"{what}: not recovered after {self.cfg.recovery_timeout_s:.0f}s ({status})"
                )
            time.sleep(_POLL_S)

    def _supervise(self) -> None:
        """Start a TaskManager when none runs, as a supervisor (Kubernetes, systemd) would: a
        TaskManager that its JobManager declared lost (after a long pause) exits on its own
        once it can run again."""
        if self.paused or self.cluster.tm_pids():
            return
        self.log("no TaskManager process; starting one, as a supervisor would")
        self.cluster.start_daemon("taskmanager.sh")
        self.supervised += 1

    def reap_orphans(self, keep_under: int | None = None) -> str:
        """Worker processes of a killed TaskManager (or of a killed Python worker) that outlived
        it: killed, never left behind; those still under ``keep_under`` (a live TaskManager)
        are its own and stay."""
        keep = set(descendants(keep_under)) if keep_under is not None else set()
        # Same pid and same command line: a pid reused meanwhile belongs to someone else.
        left = [
            p
            for p, args in self.orphan_candidates
            if p not in keep and alive(p) and cmdline(p) == args
        ]
        self.orphan_candidates = []
        if not left:
            return ""
        names = sorted({Path(a).name for p in left for a in cmdline(p)[:1]})
        send_signal(left, signal.SIGKILL)
        wait_gone(left, 10)
        self.orphans_killed += len(left)
        return f"; {len(left)} worker processes outlived it ({', '.join(names)}), killed"

    def restored_checkpoint(self) -> str:
        try:
            restored = (self._checkpoints().get("latest") or {}).get("restored") or {}
        except (urllib.error.URLError, OSError, ValueError):
            return "?"
        return str(restored.get("id", "none"))

    # -- traffic and progress ------------------------------------------------------------------

    def _check_traffic(self) -> None:
        if self.traffic is not None and self.traffic.error is not None:
            raise FaultsError(f"traffic producer failed: {self.traffic.error!r}")

    def idle(self, seconds: float) -> None:
        """Let traffic run for ``seconds`` (scheduling, not a wait for a condition)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._check_traffic()
            self.poll_progress()
            time.sleep(min(_POLL_S, max(0.0, end - time.monotonic())))

    def poll_progress(self, budget_s: float = 0.2) -> None:
        """Keep the progress reader reading (and judged) through every fault, not only at the
        end: a reader that stalls at a broker restart is replaced right then."""
        if self.progress is not None:
            self.progress.poll(budget_s)

    def alert_burst(self) -> None:
        """One refused-call burst, waited for until the enriched topic holds all of it."""
        assert self.traffic is not None and self.progress is not None
        key = self.traffic.request_burst()
        last = f"{key}-{self.traffic.burst_events}"
        t0 = time.monotonic()
        while last not in self.progress.ids:
            self._check_traffic()
            if time.monotonic() - t0 > self.cfg.recovery_timeout_s:
                raise FaultsError(
                    f"burst {key} not in the enriched topic after {time.monotonic() - t0:.0f}s"
                )
            self.poll_progress()
            time.sleep(_POLL_S)
        self.log(f"burst {key} enriched ({time.monotonic() - t0:.1f}s)")

    def progress_line(self) -> str:
        assert self.traffic is not None and self.progress is not None
        self.progress.poll()
        produced, delivered, failed = self.traffic.snapshot()
        return (
            f"t+{self.now_s():.0f}s produced {produced}, delivered {delivered}, failed {failed}, "
            f"enriched committed {self.progress.total} ({len(self.progress.ids)} distinct)"
        )

    # -- faults --------------------------------------------------------------------------------

    def inject(self, index: int, kind: str, injected: list[FaultResult]) -> FaultResult:
        """Inject one fault (appended to ``injected`` once done), then wait for recovery."""
        result = FaultResult(index, kind, self.now_s())
        self.log(f"fault {index}: {kind}")
        restarts_before = self.restarts()
        checkpoint: int | None = None
        phase = tm_kill_phase(kind)
        step = rescale_step(kind)
        silence: Silence | None = None
        if phase == "after-silence":
            result.detail, since_ms, silence = self.tm_kill_after_silence(index)
        elif phase == "every-checkpoint":
            result.detail, since_ms = self.tm_kill_every_checkpoint(index, kind)
        elif phase:
            result.detail, since_ms, checkpoint = self.tm_kill(phase)
        elif kind == "kill-during-recovery":
            result.detail, since_ms = self.kill_during_recovery()
        elif kind == "tm-pause":
            result.detail, since_ms = self.tm_pause()
        elif kind == "tm-pause-past-txn":
            result.detail, since_ms = self.tm_pause_past_txn()
        elif kind == "py-worker-kill":
            result.detail, since_ms = self.py_worker_kill()
        elif kind == "broker-restart":
            result.detail, since_ms = self.broker_restart()
        elif kind == "broker-kill9":
            result.detail, since_ms = self.broker_kill9()
        elif kind == "broker-stop":
            result.detail, since_ms = self.broker_stop()
        elif kind == "jm-kill":
            result.detail, since_ms = self.jm_kill()
        elif step is not None:
            result.detail, since_ms = self.rescale(*step)
        else:
            raise FaultsError(f"unknown fault {kind}")
        injected.append(result)
        supervised = self.supervised
        result.recovery_s = self.wait_recovered(since_ms, f"fault {index} ({kind})")
        if self.supervised > supervised:
            result.detail += (
                f"; the TaskManager exited on its own, {self.supervised - supervised} started anew"
            )
        if kind == "py-worker-kill":
            result.detail += self.reap_orphans(keep_under=self._one_tm())
        elif phase or kind == "kill-during-recovery":
            result.detail += self.reap_orphans()
        if phase or kind in ("kill-during-recovery", "py-worker-kill", "tm-pause-past-txn"):
            result.detail += (
                f"; restarts {restarts_before}->{self.restarts()}, restored checkpoint "
                f"{self.restored_checkpoint()}"
            )
        # Whatever the dead or frozen writers left open must be committed or aborted by the
        # recovered job: every output partition's read_committed end reaches its high watermark.
        stuck = stuck_transactions(
            self.broker.bootstrap,
            self.output_topics(),
            self.client_log,
            4 * self.cfg.checkpoint_interval_s + 30,
        )
        if stuck:
            self.problems.append(f"after fault {index} ({kind}): open transactions: {stuck}")
            result.detail += f"; OPEN TRANSACTIONS {stuck}"
        else:
            result.detail += "; no open transaction"
        if silence is not None:
            result.detail += self._await_silent_windows(silence)
        if phase == "during" and checkpoint is not None and self.job_id is not None:
            metadata = self.cluster.checkpoints / self.job_id / f"chk-{checkpoint}" / "_metadata"
            result.detail += f"; checkpoint {checkpoint} " + (
                "completed anyway (its acks were in)" if metadata.exists() else "never completed"
            )
        timeout_s, bound = self.restart_bound_s()
        if result.recovery_s > bound and kind != "tm-pause-past-txn":
            # Past it, Kafka may abort what a completed checkpoint promised: a loss the run must
            # name, not leave to be guessed.
            self.problems.append(
                f"fault {index} ({kind}) took {result.recovery_s:.0f}s to recover, longer than "
                f"the {bound}s restart the sinks' {timeout_s}s transaction timeout allows"
            )
        self.log(f"fault {index} {kind}: {result.detail}; recovered in {result.recovery_s:.1f}s")
        return result

    def restart_bound_s(self) -> tuple[int, int]:
        """(the sinks' transaction timeout, the longest restart it allows) in seconds: the
        run's short timeout and its expected restart, else the job's default timeout less a
        checkpoint interval."""
        if self.transaction is not None:
            return self.transaction[0] // 1000, self.transaction[1]
        timeout_s = int(PipelineSettings.model_fields["transaction_timeout_ms"].default) // 1000
        return timeout_s, timeout_s - self.cfg.checkpoint_interval_s

    def _await_phase(self, phase: str) -> tuple[str, int | None]:
        """Block until the moment to kill for ``phase``; (description, checkpoint id to confirm)."""
        assert self.job_id is not None
        root = self.cluster.checkpoints / self.job_id
        interval = float(self.cfg.checkpoint_interval_s)
        deadline = time.monotonic() + max(60.0, 20 * interval)
        if phase == "random":
            delay = self.rng.uniform(0.0, interval)
            time.sleep(delay)
            return f"at a random moment ({delay:.2f}s after the scheduled time)", None
        seen = _checkpoint_dirs(root)
        known = max(seen, default=0)
        known_done = max((n for n, done in seen.items() if done), default=0)
        window_ms = WINDOW_SECONDS * 1000
        # "after" prefers a checkpoint triggered as windows open (first 15 % of a window): it
        # holds the newest window state and timers, whose restore is the most fragile.
        prefer_until = time.monotonic() + 4 * WINDOW_SECONDS
        triggered_at: dict[int, int] = {}
        while time.monotonic() < deadline:
            dirs = _checkpoint_dirs(root)
            if phase == "after":
                now_ms = int(time.time() * 1000)
                for n in dirs:
                    if n > known:
                        triggered_at.setdefault(n, now_ms)
                done = [n for n, ok in dirs.items() if ok and n > known_done]
                if done:
                    n = max(done)
                    into = triggered_at[n] % window_ms if n in triggered_at else None
                    if (into is not None and into < 0.15 * window_ms) or (
                        time.monotonic() > prefer_until
                    ):
                        where = (
                            f"triggered {into / 1000:.1f}s into a {WINDOW_SECONDS}s window, "
                            if into is not None
                            else ""
                        )
                        return (
                            f"right after checkpoint {n} completed ({where}its _metadata appeared)",
                            n,
                        )
                    known_done = n
            else:
                new = [n for n in dirs if n > known]
                if new:
                    n = max(new)
                    triggered = time.monotonic()
                    if phase == "during":
                        delay = self.rng.uniform(0.02, 0.25)
                        time.sleep(delay)
                        if not (root / f"chk-{n}" / "_metadata").exists():
                            return (
                                f"while checkpoint {n} was in progress ({delay * 1000:.0f} ms "
                                "after its directory appeared)",
                                n,
                            )
                    else:  # before: just ahead of the next trigger
                        lead = self.rng.uniform(0.1, 0.4)
                        time.sleep(max(0.0, triggered + interval - lead - time.monotonic()))
                        if max(_checkpoint_dirs(root), default=0) == n:
                            return f"{lead * 1000:.0f} ms before checkpoint {n + 1} was due", n + 1
                    known = max(_checkpoint_dirs(root), default=n)
            time.sleep(_PHASE_POLL_S)
        raise FaultsError(f"no checkpoint activity for phase {phase!r} within the deadline")

    def tm_kill_after_silence(self, index: int) -> tuple[str, int, Silence]:
        """Keys of their own send their last events early in a window, just before a
        checkpoint is due; once the enriched topic holds them all (that checkpoint, or a later
        one, completed), and while their window is surely open, kill -9 the TaskManager. They
        never send again: their windows must close on the watermark the other keys move on."""
        assert self.job_id is not None and self.traffic is not None
        assert self.progress is not None
        self._one_tm()  # before waiting for the moment: fail early
        root = self.cluster.checkpoints / self.job_id
        interval_ms = self.cfg.checkpoint_interval_s * 1000
        window_ms = WINDOW_SECONDS * 1000
        lead_ms = self.rng.randint(100, 400)
        deadline = time.monotonic() + max(60.0, 20.0 * self.cfg.checkpoint_interval_s)
        known = max(_checkpoint_dirs(root), default=0)
        send_at: int | None = None
        while send_at is None:
            if time.monotonic() > deadline:
                raise FaultsError(f"fault {index}: no checkpoint triggered early in a window")
            self._check_traffic()
            new = [n for n in _checkpoint_dirs(root) if n > known]
            if new:
                known = max(new)
                send_at = silence_send_moment(
                    int(time.time() * 1000), interval_ms, lead_ms, window_ms
                )
            time.sleep(_PHASE_POLL_S)
        time.sleep(max(0.0, send_at / 1000 - time.time()))  # just before the next checkpoint

        keys = vanishing_keys(index)
        sent_ms = int(time.time() * 1000)
        window_start = sent_ms - sent_ms % window_ms
        batches = silent_events(
            keys, VANISHING_EVENTS, sent_ms, window_ms, self.rng.randrange(1 << 30)
        )
        ids = [str(e["request"]["headers"]["x-request-id"]) for _, es in batches for e in es]
        delivered = self.traffic.send_batches([es for _, es in batches])
        if not delivered.wait(60):
            raise FaultsError(f"fault {index}: the vanishing keys' events not delivered in 60s")
        with self.traffic.lock:
            failed = sorted(set(ids) & set(self.traffic.failed))
        if failed:
            raise FaultsError(f"fault {index}: vanishing keys' events not delivered: {failed}")
        delivered_s = (time.time() * 1000 - sent_ms) / 1000

        # Until a completed checkpoint covers them (the enriched topic holds them all), while
        # their window is surely open; then the kill, whether or not they were committed.
        kill_by = silence_kill_deadline(window_start, window_ms, self.cfg.out_of_orderness_s * 1000)
        committed = False
        while time.time() * 1000 < kill_by - 300:
            self._check_traffic()
            self.progress.poll(0.05)
            if all(i in self.progress.ids for i in ids):
                committed = True
                break
        completed = max((n for n, ok in _checkpoint_dirs(root).items() if ok), default=0)
        self.orphan_candidates = []
        pid, killed_ms = self._kill_tm()
        silence = Silence(index, keys, window_start, ids, sent_ms, killed_ms, committed)
        self.silences.append(silence)
        self.vanishing.update(dict.fromkeys(keys, killed_ms))
        if killed_ms > kill_by:
            self.problems.append(
                f"fault {index} (tm-kill:after-silence): the kill came {killed_ms - kill_by} ms "
                "late; the vanishing keys' window may have closed before it"
            )
        self.log(
            f"fault {index}: {len(keys)} vanishing keys sent {len(ids)} events "
            f"{(sent_ms - window_start) / 1000:.1f}s into window {window_start} "
            f"(delivered in {delivered_s:.2f}s); killing "
            f"{(killed_ms - window_start) / 1000:.1f}s into it"
        )
        detail = (
            f"{len(keys)} vanishing keys ({keys[0]}..{keys[-1]}) sent {VANISHING_EVENTS} events "
            f"each {(sent_ms - window_start) / 1000:.1f}s into window {window_start}, "
            f"{lead_ms} ms before a checkpoint was due, and never again; kill -9 TaskManager "
            f"{pid} {(killed_ms - sent_ms) / 1000:.1f}s later, "
            + (
                f"right after the enriched topic held all of them (checkpoint {completed} "
                "completed)"
                if committed
                else f"before the enriched topic held all of them (checkpoint {completed} "
                "completed last; they come back by replay)"
            )
            + f", {(killed_ms - window_start) / 1000:.1f}s into their window (open until the "
            f"watermark passes its end, at event time "
            f"+{(window_ms + self.cfg.out_of_orderness_s * 1000) / 1000:.0f}s); new TaskManager "
            "started"
        )
        return detail, killed_ms, silence

    def _await_silent_windows(self, silence: Silence) -> str:
        """After recovery: until the usage topic (read_committed) holds the window record of
        every vanishing key, which the watermark of the other keys' traffic must close without
        any event of theirs; not left to the final drain. Its count must be what they sent."""
        want = {(k, silence.window_start) for k in silence.keys}
        got: dict[tuple[str, int], int] = {}
        timeout_s = max(60.0, 3.0 * WINDOW_SECONDS + 10.0 * self.cfg.checkpoint_interval_s)
        consumer = Consumer(
            {
                "bootstrap.servers": self.broker.bootstrap,
                "group.id": f"faults-silence-{secrets.token_hex(4)}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "logger": self.client_log,
            }
        )
        consumer.assign([TopicPartition(self.topics["usage"], p, 0) for p in range(PARTITIONS)])
        deadline = time.monotonic() + timeout_s
        try:
            while not want <= got.keys():
                if time.monotonic() > deadline:
                    missing = sorted(want - got.keys())
                    self.problems.append(
                        f"fault {silence.index} (tm-kill:after-silence): windows of vanishing "
                        f"keys not in the usage topic {timeout_s:.0f}s after recovery: {missing}"
                    )
                    return f"; VANISHING KEYS' WINDOWS {missing} NOT EMITTED after recovery"
                self._check_traffic()
                self.poll_progress(0.1)
                for m in consumer.consume(num_messages=5000, timeout=0.5):
                    if m.error() is not None:
                        continue
                    u = json.loads(m.value() or b"null")
                    slot = (str(u.get("rate_key")), int(u.get("window_start", -1)))
                    if slot in want and u.get("kind", "window") == "window":
                        got[slot] = got.get(slot, 0) + int(u["count"])
        finally:
            with suppress(KafkaException, RuntimeError):
                consumer.close()
        silence.emitted_s = time.time() - silence.killed_ms / 1000
        silence.counts = {k: got[(k, silence.window_start)] for k in silence.keys}
        wrong = {k: n for k, n in silence.counts.items() if n != VANISHING_EVENTS}
        if wrong:
            self.problems.append(
                f"fault {silence.index} (tm-kill:after-silence): vanishing keys' window counts "
                f"{wrong}, {VANISHING_EVENTS} sent each"
            )
        return (
            f"; the vanishing keys' {len(want)} windows in the usage topic "
            f"{silence.emitted_s:.1f}s after the kill, counts {sorted(silence.counts.values())} "
            + ("(exact)" if not wrong else f"(WRONG: {VANISHING_EVENTS} sent each)")
        )

    def _one_tm(self) -> int:
        pids = self.cluster.tm_pids()
        if len(pids) != 1:
            raise FaultsError(f"expected one TaskManager process, found {pids}")
        return pids[0]

    def tm_kill(self, phase: str) -> tuple[str, int, int | None]:
        self._one_tm()  # before waiting for the moment: fail early
        moment, checkpoint = self._await_phase(phase)
        self.orphan_candidates = []
        pid, killed_ms = self._kill_tm()
        detail = f"kill -9 TaskManager {pid} {moment}; new TaskManager started"
        return detail, killed_ms, checkpoint

    def tm_pause(self) -> tuple[str, int]:
        pid = self._one_tm()
        pids = [pid, *descendants(pid)]
        hold = 2.5 * self.cfg.checkpoint_interval_s
        self.paused = pids
        send_signal(pids, signal.SIGSTOP)
        time.sleep(hold)  # the fault itself: a frozen TaskManager
        send_signal(list(reversed(pids)), signal.SIGCONT)
        self.paused = []
        resumed_ms = int(time.time() * 1000)
        return (
            f"SIGSTOP TaskManager {pid} and {len(pids) - 1} worker processes for {hold:.1f}s "
            f"({hold / self.cfg.checkpoint_interval_s:.1f} checkpoint intervals), then SIGCONT",
            resumed_ms,
        )

    def _keep_broker_down(self) -> tuple[float, float, int]:
        """Keep the stopped broker down a few seconds, then start it: (held s, start-up s,
        epoch ms when it answered)."""
        hold = self.rng.uniform(3.0, 6.0)
        time.sleep(hold)  # the fault itself: the broker stays down
        t1 = time.monotonic()
        self.broker.up()
        return hold, time.monotonic() - t1, int(time.time() * 1000)

    def broker_restart(self) -> tuple[str, int]:
        t0 = time.monotonic()
        self.broker.down()
        stopped = time.monotonic() - t0
        hold, start_s, up_ms = self._keep_broker_down()
        return (
            f"broker stopped ({stopped:.1f}s), kept down {hold:.1f}s, restarted ({start_s:.1f}s)",
            up_ms,
        )

    def _kill_tm(self) -> tuple[int, int]:
        """kill -9 the TaskManager, start a new one; (old pid, kill time in epoch ms). Its
        Python workers become orphan candidates (reaped after recovery)."""
        pid = self._one_tm()
        workers = [(w, cmdline(w)) for w in descendants(pid)]
        os.kill(pid, signal.SIGKILL)
        killed_ms = int(time.time() * 1000)
        if wait_gone([pid], 15):
            raise FaultsError(f"TaskManager {pid} survived SIGKILL")
        self.cluster.start_daemon("taskmanager.sh")
        self.orphan_candidates.extend(workers)
        return pid, killed_ms

    def tm_kill_every_checkpoint(self, index: int, kind: str) -> tuple[str, int]:
        """kill -9 the TaskManager right after each of ``EVERY_CHECKPOINT_KILLS`` checkpoints
        in a row, each the first one the restored job completes: it never runs a checkpoint
        interval without being killed again."""
        self._one_tm()
        assert self.job_id is not None
        root = self.cluster.checkpoints / self.job_id
        kills = CheckpointKills(EVERY_CHECKPOINT_KILLS, since=time.monotonic())
        seen_at = dict.fromkeys(_checkpoint_dirs(root), kills.since - 1)
        deadline = time.monotonic() + self.cfg.recovery_timeout_s
        killed_ms = 0
        pids: list[int] = []
        while not kills.finished:
            self._check_traffic()
            dirs = _checkpoint_dirs(root)
            now = time.monotonic()
            for n in dirs:
                seen_at.setdefault(n, now)
            due = kills.due(dirs, seen_at)
            if due is not None:
                pid, killed_ms = self._kill_tm()
                pids.append(pid)
                kills.record(due, time.monotonic())
                self.log(f"fault {index} ({kind}): kill {len(kills.killed)} on checkpoint {due}")
                deadline = time.monotonic() + self.cfg.recovery_timeout_s
            elif now > deadline:
                raise FaultsError(
                    f"fault {index} ({kind}): no checkpoint completed after kill "
                    f"{len(kills.killed)} within {self.cfg.recovery_timeout_s:.0f}s"
                )
            time.sleep(_PHASE_POLL_S)
        return (
            f"kill -9 TaskManagers {pids} right after checkpoints {kills.killed} completed, each "
            "the first one completed after the previous kill; a new TaskManager each time",
            killed_ms,
        )

    def kill_during_recovery(self) -> tuple[str, int]:
        """kill -9 the TaskManager, then the new one while the job's tasks restore their state
        on it (INITIALIZING)."""
        assert self.job_id is not None
        self._one_tm()
        delay = self.rng.uniform(0.0, self.cfg.checkpoint_interval_s)
        time.sleep(delay)  # a random moment relative to the checkpoints
        first, _ = self._kill_tm()
        t0 = time.monotonic()
        deadline = t0 + self.cfg.recovery_timeout_s
        failed_over = False  # the JobManager notices the lost TaskManager only after a while
        while True:
            self._check_traffic()
            with suppress(urllib.error.URLError, OSError, ValueError, KeyError):
                job = self.cluster.api.job(self.job_id)
                restoring = restoring_tasks(job)
                if restoring:
                    break
                tasks = [str(v["status"]) for v in job.get("vertices", [])]
                running = job["state"] == "RUNNING" and all(t == "RUNNING" for t in tasks)
                if running and failed_over:
                    raise FaultsError("the job recovered before a task was seen restoring")
                failed_over = failed_over or not running
            if time.monotonic() > deadline:
                raise FaultsError("no task restored its state after the first kill")
            time.sleep(0.02)
        second, killed_ms = self._kill_tm()
        return (
            f"kill -9 TaskManager {first} at a random moment ({delay:.2f}s), then its successor "
            f"{second} {time.monotonic() - t0:.1f}s later while {restoring} tasks were restoring "
            "state (INITIALIZING); a new TaskManager each time",
            killed_ms,
        )

    def tm_pause_past_txn(self) -> tuple[str, int]:
        """SIGSTOP the TaskManager and its workers while its sinks' transactions hold records
        (some output partition's read_committed end is below its high watermark), until Kafka
        has aborted them (the transaction timeout has passed and every read_committed end
        reached its high watermark), then SIGCONT. The JobManager meanwhile declares the
        TaskManager lost and fails over; the job must write the aborted records again."""
        assert self.transaction is not None
        timeout_s = self.transaction[0] / 1000
        pid = self._one_tm()
        attempts = 20
        attempt = 0
        while True:
            attempt += 1
            # A random moment; right after a commit the new transactions may hold nothing yet.
            time.sleep(self.rng.uniform(0.0, self.cfg.checkpoint_interval_s))
            pids = [pid, *descendants(pid)]
            self.paused = pids
            send_signal(pids, signal.SIGSTOP)
            paused_at = time.monotonic()
            # Frozen writers: what is open now stays open until Kafka aborts it.
            open_at_pause = stuck_transactions(
                self.broker.bootstrap, self.output_topics(), self.client_log, 0
            )
            if open_at_pause:
                break
            send_signal(list(reversed(pids)), signal.SIGCONT)
            self.paused = []
            if attempt == attempts:
                raise FaultsError(f"no open transaction at any of {attempts} pauses")
        while time.monotonic() - paused_at < timeout_s:
            self.poll_progress()
            time.sleep(_POLL_S)
        # The broker aborts expired transactions on its own schedule (every 10 s by default).
        still_open = stuck_transactions(
            self.broker.bootstrap, self.output_topics(), self.client_log, 60
        )
        aborted_after = time.monotonic() - paused_at
        send_signal(list(reversed(pids)), signal.SIGCONT)
        self.paused = []
        resumed_ms = int(time.time() * 1000)
        if still_open:
            self.problems.append(f"tm-pause-past-txn: transactions still open: {still_open}")
        return (
            f"SIGSTOP TaskManager {pid} and {len(pids) - 1} worker processes (attempt "
            f"{attempt}) while {len(open_at_pause)} output partitions had open transactions; "
            + (
                f"still open after {aborted_after:.0f}s"
                if still_open
                else f"Kafka had aborted them {aborted_after:.0f}s in"
            )
            + f" (transaction timeout {timeout_s:.0f}s); SIGCONT",
            resumed_ms,
        )

    def py_worker_kill(self) -> tuple[str, int]:
        """kill -9 one Python worker process of the TaskManager (the TaskManager lives on)."""
        tm = self._one_tm()
        delay = self.rng.uniform(0.0, self.cfg.checkpoint_interval_s)
        time.sleep(delay)  # a random moment relative to the checkpoints
        before = [(w, cmdline(w)) for w in descendants(tm)]
        workers = sorted(w for w, args in before if _PY_WORKER_MODULE in args)
        if not workers:
            raise FaultsError(f"no Python worker ({_PY_WORKER_MODULE}) under TaskManager {tm}")
        victim = self.rng.choice(workers)
        os.kill(victim, signal.SIGKILL)
        killed_ms = int(time.time() * 1000)
        if wait_gone([victim], 15):
            raise FaultsError(f"Python worker {victim} survived SIGKILL")
        self.orphan_candidates = before
        return (
            f"kill -9 Python worker {victim}, one of {len(workers)} of TaskManager {tm}",
            killed_ms,
        )

    def broker_kill9(self) -> tuple[str, int]:
        pid = self.broker.kill()
        hold, start_s, up_ms = self._keep_broker_down()
        return (
            f"kill -9 broker {pid}, kept down {hold:.1f}s, restarted with log recovery "
            f"({start_s:.1f}s)",
            up_ms,
        )

    def broker_stop(self) -> tuple[str, int]:
        """SIGSTOP the broker (its controller too) for longer than the clients' 30 s request
        timeout: requests in flight time out while their connections stay open."""
        pid = self.broker.pid()
        hold = self.rng.uniform(32.0, 40.0)
        self.paused = [pid]
        send_signal([pid], signal.SIGSTOP)
        time.sleep(hold)  # the fault itself: a frozen broker
        send_signal([pid], signal.SIGCONT)
        self.paused = []
        resumed_ms = int(time.time() * 1000)
        return f"SIGSTOP broker {pid} for {hold:.1f}s, then SIGCONT", resumed_ms

    def rescale(self, low: int, high: int) -> tuple[str, int]:
        """Stop with a savepoint (no drain: windows stay open in it) at parallelism ``low``,
        resubmit from it at ``high``."""
        assert self.job_id is not None
        if self.parallelism != low:
            raise FaultsError(f"rescale {low}->{high}: the job runs at {self.parallelism}")
        old = self.job_id
        t0 = time.monotonic()
        proc = self._submit_cli("--stop-with-savepoint", old, "--timeout", "300")
        if proc.returncode != 0:
            raise FaultsError(f"stop-with-savepoint failed:\n{proc.stderr[-3000:]}")
        location = proc.stdout.strip().splitlines()[-1]
        stopped = time.monotonic() - t0
        self.parallelism = high
        since_ms = int(time.time() * 1000)
        self.submit(from_checkpoint=Path(urllib.parse.urlparse(location).path))
        return (
            f"stop-with-savepoint of job {old} at parallelism {low} ({stopped:.1f}s), "
            f"resubmitted from it at parallelism {high} as job {self.job_id}",
            since_ms,
        )

    def jm_kill(self) -> tuple[str, int]:
        assert self.job_id is not None
        old = self.job_id
        jms = self.cluster.jm_pids()
        if len(jms) != 1:
            raise FaultsError(f"expected one JobManager process, found {jms}")
        delay = self.rng.uniform(0.0, self.cfg.checkpoint_interval_s)
        time.sleep(delay)  # a random moment relative to the checkpoints
        os.kill(jms[0], signal.SIGKILL)
        killed_ms = int(time.time() * 1000)
        if wait_gone(jms, 15):
            raise FaultsError(f"JobManager {jms[0]} survived SIGKILL")
        self.cluster.start_daemon("jobmanager.sh")
        self.cluster.wait_answering(120)
        known = [j["id"] for j in self.cluster.api.call("GET", "/jobs")["jobs"]]
        no_ha = old not in known
        # The TaskManager cancels its tasks when it loses the JobManager. In process mode a
        # Python worker's late state request can then reach a RocksDB backend already closed,
        # and the TaskManager's JVM dies (SIGSEGV in RocksDB.createColumnFamily, seen once in
        # make faults). A supervisor (Kubernetes, systemd) restarts it; so does this one.
        tm_note = self._await_free_taskmanager()
        completed = sorted(
            (n for n, done in _checkpoint_dirs(self.cluster.checkpoints / old).items() if done),
            reverse=True,
        )
        if not completed:
            raise FaultsError(f"no retained checkpoint of job {old}")
        errors = []
        for i, n in enumerate(completed[:3]):
            path = self.cluster.checkpoints / old / f"chk-{n}"
            try:
                if i:
                    # The TaskManager that registered may have died since: its tasks'
                    # cancellation can end in a fatal error (Beam's "Reference count must not
                    # be negative" as a Python operator closes, seen once in make faults), after
                    # which no attempt finds a slot. Start one again if none runs.
                    tm_note += self._await_free_taskmanager()
                self.submit(from_checkpoint=path)
                return (
                    f"kill -9 JobManager {jms[0]}; restarted; it knows "
                    f"{'no' if no_ha else 'the'} job (HA {'off' if no_ha else 'on'}); "
                    f"resubmitted from retained checkpoint chk-{n} as job {self.job_id}" + tm_note,
                    killed_ms,
                )
            except FaultsError as e:
                errors.append(f"chk-{n}: {e}")
                self.log(f"resubmission from chk-{n} failed; trying an older checkpoint")
        raise FaultsError(
            "resubmission failed from every retained checkpoint: " + " | ".join(errors)
        )

    def _await_free_taskmanager(self, timeout_s: float = 180.0) -> str:
        """Wait until a TaskManager has registered with the (new) JobManager with every slot
        free, starting a new one if the old one died; says so if it did."""
        note = ""
        deadline = time.monotonic() + timeout_s
        while True:
            if not self.cluster.tm_pids():
                self.cluster.start_daemon("taskmanager.sh")
                note = "; its TaskManager died while the JobManager was down, started anew"
            with suppress(urllib.error.URLError, OSError, KeyError):
                tms = self.cluster.api.call("GET", "/taskmanagers")["taskmanagers"]
                if tms and all(t["freeSlots"] == t["slotsNumber"] for t in tms):
                    return note
            if time.monotonic() > deadline:
                raise FaultsError("no TaskManager with free slots registered with the JobManager")
            time.sleep(_POLL_S)

    # -- the end -------------------------------------------------------------------------------

    def wait_enriched(self, expected: int) -> None:
        """Until the enriched topic holds ``expected`` distinct events, as long as the job's
        committed output grows. A stalled reader is replaced or fails the run (``CommittedIds``);
        a reader that read everything committed while the job's output stays put for
        ``job_quiet_s`` ends the wait early: the final checks then name what is missing."""
        assert self.progress is not None
        deadline = time.monotonic() + self.cfg.final_timeout_s
        job_quiet_s = max(60.0, 10.0 * self.cfg.checkpoint_interval_s)
        last_ends: dict[int, int] = {}
        ends_moved = time.monotonic()
        next_log = 0.0
        while True:
            self.progress.poll(2.0)
            distinct = len(self.progress.ids)
            if distinct >= expected:
                return
            now = time.monotonic()
            ends = self.progress.committed_ends
            if ends != last_ends:
                last_ends, ends_moved = dict(ends), now
            if self.progress.caught_up() and now - ends_moved > job_quiet_s:
                self.log(
                    f"enriched holds {distinct} of {expected} events and the job's committed "
                    f"output has not grown for {job_quiet_s:.0f}s; checking what is there"
                )
                return
            if now > deadline:
                raise FaultsError(
                    f"enriched holds {distinct} of {expected} events after "
                    f"{self.cfg.final_timeout_s:.0f}s while its committed output still grows "
                    f"(reader at {self.progress.watch.reached}, committed ends {ends})"
                )
            if now >= next_log:
                self.log(f"waiting for the job to catch up: enriched {distinct} of {expected}")
                next_log = now + 10
            time.sleep(_POLL_S)

    def output_topics(self) -> list[str]:
        return [t for role, t in self.topics.items() if role != "raw"]


@contextmanager
def _shielded() -> Iterator[None]:
    """Ignore Ctrl-C/SIGTERM while tearing down (main thread only), so cleanup completes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, signal.SIG_IGN)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def run(cfg: FaultsConfig, log: Callable[[str], None] | None = None) -> Report:
    """One complete fault-injection run; never leaves the broker or cluster it started."""
    emit = log or (lambda m: print(f"faults: {m}", file=sys.stderr, flush=True))
    plan = cfg.fault_plan()
    report = Report()
    h = Harness(cfg, emit)
    t0 = time.monotonic()
    try:
        h.start()
        h.submit()
        h.wait_recovered(0, "first checkpoint")
        h.progress = CommittedIds(
            h.broker.bootstrap, h.topics["enriched"], h.client_log, cfg.stall_after_s, h.log
        )
        h.traffic = Traffic(
            h.broker.bootstrap,
            h.topics["raw"],
            h.plan,
            cfg.keys,
            cfg.seed,
            h.client_log,
            burst_events=PipelineSettings.model_fields["auth_failure_min"].default
            + ALERT_BURST_EVENTS_OVER_MIN,
        )
        h.traffic.start()
        h.log(
            f"traffic at {cfg.rate:.0f} events/s: {h.plan.describe()}; "
            f"{'a refused-call burst after each fault; ' if cfg.alert_bursts else ''}"
            f"job parallelism {h.parallelism}"
            + (f", transaction timeout {h.transaction[0]} ms" if h.transaction is not None else "")
            + f"; plan {plan}"
        )
        for i, kind in enumerate(plan, start=1):
            target = cfg.duration_s * (0.1 + 0.8 * (i - 1) / max(1, len(plan)))
            h.idle(max(0.0, target - h.now_s()))
            h.log(h.progress_line())
            h.inject(i, kind, report.faults)
            if cfg.alert_bursts:
                h.alert_burst()
            h.idle(h.rng.uniform(2.0, 5.0))
        h.idle(max(cfg.duration_s - h.now_s(), 10.0))
        h.log(h.progress_line())
        h.traffic.stop_event.set()
        h.traffic.join(180)
        if h.traffic.error is not None:
            raise FaultsError(f"traffic producer failed: {h.traffic.error!r}")
        raw = drain(h.broker.bootstrap, h.topics["raw"], timeout_s=120)
        events, _, _ = source_events(raw)
        h.log(f"traffic stopped: {len(events)} events in {len(raw)} records; {h.progress_line()}")
        h.wait_enriched(len(events))
        h.stop_with_drain()
        report.verification = _final_checks(h, raw, report)
        report.events_checked = report.verification.events
        report.lost = len(report.verification.lost)
        report.duplicated = report.verification.duplicated
        report.windows_differing = len(report.verification.window_mismatches)
    except (FaultsError, StackError) as e:
        report.problems.append(str(e))
        h.log(f"error: {e}")
    except KeyboardInterrupt:
        report.interrupted = True
        report.problems.append("interrupted")
        h.log("interrupted; cleaning up")
    except Exception as e:
        report.problems.append(f"{type(e).__name__}: {e}")
        h.log(f"error: {type(e).__name__}: {e}\n{traceback.format_exc()}")
    finally:
        report.problems[:0] = h.problems
        report.elapsed_s = time.monotonic() - t0
        _summarise(h, report)
        h.teardown(report.ok)
    return report


def _final_checks(h: Harness, raw: list[Record], report: Report) -> Verification:
    bootstrap = h.broker.bootstrap
    outputs: dict[str, list[Record]] = {}
    for role in (
        "enriched",
        "usage",
        "dlq",
        "reconciliation",
        "alerts",
        "period_usage",
        "quota_signals",
    ):
        if role not in h.topics:
            continue
        try:
            outputs[role] = drain(bootstrap, h.topics[role], timeout_s=120)
        except TimeoutError as e:  # read_committed never reached the end: an open transaction
            report.problems.append(f"read_committed reader blocked: {e}")
            outputs[role] = []
    v = verify(
        raw,
        outputs["enriched"],
        outputs["usage"],
        outputs["dlq"],
        outputs.get("reconciliation"),
        alerts=outputs["alerts"],
        vanishing=h.vanishing,
    )
    if "period_usage" in outputs:
        events, _, _ = source_events(raw)
        latest: dict[bytes, dict[str, Any]] = {}
        for r in outputs["period_usage"]:  # an upsert topic: the latest record per key
            latest[r.key or b""] = json.loads(r.value or b"null")
        v.billing = check_billing(
            events,
            list(latest.values()),
            _json_values(outputs.get("quota_signals", [])),
            {f"fk{i:02d}" for i in range(h.cfg.keys)},
        )
    report.problems.extend(v.problems())
    stuck = stuck_transactions(bootstrap, h.output_topics(), h.client_log, 30)
    if stuck:
        report.problems.append("open transactions: " + "; ".join(stuck))
    h.log(
        f"no open transaction on {len(h.output_topics()) * PARTITIONS} output partitions"
        if not stuck
        else f"open transactions on {len(stuck)} partitions"
    )
    return v


def _summarise(h: Harness, report: Report) -> None:
    h.log("summary")
    for f in report.faults:
        h.log("  fault " + f.describe())
    if h.traffic is not None:
        produced, delivered, failed = h.traffic.snapshot()
        h.log(
            f"  traffic: {produced} events in {h.traffic.records} records, delivered {delivered} "
            f"(p0 {h.traffic.by_partition[0]}, p1 {h.traffic.by_partition[1]}), delivery "
            f"failures {failed}; {h.plan.describe()}"
        )
    v = report.verification
    if v is not None:
        h.log(
            f"  source: {v.events} distinct events, {v.raw_duplicates} repeated in the raw topic, "
            f"{v.sequence_gaps} sequence gaps"
        )
        h.log(
            f"  enriched: lost {len(v.lost)}, duplicated {v.duplicated}, unexpected "
            f"{len(v.unexpected)}"
        )
        h.log(
            f"  windows: {v.windows} (key, window) counts, {len(v.window_mismatches)} differ, "
            f"{len(v.windows_emitted_twice)} emitted twice; {v.late_corrections} late corrections "
            f"adding {v.late_events} events"
        )
        recon = (
            ("ok" if not v.reconciliation else f"{len(v.reconciliation)} problems")
            if v.reconciliation_checked
            else "format not recognised, not checked"
        )
        h.log(f"  dead letters: {v.dead_letters}; reconciliation: {recon}")
        if v.vanishing_keys:
            h.log(f"  {v.vanishing_line()}")
        if v.billing is not None:
            h.log(f"  {v.billing.line()}")
        if v.alerts is not None:
            a = v.alerts
            h.log(
                f"  alerts: {a.alerts} read, {a.expected} expected, {len(a.missing)} missing, "
                f"{len(a.unexpected)} unexpected, {a.repeated} sent again with the same id, "
                f"{len(a.conflicting_ids)} with different ids"
            )
    for s in h.silences:
        h.log(f"  {s.describe()}")
    if h.progress is not None:
        h.log(
            f"  progress reader: {h.progress.restarts} stalls recovered with a new consumer, "
            f"{h.progress.errors} consumer errors"
        )
    if h.orphans_killed:
        h.log(
            f"  note: {h.orphans_killed} Python worker processes (pyflink-udf-runner.sh, "
            "beam_boot, tee) outlived their kill -9'd TaskManager and were killed by this run"
        )
    for p in report.problems:
        h.log(f"  PROBLEM: {p}")
    h.log(f"  took {report.elapsed_s:.0f}s; jobs {h.job_ids}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m testkit.faults",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--faults", type=int, default=len(FULL_PLAN), help="faults to inject (from the full plan)"
    )
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of traffic at least")
    parser.add_argument("--rate", type=float, default=40.0, help="events per second")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--keys", type=int, default=256, help="rate keys (consumers) in the traffic"
    )
    parser.add_argument(
        "--plan",
        help=f"comma-separated fault kinds, any of {', '.join(sorted(FAULT_KINDS))}, instead "
        f"of the full plan ({', '.join(FULL_PLAN)})",
    )
    parser.add_argument(
        "--kafka-port",
        type=int,
        default=int(os.environ.get("FAULTS_KAFKA_PORT", DEFAULT_KAFKA_PORT)),
        help="port of this run's broker [env FAULTS_KAFKA_PORT]",
    )
    parser.add_argument(
        "--flink-rest",
        default=os.environ.get("FAULTS_FLINK_REST", DEFAULT_FLINK_REST),
        help="REST address of this run's session cluster [env FAULTS_FLINK_REST]",
    )
    parser.add_argument(
        "--keep-topics", action="store_true", help="keep the run's topics and checkpoints"
    )
    parser.add_argument(
        "--job-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra flag for the job, repeatable: --job-arg=--execution-mode --job-arg=thread",
    )
    args = parser.parse_args(argv)
    if args.faults < 1 and not args.plan:
        parser.error("--faults must be at least 1")
    if args.keys < 1:
        parser.error("--keys must be at least 1")
    cfg = FaultsConfig(
        faults=args.faults,
        duration_s=args.duration,
        rate=args.rate,
        seed=args.seed,
        kafka_port=args.kafka_port,
        flink_rest=args.flink_rest,
        plan=tuple(p.strip() for p in args.plan.split(",")) if args.plan else (),
        keep_topics=args.keep_topics,
        keys=args.keys,
        job_args=tuple(args.job_arg),
    )
    try:
        cfg.fault_plan()
    except ValueError as e:
        parser.error(str(e))

    def terminate(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    report = run(cfg)
    print(report.line(), flush=True)
    if report.interrupted:
        return 130
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
