"""Gateway pipeline: raw gateway access logs -> enriched events, usage counts, alerts, dead letters.

    source (Kafka raw topic: value, partition, offset, record timestamp)
      -> Python, in Arrow batches of Kafka records: parse + validate + redact + geo-enrich,
               one row per record (its events' fields as arrays, its dead letters)
      -> JVM: event-time watermarks per record, from its latest event (per source subtask)
      -> SQL: the records unnested into events and dead letters; gateway retries marked
      -> JVM, per rate key: tumbling event-time windows -> usage counts (+ early records of
              windows whose auth failures reach a threshold); late events split off by the
              window operator itself -> late corrections
      -> Python, per rate key, window records only: anomaly detection -> alerts
      -> SQL: per source partition and interval, reconciliation
               (entries in = enriched + dead-lettered, enriched = enriched out + deduplicated)
    sinks: enriched, usage, dead letters and reconciliation exactly-once (Kafka transactions
    committed on each checkpoint); alerts at-least-once by default, with deterministic ids.

Python parses, redacts, geocodes and detects; every per-event keyed state (retries, windows,
reconciliation) is in the JVM and in its checkpoints: Flink SQL's (jobs/pipeline_sql.py) and the
usage windows' (jvm/).
Runs on the embedded MiniCluster (``python -m jobs.gateway_pipeline``) and unchanged on a cluster.
"""

from __future__ import annotations

import logging
import os
import sys
import sysconfig
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyflink.common import Configuration
from pyflink.common.typeinfo import RowTypeInfo, Types
from pyflink.datastream import CheckpointingMode, DataStream, StreamExecutionEnvironment
from pyflink.datastream.data_stream import KeyedStream
from pyflink.java_gateway import get_gateway
from pyflink.table import Schema, StreamTableEnvironment, Table
from pyflink.table.expressions import col

from jobs import pipeline_sql as sql
from jobs.kafka_tables import SourceSpec, sink_ddl, sink_specs, sink_table, source_ddl
from jobs.preflight import check_brokers
from metering.detect import early_thresholds
from metering.geo import GeoLookup
from metering.records import CLIENT_KEY_PREFIX, SHARED_KEY
from metering.rules import distributed
from metering.settings import HashKeyError, PipelineSettings, read_hash_key, settings_from_args
from metering.topics import GRANTS, OUTPUTS, PLANS, SUBSCRIPTIONS, sink_of
from schemas.events import MAX_NETWORKS
from schemas.stages import FIRST_SIGHTING, RAW
from udfs.functions import (
    KEYED_JSON_TYPE,
    ROUTED_JSON_TYPE,
    USAGE_TYPE,
    WINDOW_RECORD_TYPE,
    DetectAnomalies,
    PriceUsage,
    parse_records_function,
)

log = logging.getLogger("gateway_pipeline")
REPO_ROOT = Path(__file__).resolve().parent.parent
LOCAL_CHECKPOINTS = REPO_ROOT / ".local" / "checkpoints"
PYTHON_EXECUTION_MODE = "python.execution-mode"
PYFLINK_WORKER_MODE_ENV = "_python_worker_execution_mode"
"""PyFlink's switch between Python workers in the client process (loopback) and in worker
processes, read when the environment is created."""


