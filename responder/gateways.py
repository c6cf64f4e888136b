"""Gateway Admin API clients (Apache APISIX, Kong): find the key behind a fingerprint, block it,
unblock it.

**Finding a key.** Alerts name a key by its fingerprint, HMAC-SHA256 of the key under
``PIPELINE_HASH_KEY`` (metering.redact.Pseudonymizer). The gateway's Admin API lists its
consumers and their key-auth credentials; fingerprinting each key with the same hash key and
comparing finds the owner. Keys exist only inside ``list_keys()`` and ``KeyIndex.refresh``: never
logged, returned to a caller outside this module, or written anywhere; the index keeps
fingerprints only.

**APISIX** (Admin API v3, ``X-API-KEY``): consumers under ``/apisix/admin/consumers``, their
credentials (3.11+) under ``/apisix/admin/consumers/{username}/credentials``, and older
consumer-level ``plugins["key-auth"]``. APISIX stores key-auth keys encrypted when
``apisix.data_encryption`` is on (the default) and its Admin API returns the ciphertext
(base64 of AES-CBC with each keyring entry as key and IV); give the responder the gateway's
keyring (``RESPONDER_APISIX_KEYRING``) to see the keys. Blocking methods:

- ``consumer_restriction`` (default, reversible): the consumer gets a ``consumer-restriction``
  plugin that denies its own name (``type: consumer_name``, ``blacklist: [<name>]``, 403), the
  consumer-level use the plugin documents. The Admin API has no PATCH for consumers, so this is a
  read-modify-write of the consumer (PUT). With encryption on, the values of the consumer's
  plugins come back encrypted and a PUT would encrypt them again: the known encrypted fields are
  decrypted first, and a consumer with a plugin of unknown encrypted fields is not rewritten (a
  ``failed`` action that says so). A consumer that already has a ``consumer-restriction`` of its
  own is not rewritten either.
- ``delete_credential`` (irreversible): DELETE the key's credential. Not for consumer-level
  keys. Disabling a credential through ``_meta.disable`` is not offered: APISIX's consumer lookup
  (apisix/consumer.lua, ``plugin_consumer``) ignores it, so the key would keep working.

**Kong** (Admin API, ``Kong-Admin-Token`` when RBAC is on): ``GET /key-auths`` lists every
key-auth credential with its consumer's id. Blocking methods:

- ``acl`` (default, reversible): add the consumer to the blocked ACL group with an idempotent PUT
  of ``/consumers/{id}/acls/{uuid5(consumer, group)}``; unblock DELETEs it. Routes must run the
  ``acl`` plugin with ``deny: [<group>]`` (globally or per service) for the group to block.
- ``delete_credential`` (irreversible): ``DELETE /key-auths/{id}``.

Every request is checked by the test kit (testkit/gateway_admin.py) against the products'
published Admin API definitions.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import quote

import httpx
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from metering.redact import Pseudonymizer
from responder.notify import USER_AGENT, DeliveryError, classify_http

ApisixMethod = Literal["consumer_restriction", "delete_credential"]
KongMethod = Literal["acl", "delete_credential"]
APISIX_PAGE_SIZE = 500
"""The Admin API's largest page (its documented range is 10-500)."""
KONG_PAGE_SIZE = 1000
"""The Admin API's largest page."""
MARKER = "blocked by responder"
"""Starts the rejected_msg of the responder's consumer-restriction: ours to remove, no one
else's."""
ACL_NAMESPACE = uuid.UUID("6f1d3c39-5e33-4f3e-9a8c-0d7a0c6b1e52")
"""Namespace of the responder's deterministic Kong ACL ids."""

