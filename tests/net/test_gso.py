"""UDP GSO on the native data path (natsrv/_fastpath.c): a run of datagrams from one
socket to one destination, all of one length but the last, leaves as one
``UDP_SEGMENT`` super-datagram that the kernel cuts back into those datagrams.

Seen from real clients and peers on loopback, with GSO on, with it turned off
(``NATSRV_NO_GSO=1``) and on the pure-Python path: every datagram of a burst arrives
once, with its own boundaries and bytes, in order, in both relay directions (ChannelData
and Data indications) and for Binding answers; runs broken by other sizes too; and the
``natsrv_udp_gso_*`` metrics show whether GSO carried them. A socket whose
super-datagrams the kernel refuses gets its datagrams sent one by one, none lost.

Each burst is sent with plain non-blocking ``sendto`` calls and no await in between, so
the server (in this trio run) sees the whole burst in one wake-up.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from collections.abc import AsyncIterator, Iterator

import pytest
import trio

from natsrv.metrics import Collector
from natsrv.net.serve import ServerInfo
from natsrv.stun import Attr, Message, MessageClass, Method, decode_untrusted
from natsrv.stun.framing import decode_channel_data_untrusted, encode_channel_data
from tests.conftest import PRIMARY_IP, ipv6_loopback, native_built, require, start_server
from tests.net.test_data_path import LOOPBACK
from tests.net.test_turn_server import TurnClient, turn_config

CHANNEL = 0x4001
#: A Linux socket option (asm-generic/socket.h): send IPv4 UDP without a checksum. The
#: kernel refuses GSO on such a socket (EINVAL), as it does on a path that cannot take it.
SO_NO_CHECK = 11


@pytest.fixture(params=["gso", "no-gso", "pure"])
def gso_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The native path with GSO, the native path with ``NATSRV_NO_GSO=1``, and the pure
    path: servers started after this read it."""
    if request.param == "pure":
        monkeypatch.setenv("NATSRV_PURE_PYTHON", "1")
        return "pure"
    require(native_built(), "natsrv._fastpath is not built (no C compiler or headers)")
    monkeypatch.delenv("NATSRV_PURE_PYTHON", raising=False)
    if request.param == "no-gso":
        monkeypatch.setenv("NATSRV_NO_GSO", "1")
    else:
        monkeypatch.delenv("NATSRV_NO_GSO", raising=False)
        from natsrv import _fastpath

        require(_fastpath.set_gso(True), "this kernel has no UDP_SEGMENT (Linux < 4.18)")
    return str(request.param)


class Endpoints:
    """Sockets of one test, each a plain socket (for bursts without an await) and its
    trio wrapper (for everything that waits)."""

    def __init__(self) -> None:
        self.made: list[trio.socket.SocketType] = []

    def udp(self, ip: str = PRIMARY_IP) -> tuple[socket.socket, trio.socket.SocketType]:
        plain = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET,
                              socket.SOCK_DGRAM)  # fmt: skip
        plain.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        plain.bind((ip, 0))
        plain.setblocking(False)
        wrapped = trio.socket.from_stdlib_socket(plain)
        self.made.append(wrapped)
        return plain, wrapped


@pytest.fixture
async def endpoints() -> AsyncIterator[Endpoints]:
    made = Endpoints()
    yield made
    for s in made.made:
        s.close()


def gso_figures(info: ServerInfo) -> dict[str, float]:
    """The ``natsrv_udp_gso_*`` counters as /metrics shows them."""
    out: dict[str, float] = {}
    for family in Collector(info.metrics, lambda: info.server).collect():
        if family.name.startswith("natsrv_udp_gso_"):
            (sample,) = family.samples
            out[family.name.removeprefix("natsrv_udp_gso_")] = sample.value
    assert set(out) == {"sends", "datagrams", "refusals"}
    return out


async def receive_all(sock: trio.socket.SocketType, count: int) -> list[bytes]:
    got: list[bytes] = []
    with trio.fail_after(5):
        while len(got) < count:
            data, _ = await sock.recvfrom(65535)
            got.append(data)
    return got


