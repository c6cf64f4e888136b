"""Gateway log entries from neutral descriptions of calls: one renderer per format.

``Call`` says what happened; ``apisix.render``, ``kong.render`` and ``generic.render`` write it
as that gateway logs it (``RENDERERS`` by the enriched event's ``gateway`` name). testkit.traffic,
testkit.hostile and the unit tests' payloads build their entries this way, so a new format needs
one renderer here and works in all of them. Independent of the job's parser
(``metering.gateways``), so what the kit expects never comes from the code under test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from testkit.gateways import apisix, generic, kong
from testkit.gateways.call import Call, Entry, encode, merged

__all__ = ["RENDERERS", "Call", "Entry", "Renderer", "encode", "merged", "render"]

Renderer = Callable[[Call], Entry]

RENDERERS: Final[dict[str, Renderer]] = {
    apisix.NAME: apisix.render,
    kong.NAME: kong.render,
    generic.NAME: generic.render,
}


def render(gateway: str, call: Call) -> Entry:
    """``call`` as the gateway named ``gateway`` logs it."""
    return RENDERERS[gateway](call)
