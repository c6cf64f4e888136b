"""Credential redaction and keyed pseudonymisation.

Everything that leaves the job (enriched records, alerts, dead letters, logs) passes through here
first. Structured events are redacted by allow-list; text that could not be parsed is scrubbed by
pattern, because a dead-lettered payload may be truncated or not JSON at all.

What counts as a credential is declared once, as data: ``POLICY`` holds the secret names (and
the name parts that make a name secret), the credential headers and parameters that are
fingerprinted, and the token shapes with the places each applies to. Every name set and compiled
pattern below is built from it. Credentials are found two ways:

- by name: a query, matrix or form parameter, JSON member, header line or ``name=value`` pair
  whose name, normalized (percent-decoded, camelCase split, lower-cased, ``-``/``.``/space folded
  to ``_``), is a secret name or has a secret part (``accessToken``, ``x-hub-signature-256``,
  ``access%5Ftoken``, ``aws_secret_access_key``);
- by shape: the value itself looks like a credential wherever it stands (a path segment, a user
  agent, any string of a dead letter): provider token formats, JWTs, card numbers, long random
  runs, base64 blobs that decode to text holding a credential.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final
from urllib.parse import unquote

# Yelp's detect-secrets maintains the provider token formats. Only its plugins' compiled
# ``denylist`` patterns are used, each behind a cheap literal gate: its scanning engine (line
# parsing, filters, per-line plugin calls) costs milliseconds per call, far beyond the per-event
# budget. Shapes it lacks (Google API keys, GitHub fine-grained PATs, npm tokens, Stripe test
# keys, Slack app tokens, card numbers, long random runs) are hand-written below.
from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
from detect_secrets.plugins.basic_auth import BasicAuthDetector
from detect_secrets.plugins.discord import DiscordBotTokenDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.mailchimp import MailchimpDetector
from detect_secrets.plugins.pypi_token import PypiTokenDetector
from detect_secrets.plugins.sendgrid import SendGridDetector
from detect_secrets.plugins.slack import SlackDetector
from detect_secrets.plugins.square_oauth import SquareOAuthDetector
from detect_secrets.plugins.stripe import StripeDetector
from detect_secrets.plugins.telegram_token import TelegramBotTokenDetector
from detect_secrets.plugins.twilio import TwilioKeyDetector

REDACTED = "[REDACTED]"

# Where a token shape is looked for.
PATH: Final = "path"
"""A path segment or matrix parameter of the enriched event (per event: the hot path)."""
AGENT: Final = "agent"
"""The user agent of the enriched event (per event, cached per distinct value)."""
TEXT: Final = "text"
"""Any string of a dead letter, and log lines (rare: over-redaction is acceptable here)."""
EVERYWHERE: Final = frozenset({PATH, AGENT, TEXT})
FREE_TEXT: Final = frozenset({AGENT, TEXT})


@dataclass(frozen=True, slots=True)
class TokenShape:
    """A credential format, recognised by its value alone."""

    name: str
    pattern: re.Pattern[str]
    literals: tuple[str, ...]
    """The pattern can only match text holding one of these: a substring test gates the regex.
    Empty: always run (the pattern has no literal prefix)."""
    where: frozenset[str]
    group: int = 0
    """The group of a match that is the credential (the password of ``://user:pass@``)."""
    widen: bool = True
    """Widen a match over the url-safe characters around it: keys are often longer than a
    pattern's fixed length (Stripe's 24 characters, GitHub's 36), and the rest must go too."""


@dataclass(frozen=True, slots=True)
class RedactionPolicy:
    """Every redaction rule, as data."""

    kept_headers: frozenset[str]
    """Headers kept in anything emitted; every other header is dropped (an allow-list fails
    closed: a credential header invented by some plugin is never leaked)."""
    key_headers: tuple[str, ...]
    """Headers that carry the caller's API key, in the order they are looked at."""
    key_params: tuple[str, ...]
    """Query parameters (normalized names) that carry the API key, in order."""
    auth_headers: tuple[str, ...]
    """Headers whose ``scheme credential`` value is the key when no key header or param is."""
    auth_schemes: tuple[str, ...]
    secret_names: frozenset[str]
    """Normalized names that are secret as a whole (``key``, ``code``, ``body``)."""
    secret_parts: frozenset[str]
    """A name with any of these among its ``_``-separated parts is secret (``session_token``)."""
    secret_part_endings: tuple[str, ...]
    """... or with a part ending in one of these (``accesstoken``, ``jsessionid``)."""
    secret_last_parts: frozenset[str]
    """... or whose last part (after any numeric suffix) is one of these (``x_goog_api_key``)."""
    harmless_names: frozenset[str]
    """Normalized names the part rules would call secret but which never hold a credential."""
    shapes: tuple[TokenShape, ...]


def _ds(detector: Any, index: int = 0) -> re.Pattern[str]:
    pattern: re.Pattern[str] = detector.denylist[index]
    return pattern


POLICY: Final = RedactionPolicy(
    kept_headers=frozenset(
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
    ),
    key_headers=(
        "apikey",
        "x-api-key",
        "api-key",
        "x-apikey",
        "x-auth-token",
        "x-goog-api-key",
        "ocp-apim-subscription-key",
        "x-functions-key",
        "x-access-token",
        "x-api-token",
        "api-token",
        "x-auth-key",
        "x-rapidapi-key",
    ),
    key_params=("apikey", "api_key", "key", "x_api_key", "token", "access_token", "jwt"),
    auth_headers=("authorization", "proxy-authorization"),
    auth_schemes=(
        "Bearer",
        "Basic",
        "Digest",
        "Token",
        "Signature",
        "HMAC-SHA256",
        "AWS4-HMAC-SHA256",
    ),
    secret_names=frozenset(
        {
            "key",
            "code",
            "body",
            "sid",
            "pass",
            "passcode",
            "pin",
            "pan",
            "card_number",
            "credit_card",
        }
    ),
    secret_parts=frozenset(
        {
            "token",
            "secret",
            "secrets",
            "password",
            "passwd",
            "pwd",
            "passphrase",
            "apikey",
            "auth",
            "authorization",
            "credential",
            "credentials",
            "creds",
            "jwt",
            "cookie",
            "cookies",
            "signature",
            "sig",
            "session",
            "sessionid",
            "sessid",
            "bearer",
            "hmac",
            "otp",
            "cvv",
            "cvc",
        }
    ),
    secret_part_endings=(
        "token",
        "secret",
        "password",
        "passwd",
        "apikey",
        "sessid",
        "sessionid",
        "signature",
        "credential",
        "credentials",
        "cookie",
    ),
    secret_last_parts=frozenset({"key"}),
    # Over-redaction in a dead letter is acceptable, so this list stays short: names whose value
    # is needed to read a record and is by construction no credential.
    harmless_names=frozenset(
        {
            "cache_key",
            "sort_key",
            "partition_key",
            "primary_key",
            "foreign_key",
            "routing_key",
            "idempotency_key",
            "public_key",
            "publishable_key",
            "token_type",
            "page_token",
            "next_page_token",
        }
    ),
    shapes=(
        # detect-secrets' JWT pattern retries its unbounded first part from every "eyJ" of a
        # run (quadratic on "eyJeyJ..."): this one starts only where a run starts, and takes the
        # signature too.
        TokenShape(
            "jwt",
            re.compile(
                r"(?<![A-Za-z0-9_=-])(?=[A-Za-z0-9_=-]*?eyJ)[A-Za-z0-9_=-]++"
                r"\.[A-Za-z0-9_=-]++(?:\.[A-Za-z0-9_.+/=-]*+)?"
            ),
            ("eyJ",),
            EVERYWHERE,
        ),
        TokenShape(
            "aws_access_key_id",
            _ds(AWSKeyDetector),
            ("A3T", "ABIA", "ACCA", "AKIA", "ASIA"),
            EVERYWHERE,
        ),
        TokenShape("stripe_live_key", _ds(StripeDetector), ("k_live_",), EVERYWHERE),
        TokenShape(
            "stripe_key",
            re.compile(r"[rs]k_(?:live|test)_[0-9a-zA-Z]{10,}"),
            ("k_live_", "k_test_"),
            EVERYWHERE,
        ),
        TokenShape(
            "github_token",
            _ds(GitHubTokenDetector),
            ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
            EVERYWHERE,
        ),
        TokenShape(
            "github_pat", re.compile(r"github_pat_[A-Za-z0-9_]{22,}"), ("github_pat_",), EVERYWHERE
        ),
        TokenShape("slack_token", _ds(SlackDetector), ("xox", "XOX"), EVERYWHERE),
        TokenShape(
            "slack_token_any",
            re.compile(r"\b(?:xox[a-z]|xapp)-[A-Za-z0-9-]{10,}", re.IGNORECASE),
            ("xox", "XOX", "xapp"),
            EVERYWHERE,
        ),
        TokenShape("slack_webhook", _ds(SlackDetector, 1), ("hooks.slack.com",), FREE_TEXT),
        TokenShape("google_api_key", re.compile(r"AIza[0-9A-Za-z_\-]{35}"), ("AIza",), EVERYWHERE),
        TokenShape("telegram_bot_token", _ds(TelegramBotTokenDetector), (":",), EVERYWHERE),
        TokenShape(
            "gitlab_token",
            re.compile("|".join(p.pattern for p in GitLabTokenDetector.denylist)),
            ("gl", "GR1348941"),
            EVERYWHERE,
        ),
        # detect-secrets' pattern starts with an unbounded run retried from every "sk-" of a
        # run; the marker and its fixed-length neighbours are enough, widening takes the rest.
        TokenShape(
            "openai_key",
            re.compile(r"[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}"),
            ("T3BlbkFJ",),
            EVERYWHERE,
        ),
        TokenShape("sendgrid_key", _ds(SendGridDetector), ("SG.",), EVERYWHERE),
        TokenShape(
            "twilio_key",
            re.compile("|".join(p.pattern for p in TwilioKeyDetector.denylist)),
            ("AC", "SK"),
            EVERYWHERE,
        ),
        TokenShape("pypi_token", _ds(PypiTokenDetector), ("pypi-",), EVERYWHERE),
        TokenShape("npm_token", re.compile(r"npm_[A-Za-z0-9]{36}"), ("npm_",), EVERYWHERE),
        TokenShape("discord_bot_token", _ds(DiscordBotTokenDetector), ("M", "N", "O"), FREE_TEXT),
        TokenShape("mailchimp_key", _ds(MailchimpDetector), ("-us",), EVERYWHERE),
        TokenShape("square_oauth_secret", _ds(SquareOAuthDetector), ("sq0csp-",), EVERYWHERE),
        TokenShape(
            "azure_storage_key",
            _ds(AzureStorageKeyDetector),
            ("AccountKey=",),
            FREE_TEXT,
            widen=False,
        ),
        TokenShape(
            "url_password", _ds(BasicAuthDetector), ("://",), FREE_TEXT, group=1, widen=False
        ),
        # detect-secrets flags only the BEGIN line of a key; the whole block must go.
        TokenShape(
            "private_key",
            re.compile(
                r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?"
                r"(?:-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|$)"
            ),
            ("PRIVATE KEY",),
            FREE_TEXT,
            widen=False,
        ),
    ),
)

KEPT_HEADERS: Final = POLICY.kept_headers
KEY_HEADERS: Final = POLICY.key_headers
KEY_PARAMS: Final = POLICY.key_params
AUTH_HEADERS: Final = POLICY.auth_headers

# -- names -----------------------------------------------------------------------------------

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def _unquote(text: str) -> str:
    """Percent-decoded, repeatedly (``%255F`` is a double-encoded ``_``), at most three times."""
    for _ in range(3):
        if "%" not in text:
            break
        decoded = unquote(text, errors="replace")
        if decoded == text:
            break
        text = decoded
    return text


def _normalize(name: str) -> str:
    name = _CAMEL.sub("_", _unquote(name))
    return _NON_ALNUM.sub("_", name.lower()).strip("_")


def _is_secret_normalized(n: str) -> bool:
    if not n or n in POLICY.harmless_names:
        return False
    if n in POLICY.secret_names:
        return True
    parts = n.split("_")
    if not POLICY.secret_parts.isdisjoint(parts):
        return True
    if any(p.endswith(POLICY.secret_part_endings) for p in parts):
        return True
    while len(parts) > 1 and parts[-1].isdigit():  # api_key_2, x_hub_signature_256
        parts.pop()
    return len(parts) > 1 and parts[-1] in POLICY.secret_last_parts


# Names repeat (every record has the same members), so both are cached, but only for names of
# a sensible length: a hostile record's megabyte-long member names must not pile up in memory.
_CACHED_NAME_CHARS = 256
_normalize_cached = lru_cache(maxsize=16_384)(_normalize)


@lru_cache(maxsize=16_384)
def _is_secret_cached(name: str) -> bool:
    return _is_secret_normalized(_normalize_cached(name))


def normalize_name(name: str) -> str:
    """``accessToken``, ``Access-Token``, ``access%5Ftoken``, ``ACCESS.TOKEN``: ``access_token``."""
    return _normalize_cached(name) if len(name) <= _CACHED_NAME_CHARS else _normalize(name)


def is_secret_name(name: str) -> bool:
    """Whether a parameter, member, header or pair of this name holds a credential."""
    if len(name) <= _CACHED_NAME_CHARS:
        return _is_secret_cached(name)
    return _is_secret_normalized(_normalize(name))


# -- shapes ----------------------------------------------------------------------------------

_SHAPES: Final = {w: tuple(s for s in POLICY.shapes if w in s.where) for w in EVERYWHERE}
_URLSAFE_CHARS: Final = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
_URLSAFE: Final = frozenset(_URLSAFE_CHARS)
_UPPER: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_LOWER: Final = frozenset("abcdefghijklmnopqrstuvwxyz")
_DIGITS: Final = frozenset("0123456789")
_HEX: Final = frozenset("0123456789abcdefABCDEF")
_SEPARATORS: Final = frozenset("-_.:")
_PREFIXES: Final = tuple(
    sorted({lit for shape in POLICY.shapes for lit in shape.literals if len(lit) >= 3})
)
_B64: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/")
_WIDEN_LEFT_MAX = 256
_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
# Runs a random token can hide in: url-safe and standard base64 characters (an AWS secret key
# has "/" and "+"); in dead-letter text also JSON-escaped slashes (APISIX writes "/" as "\/").
_AGENT_RUN = re.compile(r"[A-Za-z0-9+/_-]{20,}={0,2}")
_TEXT_RUN = re.compile(r"(?:[A-Za-z0-9+_-]|\\?/){20,}={0,2}")
# Every pattern that can meet hostile text is linear: a repetition that could fail and be
# retried from each later start of the same run is anchored at the run's start (a lookbehind)
# and possessive, so a megabyte of ``z`` followed by ``%`` is scanned once, not once per start.
_PCT_CHARS = r"A-Za-z0-9_.~+/=-"
_PCT_RUN = re.compile(
    rf"(?<![{_PCT_CHARS}])[{_PCT_CHARS}]*+(?:%[0-9A-Fa-f]{{2}}[{_PCT_CHARS}]*+)++"
)
# 13 to 19 digits, optionally grouped by spaces or dashes, starting like a card network's
# numbers (2221-2720, 3, 4, 5, 6): a millisecond timestamp (1...) is never taken for a card.
_CARD = re.compile(r"(?<![\d.])[2-6]\d(?:[ -]?\d){11,17}(?!\d)")
# The head of a card number at the end of a cut payload: 8+ digits, maybe grouped.
_CARD_HEAD = re.compile(r"(?<![\d.])[2-6]\d(?:[ -]?\d){6,}[ -]?$")
_CARD_TAIL_CHARS = 24
_RECORDISH = re.compile(r'[\s{}"&=]')


def _entropy(text: str) -> float:
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


def _secret_head(run: str) -> bool:
    """Whether the run a text ends with may be the head of a cut credential: a token prefix
    (``AIza``, ``ghp_``), 16+ digits, letters and digits, or mixed case changing case as often as
    random text does (``ValueError`` and ``greater_than_equal`` are words)."""
    if any(lit in run for lit in _PREFIXES):
        return True
    chars = set(run)
    if chars <= _DIGITS | _SEPARATORS:
        return sum(ch in _DIGITS for ch in run) >= 16
    if not chars.isdisjoint(_DIGITS):
        return True
    # A cut may leave only one case of a key's head (``AAAA…``); a 16-letter word with no
    # separator is rare enough in reasons and payload tails to lose.
    if len(run) >= 16 and chars.isdisjoint(_SEPARATORS):
        return True
    return (
        len(run) >= 12
        and not chars.isdisjoint(_UPPER)
        and not chars.isdisjoint(_LOWER)
        and _class_changes(run) >= 0.45
    )


def _class_changes(text: str) -> float:
    """Share of adjacent letter/digit pairs that change class (upper, lower, digit).

    About 0.6 for random base62, about 0.2 for words and versions (``OpenJDK_64-Bit_Server``):
    entropy alone cannot tell those apart at 20-40 characters.
    """
    pairs = changes = 0
    prev = -1
    for ch in text:
        cls = 0 if ch in _UPPER else 1 if ch in _LOWER else 2 if ch in _DIGITS else -1
        if cls >= 0 and prev >= 0:
            pairs += 1
            changes += cls != prev
        prev = cls
    return changes / pairs if pairs else 0.0


def looks_random(token: str, *, strict: bool = True) -> bool:
    """Whether a run of 20+ token characters is a random credential rather than a word or id.

    ``strict`` (enriched paths and agents, where a false positive damages analytics): upper,
    lower and digits, entropy >= 3.5 bits, class changes >= 0.28. Otherwise (dead letters): two of
    the three classes, entropy >= 3.3, class changes >= 0.15. Either way: 32+ hex digits, and
    AWS-secret-shaped 40-character base64. Canonical UUIDs are identifiers, never secrets.
    """
    t = token.rstrip("=")
    n = len(t)
    if n < 20 or _UUID.fullmatch(t):
        return False
    chars = set(t)
    upper = not chars.isdisjoint(_UPPER)
    lower = not chars.isdisjoint(_LOWER)
    digit = not chars.isdisjoint(_DIGITS)
    if n >= 32 and chars <= _HEX and digit and not chars <= _DIGITS and _entropy(t) >= 3.0:
        return True
    if n == 40 and chars <= _B64 and upper and lower and digit:
        return True
    if strict:
        return upper and lower and digit and _entropy(t) >= 3.5 and _class_changes(t) >= 0.28
    return upper + lower + digit >= 2 and _entropy(t) >= 3.3 and _class_changes(t) >= 0.15


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def is_card_number(text: str) -> bool:
    """13-19 digits (spaces and dashes ignored) of a card network's ranges, Luhn-valid."""
    digits = text.replace(" ", "").replace("-", "")
    if not (13 <= len(digits) <= 19 and digits.isdigit()):
        return False
    if digits[0] == "2" and not 2221 <= int(digits[:4]) <= 2720:
        return False
    return digits[0] in "23456" and _luhn(digits)


def _b64_text(run: str) -> str | None:
    """The text a base64 run decodes to, if it is mostly printable text; None otherwise."""
    s = run.replace("\\/", "/").rstrip("=")
    if len(s) % 4 == 1:  # cut mid-blob
        s = s[:-1]
    urlsafe = "-" in s or "_" in s
    if urlsafe and ("+" in s or "/" in s):
        return None
    try:
        raw = base64.b64decode(
            s + "=" * (-len(s) % 4), altchars=b"-_" if urlsafe else b"+/", validate=True
        )
    except (binascii.Error, ValueError):
        return None
    for cut in range(4):  # a cut blob may end inside a multi-byte character
        try:
            text = raw[: len(raw) - cut].decode("utf-8")
            break
        except UnicodeDecodeError:
            continue
    else:
        return None
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    return text if text and printable >= 0.95 * len(text) else None


def _run_is_secret(run: str, where: str, depth: int) -> bool:
    if where != TEXT:
        return looks_random(run) or ("/" in run and any(looks_random(p) for p in run.split("/")))
    if depth < 2 and len(run) >= 24:
        # A base64-wrapped record: judged by what it wraps. Bare base64 of a credential
        # ("user:pass") has no record structure and falls through to the randomness test.
        decoded = _b64_text(run)
        if decoded is not None and _RECORDISH.search(decoded):
            return _scrub(decoded, depth + 1) != decoded
    token = run.replace("\\/", "/")
    if "/" not in token:
        return looks_random(token, strict=False)
    # A path or standard base64: the whole by the strict test (a path's words and ids are not
    # random), each piece by the loose one.
    return looks_random(token) or any(looks_random(p, strict=False) for p in token.split("/"))


def _widen(text: str, start: int, end: int) -> tuple[int, int]:
    floor = max(0, start - _WIDEN_LEFT_MAX)
    while start > floor and text[start - 1] in _URLSAFE:
        start -= 1
    n = len(text)
    while end < n and text[end] in _URLSAFE:
        end += 1
    return start, end


def _secret_spans(text: str, where: str, depth: int = 0) -> list[tuple[int, int]]:
    """Where credentials are in ``text``, by shape alone."""
    spans: list[tuple[int, int]] = []
    for shape in _SHAPES[where]:
        if shape.literals and not any(lit in text for lit in shape.literals):
            continue
        pos = 0
        while (m := shape.pattern.search(text, pos)) is not None:
            start, end = m.span(shape.group)
            if shape.widen:
                start, end = _widen(text, start, end)
            spans.append((start, end))
            pos = max(end, m.end(), m.start() + 1)
    runs = _TEXT_RUN if where == TEXT else _AGENT_RUN
    spans += [m.span() for m in runs.finditer(text) if _run_is_secret(m.group(), where, depth)]
    spans += [m.span() for m in _CARD.finditer(text) if is_card_number(m.group())]
    if where == TEXT:
        # A payload cut off inside a credential ends with its head, which no shape matches any
        # more: a trailing run that is not a word or a short number goes.
        body = text.rstrip("\\")
        # Standard base64 too (AWS secrets): its '/', '+' and '=' belong to the head.
        tail = len(body) - len(body.rstrip(_URLSAFE_CHARS + ".:/+="))
        if tail >= 10 and _secret_head(body[-tail:]):
            spans.append((len(body) - tail, len(text)))
        last = body[-_CARD_TAIL_CHARS:]
        if (card := _CARD_HEAD.search(last)) is not None:
            spans.append((len(body) - len(last) + card.start(), len(text)))
    if "%" in text:
        for m in _PCT_RUN.finditer(text):
            decoded = _unquote(m.group())
            if "%" not in decoded and _secret_spans(decoded, where, depth):
                spans.append(m.span())
    return spans


def _redact_spans(text: str, spans: list[tuple[int, int]]) -> str:
    if not spans:
        return text
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    out: list[str] = []
    pos = 0
    for start, end in merged:
        out += (text[pos:start], REDACTED)
        pos = end
    out.append(text[pos:])
    return "".join(out)


def redact_tokens(text: str, where: str = TEXT) -> str:
    """``text`` with every credential-shaped token replaced."""
    return _redact_spans(text, _secret_spans(text, where))


# -- pairs: a secret name, then its value ----------------------------------------------------

# "name": value, at any depth of JSON-in-a-JSON-string: the quotes of a string embedded n levels
# deep carry 2^n - 1 backslashes, and the name's quotes say which level the value is at.
_JSON_NAME = re.compile(r'(?<!\\)(\\*+)"([^"\\\r\n]{1,128})\1"\s*+:\s*+')
# A string value at the top level (it may be cut off at the end of a truncated payload, even
# right after the backslash of an escaped quote: without `\\?$` the match would stop at an
# earlier escaped quote and leave the rest of the value, an embedded secret, in the clear).
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\[\s\S])*+(?:"|\\?$)')
_JSON_SCALAR = re.compile(r"[-\w.+]+")
_BRACKET = re.compile(r"[\[\]{}]")


@lru_cache(maxsize=8)
def _escaped_string(q: str) -> re.Pattern[str]:
    """A string value whose quotes are escaped as ``q"``; it ends at that quote, at the end of
    the text, or before a quote of a shallower level."""
    quote = re.escape(q) + '"'
    return re.compile(rf'{quote}(?:[^"\\]|(?!{quote})\\++[\s\S])*(?:{quote}|\\*$|(?="))')


def _container_end(text: str, start: int) -> int:
    """The end of the array or object opening at ``start`` (brackets in strings are counted
    too: at worst that ends it early, and the rest is scanned for names again)."""
    depth = 0
    for m in _BRACKET.finditer(text, start):
        depth += 1 if m.group() in "[{" else -1
        if depth == 0:
            return m.end()
    return len(text)


def _json_value_end(text: str, start: int, q: str) -> int | None:
    if text.startswith(q + '"', start):
        m = (_escaped_string(q) if q else _JSON_STRING).match(text, start)
        return m.end() if m else None
    if start < len(text) and text[start] in "[{":
        return _container_end(text, start)
    m = _JSON_SCALAR.match(text, start)
    return m.end() if m else None


def _redact_json_pairs(text: str) -> str:
    out: list[str] = []
    pos = search_at = 0
    while (m := _JSON_NAME.search(text, search_at)) is not None:
        search_at = m.end()
        if not is_secret_name(m.group(2)):
            continue
        q = m.group(1)
        end = _json_value_end(text, m.end(), q)
        if end is None:
            continue
        out += (text[pos : m.end()], f'{q}"{REDACTED}{q}"')
        pos = search_at = end
    out.append(text[pos:])
    return "".join(out)


# name=value, name: value, name => "value", 'name': ['a', 'b'] in free text (logfmt, YAML,
# Python reprs, cookies).
_TEXT_NAME = re.compile(r"(?<![\w%])([A-Za-z_][\w.%-]{0,63})(['\"]?)\s*(?:=>?|:)\s*")
_TEXT_QUOTED = re.compile(
    r"\"(?:[^\"\\]|\\[\s\S])*+(?:\"|\\?$)|'(?:[^'\\]|\\[\s\S])*+(?:'|\\?$)"
    r"|\[\s*+['\"][^\]]*+(?:\]|$)"
)
_TEXT_BARE = re.compile(r"[^\s&,;\"'})\]]+")


def _redact_text_pairs(text: str) -> str:
    out: list[str] = []
    pos = search_at = 0
    while (m := _TEXT_NAME.search(text, search_at)) is not None:
        search_at = m.end()
        if not is_secret_name(m.group(1)):
            continue
        start = m.end()
        if (v := _TEXT_QUOTED.match(text, start)) is not None:
            marker = f'"{REDACTED}"'
        elif start < len(text) and text[start] in "\"'[{>":
            continue  # an opening it cannot read, or "[REDACTED]" already
        elif (v := _TEXT_BARE.match(text, start)) is not None:
            marker = REDACTED
        else:
            continue
        out += (text[pos:start], marker)
        pos = search_at = v.end()
    out.append(text[pos:])
    return "".join(out)


# ?name=value, &name=value, ;name=value (matrix), #name=value (OAuth implicit-flow fragments).
_PARAM_NAME = re.compile(r"[?&;#]([^=&;#?\s\"'\\/<>]{1,128})=")
_PARAM_VALUE = re.compile(r"[^&#;\s\"'\\]*")


def _redact_params(text: str) -> str:
    out: list[str] = []
    pos = search_at = 0
    while (m := _PARAM_NAME.search(text, search_at)) is not None:
        search_at = m.end()
        if not is_secret_name(m.group(1)):
            continue
        v = _PARAM_VALUE.match(text, m.end())
        end = v.end() if v else m.end()
        out += (text[pos : m.end()], REDACTED)
        pos = search_at = end
    out.append(text[pos:])
    return "".join(out)


# A header line of raw HTTP text ("apikey: abc", "Cookie: a=1; sid=2"), at the start of the text
# or of a line, the line break raw or JSON-escaped: every word of a secret header's value goes.
_HEADER_LINE = re.compile(
    r"(?:^|(?<=[\r\n])|(?<=\\[rn]))[ \t]*([A-Za-z][\w.%-]{0,63})[ \t]*:[ \t]*"
    r"((?:[^\r\n\"\\]|\\(?![rn\"]))*)"
)
_WORD = re.compile(r"\S+")


def _header_line(m: re.Match[str]) -> str:
    if not is_secret_name(m.group(1)):
        return m.group(0)
    value = _WORD.sub(lambda w: w.group() if REDACTED in w.group() else REDACTED, m.group(2))
    return m.group(0)[: m.start(2) - m.start(0)] + value


_AUTH_SCHEME = re.compile(
    r"\b(" + "|".join(re.escape(s) for s in POLICY.auth_schemes) + r")\s++(?![=:])[^\s\"',}]+",
    re.IGNORECASE,
)
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]*\d)")
# Full 8-group form, or any compressed form containing '::'. Clock times such as 10:41:12 have
# neither, so they survive.
_IPV6 = re.compile(
    r"(?<![\w:])(?:(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}"
    r"|(?:[0-9A-Fa-f]{1,4}+:){0,7}+:(?::?[0-9A-Fa-f]{1,4}+){0,7}+(?:%\w++)?)(?![\w:])"
)


