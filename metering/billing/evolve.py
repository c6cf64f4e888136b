"""State that outlives a code version.

The billing stage keeps its state (``stream.SubjectBilling`` and what it holds) pickled in
Flink's keyed state. A job upgraded from a savepoint unpickles what the previous version wrote:
a field added since would be missing from those objects, and the first read of it would fail
the job in a restart loop. Dataclasses stored in state derive from ``Evolvable``, and a field
added to one must have a default, which fills it in on restore.
"""

from __future__ import annotations

import dataclasses
from typing import Any


class Evolvable:
    """Unpickling fills in fields the pickled object did not have, from their defaults."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.name in state:
                continue
            if f.default is not dataclasses.MISSING:
                state[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                state[f.name] = f.default_factory()
            else:
                raise TypeError(f"{type(self).__name__}.{f.name} was added without a default")
        # Frozen dataclasses: set the instance dict directly, as pickle itself does.
        self.__dict__.update(state)
