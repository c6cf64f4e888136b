"""``make demo``: broker topics, live gateway traffic with a key compromised mid-run, and the job.

Runs the real job (``python -m jobs.gateway_pipeline``) on the embedded Flink MiniCluster against
the local broker, shows progress from the output topics as a downstream reader sees them
(read_committed), prints alerts as they arrive, then stops on its own or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from metering.settings import HASH_KEY_ENV, PipelineSettings
from testkit.traffic import SCENARIO_JOB_FLAGS, LiveStats, run_live
from tools.topics import ensure_topics, pipeline_topics

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Progress:
    enriched: int = 0
    dead_letters: int = 0
    usage_windows: int = 0
    alerts: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _fmt_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M:%S")


def format_alert(a: dict[str, Any]) -> str:
    """One line per alert record: an incident opened, escalated or closed."""
    who = a.get("consumer") or a["rate_key"]
    fp = (a.get("key_fingerprint") or "")[:12]
    line = (
        f"ALERT {a['status'].upper():6} {a['severity'].upper():8} {a['rule']:20} {who} "
        f"(key {fp or '-'}) window {_fmt_time(a['window_start'])}-{_fmt_time(a['window_end'])} "
        f"UTC: "
    )
    if a["status"] == "closed":
        line += f"after {a['incident_windows']} windows with findings ({', '.join(a['rules'])})"
    else:
        line += a["summary"]
    return line + f" [id {a['alert_id'][:12]}]"


def _watch(cfg: PipelineSettings, progress: Progress, stop: threading.Event) -> None:
    """Count what the job commits to its output topics from now on; print alerts at once."""
    consumer = Consumer(
        {
            "bootstrap.servers": cfg.bootstrap_servers,
            "group.id": f"demo-watch-{secrets.token_hex(4)}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    topics = [cfg.enriched_topic, cfg.dlq_topic, cfg.usage_topic, cfg.alerts_topic]
    assignment = []
    for topic in topics:
        for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            assignment.append(TopicPartition(topic, p, high))
    consumer.assign(assignment)
    try:
        while not stop.is_set():
            for msg in consumer.consume(500, timeout=0.5):
                if msg.error() is not None:
                    continue
                topic = msg.topic() or ""
                with progress.lock:
                    if topic == cfg.enriched_topic:
                        progress.enriched += 1
                    elif topic == cfg.dlq_topic:
                        progress.dead_letters += 1
                    elif topic == cfg.usage_topic:
                        progress.usage_windows += 1
                    else:
                        alert = json.loads(msg.value() or b"{}")
                        progress.alerts.append(alert)
                        print(format_alert(alert), flush=True)
    finally:
        consumer.close()


class JobInput:
    """Raw records the job has consumed, from the offsets it commits to its group on checkpoints."""

    def __init__(self, cfg: PipelineSettings) -> None:
        self._consumer = Consumer(
            {"bootstrap.servers": cfg.bootstrap_servers, "group.id": cfg.group_id}
        )
        meta = self._consumer.list_topics(cfg.raw_topic, timeout=10).topics[cfg.raw_topic]
        self._partitions = [TopicPartition(cfg.raw_topic, p) for p in meta.partitions]
        self._start = self._total()

    def _committed(self) -> list[TopicPartition]:
        # A broker that has just started answers NOT_COORDINATOR (or "loading") until its
        # group coordinator is ready: ask again for a while.
        deadline = time.monotonic() + 30
        while True:
            try:
                return list(self._consumer.committed(self._partitions, timeout=10))
            except KafkaException as e:
                code = e.args[0].code() if e.args else None
                retriable = code in (
                    KafkaError.NOT_COORDINATOR,
                    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                    KafkaError.COORDINATOR_NOT_AVAILABLE,
                )
                if not retriable or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _total(self) -> int:
        committed = self._committed()
        total = 0
        for tp in committed:
            if tp.offset >= 0:
                total += tp.offset
            else:  # nothing committed yet: the job starts from the beginning
                low, _ = self._consumer.get_watermark_offsets(tp, timeout=10)
                total += low
        return total

    def consumed(self) -> int:
        return self._total() - self._start

    def close(self) -> None:
        self._consumer.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testkit.demo", description=__doc__)
    parser.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    parser.add_argument("--duration", type=float, default=150.0, help="seconds of traffic")
    parser.add_argument("--attack-at", type=float, default=70.0, help="seconds into the traffic")
    parser.add_argument("--rate", type=float, default=150.0, help="requests per second")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--pinot-broker",
        help="also ingest into Pinot and show the KPIs from this broker (make demo PINOT=1)",
    )
    parser.add_argument("--pinot-controller", default="http://127.0.0.1:9000")
    args = parser.parse_args(argv)

    env = dict(os.environ)
    if not env.get(HASH_KEY_ENV):
        # Demo only: a throwaway key, never printed. Real deployments provide their own.
        env[HASH_KEY_ENV] = secrets.token_hex(32)
    env.setdefault("FLINK_LOG_DIR", str(REPO / ".local/demo-logs"))
    cfg = PipelineSettings(bootstrap_servers=args.bootstrap_servers, checkpoint_interval_seconds=5)
    ensure_topics(
        cfg.bootstrap_servers,
        pipeline_topics(
            raw=cfg.raw_topic,
            enriched=cfg.enriched_topic,
            alerts=cfg.alerts_topic,
            dlq=cfg.dlq_topic,
            usage=cfg.usage_topic,
            reconciliation=cfg.reconciliation_topic,
        ),
    )

    pinot = None
    if args.pinot_broker:
        from testkit.demo_pinot import PinotView

        pinot = PinotView(cfg, args.pinot_controller, args.pinot_broker)
    demo_start_ms = int(time.time() * 1000)

    print(f"demo: starting the job on the embedded Flink MiniCluster ({cfg.bootstrap_servers})")
    print(f"demo: Flink logs in {env['FLINK_LOG_DIR']}", flush=True)
    job = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobs.gateway_pipeline",
            "--bootstrap-servers",
            cfg.bootstrap_servers,
            "--checkpoint-interval-seconds",
            str(cfg.checkpoint_interval_seconds),
            # The demo's keys are born with it: a minute of history, not the default 30.
            *SCENARIO_JOB_FLAGS,
        ],
        cwd=REPO,
        env=env,
        start_new_session=True,  # so Ctrl-C here stops the job and its JVM as one group
    )
    stop = threading.Event()
    progress = Progress()
    job_input = JobInput(cfg)
    watcher = threading.Thread(target=_watch, args=(cfg, progress, stop), daemon=True)
    watcher.start()
    if pinot is not None:
        pinot.start_probe(stop)
    stats: list[LiveStats] = []

    def traffic() -> None:
        stats.append(
            run_live(
                cfg.bootstrap_servers,
                cfg.raw_topic,
                rate=args.rate,
                duration=args.duration,
                attack_at=args.attack_at,
                seed=args.seed,
                stop=stop,
                report=lambda line: print(line, flush=True),
            )
        )

    generator = threading.Thread(target=traffic, daemon=True)
    generator.start()
    started = time.monotonic()
    interrupted = False
    try:
        while generator.is_alive() or time.monotonic() - started < args.duration + 20:
            if job.poll() is not None:
                print(f"demo: the job exited early with code {job.returncode}", file=sys.stderr)
                break
            time.sleep(5)
            records_in = job_input.consumed()
            with progress.lock:
                print(
                    f"progress +{time.monotonic() - started:5.0f}s: raw records in {records_in}, "
                    "enriched "
                    f"{progress.enriched}, dead-lettered {progress.dead_letters}, "
                    f"window counts {progress.usage_windows}, alerts {len(progress.alerts)}",
                    flush=True,
                )
            if not generator.is_alive() and time.monotonic() - started > args.duration + 20:
                break
    except KeyboardInterrupt:
        interrupted = True
        print("\ndemo: Ctrl-C, stopping", flush=True)
    finally:
        stop.set()
        generator.join(timeout=10)
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGTERM)
            try:
                job.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(job.pid, signal.SIGKILL)
                job.wait()
        watcher.join(timeout=5)
        job_input.close()
        if pinot is not None:
            pinot.stop_probe()

    produced = stats[0] if stats else None
    print("demo: summary")
    if produced is not None:
        print(
            f"  produced: {produced.records} records, {produced.events} request events "
            f"({produced.attack_events} from the attacker), {produced.bad_records} bad records"
        )
    print(
        f"  committed: enriched {progress.enriched}, dead-lettered {progress.dead_letters}, "
        f"window counts {progress.usage_windows}, alerts {len(progress.alerts)}"
    )
    rules = sorted({(a["rule"], a.get("consumer") or a["rate_key"]) for a in progress.alerts})
    for rule, who in rules:
        print(f"  alert: {rule} for {who}")
    if pinot is not None:
        end_ms = int(time.time() * 1000) + 60_000
        # Event times can trail the demo's start by the generator's out-of-orderness.
        start_ms = demo_start_ms - 60_000
        rows = pinot.wait_for(progress.enriched, start_ms, end_ms)
        print(f"  pinot: api_events holds {rows} of the {progress.enriched} enriched events")
        print(f"  pinot freshness: {pinot.freshness.summary()}")
        pinot.report(start_ms, end_ms)
        pinot.close()
    if not progress.alerts and not interrupted:
        print("  no alert arrived; see the Flink logs", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
