"""The benchmark's pure parts: arithmetic, result document, table, flags. No JVM, no broker."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import java_ceiling, parse_stage
from bench.metrics import (
    CONTENDERS,
    METRIC_KEYS,
    ProcessingSpan,
    Sample,
    Throughput,
    alert_latencies,
    assemble,
    bursts,
    cpu_at,
    cpu_between,
    events_between,
    events_per_s,
    extract_int,
    format_table,
    latency_ms,
    latency_summary,
    parse_contenders,
    peak_rss_mb,
    percentile,
    stamp_ms,
    steady_state,
    throughput_result,
)
from bench.profile import (
    attribute,
    classify,
    compiler_seconds,
    jvm_option,
    parse_samples,
    recording_window,
    seconds,
    summarize_recording,
)
from bench.python_loop import Windows, build_parser, producer_config
from bench.run import Bench, Topics, job_flags, options_from_args, python_loop_flags
from bench.task_time import (
    TaskTimeSampler,
    busiest,
    minicluster_rest_config,
    parse_vertex_metrics,
    steady_samples,
    summarize,
)
from metering.kafka_producer import (
    PRODUCER_BATCH_BYTES,
    PRODUCER_LINGER_MS,
    flink_sink_batching,
)
from metering.records import SINK_MAX_REQUEST_BYTES
from metering.settings import PipelineSettings, settings_from_args

# -- contenders and options ---------------------------------------------------------------------


def test_contenders_come_back_in_canonical_order() -> None:
    assert parse_contenders("python_loop, job") == ["job", "python_loop"]
    assert parse_contenders("job_session,java_ceiling") == ["java_ceiling", "job_session"]
    with pytest.raises(ValueError, match="unknown contender"):
        parse_contenders("job,flink")
    with pytest.raises(ValueError, match="no contender"):
        parse_contenders(" , ")


def test_options_from_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BENCH_EVENTS", "BENCH_ONLY", "BENCH_FLINK_CONFIG", "BENCH_BUNDLE_SIZE"):
        monkeypatch.delenv(name, raising=False)
    defaults = options_from_args([])
    assert defaults.events == 1_000_000
    assert defaults.contenders == list(CONTENDERS)
    assert defaults.checkpoint_seconds == PipelineSettings().checkpoint_interval_seconds
    monkeypatch.setenv("BENCH_EVENTS", "50000")
    monkeypatch.setenv("BENCH_BUNDLE_SIZE", "500")
    opts = options_from_args(["--only", "job", "--bundle-time", "100", "--flink-config", "a=1"])
    assert opts.events == 50_000
    assert opts.contenders == ["job"]
    assert opts.flink_config == {
        "a": "1",
        "python.fn-execution.bundle.size": "500",
        "python.fn-execution.bundle.time": "100",
    }
    assert options_from_args(["--events", "7"]).events == 7  # a flag wins


@pytest.mark.parametrize(
    "argv", [["--only", "nope"], ["--events", "0"], ["--flink-config", "novalue"]]
)
def test_bad_options_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        options_from_args(argv)
    assert exc.value.code == 2


def test_job_flags_are_the_jobs_own_flags() -> None:
    opts = options_from_args(["--checkpoint-seconds", "3", "--bundle-size", "200"])
    topics = Topics.for_run("bench.x.job.t", "bench.x.raw")
    flags = job_flags(opts, topics, "bench.x.job.t", 1, "bench-job", "file:///tmp/ckpt")
    cfg = settings_from_args(flags)
    assert cfg.raw_topic == "bench.x.raw"
    assert cfg.enriched_topic == "bench.x.job.t.enriched"
    assert cfg.startup_mode == "earliest-offset"
    assert cfg.checkpoint_interval_seconds == 3
    assert cfg.parallelism == 1
    assert cfg.flink_overrides() == {"python.fn-execution.bundle.size": "200"}
    # Durable checkpoint storage: in-memory storage caps state at 5 MB, which dedup outgrows.
    assert cfg.checkpoint_dir == "file:///tmp/ckpt"
    # The Java ceiling takes the same flags.
    assert java_ceiling.sink_specs(cfg)[0].transactional_id_prefix == "bench.x.job.t-enriched"


def test_job_flags_give_the_minicluster_a_rest_endpoint_on_loopback() -> None:
    opts = options_from_args(["--bundle-size", "200"])
    topics = Topics.for_run("bench.x.job.t", "bench.x.raw")
    extra = minicluster_rest_config(41234)
    cfg = settings_from_args(job_flags(opts, topics, "g", 2, "bench-job", None, extra))
    assert cfg.flink_overrides() == {
        "python.fn-execution.bundle.size": "200",
        "rest.bind-address": "127.0.0.1",
        "rest.address": "127.0.0.1",
        "rest.port": "41234",
    }


def test_python_loop_processes_split_the_partitions() -> None:
    opts = options_from_args(["--parallelism", "3"])
    topics = Topics.for_run("p", "raw")

    def partitions(index: int, of: int) -> str:
        flags = python_loop_flags(opts, topics, "g", index, of)
        return flags[flags.index("--partitions") + 1]

    assert [partitions(i, 3) for i in range(3)] == ["0", "1", "2"]
    assert [partitions(i, 2) for i in range(2)] == ["0,2", "1"]
    flags = python_loop_flags(opts, topics, "g", 1, 3)
    assert flags[flags.index("--transactional-id") + 1] == "g-1"


def test_drain_allowance_grows_with_the_backlog() -> None:
    bench = Bench(options_from_args(["--rate", "5000", "--latency-seconds", "30"]))
    base = max(60.0, 4.0 * bench.opts.checkpoint_seconds)
    assert bench.drain_allowance(10_000) == base  # keeps up: no backlog
    # 150,000 events at 1,000/s take 150 s, 120 s more than the paced 30 s; 50 % margin.
    assert bench.drain_allowance(1_000) == base + 180
    assert bench.drain_allowance(1) == 900.0  # capped
    assert bench.drain_allowance(None) == base + 30


# -- arithmetic ----------------------------------------------------------------------------------


def test_percentile_matches_numpy() -> None:
    rng = random.Random(3)
    values = [rng.expovariate(1 / 50) for _ in range(1001)]
    for q in (0, 1, 50, 90, 99, 99.9, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_latency_summary() -> None:
    assert latency_summary([]) == {"p50": None, "p99": None}
    summary = latency_summary([float(i) for i in range(1, 101)])
    assert summary == {"p50": 50.5, "p99": 99.0}


def test_bursts_count_commits() -> None:
    assert bursts([]) == 0
    assert bursts([1.0, 1.1, 1.2, 11.0, 11.05, 21.0]) == 3
    assert bursts([1.0, 1.4, 1.8, 2.2], gap_s=0.5) == 1


def test_events_per_s() -> None:
    assert events_per_s(1000, 10.0, 20.0) == 100.0
    assert events_per_s(1000, None, 20.0) == 0.0
    assert events_per_s(1000, 20.0, 20.0) == 0.0


def test_extract_int_reads_flat_json() -> None:
    value = json.dumps({"a": 1, "source_partition": 3, "source_offset": 12345678901}).encode()
    assert extract_int(value, "source_partition") == 3
    assert extract_int(value, "source_offset") == 12_345_678_901
    assert extract_int(value, "missing") is None
    assert extract_int(b'{"source_partition":-1}', "source_partition") == -1


def test_processing_span_of_epoch_ms_and_text_stamps() -> None:
    span = ProcessingSpan()
    assert span.bounds_ms() is None
    for ms in (500, 100, 900, 300):
        span.update(json.dumps({"processing_time": ms, "x": 1}).encode())
    span.update(b'{"no_stamp":1}')
    assert span.bounds_ms() == (100, 900)
    text = ProcessingSpan()
    for stamp in ("2024-06-13 15:00:01.250", "2024-06-13 15:00:00.999", "2024-06-13 15:00:02.000"):
        text.update(json.dumps({"processing_time": stamp}).encode())
    assert text.bounds_ms() == (stamp_ms("2024-06-13 15:00:00.999"), 1_718_290_802_000)
    assert stamp_ms("1970-01-01 00:00:01.500") == 1500


def test_processing_span_counts_records_per_second_of_either_stamp() -> None:
    span = ProcessingSpan()
    for ms in (1_000, 1_999, 2_000, 4_500):
        span.update(json.dumps({"processing_time": ms}).encode())
    assert span.per_second() == {1: 2, 2: 1, 4: 1}
    text = ProcessingSpan()
    for stamp in ("1970-01-01 00:00:01.250", "1970-01-01 00:00:01.999", "1970-01-01 00:00:03.000"):
        text.update(json.dumps({"processing_time": stamp}).encode())
    assert text.per_second() == {1: 2, 3: 1}


def test_steady_state_leaves_out_the_first_share_of_events() -> None:
    # 10 s of output: 100 events/s for 4 s (warm-up), then 300 events/s; CPU 1 s per s, then 2.
    per_second = dict.fromkeys(range(100, 104), 100) | dict.fromkeys(range(104, 110), 300)
    samples = [Sample(100.0, 0.0, 0), Sample(104.0, 4.0, 0), Sample(110.0, 16.0, 0)]
    r = steady_state(per_second, (100_000, 110_000), samples, skip_fraction=0.2)
    assert r is not None
    # 20 % of 2,200 events is 440: seconds 100-104 (700 events) are left out.
    assert r["skipped_events"] == 700
    assert r["events"] == 1500
    assert r["window_s"] == 5.0
    assert r["events_per_s"] == 300.0
    assert r["cpu_s"] == 10.0
    assert r["cpu_s_per_million"] == round(10.0 / 1500 * 1e6, 1)


def test_steady_state_needs_stamps_and_a_long_enough_window() -> None:
    samples = [Sample(0.0, 0.0, 0), Sample(20.0, 20.0, 0)]
    assert steady_state({}, None, samples) is None
    assert steady_state({1: 10, 2: 10, 3: 10}, (1_000, 3_900), samples) is None


def test_events_between_counts_whole_seconds_in_the_window() -> None:
    assert events_between({9: 5, 10: 1, 11: 2, 12: 4}, 10.0, 12.0) == 3


# -- profile of a Flink contender's JVM --------------------------------------------------------

_JFR_TEXT = """jdk.ExecutionSample {
  startTime = 13:00:02.400 (2026-12-05)
  sampledThread = "Source: entries_source[1] -> (Calc[2] -> x) (2/2)#0" (javaThreadId = 99)
  state = "STATE_RUNNABLE"
  stackTrace = [
    org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.json.ReaderBasedJsonParser.nextToken()
    org.apache.flink.table.runtime.functions.SqlJsonUtils.jsonValue(String, String) line: 9
    StreamExecCalc$709.processElement_split473(StreamRecord) line: 2
    org.apache.flink.formats.json.JsonParserRowDataDeserializationSchema.deserialize(byte[])
    org.apache.flink.connector.kafka.source.reader.KafkaRecordEmitter.emitRecord(Object)
    ...
  ]
}

