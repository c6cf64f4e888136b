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

import time
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import data, queries, tokens
from dashboard.present import (
    OPERATOR_ENV,
    frame,
    ledger_line,
    money,
    number,
    quota_reached,
    quota_text,
    refresh_s,
    seconds,
    series,
    tier_rows,
    with_error_rate,
)
from dashboard.queries import Panel, Window
from metering.kpi import KpiError, Query

# Results live as long as one refresh: fresh on every tick, shared by viewers of that tick.
CACHE_TTL_S = refresh_s()
# What the time-range control gives: a span ending now, or whole UTC days.
RangeChoice = str | tuple[date, date]


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False, max_entries=1024)
def _fetch(
    url: str,
    sql: str,
    params: tuple[tuple[str, Any], ...],
    options: str | None,
    table: str,
    timeout_s: float,
) -> data.Result:
    """One query's result, cached by everything that determines it (bound values included)."""
    return data.run_query(url, Query(sql, dict(params), options), table, timeout_s)


def fetch_all(panels: list[Panel]) -> dict[str, data.Result]:
    """Every panel's result, by panel key."""
    url, timeout_s = data.broker_url(), data.query_timeout_s()
    return {
        p.key: _fetch(
            url,
            p.query.sql,
            tuple(sorted(p.query.params.items())),
            p.query.options,
            p.table,
            timeout_s,
        )
        for p in panels
    }


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
        # A consumer's page names no table: what is behind it is the operator's business.
        where = "" if public else f" (the `{panel.table}` table does not exist yet)"
        st.info(f"{panel.title}: none yet{where}.")
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


def section(panel: Panel, results: Mapping[str, data.Result], public: bool) -> pd.DataFrame | None:
    st.subheader(panel.title)
    return panel_frame(panel, results, public)


def range_choice(where: Any) -> RangeChoice:
    """The time range picked in ``where`` (the page or the sidebar): one of the spans ending
    now, or whole UTC days, preset by the link's ``?from=YYYY-MM-DD&to=YYYY-MM-DD``."""
    try:
        preset = queries.days_from_params(st.query_params.to_dict())
    except KpiError as e:
        where.warning(f"The link's dates are ignored: {e}.")
        preset = None
    options = [*queries.SPANS_MS, queries.DAYS]
    default = options.index(queries.DAYS if preset else queries.DEFAULT_SPAN)
    pick = where.selectbox("Time range", options, index=default)
    if pick != queries.DAYS:
        return str(pick)
    today = datetime.now(UTC).date()
    picked = where.date_input("Days (UTC)", value=preset or (today - timedelta(days=6), today))
    days = tuple(picked) if isinstance(picked, tuple | list) else (picked,)
    # While a range is being picked the widget holds its first day only.
    return (days[0], days[-1]) if days else (today, today)


def window_for(choice: RangeChoice) -> Window | None:
    """The query window of a range choice, or None after saying the days span too long."""
    try:
        if isinstance(choice, tuple):
            return queries.window_of_days(*choice)
        return queries.window_ending(int(time.time() * 1000), queries.SPANS_MS[choice])
    except KpiError as e:
        st.error(f"Choose a shorter range: {e}.")
        return None


def render_consumer(claims: tokens.PortalClaims, choice: RangeChoice) -> None:
    """The consumer's panels for the window ending now, while the token has not expired (the
    fragment keeps rerunning with the claims it was given, so expiry is checked on each run)."""
    now_ms = int(time.time() * 1000)
    if now_ms >= claims.expires_at * 1000:
        st.error("This portal link has expired. Ask your provider for a new one.")
        return
    window = window_for(choice)
    if window is None:
        return
    panels = {p.key: p for p in queries.consumer_view(claims, window)}
    results = fetch_all(list(panels.values()))
    if pinot_down(results) is not None:
        st.error("Usage data is temporarily unavailable. This page retries on its own.")
        return
    summary_metrics(panels, results, public=True)
    # What they will pay comes first.
    render_billing(section(panels["billing"], results, True))
    df = section(panels["calls_over_time"], results, True)
    if df is not None:
        st.bar_chart(df.set_index("bucket_start")[["calls"]])
    df = section(panels["routes"], results, True)
    if df is not None:
        df = with_error_rate(df)
        st.bar_chart(df.set_index("route")[["calls"]])
        st.table(df.set_index("route"))
    df = section(panels["latency"], results, True)
    if df is not None:
        st.table(df.set_index("route"))
    # Static tables: a consumer's feeds are short, and a reader (or a test) sees every cell.
    for key in ("errors", "alerts", "actions"):
        df = section(panels[key], results, True)
        if df is not None:
            st.table(df.set_index(df.columns[0]))


def summary_metrics(
    panels: Mapping[str, Panel], results: Mapping[str, data.Result], public: bool
) -> None:
    """Calls, billable units, errors, the error rate and alert records over the range: the
    numbers a reader checks first, as text."""
    summary = panel_frame(panels["summary"], results, public)
    alerts = panel_frame(panels["alert_count"], results, public)
    if summary is None:
        return
    row = summary.iloc[0]
    calls, errors = (int(number(row[c]) or 0) for c in ("calls", "errors"))
    cols = st.columns(5)
    cols[0].metric("Calls", f"{calls:,}")
    cols[1].metric("Billable units", f"{number(row['units']) or 0:,.0f}")
    cols[2].metric("Errors", f"{errors:,}")
    cols[3].metric("Error rate", f"{errors / calls:.2%}" if calls else "n/a")
    if alerts is not None:
        cols[4].metric("Alert records", f"{int(number(alerts.iloc[0]['alerts']) or 0):,}")


