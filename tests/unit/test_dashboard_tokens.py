"""Portal tokens: only a genuine, unexpired token grants a view, and only of its own consumer."""

from __future__ import annotations

import base64
import json

import pytest

from dashboard import queries
from dashboard.tokens import (
    MAX_TTL_S,
    SecretError,
    TokenError,
    create_token,
    read_secret,
    verify_token,
)

SECRET = b"k3Yq9-ZpW2rT8vLmN4xB7cD1fG6hJ0sA"
OTHER_SECRET = b"Zz8Yy7Xx6Ww5Vv4Uu3Tt2Ss1Rr0Qq9Pp"
NOW = 1_780_000_000
WINDOW = queries.Window((NOW - 86_400) * 1000, NOW * 1000)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _payload(token: str) -> dict[str, object]:
    body = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))))


def test_round_trip() -> None:
    token = create_token("acme", SECRET, NOW, ttl_s=3600, token_id="t1")
    claims = verify_token(token, SECRET, NOW + 10)
    assert (claims.consumer, claims.expires_at, claims.issued_at, claims.token_id) == (
        "acme",
        NOW + 3600,
        NOW,
        "t1",
    )
    assert _payload(token) == {"c": "acme", "exp": NOW + 3600, "iat": NOW, "jti": "t1"}


def test_token_ids_are_unique() -> None:
    assert create_token("acme", SECRET, NOW) != create_token("acme", SECRET, NOW)


def test_expired_token_is_refused() -> None:
    token = create_token("acme", SECRET, NOW, ttl_s=60)
    verify_token(token, SECRET, NOW + 59)
    with pytest.raises(TokenError, match="expired"):
        verify_token(token, SECRET, NOW + 60)


def test_wrong_secret_is_refused() -> None:
    token = create_token("acme", SECRET, NOW)
    with pytest.raises(TokenError, match="signature"):
        verify_token(token, OTHER_SECRET, NOW)


def test_payload_tampering_breaks_the_signature() -> None:
    token = create_token("acme", SECRET, NOW, ttl_s=60)
    version, _, signature = token.split(".")
    for change in ({"c": "globex"}, {"exp": NOW + MAX_TTL_S}):
        forged = {**_payload(token), **change}
        body = _b64(json.dumps(forged, separators=(",", ":"), sort_keys=True).encode())
        with pytest.raises(TokenError, match="signature"):
            verify_token(f"{version}.{body}.{signature}", SECRET, NOW)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),
        lambda t: t.replace("v1.", "v2.", 1),
        lambda t: t + ".extra",
        lambda t: t.split(".", 1)[1],
        lambda t: t.rsplit(".", 1)[0] + ".!!!",
        lambda t: "",
        lambda t: "x" * 5000,
    ],
)
def test_malformed_tokens_are_refused(mangle: object) -> None:
    token = create_token("acme", SECRET, NOW)
    with pytest.raises(TokenError):
        verify_token(mangle(token), SECRET, NOW)  # type: ignore[operator]


def test_signed_but_invalid_payloads_are_refused() -> None:
    """Even with the secret, a token must carry a usable consumer and sane times."""
    import hashlib
    import hmac

    def signed(payload: object) -> str:
        body = _b64(json.dumps(payload).encode())
        sig = hmac.new(SECRET, f"v1.{body}".encode(), hashlib.sha256).digest()
        return f"v1.{body}.{_b64(sig)}"

    good = {"c": "acme", "exp": NOW + 60, "iat": NOW, "jti": "t"}
    verify_token(signed(good), SECRET, NOW)
    for bad in (
        [1, 2],
        {**good, "c": "*"},
        {**good, "c": ""},
        {**good, "c": "a\nb"},
        {**good, "exp": "tomorrow"},
        {**good, "exp": True},
        {**good, "iat": NOW + 3600},
        {**good, "exp": NOW + MAX_TTL_S + 10},
    ):
        with pytest.raises(TokenError):
            verify_token(signed(bad), SECRET, NOW)


