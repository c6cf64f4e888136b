"""Gateway pipeline: raw gateway access logs -> enriched events, usage counts, alerts, dead letters.

    source (Kafka raw topic, value + topic/partition/offset)
      -> parse + validate + redact + geo-enrich   (dead letters to a side output)
      -> event-time watermarks from the payload
      -> per key: drop gateway retries, tumbling windows -> usage counts (+ late corrections)
      -> per-key anomaly detection -> alerts
      -> per source partition: reconciliation (in = enriched + dead-lettered + deduplicated)
    sinks: enriched, usage, dead letters and reconciliation exactly-once (Kafka transactions
    committed on each checkpoint); alerts at-least-once by default, with deterministic ids.

Runs on the embedded MiniCluster (``python -m jobs.gateway_pipeline``) and unchanged on a cluster.
"""

from __future__ import annotations

import logging
import os
import sys
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pyflink.common import Configuration, Duration, WatermarkStrategy
from pyflink.datastream import CheckpointingMode, DataStream, StreamExecutionEnvironment
from pyflink.table import StreamTableEnvironment
from pyflink.table.expressions import col

from jobs.kafka_tables import SourceSpec, sink_ddl, sink_specs, source_ddl
from jobs.preflight import check_brokers
from metering.geo import GeoLookup
from metering.settings import HashKeyError, PipelineSettings, read_hash_key, settings_from_args
from udfs.functions import (
    DEAD_LETTERS,
    ENRICHED_TYPE,
    KEYED_JSON_TYPE,
    KEYED_LEDGER,
    PARSE_LEDGER,
    USAGE,
    DetectAnomalies,
    EventTime,
    KeyedWindows,
    ParseEnrich,
    RateKey,
    Reconcile,
    SourcePartition,
)

log = logging.getLogger("gateway_pipeline")
REPO_ROOT = Path(__file__).resolve().parent.parent
LOCAL_CHECKPOINTS = REPO_ROOT / ".local" / "checkpoints"


@dataclass(frozen=True)
class Streams:
    enriched: DataStream
    dead_letters: DataStream
    usage: DataStream
    alerts: DataStream
    reconciliation: DataStream


def submitted_by_flink_cli() -> bool:
    """True when `flink run` started this program: its JVM already exists and owns the config."""
    return "PYFLINK_GATEWAY_PORT" in os.environ


def _python_path() -> list[str]:
    paths = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    paths.append(str(REPO_ROOT))
    return list(dict.fromkeys(paths))


def create_environment(
    cfg: PipelineSettings, overrides: dict[str, str] | None = None
) -> tuple[StreamExecutionEnvironment, StreamTableEnvironment]:
    local = not submitted_by_flink_cli()
    if local:
        # Embedded MiniCluster: this process launches the JVM, at the first pyflink object
        # (Configuration() below), and the JVM reads LOG4J_PROPERTIES then.
        os.environ.setdefault(
            "LOG4J_PROPERTIES", str(REPO_ROOT / "deploy/flink/log4j-cli.properties")
        )
    conf = Configuration()
    conf.set_string("python.execution-mode", cfg.execution_mode)
    if local:
        # Python workers (process mode) and the embedded interpreter (thread mode) use this
        # venv. On a cluster, `flink run -pyexec` and the cluster's configuration decide.
        conf.set_string("python.executable", sys.executable)
        conf.set_string("python.client.executable", sys.executable)
        # Thread mode embeds CPython through PEMJA, which starts from the base interpreter and
        # would not see this venv ("No module named pemja") without its site-packages.
        conf.set_string("python.pythonpath", os.pathsep.join(_python_path()))
    conf.set_string("pipeline.jars", Path(cfg.resolved_connector_jar()).resolve().as_uri())
    # A finished bounded source must still let the last checkpoint commit the transactions.
    conf.set_string("execution.checkpointing.checkpoints-after-tasks-finish", "true")
    conf.set_string(
        "execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION"
    )
    if cfg.bounded:
        # A bounded run is a batch over a fixed offset range: fail instead of retrying forever.
        conf.set_string("restart-strategy.type", "fixed-delay")
        conf.set_string("restart-strategy.fixed-delay.attempts", "2")
        conf.set_string("restart-strategy.fixed-delay.delay", "2 s")
    else:
        conf.set_string("restart-strategy.type", "exponential-delay")
    if cfg.checkpoint_dir:
        conf.set_string("execution.checkpointing.dir", cfg.checkpoint_dir)
    elif local:
        # Without a directory the MiniCluster keeps checkpoints in the JobManager's memory,
        # capped at 5 MB: the dedup state of ~150k requests outgrows it, every checkpoint then
        # fails and the job restarts in a loop. A cluster brings its own (flink-cluster.sh, k8s).
        conf.set_string("execution.checkpointing.dir", LOCAL_CHECKPOINTS.as_uri())
    for k, v in (overrides or {}).items():
        conf.set_string(k, v)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(cfg.parallelism)
    env.enable_checkpointing(cfg.checkpoint_interval_seconds * 1000, CheckpointingMode.EXACTLY_ONCE)
    env.get_checkpoint_config().set_min_pause_between_checkpoints(500)
    t_env = StreamTableEnvironment.create(env)
    t_env.get_config().set("table.exec.resource.default-parallelism", str(cfg.parallelism))
    # Stable uids for the SQL source and sinks too (their state holds offsets and pending
    # transactions), so a savepoint restores into the same operators after a resubmission.
    t_env.get_config().set("table.exec.uid.generation", "ALWAYS")
    return env, t_env


