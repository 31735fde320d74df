"""RFC 6062 TCP allocations through a real server on loopback, driven by a small TCP
TURN client built on natsrv's own codec: Connect (403, 446, 447, success), the
ConnectionBind deadline, inbound ConnectionAttempt, raw relaying both ways, and
back-pressure against a peer (or client) that does not read."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing

from natsrv.metrics import Collector
from natsrv.net.serve import ServerInfo
from natsrv.stun import Attr, Message, MessageClass, Method, StreamFramer, decode_untrusted
from natsrv.stun.integrity import long_term_key
from tests.conftest import PRIMARY_IP, free_port, start_server
from tests.net.test_turn_server import REALM, TurnClient, code_of, turn_config

Address = tuple[str, int]
TCP = 6
#: Every stream a test opens, closed after it.
OPENED: list[trio.abc.AsyncResource] = []


def track(resource: trio.SocketStream) -> trio.SocketStream:
    OPENED.append(resource)
    return resource


@pytest.fixture(autouse=True)
async def _close_streams() -> AsyncIterator[None]:
    yield
    while OPENED:
        await trio.aclose_forcefully(OPENED.pop())


class StreamTurnClient:
    """A TURN client on one TCP connection: requests with the 401 dance, and the
    indications that came in between."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.framer = StreamFramer()
        self.nonce: str | None = None
        self.key = long_term_key("alice", REALM, "wonderland")
        self.indications: list[Message] = []

    @classmethod
    async def open(cls, server: Address, local_ip: str | None = None) -> StreamTurnClient:
        return cls(track(await trio.open_tcp_stream(*server, local_address=local_ip)))

    async def next_message(self) -> Message:
        with trio.fail_after(5):
            while True:
                frames = self.framer.feed(await self.stream.receive_some(65536))
                if frames:
                    assert len(frames) == 1, frames
                    return decode_untrusted(frames[0])

    async def request(self, method: int, *attrs: tuple[int, object]) -> Message:
        for _ in range(3):
            msg = Message(method, MessageClass.REQUEST, attributes=list(attrs))
            if self.nonce is not None:
                msg.attributes += [
                    (Attr.USERNAME, "alice"), (Attr.REALM, REALM), (Attr.NONCE, self.nonce)
                ]
            await self.stream.send_all(
                msg.encode(key=self.key if self.nonce else None, fingerprint=True)
            )
            while True:
                reply = await self.next_message()
                if reply.transaction_id == msg.transaction_id:
                    break
                self.indications.append(reply)
            if code_of(reply) in (401, 438) and self.nonce != reply.get(Attr.NONCE):
                self.nonce = reply.get(Attr.NONCE)
                continue
            return reply
        return reply

    async def allocate_tcp(self) -> Address:
        reply = await self.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, TCP))
        assert reply.cls == MessageClass.SUCCESS, reply.get(Attr.ERROR_CODE)
        relay: Address = reply.get(Attr.XOR_RELAYED_ADDRESS)
        return relay


async def bind_data_connection(
    server: Address, cid: int, local_ip: str | None = None
) -> tuple[Message, trio.SocketStream]:
    """A new connection to the server with ConnectionBind for ``cid``."""
    data = await StreamTurnClient.open(server, local_ip)
    reply = await data.request(Method.CONNECTION_BIND, (Attr.CONNECTION_ID, cid))
    assert data.framer.pending == 0
    return reply, data.stream


@pytest.fixture
async def server(nursery: trio.Nursery) -> AsyncIterator[ServerInfo]:
    info = await start_server(nursery, turn_config(
        allow_peer=("127.0.0.1/32",), tcp_relay_bind_timeout=0.5,
        tcp_relay_connect_timeout=2.0,
    ))  # fmt: skip
    yield info


async def peer_listener(rcvbuf: int | None = None) -> trio.SocketListener:
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await sock.bind((PRIMARY_IP, 0))
    sock.listen(8)
    listener = trio.SocketListener(sock)
    OPENED.append(listener)
    return listener


def gauge(info: ServerInfo, name: str) -> float:
    """The value of a gauge as /metrics shows it."""
    for family in Collector(info.metrics, lambda: info.server).collect():
        if family.name == name:
            return float(family.samples[0].value)
    raise AssertionError(f"no {name}")


async def receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    out = bytearray()
    with trio.fail_after(10):
        while len(out) < size:
            chunk = await stream.receive_some(size - len(out))
            assert chunk, f"closed after {len(out)} of {size} bytes"
            out += chunk
    return bytes(out)


async def closed_by_server(stream: trio.abc.ReceiveStream) -> bool:
    """Whether the other end closes ``stream`` (EOF or reset) within 5 s, no data first."""
    with trio.fail_after(5):
        try:
            return await stream.receive_some(100) == b""
        except trio.BrokenResourceError:
            return True


