"""The evaluation's end-to-end mode: the same labelled traffic as gateway records, through the
real job ``--bounded`` on a real broker, its alerts topic scored.

Every call becomes an APISIX log entry (testkit.traffic's renderer): a consumer key's calls come
from addresses the GeoLite2 database places in the window's countries, each rejected-call key's
from an address of its own. Entries go out in event-time order, 20 to a record, as a batching
gateway sends them. The alerts' rate keys are mapped back to the evaluation's: consumer names
are the same, and a rejected-call key is the keyed hash of its client's network, which the run
knows (it chooses the hash key).

Differences from the fast mode: consumer keys' own rejected calls (a few 403s) are sent as
ordinary calls, and an alert's detection time is its window's end (the job stamps processing
time, not event time).
"""

from __future__ import annotations

import json
import os
import random
import secrets
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from evaluation.fast import Outcome, legit_key_hours
from evaluation.traffic import (
    COUNTRIES,
    NETWORKS_PER_COUNTRY,
    POPULATIONS,
    WINDOW_MS,
    KeyTraffic,
    Plan,
    Spec,
    keys,
    labels,
    networks_by_country,
    plan,
)
from metering.records import client_rate_key, rate_network
from metering.redact import Pseudonymizer, ip_prefix
from testkit.traffic import (
    Consumer,
    _encode,
    _Renderer,
    _Request,
    default_geoip_db,
    ips_for_countries,
    max_event_age_covering,
    new_api_key,
    random_public_ips,
)

REPO = Path(__file__).resolve().parents[1]
ENTRIES_PER_RECORD = 20
JOB_TIMEOUT_S = 1800


@dataclass(frozen=True, slots=True)
class Rendered:
    records: int
    events: int
    client_ips: dict[str, str]
    """Rejected-call rate key of the evaluation -> the address its calls come from."""


def _calls(
    kt: KeyTraffic,
    spec: Spec,
    country_ips: dict[str, list[str]],
    client_ip: str | None,
    renderer: _Renderer,
) -> Iterator[tuple[int, int, Any]]:
    """(window index, event ms, APISIX entry) of every call of one key, window by window."""
    rng = random.Random(f"eval-render-{spec.seed}-{kt.rate_key}")
    consumer = None
    if kt.consumer is not None:
        consumer = Consumer(kt.consumer, new_api_key(rng), "apikey-header", [], "apisix", 0)
    for i in kt.active().tolist():
        start = spec.start_ms + i * WINDOW_MS
        networks = networks_by_country(kt, i) if consumer is not None else {}
        for country, n in kt.countries[i].items():
            if consumer is None:
                assert client_ip is not None
                ips = [client_ip]
            else:
                pool = country_ips[country]
                # The default pool holds NETWORKS_PER_COUNTRY, as the fast mode counts them.
                ips = rng.sample(pool, min(len(pool), networks[country]))
            for j in range(n):
                ms = start + rng.randrange(WINDOW_MS)
                key = consumer.api_key if consumer else new_api_key(rng)
                req = _Request("apisix", ips[j % len(ips)], ms, consumer, key, "apikey-header")
                yield i, ms, renderer.apisix(req)[1]


SPARE_ADDRESSES = 8
"""Addresses drawn per country beyond those kept, for those that share a /24 with another."""


def _distinct_prefixes(country_ips: dict[str, list[str]], keep: int) -> dict[str, list[str]]:
    """The first ``keep`` addresses of each country in networks of their own: the job counts a
    window's networks, and the fast mode counts each address drawn as one."""
    out: dict[str, list[str]] = {}
    for country, ips in country_ips.items():
        by_network: dict[str | None, str] = {}
        for ip in ips:
            by_network.setdefault(ip_prefix(ip), ip)
        if len(by_network) < keep:
            raise LookupError(f"{country}: {len(by_network)} distinct networks, {keep} needed")
        out[country] = list(by_network.values())[:keep]
    return out


def _distinct_networks(count: int, seed: int) -> list[str]:
    """``count`` public IPv4 addresses in as many /24 networks: the job counts rejected calls
    per network, so two clients sharing one would be one rate key."""
    out: dict[str, str] = {}
    draw = 0
    while len(out) < count:
        for ip in random_public_ips(count - len(out), seed * 1_000 + draw, ipv6_share=0.0):
            out.setdefault(str(rate_network(ip)), ip)
        draw += 1
    return list(out.values())[:count]


