"""The responder's settings and command line, the health endpoint and the log filter: secrets
come from the environment only, placeholders are refused, and no secret reaches an error, a help
text or a log line."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import httpx
import pytest

from responder import __main__ as cli
from responder.metrics import Health, HealthServer, JsonFormatter, Metrics, SecretFilter
from responder.settings import ENV_PREFIX, SECRET_FIELDS, ResponderSettings

WEBHOOK_SECRET = "4c9e1a7f3b8d2e6c0a5f9b1d7e3c8a2f"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ResponderSettings.model_fields:
        monkeypatch.delenv(ENV_PREFIX + name.upper(), raising=False)


def _settings(argv: list[str]) -> ResponderSettings:
    parser = cli.build_parser()
    ns, unknown = parser.parse_known_args(argv)
    return cli.settings_from_namespace(parser, ns, unknown)


def test_flags_win_over_environment_over_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _settings(["run"]).alerts_topic == "gateway.alerts"
    monkeypatch.setenv("RESPONDER_ALERTS_TOPIC", "env.alerts")
    monkeypatch.setenv("RESPONDER_BATCH_SIZE", "7")
    settings = _settings(["run", "--alerts-topic", "flag.alerts"])
    assert (settings.alerts_topic, settings.batch_size) == ("flag.alerts", 7)
    assert settings.actions_topic == "gateway.actions"


def test_every_setting_but_the_secrets_has_a_flag_with_its_environment_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for command in ("run", "which-key", "check-policy"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for name in ResponderSettings.model_fields:
            flag = "--" + name.replace("_", "-")
            env = f"[env {ENV_PREFIX}{name.upper()}]"
            if name in SECRET_FIELDS:
                assert f"{flag} " not in text
                assert f"{ENV_PREFIX}{name.upper()}" in text  # named in the epilog
            else:
                assert flag in text and env in text, name


def test_a_secret_given_as_a_flag_is_refused_without_echoing_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as e:
        _settings(["run", "--webhook-secret", WEBHOOK_SECRET])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--webhook-secret" in err and "environment only" in err
    assert WEBHOOK_SECRET not in err


@pytest.mark.parametrize(
    ("env", "value", "message"),
    [
        ("WEBHOOK_SECRET", "changeme-changeme-changeme-changeme", "looks like a placeholder"),
        ("WEBHOOK_SECRET", "short-2c9e", "at least 32 random characters"),
        ("WEBHOOK_SECRET", "ab" * 20, "at least 32 random characters"),
        ("SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T000/B000/XXXXXXXX", "placeholder"),
        ("APISIX_ADMIN_KEY", "edd1c9f034335f136f87ad84b625c8f1", "placeholder"),
        ("APISIX_KEYRING", "too-short", "16 or 32 bytes"),
    ],
)
def test_bad_secrets_are_refused_without_echoing_them(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: str,
    value: str,
    message: str,
) -> None:
    monkeypatch.setenv(ENV_PREFIX + env, value)
    with pytest.raises(SystemExit):
        _settings(["run"])
    err = capsys.readouterr().err
    assert message in err
    assert value not in err


def test_demo_accepts_placeholders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESPONDER_WEBHOOK_SECRET", "changeme-changeme-changeme-changeme")
    settings = _settings(["run", "--demo"])
    assert settings.webhook_secret is not None
    assert "changeme" not in repr(settings)  # SecretStr


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--webhook-url", "http://hook"], {}, "webhook_url needs RESPONDER_WEBHOOK_SECRET"),
        (["--gateway", "apisix"], {}, "gateway apisix needs RESPONDER_APISIX_ADMIN_KEY"),
        (["--smtp-tls", "none"], {"SMTP_PASSWORD": "pw-7c1e9a3f5d"}, "password in clear"),
        (["--kafka-security-protocol", "SASL_SSL"], {}, "needs a SASL mechanism"),
    ],
)
def test_inconsistent_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(ENV_PREFIX + name, value)
    with pytest.raises(SystemExit):
        _settings(["run", *argv])
    assert message in capsys.readouterr().err


def test_check_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "p.toml"
    policy.write_text('never_block = ["ops"]\n[[respond]]\nactions = ["webhook", "block"]\n')
    assert cli.main(["check-policy", "--policy-file", str(policy)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{policy}: valid; dry run (blocks are recorded, not performed)",
        "  entries: 1; channels: pagerduty, webhook",
        "  block TTL 3600s; at most 10 blocks per hour, then pagerduty; never blocked: ops",
    ]
    policy.write_text("dry_run = 'maybe'\n")
    with pytest.raises(SystemExit) as e:
        cli.main(["check-policy", "--policy-file", str(policy)])
    assert e.value.code == 2
    assert "dry_run: Input should be a valid boolean" in capsys.readouterr().err


# --- logs and health -----------------------------------------------------------------------------


def _log_line(
    secret_filter: SecretFilter, message: str, *args: object, **extra: object
) -> dict[str, object]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(secret_filter)
    logger = logging.getLogger("test-responder-logs")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        raise RuntimeError(f"boom {WEBHOOK_SECRET}")
    except RuntimeError:
        logger.info(message, *args, extra=extra, exc_info=True)
    line = stream.getvalue()
    assert WEBHOOK_SECRET not in line
    parsed: dict[str, object] = json.loads(line)
    return parsed


def test_the_log_filter_removes_secrets_from_message_fields_and_tracebacks() -> None:
    secret_filter = SecretFilter([WEBHOOK_SECRET])
    line = _log_line(secret_filter, "posting with %s", WEBHOOK_SECRET, target=f"x{WEBHOOK_SECRET}y")
    assert line["msg"] == "posting with [REDACTED]"
    assert line["target"] == "x[REDACTED]y"
    assert line["exception"] == "RuntimeError"
    assert line["level"] == "INFO" and str(line["ts"]).endswith("Z")


def test_the_log_filter_also_scrubs_credential_shapes() -> None:
    line = _log_line(SecretFilter(), "request had apikey=ak_live_4f9c2e7b1d8a6f3e5c0b")
    assert "ak_live_4f9c2e7b1d8a6f3e5c0b" not in str(line["msg"])


def test_health_metrics_and_readiness() -> None:
    clock = [100.0]
    health = Health(stale_s=10, clock=lambda: clock[0])
    metrics = Metrics()
    metrics.actions.labels("webhook", "done").inc(3)
    server = HealthServer("127.0.0.1", 0, metrics, health)
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok", "loop_age_s": 0.0}
        assert httpx.get(f"{base}/readyz").status_code == 503
        health.ready = True
        assert httpx.get(f"{base}/readyz").status_code == 200
        clock[0] = 111.0
        stale = httpx.get(f"{base}/healthz")
        assert (stale.status_code, stale.json()["status"]) == (503, "stale")
        text = httpx.get(f"{base}/metrics").text
        assert 'responder_actions_total{action="webhook",outcome="done"} 3.0' in text
        assert "responder_circuit_open 0.0" in text
        assert httpx.get(f"{base}/other").status_code == 404
    finally:
        server.stop()
