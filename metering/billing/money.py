"""Money: Decimal amounts, computed exactly, rounded once, by the one rule stated here.

The rule. Amounts are computed exactly (``times`` and ``total`` refuse to round, see
``EXACT``) and rounded only where an amount is billed: an invoice line's amount
(``metering.billing.invoice``), with ``round_money``: to the currency's minor unit (ISO 4217:
cents for USD and EUR, none for JPY), half to even.

Why half to even: an exact tie (a line worth $10.005, possible only with sub-cent prices) goes to
the even cent, so over many lines ties round up as often as down and totals do not drift
upwards, as they do with half up; it is also Decimal's and IEEE 754's default. Why once: rounding
each window's or tier's amount and adding them would make the billed amount depend on how usage
was cut into windows; rounding the exact total of a line does not.

Floats are refused everywhere an amount or a price enters (``parse_decimal``): 0.1 has no exact
binary representation, so a float has already lost the amount it was meant to hold. Text (JSON,
TOML, flags) is parsed into Decimal directly; TOML and JSON readers here parse their non-integer
numbers as Decimal from the source text (``tomllib.loads(parse_float=Decimal)``).

This module is the only one that calls ``quantize`` (a unit test checks it).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    Rounded,
)
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

ROUNDING = ROUND_HALF_EVEN
"""How a billed amount is rounded to its currency's minor unit (see the module docstring)."""

MINOR_UNITS: dict[str, int] = {
    "USD": 2,
    "EUR": 2,
    "GBP": 2,
    "CHF": 2,
    "CAD": 2,
    "AUD": 2,
    "NZD": 2,
    "SEK": 2,
    "NOK": 2,
    "DKK": 2,
    "PLN": 2,
    "INR": 2,
    "BRL": 2,
    "SGD": 2,
    "JPY": 0,
    "KRW": 0,
}
"""Digits after the decimal point of each supported currency's minor unit (ISO 4217). A currency
not listed is refused rather than guessed."""

MAX_PRICE_PLACES = 12
"""Decimal places a unit price may have: $0.000000000001 per unit is the finest price."""
MAX_AMOUNT_DIGITS = 40
"""Significant digits of any amount or price: far beyond any bill, and inside ``EXACT``'s
precision, so sums and products of them are exact."""

EXACT = Context(
    prec=2 * MAX_AMOUNT_DIGITS,
    rounding=ROUNDING,
    traps=[Inexact, Rounded, InvalidOperation, DivisionByZero, Overflow],
)
"""The arithmetic of amounts: an operation whose result would need rounding raises instead
(``Rounded``), so an unrounded amount here is always the exact one."""

ZERO = Decimal(0)


class MoneyError(ValueError):
    """An amount, price or currency that cannot be used (a float, NaN, unknown currency...)."""


def parse_decimal(value: object, what: str = "amount") -> Decimal:
    """``value`` as an exact, finite Decimal: from a Decimal, an int or decimal text.

    Refuses floats (and bools) with MoneyError: the float has already lost the exact value.
    """
    if isinstance(value, bool) or not isinstance(value, (Decimal, int, str)):
        kind = type(value).__name__
        hint = '; write it as text, e.g. "0.001"' if kind == "float" else ""
        raise MoneyError(f"{what}: a {kind} is not an exact decimal{hint}")
    try:
        d = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise MoneyError(f"{what}: not a decimal number") from None
    if not d.is_finite():
        raise MoneyError(f"{what}: must be finite")
    if len(d.as_tuple().digits) > MAX_AMOUNT_DIGITS:
        raise MoneyError(f"{what}: more than {MAX_AMOUNT_DIGITS} significant digits")
    return d


def decimal_places(d: Decimal) -> int:
    """Digits after the decimal point as written (``Decimal("0.0010")``: 4)."""
    exponent = d.as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def check_currency(code: str) -> str:
    """``code`` if it is a supported ISO 4217 currency (upper case); MoneyError otherwise."""
    if code not in MINOR_UNITS:
        raise MoneyError(f"unsupported currency {code!r}; known: {', '.join(sorted(MINOR_UNITS))}")
    return code


def times(units: int, unit_price: Decimal) -> Decimal:
    """``units`` * ``unit_price``, exactly."""
    return EXACT.multiply(Decimal(units), unit_price)


def total(amounts: Iterable[Decimal]) -> Decimal:
    """The exact sum of ``amounts`` (0 for none)."""
    out = ZERO
    for amount in amounts:
        out = EXACT.add(out, amount)
    return out


def minus(a: Decimal, b: Decimal) -> Decimal:
    """``a`` - ``b``, exactly."""
    return EXACT.subtract(a, b)


def round_money(amount: Decimal, currency: str) -> Decimal:
    """``amount`` rounded to ``currency``'s minor unit by ``ROUNDING``: the one rounding of the
    billing model (``Decimal("10.005")``, USD → ``Decimal("10.00")``)."""
    places = MINOR_UNITS[check_currency(currency)]
    return amount.quantize(Decimal(1).scaleb(-places), rounding=ROUNDING)


def _validated(value: Any) -> Decimal:
    # pydantic turns a ValueError (MoneyError) into a validation error naming the field.
    return parse_decimal(value)


Amount = Annotated[
    Decimal,
    BeforeValidator(_validated),
    PlainSerializer(str, return_type=str, when_used="json"),
]
"""A pydantic field holding money or a price: exact Decimal in, floats refused, text out in
JSON (``"10.00"``), so no JSON reader turns it into a float."""
