"""The Binding method: RFC 8489 §6.3 and §14.2, RFC 5780 §6 (CHANGE-REQUEST,
RESPONSE-ORIGIN, OTHER-ADDRESS, RESPONSE-PORT, PADDING) and RFC 3489 §8.2
(MAPPED-ADDRESS, SOURCE-ADDRESS and CHANGED-ADDRESS for requests without the cookie).

A server listens on up to four UDP endpoints, every combination of the primary and
alternate IP with the primary and alternate port. ``BindingService.answer`` takes the
bytes of one datagram, where it came from and which endpoint received it, and returns
what to send, to whom and from which endpoint: pure, no sockets, no clock.

Size policy (no amplification beyond a fixed margin): a Binding response carries at
most five addresses, SOFTWARE (at most 128 bytes) and FINGERPRINT, so it is never more
than 220 bytes; PADDING in a request is echoed only up to the request's own size, so a
padded response is never larger than the padded request that asked for it.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import NamedTuple

from ..stun.attributes import (
    CODECS,
    Address,
    ChangeRequest,
    ErrorCodeValue,
    encode_value,
    pack_ip,
)
from ..stun.constants import FINGERPRINT_XOR, MAGIC_COOKIE_BYTES, Attr, MessageClass, Method
from ..stun.errors import ParseError
from ..stun.message import Message, decode_untrusted, encode_message

_HEADER = struct.Struct(">HH")
_FP_ATTR = struct.Struct(">HHI")
_ATTR = struct.Struct(">HH")
_SUCCESS = 0x0101
_FP_ONLY = b"\x80\x28\x00\x04"
_V4_XOR = struct.Struct(">HH16sHHxBHI")
_V4_BOTH = struct.Struct(">HH16sHHxBHIHHxBHI")
_V4_INT: dict[str, int] = {}


def _v4_int(host: str) -> int | None:
    try:
        ip = int.from_bytes(pack_ip(host), "big")
    except ValueError:
        return None
    if len(_V4_INT) >= 4096:
        _V4_INT.clear()
    _V4_INT[host] = ip
    return ip

_XMA = Attr.XOR_MAPPED_ADDRESS
_enc_xor = CODECS[_XMA][1]
_enc_addr = CODECS[Attr.MAPPED_ADDRESS][1]

#: The most PADDING a response will carry (RFC 5780 §7.6 is for MTU probing).
MAX_PADDING = 1472
MAX_SOFTWARE = 128

# Request attributes that never change the answer of the fast path.
_HARMLESS = frozenset(
    {
        Attr.SOFTWARE,
        Attr.FINGERPRINT,
        Attr.PRIORITY,
        Attr.ICE_CONTROLLED,
        Attr.ICE_CONTROLLING,
        Attr.USE_CANDIDATE,
    }
)


class Reply(NamedTuple):
    """Send ``data`` to ``dest`` from the local endpoint ``via``."""

    data: bytes
    dest: Address
    via: Address


@dataclass(frozen=True)
class BindingConfig:
    """The server's STUN endpoints and response options."""

    primary: Address
    alt_ip: str | None = None
    alt_port: int | None = None
    software: str | None = None
    #: Include MAPPED-ADDRESS in modern responses too (RFC 8489 §14.1 compatibility;
    #: lets a classifier spot an ALG that rewrites addresses).
    mapped_address: bool = True

    @property
    def wildcard(self) -> bool:
        return self.primary[0] in ("0.0.0.0", "::")

    def endpoints(self) -> list[Address]:
        """Every UDP endpoint to listen on: primary first."""
        ip, port = self.primary
        ips = [ip] + ([self.alt_ip] if self.alt_ip else [])
        ports = [port] + ([self.alt_port] if self.alt_port else [])
        return [(i, p) for i in ips for p in ports]

    def other(self, local: Address) -> Address | None:
        """The endpoint differing from ``local`` in IP and port (OTHER-ADDRESS), or, when
        only one of them has an alternate, in that one."""
        if self.alt_ip is None and self.alt_port is None:
            return None
        return self.changed(local, self.alt_ip is not None, self.alt_port is not None)

    def changed(self, local: Address, change_ip: bool, change_port: bool) -> Address:
        ip, port = local
        pip, pport = self.primary
        if change_ip:
            assert self.alt_ip is not None
            ip = self.alt_ip if ip == pip else pip
        if change_port:
            assert self.alt_port is not None
            port = self.alt_port if port == pport else pport
        return ip, port


