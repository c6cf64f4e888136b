"""State that outlives a code version.

The job keeps Python objects pickled in Flink's keyed state: the billing stage's
(``billing.stream.SubjectBilling`` and what it holds) and the detector's (``detect.KeyState``
and each rule's slice). A job upgraded from a savepoint unpickles what the previous version
wrote: a field added since would be missing from those objects, and the first read of it would
fail the job in a restart loop. Dataclasses stored in state derive from ``Evolvable``, and a
field added to one must have a default, which fills it in on restore. Not a dataclass that is
both frozen and slotted: for those, dataclasses installs a ``__setstate__`` of its own.
"""

from __future__ import annotations

import dataclasses
from typing import Any


class Evolvable:
    """Unpickling fills in fields the pickled object did not have, from their defaults."""

    __slots__ = ()  # so that a dataclass with slots=True stays without a __dict__

    def __setstate__(self, state: Any) -> None:
        # A class with __dict__ pickles it; one with slots pickles (its __dict__ or None, slots).
        values: dict[str, Any] = {}
        for part in state if isinstance(state, tuple) else (state,):
            values.update(part or {})
        fields = dataclasses.fields(self)  # type: ignore[arg-type]
        for f in fields:
            if f.name in values:
                continue
            if f.default is not dataclasses.MISSING:
                values[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                values[f.name] = f.default_factory()
            else:
                values[f.name] = self._restore_missing(f.name)
        # Set directly, as pickle itself does, so frozen (unslotted) dataclasses restore too. A
        # field removed since is dropped.
        for f in fields:
            object.__setattr__(self, f.name, values[f.name])

    def _restore_missing(self, name: str) -> Any:
        raise TypeError(f"{type(self).__name__}.{name} was added without a default")
