"""The Pinot table definitions (schemas/pinot/<table>/) and tools.pinot_tables, without a JVM."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

from metering.topics import BY_ROLE
from responder.actions import ActionRecord
from responder.settings import DEFAULT_ACTIONS_TOPIC
from schemas.events import Alert, DeadLetter, EnrichedEvent, PeriodUsage, Reconciliation
from tools.pinot_tables import (
    ACTIONS_TOPIC,
    ACTIONS_TOPIC_ENV,
    PINOT_DIR,
    TABLES,
    PinotController,
    PinotError,
    apply_definitions,
    find_placeholders,
    load_definition,
    load_definitions,
    main,
    placeholder_values,
    stream_source,
    substitute,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
JSON_DECODER = "org.apache.pinot.plugin.inputformat.json.JSONMessageDecoder"
KAFKA_CONSUMER_FACTORY = "org.apache.pinot.plugin.stream.kafka20.KafkaConsumerFactory"
EPOCH_MILLIS = "1:MILLISECONDS:EPOCH"
# table -> (the topic placeholder it reads, the pydantic model of that topic's records)
TOPICS: dict[str, tuple[str, type[Any]]] = {
    "api_events": ("ENRICHED_TOPIC", EnrichedEvent),
    "alerts": ("ALERTS_TOPIC", Alert),
    # Written by the responder (responder/), not by the job.
    "actions": ("ACTIONS_TOPIC", ActionRecord),
    "period_usage": ("PERIOD_USAGE_TOPIC", PeriodUsage),
    "dead_letters": ("DLQ_TOPIC", DeadLetter),
    "reconciliation": ("RECONCILIATION_TOPIC", Reconciliation),
}
# Record fields a table leaves out on purpose: the dead letters' payload text (ops need counts
# and coordinates; the payload stays in the topic).
NOT_INGESTED: dict[str, set[str]] = {"dead_letters": {"payload"}}
# Columns no record carries: filled by the table's ingestion transforms.
INGESTION_COLUMNS: dict[str, set[str]] = {"api_events": {"ingested_at"}}
INDEX_KEYS = (
    "sortedColumn",
    "invertedIndexColumns",
    "rangeIndexColumns",
    "bloomFilterColumns",
    "noDictionaryColumns",
    "jsonIndexColumns",
    "onHeapDictionaryColumns",
    "varLengthDictionaryColumns",
)
COMPATIBLE = {
    "string": {"STRING"},
    "decimal": {"BIG_DECIMAL"},
    "integer": {"INT", "LONG", "TIMESTAMP"},
    "number": {"DOUBLE", "FLOAT"},
    "boolean": {"BOOLEAN"},
    "object": {"JSON"},
}
VALUES = placeholder_values(
    bootstrap_servers="kafka-1:9092,kafka-2:9092",
    enriched_topic="t.enriched",
    alerts_topic="t.alerts",
    actions_topic="t.actions",
    period_usage_topic="t.period-usage",
    dlq_topic="t.dlq",
    reconciliation_topic="t.reconciliation",
)


def _raw(table: str, kind: str) -> dict[str, Any]:
    data = json.loads((PINOT_DIR / table / f"{kind}.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _specs(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    specs = (
        schema.get("dimensionFieldSpecs", [])
        + schema.get("metricFieldSpecs", [])
        + schema.get("dateTimeFieldSpecs", [])
    )
    names = [spec["name"] for spec in specs]
    assert len(names) == len(set(names)), "a column is defined twice"
    return {spec["name"]: spec for spec in specs}


def _stream(table: str) -> dict[str, str]:
    streams = _raw(table, "table")["tableIndexConfig"]["streamConfigs"]
    assert isinstance(streams, dict)
    return streams


def _json_type(prop: dict[str, Any]) -> tuple[str, bool]:
    """(JSON type of the value or of the list items, is a list)."""
    if "type" not in prop:
        types = [t for t in prop["anyOf"] if t.get("type") != "null"]
        assert len(types) == 1
        prop = types[0]
    if prop["type"] == "array":
        if "$ref" in prop["items"]:  # a list of records: one JSON value
            return "object", False
        return str(prop["items"]["type"]), True
    if prop["type"] == "string" and "pattern" in prop and "[0-9]" in prop["pattern"]:
        return "decimal", False  # schemas.events.DecimalText
    return str(prop["type"]), False


def test_every_table_folder_is_managed_by_the_tool() -> None:
    folders = {p.name for p in PINOT_DIR.iterdir() if p.is_dir()}
    assert folders == set(TABLES) == set(TOPICS)
    for table in TABLES:
        assert (PINOT_DIR / table / "schema.json").is_file()
        assert (PINOT_DIR / table / "table.json").is_file()


@pytest.mark.parametrize("table", TABLES)
def test_stream_reads_committed_json_from_kafka(table: str) -> None:
    stream = _stream(table)
    assert stream["streamType"] == "kafka"
    assert stream["stream.kafka.isolation.level"] == "read_committed"
    assert stream["stream.kafka.decoder.class.name"] == JSON_DECODER
    assert stream["stream.kafka.consumer.factory.class.name"] == KAFKA_CONSUMER_FACTORY
    assert stream["stream.kafka.consumer.type"].lower() == "lowlevel"
    assert stream["stream.kafka.consumer.prop.auto.offset.reset"] == "smallest"


@pytest.mark.parametrize("table", TABLES)
def test_segments_flush_by_size_and_time(table: str) -> None:
    stream = _stream(table)
    # rows 0: size-based flushing (the controller tunes the row count to reach the target size).
    assert stream["realtime.segment.flush.threshold.rows"] == "0"
    assert re.fullmatch(r"\d+[KMG]", stream["realtime.segment.flush.threshold.segment.size"])
    assert re.fullmatch(r"\d+[mhd]", stream["realtime.segment.flush.threshold.time"])


@pytest.mark.parametrize("table", TABLES)
def test_topic_and_brokers_are_placeholders(table: str) -> None:
    stream = _stream(table)
    topic_placeholder, _ = TOPICS[table]
    assert stream["stream.kafka.topic.name"] == "${" + topic_placeholder + "}"
    assert stream["stream.kafka.broker.list"] == "${BOOTSTRAP_SERVERS}"
    assert find_placeholders(_raw(table, "table")) == {topic_placeholder, "BOOTSTRAP_SERVERS"}
    assert find_placeholders(_raw(table, "schema")) == set()


@pytest.mark.parametrize("table", TABLES)
def test_time_column_is_an_epoch_millis_timestamp(table: str) -> None:
    config = _raw(table, "table")
    schema = _raw(table, "schema")
    time_column = config["segmentsConfig"]["timeColumnName"]
    spec = next(s for s in schema["dateTimeFieldSpecs"] if s["name"] == time_column)
    assert spec["dataType"] == "TIMESTAMP"
    assert spec["format"] == EPOCH_MILLIS
    assert spec["granularity"] == "1:MILLISECONDS"
    # Retention counts from the time column.
    assert config["segmentsConfig"]["retentionTimeUnit"] == "DAYS"
    assert int(config["segmentsConfig"]["retentionTimeValue"]) > 0


def test_time_columns_and_retention_per_table() -> None:
    assert _raw("api_events", "table")["segmentsConfig"]["timeColumnName"] == "event_time"
    assert _raw("alerts", "table")["segmentsConfig"]["timeColumnName"] == "detected_at"
    assert _raw("actions", "table")["segmentsConfig"]["timeColumnName"] == "recorded_at"
    assert _raw("api_events", "table")["segmentsConfig"]["retentionTimeValue"] == "30"
    assert _raw("alerts", "table")["segmentsConfig"]["retentionTimeValue"] == "90"
    assert _raw("actions", "table")["segmentsConfig"]["retentionTimeValue"] == "90"
    assert _raw("dead_letters", "table")["segmentsConfig"]["timeColumnName"] == "dead_lettered_at"
    assert _raw("dead_letters", "table")["segmentsConfig"]["retentionTimeValue"] == "30"
    assert _raw("reconciliation", "table")["segmentsConfig"]["timeColumnName"] == "interval_start"
    # As long as the topic keeps it (and the usage it proves complete).
    assert _raw("reconciliation", "table")["segmentsConfig"]["retentionTimeValue"] == "400"


@pytest.mark.parametrize("table", TABLES)
def test_every_indexed_column_exists_in_the_schema(table: str) -> None:
    columns = _specs(_raw(table, "schema"))
    index_config = _raw(table, "table")["tableIndexConfig"]
    indexed = 0
    for key in INDEX_KEYS:
        for column in index_config.get(key) or []:
            assert column in columns, f"{table}: {key} names unknown column {column}"
            indexed += 1
    assert indexed
    # A real-time table's consuming segment is unsorted: the sorted column also needs an
    # inverted index to be fast before its segment is committed.
    sorted_columns = index_config["sortedColumn"]
    assert len(sorted_columns) == 1
    assert set(sorted_columns) <= set(index_config["invertedIndexColumns"])
    for column in index_config.get("rangeIndexColumns", []):
        assert columns[column]["dataType"] in {"INT", "LONG", "FLOAT", "DOUBLE", "TIMESTAMP"}


def test_api_events_indexes() -> None:
    index_config = _raw("api_events", "table")["tableIndexConfig"]
    assert {"consumer", "route", "status", "country"} <= set(index_config["invertedIndexColumns"])
    assert "event_time" in index_config["rangeIndexColumns"]
    assert index_config["sortedColumn"] == ["consumer"]


def test_alerts_are_deduplicated_on_alert_id() -> None:
    """An at-least-once alert replayed after a restart (same deterministic alert_id) is stored
    once. What Pinot 0.11's TableConfigUtils.validateUpsertAndDedupConfig demands of a dedup
    table: a primary key in the schema, the low-level consumer, strictReplicaGroup routing, no
    upsert. The stream must be partitioned by the key: the topic's record key is the rate key,
    and alert_id is derived from it (metering.detect.alert_id), so one id always lands in one
    partition."""
    schema, table = _raw("alerts", "schema"), _raw("alerts", "table")
    assert schema["primaryKeyColumns"] == ["alert_id"]
    assert _specs(schema)["alert_id"]["dataType"] == "STRING"
    assert table["tableType"] == "REALTIME"
    assert table["dedupConfig"] == {"dedupEnabled": True, "hashFunction": "NONE"}
    assert table["routing"]["instanceSelectorType"] == "strictReplicaGroup"
    assert _stream("alerts")["stream.kafka.consumer.type"] == "lowlevel"
    assert "upsertConfig" not in table
    assert table["tableIndexConfig"].get("starTreeIndexConfigs") in (None, [])
    # Only alerts are deduplicated: every enriched event is a distinct request, and every
    # action record a step of an action's history (planned, then done or failed).
    for other in ("api_events", "actions", "period_usage", "dead_letters", "reconciliation"):
        assert "dedupConfig" not in _raw(other, "table")
        if other not in ("period_usage", "reconciliation"):
            assert "upsertConfig" not in _raw(other, "table")
            assert "primaryKeyColumns" not in _raw(other, "schema")


def test_period_usage_is_an_upsert_on_subject_and_period() -> None:
    """The period-usage topic is an upsert topic keyed by ``<subject>@<period>``: the latest
    record of a key holds the period so far, so Pinot keeps the latest row per (subject,
    period). Upsert needs what dedup needs (a primary key, the low-level consumer,
    strictReplicaGroup routing, a stream partitioned by the key: the record key is made of
    the primary key's columns). Equal comparison values (the time column, which a late
    correction leaves as it was) go to the later record."""
    schema, table = _raw("period_usage", "schema"), _raw("period_usage", "table")
    assert schema["primaryKeyColumns"] == ["subject", "period"]
    assert table["upsertConfig"]["mode"] == "FULL"
    assert table["routing"]["instanceSelectorType"] == "strictReplicaGroup"
    assert _specs(schema)["amount"]["dataType"] == "BIG_DECIMAL"
    assert table["segmentsConfig"]["retentionTimeValue"] == "400"


def test_reconciliation_is_an_upsert_on_topic_partition_and_interval() -> None:
    """The reconciliation topic is an upsert topic keyed by ``<partition>@<interval_start>``:
    each record of a key supersedes the earlier ones, so Pinot keeps the latest row per (source
    topic, partition, interval). The record key is made of the primary key's columns (one job
    reads one raw topic), so one interval's records share a partition, as upsert requires.
    Every record of an interval has the same interval_start, the time column and so the
    comparison value: on equal values Pinot keeps the later record."""
    schema, table = _raw("reconciliation", "schema"), _raw("reconciliation", "table")
    period_usage = _raw("period_usage", "table")
    assert schema["primaryKeyColumns"] == ["source_topic", "source_partition", "interval_start"]
    assert (
        table["upsertConfig"]
        == period_usage["upsertConfig"]
        == {
            "mode": "FULL",
            "hashFunction": "NONE",
        }
    )
    assert table["routing"] == period_usage["routing"]
    assert table["routing"]["instanceSelectorType"] == "strictReplicaGroup"
    assert _stream("reconciliation")["stream.kafka.consumer.type"] == "lowlevel"
    assert "dedupConfig" not in table and "comparisonColumn" not in table["upsertConfig"]
    assert BY_ROLE["reconciliation"].upsert
    assert BY_ROLE["reconciliation"].key == "<source partition>@<interval start>"


def test_dead_letters_keep_counts_and_coordinates_not_payloads() -> None:
    columns = _specs(_raw("dead_letters", "schema"))
    assert "payload" not in columns
    assert {
        "reason",
        "detail",
        "source_topic",
        "source_partition",
        "source_offset",
        "element_index",
        "payload_bytes",
        "payload_truncated",
        "dead_lettered_at",
    } == set(columns)
    index_config = _raw("dead_letters", "table")["tableIndexConfig"]
    assert index_config["sortedColumn"] == ["reason"]
    assert "dead_lettered_at" in index_config["rangeIndexColumns"]
    # The topic has no key and is exactly-once: nothing to deduplicate or upsert.
    assert "primaryKeyColumns" not in _raw("dead_letters", "schema")
    assert BY_ROLE["dlq"].key is None and not BY_ROLE["dlq"].upsert


def test_api_events_stamp_when_they_were_ingested() -> None:
    """Freshness (event to queryable) needs the time a server consumed each event: Pinot's
    built-in ``now()`` (DateTimeFunctions, epoch ms), evaluated per record by the ingestion
    transform; no record carries the column."""
    spec = _specs(_raw("api_events", "schema"))["ingested_at"]
    assert spec["dataType"] == "LONG"
    assert spec["format"] == EPOCH_MILLIS
    table = _raw("api_events", "table")
    assert table["ingestionConfig"]["transformConfigs"] == [
        {"columnName": "ingested_at", "transformFunction": "now()"}
    ]
    assert "ingested_at" in table["tableIndexConfig"]["rangeIndexColumns"]
    assert "ingested_at" not in EnrichedEvent.model_json_schema()["properties"]
    for other in TABLES:
        if other != "api_events":
            assert "ingestionConfig" not in _raw(other, "table"), other


def test_actions_indexes() -> None:
    """The on-call questions: what happened to this incident, which actions failed, what was
    done to this consumer."""
    index_config = _raw("actions", "table")["tableIndexConfig"]
    assert index_config["sortedColumn"] == ["incident_id"]
    assert set(index_config["invertedIndexColumns"]) == {
        "action",
        "outcome",
        "consumer",
        "incident_id",
    }
    assert index_config["noDictionaryColumns"] == ["action_id", "reason"]
    assert "recorded_at" in index_config["rangeIndexColumns"]
    # The alert a planned notification carries (about 1 KB) must not be cut to Pinot's default
    # 512 characters: a cut JSON value is not JSON.
    assert _specs(_raw("actions", "schema"))["alert"]["maxLength"] >= 8192


@pytest.mark.parametrize("table", TABLES)
def test_every_record_field_has_a_column_of_a_compatible_type(table: str) -> None:
    _, model = TOPICS[table]
    columns = _specs(_raw(table, "schema"))
    props = model.model_json_schema()["properties"]
    ingested = set(props) - NOT_INGESTED.get(table, set())
    assert set(columns) == ingested | INGESTION_COLUMNS.get(table, set())
    for name, prop in props.items():
        if name not in ingested:
            continue
        json_type, is_list = _json_type(prop)
        assert columns[name]["dataType"] in COMPATIBLE[json_type], name
        assert columns[name].get("singleValueField", True) is not is_list, name
        if columns[name]["dataType"] == "TIMESTAMP":
            assert columns[name]["format"] == EPOCH_MILLIS, name


@pytest.mark.parametrize("table", TABLES)
def test_names_agree(table: str) -> None:
    config = _raw(table, "table")
    assert _raw(table, "schema")["schemaName"] == table
    assert config["tableName"] == table
    assert config["tableType"] == "REALTIME"
    assert config["segmentsConfig"]["schemaName"] == table


# --- placeholder substitution -------------------------------------------------------------------


def test_placeholders_are_filled_from_the_arguments() -> None:
    definitions = load_definitions(VALUES)
    assert tuple(d.name for d in definitions) == TABLES
    streams = [d.table_config["tableIndexConfig"]["streamConfigs"] for d in definitions]
    assert [s["stream.kafka.topic.name"] for s in streams] == [
        "t.enriched",
        "t.alerts",
        "t.actions",
        "t.period-usage",
        "t.dlq",
        "t.reconciliation",
    ]
    for stream in streams:
        assert stream["stream.kafka.broker.list"] == "kafka-1:9092,kafka-2:9092"
    for definition in definitions:
        assert find_placeholders(definition.table_config) == set()
        assert find_placeholders(definition.schema) == set()


def test_substitute_replaces_inside_strings_and_rejects_unknown_names() -> None:
    value = {"a": ["x-${TOPIC}-y", 1, None, True], "${TOPIC}": {"b": "${TOPIC}${TOPIC}"}}
    assert substitute(value, {"TOPIC": "t"}) == {"a": ["x-t-y", 1, None, True], "t": {"b": "tt"}}
    assert find_placeholders(value) == {"TOPIC"}
    with pytest.raises(ValueError, match=r"\$\{TOPIC\}"):
        substitute(value, {})


def test_load_definition_checks_names(tmp_path: Path) -> None:
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "schema.json").write_text(json.dumps({"schemaName": "other"}))
    (folder / "table.json").write_text(json.dumps({"tableName": "t"}))
    with pytest.raises(ValueError, match="schemaName"):
        load_definition("t", {}, root=tmp_path)


def test_defaults_come_from_pipeline_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PIPELINE_BOOTSTRAP_SERVERS", "broker-a:9092")
    monkeypatch.setenv("PIPELINE_ENRICHED_TOPIC", "env.enriched")
    monkeypatch.delenv("PIPELINE_ALERTS_TOPIC", raising=False)
    monkeypatch.delenv(ACTIONS_TOPIC_ENV, raising=False)
    monkeypatch.setenv("PIPELINE_DLQ_TOPIC", "env.dlq")
    monkeypatch.delenv("PIPELINE_RECONCILIATION_TOPIC", raising=False)
    assert main(["--print"]) == 0
    out, decoder, printed = capsys.readouterr().out, json.JSONDecoder(), []
    pos = 0
    while out[pos:].strip():
        doc, end = decoder.raw_decode(out, out.index("{", pos))
        printed.append(doc)
        pos = end
    streams = [d["table"]["tableIndexConfig"]["streamConfigs"] for d in printed]
    assert [s["stream.kafka.topic.name"] for s in streams] == [
        "env.enriched",
        "gateway.alerts",
        "gateway.actions",
        "gateway.billing.period-usage",
        "env.dlq",
        "gateway.reconciliation",
    ]
    assert {s["stream.kafka.broker.list"] for s in streams} == {"broker-a:9092"}


def test_the_actions_topic_is_the_responders(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The catalog's name (the topic `make topics` and the compose `topics` service create),
    unless the responder's own setting names another one; the flag wins over both."""
    assert ACTIONS_TOPIC == BY_ROLE["actions"].name == DEFAULT_ACTIONS_TOPIC
    monkeypatch.setenv(ACTIONS_TOPIC_ENV, "env.actions")

    def actions_topic(argv: list[str]) -> str:
        assert main([*argv, "--print", "--table", "actions"]) == 0
        printed = json.loads(capsys.readouterr().out)
        return str(printed["table"]["tableIndexConfig"]["streamConfigs"]["stream.kafka.topic.name"])

    assert actions_topic([]) == "env.actions"
    assert actions_topic(["--actions-topic", "flag.actions"]) == "flag.actions"