# The encrypt_fields of APISIX plugins that may sit on a consumer, from the plugins' schemas
# (apache/apisix apisix/plugins/*.lua at f519a0f, 3.18.0-dev). Only these are decrypted before a
# consumer is rewritten; any other plugin on an encrypted gateway stops the rewrite.
APISIX_ENCRYPT_FIELDS: dict[str, tuple[str, ...]] = {
    "key-auth": ("key",),
    "basic-auth": ("password",),
    "jwt-auth": ("secret",),
    "hmac-auth": ("secret_key",),
    "limit-count": ("redis_password", "sentinel_password"),
    "limit-req": ("redis_password",),
    "limit-conn": ("redis_password",),
    "consumer-restriction": (),
}


@dataclass(frozen=True)
class KeyOwner:
    """Who a key belongs to at the gateway; never the key itself."""

    gateway: Literal["apisix", "kong"]
    consumer: str
    credential_id: str | None
    """None: an APISIX consumer-level key-auth (no credential object)."""
    consumer_id: str | None = None
    """Kong's consumer id."""

    def describe(self) -> str:
        cred = self.credential_id or "(consumer-level key-auth)"
        return f"gateway={self.gateway} consumer={self.consumer} credential={cred}"


class Gateway(Protocol):
    """What the responder needs of a gateway's Admin API. Methods raise DeliveryError."""

    reversible: bool

    @property
    def name(self) -> Literal["apisix", "kong"]: ...

    def list_keys(self) -> Iterator[tuple[KeyOwner, str]]:
        """Every key-auth key with its owner; the key must not leave the caller."""
        ...

    def consumer(self, name: str) -> KeyOwner | None:
        """The consumer of that name, for blocks of alerts without a key fingerprint."""
        ...

    def block(self, owner: KeyOwner, incident: str) -> str:
        """Block; returns what changed (``<gateway>:consumer:<name>`` or
        ``<gateway>:credential:<id>``). Idempotent."""
        ...

    def unblock(self, owner: KeyOwner) -> None:
        """Lift the block (idempotent); DeliveryError when the method is irreversible."""
        ...


def _request(
    client: httpx.Client, method: str, url: str, *, ok404: bool = False, **kwargs: Any
) -> Any:
    """One Admin API call; the parsed JSON body (None for an empty one or an accepted 404).
    Failures are DeliveryErrors naming the status or exception class only."""
    try:
        response = client.request(method, url, **kwargs)
    except httpx.HTTPError as e:
        raise DeliveryError(f"admin API {type(e).__name__}", retryable=True) from None
    if ok404 and response.status_code == 404:
        return None
    error = classify_http(response.status_code, response.headers.get("retry-after"))
    if error is not None:
        raise DeliveryError(
            f"admin API {method} {error.reason}",
            retryable=error.retryable,
            retry_after_s=error.retry_after_s,
        )
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise DeliveryError("admin API answered non-JSON", retryable=True) from None


# --- APISIX --------------------------------------------------------------------------------------


def apisix_decrypt(value: str, keyring: list[bytes]) -> str:
    """A value as APISIX's data_encryption stores it, in clear: base64 of AES-CBC (PKCS#7) with
    a keyring entry as both key and IV, each entry tried in turn (apisix/core/
    data_encryption.lua). A 16-byte entry is AES-128 (the long-standing form); a 32-byte entry
    is AES-256 whose IV is the entry's first 16 bytes (CBC's IV is one 16-byte block; checked
    against this module's own encryption only, not a running APISIX). A value none decrypts is
    returned as is: APISIX keeps values in clear when encryption was off when they were
    written."""
    if not keyring:
        return value
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return value
    if not data or len(data) % 16:
        return value
    for key in keyring:
        decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
        padded = decryptor.update(data) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        try:
            plain = unpadder.update(padded) + unpadder.finalize()
            return plain.decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            continue
    return value


def apisix_encrypt(value: str, key: bytes) -> str:
    """The inverse of ``apisix_decrypt`` with one keyring entry (used by the test kit)."""
    padder = padding.PKCS7(128).padder()
    padded = padder.update(value.encode()) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode()


