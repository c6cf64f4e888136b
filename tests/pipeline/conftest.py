"""What every MiniCluster test of this process shares."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from metering.settings import HASH_KEY_ENV


@pytest.fixture(scope="session")
def pipeline_hash_key() -> Iterator[str]:
    """The hash key of every job of this pytest process. The JVM (and its Python workers)
    inherit the environment once, at the first job, so a key set by a later test would not
    reach them: one key, set before the first job, serves all."""
    before = os.environ.get(HASH_KEY_ENV)
    key = os.environ[HASH_KEY_ENV] = secrets.token_hex(32)
    yield key
    if before is None:
        os.environ.pop(HASH_KEY_ENV, None)
    else:
        os.environ[HASH_KEY_ENV] = before
