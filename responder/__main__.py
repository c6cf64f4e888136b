"""The responder's command line.

    python -m responder run [--policy-file F] [--gateway apisix|kong] [...]
    python -m responder which-key <fingerprint> [--gateway apisix|kong] [...]
    python -m responder check-policy [--policy-file F]

``run`` is the service (responder.service). ``which-key`` is for on-call: the consumer and
credential id of the key an alert names by fingerprint, from the gateway's Admin API; it never
prints the key. ``check-policy`` validates a policy file and summarises it. ``--help`` on each
lists every setting with its environment variable; secrets come from the environment only.
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

import httpx

from metering.redact import Pseudonymizer
from metering.settings import HashKeyError, read_hash_key
from responder.gateways import ApisixAdmin, Gateway, KeyIndex, KongAdmin, find_key_owner
from responder.metrics import Health, HealthServer, Metrics, configure_logging
from responder.notify import (
    Channel,
    DeliveryError,
    EmailChannel,
    PagerDutyChannel,
    SlackChannel,
    WebhookChannel,
)
from responder.policy import Policy, PolicyError, load_policy
from responder.service import Responder, TransactionFailed
from responder.settings import (
    SECRETS_EPILOG,
    ResponderSettings,
    add_setting_flags,
    settings_from_namespace,
)

log = logging.getLogger("responder")
FINGERPRINT = re.compile(r"^[0-9a-fA-F]{32}$")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m responder",
        description="Acts on the pipeline's alerts: notifies and blocks keys at the gateway.",
        epilog=SECRETS_EPILOG,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="the service",
        description="Consume alerts and act on them (the service).",
        epilog=SECRETS_EPILOG,
    )
    which = commands.add_parser(
        "which-key",
        help="consumer and credential of a key fingerprint",
        description="Find the consumer and credential id of the key with this fingerprint "
        "(HMAC under PIPELINE_HASH_KEY) at the gateway. The key itself is never printed.",
        epilog=SECRETS_EPILOG,
    )
    which.add_argument("fingerprint", help="key_fingerprint of an alert (32 hex characters)")
    check = commands.add_parser(
        "check-policy",
        help="validate a policy file",
        description="Validate the policy file.",
        epilog=SECRETS_EPILOG,
    )
    for sub in (run, which, check):
        add_setting_flags(sub)
    return parser


def build_http(settings: ResponderSettings) -> httpx.Client:
    # No redirects: a 3xx from a webhook or Admin API is an error, not a place to send secrets.
    return httpx.Client(timeout=settings.http_timeout_seconds, follow_redirects=False)


def build_gateway(settings: ResponderSettings, client: httpx.Client) -> Gateway | None:
    if settings.gateway == "apisix":
        assert settings.apisix_admin_key is not None  # the settings' validator requires it
        return ApisixAdmin(
            settings.apisix_admin_url,
            settings.apisix_admin_key.get_secret_value(),
            client,
            method=settings.apisix_block_method,
            keyring=settings.keyring(),
        )
    if settings.gateway == "kong":
        token = settings.kong_admin_token
        return KongAdmin(
            settings.kong_admin_url,
            client,
            token=token.get_secret_value() if token is not None else None,
            method=settings.kong_block_method,
            blocked_group=settings.kong_blocked_group,
        )
    return None


def build_channels(
    settings: ResponderSettings, policy: Policy, client: httpx.Client
) -> dict[str, Channel]:
    """The channels whose settings are given (the service checks the policy's are there)."""
    channels: dict[str, Channel] = {}
    if settings.webhook_url and settings.webhook_secret is not None:
        secret = settings.webhook_secret.get_secret_value().encode()
        channels["webhook"] = WebhookChannel(settings.webhook_url, secret, client)
    if settings.slack_webhook_url is not None:
        channels["slack"] = SlackChannel(settings.slack_webhook_url.get_secret_value(), client)
    if settings.pagerduty_routing_key is not None:
        channels["pagerduty"] = PagerDutyChannel(
            settings.pagerduty_url,
            settings.pagerduty_routing_key.get_secret_value(),
            client,
            settings.pagerduty_source,
        )
    if settings.smtp_host and settings.smtp_from:
        password = settings.smtp_password
        channels["email"] = EmailChannel(
            settings.smtp_host,
            settings.smtp_port,
            sender=settings.smtp_from,
            contacts=policy.contact,
            tls=settings.smtp_tls,
            username=settings.smtp_username,
            password=password.get_secret_value() if password is not None else None,
            timeout_s=settings.http_timeout_seconds,
        )
    return channels


def _hash_key() -> bytes:
    try:
        return read_hash_key()
    except HashKeyError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def _policy(settings: ResponderSettings) -> Policy:
    try:
        return load_policy(settings.policy_file)
    except PolicyError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_run(settings: ResponderSettings) -> int:
    secret_filter = configure_logging(settings.secret_values())
    policy = _policy(settings)
    client = build_http(settings)
    gateway = build_gateway(settings, client)
    key_index = None
    if gateway is not None:
        hash_key = _hash_key()
        secret_filter.add([hash_key.decode()])
        key_index = KeyIndex(
            gateway, Pseudonymizer(hash_key), min_refresh_s=settings.key_index_refresh_seconds
        )
    metrics = Metrics()
    health = Health(settings.health_stale_seconds)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        # Only set the flag: the loop finishes the action in progress, commits it and returns.
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        responder = Responder(
            settings,
            policy,
            channels=build_channels(settings, policy, client),
            gateway=gateway,
            key_index=key_index,
            metrics=metrics,
            health=health,
            stop=stop,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    server = HealthServer(settings.health_host, settings.health_port, metrics, health)
    server.start()
    log.info(
        "responder starting",
        extra={
            "health_port": server.port,
            "dry_run": policy.dry_run,
            "gateway": settings.gateway,
            "channels": sorted(responder.channels),
        },
    )
    try:
        responder.run()
    except TransactionFailed as e:
        log.error("stopping: %s", e)
        return 1
    except Exception as e:  # a broker or topic problem at start: one log line, no traceback
        log.error("stopping: %s: %s", type(e).__name__, e)
        return 1
    finally:
        server.stop()
        client.close()
    log.info("stopped on request" if stop.is_set() else "stopped")
    return 0


def cmd_which_key(settings: ResponderSettings, fingerprint: str) -> int:
    if not FINGERPRINT.match(fingerprint.strip()):
        # Not echoed: a key pasted by mistake must not end up in a terminal log.
        print(
            "error: not a key fingerprint (32 hex characters, an alert's key_fingerprint); "
            "the argument is not echoed in case it is a key",
            file=sys.stderr,
        )
        return 2
    if settings.gateway == "none":
        print("error: --gateway apisix or kong is required", file=sys.stderr)
        return 2
    configure_logging(settings.secret_values(), level=logging.WARNING)
    pseudonymizer = Pseudonymizer(_hash_key())
    with build_http(settings) as client:
        gateway = build_gateway(settings, client)
        assert gateway is not None
        try:
            owner = find_key_owner(gateway, pseudonymizer, fingerprint)
        except DeliveryError as e:
            print(f"error: {settings.gateway} {e.reason}", file=sys.stderr)
            return 2
    if owner is None:
        print(f"no key with fingerprint {fingerprint.strip().lower()} at {settings.gateway}")
        return 1
    print(owner.describe())
    return 0


def cmd_check_policy(settings: ResponderSettings) -> int:
    policy = _policy(settings)
    mode = "dry run (blocks are recorded, not performed)" if policy.dry_run else "enforcing"
    print(f"{settings.policy_file}: valid; {mode}")
    print(f"  entries: {len(policy.respond)}; channels: {', '.join(sorted(policy.channels()))}")
    print(
        f"  block TTL {policy.block_ttl_seconds}s; at most "
        f"{policy.circuit_breaker.max_blocks_per_hour} blocks per hour, then "
        f"{policy.circuit_breaker.notify}; never blocked: {', '.join(policy.never_block) or '-'}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns, unknown = parser.parse_known_args(argv)
    settings = settings_from_namespace(parser, ns, unknown)
    if ns.command == "run":
        return cmd_run(settings)
    if ns.command == "which-key":
        return cmd_which_key(settings, ns.fingerprint)
    return cmd_check_policy(settings)


if __name__ == "__main__":
    sys.exit(main())
