"""Fixtures shared by the unit tests: a written test GeoIP database, a processor around it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mmdb import write_city_db
from payloads import NOW_MS

from metering.geo import GeoLookup
from metering.records import RecordProcessor
from metering.redact import Pseudonymizer

HASH_KEY = bytes.fromhex("9f2c4e7a1b3d5f60718293a4b5c6d7e8f9012a3b4c5d6e7f8091a2b3c4d5e6f7")


@pytest.fixture(scope="session")
def city_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_city_db(tmp_path_factory.mktemp("geoip") / "test-city.mmdb")


@pytest.fixture(scope="session")
def geo(city_db: Path) -> Iterator[GeoLookup]:
    lookup = GeoLookup(str(city_db))
    yield lookup
    lookup.close()


@pytest.fixture(scope="session")
def pseudonymizer() -> Pseudonymizer:
    return Pseudonymizer(HASH_KEY)


@pytest.fixture(scope="session")
def processor(pseudonymizer: Pseudonymizer, geo: GeoLookup) -> RecordProcessor:
    return RecordProcessor(pseudonymizer, geo.lookup, clock=lambda: NOW_MS / 1000)
