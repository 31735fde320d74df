"""natsrv's TURN relay over real sockets on loopback, driven by a minimal client built
on natsrv's own codec: authentication, relaying both ways, and the peer policy applied
through real allocations."""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import AsyncIterator
from functools import partial

import pytest
import trio
import trio.testing

from natsrv.config import Config
from natsrv.core.credentials import rest_credentials
from natsrv.net.serve import ServerInfo, serve
from natsrv.stun import (
    Attr,
    Message,
    MessageClass,
    Method,
    StreamFramer,
    decode_channel_data_untrusted,
    decode_untrusted,
    encode_channel_data,
)
from natsrv.stun.integrity import long_term_key
from tests.conftest import PRIMARY_IP, PRIVATE_PORTS, private_loopback_ip, start_server

#: Every test here runs on the native and on the pure-Python data path.
pytestmark = pytest.mark.usefixtures("data_path")

Address = tuple[str, int]
REALM = "natsrv.test"


def turn_config(**overrides: object) -> Config:
    base: dict[str, object] = {
        "listen": ((PRIMARY_IP, 0),),
        "realm": REALM,
        "users": (("alice", "wonderland"),),
        "auth_secret": ("rest-secret",),
        "relay_ip": PRIMARY_IP,
        "allow_peer": (),
    }
    base.update(overrides)
    return Config(**base).validate()  # type: ignore[arg-type]


class TurnClient:
    """Just enough TURN client to drive the server: UDP, long-term credentials."""

    def __init__(self, sock: trio.socket.SocketType, server: Address, user: str, password: str):
        self.sock, self.server = sock, server
        self.user, self.password = user, password
        self.nonce: str | None = None
        self.key = long_term_key(user, REALM, password)
        #: What came while waiting for a reply and was not it (indications, ChannelData).
        self.unexpected: list[bytes] = []

    async def transact(self, msg: Message, *, sign: bool = True) -> Message:
        if sign and self.nonce is not None:
            msg.attributes += [
                (Attr.USERNAME, self.user), (Attr.REALM, REALM), (Attr.NONCE, self.nonce)
            ]
        data = msg.encode(key=self.key if sign and self.nonce else None, fingerprint=True)
        await self.sock.sendto(data, self.server)
        with trio.fail_after(2):
            while True:
                raw, _ = await self.sock.recvfrom(65535)
                if raw[0] < 0x40:
                    reply = decode_untrusted(raw)
                    if reply.transaction_id == msg.transaction_id:
                        return reply
                self.unexpected.append(raw)

    async def request(self, method: int, *attrs: tuple[int, object]) -> Message:
        """A request with the 401/438 dance: sign with the server's nonce, retry once."""
        for _ in range(3):
            msg = Message(method, MessageClass.REQUEST, attributes=list(attrs))
            reply = await self.transact(msg)
            code = reply.get(Attr.ERROR_CODE)
            if reply.cls == MessageClass.ERROR and code.code in (401, 438) and (
                self.nonce != reply.get(Attr.NONCE)
            ):
                self.nonce = reply.get(Attr.NONCE)
                continue
            return reply
        return reply

    async def allocate(self) -> Address:
        reply = await self.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, 17))
        assert reply.cls == MessageClass.SUCCESS, reply.get(Attr.ERROR_CODE)
        return reply.get(Attr.XOR_RELAYED_ADDRESS)


def code_of(reply: Message) -> int | None:
    value = reply.get(Attr.ERROR_CODE)
    return None if value is None else value.code


@pytest.fixture
async def sockets() -> AsyncIterator[list[trio.socket.SocketType]]:
    made: list[trio.socket.SocketType] = []
    yield made
    for s in made:
        s.close()


async def udp(sockets: list[trio.socket.SocketType]) -> trio.socket.SocketType:
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    sockets.append(sock)
    await sock.bind((PRIMARY_IP, 0))
    return sock


async def test_unauthenticated_allocate_gets_401_with_realm_and_nonce(
    nursery: trio.Nursery, sockets: list[trio.socket.SocketType]
) -> None:
    info: ServerInfo = await start_server(nursery, turn_config())
    client = TurnClient(await udp(sockets), info.udp[0], "alice", "wonderland")
    reply = await client.transact(
        Message(Method.ALLOCATE, MessageClass.REQUEST, attributes=[(Attr.REQUESTED_TRANSPORT, 17)]),
        sign=False,
    )
    assert code_of(reply) == 401
    assert reply.get(Attr.REALM) == REALM and reply.get(Attr.NONCE)


async def test_wrong_password_gets_401(
    nursery: trio.Nursery, sockets: list[trio.socket.SocketType]
) -> None:
    info = await start_server(nursery, turn_config())
    client = TurnClient(await udp(sockets), info.udp[0], "alice", "not-the-password")
    reply = await client.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, 17))
    assert code_of(reply) == 401


