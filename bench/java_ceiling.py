"""The benchmark's Java ceiling: the pipeline's Python-free work as one Flink SQL job.

    python -m bench.java_ceiling <jobs.gateway_pipeline flags>

Same flags, topics, checkpoint interval, parallelism and exactly-once sinks (``sink_ddl``) as the
job, but only SQL statements, so every operator runs in the JVM:

- parse: the Kafka source's 'json' format, which turns a top-level JSON array (APISIX batches,
  Kong queues) into one row per entry and an object into one row;
- project: the enriched record's fields (identity, route, status, latencies, path without query,
  client /24 or /48), built with JSON_OBJECT;
- filter: entries without an event time are dropped;
- window: event-time watermarks from the payload's start time, tumbling counts per rate key;
- write: enriched events and window counts, exactly-once.

What it leaves out, because each needs Python (or a Java UDF) in this project: GeoIP lookup,
HMAC (a salted SHA-256 stands in for it, once per key and per address), pydantic validation and
dead letters, gateway-retry deduplication, anomaly detection and reconciliation. So it is a
ceiling: what the JVM alone does with the same records and the same delivery guarantee.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from jobs.kafka_tables import SinkSpec, sink_ddl
from metering.settings import PipelineSettings, settings_from_args

REPO_ROOT = Path(__file__).resolve().parent.parent
# Not a secret: the ceiling's fingerprints only have to cost what a keyed hash costs.
SALT = "bench-java-ceiling"
ISO_FORMAT = "yyyy-MM-dd'T'HH:mm:ss.SSSXXX"

log = logging.getLogger("java_ceiling")


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def source_ddl(cfg: PipelineSettings, table: str = "entries_source") -> str:
    """The raw topic through the 'json' format: one row per gateway entry, with event time."""
    opts = {
        "connector": "kafka",
        "topic": cfg.raw_topic,
        "properties.bootstrap.servers": cfg.bootstrap_servers,
        "properties.group.id": cfg.group_id,
        "properties.auto.offset.reset": "earliest",
        "properties.isolation.level": "read_committed",
        "scan.startup.mode": cfg.startup_mode,
        "format": "json",
        # Not 'true': the format's error handler also swallows exceptions thrown by operators
        # chained behind the source, which would drop records silently. Bench data has no
        # unusable records, so any error here fails the run loudly instead.
        "json.ignore-parse-errors": "false",
    } | cfg.kafka_security()
    if cfg.bounded:
        opts["scan.bounded.mode"] = "latest-offset"
    options = ",\n  ".join(f"{_quote(k)} = {_quote(v)}" for k, v in opts.items())
    iso = _quote(ISO_FORMAT)
    # Generic events may carry ISO-8601 with an offset; UNIX_TIMESTAMP honours the offset, the
    # milliseconds are added from the text.
    iso_ms = (
        f"UNIX_TIMESTAMP(`timestamp`, {iso}) * 1000 "
        "+ COALESCE(TRY_CAST(SUBSTRING(`timestamp` FROM 21 FOR 3) AS BIGINT), 0)"
    )
    event_ms = f"COALESCE(`start_time`, `started_at`, TRY_CAST(`timestamp` AS BIGINT), {iso_ms})"
    return f"""CREATE TEMPORARY TABLE `{table}` (
  `start_time` BIGINT,
  `started_at` BIGINT,
  `timestamp` STRING,
  `client_ip` STRING,
  `route_id` STRING,
  `service_id` STRING,
  `latency` DOUBLE,
  `upstream_latency` DOUBLE,
  `apisix_latency` DOUBLE,
  `user_id` STRING,
  `consumer` STRING,
  `endpoint` STRING,
  `units` DOUBLE,
  `method` STRING,
  `status` INT,
  `request` ROW<
    `id` STRING, `uri` STRING, `method` STRING, `size` BIGINT,
    `headers` ROW<`host` STRING, `user-agent` STRING, `x-request-id` STRING, `apikey` STRING,
                  `x-api-key` STRING, `authorization` STRING>,
    `querystring` ROW<`apikey` STRING, `api_key` STRING>>,
  `response` ROW<`status` INT, `size` BIGINT>,
  `server` ROW<`hostname` STRING, `version` STRING>,
  `latencies` ROW<`kong` DOUBLE, `proxy` DOUBLE, `request` DOUBLE>,
  `route` ROW<`id` STRING, `name` STRING>,
  `service` ROW<`id` STRING, `name` STRING>,
  `topic` STRING METADATA VIRTUAL,
  `partition` INT METADATA VIRTUAL,
  `offset` BIGINT METADATA VIRTUAL,
  `event_ms` AS {event_ms},
  `ts` AS TO_TIMESTAMP_LTZ({event_ms}, 3),
  WATERMARK FOR `ts` AS `ts` - INTERVAL '{cfg.out_of_orderness_seconds}' SECOND
) WITH (
  {options}
)"""


# Flink 2.2 inlines views into one Calc and then evaluates an expression again at every reference
# to it (no common sub-expression reuse), and COALESCE evaluates all of its arguments
# (FLINK-38468). Plain views would parse each consumer's JSON some twenty times per event and hash
# each key several times. So the values are computed in stages, each stage a Calc of its
# own that reads the previous one's results as fields (see BARRIER), and CASE chains, which do
# stop at the first match, reach a JSON_VALUE only when the cheaper candidates before it are null.
BARRIER = "_unmerged"
"""A RAND() column that the next stage references twice, in an always-true filter. The planner
never merges a Calc into one that references its non-deterministic result more than once (that
would draw a different number at each reference), so each stage's results are computed once."""
OBJECT_CONSUMER = "`consumer` LIKE '{%'"


