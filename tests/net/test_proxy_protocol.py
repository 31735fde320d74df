"""PROXY protocol v1/v2 on real TCP and TLS listeners: the header comes first (before
the TLS handshake), and the client it names is who the server answers about
(XOR-MAPPED-ADDRESS), counts (per-source cap) and allocates for; LOCAL and UNKNOWN keep
the connection's own address; a missing, garbage or late header closes the connection;
a listener without the option treats a header as garbage."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trio

from natsrv.config import Config
from natsrv.net.serve import ServerInfo
from natsrv.proxyproto import encode_proxy_header_v1, encode_proxy_header_v2
from natsrv.stun import Attr, Message, MessageClass, Method
from natsrv.stun.integrity import long_term_key
from tests.conftest import start_server, stun_config
from tests.net.test_stun_stream import make_certificate, read_messages
from tests.net.test_turn_server import REALM, turn_config

CLIENT4 = ("198.51.100.7", 40000)
CLIENT6 = ("2001:db8::7", 40001)
SERVER = ("203.0.113.1", 443)
HEADERS = {
    "v1-ipv4": (encode_proxy_header_v1(CLIENT4, SERVER), CLIENT4),
    "v1-ipv6": (encode_proxy_header_v1(CLIENT6, ("2001:db8::1", 443)), CLIENT6),
    "v2-ipv4": (encode_proxy_header_v2(CLIENT4, SERVER), CLIENT4),
    "v2-ipv6": (encode_proxy_header_v2(CLIENT6, ("2001:db8::1", 443)), CLIENT6),
    "v2-local": (encode_proxy_header_v2(None, None), None),
    "v1-unknown": (encode_proxy_header_v1(None, None), None),
}


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    return make_certificate(tmp_path)


def proxied_config(tls: tuple[Path, Path], **overrides: object) -> Config:
    cert, key = tls
    options: dict[str, object] = {"tls_cert": str(cert), "tls_key": str(key), "tls_port": 0,
                                  "proxy_protocol": True, "tcp_first_message_timeout": 0.5}
    options.update(overrides)
    return stun_config(**options)


async def _open(info: ServerInfo, kind: str, header: bytes,
                cafile: Path) -> tuple[trio.abc.Stream, trio.SocketStream]:  # fmt: skip
    """A connection to the ``kind`` listener that sends ``header`` first (then TLS)."""
    tcp = await trio.open_tcp_stream(*(info.tls if kind == "tls" else info.tcp)[0])
    await tcp.send_all(header)
    if kind == "tcp":
        return tcp, tcp
    stream = trio.SSLStream(tcp, ssl.create_default_context(cafile=str(cafile)),
                            server_hostname="localhost")  # fmt: skip
    with trio.fail_after(5):
        await stream.do_handshake()
    return stream, tcp


async def _binding(stream: trio.abc.Stream) -> Message:
    request = Message(Method.BINDING, MessageClass.REQUEST)
    await stream.send_all(request.encode(fingerprint=True))
    (reply,) = await read_messages(stream, 1)
    assert reply.transaction_id == request.transaction_id
    return reply


async def _closed_without_answer(stream: trio.abc.Stream) -> bool:
    """True when the server closes the connection having sent nothing."""
    received = b""
    with trio.fail_after(5):
        while True:
            try:
                data = await stream.receive_some(65536)
            except (trio.BrokenResourceError, ssl.SSLError):
                data = b""
            if not data:
                return received == b""
            received += data


@pytest.mark.parametrize("kind", ["tcp", "tls"])
@pytest.mark.parametrize("name", list(HEADERS))
async def test_the_header_names_the_client(
    nursery: trio.Nursery, tls_files: tuple[Path, Path], kind: str, name: str
) -> None:
    info = await start_server(nursery, proxied_config(tls_files))
    header, client = HEADERS[name]
    stream, tcp = await _open(info, kind, header, tls_files[0])
    async with stream:
        reply = await _binding(stream)
        own = tcp.socket.getsockname()[:2]
        assert reply.get(Attr.XOR_MAPPED_ADDRESS) == (client or own)


@pytest.mark.parametrize("kind", ["tcp", "tls"])
@pytest.mark.parametrize("what", ["missing", "garbage", "never"])
async def test_no_valid_header_closes_the_connection(
    nursery: trio.Nursery, tls_files: tuple[Path, Path], kind: str, what: str
) -> None:
    info = await start_server(nursery, proxied_config(tls_files))
    tcp = await trio.open_tcp_stream(*(info.tls if kind == "tls" else info.tcp)[0])
    async with tcp:
        if what == "missing":  # what a client that bypasses the proxy sends first
            if kind == "tcp":
                await tcp.send_all(Message(Method.BINDING, MessageClass.REQUEST).encode())
            else:
                await tcp.send_all(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(40))
        elif what == "garbage":
            await tcp.send_all(b"PROXY TCP4 198.51.100.7 nonsense 1 2\r\n")
        # "never": nothing at all; the first-message deadline (0.5 s) closes it.
        assert await _closed_without_answer(tcp)
    counters = info.metrics.counters
    if what == "never":
        assert counters["stream_proxy_header_errors"] == 0
    else:
        assert counters["stream_proxy_header_errors"] == 1


@pytest.mark.parametrize("version", [1, 2])
async def test_a_listener_without_the_option_treats_a_header_as_garbage(
    nursery: trio.Nursery, tls_files: tuple[Path, Path], version: int
) -> None:
    """Only TLS expects headers here; a header sent to the plain TCP listener gets no
    answer naming the forged address: the connection is closed."""
    info = await start_server(nursery, proxied_config(tls_files,
                                                      proxy_protocol_listeners=("tls",)))
    encode = encode_proxy_header_v1 if version == 1 else encode_proxy_header_v2
    tcp = await trio.open_tcp_stream(*info.tcp[0])
    async with tcp:
        request = Message(Method.BINDING, MessageClass.REQUEST).encode()
        await tcp.send_all(encode(CLIENT4, SERVER) + request)
        assert await _closed_without_answer(tcp)
    # And without proxy-protocol at all, neither listener expects one (the default).
    plain = await start_server(nursery, stun_config(tls_cert=str(tls_files[0]),
                                                    tls_key=str(tls_files[1]), tls_port=0))
    stream, _ = await _open(plain, "tls", b"", tls_files[0])
    async with stream:
        reply = await _binding(stream)
        assert reply.get(Attr.XOR_MAPPED_ADDRESS) != CLIENT4


async def test_the_per_source_cap_counts_real_clients_not_the_proxy(
    nursery: trio.Nursery, tls_files: tuple[Path, Path]
) -> None:
    info = await start_server(nursery, proxied_config(tls_files, tcp_max_per_source=1))
    first, _ = await _open(info, "tcp", encode_proxy_header_v2(CLIENT4, SERVER), tls_files[0])
    other = ("198.51.100.8", 40000)
    second, _ = await _open(info, "tcp", encode_proxy_header_v2(other, SERVER), tls_files[0])
    assert (await _binding(first)).get(Attr.XOR_MAPPED_ADDRESS) == CLIENT4
    assert (await _binding(second)).get(Attr.XOR_MAPPED_ADDRESS) == other
    # The same real client again (another port) is over its cap of 1: closed.
    again, _ = await _open(info, "tcp", encode_proxy_header_v2((CLIENT4[0], 40002), SERVER),
                           tls_files[0])  # fmt: skip
    assert await _closed_without_answer(again)
    assert info.metrics.counters["stream_refused_per_source"] == 1
    for s in (first, second, again):
        await s.aclose()


async def test_an_allocation_over_proxied_tls_belongs_to_the_real_client(
    nursery: trio.Nursery, tls_files: tuple[Path, Path]
) -> None:
    cert, key = tls_files
    config = turn_config(tls_cert=str(cert), tls_key=str(key), tls_port=0, proxy_protocol=True,
                         proxy_protocol_listeners=("tls",))  # fmt: skip
    info = await start_server(nursery, config)
    stream, _ = await _open(info, "tls", encode_proxy_header_v1(CLIENT4, SERVER), cert)
    async with stream:
        nonce = None
        key_ = long_term_key("alice", REALM, "wonderland")
        for _ in range(2):
            request = Message(Method.ALLOCATE, MessageClass.REQUEST,
                              attributes=[(Attr.REQUESTED_TRANSPORT, 17)])  # fmt: skip
            if nonce is not None:
                request.attributes += [(Attr.USERNAME, "alice"), (Attr.REALM, REALM),
                                       (Attr.NONCE, nonce)]  # fmt: skip
            await stream.send_all(request.encode(key=key_ if nonce else None))
            (reply,) = await read_messages(stream, 1)
            nonce = reply.get(Attr.NONCE)
        assert reply.cls == MessageClass.SUCCESS, reply.get(Attr.ERROR_CODE)
        assert reply.get(Attr.XOR_MAPPED_ADDRESS) == CLIENT4
        assert info.server is not None and info.server.turn is not None
        [session] = info.server.turn.sessions(0.0)
        assert session["client"] == f"{CLIENT4[0]}:{CLIENT4[1]}"
        assert session["transport"] == "tls"


async def test_a_header_naming_an_open_connections_client_is_refused(
    nursery: trio.Nursery, tls_files: tuple[Path, Path]
) -> None:
    """Two connections cannot share a 5-tuple: the second is closed, the first (and so
    whatever allocation it holds) stays."""
    info = await start_server(nursery, proxied_config(tls_files))
    header = encode_proxy_header_v1(CLIENT4, SERVER)
    first, _ = await _open(info, "tcp", header, tls_files[0])
    assert (await _binding(first)).get(Attr.XOR_MAPPED_ADDRESS) == CLIENT4
    second, _ = await _open(info, "tcp", header, tls_files[0])
    assert await _closed_without_answer(second)
    assert info.metrics.counters["stream_duplicate_client"] == 1
    assert (await _binding(first)).get(Attr.XOR_MAPPED_ADDRESS) == CLIENT4
    for s in (first, second):
        await s.aclose()


def test_which_listeners_require_the_header() -> None:
    from natsrv.config import ConfigError, settings_from_mapping
    from natsrv.net.serve import uses_proxy_protocol

    values = settings_from_mapping({"proxy-protocol-listeners": ["TLS", "[::1]:443",
                                                                 "127.0.0.1:3478"]})
    assert values["proxy_protocol_listeners"] == ("tls", "[::1]:443", "127.0.0.1:3478")
    with pytest.raises(ConfigError) as exc:
        settings_from_mapping({"proxy-protocol-listeners": "udp"})
    assert str(exc.value) == "proxy-protocol-listeners: expected tcp, tls or IP:PORT, got 'udp'"
    default = stun_config()
    assert not uses_proxy_protocol(default, "tcp", ("127.0.0.1", 3478))  # never by default
    on = stun_config(proxy_protocol=True)
    assert uses_proxy_protocol(on, "tcp", ("127.0.0.1", 3478))
    assert uses_proxy_protocol(on, "tls", ("127.0.0.1", 5349))
    one = stun_config(proxy_protocol=True, proxy_protocol_listeners=("[::1]:443",))
    assert uses_proxy_protocol(one, "tls", ("::1", 443))
    assert not uses_proxy_protocol(one, "tls", ("127.0.0.1", 443))
    assert not uses_proxy_protocol(one, "tcp", ("127.0.0.1", 3478))
