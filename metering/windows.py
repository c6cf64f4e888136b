"""One window's counts as a list of plain values, and the counting rules over it.

The job's windows are Flink SQL (jobs/pipeline_sql.py); these are the same rules in Python, for
the bench's python_loop, which counts what the job counts, and for tests that build usage
records. Plain lists, not dataclasses: the loop updates one per event.
"""

from __future__ import annotations

from typing import Any

from metering.detect import WindowAgg
from schemas.events import MAX_NETWORKS

# Positions in one window's list.
_COUNT, _UNITS, _AUTH_FAILURES, _COUNTRIES, _CONSUMER, _FINGERPRINT, _PATHS, _NETWORKS = range(8)

Windows = dict[int, list[Any]]
"""Window start -> [count, units, auth failures, countries (list), consumer, key fingerprint,
calls per path (dict), client networks (set, at most MAX_NETWORKS)]."""


def count_event(
    w: list[Any] | None,
    consumer: str | None,
    fingerprint: str | None,
    country: str | None,
    auth_failed: bool,
    units: float,
    path: str | None = None,
    network: str | None = None,
) -> list[Any]:
    """One window's accumulator (a list in the layout above) with one more event counted; a new
    one if ``w`` is None. Paths count only for a key billing prices (a consumer or an API key),
    as in the job's windows (jvm/, UsageWindows)."""
    counted = path is not None and (consumer is not None or fingerprint is not None)
    if w is None:
        return [
            1,
            units,
            1 if auth_failed else 0,
            [country] if country else [],
            consumer,
            fingerprint,
            {path: 1} if counted else {},
            {network} if network else set(),
        ]
    if counted:
        w[_PATHS][path] = w[_PATHS].get(path, 0) + 1
    w[_COUNT] += 1
    w[_UNITS] += units
    if auth_failed:
        w[_AUTH_FAILURES] += 1
    if country and country not in w[_COUNTRIES]:
        w[_COUNTRIES].append(country)
    if network and len(w[_NETWORKS]) < MAX_NETWORKS:
        w[_NETWORKS].add(network)
    # Keep the identity the gateway gave; a fingerprint stays useful when a name is known.
    w[_CONSUMER] = w[_CONSUMER] or consumer
    w[_FINGERPRINT] = w[_FINGERPRINT] or fingerprint
    return w


def add_event(
    windows: Windows,
    start: int,
    consumer: str | None,
    fingerprint: str | None,
    country: str | None,
    auth_failed: bool,
    units: float,
    path: str | None = None,
    network: str | None = None,
) -> None:
    """Count one event into the window starting at ``start``."""
    windows[start] = count_event(
        windows.get(start), consumer, fingerprint, country, auth_failed, units, path, network
    )


def as_agg(w: list[Any]) -> WindowAgg:
    """One window's accumulator as the usage record's fields."""
    return WindowAgg(
        count=w[_COUNT],
        units=w[_UNITS],
        auth_failures=w[_AUTH_FAILURES],
        countries=set(w[_COUNTRIES]),
        networks=set(w[_NETWORKS]),
        consumer=w[_CONSUMER],
        key_fingerprint=w[_FINGERPRINT],
        paths=dict(w[_PATHS]) or None,
    )
