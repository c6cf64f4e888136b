"""The end-to-end evaluation's rendering (evaluation.endtoend.render): every generated call
becomes one APISIX entry that the job's own parse reads back with the right rate key, country
and window. No broker: the records are parsed here, as the job's parse would."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

from evaluation.endtoend import ENTRIES_PER_RECORD, render
from evaluation.traffic import WINDOW_MS, Spec, keys, networks_by_country, plan
from metering.geo import GeoLookup
from metering.records import Limits, RecordProcessor, SourceRef, client_rate_key
from metering.redact import Pseudonymizer
from testkit.traffic import default_geoip_db, max_event_age_covering

SPEC = Spec(
    keys=40,
    warmup_hours=0,
    hours=4,
    attacks_per_kind=1,
    misconfigured=1,
    stray=5,
    max_rate=2.0,
)


def test_every_call_is_an_entry_the_job_reads_with_its_key_country_and_window() -> None:
    p = plan(SPEC)
    traffic = list(keys(p))
    records: list[bytes] = []
    geo_db = default_geoip_db()
    per_country = 3
    rendered = render(p, traffic, geo_db, records.append, per_country=per_country)
    assert rendered.records == len(records)
    assert rendered.events == sum(int(kt.counts.sum()) for kt in traffic)

    hash_key = b"k" * 16 + b"0123456789abcdef"
    ps = Pseudonymizer(hash_key)
    back = {client_rate_key(ps, ip): key for key, ip in rendered.client_ips.items()}
    geo = GeoLookup(geo_db, 10_000)
    limits = Limits(max_event_age_s=max_event_age_covering(SPEC.start_ms))
    processor = RecordProcessor(ps, geo.lookup, limits)
    got: Counter[tuple[str, int, str | None]] = Counter()
    networks: defaultdict[tuple[str, int], set[str]] = defaultdict(set)
    last_window = -1
    for offset, value in enumerate(records):
        assert len(json.loads(value)) <= ENTRIES_PER_RECORD
        result = processor.process(value, SourceRef("raw", 0, offset))
        assert result.dead_letters == []
        windows = set()
        for event in result.events:
            key = back.get(event["rate_key"], event["rate_key"])
            window = (event["event_time"] - SPEC.start_ms) // WINDOW_MS
            windows.add(window)
            got[(key, window, event["country"])] += 1
            if event["consumer"] is not None:
                networks[(key, window)].add(event["client_prefix"])
        # Records go out window by window.
        assert min(windows) >= last_window
        last_window = max(windows)
    expected: Counter[tuple[str, int, str | None]] = Counter()
    for kt in traffic:
        for i in kt.active().tolist():
            for country, n in kt.countries[i].items():
                # A rejected call's country is its client address's, not the generator's.
                expected[(kt.rate_key, i, country if kt.consumer else None)] += n
    observed: Counter[tuple[str, int, str | None]] = Counter()
    for (k, w, c), n in got.items():
        observed[(k, w, c if k.startswith("c0") else None)] += n
    assert observed == expected
    # A consumer key's calls come from as many networks as the fast mode counts (with a pool of
    # per_country addresses, each in a /24 of its own).
    want = {
        (kt.rate_key, i): sum(min(per_country, k) for k in networks_by_country(kt, i).values())
        for kt in traffic
        if kt.consumer is not None
        for i in kt.active().tolist()
    }
    assert {k: len(v) for k, v in networks.items()} == want
    assert max(want.values()) > 1
