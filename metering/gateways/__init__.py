"""The access-log formats the parse reads, one module each, and the registry that orders them.

Each format module (see ``metering.gateways.base.GatewayFormat``) holds its pydantic input model,
its ``sniff`` and its ``to_event``. ``metering.records.RecordProcessor`` asks the registered
formats in order whether an entry is theirs; the first that says yes validates and maps it. A
processor takes the registry as it is when it is built, so a plugin registers its format
before the job builds its processors (docs/extending-gateways.md).
"""

from __future__ import annotations

from typing import Final

from metering.gateways import apisix, generic, kong
from metering.gateways.base import (
    NO_KEY,
    EventBuilder,
    EventFields,
    GatewayFormat,
    NoKey,
    Unusable,
    epoch_ms,
    first_header,
    opt_int,
)
from schemas.events import check_extension_name

__all__ = [
    "BUILT_IN",
    "NO_KEY",
    "EventBuilder",
    "EventFields",
    "GatewayFormat",
    "NoKey",
    "Unusable",
    "epoch_ms",
    "first_header",
    "opt_int",
    "register",
    "registered",
    "unknown_format_detail",
    "unregister",
]

BUILT_IN: Final[tuple[GatewayFormat, ...]] = (kong, apisix, generic)
"""The formats of this package, in sniff order. Kong entries also carry ``request`` and
``response``, which APISIX's sniff looks for, so Kong is asked first; an entry with an
``endpoint`` is a generic event only if no gateway claimed it."""

_registry: list[GatewayFormat] = list(BUILT_IN)


def registered() -> tuple[GatewayFormat, ...]:
    """Every registered format, in sniff order."""
    return tuple(_registry)


def register(fmt: GatewayFormat, *, before: str | None = None) -> None:
    """Add ``fmt`` to the registry: sniffed just before the format named ``before``, or last.

    A format whose entries another format's sniff would also claim goes before that one.
    """
    check_extension_name(fmt.NAME)
    names = [f.NAME for f in _registry]
    if fmt.NAME in names:
        raise ValueError(f"a gateway format named {fmt.NAME!r} is already registered")
    if before is None:
        _registry.append(fmt)
    elif before in names:
        _registry.insert(names.index(before), fmt)
    else:
        raise ValueError(f"no registered gateway format named {before!r}")


def unregister(name: str) -> None:
    """Remove the format named ``name`` (a test's, a plugin's) from the registry."""
    for i, fmt in enumerate(_registry):
        if name == fmt.NAME:
            del _registry[i]
            return
    raise ValueError(f"no registered gateway format named {name!r}")


def unknown_format_detail(formats: tuple[GatewayFormat, ...]) -> str:
    """The detail of an unknown_format dead letter: the formats it is none of, in sniff order."""
    labels = [f.LABEL for f in formats]
    if len(labels) < 2:
        return f"not {labels[0]}" if labels else "no gateway format registered"
    return f"neither {', '.join(labels[:-1])} nor {labels[-1]}"
