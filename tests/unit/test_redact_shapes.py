"""Redaction by shape and by normalized name (issue 18, "Secrets").

Each credential format (JWT, AWS access key id and secret, Stripe, GitHub, Slack, Google, Telegram,
bearer/basic, long random runs, hex keys, card numbers) is planted in every field a gateway log can
carry it in, and in every encoding a dead letter can hold it in, then run through RecordProcessor:
the value is absent from the enriched event and from the dead letter, and so is every 16-character
piece of it. Names are planted in camelCase, inner-underscore and percent-encoded forms.
"""

from __future__ import annotations

import base64
import json
import random
import re
import string
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from payloads import RAW_TOPIC, apisix_39, encode, kong_200

from metering.records import RecordProcessor, Result, SourceRef
from metering.redact import (
    CACHED_AGENT_CHARS,
    KEPT_HEADERS,
    KEY_HEADERS,
    KEY_PARAMS,
    POLICY,
    REDACTED,
    Pseudonymizer,
    extract_api_key,
    is_card_number,
    is_secret_name,
    looks_random,
    normalize_name,
    path_of,
    redact_uri,
    redact_user_agent,
    scrub_text,
)
from testkit.traffic import bulk_traffic

SRC = SourceRef(RAW_TOPIC, 0, 11)
PROPERTY = settings(max_examples=150, deadline=None)
ALNUM = string.ascii_letters + string.digits
URLSAFE = ALNUM + "-_"
B64 = ALNUM + "+/"


# -- secret values, one strategy per shape -----------------------------------------------------


def _chars(alphabet: str, n: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=n, max_size=n)


def _mixed(s: str) -> bool:
    """Upper, lower and digits, like a real key (a generated key without digits is 0.7%)."""
    return (
        any(c.isupper() for c in s) and any(c.islower() for c in s) and any(c.isdigit() for c in s)
    )


def _random_token(s: str) -> bool:
    return _mixed(s) and looks_random(s)


def _luhn_complete(body: str) -> str:
    for check in string.digits:
        if is_card_number(body + check):
            return body + check
    raise AssertionError(body)


@st.composite
def card_numbers(draw: st.DrawFn) -> str:
    prefix = draw(st.sampled_from(["4", "51", "55", "2221", "2720", "6011", "37", "34"]))
    length = 15 if prefix in ("37", "34") else 16
    body = prefix + draw(_chars(string.digits, length - 1 - len(prefix)))
    number = _luhn_complete(body)
    sep = draw(st.sampled_from(["", " ", "-"]))
    return sep.join(number[i : i + 4] for i in range(0, len(number), 4)) if sep else number


SHAPES: dict[str, st.SearchStrategy[str]] = {
    "jwt": st.builds(
        lambda h, p, s: f"eyJ{h}.eyJ{p}.{s}",
        _chars(URLSAFE, 20),
        _chars(URLSAFE, 40),
        _chars(URLSAFE, 43),
    ),
    "aws_access_key_id": st.builds(
        lambda p, b: p + b,
        st.sampled_from(["AKIA", "ASIA"]),
        _chars(string.ascii_uppercase + string.digits, 16),
    ),
    "aws_secret_access_key": _chars(B64, 40).filter(_mixed),
    "stripe": st.builds(
        lambda p, b: p + b,
        st.sampled_from(["sk_live_", "rk_live_"]),
        st.text(alphabet=ALNUM, min_size=24, max_size=99),
    ),
    "github": st.one_of(
        st.builds(lambda p, b: p + b, st.sampled_from(["ghp_", "gho_"]), _chars(ALNUM, 36)),
        st.builds(lambda b: "github_pat_" + b, _chars(ALNUM + "_", 82)),
    ),
    "slack": st.builds(
        lambda p, a, b, c: f"{p}-{a}-{b}-{c}",
        st.sampled_from(["xoxb", "xoxp"]),
        _chars(string.digits, 12),
        _chars(string.digits, 13),
        _chars(string.ascii_lowercase + string.digits, 24),
    ),
    "google": st.builds(lambda b: "AIza" + b, _chars(URLSAFE, 35)),
    "telegram": st.builds(
        lambda a, b: f"{a}:{b}",
        st.text(alphabet=string.digits, min_size=9, max_size=10).map(lambda d: "1" + d[1:]),
        _chars(URLSAFE, 35),
    ),
    "random": st.text(alphabet=URLSAFE, min_size=24, max_size=64).filter(_random_token),
    "hex": st.text(alphabet="0123456789abcdef", min_size=32, max_size=64).filter(
        lambda s: looks_random(s) and not s.isdigit()
    ),
    "card": card_numbers(),
}
all_shapes = st.sampled_from(sorted(SHAPES)).flatmap(lambda name: SHAPES[name])

