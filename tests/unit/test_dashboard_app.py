"""The Streamlit app, run headless by AppTest: which view a visitor gets, and how it degrades.

No Pinot: the broker URL points at a closed port, or ``data.run_query`` is replaced by a fake
that records every query the app sends.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from dashboard import data, tokens
from metering.kpi import Query

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")
SECRET = "q8Rz2LmX0vT5bN7cY3wK9pD4fH6jS1aG"
CLOSED_BROKER = "http://127.0.0.1:1"
RUN_TIMEOUT_S = 60


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(data.BROKER_ENV, CLOSED_BROKER)
    monkeypatch.setenv(tokens.SECRET_ENV, SECRET)
    for name in ("DASHBOARD_OPERATOR", tokens.DEMO_ENV):
        monkeypatch.delenv(name, raising=False)
    st.cache_data.clear()
    yield
    st.cache_data.clear()


def _token(consumer: str = "acme", ttl_s: int = 3600) -> str:
    return tokens.create_token(consumer, SECRET.encode(), int(time.time()), ttl_s=ttl_s)


def _run(**query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=RUN_TIMEOUT_S)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _text(at: AppTest) -> str:
    parts = [e.value for kind in ("error", "warning", "info", "caption") for e in getattr(at, kind)]
    parts += [e.value for e in at.title] + [e.value for e in at.subheader]
    return "\n".join(str(p) for p in parts)


def test_without_a_token_or_operator_setting_it_asks_for_a_portal_link() -> None:
    at = _run()
    assert "portal link" in at.info[0].value
    assert not at.error and not at.sidebar.radio


def test_ops_view_with_pinot_unreachable_shows_a_clear_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DASHBOARD_OPERATOR", "1")
    at = _run()
    assert at.title[0].value == "API usage: ops"
    assert len(at.error) == 1
    assert "Pinot broker at http://127.0.0.1:1 is unreachable" in at.error[0].value


def test_product_view_with_pinot_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHBOARD_OPERATOR", "1")
    at = _run(view="product")
    assert at.title[0].value == "API usage: product"
    assert "unreachable" in at.error[0].value


def test_consumer_view_with_pinot_unreachable_names_no_infrastructure() -> None:
    at = _run(token=_token())
    assert at.title[0].value == "API usage: acme"
    assert "temporarily unavailable" in at.error[0].value
    assert "127.0.0.1" not in _text(at)


@pytest.mark.parametrize("token", ["garbage", "v1.e30.AAAA"])
def test_a_bad_token_shows_nothing_but_a_message(token: str) -> None:
    at = _run(token=token)
    assert "invalid or has expired" in at.error[0].value
    assert not at.title and not at.selectbox


def test_a_token_signed_with_another_secret_is_refused() -> None:
    other = tokens.create_token("acme", b"Zz8Yy7Xx6Ww5Vv4Uu3Tt2Ss1Rr0Qq9Pp", int(time.time()))
    at = _run(token=other)
    assert "invalid or has expired" in at.error[0].value


def test_a_token_wins_over_the_operator_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHBOARD_OPERATOR", "1")
    at = _run(token="garbage", view="ops")
    assert "invalid or has expired" in at.error[0].value
    assert not at.sidebar.radio


def test_without_a_secret_portal_links_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    token = _token()
    monkeypatch.delenv(tokens.SECRET_ENV)
    at = _run(token=token)
    assert "not set up" in at.error[0].value


class FakePinot:
    """Answers every query with a row per column (or "no table" for missing ones) and records
    the queries."""

    def __init__(self, missing: frozenset[str] = frozenset()) -> None:
        self.queries: list[tuple[str, Query]] = []
        self.missing = missing

    def __call__(self, url: str, query: Query, table: str, timeout_s: float = 5.0) -> data.Result:
        self.queries.append((table, query))
        if table in self.missing:
            return data.Result(problem="missing_table", message=f"Pinot has no table `{table}`.")
        select = query.sql.split(" FROM ")[0].removeprefix("SELECT ")
        columns = [part.rsplit(" AS ", 1)[-1].strip() for part in _split(select)]
        row: list[Any] = [self._value(c) for c in columns]
        return data.Result(tuple(columns), (tuple(row),))

    @staticmethod
    def _value(column: str) -> Any:
        billing = {
            "period": "2026-12",
            "currency": "USD",
            "units": 850,
            "amount": "1.2345",
            "included_units": 1000,
            "hard_limit": False,
            "repricing_needed": False,
            "balance": "8.7655",
            "segments": json.dumps(
                [
                    {
                        "plan_id": "small",
                        "tiers": [
                            {
                                "index": 0,
                                "up_to": None,
                                "units": 850,
                                "unit_price": "0.0014523",
                                "amount": "1.2345",
                            }
                        ],
                    }
                ]
            ),
        }
        if column in billing:
            return billing[column]
        if column in ("bucket_start", "day", "detected_at", "recorded_at"):
            return 1_780_000_000_000
        if column in ("lat", "lon"):
            return 10.5
        if column in ("route", "consumer", "country", "rule", "severity", "status_text"):
            return f"{column}-x"
        if column in ("summary", "action", "outcome", "target", "reason", "key_fingerprint"):
            return "x"
        if column in ("alert_id",):
            return "a1"
        if column == "dry_run":
            return False
        if column == "unbalanced":
            return 0
        if column == "newest_ingested_at":
            return 1_780_000_000_000
        return 3


def _split(select: str) -> list[str]:
    """The select list split on top-level commas."""
    parts, depth, current = [], 0, ""
    for ch in select:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [*parts, current]


def test_consumer_view_queries_only_the_tokens_consumer(monkeypatch: pytest.MonkeyPatch) -> None:
    """URL parameters naming another consumer change nothing: every query binds the token's."""
    fake = FakePinot(missing=frozenset({"actions"}))
    monkeypatch.setattr(data, "run_query", fake)
    at = _run(token=_token("acme"), consumer="globex", view="ops")
    assert fake.queries
    for _, query in fake.queries:
        assert query.params["consumer"] == "acme"
        assert "globex" not in query.sql
    text = _text(at)
    assert "Quota, bill and balance" in text
    assert "Responder actions on your keys: none yet." in text  # optional; no table named
    assert not at.error and not at.warning
    assert [m.label for m in at.metric] == [
        "Calls",
        "Billable units",
        "Errors",
        "Error rate",
        "Alert records",
        "Units in 2026-12",
        "Estimate so far",
        "Prepaid balance",
    ]
    by_label = {m.label: m.value for m in at.metric}
    # The exact amount rounded once, by the billing model's rule (half even: 1.2345 -> 1.23).
    assert by_label["Estimate so far"] == "1.23 USD"
    assert by_label["Prepaid balance"] == "8.77 USD"
    assert "thresholds reached: 50 %, 80 %" in at.get("progress")[0].proto.text
    tiers = at.table[0].value  # the bill comes first
    assert list(tiers["units"]) == [850] and list(tiers["amount"]) == ["1.2345"]