# --- talking to the controller (a fake one) ------------------------------------------------------


class FakeController(PinotController):
    def __init__(self, schemas: Iterable[str] = (), tables: Iterable[dict[str, Any]] = ()) -> None:
        super().__init__("http://controller:9000")
        self.schemas = set(schemas)
        self.tables = {config["tableName"]: config for config in tables}
        self.calls: list[tuple[str, str]] = []

    def request(
        self, method: str, path: str, body: Any = None, query: Any = None
    ) -> tuple[int, Any]:
        self.calls.append((method, path))
        parts = path.strip("/").split("/")
        if parts[0] == "schemas":
            if method == "GET":
                return (200, {}) if parts[1] in self.schemas else (404, {})
            if method == "POST":
                assert body["schemaName"] not in self.schemas
                self.schemas.add(body["schemaName"])
            if method == "PUT":
                assert parts[1] in self.schemas and body["schemaName"] == parts[1]
            if method == "DELETE":
                assert not any(t == parts[1] for t in self.tables), "schema of a live table"
                self.schemas.remove(parts[1])
            return 200, {"status": "ok"}
        if parts[0] == "tables":
            if method == "GET":
                return 200, ({"REALTIME": self.tables[parts[1]]} if parts[1] in self.tables else {})
            if method == "POST":
                assert body["segmentsConfig"]["schemaName"] in self.schemas, "schema first"
                assert body["tableName"] not in self.tables
                self.tables[body["tableName"]] = body
            if method == "PUT":
                assert parts[1] in self.tables
                self.tables[parts[1]] = body
            if method == "DELETE":
                del self.tables[parts[1]]
            return 200, {"status": "ok", "unrecognizedProperties": {}}
        raise AssertionError(path)


