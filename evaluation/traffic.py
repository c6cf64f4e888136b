"""Labelled traffic for the detector's evaluation: legit key populations and injected attacks,
per rate key and event-time window, with ground truth.

The unit is what the job's windows count: per rate key and window, the calls, the rejected
calls (401/403), the calls per country and the distinct client networks. The fast mode feeds
these as window records to the detector's pure code (evaluation.fast). Everything is drawn
from ``Spec.seed``; one key's traffic depends only on the seed and the key's index, so keys
are generated, judged and dropped one at a time.

Legit populations (``POPULATIONS``): steady keys at rate scales from one call a minute to
hundreds a second, diurnal keys, nightly batch jobs, growing customers, multi-region keys,
mobile SDKs (many networks, some roaming), travellers (the owner moves country), keys that go
silent for hours and come back, misconfigured clients that fail all day at a low rate, and
stray rejected calls. Attacks (``ATTACKS``): a big spike from a new country, low-and-slow use
from a new country at +50-100 %, a leaked key used from hundreds of networks worldwide,
night-time use at the key's quiet hours, single-client key guessing at several speeds, and
distributed guessing from hundreds of networks with a few tries each.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from metering.detect import DetectorConfig

Counts = npt.NDArray[np.int64]
Rates = npt.NDArray[np.float64]

WINDOW_MS: Final = DetectorConfig().window_ms
HOUR_MS: Final = 3_600_000
MINUTE_MS: Final = 60_000

# ISO code -> UTC offset in hours (standard time): the countries keys live in and attacks come
# from. Every one has addresses in the GeoLite2 database the job uses (testkit.traffic).
COUNTRIES: Final[dict[str, float]] = {
    "US": -5, "CA": -5, "MX": -6, "BR": -3, "AR": -3, "CL": -4, "CO": -5, "PE": -5,
    "GB": 0, "IE": 0, "PT": 0, "FR": 1, "DE": 1, "NL": 1, "ES": 1, "IT": 1, "SE": 1,
    "PL": 1, "CH": 1, "NO": 1, "NG": 1, "FI": 2, "RO": 2, "UA": 2, "ZA": 2, "EG": 2,
    "TR": 3, "RU": 3, "SA": 3, "KE": 3, "AE": 4, "IN": 5.5, "BD": 6, "TH": 7, "VN": 7,
    "ID": 7, "SG": 8, "CN": 8, "HK": 8, "PH": 8, "TW": 8, "JP": 9, "KR": 9, "AU": 10,
    "NZ": 12,
}  # fmt: skip
# Where most API customers are: a key's home country is drawn with these weights.
HOME_WEIGHTS: Final[dict[str, float]] = {
    "US": 30, "GB": 8, "DE": 8, "FR": 5, "IN": 8, "JP": 5, "BR": 5, "CA": 4, "AU": 3,
    "NL": 3, "SG": 3, "ES": 2, "IT": 2, "SE": 2, "KR": 2, "PL": 2, "MX": 2, "ID": 2,
}  # fmt: skip

POPULATIONS: Final[dict[str, float]] = {
    "steady": 0.30,
    "diurnal": 0.20,
    "nightly_batch": 0.08,
    "growing": 0.07,
    "multi_region": 0.10,
    "mobile_sdk": 0.08,
    "traveller": 0.07,
    "returning": 0.10,
}
"""Legit consumer-key populations and their shares of ``Spec.keys``."""
MISCONFIGURED: Final = "misconfigured_client"
STRAY: Final = "stray_401"

ATTACKS: Final = (
    "spike_new_country",
    "low_and_slow",
    "leaked_key",
    "night_use",
    "guessing_single",
    "guessing_distributed",
)
_VICTIMS: Final[dict[str, tuple[str, ...]]] = {
    "spike_new_country": ("steady", "diurnal", "growing", "multi_region"),
    "low_and_slow": ("steady", "diurnal", "growing", "multi_region"),
    "leaked_key": ("steady", "diurnal", "multi_region"),
    "night_use": ("diurnal",),
}
GUESSING_SPEEDS: Final = (2, 10, 50, 200)
"""Rejected calls per window of single-client guessing, cycled over its attacks (0.2-20/s)."""
SHARED_SIGNAL: Final = ("guessing_distributed",)
"""Attack kinds an alert on a shared (route or global) rate key may detect."""
MIN_SCORED_HOURS: Final = 4.0
DEFAULT_MAX_RATE: Final = 200.0


@dataclass(frozen=True, slots=True)
class Spec:
    keys: int = 1000
    warmup_hours: float = 24.0
    hours: float = 24.0
    attacks_per_kind: int = 20
    misconfigured: int = 20
    stray: int = 2000
    seed: int = 7
    start_ms: int = 1_767_225_600_000  # 2026-01-01T00:00Z
    max_rate: float = DEFAULT_MAX_RATE
    """The highest peak rate a key is drawn with, in calls per window (mobile SDKs: 1.5x)."""

    def __post_init__(self) -> None:
        if self.hours < MIN_SCORED_HOURS or self.warmup_hours < 0 or self.keys < 1:
            raise ValueError(
                f"need at least {MIN_SCORED_HOURS} scored hours (attacks last up to 2 h, and keys "
                "come back from silence inside them), a warm-up >= 0 and keys >= 1"
            )

    @property
    def windows(self) -> int:
        return int((self.warmup_hours + self.hours) * HOUR_MS) // WINDOW_MS

    @property
    def scored_from(self) -> int:
        """Index of the first scored window: alerts before it are the detector's learning."""
        return int(self.warmup_hours * HOUR_MS) // WINDOW_MS

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.windows * WINDOW_MS


