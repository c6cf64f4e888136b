"""The job's parse stage on its own: how many events/s the Python parse sustains in a Flink job.

    python -m bench.parse_stage [--events N] [--parallelism P] [--parse-execution-mode M]
                                [--flink-config k=v,...]

A bounded job reads pre-loaded bench traffic from Kafka and runs only the job's parse, validate,
redact and geo-enrich function (``udfs.functions.ParseRecords``), the records' watermarks and their
unnest, into a blackhole sink: what the full job does before SQL takes over. It runs twice, over N
and over 2N events, each in a fresh process on the embedded MiniCluster, and reports N / (t(2N) -
t(N)), so that what both runs pay once (job submission, deployment, Python worker start-up, the
final checkpoint) cancels out. A run that fails over is refused rather than timed: its restart
strategy is none. Environment variables such as ``_python_worker_execution_mode`` reach the job
unchanged. docs/performance.md compares the variants.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Sequence

from bench.kafka_io import preload
from bench.run import REPO, local_broker, say
from metering.settings import HASH_KEY_ENV, PipelineSettings
from testkit.traffic import bulk_traffic, max_event_age_covering
from tools.topics import TopicSpec, delete_topics, ensure_topics

START_MS = 1_767_225_600_000


def rate(events: int, wall_n_s: float, wall_2n_s: float) -> float:
    """Events/s from the wall times of runs over N and 2N events: start-up cancels out."""
    if wall_2n_s <= wall_n_s:
        raise ValueError(f"the 2N run ({wall_2n_s:.1f} s) was not slower than N ({wall_n_s:.1f} s)")
    return events / (wall_2n_s - wall_n_s)


def run_child(topic: str, args: argparse.Namespace) -> None:
    """One bounded run over ``topic``, in this process; prints its wall time."""
    from jobs import pipeline_sql
    from jobs.gateway_pipeline import (
        create_environment,
        kafka_source,
        parse_records,
        parsed_records_view,
    )
    from metering.settings import settings_from_args

    flags = [
        "--bootstrap-servers", args.bootstrap,
        "--raw-topic", topic,
        "--group-id", f"{topic}-{time.time_ns()}",
        "--startup-mode", "earliest-offset",
        "--bounded",
        "--parallelism", str(args.parallelism),
        "--parse-execution-mode", args.parse_execution_mode,
        "--transactional-id-prefix", topic,
        # The data is stamped from a fixed date: accept it as it would be on that day.
        "--max-event-age-seconds", str(max_event_age_covering(START_MS)),
    ]  # fmt: skip
    # A failover would lengthen one run and skew the difference; fail the run instead.
    config = ",".join(c for c in (args.flink_config, "restart-strategy.type=none") if c)
    flags += ["--flink-config", config]
    cfg = settings_from_args(flags, prog="bench.parse_stage", description="")
    env, t_env = create_environment(cfg, cfg.flink_overrides())
    raw = kafka_source(t_env, cfg)
    records = parse_records(t_env, raw, cfg)
    parsed_records_view(t_env, records, cfg)
    t_env.execute_sql(
        "CREATE TEMPORARY TABLE parsed_sink (rate_key STRING, event_time BIGINT) "
        "WITH ('connector' = 'blackhole')"
    )
    t_env.create_temporary_view("parsed", t_env.sql_query(pipeline_sql.parsed_events_query()))
    statements = t_env.create_statement_set()
    statements.add_insert_sql("INSERT INTO parsed_sink SELECT rate_key, event_time FROM parsed")
    statements.attach_as_datastream()
    started = time.monotonic()
    env.execute("bench-parse-stage")
    print(f"WALL {time.monotonic() - started:.2f}", flush=True)


def timed_run(topic: str, args: argparse.Namespace, env: dict[str, str], timeout_s: float) -> float:
    child = [
        sys.executable, "-m", "bench.parse_stage", "--child", topic,
        "--bootstrap", args.bootstrap,
        "--parallelism", str(args.parallelism),
        "--parse-execution-mode", args.parse_execution_mode,
        "--flink-config", args.flink_config,
    ]  # fmt: skip
    try:
        out = subprocess.run(
            child, cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        raise SystemExit(f"parse stage run over {topic} took more than {timeout_s:.0f} s") from None
    walls = [line.split()[1] for line in out.stdout.splitlines() if line.startswith("WALL ")]
    if out.returncode != 0 or not walls:
        raise SystemExit(f"parse stage run failed:\n{(out.stdout + out.stderr)[-3000:]}")
    return float(walls[-1])


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.parse_stage", description=__doc__)
    p.add_argument("--events", type=_positive, default=150_000, help="N (the second run reads 2N)")
    p.add_argument("--keys", type=_positive, default=5000)
    p.add_argument("--parallelism", type=_positive, default=2)
    p.add_argument(
        "--parse-execution-mode",
        choices=["process", "thread"],
        default=PipelineSettings().parse_execution_mode,
    )
    p.add_argument("--flink-config", default="", help="k=v,... for the job")
    p.add_argument(
        "--bootstrap",
        default=os.environ.get("BENCH_BOOTSTRAP", "127.0.0.1:49092"),
        help="broker; a local one is started on that port if none answers [BENCH_BOOTSTRAP]",
    )
    p.add_argument("--child", metavar="TOPIC", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.child:
        run_child(args.child, args)
        return 0
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault(HASH_KEY_ENV, secrets.token_hex(32))
    prefix = f"bench.parse-stage.{time.strftime('%Y%m%d-%H%M%S')}"
    topics = {f"{prefix}.n": args.events, f"{prefix}.2n": 2 * args.events}
    # Generous: start-up plus the slowest rate seen on two cores (thread mode, about 1,000/s).
    timeout_s = 300 + 2 * args.events / 1000
    with local_broker(args.bootstrap):
        try:
            ensure_topics(args.bootstrap, {t: TopicSpec(args.parallelism) for t in topics})
            for topic, events in topics.items():
                traffic = bulk_traffic(events, start_ms=START_MS, keys=args.keys)
                records, loaded = preload(args.bootstrap, topic, traffic)
                say(f"pre-loaded {records:,} records / {loaded:,} events into {topic}")
            walls = [timed_run(topic, args, env, timeout_s) for topic in topics]
        finally:
            delete_topics(args.bootstrap, list(topics))
    try:
        events_per_s = rate(args.events, walls[0], walls[1])
    except ValueError as e:
        raise SystemExit(f"parse stage: {e}; try more --events") from None
    mode = args.parse_execution_mode
    workers = os.environ.get("_python_worker_execution_mode", "")  # noqa: SIM112 (PyFlink's name)
    say(
        f"parse stage: {events_per_s:,.0f} events/s (parallelism {args.parallelism}, {mode} "
        f"mode{', workers: ' + workers if workers else ''}; runs of {args.events:,} and "
        f"{2 * args.events:,} events took {walls[0]:.1f} and {walls[1]:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
