"""Codec properties: round trips, the parse-error invariant, and the header rules."""

from __future__ import annotations

import hmac
import ipaddress
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natsrv.stun import (
    Attr,
    ChangeRequest,
    ErrorCodeValue,
    Message,
    MessageClass,
    Method,
    ParseError,
    PasswordAlgorithm,
    decode_untrusted,
    verify_integrity,
    verify_integrity_sha256,
)
from natsrv.stun.attributes import AddressErrorCode, Icmp, _pack_dotted_quad
from natsrv.stun.integrity import hmac_sha1, hmac_sha256
from natsrv.stun.message import message_type, split_type

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
address = st.tuples(st.one_of(ipv4, ipv6), st.integers(0, 65535))
text = st.text(max_size=60).filter(lambda s: "\x00" not in s)
u32 = st.integers(0, 2**32 - 1)

VALUES = {
    Attr.MAPPED_ADDRESS: address,
    Attr.XOR_MAPPED_ADDRESS: address,
    Attr.XOR_PEER_ADDRESS: address,
    Attr.XOR_RELAYED_ADDRESS: address,
    Attr.OTHER_ADDRESS: address,
    Attr.RESPONSE_ORIGIN: address,
    Attr.CHANGED_ADDRESS: address,
    Attr.SOURCE_ADDRESS: address,
    Attr.ALTERNATE_SERVER: address,
    Attr.USERNAME: text,
    Attr.REALM: text,
    Attr.NONCE: text,
    Attr.SOFTWARE: text,
    Attr.ALTERNATE_DOMAIN: text,
    Attr.USERHASH: st.binary(min_size=32, max_size=32),
    Attr.DATA: st.binary(max_size=200),
    Attr.PADDING: st.binary(max_size=40),
    Attr.RESERVATION_TOKEN: st.binary(min_size=8, max_size=8),
    Attr.LIFETIME: u32,
    Attr.PRIORITY: u32,
    Attr.CONNECTION_ID: u32,
    Attr.ICE_CONTROLLING: st.integers(0, 2**64 - 1),
    Attr.CHANNEL_NUMBER: st.integers(0x4000, 0x4FFF),
    Attr.RESPONSE_PORT: st.integers(0, 65535),
    Attr.REQUESTED_TRANSPORT: st.sampled_from([6, 17]),
    Attr.REQUESTED_ADDRESS_FAMILY: st.sampled_from([1, 2]),
    Attr.ADDITIONAL_ADDRESS_FAMILY: st.sampled_from([1, 2]),
    Attr.EVEN_PORT: st.booleans(),
    Attr.DONT_FRAGMENT: st.just(True),
    Attr.USE_CANDIDATE: st.just(True),
    Attr.CHANGE_REQUEST: st.builds(ChangeRequest, st.booleans(), st.booleans()),
    Attr.ERROR_CODE: st.builds(ErrorCodeValue, st.integers(300, 699), text),
    Attr.UNKNOWN_ATTRIBUTES: st.lists(st.integers(0, 0xFFFF), max_size=6).map(tuple),
    Attr.PASSWORD_ALGORITHM: st.builds(
        PasswordAlgorithm, st.integers(0, 0xFFFF), st.binary(max_size=9)
    ),
    Attr.PASSWORD_ALGORITHMS: st.lists(
        st.builds(PasswordAlgorithm, st.integers(0, 0xFFFF), st.binary(max_size=9)), max_size=3
    ).map(tuple),
    Attr.ADDRESS_ERROR_CODE: st.builds(
        AddressErrorCode, st.sampled_from([1, 2]), st.integers(300, 699), text
    ),
    Attr.ICMP: st.builds(Icmp, st.integers(0, 127), st.integers(0, 255), u32),
    0x7F01: st.binary(max_size=30),  # unknown comprehension-required: kept as bytes
    0xC001: st.binary(max_size=30),  # unknown comprehension-optional
}

attribute = st.sampled_from(sorted(VALUES)).flatmap(
    lambda t: VALUES[t].map(lambda v, t=t: (t, v))
)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    cookie = draw(st.booleans())
    tid = draw(st.binary(min_size=12 if cookie else 16, max_size=12 if cookie else 16))
    if not cookie and tid[:4] == b"\x21\x12\xa4\x42":
        tid = b"\x00" + tid[1:]
    return Message(
        draw(st.integers(0, 0xFFF)),
        draw(st.integers(0, 3)),
        tid,
        draw(st.lists(attribute, max_size=8)),
        cookie=cookie,
    )


