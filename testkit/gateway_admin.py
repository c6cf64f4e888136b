"""Local stand-ins for the APISIX and Kong Admin APIs the responder uses, validating every request.

Each fake serves only the operations the responder needs, keeps consumer and credential state
(so a test can check that a key was blocked and unblocked), and checks each request against the
products' published Admin API definitions: a request for an operation they do not define, with a
query parameter they do not define or out of its range, or with a body their schema refuses, is
answered 400/404/405 and recorded in ``violations`` (a test asserts it stays empty).

Definitions, transcribed below (operations, parameters, body schemas):

**Apache APISIX** Admin API v3, apache/apisix at commit f519a0f04ccfd4c13b5d06caf34bcde8c8593980
(2026-08-20, ``apisix/core/version.lua``: 3.18.0):

- ``docs/en/latest/admin-api.md``: "Consumer" (GET list, GET/DELETE by username, PUT without id;
  ``X-API-KEY``), "Credential" (GET list, GET/PUT/DELETE by id), "V3 new feature" (``{"key",
  "value"}`` and ``{"total", "list"}`` bodies; paging ``page`` >= 1, ``page_size`` 10-500);
- ``apisix/admin/consumers.lua`` and ``apisix/admin/credentials.lua``: POST and PATCH are
  unsupported (405);
- ``apisix/schema_def.lua``: ``consumer`` and ``credential`` schemas (with ``id_schema``,
  ``labels_def``, ``desc_def``, ``rule_name_def``, ``timestamp_def``) and the injected ``_meta``;
- ``apisix/plugins/key-auth.lua`` (``consumer_schema``, ``encrypt_fields = {"key"}``),
  ``apisix/plugins/consumer-restriction.lua`` (``schema``); credentials take auth plugins only;
- ``apisix/core/data_encryption.lua``: with a keyring the fake stores key-auth keys encrypted and
  returns the ciphertext, as APISIX does (its GET does not decrypt, ``apisix/admin/resource.lua``).

**Kong Gateway** Admin API (OSS) OpenAPI 3.0 specs, Kong/developer.konghq.com at commit
bc1cd74260f0bddb06dcf004c9c34b53bb870c1a (2026-08-21):

- ``api-specs/gateway/admin-oss/3.9/openapi.yaml`` (``info.version`` 3.9.0): ``GET /consumers``
  (``size`` 1-1000, ``offset``, ``tags``), ``GET /consumers/{consumer_username_or_id}``;
- ``api-specs/plugins/key-auth/openapi.yaml``: ``GET /key-auths`` (list, paged),
  ``DELETE /key-auths/{KeyAuthId}`` (204);
- ``api-specs/plugins/acl/openapi.yaml``: ``GET /consumers/{ConsumerIdForNestedEntities}/acls``,
  ``PUT`` (body ``ACLWithoutParents``: ``group`` required, no other properties than
  ``consumer``, ``created_at``, ``group``, ``id``, ``tags``) and ``DELETE`` (204) of
  ``/consumers/{ConsumerIdForNestedEntities}/acls/{ACLId}``. An ACL's consumer and group are
  unique together (Kong answers 409 for a second one).

Not shipped: a test kit. ``FakeApisixAdmin(admin_key=...)`` and ``FakeKongAdmin()`` are context
managers serving on 127.0.0.1 (an ephemeral port: ``.url``).
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from jsonschema import Draft7Validator

from responder.gateways import apisix_decrypt, apisix_encrypt
from testkit.local_http import LocalHttpServer

JsonObj = dict[str, Any]

# --- APISIX definitions (apisix/schema_def.lua, plugins; see the module docstring) ------------

APISIX_ID: JsonObj = {
    "anyOf": [
        {"type": "string", "minLength": 1, "maxLength": 64, "pattern": r"^[a-zA-Z0-9-_.]+$"},
        {"type": "integer", "minimum": 1},
    ]
}
APISIX_LABELS: JsonObj = {
    "type": "object",
    "patternProperties": {
        ".*": {"type": "string", "pattern": r"^\S+$", "maxLength": 256, "minLength": 1}
    },
}
APISIX_DESC: JsonObj = {"type": "string", "maxLength": 256}
APISIX_NAME: JsonObj = {"type": "string", "maxLength": 256, "minLength": 1}
APISIX_TIMESTAMP: JsonObj = {"type": "integer"}
APISIX_CONSUMER: JsonObj = {
    "type": "object",
    "properties": {
        "id": APISIX_ID,
        "username": {
            "type": "string",
            "minLength": 1,
            "maxLength": 256,
            "pattern": r"^[a-zA-Z0-9_\-]+$",
        },
        "desc": APISIX_DESC,
        "labels": APISIX_LABELS,
        "create_time": APISIX_TIMESTAMP,
        "update_time": APISIX_TIMESTAMP,
        "group_id": APISIX_ID,
        "plugins": {"type": "object"},
    },
    "required": ["username"],
    "additionalProperties": False,
}
APISIX_CREDENTIAL: JsonObj = {
    "type": "object",
    "properties": {
        "id": {
            "oneOf": [
                APISIX_ID,
                {
                    "type": "string",
                    "minLength": 15,
                    "maxLength": 128,
                    "pattern": r"^[a-zA-Z0-9-_]+/credentials/[a-zA-Z0-9-_.]+$",
                },
            ]
        },
        "name": APISIX_NAME,
        "desc": APISIX_DESC,
        "labels": APISIX_LABELS,
        "create_time": APISIX_TIMESTAMP,
        "update_time": APISIX_TIMESTAMP,
        "plugins": {"type": "object", "maxProperties": 1},
    },
    "additionalProperties": False,
}
APISIX_META: JsonObj = {
    "type": "object",
    "properties": {
        "disable": {"type": "boolean"},
        "error_response": {"oneOf": [{"type": "string"}, {"type": "object"}]},
        "priority": {"type": "integer"},
        "filter": {"type": "array"},
        "pre_function": {"type": "string"},
    },
    "additionalProperties": False,
}
APISIX_PLUGINS: dict[str, JsonObj] = {
    # key-auth's consumer_schema: what a consumer or credential carries.
    "key-auth": {
        "type": "object",
        "properties": {"key": {"type": "string"}, "_meta": APISIX_META},
        "required": ["key"],
    },
    "consumer-restriction": {
        "type": "object",
        "properties": {
            "type": {
                "type": "string",
                "enum": ["consumer_name", "service_id", "route_id", "consumer_group_id"],
            },
            "blacklist": {"type": "array", "minItems": 1, "items": {"type": "string"}},
            "whitelist": {"type": "array", "minItems": 1, "items": {"type": "string"}},
            "allowed_by_methods": {"type": "array", "items": {"type": "object"}},
            "rejected_code": {"type": "integer", "minimum": 200},
            "rejected_msg": {"type": "string"},
            "_meta": APISIX_META,
        },
        "anyOf": [
            {"required": ["blacklist"]},
            {"required": ["whitelist"]},
            {"required": ["allowed_by_methods"]},
        ],
    },
}
APISIX_AUTH_PLUGINS = frozenset({"key-auth"})
APISIX_ENCRYPTED = {"key-auth": ("key",)}

# --- Kong definitions (OpenAPI 3.0; see the module docstring) ----------------------------------

KONG_SIZE: JsonObj = {"type": "integer", "minimum": 1, "maximum": 1000}
KONG_LIST_QUERY: dict[str, JsonObj] = {
    "size": KONG_SIZE,
    "offset": {"type": "string"},
    "tags": {"type": "string"},
}
KONG_ACL_WITHOUT_PARENTS: JsonObj = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "consumer": {
            "type": ["object", "null"],
            "properties": {"id": {"type": "string"}},
        },
        "created_at": {"type": ["integer", "null"]},
        "group": {"type": "string"},
        "id": {"type": ["string", "null"]},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["group"],
}


# --- the HTTP plumbing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """One operation of a published definition: method, path template, query parameters with
    their schemas, and the request body's schema (None: no body)."""

    method: str
    template: str
    handler: str
    query: dict[str, JsonObj] = field(default_factory=dict)
    body: JsonObj | None = None

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if method != self.method:
            return None
        names = re.findall(r"\{(\w+)\}", self.template)
        pattern = "^" + re.sub(r"\{\w+\}", "([^/]+)", self.template) + "$"
        m = re.match(pattern, path)
        return {n: unquote(v) for n, v in zip(names, m.groups(), strict=True)} if m else None


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    params: dict[str, str]
    query: dict[str, str]
    body: Any
    headers: dict[str, str]


