"""The relay data path seen by real clients and peers on loopback, on the native path
(natsrv._fastpath: recvmmsg batches, the core's forwarding table) and the pure-Python
one: relaying both ways, what /sessions counts, and expiry of permissions and
channels taking effect at once, with the server's clock moved by the test."""

from __future__ import annotations

import ipaddress
import logging
import select
import time
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from natsrv.net.serve import ServerInfo, serve
from natsrv.stun import Attr, Message, MessageClass, Method, decode_untrusted
from natsrv.stun.framing import decode_channel_data_untrusted, encode_channel_data
from tests.net.test_turn_server import TurnClient, turn_config, udp

pytestmark = pytest.mark.usefixtures("data_path")

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


@pytest.fixture
async def sockets() -> AsyncIterator[list[trio.socket.SocketType]]:
    made: list[trio.socket.SocketType] = []
    yield made
    for s in made:
        s.close()


class Clock:
    """The server's wall clock, moved by the test."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def until(condition: object) -> None:
    with trio.fail_after(2):
        while not condition():  # type: ignore[operator]
            await trio.testing.wait_all_tasks_blocked()


async def receive(sock: trio.socket.SocketType) -> bytes:
    with trio.fail_after(2):
        data, _ = await sock.recvfrom(65535)
    return data


def nothing_waiting(sock: trio.socket.SocketType) -> bool:
    return not select.select([sock.fileno()], [], [], 0)[0]


async def start(nursery: trio.Nursery, clock: Clock | None = None) -> ServerInfo:
    config = turn_config(allow_peer=LOOPBACK)
    if clock is None:
        info: ServerInfo = await nursery.start(serve, config)
    else:
        info = await nursery.start(lambda task_status: serve(config, clock=clock,
                                                             task_status=task_status))  # fmt: skip
    return info


async def test_server_says_once_which_data_path_runs(
    nursery: trio.Nursery, data_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="natsrv.fastpath"):
        await start(nursery)
    lines = [r.getMessage() for r in caplog.records if r.name == "natsrv.fastpath"]
    assert len(lines) == 1
    expected = "native" if data_path == "native" else "pure Python"
    assert lines[0].startswith(f"data path: {expected}")


async def test_relayed_packets_both_ways_are_counted_in_sessions(
    nursery: trio.Nursery, data_path: str, sockets: list[trio.socket.SocketType]
) -> None:
    info = await start(nursery)
    client_sock = await udp(sockets)
    client = TurnClient(client_sock, info.udp[0], "alice", "wonderland")
    relay = await client.allocate()
    peer = await udp(sockets)
    peer_addr = peer.getsockname()
    reply = await client.request(
        Method.CHANNEL_BIND, (Attr.CHANNEL_NUMBER, 0x4002), (Attr.XOR_PEER_ADDRESS, peer_addr)
    )
    assert reply.cls == MessageClass.SUCCESS
    count = 200
    for i in range(count):
        payload = i.to_bytes(2, "big") * 50  # 100 bytes
        await client_sock.sendto(encode_channel_data(0x4002, payload), info.udp[0])
        assert await receive(peer) == payload
        await peer.sendto(payload[::-1], relay)
        assert decode_channel_data_untrusted(await receive(client_sock)) == (0x4002, payload[::-1])
    assert info.server is not None and info.server.turn is not None
    turn = info.server.turn
    (session,) = turn.sessions(time.time())
    assert session["to_peer"] == {"packets": count, "bytes": 100 * count}
    assert session["to_client"] == {"packets": count, "bytes": 100 * count}
    (alloc,) = turn.allocations.values()
    if data_path == "native":  # the table carried them: the core saw none of these
        assert alloc.to_peer_packets == 0 and alloc.to_client_packets == 0
    else:
        assert alloc.to_peer_packets == count and alloc.to_client_packets == count
    assert turn.traffic() == (count, 100 * count, count, 100 * count)
    # Deleting the allocation keeps what it relayed in the totals.
    reply = await client.request(Method.REFRESH, (Attr.LIFETIME, 0))
    assert reply.cls == MessageClass.SUCCESS
    assert turn.traffic() == (count, 100 * count, count, 100 * count)
    await client_sock.sendto(encode_channel_data(0x4002, b"after delete"), info.udp[0])
    await until(lambda: info.metrics.counters["no_allocation_drops"] == 1)
    assert nothing_waiting(peer)


async def test_expiry_of_permissions_and_channels_takes_effect_at_once(
    nursery: trio.Nursery, sockets: list[trio.socket.SocketType]
) -> None:
    clock = Clock()
    info = await start(nursery, clock)
    counters = info.metrics.counters
    client_sock = await udp(sockets)
    client = TurnClient(client_sock, info.udp[0], "alice", "wonderland")
    reply = await client.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, 17),
                                 (Attr.LIFETIME, 3600))  # fmt: skip
    relay = reply.get(Attr.XOR_RELAYED_ADDRESS)
    peer = await udp(sockets)
    peer_addr = peer.getsockname()
    reply = await client.request(
        Method.CHANNEL_BIND, (Attr.CHANNEL_NUMBER, 0x4003), (Attr.XOR_PEER_ADDRESS, peer_addr)
    )
    assert reply.cls == MessageClass.SUCCESS

    async def both_ways(tag: bytes) -> None:
        await client_sock.sendto(encode_channel_data(0x4003, tag), info.udp[0])
        assert await receive(peer) == tag
        await peer.sendto(tag, relay)
        assert decode_channel_data_untrusted(await receive(client_sock)) == (0x4003, tag)

    await both_ways(b"bound")
    await both_ways(b"again")  # on the native path: from the table

    # The permission (300 s) has run out; the channel (600 s) has not.
    clock.now += 300.5
    await client_sock.sendto(encode_channel_data(0x4003, b"late"), info.udp[0])
    await until(lambda: counters["permission_drops"] == 1)
    await peer.sendto(b"late", relay)
    await until(lambda: counters["permission_drops"] == 2)
    assert nothing_waiting(peer) and nothing_waiting(client_sock)

    # A new permission: the channel carries data again.
    reply = await client.request(Method.CREATE_PERMISSION, (Attr.XOR_PEER_ADDRESS, peer_addr))
    assert reply.cls == MessageClass.SUCCESS
    await both_ways(b"permitted")
    await both_ways(b"permitted again")

    # The channel (600 s) has run out, the permission (renewed at 300.5 s) has not:
    # ChannelData from the client is dropped, and the peer's data comes as a Data
    # indication.
    clock.now += 299.75
    await client_sock.sendto(encode_channel_data(0x4003, b"unbound"), info.udp[0])
    await until(lambda: counters["channel_drops"] == 1)
    assert nothing_waiting(peer)
    for tag in (b"as an indication", b"and again"):
        await peer.sendto(tag, relay)
        indication = decode_untrusted(await receive(client_sock))
        assert (indication.method, indication.cls) == (Method.DATA, MessageClass.INDICATION)
        assert indication.get(Attr.DATA) == tag
        assert indication.get(Attr.XOR_PEER_ADDRESS) == peer_addr
    send = Message(Method.SEND, MessageClass.INDICATION, attributes=[
        (Attr.XOR_PEER_ADDRESS, peer_addr), (Attr.DATA, b"by Send")])  # fmt: skip
    await client_sock.sendto(send.encode(), info.udp[0])
    assert await receive(peer) == b"by Send"
    assert client.unexpected == []