def render(
    p: Plan,
    traffic: Sequence[KeyTraffic],
    geo_db: str,
    produce: Any,
    per_country: int = NETWORKS_PER_COUNTRY,
) -> Rendered:
    """Every call of ``traffic`` as APISIX batches in event-time order, handed to
    ``produce(bytes)`` one window at a time (a window's records are sorted; windows follow
    one another)."""
    spec = p.spec
    country_ips = _distinct_prefixes(
        ips_for_countries(
            geo_db, sorted(COUNTRIES), per_country + SPARE_ADDRESSES, spec.seed, ipv6_per_country=0
        ),
        per_country,
    )
    clients = [kt.rate_key for kt in traffic if kt.consumer is None]
    client_ips = dict(zip(clients, _distinct_networks(len(clients), spec.seed), strict=True))
    renderer = _Renderer(random.Random(f"eval-renderer-{spec.seed}"))
    by_window: dict[int, list[tuple[int, Any]]] = defaultdict(list)
    per_key = [
        _calls(kt, spec, country_ips, client_ips.get(kt.rate_key), renderer) for kt in traffic
    ]
    pending: list[tuple[int, int, Any] | None] = [next(it, None) for it in per_key]
    records = events = 0
    for w in range(spec.windows):
        for k, it in enumerate(per_key):
            item = pending[k]
            while item is not None and item[0] == w:
                by_window[w].append((item[1], item[2]))
                item = next(it, None)
            pending[k] = item
        calls = sorted(by_window.pop(w, []), key=lambda c: c[0])
        for s in range(0, len(calls), ENTRIES_PER_RECORD):
            produce(_encode([entry for _, entry in calls[s : s + ENTRIES_PER_RECORD]]))
            records += 1
        events += len(calls)
    return Rendered(records, events, client_ips)


def run(spec: Spec, bootstrap: str, say: Any = print) -> Outcome:
    """Renders the evaluation, runs the job ``--bounded`` over it and reads its alerts."""
    from tools.readback import drain
    from tools.topics import (
        DEFAULT_PARTITIONS,
        ROLES,
        delete_topics,
        ensure_topics,
        job_topic_flags,
        named_pipeline_topics,
    )

    p = plan(spec)
    traffic = list(keys(p))
    suffix = secrets.token_hex(4)
    topics = {role: f"eval-{role}-{suffix}" for role in ROLES}
    ensure_topics(bootstrap, named_pipeline_topics(topics))
    try:
        producer = Producer(
            {"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1_000_000}
        )
        sent = [0]
        failed: list[str] = []

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                failed.append(str(err))

        def produce(value: bytes) -> None:
            partition = sent[0] % DEFAULT_PARTITIONS
            while True:
                try:
                    producer.produce(
                        topics["raw"], value=value, partition=partition, on_delivery=on_delivery
                    )
                    break
                except BufferError:
                    producer.poll(0.1)
            sent[0] += 1
            producer.poll(0)

        geo_db = default_geoip_db()
        t0 = time.monotonic()
        rendered = render(p, traffic, geo_db, produce)
        if producer.flush(120) != 0 or failed:
            raise RuntimeError(f"raw records not delivered: {len(failed)} failed {failed[:3]}")
        say(
            f"eval-detect e2e: produced {rendered.events:,} events in {rendered.records:,} "
            f"records in {time.monotonic() - t0:.0f} s"
        )
        hash_key = secrets.token_hex(32)
        env = dict(os.environ, PIPELINE_HASH_KEY=hash_key)
        cmd = [
            sys.executable, "-m", "jobs.gateway_pipeline",
            "--bootstrap-servers", bootstrap,
            *job_topic_flags(topics),
            "--geoip-db", geo_db,
            "--bounded",
            "--startup-mode", "earliest-offset",
            "--group-id", f"eval-{suffix}",
            "--transactional-id-prefix", f"eval-{suffix}",
            "--max-event-age-seconds", str(max_event_age_covering(spec.start_ms)),
        ]  # fmt: skip
        t0 = time.monotonic()
        proc = subprocess.run(
            cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S
        )
        if proc.returncode != 0:
            raise RuntimeError(f"the job failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
        say(f"eval-detect e2e: the job ran --bounded in {time.monotonic() - t0:.0f} s")
        ps = Pseudonymizer(hash_key.encode())
        back = {client_rate_key(ps, ip): key for key, ip in rendered.client_ips.items()}
        if len(back) != len(rendered.client_ips):
            raise RuntimeError("two rejected-call clients share a network: their alerts would mix")
        # Alerts are at-least-once: a repeat has the same alert_id and is one alert.
        alerts: dict[str, dict[str, Any]] = {}
        for record in drain(bootstrap, topics["alerts"]):
            alert = json.loads(record.value or b"{}")
            alert["rate_key"] = back.get(alert["rate_key"], alert["rate_key"])
            alerts.setdefault(alert["alert_id"], alert)
    finally:
        delete_topics(bootstrap, list(topics.values()))
    spans: dict[int, list[tuple[int, int]]] = defaultdict(list)
    key_hours = 0
    for kt in traffic:
        if kt.attack is not None and kt.attack_windows is not None:
            spans[kt.attack].append(kt.attack_windows)
        if kt.population in POPULATIONS:
            key_hours += legit_key_hours(kt, spec)
    populations = {kt.rate_key: kt.population for kt in traffic}
    return Outcome(
        labels(p, spans),
        list(alerts.values()),
        populations,
        float(key_hours),
        rendered.events,
        dict(spans),
    )