def build_pipeline(raw: DataStream, cfg: PipelineSettings) -> Streams:
    """The job's logic, from a stream of Row(payload, topic, partition, offset) to five outputs.

    Tests call this with a bounded in-memory source; ``main()`` with the Kafka table source.
    """
    # Parse, validate, redact, geo-enrich. Dead letters and per-record ledger deltas go to side
    # outputs.
    parsed = (
        raw.process(
            ParseEnrich(cfg.resolved_geoip_db(), cfg.geo_cache_size, cfg.limits()),
            output_type=ENRICHED_TYPE,
        )
        .uid("parse-redact-enrich")
        .name("parse, validate, redact, geo-enrich")
    )
    # Event time from the payload; watermarks are generated here, per source subtask, before
    # any shuffle mixes partitions.
    watermarks = (
        WatermarkStrategy.for_bounded_out_of_orderness(
            Duration.of_seconds(cfg.out_of_orderness_seconds)
        )
        .with_idleness(Duration.of_seconds(cfg.idle_timeout_seconds))
        .with_timestamp_assigner(EventTime())
    )
    timed = (
        parsed.assign_timestamps_and_watermarks(watermarks)
        .uid("event-time")
        .name("event-time watermarks")
    )
    # Per rate key: drop gateway retries, count windows, correct late events.
    keyed = (
        timed.key_by(RateKey())
        .process(
            KeyedWindows(cfg.window_seconds * 1000, cfg.dedup_horizon_seconds),
            output_type=ENRICHED_TYPE,
        )
        .uid("dedup-window-count")
        .name("per-key dedup, event-time windows, late corrections")
    )
    usage = keyed.get_side_output(USAGE)
    alerts = (
        usage.key_by(RateKey())
        .process(DetectAnomalies(cfg.detector(), cfg.state_ttl_hours), output_type=KEYED_JSON_TYPE)
        .uid("detect-anomalies")
        .name("per-key anomaly detection")
    )
    reconciliation = (
        parsed.get_side_output(PARSE_LEDGER)
        .union(keyed.get_side_output(KEYED_LEDGER))
        .key_by(SourcePartition())
        .process(
            Reconcile(cfg.raw_topic, cfg.reconcile_interval_seconds * 1000),
            output_type=KEYED_JSON_TYPE,
        )
        .uid("reconcile")
        .name("per-partition reconciliation")
    )
    return Streams(
        enriched=keyed,
        dead_letters=parsed.get_side_output(DEAD_LETTERS),
        usage=usage,
        alerts=alerts,
        reconciliation=reconciliation,
    )


def attach_kafka_sinks(
    t_env: StreamTableEnvironment, streams: Streams, cfg: PipelineSettings
) -> None:
    for spec in sink_specs(cfg):
        t_env.execute_sql(sink_ddl(spec))

    statements = t_env.create_statement_set()
    enriched = t_env.from_data_stream(streams.enriched).select(
        col("rate_key").alias("k"), col("value").alias("v")
    )
    statements.add_insert("enriched_sink", enriched)
    statements.add_insert("usage_sink", t_env.from_data_stream(streams.usage))
    dlq = t_env.from_data_stream(streams.dead_letters)
    statements.add_insert("dlq_sink", dlq.select(col("f0").alias("v")))
    statements.add_insert("alerts_sink", t_env.from_data_stream(streams.alerts))
    statements.add_insert("reconciliation_sink", t_env.from_data_stream(streams.reconciliation))
    statements.attach_as_datastream()


def kafka_source(t_env: StreamTableEnvironment, cfg: PipelineSettings) -> DataStream:
    t_env.execute_sql(
        source_ddl(
            SourceSpec(
                table="raw_source",
                topic=cfg.raw_topic,
                bootstrap_servers=cfg.bootstrap_servers,
                group_id=cfg.group_id,
                startup_mode=cfg.startup_mode,
                bounded=cfg.bounded,
                security=cfg.kafka_security(),
            )
        )
    )
    return t_env.to_data_stream(t_env.from_path("raw_source"))


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    cfg = settings_from_args(
        argv, prog="python -m jobs.gateway_pipeline", description=__doc__ or ""
    )
    # Fail here, with a clear message, rather than in every worker's open() in a restart loop.
    # Submitted to a cluster, the key and the database are the TaskManagers' (their environment
    # and volumes), not this client's; the workers check them in open().
    try:
        if not submitted_by_flink_cli():
            read_hash_key()
            GeoLookup(cfg.resolved_geoip_db(), cache_size=0).close()
        cfg.resolved_connector_jar()
        check_brokers(cfg)
    except (HashKeyError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    env, t_env = create_environment(cfg, cfg.flink_overrides())

    raw = kafka_source(t_env, cfg)
    streams = build_pipeline(raw, cfg)
    attach_kafka_sinks(t_env, streams, cfg)

    log.info(
        "starting %s: %s -> %s, %s, %s, %s (bounded=%s)",
        cfg.job_name,
        cfg.raw_topic,
        cfg.enriched_topic,
        cfg.usage_topic,
        cfg.alerts_topic,
        cfg.dlq_topic,
        cfg.bounded,
    )
    env.execute(cfg.job_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