def test_bad_consumer_or_ttl_is_refused_at_creation() -> None:
    for consumer in ("", "*", "x" * 300, "a\tb"):
        with pytest.raises(TokenError):
            create_token(consumer, SECRET, NOW)
    for ttl in (0, -1, MAX_TTL_S + 1):
        with pytest.raises(TokenError):
            create_token("acme", SECRET, NOW, ttl_s=ttl)


def test_secret_from_environment() -> None:
    strong = "q8Rz2LmX0vT5bN7cY3wK9pD4fH6jS1aG"
    assert read_secret({"DASHBOARD_TOKEN_SECRET": strong}) == strong.encode()
    with pytest.raises(SecretError, match="not set"):
        read_secret({})
    with pytest.raises(SecretError, match="not set"):
        read_secret({"DASHBOARD_DEMO": "1"})
    for weak in ("short", "changeme-changeme-changeme-changeme", "a" * 40, "my-demo-secret" * 3):
        with pytest.raises(SecretError):
            read_secret({"DASHBOARD_TOKEN_SECRET": weak})
        # The demo flag accepts placeholders, and only it.
        assert read_secret({"DASHBOARD_TOKEN_SECRET": weak, "DASHBOARD_DEMO": "1"})


def test_secret_errors_do_not_echo_the_secret() -> None:
    weak = "changeme-0123456789-changeme-0123"
    with pytest.raises(SecretError) as info:
        read_secret({"DASHBOARD_TOKEN_SECRET": weak})
    assert weak not in str(info.value)


def test_token_errors_do_not_echo_the_token() -> None:
    token = create_token("acme", SECRET, NOW, ttl_s=1)
    for secret, now in ((OTHER_SECRET, NOW), (SECRET, NOW + 5)):
        with pytest.raises(TokenError) as info:
            verify_token(token, secret, now)
        assert token not in str(info.value) and "acme" not in str(info.value)


@pytest.mark.parametrize("consumer", ["acme", "globex", "o'brien", "it's; DROP TABLE x --"])
def test_every_consumer_view_query_binds_the_tokens_consumer(consumer: str) -> None:
    """The consumer view's only consumer is the verified token's, as a bound parameter: never
    pasted into the SQL, never absent, never another's."""
    claims = verify_token(create_token(consumer, SECRET, NOW), SECRET, NOW)
    panels = queries.consumer_view(claims, WINDOW)
    assert {p.table for p in panels} == {"api_events", "alerts", "actions", "period_usage"}
    for panel in panels:
        assert panel.query.params["consumer"] == consumer, panel.key
        # Billing's table names the consumer its subject.
        column = "subject" if panel.table == "period_usage" else "consumer"
        assert f"{column} = %(consumer)s" in panel.query.sql, panel.key
        assert consumer not in panel.query.sql, panel.key
        assert "LIMIT" in panel.query.sql and "%(start_ms)s" in panel.query.sql


def test_another_consumers_token_never_widens_scope() -> None:
    """A token for acme yields acme's queries only, whatever else is around; a forged claim to
    globex (acme's token with its consumer edited) verifies to nothing."""
    acme = create_token("acme", SECRET, NOW)
    claims = verify_token(acme, SECRET, NOW)
    bound = {p.query.params["consumer"] for p in queries.consumer_view(claims, WINDOW)}
    assert bound == {"acme"}
    version, _, signature = acme.split(".")
    body = _b64(json.dumps({**_payload(acme), "c": "globex"}).encode())
    with pytest.raises(TokenError):
        verify_token(f"{version}.{body}.{signature}", SECRET, NOW)


@pytest.mark.parametrize("name", ["null", "NULL", "key:a96cf452b378b8c5", "client:cdf6af3589e5"])
def test_no_token_grants_pinots_null_or_a_rate_key(name: str) -> None:
    # "null" would match every call without a consumer; a rate key is not a consumer.
    with pytest.raises(TokenError, match="not a consumer a portal can show"):
        create_token(name, SECRET, NOW)
