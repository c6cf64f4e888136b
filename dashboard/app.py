"""The dashboard, a Streamlit script: ``streamlit run dashboard/app.py`` (or ``python -m dashboard
run``).

Which view a visitor gets depends only on the page's query and the server's settings:

* ``?token=…``: the consumer view of the consumer the verified portal token names, and nothing
  else, whatever the server's operator setting. Its queries take that consumer from the token's
  claims; nothing the visitor types or puts in the URL names a consumer.
* no token: the ops and product views, only when the server runs with ``DASHBOARD_OPERATOR=1``
  (``python -m dashboard run --operator``); otherwise a page that asks for a portal link.

Panels refresh every ``DASHBOARD_REFRESH_S`` seconds (default 5) inside ``st.fragment`` without a
page reload; query results are cached for as long, keyed by SQL and bound values, so viewers of
one consumer share them and never another's. Pinot down or a table missing shows a message.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import data, queries, tokens
from dashboard.queries import Panel, Window
from metering.billing.money import round_money
from metering.billing.plans import DEFAULT_CURRENCY
from metering.kpi import Query

OPERATOR_ENV = "DASHBOARD_OPERATOR"
REFRESH_ENV = "DASHBOARD_REFRESH_S"
DEFAULT_REFRESH_S = 5.0
# Results live as long as one refresh: fresh on every tick, shared by viewers of that tick.
CACHE_TTL_S = 5
TOP_SERIES = 10
TIME_COLUMNS = ("bucket_start", "day", "detected_at", "recorded_at")


def _flag(name: str, environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return env.get(name, "").strip().lower() in ("1", "true", "yes")


def refresh_s(environ: Mapping[str, str] | None = None) -> float:
    """Seconds between refreshes, from ``DASHBOARD_REFRESH_S`` (1 to 300, default 5)."""
    env = os.environ if environ is None else environ
    try:
        value = float(env.get(REFRESH_ENV, "") or DEFAULT_REFRESH_S)
    except ValueError:
        return DEFAULT_REFRESH_S
    return min(max(value, 1.0), 300.0)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False, max_entries=1024)
def _fetch(
    url: str, sql: str, params: tuple[tuple[str, Any], ...], table: str, timeout_s: float
) -> data.Result:
    """One query's result, cached by everything that determines it (bound values included)."""
    return data.run_query(url, Query(sql, dict(params)), table, timeout_s)


def fetch_all(panels: list[Panel]) -> dict[str, data.Result]:
    """Every panel's result, by panel key."""
    url, timeout_s = data.broker_url(), data.query_timeout_s()
    return {
        p.key: _fetch(url, p.query.sql, tuple(sorted(p.query.params.items())), p.table, timeout_s)
        for p in panels
    }


def frame(result: data.Result) -> pd.DataFrame:
    """The result as a DataFrame, epoch-ms time columns as UTC datetimes."""
    df = pd.DataFrame(list(result.rows), columns=list(result.columns))
    for column in TIME_COLUMNS:
        if column in df.columns:
            df[column] = pd.to_datetime(pd.to_numeric(df[column]), unit="ms", utc=True)
    return df


def pinot_down(results: Mapping[str, data.Result]) -> data.Result | None:
    """The result that says Pinot is unreachable, if every query found it so."""
    values = list(results.values())
    if values and all(r.problem == "unreachable" for r in values):
        return values[0]
    return None


def panel_frame(
    panel: Panel, results: Mapping[str, data.Result], public: bool
) -> pd.DataFrame | None:
    """The panel's rows, or None after saying why there are none. ``public`` (the consumer
    view) hides table names and broker addresses."""
    result = results[panel.key]
    if result.problem == "missing_table" and panel.optional:
        st.info(f"{panel.title}: none yet (the `{panel.table}` table does not exist yet).")
        return None
    if result.problem is not None:
        st.warning(
            f"{panel.title}: temporarily unavailable."
            if public
            else f"{panel.title}: {result.message}"
        )
        return None
    df = frame(result)
    if df.empty:
        st.caption(f"{panel.title}: no data in this time range.")
        return None
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