def nothing_more(sock: socket.socket) -> bool:
    try:
        sock.recv(65535)
    except BlockingIOError:
        return True
    return False


def payloads(sizes: list[int]) -> Iterator[bytes]:
    """Distinct payloads of these sizes: each names its index in every byte it can."""
    for i, size in enumerate(sizes):
        stamp = i.to_bytes(2, "big")
        yield (stamp * (size // 2 + 1))[:size]


async def channel_to(
    info: ServerInfo, endpoints: Endpoints
) -> tuple[socket.socket, TurnClient, tuple[str, int], socket.socket, trio.socket.SocketType]:
    """A client with an allocation and CHANNEL bound to a UDP peer: (client's plain
    socket, the client, the relayed address, peer's plain socket, peer's trio socket)."""
    client_plain, client_sock = endpoints.udp()
    client = TurnClient(client_sock, info.udp[0], "alice", "wonderland")
    relay = await client.allocate()
    peer_plain, peer = endpoints.udp()
    reply = await client.request(Method.CHANNEL_BIND, (Attr.CHANNEL_NUMBER, CHANNEL),
                                 (Attr.XOR_PEER_ADDRESS, peer.getsockname()))  # fmt: skip
    assert reply.cls == MessageClass.SUCCESS
    return client_plain, client, relay, peer_plain, peer


async def burst_to_peer(info: ServerInfo, client: socket.socket, peer: trio.socket.SocketType,
                        sizes: list[int]) -> None:  # fmt: skip
    """ChannelData of these payload sizes, all sent before the server runs: the peer
    receives each payload whole, alone and in order."""
    sent = list(payloads(sizes))
    for payload in sent:
        client.sendto(encode_channel_data(CHANNEL, payload), info.udp[0])
    assert await receive_all(peer, len(sent)) == sent


async def test_the_start_line_says_whether_gso_is_on(
    nursery: trio.Nursery, gso_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="natsrv.fastpath"):
        await start_server(nursery, turn_config())
    (line,) = [r.getMessage() for r in caplog.records if r.name == "natsrv.fastpath"]
    expected = {
        "gso": "UDP GSO for runs to one destination",
        "no-gso": "no UDP GSO: turned off by NATSRV_NO_GSO",
        "pure": "data path: pure Python",
    }[gso_path]
    assert expected in line


async def test_a_burst_to_one_peer_arrives_datagram_by_datagram(
    nursery: trio.Nursery, gso_path: str, endpoints: Endpoints
) -> None:
    info = await start_server(nursery, turn_config(allow_peer=LOOPBACK))
    client, _, _, peer_plain, peer = await channel_to(info, endpoints)
    count = 150  # more than one recvmmsg batch: several super-datagrams
    await burst_to_peer(info, client, peer, [100] * count)
    assert nothing_more(peer_plain)
    figures = gso_figures(info)
    if gso_path == "gso":  # a batch's run to the peer is one send (64 at most)
        assert figures["datagrams"] > count // 2 and 1 <= figures["sends"] <= count // 10
    else:
        assert figures["sends"] == figures["datagrams"] == 0
    assert figures["refusals"] == 0
    assert info.server is not None and info.server.turn is not None
    assert info.server.turn.traffic()[:2] == (count, 100 * count)


async def test_runs_broken_by_other_sizes_arrive_intact(
    nursery: trio.Nursery, gso_path: str, endpoints: Endpoints
) -> None:
    info = await start_server(nursery, turn_config(allow_peer=LOOPBACK))
    client, _, _, peer_plain, peer = await channel_to(info, endpoints)
    # Runs of one size; a shorter one ends a run (the kernel's rule allows it last),
    # a longer one starts a new one; an empty payload never rides in a run; sizes above
    # what a 1500-byte link carries go alone.
    sizes = ([100] * 5 + [60] + [100] * 3 + [1200] * 4 + [1] * 3 + [100, 100, 0, 100, 100]
             + [7] + [1472] * 3 + [1473] * 3 + [3000, 3000] + [500, 499, 500, 500, 2]
             + [64] * 64 + [65])  # fmt: skip
    await burst_to_peer(info, client, peer, sizes)
    assert nothing_more(peer_plain)
    figures = gso_figures(info)
    if gso_path == "gso":
        assert figures["sends"] >= 8 and figures["datagrams"] >= 2 * figures["sends"]
        assert figures["datagrams"] < len(sizes)  # the lone and oversized ones went plain
    else:
        assert figures["sends"] == figures["datagrams"] == 0


async def test_a_burst_from_the_peer_reaches_the_client_as_channel_data_and_indications(
    nursery: trio.Nursery, gso_path: str, endpoints: Endpoints
) -> None:
    info = await start_server(nursery, turn_config(allow_peer=LOOPBACK))
    client_plain, client, relay, peer, _ = await channel_to(info, endpoints)
    count = 100
    sent = list(payloads([200] * count))
    for payload in sent:
        peer.sendto(payload, relay)
    got = await receive_all(client.sock, count)
    assert [decode_channel_data_untrusted(data) for data in got] == [
        (CHANNEL, payload) for payload in sent
    ]
    channel_figures = gso_figures(info)

    # A second peer with a permission and no channel: Data indications, each with its
    # own transaction ID, all of one length.
    other_plain, other = endpoints.udp()
    reply = await client.request(Method.CREATE_PERMISSION,
                                 (Attr.XOR_PEER_ADDRESS, other.getsockname()))  # fmt: skip
    assert reply.cls == MessageClass.SUCCESS
    await other.sendto(b"first", relay)  # (the core routes this one and fills the table)
    (first,) = await receive_all(client.sock, 1)
    assert decode_untrusted(first).get(Attr.DATA) == b"first"
    sizes = [300] * 40 + [299] + [300] * 20 + [2000, 2000]
    sent = list(payloads(sizes))
    for payload in sent:
        other_plain.sendto(payload, relay)
    got = await receive_all(client.sock, len(sent))
    indications = [decode_untrusted(data) for data in got]
    assert all((m.method, m.cls) == (Method.DATA, MessageClass.INDICATION)
               for m in indications)  # fmt: skip
    assert [m.get(Attr.DATA) for m in indications] == sent
    assert {m.get(Attr.XOR_PEER_ADDRESS) for m in indications} == {other.getsockname()}
    assert len({m.transaction_id for m in indications}) == len(sent)
    assert nothing_more(client_plain)
    figures = gso_figures(info)
    if gso_path == "gso":
        assert channel_figures["datagrams"] > count // 2
        assert figures["datagrams"] - channel_figures["datagrams"] > (40 + 1 + 20) // 2
    else:
        assert figures["sends"] == figures["datagrams"] == 0
    assert client.unexpected == []


async def test_bursts_over_ipv6_arrive_datagram_by_datagram(
    nursery: trio.Nursery, gso_path: str, endpoints: Endpoints
) -> None:
    require(ipv6_loopback(), "no IPv6 loopback (::1) on this host")
    info = await start_server(nursery, turn_config(
        relay_ip=("::1",), allow_peer=(ipaddress.ip_network("::1/128"),)))  # fmt: skip
    client_plain, client_sock = endpoints.udp()
    client = TurnClient(client_sock, info.udp[0], "alice", "wonderland")
    reply = await client.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, 17),
                                 (Attr.REQUESTED_ADDRESS_FAMILY, 0x02))  # fmt: skip
    assert reply.cls == MessageClass.SUCCESS, reply.get(Attr.ERROR_CODE)
    relay = reply.get(Attr.XOR_RELAYED_ADDRESS)
    peer_plain, peer = endpoints.udp("::1")
    peer_addr = peer.getsockname()[:2]
    reply = await client.request(Method.CHANNEL_BIND, (Attr.CHANNEL_NUMBER, CHANNEL),
                                 (Attr.XOR_PEER_ADDRESS, peer_addr))  # fmt: skip
    assert reply.cls == MessageClass.SUCCESS
    # 1452 bytes is the largest IPv6 segment GSO takes; 1460 go alone.
    sizes = [100] * 70 + [1452] * 3 + [1460] * 3 + [50]
    await burst_to_peer(info, client_plain, peer, sizes)
    sent = list(payloads([300] * 50))
    for payload in sent:
        peer_plain.sendto(payload, relay)
    got = await receive_all(client_sock, len(sent))
    assert [decode_channel_data_untrusted(data) for data in got] == [
        (CHANNEL, payload) for payload in sent
    ]
    assert nothing_more(peer_plain) and nothing_more(client_plain)
    figures = gso_figures(info)
    if gso_path == "gso":
        assert figures["datagrams"] > (70 + 3 + 50) // 2
        assert figures["datagrams"] <= 70 + 3 + 50 and figures["refusals"] == 0
    else:
        assert figures["sends"] == figures["datagrams"] == 0


