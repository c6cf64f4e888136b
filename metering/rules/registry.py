"""The registered detector rules, in the order the detector runs them (metering.detect).

A new rule is a module in this package (its ``NAME``, ``Config``, state, ``check`` and
``learn``; ``metering.rules.Rule``), its tests and its line in ``_RULES``. Its config joins
``DetectorConfig.rules`` under its name, with the module's defaults, and its settings
(metering.settings, ``detector_setting``) address it as ``<NAME>.<field>``. A rule outside the
package (a plug-in, a test's) joins with ``register``.
"""

from __future__ import annotations

from typing import Any

from metering.rules import distributed, geography, guessing, rate
from schemas.events import check_extension_name

_RULES: list[Any] = [rate, geography, guessing, distributed]


def rules() -> tuple[Any, ...]:
    """Every registered rule module, in order."""
    return tuple(_RULES)


def register(rule: Any) -> None:
    """Add a rule module (``metering.rules.Rule``) after the registered ones; its name must be
    new. A DetectorConfig made afterwards runs it with its ``Config()`` defaults."""
    check_extension_name(rule.NAME)
    if any(r.NAME == rule.NAME for r in _RULES):
        raise ValueError(f"a rule named {rule.NAME!r} is registered already")
    _RULES.append(rule)


def unregister(name: str) -> None:
    _RULES[:] = [r for r in _RULES if name != r.NAME]


def default_configs() -> dict[str, Any]:
    """Each registered rule's config with its module's defaults, by rule name."""
    return {r.NAME: r.Config() for r in _RULES}


def active(configs: dict[str, Any] | Any) -> tuple[Any, ...]:
    """The registered rules that ``configs`` (a DetectorConfig's ``rules``) configures."""
    return tuple(r for r in _RULES if r.NAME in configs)


RULE_NAMES = tuple(r.NAME for r in _RULES)
"""The package's own rules (the alert schema's ``rule`` values)."""
