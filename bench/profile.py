"""Where a Flink contender's JVM spends its time: a JDK Flight Recording of the throughput phase,
summed by operator and by SQL function.

``bench.run --profile-seconds N`` starts the recording in the contender's JVM (PyFlink passes
``JVM_ARGS`` to the JVM it launches) ``--profile-delay`` seconds after start, so that it covers the
steady state rather than start-up. This module turns the recording into shares of the sampled
Java-thread time (``jfr print`` text, read as a stream: the JSON form of 30 s is ~300 MB), plus the
JIT compiler's CPU over the recording, which the execution samples do not see.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

OPERATORS: tuple[tuple[str, str], ...] = (
    ("kafka source", "KafkaRecordEmitter.emitRecord"),
    ("json format decode", "JsonParserRowDataDeserializationSchema.deserialize"),
    ("row copy between chained operators", "RowDataSerializer.copy"),
    ("watermark generator", "WatermarkGenerator"),
    ("calc", "StreamExecCalc$"),
    ("python operator", "flink.python"),
    ("python operator", "flink.streaming.api.operators.python"),
    ("kafka sink writer", "SinkWriterOperator.processElement"),
    ("window aggregate", "WindowAggOperator"),
    ("window aggregate", "SlicingWindowOperator"),
    ("usage windows (window operator)", "windowing.WindowOperator"),
    ("group aggregate", "GroupAggFunction"),
    ("deduplicate / over", "Deduplicate"),
    ("deduplicate / over", "OverAggregate"),
    ("checkpoint", "StreamTask.performCheckpoint"),
    ("kafka producer I/O", "kafka.clients.producer.internals.Sender"),
    ("kafka consumer fetch", "SplitFetcher"),
)
"""(label, frame substring): a sample belongs to the innermost (leaf-most) operator frame."""

FUNCTIONS: tuple[tuple[str, str], ...] = (
    ("JSON_VALUE", "SqlJsonUtils.jsonValue"),
    ("JSON_OBJECT", "SqlJsonUtils.serializeJson"),
    ("JSON_OBJECT", "SqlJsonUtils.createObjectNode"),
    ("REGEXP_EXTRACT", "SqlFunctionUtils.regexpExtract"),
    ("SHA256", "BinaryStringDataUtil.hash"),
    ("SHA256", "MessageDigest"),
    ("DATE_FORMAT", "DateTimeUtils.formatTimestamp"),
    ("UNIX_TIMESTAMP", "DateTimeUtils.unixTimestamp"),
    ("string conversion", "BinaryStringData"),
    ("json parsing (jackson)", "jackson.core.json"),
    ("json tree (jackson)", "jackson.databind"),
    ("kafka producer send", "KafkaProducer.send"),
)
"""(label, frame substring): the match nearest the operator frame names the function."""

_FRAME = re.compile(r"^\s+([\w$.<>/]+)\(")
_THREAD = re.compile(r'^\s+sampledThread = "(.*)" \(')
_DURATION = re.compile(r"([\d.]+) (h|m|s|ms|us|ns)\b")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


def jvm_option(path: Path, delay_s: int, duration_s: int) -> str:
    """The JVM option that records ``duration_s`` from ``delay_s`` after start into ``path``."""
    delay = f"delay={delay_s}s," if delay_s > 0 else ""  # the JVM refuses a delay under 1 s
    return (
        f"-XX:StartFlightRecording={delay}duration={duration_s}s,"
        f"filename={path},dumponexit=true,settings=profile"
    )


def parse_samples(lines: Iterable[str]) -> Iterator[tuple[str, list[str]]]:
    """(thread name, frames leaf first) per ``jdk.ExecutionSample`` of ``jfr print`` text."""
    thread = ""
    frames: list[str] = []
    in_stack = False
    for line in lines:
        if line.startswith("jdk.ExecutionSample"):
            thread, frames, in_stack = "", [], False
        elif m := _THREAD.match(line):
            thread = m.group(1)
        elif line.strip() == "stackTrace = [":
            in_stack = True
        elif in_stack:
            if line.strip() == "]":
                in_stack = False
                yield thread, frames
            elif m := _FRAME.match(line):
                frames.append(m.group(1))


def classify(frames: list[str]) -> tuple[str, str]:
    """(operator, function) of one stack, leaf first: the innermost operator frame, and the
    outermost function frame above it, so that a SQL function's own parsing counts as the
    function ("other" when none)."""
    for depth, frame in enumerate(frames):
        op = next((label for label, pattern in OPERATORS if pattern in frame), None)
        if op is None:
            continue
        function = "other"
        for inner in reversed(frames[:depth]):
            hit = next((label for label, pattern in FUNCTIONS if pattern in inner), None)
            if hit is not None:
                function = hit
                break
        return op, function
    return "task loop and other", "other"


def attribute(samples: Iterable[tuple[str, list[str]]]) -> dict[str, Any]:
    """Shares (%) of the samples by operator, and by function within each operator."""
    ops: Counter[str] = Counter()
    functions: Counter[tuple[str, str]] = Counter()
    threads: Counter[str] = Counter()
    n = 0
    for thread, frames in samples:
        op, function = classify(frames)
        ops[op] += 1
        functions[(op, function)] += 1
        threads[re.sub(r" \(\d+/\d+\)#\d+$", "", thread)[:80]] += 1
        n += 1
    if not n:
        return {"samples": 0, "operators": [], "threads": []}
    return {
        "samples": n,
        "operators": [
            {
                "operator": op,
                "percent": round(100 * count / n, 1),
                "functions": {
                    fn: round(100 * c / n, 1)
                    for (o, fn), c in functions.most_common()
                    if o == op and fn != "other" and 1000 * c >= n
                },
            }
            for op, count in ops.most_common()
            if 1000 * count >= n
        ],
        "threads": [
            {"thread": t, "percent": round(100 * c / n, 1)} for t, c in threads.most_common(5)
        ],
    }


def seconds(text: str) -> float:
    """``jfr print``'s durations ("908 ms", "49.7 s", "1 m 2 s", "1 h 3 m") in seconds."""
    parts = _DURATION.findall(text)
    if not parts or _DURATION.sub("", text).strip():
        raise ValueError(f"not a jfr duration: {text!r}")
    return sum(float(number) * _UNIT_S[unit] for number, unit in parts)


