"""``make bench``: the pipeline against a Java-only ceiling and a plain Python loop, side by side.

    python -m bench.run [--events N] [--only job,python_loop] [--parallelism 2] ...

One run, one broker, one data set:
1. pre-load N realistic request events (testkit.traffic.bulk_traffic: APISIX arrays and objects,
   Kong, generic events; thousands of keys) into a fresh raw topic;
2. per contender, a throughput phase: it reads the pre-loaded topic from the beginning into its
   own fresh output topics; events/s = events in / (last - first output visible to a
   read_committed reader); CPU seconds and peak RSS of its whole process tree;
3. per contender, a latency phase: it runs on a fresh raw topic fed at a fixed rate; latency =
   when a read_committed reader sees an output event - CreateTime of its raw record;
4. a table on stdout, bench/results/latest.json and bench/results/latest.png.

Every option has a BENCH_* environment variable (flag wins). See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import importlib.metadata
import json
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from bench.kafka_io import (
    GeneratedTraffic,
    OutputWatcher,
    Paced,
    TrafficSpec,
    bulk_producer,
    pace,
    preload,
)
from bench.metrics import (
    Throughput,
    alert_latencies,
    assemble,
    bursts,
    cpu_between,
    events_between,
    format_table,
    latency_ms,
    latency_summary,
    parse_contenders,
    peak_rss_mb,
    steady_state,
    throughput_result,
)
from bench.procs import Contender, TreeSampler
from bench.profile import jvm_option, summarize_recording
from bench.task_time import TaskTimeSampler, busiest, free_port, minicluster_rest_config
from bench.thread_cpu import ThreadSampler
from metering.records import client_rate_key
from metering.redact import Pseudonymizer
from metering.settings import (
    HASH_KEY_ENV,
    PipelineSettings,
    parse_flink_config,
    read_hash_key,
    refuse_flink_config,
)
from metering.topics import OUTPUTS, TOPICS
from testkit.stack import SessionCluster, StackError, broker_at
from testkit.traffic import BulkRecord, auth_failure_burst, random_public_ips
from tools.topics import (
    TopicSpec,
    delete_topics,
    ensure_topics,
    job_topic_flags,
    named_pipeline_topics,
)

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench/results"
LOCAL = REPO / ".local"
JOB_DEFAULTS = PipelineSettings()
STARTUP_ALLOWANCE_S = 240.0
"""Time a contender may take to show its first output (JVM start, job graph, first checkpoint)."""
MIN_RATE = 200.0
"""Events/s below which a throughput phase is given up as stuck."""
MAX_DRAIN_S = 900.0
"""Longest wait for a latency phase's events once they are all produced."""
ATTACK_REQUESTS = 40
"""401s in each attack burst of the latency phase: twice the default auth_failures threshold."""
ATTACK_BURSTS_PER_WINDOW = 5
"""Attack bursts in each full window of the latency phase, each from a client of its own, spread
over the window: enough samples in a one-minute phase for a p99 that is more than one window."""


def say(msg: str) -> None:
    print(f"bench {datetime.now().strftime('%H:%M:%S')} {msg}", flush=True)