# Any number of backslashes: \\u0061 is "a" two JSON levels down.
_ASCII_ESCAPE = re.compile(r"(?<!\\)\\++u00([2-7][0-9a-fA-F])")
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:=")


def _unescape_plain(m: re.Match[str]) -> str:
    # Only letters, digits and name/address punctuation: unescaping a quote or backslash would
    # end a JSON string early and leave the rest of its value outside the patterns' reach.
    char = chr(int(m.group(1), 16))
    return char if char in _PLAIN else m.group(0)


def scrub_text(text: str) -> str:
    """Remove anything credential- or IP-shaped from free text by name and by shape.

    Used where no structure can be trusted: dead-lettered payloads (possibly invalid JSON,
    possibly truncated, possibly a raw HTTP request, base64 or doubly escaped JSON) and log
    lines. Over-redaction is acceptable here; leaks are not.
    """
    return _scrub(text, 0)


def _scrub(text: str, depth: int) -> str:
    # \u0061pikey is "apikey" to any JSON reader: undo ASCII escapes first so they match too.
    text = _ASCII_ESCAPE.sub(_unescape_plain, text)
    text = _redact_json_pairs(text)
    text = _HEADER_LINE.sub(_header_line, text)
    text = _redact_params(text)
    text = _AUTH_SCHEME.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _redact_text_pairs(text)
    text = _IPV4.sub("[IP]", text)
    text = _IPV6.sub(lambda m: "[IP]" if m.group(0).count(":") >= 2 else m.group(0), text)
    return _redact_spans(text, _secret_spans(text, TEXT, depth))


