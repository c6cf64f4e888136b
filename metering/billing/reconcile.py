"""Invoice lines against the enriched events: every difference, none hidden.

The enriched topic holds one record per call, independent of the usage topic the invoice lines
were priced from. From it, per subject: the calls of each (event-time window, path), the same
windows the job counts (``window_start = event_time - event_time mod window``), folded by the
same pricing rule into the lines the period should have. Compared with the invoice lines, field
by field: a line missing or extra, and a line whose calls, quantity (units: a wrong route
weight shows here), exact amount or amount differ.

Events of anonymous clients, and of other periods, are skipped (and counted).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from metering.billing.invoice import InvoiceLine, close_period
from metering.billing.periods import bounds
from metering.billing.plans import Catalog, subject_of
from metering.billing.pricing import WindowIncrement, price_all

DifferenceKind = Literal[
    "missing_line", "extra_line", "calls", "quantity", "amount_exact", "amount", "currency"
]
COMPARED: tuple[DifferenceKind, ...] = ("calls", "quantity", "amount_exact", "amount", "currency")
"""The fields of a line compared, in the order differences are reported."""


@dataclass(frozen=True)
class Difference:
    """One way an invoice line disagrees with the enriched events."""

    kind: DifferenceKind
    subject: str
    period: str
    plan_id: str
    invoiced: str | None
    """The line's value (None: no line)."""
    recomputed: str | None
    """The value from the enriched events (None: no usage)."""

    def __str__(self) -> str:
        return (
            f"{self.subject} {self.period} {self.plan_id}: {self.kind}: invoiced "
            f"{self.invoiced if self.invoiced is not None else '(no line)'}, enriched events "
            f"{self.recomputed if self.recomputed is not None else '(no usage)'}"
        )


@dataclass(frozen=True)
class Recount:
    """What the enriched events of a period add up to."""

    increments: list[WindowIncrement]
    anonymous: int
    """Events without a consumer or key fingerprint: not billable."""
    other_periods: int


def increments_from_enriched(
    events: Iterable[Mapping[str, Any]], period: str, window_ms: int
) -> Recount:
    """Per subject and event-time window, the calls by path, as increments."""
    start, end = bounds(period)
    calls: dict[tuple[str, int], dict[str, int]] = {}
    anonymous = other = 0
    for ev in events:
        event_time = int(ev["event_time"])
        if not start <= event_time < end:
            other += 1
            continue
        subject = subject_of(ev.get("consumer"), ev.get("key_fingerprint"))
        if subject is None:
            anonymous += 1
            continue
        paths = calls.setdefault((subject, event_time - event_time % window_ms), {})
        path = str(ev["path"])
        paths[path] = paths.get(path, 0) + 1
    incs = [
        WindowIncrement.of(subject, ws, sum(paths.values()), paths)
        for (subject, ws), paths in sorted(calls.items())
    ]
    return Recount(incs, anonymous, other)


def recompute_lines(
    events: Iterable[Mapping[str, Any]], period: str, catalog: Catalog, window_ms: int
) -> tuple[list[InvoiceLine], Recount]:
    """The invoice lines the enriched events give for ``period``, and the recount."""
    recount = increments_from_enriched(events, period, window_ms)
    usages = price_all(period, recount.increments, catalog)
    return close_period(usages.values(), catalog), recount


def compare(
    invoiced: Sequence[InvoiceLine], recomputed: Sequence[InvoiceLine], period: str
) -> list[Difference]:
    """Every difference between the period's invoice lines and the recomputed ones, sorted by
    subject and plan. Lines of other periods in ``invoiced`` are ignored."""
    mine = {(ln.subject, ln.plan_id): ln for ln in invoiced if ln.period == period}
    theirs = {(ln.subject, ln.plan_id): ln for ln in recomputed if ln.period == period}
    out: list[Difference] = []
    for key in sorted(mine.keys() | theirs.keys()):
        a, b = mine.get(key), theirs.get(key)
        subject, plan_id = key
        if a is None and b is not None:
            out.append(Difference("missing_line", subject, period, plan_id, None, str(b.amount)))
        elif b is None and a is not None:
            out.append(Difference("extra_line", subject, period, plan_id, str(a.amount), None))
        elif a is not None and b is not None:
            for name in COMPARED:
                va, vb = getattr(a, name), getattr(b, name)
                if va != vb:
                    out.append(Difference(name, subject, period, plan_id, str(va), str(vb)))
    return out


def reconcile(
    invoiced: Sequence[InvoiceLine],
    events: Iterable[Mapping[str, Any]],
    period: str,
    catalog: Catalog,
    window_ms: int,
) -> tuple[list[Difference], Recount]:
    """The differences between the invoice lines and the enriched events of ``period``."""
    lines, recount = recompute_lines(events, period, catalog, window_ms)
    return compare(invoiced, lines, period), recount