# -- options -----------------------------------------------------------------------------------


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a = p.add_argument
    a("--events", type=int, default=int(_env("BENCH_EVENTS", "1000000")), help="[BENCH_EVENTS]")
    a("--keys", type=int, default=int(_env("BENCH_KEYS", "5000")), help="API keys [BENCH_KEYS]")
    a(
        "--only",
        default=_env("BENCH_ONLY", "job,java_ceiling,python_loop"),
        help="contenders, comma-separated; job_session adds the job on a session cluster "
        "[BENCH_ONLY]",
    )
    a(
        "--rate",
        type=float,
        default=float(_env("BENCH_RATE", "5000")),
        help="events/s of the latency phase, and of the pre-loaded data's event time [BENCH_RATE]",
    )
    a(
        "--latency-seconds",
        type=float,
        default=float(_env("BENCH_LATENCY_SECONDS", "60")),
        help="length of the paced latency phase; 0 skips it [BENCH_LATENCY_SECONDS]",
    )
    a(
        "--warmup-rate",
        type=float,
        default=float(_env("BENCH_WARMUP_RATE", "100")),
        help="events/s until a contender's first output shows, before the latency phase "
        "[BENCH_WARMUP_RATE]",
    )
    a(
        "--checkpoint-seconds",
        type=int,
        default=int(
            _env("BENCH_CHECKPOINT_SECONDS", str(JOB_DEFAULTS.checkpoint_interval_seconds))
        ),
        help="checkpoint (and transaction) interval of every contender [BENCH_CHECKPOINT_SECONDS]",
    )
    a(
        "--parallelism",
        type=int,
        default=int(_env("BENCH_PARALLELISM", str(JOB_DEFAULTS.parallelism))),
        help="job/ceiling parallelism and python_loop processes; also the raw topic's "
        "partitions [BENCH_PARALLELISM]",
    )
    a(
        "--execution-mode",
        choices=["process", "thread"],
        default=_env("BENCH_EXECUTION_MODE", JOB_DEFAULTS.execution_mode),
        help="PyFlink execution mode of the job's keyed functions [BENCH_EXECUTION_MODE]",
    )
    a(
        "--parse-execution-mode",
        choices=["process", "thread"],
        default=_env("BENCH_PARSE_EXECUTION_MODE", JOB_DEFAULTS.parse_execution_mode),
        help="PyFlink execution mode of the job's parse operator [BENCH_PARSE_EXECUTION_MODE]",
    )
    a(
        "--bundle-size",
        type=int,
        default=int(_env("BENCH_BUNDLE_SIZE", "0")) or None,
        help="python.fn-execution.bundle.size for the job (default: Flink's) [BENCH_BUNDLE_SIZE]",
    )
    a(
        "--bundle-time",
        type=int,
        default=int(_env("BENCH_BUNDLE_TIME", "0")) or None,
        help="python.fn-execution.bundle.time in ms (default: the job's, 100) [BENCH_BUNDLE_TIME]",
    )
    a(
        "--flink-config",
        default=_env("BENCH_FLINK_CONFIG", ""),
        help="more Flink configuration for the job and the ceiling, key=value,... "
        "[BENCH_FLINK_CONFIG]",
    )
    a(
        "--parallelism-sweep",
        default=_env("BENCH_PARALLELISM_SWEEP", ""),
        help="also run the job's throughput phase at each of these parallelisms, e.g. 1,2 "
        "[BENCH_PARALLELISM_SWEEP]",
    )
    a(
        "--bootstrap-servers",
        default=_env("BENCH_BOOTSTRAP", f"127.0.0.1:{_env('BENCH_KAFKA_PORT', '49092')}"),
        help="broker; one on 127.0.0.1 is started (and stopped) if none answers "
        "[BENCH_BOOTSTRAP, BENCH_KAFKA_PORT]",
    )
    a(
        "--flink-rest",
        default=_env("BENCH_FLINK_REST", "127.0.0.1:48081"),
        help="session cluster for job_session; started (and stopped) if none answers "
        "[BENCH_FLINK_REST]",
    )
    a("--seed", type=int, default=int(_env("BENCH_SEED", "11")), help="[BENCH_SEED]")
    a(
        "--gen-workers",
        type=int,
        default=int(_env("BENCH_GEN_WORKERS", str(min(2, os.cpu_count() or 1)))),
        help="processes generating the pre-load [BENCH_GEN_WORKERS]",
    )
    a(
        "--profile-seconds",
        type=int,
        default=int(_env("BENCH_PROFILE_SECONDS", "0")),
        help="record this long a JDK Flight Recording of each Flink contender's JVM in the "
        "throughput phase and sum it by operator and SQL function; 0: none "
        "[BENCH_PROFILE_SECONDS]",
    )
    a(
        "--profile-delay",
        type=int,
        default=int(_env("BENCH_PROFILE_DELAY", "60")),
        help="seconds after the JVM starts before the recording begins, past the JIT's warm-up "
        "[BENCH_PROFILE_DELAY]",
    )
    a("--out", type=Path, default=RESULTS, help="results directory (default: bench/results)")
    a("--keep-topics", action="store_true", help="keep this run's topics (default: delete them)")
    return p


@dataclass
class Options:
    events: int
    keys: int
    contenders: list[str]
    rate: float
    latency_seconds: float
    warmup_rate: float
    checkpoint_seconds: int
    parallelism: int
    execution_mode: str
    parse_execution_mode: str
    flink_config: dict[str, str]
    sweep: list[int]
    bootstrap: str
    flink_rest: str
    seed: int
    gen_workers: int
    out: Path
    keep_topics: bool
    profile_seconds: int = 0
    profile_delay: int = 60


def options_from_args(argv: Sequence[str] | None) -> Options:
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        contenders = parse_contenders(ns.only)
        flink_config = parse_flink_config(ns.flink_config)
        refuse_flink_config(flink_config)  # the job would refuse it, after the set-up
        sweep = [int(x) for x in ns.parallelism_sweep.split(",") if x.strip()]
    except ValueError as e:
        parser.error(str(e))
    if ns.bundle_size:
        flink_config["python.fn-execution.bundle.size"] = str(ns.bundle_size)
    if ns.bundle_time:
        flink_config["python.fn-execution.bundle.time"] = str(ns.bundle_time)
    if ns.events < 1 or ns.keys < 1 or ns.rate <= 0 or ns.parallelism < 1:
        parser.error("--events, --keys, --rate and --parallelism must be positive")
    if ns.checkpoint_seconds < 1 or any(p < 1 for p in sweep):
        parser.error("--checkpoint-seconds and sweep parallelisms must be >= 1")
    return Options(
        events=ns.events,
        keys=ns.keys,
        contenders=contenders,
        rate=ns.rate,
        latency_seconds=ns.latency_seconds,
        warmup_rate=ns.warmup_rate,
        checkpoint_seconds=ns.checkpoint_seconds,
        parallelism=ns.parallelism,
        execution_mode=ns.execution_mode,
        parse_execution_mode=ns.parse_execution_mode,
        flink_config=flink_config,
        sweep=sweep,
        bootstrap=ns.bootstrap_servers,
        flink_rest=ns.flink_rest,
        seed=ns.seed,
        gen_workers=max(1, ns.gen_workers),
        out=ns.out,
        profile_seconds=max(0, ns.profile_seconds),
        profile_delay=max(0, ns.profile_delay),
        keep_topics=ns.keep_topics,
    )


