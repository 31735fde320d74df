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

from dataclasses import dataclass

from ..stun.attributes import Address, ChangeRequest, ErrorCodeValue
from ..stun.constants import Attr, MessageClass, Method
from ..stun.fast import BindingSuccess, encode_attribute
from ..stun.message import Message, encode_message
from .effects import FiveTuple, SendToClient

#: The most PADDING a response will carry (RFC 5780 §7.6 is for MTU probing).
MAX_PADDING = 1472
MAX_SOFTWARE = 128

#: Request attributes that never change the answer: a request carrying only these gets
#: the same response as a plain one.
HARMLESS = frozenset(
    {
        Attr.SOFTWARE,
        Attr.FINGERPRINT,
        Attr.PRIORITY,
        Attr.ICE_CONTROLLED,
        Attr.ICE_CONTROLLING,
        Attr.USE_CANDIDATE,
    }
)
_OK = "success"
_FINGERPRINT = Attr.FINGERPRINT
_PADDING_HEADER = 4  # a padded answer is its unpadded self, this header and the padding


@dataclass(frozen=True)
class BindingConfig:
    """The server's STUN endpoints and response options."""

    primary: Address
    alt_ip: str | None = None
    alt_port: int | None = None
    software: str | None = None
    #: Include MAPPED-ADDRESS in modern responses too (RFC 8489 §14.1 compatibility;
    #: lets a classifier spot an ALG that rewrites addresses).
    mapped_address: bool = False

    @property
    def rfc5780(self) -> bool:
        """Whether an alternate IP or port exists (RFC 5780 behaviour discovery)."""
        return self.alt_ip is not None or self.alt_port is not None

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
    """Answers Binding requests for one group of endpoints (a primary and its
    alternates). Holds only precomputed bytes; no per-client state."""

    def __init__(self, config: BindingConfig) -> None:
        if config.software is not None and len(config.software.encode()) > MAX_SOFTWARE:
            raise ValueError(f"software is longer than {MAX_SOFTWARE} bytes")
        self.config = config
        # Encoded attributes that follow the addresses, per (receiving, sending) endpoint.
        self._tails: dict[tuple[Address, Address], bytes] = {}
        self._plain: dict[Address, BindingSuccess] = {}
        self._software = (
            encode_attribute(Attr.SOFTWARE, config.software)
            if config.software is not None else b""
        )  # fmt: skip
        # RFC 3489 has no padding rule: its parsers step by the length field, so the
        # SERVER/SOFTWARE text of a classic response is space-filled to a multiple of 4.
        software = config.software or ""
        self._software_classic = (
            encode_attribute(Attr.SOFTWARE, software + " " * (-len(software.encode()) % 4))
            if config.software
            else b""
        )

    def _tail(self, local: Address, via: Address) -> bytes:
        tail = self._tails.get((local, via))
        if tail is None:
            parts = []
            # RFC 5780 attributes only where RFC 5780 is served (an alternate exists):
            # elsewhere they only lengthen what a spoofed request reflects.
            if self.config.rfc5780 and not self.config.wildcard:
                parts.append(encode_attribute(Attr.RESPONSE_ORIGIN, via))
            other = self.config.other(local)
            if other is not None:
                parts.append(encode_attribute(Attr.OTHER_ADDRESS, other))
            parts.append(self._software)
            tail = b"".join(parts)
            if len(self._tails) < 64:
                self._tails[(local, via)] = tail
        return tail

    def plain(self, local: Address) -> BindingSuccess:
        """The encoder of success responses sent from ``local`` to plain requests
        received on ``local`` (no CHANGE-REQUEST, RESPONSE-PORT or PADDING)."""
        plain = self._plain.get(local)
        if plain is None:
            plain = BindingSuccess(self._tail(local, local),
                                   mapped_address=self.config.mapped_address)
            if len(self._plain) < 64:
                self._plain[local] = plain
        return plain

    def handle(
        self, msg: Message, five_tuple: FiveTuple, request_size: int
    ) -> tuple[SendToClient, str]:
        """Answer a decoded Binding request from ``five_tuple``, with an error response
        where RFC 5780 says; and the result, ``"success"`` or the error code."""
        cfg = self.config
        transport, src, local = five_tuple
        udp = transport == "udp"
        # FINGERPRINT answers FINGERPRINT (RFC 8489 §7.3: a usage that needs it has the
        # client send it); an answer without it is 8 bytes less to reflect.
        fingerprint = _FINGERPRINT in msg
        if msg.unknown_required:
            return self._error(msg, five_tuple, 420, "Unknown Attribute", msg.unknown_required)
        if msg.cookie and all(t in HARMLESS for t, _ in msg.attributes):
            answer = self.plain(local).success(msg.xor_key, src, fingerprint=fingerprint)
            return SendToClient(five_tuple, answer), _OK
        change: ChangeRequest | None = msg.get(Attr.CHANGE_REQUEST)
        via = local
        if change is not None and (change.change_ip or change.change_port):
            if not udp:
                return self._error(msg, five_tuple, 400, "CHANGE-REQUEST needs UDP")
            if (change.change_ip and cfg.alt_ip is None) or (
                change.change_port and cfg.alt_port is None
            ):
                # RFC 5780 §6.1: a server without the alternate answers 420.
                return self._error(
                    msg, five_tuple, 420, "Unknown Attribute", (Attr.CHANGE_REQUEST,)
                )
            via = cfg.changed(local, change.change_ip, change.change_port)
        dest = src
        response_port = msg.get(Attr.RESPONSE_PORT)
        if response_port is not None:
            if not udp:
                return self._error(msg, five_tuple, 400, "RESPONSE-PORT needs UDP")
            if response_port == 0:
                return self._error(msg, five_tuple, 400, "RESPONSE-PORT is zero")
            dest = (src[0], response_port)
        attrs: list[tuple[int, object]] = []
        if msg.cookie:
            attrs.append((Attr.XOR_MAPPED_ADDRESS, src))
            if cfg.mapped_address:
                attrs.append((Attr.MAPPED_ADDRESS, src))
            tail = self._tail(local, via)
        else:
            attrs.append((Attr.MAPPED_ADDRESS, src))
            if not cfg.wildcard:
                attrs.append((Attr.SOURCE_ADDRESS, via))
            other = cfg.other(local)
            if other is not None:
                attrs.append((Attr.CHANGED_ADDRESS, other))
            tail = self._software_classic
        tid = msg.transaction_id
        out = encode_message(Method.BINDING, MessageClass.SUCCESS, tid, attrs,
                             cookie=msg.cookie, tail=tail, fingerprint=fingerprint)  # fmt: skip
        if msg.get(Attr.PADDING) is not None:
            # Pad up to the request's own size (RFC 5780 §7.6), never beyond it.
            room = min(request_size - len(out) - _PADDING_HEADER, MAX_PADDING) & ~3
            if room >= 4:
                padding = encode_attribute(Attr.PADDING, bytes(room))
                out = encode_message(Method.BINDING, MessageClass.SUCCESS, tid, attrs,
                                     cookie=msg.cookie, tail=tail + padding,
                                     fingerprint=fingerprint)  # fmt: skip
        return SendToClient(five_tuple if via == local and dest == src else
                            (transport, dest, via), out), _OK  # fmt: skip

    def _error(
        self,
        msg: Message,
        five_tuple: FiveTuple,
        code: int,
        reason: str,
        unknown: tuple[int, ...] = (),
    ) -> tuple[SendToClient, str]:
        attrs: list[tuple[int, object]] = [(Attr.ERROR_CODE, ErrorCodeValue(code, reason))]
        if unknown:
            attrs.append((Attr.UNKNOWN_ATTRIBUTES, unknown))
        if self.config.software is not None:
            attrs.append((Attr.SOFTWARE, self.config.software))
        out = encode_message(
            msg.method, MessageClass.ERROR, msg.transaction_id, attrs, cookie=msg.cookie,
            fingerprint=_FINGERPRINT in msg,
        )
        return SendToClient(five_tuple, out), str(code)


__all__ = ["HARMLESS", "MAX_PADDING", "BindingConfig", "BindingService"]
