"""A detector rule is one module: the worked example of docs/extending.md (testkit/volume_cap.py)
registered from outside the package, run by the detector, configured by name."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from metering.detect import DetectorConfig, WindowAgg, evaluate, window_record
from metering.rules import registry
from schemas.events import Alert
from testkit import volume_cap

T0 = 1_767_225_600_000


@pytest.fixture
def registered() -> Iterator[None]:
    registry.register(volume_cap)
    try:
        yield
    finally:
        registry.unregister(volume_cap.NAME)


def _alerts(cfg: DetectorConfig, counts: list[int]) -> list[dict[str, Any]]:
    state, out = None, []
    for i, n in enumerate(counts):
        agg = WindowAgg(count=n, units=float(n), auth_failures=0, countries={"GB"},
                        consumer="acme", key_fingerprint=None)  # fmt: skip
        start = T0 + i * cfg.window_ms
        rec = window_record("acme", start, start + cfg.window_ms, agg)
        state, alerts = evaluate(state, rec, cfg, start + cfg.window_ms)
        out.extend(alerts)
    return out


def test_a_registered_rule_runs_with_its_defaults_and_its_settings(registered: None) -> None:
    cfg = DetectorConfig()
    assert cfg.rules[volume_cap.NAME] == volume_cap.Config()
    # Steady 800 a window: under the default cap of 1,000, never flagged; then 2,500.
    alerts = _alerts(cfg, [800] * 20 + [2_500])
    assert [(a["status"], a["rule"], a["observed_count"]) for a in alerts] == [
        ("open", "volume_cap", 2_500)
    ]
    assert alerts[0]["features"]["cap"] == 1_000
    assert alerts[0]["severity"] == "high"
    # Its settings by name: a cap of 500 flags the first window already.
    lower = cfg.with_rule(volume_cap.NAME, max_per_window=500)
    assert [a["window_start"] for a in _alerts(lower, [800]) if a["status"] == "open"] == [T0]


def test_a_rule_not_registered_never_runs() -> None:
    assert volume_cap.NAME not in DetectorConfig().rules
    assert _alerts(DetectorConfig(), [800] * 20 + [2_500]) == []


def test_a_plugin_rules_alerts_are_valid_records(registered: None) -> None:
    # Readers of the alerts topic (the responder validates with this model) take a plugin's
    # rule as they take the package's: adding a rule touches no schema.
    (alert, *_) = _alerts(DetectorConfig(), [800] * 20 + [2_500])
    assert alert["rule"] == volume_cap.NAME
    assert Alert.model_validate(alert).rules == [volume_cap.NAME]
    schema = Alert.model_json_schema()["properties"]["rule"]
    assert set(schema["examples"]) == set(registry.RULE_NAMES)


def test_a_rule_name_must_be_fit_for_records() -> None:
    class Bad:
        NAME = "Volume Cap!"

    with pytest.raises(ValueError, match="not a valid extension name"):
        registry.register(Bad)
    assert "Volume Cap!" not in [r.NAME for r in registry.rules()]


def test_a_name_is_registered_once(registered: None) -> None:
    with pytest.raises(ValueError, match="registered already"):
        registry.register(volume_cap)
