"""The TURN core, sans-IO: RFC 8656 flows and refusals, timers, policy, quotas and the
relay fast paths. Pure: a fake relay opener, ``now`` passed in, the real codec."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natsrv.core.allocation import Allocation, Relay, RelayPorts
from natsrv.core.credentials import RestSecret, StaticUsers, rest_credentials
from natsrv.core.effects import SendToClient, send_to_peer
from natsrv.core.nonce import NonceFactory
from natsrv.core.policy import PeerPolicy
from natsrv.core.turn import COUNTERS, TurnSettings
from natsrv.stun import (
    AddressErrorCode,
    Attr,
    Message,
    MessageClass,
    Method,
    verify_integrity,
)
from natsrv.stun.fast import MAX_DATA_INDICATION_PAYLOAD

from .turn_helpers import (
    CLIENT,
    FT,
    NOW,
    PEER,
    PEER2,
    PEER6,
    PUBLIC_IP,
    REALM,
    RELAY_IP,
    RELAY_IP6,
    SERVER,
    SHA256,
    Client,
    FakeOpener,
    error_code,
    events,
    five_tuple,
    make_server,
    only_response,
    responses,
    wire,
)

V4 = 0x01
V6 = 0x02


def relay_of(answer: Message) -> tuple[str, int]:
    return answer.get(Attr.XOR_RELAYED_ADDRESS)


# -- Allocate --------------------------------------------------------------------------
def test_allocate_after_401_challenge() -> None:
    server, opener = make_server()
    client = Client(server)
    challenge = client.challenge()
    assert challenge.get(Attr.REALM) == REALM
    assert challenge.get(Attr.NONCE).startswith("obMatJos2")
    assert [a.algorithm for a in challenge.get(Attr.PASSWORD_ALGORITHMS)] == [SHA256, 1]
    assert challenge.integrity_offset is None and Attr.SOFTWARE not in challenge
    assert server.allocations == {} and opener.bound == set()

    answer, effects = client.allocate()
    assert answer.cls == MessageClass.SUCCESS
    public_ip, port = relay_of(answer)
    assert public_ip == PUBLIC_IP and 50000 <= port <= 50099
    assert answer.get(Attr.LIFETIME) == 600
    assert answer.get(Attr.XOR_MAPPED_ADDRESS) == CLIENT
    assert answer.get(Attr.SOFTWARE) == "natsrv-test"
    assert Attr.FINGERPRINT in answer
    # The relay (the private address) is bound before the client hears of it.
    assert events(effects) == ["allocation-created"]
    [answer_effect] = [e for e in effects if isinstance(e, SendToClient)]
    assert answer_effect.five_tuple == FT
    assert opener.bound == {(RELAY_IP, port)}
    assert server.counters["allocations_created"] == 1
    assert server.counters["allocations_active"] == 1
    assert server.allocations_of("alice") == 1


def test_retransmitted_allocate_gets_the_same_answer() -> None:
    server, opener = make_server()
    client = Client(server)
    tid = b"T" * 12
    first, _ = client.allocate(tid=tid)
    raw_first = first.raw
    # Same transaction, even after the nonce went stale: same bytes, nothing new.
    again, effects = client.allocate(tid=tid, now=NOW + 30)
    assert again.raw == raw_first
    assert effects == [SendToClient(FT, raw_first)]
    assert len(opener.bound) == 1
    assert server.counters["retransmissions"] == 1
    # After the 40 s transaction window, or with a new transaction: 437.
    late, _ = client.allocate(tid=tid, now=NOW + 41)
    assert error_code(late) == 437
    other, _ = client.allocate()
    assert error_code(other) == 437
    assert len(opener.bound) == 1


def test_retransmitted_refresh_and_permission_are_answered_from_cache() -> None:
    server, _ = make_server()
    client = Client(server)
    client.allocate()
    tid = b"R" * 12
    first, _ = client.request(Method.REFRESH, [(Attr.LIFETIME, 1200)], tid=tid)
    again, _ = client.request(Method.REFRESH, [(Attr.LIFETIME, 1200)], NOW + 1, tid=tid)
    assert again.raw == first.raw
    assert server.counters["retransmissions"] == 1


def test_requests_without_allocation_get_437() -> None:
    server, _ = make_server()
    client = Client(server)
    for method, attrs in [
        (Method.REFRESH, []),
        (Method.CREATE_PERMISSION, [(Attr.XOR_PEER_ADDRESS, PEER)]),
        (Method.CHANNEL_BIND, [(Attr.CHANNEL_NUMBER, 0x4000), (Attr.XOR_PEER_ADDRESS, PEER)]),
    ]:
        answer, _ = client.request(method, attrs)
        assert error_code(answer) == 437, method
    assert server.allocations == {}


def test_other_username_on_the_allocation_gets_441() -> None:
    server, _ = make_server()
    Client(server).allocate()
    bob = Client(server, username="bob", password="hunter2")
    answer, _ = bob.refresh()
    assert error_code(answer) == 441
    answer = bob.permit(PEER)
    assert error_code(answer) == 441


def test_requested_transport_rules() -> None:
    server, _ = make_server()
    client = Client(server)
    answer, _ = client.request(Method.ALLOCATE, [])
    assert error_code(answer) == 400
    answer, _ = client.request(Method.ALLOCATE, [(Attr.REQUESTED_TRANSPORT, 6)])
    assert error_code(answer) == 442
    assert answer.get(Attr.SOFTWARE) == "natsrv-test"
    assert server.allocations == {}


def test_dont_fragment_is_accepted() -> None:
    server, _ = make_server()
    answer, _ = Client(server).allocate((Attr.DONT_FRAGMENT, True))
    assert answer.cls == MessageClass.SUCCESS


def test_unknown_comprehension_required_attribute_gets_420() -> None:
    server, _ = make_server()
    client = Client(server)
    client.challenge()
    msg = client.build(Method.ALLOCATE, [(Attr.REQUESTED_TRANSPORT, 17), (0x7FF0, b"odd")])
    answer = only_response(server.handle(client.wire(msg), FT, NOW))
    assert error_code(answer) == 420
    assert answer.get(Attr.UNKNOWN_ATTRIBUTES) == (0x7FF0,)
    assert server.allocations == {}


def test_unsupported_methods_and_other_classes() -> None:
    server, _ = make_server()
    client = Client(server)
    answer, _ = client.request(0x00D, [(Attr.XOR_PEER_ADDRESS, PEER)])
    assert error_code(answer) == 400
    # RFC 6062 Connect is served (tests/core/test_tcp_relay.py): without an allocation, 437.
    answer, _ = client.request(Method.CONNECT, [(Attr.XOR_PEER_ADDRESS, PEER)])
    assert error_code(answer) == 437
    # Responses, unknown indications and RFC 3489 messages get nothing.
    assert server.handle(wire(Message(Method.ALLOCATE, MessageClass.SUCCESS)), FT, NOW) == []
    assert server.handle(wire(Message(Method.DATA, MessageClass.INDICATION)), FT, NOW) == []
    classic = Message(Method.ALLOCATE, MessageClass.REQUEST, cookie=False)
    assert server.handle(wire(classic), FT, NOW) == []


def test_lifetime_is_clamped_between_default_and_maximum() -> None:
    server, _ = make_server()
    for i, (asked, granted) in enumerate([(100, 600), (1800, 1800), (99999, 3600)]):
        answer, _ = Client(server, five_tuple(i)).allocate((Attr.LIFETIME, asked))
        assert answer.get(Attr.LIFETIME) == granted
    client = Client(server, five_tuple(10))
    client.allocate()
    for asked, granted in [(None, 600), (30, 600), (2000, 2000), (7200, 3600)]:
        answer, _ = client.refresh(asked)
        assert answer.get(Attr.LIFETIME) == granted
        assert answer.get(Attr.SOFTWARE) == "natsrv-test"


# -- Refresh, deletion and expiry -------------------------------------------------------
def test_refresh_zero_deletes_and_frees_the_port() -> None:
    server, opener = make_server()
    client = Client(server)
    answer, _ = client.allocate()
    relay = (RELAY_IP, relay_of(answer)[1])
    answer, _ = client.refresh(0)
    assert answer.cls == MessageClass.SUCCESS and answer.get(Attr.LIFETIME) == 0
    assert opener.closed == [relay] and opener.bound == set()
    assert server.allocations == {} and server.allocations_of("alice") == 0
    assert server.counters["allocations_deleted"] == 1
    assert server.counters["allocations_active"] == 0
    # Deleting again: the allocation is gone (RFC 8656 §8.3: the client treats 437 as done).
    answer, _ = client.refresh(0)
    assert error_code(answer) == 437
    # And the 5-tuple can allocate anew.
    answer, _ = client.allocate()
    assert answer.cls == MessageClass.SUCCESS


def test_allocation_expires_at_its_lifetime() -> None:
    server, opener = make_server()
    client = Client(server)
    answer, _ = client.allocate()
    relay = (RELAY_IP, relay_of(answer)[1])
    assert server.next_deadline() == NOW + 600
    assert server.expire(NOW + 599.9) == []
    assert events(server.expire(NOW + 600)) == ["allocation-ended"]
    assert opener.closed == [relay] and opener.bound == set() and server.allocations == {}
    assert server.counters["allocations_expired"] == 1
    assert server.next_deadline() is None


def test_refresh_moves_expiry_both_ways() -> None:
    server, opener = make_server()
    client = Client(server)
    client.allocate((Attr.LIFETIME, 3600))
    client.refresh(600, NOW + 100)  # shortened: expires at NOW + 700
    assert server.next_deadline() == NOW + 700
    answer, _ = client.refresh(1200, NOW + 500)  # lengthened: the early wake-up is a no-op
    assert answer.get(Attr.LIFETIME) == 1200
    assert server.expire(NOW + 700) == []
    assert server.next_deadline() == NOW + 1700
    assert opener.bound != set()
    assert events(server.expire(NOW + 1700)) == ["allocation-ended"]
    assert opener.bound == set()


def test_expired_allocation_is_reclaimed_lazily_by_a_request() -> None:
    server, opener = make_server()
    client = Client(server)
    answer, _ = client.allocate()
    relay = (RELAY_IP, relay_of(answer)[1])
    # A fresh nonce for the client's IP, fetched from another port (nonces are per IP).
    neighbour = Client(server, ("udp", (CLIENT[0], CLIENT[1] + 1), SERVER))
    client.take_nonce(neighbour.challenge(NOW + 601))
    answer, effects = client.refresh(None, NOW + 601)
    assert error_code(answer) == 437
    assert opener.closed == [relay] and opener.bound == set()
    assert server.expire(NOW + 700) == []
    # Any request on the 5-tuple reclaims it, even one that does not authenticate.
    answer, _ = client.allocate(now=NOW + 601)
    request = Message(Method.REFRESH, MessageClass.REQUEST)
    effects = server.handle(wire(request), FT, NOW + 1202)
    assert opener.closed[-1] == (RELAY_IP, relay_of(answer)[1])
    assert opener.bound == set()
    assert error_code(only_response(effects)) == 401


def test_tcp_connection_close_ends_its_allocation() -> None:
    server, opener = make_server()
    tcp = five_tuple(1, "tcp")
    answer, _ = Client(server, tcp).allocate()
    relay = (RELAY_IP, relay_of(answer)[1])
    assert opener.bound == {relay}
    assert server.connection_closed(five_tuple(2, "tcp"), NOW) == []
    assert opener.bound == {relay}
    assert events(server.connection_closed(tcp, NOW)) == ["allocation-ended"]
    assert opener.closed == [relay]
    assert server.allocations == {} and opener.bound == set()
    assert server.counters["allocations_closed"] == 1


# -- Permissions, Send and Data ---------------------------------------------------------
def test_permission_lets_data_through_both_ways_until_it_expires() -> None:
    server, _ = make_server()
    client = Client(server)
    answer, _ = client.allocate()
    relay = (RELAY_IP, relay_of(answer)[1])
    # No permission yet: both directions drop.
    assert client.send(PEER, b"hi") == []
    assert server.peer_to_client(relay, PEER, 2, NOW) is None
    assert server.counters["permission_drops"] == 2

    assert client.permit(PEER).cls == MessageClass.SUCCESS
    assert client.send(PEER, b"hi") == [send_to_peer(relay, PEER, b"hi")]
    # The permission is per IP: any port of that peer may answer.
    assert server.peer_to_client(relay, (PEER[0], 1), 5, NOW) == (FT, None)
    assert server.peer_to_client(relay, PEER2, 5, NOW) is None

    assert server.peer_to_client(relay, PEER, 5, NOW + 299) == (FT, None)
    assert server.peer_to_client(relay, PEER, 5, NOW + 300) is None
    assert client.send(PEER, b"late", NOW + 300) == []
    # expire() forgets the permission; a refresh before that keeps it.
    client.permit(PEER, now=NOW + 200)
    assert server.peer_to_client(relay, PEER, 5, NOW + 450) == (FT, None)
    server.expire(NOW + 501)
    assert server.allocations[FT].permissions == {}


def test_create_permission_installs_several_peers_at_once() -> None:
    server, _ = make_server()
    client = Client(server)
    client.allocate()
    assert client.permit(PEER, PEER2, (PEER[0], 9)).cls == MessageClass.SUCCESS
    assert set(server.allocations[FT].permissions) == {PEER[0], PEER2[0]}
    answer, _ = client.request(Method.CREATE_PERMISSION, [])
    assert error_code(answer) == 400


def test_send_indication_needs_allocation_and_attributes() -> None:
    server, _ = make_server()
    client = Client(server)
    assert client.send(PEER, b"x") == []
    assert server.counters["no_allocation_drops"] == 1
    client.allocate()
    client.permit(PEER)
    msg = Message(Method.SEND, MessageClass.INDICATION).add(Attr.XOR_PEER_ADDRESS, PEER)
    assert server.handle(wire(msg), FT, NOW) == []
    msg = Message(Method.SEND, MessageClass.INDICATION).add(Attr.DATA, b"x")
    assert server.handle(wire(msg), FT, NOW) == []
    assert server.counters["malformed_drops"] == 2


def test_oversize_datagram_without_channel_is_dropped() -> None:
    server, _ = make_server()
    client = Client(server)
    answer, _ = client.allocate()
    relay = (RELAY_IP, relay_of(answer)[1])
    client.permit(PEER)
    assert server.peer_to_client(relay, PEER, MAX_DATA_INDICATION_PAYLOAD + 1, NOW) is None
    assert server.counters["oversize_drops"] == 1
    client.bind(0x4000, PEER)
    assert server.peer_to_client(relay, PEER, 65507, NOW) == (FT, 0x4000)


# -- Channels ----------------------------------------------------------------------------
def test_channel_bind_rules() -> None:
    server, _ = make_server()
    client = Client(server)
    answer, _ = client.allocate()
    relay = (RELAY_IP, relay_of(answer)[1])
    assert client.bind(0x4000, PEER).cls == MessageClass.SUCCESS
    # ChannelBind installs the permission too.
    assert server.allocations[FT].permitted(PEER[0], NOW)
    for channel, peer in [
        (0x3FFF, PEER2),  # below the range
        (0x7FFF, PEER2),  # above the range (RFC 5766 allowed up to 0x7FFE)
        (0x4000, PEER2),  # channel bound to another peer
        (0x4001, PEER),  # peer bound to another channel
        (0x4000, (PEER[0], PEER[1] + 1)),  # same IP, other port: another transport address
    ]:
        assert error_code(client.bind(channel, peer)) == 400, (hex(channel), peer)
    answer, _ = client.request(Method.CHANNEL_BIND, [(Attr.CHANNEL_NUMBER, 0x4001)])
    assert error_code(answer) == 400
    answer, _ = client.request(Method.CHANNEL_BIND, [(Attr.XOR_PEER_ADDRESS, PEER2)])
    assert error_code(answer) == 400
    # A second channel to another peer is fine; so is the upper bound.
    assert client.bind(0x4FFF, PEER2).cls == MessageClass.SUCCESS

    assert server.channel_to_peer(FT, 0x4000, 10, NOW) == (relay, PEER)
    assert server.channel_to_peer(FT, 0x4001, 10, NOW) is None
    assert server.channel_to_peer(five_tuple(99), 0x4000, 10, NOW) is None
    assert server.peer_to_client(relay, PEER, 10, NOW) == (FT, 0x4000)


def test_channel_and_permission_lifetimes() -> None:
    server, _ = make_server()
    client = Client(server)
    answer, _ = client.allocate((Attr.LIFETIME, 3600))
    relay = (RELAY_IP, relay_of(answer)[1])
    client.bind(0x4000, PEER)
    # The permission (300 s) lapses before the channel (600 s): data stops both ways.
    assert server.channel_to_peer(FT, 0x4000, 1, NOW + 299) == (relay, PEER)
    assert server.channel_to_peer(FT, 0x4000, 1, NOW + 300) is None
    assert server.peer_to_client(relay, PEER, 1, NOW + 300) is None
    # Rebinding the same pair refreshes both.
    client.bind(0x4000, PEER, now=NOW + 500)
    assert server.channel_to_peer(FT, 0x4000, 1, NOW + 799) == (relay, PEER)
    assert server.channel_to_peer(FT, 0x4000, 1, NOW + 1100) is None  # channel expired
    # Permission refreshed alone: channel gone, so data arrives as Data indications.
    client.permit(PEER, now=NOW + 1100)
    assert server.peer_to_client(relay, PEER, 1, NOW + 1101) == (FT, None)
    # Once expired, the channel number and the peer may be bound afresh.
    client.nonce = None
    assert client.bind(0x4000, PEER2, now=NOW + 1102).cls == MessageClass.SUCCESS
    assert client.bind(0x4001, PEER, now=NOW + 1102).cls == MessageClass.SUCCESS
    assert server.channel_to_peer(FT, 0x4000, 1, NOW + 1103) == (relay, PEER2)
    # expire() sweeps them away eventually, and the allocation at its end.
    server.expire(NOW + 1102 + 600)
    alloc = server.allocations[FT]
    assert alloc.channels == {} and alloc.peer_channels == {} and alloc.permissions == {}
    server.expire(NOW + 3600)
    assert server.allocations == {}


def test_caps_on_permissions_and_channels_answer_508() -> None:
    server, _ = make_server(max_permissions=2, max_channels=2)
    client = Client(server)
    client.allocate()
    peers = [(f"1.2.3.{i}", 1000 + i) for i in range(1, 5)]
    assert client.permit(peers[0], peers[1]).cls == MessageClass.SUCCESS
    assert client.permit(peers[0], peers[1]).cls == MessageClass.SUCCESS  # refresh is fine
    assert error_code(client.permit(peers[2])) == 508
    assert client.bind(0x4000, peers[0]).cls == MessageClass.SUCCESS
    assert error_code(client.bind(0x4001, peers[2])) == 508  # would be a third permission
    assert client.bind(0x4001, peers[1]).cls == MessageClass.SUCCESS
    assert error_code(client.bind(0x4002, (peers[1][0], 9))) == 508  # third channel
    # Expired ones do not count.
    client.nonce = None
    assert client.permit(peers[3], now=NOW + 301).cls == MessageClass.SUCCESS


# -- Peer policy on every path ----------------------------------------------------------
def test_policy_refuses_peers_on_every_path() -> None:
    server, _ = make_server()
    client = Client(server)
    answer, _ = client.allocate()
    relay = (RELAY_IP, relay_of(answer)[1])
    # One denied peer among allowed ones: 403 for the whole request, nothing installed.
    answer = client.permit(PEER, ("127.0.0.1", 80), PEER2)
    assert error_code(answer) == 403
    assert server.allocations[FT].permissions == {}
    for peer in [("10.1.2.3", 80), ("169.254.169.254", 80), (SERVER[0], 5), ("0.0.0.0", 9)]:
        assert error_code(client.permit(peer)) == 403, peer
        assert error_code(client.bind(0x4000, peer)) == 403, peer
    assert server.allocations[FT].channels == {}
    assert server.counters["policy_refusals"] >= 4
    # A port-specific own address: a permission for the IP is fine, that port is not.
    own = ("100.1.2.9", 3478)
    assert client.permit(own).cls == MessageClass.SUCCESS
    assert error_code(client.bind(0x4000, own)) == 403
    assert client.send(own, b"loop") == []
    assert server.peer_to_client(relay, own, 4, NOW) is None
    assert server.counters["policy_drops"] == 2
    other_port = (own[0], 4000)
    assert client.send(other_port, b"ok") == [send_to_peer(relay, other_port, b"ok")]
    assert server.peer_to_client(relay, other_port, 2, NOW) == (FT, None)


def test_operator_allow_admits_a_private_peer() -> None:
    server, _ = make_server(policy=PeerPolicy(allow=["10.9.0.0/16"]))
    client = Client(server)
    client.allocate()
    assert client.permit(("10.9.1.1", 5)).cls == MessageClass.SUCCESS
    assert error_code(client.permit(("10.8.1.1", 5))) == 403


def test_peer_family_must_match_the_relay() -> None:
    server, _ = make_server()
    client = Client(server)
    client.allocate()
    assert error_code(client.permit(PEER6)) == 443
    assert error_code(client.permit(PEER, PEER6)) == 443
    assert error_code(client.bind(0x4000, PEER6)) == 443
    assert client.send(PEER6, b"x") == []
    assert server.allocations[FT].permissions == {}


# -- Address families --------------------------------------------------------------------
def test_requested_address_family() -> None:
    server, _ = make_server()
    client = Client(server)
    answer, _ = client.allocate((Attr.REQUESTED_ADDRESS_FAMILY, V6))
    assert error_code(answer) == 440
    answer, _ = client.allocate((Attr.REQUESTED_ADDRESS_FAMILY, 0x03))
    assert error_code(answer) == 440
    answer, _ = client.allocate((Attr.REQUESTED_ADDRESS_FAMILY, V4))
    assert answer.cls == MessageClass.SUCCESS


def test_ipv6_only_server_and_default_family() -> None:
    server, _ = make_server(relay_ips=(RELAY_IP6,), external_ip=None)
    answer, _ = Client(server).allocate()
    assert error_code(answer) == 440  # no family named: IPv4, which this server lacks
    answer, _ = Client(server).allocate((Attr.REQUESTED_ADDRESS_FAMILY, V6))
    assert relay_of(answer)[0] == RELAY_IP6
    listener, _ = make_server(relay_ips=(RELAY_IP, RELAY_IP6), default_family="listener")
    v6_tuple = ("udp", ("2001:db8::7", 5555), ("2001:4860::1", 3478))
    answer, _ = Client(listener, v6_tuple).allocate()
    assert relay_of(answer)[0] == RELAY_IP6
    answer, _ = Client(listener).allocate()
    assert relay_of(answer)[0] == PUBLIC_IP


def test_dual_allocation() -> None:
    server, opener = make_server(relay_ips=(RELAY_IP, RELAY_IP6))
    client = Client(server)
    answer, _ = client.allocate((Attr.ADDITIONAL_ADDRESS_FAMILY, V6))
    relays = answer.get_all(Attr.XOR_RELAYED_ADDRESS)
    assert [ip for ip, _ in relays] == [PUBLIC_IP, RELAY_IP6]
    v4_relay = (RELAY_IP, relays[0][1])
    v6_relay = relays[1]
    assert opener.bound == {v4_relay, v6_relay}
    # Peers of both families, each through its own relay.
    assert client.permit(PEER, PEER6).cls == MessageClass.SUCCESS
    assert client.send(PEER6, b"6") == [send_to_peer(v6_relay, PEER6, b"6")]
    assert client.send(PEER, b"4") == [send_to_peer(v4_relay, PEER, b"4")]
    # IPv6 forms of refused addresses are refused too (policy canonicalises them).
    for peer in [("::ffff:127.0.0.1", 1), ("::1", 1), ("fe80::1", 1), ("2002:a00:1::1", 1)]:
        assert error_code(client.permit(peer)) == 403, peer
        assert error_code(client.bind(0x4100, peer)) == 403, peer
    client.bind(0x4006, PEER6)
    assert server.channel_to_peer(FT, 0x4006, 1, NOW) == (v6_relay, PEER6)
    # Refresh (and delete) one family only (RFC 8656 §8).
    answer, _ = client.refresh(1200, NOW, (Attr.REQUESTED_ADDRESS_FAMILY, V4))
    assert answer.get(Attr.LIFETIME) == 1200
    answer, _ = client.refresh(0, NOW, (Attr.REQUESTED_ADDRESS_FAMILY, V6))
    assert opener.closed == [v6_relay]
    assert opener.bound == {v4_relay}
    alloc = server.allocations[FT]
    assert set(alloc.permissions) == {PEER[0]} and alloc.channels == {}
    answer, _ = client.refresh(600, NOW, (Attr.REQUESTED_ADDRESS_FAMILY, V6))
    assert error_code(answer) == 443
    assert client.send(PEER6, b"6") == []
    # The v4 relay lives on to its own expiry.
    assert server.expire(NOW + 1199) == []
    assert events(server.expire(NOW + 1200)) == ["allocation-ended"]
    assert opener.closed == [v6_relay, v4_relay]
    assert server.allocations == {}


def test_dual_allocation_partly_met_and_refused() -> None:
    server, _ = make_server()  # IPv4 relay only
    client = Client(server)
    answer, _ = client.allocate((Attr.ADDITIONAL_ADDRESS_FAMILY, V4))
    assert error_code(answer) == 400
    answer, _ = client.allocate(
        (Attr.REQUESTED_ADDRESS_FAMILY, V4), (Attr.ADDITIONAL_ADDRESS_FAMILY, V6)
    )
    assert error_code(answer) == 400
    answer, _ = client.allocate((Attr.ADDITIONAL_ADDRESS_FAMILY, V6), (Attr.EVEN_PORT, True))
    assert error_code(answer) == 400
    answer, _ = client.allocate((Attr.ADDITIONAL_ADDRESS_FAMILY, V6))
    assert answer.cls == MessageClass.SUCCESS
    assert len(answer.get_all(Attr.XOR_RELAYED_ADDRESS)) == 1
    assert answer.get(Attr.ADDRESS_ERROR_CODE) == AddressErrorCode(
        V6, 440, "Address Family not Supported"
    )
    answer, _ = client.refresh(600, NOW, (Attr.REQUESTED_ADDRESS_FAMILY, V6))
    assert error_code(answer) == 443


def test_dual_allocation_with_one_family_exhausted() -> None:
    opener = FakeOpener(taken=[(RELAY_IP6, 50000)])
    server, _ = make_server(relay_ips=(RELAY_IP, RELAY_IP6), relay_ports=(50000, 50000),
                            opener=opener)
    answer, _ = Client(server).allocate((Attr.ADDITIONAL_ADDRESS_FAMILY, V6))
    assert answer.get_all(Attr.XOR_RELAYED_ADDRESS) == [(PUBLIC_IP, 50000)]
    assert answer.get(Attr.ADDRESS_ERROR_CODE).code == 508
    # Nothing left in either family: the whole request fails.
    answer, _ = Client(server, five_tuple(1)).allocate((Attr.ADDITIONAL_ADDRESS_FAMILY, V6))
    assert error_code(answer) == 508


# -- Quotas and capacity ------------------------------------------------------------------
def test_user_quota_486_and_server_capacity_508() -> None:
    server, _ = make_server(user_quota=2, max_allocations=3)
    for i in range(2):
        answer, _ = Client(server, five_tuple(i)).allocate()
        assert answer.cls == MessageClass.SUCCESS
    answer, _ = Client(server, five_tuple(2)).allocate()
    assert error_code(answer) == 486
    answer, _ = Client(server, five_tuple(3), "bob", "hunter2").allocate()
    assert answer.cls == MessageClass.SUCCESS
    answer, _ = Client(server, five_tuple(4), "bob", "hunter2").allocate()
    assert error_code(answer) == 508
    # Freeing one lets the user allocate again.
    Client(server, five_tuple(0)).refresh(0)
    answer, _ = Client(server, five_tuple(2)).allocate()
    assert answer.cls == MessageClass.SUCCESS


def test_port_exhaustion_is_508_and_ports_come_back() -> None:
    opener = FakeOpener(taken=[(RELAY_IP, 50001)])  # held by some other program
    server, _ = make_server(relay_ports=(50000, 50003), opener=opener)
    ports = set()
    for i in range(3):
        answer, _ = Client(server, five_tuple(i)).allocate()
        ports.add(relay_of(answer)[1])
    assert ports == {50000, 50002, 50003}
    answer, _ = Client(server, five_tuple(3)).allocate()
    assert error_code(answer) == 508
    Client(server, five_tuple(1)).refresh(0)
    answer, _ = Client(server, five_tuple(3)).allocate()
    assert answer.cls == MessageClass.SUCCESS


def test_bind_attempts_are_bounded() -> None:
    opener = FakeOpener(taken=[(RELAY_IP, p) for p in range(50000, 50100)])
    server, _ = make_server(opener=opener, max_bind_attempts=5)
    answer, _ = Client(server).allocate()
    assert error_code(answer) == 508
    assert opener.attempts == 5


# -- EVEN-PORT and reservations -------------------------------------------------------------
def test_even_port_and_reservation_claimed() -> None:
    server, opener = make_server()
    client = Client(server)
    answer, _ = client.allocate((Attr.EVEN_PORT, False))
    assert relay_of(answer)[1] % 2 == 0 and Attr.RESERVATION_TOKEN not in answer

    reserver = Client(server, five_tuple(1))
    answer, _ = reserver.allocate((Attr.EVEN_PORT, True))
    port = relay_of(answer)[1]
    token = answer.get(Attr.RESERVATION_TOKEN)
    assert port % 2 == 0 and len(token) == 8
    assert {(RELAY_IP, port), (RELAY_IP, port + 1)} <= opener.bound
    # Another client (any 5-tuple) claims it, within 30 s.
    claimer = Client(server, five_tuple(2, "tcp"), "bob", "hunter2")
    answer, _ = claimer.allocate((Attr.RESERVATION_TOKEN, token), now=NOW + 10)
    assert relay_of(answer) == (PUBLIC_IP, port + 1)
    assert (RELAY_IP, port + 1) in opener.bound
    assert server.counters["reservations_claimed"] == 1
    # The claimed reservation's timer is skipped; the next deadline is an allocation's.
    assert server.next_deadline() == NOW + 600
    # A token is good once; the timer of the claimed reservation does nothing.
    answer, _ = Client(server, five_tuple(3)).allocate(
        (Attr.RESERVATION_TOKEN, token), now=NOW + 11
    )
    assert error_code(answer) == 508
    assert server.expire(NOW + 31) == []
    assert (RELAY_IP, port + 1) in opener.bound


def test_reservation_token_excludes_other_attributes() -> None:
    server, _ = make_server()
    client = Client(server)
    token = b"\x01" * 8
    for extra in [(Attr.EVEN_PORT, False), (Attr.REQUESTED_ADDRESS_FAMILY, V4),
                  (Attr.ADDITIONAL_ADDRESS_FAMILY, V6)]:
        answer, _ = client.allocate((Attr.RESERVATION_TOKEN, token), extra)
        assert error_code(answer) == 400, extra
    answer, _ = client.allocate((Attr.RESERVATION_TOKEN, token))
    assert error_code(answer) == 508


def test_unclaimed_reservations_are_released_after_30_s() -> None:
    server, opener = make_server()
    start = len(opener.bound)
    tokens = []
    for i in range(10):
        client = Client(server, five_tuple(i))
        answer, _ = client.allocate((Attr.EVEN_PORT, True))
        tokens.append(answer.get(Attr.RESERVATION_TOKEN))
        client.refresh(0)
    assert len(opener.bound) == start + 10  # only the reserved odd ports remain
    assert server.next_deadline() == NOW + 30
    server.expire(NOW + 30)
    assert len(opener.bound) == start
    assert server.counters["reservations_expired"] == 10
    answer, _ = Client(server, five_tuple(20)).allocate(
        (Attr.RESERVATION_TOKEN, tokens[0]), now=NOW + 31
    )
    assert error_code(answer) == 508


def test_even_port_reservations_count_against_the_user_quota() -> None:
    # One user's Allocate(EVEN-PORT R=1) + Refresh 0 cycles must not hold ports beyond
    # its quota: the reserved port counts until it is claimed or expires.
    server, opener = make_server(user_quota=2, relay_ports=(50000, 50039))
    client = Client(server)
    codes = []
    for i in range(30):
        answer, _ = client.allocate((Attr.EVEN_PORT, True), now=NOW + i / 30)
        codes.append(error_code(answer))
        if answer.cls == MessageClass.SUCCESS:
            client.refresh(0, NOW + i / 30)
    assert codes == [None] + [486] * 29
    assert len(opener.bound) == 1 and len(server.ports.reservations) == 1
    assert server.allocations_of("alice") == 1
    # Another user still gets an EVEN-PORT pair; once the reservation expires, so does alice.
    answer, _ = Client(server, five_tuple(1), "bob", "hunter2").allocate((Attr.EVEN_PORT, True))
    assert answer.cls == MessageClass.SUCCESS
    server.expire(NOW + 30)
    assert server.allocations_of("alice") == 0
    answer, _ = client.allocate((Attr.EVEN_PORT, True), now=NOW + 31)
    assert answer.cls == MessageClass.SUCCESS


def test_claiming_a_reservation_moves_it_off_the_reserving_user() -> None:
    server, _ = make_server(user_quota=2)
    answer, _ = Client(server).allocate((Attr.EVEN_PORT, True))
    token = answer.get(Attr.RESERVATION_TOKEN)
    assert server.allocations_of("alice") == 2
    claimer = Client(server, five_tuple(1), "bob", "hunter2")
    answer, _ = claimer.allocate((Attr.RESERVATION_TOKEN, token), now=NOW + 1)
    assert answer.cls == MessageClass.SUCCESS
    assert server.allocations_of("alice") == 1 and server.allocations_of("bob") == 1


def test_even_port_reservations_count_against_max_allocations() -> None:
    server, opener = make_server(max_allocations=3, user_quota=10)
    answer, _ = Client(server).allocate((Attr.EVEN_PORT, True))
    assert answer.cls == MessageClass.SUCCESS  # one allocation and one reservation
    answer, _ = Client(server, five_tuple(1)).allocate((Attr.EVEN_PORT, True))
    assert error_code(answer) == 508  # would need two more of the three
    answer, _ = Client(server, five_tuple(2)).allocate()
    assert answer.cls == MessageClass.SUCCESS
    answer, _ = Client(server, five_tuple(3)).allocate()
    assert error_code(answer) == 508
    assert len(opener.bound) == 3


def test_expired_reservation_cannot_be_claimed_before_the_sweep() -> None:
    server, _ = make_server()
    answer, _ = Client(server).allocate((Attr.EVEN_PORT, True))
    token = answer.get(Attr.RESERVATION_TOKEN)
    answer, _ = Client(server, five_tuple(1)).allocate(
        (Attr.RESERVATION_TOKEN, token), now=NOW + 30
    )
    assert error_code(answer) == 508


def test_even_port_pairs_exhausted() -> None:
    server, _ = make_server(relay_ports=(50001, 50002))
    answer, _ = Client(server).allocate((Attr.EVEN_PORT, True))
    assert error_code(answer) == 508  # 50002 is even but 50003 is outside the range
    answer, _ = Client(server, five_tuple(1)).allocate((Attr.EVEN_PORT, False))
    assert relay_of(answer)[1] == 50002


def test_even_port_pair_with_its_odd_half_taken() -> None:
    opener = FakeOpener(taken=[(RELAY_IP, 50001)])
    server, _ = make_server(relay_ports=(50000, 50001), opener=opener)
    answer, _ = Client(server).allocate((Attr.EVEN_PORT, True))
    assert error_code(answer) == 508
    assert opener.closed == [(RELAY_IP, 50000)] and opener.bound == set()


def test_allocate_delete_churn_keeps_the_heap_bounded() -> None:
    server, opener = make_server(user_quota=10**6)
    client = Client(server)
    for i in range(5000):
        answer, _ = client.allocate(now=NOW + i / 100)
        assert answer.cls == MessageClass.SUCCESS
        client.refresh(0, NOW + i / 100)
    assert len(server._heap) <= 1024 + 2
    assert server.next_deadline() is None and opener.bound == set()


def test_claimed_reservation_timer_is_a_no_op() -> None:
    server, opener = make_server()
    answer, _ = Client(server).allocate((Attr.EVEN_PORT, True))
    token = answer.get(Attr.RESERVATION_TOKEN)
    Client(server, five_tuple(1)).allocate((Attr.RESERVATION_TOKEN, token))
    assert server.expire(NOW + 30) == []
    assert len(opener.bound) == 2 and server.counters["reservations_expired"] == 0


def test_relay_ports_directly() -> None:
    with pytest.raises(ValueError):
        RelayPorts(FakeOpener(), 10, 5)
    assert RelayPorts(FakeOpener(), 7, 7).open("10.0.0.1", even=True) is None
    opener = FakeOpener()
    ports = RelayPorts(opener, 50000, 50001)
    port = ports.open("10.0.0.1")
    assert port is not None
    ports.close(("10.0.0.1", port))
    ports.close(("10.0.0.1", port))  # twice: the opener sees one close
    assert opener.closed == [("10.0.0.1", port)]
    reservation = ports.reserve(("10.0.0.1", 50001), NOW + 30)
    assert ports.claim(b"nope----", NOW) is None
    assert ports.claim(reservation.token, NOW + 30) is None  # expired
    assert ports.claim(reservation.token, NOW) is reservation
    assert ports.release(reservation) is False


def test_channel_table_keeps_both_directions_unique() -> None:
    relay = Relay((RELAY_IP, 50000), (PUBLIC_IP, 50000), 4, NOW + 600)
    alloc = Allocation(FT, "alice", {4: relay})
    alloc.bind_channel(0x4000, PEER, relay, NOW + 600)
    alloc.bind_channel(0x4001, PEER, relay, NOW + 600)  # the peer moves to 0x4001
    assert set(alloc.channels) == {0x4001} and alloc.peer_channels[PEER].number == 0x4001
    alloc.bind_channel(0x4001, PEER2, relay, NOW + 600)  # the channel moves to PEER2
    assert set(alloc.peer_channels) == {PEER2} and alloc.channels[0x4001].peer == PEER2
    alloc.bind_channel(0x4001, PEER2, relay, NOW + 900)  # same pair: refreshed
    assert alloc.channels[0x4001].expires_at == NOW + 900


# -- Authentication through the server ----------------------------------------------------
def test_stale_nonce_gets_438_then_succeeds() -> None:
    server, _ = make_server()
    client = Client(server)
    client.challenge()
    later = NOW + 700
    answer, _ = client.allocate(now=later, retry_stale=False)
    assert error_code(answer) == 438
    assert answer.get(Attr.REALM) == REALM and answer.integrity_offset is None
    assert server.allocations == {}
    client.take_nonce(answer)
    answer, _ = client.allocate(now=later)
    assert answer.cls == MessageClass.SUCCESS
    assert server.counters["stale_nonces"] == 1


def test_nonce_from_another_key_gets_438() -> None:
    old, _ = make_server(nonces=NonceFactory(b"o" * 32))
    client = Client(old)
    client.challenge()
    server, _ = make_server()  # "restarted" with another nonce key
    client.server = server
    answer, _ = client.allocate(retry_stale=False)
    assert error_code(answer) == 438
    client.take_nonce(answer)
    answer, _ = client.allocate()
    assert answer.cls == MessageClass.SUCCESS


def test_wrong_password_and_unknown_user_get_401() -> None:
    server, _ = make_server()
    for username, password in [("alice", "wrong"), ("mallory", "secret")]:
        client = Client(server, username=username, password=password)
        answer, _ = client.allocate()
        assert error_code(answer) == 401
        assert answer.integrity_offset is None and answer.get(Attr.NONCE)
    assert server.counters["auth_failures"] == 2
    assert server.allocations == {}


def test_integrity_without_username_is_400() -> None:
    server, _ = make_server()
    client = Client(server)
    client.challenge()
    msg = Message(Method.ALLOCATE, MessageClass.REQUEST)
    msg.add(Attr.REQUESTED_TRANSPORT, 17).add(Attr.REALM, REALM).add(Attr.NONCE, client.nonce)
    answer = only_response(server.handle(client.wire(msg), FT, NOW))
    assert error_code(answer) == 400 and answer.integrity_offset is None


def test_sha256_password_algorithm_flow() -> None:
    server, _ = make_server()
    client = Client(server, algorithm=SHA256)
    answer, _ = client.allocate()  # check_signed verifies MESSAGE-INTEGRITY-SHA256
    assert answer.cls == MessageClass.SUCCESS
    assert answer.integrity_offset is None
    # The SHA-256 key, not the MD5 one, signs the answer.
    assert len(client.key) == 32


def test_message_integrity_sha256_with_md5_key() -> None:
    server, _ = make_server()
    client = Client(server, sha256=True)
    answer, _ = client.allocate()
    assert answer.cls == MessageClass.SUCCESS
    # Processed as MD5 (no PASSWORD-ALGORITHM): MESSAGE-INTEGRITY as well.
    assert verify_integrity(answer, client.key)


def test_rest_credentials_ok_and_expired() -> None:
    secret = "rest-secret"
    server, _ = make_server(credentials=RestSecret(secret))
    username, password = rest_credentials(secret, "alice", 3600, NOW)
    answer, _ = Client(server, username=username, password=password).allocate()
    assert answer.cls == MessageClass.SUCCESS
    old_user, old_password = rest_credentials(secret, "bob", 60, NOW - 120)
    answer, _ = Client(server, five_tuple(1), old_user, old_password).allocate()
    assert error_code(answer) == 401
    # The allocation outlives nothing it should: a Refresh after expiry of the
    # credential is refused too.
    late = Client(server, username=username, password=password)
    late.nonce = None
    answer, _ = late.refresh(600, NOW + 3601)
    assert error_code(answer) == 401


def test_unauthenticated_answers_are_rate_limited_per_ip() -> None:
    server, _ = make_server(unauth_rate=5.0, unauth_global_rate=0.0)
    request = Message(Method.ALLOCATE, MessageClass.REQUEST).add(Attr.REQUESTED_TRANSPORT, 17)
    answered = [bool(server.handle(wire(request), FT, NOW)) for _ in range(20)]
    assert answered == [True] * 5 + [False] * 15
    assert server.counters["unauth_dropped"] == 15
    # Another source IP has its own bucket; the first refills with time.
    assert server.handle(wire(request), five_tuple(1), NOW)
    assert server.handle(wire(request), FT, NOW + 0.2)
    assert not server.handle(wire(request), FT, NOW + 0.2)
    # Authenticated traffic is not limited.
    client = Client(server, five_tuple(1))
    client.challenge(NOW + 1)
    for _ in range(10):
        answer, _ = client.request(Method.REFRESH, [], NOW + 1)
        assert error_code(answer) == 437


def test_unauthenticated_answers_over_streams_are_not_dropped() -> None:
    server, _ = make_server(unauth_rate=5.0, unauth_global_rate=0.0)
    request = Message(Method.ALLOCATE, MessageClass.REQUEST).add(Attr.REQUESTED_TRANSPORT, 17)
    tcp = ("tcp", FT[1], FT[2])
    assert all(server.handle(wire(request), tcp, NOW) for _ in range(20))
    assert server.counters["unauth_dropped"] == 0


def test_unauthenticated_flood_creates_no_state() -> None:
    server, opener = make_server(unauth_rate=20.0, unauth_table_size=1024)
    request = Message(Method.ALLOCATE, MessageClass.REQUEST).add(Attr.REQUESTED_TRANSPORT, 17)
    bogus = Message(Method.ALLOCATE, MessageClass.REQUEST)
    bogus.add(Attr.REQUESTED_TRANSPORT, 17).add(Attr.USERNAME, "alice")
    bogus.add(Attr.REALM, REALM).add(Attr.NONCE, "obMatJos2AAABxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")
    signed = wire(bogus, key=b"\x00" * 16)
    plain = wire(request)
    for i in range(10_000):
        ft = five_tuple(i)
        server.handle(plain if i % 2 else signed, ft, NOW + i / 1000)
        server.handle(wire(Message(Method.REFRESH, MessageClass.REQUEST)), ft, NOW)
        send = Message(Method.SEND, MessageClass.INDICATION)
        send.add(Attr.XOR_PEER_ADDRESS, PEER).add(Attr.DATA, b"x")
        server.handle(wire(send), ft, NOW)
        assert server.channel_to_peer(ft, 0x4000, 1, NOW) is None
        assert server.peer_to_client((RELAY_IP, 50000 + i % 100), PEER, 1, NOW) is None
    assert server.allocations == {}
    assert server._by_relay == {} and server.ledger.per_user == {} and server._peer_ok == {}
    assert server._heap == [] and server.ports.reservations == {}
    assert opener.bound == set() and opener.attempts == 0
    assert len(server.limiter) <= 1024
    assert server.next_deadline() is None


# -- Fast paths and bandwidth -------------------------------------------------------------
def test_bandwidth_cap_drops_excess_both_ways() -> None:
    server, _ = make_server(bandwidth=1000, bandwidth_burst=1500)
    client = Client(server)
    answer, _ = client.allocate()
    relay = (RELAY_IP, relay_of(answer)[1])
    client.bind(0x4000, PEER)
    assert server.channel_to_peer(FT, 0x4000, 1000, NOW) == (relay, PEER)
    assert server.peer_to_client(relay, PEER, 500, NOW) == (FT, 0x4000)
    assert server.channel_to_peer(FT, 0x4000, 1, NOW) is None
    assert server.peer_to_client(relay, PEER, 1, NOW) is None
    assert client.send(PEER, b"x") == []
    assert server.counters["bandwidth_drops"] == 3
    assert server.allocations[FT].dropped_bytes == 3
    # Half a second later, 500 bytes have come back.
    assert server.channel_to_peer(FT, 0x4000, 500, NOW + 0.5) == (relay, PEER)
    assert server.channel_to_peer(FT, 0x4000, 10, NOW + 0.5) is None
    # Idle time refills only up to the burst.
    assert server.channel_to_peer(FT, 0x4000, 1501, NOW + 100) is None
    assert server.channel_to_peer(FT, 0x4000, 1500, NOW + 100) == (relay, PEER)


def test_peer_verdict_cache_is_bounded() -> None:
    server, _ = make_server()
    server.PEER_CACHE_SIZE = 4
    client = Client(server)
    answer, _ = client.allocate()
    relay = (RELAY_IP, relay_of(answer)[1])
    client.permit(PEER)
    for port in range(1, 20):
        assert server.peer_to_client(relay, (PEER[0], port), 1, NOW) == (FT, None)
        assert len(server._peer_ok) <= 4


def test_fast_paths_ignore_unknown_relays_and_expired_allocations() -> None:
    server, _ = make_server()
    client = Client(server)
    answer, _ = client.allocate()
    relay = (RELAY_IP, relay_of(answer)[1])
    client.bind(0x4000, PEER)
    assert server.peer_to_client((RELAY_IP, 1), PEER, 1, NOW) is None
    # Refresh the channel and permission past the allocation's own end.
    client.bind(0x4000, PEER, now=NOW + 590)
    assert server.channel_to_peer(FT, 0x4000, 1, NOW + 600) is None
    assert server.peer_to_client(relay, PEER, 1, NOW + 600) is None


# -- Settings ----------------------------------------------------------------------------
def test_settings_validation() -> None:
    with pytest.raises(ValueError):
        TurnSettings(default_family="ipv6")
    with pytest.raises(ValueError):
        TurnSettings(relay_ips=("192.0.2.1", "192.0.2.2"))
    with pytest.raises(ValueError):
        make_server(relay_ips=("0.0.0.0",), external_ip=None)
    # A wildcard relay is fine when an external address is advertised for it.
    server, _ = make_server(relay_ips=("0.0.0.0",), external_ip=(PUBLIC_IP, None))
    answer, _ = Client(server).allocate()
    assert relay_of(answer)[0] == PUBLIC_IP


def test_counters_are_all_present() -> None:
    server, _ = make_server(credentials=StaticUsers({}))
    assert set(COUNTERS) <= set(server.counters)
    assert all(server.counters[name] == 0 for name in COUNTERS)
    assert responses([]) == []


# -- Property: nothing a client sends makes the core raise ---------------------------------
_peer = st.tuples(
    st.one_of(
        st.sampled_from(["1.2.3.4", "127.0.0.1", "10.0.0.5", "100.1.2.9", "::ffff:1.2.3.4"]),
        st.ip_addresses().map(str),
    ),
    st.integers(0, 65535),
)
_attribute = st.one_of(
    st.tuples(st.just(Attr.REQUESTED_TRANSPORT), st.sampled_from([17, 6, 0, 255])),
    st.tuples(st.just(Attr.LIFETIME), st.sampled_from([0, 1, 600, 2**32 - 1])),
    st.tuples(st.just(Attr.XOR_PEER_ADDRESS), _peer),
    st.tuples(st.just(Attr.CHANNEL_NUMBER), st.sampled_from([0, 0x4000, 0x4001, 0x4FFF, 0xFFFF])),
    st.tuples(st.just(Attr.REQUESTED_ADDRESS_FAMILY), st.integers(0, 3)),
    st.tuples(st.just(Attr.ADDITIONAL_ADDRESS_FAMILY), st.integers(0, 3)),
    st.tuples(st.just(Attr.EVEN_PORT), st.booleans()),
    st.tuples(st.just(Attr.RESERVATION_TOKEN), st.binary(min_size=8, max_size=8)),
    st.tuples(st.just(Attr.DONT_FRAGMENT), st.just(True)),
    st.tuples(st.just(Attr.DATA), st.binary(max_size=16)),
    st.tuples(st.just(0x7F01), st.binary(max_size=4)),
)
_method = st.sampled_from(
    [Method.ALLOCATE, Method.REFRESH, Method.CREATE_PERMISSION, Method.CHANNEL_BIND,
     Method.SEND, Method.CONNECT, Method.BINDING]
)


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(
        st.tuples(_method, st.lists(_attribute, max_size=6), st.booleans(), st.integers(0, 900)),
        min_size=1,
        max_size=8,
    )
)
def test_any_signed_sequence_is_answered_or_dropped(
    steps: list[tuple[int, list[tuple[int, object]], bool, int]],
) -> None:
    server, opener = make_server(relay_ips=(RELAY_IP, RELAY_IP6), relay_ports=(50000, 50007))
    client = Client(server)
    for method, attrs, indication, dt in steps:
        now = NOW + dt
        client.take_nonce(Client(server).challenge(now))
        if method == Method.SEND or indication:
            msg = Message(method, MessageClass.INDICATION)
            for attr in attrs:
                msg.add(*attr)
            effects = server.handle(wire(msg), FT, now)
        else:
            effects = server.handle(client.wire(client.build(method, attrs)), FT, now)
        for answer in responses(effects):
            assert answer.transaction_id  # decodes, fingerprint checked by the codec
        server.expire(now)
    server.expire(NOW + 10**5)
    assert server.allocations == {} and opener.bound == set()


def test_relay_ports_are_spread_over_the_range() -> None:
    from natsrv.core.allocation import _SecretPool

    pool = _SecretPool()
    for n in (1, 2, 3, 1000, 16384, 2**32):
        assert all(0 <= pool.randbelow(n) < n for _ in range(200))
    seen = {pool.randbelow(16) for _ in range(2000)}
    assert seen == set(range(16))
    assert 0 <= pool.randbelow(2**40) < 2**40  # beyond 32 bits: secrets itself
