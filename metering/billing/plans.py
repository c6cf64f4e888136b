"""Plans, subscriptions and grants, and the catalog that holds them: what usage is priced by.

A **plan** says how a period's units are priced (graduated ``tiers``, or the shorthand
``overage``: free up to ``included_units``, then a price per unit), what the quota is
(``included_units``; None: unlimited), whether reaching it blocks calls (``hard_limit``), and how
many units a call is (``route_weights``).

A **subscription** puts a subject on a plan from an instant on; a subject's subscriptions form
its history, and the one in force at an instant is the latest that started at or before it. A
**grant** is prepaid money (a top-up or a credit) for a subject.

Subjects are what the job's windows count by, its rate key (``subject_of``): the consumer name
when the gateway identified one, else ``key:<fingerprint>`` of the presented API key. So a
subscription on ``key:<fingerprint>`` covers only the calls without an identified consumer.
Anonymous clients (``client:<network>`` rate keys) are never billed.

Units are integers: a call is ``weight`` units, a positive integer, so quantities stay exact and
are what Stripe's meter receives (an integer value). A fraction of a unit is a price, not a
weight: price a cheap route's calls lower, not at half a unit.

Route weights (``route_weights``: pattern → units per call) match the enriched event's ``path``
(the request path without its query string), case-sensitively and as written:

* a pattern without ``*`` matches that exact path;
* a pattern ending in ``*`` matches every path that starts with the text before it
  (``/v1/valuations*`` matches ``/v1/valuations``, ``/v1/valuations/42`` and also
  ``/v1/valuations-beta``: write ``/v1/valuations/*`` to require the slash);
* the most specific pattern wins: an exact pattern over any prefix, a longer prefix over a
  shorter one;
* a path no pattern matches, and a call whose path is unknown, is ``DEFAULT_WEIGHT`` units.

Plans are immutable once used: the plans topic keeps the latest version of each id, so changing a
used plan's prices would re-price every earlier period read from it. A new price is a new plan id
(``gold-2027``) and subscriptions that move to it.
"""

from __future__ import annotations

import bisect
import json
import tomllib
from collections.abc import Iterable, Mapping
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from metering.billing.money import (
    MAX_PRICE_PLACES,
    ZERO,
    Amount,
    check_currency,
    decimal_places,
)
from metering.billing.periods import PERIOD_KIND, PeriodKind, parse_instant

DEFAULT_WEIGHT = 1
"""Units of a call that no route weight matches (and of a call whose path is unknown)."""
MAX_WEIGHT = 1_000_000
"""Largest units per call a route may weigh."""
DEFAULT_CURRENCY = "USD"
KEY_PREFIX = "key:"
"""Subjects of API keys without an identified consumer: ``key:<fingerprint>``."""
CLIENT_PREFIX = "client:"
"""Rate keys of anonymous clients: never a subject."""
MAX_SUBJECT_CHARS = 256

_ID_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"


class CatalogError(ValueError):
    """A catalog (file, topic contents) that is not TOML/JSON or not a valid catalog."""


def subject_of(consumer: str | None, key_fingerprint: str | None) -> str | None:
    """The billing subject of a call or window: the consumer, else ``key:<fingerprint>``, else
    None (an anonymous client, not billed). The same rule as the job's rate key."""
    if consumer:
        return consumer
    if key_fingerprint:
        return KEY_PREFIX + key_fingerprint
    return None


def _subject(value: str) -> str:
    if not value or len(value) > MAX_SUBJECT_CHARS:
        raise ValueError(f"a subject has 1 to {MAX_SUBJECT_CHARS} characters")
    if value.startswith(CLIENT_PREFIX):
        raise ValueError("anonymous clients (client:...) cannot be billed")
    if value.startswith(KEY_PREFIX) and len(value) == len(KEY_PREFIX):
        raise ValueError("key: needs the key's fingerprint")
    if any(ord(c) < 32 for c in value):
        raise ValueError("a subject has no control characters")
    return value


def _instant(value: Any) -> int:
    return parse_instant(value)


PlanId = Annotated[str, Field(pattern=_ID_PATTERN, description="lower-case id, e.g. gold")]
GrantId = Annotated[str, Field(min_length=1, max_length=128)]
Subject = Annotated[
    str,
    BeforeValidator(_subject),
    Field(description="consumer name, or key:<fingerprint> for a key without a consumer"),
]
EpochMs = Annotated[int, BeforeValidator(_instant), Field(ge=0)]
"""Epoch ms; epoch-ms text, ISO 8601 text and TOML datetimes are accepted too (naive: UTC)."""
Currency = Annotated[str, BeforeValidator(check_currency)]
Units = Annotated[int, Field(strict=True, ge=1)]


