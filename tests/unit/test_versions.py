"""One variable pins PyFlink and the Kafka connector; everything else must agree with it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _make_var(name: str) -> str:
    match = re.search(rf"^{name}\s*[:?]?=\s*(.+?)\s*$", (REPO / "Makefile").read_text(), re.M)
    assert match, f"{name} not set in the Makefile"
    return match.group(1)


def test_pyproject_pins_the_makefile_flink_version() -> None:
    flink = _make_var("FLINK_VERSION")
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"apache-flink=={flink}" in deps


def test_connector_version_is_derived_from_the_flink_minor() -> None:
    flink = _make_var("FLINK_VERSION")
    assert _make_var("KAFKA_CONNECTOR_VERSION") == "5.0.0-$(basename $(FLINK_VERSION))"
    # $(basename 2.2.1) in make is "2.2": the connector artifact built for this Flink minor.
    assert flink.rsplit(".", 1)[0] == "2.2"


def test_pom_defaults_match_the_makefile() -> None:
    pom = (REPO / "deploy/pom.xml").read_text()
    flink = _make_var("FLINK_VERSION")
    kafka = _make_var("KAFKA_VERSION")
    assert f"<flink.version>{flink}</flink.version>" in pom
    assert f"<kafka.version>{kafka}</kafka.version>" in pom
    assert "<kafka.connector.version>5.0.0-2.2</kafka.connector.version>" in pom