jdk.ExecutionSample {
  startTime = 13:00:02.410 (2026-12-05)
  sampledThread = "Source: entries_source[1] -> (Calc[2] -> x) (1/2)#0" (javaThreadId = 98)
  state = "STATE_RUNNABLE"
  stackTrace = [
    org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.json.UTF8StreamJsonParser.nextToken()
    org.apache.flink.formats.json.JsonParserRowDataDeserializationSchema.deserialize(byte[])
    org.apache.flink.connector.kafka.source.reader.KafkaRecordEmitter.emitRecord(Object)
  ]
}

jdk.ExecutionSample {
  startTime = 13:00:02.420 (2026-12-05)
  sampledThread = "Source: entries_source[1] -> (Calc[2] -> x) (1/2)#0" (javaThreadId = 98)
  state = "STATE_RUNNABLE"
  stackTrace = [
    sun.security.provider.SHA2.implDigest(byte[], int) line: 1
    org.apache.flink.table.data.binary.BinaryStringDataUtil.hash(BinaryStringData, MessageDigest)
    StreamExecCalc$709.processElement_split473(StreamRecord) line: 2
  ]
}
"""


def test_profile_attributes_samples_to_the_innermost_operator_and_its_function() -> None:
    samples = list(parse_samples(_JFR_TEXT.splitlines(keepends=True)))
    assert [len(frames) for _, frames in samples] == [5, 3, 3]
    assert classify(samples[0][1]) == ("calc", "JSON_VALUE")
    assert classify(samples[1][1]) == ("json format decode", "json parsing (jackson)")
    assert classify(samples[2][1]) == ("calc", "SHA256")
    assert classify(["java.lang.Thread.run"]) == ("task loop and other", "other")
    result = attribute(samples)
    assert result["samples"] == 3
    assert result["operators"][0] == {
        "operator": "calc",
        "percent": 66.7,
        "functions": {"JSON_VALUE": 33.3, "SHA256": 33.3},
    }
    assert result["threads"] == [
        {"thread": "Source: entries_source[1] -> (Calc[2] -> x)", "percent": 100.0}
    ]


def test_profile_reads_jfr_durations_windows_and_compiler_time() -> None:
    assert [seconds(t) for t in ("908 ms", "49.7 s", "1 m 2 s", "1 h 3 m")] == [
        0.908,
        49.7,
        62.0,
        3780.0,
    ]
    with pytest.raises(ValueError):
        seconds("soon")
    stats = ["  totalTimeSpent = 49.7 s", "x", "  totalTimeSpent = 1 m 18 s"]
    assert compiler_seconds(stats) == pytest.approx(28.3)
    assert compiler_seconds(stats[:1]) == 0.0
    summary = "\n Start: 1970-01-01 00:01:40 (UTC)\n Duration: 30 s\n"
    assert recording_window(summary) == (100.0, 130.0)
    assert recording_window("") is None
    option = jvm_option(Path("/x/p.jfr"), 60, 30)
    assert option.startswith("-XX:StartFlightRecording=delay=60s,duration=30s,")
    assert "filename=/x/p.jfr" in option and "settings=profile" in option
    assert jvm_option(Path("/x/p.jfr"), 0, 30).startswith("-XX:StartFlightRecording=duration=30s,")


def test_profile_of_a_missing_or_empty_recording_says_why(tmp_path: Path) -> None:
    empty = tmp_path / "profile.jfr"
    assert "no recording" in summarize_recording(empty)["error"]
    empty.write_bytes(b"")
    assert "end it within the phase" in summarize_recording(empty)["error"]


def test_cpu_is_interpolated_between_samples() -> None:
    samples = [Sample(10.0, 1.0, 100), Sample(12.0, 3.0, 300 * 2**20), Sample(14.0, 3.0, 200)]
    assert cpu_at([], 5.0) == 0.0
    assert cpu_at(samples, 0.0) == 1.0  # clamped before the first sample
    assert cpu_at(samples, 11.0) == 2.0
    assert cpu_at(samples, 99.0) == 3.0
    assert cpu_between(samples, 11.0, 13.0) == 1.0
    assert cpu_between(samples, 13.0, 11.0) == 0.0
    assert peak_rss_mb(samples) == 300.0
    assert peak_rss_mb([]) == 0.0


def _throughput(**overrides: object) -> Throughput:
    fields: dict[str, object] = {
        "events_in": 100_000,
        "events_out": 100_000,
        "first_visible": 100.0,
        "last_visible": 150.0,
        "commits": 6,
        "processing_ms": (92_000, 148_000),
        "cpu_s": 80.0,
        "peak_rss_mb": 1234.5,
        "wall_s": 90.0,
        "complete": True,
    }
    fields.update(overrides)
    return Throughput(**fields)  # type: ignore[arg-type]


def test_throughput_result_uses_visible_output_with_enough_commits() -> None:
    r = throughput_result(_throughput())
    assert r["events_per_s"] == 2000.0
    assert r["events_per_s_basis"] == "visible_output"
    assert r["processing_events_per_s"] == pytest.approx(100_000 / 56, abs=0.1)
    assert r["cpu_s_per_million"] == 800.0
    assert r["peak_rss_mb"] == 1234.5
    assert r["throughput"]["visible_span_s"] == 50.0


def test_throughput_result_falls_back_to_processing_stamps_with_few_commits() -> None:
    r = throughput_result(_throughput(commits=1, first_visible=100.0, last_visible=100.0))
    assert r["events_per_s_basis"] == "processing_stamps"
    assert r["events_per_s"] == pytest.approx(100_000 / 56, abs=0.1)
    # Without stamps there is nothing better than the visible span.
    r = throughput_result(_throughput(commits=2, processing_ms=None))
    assert (r["events_per_s"], r["events_per_s_basis"]) == (2000.0, "visible_output")


def test_latency_maps_outputs_to_produce_times_and_censors_missing_events() -> None:
    produced = {(0, 10): 1_000_000, (1, 5): 1_000_500}
    events = {(0, 10): 3, (1, 5): 1}
    visible = [
        (0, 10, 1001.0),
        (0, 10, 1001.5),
        (0, 9, 1000.1),  # warm-up record: not measured
    ]
    lat, missing = latency_ms(visible, produced)
    assert (sorted(lat), missing) == ([1000.0, 1500.0], 0)
    lat, missing = latency_ms(visible, produced, events, censor_at=1010.0)
    # One event of (0, 10) and the one of (1, 5) never showed: counted as seen at 1010 s.
    assert missing == 2
    assert sorted(lat) == [1000.0, 1500.0, 9500.0, 10000.0]


def test_alert_latency_per_window_in_order_with_missing_ones() -> None:
    expected = [("auth_failures", "client:a", 0), ("auth_failures", "client:b", 10_000)]
    expected.append(("auth_failures", "client:c", 20_000))
    sent_at = [100.0, 110.0, 120.0]
    # Window 2's alert never came; window 3's burst index lies past what was sent.
    alerts = {expected[0]: 100.25, expected[2]: 121.0, ("auth_failures", "client:b", 0): 111.0}
    assert alert_latencies(expected, [0, 1, 3], alerts, sent_at) == [250.0, None, None]
    assert alert_latencies(expected, [0, 1, 2], alerts, sent_at) == [250.0, None, 1000.0]


# -- result document and table ----------------------------------------------------------------


def _result(rate: float) -> dict[str, object]:
    return {
        "events_per_s": rate,
        "latency_ms": {"p50": 5100.0, "p99": 10200.0},
        "cpu_s_per_million": 420.0,
        "steady": {"events_per_s": rate * 1.5, "cpu_s_per_million": 300.0},
        "peak_rss_mb": 900.0,
        "latency_phase": {"missing": 0, "cpu_cores": 1.2, "rate": 5000.0},
    }


# -- task time per vertex ------------------------------------------------------------------------


def test_vertex_metrics_keep_measured_values_only() -> None:
    rows = [
        {"id": "busyTimeMsPerSecond", "min": 10.0, "max": 900.0, "avg": 455.0, "sum": 910.0},
        {"id": "backPressuredTimeMsPerSecond", "max": 80, "avg": 40},
        {"id": "idleTimeMsPerSecond", "max": float("nan"), "avg": float("nan")},
        {"id": "numRecordsIn", "max": 5.0, "avg": 5.0},
    ]
    assert parse_vertex_metrics(rows) == {
        "busyTimeMsPerSecond": {"avg": 455.0, "max": 900.0},
        "backPressuredTimeMsPerSecond": {"avg": 40.0, "max": 80.0},
    }


def _vertex(busy: float, bp: float, idle: float) -> dict[str, dict[str, float]]:
    return {
        "busyTimeMsPerSecond": {"avg": busy, "max": busy + 10},
        "backPressuredTimeMsPerSecond": {"avg": bp, "max": bp},
        "idleTimeMsPerSecond": {"avg": idle, "max": idle},
    }


def test_task_time_is_the_median_per_vertex_in_graph_order() -> None:
    samples = [
        {"src": _vertex(800, 100, 100), "win": _vertex(300, 0, 700)},
        {"src": _vertex(900, 50, 50), "win": _vertex(500, 0, 500)},
        {"src": _vertex(850, 0, 150)},
    ]
    summary = summarize(samples, ["src", "win", "sink"])
    assert [v["vertex"] for v in summary] == ["src", "win", "sink"]
    assert summary[0]["busy_ms_per_s"] == {"avg": 850.0, "max": 860.0}
    assert summary[0]["backpressured_ms_per_s"] == {"avg": 50.0, "max": 50.0}
    assert summary[0]["samples"] == 3
    assert summary[1]["idle_ms_per_s"] == {"avg": 600.0, "max": 600.0}
    assert summary[1]["samples"] == 2
    assert summary[2] == {"vertex": "sink", "samples": 0}
    assert [v["vertex"] for v in busiest(summary)] == ["src", "win"]
    assert [v["vertex"] for v in busiest(summary, n=1)] == ["src"]


def test_table_names_each_flink_contenders_busiest_vertices() -> None:
    results = {name: _result(1000.0) for name in CONTENDERS}
    samples = [{"Source: raw -> parse": _vertex(860, 130, 10), "windows": _vertex(500, 0, 500)}]
    results["job"]["task_time"] = {
        "vertices": summarize(samples, ["Source: raw -> parse", "windows"])
    }
    doc = assemble(results, machine={}, versions={}, params={}, events=1, date="")
    lines = format_table(doc).splitlines()
    at = lines.index(
        "busiest Flink vertices, ms/s (max over subtasks): busy / backpressured / idle"
    )
    assert lines[at + 1].split() == [
        "job",
        "870",
        "/",
        "130",
        "/",
        "10",
        "Source:",
        "raw",
        "->",
        "parse",
    ]
    assert lines[at + 2].split() == ["job", "510", "/", "0", "/", "500", "windows"]
    assert lines[at + 3] == ""


def test_assemble_has_exactly_the_documented_keys() -> None:
    doc = assemble(
        {name: _result(1000.0) for name in CONTENDERS},
        machine={"cpu_model": "x", "cores": 2, "memory_gb": 24.0},
        versions={"flink": "2.2.1", "kafka": "4.1.1", "python": "3.11"},
        params={"checkpoint_seconds": 10},
        events=50_000,
        date="2024-06-13T15:00:00+00:00",
    )
    assert list(doc) == [*CONTENDERS, "machine", "versions", "date", "events", "params"]
    for name in CONTENDERS:
        assert set(METRIC_KEYS) <= set(doc[name])
        assert set(doc[name]["latency_ms"]) == {"p50", "p99"}
    json.dumps(doc, allow_nan=False)
    with pytest.raises(ValueError, match="lacks"):
        assemble(
            {"job": {"events_per_s": 1}}, machine={}, versions={}, params={}, events=1, date=""
        )


def test_table_lists_each_contender_with_machine_and_versions() -> None:
    results = {name: _result(1000.0 * (i + 1)) for i, name in enumerate(CONTENDERS)}
    results["job"]["latency_phase"] = {"missing": 1234, "waited_after_s": 60.0, "rate": 5000.0}
    doc = assemble(
        results,
        machine={"cpu_model": "Xeon", "cores": 2, "memory_gb": 23.5, "load_avg_1m": 0.5},
        versions={"flink": "2.2.1", "kafka": "4.1.1", "python": "3.11.7"},
        params={"checkpoint_seconds": 10, "parallelism": 2, "rate": 5000.0},
        events=50_000,
        date="2024-06-13T15:00:00+00:00",
    )
    table = format_table(doc)
    lines = table.splitlines()
    assert lines[0].split()[:2] == ["contender", "events/s"]
    rows = {line.split()[0]: line for line in lines[2:5]}
    assert list(rows) == list(CONTENDERS)
    assert rows["java_ceiling"].split()[1:8] == [
        "2,000",
        "3,000",
        "5,100",
        "10,200",
        "420",
        "300",
        "900",
    ]
    assert lines[0].split()[1:5] == ["events/s", "steady", "ev/s", "p50"]
    assert "lower bound: 1,234 events" in rows["job"]
    assert "1.20 cores at 5,000/s" in rows["python_loop"]
    assert "Xeon, 2 cores, 23.5 GB" in table
    assert "flink 2.2.1" in table and "kafka 4.1.1" in table


# -- contenders' own logic ---------------------------------------------------------------------


def _event(rate_key: str, t: int, **kw: object) -> dict[str, object]:
    ev: dict[str, object] = {
        "rate_key": rate_key,
        "event_time": t,
        "consumer": rate_key,
        "key_fingerprint": None,
        "country": "DE",
        "auth_failed": False,
        "units": 1.0,
    }
    ev.update(kw)
    return ev


def test_python_loop_windows_close_on_the_watermark_and_correct_late_events() -> None:
    w = Windows(window_ms=10_000, out_of_orderness_ms=5_000)
    assert w.close_due() == []
    for t in (1_000, 2_000, 9_999):
        assert w.add(_event("a", t)) is None
    assert w.add(_event("b", 5_000, auth_failed=True)) is None
    assert w.close_due() == []  # watermark 4,999: window [0, 10,000) still open
    assert w.add(_event("a", 15_000)) is None  # watermark 10,000: it closes
    closed = {r["rate_key"]: r for r in w.close_due()}
    assert (closed["a"]["count"], closed["b"]["count"], closed["b"]["auth_failures"]) == (3, 1, 1)
    assert closed["a"]["window_start"] == 0 and closed["a"]["window_end"] == 10_000
    late = w.add(_event("a", 3_000))
    assert late is not None and late["kind"] == "late_correction" and late["count"] == 1
    assert list(w.open) == [10_000]


def test_java_ceiling_statements_match_the_jobs_delivery(tmp_path: Path) -> None:
    jar = tmp_path / "flink-sql-connector-kafka-test.jar"
    jar.write_bytes(b"")
    cfg = PipelineSettings(
        connector_jar=str(jar),
        checkpoint_interval_seconds=7,
        parallelism=3,
        out_of_orderness_seconds=4,
        window_seconds=20,
        flink_config="python.fn-execution.bundle.size=10",
    )
    source, enriched_sink, usage_sink, *views_and_inserts = java_ceiling.statements(cfg)
    assert "'format' = 'json'" in source
    assert "'properties.isolation.level' = 'read_committed'" in source
    assert "'json.ignore-parse-errors' = 'false'" in source
    assert "WATERMARK FOR `ts` AS `ts` - INTERVAL '4' SECOND" in source
    assert "'yyyy-MM-dd''T''HH:mm:ss.SSSXXX'" in source  # a valid Java pattern, quoted once
    for sink, topic in ((enriched_sink, cfg.enriched_topic), (usage_sink, cfg.usage_topic)):
        assert f"'topic' = '{topic}'" in sink
        assert "'sink.delivery-guarantee' = 'exactly-once'" in sink
        assert f"'properties.transaction.timeout.ms' = '{cfg.transaction_timeout_ms}'" in sink
    assert "INTERVAL '20' SECOND" in views_and_inserts[-1]
    conf = java_ceiling.flink_config(cfg)
    assert conf["execution.checkpointing.interval"] == "7 s"
    assert conf["execution.checkpointing.mode"] == "EXACTLY_ONCE"
    assert conf["parallelism.default"] == "3"
    assert conf["python.fn-execution.bundle.size"] == "10"


def test_java_ceiling_computes_each_expensive_value_once(tmp_path: Path) -> None:
    jar = tmp_path / "flink-sql-connector-kafka-test.jar"
    jar.write_bytes(b"")
    cfg = PipelineSettings(connector_jar=str(jar))
    sql = "\n".join(java_ceiling.statements(cfg))
    # One call per JSON path and per hashed value, in the staged views; none in the inserts.
    for call in (
        "JSON_VALUE(`consumer`, '$.username')",
        "JSON_VALUE(`consumer`, '$.custom_id')",
        "JSON_VALUE(`consumer`, '$.id')",
        "JSON_VALUE(`consumer`, '$.plugins.\"key-auth\".key')",
        "REGEXP_EXTRACT(\n        NULLIF(`request`.`headers`.`authorization`",
        "SHA256('bench-java-ceiling' || api_key)",
        "SHA256('bench-java-ceiling' || `client_ip`)",
    ):
        assert sql.count(call) == 1, call
    views = [s for s in java_ceiling.statements(cfg) if s.startswith("CREATE TEMPORARY VIEW")]
    assert [v.split()[3] for v in views] == ["parsed_view", "identity_view", "entries"]
    # Each stage after the first filters on the previous stage's RAND() column twice, so the
    # planner keeps the stages apart.
    barrier = f"`{java_ceiling.BARRIER}` <> `{java_ceiling.BARRIER}` + 1.0"
    assert [barrier in v for v in views] == [False, True, True]
    assert all(f"RAND() AS `{java_ceiling.BARRIER}`" in v for v in views[:2])
    assert "JSON_VALUE" not in java_ceiling.insert_enriched()
    assert "JSON_VALUE" not in java_ceiling.insert_usage(10)
    conf = java_ceiling.flink_config(cfg)
    assert conf["pipeline.object-reuse"] == "true"
    assert conf["table.optimizer.reuse-optimize-block-with-digest-enabled"] == "true"


def test_python_loop_batches_as_the_shared_producer_settings() -> None:
    args = build_parser().parse_args(
        [
            "--bootstrap-servers",
            "h:1",
            "--raw-topic",
            "r",
            "--partitions",
            "0",
            "--enriched-topic",
            "e",
            "--usage-topic",
            "u",
            "--dlq-topic",
            "d",
            "--group-id",
            "g",
            "--transactional-id",
            "t",
        ]
    )
    conf = producer_config(args)
    assert conf["batch.size"] == PRODUCER_BATCH_BYTES
    assert conf["linger.ms"] == PRODUCER_LINGER_MS
    assert conf["transactional.id"] == "t"
    assert conf["enable.idempotence"] is True
    # The same values as Kafka SQL connector options, for the Flink sinks; a batch fits a request.
    assert flink_sink_batching() == {
        "properties.batch.size": str(PRODUCER_BATCH_BYTES),
        "properties.linger.ms": str(PRODUCER_LINGER_MS),
    }
    assert PRODUCER_BATCH_BYTES <= SINK_MAX_REQUEST_BYTES


def test_plot_is_written(tmp_path: Path) -> None:
    from bench.plot import write_png

    results = {name: _result(1000.0) for name in CONTENDERS}
    results["job"]["latency_ms"] = {"p50": 140_000.0, "p99": 400_000.0}  # log scale kicks in
    doc = assemble(
        results, machine={"cores": 2}, versions={}, params={}, events=1, date="2024-06-13"
    )
    path = tmp_path / "out" / "latest.png"
    write_png(doc, path)
    assert path.read_bytes().startswith(b"\x89PNG")


def test_latency_phase_gets_its_auth_failure_bursts_spread_over_every_full_window() -> None:
    from bench.run import ATTACK_BURSTS_PER_WINDOW, ATTACK_REQUESTS, JOB_DEFAULTS, with_attacks
    from testkit.traffic import BulkRecord

    window = JOB_DEFAULTS.window_seconds * 1000
    start = 1_767_225_603_000  # 3 s into a window

    def records(first: int, n: int) -> list[BulkRecord]:
        return [BulkRecord(b"{}", 1, first + i * 100) for i in range(n)]

    # Two generator slices; the first one's final flush runs past the second's start (batched
    # gateways), so send order is not emit order at the boundary, where a window ends (+27 s).
    paced = [
        *records(start, 250),
        *records(start + 25_000, 30),
        *records(start + 25_000, 350),
    ]
    out, attacks = with_attacks(paced, start, start + 60_000, seed=1)
    # Full windows from start + 7 s whose end the watermark passes before the phase ends.
    margin = (JOB_DEFAULTS.out_of_orderness_seconds + 1) * 1000
    windows = [
        w
        for w in range(start + 7_000, start + 60_000, window)
        if w + window + margin <= start + 60_000
    ]
    assert len(windows) == 4
    step = (window - 2000) // ATTACK_BURSTS_PER_WINDOW
    burst_starts = [w + 1000 + k * step for w in windows for k in range(ATTACK_BURSTS_PER_WINDOW)]
    assert [w for w, _, _ in attacks] == [
        w for w in windows for _ in range(ATTACK_BURSTS_PER_WINDOW)
    ]
    assert len({ip for _, _, ip in attacks}) == len(burst_starts) == 20
    assert len(out) == len(paced) + len(burst_starts)
    bursts = [i for i, r in enumerate(out) if r.events == ATTACK_REQUESTS]
    assert [out[i].emit_ms for i in bursts] == [b + ATTACK_REQUESTS for b in burst_starts]
    # Each burst's events all fall inside its window.
    assert all(
        b + ATTACK_REQUESTS < w + window for (w, _, _), b in zip(attacks, burst_starts, strict=True)
    )
    for i in bursts:
        # Sent right after everything emitted up to the burst's emit time.
        assert all(r.emit_ms <= out[i].emit_ms for r in out[:i])
    # Each attack's latency is timed from sending its burst.
    assert [i for _, i, _ in attacks] == bursts


class _Producer:
    """Stands in for confluent_kafka.Producer in pace(): accepts everything at once."""

    def __init__(self) -> None:
        self.values: list[bytes] = []

    def produce(self, topic: str, value: bytes, on_delivery: Any) -> None:
        self.values.append(value)

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0


def test_pace_asks_whether_to_stop_a_few_times_a_second_not_per_record() -> None:
    from bench.kafka_io import pace
    from testkit.traffic import BulkRecord

    records = [BulkRecord(str(i).encode(), 1, i) for i in range(5_000)]
    asked = 0

    def stop() -> bool:
        nonlocal asked
        asked += 1
        return False

    producer = _Producer()
    out = pace(producer, "t", records, rate=1e9, stop=stop)  # type: ignore[arg-type]
    assert producer.values == [r.value for r in records]
    assert (out.records, out.events, len(out.sent_at)) == (5_000, 5_000, 5_000)
    assert 1 <= asked < 50

    stopped = pace(_Producer(), "t", records, rate=1e9, stop=lambda: True)  # type: ignore[arg-type]
    assert stopped.records == 0


def test_parse_stage_rate_cancels_start_up() -> None:
    # 10 s of start-up in both runs, 20 s per 150,000 events.
    assert parse_stage.rate(150_000, 30.0, 50.0) == 7_500.0
    with pytest.raises(ValueError, match="not slower"):
        parse_stage.rate(150_000, 30.0, 29.0)
    args = parse_stage.build_parser().parse_args([])
    assert (args.events, args.parallelism, args.parse_execution_mode) == (150_000, 2, "process")


def test_steady_samples_leave_out_the_metrics_window_after_start_up() -> None:
    samples = [{"v": _vertex(t, 0, 1000 - t)} for t in (100, 150, 170, 250, 320)]
    at = [100.0, 150.0, 170.0, 250.0, 320.0]
    # First event processed at 100 s, last at 300 s: Flink's 60 s averages are clean from 160.
    kept = steady_samples(samples, at, 100.0, 300.0)
    assert [s["v"]["busyTimeMsPerSecond"]["avg"] for s in kept] == [170, 250]
    assert steady_samples(samples, at, None, 300.0) == []


class _FakeRest(TaskTimeSampler):
    """The sampler's own logic over canned REST answers (no thread, no server)."""

    def __init__(self, answers: dict[str, Any]) -> None:
        super().__init__("127.0.0.1:1")
        self.answers = answers

    def _get(self, path: str) -> Any:
        return self.answers[path]