def _barrier_filter(column: str = BARRIER) -> str:
    return f"`{column}` <> `{column}` + 1.0"


# What the later stages and the inserts read, as flat columns: a nested ROW passed through a Calc is
# copied whole, strings included, at each stage.
FLAT_COLUMNS = {
    "req_id": "`request`.`id`",
    "req_x_request_id": "`request`.`headers`.`x-request-id`",
    "req_uri": "`request`.`uri`",
    "req_method": "`request`.`method`",
    "req_size": "`request`.`size`",
    "req_host": "`request`.`headers`.`host`",
    "req_user_agent": "`request`.`headers`.`user-agent`",
    "resp_status": "`response`.`status`",
    "resp_size": "`response`.`size`",
    "server_hostname": "`server`.`hostname`",
    "server_version": "`server`.`version`",
    "lat_kong": "`latencies`.`kong`",
    "lat_proxy": "`latencies`.`proxy`",
    "lat_request": "`latencies`.`request`",
    "route_entity_id": "`route`.`id`",
    "route_name": "`route`.`name`",
    "service_entity_id": "`service`.`id`",
    "service_name": "`service`.`name`",
}
PASSED_COLUMNS = [
    "start_time",
    "started_at",
    "client_ip",
    "route_id",
    "service_id",
    "latency",
    "upstream_latency",
    "apisix_latency",
    "endpoint",
    "units",
    "method",
    "topic",
    "partition",
    "offset",
    "event_ms",
    "ts",
    *FLAT_COLUMNS,
]
"""Columns the identity stage hands on unchanged to ``entries``."""


def _columns(names: list[str]) -> str:
    return ", ".join(f"`{n}`" for n in names)


# Stage 1: flat columns, the consumer's username and the API key, each read once.
PARSED_VIEW = f"""CREATE TEMPORARY VIEW parsed_view AS
SELECT
  {_columns([c for c in PASSED_COLUMNS if c not in FLAT_COLUMNS])},
  `user_id`, `consumer`, `status`,
  {", ".join(f"{expr} AS `{name}`" for name, expr in FLAT_COLUMNS.items())},
  CASE WHEN {OBJECT_CONSUMER} THEN JSON_VALUE(`consumer`, '$.username') END AS consumer_username,
  CASE
    WHEN NULLIF(`request`.`headers`.`apikey`, 'REDACTED') IS NOT NULL
      THEN `request`.`headers`.`apikey`
    WHEN `request`.`headers`.`x-api-key` IS NOT NULL THEN `request`.`headers`.`x-api-key`
    WHEN `request`.`querystring`.`apikey` IS NOT NULL THEN `request`.`querystring`.`apikey`
    WHEN `request`.`querystring`.`api_key` IS NOT NULL THEN `request`.`querystring`.`api_key`
    ELSE COALESCE(
      NULLIF(REGEXP_EXTRACT(
        NULLIF(`request`.`headers`.`authorization`, 'REDACTED'), '^\\S+\\s+(.+)$', 1), ''),
      CASE WHEN {OBJECT_CONSUMER} THEN
        JSON_VALUE(`consumer`, '$.plugins."key-auth".key') END)
  END AS api_key,
  RAND() AS `{BARRIER}`
FROM entries_source
WHERE `ts` IS NOT NULL"""

