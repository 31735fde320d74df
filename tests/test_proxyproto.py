"""The PROXY protocol parser (HAProxy's proxy-protocol.txt, v1 and v2): what it accepts,
what it refuses, and that it never asks for a byte past the header."""

from __future__ import annotations

import struct
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natsrv.proxyproto import (
    MAX_HEADER,
    ProxyHeader,
    ProxyProtocolError,
    encode_proxy_header_v1,
    encode_proxy_header_v2,
    header_bytes_wanted,
    parse_proxy_header_untrusted,
)
from natsrv.stun import Message, MessageClass, Method

SIG = b"\r\n\r\n\x00\r\nQUIT\n"
SRC4, DST4 = ("198.51.100.7", 40000), ("203.0.113.1", 443)
SRC6, DST6 = ("2001:db8::7", 40001), ("2001:db8::1", 443)

VALID = [
    (b"PROXY TCP4 198.51.100.7 203.0.113.1 40000 443\r\n", ProxyHeader(SRC4, DST4, 47, 1)),
    (b"PROXY TCP6 2001:db8::7 2001:db8::1 40001 443\r\n", ProxyHeader(SRC6, DST6, 46, 1)),
    (b"PROXY UNKNOWN\r\n", ProxyHeader(None, None, 15, 1)),
    (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", ProxyHeader(None, None, 35, 1)),
    (encode_proxy_header_v2(SRC4, DST4), ProxyHeader(SRC4, DST4, 28, 2)),
    (encode_proxy_header_v2(SRC6, DST6), ProxyHeader(SRC6, DST6, 52, 2)),
    (encode_proxy_header_v2(None, None), ProxyHeader(None, None, 16, 2)),  # LOCAL
    # TLVs (here PP2_TYPE_AUTHORITY "turn.example.org") are skipped.
    (encode_proxy_header_v2(SRC4, DST4, b"\x02\x00\x10turn.example.org"),
     ProxyHeader(SRC4, DST4, 47, 2)),
]  # fmt: skip


@pytest.mark.parametrize(("data", "expected"), VALID)
def test_valid_headers(data: bytes, expected: ProxyHeader) -> None:
    stun = Message(Method.BINDING, MessageClass.REQUEST).encode()
    assert parse_proxy_header_untrusted(data + stun) == expected
    assert expected.length == len(data)
    # Byte by byte, as the reader goes: never past the header, None until complete.
    prefix = b""
    while True:
        wanted = header_bytes_wanted(prefix)
        if wanted == 0:
            break
        assert len(prefix) + wanted <= len(data)
        assert parse_proxy_header_untrusted(prefix) is None
        prefix = data[: len(prefix) + wanted]
    assert prefix == data and parse_proxy_header_untrusted(prefix) == expected


def test_encoders_write_what_haproxy_writes() -> None:
    assert encode_proxy_header_v1(SRC4, DST4) == VALID[0][0]
    assert encode_proxy_header_v2(SRC4, DST4) == (
        SIG + b"\x21\x11\x00\x0c" + bytes([198, 51, 100, 7, 203, 0, 113, 1])
        + struct.pack(">HH", 40000, 443)
    )  # fmt: skip
    assert encode_proxy_header_v2(None, None) == SIG + b"\x20\x00\x00\x00"


INVALID = [
    Message(Method.BINDING, MessageClass.REQUEST).encode(),  # STUN, no header
    b"GET / HTTP/1.1\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32),  # a TLS ClientHello
    b"PROXY TCP4 198.51.100.7 203.0.113.1 40000\r\n",  # a field short
    b"PROXY TCP4 2001:db8::7 203.0.113.1 40000 443\r\n",  # family mismatch
    b"PROXY TCP6 198.51.100.7 203.0.113.1 40000 443\r\n",
    b"PROXY TCP4 198.51.100.07 203.0.113.1 40000 443\r\n",  # leading zero
    b"PROXY TCP4 198.51.100.7 203.0.113.1 70000 443\r\n",  # port out of range
    b"PROXY TCP4 198.51.100.7 203.0.113.1 -1 443\r\n",
    b"PROXY TCP4  198.51.100.7 203.0.113.1 40000 443\r\n",  # two spaces
    b"PROXY UDP4 198.51.100.7 203.0.113.1 40000 443\r\n",
    b"PROXY TCP4 198.51.100.7 203.0.113.1 40000 \xff43\r\n",
    b"PROXY " + b"A" * 101 + b"\r\n",  # no CRLF within 107 bytes
    SIG + b"\x11\x11\x00\x0c" + bytes(12),  # version 1 in a binary header
    SIG + b"\x22\x11\x00\x0c" + bytes(12),  # command 2
    SIG + b"\x21\x12\x00\x0c" + bytes(12),  # DGRAM
    SIG + b"\x21\x31\x00\xd8" + bytes(216),  # AF_UNIX
    SIG + b"\x21\x00\x00\x00",  # PROXY with UNSPEC
    SIG + b"\x21\x11\x00\x08" + bytes(8),  # addresses cut short
    SIG + b"\x21\x21\x00\x0c" + bytes(12),  # INET6 in 12 bytes
    SIG + b"\x21\x11" + struct.pack(">H", MAX_HEADER) + bytes(12),  # too long
    SIG[:11] + b"X" + b"\x21\x11\x00\x0c" + bytes(12),  # signature's last byte wrong
]


@pytest.mark.parametrize("data", INVALID)
def test_invalid_headers_are_refused(data: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header_untrusted(data)


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_the_one_error(data: bytes) -> None:
    try:
        header = parse_proxy_header_untrusted(data)
    except ProxyProtocolError:
        return
    assert header is None or header.length <= min(len(data), MAX_HEADER)


@given(st.sampled_from([d for d, _ in VALID]), st.binary(max_size=40), st.integers(0, 60))
def test_corrupted_headers_parse_or_raise_the_one_error(
    data: bytes, noise: bytes, at: int
) -> None:
    corrupted = data[:at] + noise + data[at + len(noise):]
    try:
        wanted = header_bytes_wanted(corrupted[:at])
        assert 0 <= wanted <= MAX_HEADER
        parse_proxy_header_untrusted(corrupted)
    except ProxyProtocolError:
        pass


def test_the_parser_is_sans_io() -> None:
    """Like natsrv.stun and natsrv.core (tests/test_sansio.py): no trio, no socket."""
    code = ("import sys, natsrv.proxyproto\n"
            "print(','.join(m for m in ('trio', 'socket', '_socket') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