@dataclass(frozen=True, slots=True)
class Attack:
    """One injected incident: the rate keys an alert about it may carry, and the event time
    from its first to its last call."""

    attack_id: str
    kind: str
    targets: frozenset[str]
    start_ms: int
    end_ms: int
    victim_population: str | None


@dataclass(slots=True)
class KeyTraffic:
    """One rate key's windows: calls, rejected calls, calls per country and distinct client
    networks, by window index; ``legit`` counts the legit calls only (for key-hours)."""

    rate_key: str
    population: str
    consumer: str | None
    counts: Counts
    failures: Counts
    prefixes: Counts
    legit: Counts
    countries: dict[int, dict[str, int]] = field(default_factory=dict)
    attack: int | None = None  # index in Plan.attacks of the attack in these windows
    attack_windows: tuple[int, int] | None = None  # its first and last window with a call

    def active(self) -> Counts:
        """Indexes of the windows that have a record (any call)."""
        return np.flatnonzero(self.counts)


@dataclass(frozen=True, slots=True)
class _Profile:
    """A consumer key's legit behaviour, drawn once per key."""

    population: str
    rate: Rates  # expected calls per window, all countries
    country_rates: dict[str, Rates]
    dispersion: float  # gamma shape of the per-window rate: lower is burstier
    networks: int  # the key's usual client networks


def hours_since_start(spec: Spec) -> Rates:
    """Every window's start in hours since the Unix epoch's midnight (UTC)."""
    t = spec.start_ms + np.arange(spec.windows, dtype=np.int64) * WINDOW_MS
    return t / HOUR_MS


def _hours(spec: Spec, tz: float) -> Rates:
    """Local hour of day of every window's start."""
    return (hours_since_start(spec) + tz) % 24.0


def diurnal(hours: Rates) -> Rates:
    """Share of a key's peak rate by local hour: quiet from 22:00 to 07:00, peak mid-afternoon."""
    day = np.clip(np.sin(math.pi * (hours - 7.0) / 15.0), 0.0, 1.0) ** 1.2
    return 0.06 + 0.94 * day