# -- context -----------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def _jar_version(pattern: str, regex: str) -> str | None:
    for path in sorted(glob.glob(str(REPO / pattern))):
        m = re.search(regex, Path(path).name)
        if m:
            return m.group(1)
    return None


def versions() -> dict[str, Any]:
    import confluent_kafka

    java = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
        m = re.search(r'version "([^"]+)"', out.stderr + out.stdout)
        java = m.group(1) if m else None
    return {
        "flink": importlib.metadata.version("apache-flink"),
        "flink_kafka_connector": _jar_version(
            "build/jars/flink/flink-sql-connector-kafka-*.jar", r"kafka-(.+)\.jar$"
        ),
        "kafka": _jar_version("build/jars/kafka/kafka_2.13-*.jar", r"kafka_2\.13-(.+)\.jar$"),
        "confluent_kafka": importlib.metadata.version("confluent-kafka"),
        "librdkafka": confluent_kafka.libversion()[0],
        "python": platform.python_version(),
        "java": java,
    }


# -- broker and session cluster ----------------------------------------------------------------


@contextlib.contextmanager
def local_broker(bootstrap: str) -> Iterator[str]:
    """The broker at ``bootstrap`` (testkit.stack.broker_at): one that answers is used, a local
    one is started, and stopped afterwards, if none answers there. One that cannot be had
    ends the run."""
    with contextlib.ExitStack() as held:
        try:
            address = held.enter_context(broker_at(bootstrap, log=say))
        except StackError as e:
            raise SystemExit(f"bench: {e}") from None
        yield address


# -- contenders --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Topics:
    """One contender run's topics, role -> name for every topic of the catalog
    (metering.topics): the input it reads and its own fresh output topics."""

    names: dict[str, str]

    @classmethod
    def for_run(cls, prefix: str, raw: str) -> Topics:
        """``raw`` as the input, ``<prefix>.<role>`` for each output."""
        return cls({t.role: raw if t.sink is None else f"{prefix}.{t.role}" for t in TOPICS})

    def outputs(self) -> dict[str, str]:
        """The output topics, role -> name."""
        return {t.role: self.names[t.role] for t in OUTPUTS}

    # The topics the bench itself reads or hands to the Python loop.
    @property
    def raw(self) -> str:
        return self.names["raw"]

    @property
    def enriched(self) -> str:
        return self.names["enriched"]

    @property
    def usage(self) -> str:
        return self.names["usage"]

    @property
    def dlq(self) -> str:
        return self.names["dlq"]

    @property
    def alerts(self) -> str:
        return self.names["alerts"]


def job_flags(
    opts: Options,
    topics: Topics,
    group: str,
    parallelism: int,
    name: str,
    checkpoint_dir: str | None = None,
    extra_config: dict[str, str] | None = None,
) -> list[str]:
    """Flags of jobs.gateway_pipeline (and bench.java_ceiling) for one contender run.

    ``checkpoint_dir`` matters: without one, the embedded MiniCluster keeps checkpoints in the
    JobManager's memory, capped at 5 MB of state per task, and the job's per-key dedup state
    (900 s of request ids) outgrows that after roughly 150,000 events: checkpoints fail and the
    job restarts over and over.
    """
    flags = [
        "--bootstrap-servers",
        opts.bootstrap,
        *job_topic_flags(topics.names),
        "--group-id",
        group,
        "--transactional-id-prefix",
        group,
        "--startup-mode",
        "earliest-offset",
        "--checkpoint-interval-seconds",
        str(opts.checkpoint_seconds),
        "--parallelism",
        str(parallelism),
        "--execution-mode",
        opts.execution_mode,
        "--parse-execution-mode",
        opts.parse_execution_mode,
        "--job-name",
        name,
    ]
    if checkpoint_dir:
        flags += ["--checkpoint-dir", checkpoint_dir]
    config = opts.flink_config | (extra_config or {})
    if config:
        flags += ["--flink-config", ",".join(f"{k}={v}" for k, v in config.items())]
    return flags


def python_loop_flags(opts: Options, topics: Topics, group: str, index: int, of: int) -> list[str]:
    partitions = [str(p) for p in range(opts.parallelism) if p % of == index]
    return [
        "--bootstrap-servers",
        opts.bootstrap,
        "--raw-topic",
        topics.raw,
        "--partitions",
        ",".join(partitions),
        "--enriched-topic",
        topics.enriched,
        "--usage-topic",
        topics.usage,
        "--dlq-topic",
        topics.dlq,
        "--group-id",
        group,
        "--transactional-id",
        f"{group}-{index}",
        "--commit-seconds",
        str(opts.checkpoint_seconds),
        "--transaction-timeout-ms",
        str(JOB_DEFAULTS.transaction_timeout_ms),
        "--window-seconds",
        str(JOB_DEFAULTS.window_seconds),
        "--out-of-orderness-seconds",
        str(JOB_DEFAULTS.out_of_orderness_seconds),
    ]


@dataclass
class Launched:
    """A running contender: its processes (or a cluster job), how to sample and stop it."""

    roots: Callable[[], list[int]]
    alive: Callable[[], bool]
    stop: Callable[[], None]
    logs: list[Path] = field(default_factory=list)
    tail: Callable[[], str] = lambda: ""
    # The Flink REST endpoint that reports the contender's job (None: not a Flink job), and
    # the job's id where that endpoint may run others.
    rest: str | None = None
    job_id: str | None = None


