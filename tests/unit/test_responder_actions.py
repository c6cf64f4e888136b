"""Action records, their ids, and the state a restart reads back (responder.actions)."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from metering.detect import alert_id
from responder.actions import (
    HOUR_MS,
    ActionLog,
    ActionRecord,
    block_action_id,
    digest,
    hour_bucket,
    incident_id,
    notify_action_id,
    oncall_action_id,
    unblock_action_id,
)

NOW = 1_800_000_000_000


def _record(
    action_id: str, outcome: str = "planned", action: str = "webhook", **kw: Any
) -> ActionRecord:
    return ActionRecord.model_validate(
        {
            "action_id": action_id,
            "outcome": outcome,
            "action": action,
            "target": kw.pop("target", action),
            "incident_id": kw.pop("incident_id", "inc"),
            "recorded_at": kw.pop("recorded_at", NOW),
            "responder": "r1",
            **kw,
        }
    )


def _block(
    action_id: str, outcome: str, unblock_at: int | None, blocked: str, **kw: Any
) -> ActionRecord:
    return _record(
        action_id,
        outcome,
        "block",
        target="apisix:key:f",
        unblock_at=unblock_at,
        blocked=blocked,
        **kw,
    )


def test_ids_are_deterministic_and_distinct() -> None:
    # The detector's form: sha256 of the parts joined by "|", 32 hex characters.
    assert digest("acme", "1234") == alert_id("acme", 1234)
    assert len(digest("x")) == 32
    ids = {
        notify_action_id("alert1", "webhook", "webhook"),
        notify_action_id("alert1", "slack", "slack"),
        notify_action_id("alert2", "webhook", "webhook"),
        block_action_id("inc1", "apisix:key:f"),
        block_action_id("inc2", "apisix:key:f"),
        unblock_action_id("b1"),
        oncall_action_id(hour_bucket(NOW)),
    }
    assert len(ids) == 7
    assert notify_action_id("alert1", "webhook", "webhook") == notify_action_id(
        "alert1", "webhook", "webhook"
    )


def test_the_incident_id_is_the_open_alerts_id() -> None:
    assert incident_id("acme", 1234) == alert_id("acme", 1234)
    assert incident_id("acme", 1234) != alert_id("acme", 1234, "closed")


def test_hour_buckets() -> None:
    start = NOW - NOW % HOUR_MS
    assert hour_bucket(start) == hour_bucket(start + HOUR_MS - 1) == start
    assert hour_bucket(start + HOUR_MS) == start + HOUR_MS


def test_records_round_trip_and_refuse_unknown_fields() -> None:
    record = _record("a1", reason="HTTP 500 after 5 attempts", attempts=5)
    assert ActionRecord.from_json(record.to_json()) == record
    with pytest.raises(pydantic.ValidationError):
        ActionRecord.model_validate({**record.model_dump(), "api_key": "x"})


def test_finished_drops_the_alert_and_stamps_the_time() -> None:
    planned = _record("a1", alert={"alert_id": "x"})
    done = planned.finished("done", NOW + 5, attempts=1)
    assert (done.outcome, done.recorded_at, done.alert, done.attempts) == ("done", NOW + 5, None, 1)


def test_pending_are_planned_without_a_terminal_record_in_plan_order() -> None:
    log = ActionLog()
    log.apply_all(
        [
            _record("a"),
            _record("b"),
            _record("c"),
            _record("b", "done"),
            _record("d", "skipped_by_policy"),
        ]
    )
    assert [r.action_id for r in log.pending()] == ["a", "c"]
    assert log.known("d") and log.known("a") and not log.known("e")


def test_a_terminal_record_is_final() -> None:
    log = ActionLog()
    log.apply_all([_record("a"), _record("a", "done"), _record("a")])
    assert log.latest["a"].outcome == "done"
    assert log.pending() == []


def test_block_times_count_planned_blocks_once() -> None:
    log = ActionLog()
    log.apply_all(
        [
            _block("b1", "planned", None, "x", recorded_at=NOW - 2 * HOUR_MS),
            _block("b2", "planned", None, "y", recorded_at=NOW - 10),
            _block("b2", "done", NOW + 1, "y", recorded_at=NOW - 5),
            _block("b3", "dry_run", None, "z"),
        ]
    )
    assert log.block_times == [NOW - 2 * HOUR_MS, NOW - 10]
    assert log.blocks_since(NOW - HOUR_MS) == 1


def test_active_and_due_blocks_whatever_the_arrival_order() -> None:
    unblock = _record(
        unblock_action_id("b1"), "done", "unblock", block_id="b1", target="apisix:key:f"
    )
    records = [
        _block("b1", "planned", None, "apisix:consumer:acme"),
        _block("b2", "planned", None, "apisix:consumer:beta"),
        _block("b3", "planned", None, "apisix:credential:c9"),
        _block("b1", "done", NOW + 10, "apisix:consumer:acme"),
        _block("b2", "done", NOW + 20, "apisix:consumer:beta"),
        _block("b3", "done", None, "apisix:credential:c9"),  # irreversible: never unblocked
    ]
    for order in ([*records, unblock], [unblock, *records]):
        log = ActionLog()
        log.apply_all(order)
        assert [b.block_id for b in log.active_blocks()] == ["b2"]
        assert log.due_unblocks(NOW + 19) == []
        assert [(b.block_id, later) for b, later in log.due_unblocks(NOW + 20)] == [("b2", None)]


def test_a_due_unblock_is_superseded_by_a_longer_block_of_the_same_target() -> None:
    log = ActionLog()
    log.apply_all(
        [
            _block("b1", "done", NOW + 10, "apisix:consumer:acme"),
            _block("b2", "done", NOW + 50, "apisix:consumer:acme"),
            _block("b3", "done", NOW + 5, "apisix:consumer:other"),
        ]
    )
    due = [
        (b.block_id, later.block_id if later else None) for b, later in log.due_unblocks(NOW + 10)
    ]
    assert due == [("b3", None), ("b1", "b2")]
    log.apply(_record(unblock_action_id("b1"), "planned", "unblock", block_id="b1"))
    assert [b.block_id for b, _ in log.due_unblocks(NOW + 10)] == ["b3"]
