"""Credential stores (natsrv.core.credentials): long-term keys (RFC 8489 §9.2.2), the
TURN REST shared secret, chaining, and secrets kept out of reprs."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natsrv.core.credentials import (
    ALL_ALGORITHMS,
    MD5,
    SHA256,
    ChainedStore,
    CredentialStore,
    RestSecret,
    StaticUsers,
    password_key,
    rest_credentials,
    rest_expiry_untrusted,
    rest_password,
)

# coturn's documented keys (turnadmin -k; examples/etc/turnserver.conf and the
# turnusers_lt database samples).
COTURN_KEYS = [
    ("ninefingers", "north.gov", "youhavetoberealistic", "bc807ee29df3c9ffa736523fb2c4e8ee"),
    ("gorst", "north.gov", "hero", "7da2270ccfa49786e0115366d3a3d14d"),
    ("whirrun", "crinna.org", "sword", "6972e85e51f36e53b0b61759c5a5219a"),
    ("stranger-come-knocking", "crinna.org", "civilization", "d43cb678560259a1839bff61c19de15e"),
]

# `echo -n USERNAME | openssl dgst -sha1 -hmac SECRET -binary | base64`
REST_VECTORS = [
    ("north.gov-secret", "1700000000:bob", "4D2rhMLni1rzyljmu0dk5wDrJMI="),
    ("logen", "1700000000", "87MybcFdjE+HUcpSFUKeZkiVmf8="),
]


@pytest.mark.parametrize(("user", "realm", "password", "key"), COTURN_KEYS)
def test_static_user_md5_keys_match_coturn(user: str, realm: str, password: str, key: str) -> None:
    store = StaticUsers({user: password})
    assert store.key_for(user, realm, 0.0) == bytes.fromhex(key)
    assert store.key_for(user, realm, 0.0, MD5) == bytes.fromhex(key)
    assert store.keys_for(user, realm, 0.0) == (bytes.fromhex(key),)


def test_sha256_key() -> None:
    store = StaticUsers({"ninefingers": "youhavetoberealistic"})
    expected = hashlib.sha256(b"ninefingers:north.gov:youhavetoberealistic").digest()
    assert store.key_for("ninefingers", "north.gov", 0.0, SHA256) == expected
    assert len(expected) == 32 and store.algorithms == ALL_ALGORITHMS == {MD5, SHA256}


def test_unknown_user_realm_and_algorithm() -> None:
    store = StaticUsers({"gorst": "hero"})
    assert store.key_for("Gorst", "north.gov", 0.0) is None
    assert store.key_for("gorst ", "north.gov", 0.0) is None
    assert store.key_for("gorst", "north.gov", 0.0, 0x0003) is None
    assert store.keys_for("nobody", "north.gov", 0.0) == ()
    # The realm is an input to the key, not a filter: another realm, another key.
    assert store.key_for("gorst", "crinna.org", 0.0) != store.key_for("gorst", "north.gov", 0.0)


def test_passwords_are_hashed_as_given_utf8() -> None:
    # RFC 8489 Appendix B.1's password before OpaqueString; kept as typed here.
    raw = "The\u00adM\u00aatr\u2168"
    store = StaticUsers({"\u30de\u30c8\u30ea\u30c3\u30af\u30b9": raw})
    key = store.key_for("\u30de\u30c8\u30ea\u30c3\u30af\u30b9", "example.org", 0.0)
    text = "\u30de\u30c8\u30ea\u30c3\u30af\u30b9:example.org:" + raw
    assert key == hashlib.md5(text.encode()).digest()


def test_password_key_rejects_unknown_algorithms_and_unencodable_text() -> None:
    with pytest.raises(ValueError, match="unknown password algorithm 0x0003"):
        password_key("a", "b", "c", 3)
    assert password_key("\ud800", "realm", "pw") is None
    # A username the codec decoded with surrogateescape maps back to its wire bytes.
    wire = b"caf\xe9"
    escaped = wire.decode("utf-8", "surrogateescape")
    assert password_key(escaped, "r", "p") == hashlib.md5(wire + b":r:p").digest()


@pytest.mark.parametrize(("secret", "username", "password"), REST_VECTORS)
def test_rest_password_matches_openssl(secret: str, username: str, password: str) -> None:
    assert rest_password(secret, username) == password
    assert rest_password(secret.encode(), username) == password


def test_rest_credentials_helper() -> None:
    username, password = rest_credentials("north.gov-secret", "bob", 86400, 1699913600.7)
    assert (username, password) == ("1700000000:bob", "4D2rhMLni1rzyljmu0dk5wDrJMI=")
    assert rest_credentials("logen", None, 100, 1699999900.0) == REST_VECTORS[1][1:]
    assert rest_credentials("logen", "", 100, 1699999900.0)[0] == "1700000000"
    assert rest_credentials("s", "a:b", 1, 0)[0] == "1:a:b"
    for ttl in (0, -5, float("nan")):
        with pytest.raises(ValueError, match="ttl must be a positive number of seconds"):
            rest_credentials("s", "u", ttl, 0.0)
    with pytest.raises(ValueError, match="the REST shared secret is empty"):
        rest_credentials("", "u", 10, 0.0)


def rest_key(secret: str, username: str, realm: str, algorithm: int = MD5) -> bytes:
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    password = base64.b64encode(digest).decode()
    h = hashlib.md5 if algorithm == MD5 else hashlib.sha256
    return h(f"{username}:{realm}:{password}".encode()).digest()


def test_rest_secret_key_and_expiry() -> None:
    store = RestSecret("logen")
    username, _ = rest_credentials("logen", "bob", 600, 1000.0)
    assert username == "1600:bob"
    expected = rest_key("logen", username, "north.gov")
    assert store.key_for(username, "north.gov", 1000.0) == expected
    assert store.key_for(username, "north.gov", 1600.0) == expected  # EXPIRY == now: valid
    assert store.key_for(username, "north.gov", 1600.001) is None  # EXPIRY < now: expired
    assert store.key_for(username, "north.gov", float("nan")) is None
    assert store.key_for(username, "north.gov", 1000.0, SHA256) == rest_key(
        "logen", username, "north.gov", SHA256
    )
    assert store.key_for(username, "north.gov", 1000.0, 7) is None


def test_rest_secret_is_not_fooled_by_a_forged_password() -> None:
    # The key comes from the secret, never from anything the client sends; a client
    # with the wrong password derives a different key and fails MESSAGE-INTEGRITY.
    store = RestSecret("logen")
    key = store.key_for("1600:bob", "r", 0.0)
    forged = hashlib.md5(b"1600:bob:r:not-the-password").digest()
    assert key is not None and not hmac.compare_digest(key, forged)
    assert RestSecret("bloody9").key_for("1600:bob", "r", 0.0) != key


@pytest.mark.parametrize(
    "username",
    [
        "",
        ":bob",
        "bob",
        "bob:1600",  # USER:EXPIRY (legacy coturn order) is not accepted
        " 1600",
        "1600 ",
        "+1600",
        "-1600",
        "1_600",
        "16.00",
        "0x640",
        "\u0661\u0666\u0660\u0660",  # Arabic-Indic digits: int() would take them
        "\uff11\uff16\uff10\uff10",  # fullwidth digits
        "9" * 16,
        "1" * 5000,
    ],
)
def test_malformed_rest_usernames(username: str) -> None:
    assert rest_expiry_untrusted(username) is None
    assert RestSecret("logen").key_for(username, "r", 0.0) is None


def test_rest_expiry_parsing() -> None:
    assert rest_expiry_untrusted("1600") == 1600
    assert rest_expiry_untrusted("1600:bob:extra") == 1600
    assert rest_expiry_untrusted("0001600:x") == 1600
    assert rest_expiry_untrusted("9" * 15) == int("9" * 15)


def test_rest_secret_max_ttl() -> None:
    store = RestSecret("logen", max_ttl=86400)
    assert store.key_for("87400:bob", "r", 1000.0) is not None
    assert store.key_for("87401:bob", "r", 1000.0) is None
    with pytest.raises(ValueError, match="max_ttl must be a positive number of seconds"):
        RestSecret("logen", max_ttl=0)


def test_rest_secret_rotation() -> None:
    store = RestSecret("new-secret", previous=["old-secret"])
    user = "5000:alice"
    new_key = rest_key("new-secret", user, "r")
    old_key = rest_key("old-secret", user, "r")
    assert store.key_for(user, "r", 0.0) == new_key
    assert store.keys_for(user, "r", 0.0) == (new_key, old_key)
    assert store.keys_for(user, "r", 6000.0) == ()
    with pytest.raises(ValueError, match="the REST shared secret is empty"):
        RestSecret("x", previous=[""])


def test_chained_store() -> None:
    static = StaticUsers({"gorst": "hero", "1600:bob": "static-password"})
    rest = RestSecret("logen")
    chain = ChainedStore(static, rest)
    assert chain.key_for("gorst", "north.gov", 0.0) == bytes.fromhex(COTURN_KEYS[1][3])
    assert chain.key_for("1700:eve", "r", 0.0) == rest_key("logen", "1700:eve", "r")
    assert chain.key_for("nobody", "r", 0.0) is None
    # Both stores know "1600:bob": key_for answers from the first, keys_for from both.
    static_key = password_key("1600:bob", "r", "static-password")
    assert chain.key_for("1600:bob", "r", 0.0) == static_key
    assert chain.keys_for("1600:bob", "r", 0.0) == (static_key, rest_key("logen", "1600:bob", "r"))
    assert chain.algorithms == ALL_ALGORITHMS
    assert ChainedStore().algorithms == frozenset()
    assert ChainedStore().key_for("gorst", "r", 0.0) is None


class Md5Only:
    """A store holding only precomputed MD5 keys, as coturn's turnusers_lt table."""

    algorithms = frozenset({MD5})

    def key_for(self, username: str, realm: str, now: float, algorithm: int = MD5) -> bytes | None:
        return bytes(16) if algorithm == MD5 and username == "db-user" else None

    def keys_for(
        self, username: str, realm: str, now: float, algorithm: int = MD5
    ) -> tuple[bytes, ...]:
        key = self.key_for(username, realm, now, algorithm)
        return () if key is None else (key,)