def test_creates_schemas_before_tables() -> None:
    controller = FakeController()
    log = apply_definitions(controller, load_definitions(VALUES))
    assert controller.schemas == set(controller.tables) == set(TABLES)
    assert log == [f"schema {t} created" for t in TABLES] + [
        f"table {t} (REALTIME) created" for t in TABLES
    ]


def _existing() -> FakeController:
    return FakeController(TABLES, [d.table_config for d in load_definitions(VALUES)])


def test_existing_definitions_are_updated_in_place() -> None:
    controller = _existing()
    log = apply_definitions(controller, load_definitions(VALUES))
    assert all(line.endswith("updated") for line in log)
    assert not [c for c in controller.calls if c[0] in ("POST", "DELETE")]


@pytest.mark.parametrize(
    "change",
    [
        {"enriched_topic": "other.enriched"},
        {"actions_topic": "other.actions"},
        {"dlq_topic": "other.dlq"},
        {"reconciliation_topic": "other.reconciliation"},
        {"bootstrap_servers": "elsewhere:9092"},
    ],
)
def test_moving_a_table_to_another_topic_needs_recreate(change: dict[str, str]) -> None:
    controller = _existing()
    moved = load_definitions(
        placeholder_values(
            **{
                "bootstrap_servers": "kafka-1:9092,kafka-2:9092",
                "enriched_topic": "t.enriched",
                "alerts_topic": "t.alerts",
                "actions_topic": "t.actions",
                "period_usage_topic": "t.period-usage",
                "dlq_topic": "t.dlq",
                "reconciliation_topic": "t.reconciliation",
                **change,
            }
        )
    )
    with pytest.raises(PinotError, match="--recreate"):
        apply_definitions(controller, moved)
    assert not [c for c in controller.calls if c[0] != "GET"], "nothing changed"
    log = apply_definitions(controller, moved, recreate=True)
    assert "table api_events (REALTIME) created" in log
    stream = controller.tables["api_events"]["tableIndexConfig"]["streamConfigs"]
    assert stream["stream.kafka.topic.name"] == change.get("enriched_topic", "t.enriched")


