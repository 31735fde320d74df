"""The hot-path encodings of natsrv.stun.fast agree with the general codec."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natsrv.stun import Attr, ErrorCodeValue, MessageClass, Method, ParseError, decode_untrusted
from natsrv.stun.constants import FINGERPRINT_XOR, MAGIC_COOKIE_BYTES
from natsrv.stun.fast import (
    BINDING_REQUEST,
    CHANNEL_DATA,
    MAX_DATA_INDICATION_PAYLOAD,
    STUN,
    BindingSuccess,
    PreparedResponse,
    classify_untrusted,
    encode_attribute,
    encode_data_indication,
)
from natsrv.stun.message import Message, encode_message

PEER = ("192.0.2.7", 5000)
PEER6 = ("2001:db8::7", 7000)
TID = bytes(range(12))


def binding_request(*attrs: tuple[int, object], fingerprint: bool = False) -> bytes:
    return encode_message(Method.BINDING, MessageClass.REQUEST, TID, list(attrs),
                          fingerprint=fingerprint)  # fmt: skip


def test_classify() -> None:
    assert classify_untrusted(binding_request()) == BINDING_REQUEST
    indication = encode_message(Method.BINDING, MessageClass.INDICATION, TID, [])
    assert classify_untrusted(indication) == STUN
    allocate = encode_message(Method.ALLOCATE, MessageClass.REQUEST, TID, [])
    assert classify_untrusted(allocate) == STUN
    assert classify_untrusted(b"\x40\x00\x00\x00") == CHANNEL_DATA
    assert classify_untrusted(b"\x7f\xff\x00\x10" + bytes(16)) == CHANNEL_DATA
    for garbage in (b"", b"\x00", b"\x00\x01\x00", bytes(19), b"\x80" + bytes(30), b"\xff" * 4):
        with pytest.raises(ParseError):
            classify_untrusted(garbage)


@pytest.mark.parametrize("src", [PEER, PEER6])
@pytest.mark.parametrize("mapped", [True, False])
@pytest.mark.parametrize("fingerprint", [True, False])
def test_plain_binding_success_is_the_general_encoding(
    src: tuple[str, int], mapped: bool, fingerprint: bool
) -> None:
    tail = encode_attribute(Attr.RESPONSE_ORIGIN, ("192.0.2.1", 3478)) + encode_attribute(
        Attr.SOFTWARE, "natsrv"
    )
    request = binding_request(fingerprint=fingerprint)
    out = BindingSuccess(tail, mapped_address=mapped).answer_plain(request, src)
    attrs: list[tuple[int, object]] = [(Attr.XOR_MAPPED_ADDRESS, src)]
    if mapped:
        attrs.append((Attr.MAPPED_ADDRESS, src))
    expected = encode_message(Method.BINDING, MessageClass.SUCCESS, TID, attrs, tail=tail,
                              fingerprint=fingerprint)  # fmt: skip
    assert out == expected
    answer = decode_untrusted(out)
    assert answer.get(Attr.XOR_MAPPED_ADDRESS) == src
    assert answer.get(Attr.SOFTWARE) == "natsrv"


def test_plain_binding_refuses_what_the_decoder_refuses() -> None:
    plain = BindingSuccess(b"", mapped_address=False)
    good = binding_request()
    # A 20-byte Binding whose length field says 256 is malformed (RFC 8489 §6.3).
    lying = good[:2] + b"\x01\x00" + good[4:]
    with pytest.raises(ParseError):
        decode_untrusted(lying)
    assert plain.answer_plain(lying, PEER) is None
    bad_fingerprint = binding_request(fingerprint=True)[:-1] + b"\x00"
    assert plain.answer_plain(bad_fingerprint, PEER) is None
    no_cookie = good[:4] + b"\x00\x00\x00\x00" + good[8:]
    assert plain.answer_plain(no_cookie, PEER) is None
    assert plain.answer_plain(binding_request((Attr.SOFTWARE, "x")), PEER) is None


def plain_request(data: bytes) -> Message | None:
    """The decoded request if ``data`` is a well-formed modern Binding request with no
    attributes but FINGERPRINT (what the fast path must answer), else None."""
    try:
        msg = decode_untrusted(data)
    except ParseError:
        return None
    if (msg.method, msg.cls) != (Method.BINDING, MessageClass.REQUEST) or not msg.cookie:
        return None
    if [t for t, _ in msg.attributes] not in ([], [Attr.FINGERPRINT]):
        return None
    return msg


def _mutations() -> st.SearchStrategy[bytes]:
    bases = st.sampled_from([binding_request(), binding_request(fingerprint=True)])

    def mutate(base: bytes, at: int, value: int, cut: int) -> bytes:
        data = bytearray(base)
        data[at % len(data)] = value
        return bytes(data[: len(data) - cut % 3])

    return st.builds(mutate, bases, st.integers(0, 27), st.integers(0, 255), st.integers(0, 8))


@settings(max_examples=600, deadline=None)
@given(st.one_of(_mutations(), st.binary(min_size=0, max_size=40)))
def test_plain_binding_agrees_with_the_decoder(data: bytes) -> None:
    # Differential: the fast path answers exactly where the general path would answer
    # the same plain request, with the same bytes; everything else it leaves alone.
    plain = BindingSuccess(encode_attribute(Attr.SOFTWARE, "natsrv"), mapped_address=True)
    fast = plain.answer_plain(data, PEER)
    msg = plain_request(data)
    if msg is None:
        assert fast is None
    else:
        assert fast == plain.success(msg.xor_key, PEER, fingerprint=Attr.FINGERPRINT in msg)


def test_data_indication_encoding() -> None:
    for peer in (PEER, PEER6):
        for payload in (b"", b"abc", bytes(range(256)) * 3):
            msg = decode_untrusted(encode_data_indication(peer, payload))
            assert (msg.method, msg.cls) == (Method.DATA, MessageClass.INDICATION)
            assert msg.get(Attr.XOR_PEER_ADDRESS) == peer
            assert msg.get(Attr.DATA) == payload
    big = encode_data_indication(PEER6, bytes(MAX_DATA_INDICATION_PAYLOAD))
    assert len(decode_untrusted(big).get(Attr.DATA)) == MAX_DATA_INDICATION_PAYLOAD
    with pytest.raises(ValueError):
        encode_data_indication(PEER, bytes(MAX_DATA_INDICATION_PAYLOAD + 1))


@pytest.mark.parametrize("nonce", [b"", b"a", b"abcd", b"0123456789abcdefghi"])
def test_prepared_response_is_the_general_encoding(nonce: bytes) -> None:
    before = [(Attr.ERROR_CODE, ErrorCodeValue(401, "Unauthorized")), (Attr.REALM, "r")]
    after = [(Attr.SOFTWARE, "s")]
    prepared = PreparedResponse(MessageClass.ERROR, before, Attr.NONCE, after)
    for fingerprint in (True, False):
        out = prepared.render(Method.ALLOCATE, TID, nonce, fingerprint=fingerprint)
        expected = encode_message(Method.ALLOCATE, MessageClass.ERROR, TID,
                                  [*before, (Attr.NONCE, nonce.decode()), *after],
                                  fingerprint=fingerprint)  # fmt: skip
        assert out == expected
    assert decode_untrusted(out).get(Attr.NONCE) == nonce.decode()


def test_encode_attribute_is_what_messages_carry() -> None:
    tlv = encode_attribute(Attr.SOFTWARE, "abcde")
    assert tlv == b"\x80\x22\x00\x05abcde\x00\x00\x00"
    msg = Message(Method.BINDING, MessageClass.SUCCESS, TID, attributes=[(Attr.SOFTWARE, "abcde")])
    assert msg.encode()[20:] == tlv
    # And the FINGERPRINT the fast path appends is RFC 8489's.
    plain = BindingSuccess(b"", mapped_address=False)
    out = plain.success(MAGIC_COOKIE_BYTES + TID, PEER, fingerprint=True)
    assert int.from_bytes(out[-4:], "big") == zlib.crc32(out[:-8]) ^ FINGERPRINT_XOR
    # Without FINGERPRINT in the request, none in the answer: 32 bytes for IPv4.
    assert len(plain.success(MAGIC_COOKIE_BYTES + TID, PEER, fingerprint=False)) == 32
