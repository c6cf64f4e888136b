"""The vectorized parse's own cost per event, outside Flink: what a Python worker does with one
Arrow batch of Kafka records, step by step, on the bench's traffic.

``python -m bench.parse_cost [--records N] [--batch 1000] [--rounds 3]``

Steps, as PyFlink's pandas-UDF worker runs them (``pyflink.table.utils``): the Arrow batch to
pandas Series, the parse (``udfs.functions.ParseRecords.parse_records``), the result DataFrame,
the DataFrame back to an Arrow record batch of PARSED_RECORD, and that batch written as an Arrow
IPC stream. What the job's worker processes cost beyond the sum is PyFlink's runner (Beam's
harness, gRPC, the bundle protocol) and the JVM side of the hand-off.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import pandas as pd
import pyarrow as pa
from pyflink.table import DataTypes
from pyflink.table.types import DataType, to_arrow_type
from pyflink.table.utils import arrow_to_pandas, pandas_to_arrow

from metering.geo import GeoLookup, default_geoip_db
from metering.records import Limits, RecordProcessor
from metering.redact import Pseudonymizer
from schemas.stages import PARSED_RECORD
from testkit.traffic import bulk_traffic, max_event_age_covering
from udfs.functions import ParseRecords

_SQL: dict[str, DataType] = {
    "STRING": DataTypes.STRING(),
    "BOOLEAN": DataTypes.BOOLEAN(),
    "DOUBLE": DataTypes.DOUBLE(),
    "INT": DataTypes.INT(),
    "BIGINT": DataTypes.BIGINT(),
}
_IN_TYPES = [DataTypes.BYTES(), DataTypes.INT(), DataTypes.BIGINT(), DataTypes.BIGINT()]


def _data_type(sql: str) -> DataType:
    if sql.startswith("ARRAY<"):
        return DataTypes.ARRAY(_data_type(sql[6:-1]))
    return _SQL[sql]


class _Counter:
    def inc(self, n: int = 1) -> None:
        pass


def measure(records: int, batch: int, rounds: int) -> dict[str, Any]:
    start_ms = int(time.time() * 1000) - 600_000
    values = [
        r.value for r in itertools.islice(bulk_traffic(records * 5, start_ms=start_ms), records)
    ]
    out_row = DataTypes.ROW([DataTypes.FIELD(n, _data_type(t)) for n, t in PARSED_RECORD.fields])
    out_schema = pa.schema([pa.field("f0", to_arrow_type(out_row))])
    limits = Limits(max_event_age_s=max_event_age_covering(start_ms))
    fn = ParseRecords("bench", default_geoip_db(), 100_000, limits, vectorized=True)
    geo = GeoLookup(default_geoip_db(), 100_000)
    fn._processor = RecordProcessor(Pseudonymizer(os.urandom(32)), geo.lookup, limits)
    fn._records_in = fn._events_out = fn._dead_out = _Counter()
    batches = [
        pa.RecordBatch.from_arrays(
            [
                pa.array(values[i : i + batch], pa.binary()),
                pa.array([0] * len(values[i : i + batch]), pa.int32()),
                pa.array(range(i, i + len(values[i : i + batch])), pa.int64()),
                pa.array([start_ms // 1000] * len(values[i : i + batch]), pa.int64()),
            ],
            names=["payload", "partition", "offset", "kafka_s"],
        )
        for i in range(0, len(values), batch)
    ]
    steps = dict.fromkeys(("arrow_to_pandas", "parse", "dataframe", "pandas_to_arrow", "ipc"), 0.0)
    events = 0
    for r in range(rounds + 1):  # round 0 warms the caches, as a long-running worker has them
        for b in batches:
            t0 = time.process_time()
            cols = arrow_to_pandas("UTC", _IN_TYPES, [b])
            t1 = time.process_time()
            columns = fn.parse_records(cols[0], cols[1], cols[2])
            t2 = time.process_time()
            df = pd.DataFrame({"p": cols[1], "o": cols[2], "s": cols[3], **columns})
            t3 = time.process_time()
            rb = pandas_to_arrow(out_schema, "UTC", [out_row], [df])
            t4 = time.process_time()
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, rb.schema) as writer:
                writer.write_batch(rb)
            t5 = time.process_time()
            if r:
                events += sum(len(v) for v in columns["rate_key"])
                for name, dt in zip(
                    steps, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True
                ):
                    steps[name] += dt
    geo.close()
    us = {name: round(total * 1e6 / events, 2) for name, total in steps.items()}
    return {"records": records, "events_per_round": events // rounds, "us_per_event": us,
            "total_us_per_event": round(sum(us.values()), 2)}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.parse_cost", description=__doc__)
    p.add_argument("--records", type=int, default=20_000, help="Kafka records of bench traffic")
    p.add_argument("--batch", type=int, default=1_000, help="records per Arrow batch")
    p.add_argument("--rounds", type=int, default=3, help="timed passes after a warm-up pass")
    args = p.parse_args(argv)
    if min(args.records, args.batch, args.rounds) < 1:
        p.error("--records, --batch and --rounds must be at least 1")
    result = measure(args.records, args.batch, args.rounds)
    print(f"{result['events_per_round']:,} events in {args.records:,} records, "
          f"batches of {args.batch}, {args.rounds} warm rounds; CPU-µs per event:")  # fmt: skip
    for name, us in result["us_per_event"].items():
        print(f"  {name:<16}{us:>8.2f}")
    print(f"  {'total':<16}{result['total_us_per_event']:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
