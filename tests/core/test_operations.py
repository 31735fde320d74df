"""What an operator reads from the TURN core: sessions, traffic, request and failure
counts, and draining (sans-IO)."""

from __future__ import annotations

import ipaddress

from natsrv.core.effects import Event
from natsrv.stun import Attr, MessageClass, Method

from .turn_helpers import (
    CLIENT,
    FT,
    NOW,
    PEER,
    RELAY_IP,
    Client,
    error_code,
    events,
    five_tuple,
    make_server,
)


def test_sessions_and_traffic_follow_relayed_data() -> None:
    server, _ = make_server()
    client = Client(server)
    answer, _ = client.allocate()
    relay = (RELAY_IP, answer.get(Attr.XOR_RELAYED_ADDRESS)[1])
    client.bind(0x4001, PEER)
    assert server.channel_to_peer(FT, 0x4001, 100, NOW + 1) is not None
    assert client.send(PEER, b"12345", NOW + 1)
    assert server.peer_to_client(relay, PEER, 40, NOW + 2) == (FT, 0x4001)
    [session] = server.sessions(NOW + 10)
    assert session["username"] == "alice" and session["realm"] == "example.org"
    assert session["client"] == f"{CLIENT[0]}:{CLIENT[1]}" and session["transport"] == "udp"
    assert session["relays"][0]["address"] == f"{relay[0]}:{relay[1]}"
    assert session["permissions"] == [PEER[0]]
    assert session["channels"] == [{"number": 0x4001, "peer": f"{PEER[0]}:{PEER[1]}"}]
    assert session["age_s"] == 10.0 and session["lifetime_left_s"] == 590.0
    assert session["to_peer"] == {"packets": 2, "bytes": 105}
    assert session["to_client"] == {"packets": 1, "bytes": 40}
    assert server.traffic() == (2, 105, 1, 40)
    # What an allocation relayed stays counted after it ends.
    client.refresh(0, NOW + 20)
    assert server.sessions(NOW + 20) == []
    assert server.traffic() == (2, 105, 1, 40)


def test_requests_and_auth_failures_are_counted_by_result_and_reason() -> None:
    server, _ = make_server()
    client = Client(server)
    client.allocate()
    wrong = Client(server, five_tuple(1), "alice", "not-the-password")
    answer, _ = wrong.allocate()
    assert error_code(answer) == 401
    stranger = Client(server, five_tuple(2), "mallory", "x")
    assert error_code(stranger.allocate()[0]) == 401
    assert error_code(client.allocate()[0]) == 437
    requests = server.requests
    assert requests[(Method.ALLOCATE, "udp", "401")] == 5  # three first, two failed
    assert requests[(Method.ALLOCATE, "udp", "success")] == 1
    assert requests[(Method.ALLOCATE, "udp", "437")] == 1
    assert server.auth_failures == {"bad-integrity": 1, "unknown-user": 1}


def test_draining_refuses_new_allocations_and_keeps_the_old_ones() -> None:
    server, _ = make_server()
    old = Client(server)
    old.allocate()
    server.draining = True
    answer, _ = Client(server, five_tuple(1)).allocate()
    assert error_code(answer) == 508
    # The existing allocation refreshes, permits, binds and relays as before.
    assert old.refresh(600)[0].cls == MessageClass.SUCCESS
    assert old.permit(PEER).cls == MessageClass.SUCCESS
    assert old.bind(0x4002, PEER).cls == MessageClass.SUCCESS
    assert server.channel_to_peer(FT, 0x4002, 10, NOW) is not None


def test_draining_with_an_alternate_server_answers_300() -> None:
    alternate = ("100.1.2.200", 3478)
    server, _ = make_server(alternate_servers=(alternate, ("2001:db8::200", 3478)))
    server.draining = True
    answer, _ = Client(server, five_tuple(1)).allocate()
    assert error_code(answer) == 300
    assert answer.get(Attr.ALTERNATE_SERVER) == alternate


