"""Relays of both address families over real loopback sockets (RFC 8656 §7.2, §8, §9,
§12): ``relay-ip`` once per family, an IPv6 relay for REQUESTED-ADDRESS-FAMILY IPv6,
both for ADDITIONAL-ADDRESS-FAMILY, refresh and deletion per family, permissions and
channels per family with 443 on a mismatch, and the peer policy on IPv6 peers."""

from __future__ import annotations

import ipaddress
import socket

import pytest
import trio

from natsrv.config import ConfigError, build_config
from natsrv.stun import Attr, Message, MessageClass, Method, decode_untrusted
from natsrv.stun.attributes import AddressErrorCode
from tests.conftest import PRIMARY_IP, ipv6_loopback, require, start_server
from tests.net.test_turn_server import TurnClient, code_of, turn_config

IPV4, IPV6 = 0x01, 0x02
LOOPBACKS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))



@pytest.fixture(autouse=True)
def _needs_ipv6() -> None:
    require(ipv6_loopback(), "no IPv6 loopback (::1)")


async def _socket(family: int, ip: str) -> trio.socket.SocketType:
    sock = trio.socket.socket(family, trio.socket.SOCK_DGRAM)
    await sock.bind((ip, 0))
    return sock


async def _client(info_udp: tuple[str, int], sock: trio.socket.SocketType) -> TurnClient:
    return TurnClient(sock, info_udp, "alice", "wonderland")


async def _relay_round_trip(
    client: TurnClient, server: tuple[str, int], relay: tuple[str, int],
    peer: trio.socket.SocketType, channel: int,
) -> None:
    """Send indication to the peer, ChannelData both ways, through ``relay``."""
    peer_addr = peer.getsockname()[:2]
    reply = await client.request(Method.CREATE_PERMISSION, (Attr.XOR_PEER_ADDRESS, peer_addr))
    assert reply.cls == MessageClass.SUCCESS, reply.get(Attr.ERROR_CODE)
    send = Message(Method.SEND, MessageClass.INDICATION, attributes=[
        (Attr.XOR_PEER_ADDRESS, peer_addr), (Attr.DATA, b"to peer")])  # fmt: skip
    await client.sock.sendto(send.encode(), server)
    with trio.fail_after(2):
        data, src = await peer.recvfrom(2048)
    assert (data, src[:2]) == (b"to peer", relay)
    await peer.sendto(b"to client", relay)
    with trio.fail_after(2):
        raw, _ = await client.sock.recvfrom(2048)
    indication = decode_untrusted(raw)
    assert indication.get(Attr.DATA) == b"to client"
    assert indication.get(Attr.XOR_PEER_ADDRESS) == peer_addr
    reply = await client.request(
        Method.CHANNEL_BIND, (Attr.CHANNEL_NUMBER, channel), (Attr.XOR_PEER_ADDRESS, peer_addr)
    )
    assert reply.cls == MessageClass.SUCCESS, reply.get(Attr.ERROR_CODE)


def test_relay_ip_and_external_ip_once_per_family() -> None:
    config = build_config({}, {"relay_ip": ("198.51.100.3", "2001:db8::3"),
                               "external_ip": (("203.0.113.3", None), ("2001:db8::9", None)),
                               "users": (("a", "b"),)})  # fmt: skip
    assert config.relay_ip == ("198.51.100.3", "2001:db8::3")
    from natsrv.net.serve import turn_settings

    settings = turn_settings(config)
    assert settings.relay_ips == ("198.51.100.3", "2001:db8::3")
    assert settings.external_ips == (("203.0.113.3", None), ("2001:db8::9", None))
    from natsrv.config import settings_from_mapping

    with pytest.raises(ConfigError) as exc:
        settings_from_mapping({"relay-ip": ["198.51.100.3", "198.51.100.4"]})
    assert str(exc.value) == (
        "relay-ip: at most one address per family: ['198.51.100.3', '198.51.100.4']"
    )
    with pytest.raises(ConfigError) as exc:
        settings_from_mapping({"external-ip": ["2001:db8::1", "2001:db8::2/2001:db8::5"]})
    assert str(exc.value).startswith("external-ip: at most one address per family")
    with pytest.raises(ConfigError) as exc:
        settings_from_mapping({"external-ip": "203.0.113.3/2001:db8::5"})
    assert str(exc.value).startswith("external-ip: PUBLIC and PRIVATE are of different")