def test_stream_source_reads_both_config_layouts() -> None:
    streams = {"stream.kafka.topic.name": "t", "stream.kafka.broker.list": "b:9092"}
    assert stream_source({"tableIndexConfig": {"streamConfigs": streams}}) == ("t", "b:9092")
    newer = {"ingestionConfig": {"streamIngestionConfig": {"streamConfigMaps": [streams]}}}
    assert stream_source(newer) == ("t", "b:9092")
    assert stream_source({}) == (None, None)


def test_recreate_drops_tables_then_schemas_and_creates_them_again() -> None:
    controller = _existing()
    log = apply_definitions(controller, load_definitions(VALUES), recreate=True)
    dropped = [
        line for t in TABLES for line in (f"table {t} (REALTIME) dropped", f"schema {t} dropped")
    ]
    assert log == dropped + [f"schema {t} created" for t in TABLES] + [
        f"table {t} (REALTIME) created" for t in TABLES
    ]
    assert controller.schemas == set(controller.tables) == set(TABLES)


def test_ignored_properties_are_reported() -> None:
    class Old(FakeController):
        def request(
            self, method: str, path: str, body: Any = None, query: Any = None
        ) -> tuple[int, Any]:
            status, payload = super().request(method, path, body, query)
            if method == "POST" and path == "/schemas":
                payload = {"unrecognizedProperties": {"/enableColumnBasedNullHandling": True}}
            return status, payload

    log = apply_definitions(Old(), load_definitions(VALUES, ["alerts"]))
    assert log[0] == (
        "schema alerts created (ignored by this Pinot version: /enableColumnBasedNullHandling)"
    )