async def test_binding_answers_to_one_client_keep_their_boundaries(
    nursery: trio.Nursery, gso_path: str, endpoints: Endpoints
) -> None:
    info = await start_server(nursery, turn_config())
    plain, sock = endpoints.udp()
    requests = [Message(Method.BINDING, MessageClass.REQUEST) for _ in range(100)]
    for request in requests:
        plain.sendto(request.encode(fingerprint=True), info.udp[0])
    answers = [decode_untrusted(data) for data in await receive_all(sock, len(requests))]
    assert [a.transaction_id for a in answers] == [r.transaction_id for r in requests]
    assert all(a.cls == MessageClass.SUCCESS for a in answers)
    assert {a.get(Attr.XOR_MAPPED_ADDRESS) for a in answers} == {sock.getsockname()}
    figures = gso_figures(info)
    assert (figures["datagrams"] > len(requests) // 2) == (gso_path == "gso")


def socket_fd(address: tuple[str, int]) -> int:
    """The descriptor of this process's UDP socket bound to ``address``."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            probe = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        with probe:
            if probe.type == socket.SOCK_DGRAM and probe.getsockname() == address:
                return fd
    raise AssertionError(f"no UDP socket bound to {address}")


async def test_a_socket_that_refuses_gso_sends_one_by_one_and_loses_nothing(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, endpoints: Endpoints
) -> None:
    require(native_built(), "natsrv._fastpath is not built (no C compiler or headers)")
    from natsrv import _fastpath

    monkeypatch.delenv("NATSRV_PURE_PYTHON", raising=False)
    monkeypatch.delenv("NATSRV_NO_GSO", raising=False)
    require(_fastpath.set_gso(True), "this kernel has no UDP_SEGMENT (Linux < 4.18)")
    info = await start_server(nursery, turn_config(allow_peer=LOOPBACK))
    client, _, relay, peer_plain, peer = await channel_to(info, endpoints)
    fd = socket_fd(relay)
    with socket.socket(fileno=os.dup(fd)) as same:  # the relay socket: refuses GSO now
        same.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
    assert _fastpath.gso_enabled(fd)
    await burst_to_peer(info, client, peer, [100] * 50)
    assert gso_figures(info) == {"sends": 0, "datagrams": 0, "refusals": 1}
    assert not _fastpath.gso_enabled(fd)
    await burst_to_peer(info, client, peer, [100] * 50)  # plain from the start now
    assert gso_figures(info) == {"sends": 0, "datagrams": 0, "refusals": 1}
    assert nothing_more(peer_plain)
    # Another allocation's relay socket still uses GSO.
    client2, _, _, _, peer2 = await channel_to(info, endpoints)
    await burst_to_peer(info, client2, peer2, [100] * 50)
    figures = gso_figures(info)
    assert figures["sends"] >= 1 and figures["datagrams"] > 25 and figures["refusals"] == 1
