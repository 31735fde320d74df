"""Long-term credential checks (RFC 8489 §9.2.4) and the unauthenticated-answer limiter."""

from __future__ import annotations

from typing import Any

import pytest

from natsrv.core.auth import (
    Authenticator,
    Challenge,
    ChallengeLimiter,
    StaleChallenge,
)
from natsrv.core.credentials import (
    MD5,
    SHA256,
    ChainedStore,
    RestSecret,
    StaticUsers,
    password_key,
    rest_credentials,
)
from natsrv.core.nonce import NonceFactory
from natsrv.stun import Attr, Message, MessageClass, Method, PasswordAlgorithm
from natsrv.stun.attributes import nonce_features
from natsrv.stun.errors import BadRequest

from .turn_helpers import NOW, wire

REALM = "example.org"
CLIENT = ("203.0.113.9", 5000)
ALGORITHMS = (PasswordAlgorithm(SHA256), PasswordAlgorithm(MD5))


def authenticator(**nonce_options: Any) -> Authenticator:
    nonces = NonceFactory(b"k" * 32, 600.0, **nonce_options)
    return Authenticator(REALM, StaticUsers({"alice": "secret"}), nonces)


def request(
    auth: Authenticator,
    *,
    username: str | None = "alice",
    password: str = "secret",
    realm: str | None = REALM,
    nonce: str | None = None,
    algorithm: int | None = None,
    offered: tuple[PasswordAlgorithm, ...] | None = None,
    sha1: bool = True,
    sha256: bool = False,
    key_algorithm: int | None = None,
    now: float = NOW,
    client: tuple[str, int] = CLIENT,
) -> Message:
    msg = Message(Method.ALLOCATE, MessageClass.REQUEST)
    msg.add(Attr.REQUESTED_TRANSPORT, 17)
    if username is not None:
        msg.add(Attr.USERNAME, username)
    if realm is not None:
        msg.add(Attr.REALM, realm)
    if nonce is None:
        nonce = auth.nonces.issue(client, now)
    if nonce:
        msg.add(Attr.NONCE, nonce)
    if offered is not None:
        msg.add(Attr.PASSWORD_ALGORITHMS, offered)
    if algorithm is not None:
        msg.add(Attr.PASSWORD_ALGORITHM, PasswordAlgorithm(algorithm))
    key = password_key(username or "", realm or "", password, key_algorithm or algorithm or MD5)
    return wire(msg, key=key if sha1 else None, key_sha256=key if sha256 else None)


def test_nonce_features() -> None:
    assert nonce_features("obMatJos2AAABrest") == 1
    assert nonce_features("obMatJos2AAAC") == 2
    assert nonce_features("obMatJos2") is None
    assert nonce_features("obMatJos2!!!!xyz") is None
    assert nonce_features("plain-nonce-value") is None


def test_challenge_attributes() -> None:
    auth = authenticator()
    attrs = dict(auth.challenge_attributes(CLIENT, NOW))
    assert attrs[Attr.REALM] == REALM
    assert auth.nonces.check(attrs[Attr.NONCE], CLIENT, NOW) == "ok"
    assert attrs[Attr.PASSWORD_ALGORITHMS] == ALGORITHMS
    plain = authenticator(security_features=None)
    assert plain.password_algorithms == ()
    assert Attr.PASSWORD_ALGORITHMS not in dict(plain.challenge_attributes(CLIENT, NOW))


def test_store_algorithms_limit_what_is_advertised() -> None:
    class Md5Only(StaticUsers):
        @property
        def algorithms(self) -> frozenset[int]:
            return frozenset({MD5})

    auth = Authenticator(REALM, Md5Only({"alice": "x"}), NonceFactory(b"k" * 32))
    assert auth.password_algorithms == (PasswordAlgorithm(MD5),)


def test_missing_integrity_is_a_challenge() -> None:
    auth = authenticator()
    msg = wire(Message(Method.ALLOCATE, MessageClass.REQUEST).add(Attr.USERNAME, "alice"))
    with pytest.raises(Challenge) as info:
        auth.authenticate(msg, CLIENT, NOW)
    assert info.value.code == 401 and not info.value.failed
    assert dict(info.value.attributes)[Attr.REALM] == REALM


@pytest.mark.parametrize("missing", ["username", "realm", "nonce"])
def test_integrity_without_the_other_attributes_is_400(missing: str) -> None:
    auth = authenticator()
    kwargs: dict[str, Any] = {missing: None if missing != "nonce" else ""}
    with pytest.raises(BadRequest):
        auth.authenticate(request(auth, **kwargs), CLIENT, NOW)


