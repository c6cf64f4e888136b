"""Credential redaction and keyed pseudonymisation.

Everything that leaves the job (enriched records, alerts, dead letters, logs) passes through here
first. Structured events are redacted by allow-list; text that could not be parsed is scrubbed by
pattern, because a dead-lettered payload may be truncated or not JSON at all.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

REDACTED = "[REDACTED]"

# Headers worth keeping for analysis; every other header is dropped from anything we emit.
# An allow-list fails closed: a new credential header invented by some plugin is never leaked.
KEPT_HEADERS = frozenset(
    {
        "host",
        "user-agent",
        "accept",
        "accept-encoding",
        "accept-language",
        "content-type",
        "content-length",
        "x-request-id",
        "request-id",
        "x-forwarded-proto",
        "x-forwarded-port",
        "via",
        "server",
        "date",
    }
)

# Header names that carry a credential, in the order we look for the caller's API key.
KEY_HEADERS = ("apikey", "x-api-key", "api-key", "x-apikey", "x-auth-token")
AUTH_HEADERS = ("authorization", "proxy-authorization")

# Query parameter names treated as secrets (compared case-insensitively, '-' folded to '_').
SECRET_PARAMS = frozenset(
    {
        "apikey",
        "api_key",
        "key",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "auth",
        "auth_token",
        "jwt",
        "signature",
        "sig",
        "password",
        "passwd",
        "pwd",
        "secret",
        "client_secret",
        "session",
        "sessionid",
        "code",
        "x_api_key",
    }
)
KEY_PARAMS = ("apikey", "api_key", "key", "x_api_key", "token", "access_token", "jwt")

_SECRET_NAMES_RE = (
    r"api[_-]?key|x-api-key|x-apikey|apikey|key|authorization|proxy-authorization|cookie|set-cookie"
    r"|token|access[_-]token|refresh[_-]token|id[_-]token|auth[_-]token|x-auth-token|jwt|password"
    r"|passwd|pwd|secret|client[_-]secret|signature|sig|x-hmac-signature|x-hmac-access-key"
    r"|session|sessionid|body|credentials?|private[_-]key|secret[_-]key"
)
_Q = r"(?:\\?\")"  # a JSON quote, possibly escaped once inside an embedded JSON string
# "name": "value"  (value may be cut off at the end of a truncated payload, even right after
# the backslash of an escaped quote: without `\\?$` the match would back off to an earlier
# escaped quote and leave the rest of the value, an embedded secret, in the clear)
_JSON_STR_PAIR = re.compile(
    rf"({_Q}(?:{_SECRET_NAMES_RE}){_Q}\s*:\s*){_Q}(?:[^\"\\]|\\.)*(?:{_Q}|\\?$)",
    re.IGNORECASE,
)
# "name": [ ... ]  or "name": 12345 / true  (repeated headers become arrays)
_JSON_OTHER_PAIR = re.compile(
    rf"({_Q}(?:{_SECRET_NAMES_RE}){_Q}\s*:\s*)(\[[^\]]*(?:\]|$)|[-\w.+]+)",
    re.IGNORECASE,
)
_QUERY_PAIR = re.compile(
    r"([?&;](?:"
    + "|".join(sorted(SECRET_PARAMS, key=len, reverse=True)).replace("_", "[_-]")
    + r")=)[^&#\s\"'\\]*",
    re.IGNORECASE,
)
# key=value / key: value in free text (e.g. "apikey=abc garbage", "Cookie: sid=...")
_TEXT_PAIR = re.compile(
    rf"(\b(?:{_SECRET_NAMES_RE})\b\s*(?:=>?|:)\s*)(?!\s*[\"'\[{{>])[^\s&,;\"'}}\]]+",
    re.IGNORECASE,
)
# key="value" / 'key': 'value' / key => ['a', 'b'] in free text (logfmt, YAML, Python reprs)
_TEXT_QUOTED_PAIR = re.compile(
    rf"(\b(?:{_SECRET_NAMES_RE})['\"]?\s*(?:=>?|:)\s*)"
    r"(?:\"(?:[^\"\\]|\\.)*(?:\"|\\?$)|'(?:[^'\\]|\\.)*(?:'|\\?$)|\[\s*['\"][^\]]*(?:\]|$))",
    re.IGNORECASE,
)
_AUTH_SCHEME = re.compile(
    r"\b(Bearer|Basic|Digest|Token|Signature|HMAC-SHA256|AWS4-HMAC-SHA256)\s+(?![=:])[^\s\"',}]+",
    re.IGNORECASE,
)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]*\d)")
# Full 8-group form, or any compressed form containing '::'. Clock times such as 10:41:12 have
# neither, so they survive.
_IPV6 = re.compile(
    r"(?<![\w:])(?:(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}"
    r"|(?:[0-9A-Fa-f]{1,4}:){0,7}:(?::?[0-9A-Fa-f]{1,4}){0,7}(?:%\w+)?)(?![\w:])"
)


_ASCII_ESCAPE = re.compile(r"\\u00([2-7][0-9a-fA-F])")
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:=")


def _unescape_plain(m: re.Match[str]) -> str:
    # Only letters, digits and name/address punctuation: unescaping a quote or backslash would
    # end a JSON string early and leave the rest of its value outside the patterns' reach.
    char = chr(int(m.group(1), 16))
    return char if char in _PLAIN else m.group(0)


def scrub_text(text: str) -> str:
    """Remove anything credential- or IP-shaped from free text by pattern.

    Used where no structure can be trusted: dead-lettered payloads (possibly invalid JSON,
    possibly truncated) and log lines. Over-redaction is acceptable here; leaks are not.
    """
    # \u0061pikey is "apikey" to any JSON reader: undo ASCII escapes first so they match too.
    text = _ASCII_ESCAPE.sub(_unescape_plain, text)
    text = _JSON_STR_PAIR.sub(lambda m: f'{m.group(1)}"{REDACTED}"', text)
    text = _JSON_OTHER_PAIR.sub(lambda m: f'{m.group(1)}"{REDACTED}"', text)
    text = _QUERY_PAIR.sub(lambda m: m.group(1) + REDACTED, text)
    text = _AUTH_SCHEME.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _JWT.sub(REDACTED, text)
    text = _TEXT_QUOTED_PAIR.sub(lambda m: f'{m.group(1)}"{REDACTED}"', text)
    text = _TEXT_PAIR.sub(lambda m: m.group(1) + REDACTED, text)
    text = _IPV4.sub("[IP]", text)
    return _IPV6.sub(lambda m: "[IP]" if m.group(0).count(":") >= 2 else m.group(0), text)


def _is_secret_param(name: str) -> bool:
    return name.lower().replace("-", "_") in SECRET_PARAMS


def redact_query(query: Mapping[str, Any]) -> dict[str, Any]:
    """Querystring object with secret-looking parameters replaced (names kept for analysis)."""
    return {k: (REDACTED if _is_secret_param(k) else v) for k, v in query.items()}


def redact_uri(uri: str) -> str:
    """A path or URL with secret query parameter values replaced."""
    if "?" not in uri and ";" not in uri:
        return uri
    return _QUERY_PAIR.sub(lambda m: m.group(1) + REDACTED, uri)


def path_of(uri: str) -> str:
    """The path of a request URI or URL, without query string or fragment."""
    for sep in ("?", "#"):
        idx = uri.find(sep)
        if idx >= 0:
            uri = uri[:idx]
    if "://" in uri:
        rest = uri.split("://", 1)[1]
        slash = rest.find("/")
        uri = rest[slash:] if slash >= 0 else "/"
    # Matrix parameters (";jsessionid=...", ";token=...") are part of the path: redact them.
    return redact_uri(uri) if uri else "/"


def redact_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """Only allow-listed headers survive; the others keep their name with a redacted value."""
    return {
        name: (value if name.lower() in KEPT_HEADERS else REDACTED)
        for name, value in headers.items()
    }


def _first(value: Any) -> str | None:
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return None


def extract_api_key(
    headers: Mapping[str, Any],
    query: Mapping[str, Any],
    consumer: Mapping[str, Any] | None = None,
) -> str | None:
    """The credential the caller presented, for fingerprinting; None when there is none.

    Looks in the usual key-auth places first, then bearer/basic credentials, then (APISIX < 2.11)
    the key-auth key inside the full consumer object. Kong's literal "REDACTED" is not a key.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    for name in KEY_HEADERS:
        key = _first(lowered.get(name))
        if key and key != "REDACTED":
            return key
    qlow = {k.lower().replace("-", "_"): v for k, v in query.items()}
    for name in KEY_PARAMS:
        key = _first(qlow.get(name))
        if key:
            return key
    for name in AUTH_HEADERS:
        auth = _first(lowered.get(name))
        if auth and auth != "REDACTED":
            scheme, _, cred = auth.partition(" ")
            return cred.strip() or scheme
    if consumer:
        plugins = consumer.get("plugins")
        if isinstance(plugins, Mapping):
            for conf in plugins.values():
                if isinstance(conf, Mapping):
                    key = _first(conf.get("key"))
                    if key:
                        return key
    return None


class Pseudonymizer:
    """Keyed fingerprints for API keys and client IPs.

    HMAC-SHA256 with a secret from the environment: stable, so usable for joins and per-key
    counts, and useless to an attacker without the key (an unkeyed hash of an IPv4 address can be
    reversed by enumerating 2^32 values).
    """

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("hash key must be at least 16 bytes")
        self._secret = secret

    def _mac(self, domain: str, value: str) -> str:
        msg = f"{domain}\x00{value}".encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()[:32]

    def key_fingerprint(self, api_key: str) -> str:
        return self._mac("apikey", api_key)

    def client_hash(self, ip: str) -> str:
        return self._mac("ip", ip)


def parse_ip(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address, with IPv4-mapped IPv6 (::ffff:a.b.c.d) unwrapped; None if it is not one."""
    try:
        addr = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


@lru_cache(maxsize=65_536)
def ip_prefix(ip: str) -> str | None:
    """The /24 (IPv4) or /48 (IPv6) network of an address; None if it is not an address.

    Cached: clients call again and again from the same address, and ``ipaddress`` parsing was
    a third of the per-event parse time.
    """
    addr = parse_ip(ip)
    if addr is None:
        return None
    bits = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{bits}", strict=False))