@dataclass(frozen=True)
class Outputs:
    """The job's outputs, one per output topic of the catalog (metering.topics), in the field
    its sink names: tables of (k, v), or (v) for an unkeyed topic; an upsert topic's table
    (``reconciliation``) is an updating one, where the latest row per k holds the counts."""

    enriched: Table
    dead_letters: Table
    usage: Table
    alerts: Table
    reconciliation: Table
    period_usage: Table
    quota_signals: Table
    balance_signals: Table


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
    if local:
        # Process-mode Python operators in worker processes, as on a cluster, not in threads of
        # this client process, whose one interpreter lock would serialize the parse subtasks
        # (PyFlink's loopback default for the MiniCluster; docs/performance.md).
        os.environ.setdefault(PYFLINK_WORKER_MODE_ENV, "process")
    conf = Configuration()
    conf.set_string(PYTHON_EXECUTION_MODE, cfg.execution_mode)
    if local:
        # Python workers (process mode) and the embedded interpreter (thread mode) use this
        # venv. On a cluster, `flink run -pyexec` and the cluster's configuration decide.
        conf.set_string("python.executable", sys.executable)
        conf.set_string("python.client.executable", sys.executable)
        # Thread mode embeds CPython through PEMJA, which starts from the base interpreter and
        # would not see this venv ("No module named pemja") without its site-packages.
        conf.set_string("python.pythonpath", os.pathsep.join(_python_path()))
    conf.set_string("pipeline.jars", cfg.pipeline_jars())
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
    # The detector reads one state value per rate key. In process mode every read the Python
    # worker has not cached is a blocking request to the JVM; Flink caches 1,000 keys.
    conf.set_string("python.state.cache-size", "20000")
    # A process-mode Python operator (the parse, by default) hands its output on when its bundle
    # finishes, at the latest after this long; Flink's 1 s showed as seconds of alert latency
    # (docs/performance-log.md).
    conf.set_string("python.fn-execution.bundle.time", "100")
    # Without it, every chained hand-off deep-copies the row, and the enriched JSON in it is
    # re-encoded as UTF-8 each time (docs/performance-log.md). It holds because no operator of
    # this job keeps or changes a row it was handed: the Python operators serialize theirs at
    # once, the conversions and SQL operators build new rows, and the upsert Kafka sink copies
    # what it buffers. The rule to keep: a thread-mode Python operator emits one reused row
    # object, so a JVM operator chained after it that keeps rows (a buffer, a window, custom
    # code) must copy them.
    conf.set_string("pipeline.object-reuse", "true")
    for k, v in (overrides or {}).items():
        conf.set_string(k, v)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(cfg.parallelism)
    env.enable_checkpointing(cfg.checkpoint_interval_seconds * 1000, CheckpointingMode.EXACTLY_ONCE)
    env.get_checkpoint_config().set_min_pause_between_checkpoints(500)
    t_env = StreamTableEnvironment.create(env)
    tc = t_env.get_config()
    tc.set("table.exec.resource.default-parallelism", str(cfg.parallelism))
    # Stable uids for the SQL operators too (their state holds offsets, pending transactions,
    # request ids and windows), so a savepoint restores into the same operators.
    tc.set("table.exec.uid.generation", "ALWAYS")
    # Windows are epoch-aligned whatever the machine's zone.
    tc.set("table.local-time-zone", "UTC")
    # The SQL state that the watermark does not clean up: the entries seen (the dedup horizon),
    # the open windows' early counts and the reconciliation counts per (partition, interval).
    tc.set("table.exec.state.ttl", f"{cfg.sql_state_ttl_seconds()} s")
    # The reconciliation sink is keyed by (partition, interval), which the planner cannot see
    # through the key column's expression; the aggregate upstream already upserts by it.
    tc.set("table.exec.sink.upsert-materialize", "NONE")
    # Also if a cluster's configuration enables it: mini-batch can put processing-time
    # watermarks where the windows read event time (metering.settings, REFUSED_FLINK_CONFIG,
    # which refuses it in --flink-config).
    tc.set("table.exec.mini-batch.enabled", "false")
    return env, t_env


def detector_uid(execution_mode: str) -> str:
    return python_uid("detect-anomalies", execution_mode)


def python_uid(name: str, execution_mode: str) -> str:
    """A keyed Python operator's uid, which names its runtime unless it is process mode.

    Keyed state written in one runtime does not come back in the other: a savepoint taken with
    a keyed Python operator in thread mode, resumed in process mode, restored it empty, with no
    error (tests/integration/test_cluster.py). With the mode in the uid, Flink refuses that
    restore ("cannot map checkpoint/savepoint state") instead of losing the state silently.
    """
    suffix = "" if execution_mode == "process" else f"-{execution_mode}"
    return f"{name}{suffix}"


@contextmanager
def python_functions_in_mode(t_env: StreamTableEnvironment, mode: str) -> Iterator[None]:
    """Python functions of the tables translated inside the block (by ``to_data_stream``) run
    in ``mode`` (process or thread).

    The planner picks each Python operator's runtime (a Python worker process, or the
    interpreter embedded in the TaskManager's JVM) when it translates it, from
    ``python.execution-mode`` at that moment; so one job can mix them.
    """
    config = t_env.get_config()
    before = config.get(PYTHON_EXECUTION_MODE, "process")
    config.set(PYTHON_EXECUTION_MODE, mode)
    try:
        yield
    finally:
        config.set(PYTHON_EXECUTION_MODE, before)


def _java_strings(values: Sequence[str]) -> Any:
    gateway = get_gateway()
    out = gateway.new_array(gateway.jvm.String, len(values))
    for i, value in enumerate(values):
        out[i] = value
    return out