@dataclass
class Reply:
    status: int
    body: Any = None


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def _coerce(value: str, schema: JsonObj) -> Any:
    if schema.get("type") == "integer":
        try:
            return int(value)
        except ValueError:
            return value
    return value


def _schema_errors(schema: JsonObj, value: Any) -> list[str]:
    return [
        f"{'/'.join(str(p) for p in e.absolute_path) or '(body)'}: {e.message}"
        for e in Draft7Validator(schema).iter_errors(value)
    ]


class FakeAdmin:
    """The shared server: routing, validation against ``operations``, auth, the request log."""

    operations: tuple[Operation, ...] = ()
    unsupported: dict[str, int] = {}
    """Method -> status for methods the product refuses on every path it serves (APISIX: 405)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.violations: list[str] = []
        self.requests: list[tuple[str, str]] = []
        """(method, path) of every request, in order."""
        self.fail_next: list[int] = []
        """Statuses to answer the next requests with (before validation), for retry tests."""
        self._http = LocalHttpServer(self._reply)

    def _reply(self, request: BaseHTTPRequestHandler) -> tuple[int, bytes]:
        reply = self._dispatch(request)
        return reply.status, b"" if reply.body is None else json.dumps(reply.body).encode()

    @property
    def url(self) -> str:
        return self._http.url

    def __enter__(self) -> FakeAdmin:
        self._http.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.stop()

    def authorize(self, headers: dict[str, str]) -> None:
        """Raise ApiError for a request without the right credentials."""

    def _violation(self, text: str) -> None:
        with self.lock:
            self.violations.append(text)

    def _dispatch(self, h: BaseHTTPRequestHandler) -> Reply:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        split = urlsplit(h.path)
        path, method = split.path, h.command
        with self.lock:
            self.requests.append((method, path))
            if self.fail_next:
                return Reply(self.fail_next.pop(0), {"message": "injected failure"})
        headers = {k.lower(): v for k, v in h.headers.items()}
        try:
            self.authorize(headers)
        except ApiError as e:
            return Reply(e.status, e.body)
        candidates = [op for op in self.operations if op.match(method, path) is not None]
        if not candidates:
            known_path = any(op.match(op.method, path) is not None for op in self.operations)
            status = self.unsupported.get(method, 405 if known_path else 404)
            self._violation(f"{method} {path}: not an operation of the definition")
            return Reply(status, {"error_msg": f"not supported `{method}`"})
        op = candidates[0]
        params = op.match(method, path) or {}
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        problems = []
        for name, value in query.items():
            schema = op.query.get(name)
            if schema is None:
                problems.append(f"query {name}: not a parameter of {op.template}")
            else:
                problems += [
                    f"query {name}: {p}" for p in _schema_errors(schema, _coerce(value, schema))
                ]
        body: Any = None
        if raw:
            if op.body is None:
                problems.append("a body where the definition has none")
            try:
                body = json.loads(raw)
            except ValueError:
                problems.append("body is not JSON")
        if op.body is not None:
            if body is None:
                problems.append("missing body")
            else:
                problems += _schema_errors(op.body, body)
        if problems:
            self._violation(f"{method} {path}: {'; '.join(problems)}")
            return Reply(400, {"error_msg": "invalid request: " + "; ".join(problems)})
        request = Request(method, path, params, query, body, headers)
        handler: Callable[[Request], Reply] = getattr(self, op.handler)
        try:
            with self.lock:
                return handler(request)
        except ApiError as e:
            return Reply(e.status, e.body)

    def writes(self) -> list[tuple[str, str]]:
        with self.lock:
            return [(m, p) for m, p in self.requests if m != "GET"]


# --- APISIX --------------------------------------------------------------------------------------


class FakeApisixAdmin(FakeAdmin):
    """APISIX Admin API v3: consumers and their credentials."""

    prefix = "/apisix/admin"
    operations = (
        Operation(
            "GET",
            "/apisix/admin/consumers",
            "list_consumers",
            query={
                "page": {"type": "integer", "minimum": 1},
                "page_size": {"type": "integer", "minimum": 10, "maximum": 500},
                "name": {"type": "string"},
                "label": {"type": "string"},
            },
        ),
        Operation("GET", "/apisix/admin/consumers/{username}", "get_consumer"),
        Operation("PUT", "/apisix/admin/consumers", "put_consumer", body=APISIX_CONSUMER),
        Operation("DELETE", "/apisix/admin/consumers/{username}", "delete_consumer"),
        Operation("GET", "/apisix/admin/consumers/{username}/credentials", "list_credentials"),
        Operation(
            "GET",
            "/apisix/admin/consumers/{username}/credentials/{credential_id}",
            "get_credential",
        ),
        Operation(
            "PUT",
            "/apisix/admin/consumers/{username}/credentials/{credential_id}",
            "put_credential",
            body=APISIX_CREDENTIAL,
        ),
        Operation(
            "DELETE",
            "/apisix/admin/consumers/{username}/credentials/{credential_id}",
            "delete_credential",
        ),
    )
    unsupported = {"POST": 405, "PATCH": 405}

    def __init__(
        self, admin_key: str, *, keyring: list[bytes] | None = None, page_cap: int = 500
    ) -> None:
        super().__init__()
        self.admin_key = admin_key
        self.keyring = keyring or []
        self.page_cap = page_cap
        self.consumers: dict[str, JsonObj] = {}
        self.credentials: dict[str, dict[str, JsonObj]] = {}
        self._index = 100

    def authorize(self, headers: dict[str, str]) -> None:
        if headers.get("x-api-key") != self.admin_key:
            raise ApiError(401, {"error_msg": "failed to check token"})

    # state, for tests

    def add_consumer(self, username: str, *, key: str | None = None, **extra: Any) -> None:
        """A consumer; ``key`` makes a consumer-level key-auth (the pre-3.11 way)."""
        value: JsonObj = {"username": username, "plugins": {}, **extra}
        if key is not None:
            value["plugins"]["key-auth"] = {"key": key}
        with self.lock:
            self.consumers[username] = self._stored(value)
            self.credentials.setdefault(username, {})

    def add_credential(self, username: str, credential_id: str, key: str) -> None:
        value = {"id": credential_id, "plugins": {"key-auth": {"key": key}}}
        with self.lock:
            self.credentials.setdefault(username, {})[credential_id] = self._stored(value)

    def restriction(self, username: str) -> JsonObj | None:
        with self.lock:
            conf = self.consumers[username].get("plugins", {}).get("consumer-restriction")
            return dict(conf) if conf is not None else None

    def plain_keys(self, username: str) -> list[str]:
        """The consumer's keys in clear (a double encryption would show here)."""
        with self.lock:
            values = [self.consumers[username], *self.credentials.get(username, {}).values()]
            keys = [v.get("plugins", {}).get("key-auth", {}).get("key") for v in values]
            return [apisix_decrypt(k, self.keyring) for k in keys if isinstance(k, str)]

    def _stored(self, value: JsonObj) -> JsonObj:
        """As etcd holds it: times injected, encrypt fields encrypted with the first key."""
        now = int(time.time())
        stored = json.loads(json.dumps(value))
        stored.setdefault("create_time", now)
        stored["update_time"] = now
        if self.keyring:
            for name, fields in APISIX_ENCRYPTED.items():
                conf = stored.get("plugins", {}).get(name)
                for f in fields:
                    if isinstance(conf, dict) and isinstance(conf.get(f), str):
                        conf[f] = apisix_encrypt(conf[f], self.keyring[0])
        return stored

    def _node(self, key: str, value: JsonObj) -> JsonObj:
        self._index += 1
        return {"key": key, "value": value, "createdIndex": 1, "modifiedIndex": self._index}

    def _check_plugins(self, plugins: JsonObj, *, credential: bool) -> None:
        for name, conf in plugins.items():
            schema = APISIX_PLUGINS.get(name)
            if schema is None:
                self._violation(f"plugin {name}: not a plugin this fake knows")
                raise ApiError(400, {"error_msg": f"unknown plugin {name}"})
            if credential and name not in APISIX_AUTH_PLUGINS:
                self._violation(f"plugin {name}: not an auth plugin, in a credential")
                raise ApiError(
                    400, {"error_msg": "only supports auth type plugins in consumer credential"}
                )
            errors = _schema_errors(schema, conf)
            if errors:
                self._violation(f"plugin {name}: {'; '.join(errors)}")
                raise ApiError(400, {"error_msg": f"invalid plugins configuration: {errors}"})

    # handlers

    def list_consumers(self, r: Request) -> Reply:
        page = int(r.query.get("page", 1))
        size = min(int(r.query.get("page_size", 500)), self.page_cap)
        names = sorted(self.consumers)
        chunk = names[(page - 1) * size : page * size]
        items = [self._node(f"/apisix/consumers/{n}", self.consumers[n]) for n in chunk]
        return Reply(200, {"total": len(names), "list": items})

    def get_consumer(self, r: Request) -> Reply:
        value = self.consumers.get(r.params["username"])
        if value is None:
            return Reply(404, {"message": "Key not found"})
        return Reply(200, self._node(f"/apisix/consumers/{r.params['username']}", value))

    def put_consumer(self, r: Request) -> Reply:
        self._check_plugins(r.body.get("plugins") or {}, credential=False)
        username = r.body["username"]
        created = username not in self.consumers
        value = self._stored(r.body)
        if not created:
            value["create_time"] = self.consumers[username].get("create_time")
        self.consumers[username] = value
        self.credentials.setdefault(username, {})
        return Reply(
            201 if created else 200, {"key": f"/apisix/consumers/{username}", "value": value}
        )

    def delete_consumer(self, r: Request) -> Reply:
        if self.consumers.pop(r.params["username"], None) is None:
            return Reply(404, {"message": "Key not found"})
        self.credentials.pop(r.params["username"], None)
        return Reply(200, {"deleted": "1", "key": f"/apisix/consumers/{r.params['username']}"})

    def _creds(self, r: Request) -> dict[str, JsonObj]:
        if r.params["username"] not in self.consumers:
            raise ApiError(404, {"error_msg": "consumer not found"})
        return self.credentials.setdefault(r.params["username"], {})

    def list_credentials(self, r: Request) -> Reply:
        creds = self._creds(r)
        base = f"/apisix/consumers/{r.params['username']}/credentials"
        items = [self._node(f"{base}/{cid}", v) for cid, v in sorted(creds.items())]
        return Reply(200, {"total": len(items), "list": items})

    def get_credential(self, r: Request) -> Reply:
        value = self._creds(r).get(r.params["credential_id"])
        if value is None:
            return Reply(404, {"message": "Key not found"})
        key = f"/apisix/consumers/{r.params['username']}/credentials/{r.params['credential_id']}"
        return Reply(200, self._node(key, value))

    def put_credential(self, r: Request) -> Reply:
        self._check_plugins(r.body.get("plugins") or {}, credential=True)
        creds = self._creds(r)
        value = self._stored({**r.body, "id": r.params["credential_id"]})
        creds[r.params["credential_id"]] = value
        key = f"/apisix/consumers/{r.params['username']}/credentials/{r.params['credential_id']}"
        return Reply(200, {"key": key, "value": value})

    def delete_credential(self, r: Request) -> Reply:
        if self._creds(r).pop(r.params["credential_id"], None) is None:
            return Reply(404, {"message": "Key not found"})
        return Reply(200, {"deleted": "1"})


