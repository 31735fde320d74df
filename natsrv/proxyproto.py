"""The HAProxy PROXY protocol, versions 1 and 2, receiver side: pure functions over
bytes, no I/O.

A TCP load balancer or an SNI router in front of a stream listener (TURN over TLS
sharing port 443 with HTTPS, say) connects to natsrv itself; with the PROXY protocol it
first sends one header naming the client's real address, before anything else (before
the TLS handshake too). Layouts (haproxy.org, doc/proxy-protocol.txt):

* version 1, text, at most 107 bytes with its CRLF:
  ``PROXY TCP4|TCP6 <src ip> <dst ip> <src port> <dst port>\\r\\n``, or
  ``PROXY UNKNOWN[ anything]\\r\\n`` (use the connection's own addresses);
* version 2, binary: the 12-byte signature ``\\r\\n\\r\\n\\0\\r\\nQUIT\\n``, a byte of version
  (2) and command (0 LOCAL: the proxy's own connection, e.g. a health check: use the
  connection's addresses; 1 PROXY), a byte of address family (1 INET, 2 INET6; 0
  UNSPEC only with LOCAL) and transport (1 STREAM), a 16-bit length, then the addresses
  (4+4+2+2 or 16+16+2+2 bytes) and TLVs, which are skipped.

Anything else is refused: a header that does not parse closes the connection, so the
listener must only ever be reachable through the proxy (a client that could reach it
directly could name any address it likes). :func:`header_bytes_wanted` says how many
bytes may be read next without reading past the header (the bytes after it belong to
STUN or to TLS), :func:`parse_proxy_header_untrusted` parses; both are bounded by
:data:`MAX_HEADER`.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass

Address = tuple[str, int]

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
#: Version 1's longest header (spec §2.1), CRLF included.
V1_MAX = 107
#: The shortest version 1 header, ``PROXY UNKNOWN\r\n``.
V1_MIN = 15
V2_FIXED = 16
#: The longest header accepted (version 2 with TLVs: AWS and others add a few hundred
#: bytes at most); a longer one closes the connection.
MAX_HEADER = 2048

_V2 = struct.Struct(">12sBBH")
_LOCAL, _PROXY = 0x0, 0x1
_INET, _INET6, _UNSPEC = 0x1, 0x2, 0x0
_STREAM = 0x1


class ProxyProtocolError(ValueError):
    """Not a PROXY protocol header this server accepts."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A parsed header: ``source`` and ``destination`` are the client's and the
    address it connected to, or None (LOCAL, UNKNOWN): use the connection's own.
    ``length`` is how many bytes the header took; ``version`` 1 or 2."""

    source: Address | None
    destination: Address | None
    length: int
    version: int


def header_bytes_wanted(data: bytes) -> int:
    """How many more bytes may be read after ``data`` (a prefix of the stream) without
    reading past the PROXY header: at least 1 while the header is incomplete; never
    more than the header still lacks. ``ProxyProtocolError`` when ``data`` cannot
    start a header."""
    size = len(data)
    if size < 8:
        # 8 bytes never go past a header: the shortest (version 1) has 15.
        if not (V2_SIGNATURE.startswith(data) or V1_PREFIX.startswith(data[:6])):
            raise ProxyProtocolError("not a PROXY protocol header")
        return 8 - size
    if data.startswith(V2_SIGNATURE[:8]):
        if size < V2_FIXED:
            return V2_FIXED - size
        return max(_v2_total(data) - size, 0)
    if data.startswith(V1_PREFIX):
        if data.find(b"\r\n", 0, V1_MAX) >= 0:
            return 0
        if size >= V1_MAX:
            raise ProxyProtocolError("PROXY v1 header without CRLF in 107 bytes")
        # Until the line ends, one byte at a time past the shortest header.
        return max(V1_MIN - size, 1)
    raise ProxyProtocolError("not a PROXY protocol header")


def parse_proxy_header_untrusted(data: bytes) -> ProxyHeader | None:
    """The header at the start of ``data``, None if ``data`` is a valid but incomplete
    prefix of one, or ``ProxyProtocolError``. Bytes after the header are ignored."""
    if data.startswith(V1_PREFIX):
        end = data.find(b"\r\n", 0, V1_MAX)
        if end < 0:
            if len(data) >= V1_MAX:
                raise ProxyProtocolError("PROXY v1 header without CRLF in 107 bytes")
            return None
        return _parse_v1(data[: end + 2])
    if len(data) < V2_FIXED:
        header_bytes_wanted(data)  # raises unless a header could start so
        return None
    if not data.startswith(V2_SIGNATURE):
        raise ProxyProtocolError("not a PROXY protocol header")
    total = _v2_total(data)
    if len(data) < total:
        return None
    return _parse_v2(data[:total])


def _v2_total(data: bytes) -> int:
    """The whole length of the version 2 header whose 16 fixed bytes start ``data``."""
    total = V2_FIXED + int(_V2.unpack_from(data)[3])
    if total > MAX_HEADER:
        raise ProxyProtocolError("PROXY v2 header too long")
    return total


def _parse_v1(data: bytes) -> ProxyHeader:
    end = data.index(b"\r\n")
    length = end + 2
    try:
        line = data[len(V1_PREFIX) : end].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyProtocolError("PROXY v1 header is not ASCII") from None
    fields = line.split(" ")
    if fields[0] == "UNKNOWN":
        return ProxyHeader(None, None, length, 1)
    if len(fields) != 5 or fields[0] not in ("TCP4", "TCP6"):
        raise ProxyProtocolError("malformed PROXY v1 header")
    family = ipaddress.IPv4Address if fields[0] == "TCP4" else ipaddress.IPv6Address
    try:
        source_ip = family(fields[1])
        destination_ip = family(fields[2])
    except ValueError:
        raise ProxyProtocolError("bad address in PROXY v1 header") from None
    source = (str(source_ip), _port(fields[3]))
    destination = (str(destination_ip), _port(fields[4]))
    return ProxyHeader(source, destination, length, 1)


def _port(text: str) -> int:
    if not (1 <= len(text) <= 5 and text.isascii() and text.isdigit()):
        raise ProxyProtocolError("bad port in PROXY v1 header")
    port = int(text)
    if port > 65535:
        raise ProxyProtocolError("bad port in PROXY v1 header")
    return port


def _parse_v2(data: bytes) -> ProxyHeader:
    signature, version_command, family_transport, size = _V2.unpack_from(data)
    if signature != V2_SIGNATURE:
        raise ProxyProtocolError("bad PROXY v2 signature")
    if version_command >> 4 != 2:
        raise ProxyProtocolError("unsupported PROXY protocol version")
    command = version_command & 0x0F
    length = V2_FIXED + size
    body = data[V2_FIXED:length]
    if command == _LOCAL:
        return ProxyHeader(None, None, length, 2)
    if command != _PROXY:
        raise ProxyProtocolError("unknown PROXY v2 command")
    family, transport = family_transport >> 4, family_transport & 0x0F
    if transport != _STREAM:
        raise ProxyProtocolError("PROXY v2 header for a transport other than TCP")
    make: Callable[[bytes], ipaddress.IPv4Address | ipaddress.IPv6Address]
    if family == _INET and size >= 12:
        width, make = 4, ipaddress.IPv4Address
    elif family == _INET6 and size >= 36:
        width, make = 16, ipaddress.IPv6Address
    else:
        raise ProxyProtocolError("PROXY v2 header without a TCP/IP address")
    src, dst = str(make(body[:width])), str(make(body[width : 2 * width]))
    sport, dport = struct.unpack_from(">HH", body, 2 * width)
    return ProxyHeader((src, sport), (dst, dport), length, 2)


def encode_proxy_header_v1(source: Address | None, destination: Address | None) -> bytes:
    """A version 1 header (for tests and tools); None addresses make ``UNKNOWN``."""
    if source is None or destination is None:
        return b"PROXY UNKNOWN\r\n"
    kind = "TCP6" if ":" in source[0] else "TCP4"
    return f"PROXY {kind} {source[0]} {destination[0]} {source[1]} {destination[1]}\r\n".encode()


def encode_proxy_header_v2(
    source: Address | None, destination: Address | None, tlvs: bytes = b""
) -> bytes:
    """A version 2 header (for tests and tools); None addresses make a LOCAL one."""
    if source is None or destination is None:
        return _V2.pack(V2_SIGNATURE, 0x20 | _LOCAL, _UNSPEC << 4, len(tlvs)) + tlvs
    src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    family = _INET if src.version == 4 else _INET6
    body = src.packed + dst.packed + struct.pack(">HH", source[1], destination[1]) + tlvs
    return _V2.pack(V2_SIGNATURE, 0x20 | _PROXY, family << 4 | _STREAM, len(body)) + body


__all__ = [
    "MAX_HEADER",
    "ProxyHeader",
    "ProxyProtocolError",
    "encode_proxy_header_v1",
    "encode_proxy_header_v2",
    "header_bytes_wanted",
    "parse_proxy_header_untrusted",
]