def test_a_period_to_be_repriced_says_the_estimate_may_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakePinot()
    plain = FakePinot._value
    monkeypatch.setattr(fake, "_value", lambda c: True if c == "repricing_needed" else plain(c))
    monkeypatch.setattr(data, "run_query", fake)
    at = _run(token=_token("acme"))
    (warning,) = at.warning
    assert "the estimate above may change" in warning.value


def test_a_consumer_without_billing_sees_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "run_query", FakePinot(missing=frozenset({"period_usage"})))
    at = _run(token=_token("acme"))
    assert "Quota, bill and balance: none yet" in _text(at)
    assert not at.error and not at.warning


@pytest.mark.parametrize("view", ["ops", "product"])
def test_operator_views_render_with_data(monkeypatch: pytest.MonkeyPatch, view: str) -> None:
    monkeypatch.setenv("DASHBOARD_OPERATOR", "1")
    fake = FakePinot()
    monkeypatch.setattr(data, "run_query", fake)
    at = _run(view=view)
    assert fake.queries and not at.error and not at.warning
    assert all("consumer" not in q.params for _, q in fake.queries)
    assert at.get("vega_lite_chart")
    if view == "ops":
        assert len(at.get("deck_gl_json_chart")) == 1  # the country map
        by_label = {m.label: m.value for m in at.metric}
        assert (by_label["Dead letters"], by_label["Unbalanced intervals"]) == ("3", "0")
        assert by_label["Event to queryable p50"] == "0.0 s"  # 3 ms
        assert "every interval balances" in at.success[0].value


def test_an_unbalanced_ledger_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHBOARD_OPERATOR", "1")
    fake = FakePinot()
    monkeypatch.setattr(fake, "_value", lambda c: 2 if c == "unbalanced" else FakePinot._value(c))
    monkeypatch.setattr(data, "run_query", fake)
    at = _run(view="ops")
    (error,) = at.error
    assert error.value.startswith("Reconciliation: 2 interval(s) do not balance.")


def test_pipeline_health_without_its_tables_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHBOARD_OPERATOR", "1")
    missing = frozenset({"dead_letters", "reconciliation"})
    monkeypatch.setattr(data, "run_query", FakePinot(missing=missing))
    text = _text(_run(view="ops"))
    assert "Dead letters per reason: none yet" in text and "does not exist yet" in text


def test_a_missing_events_table_is_a_message_not_a_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHBOARD_OPERATOR", "1")
    monkeypatch.setattr(data, "run_query", FakePinot(missing=frozenset({"api_events"})))
    at = _run()
    assert any("no table `api_events`" in w.value for w in at.warning)