async def test_tcp_allocation_only_on_streams(server: ServerInfo) -> None:
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    with sock:
        await sock.bind((PRIMARY_IP, 0))
        udp = TurnClient(sock, server.udp[0], "alice", "wonderland")
        reply = await udp.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, TCP))
        assert code_of(reply) == 442
    client = await StreamTurnClient.open(server.tcp[0])
    reply = await client.request(
        Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, TCP), (Attr.EVEN_PORT, False)
    )
    assert code_of(reply) == 400
    relay = await client.allocate_tcp()
    # The relayed address is a listening TCP socket; a peer without a permission is
    # closed at once and the client hears nothing of it.
    stream = track(await trio.open_tcp_stream(*relay))
    assert await closed_by_server(stream)
    assert client.indications == []
    reply = await client.request(Method.CHANNEL_BIND, (Attr.CHANNEL_NUMBER, 0x4000),
                                 (Attr.XOR_PEER_ADDRESS, (PRIMARY_IP, 9)))  # fmt: skip
    assert code_of(reply) == 400


async def test_connect_bind_and_relay_both_ways(server: ServerInfo) -> None:
    listener = await peer_listener()
    peer_address = listener.socket.getsockname()
    client = await StreamTurnClient.open(server.tcp[0])
    relay = await client.allocate_tcp()
    reply = await client.request(Method.CONNECT, (Attr.XOR_PEER_ADDRESS, peer_address))
    assert reply.cls == MessageClass.SUCCESS, reply.get(Attr.ERROR_CODE)
    cid = reply.get(Attr.CONNECTION_ID)
    with trio.fail_after(5):
        peer = track(await listener.accept())
    # RFC 6062 §5.2: the connection comes from the relayed address.
    assert peer.socket.getpeername() == relay
    again = await client.request(Method.CONNECT, (Attr.XOR_PEER_ADDRESS, peer_address))
    assert code_of(again) == 446
    answer, data = await bind_data_connection(server.tcp[0], cid)
    assert answer.cls == MessageClass.SUCCESS, answer.get(Attr.ERROR_CODE)
    assert gauge(server, "natsrv_tcp_peer_connections") == 1
    # Raw bytes, no framing, both ways; STUN-looking bytes are just bytes now.
    await data.send_all(b"hello peer")
    assert await receive_exactly(peer, 10) == b"hello peer"
    stun_like = Message(Method.BINDING, MessageClass.REQUEST).encode()
    await peer.send_all(b"hi client " + stun_like)
    assert await receive_exactly(data, 10 + len(stun_like)) == b"hi client " + stun_like
    # A second ConnectionBind for the same id is refused.
    late, _ = await bind_data_connection(server.tcp[0], cid)
    assert code_of(late) == 400
    # The allocation ends: its peer and data connections go with it.
    reply = await client.request(Method.REFRESH, (Attr.LIFETIME, 0))
    assert reply.cls == MessageClass.SUCCESS
    assert await closed_by_server(peer)
    assert await closed_by_server(data)
    assert gauge(server, "natsrv_tcp_peer_connections") == 0


async def test_connect_refusals_403_and_447(server: ServerInfo) -> None:
    client = await StreamTurnClient.open(server.tcp[0])
    await client.allocate_tcp()
    # The peer policy: only 127.0.0.1 is allowed here.
    reply = await client.request(Method.CONNECT, (Attr.XOR_PEER_ADDRESS, ("127.0.0.3", 80)))
    assert code_of(reply) == 403
    # Nothing listens on this port: the connection is refused, 447.
    closed = (PRIMARY_IP, free_port(kind=socket.SOCK_STREAM))
    reply = await client.request(Method.CONNECT, (Attr.XOR_PEER_ADDRESS, closed))
    assert code_of(reply) == 447
    # A Connect on a UDP allocation is a bad request.
    udp_client = await StreamTurnClient.open(server.tcp[0])
    await udp_client.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, 17))
    reply = await udp_client.request(Method.CONNECT, (Attr.XOR_PEER_ADDRESS, closed))
    assert code_of(reply) == 400


async def test_connection_bind_that_never_comes_closes_the_peer(server: ServerInfo) -> None:
    # The server here waits 0.5 s (tcp-relay-bind-timeout) instead of RFC 6062's 30 s.
    listener = await peer_listener()
    client = await StreamTurnClient.open(server.tcp[0])
    await client.allocate_tcp()
    reply = await client.request(
        Method.CONNECT, (Attr.XOR_PEER_ADDRESS, listener.socket.getsockname())
    )
    cid = reply.get(Attr.CONNECTION_ID)
    with trio.fail_after(5):
        peer = track(await listener.accept())
    assert await closed_by_server(peer)
    assert server.metrics.counters["tcp_bind_timeouts"] == 1
    late, _ = await bind_data_connection(server.tcp[0], cid)
    assert code_of(late) == 400


