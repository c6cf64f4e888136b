"""Create or update the Pinot schemas and real-time tables defined under ``schemas/pinot/``.

    python -m tools.pinot_tables --controller http://127.0.0.1:9000 \\
        --bootstrap-servers 127.0.0.1:9092 [--enriched-topic T] [--alerts-topic T] \\
        [--actions-topic T] [--period-usage-topic T] [--dlq-topic T] \\
        [--reconciliation-topic T] [--recreate]

Each table has a folder ``schemas/pinot/<table>/`` with ``schema.json`` and ``table.json``. The
table configs name their Kafka topic and brokers through placeholders (``${ENRICHED_TOPIC}``,
``${ALERTS_TOPIC}``, ``${ACTIONS_TOPIC}``, ``${PERIOD_USAGE_TOPIC}``, ``${DLQ_TOPIC}``,
``${RECONCILIATION_TOPIC}``, ``${BOOTSTRAP_SERVERS}``) that this tool fills in; the
defaults come from ``PipelineSettings`` (so ``PIPELINE_BOOTSTRAP_SERVERS``,
``PIPELINE_ENRICHED_TOPIC``, ``PIPELINE_ALERTS_TOPIC``, ``PIPELINE_DLQ_TOPIC``, ... apply, as for
the job). The actions topic is the responder's, not the job's: its default is
``RESPONDER_ACTIONS_TOPIC``, the responder's own setting, else the catalog's name
(metering.topics).

Idempotent: a schema or table that exists is updated in place (PUT), otherwise created (POST),
schemas before tables. An update keeps the table's data; Pinot applies changed stream settings
to the next consuming segments. An update that would point a table at another topic or Kafka
cluster is refused (its consuming segments hold offsets of the old topic). ``--recreate`` drops
each table and its schema first and creates them again: the data is gone and the table
re-ingests its topic from the earliest offset still retained (``auto.offset.reset: smallest``),
which is the way to change a column incompatibly or to move a table to another topic or
cluster. ``--print`` shows the filled-in configs and exits.

Only the standard library is used (urllib), so the tool also runs in a bare Python image.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from metering.settings import PipelineSettings
from metering.topics import BY_ROLE

PINOT_DIR = Path(__file__).resolve().parent.parent / "schemas" / "pinot"
TABLES: tuple[str, ...] = (
    "api_events",
    "alerts",
    "actions",
    "period_usage",
    "dead_letters",
    "reconciliation",
)
ACTIONS_TOPIC = BY_ROLE["actions"].name
"""The responder's action records (responder/actions.py), the ``actions`` table's topic."""
ACTIONS_TOPIC_ENV = "RESPONDER_ACTIONS_TOPIC"
PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Pinot answers these while a just-deleted table is still being cleaned up.
_RETRY_STATUSES = frozenset({400, 409, 500, 503})
T = TypeVar("T")


class PinotError(RuntimeError):
    """The controller refused a request, or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# --- definitions ---------------------------------------------------------------------------------


def placeholder_values(
    *,
    bootstrap_servers: str,
    enriched_topic: str,
    alerts_topic: str,
    actions_topic: str = ACTIONS_TOPIC,
    period_usage_topic: str = BY_ROLE["period_usage"].name,
    dlq_topic: str = BY_ROLE["dlq"].name,
    reconciliation_topic: str = BY_ROLE["reconciliation"].name,
) -> dict[str, str]:
    """The values of the placeholders the table configs may use."""
    return {
        "BOOTSTRAP_SERVERS": bootstrap_servers,
        "ENRICHED_TOPIC": enriched_topic,
        "ALERTS_TOPIC": alerts_topic,
        "ACTIONS_TOPIC": actions_topic,
        "PERIOD_USAGE_TOPIC": period_usage_topic,
        "DLQ_TOPIC": dlq_topic,
        "RECONCILIATION_TOPIC": reconciliation_topic,
    }


def find_placeholders(value: Any) -> set[str]:
    """Names of every ``${NAME}`` in the strings (keys and values) of a JSON value."""
    if isinstance(value, str):
        return set(PLACEHOLDER.findall(value))
    if isinstance(value, Mapping):
        found: set[str] = set()
        for k, v in value.items():
            found |= find_placeholders(k) | find_placeholders(v)
        return found
    if isinstance(value, list):
        return set().union(*(find_placeholders(v) for v in value))
    return set()


