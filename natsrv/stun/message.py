"""STUN messages: the header, the attribute list, ``decode_untrusted`` and ``encode``.

RFC 8489 §5 (header, class and method bits), §14 (attribute layout, padding),
§14.5-14.7 (integrity and fingerprint placement), RFC 3489 §11.1 (messages without
the magic cookie: a 128-bit transaction ID, answered in kind).

``decode_untrusted`` either returns a :class:`Message` or raises :class:`ParseError`,
for any input, with work linear in the input's length. It enforces: two zero top bits,
a length that is a multiple of 4 and matches the bytes, attributes that stay inside the
message, a FINGERPRINT that is last and correct. Attributes after MESSAGE-INTEGRITY
other than MESSAGE-INTEGRITY-SHA256 and FINGERPRINT are ignored (§14.5); unknown
comprehension-required attributes are listed in ``unknown_required`` so the server can
answer 420.
"""

from __future__ import annotations

import secrets
import struct
from typing import Any

from .attributes import CODECS, KNOWN_REQUIRED
from .constants import HEADER_SIZE, MAGIC_COOKIE_BYTES, Attr
from .errors import ParseError
from .integrity import digests_equal, fingerprint, hmac_sha1, hmac_sha256

_HEADER = struct.Struct(">HH")
_ATTR_HEADER = struct.Struct(">HH")
_U32 = struct.Struct(">I")

#: Most attributes one message may carry; more is treated as malformed.
MAX_ATTRIBUTES = 128

_MI = Attr.MESSAGE_INTEGRITY
_MI256 = Attr.MESSAGE_INTEGRITY_SHA256
_FP = Attr.FINGERPRINT