def test_md5_success_signs_with_message_integrity() -> None:
    auth = authenticator()
    creds = auth.authenticate(request(auth), CLIENT, NOW)
    assert creds.username == "alice" and creds.realm == REALM
    assert creds.algorithm == MD5 and creds.key == password_key("alice", REALM, "secret")
    assert creds.sha1 and not creds.sha256


def test_sha256_integrity_without_algorithm_uses_the_md5_key() -> None:
    auth = authenticator()
    creds = auth.authenticate(request(auth, sha1=False, sha256=True), CLIENT, NOW)
    assert creds.algorithm == MD5 and len(creds.key) == 16
    assert creds.sha256 and creds.sha1  # MD5 processing: MESSAGE-INTEGRITY too


def test_sha256_password_algorithm() -> None:
    auth = authenticator()
    msg = request(auth, algorithm=SHA256, offered=ALGORITHMS, sha1=False, sha256=True)
    creds = auth.authenticate(msg, CLIENT, NOW)
    assert creds.algorithm == SHA256 and creds.key == password_key("alice", REALM, "secret", SHA256)
    assert creds.sha256 and not creds.sha1
    # The MD5 key under a SHA-256 algorithm does not verify.
    wrong = request(auth, algorithm=SHA256, offered=ALGORITHMS, sha1=False, sha256=True,
                    key_algorithm=MD5)
    with pytest.raises(Challenge):
        auth.authenticate(wrong, CLIENT, NOW)


def test_md5_password_algorithm_named_gets_sha256_signature() -> None:
    auth = authenticator()
    msg = request(auth, algorithm=MD5, offered=ALGORITHMS)
    creds = auth.authenticate(msg, CLIENT, NOW)
    assert creds.algorithm == MD5 and creds.sha256 and creds.sha1


@pytest.mark.parametrize(
    ("algorithm", "offered"),
    [
        (SHA256, None),  # PASSWORD-ALGORITHMS missing
        (None, ALGORITHMS),  # PASSWORD-ALGORITHM missing
        (SHA256, (PasswordAlgorithm(SHA256),)),  # not what the server offered
        (SHA256, ALGORITHMS[::-1]),  # reordered
        (0x0003, (*ALGORITHMS, PasswordAlgorithm(3))),
        (0x0003, ALGORITHMS),  # chosen is not among the offered
    ],
)
def test_password_algorithm_mismatch_is_400(
    algorithm: int | None, offered: tuple[PasswordAlgorithm, ...] | None
) -> None:
    auth = authenticator()
    msg = request(auth, algorithm=algorithm, offered=offered, key_algorithm=MD5)
    with pytest.raises(BadRequest):
        auth.authenticate(msg, CLIENT, NOW)


def test_password_algorithms_ignored_without_the_cookie() -> None:
    auth = authenticator(security_features=None)
    msg = request(auth, algorithm=SHA256, offered=(PasswordAlgorithm(SHA256),), key_algorithm=MD5)
    creds = auth.authenticate(msg, CLIENT, NOW)
    assert creds.algorithm == MD5 and creds.sha1 and not creds.sha256


@pytest.mark.parametrize(
    "kwargs",
    [
        {"password": "wrong"},
        {"username": "mallory"},
        {"realm": "other.example"},
    ],
)
def test_bad_credentials_are_a_failed_challenge(kwargs: dict[str, Any]) -> None:
    auth = authenticator()
    with pytest.raises(Challenge) as info:
        auth.authenticate(request(auth, **kwargs), CLIENT, NOW)
    assert info.value.failed
    assert dict(info.value.attributes)[Attr.REALM] == REALM


def test_an_unknown_userhash_gets_401() -> None:
    auth = authenticator()
    msg = Message(Method.ALLOCATE, MessageClass.REQUEST)
    msg.add(Attr.USERHASH, b"\x00" * 32).add(Attr.REALM, REALM)
    msg.add(Attr.NONCE, auth.nonces.issue(CLIENT, NOW))
    with pytest.raises(Challenge):
        auth.authenticate(wire(msg, key=b"k" * 16), CLIENT, NOW)