def usage_windows(first_sightings: DataStream, plan: sql.SqlPlan) -> tuple[DataStream, DataStream]:
    """The usage windows (jvm/, io.github.gatewaypipeline.flink.UsageWindows) over the first
    sightings: (window records, late events)."""
    gateway = get_gateway()
    j_events = first_sightings._j_data_stream
    names = _java_strings(FIRST_SIGHTING.names)
    thresholds = gateway.new_array(gateway.jvm.long, len(plan.early_thresholds))
    for i, t in enumerate(plan.early_thresholds):
        thresholds[i] = t
    applied = gateway.jvm.io.github.gatewaypipeline.flink.UsageWindows.apply(
        j_events,
        j_events.getType(),
        names,
        plan.window_s * 1000,
        thresholds,
        MAX_NETWORKS,
        WINDOW_RECORD_TYPE.get_java_type_info(),
        "usage-windows",
        "usage windows per rate key",
    )
    return DataStream(applied.windows()), DataStream(applied.late())


def count_retries(events: Table, t_env: StreamTableEnvironment) -> DataStream:
    """``events`` as a DataStream, counting the gateway retries the SQL marked (role ``dup``) in
    the metric ``deduplicated_retries`` (jvm/, JobMetrics): a JVM step chained to the
    conversion, which forwards every row. It also exports ``watermark_lag_ms``, the lag of the
    watermark these rows carry, which is the one the usage windows close by. The retries are
    split off by the SQL below, so this is the one place that sees each of them once, and no
    Python step sees events one by one."""
    role = events.get_resolved_schema().get_column_names().index("role")
    j_events = t_env.to_data_stream(events)._j_data_stream
    return DataStream(
        get_gateway().jvm.io.github.gatewaypipeline.flink.JobMetrics.countRows(
            j_events,
            role,
            sql.ROLE_DUP,
            "deduplicated_retries",
            True,  # and the watermark_lag_ms gauge: these rows carry the windows' watermark
            "count-deduplicated-retries",
            "deduplicated gateway retries",
        )
    )


def shared_failures(windows: DataStream, plan: sql.SqlPlan, quiet_minutes: int) -> DataStream:
    """The shared signal (jvm/, UsageWindows.sharedFailures), from the usage windows' records:
    per window, the distinct unidentified clients that began to fail (rejected calls, and none
    in the ``quiet_minutes`` before), as window records of kind ``shared``."""
    return DataStream(
        get_gateway().jvm.io.github.gatewaypipeline.flink.UsageWindows.sharedFailures(
            windows._j_data_stream,
            plan.window_s * 1000,
            quiet_minutes * 60_000,
            CLIENT_KEY_PREFIX,
            SHARED_KEY,
            WINDOW_RECORD_TYPE.get_java_type_info(),
            "shared-failures",
            "rejected unidentified clients per window",
        )
    )


def with_source_watermark(t_env: StreamTableEnvironment, rows: DataStream) -> Table:
    """``rows`` as a table that forwards the stream's own watermark, with the record
    timestamps as the column ``source_rowtime`` (its rows may have a ``rowtime`` of their
    own)."""
    return t_env.from_data_stream(
        rows,
        Schema.new_builder()
        .column_by_metadata("source_rowtime", "TIMESTAMP_LTZ(3)", "rowtime")
        .watermark("source_rowtime", "SOURCE_WATERMARK()")
        .build(),
    )


def keyed_by_field(
    rows: DataStream, row_type: RowTypeInfo, field: str, uid: str, name: str
) -> KeyedStream:
    """``rows`` keyed by their string field ``field``, for a keyed Python function.

    PyFlink's ``key_by`` runs its key selector as a Python operator of its own, a crossing into
    Python per row before the keyed function's. Here the JVM pairs each row with its key
    (jvm/, io.github.gatewaypipeline.flink.KeyedRows) into the (key, row) rows that PyFlink's
    keyed operators read, and keys them with PyFlink's own key selector for such rows.
    """
    gateway = get_gateway()
    key_type = Types.STRING()
    pairs = gateway.jvm.io.github.gatewaypipeline.flink.KeyedRows.pairWithKey(
        rows._j_data_stream,
        field,
        Types.ROW([key_type, row_type]).get_java_type_info(),
        uid,
        name,
    )
    keyed = pairs.keyBy(gateway.jvm.KeyByKeySelector(), Types.ROW([key_type]).get_java_type_info())
    return KeyedStream(keyed, row_type, rows)