def section(panel: Panel, results: Mapping[str, data.Result], public: bool) -> pd.DataFrame | None:
    st.subheader(panel.title)
    return panel_frame(panel, results, public)


def render_consumer(claims: tokens.PortalClaims, span: str) -> None:
    """The consumer's panels for the window ending now, while the token has not expired (the
    fragment keeps rerunning with the claims it was given, so expiry is checked on each run)."""
    now_ms = int(time.time() * 1000)
    if now_ms >= claims.expires_at * 1000:
        st.error("This portal link has expired. Ask your provider for a new one.")
        return
    window = queries.window_ending(now_ms, queries.SPANS_MS[span])
    panels = {p.key: p for p in queries.consumer_view(claims, window)}
    results = fetch_all(list(panels.values()))
    if pinot_down(results) is not None:
        st.error("Usage data is temporarily unavailable. This page retries on its own.")
        return
    summary = panel_frame(panels["summary"], results, public=True)
    if summary is not None:
        row = summary.iloc[0]
        calls, errors = int(row["calls"] or 0), int(row["errors"] or 0)
        cols = st.columns(4)
        cols[0].metric("Calls", f"{calls:,}")
        cols[1].metric("Billable units", f"{float(row['units'] or 0):,.0f}")
        cols[2].metric("Errors", f"{errors:,}")
        cols[3].metric("Error rate", f"{errors / calls:.2%}" if calls else "n/a")
    df = section(panels["calls_per_day"], results, True)
    if df is not None:
        st.bar_chart(df.set_index("bucket_start")[["calls"]])
    df = section(panels["routes"], results, True)
    if df is not None:
        df = with_error_rate(df)
        st.bar_chart(df.set_index("route")[["calls"]])
        st.dataframe(df, hide_index=True)
    for key in ("latency", "errors", "alerts", "actions"):
        df = section(panels[key], results, True)
        if df is not None:
            st.dataframe(df, hide_index=True)
    render_billing(section(panels["billing"], results, True))


def render_billing(df: pd.DataFrame | None) -> None:
    """The period so far against the plan's quota, the estimate with its tiers, and the
    prepaid balance: the billing stage's latest record for the consumer."""
    if df is None:
        return
    row = df.iloc[0]
    units, included = int(row["units"]), row["included_units"]
    currency = row["currency"] or ""
    cols = st.columns(3)
    quota = "unlimited" if pd.isna(included) else f"of {int(included):,} included"
    cols[0].metric(f"Units in {row['period']}", f"{units:,}", quota, delta_color="off")
    cols[1].metric("Estimate so far", money(row["amount"], currency))
    if not pd.isna(row["balance"]):
        cols[2].metric("Prepaid balance", money(row["balance"], currency))
    if not pd.isna(included) and int(included) > 0:
        used = units / int(included)
        reached = [p for p in QUOTA_MARKS if used * 100 >= p]
        st.progress(min(used, 1.0), text=quota_text(used, reached, bool(row["hard_limit"])))
    tiers = tier_rows(row["segments"])
    if tiers:
        st.dataframe(pd.DataFrame(tiers), hide_index=True)


QUOTA_MARKS = (50, 80, 100)


def money(value: Any, currency: str) -> str:
    """An exact amount as the invoice will round it (metering.billing.money)."""
    amount = Decimal(str(value))
    return f"{round_money(amount, currency or DEFAULT_CURRENCY)} {currency}".strip()


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
            "up to": tier["up_to"],
            "units": tier["units"],
            "unit price": tier["unit_price"],
            "amount": tier["amount"],
        }
        for seg in segments or []
        for tier in seg["tiers"]
    ]