def test_stale_and_foreign_nonces_get_438_after_integrity() -> None:
    auth = authenticator()
    old = auth.nonces.issue(CLIENT, NOW)
    with pytest.raises(StaleChallenge) as info:
        auth.authenticate(request(auth, nonce=old), CLIENT, NOW + 601)
    fresh = dict(info.value.attributes)[Attr.NONCE]
    assert fresh != old and auth.nonces.check(fresh, CLIENT, NOW + 601) == "ok"
    # Issued to another IP, or by another key: not ours, same answer.
    elsewhere = auth.nonces.issue(("203.0.113.10", 1), NOW)
    with pytest.raises(StaleChallenge):
        auth.authenticate(request(auth, nonce=elsewhere), CLIENT, NOW)
    foreign = NonceFactory(b"x" * 32).issue(CLIENT, NOW)
    with pytest.raises(StaleChallenge):
        auth.authenticate(request(auth, nonce=foreign), CLIENT, NOW)
    # But a stale nonce with a wrong password is a 401: integrity is checked first.
    with pytest.raises(Challenge):
        auth.authenticate(request(auth, nonce=old, password="wrong"), CLIENT, NOW + 601)


def test_rest_secret_rotation_accepts_the_previous_secret() -> None:
    store = ChainedStore(StaticUsers({"alice": "secret"}), RestSecret("new", previous=["old"]))
    auth = Authenticator(REALM, store, NonceFactory(b"k" * 32))
    username, password = rest_credentials("old", "bob", 600, NOW)
    creds = auth.authenticate(request(auth, username=username, password=password), CLIENT, NOW)
    assert creds.username == username
    assert auth.authenticate(request(auth), CLIENT, NOW).username == "alice"
    expired, password = rest_credentials("new", "bob", 10, NOW - 20)
    with pytest.raises(Challenge):
        auth.authenticate(request(auth, username=expired, password=password), CLIENT, NOW)


# -- the limiter --------------------------------------------------------------------------
def test_limiter_per_ip_bucket_refills() -> None:
    limiter = ChallengeLimiter(2.0, burst=3)
    assert [limiter.allow("a", 0.0) for _ in range(5)] == [True, True, True, False, False]
    assert limiter.allow("b", 0.0)
    assert not limiter.allow("a", 0.25)
    assert limiter.allow("a", 0.5)
    assert [limiter.allow("a", 10.0) for _ in range(4)] == [True, True, True, False]
    # A clock stepping back refills nothing.
    assert not limiter.allow("a", 5.0)


def test_limiter_table_is_bounded() -> None:
    limiter = ChallengeLimiter(1.0, size=100)
    for i in range(10_000):
        limiter.allow(f"10.0.{i // 256}.{i % 256}", 0.0)
    assert len(limiter) == 100
    # The oldest entries were forgotten: that IP starts afresh.
    assert limiter.allow("10.0.0.0", 0.0)
    with pytest.raises(ValueError):
        ChallengeLimiter(1.0, size=0)


def test_limiter_global_bucket_and_no_limit() -> None:
    limiter = ChallengeLimiter(100.0, global_rate=3.0)
    assert [limiter.allow(f"ip{i}", 0.0) for i in range(5)] == [True] * 3 + [False] * 2
    assert limiter.allow("ip9", 1.0)
    unlimited = ChallengeLimiter(0.0)
    assert all(unlimited.allow("a", 0.0) for _ in range(1000))
    assert len(unlimited) == 0


def test_a_remembered_nonce_still_expires_and_stays_bound_to_its_ip() -> None:
    # The second request with a nonce skips re-checking its HMAC; it must not skip the
    # lifetime, and the shortcut must not carry the nonce over to another client IP.
    auth = authenticator()
    nonce = auth.nonces.issue(CLIENT, NOW)
    assert auth.authenticate(request(auth, nonce=nonce), CLIENT, NOW).username == "alice"
    assert auth.authenticate(request(auth, nonce=nonce), CLIENT, NOW + 599).username == "alice"
    with pytest.raises(StaleChallenge):
        auth.authenticate(request(auth, nonce=nonce), CLIENT, NOW + 600)
    with pytest.raises(StaleChallenge):
        auth.authenticate(request(auth, nonce=nonce), CLIENT, NOW - 1)  # clock stepped back
    with pytest.raises(StaleChallenge):
        auth.authenticate(request(auth, nonce=nonce), ("203.0.113.10", 5000), NOW + 1)


def test_remembered_nonces_are_bounded_and_need_integrity(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Authenticator, "VERIFIED_NONCES", 8)
    auth = authenticator()
    for i in range(20):
        client = (f"203.0.113.{i + 1}", 5000)
        nonce = auth.nonces.issue(client, NOW)
        auth.authenticate(request(auth, nonce=nonce), client, NOW)
        assert len(auth._verified) <= 8
    before = dict(auth._verified)
    nonce = auth.nonces.issue(CLIENT, NOW)
    with pytest.raises(Challenge):  # wrong password: nothing remembered
        auth.authenticate(request(auth, nonce=nonce, password="wrong"), CLIENT, NOW)
    assert auth._verified == before
