"""The rows the parse hands SQL: PyFlink serializes a Row by position, so the parse must emit its
fields in the order the stage declares them (schemas.stages), which the Row types follow."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from payloads import RAW_TOPIC, apisix_39, encode, kong_200
from pyflink.common import Row

from metering.records import Limits, RecordProcessor
from schemas.stages import DEAD, FIRST_SIGHTING, PARSED, USAGE, WINDOW_RECORD
from udfs.functions import (
    DEAD_LETTERS,
    PARSED_TYPE,
    USAGE_TYPE,
    WINDOW_RECORD_TYPE,
    ParseEnrich,
)


class _Counter:
    def inc(self, n: int = 1) -> None:
        pass


def parse(processor: RecordProcessor, payload: bytes, offset: int) -> list[Any]:
    fn = ParseEnrich(RAW_TOPIC, "unused.mmdb", 0, Limits())
    fn._processor = processor
    fn._records_in = fn._events_out = fn._dead_out = _Counter()
    raw = Row(payload=payload, partition=3, offset=offset, kafka_s=1_718_291_190)
    return list(fn.process_element(raw, None))  # type: ignore[arg-type]


def test_events_come_in_the_declared_order_with_the_record_count_on_the_first(
    processor: RecordProcessor,
) -> None:
    rows = parse(processor, encode([apisix_39(), kong_200(), apisix_39()]), 41)
    assert [r._fields for r in rows] == [PARSED.names] * 3
    assert [r.record_events for r in rows] == [3, 0, 0]
    assert {(r.p, r.o, r.s) for r in rows} == {(3, 41, 1_718_291_190)}
    assert PARSED_TYPE.get_field_names() == PARSED.names
    assert USAGE_TYPE.get_field_names() == USAGE.names


def test_dead_letters_come_in_the_declared_order_and_count_their_record_once(
    processor: RecordProcessor,
) -> None:
    rows = parse(processor, b"{not json", 42)
    assert [(tag, r._fields) for tag, r in rows] == [(DEAD_LETTERS, DEAD.names)]
    assert rows[0][1].first_of_record is True
    # A record with events is counted by its first event; its dead letters do not count it.
    mixed = parse(processor, encode([apisix_39(), {"nonsense": True}]), 43)
    dead = [r for tag_r in mixed if isinstance(tag_r, tuple) for r in tag_r[1:]]
    assert [r.first_of_record for r in dead] == [False]
    assert [r.record_events for r in mixed if isinstance(r, Row)] == [1]


def test_the_jvm_windows_read_and_write_only_declared_fields() -> None:
    # UsageWindows (jvm/) looks its fields up by name when the job is built; a name it reads
    # that a stage does not declare would fail there, so check the source against the stages.
    source = (
        Path(__file__).resolve().parents[2]
        / "jvm/src/main/java/io/github/gatewaypipeline/flink/UsageWindows.java"
    ).read_text(encoding="utf-8")
    read = set(re.findall(r'in\.index\("(\w+)"\)', source))
    written = set(re.findall(r'out\.index\("(\w+)"\)', source))
    assert read and read <= set(FIRST_SIGHTING.names)
    assert written == set(WINDOW_RECORD.names)
    assert WINDOW_RECORD_TYPE.get_field_names() == WINDOW_RECORD.names