async def test_dual_allocation_relays_both_families(nursery: trio.Nursery) -> None:
    info = await start_server(nursery, turn_config(relay_ip=(PRIMARY_IP, "::1"),
                                                   allow_peer=LOOPBACKS))  # fmt: skip
    client = await _client(info.udp[0], await _socket(trio.socket.AF_INET, PRIMARY_IP))
    reply = await client.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, 17),
                                 (Attr.ADDITIONAL_ADDRESS_FAMILY, IPV6))  # fmt: skip
    assert reply.cls == MessageClass.SUCCESS, reply.get(Attr.ERROR_CODE)
    relay4, relay6 = reply.get_all(Attr.XOR_RELAYED_ADDRESS)
    assert relay4[0] == PRIMARY_IP and relay6[0] == "::1"
    assert reply.get(Attr.ADDRESS_ERROR_CODE) is None
    peer4 = await _socket(trio.socket.AF_INET, PRIMARY_IP)
    peer6 = await _socket(trio.socket.AF_INET6, "::1")
    await _relay_round_trip(client, info.udp[0], relay4, peer4, 0x4001)
    await _relay_round_trip(client, info.udp[0], relay6, peer6, 0x4002)

    # Deleting the IPv6 half (Refresh, REQUESTED-ADDRESS-FAMILY IPv6, LIFETIME 0) leaves
    # the IPv4 half; the IPv6 family is then a mismatch (443) everywhere.
    reply = await client.request(Method.REFRESH, (Attr.LIFETIME, 0),
                                 (Attr.REQUESTED_ADDRESS_FAMILY, IPV6))  # fmt: skip
    assert reply.cls == MessageClass.SUCCESS and reply.get(Attr.LIFETIME) == 0
    peer6_addr = peer6.getsockname()[:2]
    reply = await client.request(Method.CREATE_PERMISSION, (Attr.XOR_PEER_ADDRESS, peer6_addr))
    assert code_of(reply) == 443
    reply = await client.request(Method.CHANNEL_BIND, (Attr.CHANNEL_NUMBER, 0x4003),
                                 (Attr.XOR_PEER_ADDRESS, peer6_addr))  # fmt: skip
    assert code_of(reply) == 443
    reply = await client.request(Method.REFRESH, (Attr.LIFETIME, 600),
                                 (Attr.REQUESTED_ADDRESS_FAMILY, IPV6))  # fmt: skip
    assert code_of(reply) == 443
    reply = await client.request(Method.REFRESH, (Attr.LIFETIME, 600),
                                 (Attr.REQUESTED_ADDRESS_FAMILY, IPV4))  # fmt: skip
    assert reply.cls == MessageClass.SUCCESS
    peer4b = await _socket(trio.socket.AF_INET, PRIMARY_IP)
    await _relay_round_trip(client, info.udp[0], relay4, peer4b, 0x4004)
    for s in (client.sock, peer4, peer4b, peer6):
        s.close()


async def test_ipv6_relay_for_requested_family_and_443_for_ipv4_peers(
    nursery: trio.Nursery,
) -> None:
    info = await start_server(nursery, turn_config(relay_ip=(PRIMARY_IP, "::1"),
                                                   allow_peer=LOOPBACKS))  # fmt: skip
    client = await _client(info.udp[0], await _socket(trio.socket.AF_INET, PRIMARY_IP))
    reply = await client.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, 17),
                                 (Attr.REQUESTED_ADDRESS_FAMILY, IPV6))  # fmt: skip
    assert reply.cls == MessageClass.SUCCESS, reply.get(Attr.ERROR_CODE)
    (relay6,) = reply.get_all(Attr.XOR_RELAYED_ADDRESS)
    assert relay6[0] == "::1"
    reply = await client.request(Method.CREATE_PERMISSION,
                                 (Attr.XOR_PEER_ADDRESS, (PRIMARY_IP, 9)))  # fmt: skip
    assert code_of(reply) == 443
    peer6 = await _socket(trio.socket.AF_INET6, "::1")
    await _relay_round_trip(client, info.udp[0], relay6, peer6, 0x4001)
    for s in (client.sock, peer6):
        s.close()


