"""Redaction: no planted secret or client IP survives into anything the job emits.

The property tests plant random secrets in every place a gateway log can carry one, run the
entries through RecordProcessor as good events, as dead-lettered entries and as broken text,
and look for the secret in everything that comes out.
"""

from __future__ import annotations

import json
import string
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mmdb import GB_IP
from payloads import NOW_MS, RAW_TOPIC, apisix_39, apisix_210, encode, generic, kong_200, kong_401

from metering.geo import GeoLookup
from metering.records import Limits, RecordProcessor, Result, SourceRef
from metering.redact import (
    KEPT_HEADERS,
    REDACTED,
    Pseudonymizer,
    extract_api_key,
    ip_prefix,
    path_of,
    redact_headers,
    redact_query,
    redact_uri,
    scrub_text,
)

SRC = SourceRef(RAW_TOPIC, 0, 7)
URLSAFE = string.ascii_letters + string.digits + "-_"
QUERY_SECRET_NAMES = (
    "apikey",
    "api_key",
    "key",
    "token",
    "access_token",
    "jwt",
    "signature",
    "password",
    "secret",
)
PROPERTY = settings(max_examples=150, deadline=None)


def _secret_like(s: str) -> bool:
    # Mixed case and digits, like real keys; "source_topic" would be "found" in every output.
    return (
        any(c.isupper() for c in s) and any(c.islower() for c in s) and any(c.isdigit() for c in s)
    )


secrets = st.text(alphabet=URLSAFE, min_size=12, max_size=48).filter(_secret_like)


def _not_a_network_address(ip: str) -> bool:
    # A /24 or /48 network address is its own client_prefix, which the job does emit.
    return ip_prefix(ip) is not None and not str(ip_prefix(ip)).startswith(ip + "/")


client_ips = (
    st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str).filter(_not_a_network_address)
)


# -- planting ----------------------------------------------------------------------------------


def _query(secret: str, *, arrays: bool) -> tuple[str, dict[str, Any]]:
    """A request URI with the secret in every secret-named argument, and its querystring."""
    args: list[tuple[str, str]] = [("limit", "10")]
    qs: dict[str, Any] = {"limit": "10"}
    for name in QUERY_SECRET_NAMES:
        if arrays:
            args += [(name, "x"), (name, secret)]
            qs[name] = ["x", secret]
        else:
            args.append((name, secret))
            qs[name] = secret
    return "/v1/orders?" + "&".join(f"{n}={v}" for n, v in args), qs


def planted_entries(secret: str, ip: str) -> list[dict[str, Any]]:
    """Good entries of every shape, each carrying ``secret`` and ``ip`` wherever logs can."""
    entries: list[dict[str, Any]] = []

    # APISIX, credentials as single header values and single query args
    a = apisix_39(client_ip=ip, api_key=secret)
    uri, qs = _query(secret, arrays=False)
    a["request"].update(uri=uri, url=f"https://api.example.com:9443{uri}", querystring=qs)
    a["request"]["headers"].update(
        {
            "x-api-key": secret,
            "authorization": f"Bearer {secret}",
            "proxy-authorization": f"Basic {secret}",
            "cookie": f"session={secret}; theme=dark",
            "x-forwarded-for": f"{ip}, 10.0.0.1",
            "x-real-ip": ip,
        }
    )
    a["request"]["body"] = json.dumps({"amount": 4200, "password": secret})
    a["response"]["body"] = json.dumps({"id": "pay_1", "client_secret": secret})
    a["response"]["headers"]["set-cookie"] = f"sid={secret}; Path=/; HttpOnly; Secure"
    entries.append(a)

    # APISIX, every credential repeated (arrays), key in the second place
    b = apisix_39(client_ip=ip, api_key="placeholder")
    uri, qs = _query(secret, arrays=True)
    b["request"].update(uri=uri, url=f"https://api.example.com:9443{uri}", querystring=qs)
    b["request"]["headers"].update(
        {
            "apikey": ["other-key-value", secret],
            "x-api-key": [secret, secret],
            "authorization": [f"Bearer {secret}", f"Basic {secret}"],
            "proxy-authorization": [f"Bearer {secret}"],
            "cookie": [f"session={secret}", f"jwt={secret}"],
        }
    )
    b["response"]["headers"]["set-cookie"] = [f"sid={secret}; Path=/", "consent=1; Path=/"]
    entries.append(b)

    # APISIX 2.10, the whole consumer object with every auth plugin's credential
    c = apisix_210(api_key=secret)
    c["client_ip"] = ip
    c["consumer"]["plugins"].update(
        {
            "jwt-auth": {"key": "user-key", "secret": secret},
            "basic-auth": {"username": "initech", "password": secret},
            "hmac-auth": {"access_key": "initech-ak", "secret_key": secret},
        }
    )
    c["request"]["body"] = f'{{"password":"{secret}"}}'
    entries.append(c)

    # Kong, proxied: apikey header, masked authorization, key in uri, url and upstream_uri
    k = kong_200(client_ip=ip)
    uri, qs = _query(secret, arrays=False)
    k["request"].update(uri=uri, url=f"https://api.example.com:8443{uri}", querystring=qs)
    k["upstream_uri"] = "/orders" + uri[len("/v1/orders") :]
    k["request"]["headers"].update(
        {"apikey": secret, "cookie": [f"session={secret}"], "x-forwarded-for": ip}
    )
    k["request"]["body"] = f"password={secret}&user=x"
    k["response"]["body"] = json.dumps({"token": secret})
    k["response"]["headers"]["set-cookie"] = f"sid={secret}"
    entries.append(k)

    # Kong, rejected: arrays, proxy-authorization, repeated query args
    r = kong_401(client_ip=ip)
    uri, qs = _query(secret, arrays=True)
    r["request"].update(uri=uri, url=f"https://api.example.com:8443{uri}", querystring=qs)
    r["request"]["headers"].update(
        {"x-api-key": [secret], "proxy-authorization": f"Basic {secret}"}
    )
    entries.append(r)

    # Generic usage event with a credential in its endpoint and an extra field
    entries.append(
        generic(endpoint=f"/v1/reports/export?token={secret}", api_key=secret, client_ip=ip)
    )
    return entries


