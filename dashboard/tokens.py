"""Portal tokens: a signed, expiring grant naming one consumer, like OpenMeter's portal tokens.

A token is ``v1.<payload>.<signature>``, both parts unpadded base64url. The payload is compact
JSON ``{"c": consumer, "exp": expiry, "iat": issued at, "jti": token id}`` (epoch seconds); the
signature is HMAC-SHA256 under ``DASHBOARD_TOKEN_SECRET`` over ``v1.<payload>``, so the version
cannot be swapped without breaking it. Verification compares signatures in constant time
before it decodes anything, then checks expiry and the consumer name.

The consumer view takes the consumer it queries from ``PortalClaims`` only, and only
``verify_token`` makes those (besides tests), so a token can never widen its scope: editing the
payload breaks the signature, and nothing in the URL or the page names a consumer.

Pure: the clock and the environment are parameters, so it is unit-tested without either.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dashboard import data
from metering.kpi import KpiError, KpiRequest, check_request

VERSION = "v1"
SECRET_ENV = "DASHBOARD_TOKEN_SECRET"
DEMO_ENV = "DASHBOARD_DEMO"
MIN_SECRET_CHARS = 32
# A portal link is handed to a customer: a day by default, never more than 90.
DEFAULT_TTL_S = 24 * 3600
MAX_TTL_S = 90 * 24 * 3600
# Tokens issued "in the future" by more than this are refused (clock skew between hosts).
MAX_CLOCK_SKEW_S = 300
# Bounds the work done on anything pasted into ?token=: a real token is about 150 characters.
MAX_TOKEN_CHARS = 1024
PLACEHOLDERS = (
    "changeme",
    "change-me",
    "secret",
    "example",
    "placeholder",
    "password",
    "xxxx",
    "demo",
)


class TokenError(ValueError):
    """A token that does not grant access. The message never repeats the token."""


class SecretError(RuntimeError):
    """DASHBOARD_TOKEN_SECRET is missing, too short, or a placeholder."""


@dataclass(frozen=True)
class PortalClaims:
    """What a verified token grants: read access to one consumer's data until ``expires_at``."""

    consumer: str
    expires_at: int
    """Epoch seconds; the token is refused from this second on."""
    issued_at: int
    token_id: str


def is_demo(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the demo flag (``DASHBOARD_DEMO=1``) is on: it accepts placeholder secrets."""
    return data.flag(DEMO_ENV, environ)


def read_secret(environ: Mapping[str, str] | None = None, demo: bool | None = None) -> bytes:
    """The signing key from ``DASHBOARD_TOKEN_SECRET``; raises ``SecretError`` if unusable.

    A missing secret is always refused. A short or placeholder-looking one is refused unless the
    demo flag is on, since anyone who guesses it can mint a token for any consumer.
    """
    env = os.environ if environ is None else environ
    demo = is_demo(env) if demo is None else demo
    value = env.get(SECRET_ENV, "")
    if not value:
        raise SecretError(
            f"{SECRET_ENV} is not set. Generate one, e.g. "
            f"`export {SECRET_ENV}=$(openssl rand -hex 32)`; changing it revokes every token."
        )
    if not demo:
        if len(value) < MIN_SECRET_CHARS:
            raise SecretError(f"{SECRET_ENV} must be at least {MIN_SECRET_CHARS} characters")
        lowered = value.lower()
        if any(p in lowered for p in PLACEHOLDERS) or len(set(value)) < 8:
            raise SecretError(
                f"{SECRET_ENV} looks like a placeholder; use a random value "
                f"(or set {DEMO_ENV}=1 for a demo)"
            )
    return value.encode()


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if not text or not all(c.isalnum() or c in "-_" for c in text):
        raise TokenError("malformed token")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("malformed token") from None


def _sign(secret: bytes, signed_part: str) -> bytes:
    return hmac.new(secret, signed_part.encode("ascii"), hashlib.sha256).digest()


# Names a portal must never grant: Pinot 0.11 stores a missing consumer as the text "null", so a
# token for "null" would match every anonymous call; rate keys of API keys and clients are
# not consumers.
RESERVED_NAMES = frozenset({"null"})
RESERVED_PREFIXES = ("key:", "client:")


def check_consumer(consumer: str) -> str:
    """The consumer name if the KPI queries accept it (not empty, ``*``, huge or multi-line) and
    it names a consumer, not Pinot's null or a rate key."""
    try:
        check_request(KpiRequest(0, 1, consumer))
    except KpiError:
        raise TokenError("not a consumer name") from None
    if consumer.lower() in RESERVED_NAMES or consumer.startswith(RESERVED_PREFIXES):
        raise TokenError(f"{consumer!r} is not a consumer a portal can show")
    return consumer


def create_token(
    consumer: str,
    secret: bytes,
    now_s: int,
    ttl_s: int = DEFAULT_TTL_S,
    token_id: str | None = None,
) -> str:
    """A token granting ``consumer``'s view for ``ttl_s`` seconds from ``now_s``."""
    check_consumer(consumer)
    if not 0 < ttl_s <= MAX_TTL_S:
        raise TokenError(f"ttl must be between 1 second and {MAX_TTL_S // 86400} days")
    payload = {
        "c": consumer,
        "exp": now_s + ttl_s,
        "iat": now_s,
        "jti": token_id or secrets.token_hex(8),
    }
    body = _b64encode(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    signed_part = f"{VERSION}.{body}"
    token = f"{signed_part}.{_b64encode(_sign(secret, signed_part))}"
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenError("consumer name too long for a token")
    return token


def verify_token(token: str, secret: bytes, now_s: int) -> PortalClaims:
    """The claims of a genuine, unexpired token; raises ``TokenError`` otherwise.

    The signature is checked (in constant time) before the payload is parsed, so nothing an
    attacker wrote is interpreted unless it was signed with the secret.
    """
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        raise TokenError("malformed token")
    parts = token.strip().split(".")
    if len(parts) != 3 or parts[0] != VERSION:
        raise TokenError("malformed token")
    version, body, signature = parts
    given = _b64decode(signature)
    expected = _sign(secret, f"{version}.{body}")
    if not hmac.compare_digest(given, expected):
        raise TokenError("bad signature")
    try:
        payload: Any = json.loads(_b64decode(body))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise TokenError("malformed token") from None
    if not isinstance(payload, dict):
        raise TokenError("malformed token")
    consumer, exp, iat, jti = (payload.get(k) for k in ("c", "exp", "iat", "jti"))
    if not (
        isinstance(consumer, str)
        and isinstance(exp, int)
        and isinstance(iat, int)
        and isinstance(jti, str)
        and not isinstance(exp, bool)
        and not isinstance(iat, bool)
    ):
        raise TokenError("malformed token")
    if now_s >= exp:
        raise TokenError("token expired")
    if iat > now_s + MAX_CLOCK_SKEW_S or exp - iat > MAX_TTL_S:
        raise TokenError("token not valid yet or valid too long")
    return PortalClaims(check_consumer(consumer), exp, iat, jti)