def render_ops(window: Window) -> None:
    """The five KPIs, the live alerts feed and the actions taken."""
    panels = {p.key: p for p in queries.ops_view(window)}
    results = fetch_all(list(panels.values()))
    down = pinot_down(results)
    if down is not None:
        st.error(f"{down.message} Retrying every {refresh_s():g} s.")
        return
    df = section(panels["calls"], results, False)
    if df is not None:
        st.line_chart(series(df, "bucket_start", "consumer", "calls"))
    df = section(panels["latency"], results, False)
    if df is not None:
        st.bar_chart(df.set_index("route")[["p50_ms", "p95_ms", "p99_ms"]], stack=False)
        st.dataframe(df, hide_index=True)
    df = section(panels["unique_callers"], results, False)
    if df is not None:
        st.bar_chart(df.set_index("route")[["unique_callers"]])
    df = section(panels["countries"], results, False)
    if df is not None:
        st.bar_chart(df.fillna({"country": "unknown"}).set_index("country")[["calls"]])
    points = panel_frame(panels["country_points"], results, False)
    if points is not None:
        st.map(points, latitude="lat", longitude="lon")
    df = section(panels["error_rate"], results, False)
    if df is not None:
        df = with_error_rate(df)
        st.bar_chart(df.set_index("route")[["error_rate"]])
        st.dataframe(df, hide_index=True)
    df = panel_frame(panels["errors"], results, False)
    if df is not None:
        st.dataframe(df, hide_index=True)
    for key in ("alerts", "actions"):
        df = section(panels[key], results, False)
        if df is not None:
            st.dataframe(df, hide_index=True)


def render_product(window: Window) -> None:
    """Top routes and consumers, growth, country distribution."""
    panels = {p.key: p for p in queries.product_view(window)}
    results = fetch_all(list(panels.values()))
    down = pinot_down(results)
    if down is not None:
        st.error(f"{down.message} Retrying every {refresh_s():g} s.")
        return
    df = section(panels["growth"], results, False)
    if df is not None:
        st.line_chart(df.set_index("day")[["calls", "consumers", "callers"]])
    for key, label in (("top_routes", "route"), ("top_consumers", "consumer")):
        df = section(panels[key], results, False)
        if df is not None:
            st.bar_chart(df.fillna({label: "unknown"}).set_index(label)[["calls"]])
            st.dataframe(df, hide_index=True)
    df = section(panels["countries"], results, False)
    if df is not None:
        st.bar_chart(df.fillna({"country": "unknown"}).set_index("country")[["calls"]])


def live(render: Callable[..., None]) -> Callable[..., None]:
    """``render`` as a fragment that reruns on its own every refresh interval."""
    return st.fragment(run_every=refresh_s())(render)


def consumer_page(token: str) -> None:
    """The consumer view, if the token verifies; otherwise a message and nothing else."""
    try:
        secret = tokens.read_secret()
    except tokens.SecretError:
        st.error("Portal links cannot be checked: the dashboard's token secret is not set up.")
        return
    try:
        claims = tokens.verify_token(token, secret, int(time.time()))
    except tokens.TokenError:
        st.error("This portal link is invalid or has expired. Ask your provider for a new one.")
        return
    st.title(f"API usage: {claims.consumer}")
    expiry = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(claims.expires_at))
    st.caption(f"Portal link valid until {expiry}.")
    span = st.selectbox("Time range", list(queries.SPANS_MS), index=1)
    live(render_consumer)(claims, span)


def operator_page() -> None:
    """The ops and product views, chosen in the sidebar (or by ``?view=product``)."""
    views = ("Ops", "Product")
    wanted = str(st.query_params.get("view", "ops")).capitalize()
    view = st.sidebar.radio("View", views, index=views.index(wanted) if wanted in views else 0)
    span = st.sidebar.selectbox("Time range", list(queries.SPANS_MS), index=1)
    st.sidebar.caption(f"Pinot broker: {data.display_url(data.broker_url())}")
    st.title(f"API usage: {view.lower()}")

    def render(view: str, span: str) -> None:
        window = queries.window_ending(int(time.time() * 1000), queries.SPANS_MS[span])
        (render_ops if view == "Ops" else render_product)(window)

    live(render)(view, span)


def main() -> None:
    st.set_page_config(page_title="API usage", layout="wide")
    token = st.query_params.get("token")
    if token:
        consumer_page(str(token))
    elif _flag(OPERATOR_ENV):
        operator_page()
    else:
        st.title("API usage")
        st.info("Open this dashboard with your portal link (it ends in `?token=…`).")


main()