# A value under a secret name may look like anything; these look like nothing else in a record.
named_values = st.text(alphabet=URLSAFE + ".~", min_size=10, max_size=40).filter(_mixed)


# -- checking ----------------------------------------------------------------------------------


def outputs(result: Result) -> str:
    return json.dumps(result.events, ensure_ascii=False) + json.dumps(
        result.dead_letters, ensure_ascii=False
    )


def pieces(secret: str, n: int = 16) -> set[str]:
    """The secret, its percent-encoded form, and every n-character piece of its characters
    (a redaction that leaves the tail of a long key leaks it too)."""
    core = secret.replace(" ", "").replace("-", "") if is_card_number(secret) else secret
    out = {secret, quote(secret, safe=""), _pct_all(secret)}
    for text in {secret, core}:
        out |= {text[i : i + n] for i in range(max(1, len(text) - n + 1))}
    return out


_BLOB = re.compile(r"[A-Za-z0-9+/_-]{24,}={0,2}")


def decoded_blobs(text: str) -> str:
    """What the base64 runs in ``text`` decode to: a wrapped secret is a leaked one."""
    out = []
    for m in _BLOB.finditer(text):
        blob = m.group().rstrip("=")
        blob = blob[: len(blob) - len(blob) % 4]
        for alt in (b"+/", b"-_"):
            try:
                out.append(base64.b64decode(blob, altchars=alt).decode("utf-8", "replace"))
            except ValueError:
                continue
    return "\n".join(out)


def assert_absent(text: str, *secrets: str) -> None:
    text = text + "\n" + decoded_blobs(text)
    for secret in secrets:
        leaked = sorted(p for p in pieces(secret) if p in text)
        assert not leaked, (secret, leaked[:3], text[:2000])


def run(processor: RecordProcessor, value: Any) -> Result:
    raw = value if isinstance(value, bytes) else encode(value)
    return processor.process(raw, SRC)


# -- planting ----------------------------------------------------------------------------------


def _pct_all(s: str) -> str:
    return "".join(f"%{b:02X}" for b in s.encode())


def _entry(i: int, **request: Any) -> dict[str, Any]:
    entry = apisix_39() if i % 2 == 0 else kong_200()
    headers = request.pop("headers", {})
    entry["request"].update(request)
    entry["request"]["headers"].update(headers)
    return entry


def _uris(uris: list[str]) -> list[dict[str, Any]]:
    return [_entry(i, uri=uri) for i, uri in enumerate(uris)]


def _agents(agents: list[str]) -> list[dict[str, Any]]:
    return [_entry(i, headers={"user-agent": a}) for i, a in enumerate(agents)]


# Good entries, each carrying the shaped secret (s) and the named one (n) in a place that reaches
# the enriched event (path, matrix parameter, user agent) or is dropped from it.
ENRICHED: dict[str, Any] = {
    "path_segment": lambda s, n: _uris(
        [f"/v1/keys/{quote(s, safe='')}/charges?limit=1", f"/v1/x/{quote(s, safe='')}.json"]
    ),
    "percent_encoded_segment": lambda s, n: _uris([f"/v1/keys/{_pct_all(s)}/charges"]),
    "telegram_style": lambda s, n: _uris([f"/bot{s}/sendMessage"] if ":" in s else []),
    "matrix_param": lambda s, n: _uris(
        [
            f"/v1/cart;jsessionid={n}/items",
            f"/v1/cart;JSESSIONID={quote(s, safe='')}",
            f"/v1/cart;v={quote(s, safe='')};lang=de/items",
            f"/v1/cart;accessToken={n}",
        ]
    ),
    "query_and_fragment": lambda s, n: _uris(
        [
            f"/v1/orders?q={quote(s, safe='')}&accessToken={n}",
            f"https://api.example.com:9443/v1/o#access_token={n}",
        ]
    ),
    "headers": lambda s, n: [
        _entry(i, headers={"x-goog-api-key": n, "x-note": s, "cookie": f"session_token={n}"})
        for i in range(2)
    ],
    "user_agent": lambda s, n: _agents(
        [
            f"MyApp/2.1 (Linux; token={s})",
            f"MyApp/2.1 (Linux; token={n})",
            f"MyApp/2.1 {s}",
            f"MyApp/2.1 ({s}; build 7)",
            f"curl/8.6.0 Bearer {n}",
            f"MyApp/2.1 access_token={n}",
        ]
    ),
}


