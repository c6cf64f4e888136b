"""Reconciliation: per source partition, what came in and where it went. Pure.

Per source partition, summed over its reports:
    entries_in == enriched_out + dead_lettered + deduplicated
where an entry is one gateway log entry (an array of 50 is 50 entries) or one unusable record,
and enriched_out is what the enriched topic holds for that partition. A duplicate is counted in
the interval it is dropped in, which may follow its original's, so one interval alone need not
balance.
Late events are enriched like any other (they are part of enriched_out); ``late`` counts how many
of them missed their window and were added to it by a correction instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Positions in a ledger delta row: (partition, offset, records, entries, enriched, dead, dedup,
# late). Operators emit small deltas; the reconciliation operator sums them per partition.
LEDGER_FIELDS = (
    "partition",
    "offset",
    "records",
    "entries",
    "enriched",
    "dead_lettered",
    "deduplicated",
    "late",
)


@dataclass(slots=True)
class Ledger:
    records_in: int = 0
    entries_in: int = 0
    enriched: int = 0
    dead_lettered: int = 0
    deduplicated: int = 0
    late: int = 0
    offset_first: int | None = None
    offset_last: int | None = None

    def add(self, delta: Any) -> None:
        offset = int(delta[1])
        if offset >= 0:
            self.offset_first = (
                offset if self.offset_first is None else min(self.offset_first, offset)
            )
            self.offset_last = offset if self.offset_last is None else max(self.offset_last, offset)
        self.records_in += int(delta[2])
        self.entries_in += int(delta[3])
        self.enriched += int(delta[4])
        self.dead_lettered += int(delta[5])
        self.deduplicated += int(delta[6])
        self.late += int(delta[7])

    def empty(self) -> bool:
        return not (self.records_in or self.entries_in or self.deduplicated or self.late)

    def record(
        self, topic: str, partition: int, interval_start: int, interval_end: int
    ) -> dict[str, Any]:
        return {
            "source_topic": topic,
            "source_partition": partition,
            "interval_start": interval_start,
            "interval_end": interval_end,
            "offset_first": self.offset_first,
            "offset_last": self.offset_last,
            "records_in": self.records_in,
            "entries_in": self.entries_in,
            "enriched": self.enriched,
            "enriched_out": self.enriched - self.deduplicated,
            "dead_lettered": self.dead_lettered,
            "deduplicated": self.deduplicated,
            "late": self.late,
        }