def test_sampler_takes_the_running_job_and_samples_each_vertex() -> None:
    get = "busyTimeMsPerSecond,backPressuredTimeMsPerSecond,idleTimeMsPerSecond"
    rows = [
        {"id": "busyTimeMsPerSecond", "avg": 700.0, "max": 800.0},
        {"id": "backPressuredTimeMsPerSecond", "avg": 100.0, "max": 150.0},
        {"id": "idleTimeMsPerSecond", "avg": 200.0, "max": 250.0},
    ]
    fake = _FakeRest(
        {
            "/jobs": {
                "jobs": [{"id": "a", "status": "FINISHED"}, {"id": "b", "status": "RUNNING"}]
            },
            "/jobs/b": {
                "state": "RUNNING",
                "vertices": [{"id": "v1", "name": "Source"}, {"id": "v2", "name": "Sink"}],
            },
            f"/jobs/b/vertices/v1/subtasks/metrics?get={get}&agg=avg,max": rows,
            f"/jobs/b/vertices/v2/subtasks/metrics?get={get}&agg=avg,max": [],
        }
    )
    assert fake.rest.address == "127.0.0.1:1"
    assert fake._running_job() == "b"
    fake._sample("b")
    assert fake.vertex_order == ["Source", "Sink"]
    assert fake.samples == [{"Source": parse_vertex_metrics(rows)}]
    result = fake.result()
    assert (result["samples"], result["steady"]) == (1, False)
    assert result["vertices"][0]["busy_ms_per_s"] == {"avg": 700.0, "max": 800.0}
    assert result["vertices"][1] == {"vertex": "Sink", "samples": 0}
    fake.answers["/jobs/b"] = {"state": "FINISHED", "vertices": []}
    fake._sample("b")
    assert len(fake.samples) == 1


def test_sampler_reports_why_it_has_no_samples() -> None:
    fake = _FakeRest({})
    fake.error = "URLError: <urlopen error [Errno 111] Connection refused>"
    assert fake.result() == {
        "interval_s": 10.0,
        "samples": 0,
        "steady": False,
        "vertices": [],
        "error": "URLError: <urlopen error [Errno 111] Connection refused>",
    }