def _log_uniform(rng: random.Random, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _others(rng: random.Random, exclude: set[str], n: int) -> list[str]:
    pool = sorted(set(COUNTRIES) - exclude)
    return rng.sample(pool, min(n, len(pool)))


def _profile(spec: Spec, population: str, home: str, rng: random.Random) -> _Profile:
    tz = COUNTRIES[home]
    w = spec.windows
    flat = np.ones(w)
    scale = spec.max_rate / DEFAULT_MAX_RATE
    peak = _log_uniform(rng, 0.05, spec.max_rate)
    dispersion = _log_uniform(rng, 1.5, 100.0)
    networks = rng.randint(1, 4)
    rates: dict[str, Rates] = {}
    if population == "steady":
        if rng.random() < 0.15:  # two data centres, a fixed split
            share = rng.uniform(0.1, 0.5)
            rates[home] = peak * (1 - share) * flat
            rates[_others(rng, {home}, 1)[0]] = peak * share * flat
        else:
            rates[home] = peak * flat
    elif population == "diurnal":
        rates[home] = peak * diurnal(_hours(spec, tz))
    elif population == "nightly_batch":
        base = min(peak, 20.0)
        rate = base * (diurnal(_hours(spec, tz)) if rng.random() < 0.5 else flat)
        hour = rng.uniform(0.0, 5.0)
        minutes = rng.randint(10, 40)
        batch = max(30.0, rng.uniform(10.0, 30.0) * base)
        hours = _hours(spec, tz)
        # Every night at the same local time, a few minutes' jitter a night.
        day = ((hours_since_start(spec) + tz) // 24).astype(np.int64)
        day -= day.min()
        nightly = np.array([rng.uniform(-5.0, 5.0) for _ in range(int(day.max()) + 1)])
        jitter = nightly[day] / 60.0
        on = (hours - (hour + jitter)) % 24.0 < minutes / 60.0
        rates[home] = np.where(on, batch, rate)
        networks = 1
    elif population == "growing":
        growth = rng.uniform(2.0, 6.0)
        rates[home] = peak * growth ** (np.arange(w) / w) * diurnal(_hours(spec, tz)) ** 0.5
    elif population == "multi_region":
        regions = [home, *_others(rng, {home}, rng.randint(1, 3))]
        shares = np.array([rng.uniform(0.2, 1.0) for _ in regions])
        shares /= shares.sum()
        for c, s in zip(regions, shares, strict=True):
            rates[c] = peak * s * diurnal(_hours(spec, COUNTRIES[c]))
        networks = len(regions) * 2
    elif population == "mobile_sdk":
        peak = _log_uniform(rng, 5.0 * scale, 300.0 * scale)
        local = rng.uniform(0.85, 0.97)
        roam = _others(rng, {home}, rng.randint(10, 30))
        weights = np.array([rng.paretovariate(1.2) for _ in roam])
        weights = weights / weights.sum() * (1 - local)
        curve = diurnal(_hours(spec, tz))
        rates[home] = peak * local * curve
        for c, s in zip(roam, weights, strict=True):
            rates[c] = peak * s * curve
        networks = 0  # one per few calls: phones on carrier networks
    elif population == "traveller":
        peak = _log_uniform(rng, 0.05, 3.0)
        dest = _others(rng, {home}, 1)[0]
        leave = rng.randint(spec.scored_from, spec.windows - 2 * HOUR_MS // WINDOW_MS)
        gap = rng.choice((0, rng.randint(2, 14))) * HOUR_MS // WINDOW_MS
        idx = np.arange(w)
        rates[home] = np.where(idx < leave, peak * diurnal(_hours(spec, tz)), 0.0)
        rates[dest] = np.where(
            idx >= leave + gap, peak * diurnal(_hours(spec, COUNTRIES[dest])), 0.0
        )
    elif population == "returning":
        shape = diurnal(_hours(spec, tz)) if rng.random() < 0.5 else flat
        # Comes back inside the scored span, at least 2 h before its end, after at least an
        # hour of calls.
        hour = HOUR_MS // WINDOW_MS
        back = rng.randint(max(spec.scored_from, 2 * hour), spec.windows - 2 * hour)
        start = back - min(rng.randint(1, 8) * hour, back - hour)
        idx = np.arange(w)
        rates[home] = np.where((idx >= start) & (idx < back), 0.0, peak * shape)
    else:
        raise ValueError(f"unknown population {population!r}")
    total = sum(rates.values(), np.zeros(w))
    return _Profile(population, total, rates, dispersion, networks)


def _sample(profile: _Profile, np_rng: np.random.Generator) -> tuple[Counts, dict[str, Counts]]:
    """Calls per window by country: Poisson around a gamma-distributed rate, so a key's
    burstiness at the scale of a window is its own."""
    k = profile.dispersion
    burst = np_rng.gamma(k, 1.0 / k, size=profile.rate.shape[0])
    by_country = {c: np_rng.poisson(r * burst) for c, r in profile.country_rates.items()}
    total = sum(by_country.values(), np.zeros(profile.rate.shape[0], dtype=np.int64))
    return total, by_country


def _networks(counts: Counts, usual: int, np_rng: np.random.Generator) -> Counts:
    if usual == 0:  # mobile: most calls from a network of their own
        return np.maximum(np.minimum(counts, 1), np_rng.binomial(counts, 0.7))
    return np.minimum(counts, np_rng.integers(1, usual + 1, size=counts.shape[0]))


NETWORKS_PER_COUNTRY: Final = 40
"""A consumer key's calls from one country in one window come from at most this many networks
(the end-to-end mode draws that many addresses per country)."""


def networks_by_country(kt: KeyTraffic, i: int) -> dict[str, int]:
    """How many distinct client networks each country's calls of window ``i`` come from: the
    window's networks shared out by calls, at least one and at most the calls per country. The
    end-to-end mode draws its addresses by it, and the fast mode counts the window's networks
    by it, so both modes give the detector the same count."""
    count = int(kt.counts[i])
    return {
        country: max(1, min(n, NETWORKS_PER_COUNTRY, round(int(kt.prefixes[i]) * n / count)))
        for country, n in kt.countries[i].items()
    }


def consumer_name(index: int) -> str:
    return f"c{index:05d}"


@dataclass(frozen=True, slots=True)
class Plan:
    """The whole evaluation's cast: each consumer key's population and the attacks, drawn
    before any traffic so that victims are chosen by population."""

    spec: Spec
    populations: list[str]
    homes: list[str]
    attacks: list[Attack]
    # consumer index -> (attack index, first window, last window + 1, extra parameters)
    on_key: dict[int, tuple[int, int, int, dict[str, float | str | list[str]]]]
    clients: list[tuple[str, str, int | None]]  # (rate key, population, attack index)


NIGHT_HOURS: Final = (1.0, 3.5)
"""Local hours in which night-time use starts: the owner asleep, the key's quietest hours."""


def _night_windows(spec: Spec, tz: float, length: int, tail: int) -> Counts:
    """Scored windows that start within ``NIGHT_HOURS`` local time and leave room for an attack
    of ``length`` windows and ``tail`` more."""
    idx = np.arange(spec.windows)
    hours = _hours(spec, tz)
    lo, hi = NIGHT_HOURS
    return np.flatnonzero(
        (idx >= spec.scored_from)
        & (hours >= lo)
        & (hours <= hi)
        & (idx + length + tail <= spec.windows)
    )


def plan(spec: Spec) -> Plan:
    rng = random.Random(f"eval-plan-{spec.seed}")
    names = list(POPULATIONS)
    populations = rng.choices(names, weights=list(POPULATIONS.values()), k=spec.keys)
    home_rng = random.Random(f"eval-homes-{spec.seed}")
    homes = [_pick(home_rng, HOME_WEIGHTS) for _ in range(spec.keys)]
    attacks: list[Attack] = []
    on_key: dict[int, tuple[int, int, int, dict[str, float | str | list[str]]]] = {}
    clients: list[tuple[str, str, int | None]] = []
    w = spec.windows
    tail = 30  # windows after an attack, so recall within 30 windows is measurable
    # Night-time use first: its victims must have a night in the scored span, which depends on
    # their time zone, so the other kinds must not take those keys before it.
    order = sorted(ATTACKS, key=lambda k: k != "night_use")
    for kind in order:
        for n in range(spec.attacks_per_kind):
            attack_id = f"{kind}-{n:03d}"
            if kind in _VICTIMS:
                minutes = {
                    "spike_new_country": (2, 10),
                    "low_and_slow": (30, 120),
                    "leaked_key": (30, 120),
                    "night_use": (30, 90),
                }[kind]
                length = rng.randint(*minutes) * MINUTE_MS // WINDOW_MS
                nights: dict[int, Counts] = {}
                if kind == "night_use":
                    # Only keys with a night in the scored span (it depends on the time zone).
                    by_tz: dict[float, Counts] = {}
                    for i, pop in enumerate(populations):
                        if pop in _VICTIMS[kind] and i not in on_key:
                            tz = COUNTRIES[homes[i]]
                            if tz not in by_tz:
                                by_tz[tz] = _night_windows(spec, tz, length, tail)
                            if by_tz[tz].size:
                                nights[i] = by_tz[tz]
                victims = [
                    i
                    for i, pop in enumerate(populations)
                    if pop in _VICTIMS[kind]
                    and i not in on_key
                    and (kind != "night_use" or i in nights)
                ]
                if not victims:
                    where = " with a night in the scored hours" if kind == "night_use" else ""
                    raise ValueError(
                        f"no {'/'.join(_VICTIMS[kind])} key{where} left to attack: raise --keys "
                        "or --hours, or lower --attacks-per-kind"
                    )
                victim = rng.choice(victims)
                if kind == "night_use":
                    start = int(rng.choice(nights[victim].tolist()))
                else:
                    start = rng.randint(spec.scored_from, w - length - tail)
                extra: dict[str, float | str | list[str]] = {"factor": rng.random()}
                if kind == "leaked_key":
                    extra["countries"] = rng.sample(sorted(COUNTRIES), rng.randint(20, 40))
                    extra["networks"] = float(rng.randint(200, 800))
                on_key[victim] = (len(attacks), start, start + length, extra)
                attacks.append(
                    Attack(
                        attack_id,
                        kind,
                        frozenset({consumer_name(victim)}),
                        spec.start_ms + start * WINDOW_MS,
                        spec.start_ms + (start + length) * WINDOW_MS,
                        populations[victim],
                    )
                )
            elif kind == "guessing_single":
                key = f"client:guess-{n:03d}"
                length = rng.randint(10, 60) * MINUTE_MS // WINDOW_MS
                start = rng.randint(spec.scored_from, w - length - tail)
                clients.append((key, kind, len(attacks)))
                attacks.append(
                    Attack(
                        attack_id,
                        kind,
                        frozenset({key}),
                        spec.start_ms + start * WINDOW_MS,
                        spec.start_ms + (start + length) * WINDOW_MS,
                        None,
                    )
                )
            else:  # distributed guessing: hundreds of networks, a few tries each
                length = rng.randint(20, 60) * MINUTE_MS // WINDOW_MS
                start = rng.randint(spec.scored_from, w - length - tail)
                keys = [f"client:dist-{n:03d}-{j:04d}" for j in range(rng.randint(300, 2000))]
                clients.extend((k, kind, len(attacks)) for k in keys)
                attacks.append(
                    Attack(
                        attack_id,
                        kind,
                        frozenset(keys),
                        spec.start_ms + start * WINDOW_MS,
                        spec.start_ms + (start + length) * WINDOW_MS,
                        None,
                    )
                )
    clients.extend(
        (f"client:misconf-{i:04d}", MISCONFIGURED, None) for i in range(spec.misconfigured)
    )
    clients.extend((f"client:stray-{i:05d}", STRAY, None) for i in range(spec.stray))
    return Plan(spec, populations, homes, attacks, on_key, clients)


def _key_profile(p: Plan, index: int) -> tuple[_Profile, random.Random]:
    rng = random.Random(f"eval-key-{p.spec.seed}-{index}")
    return _profile(p.spec, p.populations[index], p.homes[index], rng), rng


def legit_model(p: Plan, index: int) -> tuple[Rates, float]:
    """What a consumer key's legit calls are drawn from: its expected calls per window, and the
    gamma shape of its per-window rate (lower is burstier)."""
    profile, _ = _key_profile(p, index)
    return profile.rate, profile.dispersion


def consumer(p: Plan, index: int) -> KeyTraffic:
    spec = p.spec
    profile, rng = _key_profile(p, index)
    np_rng = np.random.default_rng([spec.seed, index])
    counts, by_country = _sample(profile, np_rng)
    legit = counts.copy()
    failures = np_rng.binomial(counts, 0.003)  # forbidden routes, expired tokens: a few 403s
    prefixes = _networks(counts, profile.networks, np_rng)
    extra_networks = np.zeros_like(counts)
    attack: int | None = None
    span: tuple[int, int] | None = None
    if index in p.on_key:
        a, start, end, extra = p.on_key[index]
        kind = p.attacks[a].kind
        factor = float(extra["factor"])  # type: ignore[arg-type]
        seen = {c for c, r in profile.country_rates.items() if r.any()}
        before = profile.rate[max(0, start - HOUR_MS // WINDOW_MS) : start]
        # The key's rate over the hour before the attack (its whole span's if none before).
        ref = float(before.mean() if before.size and before.any() else profile.rate.mean())
        length = end - start
        attack_rates: dict[str, Rates] = {}
        if kind == "spike_new_country":
            attack_rates[_others(rng, seen, 1)[0]] = np.full(
                length, max(30.0, (10 + 40 * factor) * ref)
            )
            networks = 2
        elif kind == "low_and_slow":
            attack_rates[_others(rng, seen, 1)[0]] = np.full(
                length, max(0.3, (0.5 + 0.5 * factor) * ref)
            )
            networks = 1
        elif kind == "leaked_key":
            where = list(extra["countries"])  # type: ignore[arg-type]
            weights = np.array([rng.paretovariate(1.0) for _ in where])
            total = max(5.0, (1 + 2 * factor) * ref)
            for c, s in zip(where, weights / weights.sum(), strict=True):
                attack_rates[str(c)] = np.full(length, total * s)
            networks = int(float(extra["networks"]))  # type: ignore[arg-type]
        else:  # night_use: the key's own daytime rate, from its home country, at its night
            home = p.homes[index]
            attack_rates[home] = np.full(
                length, max(3.0, float(profile.rate.max()) * (0.7 + 0.5 * factor))
            )
            networks = 1
        added = np.zeros(length, dtype=np.int64)
        for c, r in attack_rates.items():
            n = np_rng.poisson(r)
            added += n
            full = np.zeros(spec.windows, dtype=np.int64)
            full[start:end] = n
            by_country[c] = by_country.get(c, np.zeros(spec.windows, dtype=np.int64)) + full
        counts = counts.copy()
        counts[start:end] += added
        extra_networks[start:end] = np.minimum(added, networks)
        hit = np.flatnonzero(added)
        attack = a
        span = (start + int(hit[0]), start + int(hit[-1])) if hit.size else None
    prefixes = prefixes + extra_networks
    countries: dict[int, dict[str, int]] = {}
    for i in np.flatnonzero(counts).tolist():
        countries[i] = {c: int(n[i]) for c, n in by_country.items() if n[i]}
    name = consumer_name(index)
    return KeyTraffic(
        name, profile.population, name, counts, failures, prefixes, legit, countries, attack, span
    )


def client(p: Plan, index: int) -> KeyTraffic:
    """A rejected-call rate key: a guesser, one network of a distributed guess, a
    misconfigured client or a stray rejected call. Every call is rejected."""
    spec = p.spec
    key, population, a = p.clients[index]
    rng = random.Random(f"eval-client-{spec.seed}-{key}")
    np_rng = np.random.default_rng([spec.seed, 1_000_000 + index])
    w = spec.windows
    failures = np.zeros(w, dtype=np.int64)
    if population == "guessing_single":
        attack = p.attacks[a]  # type: ignore[index]
        start = (attack.start_ms - spec.start_ms) // WINDOW_MS
        end = (attack.end_ms - spec.start_ms) // WINDOW_MS
        speed = GUESSING_SPEEDS[int(attack.attack_id.rsplit("-", 1)[1]) % len(GUESSING_SPEEDS)]
        failures[start:end] = np_rng.poisson(speed, size=end - start)
    elif population == "guessing_distributed":
        attack = p.attacks[a]  # type: ignore[index]
        start = (attack.start_ms - spec.start_ms) // WINDOW_MS
        end = (attack.end_ms - spec.start_ms) // WINDOW_MS
        for _ in range(rng.randint(1, 3)):
            failures[rng.randrange(start, end)] += 1
    elif population == MISCONFIGURED:
        # A job with a revoked key, retrying every 1-10 minutes all day.
        every = rng.randint(6, 60)
        failures[rng.randrange(every) :: every] = 1
    else:
        failures[rng.randrange(w)] = rng.randint(1, 6)
    country = rng.choice(sorted(COUNTRIES))
    hit = np.flatnonzero(failures)
    countries = {int(i): {country: int(failures[i])} for i in hit}
    span = (int(hit[0]), int(hit[-1])) if a is not None and hit.size else None
    zero = np.zeros(w, dtype=np.int64)
    return KeyTraffic(
        key, population, None, failures, failures.copy(), np.minimum(failures, 1), zero,
        countries, a, span,
    )  # fmt: skip


def keys(p: Plan) -> Iterator[KeyTraffic]:
    """Every rate key's traffic, one key at a time: the consumer keys, then the clients."""
    for index in range(len(p.populations)):
        yield consumer(p, index)
    for index in range(len(p.clients)):
        yield client(p, index)


def labels(p: Plan, spans: dict[int, list[tuple[int, int]]]) -> list[Attack]:
    """The attacks with their spans as generated: from the first to the last window with an
    attack call, over all of an attack's keys. ``spans``: attack index -> the keys' spans."""
    out = []
    for a, attack in enumerate(p.attacks):
        got = spans.get(a)
        if not got:
            continue  # no call at all (a guess that drew 0 tries): nothing to detect
        first = min(f for f, _ in got)
        last = max(last for _, last in got)
        out.append(
            Attack(
                attack.attack_id,
                attack.kind,
                attack.targets,
                p.spec.start_ms + first * WINDOW_MS,
                p.spec.start_ms + (last + 1) * WINDOW_MS,
                attack.victim_population,
            )
        )
    return out