async def test_ipv6_peers_meet_the_policy_on_every_path(nursery: trio.Nursery) -> None:
    """Without ``--allow-peer ::1/128`` an IPv6 loopback peer is refused (403) by
    CreatePermission and ChannelBind, and a Send to it goes nowhere."""
    info = await start_server(nursery, turn_config(relay_ip=(PRIMARY_IP, "::1"),
                                                   allow_peer=LOOPBACKS[:1]))  # fmt: skip
    client = await _client(info.udp[0], await _socket(trio.socket.AF_INET, PRIMARY_IP))
    reply = await client.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, 17),
                                 (Attr.ADDITIONAL_ADDRESS_FAMILY, IPV6))  # fmt: skip
    assert reply.cls == MessageClass.SUCCESS
    victim = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    victim.bind(("::1", 0))
    victim.setblocking(False)
    victim_addr = victim.getsockname()[:2]
    for peer in (victim_addr, ("::ffff:10.0.0.1", 9), ("64:ff9b::a9fe:a9fe", 9)):
        reply = await client.request(Method.CREATE_PERMISSION, (Attr.XOR_PEER_ADDRESS, peer))
        assert code_of(reply) == 403, peer
        reply = await client.request(Method.CHANNEL_BIND, (Attr.CHANNEL_NUMBER, 0x4001),
                                     (Attr.XOR_PEER_ADDRESS, peer))  # fmt: skip
        assert code_of(reply) == 403, peer
    send = Message(Method.SEND, MessageClass.INDICATION, attributes=[
        (Attr.XOR_PEER_ADDRESS, victim_addr), (Attr.DATA, b"attack")])  # fmt: skip
    await client.sock.sendto(send.encode(), info.udp[0])
    probe = await client.request(Method.REFRESH, (Attr.LIFETIME, 600))  # handled in order
    assert probe.cls == MessageClass.SUCCESS
    with pytest.raises(BlockingIOError):
        victim.recv(100)  # nothing arrived
    client.sock.close()
    victim.close()


@pytest.mark.parametrize("draft", [False, True], ids=["rfc8656", "draft-0x8032"])
async def test_dual_allocation_without_an_ipv6_relay_gets_ipv4_and_440(
    nursery: trio.Nursery, draft: bool
) -> None:
    """Only an IPv4 relay address: the IPv4 half succeeds, ADDRESS-ERROR-CODE says 440
    for IPv6 (in the attribute code the request used); REQUESTED-ADDRESS-FAMILY IPv6
    alone gets 440, as before."""
    info = await start_server(nursery, turn_config())
    client = await _client(info.udp[0], await _socket(trio.socket.AF_INET, PRIMARY_IP))
    additional = Attr.ADDITIONAL_ADDRESS_FAMILY_DRAFT if draft else Attr.ADDITIONAL_ADDRESS_FAMILY
    error_attr = Attr.ADDRESS_ERROR_CODE_DRAFT if draft else Attr.ADDRESS_ERROR_CODE
    reply = await client.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, 17),
                                 (additional, IPV6))  # fmt: skip
    assert reply.cls == MessageClass.SUCCESS, reply.get(Attr.ERROR_CODE)
    (relay4,) = reply.get_all(Attr.XOR_RELAYED_ADDRESS)
    assert relay4[0] == PRIMARY_IP
    error = reply.get(error_attr)
    assert isinstance(error, AddressErrorCode)
    assert (error.family, error.code) == (IPV6, 440)
    other = Attr.ADDRESS_ERROR_CODE if draft else Attr.ADDRESS_ERROR_CODE_DRAFT
    assert reply.get(other) is None
    client2 = await _client(info.udp[0], await _socket(trio.socket.AF_INET, PRIMARY_IP))
    reply = await client2.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, 17),
                                  (Attr.REQUESTED_ADDRESS_FAMILY, IPV6))  # fmt: skip
    assert code_of(reply) == 440
    for s in (client.sock, client2.sock):
        s.close()
