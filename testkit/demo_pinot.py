"""`make demo PINOT=1`: the demo's topics in Pinot, the dashboard over them, and the KPIs.

Creates (or updates) every Pinot table on the demo's topics (testkit/demo.py starts the
dashboard beside it), measures how long records take from being produced to being queryable
(tools/pinot_freshness.py) while the demo runs, and prints the KPIs (jobs/kpi.py) over the
demo's time range at the end.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from jobs.kpi import PinotKpis
from metering.kpi import KPIS, KpiRequest, Query, format_table
from metering.settings import PipelineSettings
from tools.pinot_freshness import FRONTIER_SQL, Freshness, probe
from tools.pinot_tables import (
    TABLES,
    PinotController,
    apply_definitions,
    load_definitions,
    placeholder_values,
)

REPORT = ("mtd-usage", "calls", "latency", "unique-callers", "geo", "error-rate")


class PinotView:
    def __init__(self, cfg: PipelineSettings, controller_url: str, broker_url: str) -> None:
        self._cfg = cfg
        controller = PinotController(controller_url)
        controller.wait_healthy(60)
        definitions = load_definitions(
            placeholder_values(
                bootstrap_servers=cfg.bootstrap_servers,
                enriched_topic=cfg.enriched_topic,
                alerts_topic=cfg.alerts_topic,
                period_usage_topic=cfg.period_usage_topic,
                dlq_topic=cfg.dlq_topic,
                reconciliation_topic=cfg.reconciliation_topic,
            ),
            # Every table the dashboard reads; `actions` too, as the demo runs the responder.
            TABLES,
        )
        for line in apply_definitions(controller, definitions):
            print(f"demo: pinot {line}", flush=True)
        self.kpis = PinotKpis(broker_url)
        self.freshness = Freshness()
        self._thread: threading.Thread | None = None

    def _sql(self, sql: str) -> list[list[Any]]:
        return self.kpis.run(Query(sql))[1]

    def _frontier(self) -> dict[int, int]:
        try:
            rows = self._sql(FRONTIER_SQL.format(table="api_events"))
        except Exception:  # the table's first segment is still being set up
            return {}
        return {int(p): int(high) for p, high in rows}

    def start_probe(self, stop: threading.Event) -> None:
        def run() -> None:
            self.freshness = probe(
                self._frontier, self._cfg.bootstrap_servers, self._cfg.raw_topic, stop.is_set
            )

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop_probe(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=30)

    def rows_between(self, start_ms: int, end_ms: int) -> int:
        try:
            _, rows = self.kpis.run(
                Query(
                    "SELECT COUNT(*) FROM api_events "
                    "WHERE event_time >= %(start_ms)s AND event_time < %(end_ms)s",
                    {"start_ms": start_ms, "end_ms": end_ms},
                )
            )
        except Exception:
            return -1
        return int(rows[0][0]) if rows else 0

    def wait_for(self, want: int, start_ms: int, end_ms: int, timeout_s: float = 60) -> int:
        """Rows of the range once Pinot holds ``want`` of them, or what it holds at timeout."""
        deadline = time.monotonic() + timeout_s
        got = self.rows_between(start_ms, end_ms)
        while got < want and time.monotonic() < deadline:
            time.sleep(0.5)
            got = self.rows_between(start_ms, end_ms)
        return got

    def report(self, start_ms: int, end_ms: int) -> None:
        req = KpiRequest(start_ms, end_ms, bucket="minute")
        for name in REPORT:
            kpi = KPIS[name]
            rows = self.kpis.kpi(name, req)
            print(f"\nKPI {name}: {kpi.description}   (python -m jobs.kpi {name})")
            print(format_table(kpi.columns, rows[:15]))
            if len(rows) > 15:
                print(f"... {len(rows) - 15} more rows")

    def close(self) -> None:
        self.kpis.close()