def test_lifecycle_and_refusals_are_events_without_secrets() -> None:
    server, _ = make_server(user_quota=1)
    client = Client(server)
    _, effects = client.allocate()
    created = [e for e in effects if isinstance(e, Event)]
    assert [e.name for e in created] == ["allocation-created"]
    assert created[0].fields["username"] == "alice" and created[0].fields["lifetime_s"] == 600
    _, effects = client.request(Method.CREATE_PERMISSION, [(Attr.XOR_PEER_ADDRESS, PEER)])
    assert events(effects) == ["permission-created"]
    _, effects = client.request(Method.CREATE_PERMISSION, [(Attr.XOR_PEER_ADDRESS, PEER)])
    assert events(effects) == []  # a refresh of the same permission is not news
    _, effects = client.request(Method.CHANNEL_BIND, [(Attr.CHANNEL_NUMBER, 0x4003),
                                                     (Attr.XOR_PEER_ADDRESS, PEER)])
    assert events(effects) == ["channel-bound"]
    _, effects = client.refresh(900)
    assert events(effects) == ["allocation-refreshed"]
    # A refused request of an authenticated user is logged with its code (486 here).
    _, effects = Client(server, five_tuple(1)).allocate()
    [refused] = [e for e in effects if isinstance(e, Event)]
    assert refused.name == "request-refused" and refused.fields["code"] == 486
    # A failed password: logged, with the username but nothing secret.
    _, effects = Client(server, five_tuple(2), "alice", "guess").allocate()
    [failed] = [e for e in effects if isinstance(e, Event)]
    assert failed.name == "auth-failed" and failed.fields["reason"] == "bad-integrity"
    text = repr(failed.fields) + repr(refused.fields) + repr(created[0].fields)
    assert "secret" not in text and "guess" not in text
    _, effects = client.refresh(0, NOW + 30)
    [ended] = [e for e in effects if isinstance(e, Event)]
    assert ended.name == "allocation-ended" and ended.fields["reason"] == "deleted"
    assert ended.fields["duration_s"] == 30.0


def test_failure_events_are_bounded_in_rate() -> None:
    server, _ = make_server()
    logged = 0
    for i in range(500):  # a password-guessing run within one second
        _, effects = Client(server, five_tuple(i), "alice", f"guess{i}").allocate(now=NOW + i / 500)
        logged += len(events(effects))
    assert 50 <= logged <= 70  # the burst, then 20 a second


def test_reconfigure_swaps_policy_quota_realm_and_secrets_live() -> None:
    from dataclasses import replace

    from natsrv.core.credentials import StaticUsers
    from natsrv.core.policy import PeerPolicy

    server, _ = make_server()
    client = Client(server)
    client.allocate()
    client.bind(0x4001, PEER)
    other_peer = ("5.6.7.8", 6000)
    restart = server.reconfigure(
        replace(server.settings, user_quota=1, relay_ports=(40000, 40010)),
        credentials=StaticUsers({"alice": "secret", "zoe": "zzz"}),
        policy=PeerPolicy(deny=[ipaddress.ip_network("5.6.7.0/24")]),
    )
    assert restart == ["relay_ports"]  # bound to sockets: kept until a restart
    assert server.settings.relay_ports == (50000, 50099)
    # The existing allocation keeps relaying; the new rule refuses the new peer.
    assert server.channel_to_peer(FT, 0x4001, 10, NOW) is not None
    assert error_code(client.permit(other_peer)) == 403
    # The new quota and the new user apply from the next request on.
    answer, _ = Client(server, five_tuple(1)).allocate()
    assert error_code(answer) == 486
    answer, _ = Client(server, five_tuple(2), "zoe", "zzz").allocate()
    assert answer.cls == MessageClass.SUCCESS
    # A new realm: the next challenge names it.
    server.reconfigure(replace(server.settings, realm="new.example"),
                       credentials=StaticUsers({"alice": "secret"}), policy=PeerPolicy())
    fresh = Client(server, five_tuple(3))
    assert fresh.challenge().get(Attr.REALM) == "new.example"


