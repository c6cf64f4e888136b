"""Reading the reconciliation topic. Pure.

The job writes, per source partition and interval of Kafka record time, a running count of what
came in and where it went, as an upsert stream keyed by ``<partition>@<interval_start>``: each
record supersedes the earlier ones of its key, and the latest holds the counts. Per partition,
summed over the latest records of its intervals:

    entries_in == enriched_out + dead_lettered + deduplicated

where an entry is one gateway log entry (an array of 50 is 50 entries) or one unusable record,
and enriched_out is what the enriched topic holds for that partition. ``late`` counts the
enriched events that missed their window and were added to it by a usage correction instead.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

COUNTS = (
    "records_in",
    "entries_in",
    "enriched",
    "enriched_out",
    "dead_lettered",
    "deduplicated",
    "late",
)


def latest(reports: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The latest report of each (partition, interval), from reports in topic order."""
    last: dict[tuple[int, int], dict[str, Any]] = {}
    for r in reports:
        last[(int(r["source_partition"]), int(r["interval_start"]))] = r
    return list(last.values())


def totals_by_partition(reports: Iterable[dict[str, Any]]) -> dict[int, Counter[str]]:
    """Per source partition, the counts summed over the latest report of each interval."""
    sums: defaultdict[int, Counter[str]] = defaultdict(Counter)
    for r in latest(reports):
        sums[int(r["source_partition"])].update({k: int(r.get(k) or 0) for k in COUNTS})
    return dict(sums)


def totals(reports: Iterable[dict[str, Any]]) -> Counter[str]:
    """The counts summed over all partitions."""
    out: Counter[str] = Counter()
    for counts in totals_by_partition(reports).values():
        out.update(counts)
    return out
