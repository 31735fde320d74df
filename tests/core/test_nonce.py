"""Stateless nonces (natsrv.core.nonce): RFC 8489 §9.2 nonce cookie, staleness at the
lifetime boundary, binding to the client IP, and untrusted input never raising."""

from __future__ import annotations

import re
import string
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natsrv.core.nonce import NonceFactory
from natsrv.stun.attributes import MAX_NONCE_LENGTH, NONCE_COOKIE, SecurityFeature, nonce_cookie

KEY = bytes(range(32))
FACTORY = NonceFactory(KEY, 600.0)
CLIENT = ("203.0.113.7", 50000)
B64URL = string.ascii_letters + string.digits + "-_"


def test_issue_then_check_ok() -> None:
    nonce = FACTORY.issue(CLIENT, 1000.0)
    assert FACTORY.check(nonce, CLIENT, 1000.0) == "ok"
    assert FACTORY.check(nonce, ("203.0.113.7", 1), 1000.0) == "ok"  # the port is not bound
    assert FACTORY.check(nonce, "203.0.113.7", 1300.0) == "ok"
    assert FACTORY.check(nonce, IPv4Address("203.0.113.7"), 1300.0) == "ok"
    assert FACTORY.check(nonce, ("::ffff:203.0.113.7", 9, 0, 0), 1300.0) == "ok"


def test_ipv6_clients() -> None:
    nonce = FACTORY.issue(("2001:db8::5", 3478, 0, 0), 10.0)
    assert FACTORY.check(nonce, IPv6Address("2001:db8::5"), 10.0) == "ok"
    assert FACTORY.check(nonce, "2001:db8::6", 10.0) == "invalid"
    assert FACTORY.check(nonce, "fe80::5%eth0", 10.0) == "invalid"


def test_stale_at_the_lifetime_boundary() -> None:
    nonce = FACTORY.issue(CLIENT, 1000.0)
    assert FACTORY.check(nonce, CLIENT, 1599.999) == "ok"
    assert FACTORY.check(nonce, CLIENT, 1600.0) == "stale"
    assert FACTORY.check(nonce, CLIENT, 10**9) == "stale"
    assert FACTORY.check(nonce, CLIENT, float("nan")) == "stale"


def test_issue_time_is_whole_seconds() -> None:
    nonce = FACTORY.issue(CLIENT, 1000.9)
    assert nonce == FACTORY.issue(CLIENT, 1000.0)  # same tick, same IP: same nonce
    assert nonce != FACTORY.issue(CLIENT, 1001.0)
    assert FACTORY.check(nonce, CLIENT, 1599.5) == "ok"
    assert FACTORY.check(nonce, CLIENT, 1600.0) == "stale"


def test_nonce_from_the_future_is_stale() -> None:
    nonce = FACTORY.issue(CLIENT, 2000.0)
    assert FACTORY.check(nonce, CLIENT, 1999.5) == "stale"


def test_zero_time_and_fractions() -> None:
    nonce = FACTORY.issue(CLIENT, 0.5)
    assert FACTORY.check(nonce, CLIENT, 0.0) == "ok"
    assert FACTORY.check(nonce, CLIENT, 599.9) == "ok"
    assert FACTORY.check(nonce, CLIENT, 600.0) == "stale"
    assert FACTORY.check(FACTORY.issue(CLIENT, 0.0), CLIENT, 0.0) == "ok"


def test_another_ip_or_key_is_invalid() -> None:
    nonce = FACTORY.issue(CLIENT, 1000.0)
    assert FACTORY.check(nonce, "203.0.113.8", 1000.0) == "invalid"
    assert FACTORY.check(nonce, "::ffff:203.0.113.8", 1000.0) == "invalid"
    assert NonceFactory(bytes(32), 600.0).check(nonce, CLIENT, 1000.0) == "invalid"
    # Invalid wins over stale: a forged nonce never earns a 438.
    assert FACTORY.check(nonce, "203.0.113.8", 10**9) == "invalid"


