"""The billing CLI (tools/billing.py): help, invoice and reconcile from files, and the topic
commands against an in-memory stand-in for the compacted topics (no broker)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import tools.billing as cli
from metering.billing.periods import bounds
from metering.billing.plans import loads_json
from metering.billing.settings import settings_from
from metering.billing.topics import GRANTS, PLANS, SUBSCRIPTIONS

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "metering/billing/catalog.example.toml"
PERIOD = "2026-12"
START, END = bounds(PERIOD)
DAY = 86_400_000

COMMANDS = [
    [],
    ["topics"],
    ["plans"],
    ["plans", "list"],
    ["plans", "put"],
    ["plans", "delete"],
    ["subscriptions"],
    ["subscriptions", "list"],
    ["subscriptions", "put"],
    ["subscriptions", "delete"],
    ["grants"],
    ["grants", "list"],
    ["grants", "put"],
    ["seed"],
    ["invoice"],
    ["reconcile"],
]


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_flag_and_argument_has_help() -> None:
    missing = [
        f"{p.prog}: {a.dest}"
        for p in _parsers(cli.build_parser())
        for a in p._actions
        if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and not a.help
    ]
    assert missing == []
    progs = {
        p.prog.removeprefix("python -m tools.billing").strip() for p in _parsers(cli.build_parser())
    }
    assert progs == {" ".join(c) for c in COMMANDS}


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_every_command_prints_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main([*command, "--help"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith("usage: python -m tools.billing")


def test_python_m_tools_billing_help_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tools.billing", "invoice", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--from-usage-file" in done.stdout and "BILLING_BOOTSTRAP_SERVERS" in done.stdout


def usage_record(subject: str, at: int, count: int, paths: dict[str, int] | None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "kind": "window",
        "rate_key": subject,
        "consumer": subject,
        "key_fingerprint": None,
        "window_start": at - at % 10_000,
        "window_end": at - at % 10_000 + 10_000,
        "count": count,
        "units": float(count),
        "auth_failures": 0,
        "countries": [],
    }
    return record | ({"paths": paths} if paths is not None else {})


def enriched(subject: str, at: int, path: str, n: int) -> dict[str, Any]:
    return {
        "event_id": f"t-0-{n}-0",
        "gateway": "apisix",
        "rate_key": subject,
        "consumer": subject,
        "path": path,
        "auth_failed": False,
        "event_time": at,
        "processing_time": at,
        "source_partition": 0,
        "source_offset": n,
    }


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_invoice_then_reconcile_from_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mid = START + 14 * DAY
    events = [
        *(enriched("acme-analytics", START + DAY + i, "/v1/valuations/1", i) for i in range(2_100)),
        *(enriched("acme-analytics", mid + i, "/v1/orders", 10_000 + i) for i in range(3_000)),
        *(enriched("globex-mobile", START + i, "/v1/search", 20_000 + i) for i in range(70)),
        enriched("nobody", START, "/v1/orders", 99_999),  # no subscription: not invoiced
    ]
    records = [
        usage_record("acme-analytics", START + DAY, 2_100, {"/v1/valuations/1": 2_100}),
        usage_record("acme-analytics", mid, 3_000, {"/v1/orders": 3_000}),
        usage_record("globex-mobile", START, 70, None),  # metered weighs no route: no paths needed
        usage_record("nobody", START, 1, None),
    ]
    usage = write_jsonl(tmp_path / "usage.jsonl", records)
    lines, stripe = tmp_path / "lines.jsonl", tmp_path / "stripe.jsonl"
    code = cli.main(
        [
            "invoice",
            "--period",
            PERIOD,
            "--from-usage-file",
            str(usage),
            "--catalog",
            str(EXAMPLE),
            "--lines-out",
            str(lines),
            "--stripe-out",
            str(stripe),
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "1 calls without a subscription" in out.err
    got = [json.loads(line) for line in lines.read_text().splitlines()]
    # acme: 2,100 valuations are 10,500 units on Bronze (500 over: $1), then 3,000 units on
    # Gold from unit 10,501 (within Gold's 100,000).
    assert [(g["subject"], g["plan_id"], g["quantity"], g["amount"]) for g in got] == [
        ("acme-analytics", "bronze", 10_500, "1.00"),
        ("acme-analytics", "gold", 3_000, "0.00"),
        ("globex-mobile", "metered", 70, "0.14"),
    ]
    meter = [json.loads(line) for line in stripe.read_text().splitlines()]
    assert [m["payload"] for m in meter] == [
        {"stripe_customer_id": "cus_DemoAcme001", "value": "10500"},
        {"stripe_customer_id": "cus_DemoAcme001", "value": "3000"},
        {"stripe_customer_id": "cus_DemoGlobex01", "value": "70"},
    ]
    # Re-export: byte for byte the same file.
    again = tmp_path / "stripe2.jsonl"
    cli.main(
        [
            "invoice",
            "--period",
            PERIOD,
            "--from-usage-file",
            str(usage),
            "--catalog",
            str(EXAMPLE),
            "--lines-out",
            str(tmp_path / "l2"),
            "--stripe-out",
            str(again),
        ]
    )
    assert again.read_bytes() == stripe.read_bytes()

    enriched_file = write_jsonl(tmp_path / "enriched.jsonl", events)
    args = [
        "reconcile",
        "--period",
        PERIOD,
        "--invoice-lines",
        str(lines),
        "--enriched-file",
        str(enriched_file),
        "--catalog",
        str(EXAMPLE),
    ]
    assert cli.main(args) == 0
    assert "0 differences" in capsys.readouterr().out
    # One more call in the enriched events than was invoiced: found, non-zero exit.
    write_jsonl(enriched_file, [*events, enriched("globex-mobile", START + 5, "/v1/search", 7)])
    assert cli.main(args) == cli.EXIT_DIFFERENCES
    out_text = capsys.readouterr().out
    assert "globex-mobile 2026-12 metered: calls: invoiced 70, enriched events 71" in out_text


def test_invoice_refuses_unrouted_calls_on_weighted_plans(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    usage = write_jsonl(tmp_path / "usage.jsonl", [usage_record("acme-analytics", START, 5, None)])
    base = [
        "invoice",
        "--period",
        PERIOD,
        "--from-usage-file",
        str(usage),
        "--catalog",
        str(EXAMPLE),
        "--lines-out",
        str(tmp_path / "l"),
        "--stripe-out",
        str(tmp_path / "s"),
    ]
    assert cli.main(base) == cli.EXIT_BAD_INPUT
    assert "5 calls have no path" in capsys.readouterr().err
    assert cli.main([*base, "--allow-unrouted"]) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["invoice", "--period", "2026-13", "--from-usage-file", "x"], "not a period"),
        (
            [
                "reconcile",
                "--period",
                PERIOD,
                "--invoice-lines",
                "/nonexistent",
                "--enriched-file",
                "x",
                "--catalog",
                str(EXAMPLE),
            ],
            "cannot read",
        ),
        (
            ["invoice", "--period", PERIOD, "--from-usage-file", "x", "--catalog", "/nope.toml"],
            "cannot read",
        ),
    ],
)
def test_bad_input_exits_2_with_a_message(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(args) == cli.EXIT_BAD_INPUT
    assert message in capsys.readouterr().err


def test_settings_come_from_flags_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_PLANS_TOPIC", "from-env")
    monkeypatch.setenv("BILLING_GRANTS_TOPIC", "grants-env")
    args = cli.build_parser().parse_args(["plans", "list", "--plans-topic", "from-flag"])
    settings = settings_from(vars(args))
    assert (settings.plans_topic, settings.grants_topic) == ("from-flag", "grants-env")
    with pytest.raises(SystemExit):
        cli.main(["plans", "list", "--bootstrap-servers", "nohostport"])


# --- topic commands against an in-memory compacted topic ----------------------------------------


class FakeTopics:
    """Latest value per key per topic, as the CLI reads a compacted topic back."""

    def __init__(self) -> None:
        self.topics: dict[str, dict[str, Any]] = {
            t.name: {} for t in (PLANS, SUBSCRIPTIONS, GRANTS)
        }
        self.writes: list[tuple[str, str, str | None]] = []

    def read(self, topic: str) -> dict[str, Any]:
        return {k: loads_json(v) for k, v in self.topics[topic].items()}

    def write(self, records: Sequence[tuple[str, str, BaseModel | None]]) -> None:
        for topic, key, value in records:
            text = value.model_dump_json() if value is not None else None
            self.writes.append((topic, key, text))
            if text is None:
                self.topics[topic].pop(key, None)
            else:
                self.topics[topic][key] = text


@pytest.fixture
def topics(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTopics]:
    fake = FakeTopics()
    monkeypatch.setattr(cli.Kafka, "read", fake.read)
    monkeypatch.setattr(cli.Kafka, "write", fake.write)
    yield fake


def test_seed_then_list_put_and_delete(
    topics: FakeTopics, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["seed", "--catalog", str(EXAMPLE)]) == 0
    assert set(topics.topics[PLANS.name]) == {
        "bronze",
        "gold",
        "platinum",
        "payg",
        "trial",
        "metered",
    }
    assert "acme-analytics@1797292800000" in topics.topics[SUBSCRIPTIONS.name]
    assert list(topics.topics[GRANTS.name]) == ["globex-2026-12-topup-1"]
    # Seeding again writes the same keys and values: the compacted topics do not change.
    before = {k: dict(v) for k, v in topics.topics.items()}
    assert cli.main(["seed", "--catalog", str(EXAMPLE)]) == 0
    assert topics.topics == before
    capsys.readouterr()

    assert cli.main(["plans", "list"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [p["id"] for p in listed] == ["bronze", "gold", "metered", "payg", "platinum", "trial"]
    assert listed[0]["overage"] == "0.002"  # money as text on the topic

    # A plan in use is not deleted without --force; an unused one is (a tombstone).
    assert cli.main(["plans", "delete", "bronze"]) == cli.EXIT_BAD_INPUT
    plan = tmp_path / "silver.json"
    plan.write_text(
        '{"id": "silver", "name": "Silver", "included_units": 50000, "overage": "0.0015"}'
    )
    assert cli.main(["plans", "put", "--file", str(plan)]) == 0
    assert cli.main(["plans", "delete", "silver"]) == 0
    assert topics.writes[-1] == (PLANS.name, "silver", None)

    # A float price in a plan file is read exactly (JSON numbers become Decimal).
    plan.write_text('{"id": "silver", "name": "Silver", "tiers": [{"unit_price": 0.1}]}')
    assert cli.main(["plans", "put", "--file", str(plan)]) == 0
    assert json.loads(topics.topics[PLANS.name]["silver"])["tiers"][0]["unit_price"] == "0.1"


def test_subscriptions_and_grants_are_checked_against_the_topics(
    topics: FakeTopics, capsys: pytest.CaptureFixture[str]
) -> None:
    cli.main(["seed", "--catalog", str(EXAMPLE)])
    capsys.readouterr()
    put = [
        "subscriptions",
        "put",
        "--subject",
        "stark-partners",
        "--effective-from",
        "2026-12-10T00:00:00Z",
    ]
    assert cli.main([*put, "--plan-id", "nope"]) == cli.EXIT_BAD_INPUT
    assert "no plan 'nope'" in capsys.readouterr().err
    assert cli.main([*put, "--plan-id", "gold", "--stripe-customer-id", "cus_Stark"]) == 0
    capsys.readouterr()
    assert cli.main(["subscriptions", "list", "--subject", "stark-partners"]) == 0
    (sub,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sub["effective_from"] == START + 9 * DAY and sub["plan_id"] == "gold"
    assert (
        cli.main(
            [
                "subscriptions",
                "delete",
                "--subject",
                "stark-partners",
                "--effective-from",
                str(START + 9 * DAY),
            ]
        )
        == 0
    )
    assert topics.writes[-1] == (SUBSCRIPTIONS.name, f"stark-partners@{START + 9 * DAY}", None)

    grant = ["grants", "put", "--id", "g2", "--subject", "globex-mobile", "--at", "2026-12-20"]
    assert cli.main([*grant, "--amount", "abc"]) == cli.EXIT_BAD_INPUT
    assert cli.main([*grant, "--amount", "-5"]) == cli.EXIT_BAD_INPUT
    assert cli.main([*grant, "--amount", "50", "--currency", "EUR"]) == cli.EXIT_BAD_INPUT
    assert "several currencies" in capsys.readouterr().err
    assert cli.main([*grant, "--amount", "50.10"]) == 0
    assert json.loads(topics.topics[GRANTS.name]["g2"])["amount"] == "50.10"
