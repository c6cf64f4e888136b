"""A tiny MaxMind City-format database written for the tests (no downloaded data).

``write_city_db(path)`` writes an IPv6 tree with IPv4 mapped in (as MaxMind's own databases do),
so IPv4 and IPv6 lookups both work. Only public networks are listed; every other address, private
or public, is absent from the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmdb_writer import MmdbF64, MMDBWriter
from netaddr import IPSet


@dataclass(frozen=True)
class City:
    network: str
    country: str
    country_name: str
    region: str | None
    city: str | None
    latitude: float
    longitude: float


# network -> what a lookup of any address in it must return
CITIES: dict[str, City] = {
    "81.2.69.0/24": City("81.2.69.0/24", "GB", "United Kingdom", "ENG", "London", 51.5142, -0.0931),
    "8.8.8.0/24": City(
        "8.8.8.0/24", "US", "United States", "CA", "Mountain View", 37.386, -122.0838
    ),
    "1.1.1.0/24": City("1.1.1.0/24", "AU", "Australia", None, None, -33.494, 143.2104),
    "2a02:ff0::/32": City("2a02:ff0::/32", "DE", "Germany", None, None, 51.2993, 9.491),
    "88.198.0.0/16": City("88.198.0.0/16", "DE", "Germany", "SN", "Falkenstein", 50.4779, 12.3713),
    "133.242.0.0/16": City("133.242.0.0/16", "JP", "Japan", "13", "Tokyo", 35.6893, 139.6899),
}

# Addresses inside the networks above, by country (no network or broadcast addresses).
GB_IP = "81.2.69.142"
US_IP = "8.8.8.8"
AU_IP = "1.1.1.1"
DE_V6_IP = "2a02:ff0:1:2::5"
DE_IP = "88.198.10.1"
JP_IP = "133.242.1.1"

# Enough addresses per country for testkit.traffic.default_scenario: home countries first, the
# attacker's country (AU) last; DE offers the IPv6 address a mobile consumer needs.
COUNTRY_IPS: dict[str, list[str]] = {
    "DE": ["88.198.10.1", "88.198.10.2", "88.198.10.3", "88.198.10.4", "2a02:ff0:1:2::5"],
    "GB": ["81.2.69.142", "81.2.69.143", "81.2.69.144", "81.2.69.145"],
    "US": ["8.8.8.8", "8.8.8.9", "8.8.8.10", "8.8.8.11"],
    "JP": ["133.242.1.1", "133.242.1.2", "133.242.1.3", "133.242.1.4"],
    "AU": ["1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.1.4"],
}


def _record(c: City) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "country": {"iso_code": c.country, "names": {"en": c.country_name}},
        "location": {"latitude": MmdbF64(c.latitude), "longitude": MmdbF64(c.longitude)},
    }
    if c.region is not None:
        rec["subdivisions"] = [{"iso_code": c.region, "names": {"en": c.region}}]
    if c.city is not None:
        rec["city"] = {"names": {"en": c.city}}
    return rec


def write_city_db(path: Path) -> Path:
    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type="GeoLite2-City",
        languages=["en"],
        description="unit-test city database",
    )
    for network, city in CITIES.items():
        writer.insert_network(IPSet([network]), _record(city))
    writer.to_db_file(str(path))
    return path