def invalid_variants(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The same entry made unusable in several ways, so it is dead-lettered."""
    time_field = next(f for f in ("started_at", "start_time", "timestamp") if f in entry)
    missing = dict(entry)
    del missing[time_field]
    out_of_range = dict(entry, **{time_field: 5})
    variants = [missing, out_of_range]
    if "response" in entry:
        bad_status = json.loads(json.dumps(entry))
        bad_status["response"]["status"] = [200]
        variants.append(bad_status)
    else:
        variants.append(dict(entry, units="lots"))
    return variants


def everything(result: Result) -> str:
    return json.dumps(result.events) + json.dumps(result.dead_letters)


def assert_clean(text: str, secret: str, ip: str) -> None:
    assert secret not in text
    assert ip not in text


@pytest.fixture(scope="module")
def small_processor(pseudonymizer: Pseudonymizer, geo: GeoLookup) -> RecordProcessor:
    """Tiny DLQ payloads, so truncation of the scrubbed text is exercised too."""
    return RecordProcessor(
        pseudonymizer, geo.lookup, Limits(dlq_payload_chars=256), clock=lambda: NOW_MS / 1000
    )


# -- properties --------------------------------------------------------------------------------


@PROPERTY
@given(secret=secrets, ip=client_ips)
def test_no_secret_or_ip_in_enriched_events(
    processor: RecordProcessor, secret: str, ip: str
) -> None:
    entries = planted_entries(secret, ip)
    batch = processor.process(encode(entries), SRC)
    assert batch.dead_letters == []
    assert len(batch.events) == len(entries)
    assert_clean(everything(batch), secret, ip)
    for entry in entries:
        single = processor.process(encode(entry), SRC)
        assert len(single.events) == 1
        assert_clean(everything(single), secret, ip)
    # The presented credential is still recognisable by its keyed fingerprint.
    assert batch.events[0]["key_fingerprint"] is not None


@PROPERTY
@given(secret=secrets, ip=client_ips, small=st.booleans())
def test_no_secret_or_ip_in_dead_lettered_entries(
    processor: RecordProcessor,
    small_processor: RecordProcessor,
    secret: str,
    ip: str,
    small: bool,
) -> None:
    entries = planted_entries(secret, ip)
    invalid = [v for e in entries for v in invalid_variants(e)]
    proc = small_processor if small else processor
    batch = proc.process(encode(invalid), SRC)
    assert batch.events == []
    assert [d["element_index"] for d in batch.dead_letters] == list(range(len(invalid)))
    assert_clean(everything(batch), secret, ip)
    for entry in invalid:
        single = proc.process(encode(entry), SRC)
        assert len(single.dead_letters) == 1
        assert_clean(everything(single), secret, ip)
    # A good batch mixed with the same entries made invalid.
    mixed = proc.process(encode([entries[0], invalid[0], entries[3]]), SRC)
    assert (len(mixed.events), len(mixed.dead_letters)) == (2, 1)
    assert_clean(everything(mixed), secret, ip)


@PROPERTY
@given(secret=secrets, ip=client_ips, escape=st.booleans(), small=st.booleans())
def test_no_secret_or_ip_when_only_text_scrubbing_is_possible(
    processor: RecordProcessor,
    small_processor: RecordProcessor,
    secret: str,
    ip: str,
    escape: bool,
    small: bool,
) -> None:
    """Records that never parse: the dead letter holds pattern-scrubbed raw text."""
    for entry in planted_entries(secret, ip):
        body = encode(entry, escape_slashes=escape)
        spaced = json.dumps(entry, indent=1).encode()
        raws = [
            b"[" * 40 + body + b"]" * 40,  # too deep
            b"[" * 5000 + body + b"]" * 5000,  # too deep for the parser
            body.replace(b"{", "{\u00e4".encode("latin-1"), 1),  # not UTF-8
            body[:-1],  # cut off: not JSON
            spaced[:-1],
            body.replace(b":", b": NaN,", 1),  # not JSON
        ]
        proc = small_processor if small else processor
        for raw in raws:
            result = proc.process(raw, SRC)
            assert result.events == []
            assert len(result.dead_letters) == 1
            assert_clean(everything(result), secret, ip)


@PROPERTY
@given(secret=secrets, ip=client_ips, data=st.data())
def test_truncated_payloads_are_scrubbed_wherever_they_are_cut(
    processor: RecordProcessor,
    small_processor: RecordProcessor,
    secret: str,
    ip: str,
    data: st.DataObject,
) -> None:
    entries = planted_entries(secret, ip)
    text = json.dumps(data.draw(st.sampled_from([entries, *entries])))
    if data.draw(st.booleans()):
        text = text.replace("/", "\\/")
    cut = data.draw(st.integers(min_value=0, max_value=len(text) - 1))
    truncated = text[:cut]
    assert_clean(scrub_text(truncated), secret, ip)
    proc = small_processor if data.draw(st.booleans()) else processor
    result = proc.process(truncated.encode(), SRC)
    assert result.events == []
    assert len(result.dead_letters) == 1
    assert_clean(everything(result), secret, ip)


@PROPERTY
@given(secret=secrets)
def test_scrub_text_on_free_text_forms(secret: str) -> None:
    forms = [
        f"apikey={secret} garbage{{",
        f"GET /v1/orders?limit=1&api_key={secret} HTTP/1.1",
        f"Authorization: Bearer {secret}",
        f"Proxy-Authorization: Basic {secret}",
        f"Cookie: session={secret}; theme=dark",
        f"Set-Cookie: sid={secret}; Path=/",
        f'level=warn msg="auth failed" apikey="{secret}" status=401',
        f"{{'apikey': '{secret}', 'status': 401}}",
        f"{{'x-api-key': ['{secret}', 'b']}}",
        f"password: '{secret}'",
        f'token => "{secret}"',
        f"secret = {secret}",
        f'{{"headers": {{"apikey": ["{secret}", "{secret}"]}}}}',
        f'{{"body": "{{\\"password\\":\\"{secret}\\"}}"}}',
        f'{{"note": "see https:\\/\\/h\\/cb?access_token={secret}&x=1"}}',
    ]
    for text in forms:
        scrubbed = scrub_text(text)
        assert secret not in scrubbed, text
        assert REDACTED in scrubbed


# -- examples: scrub_text ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"apikey":"s3cretValue"}', '{"apikey":"[REDACTED]"}'),
        ('{"x-api-key": ["a1", "b2"]}', '{"x-api-key": "[REDACTED]"}'),
        ('{"apikey": 12345678}', '{"apikey": "[REDACTED]"}'),
        ('{"cookie":"session=abc; theme=dark', '{"cookie":"[REDACTED]"'),  # cut off
        # Cut right after the backslash of an escaped quote inside an embedded JSON body (found
        # by the truncation property): the whole rest of the body goes, not just up to `{\"`.
        (
            '{"body": "{\\"password\\":\\"s3cretValue\\',
            '{"body": "[REDACTED]"',
        ),
        ("password='s3cretValue\\", 'password="[REDACTED]"'),
        ('{"uri":"/v1/x?limit=5&token=abc&b=2"}', '{"uri":"/v1/x?limit=5&token=[REDACTED]&b=2"}'),
        ("apikey=abc123 garbage{", "apikey=[REDACTED] garbage{"),
        ("Authorization: Bearer abc.def", "Authorization: [REDACTED] [REDACTED]"),
        ("call from Bearer abc.def", "call from Bearer [REDACTED]"),
        ("eyJhbGciOiJIUzI1.eyJzdWIiOjF9.c2ln", REDACTED),
        ("{'password': 'hunter2'}", "{'password': \"[REDACTED]\"}"),
        ('apikey="abc def" next=1', 'apikey="[REDACTED]" next=1'),
        ("client 81.2.69.142 via 10.0.3.17:8080", "client [IP] via [IP]:8080"),
        ("from 2a02:ff0:1:2::5 and ::1", "from [IP] and [IP]"),
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "[IP]"),
        ("::ffff:81.2.69.142", "::ffff:[IP]"),
        # Clock times, versions and ordinary fields survive.
        ("at 10:41:12.123 version 3.9.0", "at 10:41:12.123 version 3.9.0"),
        ('{"monkey": "banana", "keys": 3}', '{"monkey": "banana", "keys": 3}'),
        ("limit=10&status=open", "limit=10&status=open"),
    ],
)
def test_scrub_text_examples(text: str, expected: str) -> None:
    assert scrub_text(text) == expected


def test_scrub_text_is_idempotent() -> None:
    text = '{"apikey":"abc","uri":"/x?token=t","client":"81.2.69.142","auth":"Bearer zz"}'
    once = scrub_text(text)
    assert scrub_text(once) == once


# -- examples: query, uri, path, headers -------------------------------------------------------


def test_redact_query_keeps_names_and_ordinary_values() -> None:
    query = {
        "limit": "10",
        "expand": True,
        "status": ["open", "shipped"],
        "apikey": "a",
        "API-KEY": "b",
        "Access_Token": ["c", "d"],
        "signature": True,
        "client_secret": "e",
        "keyword": "shoes",
    }
    assert redact_query(query) == {
        "limit": "10",
        "expand": True,
        "status": ["open", "shipped"],
        "apikey": REDACTED,
        "API-KEY": REDACTED,
        "Access_Token": REDACTED,
        "signature": REDACTED,
        "client_secret": REDACTED,
        "keyword": "shoes",
    }


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("/v1/orders", "/v1/orders"),
        ("/v1/orders?limit=10&apikey=abc", "/v1/orders?limit=10&apikey=[REDACTED]"),
        (
            "/v1/x?api-key=a&API_KEY=b&Key=c&keyword=d",
            "/v1/x?api-key=[REDACTED]&API_KEY=[REDACTED]&Key=[REDACTED]&keyword=d",
        ),
        ("https://h:9443/p?token=t#frag", "https://h:9443/p?token=[REDACTED]#frag"),
        ("/p?expand&jwt=", "/p?expand&jwt=[REDACTED]"),
        ("/p;jsessionid=x;session=y", "/p;jsessionid=[REDACTED];session=[REDACTED]"),
    ],
)
def test_redact_uri(uri: str, expected: str) -> None:
    assert redact_uri(uri) == expected


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("/v1/orders?apikey=abc", "/v1/orders"),
        ("/v1/orders#top", "/v1/orders"),
        ("/v1/orders/#x?y", "/v1/orders/"),
        ("https://api.example.com:9443/v1/p?x=1", "/v1/p"),
        ("https://api.example.com", "/"),
        ("", "/"),
        ("?apikey=abc", "/"),
        ("/v1/orders;token=abc?x=1", "/v1/orders;token=[REDACTED]"),
    ],
)
def test_path_of(uri: str, expected: str) -> None:
    assert path_of(uri) == expected


def test_redact_headers_is_an_allow_list() -> None:
    headers = {
        "Host": "api.example.com",
        "User-Agent": "curl/8.6.0",
        "accept": ["application/json", "text/plain"],
        "x-request-id": "r1",
        "apikey": "a",
        "X-Api-Key": "b",
        "authorization": "Bearer c",
        "cookie": ["d", "e"],
        "x-forwarded-for": GB_IP,
        "x-some-new-plugin-credential": "f",
    }
    assert redact_headers(headers) == {
        "Host": "api.example.com",
        "User-Agent": "curl/8.6.0",
        "accept": ["application/json", "text/plain"],
        "x-request-id": "r1",
        "apikey": REDACTED,
        "X-Api-Key": REDACTED,
        "authorization": REDACTED,
        "cookie": REDACTED,
        "x-forwarded-for": REDACTED,
        "x-some-new-plugin-credential": REDACTED,
    }
    assert not any("key" in h or "auth" in h or "cookie" in h for h in KEPT_HEADERS)


# -- examples: ip_prefix -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "prefix"),
    [
        ("81.2.69.142", "81.2.69.0/24"),
        (" 8.8.8.8 ", "8.8.8.0/24"),
        ("10.1.2.3", "10.1.2.0/24"),
        ("2a02:ff0:1:2::5", "2a02:ff0:1::/48"),
        ("2A02:FF0:1:2:0:0:0:5", "2a02:ff0:1::/48"),
        ("::ffff:81.2.69.142", "81.2.69.0/24"),
        ("::1", "::/48"),
        ("not-an-ip", None),
        ("", None),
        ("81.2.69.142/24", None),
        ("81.2.69.256", None),
        ("81.2.69.142:8080", None),
    ],
)
def test_ip_prefix(ip: str, prefix: str | None) -> None:
    assert ip_prefix(ip) == prefix


# -- examples: extract_api_key -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "query", "consumer", "expected"),
    [
        (
            {"apikey": "h1", "x-api-key": "h2", "authorization": "Bearer b"},
            {"apikey": "q"},
            None,
            "h1",
        ),
        ({"X-API-KEY": "h2", "authorization": "Bearer b"}, {"apikey": "q"}, None, "h2"),
        ({"x-auth-token": "h3"}, {}, None, "h3"),
        ({"authorization": "Bearer b"}, {"api_key": "q"}, None, "q"),
        ({}, {"token": "t", "apikey": "q"}, None, "q"),  # KEY_PARAMS order, not query order
        ({}, {"Api-Key": ["q1", "q2"]}, None, "q1"),
        ({"authorization": "Bearer b"}, {}, None, "b"),
        ({"authorization": ["Basic dXNlcjpwdw==", "Bearer x"]}, {}, None, "dXNlcjpwdw=="),
        ({"authorization": "rawtoken"}, {}, None, "rawtoken"),
        ({"proxy-authorization": "Bearer p"}, {}, None, "p"),
        ({"authorization": "REDACTED", "apikey": "REDACTED"}, {}, None, None),  # Kong's masks
        ({"apikey": "  "}, {"apikey": True}, None, None),
        ({}, {}, {"username": "u", "plugins": {"key-auth": {"key": "ck"}}}, "ck"),
        ({"apikey": "h1"}, {}, {"plugins": {"key-auth": {"key": "ck"}}}, "h1"),
        ({}, {}, {"username": "u"}, None),
        ({}, {}, {"plugins": {"basic-auth": {"username": "u", "password": "p"}}}, None),
    ],
)
def test_extract_api_key_order(
    headers: dict[str, Any],
    query: dict[str, Any],
    consumer: dict[str, Any] | None,
    expected: str | None,
) -> None:
    assert extract_api_key(headers, query, consumer) == expected


# -- Pseudonymizer -----------------------------------------------------------------------------


def test_pseudonymizer_is_keyed_stable_and_domain_separated() -> None:
    a = Pseudonymizer(b"a" * 16 + b"0123456789abcdef")
    b = Pseudonymizer(b"b" * 16 + b"0123456789abcdef")
    fp = a.key_fingerprint("k3y")
    assert fp == a.key_fingerprint("k3y")
    assert len(fp) == 32
    assert int(fp, 16) >= 0
    assert fp != b.key_fingerprint("k3y")
    assert fp != a.key_fingerprint("k3y ")
    assert a.key_fingerprint("81.2.69.142") != a.client_hash("81.2.69.142")
    assert a.client_hash("81.2.69.142") != a.client_hash("81.2.69.143")
    with pytest.raises(ValueError, match="at least 16 bytes"):
        Pseudonymizer(b"short")
