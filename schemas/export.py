"""Write the JSON Schema of every output record to ``schemas/json/<name>.schema.json``.

    python -m schemas.export            # (re)write the files
    python -m schemas.export --check    # exit 1 if a file is missing, differs or is stale (CI)

One file per entry of ``schemas.events.OUTPUT_MODELS``. The output is deterministic (sorted keys,
two-space indent, trailing newline), so the committed files only change when a model does. Writing
also removes ``*.schema.json`` files whose model no longer exists.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from schemas.events import OUTPUT_MODELS

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_DIR = Path(__file__).resolve().parent / "json"
SUFFIX = ".schema.json"


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema (validation mode: what a consumer may check a record against)."""
    return {"$schema": JSON_SCHEMA_DIALECT, **model.model_json_schema(mode="validation")}


def render(model: type[BaseModel]) -> str:
    return json.dumps(schema_of(model), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render_all(models: Mapping[str, type[BaseModel]] = OUTPUT_MODELS) -> dict[str, str]:
    """File name -> file content, for every model."""
    return {f"{name}{SUFFIX}": render(model) for name, model in sorted(models.items())}


def stale_files(directory: Path, expected: Mapping[str, str]) -> list[Path]:
    """``*.schema.json`` files in ``directory`` that no model produces."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob(f"*{SUFFIX}") if p.name not in expected)


def check(directory: Path, expected: Mapping[str, str]) -> list[str]:
    """Problems that make the directory differ from a fresh export (empty when up to date)."""
    problems = []
    for name, content in expected.items():
        path = directory / name
        if not path.is_file():
            problems.append(f"missing: {path}")
        elif path.read_text(encoding="utf-8") != content:
            problems.append(f"out of date: {path}")
    problems.extend(f"stale (no such model): {p}" for p in stale_files(directory, expected))
    return problems


def write(directory: Path, expected: Mapping[str, str]) -> list[str]:
    """Write changed files and remove stale ones; returns what was done."""
    directory.mkdir(parents=True, exist_ok=True)
    actions = []
    for name, content in expected.items():
        path = directory / name
        if path.is_file() and path.read_text(encoding="utf-8") == content:
            continue
        path.write_text(content, encoding="utf-8", newline="\n")
        actions.append(f"wrote {path}")
    for path in stale_files(directory, expected):
        path.unlink()
        actions.append(f"removed {path}")
    return actions


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m schemas.export",
        description="Write the JSON Schema of each output record model to schemas/json/.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if a file is missing, differs from a fresh export or is stale",
    )
    parser.add_argument(
        "--out-dir", type=Path, default=SCHEMA_DIR, help=f"directory (default: {SCHEMA_DIR})"
    )
    args = parser.parse_args(argv)
    expected = render_all()

    if args.check:
        problems = check(args.out_dir, expected)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print(
                "run `python -m schemas.export` (or `make schemas`) and commit the result",
                file=sys.stderr,
            )
            return 1
        print(f"{len(expected)} schema files up to date in {args.out_dir}")
        return 0

    actions = write(args.out_dir, expected)
    for action in actions:
        print(action)
    if not actions:
        print(f"{len(expected)} schema files already up to date in {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