class _Strict(BaseModel):
    # Unknown keys are errors: a typo in a catalog must not silently drop a price.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tier(_Strict):
    """One step of a graduated price: the period's units from the previous tier's ``up_to`` to
    this ``up_to`` each cost ``unit_price`` (so ``up_to = 50000`` covers units 1 to 50,000)."""

    up_to: Units | None = Field(None, description="last unit of the tier; None: no end")
    unit_price: Amount

    @field_validator("unit_price")
    @classmethod
    def _price(cls, v: Decimal) -> Decimal:
        if v < ZERO:
            raise ValueError("a unit price is not negative")
        if decimal_places(v) > MAX_PRICE_PLACES:
            raise ValueError(f"a unit price has at most {MAX_PRICE_PLACES} decimal places")
        return v


class Plan(_Strict):
    """How a subject's usage in a period is priced, limited and weighed."""

    id: PlanId
    name: str = Field(min_length=1, max_length=100)
    currency: Currency = DEFAULT_CURRENCY
    period: PeriodKind = Field(
        PERIOD_KIND, description="calendar month in UTC (the only kind so far)"
    )
    included_units: Units | None = Field(
        None, description="the quota: units per period; None: unlimited (no quota signals)"
    )
    tiers: tuple[Tier, ...] = Field(
        (), description="graduated price of the period's units; empty: see overage"
    )
    overage: Amount | None = Field(
        None,
        description="shorthand for tiers [{up_to = included_units, unit_price = 0}, "
        "{unit_price = overage}]; neither tiers nor overage: every unit is free",
    )
    hard_limit: bool = Field(
        False, description="reaching included_units emits an enforce record (calls blocked)"
    )
    route_weights: dict[str, Annotated[int, Field(strict=True, ge=1, le=MAX_WEIGHT)]] = Field(
        default_factory=dict, description="path pattern -> units per call (see the module doc)"
    )

    @field_validator("overage")
    @classmethod
    def _overage(cls, v: Decimal | None) -> Decimal | None:
        if v is not None:
            Tier(unit_price=v)  # the same rules as a tier's price
        return v

    @field_validator("route_weights")
    @classmethod
    def _patterns(cls, v: dict[str, int]) -> dict[str, int]:
        for pattern in v:
            if not pattern.startswith("/"):
                raise ValueError(f"route pattern {pattern!r} must start with /")
            if "*" in pattern[:-1]:
                raise ValueError(f"route pattern {pattern!r}: * only at the end (a prefix)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Plan:
        if self.tiers and self.overage is not None:
            raise ValueError("give tiers or overage, not both")
        if self.overage is not None and self.included_units is None:
            raise ValueError("overage needs included_units (the units before it applies)")
        if self.hard_limit and self.included_units is None:
            raise ValueError("a hard limit needs included_units")
        ends = [t.up_to for t in self.tiers]
        if ends and ends[-1] is not None:
            raise ValueError("the last tier has no up_to (it covers every further unit)")
        bounded = [e for e in ends[:-1] if e is not None]
        if len(bounded) != len(ends[:-1]) or bounded != sorted(set(bounded)):
            raise ValueError("every tier but the last has an up_to, increasing")
        return self

    @cached_property
    def price_tiers(self) -> tuple[Tier, ...]:
        """The graduated tiers that price a period's units (``overage`` expanded)."""
        if self.tiers:
            return self.tiers
        if self.overage is not None:
            return (
                Tier(up_to=self.included_units, unit_price=ZERO),
                Tier(up_to=None, unit_price=self.overage),
            )
        return (Tier(up_to=None, unit_price=ZERO),)

    @cached_property
    def _weights(self) -> tuple[dict[str, int], tuple[tuple[str, int], ...]]:
        exact = {p: w for p, w in self.route_weights.items() if not p.endswith("*")}
        prefixes = sorted(
            ((p[:-1], w) for p, w in self.route_weights.items() if p.endswith("*")),
            key=lambda pw: -len(pw[0]),
        )
        return exact, tuple(prefixes)

    def weight_of(self, path: str | None) -> int:
        """Units of one call to ``path`` under this plan (the matching rule: module doc)."""
        if path is None:
            return DEFAULT_WEIGHT
        exact, prefixes = self._weights
        if path in exact:
            return exact[path]
        for prefix, weight in prefixes:  # longest first
            if path.startswith(prefix):
                return weight
        return DEFAULT_WEIGHT


class Subscription(_Strict):
    """``subject`` is on ``plan_id`` from ``effective_from`` until its next subscription starts.

    Keyed ``<subject>@<effective_from>`` on the subscriptions topic, not by subject alone: a
    compacted topic keeps one record per key, and re-pricing a period with a plan change needs
    the subscription that ended too."""

    subject: Subject
    plan_id: PlanId
    effective_from: EpochMs
    stripe_customer_id: str | None = Field(
        None, pattern=r"^cus_[A-Za-z0-9]+$", description="the Stripe customer billed"
    )
    contact: str | None = Field(None, max_length=256, description="who hears about the account")

    @property
    def key(self) -> str:
        """The record key on the subscriptions topic."""
        return f"{self.subject}@{self.effective_from}"


class Grant(_Strict):
    """Prepaid money for a subject (a top-up or a credit), keyed by ``id``: putting the same id
    again corrects the grant, it does not add another."""

    id: GrantId
    subject: Subject
    amount: Amount
    currency: Currency = DEFAULT_CURRENCY
    at: EpochMs
    note: str | None = Field(None, max_length=256)

    @field_validator("amount")
    @classmethod
    def _positive(cls, v: Decimal) -> Decimal:
        if v <= ZERO:
            raise ValueError("a grant is a positive amount")
        return v


class Catalog(_Strict):
    """Plans, subscriptions and grants, checked together."""

    plans: tuple[Plan, ...] = ()
    subscriptions: tuple[Subscription, ...] = ()
    grants: tuple[Grant, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> Catalog:
        plans = {p.id: p for p in self.plans}
        if len(plans) != len(self.plans):
            raise ValueError("plan ids must be distinct")
        keys = [s.key for s in self.subscriptions]
        if len(set(keys)) != len(keys):
            raise ValueError("a subject has at most one subscription per effective_from")
        if len({g.id for g in self.grants}) != len(self.grants):
            raise ValueError("grant ids must be distinct")
        currencies: dict[str, set[str]] = {}
        for s in self.subscriptions:
            if s.plan_id not in plans:
                raise ValueError(f"subscription {s.key}: no plan {s.plan_id!r}")
            currencies.setdefault(s.subject, set()).add(plans[s.plan_id].currency)
        for g in self.grants:
            currencies.setdefault(g.subject, set()).add(g.currency)
        # One currency per subject: a period's amounts and a balance add up in one currency.
        mixed = sorted(s for s, c in currencies.items() if len(c) > 1)
        if mixed:
            raise ValueError(f"subjects with plans or grants in several currencies: {mixed}")
        return self

    @cached_property
    def _plans(self) -> dict[str, Plan]:
        return {p.id: p for p in self.plans}

    @cached_property
    def _histories(self) -> dict[str, tuple[list[int], list[Subscription]]]:
        by_subject: dict[str, list[Subscription]] = {}
        for s in sorted(self.subscriptions, key=lambda s: s.effective_from):
            by_subject.setdefault(s.subject, []).append(s)
        return {k: ([s.effective_from for s in v], v) for k, v in by_subject.items()}

    def plan(self, plan_id: str) -> Plan:
        """The plan ``plan_id``; KeyError if there is none."""
        return self._plans[plan_id]

    def history(self, subject: str) -> tuple[Subscription, ...]:
        """The subject's subscriptions, oldest first."""
        return tuple(self._histories.get(subject, ((), ()))[1])

    def in_force(self, subject: str, at_ms: int) -> Subscription | None:
        """The subscription in force at ``at_ms``: the latest that started at or before it."""
        starts, subs = self._histories.get(subject, ([], []))
        i = bisect.bisect_right(starts, at_ms)
        return subs[i - 1] if i else None

    def grants_of(self, subject: str) -> tuple[Grant, ...]:
        return tuple(g for g in self.grants if g.subject == subject)

    def subjects(self) -> tuple[str, ...]:
        return tuple(sorted(self._histories))

    def with_items(
        self,
        plans: Iterable[Plan] = (),
        subscriptions: Iterable[Subscription] = (),
        grants: Iterable[Grant] = (),
    ) -> Catalog:
        """A catalog with these added, each replacing the one of the same key (plan id,
        subscription key, grant id): what a compacted topic holds after they are put."""
        ps = {p.id: p for p in self.plans} | {p.id: p for p in plans}
        ss = {s.key: s for s in self.subscriptions} | {s.key: s for s in subscriptions}
        gs = {g.id: g for g in self.grants} | {g.id: g for g in grants}
        return Catalog(
            plans=tuple(ps.values()), subscriptions=tuple(ss.values()), grants=tuple(gs.values())
        )


def validation_problems(e: ValidationError) -> str:
    """The errors of a ValidationError as ``field.path: message``; never the input values."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
        for err in e.errors(include_input=False, include_url=False)
    )


def catalog_from_data(data: Mapping[str, Any], source: str = "<catalog>") -> Catalog:
    """A catalog from parsed TOML or JSON; CatalogError names the source and the fields."""
    try:
        return Catalog.model_validate(data)
    except ValidationError as e:
        raise CatalogError(f"{source}: {validation_problems(e)}") from None


def parse_catalog(text: str, source: str = "<catalog>") -> Catalog:
    """A catalog from TOML text. Non-integer numbers are read as Decimal from the text itself
    (``unit_price = 0.001`` is exactly 0.001); writing them as strings works too."""
    try:
        data = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as e:
        raise CatalogError(f"{source}: not TOML: {e}") from None
    return catalog_from_data(data, source)


def load_catalog(path: str | Path) -> Catalog:
    """The catalog in the TOML file ``path``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise CatalogError(f"{p}: cannot read: {e.strerror}") from None
    return parse_catalog(text, str(p))


def loads_json(text: str | bytes) -> Any:
    """JSON with its non-integer numbers as Decimal, read from the text (never via float)."""
    return json.loads(text, parse_float=Decimal)
