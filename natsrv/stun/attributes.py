"""Typed attribute values and their encode/decode table (RFC 8489 §14, RFC 5780 §7,
RFC 3489 §11.2, RFC 8656 §18, RFC 6062 §6.2, RFC 8445 §16).

Each attribute type maps to a value type:

=====================================  ==========================================
addresses (MAPPED, XOR-*, OTHER, ...)  ``(host, port)`` tuple, host as text
USERNAME, REALM, NONCE, SOFTWARE, ...  ``str`` (UTF-8; undecodable bytes kept via
                                       surrogateescape so they round-trip)
MESSAGE-INTEGRITY(-SHA256), DATA, ...  ``bytes``
LIFETIME, PRIORITY, FINGERPRINT, ...   ``int``
CHANGE-REQUEST                         :class:`ChangeRequest`
ERROR-CODE                             :class:`ErrorCodeValue`
UNKNOWN-ATTRIBUTES                     ``tuple[int, ...]``
PASSWORD-ALGORITHM(S)                  :class:`PasswordAlgorithm` (tuple of them)
EVEN-PORT                              ``bool`` (the R bit)
DONT-FRAGMENT, USE-CANDIDATE           ``True`` (no value)
anything unknown                       ``bytes`` (kept as received)
=====================================  ==========================================

Decoders take ``(data, start, end, xor_key)`` where ``xor_key`` is the 16 header bytes
after the type and length (magic cookie and transaction ID) and raise only
:class:`~natsrv.stun.errors.ParseError`.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import struct
from collections.abc import Callable
from enum import IntFlag
from typing import Any, NamedTuple

from .constants import FAMILY_IPV4, FAMILY_IPV6, Attr
from .errors import ParseError

Address = tuple[str, int]


class ChangeRequest(NamedTuple):
    """CHANGE-REQUEST flags (RFC 5780 §7.2)."""

    change_ip: bool = False
    change_port: bool = False


class ErrorCodeValue(NamedTuple):
    """ERROR-CODE: a 300..699 code and a UTF-8 reason phrase (RFC 8489 §14.8)."""

    code: int
    reason: str = ""


class PasswordAlgorithm(NamedTuple):
    """PASSWORD-ALGORITHM / one entry of PASSWORD-ALGORITHMS (RFC 8489 §14.11-12)."""

    algorithm: int
    parameters: bytes = b""


class AddressErrorCode(NamedTuple):
    """ADDRESS-ERROR-CODE (RFC 8656 §18.12)."""

    family: int
    code: int
    reason: str = ""


class Icmp(NamedTuple):
    """ICMP attribute (RFC 8656 §18.13)."""

    type: int
    code: int
    error_data: int = 0


_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_ADDR4 = struct.Struct(">xBH4s")
_ADDR6 = struct.Struct(">xBH16s")
_ADDR4_U32 = struct.Struct(">xBHI")  # the IPv4 address as a number, for XOR-ing

# Text-to-packed address cache: the hot path answers the same few client addresses.
_PACKED: dict[str, bytes] = {}
_PACKED_MAX = 4096


def _pack_dotted_quad(host: str) -> bytes:
    """Strict IPv4 dotted quad (what ``ipaddress`` accepts) to 4 bytes; ValueError
    otherwise. Several times faster than building an ``IPv4Address``."""
    parts = host.split(".")
    if len(parts) != 4:
        raise ValueError("not a dotted quad")
    for part in parts:
        if not (part.isascii() and part.isdigit()) or len(part) > 3 or (
            part[0] == "0" and len(part) > 1
        ):
            raise ValueError("not a dotted quad")
    return bytes([int(parts[0]), int(parts[1]), int(parts[2]), int(parts[3])])  # >255 raises


def pack_ip(host: str) -> bytes:
    """4 or 16 network-order bytes for an IP address in text form."""
    packed = _PACKED.get(host)
    if packed is None:
        try:
            if ":" in host:
                packed = ipaddress.ip_address(host.partition("%")[0]).packed
            else:
                packed = _pack_dotted_quad(host)
        except ValueError as exc:
            raise ValueError(f"not an IP address: {host!r}") from exc
        if len(_PACKED) >= _PACKED_MAX:
            _PACKED.clear()
        _PACKED[host] = packed
    return packed


def unpack_ip(packed: bytes) -> str:
    if len(packed) == 4:
        return f"{packed[0]}.{packed[1]}.{packed[2]}.{packed[3]}"
    return str(ipaddress.IPv6Address(packed))


# --- the NONCE cookie (RFC 8489 §9.2) --------------------------------------------------

#: RFC 8489 §9.2: a nonce starting with this, then 4 base64 characters, is a cookie.
NONCE_COOKIE = "obMatJos2"
_COOKIE_LENGTH = len(NONCE_COOKIE) + 4
#: RFC 8489 §14.10: the NONCE attribute holds fewer than 128 characters.
MAX_NONCE_LENGTH = 127


class SecurityFeature(IntFlag):
    """STUN Security Features (RFC 8489 §18.1, erratum 6290): 24 bits, bit 0 the least
    significant."""

    PASSWORD_ALGORITHMS = 0x000001  #: bit 0: PASSWORD-ALGORITHMS / -ALGORITHM (§9.2.3)
    USERNAME_ANONYMITY = 0x000002  #: bit 1: USERHASH (§14.4)


def nonce_cookie(features: int) -> str:
    """``obMatJos2`` + the 4-character base64 of the 24-bit features (RFC 8489 §9.2)."""
    if not 0 <= features <= 0xFFFFFF:
        raise ValueError("security features are 24 bits")
    return NONCE_COOKIE + base64.b64encode(features.to_bytes(3, "big")).decode("ascii")


def nonce_features(nonce: str) -> int | None:
    """The security features of a nonce that starts with the RFC 8489 §9.2 cookie."""
    if len(nonce) < _COOKIE_LENGTH or not nonce.startswith(NONCE_COOKIE):
        return None
    try:
        raw = base64.b64decode(nonce[len(NONCE_COOKIE) : _COOKIE_LENGTH], validate=True)
    except (binascii.Error, ValueError):
        return None
    return int.from_bytes(raw, "big")


# --- decoders ------------------------------------------------------------------------


def _address(data: bytes, start: int, end: int, xor_key: bytes) -> Address:
    length = end - start
    if length == 8:
        family, port, raw = _ADDR4.unpack_from(data, start)
        if family != FAMILY_IPV4:
            raise ParseError("address family does not match length")
        return unpack_ip(raw), port
    if length == 20:
        family, port, raw = _ADDR6.unpack_from(data, start)
        if family != FAMILY_IPV6:
            raise ParseError("address family does not match length")
        return unpack_ip(raw), port
    raise ParseError("bad address attribute length")


def _xor_bytes(raw: bytes, key: bytes) -> bytes:
    n = len(raw)
    return (int.from_bytes(raw, "big") ^ int.from_bytes(key[:n], "big")).to_bytes(n, "big")


def _xor_address(data: bytes, start: int, end: int, xor_key: bytes) -> Address:
    length = end - start
    if length == 8:
        family, port, ip = _ADDR4_U32.unpack_from(data, start)
        if family != FAMILY_IPV4:
            raise ParseError("address family does not match length")
        ip ^= _U32.unpack_from(xor_key)[0]
        host = f"{ip >> 24}.{(ip >> 16) & 255}.{(ip >> 8) & 255}.{ip & 255}"
        return host, port ^ (xor_key[0] << 8 | xor_key[1])
    if length == 20:
        family, port, raw = _ADDR6.unpack_from(data, start)
        if family != FAMILY_IPV6:
            raise ParseError("address family does not match length")
    else:
        raise ParseError("bad address attribute length")
    return unpack_ip(_xor_bytes(raw, xor_key)), port ^ (xor_key[0] << 8 | xor_key[1])


def _text(max_bytes: int) -> Callable[[bytes, int, int, bytes], str]:
    def decode(data: bytes, start: int, end: int, xor_key: bytes) -> str:
        if end - start > max_bytes:
            raise ParseError("text attribute too long")
        return data[start:end].decode("utf-8", "surrogateescape")

    return decode


def _raw(data: bytes, start: int, end: int, xor_key: bytes) -> bytes:
    return data[start:end]


def _fixed_raw(size: int) -> Callable[[bytes, int, int, bytes], bytes]:
    def decode(data: bytes, start: int, end: int, xor_key: bytes) -> bytes:
        if end - start != size:
            raise ParseError("attribute has the wrong length")
        return data[start:end]

    return decode


def _u32(data: bytes, start: int, end: int, xor_key: bytes) -> int:
    if end - start != 4:
        raise ParseError("attribute must be 4 bytes")
    value: int = _U32.unpack_from(data, start)[0]
    return value


def _u64(data: bytes, start: int, end: int, xor_key: bytes) -> int:
    if end - start != 8:
        raise ParseError("attribute must be 8 bytes")
    value: int = _U64.unpack_from(data, start)[0]
    return value


def _u16_then_reserved(data: bytes, start: int, end: int, xor_key: bytes) -> int:
    # CHANNEL-NUMBER and RESPONSE-PORT: 16-bit value, 16 bits RFFU (RFC 8656 §18.1).
    if end - start != 4:
        raise ParseError("attribute must be 4 bytes")
    value: int = _U16.unpack_from(data, start)[0]
    return value


def _u8_then_reserved(data: bytes, start: int, end: int, xor_key: bytes) -> int:
    # REQUESTED-TRANSPORT, (ADDITIONAL-)REQUESTED-ADDRESS-FAMILY (RFC 8656 §18.6, §18.8).
    if end - start != 4:
        raise ParseError("attribute must be 4 bytes")
    return data[start]


def _flag(data: bytes, start: int, end: int, xor_key: bytes) -> bool:
    if end != start:
        raise ParseError("attribute must be empty")
    return True


def _even_port(data: bytes, start: int, end: int, xor_key: bytes) -> bool:
    if end - start != 1:
        raise ParseError("EVEN-PORT must be 1 byte")
    return bool(data[start] & 0x80)


def _change_request(data: bytes, start: int, end: int, xor_key: bytes) -> ChangeRequest:
    if end - start != 4:
        raise ParseError("CHANGE-REQUEST must be 4 bytes")
    flags = data[start + 3]
    return ChangeRequest(bool(flags & 0x04), bool(flags & 0x02))


def _error_code(data: bytes, start: int, end: int, xor_key: bytes) -> ErrorCodeValue:
    if end - start < 4 or end - start > 4 + 763:
        raise ParseError("bad ERROR-CODE length")
    klass = data[start + 2] & 0x07
    number = data[start + 3]
    if not 3 <= klass <= 6 or number > 99:
        raise ParseError("ERROR-CODE out of range")
    reason = data[start + 4 : end].decode("utf-8", "surrogateescape")
    return ErrorCodeValue(klass * 100 + number, reason)


def _unknown_attributes(data: bytes, start: int, end: int, xor_key: bytes) -> tuple[int, ...]:
    if (end - start) % 2:
        raise ParseError("UNKNOWN-ATTRIBUTES length must be even")
    return tuple(_U16.unpack_from(data, i)[0] for i in range(start, end, 2))


def _password_algorithm_list(data: bytes, start: int, end: int) -> list[PasswordAlgorithm]:
    algorithms = []
    pos = start
    while pos < end:
        if pos + 4 > end:
            raise ParseError("truncated PASSWORD-ALGORITHM")
        algorithm, plen = struct.unpack_from(">HH", data, pos)
        pos += 4
        if pos + plen > end:
            raise ParseError("truncated PASSWORD-ALGORITHM parameters")
        algorithms.append(PasswordAlgorithm(algorithm, data[pos : pos + plen]))
        pos += (plen + 3) & ~3
    if pos != end and pos - end >= 4:
        raise ParseError("bad PASSWORD-ALGORITHMS padding")
    return algorithms


def _password_algorithm(data: bytes, start: int, end: int, xor_key: bytes) -> PasswordAlgorithm:
    algorithms = _password_algorithm_list(data, start, end)
    if len(algorithms) != 1:
        raise ParseError("PASSWORD-ALGORITHM must hold one algorithm")
    return algorithms[0]


def _password_algorithms(
    data: bytes, start: int, end: int, xor_key: bytes
) -> tuple[PasswordAlgorithm, ...]:
    return tuple(_password_algorithm_list(data, start, end))


def _address_error_code(data: bytes, start: int, end: int, xor_key: bytes) -> AddressErrorCode:
    if end - start < 4:
        raise ParseError("bad ADDRESS-ERROR-CODE length")
    family = data[start]
    klass = data[start + 2] & 0x07
    number = data[start + 3]
    if not 3 <= klass <= 6 or number > 99:
        raise ParseError("ADDRESS-ERROR-CODE out of range")
    return AddressErrorCode(
        family, klass * 100 + number, data[start + 4 : end].decode("utf-8", "surrogateescape")
    )


def _icmp(data: bytes, start: int, end: int, xor_key: bytes) -> Icmp:
    if end - start != 8:
        raise ParseError("ICMP must be 8 bytes")
    return Icmp(data[start + 2] >> 1, data[start + 3], _U32.unpack_from(data, start + 4)[0])


# --- encoders ------------------------------------------------------------------------


def _enc_address(value: Address, xor_key: bytes) -> bytes:
    host, port = value
    packed = pack_ip(host)
    if len(packed) == 4:
        return _ADDR4.pack(FAMILY_IPV4, port, packed)
    return _ADDR6.pack(FAMILY_IPV6, port, packed)


def _enc_xor_address(value: Address, xor_key: bytes) -> bytes:
    host, port = value
    packed = pack_ip(host)
    xport = port ^ (xor_key[0] << 8 | xor_key[1])
    if len(packed) == 4:
        ip = int.from_bytes(packed, "big") ^ _U32.unpack_from(xor_key)[0]
        return _ADDR4_U32.pack(FAMILY_IPV4, xport, ip)
    return _ADDR6.pack(FAMILY_IPV6, xport, _xor_bytes(packed, xor_key))


def _enc_text(value: str, xor_key: bytes) -> bytes:
    return value.encode("utf-8", "surrogateescape")


def _enc_raw(value: bytes, xor_key: bytes) -> bytes:
    return bytes(value)


def _enc_u32(value: int, xor_key: bytes) -> bytes:
    return _U32.pack(value)


def _enc_u64(value: int, xor_key: bytes) -> bytes:
    return _U64.pack(value)


def _enc_u16_then_reserved(value: int, xor_key: bytes) -> bytes:
    return _U16.pack(value) + b"\x00\x00"


def _enc_u8_then_reserved(value: int, xor_key: bytes) -> bytes:
    return bytes((value, 0, 0, 0))


def _enc_flag(value: object, xor_key: bytes) -> bytes:
    return b""


def _enc_even_port(value: bool, xor_key: bytes) -> bytes:
    return b"\x80" if value else b"\x00"


def _enc_change_request(value: ChangeRequest, xor_key: bytes) -> bytes:
    return bytes((0, 0, 0, (0x04 if value.change_ip else 0) | (0x02 if value.change_port else 0)))


def _enc_error_code(value: ErrorCodeValue, xor_key: bytes) -> bytes:
    code, reason = value
    return bytes((0, 0, code // 100, code % 100)) + reason.encode("utf-8", "surrogateescape")


def _enc_unknown_attributes(value: tuple[int, ...], xor_key: bytes) -> bytes:
    return b"".join(_U16.pack(t) for t in value)


def _enc_password_algorithm(value: PasswordAlgorithm, xor_key: bytes) -> bytes:
    algorithm, parameters = value
    pad = b"\x00" * (-len(parameters) % 4)
    return struct.pack(">HH", algorithm, len(parameters)) + parameters + pad


def _enc_password_algorithms(value: tuple[PasswordAlgorithm, ...], xor_key: bytes) -> bytes:
    return b"".join(_enc_password_algorithm(a, xor_key) for a in value)


def _enc_address_error_code(value: AddressErrorCode, xor_key: bytes) -> bytes:
    family, code, reason = value
    return bytes((family, 0, code // 100, code % 100)) + reason.encode("utf-8", "surrogateescape")


def _enc_icmp(value: Icmp, xor_key: bytes) -> bytes:
    return bytes((0, 0, (value.type & 0x7F) << 1, value.code)) + _U32.pack(value.error_data)


Decoder = Callable[[bytes, int, int, bytes], Any]
Encoder = Callable[[Any, bytes], bytes]

_ADDRESS = (_address, _enc_address)
_XOR_ADDRESS = (_xor_address, _enc_xor_address)
_TEXT_763 = (_text(763), _enc_text)
_RAW = (_raw, _enc_raw)
_U32_CODEC = (_u32, _enc_u32)
_U64_CODEC = (_u64, _enc_u64)
_U16R = (_u16_then_reserved, _enc_u16_then_reserved)
_U8R = (_u8_then_reserved, _enc_u8_then_reserved)
_FLAG = (_flag, _enc_flag)

#: The table: attribute type -> (decode, encode). Types not here are kept as raw bytes.
CODECS: dict[int, tuple[Decoder, Encoder]] = {
    Attr.MAPPED_ADDRESS: _ADDRESS,
    Attr.RESPONSE_ADDRESS: _ADDRESS,
    Attr.CHANGE_REQUEST: (_change_request, _enc_change_request),
    Attr.SOURCE_ADDRESS: _ADDRESS,
    Attr.CHANGED_ADDRESS: _ADDRESS,
    Attr.USERNAME: (_text(513), _enc_text),
    Attr.PASSWORD: _RAW,
    Attr.MESSAGE_INTEGRITY: (_fixed_raw(20), _enc_raw),
    Attr.ERROR_CODE: (_error_code, _enc_error_code),
    Attr.UNKNOWN_ATTRIBUTES: (_unknown_attributes, _enc_unknown_attributes),
    Attr.REFLECTED_FROM: _ADDRESS,
    Attr.CHANNEL_NUMBER: _U16R,
    Attr.LIFETIME: _U32_CODEC,
    Attr.XOR_PEER_ADDRESS: _XOR_ADDRESS,
    Attr.DATA: _RAW,
    Attr.REALM: _TEXT_763,
    Attr.NONCE: _TEXT_763,
    Attr.XOR_RELAYED_ADDRESS: _XOR_ADDRESS,
    Attr.REQUESTED_ADDRESS_FAMILY: _U8R,
    Attr.EVEN_PORT: (_even_port, _enc_even_port),
    Attr.REQUESTED_TRANSPORT: _U8R,
    Attr.DONT_FRAGMENT: _FLAG,
    Attr.ACCESS_TOKEN: _RAW,
    Attr.MESSAGE_INTEGRITY_SHA256: _RAW,  # length checked by the decoder in message.py
    Attr.PASSWORD_ALGORITHM: (_password_algorithm, _enc_password_algorithm),
    Attr.USERHASH: (_fixed_raw(32), _enc_raw),
    Attr.XOR_MAPPED_ADDRESS: _XOR_ADDRESS,
    Attr.RESERVATION_TOKEN: (_fixed_raw(8), _enc_raw),
    Attr.PRIORITY: _U32_CODEC,
    Attr.USE_CANDIDATE: _FLAG,
    Attr.PADDING: _RAW,
    Attr.RESPONSE_PORT: _U16R,
    Attr.CONNECTION_ID: _U32_CODEC,
    Attr.ADDITIONAL_ADDRESS_FAMILY: _U8R,
    Attr.ADDRESS_ERROR_CODE: (_address_error_code, _enc_address_error_code),
    Attr.ADDITIONAL_ADDRESS_FAMILY_DRAFT: _U8R,
    Attr.ADDRESS_ERROR_CODE_DRAFT: (_address_error_code, _enc_address_error_code),
    Attr.PASSWORD_ALGORITHMS: (_password_algorithms, _enc_password_algorithms),
    Attr.ALTERNATE_DOMAIN: _TEXT_763,
    Attr.ICMP: (_icmp, _enc_icmp),
    Attr.SOFTWARE: _TEXT_763,
    Attr.ALTERNATE_SERVER: _ADDRESS,
    Attr.CACHE_TIMEOUT: _U32_CODEC,
    Attr.FINGERPRINT: _U32_CODEC,
    Attr.ICE_CONTROLLED: _U64_CODEC,
    Attr.ICE_CONTROLLING: _U64_CODEC,
    Attr.RESPONSE_ORIGIN: _ADDRESS,
    Attr.OTHER_ADDRESS: _ADDRESS,
}

#: Comprehension-required types (< 0x8000) this codec understands; anything else in that
#: range makes a request answerable only with 420 (RFC 8489 §6.3.1.1).
KNOWN_REQUIRED = frozenset(t for t in CODECS if t < 0x8000)


def encode_value(attr_type: int, value: Any, xor_key: bytes) -> bytes:
    """The value bytes of one attribute (without its header and padding)."""
    codec = CODECS.get(attr_type)
    if codec is None:
        return bytes(value)
    return codec[1](value, xor_key)