def substitute(value: Any, values: Mapping[str, str]) -> Any:
    """A copy of a JSON value with every ``${NAME}`` replaced; ValueError for an unknown NAME."""
    if isinstance(value, str):

        def repl(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in values:
                raise ValueError(f"no value for placeholder ${{{name}}}")
            return values[name]

        return PLACEHOLDER.sub(repl, value)
    if isinstance(value, Mapping):
        return {substitute(k, values): substitute(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, values) for v in value]
    return value


@dataclass(frozen=True)
class TableDefinition:
    """One Pinot table: its schema and its table config, placeholders filled in."""

    name: str
    schema: dict[str, Any]
    table_config: dict[str, Any]

    @property
    def table_type(self) -> str:
        return str(self.table_config.get("tableType", "REALTIME")).upper()


def load_definition(
    name: str, values: Mapping[str, str], root: Path = PINOT_DIR
) -> TableDefinition:
    folder = root / name
    schema = json.loads((folder / "schema.json").read_text(encoding="utf-8"))
    table = json.loads((folder / "table.json").read_text(encoding="utf-8"))
    definition = TableDefinition(name, substitute(schema, values), substitute(table, values))
    if definition.schema.get("schemaName") != name:
        raise ValueError(f"{folder}/schema.json: schemaName must be {name!r}")
    if definition.table_config.get("tableName") != name:
        raise ValueError(f"{folder}/table.json: tableName must be {name!r}")
    schema_ref = definition.table_config.get("segmentsConfig", {}).get("schemaName", name)
    if schema_ref != name:
        raise ValueError(f"{folder}/table.json: segmentsConfig.schemaName must be {name!r}")
    return definition


def load_definitions(
    values: Mapping[str, str], tables: Sequence[str] = TABLES, root: Path = PINOT_DIR
) -> list[TableDefinition]:
    return [load_definition(name, values, root) for name in tables]


# --- controller REST API -------------------------------------------------------------------------


class PinotController:
    """The few controller endpoints this tool needs (Pinot 0.11+ REST API)."""

    def __init__(self, base_url: str, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def request(
        self, method: str, path: str, body: Any = None, query: Mapping[str, str] | None = None
    ) -> tuple[int, Any]:
        """(status, decoded body) for 2xx and 404; PinotError for anything else."""
        url = self.base_url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json, text/plain;q=0.9, */*;q=0.5")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return resp.status, _decode(resp.read())
        except urllib.error.HTTPError as e:
            payload = _decode(e.read())
            if e.code == 404:
                return 404, payload
            message = payload.get("error", payload) if isinstance(payload, dict) else payload
            raise PinotError(f"{method} {path}: HTTP {e.code}: {message}", e.code) from None
        except (urllib.error.URLError, OSError) as e:
            raise PinotError(f"{method} {url}: {getattr(e, 'reason', e)}") from None

    def healthy(self) -> bool:
        try:
            status, body = self.request("GET", "/health")
        except PinotError:
            return False
        return status == 200 and str(body).strip() == "OK"

    def wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.healthy():
            if time.monotonic() >= deadline:
                raise PinotError(f"controller {self.base_url} not healthy after {timeout_s:.0f} s")
            time.sleep(1.0)

    def schema_exists(self, name: str) -> bool:
        status, _ = self.request("GET", f"/schemas/{_q(name)}")
        return status == 200

    def get_table(self, name: str, table_type: str) -> dict[str, Any] | None:
        """The table's current config, or None when there is no such table."""
        status, body = self.request("GET", f"/tables/{_q(name)}", query={"type": table_type})
        if status != 200 or not isinstance(body, dict):
            return None
        config = body.get(table_type.upper())
        return config if isinstance(config, dict) else None

    def table_exists(self, name: str, table_type: str) -> bool:
        return self.get_table(name, table_type) is not None

    def add_schema(self, schema: Mapping[str, Any]) -> Any:
        return self.request("POST", "/schemas", schema, {"override": "false"})[1]

    def update_schema(self, schema: Mapping[str, Any]) -> Any:
        return self.request("PUT", f"/schemas/{_q(schema['schemaName'])}", schema)[1]

    def delete_schema(self, name: str) -> None:
        self.request("DELETE", f"/schemas/{_q(name)}")

    def add_table(self, config: Mapping[str, Any]) -> Any:
        return self.request("POST", "/tables", config)[1]

    def update_table(self, config: Mapping[str, Any]) -> Any:
        return self.request("PUT", f"/tables/{_q(config['tableName'])}", config)[1]

    def delete_table(self, name: str, table_type: str) -> None:
        self.request("DELETE", f"/tables/{_q(name)}", query={"type": table_type.lower()})


def _q(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _decode(raw: bytes) -> Any:
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def _unrecognized(response: Any) -> str:
    """Properties this Pinot version ignored (e.g. newer-version keys), as a warning suffix."""
    props = response.get("unrecognizedProperties") if isinstance(response, dict) else None
    return f" (ignored by this Pinot version: {', '.join(sorted(props))})" if props else ""


def _retrying(action: Callable[[], T], attempts_s: float = 30.0) -> T:
    """Run ``action()``; retry for up to ``attempts_s`` while a dropped table is cleaned up."""
    deadline = time.monotonic() + attempts_s
    while True:
        try:
            return action()
        except PinotError as e:
            if e.status not in _RETRY_STATUSES or time.monotonic() >= deadline:
                raise
            time.sleep(1.0)


def stream_source(table_config: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(topic, brokers) a real-time table config reads; Pinot 0.11 and 1.x layouts."""
    streams = table_config.get("tableIndexConfig", {}).get("streamConfigs") or {}
    if not streams:
        ingestion = table_config.get("ingestionConfig", {}).get("streamIngestionConfig", {})
        maps = ingestion.get("streamConfigMaps") or [{}]
        streams = maps[0]
    return streams.get("stream.kafka.topic.name"), streams.get("stream.kafka.broker.list")


def apply_definitions(
    controller: PinotController, definitions: Sequence[TableDefinition], *, recreate: bool = False
) -> list[str]:
    """Create or update every schema, then every table; returns one line per action.

    Refuses (PinotError, before changing anything) to move an existing table to another topic
    or Kafka cluster in place: its consuming segments hold offsets of the old topic, which mean
    nothing in the new one. ``recreate`` drops the table first, which is the way to do that.
    """
    log: list[str] = []
    if not recreate:
        for d in definitions:
            current = controller.get_table(d.name, d.table_type)
            if current is None:
                continue
            (old_topic, old_brokers), (topic, brokers) = (
                stream_source(current),
                stream_source(d.table_config),
            )
            if old_topic != topic or old_brokers != brokers:
                raise PinotError(
                    f"table {d.name} reads topic {old_topic} from {old_brokers}; the new config "
                    f"reads {topic} from {brokers}. Offsets do not carry over to another topic: "
                    "re-run with --recreate (drops the table's data; it re-ingests the topic)"
                )
    if recreate:
        for d in definitions:
            if controller.table_exists(d.name, d.table_type):
                controller.delete_table(d.name, d.table_type)
                log.append(f"table {d.name} ({d.table_type}) dropped")
            if controller.schema_exists(d.name):
                _retrying(partial(controller.delete_schema, d.name))
                log.append(f"schema {d.name} dropped")
    for d in definitions:
        if controller.schema_exists(d.name):
            resp = controller.update_schema(d.schema)
            log.append(f"schema {d.name} updated{_unrecognized(resp)}")
        else:
            resp = _retrying(partial(controller.add_schema, d.schema))
            log.append(f"schema {d.name} created{_unrecognized(resp)}")
    for d in definitions:
        if controller.table_exists(d.name, d.table_type):
            resp = controller.update_table(d.table_config)
            log.append(f"table {d.name} ({d.table_type}) updated{_unrecognized(resp)}")
        else:
            resp = _retrying(partial(controller.add_table, d.table_config))
            log.append(f"table {d.name} ({d.table_type}) created{_unrecognized(resp)}")
    return log


# --- command line --------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = PipelineSettings()
    except ValueError as e:
        print(f"pinot_tables: invalid PIPELINE_* environment: {e}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(
        prog="python -m tools.pinot_tables",
        description="Create or update the Pinot schemas and real-time tables "
        "(schemas/pinot/<table>/schema.json and table.json).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--controller", default="http://127.0.0.1:9000", help="controller URL")
    parser.add_argument(
        "--bootstrap-servers",
        default=settings.bootstrap_servers,
        metavar="HOST:PORT[,...]",
        help="Kafka brokers as Pinot's servers reach them",
    )
    parser.add_argument("--enriched-topic", default=settings.enriched_topic)
    parser.add_argument("--alerts-topic", default=settings.alerts_topic)
    parser.add_argument("--period-usage-topic", default=settings.period_usage_topic)
    parser.add_argument("--dlq-topic", default=settings.dlq_topic)
    parser.add_argument("--reconciliation-topic", default=settings.reconciliation_topic)
    parser.add_argument(
        "--actions-topic",
        default=os.environ.get(ACTIONS_TOPIC_ENV) or ACTIONS_TOPIC,
        help=f"the responder's action records ({ACTIONS_TOPIC_ENV} if set)",
    )
    parser.add_argument(
        "--table",
        action="append",
        choices=TABLES,
        dest="tables",
        help="only this table (repeatable; default: all)",
    )
    parser.add_argument(
        "--recreate",
        action="store_true",
        help="drop each table and schema first (deletes the table's data; it re-ingests)",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="wait this long for the controller to report healthy",
    )
    parser.add_argument(
        "--print", action="store_true", dest="print_only", help="print the configs and exit"
    )
    args = parser.parse_args(argv)

    values = placeholder_values(
        bootstrap_servers=args.bootstrap_servers,
        enriched_topic=args.enriched_topic,
        alerts_topic=args.alerts_topic,
        actions_topic=args.actions_topic,
        period_usage_topic=args.period_usage_topic,
        dlq_topic=args.dlq_topic,
        reconciliation_topic=args.reconciliation_topic,
    )
    try:
        definitions = load_definitions(values, args.tables or TABLES)
    except (OSError, ValueError) as e:
        parser.error(str(e))
    if args.print_only:
        for d in definitions:
            print(json.dumps({"schema": d.schema, "table": d.table_config}, indent=2))
        return 0

    controller = PinotController(args.controller)
    try:
        controller.wait_healthy(args.wait)
        for line in apply_definitions(controller, definitions, recreate=args.recreate):
            print(line)
    except PinotError as e:
        print(f"pinot_tables: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