def invalid(entry: dict[str, Any]) -> dict[str, Any]:
    bad = json.loads(json.dumps(entry))
    bad["response"]["status"] = "abc"
    return bad


CUSTOM_NAMES = (
    "accessToken",
    "clientSecret",
    "sessionToken",
    "aws_secret_access_key",
    "AWS_SECRET_ACCESS_KEY",
    "access%5Ftoken",
    "access%255Ftoken",
    "x-hub-signature-256",
    "X-Goog-Api-Key",
    "privateKey",
    "refresh.token",
    "Client Secret",
)


def raw_http(secret: str, named: str, newline: str = "\r\n") -> str:
    lines = [
        f"POST /v1/keys/{quote(secret, safe='')}/charges?apikey={named}&limit=1 HTTP/1.1",
        "Host: api.example.com",
        f"apikey: {named}",
        f"x-goog-api-key: {named}",
        f"X-Hub-Signature-256: sha256={named}",
        f"Cookie: theme=dark; session_token={named}",
        f"Authorization: Basic {named}",
        f"User-Agent: MyApp/2.1 {secret}",
        f"X-Note: {secret}",
        "",
        json.dumps({"accessToken": named, "note": f"paid with {secret}"}),
    ]
    return newline.join(lines)


def _custom_fields(s: str, n: str) -> dict[str, Any]:
    custom = invalid(apisix_39())
    for name in CUSTOM_NAMES:
        custom[name] = n
    return custom


def _body_fields(s: str, n: str) -> dict[str, Any]:
    custom = invalid(apisix_39())
    custom["request"]["body"] = {"cardNumber": s, "note": f"paid with {s} today"}
    custom["extra"] = {"note": f"card {s} / key {s}", "items": [s]}
    return custom


def _wrapped(s: str, n: str) -> list[bytes]:
    record = encode(invalid(apisix_39()) | {"accessToken": n, "note": s})
    out = []
    for b64 in (base64.b64encode(record), base64.urlsafe_b64encode(record)):
        out.append(b64)  # a base64-wrapped record: not JSON
        out.append(encode({"data": b64.decode()}))
        out.append(encode({"data": b64.decode()[:301]}))  # cut mid-blob
    return out


def _envelopes(s: str, n: str) -> list[bytes]:
    inner = json.dumps({"apikey": n, "accessToken": n, "note": s})
    envelope = encode({"envelope": json.dumps({"payload": inner, "note": s})})
    return [envelope, b"garbage " + envelope, envelope[:-25]]


# Records that are dead-lettered, each carrying the shaped secret (s) and the named one (n).
DEAD_LETTERED: dict[str, Any] = {
    "invalid_entries": lambda s, n: [
        encode(invalid(e)) for plant in ENRICHED.values() for e in plant(s, n)
    ],
    "custom_field_names": lambda s, n: [
        encode(_custom_fields(s, n)),
        encode(_custom_fields(s, n))[:-7],  # cut off: not JSON, text scrubbing only
    ],
    "body_fields": lambda s, n: [encode(_body_fields(s, n)), encode(_body_fields(s, n))[:-7]],
    "raw_http_request": lambda s, n: [
        raw_http(s, n).encode(),  # not JSON
        encode({"raw": raw_http(s, n)}),  # unknown format: the parsed element is dead-lettered
        encode({"raw": raw_http(s, n, "\n")})[:-3],
    ],
    "free_text": lambda s, n: [
        f"error while calling upstream: {s} (key={n!r}) Cookie: theme=dark; "
        f"session_token={n}; aws_secret_access_key = {n}".encode()
    ],
    "base64_wrapper": _wrapped,
    "double_escaped_json": _envelopes,
}