def test_unreachable_controller_is_a_clean_error(capsys: pytest.CaptureFixture[str]) -> None:
    controller = PinotController("http://127.0.0.1:9", timeout_s=1)
    assert not controller.healthy()
    with pytest.raises(PinotError, match="not healthy"):
        controller.wait_healthy(0)
    assert main(["--controller", "http://127.0.0.1:9", "--wait", "0"]) == 1
    assert "not healthy" in capsys.readouterr().err


# --- versions -----------------------------------------------------------------------------------


def test_pinot_version_agrees_across_makefile_pom_and_compose() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    match = re.search(r"^PINOT_VERSION\s*\?=\s*(\S+)\s*$", makefile, re.MULTILINE)
    assert match
    version = match[1]
    pom = (REPO_ROOT / "deploy" / "pinot" / "pom.xml").read_text(encoding="utf-8")
    assert f"<pinot.version>{version}</pinot.version>" in pom
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    images = {
        name: service["image"]
        for name, service in compose["services"].items()
        if str(service.get("image", "")).startswith("apachepinot/pinot:")
    }
    assert set(images) == {"pinot-zookeeper", "pinot-controller", "pinot-broker", "pinot-server"}
    assert set(images.values()) == {f"apachepinot/pinot:{version}"}
    # The one-shot table creator runs this tool against the compose broker and controller.
    argv = [str(a) for a in compose["services"]["pinot-tables"]["command"]]
    assert argv[:3] == ["python", "-m", "tools.pinot_tables"]
    assert argv[argv.index("--bootstrap-servers") + 1] == "redpanda:9092"
    assert argv[argv.index("--controller") + 1] == "http://pinot-controller:9000"


