"""RFC 5769 test vectors: decoded, integrity and fingerprint verified, re-encoded byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from natsrv.stun import Attr, Message, MessageClass, Method, decode_untrusted, verify_integrity
from natsrv.stun.integrity import long_term_key, short_term_key

VECTORS = Path(__file__).parent.parent / "vectors"
PASSWORD = "VOkJxbRl1RmTxUk/WvJxBt"
TID = bytes.fromhex("b7e7a701bc34d686fa87dfae")


def load(name: str) -> bytes:
    lines = (VECTORS / name).read_text().splitlines()
    return bytes.fromhex(" ".join(line for line in lines if not line.startswith("#")))


def test_sample_request() -> None:
    data = load("rfc5769_request.hex")
    msg = decode_untrusted(data)
    assert (msg.method, msg.cls, msg.transaction_id) == (Method.BINDING, MessageClass.REQUEST, TID)
    assert msg.get(Attr.SOFTWARE) == "STUN test client"
    assert msg.get(Attr.PRIORITY) == 0x6E0001FF
    assert msg.get(Attr.ICE_CONTROLLED) == 0x932FF9B151263B36
    assert msg.get(Attr.USERNAME) == "evtj:h6vY"
    assert msg.get(Attr.FINGERPRINT) == 0xE57A3BCF
    key = short_term_key(PASSWORD)
    assert verify_integrity(msg, key)
    assert not verify_integrity(msg, short_term_key(PASSWORD[:-1] + "r"))
    assert msg.encode(key=key, fingerprint=True, pad=b" ") == data


@pytest.mark.parametrize(
    ("name", "mapped"),
    [
        ("rfc5769_response_ipv4.hex", ("192.0.2.1", 32853)),
        ("rfc5769_response_ipv6.hex", ("2001:db8:1234:5678:11:2233:4455:6677", 32853)),
    ],
)
def test_sample_responses(name: str, mapped: tuple[str, int]) -> None:
    data = load(name)
    msg = decode_untrusted(data)
    assert (msg.method, msg.cls, msg.transaction_id) == (Method.BINDING, MessageClass.SUCCESS, TID)
    assert msg.get(Attr.SOFTWARE) == "test vector"
    assert msg.get(Attr.XOR_MAPPED_ADDRESS) == mapped
    key = short_term_key(PASSWORD)
    assert verify_integrity(msg, key)
    assert msg.encode(key=key, fingerprint=True, pad=b" ") == data
    # Built from scratch, not from the decoded list, the same bytes come out.
    fresh = Message(Method.BINDING, MessageClass.SUCCESS, TID)
    fresh.add(Attr.SOFTWARE, "test vector").add(Attr.XOR_MAPPED_ADDRESS, mapped)
    assert fresh.encode(key=key, fingerprint=True, pad=b" ") == data


def test_sample_request_long_term() -> None:
    data = load("rfc5769_request_long_term.hex")
    msg = decode_untrusted(data)
    assert msg.get(Attr.USERNAME) == "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"
    assert msg.get(Attr.NONCE) == "f//499k954d6OL34oL9FSTvy64sA"
    assert msg.get(Attr.REALM) == "example.org"
    # SASLprep maps the soft hyphen to nothing and NFKC folds U+00AA and U+2168.
    key = long_term_key(msg.get(Attr.USERNAME), "example.org", "The\u00adM\u00aatr\u2168")
    assert key == long_term_key(msg.get(Attr.USERNAME), "example.org", "TheMatrIX")
    assert verify_integrity(msg, key)
    assert not verify_integrity(msg, long_term_key(msg.get(Attr.USERNAME), "example.org", "x"))
    assert msg.encode(key=key) == data