def test_chain_advertises_only_algorithms_every_store_serves() -> None:
    chain = ChainedStore(StaticUsers({"a": "b"}), Md5Only())
    assert chain.algorithms == {MD5}
    assert chain.key_for("db-user", "r", 0.0, SHA256) is None


def test_stores_satisfy_the_protocol() -> None:
    for store in (StaticUsers({}), RestSecret("s"), ChainedStore(), Md5Only()):
        assert isinstance(store, CredentialStore)


def test_secrets_stay_out_of_reprs() -> None:
    static = StaticUsers({"gorst": "hero-password"})
    rest = RestSecret("logen-secret", previous=["bloody9-secret"], max_ttl=60)
    chain = ChainedStore(static, rest)
    for text in (repr(static), repr(rest), repr(chain), str(chain)):
        assert "hero-password" not in text
        assert "logen-secret" not in text and "bloody9-secret" not in text
    assert repr(static) == "StaticUsers(<1 users>)"
    assert repr(rest) == "RestSecret(<2 secrets>, max_ttl=60)"
    assert len(static) == 1


@given(st.text(max_size=300), st.text(max_size=50), st.floats(allow_nan=True))
def test_stores_never_raise_on_any_username(username: str, realm: str, now: float) -> None:
    chain = ChainedStore(StaticUsers({"gorst": "hero"}), RestSecret("logen"))
    for algorithm in (MD5, SHA256, 0, 3, 0xFFFF):
        key = chain.key_for(username, realm, now, algorithm)
        assert key is None or len(key) in (16, 32)
        assert isinstance(chain.keys_for(username, realm, now, algorithm), tuple)


