"""The committed JSON Schemas in schemas/json/ are what `python -m schemas.export` writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schemas import export
from schemas.events import OUTPUT_MODELS


def test_committed_schemas_equal_a_fresh_export() -> None:
    expected = export.render_all()
    assert sorted(expected) == sorted(f"{name}.schema.json" for name in OUTPUT_MODELS)
    for name, content in expected.items():
        path = export.SCHEMA_DIR / name
        assert path.is_file(), f"{path} is missing: run `make schemas` and commit it"
        assert path.read_text(encoding="utf-8") == content, (
            f"{path} is out of date: run `make schemas` and commit it"
        )
    assert export.stale_files(export.SCHEMA_DIR, expected) == []


def test_check_mode_passes_on_the_committed_files() -> None:
    assert export.main(["--check"]) == 0


def test_export_is_deterministic() -> None:
    assert export.render_all() == export.render_all()
    for content in export.render_all().values():
        assert content.endswith("}\n")
        assert json.dumps(json.loads(content), indent=2, sort_keys=True) + "\n" == content


def test_check_reports_missing_changed_and_stale_files(tmp_path: Path) -> None:
    assert export.main(["--check", "--out-dir", str(tmp_path)]) == 1

    assert export.main(["--out-dir", str(tmp_path)]) == 0
    assert export.main(["--check", "--out-dir", str(tmp_path)]) == 0

    first = tmp_path / "alert.schema.json"
    first.write_text(first.read_text(encoding="utf-8").replace("Alert", "Alarm"), encoding="utf-8")
    stale = tmp_path / "removed_model.schema.json"
    stale.write_text("{}\n", encoding="utf-8")
    problems = export.check(tmp_path, export.render_all())
    assert f"out of date: {first}" in problems
    assert f"stale (no such model): {stale}" in problems
    assert export.main(["--check", "--out-dir", str(tmp_path)]) == 1

    # Writing repairs both: the changed file is rewritten, the stale one removed.
    assert export.main(["--out-dir", str(tmp_path)]) == 0
    assert not stale.exists()
    assert export.check(tmp_path, export.render_all()) == []


@pytest.mark.parametrize("name", sorted(OUTPUT_MODELS))
def test_schema_files_are_valid_json_schema(name: str) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((export.SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))
    assert schema["$schema"] == export.JSON_SCHEMA_DIALECT
    assert schema["title"] == OUTPUT_MODELS[name].__name__
    # Records are checked with extra="forbid"; the schema says the same.
    assert schema["additionalProperties"] is False
    jsonschema.Draft202012Validator.check_schema(schema)