def message_type(method: int, cls: int) -> int:
    """Interleave method and class bits (RFC 8489 §5, figure 3)."""
    return (
        (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((cls & 1) << 4)
        | ((cls & 2) << 7)
    )


def split_type(mtype: int) -> tuple[int, int]:
    method = (mtype & 0x000F) | ((mtype & 0x00E0) >> 1) | ((mtype & 0x3E00) >> 2)
    cls = ((mtype >> 4) & 1) | ((mtype >> 7) & 2)
    return method, cls


# Both directions of the type mapping, remembered: a dictionary lookup is cheaper than
# the bit shuffling, and there are at most 2**14 types (so the tables stay bounded).
_SPLIT: dict[int, tuple[int, int]] = {}
_JOIN: dict[tuple[int, int], int] = {}


def _split_new(mtype: int) -> tuple[int, int]:
    pair = _SPLIT[mtype] = split_type(mtype)  # mtype has 14 bits: bounded
    return pair


def _join_new(method: int, cls: int) -> int:
    mtype = message_type(method, cls)
    if len(_JOIN) < 1 << 14:
        _JOIN[(method, cls)] = mtype
    return mtype


class Message:
    """One STUN message. ``attributes`` is an ordered list of ``(type, value)``.

    For a decoded message, ``raw`` holds the bytes it came from and
    ``integrity_offset`` / ``integrity_sha256_offset`` the positions of its
    MESSAGE-INTEGRITY(-SHA256) attributes, so integrity can be verified later
    against a key that depends on the message's own USERNAME and REALM.
    """

    __slots__ = (
        "attributes",
        "cls",
        "cookie",
        "integrity_offset",
        "integrity_sha256_offset",
        "method",
        "raw",
        "transaction_id",
        "unknown_required",
    )

    def __init__(
        self,
        method: int,
        cls: int,
        transaction_id: bytes | None = None,
        attributes: list[tuple[int, Any]] | None = None,
        *,
        cookie: bool = True,
    ) -> None:
        self.method = method
        self.cls = cls
        if transaction_id is None:
            transaction_id = secrets.token_bytes(12 if cookie else 16)
        if len(transaction_id) != (12 if cookie else 16):
            raise ValueError("transaction ID must be 12 bytes (16 without the magic cookie)")
        self.transaction_id = transaction_id
        self.attributes: list[tuple[int, Any]] = attributes if attributes is not None else []
        self.cookie = cookie
        self.raw: bytes | None = None
        self.integrity_offset: int | None = None
        self.integrity_sha256_offset: int | None = None
        self.unknown_required: tuple[int, ...] = ()

    # -- access ----------------------------------------------------------------------
    def get(self, attr_type: int, default: Any = None) -> Any:
        for t, v in self.attributes:
            if t == attr_type:
                return v
        return default

    def get_all(self, attr_type: int) -> list[Any]:
        return [v for t, v in self.attributes if t == attr_type]

    def __contains__(self, attr_type: int) -> bool:
        return any(t == attr_type for t, _ in self.attributes)

    def add(self, attr_type: int, value: Any = True) -> Message:
        self.attributes.append((attr_type, value))
        return self

    @property
    def xor_key(self) -> bytes:
        """Header bytes 4..20: what XOR-*-ADDRESS values are XOR-ed with."""
        if self.cookie:
            return MAGIC_COOKIE_BYTES + self.transaction_id
        return self.transaction_id

    def reply(self, cls: int, attributes: list[tuple[int, Any]] | None = None) -> Message:
        """A response to this message: same method, same transaction ID, same dialect."""
        return Message(self.method, cls, self.transaction_id, attributes, cookie=self.cookie)

    def __repr__(self) -> str:
        names = [Attr.name_of(t) or hex(t) for t, _ in self.attributes]
        return (
            f"Message(method={self.method:#x}, cls={self.cls}, "
            f"tid={self.transaction_id.hex()}, attrs={names})"
        )

    # -- encoding --------------------------------------------------------------------
    def encode(
        self,
        *,
        key: bytes | None = None,
        key_sha256: bytes | None = None,
        fingerprint: bool = False,
        pad: bytes = b"\x00",
    ) -> bytes:
        """The wire bytes. With ``key``/``key_sha256``, MESSAGE-INTEGRITY(-SHA256) is
        computed and placed after the other attributes (replacing any in the list);
        with ``fingerprint``, FINGERPRINT is computed and placed last. ``pad`` is the
        byte used for attribute padding (RFC 8489 says any value; RFC 5769 uses 0x20).
        """
        return encode_message(
            self.method,
            self.cls,
            self.transaction_id,
            self.attributes,
            cookie=self.cookie,
            key=key,
            key_sha256=key_sha256,
            fingerprint=fingerprint,
            pad=pad,
        )


def encode_message(
    method: int,
    cls: int,
    transaction_id: bytes,
    attributes: list[tuple[int, Any]],
    *,
    cookie: bool = True,
    key: bytes | None = None,
    key_sha256: bytes | None = None,
    fingerprint: bool = False,
    pad: bytes = b"\x00",
    tail: bytes = b"",
) -> bytes:
    """The wire bytes of a message: ``attributes`` in order, then ``tail`` (attributes
    already encoded, e.g. by ``fast.encode_attribute``), then MESSAGE-INTEGRITY with
    ``key``, MESSAGE-INTEGRITY-SHA256 with ``key_sha256`` and FINGERPRINT with
    ``fingerprint`` (RFC 8489 §14.5-14.7)."""
    xor_key = MAGIC_COOKIE_BYTES + transaction_id if cookie else transaction_id
    parts: list[bytes] = []
    cache = _TLV_CACHE if pad == b"\x00" else None
    for attr_type, value in attributes:
        if attr_type == _FP and fingerprint:
            continue
        if (attr_type == _MI and key is not None) or (attr_type == _MI256 and key_sha256):
            continue
        if cache is not None and attr_type in _CACHEABLE:
            try:
                tlv = cache.get((attr_type, value))
            except TypeError:  # an unhashable value (a list): encode it below
                pass
            else:
                if tlv is None:
                    tlv = _tlv(attr_type, CODECS[attr_type][1](value, xor_key), pad)
                    if len(cache) >= _TLV_CACHE_MAX:
                        cache.clear()
                    cache[(attr_type, value)] = tlv
                parts.append(tlv)
                continue
        codec = CODECS.get(attr_type)
        body = bytes(value) if codec is None else codec[1](value, xor_key)
        parts.append(_ATTR_HEADER.pack(attr_type, len(body)))
        parts.append(body)
        if len(body) & 3:
            parts.append(pad * (4 - (len(body) & 3)))
    if tail:
        parts.append(tail)
    body = b"".join(parts)
    mtype = _JOIN.get((method, cls))
    if mtype is None:
        mtype = _join_new(method, cls)
    head = xor_key if cookie else transaction_id
    if key is not None:
        length = len(body) + 24
        digest = hmac_sha1(key, _HEADER.pack(mtype, length) + head + body)
        body += _ATTR_HEADER.pack(_MI, 20) + digest
    if key_sha256 is not None:
        length = len(body) + 36
        digest = hmac_sha256(key_sha256, _HEADER.pack(mtype, length) + head + body)
        body += _ATTR_HEADER.pack(_MI256, 32) + digest
    if fingerprint:
        length = len(body) + 8
        crc = _fingerprint(_HEADER.pack(mtype, length) + head + body)
        body += _ATTR_HEADER.pack(_FP, 4) + _U32.pack(crc)
    return _HEADER.pack(mtype, len(body)) + head + body


_fingerprint = fingerprint  # the keyword above shadows the function inside encode_message

#: Attributes whose encoding depends only on their value, and whose values a server
#: repeats (SOFTWARE, REALM, LIFETIME, error codes ...): encoded once, header and padding
#: included, and kept in a small table that is emptied when full.
_CACHEABLE = frozenset({
    Attr.LIFETIME, Attr.SOFTWARE, Attr.REALM, Attr.ERROR_CODE, Attr.PASSWORD_ALGORITHMS,
    Attr.REQUESTED_TRANSPORT, Attr.CHANNEL_NUMBER, Attr.UNKNOWN_ATTRIBUTES,
})  # fmt: skip
_TLV_CACHE: dict[tuple[int, Any], bytes] = {}
_TLV_CACHE_MAX = 1024


def _tlv(attr_type: int, body: bytes, pad: bytes) -> bytes:
    return _ATTR_HEADER.pack(attr_type, len(body)) + body + pad * (-len(body) % 4)


def decode_untrusted(data: bytes) -> Message:
    """Parse attacker-controlled bytes into a :class:`Message` or raise :class:`ParseError`."""
    n = len(data)
    if n < HEADER_SIZE:
        raise ParseError("shorter than a STUN header")
    mtype, length = _HEADER.unpack_from(data, 0)
    if mtype & 0xC000:
        raise ParseError("top two bits are not zero")
    if length & 3:
        raise ParseError("length is not a multiple of 4")
    if HEADER_SIZE + length != n:
        raise ParseError("length does not match the message")
    data = bytes(data)
    cookie = data[4:8] == MAGIC_COOKIE_BYTES
    xor_key = data[4:20]
    pair = _SPLIT.get(mtype)
    method, cls = pair if pair is not None else _split_new(mtype)
    msg = Message.__new__(Message)
    msg.method = method
    msg.cls = cls
    msg.cookie = cookie
    msg.transaction_id = data[8:20] if cookie else xor_key
    msg.raw = data
    msg.integrity_offset = None
    msg.integrity_sha256_offset = None
    attributes: list[tuple[int, Any]] = []
    unknown: list[int] = []
    protected = False  # a MESSAGE-INTEGRITY(-SHA256) was seen: ignore what follows (§14.5)
    pos = HEADER_SIZE
    unpack_attr = _ATTR_HEADER.unpack_from
    codecs = CODECS
    while pos < n:
        if pos + 4 > n:
            raise ParseError("truncated attribute header")
        attr_type, alen = unpack_attr(data, pos)
        start = pos + 4
        end = start + alen
        following = start + ((alen + 3) & ~3)
        if following > n:
            raise ParseError("attribute runs past the end of the message")
        if attr_type == _FP:
            if following != n:
                raise ParseError("FINGERPRINT is not the last attribute")
            if alen != 4:
                raise ParseError("FINGERPRINT must be 4 bytes")
            if _U32.unpack_from(data, start)[0] != _fingerprint(data[:pos]):
                raise ParseError("FINGERPRINT does not match")
        elif attr_type == _MI:
            if protected:
                pos = following
                continue
            if alen != 20:
                raise ParseError("MESSAGE-INTEGRITY must be 20 bytes")
            msg.integrity_offset = pos
            protected = True
            attributes.append((attr_type, data[start:end]))  # the value is the HMAC
            pos = following
            continue
        elif attr_type == _MI256:
            if msg.integrity_sha256_offset is not None:
                pos = following
                continue
            if alen < 16 or alen > 32 or alen & 3:
                raise ParseError("bad MESSAGE-INTEGRITY-SHA256 length")
            msg.integrity_sha256_offset = pos
            protected = True
        elif protected:
            pos = following
            continue
        codec = codecs.get(attr_type)
        if codec is None:
            value: Any = data[start:end]
            if attr_type < 0x8000:
                unknown.append(attr_type)
        else:
            try:
                value = codec[0](data, start, end, xor_key)
            except ParseError:
                raise
            except (ValueError, struct.error, IndexError) as exc:  # defensive: never leak
                raise ParseError(f"bad attribute {attr_type:#06x}: {exc}") from None
        attributes.append((attr_type, value))
        pos = following
    if len(attributes) > MAX_ATTRIBUTES:  # checked once: the loop is linear in any case
        raise ParseError("too many attributes")
    msg.attributes = attributes
    msg.unknown_required = tuple(unknown)
    return msg


def verify_integrity(msg: Message, key: bytes) -> bool:
    """Check MESSAGE-INTEGRITY (HMAC-SHA1) of a decoded message (RFC 8489 §14.5):
    the HMAC covers the header, with its length field counting up to the end of
    MESSAGE-INTEGRITY, and the attributes before it."""
    off = msg.integrity_offset
    raw = msg.raw
    if off is None or raw is None:
        return False
    adjusted = raw[:2] + (off - HEADER_SIZE + 24).to_bytes(2, "big") + raw[4:off]
    return digests_equal(hmac_sha1(key, adjusted), raw[off + 4 : off + 24])


def verify_integrity_sha256(msg: Message, key: bytes) -> bool:
    """Check MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6), possibly truncated to 16..32 bytes."""
    off = msg.integrity_sha256_offset
    raw = msg.raw
    if off is None or raw is None:
        return False
    alen = int.from_bytes(raw[off + 2 : off + 4], "big")
    adjusted = raw[:2] + (off - HEADER_SIZE + 4 + alen).to_bytes(2, "big") + raw[4:off]
    return digests_equal(hmac_sha256(key, adjusted)[:alen], raw[off + 4 : off + 4 + alen])


def known_required(attr_type: int) -> bool:
    return attr_type in KNOWN_REQUIRED