# -- structured fields -----------------------------------------------------------------------


def redact_query(query: Mapping[str, Any]) -> dict[str, Any]:
    """Querystring object with secret-named parameters replaced (names kept for analysis)."""
    return {
        k: (REDACTED if isinstance(k, str) and is_secret_name(k) else v) for k, v in query.items()
    }


# The enriched path runs this per event. Every credential a rule below can find in a path has a
# run of 12 url-safe characters (shapes, random runs, card numbers), a parameter or a
# percent-encoding; a clean path pays for one short regex scan and three substring tests.
_PATH_RUN = re.compile(r"[A-Za-z0-9_-]{12}")


def _path_secret(text: str) -> bool:
    if "%" in text:
        return bool(_secret_spans(_unquote(text), PATH))
    # Cheap for the many short segments of a long path: no shape fits in fewer than 12.
    return _PATH_RUN.search(text) is not None and bool(_secret_spans(text, PATH))


def _redact_piece(piece: str) -> str:
    """A path segment, or one ``name=value`` matrix parameter of it."""
    name, eq, value = piece.partition("=")
    if not eq:
        return REDACTED if _path_secret(piece) else piece
    if is_secret_name(name) or _path_secret(value):
        return f"{name}={REDACTED}"
    return REDACTED if _path_secret(name) else piece