def compiler_seconds(lines: Iterable[str]) -> float:
    """JIT compiler time over a recording: last minus first ``jdk.CompilerStatistics`` total."""
    totals = [
        seconds(line.split("=", 1)[1])
        for line in lines
        if line.strip().startswith("totalTimeSpent")
    ]
    return totals[-1] - totals[0] if len(totals) > 1 else 0.0


def recording_window(summary: str) -> tuple[float, float] | None:
    """(start, end) epoch seconds of a recording, from ``jfr summary``."""
    start = re.search(r"Start: (\S+ \S+) \(UTC\)", summary)
    duration = re.search(r"Duration: (.+)", summary)
    if start is None or duration is None:
        return None
    t0 = datetime.strptime(start.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
    return t0, t0 + seconds(duration.group(1))


def summarize_recording(path: Path) -> dict[str, Any]:
    """Attribution, JIT time and time window of one recording (needs the JDK's ``jfr`` tool)."""
    if not path.exists() or path.stat().st_size == 0:
        # A recording is written when its duration ends; a JVM stopped earlier may leave none.
        return {"error": f"no recording in {path}: end it within the phase (delay + seconds)"}
    jfr = shutil.which("jfr")
    if jfr is None:
        return {"error": "the JDK's jfr tool is not on PATH"}
    summary = subprocess.run([jfr, "summary", str(path)], capture_output=True, text=True).stdout
    with subprocess.Popen(
        [jfr, "print", "--events", "jdk.ExecutionSample", "--stack-depth", "96", str(path)],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        result = attribute(parse_samples(proc.stdout))
    stats = subprocess.run(
        [jfr, "print", "--events", "jdk.CompilerStatistics", str(path)],
        capture_output=True,
        text=True,
    ).stdout
    window = recording_window(summary)
    # Compilation time (wall, on threads the execution samples never see): on two busy cores the
    # JIT competes with the tasks for most of a short run.
    result["jit_compile_s"] = round(compiler_seconds(stats.splitlines()), 1)
    result["window"] = None if window is None else [round(window[0], 1), round(window[1], 1)]
    result["recording"] = str(path)
    return result