# Stage 2: identity, fingerprints and status.
IDENTITY_VIEW = f"""CREATE TEMPORARY VIEW identity_view AS
SELECT
  {_columns(PASSED_COLUMNS)},
  COALESCE(
    CASE WHEN {OBJECT_CONSUMER} THEN COALESCE(consumer_username,
      CASE WHEN consumer_username IS NULL THEN COALESCE(
        JSON_VALUE(`consumer`, '$.custom_id'), JSON_VALUE(`consumer`, '$.id')) END)
    ELSE `consumer` END,
    `user_id`) AS consumer_name,
  SHA256('{SALT}' || api_key) AS key_fingerprint,
  SHA256('{SALT}' || `client_ip`) AS client_hash,
  COALESCE(`resp_status`, `status`) AS http_status,
  COALESCE(COALESCE(`resp_status`, `status`) IN (401, 403), FALSE) AS auth_failed,
  RAND() AS `{BARRIER}`
FROM parsed_view
WHERE {_barrier_filter()}"""

# Stage 3: the rate key, read by both inserts.
ENTRIES_VIEW = f"""CREATE TEMPORARY VIEW entries AS
SELECT
  *,
  COALESCE(
    consumer_name,
    CASE WHEN key_fingerprint IS NOT NULL AND NOT auth_failed
      THEN 'key:' || key_fingerprint END,
    CASE WHEN client_hash IS NOT NULL THEN 'client:' || client_hash END,
    'anonymous') AS rate_key
FROM identity_view
WHERE {_barrier_filter()}"""

ENRICHED_VALUE = """JSON_OBJECT(
    'event_id' VALUE
      `topic` || '-' || CAST(`partition` AS STRING) || '-' || CAST(`offset` AS STRING),
    'request_id' VALUE COALESCE(`req_id`, `req_x_request_id`),
    'gateway' VALUE CASE WHEN `started_at` IS NOT NULL THEN 'kong'
      WHEN `start_time` IS NOT NULL THEN 'apisix' ELSE 'generic' END,
    'gateway_version' VALUE `server_version`,
    'gateway_host' VALUE `server_hostname`,
    'rate_key' VALUE rate_key,
    'consumer' VALUE consumer_name,
    'key_fingerprint' VALUE key_fingerprint,
    'route' VALUE COALESCE(NULLIF(`route_id`, ''), `route_name`, `route_entity_id`),
    'service' VALUE COALESCE(NULLIF(`service_id`, ''), `service_name`, `service_entity_id`),
    'method' VALUE COALESCE(`req_method`, `method`),
    'host' VALUE `req_host`,
    'path' VALUE REGEXP_EXTRACT(COALESCE(`req_uri`, `endpoint`), '^([^?#]*)', 1),
    'status' VALUE http_status,
    'auth_failed' VALUE auth_failed,
    'latency_ms' VALUE COALESCE(`latency`, `lat_request`),
    'upstream_latency_ms' VALUE COALESCE(`upstream_latency`,
      CASE WHEN `lat_proxy` >= 0 THEN `lat_proxy` END),
    'gateway_latency_ms' VALUE COALESCE(`apisix_latency`, `lat_kong`,
      `latency` - `upstream_latency`),
    'request_bytes' VALUE `req_size`,
    'response_bytes' VALUE `resp_size`,
    'units' VALUE COALESCE(`units`, 1.0),
    'user_agent' VALUE `req_user_agent`,
    'client_hash' VALUE client_hash,
    'client_prefix' VALUE CASE
      WHEN `client_ip` LIKE '%:%' THEN
        REGEXP_EXTRACT(`client_ip`, '^([0-9a-fA-F]*:[0-9a-fA-F]*:[0-9a-fA-F]*)', 1) || '::/48'
      ELSE REGEXP_EXTRACT(`client_ip`, '^([0-9]+\\.[0-9]+\\.[0-9]+)\\.', 1) || '.0/24' END,
    'event_time' VALUE `event_ms`,
    'processing_time' VALUE DATE_FORMAT(CURRENT_TIMESTAMP, 'yyyy-MM-dd HH:mm:ss.SSS'),
    'source_partition' VALUE `partition`,
    'source_offset' VALUE `offset`
  )"""


def _epoch_ms(column: str) -> str:
    return (
        f"CAST(TIMESTAMPDIFF(SECOND, TIMESTAMP '1970-01-01 00:00:00', {column}) AS BIGINT) * 1000"
    )


def insert_enriched() -> str:
    return f"INSERT INTO enriched_sink\nSELECT rate_key AS k, {ENRICHED_VALUE} AS v\nFROM entries"