def redact_path(path: str) -> str:
    """A path with every credential-shaped segment and secret matrix parameter replaced whole:
    ``/v1/keys/sk_live_.../charges`` -> ``/v1/keys/[REDACTED]/charges``."""
    if ";" not in path and "=" not in path and "%" not in path and not _PATH_RUN.search(path):
        return path
    return "/".join([_redact_segment(segment) for segment in path.split("/")])


def _redact_segment(segment: str) -> str:
    if len(segment) < 12 and ";" not in segment and "=" not in segment and "%" not in segment:
        return segment  # too short for any shape: most segments of a long path
    return ";".join([_redact_piece(p) if p else p for p in segment.split(";")])


def redact_uri(uri: str) -> str:
    """A path or URL with secret parameters, credential-shaped segments and values, and URL
    userinfo replaced."""
    cut = len(uri)
    for sep in ("?", "#"):
        idx = uri.find(sep)
        if 0 <= idx < cut:
            cut = idx
    head, tail = uri[:cut], uri[cut:]
    prefix = ""
    if "://" in head:
        scheme, rest = head.split("://", 1)
        slash = rest.find("/")
        authority, head = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
        at = authority.rfind("@")
        if at >= 0:  # https://user:password@host
            authority = REDACTED + authority[at:]
        prefix = f"{scheme}://{authority}"
    if tail:
        tail = redact_tokens(_redact_params(tail), TEXT)
    return prefix + redact_path(head) + tail