def record_watermarks(records: DataStream, cfg: PipelineSettings) -> DataStream:
    """The parse's records with event-time timestamps and watermarks (jvm/,
    io.github.gatewaypipeline.flink.RecordWatermarks): each record's timestamp is its latest
    event's, the watermark trails the latest by the out-of-orderness bound, and a subtask whose
    records give no event goes idle after the idle timeout."""
    applied = get_gateway().jvm.io.github.gatewaypipeline.flink.RecordWatermarks.apply(
        records._j_data_stream,
        "event_time",
        cfg.out_of_orderness_seconds * 1000,
        cfg.idle_timeout_seconds * 1000,
        "record-watermarks",
        "event-time watermarks per record",
    )
    return DataStream(applied)


def parsed_records_view(
    t_env: StreamTableEnvironment, records: DataStream, cfg: PipelineSettings
) -> None:
    """The view ``parsed_records`` over the parse's records: their event time from the payload,
    per record (jvm/, RecordWatermarks), and their processing time ``pt``. The watermark is
    generated right after the parser, per source subtask, before any shuffle mixes partitions."""
    t_env.create_temporary_view(
        "parsed_records",
        t_env.from_data_stream(
            record_watermarks(records, cfg),
            Schema.new_builder()
            .column_by_metadata("rowtime", "TIMESTAMP_LTZ(3)")
            .column_by_expression("pt", "PROCTIME()")
            .watermark("rowtime", "SOURCE_WATERMARK()")
            .build(),
        ),
    )


def parse_records(t_env: StreamTableEnvironment, raw: Table, cfg: PipelineSettings) -> DataStream:
    """The parse over a table of RAW records: a stream of PARSED_RECORD rows, one per record."""
    parse = parse_records_function(
        cfg.raw_topic,
        cfg.resolved_geoip_db(),
        cfg.geo_cache_size,
        cfg.limits(),
        cfg.parse_execution_mode,
    )
    with python_functions_in_mode(t_env, cfg.parse_execution_mode):
        return t_env.to_data_stream(raw.map(parse(*(col(n) for n in RAW.names))))


def build_pipeline(t_env: StreamTableEnvironment, raw: Table, cfg: PipelineSettings) -> Outputs:
    """The job's logic, from a table of RAW records (schemas.stages) to five tables.

    Tests call this with a bounded in-memory source; ``main()`` with the Kafka table source.
    """
    # Python, in batches of Kafka records: parse, validate, redact, geo-enrich. One row per
    # record, its events' fields as arrays and its dead letters, converted to a DataStream once
    # so that the Python function runs once for both unnests below.
    records = parse_records(t_env, raw, cfg)
    parsed_records_view(t_env, records, cfg)
    t_env.create_temporary_view("parsed", t_env.sql_query(sql.parsed_events_query()))
    t_env.create_temporary_view("dead_letters", t_env.sql_query(sql.dead_letters_query()))

    # SQL: gateway retries, once per event. Converted to a DataStream
    # once, so that its stateful OVER count exists once: the plans below (the sinks' and the
    # detector's) are translated apart, and each would otherwise get a copy of it.
    detector = cfg.detector()
    plan = sql.SqlPlan(
        dedup=cfg.dedup_horizon_seconds > 0,
        reconcile_interval_s=cfg.reconcile_interval_seconds,
        source_topic=cfg.raw_topic,
        window_s=cfg.window_seconds,
        early_thresholds=early_thresholds(detector.auth_failure_min)
        if detector.early_alerts
        else (),
    )
    events = count_retries(t_env.sql_query(sql.events_query(plan)), t_env)
    t_env.create_temporary_view(
        "events",
        t_env.from_data_stream(
            events,
            Schema.new_builder()
            .column_by_expression("rowtime", "event_ts")
            .column_by_expression("pt", "PROCTIME()")
            .watermark("rowtime", "SOURCE_WATERMARK()")
            .build(),
        ),
    )

    # The usage windows per rate key (a JVM operator): closed windows and early records, and
    # the late events, split off against the windows' own watermark. Then, as usage records,
    # in one stream (with a Row type, not to_data_stream's external type: the keying below
    # reads it).
    first_sightings = t_env.to_data_stream(t_env.sql_query(sql.first_sightings_query()))
    windows, late = usage_windows(first_sightings, plan)
    # And the shared signal's window records (the detector's only), in the same stream.
    quiet = detector.rule_config(distributed.NAME).quiet_minutes
    windows = windows.union(shared_failures(windows, plan, quiet))
    # With the windows' watermark, not only their rows: the detector's event-time timers (an
    # incident closes after its quiet time) fire on it, and a conversion without a declared
    # source watermark forwards none but the end of input's.
    t_env.create_temporary_view("window_records", with_source_watermark(t_env, windows))
    t_env.create_temporary_view("late_events", with_source_watermark(t_env, late))
    usage = t_env.to_append_stream(t_env.sql_query(sql.usage_query(plan)), USAGE_TYPE)
    t_env.create_temporary_view("usage_records", t_env.from_data_stream(usage))

    # Python, per rate key: anomaly detection on the window records only.
    alerts = (
        keyed_by_field(usage, USAGE_TYPE, "k", "usage-by-rate-key", "usage records by rate key")
        .process(
            DetectAnomalies(detector, cfg.state_ttl_hours, cfg.client_state_ttl_hours),
            output_type=KEYED_JSON_TYPE,
        )
        .uid(detector_uid(cfg.execution_mode))
        .name("per-key anomaly detection")
    )

    # Python, per subject: period usage priced, quota and balance signals, from the usage
    # records only (closed windows and late corrections of keys billing prices).
    billable = t_env.to_append_stream(t_env.sql_query(sql.billable_usage_query()), USAGE_TYPE)
    billing = t_env.from_data_stream(
        keyed_by_field(
            billable, USAGE_TYPE, "k", "usage-by-subject", "usage records by billing subject"
        )
        .process(price_usage(cfg), output_type=ROUTED_JSON_TYPE)
        .uid(python_uid("price-usage", cfg.execution_mode))
        .name("per-subject pricing, quotas and balances")
    )

    def routed(role: str) -> Table:
        return billing.where(col("role") == role).select(col("k"), col("v"))

    return Outputs(
        enriched=t_env.sql_query(sql.enriched_query()),
        dead_letters=t_env.sql_query("SELECT v FROM dead_letters"),
        usage=t_env.sql_query(sql.usage_sink_query()),
        alerts=t_env.from_data_stream(alerts),
        reconciliation=t_env.sql_query(sql.ledger_query(plan)),
        period_usage=routed("period_usage"),
        quota_signals=routed("quota_signals"),
        balance_signals=routed("balance_signals"),
    )


