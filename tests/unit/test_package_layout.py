"""The product apart from its laboratory: the package pyproject.toml builds holds the job, its
logic, its schemas, the responder and the operator CLIs, never the test kit, the bench or the
evaluation, and no product module imports them."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

from setuptools import find_packages

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("dashboard", "jobs", "metering", "responder", "schemas", "tools", "udfs")
LABORATORY = ("testkit", "bench", "evaluation", "tests")


def _shipped() -> list[str]:
    find = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    return find_packages(str(REPO), include=find["find"]["include"])


def test_the_package_ships_the_product_and_nothing_else() -> None:
    shipped = _shipped()
    assert {p.split(".")[0] for p in shipped} == set(PRODUCT)
    assert not [p for p in shipped if p.split(".")[0] in LABORATORY]


def test_no_product_module_imports_the_laboratory() -> None:
    offenders = []
    for package in PRODUCT:
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom) and node.level == 0
                    else []
                )
                offenders += [
                    f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] in LABORATORY
                ]
    assert offenders == []