def path_of(uri: str) -> str:
    """The path of a request URI or URL, without query string or fragment, credentials
    redacted (matrix parameters such as ``;jsessionid=`` and credential-shaped segments)."""
    for sep in ("?", "#"):
        idx = uri.find(sep)
        if idx >= 0:
            uri = uri[:idx]
    if "://" in uri:
        rest = uri.split("://", 1)[1]
        slash = rest.find("/")
        uri = rest[slash:] if slash >= 0 else "/"
    return redact_path(uri) if uri else "/"


# Cached per distinct value: clients send the same few agents again and again.
# Substring tests and one character-class scan rather than one alternation: a user agent near
# the record size limit (950 KB) costs milliseconds, not a third of a second.
_AGENT_WORDS: Final = ("xox", "bearer", "basic", "digest", "token", "signature", "private key")
_AGENT_SUSPECT = re.compile(r"[A-Za-z0-9+/_-]{20}|\d{4}[ -]?\d{4}[ -]?\d{4}")
CACHED_AGENT_CHARS: Final = 1024
"""Longer user agents are redacted afresh each time rather than cached."""


def _agent_suspect(agent: str) -> bool:
    if "=" in agent or ":" in agent or "%" in agent:
        return True
    lowered = agent.lower()
    if any(word in lowered for word in _AGENT_WORDS):
        return True
    return _AGENT_SUSPECT.search(agent) is not None