def price_usage(cfg: PipelineSettings) -> PriceUsage:
    """The billing stage's function, from plain settings values (no secret)."""
    return PriceUsage(
        catalog_file=cfg.billing_catalog,
        catalog_topics=(PLANS.name, SUBSCRIPTIONS.name, GRANTS.name),
        client={
            "bootstrap_servers": cfg.bootstrap_servers,
            "protocol": cfg.kafka_security_protocol,
            "sasl_mechanism": cfg.kafka_sasl_mechanism,
            "sasl_username": cfg.kafka_sasl_username,
            "ssl_ca_location": cfg.kafka_ssl_ca_location,
        },
        poll_seconds=cfg.billing_catalog_poll_seconds,
        low_balance=str(cfg.billing_low_balance),
    )


def attach_kafka_sinks(t_env: StreamTableEnvironment, out: Outputs, cfg: PipelineSettings) -> None:
    """A Kafka sink per output topic, each fed the ``Outputs`` field the catalog names."""
    for spec in sink_specs(cfg):
        t_env.execute_sql(sink_ddl(spec))

    statements = t_env.create_statement_set()
    for topic in OUTPUTS:
        statements.add_insert(sink_table(topic), getattr(out, sink_of(topic).output))
    statements.attach_as_datastream()


def kafka_source(t_env: StreamTableEnvironment, cfg: PipelineSettings) -> Table:
    t_env.execute_sql(
        source_ddl(
            SourceSpec(
                table="raw_source",
                topic=cfg.raw_topic,
                bootstrap_servers=cfg.bootstrap_servers,
                group_id=cfg.group_id,
                startup_mode=cfg.startup_mode,
                startup_timestamp_ms=cfg.startup_timestamp_ms,
                bounded=cfg.bounded,
                security=cfg.kafka_security(),
            )
        )
    )
    # The record timestamp in whole seconds: reconciliation intervals are seconds long.
    return t_env.sql_query(
        "SELECT payload, `partition`, `offset`, "
        "TIMESTAMPDIFF(SECOND, TO_TIMESTAMP_LTZ(0, 3), `timestamp`) AS kafka_s "
        "FROM raw_source"
    )


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
        cfg.pipeline_jars()
        check_brokers(cfg)
    except (HashKeyError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    env, t_env = create_environment(cfg, cfg.flink_overrides())

    raw = kafka_source(t_env, cfg)
    outputs = build_pipeline(t_env, raw, cfg)
    attach_kafka_sinks(t_env, outputs, cfg)

    names = cfg.topics_by_role()
    log.info(
        "starting %s: %s -> %s (bounded=%s)",
        cfg.job_name,
        cfg.raw_topic,
        ", ".join(names[t.role] for t in OUTPUTS),
        cfg.bounded,
    )
    env.execute(cfg.job_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
