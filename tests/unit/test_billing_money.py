"""Money (metering/billing/money.py): exact amounts, one rounding rule in one place, no floats."""

from __future__ import annotations

import ast
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from metering.billing import balance, invoice, plans, quota
from metering.billing.money import (
    MINOR_UNITS,
    MoneyError,
    minus,
    parse_decimal,
    round_money,
    times,
    total,
)

REPO = Path(__file__).resolve().parents[2]
BILLING_SOURCES = [*sorted((REPO / "metering/billing").glob("*.py")), REPO / "tools/billing.py"]


def test_round_money_is_half_even_to_the_currencys_minor_unit() -> None:
    assert round_money(Decimal("10.005"), "USD") == Decimal("10.00")
    assert round_money(Decimal("10.015"), "USD") == Decimal("10.02")
    assert round_money(Decimal("10.0051"), "USD") == Decimal("10.01")
    assert round_money(Decimal("-0.005"), "EUR") == Decimal("-0.00")
    assert round_money(Decimal("1234.5"), "JPY") == Decimal("1234")
    assert round_money(Decimal("1235.5"), "JPY") == Decimal("1236")
    assert str(round_money(Decimal("10.000"), "USD")) == "10.00"
    with pytest.raises(MoneyError, match="unsupported currency"):
        round_money(Decimal(1), "XXX")
    assert set(MINOR_UNITS.values()) <= {0, 2}


def test_arithmetic_is_exact_or_refuses() -> None:
    assert times(60_000, Decimal("0.001")) == Decimal("60")
    assert times(3, Decimal("0.000000000001")) == Decimal("3E-12")
    assert total([Decimal("0.1")] * 10) == Decimal("1.0")
    assert total([]) == Decimal(0)
    assert minus(Decimal("100"), Decimal("0.001")) == Decimal("99.999")
    # A result that would need more digits than the exact context holds raises instead of
    # rounding silently.
    with pytest.raises(ArithmeticError):
        times(10**60, Decimal("1.0000000000000000000000000000000000001"))


@pytest.mark.parametrize("bad", [0.1, 1.0, True, None, [1], "abc", "NaN", "Infinity", "1e400x"])
def test_parse_decimal_refuses_floats_and_non_numbers(bad: Any) -> None:
    with pytest.raises(MoneyError):
        parse_decimal(bad)


def test_parse_decimal_keeps_text_exact() -> None:
    assert parse_decimal("0.001") == Decimal("0.001")
    assert parse_decimal(" 12.50 ") == Decimal("12.50")
    assert parse_decimal(7) == Decimal(7)
    assert parse_decimal(Decimal("1e-3")) == Decimal("0.001")
    with pytest.raises(MoneyError, match="write it as text"):
        parse_decimal(0.001)


def _decimal_fields(model: type[BaseModel]) -> list[str]:
    return [n for n, f in model.model_fields.items() if "Decimal" in str(f.annotation)]


MONEY_MODELS: list[tuple[type[BaseModel], dict[str, Any]]] = [
    (plans.Tier, {"unit_price": "0.001"}),
    (plans.Plan, {"id": "p", "name": "P", "included_units": 10, "overage": "0.5"}),
    (plans.Grant, {"id": "g", "subject": "acme", "amount": "5", "at": 0}),
    (
        invoice.TierLine,
        {"tier": 0, "up_to": None, "unit_price": "1", "quantity": 1, "amount": "1"},
    ),
]


@pytest.mark.parametrize(("model", "valid"), MONEY_MODELS, ids=lambda m: getattr(m, "__name__", ""))
def test_every_money_field_refuses_a_float(model: type[BaseModel], valid: dict[str, Any]) -> None:
    model.model_validate(valid)
    fields = _decimal_fields(model)
    assert fields, f"{model.__name__} has no Decimal field"
    for name in fields:
        with pytest.raises(ValidationError, match="not an exact decimal"):
            model.model_validate(valid | {name: 0.5})


def test_money_is_text_in_json() -> None:
    line = invoice.TierLine(
        tier=0, up_to=None, unit_price=Decimal("0.001"), quantity=3, amount=Decimal("0.003")
    )
    assert '"unit_price":"0.001"' in line.model_dump_json()
    assert '"amount":"0.003"' in line.model_dump_json()


def test_only_money_py_calls_quantize() -> None:
    """The rounding rule is applied in one place: money.round_money."""
    callers = []
    for path in BILLING_SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr == "quantize":
                callers.append(path.name)
    assert callers == ["money.py"]


def test_no_float_anywhere_in_billing() -> None:
    """No float type, float() call or float literal in the billing package or its CLI."""
    found = []
    for path in BILLING_SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Name) and node.id == "float":
                found.append(f"{path.name}:{node.lineno}: float")
            if isinstance(node, ast.Constant) and isinstance(node.value, float):
                found.append(f"{path.name}:{node.lineno}: {node.value!r}")
    assert found == []


def test_threshold_and_signal_models_hold_no_float_fields() -> None:
    for model in (quota.QuotaSignal, balance.BalanceSignal, invoice.InvoiceLine, plans.Plan):
        for name, f in model.model_fields.items():
            assert "float" not in str(f.annotation), f"{model.__name__}.{name}"