def test_every_single_character_change_is_invalid() -> None:
    nonce = FACTORY.issue(CLIENT, 1000.0)
    for i, char in enumerate(nonce):
        for other in "AB_-+/0a":
            if other != char:
                tampered = nonce[:i] + other + nonce[i + 1 :]
                assert FACTORY.check(tampered, CLIENT, 1000.0) == "invalid", (i, other)


def test_truncated_extended_and_garbage_are_invalid() -> None:
    nonce = FACTORY.issue(CLIENT, 1000.0)
    for bad in (
        nonce[:-1],
        nonce + "A",
        nonce + "\n",
        " " + nonce,
        nonce[len(FACTORY.cookie) :],
        "",
        "obMatJos2",
        "x" * 10_000,
        "\u00e9" * len(nonce),
        nonce[:-2] + "==",
    ):
        assert FACTORY.check(bad, CLIENT, 1000.0) == "invalid", bad
    for not_text in (None, nonce.encode(), 5, [nonce]):
        assert FACTORY.check(not_text, CLIENT, 1000.0) == "invalid"


def test_bad_client_addresses_are_invalid_when_checking() -> None:
    nonce = FACTORY.issue(CLIENT, 1000.0)
    for addr in ("not-an-ip", "", (), ("",), (None, 5), 12345):
        assert FACTORY.check(nonce, addr, 1000.0) == "invalid"  # type: ignore[arg-type]


def test_nonce_cookie_prefix() -> None:
    # RFC 8489 §9.2 cookie; bit 0 "password algorithms" is 0x000001 (erratum 6290).
    nonce = FACTORY.issue(CLIENT, 1000.0)
    assert FACTORY.security_features == SecurityFeature.PASSWORD_ALGORITHMS
    assert FACTORY.cookie == "obMatJos2AAAB"
    assert nonce.startswith("obMatJos2AAAB")
    assert len(nonce) == FACTORY.nonce_length == 25
    # Appendix B.1's nonce "obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA": bit 1, USERHASH.
    assert nonce_cookie(SecurityFeature.USERNAME_ANONYMITY) == "obMatJos2AAAC"
    both = SecurityFeature.PASSWORD_ALGORITHMS | SecurityFeature.USERNAME_ANONYMITY
    assert nonce_cookie(both) == "obMatJos2AAAD"
    assert nonce_cookie(0) == "obMatJos2AAAA"
    assert nonce_cookie(0xFFFFFF) == "obMatJos2////"
    for bad in (-1, 0x1000000):
        with pytest.raises(ValueError, match="security features are 24 bits"):
            nonce_cookie(bad)


def test_cookie_is_covered_by_the_mac() -> None:
    # Rewriting the advertised features (a bid-down) or stripping the cookie breaks the
    # nonce, even for a factory with the same key that would issue the rewritten form.
    plain = NonceFactory(KEY, 600.0, security_features=None)
    both = NonceFactory(KEY, 600.0, security_features=0x000003)
    nonce = FACTORY.issue(CLIENT, 1000.0)
    assert plain.check(nonce[len(FACTORY.cookie) :], CLIENT, 1000.0) == "invalid"
    assert both.check(both.cookie + nonce[len(FACTORY.cookie) :], CLIENT, 1000.0) == "invalid"
    assert FACTORY.check(plain.issue(CLIENT, 1000.0), CLIENT, 1000.0) == "invalid"


def test_without_cookie() -> None:
    plain = NonceFactory(KEY, 30.0, security_features=None)
    nonce = plain.issue(CLIENT, 5.0)
    assert plain.cookie == "" and not nonce.startswith(NONCE_COOKIE)
    assert len(nonce) == plain.nonce_length == 12
    assert plain.check(nonce, CLIENT, 34.9) == "ok"
    assert plain.check(nonce, CLIENT, 35.0) == "stale"


