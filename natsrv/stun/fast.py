"""Prepared encodings for the hot paths, and the one classifier of incoming bytes.

Everything here is wire format and nothing else; which attributes an answer carries is
decided in ``natsrv/core``. The general encoder (``message.encode_message``) could
produce every byte string below; these functions exist because the server sends them
per datagram and must not pay for a generic attribute walk each time.

* :func:`classify_untrusted` tells a Binding request, any other STUN message and
  ChannelData apart (RFC 7983 §7: the first two bits are 0b00 for STUN and 0b01 for
  ChannelData), or raises :class:`ParseError` for anything else.
* :class:`BindingSuccess` answers a *plain* RFC 5389/8489 Binding request (no
  attributes, or FINGERPRINT alone; RFC 8489 §6.3, §14.7) with XOR-MAPPED-ADDRESS,
  optionally MAPPED-ADDRESS, pre-encoded trailing attributes and, when the request
  had one, FINGERPRINT.
* :func:`encode_data_indication` builds a Data indication (RFC 8656 §11.3).
* :class:`PreparedResponse` is a response whose attributes are fixed but for one
  NONCE-like slot (the 401 of RFC 8489 §9.2.4 that every new TURN client gets first).
"""

from __future__ import annotations

import secrets
import struct
import zlib
from typing import Any

from .attributes import CODECS, Address, pack_ip
from .constants import FINGERPRINT_XOR, HEADER_SIZE, MAGIC_COOKIE_BYTES, Attr, MessageClass
from .errors import ParseError
from .integrity import fingerprint as fingerprint_of
from .message import encode_message, message_type

_HEADER = struct.Struct(">HH")
_TLV_HEADER = _HEADER
_FP_ATTR = struct.Struct(">HHI")
_V4_XOR = struct.Struct(">HH16sHHxBHI")
_V4_BOTH = struct.Struct(">HH16sHHxBHIHHxBHI")
_BINDING_SUCCESS = message_type(0x001, MessageClass.SUCCESS)
_FP_ONLY = b"\x80\x28\x00\x04"
_XMA = Attr.XOR_MAPPED_ADDRESS
_MA = Attr.MAPPED_ADDRESS
_FP = Attr.FINGERPRINT
_enc_xor_address = CODECS[Attr.XOR_MAPPED_ADDRESS][1]
_enc_address = CODECS[Attr.MAPPED_ADDRESS][1]
_COOKIE_U32 = int.from_bytes(MAGIC_COOKIE_BYTES, "big")
_COOKIE_U16 = _COOKIE_U32 >> 16

#: What :func:`classify_untrusted` returns.
BINDING_REQUEST = 0  #: a STUN message whose type is Binding request (0x0001)
STUN = 1  #: any other STUN message (first two bits 0b00, at least a header long)
CHANNEL_DATA = 2  #: a ChannelData message (first byte 0x40-0x7F, at least its header)
NEITHER = 3  #: first two bits 0b10 or 0b11: not ours (RFC 7983 §7: DTLS, RTP, ...)

#: The kind of message a first byte starts (RFC 7983 §7): :data:`STUN`,
#: :data:`CHANNEL_DATA` or :data:`NEITHER`. Hot paths index it with ``data[0]``; the
#: full parse still checks the rest.
KIND_OF_FIRST_BYTE: tuple[int, ...] = (STUN,) * 0x40 + (CHANNEL_DATA,) * 0x40 + (NEITHER,) * 0x80


def classify_untrusted(data: bytes) -> int:
    """:data:`BINDING_REQUEST`, :data:`STUN` or :data:`CHANNEL_DATA` for the first
    bytes of ``data``; ParseError for anything shorter than a header or starting with
    other bits. The full parse (``decode_untrusted``,
    ``decode_channel_data_untrusted``) still decides whether the rest is well formed."""
    n = len(data)
    if n >= 4:
        kind = KIND_OF_FIRST_BYTE[data[0]]
        if kind == STUN:
            if n >= HEADER_SIZE:
                return BINDING_REQUEST if data[0] == 0 and data[1] == 1 else STUN
            raise ParseError("shorter than a STUN header")
        if kind == CHANNEL_DATA:
            return CHANNEL_DATA
    raise ParseError("neither STUN nor ChannelData")


def encode_attribute(attr_type: int, value: Any, transaction_id: bytes = bytes(12)) -> bytes:
    """One attribute, header and zero padding included, as the general encoder writes
    it into a modern message with ``transaction_id`` (which matters only for XOR-ed
    values)."""
    return encode_message(0, 0, transaction_id, [(attr_type, value)])[HEADER_SIZE:]


# IPv4 client addresses as numbers, for packing XOR-MAPPED-ADDRESS in one call.
_V4_INT: dict[str, int] = {}
_V4_INT_MAX = 4096


def _v4_int(host: str) -> int | None:
    ip = _V4_INT.get(host)
    if ip is None and ":" not in host:
        try:
            ip = int.from_bytes(pack_ip(host), "big")
        except ValueError:
            return None
        if len(_V4_INT) >= _V4_INT_MAX:
            _V4_INT.clear()
        _V4_INT[host] = ip
    return ip


