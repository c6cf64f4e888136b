"""The bench's CPU per event by stage: thread names to stages, and the deltas between samples."""

from __future__ import annotations

from bench.thread_cpu import OTHER, by_stage, java_thread_names, stage_of

JCMD = """2026-12-05 23:59:59
Full thread dump OpenJDK 64-Bit Server VM (17.0.13+11 mixed mode, sharing):

"Source: raw_source[1] -> Calc[2] -> TableToDataStream -> parse (1/2)#0" #101 prio=5 os_prio=0 cpu=1.00ms elapsed=9.00s tid=0x00007f nid=0x1a2b runnable  [0x00007f]
   java.lang.Thread.State: RUNNABLE

"OverAggregate[22] -> Calc[23] (2/2)#0" #124 prio=5 os_prio=0 cpu=1.00ms elapsed=9.00s tid=0x00007e nid=0x1a2c waiting on condition  [0x00007e]

"G1 Young RemSet Sampling" os_prio=0 cpu=1.00ms elapsed=9.00s tid=0x00007d nid=0x10 runnable
"""  # noqa: E501


def test_java_thread_names_map_native_ids() -> None:
    assert java_thread_names(JCMD) == {
        0x1A2B: "Source: raw_source[1] -> Calc[2] -> TableToDataStream -> parse (1/2)#0",
        0x1A2C: "OverAggregate[22] -> Calc[23] (2/2)#0",
        0x10: "G1 Young RemSet Sampling",
    }


def test_stages_take_the_first_matching_pattern() -> None:
    dedup = "OverAggregate[9] -> Calc[10] -> TableToDataStream -> (Calc[13] -> enriched_sink) (1/2)"
    assert stage_of(dedup) == "dedup, enriched sink, first sightings"
    windows = "usage windows per rate key -> (Calc[31], TableToDataStream) (2/2)#0"
    assert stage_of(windows) == "usage windows (window operator), usage records"
    assert stage_of("Source Data Fetcher for Source: raw_source[1]") == "Kafka consumer fetch"
    assert stage_of("Source: raw_source[1] -> parse") == "source, Python parse, watermark"
    assert stage_of("python3.11: 4242") == "Python processes (client; process-mode workers)"
    assert stage_of("flink-pekko.actor.default-dispatcher-7") == OTHER


def test_by_stage_divides_each_stage_delta_by_the_events() -> None:
    names = {(1, 10): "Source: raw_source", (1, 11): "GroupAggregate[41]", (1, 12): "Thread-3"}
    samples = [
        (100.0, {(1, 10): 5.0, (1, 11): 1.0}),
        (101.0, {(1, 10): 6.0, (1, 11): 1.5, (1, 12): 0.5}),
        # (1, 12) ended here: it keeps its last reading; a thread born after t0 counts from 0.
        (110.0, {(1, 10): 7.0, (1, 11): 2.0}),
        (130.0, {(1, 10): 99.0, (1, 11): 99.0}),
    ]
    rows = by_stage(samples, names, t0=100.2, t1=109.0, events=1_000_000)
    assert rows == [
        {"stage": "source, Python parse, watermark", "cpu_us_per_event": 2.0, "percent": 57.1},
        {"stage": "reconciliation ledger and its sink", "cpu_us_per_event": 1.0, "percent": 28.6},
        {"stage": OTHER, "cpu_us_per_event": 0.5, "percent": 14.3},
    ]
    assert by_stage(samples[:1], names, 100.0, 110.0, 10) == []
    assert by_stage(samples, names, 100.0, 110.0, 0) == []