# -- properties --------------------------------------------------------------------------------


@pytest.mark.parametrize("place", sorted(ENRICHED))
@PROPERTY
@given(secret=all_shapes, named=named_values)
def test_shapes_and_names_never_reach_the_enriched_topic(
    processor: RecordProcessor, place: str, secret: str, named: str
) -> None:
    entries = ENRICHED[place](secret, named)
    if not entries:
        return
    result = run(processor, entries)
    assert result.dead_letters == []
    assert len(result.events) == len(entries)
    assert_absent(outputs(result), secret, named)


@pytest.mark.parametrize("place", sorted(DEAD_LETTERED))
@PROPERTY
@given(secret=all_shapes, named=named_values)
def test_shapes_and_names_never_reach_a_dead_letter(
    processor: RecordProcessor, place: str, secret: str, named: str
) -> None:
    for raw in DEAD_LETTERED[place](secret, named):
        result = run(processor, raw)
        assert result.events == []
        assert len(result.dead_letters) == 1
        assert_absent(outputs(result), secret, named)


@pytest.mark.parametrize("shape", sorted(SHAPES))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_each_shape_is_found_bare(shape: str, data: st.DataObject) -> None:
    """Each shape on its own, with no name to give it away, in each place it can stand."""
    secret = data.draw(SHAPES[shape])
    seg = quote(secret, safe="")
    assert_absent(path_of(f"/v1/x/{seg}/y"), secret)
    assert_absent(path_of(f"/v1/x;m={seg}"), secret)
    assert_absent(str(redact_user_agent(f"App/1.0 ({secret})")), secret)
    assert_absent(scrub_text(f"free text {secret} more"), secret)
    assert_absent(scrub_text(json.dumps({"note": secret})), secret)
    assert_absent(scrub_text(json.dumps(json.dumps({"note": secret}))), secret)


# -- names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "normalized"),
    [
        ("accessToken", "access_token"),
        ("clientSecret", "client_secret"),
        ("APIKey", "api_key"),
        ("XApiKey", "x_api_key"),
        ("access%5Ftoken", "access_token"),
        ("access%255Ftoken", "access_token"),
        ("x-hub-signature-256", "x_hub_signature_256"),
        ("ASP.NET_SessionId", "asp_net_session_id"),
        ("Client Secret", "client_secret"),
        ("PHPSESSID", "phpsessid"),
    ],
)
def test_normalize_name(name: str, normalized: str) -> None:
    assert normalize_name(name) == normalized


@pytest.mark.parametrize(
    "name",
    [
        "accessToken",
        "clientSecret",
        "sessionToken",
        "aws_secret_access_key",
        "access%5Ftoken",
        "x-hub-signature-256",
        "x-goog-api-key",
        "jsessionid",
        "JSESSIONID",
        "PHPSESSID",
        "ASP.NET_SessionId",
        "api_key_2",
        "license_key",
        "Ocp-Apim-Subscription-Key",
        "authtoken",
        "set-cookie",
        "card_number",
    ],
)
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name",
    ["keyword", "monkey", "keys", "limit", "status", "cache_key", "token_type", "user_agent", ""],
)
def test_harmless_names(name: str) -> None:
    assert not is_secret_name(name)


def test_fingerprinted_and_kept_headers_follow_the_policy() -> None:
    assert {"x-goog-api-key", "ocp-apim-subscription-key", "x-functions-key"} <= set(KEY_HEADERS)
    assert all(is_secret_name(h) for h in (*KEY_HEADERS, *KEY_PARAMS, *POLICY.auth_headers))
    assert not any(is_secret_name(h) for h in KEPT_HEADERS)


