"""STUN and TURN over DTLS (RFC 7350) through a real server on loopback, with a DTLS
client built on pyOpenSSL: a Binding and an Allocate over DTLS, the stateless cookie
exchange (ClientHellos that never return a cookie, or return another address's cookie,
create no session), the session bound and timed out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing
from OpenSSL import SSL

from natsrv.net.dtls import split_records
from natsrv.net.serve import ServerInfo
from natsrv.stun import Attr, Message, MessageClass, Method, decode_untrusted
from natsrv.stun.integrity import long_term_key
from tests.conftest import PRIMARY_IP, private_loopback_ip, start_server
from tests.interop.turn_servers import make_tls_files
from tests.net.test_tcp_relay import gauge
from tests.net.test_turn_server import REALM, turn_config

Address = tuple[str, int]


class DtlsClient:
    """A DTLS 1.2 client over a trio UDP socket, OpenSSL through memory BIOs."""

    def __init__(self, sock: trio.socket.SocketType, server: Address) -> None:
        self.sock, self.server = sock, server
        ctx = SSL.Context(SSL.DTLS_CLIENT_METHOD)
        ctx.set_options(SSL.OP_NO_QUERY_MTU)
        self.conn = SSL.Connection(ctx)
        self.conn.set_connect_state()
        self.conn.set_ciphertext_mtu(1200)

    def written(self) -> list[bytes]:
        out = b""
        while True:
            try:
                out += self.conn.bio_read(65536)
            except SSL.WantReadError:
                return split_records(out)

    async def flush(self) -> None:
        for datagram in self.written():
            await self.sock.sendto(datagram, self.server)

    async def receive(self) -> None:
        with trio.fail_after(5):
            data, _ = await self.sock.recvfrom(65536)
        self.conn.bio_write(data)

    async def handshake(self) -> None:
        while True:
            try:
                self.conn.do_handshake()
                return
            except SSL.WantReadError:
                await self.flush()
                await self.receive()

    async def transact(self, msg: Message, key: bytes | None = None) -> Message:
        self.conn.send(msg.encode(key=key, fingerprint=True))
        await self.flush()
        while True:
            await self.receive()
            try:
                reply = decode_untrusted(self.conn.recv(65536))
            except SSL.WantReadError:
                continue
            if reply.transaction_id == msg.transaction_id:
                return reply


@pytest.fixture
async def dtls_server(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[ServerInfo]:
    tls = make_tls_files(tmp_path)
    info = await start_server(nursery, turn_config(
        tls_port=0, tls_cert=str(tls.cert), tls_key=str(tls.key), tls_handshake_timeout=1.0,
    ))  # fmt: skip
    yield info


def sessions(info: ServerInfo) -> int:
    return sum(len(endpoint.sessions) for endpoint in info.dtls_endpoints)


async def udp_socket(stack: list[trio.socket.SocketType]) -> trio.socket.SocketType:
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    stack.append(sock)
    await sock.bind((PRIMARY_IP, 0))
    return sock


@pytest.fixture
async def socks() -> AsyncIterator[list[trio.socket.SocketType]]:
    made: list[trio.socket.SocketType] = []
    yield made
    for s in made:
        s.close()


async def test_binding_and_allocate_over_dtls(
    dtls_server: ServerInfo, socks: list[trio.socket.SocketType]
) -> None:
    assert dtls_server.dtls == dtls_server.tls  # the TLS port, over UDP
    sock = await udp_socket(socks)
    client = DtlsClient(sock, dtls_server.dtls[0])
    await client.handshake()
    assert client.conn.get_protocol_version_name() == "DTLSv1.2"
    reply = await client.transact(Message(Method.BINDING, MessageClass.REQUEST))
    assert reply.cls == MessageClass.SUCCESS
    assert reply.get(Attr.XOR_MAPPED_ADDRESS) == sock.getsockname()
    # TURN: the 401, then an allocation whose 5-tuple says "dtls".
    allocate = Message(Method.ALLOCATE, MessageClass.REQUEST,
                       attributes=[(Attr.REQUESTED_TRANSPORT, 17)])  # fmt: skip
    challenge = await client.transact(allocate)
    assert challenge.get(Attr.ERROR_CODE).code == 401
    signed = Message(Method.ALLOCATE, MessageClass.REQUEST, attributes=[
        (Attr.REQUESTED_TRANSPORT, 17), (Attr.USERNAME, "alice"), (Attr.REALM, REALM),
        (Attr.NONCE, challenge.get(Attr.NONCE)),
    ])  # fmt: skip
    reply = await client.transact(signed, key=long_term_key("alice", REALM, "wonderland"))
    assert reply.cls == MessageClass.SUCCESS, reply.get(Attr.ERROR_CODE)
    assert dtls_server.server is not None and dtls_server.server.turn is not None
    [(transport, client_address, _)] = dtls_server.server.turn.allocations
    assert (transport, client_address) == ("dtls", sock.getsockname())
    # close_notify ends the session, and with it the allocation.
    client.conn.shutdown()
    await client.flush()
    with trio.fail_after(5):
        while dtls_server.server.turn.allocations:
            await trio.testing.wait_all_tasks_blocked(0.01)


async def test_client_hellos_without_a_valid_cookie_create_no_session(
    dtls_server: ServerInfo, socks: list[trio.socket.SocketType]
) -> None:
    server = dtls_server.dtls[0]
    counters = dtls_server.metrics.counters
    # A storm of ClientHellos from 200 sources that never return the cookie (as from
    # spoofed addresses): each gets a HelloVerifyRequest, none a session.
    hello = DtlsClient(await udp_socket(socks), server)
    with pytest.raises(SSL.WantReadError):
        hello.conn.do_handshake()
    [client_hello] = hello.written()
    senders = [await udp_socket(socks) for _ in range(200)]
    for sock in senders:
        await sock.sendto(client_hello, server)
    for sock in senders:  # every one answered, statelessly
        with trio.fail_after(5):
            answer, _ = await sock.recvfrom(2048)
        assert len(answer) < len(client_hello)  # no amplification
    assert sessions(dtls_server) == 0
    assert counters["dtls_hello_verify_sent"] == 200
    # The second ClientHello, with the cookie made for one address, replayed from
    # another address: no session either.
    first = DtlsClient(await udp_socket(socks), server)
    with pytest.raises(SSL.WantReadError):
        first.conn.do_handshake()
    await first.flush()
    await first.receive()  # the HelloVerifyRequest
    with pytest.raises(SSL.WantReadError):
        first.conn.do_handshake()
    [with_cookie] = first.written()
    thief = await udp_socket(socks)
    await thief.sendto(with_cookie, server)
    with trio.fail_after(5):
        await thief.recvfrom(2048)  # a fresh HelloVerifyRequest for the thief's address
    assert sessions(dtls_server) == 0
    assert counters["dtls_sessions_created"] == 0
    # From its own address the same ClientHello makes a session.
    await first.sock.sendto(with_cookie, server)
    await first.receive()
    assert sessions(dtls_server) == 1
    assert gauge(dtls_server, "natsrv_dtls_sessions") == 1


async def test_a_handshake_that_stalls_is_dropped(
    dtls_server: ServerInfo, socks: list[trio.socket.SocketType], autojump_clock: object
) -> None:
    client = DtlsClient(await udp_socket(socks), dtls_server.dtls[0])
    with pytest.raises(SSL.WantReadError):
        client.conn.do_handshake()
    await client.flush()
    await client.receive()  # HelloVerifyRequest
    with pytest.raises(SSL.WantReadError):
        client.conn.do_handshake()
    await client.flush()  # ClientHello with the cookie: a session, handshaking
    await client.receive()  # the server's flight; the client never answers
    assert sessions(dtls_server) == 1
    await trio.sleep(1.5)  # virtual time: tls-handshake-timeout is 1 s here
    assert sessions(dtls_server) == 0
    assert dtls_server.metrics.counters["dtls_handshake_timeouts"] == 1


async def test_dtls_can_be_turned_off(nursery: trio.Nursery, tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path)
    # On this process's own loopback address: no other process's UDP socket can sit on
    # the TLS port number there and swallow the probe instead of an ICMP unreachable.
    ip = private_loopback_ip()
    info = await start_server(nursery, turn_config(
        listen=((ip, 0),), relay_ip=ip, tls_port=0, tls_cert=str(tls.cert),
        tls_key=str(tls.key), dtls=False,
    ))  # fmt: skip
    assert info.tls and info.dtls == []
    with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as probe:
        await probe.bind((ip, 0))
        await probe.connect(info.tls[0])  # connected: the ICMP port unreachable is reported
        client = DtlsClient(probe, info.tls[0])
        with pytest.raises(SSL.WantReadError):
            client.conn.do_handshake()
        await client.flush()
        with pytest.raises(ConnectionRefusedError), trio.fail_after(5):
            await probe.recvfrom(2048)