def _redact_agent(agent: str) -> str:
    if not _agent_suspect(agent):
        return agent
    agent = _AUTH_SCHEME.sub(lambda m: f"{m.group(1)} {REDACTED}", agent)
    agent = _redact_text_pairs(agent)
    return _redact_spans(agent, _secret_spans(agent, AGENT))


_redact_agent_cached = lru_cache(maxsize=4096)(_redact_agent)


def redact_user_agent(agent: str | None) -> str | None:
    """A user agent with credential-shaped tokens and ``token=...`` pairs replaced."""
    if not agent:
        return agent
    if len(agent) > CACHED_AGENT_CHARS:
        return _redact_agent(agent)
    return _redact_agent_cached(agent)


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
    qnorm = {normalize_name(k): v for k, v in query.items() if isinstance(k, str)}
    for name in KEY_PARAMS:
        key = _first(qnorm.get(name))
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


HMAC_CACHE_SIZE: Final = 65_536
"""Fingerprints a Pseudonymizer remembers per function (API keys, client addresses)."""
CACHED_HMAC_CHARS: Final = 256
"""Longer values are fingerprinted afresh each time: a flood of huge distinct keys must not
fill the caches with megabytes each."""


class Pseudonymizer:
    """Keyed fingerprints for API keys and client IPs.

    HMAC-SHA256 with a secret from the environment: stable, so usable for joins and per-key
    counts, and useless to an attacker without the key (an unkeyed hash of an IPv4 address can be
    reversed by enumerating 2^32 values).
    """

    def __init__(self, secret: bytes, cache_size: int = HMAC_CACHE_SIZE) -> None:
        if len(secret) < 16:
            raise ValueError("hash key must be at least 16 bytes")
        self._secret = secret
        # Per instance (one per worker), as the key is: the same keys and clients call again
        # and again, and two HMACs were a tenth of the per-event parse.
        self._key_fingerprint = lru_cache(maxsize=cache_size)(self._mac_key)
        self._client_hash = lru_cache(maxsize=cache_size)(self._mac_ip)

    def _mac(self, domain: str, value: str) -> str:
        msg = f"{domain}\x00{value}".encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()[:32]

    def _mac_key(self, api_key: str) -> str:
        return self._mac("apikey", api_key)

    def _mac_ip(self, ip: str) -> str:
        return self._mac("ip", ip)

    def key_fingerprint(self, api_key: str) -> str:
        if len(api_key) > CACHED_HMAC_CHARS:
            return self._mac_key(api_key)
        return self._key_fingerprint(api_key)

    def client_hash(self, ip: str) -> str:
        if len(ip) > CACHED_HMAC_CHARS:
            return self._mac_ip(ip)
        return self._client_hash(ip)


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