class Bench:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.run_id = datetime.now().strftime("%Y%m%d-%H%M%S")
        self.prefix = f"bench.{self.run_id}"
        self.logs = LOCAL / "bench-logs" / self.run_id
        # Durable checkpoint storage, as in production (see job_flags); removed after the run.
        self.checkpoints = LOCAL / "bench-checkpoints" / self.run_id
        self.env = dict(os.environ)
        if not self.env.get(HASH_KEY_ENV):
            # Throwaway key, as the demo uses: fingerprints only have to be computed.
            self.env[HASH_KEY_ENV] = secrets.token_hex(32)
        self.env["PYTHONUNBUFFERED"] = "1"
        self.created_topics: list[str] = []
        self.cluster: SessionCluster | None = None
        self.events = 0
        self.raw_topic = ""
        self.paced: list[BulkRecord] = []
        self.warmup: list[BulkRecord] = []
        # Attack windows of the latency phase: (window start, index in ``paced`` of the burst's
        # record, the burst's client address).
        self.attacks: list[tuple[int, int, str]] = []

    # -- topics

    def create_topics(self, names: Sequence[str]) -> None:
        ensure_topics(self.opts.bootstrap, {n: TopicSpec(self.opts.parallelism) for n in names})
        self.created_topics += list(names)

    def topics(self, contender: str, phase: str, raw: str) -> Topics:
        topics = Topics.for_run(f"{self.prefix}.{contender}.{phase}", raw)
        specs = named_pipeline_topics(topics.outputs(), self.opts.parallelism)
        ensure_topics(self.opts.bootstrap, specs)
        self.created_topics += list(specs)
        return topics

    def cleanup(self) -> None:
        shutil.rmtree(self.checkpoints, ignore_errors=True)
        if self.opts.keep_topics or not self.created_topics:
            return
        with contextlib.suppress(Exception):
            delete_topics(self.opts.bootstrap, self.created_topics)

    # -- launching

    def launch(self, contender: str, topics: Topics, tag: str, parallelism: int) -> Launched:
        opts = self.opts
        group = f"{self.prefix}.{contender}.{tag}"
        log_dir = self.logs / f"{contender}-{tag}"
        env = dict(self.env, FLINK_LOG_DIR=str(log_dir))
        if contender in ("job", "java_ceiling") and tag == "t" and opts.profile_seconds:
            # PyFlink starts the MiniCluster's JVM with JVM_ARGS (pyflink_gateway_server).
            option = jvm_option(
                self.recording(contender, tag), opts.profile_delay, opts.profile_seconds
            )
            env["JVM_ARGS"] = f"{env.get('JVM_ARGS', '')} {option}".strip()
        py = sys.executable
        checkpoints = (self.checkpoints / f"{contender}-{tag}").as_uri()
        if contender in ("job", "java_ceiling"):
            module = "jobs.gateway_pipeline" if contender == "job" else "bench.java_ceiling"
            # The MiniCluster's REST endpoint, on 127.0.0.1 only, for its task time.
            port = free_port()
            flags = job_flags(
                opts,
                topics,
                group,
                parallelism,
                f"bench-{contender}",
                checkpoints,
                minicluster_rest_config(port),
            )
            proc = Contender(contender, [py, "-m", module, *flags], env, REPO, log_dir / "out.log")

            def stop_one() -> None:
                proc.stop()

            return Launched(
                roots=lambda: [proc.pid] if proc.alive() else [],
                alive=proc.alive,
                stop=stop_one,
                logs=[proc.log_path],
                tail=proc.log_tail,
                rest=f"127.0.0.1:{port}",
            )
        if contender == "python_loop":
            procs = [
                Contender(
                    f"{contender}-{i}",
                    [
                        py,
                        "-m",
                        "bench.python_loop",
                        *python_loop_flags(opts, topics, group, i, parallelism),
                    ],
                    env,
                    REPO,
                    log_dir / f"out-{i}.log",
                )
                for i in range(parallelism)
            ]

            def stop_all() -> None:
                for p in procs:
                    p.stop()

            return Launched(
                roots=lambda: [p.pid for p in procs if p.alive()],
                alive=lambda: all(p.alive() for p in procs),
                stop=stop_all,
                logs=[p.log_path for p in procs],
                tail=lambda: "\n".join(p.log_tail(10) for p in procs),
            )
        if contender == "job_session":
            return self._launch_on_cluster(topics, group, parallelism, env, log_dir, checkpoints)
        raise ValueError(contender)

    def _launch_on_cluster(
        self,
        topics: Topics,
        group: str,
        parallelism: int,
        env: dict[str, str],
        log_dir: Path,
        checkpoints: str,
    ) -> Launched:
        from jobs.submit import Rest, client_environment

        if self.cluster is None:
            # One single-slot TaskManager per subtask unless the environment chose: in thread
            # mode each TaskManager runs Python in its own interpreter, so subtasks in one
            # TaskManager share one GIL (docs/performance.md).
            self.cluster = SessionCluster(
                self.opts.flink_rest,
                self.env[HASH_KEY_ENV],
                taskmanagers=self.opts.parallelism,
                task_slots=1,
                env=self.env,
                log=say,
            )
            self.cluster.ensure(reuse=True)
        cluster = self.cluster
        flags = job_flags(self.opts, topics, group, parallelism, "bench-job-session", checkpoints)
        log_dir.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(
            [sys.executable, "-m", "jobs.submit", "--flink-rest", cluster.rest, *flags],
            cwd=REPO,
            env=client_environment(cluster.rest) | {HASH_KEY_ENV: env[HASH_KEY_ENV]},
            capture_output=True,
            text=True,
            check=False,
        )
        (log_dir / "submit.log").write_text(out.stdout + out.stderr)
        job_id = out.stdout.strip().splitlines()[-1] if out.returncode == 0 and out.stdout else ""
        if not re.fullmatch(r"[0-9a-f]{32}", job_id):
            raise RuntimeError(f"submission failed: {(out.stdout + out.stderr)[-1500:]}")
        rest = Rest(cluster.rest)

        def alive() -> bool:
            try:
                return rest.job(job_id)["state"] in ("RUNNING", "CREATED", "INITIALIZING")
            except (urllib.error.URLError, OSError):
                return False

        def stop() -> None:
            with contextlib.suppress(urllib.error.URLError, OSError):
                rest.call("PATCH", f"/jobs/{job_id}?mode=cancel")
            deadline = time.monotonic() + 60
            while alive() and time.monotonic() < deadline:
                time.sleep(0.5)

        return Launched(
            roots=cluster.pids,
            alive=alive,
            stop=stop,
            logs=[log_dir / "submit.log"],
            rest=cluster.rest,
            job_id=job_id,
        )

    # -- phases

    def throughput(self, contender: str, parallelism: int, tag: str = "t") -> dict[str, Any]:
        opts = self.opts
        topics = self.topics(contender, tag, self.raw_topic)
        watcher = OutputWatcher(opts.bootstrap, topics.enriched, [topics.dlq])
        say(f"{contender}: throughput phase (parallelism {parallelism})")
        started = time.time()
        launched = self.launch(contender, topics, tag, parallelism)
        sampler = TreeSampler(launched.roots)
        threads = ThreadSampler(launched.roots)
        task_time = TaskTimeSampler(launched.rest, launched.job_id) if launched.rest else None
        try:
            with sampler, threads, task_time or contextlib.nullcontext():
                timeout = STARTUP_ALLOWANCE_S + self.events / MIN_RATE
                complete = self._wait(watcher, self.events, timeout, launched, contender)
        finally:
            launched.stop()
            watcher.close()
        span = watcher.span.bounds_ms()
        # CPU from the first record processed (not the JVM's start-up) to the last visible output.
        t0 = span[0] / 1000 if span else (watcher.first_visible or started)
        t1 = watcher.last_visible or time.time()
        result = throughput_result(
            Throughput(
                events_in=self.events,
                events_out=watcher.total,
                first_visible=watcher.first_visible,
                last_visible=watcher.last_visible,
                commits=bursts(watcher.visible_times),
                processing_ms=span,
                cpu_s=cpu_between(sampler.samples, t0, t1),
                peak_rss_mb=peak_rss_mb(sampler.samples),
                wall_s=time.time() - started,
                complete=complete,
                steady=steady_state(watcher.span.per_second(), span, sampler.samples),
            )
        )
        result["logs"] = [str(p) for p in launched.logs]
        if (steady_window := result["steady"]) and span:
            end = span[1] / 1000
            result["cpu_by_stage"] = threads.by_stage(
                end - steady_window["window_s"], end, steady_window["events"]
            )
            for row in result["cpu_by_stage"]:
                say(f"{contender}: {row['cpu_us_per_event']:>6} CPU us/event  {row['stage']}")
        if contender in ("job", "java_ceiling") and tag == "t" and opts.profile_seconds:
            result["profile"] = self.profile(contender, tag, watcher, sampler)
        if task_time is not None:
            last = span[1] / 1000 if span else t1
            result["task_time"] = task_time.result(t0, last)
            for v in busiest(result["task_time"]["vertices"]):
                say(
                    f"{contender}: busy {v['busy_ms_per_s']['max']:,.0f} ms/s, backpressured "
                    f"{v.get('backpressured_ms_per_s', {}).get('max', 0):,.0f} ms/s: {v['vertex']}"
                )
        steady = result["steady"] or {}
        say(
            f"{contender}: {result['events_per_s']:,.0f} events/s, "
            f"{result['cpu_s_per_million']} CPU s/M, peak RSS {result['peak_rss_mb']} MB; "
            f"steady state {steady.get('events_per_s')} events/s, "
            f"{steady.get('cpu_s_per_million')} CPU s/M"
            + ("" if complete else f" (INCOMPLETE: {watcher.total}/{self.events})")
        )
        return result

    def recording(self, contender: str, tag: str) -> Path:
        return self.logs / f"{contender}-{tag}" / "profile.jfr"

    def profile(
        self, contender: str, tag: str, watcher: OutputWatcher, sampler: TreeSampler
    ) -> dict[str, Any]:
        """The recording's attribution, with the CPU per event over its own window."""
        profile = summarize_recording(self.recording(contender, tag))
        window = profile.get("window")
        if window:
            events = events_between(watcher.span.per_second(), window[0], window[1])
            cpu = cpu_between(sampler.samples, window[0], window[1])
            profile["events"] = events
            profile["cpu_us_per_event"] = round(cpu / events * 1e6, 1) if events else None
            for op in profile["operators"][:4]:
                say(f"{contender}: profile {op['percent']} % {op['operator']} {op['functions']}")
            say(
                f"{contender}: profile window {profile['cpu_us_per_event']} CPU us/event, "
                f"JIT compiling {profile['jit_compile_s']} s of {window[1] - window[0]:.0f} s"
            )
        return profile

    def _wait(
        self, watcher: OutputWatcher, events: int, timeout_s: float, launched: Launched, name: str
    ) -> bool:
        deadline = time.monotonic() + timeout_s
        last_report = time.monotonic()
        while watcher.total < events:
            if not launched.alive():
                say(f"{name}: exited early; log tail:\n{launched.tail()}")
                return False
            if time.monotonic() > deadline:
                say(f"{name}: timed out with {watcher.total}/{events} events visible")
                return False
            if time.monotonic() - last_report > 30:
                say(f"{name}: {watcher.total:,}/{events:,} events visible")
                last_report = time.monotonic()
            time.sleep(0.2)
        return True

    def drain_allowance(self, sustained_rate: float | None) -> float:
        """Seconds to wait for the paced events after the last was produced: a few checkpoints,
        plus the backlog a contender slower than the paced rate has left (at the rate its
        throughput phase sustained, with 50 % margin), at most ``MAX_DRAIN_S``."""
        opts = self.opts
        base = max(60.0, 4.0 * opts.checkpoint_seconds)
        if not sustained_rate:
            return min(MAX_DRAIN_S, base + opts.latency_seconds)
        backlog_s = opts.rate * opts.latency_seconds / sustained_rate - opts.latency_seconds
        return min(MAX_DRAIN_S, base + 1.5 * max(0.0, backlog_s))

    def latency(self, contender: str, sustained_rate: float | None = None) -> dict[str, Any]:
        opts = self.opts
        raw = f"{self.prefix}.{contender}.live"
        self.create_topics([raw])
        topics = self.topics(contender, "l", raw)
        watcher = OutputWatcher(
            opts.bootstrap, topics.enriched, track_sources=True, alerts_topic=topics.alerts
        )
        say(f"{contender}: latency phase ({opts.rate:,.0f} events/s for {opts.latency_seconds} s)")
        launched = self.launch(contender, topics, "l", opts.parallelism)
        sampler = TreeSampler(launched.roots)
        measured = Paced()
        try:
            with sampler:
                if not self._warm_up(raw, watcher, launched, contender):
                    return {"error": "no output during warm-up", "log_tail": launched.tail()[-800:]}
                producer = bulk_producer(opts.bootstrap, {"linger.ms": 5})
                pace(producer, raw, self.paced, opts.rate, lambda: not launched.alive(), measured)
                deadline = time.monotonic() + self.drain_allowance(sustained_rate)
                last_report = time.monotonic()
                expected_alerts = self.attack_alerts()
                while time.monotonic() < deadline and launched.alive():
                    seen = sum(1 for p, o, _ in watcher.sources if (p, o) in measured.produced_ms)
                    alerted = all(k in watcher.alerts for k in expected_alerts)
                    if seen >= measured.events and (alerted or not alerts_expected(contender)):
                        break
                    if time.monotonic() - last_report > 30:
                        say(f"{contender}: {seen:,}/{measured.events:,} paced events visible")
                        last_report = time.monotonic()
                    time.sleep(1.0)
                ended = time.time()
        finally:
            launched.stop()
            watcher.close()
        lat, missing = latency_ms(
            watcher.sources, measured.produced_ms, measured.record_events, censor_at=ended
        )
        duration = max(measured.ended - measured.started, 1e-9)
        cores = cpu_between(sampler.samples, measured.started, measured.ended) / duration
        alerting = (
            self.alert_latency(watcher.alerts, measured) if alerts_expected(contender) else None
        )
        result = {
            "latency_ms": latency_summary(lat),
            "alert_latency": alerting,
            "latency_phase": {
                "rate": opts.rate,
                "achieved_rate": round(measured.events / duration, 1),
                "seconds": round(duration, 1),
                "events": measured.events,
                "visible": len(lat) - missing,
                "missing": missing,
                "lower_bound": missing > 0,
                "max_ms": round(max(lat), 1) if lat else None,
                "cpu_cores": round(cores, 2),
                "peak_rss_mb": peak_rss_mb(sampler.samples),
                "checkpoint_seconds": opts.checkpoint_seconds,
                "waited_after_s": round(ended - measured.ended, 1),
                "delivery_errors": len(measured.errors),
            },
        }
        s = latency_summary(lat)
        say(f"{contender}: latency p50 {s['p50']} ms, p99 {s['p99']} ms, {cores:.2f} cores")
        if alerting is not None:
            say(
                f"{contender}: alert latency p50 {alerting['ms']['p50']} ms, "
                f"p99 {alerting['ms']['p99']} ms, max {alerting['max_ms']} ms over "
                f"{alerting['attacks']} attacks in {alerting['windows']} windows, "
                f"{alerting['missing']} without an alert"
            )
        return result

    def alert_latency(
        self, alerts: dict[tuple[str, str, int], float], measured: Paced
    ) -> dict[str, Any]:
        """Per attack: from handing the producer its burst (one record that holds the attack's
        events, the last of them included) to its auth_failures alert being readable."""
        burst_indexes = [burst_index for _, burst_index, _ in self.attacks]
        per_attack = alert_latencies(self.attack_alerts(), burst_indexes, alerts, measured.sent_at)
        samples = [ms for ms in per_attack if ms is not None]
        return {
            "ms": latency_summary(samples),
            "max_ms": round(max(samples), 1) if samples else None,
            "attacks": len(self.attacks),
            "windows": len({w for w, _, _ in self.attacks}),
            "missing": len(per_attack) - len(samples),
            # In send order, so a cold JVM's first minutes show apart from what follows.
            "per_attack_ms": [None if ms is None else round(ms, 1) for ms in per_attack],
            "window_seconds": JOB_DEFAULTS.window_seconds,
            "out_of_orderness_seconds": JOB_DEFAULTS.out_of_orderness_seconds,
            "early_alerts": JOB_DEFAULTS.early_alerts,
            "alerts_delivery": "at-least-once (visible without waiting for a checkpoint)",
        }

    def attack_alerts(self) -> list[tuple[str, str, int]]:
        """The (rule, rate key, window start) of the alert each attack should raise: the
        job counts rejected calls per client, under the client address's keyed hash."""
        ps = Pseudonymizer(read_hash_key(self.env))
        return [("auth_failures", client_rate_key(ps, ip), w) for w, _, ip in self.attacks]

    def _warm_up(self, raw: str, watcher: OutputWatcher, launched: Launched, name: str) -> bool:
        """Low-rate traffic until the contender's first output is visible (JVM up, job running,
        first checkpoint committed), so start-up is not counted as latency."""
        stop = threading.Event()
        producer = bulk_producer(self.opts.bootstrap, {"linger.ms": 5})

        def feed() -> None:
            while not stop.is_set():
                pace(producer, raw, self.warmup, self.opts.warmup_rate, stop.is_set)

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        deadline = time.monotonic() + STARTUP_ALLOWANCE_S
        try:
            while watcher.enriched == 0:
                if not launched.alive() or time.monotonic() > deadline:
                    say(f"{name}: no output during warm-up; log tail:\n{launched.tail()}")
                    return False
                time.sleep(0.2)
        finally:
            stop.set()
            feeder.join(timeout=30)
        return True

    # -- the whole run

    def run(self) -> dict[str, Any]:
        opts = self.opts
        machine = machine_info()
        say(
            f"{machine['cpu_model']}, {machine['cores']} cores, load {machine['load_avg_1m']}; "
            f"broker {opts.bootstrap}; logs in {self.logs}"
        )
        tmp = LOCAL / "bench-tmp"
        now_ms = int(time.time() * 1000)
        span_ms = int(opts.events / opts.rate * 1000)
        say(f"generating {opts.events:,} events from {opts.keys:,} keys")
        t0 = time.monotonic()
        pre = GeneratedTraffic(
            TrafficSpec(opts.events, now_ms - span_ms, opts.keys, opts.rate, opts.seed),
            opts.gen_workers,
            tmp,
        )
        self.events = pre.events
        self.raw_topic = f"{self.prefix}.raw"
        self.create_topics([self.raw_topic])
        try:
            records, events = preload(opts.bootstrap, self.raw_topic, iter(pre))
        finally:
            pre.remove()
        say(
            f"pre-loaded {records:,} records / {events:,} events into {self.raw_topic} "
            f"in {time.monotonic() - t0:.0f} s"
        )
        if opts.latency_seconds > 0:
            n = int(opts.rate * opts.latency_seconds)
            # Each latency phase runs a fresh job on a fresh topic, minutes from now: event times
            # from now on are in its past, never beyond the job's --max-future-skew-seconds,
            # which dead-letters them (event_time_future) and left every paced event invisible.
            start = now_ms
            self.paced = GeneratedTraffic(
                TrafficSpec(n, start, opts.keys, opts.rate, opts.seed + 1), opts.gen_workers, tmp
            ).load_and_remove()
            warm_n = int(opts.warmup_rate * STARTUP_ALLOWANCE_S)
            warm_start = start - int(STARTUP_ALLOWANCE_S * 1000)
            self.warmup = GeneratedTraffic(
                TrafficSpec(warm_n, warm_start, opts.keys, opts.warmup_rate, opts.seed + 2), 1, tmp
            ).load_and_remove()
            self.paced, self.attacks = with_attacks(
                self.paced, start, start + int(opts.latency_seconds * 1000), opts.seed
            )
            say(
                f"generated {n:,} paced and {warm_n:,} warm-up events, "
                f"{len(self.attacks)} auth-failure bursts"
            )

        results: dict[str, dict[str, Any]] = {}
        for contender in opts.contenders:
            result: dict[str, Any] = {}
            try:
                result |= self.throughput(contender, opts.parallelism)
                if opts.latency_seconds > 0:
                    sustained = (
                        result.get("events_per_s") if result["throughput"]["complete"] else None
                    )
                    result |= self.latency(contender, sustained)
                else:
                    result["latency_ms"] = latency_summary([])
            except Exception as e:  # one contender failing must not lose the others' results
                say(f"{contender}: failed: {type(e).__name__}: {e}")
                result["error"] = f"{type(e).__name__}: {e}"
            for key in ("events_per_s", "cpu_s_per_million", "steady", "peak_rss_mb"):
                result.setdefault(key, None)
            result.setdefault("latency_ms", latency_summary([]))
            results[contender] = result

        extra: dict[str, Any] = {}
        if opts.sweep:
            sweep = []
            for p in opts.sweep:
                r = self.throughput("job", p, tag=f"p{p}")
                sweep.append(
                    {
                        "parallelism": p,
                        **{k: r.get(k) for k in ("events_per_s", "cpu_s_per_million", "steady")},
                        "peak_rss_mb": r.get("peak_rss_mb"),
                    }
                )
            extra["parallelism_sweep"] = {"job": sweep}

        params = {
            "events": self.events,
            "keys": opts.keys,
            "rate": opts.rate,
            "latency_seconds": opts.latency_seconds,
            "warmup_rate": opts.warmup_rate,
            "checkpoint_seconds": opts.checkpoint_seconds,
            "parallelism": opts.parallelism,
            "partitions": opts.parallelism,
            "execution_mode": opts.execution_mode,
            "parse_execution_mode": opts.parse_execution_mode,
            "flink_config": opts.flink_config,
            "seed": opts.seed,
            "contenders": opts.contenders,
            "bootstrap_servers": opts.bootstrap,
            "profile_seconds": opts.profile_seconds,
            "profile_delay": opts.profile_delay,
        }
        return assemble(
            results,
            machine=machine,
            versions=versions(),
            params=params,
            events=self.events,
            date=datetime.now(UTC).isoformat(timespec="seconds"),
            extra=extra,
        )


