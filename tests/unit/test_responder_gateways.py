"""The APISIX and Kong Admin API clients (responder.gateways) against the validating fakes
(testkit.gateway_admin), and the which-key command: no real gateway, no Kafka."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from metering.redact import Pseudonymizer
from responder import __main__ as cli
from responder.gateways import (
    MARKER,
    ApisixAdmin,
    KeyIndex,
    KeyOwner,
    KongAdmin,
    acl_id,
    apisix_decrypt,
    apisix_encrypt,
    find_key_owner,
)
from responder.notify import DeliveryError
from testkit.gateway_admin import FakeApisixAdmin, FakeKongAdmin

HASH_KEY = "5b0e8c1f7a2d4e6b9c3f1a8d7e2b4c6f0a9d8e7c6b5a4f3e2d1c0b9a8f7e6d5c"
ADMIN_KEY = "a7f3c9e1b5d2f8a4c6e0b9d3f7a1c5e8"
KEYRING = [b"k3y1ng-16-bytes!", b"another-keyring-entry-of-32bytes"]
PSEUDO = Pseudonymizer(HASH_KEY.encode())
ACME_KEY = "ak_live_4f9c2e7b1d8a6f3e5c0b"
LEGACY_KEY = "legacy-3e8d1c6b9a2f7e4d"
BETA_KEY = "bk_live_9e1c7a3f5d2b8e6c4a0f"


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as c:
        yield c


@pytest.fixture
def apisix() -> Iterator[FakeApisixAdmin]:
    with FakeApisixAdmin(ADMIN_KEY, keyring=KEYRING, page_cap=10) as fake:
        fake.add_consumer("acme")
        fake.add_credential("acme", "acme-primary", ACME_KEY)
        fake.add_consumer("oldstyle", key=LEGACY_KEY)
        for i in range(25):  # more than a page
            fake.add_consumer(f"filler{i:02d}")
        yield fake
    assert fake.violations == []


@pytest.fixture
def kong() -> Iterator[FakeKongAdmin]:
    with FakeKongAdmin(token="kong-rbac-token-7c1e9a", page_cap=3) as fake:
        fake.add_consumer("acme", ACME_KEY)
        fake.add_consumer("beta", BETA_KEY)
        for i in range(5):
            fake.add_consumer(f"filler{i}", f"filler-key-{i:04d}-padding")
        yield fake
    assert fake.violations == []


def _apisix(fake: FakeApisixAdmin, client: httpx.Client, **kw: object) -> ApisixAdmin:
    return ApisixAdmin(fake.url, ADMIN_KEY, client, keyring=KEYRING, **kw)  # type: ignore[arg-type]


def _kong(fake: FakeKongAdmin, client: httpx.Client, **kw: object) -> KongAdmin:
    return KongAdmin(fake.url, client, token="kong-rbac-token-7c1e9a", **kw)  # type: ignore[arg-type]


# --- APISIX --------------------------------------------------------------------------------------


def test_apisix_keyring_encryption_round_trips() -> None:
    for key in KEYRING:
        assert apisix_decrypt(apisix_encrypt("the-key", key), KEYRING) == "the-key"
    assert apisix_decrypt("plain-not-base64!", KEYRING) == "plain-not-base64!"
    assert apisix_decrypt(apisix_encrypt("x", KEYRING[0]), []) != "x"


def test_apisix_finds_credential_and_consumer_level_keys(
    apisix: FakeApisixAdmin, client: httpx.Client
) -> None:
    gateway = _apisix(apisix, client)
    assert find_key_owner(gateway, PSEUDO, PSEUDO.key_fingerprint(ACME_KEY)) == KeyOwner(
        "apisix", "acme", "acme-primary"
    )
    assert find_key_owner(gateway, PSEUDO, PSEUDO.key_fingerprint(LEGACY_KEY)) == KeyOwner(
        "apisix", "oldstyle", None
    )
    assert find_key_owner(gateway, PSEUDO, "0" * 32) is None
    # Paged: 27 consumers at 10 a page.
    pages = [p for m, p in apisix.requests if m == "GET" and p == "/apisix/admin/consumers"]
    assert len(pages) >= 3


def test_apisix_without_the_keyring_sees_only_ciphertext(
    apisix: FakeApisixAdmin, client: httpx.Client
) -> None:
    gateway = ApisixAdmin(apisix.url, ADMIN_KEY, client)
    assert find_key_owner(gateway, PSEUDO, PSEUDO.key_fingerprint(ACME_KEY)) is None


def test_apisix_block_and_unblock_with_consumer_restriction(
    apisix: FakeApisixAdmin, client: httpx.Client
) -> None:
    gateway = _apisix(apisix, client)
    owner = KeyOwner("apisix", "oldstyle", None)
    assert gateway.block(owner, "inc1") == "apisix:consumer:oldstyle"
    restriction = apisix.restriction("oldstyle")
    assert restriction == {
        "type": "consumer_name",
        "blacklist": ["oldstyle"],
        "rejected_code": 403,
        "rejected_msg": f"{MARKER}: incident inc1",
    }
    # The consumer-level key survived the rewrite: sent in clear, encrypted once by the gateway.
    assert apisix.plain_keys("oldstyle") == [LEGACY_KEY]
    writes = len(apisix.writes())
    assert gateway.block(owner, "inc2") == "apisix:consumer:oldstyle"  # idempotent: no write
    assert len(apisix.writes()) == writes
    gateway.unblock(owner)
    assert apisix.restriction("oldstyle") is None
    assert apisix.plain_keys("oldstyle") == [LEGACY_KEY]
    gateway.unblock(owner)  # idempotent
    assert len(apisix.writes()) == writes + 1


def test_apisix_does_not_overwrite_a_restriction_of_its_own(
    apisix: FakeApisixAdmin, client: httpx.Client
) -> None:
    apisix.add_consumer(
        "special", plugins={"consumer-restriction": {"type": "route_id", "whitelist": ["r1"]}}
    )
    with pytest.raises(DeliveryError) as e:
        _apisix(apisix, client).block(KeyOwner("apisix", "special", None), "inc")
    assert e.value.retryable is False
    assert "of its own" in e.value.reason
    assert apisix.writes() == []


def test_apisix_refuses_to_rewrite_unknown_encrypted_plugins(
    apisix: FakeApisixAdmin, client: httpx.Client
) -> None:
    apisix.add_consumer("logged", plugins={"http-logger": {"uri": "http://log"}})
    with pytest.raises(DeliveryError, match=r"unknown \(http-logger\)"):
        _apisix(apisix, client).block(KeyOwner("apisix", "logged", None), "inc")


def test_apisix_delete_credential(apisix: FakeApisixAdmin, client: httpx.Client) -> None:
    gateway = _apisix(apisix, client, method="delete_credential")
    assert not gateway.reversible
    owner = KeyOwner("apisix", "acme", "acme-primary")
    assert gateway.block(owner, "inc") == "apisix:credential:acme-primary"
    assert apisix.credentials["acme"] == {}
    assert gateway.block(owner, "inc") == "apisix:credential:acme-primary"  # gone: fine
    with pytest.raises(DeliveryError, match="not reversible"):
        gateway.unblock(owner)
    with pytest.raises(DeliveryError, match="consumer-level"):
        gateway.block(KeyOwner("apisix", "oldstyle", None), "inc")


def test_apisix_wrong_admin_key_is_a_permanent_failure(
    apisix: FakeApisixAdmin, client: httpx.Client
) -> None:
    gateway = ApisixAdmin(apisix.url, "wrong-admin-key-0000000000000000", client)
    with pytest.raises(DeliveryError) as e:
        list(gateway.list_keys())
    assert (e.value.reason, e.value.retryable) == ("admin API GET HTTP 401", False)


def test_the_fake_refuses_what_the_apisix_definition_does_not_allow(
    client: httpx.Client,
) -> None:
    headers = {"X-API-KEY": ADMIN_KEY}
    with FakeApisixAdmin(ADMIN_KEY) as fake:
        fake.add_consumer("acme")
        assert (
            client.post(f"{fake.url}/apisix/admin/consumers", headers=headers, json={}).status_code
            == 405
        )
        assert (
            client.patch(
                f"{fake.url}/apisix/admin/consumers/acme", headers=headers, json={}
            ).status_code
            == 405
        )
        bad = {"username": "acme", "plugins": {"consumer-restriction": {"type": "consumer_name"}}}
        assert (
            client.put(f"{fake.url}/apisix/admin/consumers", headers=headers, json=bad).status_code
            == 400
        )
        extra = {"username": "acme", "owner": "me"}
        assert (
            client.put(
                f"{fake.url}/apisix/admin/consumers", headers=headers, json=extra
            ).status_code
            == 400
        )
        paged = client.get(f"{fake.url}/apisix/admin/consumers?page_size=5000", headers=headers)
        assert paged.status_code == 400
        cred = {"plugins": {"consumer-restriction": {"blacklist": ["x"]}}}
        url = f"{fake.url}/apisix/admin/consumers/acme/credentials/c1"
        assert client.put(url, headers=headers, json=cred).status_code == 400
        assert len(fake.violations) == 6


# --- Kong ----------------------------------------------------------------------------------------


def test_kong_finds_keys_across_pages(kong: FakeKongAdmin, client: httpx.Client) -> None:
    gateway = _kong(kong, client)
    owner = find_key_owner(gateway, PSEUDO, PSEUDO.key_fingerprint(BETA_KEY))
    assert owner is not None and owner.consumer == "beta" and owner.credential_id in kong.key_auths
    kong.requests.clear()
    assert find_key_owner(gateway, PSEUDO, "0" * 32) is None
    # A miss reads every key: 7 keys at 3 a page.
    assert [p for m, p in kong.requests if p == "/key-auths"] == ["/key-auths"] * 3


def test_kong_acl_block_is_idempotent_and_reversible(
    kong: FakeKongAdmin, client: httpx.Client
) -> None:
    gateway = _kong(kong, client)
    owner = find_key_owner(gateway, PSEUDO, PSEUDO.key_fingerprint(ACME_KEY))
    assert owner is not None
    assert gateway.block(owner, "inc1") == "kong:consumer:acme"
    assert gateway.block(owner, "inc1") == "kong:consumer:acme"
    assert kong.groups("acme") == {"responder-blocked"}
    assert kong.groups("beta") == set()
    assert list(kong.acls) == [acl_id(owner.consumer_id or "", "responder-blocked")]
    gateway.unblock(owner)
    gateway.unblock(owner)
    assert kong.groups("acme") == set()
    # By name only (an unblock after a restart knows the consumer's name).
    gateway.block(KeyOwner("kong", "acme", None), "inc2")
    assert kong.groups("acme") == {"responder-blocked"}


def test_kong_a_hand_made_acl_counts_as_blocked(kong: FakeKongAdmin, client: httpx.Client) -> None:
    cid = next(c["id"] for c in kong.consumers.values() if c["username"] == "acme")
    kong.acls["manual"] = {"id": "manual", "group": "responder-blocked", "consumer": {"id": cid}}
    gateway = _kong(kong, client)
    assert gateway.block(KeyOwner("kong", "acme", None, cid), "inc") == "kong:consumer:acme"
    assert kong.groups("acme") == {"responder-blocked"}


def test_kong_delete_credential(kong: FakeKongAdmin, client: httpx.Client) -> None:
    gateway = _kong(kong, client, method="delete_credential")
    owner = find_key_owner(gateway, PSEUDO, PSEUDO.key_fingerprint(ACME_KEY))
    assert owner is not None and owner.credential_id is not None
    assert gateway.block(owner, "inc") == f"kong:credential:{owner.credential_id}"
    assert owner.credential_id not in kong.key_auths
    with pytest.raises(DeliveryError, match="not reversible"):
        gateway.unblock(owner)


def test_the_fake_refuses_what_the_kong_definition_does_not_allow(client: httpx.Client) -> None:
    with FakeKongAdmin() as fake:
        cid = fake.add_consumer("acme", ACME_KEY)
        url = f"{fake.url}/consumers/{cid}/acls/{acl_id(cid, 'g')}"
        assert client.put(url, json={"group": "g", "comment": "x"}).status_code == 400
        assert client.put(url, json={"tags": ["x"]}).status_code == 400
        assert client.get(f"{fake.url}/key-auths?size=5000").status_code == 400
        assert client.post(f"{fake.url}/consumers/{cid}/key-auth", json={}).status_code == 404
        assert len(fake.violations) == 4


# --- the key index and which-key -----------------------------------------------------------------


def test_the_key_index_refreshes_on_a_miss_at_most_every_interval(
    kong: FakeKongAdmin, client: httpx.Client
) -> None:
    clock = [0.0]
    index = KeyIndex(_kong(kong, client), PSEUDO, min_refresh_s=30, clock=lambda: clock[0])
    assert index.find(PSEUDO.key_fingerprint(ACME_KEY)) is not None
    listings = sum(1 for m, p in kong.requests if p == "/key-auths")
    new_key = "nk_live_0a1b2c3d4e5f6a7b8c9d"
    kong.add_consumer("newcomer", new_key)
    assert index.find(PSEUDO.key_fingerprint(new_key)) is None  # refreshed just now
    clock[0] = 31
    found = index.find(PSEUDO.key_fingerprint(new_key))
    assert found is not None and found.consumer == "newcomer"
    assert sum(1 for m, p in kong.requests if p == "/key-auths") == 2 * listings


def test_which_key_prints_consumer_and_credential_never_the_key(
    apisix: FakeApisixAdmin, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PIPELINE_HASH_KEY", HASH_KEY)
    monkeypatch.setenv("RESPONDER_APISIX_ADMIN_KEY", ADMIN_KEY)
    monkeypatch.setenv("RESPONDER_APISIX_KEYRING", ",".join(k.decode() for k in KEYRING))
    args = ["which-key", "--gateway", "apisix", "--apisix-admin-url", apisix.url]
    assert cli.main([*args, PSEUDO.key_fingerprint(ACME_KEY)]) == 0
    out = capsys.readouterr()
    assert out.out == "gateway=apisix consumer=acme credential=acme-primary\n"
    assert cli.main([*args, "0" * 32]) == 1
    assert capsys.readouterr().out == f"no key with fingerprint {'0' * 32} at apisix\n"
    # A key pasted instead of a fingerprint is refused without being echoed.
    assert cli.main([*args, ACME_KEY]) == 2
    out = capsys.readouterr()
    everything = out.out + out.err
    assert "not a key fingerprint" in everything
    for secret in (ACME_KEY, LEGACY_KEY, ADMIN_KEY, HASH_KEY, *(k.decode() for k in KEYRING)):
        assert secret not in everything


def test_which_key_on_kong_as_json_free_text(
    kong: FakeKongAdmin, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PIPELINE_HASH_KEY", HASH_KEY)
    monkeypatch.setenv("RESPONDER_KONG_ADMIN_TOKEN", "kong-rbac-token-7c1e9a")
    code = cli.main(
        [
            "which-key",
            "--gateway",
            "kong",
            "--kong-admin-url",
            kong.url,
            PSEUDO.key_fingerprint(BETA_KEY),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    cred = next(k["id"] for k in kong.key_auths.values() if k["key"] == BETA_KEY)
    assert out == f"gateway=kong consumer=beta credential={cred}\n"
    assert BETA_KEY not in out and json.dumps(BETA_KEY) not in out