@pytest.mark.parametrize(
    "header", ["x-goog-api-key", "X-Goog-Api-Key", "ocp-apim-subscription-key", "x-functions-key"]
)
def test_more_key_headers_are_fingerprinted(
    processor: RecordProcessor, pseudonymizer: Pseudonymizer, header: str
) -> None:
    entry = apisix_39(consumer=None)
    del entry["request"]["headers"]["apikey"]
    entry["request"]["headers"][header] = "AIzaSyD-planted-google-key-0123456789ab"
    assert extract_api_key(entry["request"]["headers"], {}) == entry["request"]["headers"][header]
    [event] = run(processor, entry).events
    assert event["key_fingerprint"] == pseudonymizer.key_fingerprint(
        "AIzaSyD-planted-google-key-0123456789ab"
    )
    assert event["rate_key"] == f"key:{event['key_fingerprint']}"


def test_camel_case_query_key_is_fingerprinted() -> None:
    assert extract_api_key({}, {"accessToken": "t0k3n-value"}) == "t0k3n-value"


# -- examples ----------------------------------------------------------------------------------

STRIPE = "sk_live_4eC39HqLyjWDarjtT1zdp7dcXyz"
GHP = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"
TELEGRAM = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawq"


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (f"/v1/keys/{STRIPE}/charges", "/v1/keys/[REDACTED]/charges"),
        (f"/bot{TELEGRAM}/getMe", "/[REDACTED]/getMe"),
        ("/v1/cart;jsessionid=0A1B2C3D4E;lang=de", "/v1/cart;jsessionid=[REDACTED];lang=de"),
        (f"/v1/x/{STRIPE.replace('_', '%5F')}.json", "/v1/x/[REDACTED]"),
        ("/v1/cards/4111111111111111/charge", "/v1/cards/[REDACTED]/charge"),
        # Ordinary paths survive: ids, UUIDs, timestamps, words, a non-Luhn 16-digit id.
        ("/v1/orders/2f0c3b9e-7a41-4c55-9d1e-6b7f1a2c3d4e", None),
        ("/v1/events/1718291190123/replay", None),
        ("/v1/orders/4111111111111112", None),
        ("/v1/reports/export-monthly-summary", None),
        ("/twirp/acme.billing.v2.InvoiceService/ListInvoicesByCustomer", None),
        ("/v1/projects/p1/locations/global:batchGet", None),
    ],
)
def test_path_examples(uri: str, expected: str | None) -> None:
    assert path_of(uri) == (uri if expected is None else expected)


@pytest.mark.parametrize(
    ("agent", "expected"),
    [
        (f"deploy-bot/1.0 token={GHP}", "deploy-bot/1.0 token=[REDACTED]"),
        (f"deploy-bot/1.0 ({GHP})", "deploy-bot/1.0 ([REDACTED])"),
        ("ci/2 Bearer abc.def", "ci/2 Bearer [REDACTED]"),
        (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0",
            None,
        ),
        ("Mozilla/5.0 (X11; Linux x86_64; rv:109.0) Gecko/20100101 Firefox/115.0", None),
        (
            "aws-sdk-java/1.12.500 Linux/5.10.0-amzn2.x86_64 OpenJDK_64-Bit_Server_VM/25.372-b07 "
            "java/1.8.0_372 vendor/Amazon.com_Inc.",
            None,
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
            None,
        ),
        ("Dalvik/2.1.0 (Linux; U; Android 13; SM-S918B Build/TP1A.220624.014)", None),
        ("okhttp/4.12.0", None),
        ("", ""),
        (None, None),
    ],
)
def test_user_agent_examples(agent: str | None, expected: str | None) -> None:
    assert redact_user_agent(agent) == (agent if expected is None else expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("apikey: abc123def\r\nHost: h", "apikey: [REDACTED]\r\nHost: h"),
        ('{"raw": "GET / HTTP/1.1\\r\\napikey: abc123def\\r\\nHost: h"}', None),
        ('{"accessToken": "abc"}', '{"accessToken": "[REDACTED]"}'),
        ('{"access%5Ftoken": "abc"}', '{"access%5Ftoken": "[REDACTED]"}'),
        ('{"e": "{\\"p\\": \\"{\\\\\\"apikey\\\\\\": \\\\\\"abc\\\\\\"}\\"}"}', None),
        ("Cookie: theme=dark; session_token=abc", "Cookie: [REDACTED] [REDACTED]"),
        ("note: theme=dark; session_token=abc", "note: theme=dark; session_token=[REDACTED]"),
        (f"seen {STRIPE} and {GHP}", "seen [REDACTED] and [REDACTED]"),
        ("card 4111 1111 1111 1111 ok", "card [REDACTED] ok"),
        ("https://u:hunter2@h/x", "https://u:[REDACTED]@h/x"),
        ("AKIAIOSFODNN7EXAMPLE wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "[REDACTED] [REDACTED]"),
        # Survive: timestamps, UUIDs, a non-Luhn number, ordinary words and ids.
        ("at 1718291190123 id 2f0c3b9e-7a41-4c55-9d1e-6b7f1a2c3d4e n 4111111111111112 ok", None),
        ('{"route_id": "products-v1", "user-agent": "okhttp/4.12.0"}', None),
    ],
)
def test_scrub_text_examples(text: str, expected: str | None) -> None:
    scrubbed = scrub_text(text)
    if expected is None and "abc" in text:
        assert "abc" not in scrubbed
        assert REDACTED in scrubbed
    else:
        assert scrubbed == (text if expected is None else expected)
    assert scrub_text(scrubbed) == scrubbed