async def test_rest_credentials_and_expiry(
    nursery: trio.Nursery, sockets: list[trio.socket.SocketType]
) -> None:
    info = await start_server(nursery, turn_config())
    user, password = rest_credentials("rest-secret", "bob", 600, time.time())
    ok = TurnClient(await udp(sockets), info.udp[0], user, password)
    await ok.allocate()
    old_user, old_password = rest_credentials("rest-secret", "bob", 600, time.time() - 3600)
    expired = TurnClient(await udp(sockets), info.udp[0], old_user, old_password)
    reply = await expired.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, 17))
    assert code_of(reply) == 401


async def test_rest_secrets_rotate_without_dropping_a_call(
    nursery: trio.Nursery, sockets: list[trio.socket.SocketType]
) -> None:
    """``auth-secret = ["new", "old"]``: credentials signed with either allocate; one
    signed with a secret that is no longer listed does not."""
    info = await start_server(nursery, turn_config(auth_secret=("new-secret", "rest-secret")))
    for secret in ("new-secret", "rest-secret"):
        user, password = rest_credentials(secret, "bob", 600, time.time())
        await TurnClient(await udp(sockets), info.udp[0], user, password).allocate()
    user, password = rest_credentials("retired-secret", "bob", 600, time.time())
    stale = TurnClient(await udp(sockets), info.udp[0], user, password)
    reply = await stale.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, 17))
    assert code_of(reply) == 401


async def test_stale_nonce_gets_438_and_the_retry_succeeds(
    nursery: trio.Nursery, sockets: list[trio.socket.SocketType], monkeypatch: pytest.MonkeyPatch
) -> None:
    skew = [0.0]  # the server's wall clock runs this far ahead

    def clock() -> float:
        return time.time() + skew[0]

    info = await nursery.start(partial(serve, clock=clock), turn_config(nonce_lifetime=60))
    client = TurnClient(await udp(sockets), info.udp[0], "alice", "wonderland")
    await client.allocate()
    first_nonce = client.nonce
    skew[0] = 120.0  # two minutes on: the nonce is stale
    reply = await client.transact(
        Message(Method.REFRESH, MessageClass.REQUEST, attributes=[(Attr.LIFETIME, 600)])
    )
    assert code_of(reply) == 438
    assert reply.get(Attr.NONCE) not in (None, first_nonce)
    refreshed = await client.request(Method.REFRESH, (Attr.LIFETIME, 600))
    assert refreshed.cls == MessageClass.SUCCESS


async def test_relay_both_ways_with_send_data_and_channels(
    nursery: trio.Nursery, sockets: list[trio.socket.SocketType]
) -> None:
    loopback = ipaddress.ip_network("127.0.0.0/8")
    info = await start_server(nursery, turn_config(allow_peer=(loopback,)))
    client_sock = await udp(sockets)
    client = TurnClient(client_sock, info.udp[0], "alice", "wonderland")
    relay = await client.allocate()
    peer = await udp(sockets)
    peer_addr = peer.getsockname()

    # Data from a peer without a permission is dropped: then the permission lets it in.
    # (Wait until the server has dropped it: it reads relay sockets in a task of their
    # own, which might otherwise get to it only after the permission exists.)
    counters = info.metrics.counters
    await peer.sendto(b"too early", relay)
    with trio.fail_after(2):
        while counters["permission_drops"] == 0:
            await trio.testing.wait_all_tasks_blocked()
    assert counters["permission_drops"] == 1
    reply = await client.request(Method.CREATE_PERMISSION, (Attr.XOR_PEER_ADDRESS, peer_addr))
    assert reply.cls == MessageClass.SUCCESS

    # Send indication -> peer.
    send = Message(Method.SEND, MessageClass.INDICATION, attributes=[
        (Attr.XOR_PEER_ADDRESS, peer_addr), (Attr.DATA, b"hello peer")])
    await client_sock.sendto(send.encode(), info.udp[0])
    with trio.fail_after(2):
        data, src = await peer.recvfrom(2048)
    assert (data, src) == (b"hello peer", relay)

    # Peer -> Data indication (the early datagram never arrives).
    await peer.sendto(b"hello client", relay)
    with trio.fail_after(2):
        raw, _ = await client_sock.recvfrom(2048)
    indication = decode_untrusted(raw)
    assert (indication.method, indication.cls) == (Method.DATA, MessageClass.INDICATION)
    assert indication.get(Attr.DATA) == b"hello client"
    assert indication.get(Attr.XOR_PEER_ADDRESS) == peer_addr

    # ChannelBind, then ChannelData both ways.
    reply = await client.request(
        Method.CHANNEL_BIND, (Attr.CHANNEL_NUMBER, 0x4001), (Attr.XOR_PEER_ADDRESS, peer_addr)
    )
    assert reply.cls == MessageClass.SUCCESS
    await client_sock.sendto(encode_channel_data(0x4001, b"via channel"), info.udp[0])
    with trio.fail_after(2):
        data, src = await peer.recvfrom(2048)
    assert (data, src) == (b"via channel", relay)
    await peer.sendto(b"back on channel", relay)
    with trio.fail_after(2):
        raw, _ = await client_sock.recvfrom(2048)
    assert decode_channel_data_untrusted(raw) == (0x4001, b"back on channel")
    assert client.unexpected == []  # the early datagram never arrived, in any form


