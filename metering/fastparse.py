"""The parse's fast path: msgspec twins of the input models, and a depth-bounded JSON decoder.

``metering.records.RecordProcessor`` first tries each record this way and falls back to the
reference path (orjson or json, the depth walk, pydantic) whenever this one is unsure, so a
record's events, dead letters and dedup ids are those of the reference path either way. The
fast path therefore only has to accept a *subset* of what the reference accepts, with the same
values:

- ``decoder(depth)`` reads JSON into the same dicts, lists and scalars as orjson/json, in C, and
  refuses anything nested deeper than ``depth`` containers (msgspec's own limit is Python's
  recursion limit, far above ``Limits.max_depth``). It reads integers exactly, as json does where
  orjson would round them, and refuses what the reference refuses or treats specially (invalid
  UTF-8, lone surrogate escapes, NaN literals, numbers beyond a double).
- ``twin(model)`` is a msgspec Struct generated from a pydantic input model of a gateway format
  (metering.gateways, the schema's one source of truth): the same fields, defaults and numeric
  bounds, converted with ``strict=True``, so only JSON values of the declared types pass: none of
  pydantic's lax coercions (``"200"`` as a status, ``200.0`` as an int), which take the reference
  path instead. A datetime is taken only as RFC 3339 text with at most 6 fractional digits
  (``RFC3339``), where msgspec and pydantic read the same instant. Twins skip unknown fields,
  as the models ignore them.
"""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Callable
from datetime import datetime
from functools import cache
from typing import Annotated, Any, Union, get_args, get_origin

import annotated_types
import msgspec
from pydantic import BaseModel
from pydantic.fields import FieldInfo

FAST_MAX_DEPTH = 10
"""The fast decoder's nesting bound (gateway entries nest 5 deep in a batch). Each level doubles
the size of msgspec's type tree, so deeper records take the reference path, which applies
``Limits.max_depth`` exactly."""


class Unsure(Exception):
    """The fast path cannot vouch for this record: take the reference path."""


_SCALAR: Any = str | int | float | bool | None


def decoder(depth: int) -> msgspec.json.Decoder[Any]:
    """A JSON decoder for values nested at most ``depth`` containers deep (0: scalars only),
    or FAST_MAX_DEPTH if that is less."""
    return _decoder(max(0, min(depth, FAST_MAX_DEPTH)))


@cache
def _decoder(depth: int) -> msgspec.json.Decoder[Any]:
    t: Any = _SCALAR
    for _ in range(depth):
        t = Union[_SCALAR, dict[str, t], list[t]]  # noqa: UP007 (built at run time)
    return msgspec.json.Decoder(t)


# -- twins of the pydantic input models ------------------------------------------------------

_BOUNDS = {
    annotated_types.Ge: "ge",
    annotated_types.Gt: "gt",
    annotated_types.Le: "le",
    annotated_types.Lt: "lt",
}

# Field validators of the models, each with a test of the raw value that says the validator
# leaves it unchanged; the fast path takes only such values. A model with a validator not listed
# here has no twin (twin() raises), so a new validator cannot be skipped silently.
KEPT_BY_VALIDATOR: dict[str, Callable[[Any], bool]] = {
    # GenericUsageEvent._not_blank turns a blank id into None.
    "GenericUsageEvent._not_blank": lambda v: not isinstance(v, str) or bool(v.strip()),
}

RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:Z|[+-][0-9]{2}:[0-9]{2})"
)
"""The datetime text the fast path takes. Beyond it the two parsers part: msgspec rounds a 7th
fractional digit where pydantic truncates, and pydantic also reads dates alone, ``,`` fractions
and epoch numbers as text."""


def _is_rfc3339(value: Any) -> bool:
    return not isinstance(value, str) or RFC3339.fullmatch(value) is not None


def _meta(metadata: list[Any], finite: bool) -> msgspec.Meta | None:
    bounds: dict[str, Any] = {}
    for m in metadata:
        if type(m) in _BOUNDS:
            name = _BOUNDS[type(m)]
            bounds[name] = getattr(m, name)
        else:
            raise TypeError(f"no msgspec equivalent of the constraint {m!r}")
    if finite and not bounds:
        # allow_inf_nan=False: keep out inf (NaN fails every comparison anyway).
        bounds = {"ge": -sys.float_info.max, "le": sys.float_info.max}
    return msgspec.Meta(**bounds) if bounds else None


