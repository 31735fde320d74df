"""USERHASH in place of USERNAME (RFC 8489 §14.4), sans-IO: the Appendix B.1 vector (as
corrected by erratum 6268) against both credential stores that can resolve it, the
authenticator accepting a USERHASH for a known user and refusing an unknown one, and a
user database made before the userhash column."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from natsrv.core.auth import Authenticator, Challenge
from natsrv.core.credentials import (
    MD5,
    SHA256,
    ChainedStore,
    RestSecret,
    StaticUsers,
    UserhashStore,
    password_key,
    rest_credentials,
)
from natsrv.core.nonce import NonceFactory
from natsrv.stun import Attr, Message, MessageClass, Method, PasswordAlgorithm
from natsrv.stun.attributes import SecurityFeature
from natsrv.stun.integrity import long_term_key_sha256, userhash
from natsrv.stun.message import decode_untrusted, verify_integrity, verify_integrity_sha256
from natsrv.userdb import UserDatabase, add_user, delete_user
from tests.stun.test_vectors import load

from .turn_helpers import NOW, wire

#: RFC 8489 Appendix B.1.
B1_USER = "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"
B1_PASSWORD = "The\u00adM\u00aatr\u2168"  # "TheMatrIX" after OpaqueString
B1_REALM = "example.org"
B1_TID = bytes.fromhex("78ad3433c6ad72c029da412e")
CLIENT = ("203.0.113.9", 5000)
BOTH = SecurityFeature.PASSWORD_ALGORITHMS | SecurityFeature.USERNAME_ANONYMITY


def test_rfc8489_b1_vector_verifies_and_reencodes_byte_for_byte() -> None:
    data = load("rfc8489_b1_request.hex")
    msg = decode_untrusted(data)
    assert (msg.method, msg.cls, msg.transaction_id) == (
        Method.BINDING, MessageClass.REQUEST, B1_TID)  # fmt: skip
    assert msg.get(Attr.USERNAME) is None
    assert msg.get(Attr.USERHASH) == userhash(B1_USER, B1_REALM)
    assert msg.get(Attr.NONCE) == "obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA"
    assert msg.get(Attr.PASSWORD_ALGORITHM) == PasswordAlgorithm(SHA256)
    key = long_term_key_sha256(B1_USER, B1_REALM, B1_PASSWORD)
    assert verify_integrity_sha256(msg, key)
    assert not verify_integrity_sha256(msg, long_term_key_sha256(B1_USER, B1_REALM, "x"))
    assert msg.encode(key_sha256=key) == data


@pytest.mark.parametrize("kind", ["static", "user-db"])
def test_stores_resolve_the_b1_userhash_to_the_user_whose_key_verifies_it(
    kind: str, tmp_path: Path
) -> None:
    store: StaticUsers | UserDatabase
    if kind == "static":
        store = StaticUsers({B1_USER: "TheMatrIX", "alice": "secret"})
    else:
        db = tmp_path / "users.sqlite"
        add_user(db, B1_USER, B1_REALM, "TheMatrIX")
        add_user(db, "alice", B1_REALM, "secret")
        store = UserDatabase(db)
    assert isinstance(store, UserhashStore) and store.resolves_userhash
    msg = decode_untrusted(load("rfc8489_b1_request.hex"))
    name = store.resolve_userhash(msg.get(Attr.USERHASH), B1_REALM)
    assert name == B1_USER
    key = store.key_for(name, B1_REALM, NOW, SHA256)
    assert key is not None and verify_integrity_sha256(msg, key)
    # Another realm's hash of the same name, or 32 arbitrary bytes, name nobody.
    assert store.resolve_userhash(msg.get(Attr.USERHASH), "example.com") is None
    assert store.resolve_userhash(b"\x00" * 32, B1_REALM) is None


def _request(nonce: str, *, user: str, password: str, realm: str = B1_REALM,
             sha256: bool = False, hashed: bytes | None = None) -> Message:
    msg = Message(Method.ALLOCATE, MessageClass.REQUEST)
    msg.add(Attr.REQUESTED_TRANSPORT, 17)
    msg.add(Attr.USERHASH, hashed if hashed is not None else userhash(user, realm))
    msg.add(Attr.REALM, realm).add(Attr.NONCE, nonce)
    if sha256:
        msg.add(Attr.PASSWORD_ALGORITHMS, (PasswordAlgorithm(SHA256), PasswordAlgorithm(MD5)))
        msg.add(Attr.PASSWORD_ALGORITHM, PasswordAlgorithm(SHA256))
    key = password_key(user, realm, password, SHA256 if sha256 else MD5)
    return wire(msg, key=None if sha256 else key, key_sha256=key if sha256 else None)


@pytest.mark.parametrize("sha256", [False, True], ids=["md5", "sha256"])
def test_userhash_authenticates_a_known_user(sha256: bool) -> None:
    nonces = NonceFactory(b"k" * 32, 600.0, security_features=BOTH)
    auth = Authenticator(B1_REALM, StaticUsers({B1_USER: "TheMatrIX"}), nonces)
    nonce = nonces.issue(CLIENT, NOW)
    assert nonce.startswith("obMatJos2AAAD")  # both feature bits
    creds = auth.authenticate(
        _request(nonce, user=B1_USER, password="TheMatrIX", sha256=sha256), CLIENT, NOW)
    assert creds.username == B1_USER and creds.sha256 == sha256
    # A wrong password, an unknown hash, and a REST store (which cannot resolve): 401.
    for msg in (_request(nonce, user=B1_USER, password="wrong", sha256=sha256),
                _request(nonce, user="mallory", password="x", sha256=sha256)):
        with pytest.raises(Challenge) as info:
            auth.authenticate(msg, CLIENT, NOW)
        assert info.value.failed


def test_a_rest_username_cannot_be_sent_as_userhash() -> None:
    nonces = NonceFactory(b"k" * 32, 600.0)
    secret = RestSecret("s3cret")
    assert not isinstance(secret, UserhashStore)
    assert not ChainedStore(secret).resolves_userhash
    assert ChainedStore(secret, StaticUsers({"a": "b"})).resolves_userhash
    auth = Authenticator(B1_REALM, secret, nonces)
    user, password = rest_credentials("s3cret", "bob", 600, NOW)
    nonce = nonces.issue(CLIENT, NOW)
    with pytest.raises(Challenge) as info:
        auth.authenticate(_request(nonce, user=user, password=password), CLIENT, NOW)
    assert info.value.failure == "unknown-user"
    # The same credentials as USERNAME are fine.
    msg = Message(Method.ALLOCATE, MessageClass.REQUEST)
    msg.add(Attr.USERNAME, user).add(Attr.REALM, B1_REALM).add(Attr.NONCE, nonce)
    key = password_key(user, B1_REALM, password)
    assert verify_integrity(wire(msg, key=key), key)
    assert auth.authenticate(wire(msg, key=key), CLIENT, NOW).username == user


def test_a_user_database_from_before_userhash_gets_the_column_on_the_next_write(
    tmp_path: Path,
) -> None:
    db = tmp_path / "old.sqlite"
    key = password_key("alice", B1_REALM, "secret")
    sha = password_key("alice", B1_REALM, "secret", SHA256)
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE users (name TEXT NOT NULL, realm TEXT NOT NULL, "
                 "md5_key BLOB NOT NULL, sha256_key BLOB NOT NULL, "
                 "PRIMARY KEY (name, realm)) WITHOUT ROWID")  # fmt: skip
    conn.execute("INSERT INTO users VALUES (?, ?, ?, ?)", ("alice", B1_REALM, key, sha))
    conn.commit()
    conn.close()
    store = UserDatabase(db)
    assert not store.resolves_userhash
    assert store.resolve_userhash(userhash("alice", B1_REALM), B1_REALM) is None
    assert store.key_for("alice", B1_REALM, NOW) == key  # still a working database
    add_user(db, "bob", B1_REALM, "hunter2")  # any write adds and fills the column
    assert store.resolves_userhash
    assert store.resolve_userhash(userhash("alice", B1_REALM), B1_REALM) == "alice"
    assert store.resolve_userhash(userhash("bob", B1_REALM), B1_REALM) == "bob"
    delete_user(db, "alice", B1_REALM)  # and a change is seen on the next request
    assert store.resolve_userhash(userhash("alice", B1_REALM), B1_REALM) is None
    store.close()
