"""Deterministic record ids: the same facts give the same id, on every replay and re-export."""

from __future__ import annotations

import hashlib
import json


def record_id(*parts: str | int) -> str:
    """SHA-256 (hex, 64 characters) of the parts as a JSON array: unambiguous whatever the parts
    contain (``("a|b", "c")`` and ``("a", "b|c")`` differ), stable across processes."""
    text = json.dumps(list(parts), separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