async def test_inbound_connection_attempt(server: ServerInfo) -> None:
    client = await StreamTurnClient.open(server.tcp[0])
    relay = await client.allocate_tcp()
    reply = await client.request(Method.CREATE_PERMISSION, (Attr.XOR_PEER_ADDRESS, (PRIMARY_IP, 0)))
    assert reply.cls == MessageClass.SUCCESS
    peer = track(await trio.open_tcp_stream(*relay))
    await peer.send_all(b"early bytes")  # held until the client binds
    attempt = await client.next_message()
    assert (attempt.method, attempt.cls) == (Method.CONNECTION_ATTEMPT, MessageClass.INDICATION)
    assert attempt.get(Attr.XOR_PEER_ADDRESS) == peer.socket.getsockname()
    answer, data = await bind_data_connection(server.tcp[0], attempt.get(Attr.CONNECTION_ID))
    assert answer.cls == MessageClass.SUCCESS
    assert await receive_exactly(data, 11) == b"early bytes"
    await data.send_all(b"welcome")
    assert await receive_exactly(peer, 7) == b"welcome"
    # The peer closes: the client's data connection ends too (after what was sent).
    await peer.aclose()
    assert await closed_by_server(data)


def rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


#: What a client tries to push through a peer that does not read (a server that
#: buffered it all would hold this much).
PUSH = 32 * 1024 * 1024


async def push(stream: trio.abc.SendStream, sent: list[int]) -> None:
    block = b"\xa5" * 65536
    while sent[0] < PUSH:
        await stream.send_all(block)
        sent[0] += len(block)


async def drain(stream: trio.abc.ReceiveStream, size: int) -> None:
    got = 0
    with trio.fail_after(30):
        while got < size:
            chunk = await stream.receive_some(1 << 20)
            assert chunk, f"closed after {got} of {size} bytes"
            got += len(chunk)


@pytest.mark.parametrize("slow", ["peer", "client"])
async def test_a_side_that_does_not_read_stops_the_other(
    server: ServerInfo, nursery: trio.Nursery, slow: str
) -> None:
    listener = await peer_listener(rcvbuf=65536)
    client = await StreamTurnClient.open(server.tcp[0])
    await client.allocate_tcp()
    reply = await client.request(
        Method.CONNECT, (Attr.XOR_PEER_ADDRESS, listener.socket.getsockname())
    )
    with trio.fail_after(5):
        peer = track(await listener.accept())
    answer, data = await bind_data_connection(server.tcp[0], reply.get(Attr.CONNECTION_ID))
    assert answer.cls == MessageClass.SUCCESS
    sender, reader = (data, peer) if slow == "peer" else (peer, data)
    before = rss_bytes()
    sent = [0]
    nursery.start_soon(push, sender, sent)
    # Everything stalls once the buffers on the way are full: the server stops reading
    # from the sender because its write to the side that does not read is blocked.
    await trio.testing.wait_all_tasks_blocked(cushion=0.2)
    stalled_at = sent[0]
    grown = rss_bytes() - before
    assert stalled_at < PUSH // 2, f"the server took {stalled_at} bytes"
    assert grown < 16 * 1024 * 1024, f"memory grew by {grown} bytes"
    # The slow side reads: everything arrives, and the sender finishes.
    await drain(reader, PUSH)
    assert sent[0] == PUSH
    print(f"stalled after {stalled_at / 2**20:.1f} MiB, RSS +{grown / 2**20:.1f} MiB")


async def test_a_data_connection_reaches_the_worker_of_its_allocation(tmp_path: Path) -> None:
    """With ``--workers 2`` the kernel hands every connection of one client address to
    one worker (a BPF program on each SO_REUSEPORT group), so the ConnectionBind on a
    new connection finds the allocation its control connection made: from eight source
    addresses, both workers' shares, every time (hashing 4-tuples would send about half
    of them to the other worker)."""
    from natsrv.net.steering import worker_of
    from tests.net.test_workers import Process

    process = Process("--listen", f"{PRIMARY_IP}:0", "--workers", "2", "--relay-ip",
                      PRIMARY_IP, "--realm", REALM, "--user", "alice:wonderland",
                      "--allow-peer", "127.0.0.1/32", cwd=tmp_path)  # fmt: skip
    try:
        found = process.wait_for(r"listening on tcp (\S+):(\d+)")
        server = (found.group(1), int(found.group(2)))
        listener = await peer_listener()
        sources = [f"127.0.5.{i}" for i in range(1, 9)]
        assert {worker_of(ip, 2) for ip in sources} == {0, 1}
        for ip in sources:
            client = await StreamTurnClient.open(server, ip)
            await client.allocate_tcp()
            reply = await client.request(Method.CONNECT,
                                         (Attr.XOR_PEER_ADDRESS, listener.socket.getsockname()))
            assert reply.cls == MessageClass.SUCCESS, reply.get(Attr.ERROR_CODE)
            with trio.fail_after(5):
                peer = track(await listener.accept())
            answer, data = await bind_data_connection(server, reply.get(Attr.CONNECTION_ID), ip)
            assert answer.cls == MessageClass.SUCCESS, (ip, answer.get(Attr.ERROR_CODE))
            await data.send_all(b"via " + ip.encode())
            assert await receive_exactly(peer, 4 + len(ip)) == b"via " + ip.encode()
    finally:
        process.close()