def test_base64_wrapper_is_kept_when_clean_and_redacted_when_not() -> None:
    clean = base64.b64encode(b'{"status": 200, "path": "/v1/orders/1"}').decode()
    assert scrub_text(f'{{"data": "{clean}"}}') == f'{{"data": "{clean}"}}'
    dirty = base64.b64encode(b'{"status": 200, "apikey": "abc"}').decode()
    assert scrub_text(f'{{"data": "{dirty}"}}') == f'{{"data": "{REDACTED}"}}'
    basic = base64.b64encode(b"admin:hunter2-Secret9").decode()  # bare credential, no record
    assert basic not in scrub_text(f"creds {basic}")


def test_redact_uri_userinfo_fragment_and_segments() -> None:
    assert redact_uri(f"https://u:p@h/v1/{STRIPE}?x=1#access_token=t") == (
        "https://[REDACTED]@h/v1/[REDACTED]?x=1#access_token=[REDACTED]"
    )


@pytest.mark.parametrize(
    ("number", "card"),
    [
        ("4111111111111111", True),
        ("4111 1111 1111 1111", True),
        ("5500-0000-0000-0004", True),
        ("378282246310005", True),
        ("4111111111111112", False),  # Luhn fails
        ("1718291190123", False),  # a millisecond timestamp
        ("1234567812345670", False),  # Luhn-valid, but no card network starts with 1
        ("2000000000000008", False),  # 2 outside 2221-2720
    ],
)
def test_card_numbers(number: str, card: bool) -> None:
    assert is_card_number(number) is card


def test_random_runs_and_identifiers() -> None:
    rng = random.Random(5)
    tokens = ["".join(rng.choice(URLSAFE) for _ in range(32)) for _ in range(2000)]
    assert sum(looks_random(t, strict=False) for t in tokens) == len(tokens)
    assert sum(looks_random(t) for t in tokens if _mixed(t)) >= 0.995 * sum(map(_mixed, tokens))
    for word in (
        "OpenJDK_64-Bit_Server_VM",
        "2f0c3b9e-7a41-4c55-9d1e-6b7f1a2c3d4e",
        "ListInvoicesByCustomer",
        "hostile-probe-apisix-0",
        "export-monthly-summary-2024",
    ):
        assert not looks_random(word), word


def test_bench_traffic_paths_and_agents_are_unchanged() -> None:
    """No false positive on the generator's good traffic: what Pinot groups by is intact."""
    seen = 0
    for record in bulk_traffic(3000, start_ms=1_767_225_600_000):
        value = json.loads(record.value)
        for entry in value if isinstance(value, list) else [value]:
            request = entry.get("request") or {}
            uri = request.get("uri") or entry.get("endpoint")
            agent = (request.get("headers") or {}).get("user-agent")
            bare = uri.split("?")[0].split("#")[0]
            assert path_of(uri) == bare
            assert redact_user_agent(agent) == agent
            seen += 1
    assert seen == 3000


def test_agent_cache_does_not_hold_long_agents() -> None:
    long_agent = "x" * (CACHED_AGENT_CHARS + 1) + f" token={GHP}"
    assert redact_user_agent(long_agent) == "x" * (CACHED_AGENT_CHARS + 1) + " token=[REDACTED]"