class BindingSuccess:
    """Binding success responses for one receiving endpoint: XOR-MAPPED-ADDRESS, then
    MAPPED-ADDRESS when ``mapped_address``, then ``tail`` (attributes already encoded,
    e.g. with :func:`encode_attribute`), then FINGERPRINT when the request had one."""

    __slots__ = ("_tail", "mapped_address")

    def __init__(self, tail: bytes, *, mapped_address: bool) -> None:
        self._tail = tail
        self.mapped_address = mapped_address

    @property
    def tail(self) -> bytes:
        """The pre-encoded attributes after XOR-MAPPED-ADDRESS (and MAPPED-ADDRESS)."""
        return self._tail

    def answer_plain(self, data: bytes, src: Address) -> bytes | None:
        """The response to ``data`` if it is a plain, well-formed Binding request (RFC
        5389/8489, no attributes or a correct FINGERPRINT alone, the header's length
        matching the datagram); None for anything else, which then takes the general
        path (``decode_untrusted``)."""
        n = len(data)
        if n == 20:
            if data[1] != 1 or data[0] or data[2] or data[3] or data[4:8] != MAGIC_COOKIE_BYTES:
                return None
            return self.success(data[4:20], src, fingerprint=False)
        if (
            n != 28
            or data[:4] != b"\x00\x01\x00\x08"
            or data[4:8] != MAGIC_COOKIE_BYTES
            or data[20:24] != _FP_ONLY
            or int.from_bytes(data[24:28], "big") != zlib.crc32(data[:20]) ^ FINGERPRINT_XOR
        ):
            return None
        return self.success(data[4:20], src, fingerprint=True)

    def success(self, xor_key: bytes, src: Address, *, fingerprint: bool) -> bytes:
        """The response to a modern Binding request whose header bytes 4-20 (cookie
        and transaction ID) are ``xor_key``, from client address ``src``."""
        tail = self._tail
        extra = 8 if fingerprint else 0
        host, port = src
        ip = _V4_INT.get(host)
        if ip is None:
            ip = _v4_int(host)
        if ip is not None:
            if self.mapped_address:
                msg = _V4_BOTH.pack(_BINDING_SUCCESS, 24 + extra + len(tail), xor_key, _XMA, 8,
                                    1, port ^ _COOKIE_U16, ip ^ _COOKIE_U32, _MA, 8, 1, port,
                                    ip) + tail  # fmt: skip
            else:
                msg = _V4_XOR.pack(_BINDING_SUCCESS, 12 + extra + len(tail), xor_key, _XMA, 8,
                                   1, port ^ _COOKIE_U16, ip ^ _COOKIE_U32) + tail  # fmt: skip
        else:
            body = _enc_xor_address(src, xor_key)
            parts = _TLV_HEADER.pack(_XMA, len(body)) + body
            if self.mapped_address:
                body = _enc_address(src, xor_key)
                parts += _TLV_HEADER.pack(_MA, len(body)) + body
            parts += tail
            msg = _HEADER.pack(_BINDING_SUCCESS, len(parts) + extra) + xor_key + parts
        if not fingerprint:
            return msg
        return msg + _FP_ATTR.pack(_FP, 4, zlib.crc32(msg) ^ FINGERPRINT_XOR)


#: Largest payload a Data indication carries: the STUN length field (16 bits) covers
#: XOR-PEER-ADDRESS (24 bytes for IPv6), the DATA header (4) and padding.
MAX_DATA_INDICATION_PAYLOAD = 65504
_DATA_INDICATION = message_type(0x007, MessageClass.INDICATION)
_XPA = Attr.XOR_PEER_ADDRESS
_DATA = Attr.DATA
_token_bytes = secrets.token_bytes


def encode_data_indication(peer: Address, data: bytes) -> bytes:
    """A Data indication carrying ``data`` from ``peer`` (RFC 8656 §11.3): a fresh random
    transaction ID, XOR-PEER-ADDRESS and DATA. ``ValueError`` if ``data`` is longer
    than :data:`MAX_DATA_INDICATION_PAYLOAD`."""
    size = len(data)
    if size > MAX_DATA_INDICATION_PAYLOAD:
        raise ValueError("too much data for one Data indication")
    xor_key = MAGIC_COOKIE_BYTES + _token_bytes(12)
    address = _enc_xor_address(peer, xor_key)
    pad = -size % 4
    return b"".join((
        _HEADER.pack(_DATA_INDICATION, 8 + len(address) + size + pad), xor_key,
        _TLV_HEADER.pack(_XPA, len(address)), address,
        _TLV_HEADER.pack(_DATA, size), data, b"\x00" * pad,
    ))  # fmt: skip


class PreparedResponse:
    """A modern response with fixed attributes around one variable text attribute
    (``slot``, e.g. NONCE), and optionally FINGERPRINT: ``render`` equals what
    ``encode_message`` writes for ``before + [(slot, value)] + after``."""

    __slots__ = ("_after", "_before", "_slot", "cls")

    def __init__(
        self,
        cls: int,
        before: list[tuple[int, Any]],
        slot: int,
        after: list[tuple[int, Any]],
    ) -> None:
        zero_tid = bytes(12)
        self.cls = cls
        self._before = encode_message(0, cls, zero_tid, before)[HEADER_SIZE:]
        self._after = encode_message(0, cls, zero_tid, after)[HEADER_SIZE:]
        self._slot = slot

    def render(
        self, method: int, transaction_id: bytes, value: bytes, *, fingerprint: bool = True
    ) -> bytes:
        size = len(value)
        body = b"".join((
            self._before, _TLV_HEADER.pack(self._slot, size), value, b"\x00" * (-size % 4),
            self._after,
        ))  # fmt: skip
        head = (
            _HEADER.pack(message_type(method, self.cls), len(body) + (8 if fingerprint else 0))
            + MAGIC_COOKIE_BYTES
            + transaction_id
        )
        if not fingerprint:
            return head + body
        return head + body + _FP_ATTR.pack(_FP, 4, fingerprint_of(head + body))


__all__ = [
    "BINDING_REQUEST",
    "CHANNEL_DATA",
    "KIND_OF_FIRST_BYTE",
    "MAX_DATA_INDICATION_PAYLOAD",
    "NEITHER",
    "STUN",
    "BindingSuccess",
    "PreparedResponse",
    "classify_untrusted",
    "encode_attribute",
    "encode_data_indication",
]
