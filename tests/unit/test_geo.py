"""GeoLookup on the City database written by tests/unit/mmdb.py."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from mmdb import AU_IP, CITIES, DE_IP, DE_V6_IP, GB_IP, JP_IP, US_IP
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from metering.geo import EMPTY_GEO, Geo, GeoLookup


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        (GB_IP, Geo("GB", "ENG", "London", 51.5142, -0.0931)),
        ("81.2.69.1", Geo("GB", "ENG", "London", 51.5142, -0.0931)),
        (US_IP, Geo("US", "CA", "Mountain View", 37.386, -122.0838)),
        (AU_IP, Geo("AU", None, None, -33.494, 143.2104)),
        (DE_V6_IP, Geo("DE", None, None, 51.2993, 9.491)),
        ("2a02:ff0:ffff::1", Geo("DE", None, None, 51.2993, 9.491)),
        (DE_IP, Geo("DE", "SN", "Falkenstein", 50.4779, 12.3713)),
        (JP_IP, Geo("JP", "13", "Tokyo", 35.6893, 139.6899)),
        # IPv4-mapped IPv6 and surrounding whitespace are unwrapped before the lookup.
        ("::ffff:81.2.69.142", Geo("GB", "ENG", "London", 51.5142, -0.0931)),
        (f" {US_IP}\t", Geo("US", "CA", "Mountain View", 37.386, -122.0838)),
    ],
)
def test_known_addresses(geo: GeoLookup, ip: str, expected: Geo) -> None:
    assert geo.lookup(ip) == expected


def test_every_written_network_is_found(geo: GeoLookup) -> None:
    for network, city in CITIES.items():
        got = geo.lookup(str(ipaddress.ip_network(network)[77]))
        assert (got.country_code, got.region, got.city) == (city.country, city.region, city.city)
        assert (got.latitude, got.longitude) == (city.latitude, city.longitude)


@pytest.mark.parametrize(
    "ip",
    [
        "10.0.3.17",  # private
        "192.168.1.10",
        "172.16.5.4",
        "127.0.0.1",  # loopback
        "::1",
        "fe80::1",  # link-local
        "fe80::1%eth0",
        "fc00::1",  # unique local
        "192.0.2.1",  # documentation (TEST-NET-1)
        "198.51.100.7",
        "2001:db8::1",
        "0.0.0.0",
        "255.255.255.255",
        "224.0.0.1",  # multicast
        "100.64.0.1",  # carrier-grade NAT
        "9.9.9.9",  # public, but not in the database
        "2a03:2880::1",
        "81.2.70.1",  # next to a known network
        "not-an-ip",
        "",
        "   ",
        "81.2.69.142:443",
        "81.2.69.142/24",
        "1.2.3.4.5",
        "[2a02:ff0::1]",
        "\x00",
        "81.2.69.142, 10.0.0.1",
    ],
)
def test_unknown_private_reserved_and_invalid_give_empty_geo(geo: GeoLookup, ip: str) -> None:
    assert geo.lookup(ip) == EMPTY_GEO
    assert geo.lookup(ip) == Geo(None, None, None, None, None)


def test_lookups_are_cached(city_db: Path) -> None:
    lookup = GeoLookup(str(city_db), cache_size=16)
    try:
        first = lookup.lookup(GB_IP)
        before = lookup.lookup.cache_info()
        assert (before.hits, before.misses) == (0, 1)
        again = lookup.lookup(GB_IP)
        after = lookup.lookup.cache_info()
        assert again is first
        assert (after.hits, after.misses) == (1, 1)
        assert lookup.lookup("10.0.0.1") is EMPTY_GEO
        assert lookup.lookup.cache_info().misses == 2
        for i in range(40):  # more distinct addresses than the cache holds
            lookup.lookup(f"81.2.69.{i + 1}")
        assert lookup.lookup.cache_info().currsize == 16
    finally:
        lookup.close()


def test_a_database_that_is_not_a_city_database_is_rejected(tmp_path: Path) -> None:
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-ASN")
    writer.insert_network(IPSet(["8.8.8.0/24"]), {"autonomous_system_number": 15169})
    path = tmp_path / "asn.mmdb"
    writer.to_db_file(str(path))
    with pytest.raises(ValueError, match="a City database is needed, this is GeoLite2-ASN"):
        GeoLookup(str(path))


def test_a_file_that_is_not_a_maxmind_database_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "garbage.mmdb"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ValueError, match="not a MaxMind database"):
        GeoLookup(str(path))


def test_a_missing_database_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        GeoLookup(str(tmp_path / "missing.mmdb"))