# -- ALTERNATE-SERVER (RFC 8489 §10) ----------------------------------------------------
ALT4 = ("100.1.2.200", 3478)
ALT6 = ("2001:db8::200", 3478)


def test_a_full_server_sends_new_clients_to_the_alternate_of_their_family() -> None:
    server, _ = make_server(max_allocations=1, alternate_servers=(ALT6, ALT4))
    assert Client(server).allocate()[0].cls == MessageClass.SUCCESS
    answer, _ = Client(server, five_tuple(1)).allocate()
    # Signed (check_signed in Client.request), with the IPv4 client's IPv4 alternate.
    assert error_code(answer) == 300
    assert answer.get_all(Attr.ALTERNATE_SERVER) == [ALT4]
    assert server.counters["redirects"] == 1
    # An IPv6 client (it came to an IPv6 address of the server) gets the IPv6 one.
    v6 = ("udp", ("2001:db8:1::7", 40000), ("2001:db8::1", 3478))
    answer, _ = Client(server, v6).allocate()
    assert error_code(answer) == 300 and answer.get(Attr.ALTERNATE_SERVER) == ALT6


def test_a_full_server_without_an_alternate_of_that_family_answers_508() -> None:
    server, _ = make_server(max_allocations=1, alternate_servers=(ALT6,))
    Client(server).allocate()
    answer, _ = Client(server, five_tuple(1)).allocate()
    assert error_code(answer) == 508 and answer.get(Attr.ALTERNATE_SERVER) is None


def test_a_user_over_quota_is_not_redirected() -> None:
    server, _ = make_server(user_quota=1, alternate_servers=(ALT4,))
    Client(server).allocate()
    answer, _ = Client(server, five_tuple(1)).allocate()
    assert error_code(answer) == 486


def test_redirect_all_sends_new_allocations_away_and_keeps_the_old_ones() -> None:
    from dataclasses import replace

    from natsrv.core.credentials import StaticUsers
    from natsrv.core.policy import PeerPolicy

    from .turn_helpers import USERS

    server, _ = make_server(alternate_servers=(ALT4,))
    old = Client(server)
    old.allocate()
    server.reconfigure(replace(server.settings, redirect_all=True),
                       credentials=StaticUsers(USERS), policy=server.policy)  # fmt: skip
    answer, _ = Client(server, five_tuple(1)).allocate()
    assert error_code(answer) == 300 and answer.get(Attr.ALTERNATE_SERVER) == ALT4
    assert old.refresh(600)[0].cls == MessageClass.SUCCESS
    assert old.permit(PEER).cls == MessageClass.SUCCESS
    # Without an alternate, maintenance refuses with 508; turned off, allocations resume.
    server.reconfigure(replace(server.settings, alternate_servers=()),
                       credentials=StaticUsers(USERS), policy=PeerPolicy())  # fmt: skip
    assert error_code(Client(server, five_tuple(2)).allocate()[0]) == 508
    server.reconfigure(replace(server.settings, redirect_all=False),
                       credentials=StaticUsers(USERS), policy=PeerPolicy())  # fmt: skip
    assert Client(server, five_tuple(3)).allocate()[0].cls == MessageClass.SUCCESS


def test_a_server_listed_as_its_own_alternate_does_not_redirect_to_itself() -> None:
    """The loop rule: an alternate that is this server (the address the request came
    to, or one it advertises, on the same port) is never sent; 508 instead."""
    from .turn_helpers import PUBLIC_IP, SERVER

    for own in (SERVER, (RELAY_IP, SERVER[1]), (PUBLIC_IP, SERVER[1])):
        server, _ = make_server(redirect_all=True, alternate_servers=(own,))
        answer, _ = Client(server).allocate()
        assert error_code(answer) == 508, own
    # The same IP on another port is another server.
    other = (SERVER[0], SERVER[1] + 1)
    server, _ = make_server(redirect_all=True, alternate_servers=(other,))
    answer, _ = Client(server).allocate()
    assert error_code(answer) == 300 and answer.get(Attr.ALTERNATE_SERVER) == other