def render_billing(df: pd.DataFrame | None) -> None:
    """The period so far against the plan's quota, the estimate with its tiers, and the
    prepaid balance: the billing stage's latest record for the consumer."""
    if df is None:
        return
    row = df.iloc[0]
    units, included = int(row["units"]), row["included_units"]
    currency = row["currency"] or ""
    cols = st.columns(3)
    quota = "no quota" if pd.isna(included) else f"of {int(included):,} included"
    cols[0].metric(f"Units in {row['period']}", f"{units:,}")
    cols[0].caption(quota)
    cols[1].metric("Estimate so far", money(row["amount"], currency))
    if not pd.isna(row["balance"]):
        cols[2].metric("Prepaid balance", money(row["balance"], currency))
    if not pd.isna(included) and int(included) > 0:
        used = units / int(included)
        reached = quota_reached(units, int(included))
        st.progress(min(used, 1.0), text=quota_text(used, reached, bool(row["hard_limit"])))
    if bool(row.get("repricing_needed")):
        st.warning(
            "Your plan changed after part of this period was priced: the invoice prices the "
            "whole period again, so the estimate above may change."
        )
    tiers = tier_rows(row["segments"])
    if tiers:
        st.table(pd.DataFrame(tiers).set_index("plan"))


def render_health(panels: Mapping[str, Panel], results: Mapping[str, data.Result]) -> None:
    """Pipeline health: event-to-queryable freshness, dead letters per reason, and the
    reconciliation ledger's balance."""
    st.subheader("Pipeline health")
    cols = st.columns(4)
    fresh = panel_frame(panels["freshness"], results, False)
    if fresh is not None:
        row = fresh.iloc[0]
        newest = number(row["newest_ingested_at"])
        age = None if newest is None else max(0.0, time.time() * 1000 - newest)
        cols[0].metric("Events ingested (5 min)", f"{int(row['events']):,}")
        cols[1].metric("Event to queryable p50", seconds(number(row["p50_ms"])))
        cols[2].metric(
            "p95 / p99", " / ".join(seconds(number(row[c])) for c in ("p95_ms", "p99_ms"))
        )
        cols[3].metric("Last ingest", "n/a" if age is None else f"{seconds(age)} ago")
    dead = panel_frame(panels["dead_letters"], results, False)
    ledger = panel_frame(panels["reconciliation"], results, False)
    cols = st.columns(4)
    by_reason = None
    if dead is not None:
        by_reason = dead.groupby("reason")["dead_letters"].sum().sort_values(ascending=False)
        cols[0].metric("Dead letters", f"{int(by_reason.sum()):,}")
    if ledger is not None:
        row = ledger.iloc[0]
        intervals, unbalanced = int(row["intervals"]), int(row["unbalanced"])
        cols[1].metric("Ledger intervals", f"{intervals:,}")
        cols[2].metric("Unbalanced intervals", f"{unbalanced:,}")
        cols[3].metric("Records in", f"{int(row['records_in']):,}")
        equation = ledger_line(row)
        if unbalanced:
            st.error(f"Reconciliation: {unbalanced} interval(s) do not balance. {equation}.")
        elif intervals:
            st.success(f"Reconciliation: every interval balances. {equation}.")
    if dead is not None and by_reason is not None:
        st.bar_chart(series(dead, "bucket_start", "reason", "dead_letters"))
        st.table(by_reason.rename("dead letters").to_frame())


def render_ops(window: Window) -> None:
    """Traffic totals, pipeline health, the five KPIs, the live alerts feed and the actions
    taken."""
    panels = {p.key: p for p in (*queries.ops_view(window), *queries.health_view(window))}
    results = fetch_all(list(panels.values()))
    down = pinot_down(results)
    if down is not None:
        st.error(f"{down.message} Retrying every {refresh_s():g} s.")
        return
    summary_metrics(panels, results, public=False)
    render_health(panels, results)
    df = section(panels["calls"], results, False)
    if df is not None:
        st.bar_chart(series(df, "bucket_start", "consumer", "calls"))
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
        df = df.set_index("day")
        st.bar_chart(df[["calls"]])
        st.table(df.set_axis(df.index.strftime("%Y-%m-%d")))
    for key, label in (("top_routes", "route"), ("top_consumers", "consumer")):
        df = section(panels[key], results, False)
        if df is not None:
            df = df.fillna({label: "unknown"}).set_index(label)
            st.bar_chart(df[["calls"]])
            st.table(df)
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
    live(render_consumer)(claims, range_choice(st))


def operator_page() -> None:
    """The ops and product views, chosen in the sidebar (or by ``?view=product``)."""
    views = ("Ops", "Product")
    wanted = str(st.query_params.get("view", "ops")).capitalize()
    view = st.sidebar.radio("View", views, index=views.index(wanted) if wanted in views else 0)
    choice = range_choice(st.sidebar)
    st.sidebar.caption(f"Pinot broker: {data.display_url(data.broker_url())}")
    st.title(f"API usage: {view.lower()}")

    def render(view: str, choice: RangeChoice) -> None:
        window = window_for(choice)
        if window is None:
            return
        (render_ops if view == "Ops" else render_product)(window)

    live(render)(view, choice)


def main() -> None:
    # However it is started (`streamlit run` too): a bug shows a generic message, its traceback
    # only in the server's log, and readers get no developer menu.
    st.set_option("client.showErrorDetails", "none")
    st.set_option("client.toolbarMode", "viewer")
    st.set_page_config(page_title="API usage", layout="wide")
    token = st.query_params.get("token")
    if token:
        consumer_page(str(token))
    elif data.flag(OPERATOR_ENV):
        operator_page()
    else:
        st.title("API usage")
        st.info("Open this dashboard with your portal link (it ends in `?token=…`).")


main()