def insert_usage(window_seconds: int) -> str:
    return f"""INSERT INTO usage_sink
SELECT rate_key AS k, JSON_OBJECT(
    'kind' VALUE 'window',
    'rate_key' VALUE rate_key,
    'consumer' VALUE consumer_name,
    'window_start' VALUE {_epoch_ms("window_start")},
    'window_end' VALUE {_epoch_ms("window_end")},
    'count' VALUE requests,
    'units' VALUE units,
    'auth_failures' VALUE auth_failures
  ) AS v
FROM (
  SELECT rate_key, window_start, window_end, MAX(consumer_name) AS consumer_name,
    COUNT(*) AS requests, SUM(COALESCE(`units`, 1.0)) AS units,
    SUM(CASE WHEN auth_failed THEN 1 ELSE 0 END) AS auth_failures
  FROM TABLE(TUMBLE(TABLE entries, DESCRIPTOR(`ts`), INTERVAL '{window_seconds}' SECOND))
  GROUP BY rate_key, window_start, window_end
)"""


def sink_specs(cfg: PipelineSettings) -> list[SinkSpec]:
    """The job's enriched and usage sinks, with the job's delivery settings."""

    def spec(table: str, topic: str, suffix: str) -> SinkSpec:
        return SinkSpec(
            table=table,
            topic=topic,
            bootstrap_servers=cfg.bootstrap_servers,
            delivery="exactly-once",
            transactional_id_prefix=f"{cfg.transactional_id_prefix}-{suffix}",
            transaction_timeout_ms=cfg.transaction_timeout_ms,
            security=cfg.kafka_security(),
        )

    return [
        spec("enriched_sink", cfg.enriched_topic, "enriched"),
        spec("usage_sink", cfg.usage_topic, "usage"),
    ]


def statements(cfg: PipelineSettings) -> list[str]:
    """Every SQL statement of the ceiling job, in order (DDL, views, then the two inserts)."""
    return [
        source_ddl(cfg),
        *(sink_ddl(s) for s in sink_specs(cfg)),
        PARSED_VIEW,
        IDENTITY_VIEW,
        ENTRIES_VIEW,
        insert_enriched(),
        insert_usage(cfg.window_seconds),
    ]


def flink_config(cfg: PipelineSettings) -> dict[str, str]:
    """Runtime configuration matching the job's (checkpoints, parallelism, idleness)."""
    conf = {
        "pipeline.name": "bench-java-ceiling",
        "pipeline.jars": Path(cfg.resolved_connector_jar()).resolve().as_uri(),
        "parallelism.default": str(cfg.parallelism),
        "table.exec.resource.default-parallelism": str(cfg.parallelism),
        "table.local-time-zone": "UTC",
        "table.exec.source.idle-timeout": f"{cfg.idle_timeout_seconds} s",
        "execution.checkpointing.interval": f"{cfg.checkpoint_interval_seconds} s",
        "execution.checkpointing.mode": "EXACTLY_ONCE",
        "execution.checkpointing.min-pause": "500 ms",
        "execution.checkpointing.checkpoints-after-tasks-finish": "true",
        "restart-strategy.type": "fixed-delay" if cfg.bounded else "exponential-delay",
        # As the job sets it: chained operators hand rows on instead of copying each one.
        "pipeline.object-reuse": "true",
        # Both inserts read the view ``entries``; recognised as one block, it is planned and
        # computed once, instead of once per insert with each insert's columns pruned.
        "table.optimizer.reuse-optimize-block-with-digest-enabled": "true",
    }
    if cfg.checkpoint_dir:
        conf["execution.checkpointing.dir"] = cfg.checkpoint_dir
    return conf | cfg.flink_overrides()


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    cfg = settings_from_args(argv, prog="python -m bench.java_ceiling", description=__doc__ or "")
    os.environ.setdefault("LOG4J_PROPERTIES", str(REPO_ROOT / "deploy/flink/log4j-cli.properties"))
    from pyflink.common import Configuration
    from pyflink.table import EnvironmentSettings, TableEnvironment

    conf = Configuration()
    for key, value in flink_config(cfg).items():
        conf.set_string(key, value)
    t_env = TableEnvironment.create(
        EnvironmentSettings.new_instance().in_streaming_mode().with_configuration(conf).build()
    )
    *ddl, enriched, usage = statements(cfg)
    for statement in ddl:
        t_env.execute_sql(statement)
    statement_set = t_env.create_statement_set()
    statement_set.add_insert_sql(enriched)
    statement_set.add_insert_sql(usage)
    log.info(
        "starting the Java ceiling: %s -> %s, %s",
        cfg.raw_topic,
        cfg.enriched_topic,
        cfg.usage_topic,
    )
    statement_set.execute().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
