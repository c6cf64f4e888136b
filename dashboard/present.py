"""The dashboard's presentation: query results as frames and the numbers as a reader sees them
(durations, money, quota lines, tier rows). Pure: no Streamlit, no Pinot, tested alone."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import pandas as pd

from dashboard import data
from metering.billing.money import round_money
from metering.billing.plans import DEFAULT_CURRENCY

REFRESH_ENV = "DASHBOARD_REFRESH_S"
DEFAULT_REFRESH_S = 5.0
# Series beyond the busiest few are summed as "other", so a chart stays readable.
TOP_SERIES = 10
TIME_COLUMNS = ("bucket_start", "day", "detected_at", "recorded_at")
COUNT_COLUMNS = ("calls", "errors", "server_errors", "unique_callers", "dead_letters")
QUOTA_MARKS = (50, 80, 100)
# Set by `python -m dashboard run --operator`: no token shows the ops and product views.
OPERATOR_ENV = "DASHBOARD_OPERATOR"


def refresh_s(environ: Mapping[str, str] | None = None) -> float:
    """Seconds between refreshes, from ``DASHBOARD_REFRESH_S`` (1 to 300, default 5)."""
    return data.env_seconds(REFRESH_ENV, DEFAULT_REFRESH_S, 1.0, 300.0, environ)


def frame(result: data.Result) -> pd.DataFrame:
    """The result as a DataFrame, epoch-ms time columns as UTC datetimes."""
    df = pd.DataFrame(list(result.rows), columns=list(result.columns))
    for column in COUNT_COLUMNS:
        # Pinot sums are doubles; a count reads as a whole number.
        values = pd.to_numeric(df[column], errors="coerce") if column in df.columns else None
        if values is not None and values.map(math.isfinite).all():
            df[column] = values.round().astype("Int64")
    for column in TIME_COLUMNS:
        if column in df.columns:
            df[column] = pd.to_datetime(pd.to_numeric(df[column]), unit="ms", utc=True)
    return df


def with_error_rate(df: pd.DataFrame) -> pd.DataFrame:
    """Adds ``error_rate`` (errors / calls) to rows that have both."""
    out = df.copy()
    calls = pd.to_numeric(out["calls"])
    out["error_rate"] = (pd.to_numeric(out["errors"]) / calls.where(calls > 0)).fillna(0.0)
    return out


def series(df: pd.DataFrame, index: str, column: str, value: str) -> pd.DataFrame:
    """``value`` over ``index`` with one column per ``column`` value: the top few by total, the
    rest summed as "other", so a chart stays readable with many consumers."""
    totals = df.groupby(column)[value].sum().sort_values(ascending=False)
    top = set(totals.index[:TOP_SERIES])
    names = df[column].where(df[column].isin(top), "other").fillna("unknown")
    return (
        df.assign(**{column: names})
        .pivot_table(index=index, columns=column, values=value, aggfunc="sum")
        .fillna(0)
    )


def money(value: Any, currency: str) -> str:
    """An exact amount as the invoice will round it (metering.billing.money)."""
    amount = Decimal(str(value))
    return f"{round_money(amount, currency or DEFAULT_CURRENCY)} {currency}".strip()


def ledger_line(row: Mapping[str, Any]) -> str:
    """The reconciliation ledger's equation over the summed intervals, as the page reads it."""
    n = {c: int(row[c]) for c in ("entries_in", "enriched_out", "dead_lettered", "deduplicated")}
    return (
        f"entries in {n['entries_in']:,} = enriched {n['enriched_out']:,} + "
        f"dead-lettered {n['dead_lettered']:,} + deduplicated {n['deduplicated']:,}"
    )


def quota_reached(units: int, included: int) -> list[int]:
    """The quota marks (percent) that ``units`` of ``included`` have reached."""
    return [p for p in QUOTA_MARKS if units * 100 >= p * included]


def quota_text(used: float, reached: list[int], hard_limit: bool) -> str:
    marks = ", ".join(f"{p} %" for p in reached) or "none yet"
    limit = " (a hard limit: calls are refused beyond it)" if hard_limit else ""
    return f"{used:.0%} of the quota used; thresholds reached: {marks}{limit}"


def tier_rows(segments: Any) -> list[dict[str, Any]]:
    """One row per plan and tier of the period so far: units, unit price, exact amount."""
    if isinstance(segments, str):
        segments = json.loads(segments)
    return [
        {
            "plan": seg["plan_id"],
            "tier": tier["index"] + 1,
            # Pinot's JSON column leaves out null fields: the last tier has no end.
            "up to": tier.get("up_to"),
            "units": tier["units"],
            "unit price": tier["unit_price"],
            "amount": tier["amount"],
        }
        for seg in segments or []
        for tier in seg["tiers"]
    ]


def number(value: Any) -> float | None:
    """A numeric cell as a float, or None for Pinot's empty-aggregate answers (NaN,
    -Infinity, null)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def seconds(ms: float | None) -> str:
    """A duration for a reader: tenths of a second up to a minute, then minutes, hours, days."""
    if ms is None:
        return "n/a"
    s = ms / 1000
    for limit, unit, size in ((60, "s", 1), (3600, "min", 60), (86_400, "h", 3600)):
        if s < limit:
            return f"{s / size:.1f} {unit}" if unit == "s" else f"{s / size:.0f} {unit}"
    return f"{s / 86_400:,.0f} d"