@given(st.integers(0, 10**12), st.text(max_size=40), st.integers(1, 10**7))
def test_rest_credentials_round_trip(now: int, user: str, ttl: int) -> None:
    username, password = rest_credentials("logen", user, ttl, float(now))
    store = RestSecret("logen")
    assert rest_password("logen", username) == password
    assert store.key_for(username, "r", float(now)) == password_key(username, "r", password)
    assert store.key_for(username, "r", float(now + ttl) + 1) is None


def test_rest_secret_with_sha256_and_rotation() -> None:
    make = rest_credentials
    now = 1_700_000_000.0
    user, password = make("new", "alice", 600, now, "sha256")
    expected = base64.b64encode(hmac.new(b"new", user.encode(), hashlib.sha256).digest()).decode()
    assert password == expected
    store = RestSecret("new", previous=["old"], digest="sha256")
    assert store.key_for(user, "r", now) == password_key(user, "r", password)
    # A password made with the old secret still verifies during the rotation.
    old_user, old_password = make("old", "bob", 600, now, "sha256")
    assert password_key(old_user, "r", old_password) in store.keys_for(old_user, "r", now)
    # SHA-1 passwords are not SHA-256 ones.
    sha1_user, sha1_password = make("new", "carol", 600, now)
    assert password_key(sha1_user, "r", sha1_password) not in store.keys_for(sha1_user, "r", now)
    with pytest.raises(ValueError):
        RestSecret("s", digest="md5")