DENIED_PEERS = [
    "127.0.0.1", "0.0.0.0", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1",
    "169.254.169.254", "224.0.0.1", "240.0.0.1", "255.255.255.255",
    "::1", "::", "fe80::1", "fc00::1", "fec0::1", "ff02::1",
    "::ffff:127.0.0.1", "::ffff:0.0.0.0", "::ffff:169.254.169.254", "::127.0.0.1",
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "2002:7f00:1::1", "2002:a00:1::1",
]


async def test_peer_policy_through_real_allocations(
    nursery: trio.Nursery, sockets: list[trio.socket.SocketType]
) -> None:
    info = await start_server(nursery, turn_config(
        allow_peer=(ipaddress.ip_network("10.9.0.0/16"), ipaddress.ip_network("198.51.100.0/24")),
    ))
    client = TurnClient(await udp(sockets), info.udp[0], "alice", "wonderland")
    await client.allocate()
    for peer in DENIED_PEERS:
        # On this IPv4 relay, peers in IPv6 encoding are refused for their family (443)
        # or by the policy (403); plain IPv4 ones by the policy. Never a success.
        expected = (403,) if ":" not in peer else (403, 443)
        reply = await client.request(Method.CREATE_PERMISSION, (Attr.XOR_PEER_ADDRESS, (peer, 9)))
        assert code_of(reply) in expected, peer
        reply = await client.request(
            Method.CHANNEL_BIND, (Attr.CHANNEL_NUMBER, 0x4002), (Attr.XOR_PEER_ADDRESS, (peer, 9))
        )
        assert code_of(reply) in expected, peer
    # A mix of allowed and denied peers is refused as a whole.
    reply = await client.request(
        Method.CREATE_PERMISSION,
        (Attr.XOR_PEER_ADDRESS, ("198.51.100.7", 9)), (Attr.XOR_PEER_ADDRESS, ("127.0.0.1", 9)),
    )
    assert code_of(reply) == 403
    # Documentation ranges are not globally reachable: denied unless allowed.
    reply = await client.request(
        Method.CREATE_PERMISSION, (Attr.XOR_PEER_ADDRESS, ("203.0.113.5", 9))
    )
    assert code_of(reply) == 403
    # The operator's allow-ranges get through.
    for peer in ("198.51.100.7", "10.9.1.1"):
        reply = await client.request(Method.CREATE_PERMISSION, (Attr.XOR_PEER_ADDRESS, (peer, 9)))
        assert reply.cls == MessageClass.SUCCESS, peer
    # The policy applies to Send too: nothing reaches a denied peer.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as victim:
        victim.bind((PRIMARY_IP, 0))
        victim.setblocking(False)
        send = Message(Method.SEND, MessageClass.INDICATION, attributes=[
            (Attr.XOR_PEER_ADDRESS, victim.getsockname()), (Attr.DATA, b"attack")])
        await client.sock.sendto(send.encode(), info.udp[0])
        # A round trip after it: the server reads one socket in order, so the Send
        # indication has been handled (and relayed, had it been allowed) by then.
        probe = await client.request(Method.REFRESH, (Attr.LIFETIME, 600))
        assert probe.cls == MessageClass.SUCCESS
        with pytest.raises(BlockingIOError):
            victim.recv(100)  # nothing arrived


@pytest.mark.parametrize(
    "port",
    [
        pytest.param(PRIVATE_PORTS[0], id="configured-port"),
        # Regression: with port 0 the policy once kept the configured port, not the
        # bound one, and the server relayed into its own listener.
        pytest.param(0, id="port-0"),
    ],
)
async def test_own_listening_address_is_refused_as_peer(
    nursery: trio.Nursery, sockets: list[trio.socket.SocketType], port: int
) -> None:
    """Even where loopback peers are allowed, a peer that is one of the server's own
    listeners (that IP and port) is refused: relaying into them builds loops."""
    # A configured port: on this process's own loopback address it cannot race.
    listen_ip = private_loopback_ip()
    info = await start_server(nursery, turn_config(
        listen=((listen_ip, port),), allow_peer=(ipaddress.ip_network("127.0.0.0/8"),),
    ))
    client = TurnClient(await udp(sockets), info.udp[0], "alice", "wonderland")
    await client.allocate()
    reply = await client.request(
        Method.CHANNEL_BIND, (Attr.CHANNEL_NUMBER, 0x4001), (Attr.XOR_PEER_ADDRESS, info.udp[0])
    )
    assert code_of(reply) == 403
    # Another port of that address is an ordinary (allowed) loopback peer.
    other = (listen_ip, info.udp[0][1] + 1)
    reply = await client.request(
        Method.CHANNEL_BIND, (Attr.CHANNEL_NUMBER, 0x4002), (Attr.XOR_PEER_ADDRESS, other)
    )
    assert reply.cls == MessageClass.SUCCESS, reply.get(Attr.ERROR_CODE)