@settings(max_examples=400, deadline=None)
@given(messages(), st.booleans(), st.booleans())
def test_round_trip(msg: Message, with_integrity: bool, with_fingerprint: bool) -> None:
    key = b"k" * 16 if with_integrity else None
    data = msg.encode(key=key, key_sha256=key, fingerprint=with_fingerprint)
    back = decode_untrusted(data)
    assert (back.method, back.cls, back.transaction_id, back.cookie) == (
        msg.method, msg.cls, msg.transaction_id, msg.cookie,
    )
    extra = {Attr.MESSAGE_INTEGRITY, Attr.MESSAGE_INTEGRITY_SHA256, Attr.FINGERPRINT}
    assert [a for a in back.attributes if a[0] not in extra] == msg.attributes
    assert back.unknown_required == ((0x7F01,) * sum(t == 0x7F01 for t, _ in msg.attributes))
    if key:
        assert verify_integrity(back, key)
        assert verify_integrity_sha256(back, key)
        assert not verify_integrity(back, b"other")
    assert back.encode(key=key, key_sha256=key, fingerprint=with_fingerprint) == data


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_parse_error(data: bytes) -> None:
    try:
        decode_untrusted(data)
    except ParseError:
        pass


@settings(max_examples=1500, deadline=None)
@given(messages(), st.data())
def test_mutated_messages_raise_only_parse_error(msg: Message, data: st.DataObject) -> None:
    raw = bytearray(msg.encode(fingerprint=data.draw(st.booleans())))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    try:
        decode_untrusted(bytes(raw))
    except ParseError:
        pass


@given(st.integers(0, 0xFFF), st.integers(0, 3))
def test_type_bits(method: int, cls: int) -> None:
    assert split_type(message_type(method, cls)) == (method, cls)


def test_well_known_types() -> None:
    assert message_type(Method.BINDING, MessageClass.REQUEST) == 0x0001
    assert message_type(Method.BINDING, MessageClass.SUCCESS) == 0x0101
    assert message_type(Method.BINDING, MessageClass.ERROR) == 0x0111
    assert message_type(Method.ALLOCATE, MessageClass.REQUEST) == 0x0003
    assert message_type(Method.DATA, MessageClass.INDICATION) == 0x0017


def binding(*attrs: tuple[int, object], fingerprint: bool = False) -> bytes:
    return Message(Method.BINDING, MessageClass.REQUEST, b"\x01" * 12, list(attrs)).encode(
        fingerprint=fingerprint
    )


@pytest.mark.parametrize(
    ("mangle", "why"),
    [
        (lambda d: d[:19], "shorter than a STUN header"),
        (lambda d: b"\x80" + d[1:], "top two bits are not zero"),
        (lambda d: d[:3] + bytes([d[3] + 2]) + d[4:] + b"\0\0", "length is not a multiple of 4"),
        (lambda d: d + b"\0\0\0\0", "length does not match the message"),
    ],
)
def test_header_rules(mangle, why: str) -> None:
    with pytest.raises(ParseError, match=why):
        decode_untrusted(mangle(binding()))


def test_attribute_running_past_the_end() -> None:
    data = bytearray(binding((Attr.SOFTWARE, "abcd")))
    struct.pack_into(">H", data, 22, 40)
    with pytest.raises(ParseError, match="runs past the end"):
        decode_untrusted(bytes(data))


def test_fingerprint_wrong_or_not_last() -> None:
    good = binding((Attr.SOFTWARE, "x"), fingerprint=True)
    assert decode_untrusted(good).get(Attr.FINGERPRINT) is not None
    bad = good[:-1] + bytes([good[-1] ^ 1])
    with pytest.raises(ParseError, match="FINGERPRINT does not match"):
        decode_untrusted(bad)
    # FINGERPRINT followed by another attribute.
    body = good[20:] + struct.pack(">HH", Attr.SOFTWARE, 4) + b"abcd"
    not_last = good[:2] + struct.pack(">H", len(body)) + good[4:20] + body
    with pytest.raises(ParseError, match="not the last"):
        decode_untrusted(not_last)


def test_fingerprint_value() -> None:
    data = binding(fingerprint=True)
    assert struct.unpack(">I", data[-4:])[0] == zlib.crc32(
        data[:2] + struct.pack(">H", 8) + data[4:20]
    ) ^ 0x5354554E


def test_attributes_after_integrity_are_ignored() -> None:
    msg = Message(Method.BINDING, MessageClass.REQUEST, b"\x02" * 12, [(Attr.USERNAME, "u")])
    data = msg.encode(key=b"key")
    tail = struct.pack(">HH", Attr.XOR_PEER_ADDRESS, 8) + bytes(8)
    tail += struct.pack(">HH", 0x7F00, 4) + b"junk"
    longer = data[:2] + struct.pack(">H", len(data) - 20 + len(tail)) + data[4:] + tail
    back = decode_untrusted(longer)
    assert [t for t, _ in back.attributes] == [Attr.USERNAME, Attr.MESSAGE_INTEGRITY]
    assert back.unknown_required == ()
    assert verify_integrity(back, b"key")


def test_classic_message_keeps_16_byte_transaction_id() -> None:
    tid = bytes(range(16))
    data = Message(Method.BINDING, MessageClass.REQUEST, tid, cookie=False).encode()
    back = decode_untrusted(data)
    assert not back.cookie and back.transaction_id == tid
    assert back.reply(MessageClass.SUCCESS).encode()[4:20] == tid


