"""IP geocoding on a MaxMind City database (GeoLite2 / GeoIP2 City)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import geoip2.database
import geoip2.errors
import maxminddb

from metering.redact import parse_ip


@dataclass(frozen=True, slots=True)
class Geo:
    country_code: str | None = None
    region: str | None = None
    city: str | None = None
    latitude: float | None = None
    longitude: float | None = None


EMPTY_GEO = Geo()


def default_geoip_db() -> str:
    """Path of the GeoLite2 City snapshot bundled by the maxminddb-geolite2 package (demo only)."""
    # Deferred: only the demo default needs this package.
    from _maxminddb_geolite2 import geolite2_database

    return str(Path(geolite2_database()))


def _is_public(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    addr = parse_ip(ip)
    return addr if addr is not None and addr.is_global else None


class GeoLookup:
    """A City database reader with an LRU cache in front of it.

    Opened once per worker (in a Flink function's ``open()``). Private, reserved, unknown or
    malformed addresses give ``EMPTY_GEO``; a lookup never raises.
    """

    def __init__(self, db_path: str, cache_size: int = 65536) -> None:
        try:
            self._reader = geoip2.database.Reader(db_path)
        except maxminddb.InvalidDatabaseError as e:
            raise ValueError(f"{db_path}: not a MaxMind database ({e})") from None
        db_type = self._reader.metadata().database_type
        if "City" not in db_type:
            self._reader.close()
            raise ValueError(f"{db_path}: a City database is needed, this is {db_type}")
        self.lookup = lru_cache(maxsize=cache_size)(self._lookup_uncached)

    def _lookup_uncached(self, ip: str) -> Geo:
        addr = _is_public(ip)
        if addr is None:
            return EMPTY_GEO
        try:
            rec: Any = self._reader.city(addr)
        except (geoip2.errors.AddressNotFoundError, ValueError, TypeError):
            return EMPTY_GEO
        sub = rec.subdivisions.most_specific if rec.subdivisions else None
        return Geo(
            country_code=rec.country.iso_code or None,
            region=(sub.iso_code or sub.name) if sub is not None else None,
            city=rec.city.name or None,
            latitude=rec.location.latitude,
            longitude=rec.location.longitude,
        )

    def close(self) -> None:
        self._reader.close()
