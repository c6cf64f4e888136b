"""The enriched record is shaped for Pinot: every field has a column of a compatible type."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from schemas.events import EnrichedEvent

SCHEMA = Path(__file__).resolve().parents[2] / "schemas/pinot/api_events/schema.json"
COMPATIBLE = {
    "string": {"STRING"},
    "integer": {"INT", "LONG", "TIMESTAMP"},
    "number": {"DOUBLE", "FLOAT"},
    "boolean": {"BOOLEAN"},
}


def _pinot_columns() -> dict[str, str]:
    schema = json.loads(SCHEMA.read_text())
    specs = (
        schema["dimensionFieldSpecs"] + schema["metricFieldSpecs"] + schema["dateTimeFieldSpecs"]
    )
    return {spec["name"]: spec["dataType"] for spec in specs}


def _json_type(prop: dict[str, Any]) -> str:
    if "type" in prop:
        return str(prop["type"])
    types = [str(t["type"]) for t in prop["anyOf"] if t.get("type") != "null"]
    assert len(types) == 1
    return types[0]


def test_every_enriched_field_has_a_pinot_column_of_a_compatible_type() -> None:
    columns = _pinot_columns()
    props = EnrichedEvent.model_json_schema()["properties"]
    # ingested_at: filled by Pinot at ingestion (the table's transform), not by the job.
    assert set(columns) == set(props) | {"ingested_at"}
    for name, prop in props.items():
        assert columns[name] in COMPATIBLE[_json_type(prop)], name


def test_event_time_is_an_epoch_millis_timestamp() -> None:
    schema = json.loads(SCHEMA.read_text())
    spec = next(s for s in schema["dateTimeFieldSpecs"] if s["name"] == "event_time")
    assert spec["format"] == "1:MILLISECONDS:EPOCH"
