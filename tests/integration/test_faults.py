"""The short fault run of `make test`: two real faults on a real cluster and broker.

`make faults` runs the full suite (10 faults, ~8 minutes). This is its short form, in the same
code path (tools.faults.run): its own broker and session cluster on ports away from the other
tests, traffic with per-key sequence numbers, a TaskManager kill -9 during a checkpoint and a
broker restart, then the read_committed check against ground truth.
"""

from __future__ import annotations

import os

from tools.faults import FaultsConfig, run

# Away from the test fixtures (19092/18081), `make faults` (29092/28081) and a dev setup.
KAFKA_PORT = int(os.environ.get("FAULTS_TEST_KAFKA_PORT", "26092"))
FLINK_REST = os.environ.get("FAULTS_TEST_FLINK_REST", "127.0.0.1:26081")


def test_tm_kill_during_checkpoint_and_broker_restart_lose_and_duplicate_nothing() -> None:
    cfg = FaultsConfig(
        faults=2,
        duration_s=60.0,
        rate=40.0,
        seed=7,
        kafka_port=KAFKA_PORT,
        flink_rest=FLINK_REST,
        plan=("tm-kill:during", "broker-restart"),
        keep_topics=False,
        keys=64,
        job_args=(),
    )
    report = run(cfg)

    assert [f.kind for f in report.faults] == ["tm-kill:during", "broker-restart"]
    assert all(f.recovery_s is not None for f in report.faults), report.faults
    assert report.problems == []
    v = report.verification
    assert v is not None
    # 60 s at 40 events/s, every one delivered and checked.
    assert report.events_checked >= 2000
    assert v.events == report.events_checked
    assert (report.lost, report.duplicated) == (0, 0)
    assert v.unexpected == [] and v.raw_duplicates == 0 and v.sequence_gaps == 0
    assert v.windows > 0 and v.window_mismatches == {} and v.windows_emitted_twice == []
    assert v.dead_letters == 0
    assert v.reconciliation_checked and v.reconciliation == []
    assert report.ok
