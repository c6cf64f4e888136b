"""KPIs of the API business, from Pinot: python -m jobs.kpi <query> [options].

Queries (see metering/kpi.py for the SQL):
  calls           calls and billable units per consumer per time bucket
  latency         latency p50/p95/p99 per route
  unique-callers  distinct callers (hashed client IP) per route
  geo             calls and distinct callers per country
  errors          error responses per route and status
  error-rate      calls, errors and server errors per route, with the error rate
  mtd-usage       month-to-date calls, units and errors per consumer
  billing-estimate  period-to-date calls, units and exact amount per subject (period usage)

Values (consumer, times) are passed to the Pinot driver as query parameters, never pasted
into the SQL.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from metering.kpi import (
    BUCKETS,
    KPIS,
    KpiError,
    KpiRequest,
    Query,
    check_request,
    format_table,
    parse_time,
    shape_rows,
)

DEFAULT_BROKER = "http://127.0.0.1:8099"
BROKER_ENV = "PIPELINE_PINOT_BROKER_URL"
DAY_MS = 86_400_000


class PinotKpis:
    """Runs KPI queries on a Pinot broker through pinotdb (DB-API)."""

    def __init__(self, broker_url: str = DEFAULT_BROKER, timeout_s: float = 30.0) -> None:
        from pinotdb import connect

        url = urlsplit(broker_url)
        self._conn = connect(
            host=url.hostname or "127.0.0.1",
            port=url.port or (443 if url.scheme == "https" else 8099),
            path="/query/sql",
            scheme=url.scheme or "http",
            timeout=timeout_s,
        )

    def run(self, query: Query) -> tuple[list[str], list[list[Any]]]:
        cursor = self._conn.cursor()
        try:
            cursor.execute(query.sql, query.params, query.options)
            columns = [d[0] for d in cursor.description or ()]
            return columns, [list(r) for r in cursor.fetchall()]
        finally:
            cursor.close()

    def kpi(self, name: str, req: KpiRequest) -> list[dict[str, Any]]:
        kpi = KPIS[name]
        columns, rows = self.run(kpi.build(check_request(req)))
        return shape_rows(name, columns, rows)

    def close(self) -> None:
        self._conn.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.kpi",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("query", choices=sorted(KPIS), help="which KPI")
    parser.add_argument("--consumer", help="only this consumer (exact name)")
    parser.add_argument(
        "--from",
        dest="start",
        help="start of the range, inclusive: epoch ms or ISO 8601 (default: --to minus 1 day)",
    )
    parser.add_argument(
        "--to", dest="end", help="end of the range, exclusive: epoch ms or ISO 8601 (default: now)"
    )
    parser.add_argument(
        "--bucket", choices=sorted(BUCKETS), default="hour", help="time bucket of `calls`"
    )
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    parser.add_argument(
        "--broker",
        default=os.environ.get(BROKER_ENV, DEFAULT_BROKER),
        help=f"Pinot broker URL [env {BROKER_ENV}] (default: {DEFAULT_BROKER})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        end = parse_time(args.end) if args.end else int(time.time() * 1000)
        start = parse_time(args.start) if args.start else end - DAY_MS
        req = check_request(KpiRequest(start, end, args.consumer, args.bucket))
    except KpiError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    kpis = PinotKpis(args.broker)
    try:
        rows = kpis.kpi(args.query, req)
    except Exception as e:  # pinotdb raises DatabaseError and httpx errors; report, don't trace
        print(f"error: query {args.query} on {args.broker} failed: {e}", file=sys.stderr)
        return 1
    finally:
        kpis.close()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(KPIS[args.query].columns, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