class BindingService:
    """Answers Binding requests. Holds only precomputed bytes; no per-client state."""

    def __init__(self, config: BindingConfig) -> None:
        if config.software is not None and len(config.software.encode()) > MAX_SOFTWARE:
            raise ValueError(f"software is longer than {MAX_SOFTWARE} bytes")
        self.config = config
        # Bytes that follow XOR-MAPPED-ADDRESS, per (receiving, sending) endpoint.
        self._tails: dict[tuple[Address, Address], bytes] = {}
        self._fast_tails: dict[Address, bytes] = {}
        self._software = (
            self._attr(Attr.SOFTWARE, config.software) if config.software is not None else b""
        )
        # RFC 3489 has no padding rule: its parsers step by the length field, so the
        # SERVER/SOFTWARE text of a classic response is space-filled to a multiple of 4.
        software = config.software or ""
        self._software_classic = (
            self._attr(Attr.SOFTWARE, software + " " * (-len(software.encode()) % 4))
            if config.software
            else b""
        )

    @staticmethod
    def _attr(attr_type: int, value: object) -> bytes:
        body = encode_value(attr_type, value, MAGIC_COOKIE_BYTES + bytes(12))
        return _ATTR.pack(attr_type, len(body)) + body + b"\x00" * (-len(body) % 4)

    def _tail(self, local: Address, via: Address) -> bytes:
        tail = self._tails.get((local, via))
        if tail is None:
            parts = []
            if not self.config.wildcard:
                parts.append(self._attr(Attr.RESPONSE_ORIGIN, via))
            other = self.config.other(local)
            if other is not None:
                parts.append(self._attr(Attr.OTHER_ADDRESS, other))
            parts.append(self._software)
            tail = b"".join(parts)
            if len(self._tails) < 64:
                self._tails[(local, via)] = tail
        return tail

    # -- the hot path ------------------------------------------------------------------
    def answer(
        self, data: bytes, src: Address, local: Address, *, udp: bool = True
    ) -> Reply | None:
        """The reply to one datagram (or stream frame) holding a Binding request, or None
        for anything to drop. Raises ParseError for malformed bytes."""
        # Fast path: a modern Binding request whose attributes do not change the answer.
        if (
            len(data) >= 20
            and data[0] == 0
            and data[1] == 1
            and data[4:8] == MAGIC_COOKIE_BYTES
        ):
            n = len(data)
            if n == 20 and data[3] == 0:
                return self._success_fast(data, src, local)
            if (
                n == 28
                and data[2:4] == b"\x00\x08"
                and data[20:24] == _FP_ONLY
                and int.from_bytes(data[24:28], "big") == zlib.crc32(data[:20]) ^ FINGERPRINT_XOR
            ):
                return self._success_fast(data, src, local)
            msg = decode_untrusted(data)
            if all(t in _HARMLESS for t, _ in msg.attributes):
                return self._success_fast(data, src, local)
        else:
            msg = decode_untrusted(data)
        if msg.method != Method.BINDING or msg.cls != MessageClass.REQUEST:
            return None  # Binding indications (keepalives) and responses get no answer.
        return self.handle(msg, src, local, udp=udp, request_size=len(data))

    def _success_fast(self, data: bytes, src: Address, local: Address) -> Reply:
        xor_key = data[4:20]
        host, port = src
        tail = self._fast_tails.get(local)
        if tail is None:
            tail = self._fast_tails[local] = self._tail(local, local)
        ip = _V4_INT.get(host)
        if ip is None and ":" not in host:
            ip = _v4_int(host)
        if ip is not None:
            if self.config.mapped_address:
                msg = _V4_BOTH.pack(_SUCCESS, 24 + len(tail) + 8, xor_key, _XMA, 8, 1,
                                    port ^ 0x2112, ip ^ 0x2112A442, 1, 8, 1, port, ip) + tail
            else:
                msg = _V4_XOR.pack(_SUCCESS, 12 + len(tail) + 8, xor_key, _XMA, 8, 1,
                                   port ^ 0x2112, ip ^ 0x2112A442) + tail
        else:
            body = _enc_xor(src, xor_key)
            parts = _ATTR.pack(_XMA, len(body)) + body
            if self.config.mapped_address:
                body = _enc_addr(src, xor_key)
                parts += _ATTR.pack(Attr.MAPPED_ADDRESS, len(body)) + body
            parts += tail
            msg = _HEADER.pack(_SUCCESS, len(parts) + 8) + xor_key + parts
        return Reply(
            msg + _FP_ATTR.pack(Attr.FINGERPRINT, 4, zlib.crc32(msg) ^ FINGERPRINT_XOR), src, local
        )

    # -- the general path --------------------------------------------------------------
    def handle(
        self, msg: Message, src: Address, local: Address, *, udp: bool, request_size: int = 0
    ) -> Reply:
        """Answer a decoded Binding request, with an error response where RFC 5780 says."""
        cfg = self.config
        if msg.unknown_required:
            return self._error(msg, src, local, 420, "Unknown Attribute", msg.unknown_required)
        change: ChangeRequest | None = msg.get(Attr.CHANGE_REQUEST)
        via = local
        if change is not None and (change.change_ip or change.change_port):
            if not udp:
                return self._error(msg, src, local, 400, "CHANGE-REQUEST needs UDP")
            if (change.change_ip and cfg.alt_ip is None) or (
                change.change_port and cfg.alt_port is None
            ):
                # RFC 5780 §6.1: a server without the alternate answers 420.
                return self._error(
                    msg, src, local, 420, "Unknown Attribute", (Attr.CHANGE_REQUEST,)
                )
            via = cfg.changed(local, change.change_ip, change.change_port)
        dest = src
        response_port = msg.get(Attr.RESPONSE_PORT)
        if response_port is not None:
            if not udp:
                return self._error(msg, src, local, 400, "RESPONSE-PORT needs UDP")
            if response_port == 0:
                return self._error(msg, src, local, 400, "RESPONSE-PORT is zero")
            dest = (src[0], response_port)
        attrs: list[tuple[int, object]] = []
        if msg.cookie:
            attrs.append((Attr.XOR_MAPPED_ADDRESS, src))
            if cfg.mapped_address:
                attrs.append((Attr.MAPPED_ADDRESS, src))
        else:
            attrs.append((Attr.MAPPED_ADDRESS, src))
            if not cfg.wildcard:
                attrs.append((Attr.SOURCE_ADDRESS, via))
            other = cfg.other(local)
            if other is not None:
                attrs.append((Attr.CHANGED_ADDRESS, other))
        tail = self._tail(local, via) if msg.cookie else self._software_classic
        padding = msg.get(Attr.PADDING)
        out = encode_message(Method.BINDING, MessageClass.SUCCESS, msg.transaction_id, attrs,
                             cookie=msg.cookie)
        out = _HEADER.pack(_SUCCESS, len(out) - 20 + len(tail)) + out[4:] + tail
        if padding is not None:
            # Pad up to the request's own size (RFC 5780 §7.6), never beyond it.
            room = min(request_size - len(out) - 8 - 4, MAX_PADDING)
            if room >= 4:
                room &= ~3
                out += _ATTR.pack(Attr.PADDING, room) + bytes(room)
                out = _HEADER.pack(_SUCCESS, len(out) - 20) + out[4:]
        return Reply(self._with_fingerprint(out), dest, via)

    @staticmethod
    def _with_fingerprint(out: bytes) -> bytes:
        out = _HEADER.pack(int.from_bytes(out[:2], "big"), len(out) - 20 + 8) + out[4:]
        return out + _FP_ATTR.pack(Attr.FINGERPRINT, 4, zlib.crc32(out) ^ FINGERPRINT_XOR)

    def _error(
        self,
        msg: Message,
        src: Address,
        local: Address,
        code: int,
        reason: str,
        unknown: tuple[int, ...] = (),
    ) -> Reply:
        attrs: list[tuple[int, object]] = [(Attr.ERROR_CODE, ErrorCodeValue(code, reason))]
        if unknown:
            attrs.append((Attr.UNKNOWN_ATTRIBUTES, unknown))
        if self.config.software is not None:
            attrs.append((Attr.SOFTWARE, self.config.software))
        out = encode_message(
            msg.method, MessageClass.ERROR, msg.transaction_id, attrs, cookie=msg.cookie,
            fingerprint=True,
        )
        return Reply(out, src, local)


__all__ = ["BindingConfig", "BindingService", "ParseError", "Reply"]