@pytest.mark.parametrize("features", [None, 0, 1, 2, 3, 0xFFFFFF])
def test_nonce_is_qdtext_and_short(features: int | None) -> None:
    factory = NonceFactory(KEY, 600.0, security_features=features)
    for now in (0.0, 1.7e9, 2.0**40 - 1):
        nonce = factory.issue(("2001:db8::1", 1), now)
        assert len(nonce) <= MAX_NONCE_LENGTH < 128
        assert nonce.isascii()
        # qdtext (RFC 3261 §25.1) excludes only '"' and '\\' among printable ASCII.
        assert re.fullmatch(r"[\x21\x23-\x5b\x5d-\x7e]+", nonce)
        assert all(c in B64URL for c in nonce[len(factory.cookie) :])


def test_default_key_is_random_and_never_shown() -> None:
    a, b = NonceFactory(), NonceFactory()
    assert a.key != b.key and len(a.key) == 32
    assert a.lifetime == 600.0
    assert a.check(b.issue(CLIENT, 0.0), CLIENT, 0.0) == "invalid"
    text = repr(FACTORY)
    assert KEY.hex() not in text and repr(KEY) not in text and "key" not in text
    assert text == (
        "NonceFactory(lifetime=600.0, "
        "security_features=<SecurityFeature.PASSWORD_ALGORITHMS: 1>, cookie='obMatJos2AAAB')"
    )


def test_constructor_and_issue_validation() -> None:
    with pytest.raises(ValueError, match="nonce key must be at least 16 bytes"):
        NonceFactory(b"short")
    for lifetime in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="nonce lifetime must be a positive number"):
            NonceFactory(KEY, lifetime)
    with pytest.raises(ValueError, match="security features are 24 bits"):
        NonceFactory(KEY, security_features=1 << 24)
    for now in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="now must be a finite time"):
            FACTORY.issue(CLIENT, now)
    for now in (2.0**40, -1.0):
        with pytest.raises(ValueError, match="now is out of range"):
            FACTORY.issue(CLIENT, now)
    with pytest.raises(ValueError):
        FACTORY.issue("not-an-ip", 0.0)


@given(st.text(max_size=200), st.floats(allow_nan=True, allow_infinity=True))
def test_arbitrary_strings_are_invalid_never_raise(text: str, now: float) -> None:
    assert FACTORY.check(text, CLIENT, now) == "invalid"


@given(st.text(alphabet=B64URL + "+/=", min_size=12, max_size=12))
def test_well_formed_looking_bodies_are_invalid(body: str) -> None:
    assert FACTORY.check(FACTORY.cookie + body, CLIENT, 1000.0) == "invalid"


@given(
    st.integers(0, 2**40 - 1),
    st.integers(0, 2**32 - 1),
    st.data(),
)
def test_any_edit_of_a_real_nonce_is_invalid(issued: int, ip: int, data: st.DataObject) -> None:
    client = str(IPv4Address(ip))
    nonce = FACTORY.issue(client, float(issued))
    assert FACTORY.check(nonce, client, float(issued)) == "ok"
    edited = data.draw(
        st.one_of(
            st.builds(
                lambda i, c: nonce[:i] + c + nonce[i + 1 :],
                st.integers(0, len(nonce) - 1),
                st.sampled_from(B64URL),
            ),
            st.text(max_size=60),
        )
    )
    if edited != nonce:
        assert FACTORY.check(edited, client, float(issued)) == "invalid"


def test_a_client_address_gets_the_same_nonce_within_a_second() -> None:
    from natsrv.core.nonce import RECENT_CLIENTS

    factory = NonceFactory(KEY, 600.0)
    fresh = NonceFactory(KEY, 600.0)  # nothing remembered: computes every nonce
    first = factory.issue(CLIENT, 1000.2)
    assert factory.issue(CLIENT, 1000.9) == first == fresh.issue(CLIENT, 1000.9)
    later = factory.issue(CLIENT, 1001.0)
    assert later != first and later == fresh.issue(CLIENT, 1001.5)
    assert factory.issue(("203.0.113.8", 1), 1001.0) != later  # another address
    for i in range(2 * RECENT_CLIENTS):
        client = f"10.200.{i // 250}.{i % 250}"
        nonce = factory.issue((client, 1), 1001.0)
        assert factory.check(nonce, (client, 9), 1001.0) == "ok"
        assert len(factory._recent) <= RECENT_CLIENTS