def _twin_type(tp: Any, metadata: list[Any], finite: bool) -> Any:
    origin = get_origin(tp)
    if origin is Annotated:
        base, *extra = get_args(tp)
        inner: list[Any] = list(metadata)
        for e in extra:
            inner.extend(e.metadata if isinstance(e, FieldInfo) else [e])
        return _twin_type(base, inner, finite)
    if origin in (Union, types.UnionType):
        converted = tuple(_twin_type(a, [], finite) for a in get_args(tp))
        return Union[converted] if len(converted) > 1 else converted[0]  # noqa: UP007
    if tp is datetime:
        return datetime
    if metadata or tp is float:
        if tp not in (int, float):
            raise TypeError(f"bounds on {tp!r}")
        meta = _meta(metadata, finite and tp is float)
        return Annotated[tp, meta] if meta is not None else tp
    if origin is dict:
        key, value = get_args(tp)
        return dict[_twin_type(key, [], finite), _twin_type(value, [], finite)]  # type: ignore[misc]
    if origin is list:
        (item,) = get_args(tp)
        return list[_twin_type(item, [], finite)]  # type: ignore[misc]
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return twin(tp)
    if tp in (str, int, bool, type(None)):
        return tp
    raise TypeError(f"no msgspec twin for {tp!r}")


@cache
def twin(model: type[BaseModel]) -> Any:
    """The msgspec Struct of ``model``: same field names, types, bounds and defaults."""
    for deco in model.__pydantic_decorators__.field_validators.values():
        if _qualname(deco) not in KEPT_BY_VALIDATOR:
            raise TypeError(f"{_qualname(deco)}: a validator the fast path does not know")
    finite = model.model_config.get("allow_inf_nan", True) is False
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for name, info in model.model_fields.items():
        tp = _twin_type(info.annotation, list(info.metadata), finite)
        if info.is_required():
            fields.append((name, tp))
        elif info.default_factory is not None:
            factory: Any = info.default_factory  # pydantic's may take the data; these do not
            fields.append((name, tp, msgspec.field(default_factory=factory)))
        elif isinstance(info.default, BaseModel):
            fields.append((name, tp, msgspec.field(default_factory=_default_twin(info.default))))
        else:
            fields.append((name, tp, info.default))
    return msgspec.defstruct(model.__name__, fields, kw_only=True)


def _default_twin(default: BaseModel) -> Callable[[], Any]:
    data = default.model_dump()
    return lambda: msgspec.convert(data, twin(type(default)), strict=True)


def _qualname(decorator: Any) -> str:
    """Where a validator is defined (a subclass inherits its base's)."""
    return str(decorator.func.__qualname__)


def _has_datetime(tp: Any) -> bool:
    return tp is datetime or any(_has_datetime(a) for a in get_args(tp))


def raw_checks(model: type[BaseModel]) -> list[tuple[tuple[str, ...], Callable[[Any], bool]]]:
    """Tests of an entry's raw field values, beyond its twin's types: the fields of ``model``
    under a validator (KEPT_BY_VALIDATOR), and its datetime fields (RFC3339)."""
    decos = model.__pydantic_decorators__.field_validators
    checks = [(d.info.fields, KEPT_BY_VALIDATOR[_qualname(d)]) for d in decos.values()]
    dated = tuple(n for n, f in model.model_fields.items() if _has_datetime(f.annotation))
    if dated:
        checks.append((dated, _is_rfc3339))
    return checks


@cache
def _converter(model: type[BaseModel]) -> Callable[[dict[str, Any]], Any]:
    struct = twin(model)
    checks = raw_checks(model)

    def convert(entry: dict[str, Any]) -> Any:
        for names, kept in checks:
            for name in names:
                if not kept(entry.get(name)):
                    raise Unsure
        try:
            return msgspec.convert(entry, struct, strict=True)
        except msgspec.ValidationError:
            raise Unsure from None

    return convert


def convert(model: type[BaseModel], entry: dict[str, Any]) -> Any:
    """``entry`` as the twin of ``model``, with the values ``model.model_validate`` gives (floats
    as floats), or Unsure."""
    return _converter(model)(entry)
