"""The short fault run of `make test`: four real faults on a real cluster and broker.

`make faults` runs the full suite (15 faults, about 16 minutes). This is its short form, in the
same code path (testkit.faults.run): its own broker and session cluster on ports away from the
other tests, traffic with per-key sequence numbers and refused-call bursts, a TaskManager
kill -9 during a checkpoint, a broker kill -9, a Python worker kill -9 and a broker restart,
then the read_committed check against ground truth, alerts included.
"""

from __future__ import annotations

import json
import logging
import os
import time

import pytest
from confluent_kafka import Consumer, Producer

from testkit.faults import PARTITIONS, CommittedIds, FaultsConfig, FaultsError, run

# Away from the test fixtures (19092/18081), `make faults` (29092/28081) and a dev setup.
KAFKA_PORT = int(os.environ.get("FAULTS_TEST_KAFKA_PORT", "26092"))
FLINK_REST = os.environ.get("FAULTS_TEST_FLINK_REST", "127.0.0.1:26081")
PLAN = ("tm-kill:during", "broker-kill9", "py-worker-kill", "broker-restart")


def test_process_and_broker_kills_lose_duplicate_and_miscount_nothing() -> None:
    cfg = FaultsConfig(
        faults=len(PLAN),
        duration_s=75.0,
        rate=40.0,
        seed=7,
        kafka_port=KAFKA_PORT,
        flink_rest=FLINK_REST,
        plan=PLAN,
        keep_topics=False,
        keys=64,
        job_args=(),
        alert_bursts=True,
    )
    report = run(cfg)

    assert [f.kind for f in report.faults] == list(PLAN)
    assert all(f.recovery_s is not None for f in report.faults), report.faults
    assert report.problems == []
    v = report.verification
    assert v is not None
    # 75 s at 40 events/s, every one delivered and checked (plus a burst of 30 per fault).
    assert report.events_checked >= 2900
    assert v.events == report.events_checked
    assert (report.lost, report.duplicated, report.windows_differing) == (0, 0, 0)
    assert v.unexpected == [] and v.raw_duplicates == 0 and v.sequence_gaps == 0
    assert v.windows > 0 and v.window_mismatches == {} and v.windows_emitted_twice == []
    assert v.dead_letters == 0
    assert v.reconciliation_checked and v.reconciliation == []
    # Each burst raised its auth_failures alert; repeats (at-least-once) kept their id.
    assert v.alerts is not None and v.alerts.expected == len(PLAN)
    assert v.alerts.missing == [] and v.alerts.unexpected == [] and v.alerts.conflicting_ids == []
    assert report.line().endswith("lost 0, duplicated 0, windows differing 0")
    assert report.ok


def _produce(bootstrap: str, topic: str, ids: range) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i in ids:
        producer.produce(topic, json.dumps({"request_id": f"r-{i}"}).encode(), partition=i % 2)
    assert producer.flush(30) == 0


def _read_all(reader: CommittedIds, want: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while len(reader.ids) < want and time.monotonic() < deadline:
        reader.poll(0.5)


def test_a_stalled_progress_reader_is_replaced_and_reads_on(
    kafka_bootstrap: str, unique_topics: dict[str, str]
) -> None:
    """The reader of `make faults` once stopped fetching after a broker restart, without an
    error, while the topic held every event. A consumer that stops fetching (here: paused) is
    replaced by a new one from where it stopped; nothing is read twice."""
    topic = unique_topics["enriched"]
    _produce(kafka_bootstrap, topic, range(100))
    reader = CommittedIds(kafka_bootstrap, topic, logging.getLogger("test"), stall_after_s=2.0)
    try:
        _read_all(reader, 100, 30)
        assert len(reader.ids) == 100 and reader.restarts == 0
        reader.consumer.pause(reader.consumer.assignment())  # fetches nothing from now on
        _produce(kafka_bootstrap, topic, range(100, 300))
        _read_all(reader, 300, 60)
        assert len(reader.ids) == 300 and reader.total == 300
        assert reader.restarts >= 1
        assert reader.caught_up()
    finally:
        reader.close()


def test_a_progress_reader_that_cannot_read_fails_the_run_instead_of_waiting(
    kafka_bootstrap: str, unique_topics: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = unique_topics["enriched"]
    reader = CommittedIds(kafka_bootstrap, topic, logging.getLogger("test"), stall_after_s=1.0)
    make = reader._consumer

    def paused(start: dict[int, int]) -> Consumer:
        consumer = make(start)
        consumer.pause(consumer.assignment())
        return consumer

    monkeypatch.setattr(reader, "_consumer", paused)
    reader.consumer.close()
    reader.consumer = paused(dict.fromkeys(range(PARTITIONS), 0))
    _produce(kafka_bootstrap, topic, range(50))
    t0 = time.monotonic()
    with pytest.raises(FaultsError, match=r"progress reader .* stalled"):
        while time.monotonic() - t0 < 60:
            reader.poll(0.5)
    assert reader.restarts == CommittedIds.MAX_RESTARTS_WITHOUT_PROGRESS
    reader.close()