def test_compose_server_config_matches_its_service() -> None:
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    server = compose["services"]["pinot-server"]
    argv = [str(a) for a in server["command"]]
    conf_path = argv[argv.index("-configFileName") + 1]
    mounts = {spec.split(":")[1]: spec.split(":")[0] for spec in server["volumes"]}
    assert mounts[conf_path] == "./deploy/pinot/server.conf"
    conf = dict(
        line.split("=", 1)
        for line in (REPO_ROOT / "deploy/pinot/server.conf").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert conf["pinot.server.netty.host"] == "pinot-server"
    assert conf["pinot.zk.server"] == "pinot-zookeeper:2181"
    data_volume = next(path for path, source in mounts.items() if source == "pinot-server")
    for key in ("pinot.server.instance.dataDir", "pinot.server.instance.segmentTarDir"):
        assert conf[key].startswith(data_volume + "/"), f"{key} is not on the server's volume"
    health = " ".join(server["healthcheck"]["test"])
    assert f":{conf['pinot.server.adminapi.port']}/health" in health
    # Null-aware queries (SET enableNullHandling=true) need data table v4, locally and in Compose.
    assert conf["pinot.server.instance.currentDataTableVersion"] == "4"
    script = (REPO_ROOT / "scripts" / "pinot.sh").read_text(encoding="utf-8")
    assert "pinot.server.instance.currentDataTableVersion=4" in script