def alerts_expected(contender: str) -> bool:
    """Only the job detects anomalies; the ceiling and the loop count windows."""
    return contender in ("job", "job_session")


def with_attacks(
    paced: list[BulkRecord], start_ms: int, end_ms: int, seed: int
) -> tuple[list[BulkRecord], list[tuple[int, int, str]]]:
    """``paced`` with ``ATTACK_BURSTS_PER_WINDOW`` auth-failure bursts (each one client,
    ``ATTACK_REQUESTS`` wrong keys) spread from 1 s into every full window whose end the
    watermark passes before the phase ends, and per burst (window start, index of the burst's
    record in send order, its client address)."""
    window_ms = JOB_DEFAULTS.window_seconds * 1000
    margin = (JOB_DEFAULTS.out_of_orderness_seconds + 1) * 1000
    # From 1 s into the window to 1 s before its end, so that every burst's 40 ms fit inside.
    step = (window_ms - 2000) // ATTACK_BURSTS_PER_WINDOW
    starts: list[tuple[int, int]] = []
    w = (start_ms // window_ms + 1) * window_ms
    while w + window_ms + margin <= end_ms:
        starts.extend((w, w + 1000 + k * step) for k in range(ATTACK_BURSTS_PER_WINDOW))
        w += window_ms
    # Not the seeds bulk_traffic draws its consumers' and scanners' addresses from, so each burst
    # has a rate key of its own.
    ips = random_public_ips(len(starts), seed + 1000, ipv6_share=0.0)
    out = list(paced)
    bursts = []
    for i, (_, at) in enumerate(starts):
        burst = auth_failure_burst(at, ATTACK_REQUESTS, ips[i], seed + i)
        out.insert(last_sent_before(out, burst.emit_ms + 1) + 1, burst)
        bursts.append(burst)
    index = {id(r): i for i, r in enumerate(out)}
    return out, [(w, index[id(b)], ip) for (w, _), b, ip in zip(starts, bursts, ips, strict=True)]


def last_sent_before(records: Sequence[BulkRecord], emit_ms: int) -> int:
    """Index of the last record, in send order, emitted before ``emit_ms`` (-1 if none).

    A scan, not a bisection: the generator's parallel time slices overlap by the gateways'
    batching delay, so send order is not sorted by emit time at slice boundaries.
    """
    return max((i for i, r in enumerate(records) if r.emit_ms < emit_ms), default=-1)


def write_results(doc: dict[str, Any], out: Path) -> tuple[Path, Path]:
    from bench.plot import write_png

    out.mkdir(parents=True, exist_ok=True)
    stamp = str(doc["date"]).replace(":", "").replace("-", "")
    json_path = out / "latest.json"
    text = json.dumps(doc, indent=2, sort_keys=False)
    json_path.write_text(text + "\n")
    (out / f"run-{stamp}.json").write_text(text + "\n")
    png_path = out / "latest.png"
    write_png(doc, png_path)
    return json_path, png_path


def main(argv: Sequence[str] | None = None) -> int:
    opts = options_from_args(argv)
    bench = Bench(opts)
    with local_broker(opts.bootstrap):
        try:
            doc = bench.run()
        finally:
            bench.cleanup()
            if bench.cluster is not None:
                bench.cluster.release()
    json_path, png_path = write_results(doc, opts.out)
    print()
    print(format_table(doc))
    print()
    print(
        f"results: {json_path.relative_to(REPO) if json_path.is_relative_to(REPO) else json_path}"
    )
    print(f"plot:    {png_path.relative_to(REPO) if png_path.is_relative_to(REPO) else png_path}")
    failed = [name for name in opts.contenders if doc[name].get("error")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