async def test_peer_policy_on_an_ipv6_relay(
    nursery: trio.Nursery, sockets: list[trio.socket.SocketType]
) -> None:
    """On an IPv6 relay every IPv6 form, IPv4-mapped included, meets the policy: 403."""
    info = await start_server(nursery, turn_config(listen=(("::1", 0),),
                                                  relay_ip="::1"))
    sock = trio.socket.socket(trio.socket.AF_INET6, trio.socket.SOCK_DGRAM)
    sockets.append(sock)
    await sock.bind(("::1", 0))
    client = TurnClient(sock, info.udp[0], "alice", "wonderland")
    reply = await client.request(
        Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, 17), (Attr.REQUESTED_ADDRESS_FAMILY, 2)
    )
    assert reply.cls == MessageClass.SUCCESS, reply.get(Attr.ERROR_CODE)
    for peer in [p for p in DENIED_PEERS if ":" in p]:
        reply = await client.request(Method.CREATE_PERMISSION, (Attr.XOR_PEER_ADDRESS, (peer, 9)))
        assert code_of(reply) == 403, peer


async def test_external_ip_is_advertised(
    nursery: trio.Nursery, sockets: list[trio.socket.SocketType]
) -> None:
    info = await start_server(nursery, turn_config(external_ip=("203.0.113.10", PRIMARY_IP)))
    client = TurnClient(await udp(sockets), info.udp[0], "alice", "wonderland")
    relay = await client.allocate()
    assert relay[0] == "203.0.113.10" and 49152 <= relay[1] <= 65535


async def test_closing_the_tcp_connection_ends_its_allocation(nursery: trio.Nursery) -> None:
    # Relay ports of this process's own (see private_loopback_ip): once the allocation
    # has let go of one, nothing else can take it before this test binds it.
    low, high = PRIVATE_PORTS[10], PRIVATE_PORTS[19]
    info = await start_server(nursery, turn_config(relay_ip=private_loopback_ip(),
                                                   relay_ports=(low, high)))
    stream = await trio.open_tcp_stream(*info.tcp[0])
    framer = StreamFramer()
    nonce = None
    key = long_term_key("alice", REALM, "wonderland")
    for _ in range(2):
        req = Message(Method.ALLOCATE, MessageClass.REQUEST,
                      attributes=[(Attr.REQUESTED_TRANSPORT, 17)])
        if nonce:
            req.attributes += [(Attr.USERNAME, "alice"), (Attr.REALM, REALM), (Attr.NONCE, nonce)]
        await stream.send_all(req.encode(key=key if nonce else None))
        frames: list[bytes] = []
        with trio.fail_after(2):
            while not frames:
                frames = framer.feed(await stream.receive_some(4096))
        reply = decode_untrusted(frames[0])
        nonce = reply.get(Attr.NONCE)
    assert reply.cls == MessageClass.SUCCESS
    relay = reply.get(Attr.XOR_RELAYED_ADDRESS)
    assert relay[0] == private_loopback_ip() and low <= relay[1] <= high
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as binder:
        with pytest.raises(OSError):
            binder.bind(relay)  # held by the allocation
        await stream.aclose()
        # The server notices the close and closes the relay socket. Wait for that on the
        # wire: a datagram to the relay port is dropped silently while the allocation
        # holds it (no permission) and draws an ICMP port unreachable once it is closed,
        # which a connected UDP socket reports as ConnectionRefusedError.
        with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as probe:
            await probe.bind((PRIMARY_IP, 0))
            await probe.connect(relay)
            with trio.fail_after(3):
                while not await refused(probe, timeout=0.05):
                    pass
        binder.bind(relay)  # and the port is free again


async def refused(sock: trio.socket.SocketType, *, timeout: float) -> bool:
    """Send one datagram on connected ``sock``: whether the destination port is closed
    (ICMP port unreachable within ``timeout``; also reported by a later send)."""
    try:
        await sock.send(b"anyone there?")
        with trio.move_on_after(timeout):
            data = await sock.recv(100)
            raise AssertionError(f"the relay answered: {data!r}")
    except ConnectionRefusedError:
        return True
    return False
