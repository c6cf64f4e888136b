"""The dashboard's Pinot access: run one ``Query`` on the broker through pinotdb, with a
timeout, and turn every failure into a ``Result`` that says what went wrong in words a page can
show (Pinot down, table missing, query refused) instead of an exception.

The messages shown never include the driver's own text: pinotdb puts the whole query, bound
values included, into its errors. The log gets the error's class, not its text, either.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from metering.kpi import Query

BROKER_ENV = "PIPELINE_PINOT_BROKER_URL"
DEFAULT_BROKER = "http://127.0.0.1:8099"
TIMEOUT_ENV = "DASHBOARD_QUERY_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 5.0
# Pinot's answers for a table it does not know: 0.11 and later brokers say one of these.
_MISSING_TABLE_MARKERS = ("TableDoesNotExistError", "BrokerResourceMissingError")

Problem = Literal["unreachable", "missing_table", "failed"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    """Rows of one query, or the reason there are none (``problem`` set, ``rows`` empty)."""

    columns: tuple[str, ...] = ()
    rows: tuple[tuple[Any, ...], ...] = ()
    problem: Problem | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.problem is None

    def records(self) -> list[dict[str, Any]]:
        """The rows as dicts by column name."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def broker_url(environ: Mapping[str, str] | None = None) -> str:
    """The broker URL from ``PIPELINE_PINOT_BROKER_URL`` (the KPI CLI's setting)."""
    env = os.environ if environ is None else environ
    return env.get(BROKER_ENV, "").strip() or DEFAULT_BROKER


def flag(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether the variable ``name`` is on (1, true or yes)."""
    env = os.environ if environ is None else environ
    return env.get(name, "").strip().lower() in ("1", "true", "yes")


def env_seconds(
    name: str, default: float, low: float, high: float, environ: Mapping[str, str] | None = None
) -> float:
    """Seconds from the variable ``name``: ``default`` when unset or not a number, else held
    within ``[low, high]``."""
    env = os.environ if environ is None else environ
    try:
        value = float(env.get(name, "") or default)
    except ValueError:
        return default
    return min(max(value, low), high)


def query_timeout_s(environ: Mapping[str, str] | None = None) -> float:
    """Seconds one query may take, from ``DASHBOARD_QUERY_TIMEOUT_S`` (0.1 to 120, default 5)."""
    return env_seconds(TIMEOUT_ENV, DEFAULT_TIMEOUT_S, 0.1, 120.0, environ)


def display_url(url: str) -> str:
    """The URL without user info, query or fragment: safe to show on a page or in a log."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme or 'http'}://{host}{port}{parts.path}"


def classify(exc: BaseException, table: str, url: str) -> Result:
    """What a failed query means for a reader of the page."""
    import httpx
    from pinotdb import exceptions as pinot_errors

    text = str(exc)
    if isinstance(exc, httpx.TimeoutException):
        return Result(
            problem="unreachable",
            message=f"Pinot broker at {display_url(url)} did not answer in time.",
        )
    if isinstance(exc, httpx.TransportError | OSError):
        return Result(
            problem="unreachable",
            message=f"Pinot broker at {display_url(url)} is unreachable.",
        )
    if isinstance(exc, pinot_errors.Error) and any(m in text for m in _MISSING_TABLE_MARKERS):
        return Result(problem="missing_table", message=f"Pinot has no table `{table}` yet.")
    return Result(
        problem="failed", message=f"The query on `{table}` failed ({type(exc).__name__})."
    )


def _connect(url: str, timeout_s: float) -> Any:
    from pinotdb import connect

    parts = urlsplit(url)
    return connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or (443 if parts.scheme == "https" else 8099),
        path="/query/sql",
        scheme=parts.scheme or "http",
        timeout=timeout_s,
    )


def run_query(url: str, query: Query, table: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Result:
    """Run ``query`` (SQL + bound parameters) on the broker at ``url``; never raises."""
    conn: Any = None
    try:
        conn = _connect(url, timeout_s)
        cursor = conn.cursor()
        try:
            cursor.execute(query.sql, query.params or None, query.options)
            columns = tuple(str(d[0]) for d in cursor.description or ())
            rows: Sequence[Sequence[Any]] = cursor.fetchall()
        finally:
            cursor.close()
        return Result(columns, tuple(tuple(r) for r in rows))
    except Exception as exc:  # driver, HTTP and socket errors alike become a message
        result = classify(exc, table, url)
        log.warning(
            "dashboard query on %s at %s: %s (%s)",
            table,
            display_url(url),
            result.problem,
            type(exc).__name__,
        )
        return result
    finally:
        if conn is not None:
            # Closing a connection that never opened: nothing to report.
            with contextlib.suppress(Exception):
                conn.close()
