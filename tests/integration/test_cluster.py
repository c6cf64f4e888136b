"""The unchanged job on a real Flink session cluster: submit, upgrade through a savepoint, resume.

run 1 reads the first half of a known mix, is stopped with a savepoint, the second half is
produced while nothing runs, run 2 resumes from the savepoint, and a final drain closes the open
windows. Totals must be exact: nothing lost, nothing twice, across the savepoint; also when
the upgrade moves the stateless parse from thread mode to process mode. Moving the keyed
functions to the other runtime must be refused, not lose their state.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import urllib.error
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cluster_helpers import submit, wait_until
from confluent_kafka import Producer

from bench.task_time import METRICS, TaskTimeSampler
from jobs.submit import TERMINAL, Rest
from metering.geo import GeoLookup, default_geoip_db
from metering.records import Limits, RecordProcessor, SourceRef, client_rate_key
from metering.redact import Pseudonymizer
from testkit.traffic import (
    SCENARIO_JOB_FLAGS,
    default_scenario,
    generate,
    ips_for_countries,
    max_event_age_covering,
    scenario_alert_problems,
)
from tools.readback import drain
from tools.topics import job_topic_flags

pytestmark = pytest.mark.integration

START_MS = 1_767_225_600_000
STEP_TIMEOUT_S = 300.0


@pytest.fixture(autouse=True)
def _cancel_jobs_left_running(flink_cluster: Any) -> Iterator[None]:
    """A test that fails mid-way must not leave its job holding the cluster's slots: the next
    test's job would wait for resources and fail for that reason instead of its own. Jobs that
    ran before the test are left alone (FLINK_CLUSTER_REST may name a shared cluster); one
    someone else submits during the test would be cancelled too."""
    rest = Rest(flink_cluster.rest)
    before = {j["id"] for j in rest.call("GET", "/jobs")["jobs"]}
    yield
    for job in rest.call("GET", "/jobs")["jobs"]:
        if job["id"] not in before and job["status"] not in TERMINAL:
            # It may end between the listing and the cancel, which Flink then refuses.
            with contextlib.suppress(urllib.error.HTTPError):
                rest.call("PATCH", f"/jobs/{job['id']}?mode=cancel")


def _submit_cli(cluster: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return submit(cluster, *args, timeout_s=STEP_TIMEOUT_S + 60)


def _produce(bootstrap: str, topic: str, records: list[bytes], first_index: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for i, value in enumerate(records, start=first_index):
        producer.produce(topic, value=value, partition=i % 2)
    assert producer.flush(30) == 0


def _await(what: str, probe: Callable[[], int], want: int) -> None:
    got = probe()

    def reached() -> bool:
        nonlocal got
        got = probe()
        assert got <= want, f"{what}: {got} > {want} (duplicates)"
        return got == want

    wait_until(what, reached, STEP_TIMEOUT_S, detail=lambda: f"{got} of {want}")


THREAD_THROUGHOUT = ["--execution-mode", "thread", "--parse-execution-mode", "thread"]
PROCESS_DETECTOR = ["--execution-mode", "process"]


# (run 1's flags, run 2's flags, whether resuming with the defaults must be refused).
# - parse-thread-to-process: the stateless parse moves from thread mode to the default, process
#   mode, across the savepoint, and nothing is lost.
# - detector-process: the keyed detector ran in process mode. Resuming with the defaults (thread
#   mode) must be refused, since keyed state does not carry across runtimes (jobs.gateway_pipeline,
#   detector_uid); resuming with the detector still in process mode must lose nothing.
@pytest.mark.parametrize(
    ("run1_flags", "run2_flags", "defaults_refused"),
    [
        ([], [], False),
        (THREAD_THROUGHOUT, [], False),
        (PROCESS_DETECTOR, PROCESS_DETECTOR, True),
    ],
    ids=["same-modes", "parse-thread-to-process", "detector-process"],
)
def test_submit_savepoint_resume_gives_exact_totals(
    flink_cluster: Any,
    kafka_bootstrap: str,
    unique_topics: dict[str, str],
    run1_flags: list[str],
    run2_flags: list[str],
    defaults_refused: bool,
) -> None:
    country_ips = ips_for_countries(default_geoip_db(), ["DE", "US", "JP", "GB", "BR"], 4, seed=2)
    generated = generate(default_scenario(country_ips, START_MS, windows=12), seed=21)
    truth = generated.truth
    half = len(generated.records) // 2
    first, second = generated.records[:half], generated.records[half:]

    ps = Pseudonymizer(flink_cluster.hash_key.encode())
    geo = GeoLookup(default_geoip_db())
    processor = RecordProcessor(
        ps, geo.lookup, Limits(max_event_age_s=max_event_age_covering(START_MS))
    )
    events_in_first = sum(
        len(processor.process(v, SourceRef("t", 0, i)).events) for i, v in enumerate(first)
    )
    geo.close()

    job_flags = [
        "--bootstrap-servers", kafka_bootstrap,
        *job_topic_flags(unique_topics),
        "--startup-mode", "earliest-offset",
        "--group-id", f"cl-{unique_topics['raw']}",
        "--transactional-id-prefix", f"cl-{unique_topics['raw']}",
        "--checkpoint-interval-seconds", "2",
        "--geoip-db", default_geoip_db(),
        "--max-event-age-seconds", str(max_event_age_covering(START_MS)),
        *SCENARIO_JOB_FLAGS,
    ]  # fmt: skip

    def enriched_count() -> int:
        return len(drain(kafka_bootstrap, unique_topics["enriched"]))

    # Run 1: the first half.
    _produce(kafka_bootstrap, unique_topics["raw"], first, 0)
    run1 = _submit_cli(flink_cluster, *job_flags, *run1_flags)
    assert run1.returncode == 0, run1.stderr[-4000:]
    job1 = run1.stdout.strip()
    _await("enriched after run 1", enriched_count, events_in_first)
    if not run1_flags:
        _assert_task_time_per_vertex(flink_cluster, job1)

    stop1 = _submit_cli(flink_cluster, "--stop-with-savepoint", job1)
    assert stop1.returncode == 0, stop1.stderr[-4000:]
    savepoint = stop1.stdout.strip()
    assert savepoint.startswith("file:"), savepoint

    # The second half arrives while no job runs.
    _produce(kafka_bootstrap, unique_topics["raw"], second, half)

    if defaults_refused:
        # The keyed functions in the other runtime: their state has no operator to go to.
        refused = _submit_cli(flink_cluster, *job_flags, "--from-savepoint", savepoint)
        assert refused.returncode != 0
        said = refused.stderr + refused.stdout
        assert "Cannot map checkpoint/savepoint state for operator" in said, said[-4000:]

    run2 = _submit_cli(flink_cluster, *job_flags, *run2_flags, "--from-savepoint", savepoint)
    assert run2.returncode == 0, run2.stderr[-4000:]
    job2 = run2.stdout.strip()
    assert job2 != job1
    _await("enriched after run 2", enriched_count, truth.events)

    # Final stop: drain fires the windows still open, and the savepoint commits them.
    final = _submit_cli(flink_cluster, "--stop-with-savepoint", job2, "--drain")
    assert final.returncode == 0, final.stderr[-4000:]

    # Timings jobs.submit measured, for the record (pytest -s shows them).
    for step, proc in (("run 1", run1), ("stop 1", stop1), ("run 2", run2), ("final", final)):
        print(f"{step}: " + " | ".join(proc.stderr.strip().splitlines()[-2:]))

    enriched = [
        json.loads(r.value or b"") for r in drain(kafka_bootstrap, unique_topics["enriched"])
    ]
    assert len(enriched) == truth.events
    assert len({e["event_id"] for e in enriched}) == truth.events

    dead = [json.loads(r.value or b"") for r in drain(kafka_bootstrap, unique_topics["dlq"])]
    assert Counter(d["reason"] for d in dead) == truth.dead_letter_reasons

    def key(k: str) -> str:
        return client_rate_key(ps, k[7:]) if k.startswith("client:") else k

    usage = [json.loads(r.value or b"") for r in drain(kafka_bootstrap, unique_topics["usage"])]
    got = Counter({(u["rate_key"], u["window_start"]): u["count"] for u in usage})
    assert len(usage) == len(got), "a window was emitted twice across the savepoint"
    assert dict(got) == {(key(k), s): n for (k, s), n in truth.per_key_window.items()}

    alerts = [json.loads(r.value or b"") for r in drain(kafka_bootstrap, unique_topics["alerts"])]
    _assert_no_secret_in_cluster_output(flink_cluster, truth, [run1, stop1, run2, final])
    assert scenario_alert_problems(alerts, truth, START_MS + 4 * 10_000) == []


def _assert_task_time_per_vertex(cluster: Any, job_id: str) -> None:
    """What make bench reads of a running job (bench.task_time): Flink's busy, backpressured and
    idle time of every vertex, which add up to a second per second."""
    with TaskTimeSampler(cluster.rest, job_id, interval_s=1.0) as task_time:
        # Flink reports a task's busy time as NaN (left out of the sample) while the task is
        # still starting: the first sample that lists every vertex can lack it (seen in CI,
        # with idle and backpressured both 0).
        def complete(sample: dict[str, dict[str, Any]]) -> bool:
            n = len(task_time.vertex_order)
            return (
                n > 0 and len(sample) == n and all(set(m) == set(METRICS) for m in sample.values())
            )

        wait_until(
            "task time of every vertex",
            lambda: any(complete(s) for s in task_time.samples),
            STEP_TIMEOUT_S,
            detail=lambda: f"{task_time.samples[-1:]} {task_time.error}",
        )
    full = next(s for s in task_time.samples if complete(s))
    # The parse: a Python function in SQL.
    assert any("PythonCalc" in v for v in full), list(full)
    for vertex, metrics in full.items():
        total = sum(m["avg"] for m in metrics.values())
        assert 990 <= total <= 1010, (vertex, metrics)


def _assert_no_secret_in_cluster_output(
    cluster: Any, truth: Any, procs: list[subprocess.CompletedProcess[str]]
) -> None:
    texts = [p.stdout + p.stderr for p in procs]
    if cluster.log_dir is not None:
        texts += [f.read_text(errors="replace") for f in cluster.log_dir.glob("*") if f.is_file()]
    # The job graph and configuration the cluster shows in its web UI.
    rest = Rest(cluster.rest)
    for job in rest.call("GET", "/jobs")["jobs"]:
        texts.append(json.dumps(rest.call("GET", f"/jobs/{job['id']}/config")))
        texts.append(json.dumps(rest.call("GET", f"/jobs/{job['id']}/plan")))
    texts.append(json.dumps(rest.call("GET", "/jobmanager/config")))
    texts.append(json.dumps(rest.call("GET", "/jobmanager/environment")))
    text = "\n".join(texts)
    assert cluster.hash_key not in text
    assert sorted(s for s in truth.secrets if s in text) == []
    assert sorted(ip for ip in truth.client_ips if ip in text) == []


def test_bounded_submit_waits_and_reports_the_outcome(
    flink_cluster: Any, kafka_bootstrap: str, unique_topics: dict[str, str]
) -> None:
    records = [
        json.dumps({"user_id": "u1", "endpoint": "/v1/a", "timestamp": START_MS + i}).encode()
        for i in range(50)
    ] + [b"not json"]
    _produce(kafka_bootstrap, unique_topics["raw"], records, 0)
    done = _submit_cli(
        flink_cluster,
        "--bootstrap-servers", kafka_bootstrap,
        *job_topic_flags(unique_topics),
        "--startup-mode", "earliest-offset",
        "--group-id", f"b-{unique_topics['raw']}",
        "--transactional-id-prefix", f"b-{unique_topics['raw']}",
        "--bounded",
        "--wait",
        "--max-event-age-seconds", str(max_event_age_covering(START_MS)),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    assert "FINISHED" in done.stderr
    assert len(drain(kafka_bootstrap, unique_topics["enriched"])) == 50
    assert len(drain(kafka_bootstrap, unique_topics["dlq"])) == 1
    usage = [json.loads(r.value or b"") for r in drain(kafka_bootstrap, unique_topics["usage"])]
    assert [(u["rate_key"], u["count"]) for u in usage] == [("u1", 50)]
