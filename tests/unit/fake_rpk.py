"""A stand-in `rpk` (Redpanda's CLI) that records its arguments, for the scripts that call it."""

from __future__ import annotations

import stat
import sys
import textwrap
from pathlib import Path
from typing import Any

FAKE_RPK = textwrap.dedent(
    """\
    import json, os, sys
    args = sys.argv[1:]
    with open(os.environ["FAKE_RPK_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps(args) + "\\n")
    mode = os.environ.get("FAKE_RPK_MODE", "fresh")
    if args[:2] == ["topic", "create"]:
        print("TOPIC  STATUS")
        if mode == "existing":
            print(args[2], "TOPIC_ALREADY_EXISTS: The topic has already been created.")
            sys.exit(1)
        print(args[2], "OK")
    elif args[:3] == ["security", "user", "list"]:
        print("USERNAME")
        print("admin")
        if mode == "existing":
            print("gateway-pipeline")
    elif args[:3] == ["security", "user", "create"]:
        print('Created user "%s".' % args[3])
    elif args[:3] == ["security", "acl", "create"]:
        print("PRINCIPAL HOST RESOURCE-TYPE RESOURCE-NAME RESOURCE-PATTERN-TYPE OPERATION "
              "PERMISSION ERROR")
        row = "User:gateway-pipeline * TOPIC gateway.raw LITERAL READ ALLOW"
        if mode == "acl-error":
            row += " CLUSTER_AUTHORIZATION_FAILED: not authorized"
        print(row)
    else:
        print("fake rpk: unexpected call", args, file=sys.stderr)
        sys.exit(2)
    """
)


def install_fake_rpk(bin_dir: Path) -> Path:
    """Writes the stand-in as ``bin_dir/rpk``; it logs each call, as a JSON list, to the file
    named by FAKE_RPK_LOG, and FAKE_RPK_MODE (fresh, existing, acl-error) picks its answers."""
    rpk = bin_dir / "rpk"
    rpk.write_text(f"#!{sys.executable}\n{FAKE_RPK}", encoding="utf-8")
    rpk.chmod(rpk.stat().st_mode | stat.S_IXUSR)
    return rpk


def topic_creations(calls: list[list[str]]) -> dict[str, dict[str, Any]]:
    topics: dict[str, dict[str, Any]] = {}
    for call in calls:
        if call[:2] != ["topic", "create"]:
            continue
        name, rest = call[2], call[3:]
        spec: dict[str, Any] = {"config": {}}
        for flag, value in zip(rest[::2], rest[1::2], strict=True):
            if flag == "-c":
                key, _, val = value.partition("=")
                spec["config"][key] = val
            else:
                spec[flag] = value
        topics[name] = spec
    return topics