def test_unknown_required_attribute_is_reported() -> None:
    back = decode_untrusted(binding((0x0031, b"??"), (0xC0DE, b"ok")))
    assert back.unknown_required == (0x0031,)


def test_bad_values_are_parse_errors() -> None:
    for attr, body in [
        (Attr.XOR_MAPPED_ADDRESS, b"\x00\x02\x00\x01abcd"),  # v6 family, v4 length
        (Attr.CHANGE_REQUEST, b"\x00\x00\x06"),
        (Attr.ERROR_CODE, b"\x00\x00\x09\x00"),
        (Attr.LIFETIME, b"\x00\x00"),
        (Attr.MESSAGE_INTEGRITY, b"x" * 19),
    ]:
        pad = b"\0" * (-len(body) % 4)
        data = struct.pack(">HHI", 1, 4 + len(body) + len(pad), 0x2112A442) + b"\x03" * 12
        data += struct.pack(">HH", attr, len(body)) + body + pad
        with pytest.raises(ParseError):
            decode_untrusted(data)


# -- primitives the hot paths use instead of the stdlib's general ones ------------------
@given(st.binary(max_size=200), st.binary(max_size=300))
def test_hmac_matches_the_standard_library(key: bytes, data: bytes) -> None:
    assert hmac_sha1(key, data) == hmac.digest(key, data, "sha1")
    assert hmac_sha256(key, data) == hmac.digest(key, data, "sha256")
    assert hmac_sha1(key, data) == hmac.digest(key, data, "sha1")  # from the cache


@given(
    st.one_of(
        st.text(alphabet="0123456789.", max_size=20),
        st.ip_addresses(v=4).map(str),
        st.text(max_size=16),
    )
)
def test_dotted_quad_parsing_matches_ipaddress(text: str) -> None:
    try:
        expected: bytes | None = ipaddress.IPv4Address(text).packed
    except ValueError:
        expected = None
    try:
        got: bytes | None = _pack_dotted_quad(text)
    except ValueError:
        got = None
    assert got == expected


def test_attribute_count_is_bounded() -> None:
    from natsrv.stun.message import MAX_ATTRIBUTES

    def with_attributes(count: int) -> bytes:
        return Message(Method.BINDING, MessageClass.REQUEST,
                       attributes=[(Attr.SOFTWARE, "x")] * count).encode()

    assert len(decode_untrusted(with_attributes(MAX_ATTRIBUTES)).attributes) == MAX_ATTRIBUTES
    with pytest.raises(ParseError, match="too many attributes"):
        decode_untrusted(with_attributes(MAX_ATTRIBUTES + 1))


def test_repeated_attributes_encode_the_same_and_the_table_stays_bounded() -> None:
    from natsrv.stun.message import _TLV_CACHE, _TLV_CACHE_MAX

    for i in range(3 * _TLV_CACHE_MAX):
        attrs = [(Attr.SOFTWARE, f"natsrv {i}"), (Attr.LIFETIME, i), (Attr.REALM, "r")]
        first = Message(Method.ALLOCATE, MessageClass.SUCCESS, attributes=attrs).encode()
        again = Message(Method.ALLOCATE, MessageClass.SUCCESS, attributes=attrs).encode()
        assert first[20:] == again[20:]
        assert decode_untrusted(first).attributes == attrs
        assert len(_TLV_CACHE) <= _TLV_CACHE_MAX
    # A list where a tuple is usual (unhashable) is encoded, just not remembered.
    algorithms = [PasswordAlgorithm(2), PasswordAlgorithm(1)]
    as_list = Message(Method.BINDING, MessageClass.REQUEST, bytes(12),
                      [(Attr.PASSWORD_ALGORITHMS, algorithms)])
    as_tuple = Message(Method.BINDING, MessageClass.REQUEST, bytes(12),
                       [(Attr.PASSWORD_ALGORITHMS, tuple(algorithms))])
    assert as_list.encode() == as_tuple.encode()
    # Another padding byte is never served from the table.
    padded = Message(Method.BINDING, MessageClass.REQUEST, bytes(12), [(Attr.SOFTWARE, "abcde")])
    assert padded.encode(pad=b" ").endswith(b"abcde   ")
    assert padded.encode().endswith(b"abcde\x00\x00\x00")


def test_registries_name_their_values() -> None:
    assert Attr.name_of(0x0015) == "NONCE" and Attr.name_of(0x7777) is None
    assert Method.name_of(Method.ALLOCATE) == "ALLOCATE"
    assert MessageClass.values() == frozenset({0, 1, 2, 3})
    msg = Message(Method.BINDING, MessageClass.REQUEST, bytes(12),
                  [(Attr.NONCE, "n"), (0x7777, b"")])
    assert "attrs=['NONCE', '0x7777']" in repr(msg)
