"""The rows the parse hands SQL: PyFlink serializes a Row by position, so the parse must return
its fields in the order the stage declares them (schemas.stages), which the SQL unnests read by
name."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd
from payloads import RAW_TOPIC, apisix_39, encode, kong_200
from pyflink.common import Row

from jobs import pipeline_sql
from metering.records import Limits, RecordProcessor
from schemas.stages import DEAD, FIRST_SIGHTING, PARSED, PARSED_RECORD, USAGE, WINDOW_RECORD
from udfs.functions import USAGE_TYPE, WINDOW_RECORD_TYPE, ParseRecords


class _Counter:
    def inc(self, n: int = 1) -> None:
        pass


def _function(processor: RecordProcessor, vectorized: bool) -> ParseRecords:
    fn = ParseRecords(RAW_TOPIC, "unused.mmdb", 0, Limits(), vectorized=vectorized)
    fn._processor = processor
    fn._records_in = fn._events_out = fn._dead_out = _Counter()  # type: ignore[assignment]
    return fn


def parse(processor: RecordProcessor, payload: bytes, offset: int) -> Any:
    row = _function(processor, vectorized=False).eval(payload, 3, offset, 1_718_291_190)
    assert isinstance(row, Row)
    return dict(zip(PARSED_RECORD.names, row, strict=True))


def test_a_record_comes_back_in_the_declared_order_one_array_element_per_event(
    processor: RecordProcessor,
) -> None:
    record = parse(processor, encode([apisix_39(), kong_200(), apisix_39()]), 41)
    assert (record["p"], record["o"], record["s"]) == (3, 41, 1_718_291_190)
    arrays = {n: v for n, v in record.items() if n not in ("p", "o", "s", "dead")}
    assert {n: len(v) for n, v in arrays.items()} == dict.fromkeys(arrays, 3)
    assert record["dead"] == []
    assert record["rate_key"][0] == record["rate_key"][2]
    assert USAGE_TYPE.get_field_names() == USAGE.names


def test_a_batch_comes_back_as_one_row_per_record_in_the_declared_order(
    processor: RecordProcessor,
) -> None:
    fn = _function(processor, vectorized=True)
    frame = fn.eval(
        pd.Series([encode([apisix_39(), kong_200()]), b"{not json"]),
        pd.Series([0, 1]),
        pd.Series([7, 8]),
        pd.Series([100, 101]),
    )
    assert list(frame.columns) == PARSED_RECORD.names
    assert [len(v) for v in frame["value"]] == [2, 0]
    assert [len(v) for v in frame["dead"]] == [0, 1]
    assert list(frame["o"]) == [7, 8]


def test_dead_letters_come_back_with_their_record(processor: RecordProcessor) -> None:
    record = parse(processor, b"{not json", 42)
    assert record["value"] == [] and len(record["dead"]) == 1
    mixed = parse(processor, encode([apisix_39(), {"nonsense": True}]), 43)
    assert len(mixed["value"]) == 1 and len(mixed["dead"]) == 1


def test_the_unnests_produce_exactly_the_declared_stages() -> None:
    # Every PARSED and DEAD field, in order, each from a field the parse returns.
    events = pipeline_sql.parsed_events_query()
    assert re.findall(r"AS `(\w+)`", events) == PARSED.names
    assert re.findall(r"AS `(\w+)`", pipeline_sql.dead_letters_query()) == DEAD.names
    used = set(re.findall(r"r\.`(\w+)`", events))
    assert used <= set(PARSED_RECORD.names)


def test_the_jvm_windows_read_and_write_only_declared_fields() -> None:
    # UsageWindows (jvm/) looks its fields up by name when the job is built; a name it reads
    # that a stage does not declare would fail there, so check the source against the stages.
    source = (
        Path(__file__).resolve().parents[2]
        / "jvm/src/main/java/io/github/gatewaypipeline/flink/UsageWindows.java"
    ).read_text(encoding="utf-8")
    read = set(re.findall(r'in\.index\("(\w+)"\)', source))
    written = set(re.findall(r'out\.index\("(\w+)"\)', source))
    # The shared signal reads the usage windows' own records.
    records = set(re.findall(r'rec\.index\("(\w+)"\)', source))
    assert read and read <= set(FIRST_SIGHTING.names)
    assert records and records <= set(WINDOW_RECORD.names)
    assert written == set(WINDOW_RECORD.names)
    assert WINDOW_RECORD_TYPE.get_field_names() == WINDOW_RECORD.names