def restriction_conf(username: str, incident: str) -> dict[str, Any]:
    """The consumer-restriction that denies a consumer its own routes."""
    return {
        "type": "consumer_name",
        "blacklist": [username],
        "rejected_code": 403,
        "rejected_msg": f"{MARKER}: incident {incident}",
    }


def is_ours(conf: object) -> bool:
    return isinstance(conf, Mapping) and str(conf.get("rejected_msg", "")).startswith(MARKER)


class ApisixAdmin:
    """Apache APISIX Admin API v3 client."""

    @property
    def name(self) -> Literal["apisix"]:
        return "apisix"

    def __init__(
        self,
        base_url: str,
        admin_key: str,
        client: httpx.Client,
        *,
        method: ApisixMethod = "consumer_restriction",
        keyring: list[bytes] | None = None,
    ) -> None:
        self._base = base_url.rstrip("/") + "/apisix/admin"
        self._client = client
        self._headers = {"X-API-KEY": admin_key, "User-Agent": USER_AGENT}
        self._method = method
        self._keyring = keyring or []
        self.reversible = method == "consumer_restriction"

    def _call(self, method: str, path: str, *, ok404: bool = False, **kwargs: Any) -> Any:
        url = self._base + path
        return _request(self._client, method, url, ok404=ok404, headers=self._headers, **kwargs)

    def consumers(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            body = self._call(
                "GET", "/consumers", params={"page": page, "page_size": APISIX_PAGE_SIZE}
            )
            items = (body or {}).get("list") or []
            out += [item["value"] for item in items if isinstance(item.get("value"), dict)]
            total = int((body or {}).get("total", 0))
            if not items or len(out) >= total:
                return out
            page += 1

    def credentials(self, username: str) -> list[dict[str, Any]]:
        body = self._call("GET", f"/consumers/{quote(username, safe='')}/credentials")
        out = []
        for item in (body or {}).get("list") or []:
            value = item.get("value")
            if isinstance(value, dict):
                # The credential id is the last segment of its key when the value lacks it.
                cid = value.get("id") or str(item.get("key", "")).rsplit("/", 1)[-1]
                out.append({**value, "id": str(cid)})
        return out

    def list_keys(self) -> Iterator[tuple[KeyOwner, str]]:
        for consumer in self.consumers():
            username = str(consumer.get("username"))
            legacy = ((consumer.get("plugins") or {}).get("key-auth") or {}).get("key")
            if isinstance(legacy, str):
                yield KeyOwner("apisix", username, None), apisix_decrypt(legacy, self._keyring)
            for cred in self.credentials(username):
                key = ((cred.get("plugins") or {}).get("key-auth") or {}).get("key")
                if isinstance(key, str):
                    yield (
                        KeyOwner("apisix", username, cred["id"]),
                        apisix_decrypt(key, self._keyring),
                    )

    def consumer(self, name: str) -> KeyOwner | None:
        body = self._call("GET", f"/consumers/{quote(name, safe='')}", ok404=True)
        if not body or not isinstance(body.get("value"), dict):
            return None
        return KeyOwner("apisix", str(body["value"].get("username", name)), None)

    def _consumer_value(self, username: str) -> dict[str, Any]:
        body = self._call("GET", f"/consumers/{quote(username, safe='')}", ok404=True)
        if not body or not isinstance(body.get("value"), dict):
            raise DeliveryError(f"consumer {username} not found at the gateway", retryable=False)
        value: dict[str, Any] = body["value"]
        return value

    def _rewritable(self, value: dict[str, Any]) -> dict[str, Any]:
        """The consumer as a PUT body: server-set times dropped, encrypted fields in clear."""
        body = {k: v for k, v in value.items() if k not in ("create_time", "update_time")}
        plugins = {name: dict(conf) for name, conf in (body.get("plugins") or {}).items()}
        if self._keyring:
            unknown = sorted(set(plugins) - set(APISIX_ENCRYPT_FIELDS))
            if unknown:
                names = ", ".join(unknown)
                raise DeliveryError(
                    f"consumer has plugins whose encrypted fields are unknown ({names}); "
                    "not rewriting it",
                    retryable=False,
                )
            for name, conf in plugins.items():
                for field_name in APISIX_ENCRYPT_FIELDS[name]:
                    if isinstance(conf.get(field_name), str):
                        conf[field_name] = apisix_decrypt(conf[field_name], self._keyring)
        body["plugins"] = plugins
        return body

    def block(self, owner: KeyOwner, incident: str) -> str:
        if self._method == "delete_credential":
            if owner.credential_id is None:
                raise DeliveryError(
                    "a consumer-level key has no credential to delete; use consumer_restriction",
                    retryable=False,
                )
            path = (
                f"/consumers/{quote(owner.consumer, safe='')}/credentials/"
                f"{quote(owner.credential_id, safe='')}"
            )
            self._call("DELETE", path, ok404=True)
            return f"apisix:credential:{owner.credential_id}"
        value = self._consumer_value(owner.consumer)
        existing = (value.get("plugins") or {}).get("consumer-restriction")
        if existing is not None and not is_ours(existing):
            raise DeliveryError(
                "consumer has a consumer-restriction of its own; not overwriting it",
                retryable=False,
            )
        if existing is None:
            body = self._rewritable(value)
            body["plugins"]["consumer-restriction"] = restriction_conf(owner.consumer, incident)
            self._call("PUT", "/consumers", json=body)
        return f"apisix:consumer:{owner.consumer}"

    def unblock(self, owner: KeyOwner) -> None:
        if self._method == "delete_credential":
            raise DeliveryError("the credential was deleted: not reversible", retryable=False)
        value = self._consumer_value(owner.consumer)
        if not is_ours((value.get("plugins") or {}).get("consumer-restriction")):
            return  # lifted already (by us before a restart, or by an operator)
        body = self._rewritable(value)
        del body["plugins"]["consumer-restriction"]
        self._call("PUT", "/consumers", json=body)


# --- Kong ----------------------------------------------------------------------------------------


def acl_id(consumer_id: str, group: str) -> str:
    """The responder's ACL id for a consumer and group: deterministic, so block and unblock are
    idempotent PUT and DELETE."""
    return str(uuid.uuid5(ACL_NAMESPACE, f"{consumer_id}|{group}"))


class KongAdmin:
    """Kong Gateway Admin API client."""

    @property
    def name(self) -> Literal["kong"]:
        return "kong"

    def __init__(
        self,
        base_url: str,
        client: httpx.Client,
        *,
        token: str | None = None,
        method: KongMethod = "acl",
        blocked_group: str = "responder-blocked",
    ) -> None:
        self._base = base_url.rstrip("/")
        self._client = client
        self._headers = {"User-Agent": USER_AGENT}
        if token:
            self._headers["Kong-Admin-Token"] = token
        self._method = method
        self._group = blocked_group
        self.reversible = method == "acl"

    def _call(self, method: str, path: str, *, ok404: bool = False, **kwargs: Any) -> Any:
        url = self._base + path
        return _request(self._client, method, url, ok404=ok404, headers=self._headers, **kwargs)

    def _pages(self, path: str) -> Iterator[dict[str, Any]]:
        params: dict[str, Any] = {"size": KONG_PAGE_SIZE}
        while True:
            body = self._call("GET", path, params=params) or {}
            yield from body.get("data") or []
            offset = body.get("offset")
            if not offset or not body.get("next"):
                return
            params = {"size": KONG_PAGE_SIZE, "offset": offset}

    def list_keys(self) -> Iterator[tuple[KeyOwner, str]]:
        names = {
            c.get("id"): c.get("username") or c.get("custom_id") for c in self._pages("/consumers")
        }
        for cred in self._pages("/key-auths"):
            consumer_id = (cred.get("consumer") or {}).get("id")
            key = cred.get("key")
            if isinstance(key, str) and consumer_id:
                name = str(names.get(consumer_id) or consumer_id)
                yield KeyOwner("kong", name, str(cred.get("id")), str(consumer_id)), key

    def consumer(self, name: str) -> KeyOwner | None:
        body = self._call("GET", f"/consumers/{quote(name, safe='')}", ok404=True)
        if not body or not body.get("id"):
            return None
        return KeyOwner("kong", str(body.get("username") or name), None, str(body["id"]))

    def block(self, owner: KeyOwner, incident: str) -> str:
        if self._method == "delete_credential":
            if owner.credential_id is None:
                raise DeliveryError("no key-auth credential to delete", retryable=False)
            self._call("DELETE", f"/key-auths/{quote(owner.credential_id, safe='')}")
            return f"kong:credential:{owner.credential_id}"
        consumer_id = self._consumer_id(owner)
        path = f"/consumers/{quote(consumer_id, safe='')}/acls/{acl_id(consumer_id, self._group)}"
        try:
            self._call("PUT", path, json={"group": self._group, "tags": ["responder"]})
        except DeliveryError as e:
            # 409: the consumer is in the group already (an ACL added by hand): blocked.
            if e.reason != "admin API PUT HTTP 409":
                raise
        return f"kong:consumer:{owner.consumer}"

    def unblock(self, owner: KeyOwner) -> None:
        if self._method == "delete_credential":
            raise DeliveryError("the credential was deleted: not reversible", retryable=False)
        consumer_id = self._consumer_id(owner)
        path = f"/consumers/{quote(consumer_id, safe='')}/acls/{acl_id(consumer_id, self._group)}"
        self._call("DELETE", path, ok404=True)

    def _consumer_id(self, owner: KeyOwner) -> str:
        if owner.consumer_id:
            return owner.consumer_id
        found = self.consumer(owner.consumer)
        if found is None or not found.consumer_id:
            raise DeliveryError(
                f"consumer {owner.consumer} not found at the gateway", retryable=False
            )
        return found.consumer_id


# --- key lookup ----------------------------------------------------------------------------------


class KeyIndex:
    """Fingerprint -> owner, from the gateway's keys; holds fingerprints, never keys.

    Refreshed on a miss (a new key), at most every ``min_refresh_s``, so alerts of keys the
    gateway does not know (a key of another gateway, a key deleted since) do not make the
    responder list every consumer again and again."""

    def __init__(
        self,
        gateway: Gateway,
        pseudonymizer: Pseudonymizer,
        *,
        min_refresh_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._gateway = gateway
        self._pseudonymizer = pseudonymizer
        self._min_refresh = min_refresh_s
        self._clock = clock
        self._owners: dict[str, KeyOwner] = {}
        self._refreshed: float | None = None

    def refresh(self) -> None:
        owners: dict[str, KeyOwner] = {}
        for owner, key in self._gateway.list_keys():
            owners[self._pseudonymizer.key_fingerprint(key)] = owner
        self._owners = owners
        self._refreshed = self._clock()

    def find(self, fingerprint: str) -> KeyOwner | None:
        owner = self._lookup(fingerprint)
        stale = self._refreshed is None or self._clock() - self._refreshed >= self._min_refresh
        if owner is None and stale:
            self.refresh()
            owner = self._lookup(fingerprint)
        return owner

    def _lookup(self, fingerprint: str) -> KeyOwner | None:
        return self._owners.get(fingerprint.strip().lower())


def find_key_owner(
    gateway: Gateway, pseudonymizer: Pseudonymizer, fingerprint: str
) -> KeyOwner | None:
    """One pass over the gateway's keys (the which-key CLI): the owner of the key whose
    fingerprint is ``fingerprint``, or None."""
    wanted = fingerprint.strip().lower()
    for owner, key in gateway.list_keys():
        if hmac.compare_digest(pseudonymizer.key_fingerprint(key), wanted):
            return owner
    return None