# --- Kong ----------------------------------------------------------------------------------------


class FakeKongAdmin(FakeAdmin):
    """Kong Admin API: consumers, key-auth credentials, ACLs."""

    operations = (
        Operation("GET", "/consumers", "list_consumers", query=KONG_LIST_QUERY),
        Operation("GET", "/consumers/{consumer_username_or_id}", "get_consumer"),
        Operation("GET", "/key-auths", "list_key_auths", query=KONG_LIST_QUERY),
        Operation("DELETE", "/key-auths/{KeyAuthId}", "delete_key_auth"),
        Operation(
            "GET",
            "/consumers/{ConsumerIdForNestedEntities}/acls",
            "list_acls",
            query=KONG_LIST_QUERY,
        ),
        Operation(
            "PUT",
            "/consumers/{ConsumerIdForNestedEntities}/acls/{ACLId}",
            "put_acl",
            body=KONG_ACL_WITHOUT_PARENTS,
        ),
        Operation("DELETE", "/consumers/{ConsumerIdForNestedEntities}/acls/{ACLId}", "delete_acl"),
    )

    def __init__(self, *, token: str | None = None, page_cap: int = 1000) -> None:
        super().__init__()
        self.token = token
        self.page_cap = page_cap
        self.consumers: dict[str, JsonObj] = {}
        """id -> consumer"""
        self.key_auths: dict[str, JsonObj] = {}
        self.acls: dict[str, JsonObj] = {}

    def authorize(self, headers: dict[str, str]) -> None:
        if self.token is not None and headers.get("kong-admin-token") != self.token:
            raise ApiError(
                401, {"message": "Invalid credentials. Token or User credentials required"}
            )

    # state, for tests

    def add_consumer(self, username: str, *keys: str) -> str:
        cid = str(uuid.uuid4())
        with self.lock:
            self.consumers[cid] = {"id": cid, "username": username, "created_at": int(time.time())}
            for key in keys:
                kid = str(uuid.uuid4())
                self.key_auths[kid] = {"id": kid, "key": key, "consumer": {"id": cid}, "tags": None}
        return cid

    def groups(self, username: str) -> set[str]:
        cid = self._consumer(username)["id"]
        with self.lock:
            return {a["group"] for a in self.acls.values() if a["consumer"]["id"] == cid}

    def _consumer(self, ref: str) -> JsonObj:
        with self.lock:
            found = self.consumers.get(ref) or next(
                (c for c in self.consumers.values() if c["username"] == ref), None
            )
        if found is None:
            raise ApiError(404, {"message": "Not found"})
        return found

    def _page(self, r: Request, items: list[JsonObj], path: str) -> Reply:
        size = min(int(r.query.get("size", 100)), self.page_cap)
        start = int(r.query.get("offset") or 0)
        chunk = items[start : start + size]
        more = start + size < len(items)
        body: JsonObj = {"data": chunk, "next": None}
        if more:
            body["offset"] = str(start + size)
            body["next"] = f"{path}?offset={start + size}"
        return Reply(200, body)

    # handlers

    def list_consumers(self, r: Request) -> Reply:
        return self._page(r, sorted(self.consumers.values(), key=lambda c: c["id"]), "/consumers")

    def get_consumer(self, r: Request) -> Reply:
        return Reply(200, self._consumer(r.params["consumer_username_or_id"]))

    def list_key_auths(self, r: Request) -> Reply:
        items = sorted(self.key_auths.values(), key=lambda k: k["id"])
        return self._page(r, items, "/key-auths")

    def delete_key_auth(self, r: Request) -> Reply:
        self.key_auths.pop(r.params["KeyAuthId"], None)
        return Reply(204)

    def list_acls(self, r: Request) -> Reply:
        cid = self._consumer(r.params["ConsumerIdForNestedEntities"])["id"]
        items = [a for a in self.acls.values() if a["consumer"]["id"] == cid]
        return self._page(r, items, f"/consumers/{cid}/acls")

    def put_acl(self, r: Request) -> Reply:
        cid = self._consumer(r.params["ConsumerIdForNestedEntities"])["id"]
        aid = r.params["ACLId"]
        group = r.body["group"]
        clash = any(
            a["consumer"]["id"] == cid and a["group"] == group and a["id"] != aid
            for a in self.acls.values()
        )
        if clash:
            return Reply(409, {"message": "UNIQUE violation detected on '{consumer,group}'"})
        acl = {
            "id": aid,
            "group": group,
            "consumer": {"id": cid},
            "created_at": int(time.time()),
            "tags": r.body.get("tags"),
        }
        self.acls[aid] = acl
        return Reply(200, acl)

    def delete_acl(self, r: Request) -> Reply:
        self._consumer(r.params["ConsumerIdForNestedEntities"])
        self.acls.pop(r.params["ACLId"], None)
        return Reply(204)


def wait_for(
    condition: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.05
) -> None:
    """Poll ``condition`` until it holds; AssertionError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(poll_s)
