"""RFC 6062 TCP allocations in the sans-IO core: what it decides (answers, CONNECTION-IDs,
deadlines, counts) and which effects it asks the shell for, with ``now`` passed in."""

from __future__ import annotations

from natsrv.core.effects import CloseTcp, ConnectToPeer, Effect, FiveTuple, SpliceTcp
from natsrv.core.turn import TurnServer
from natsrv.stun import Attr, MessageClass, Method
from tests.core.turn_helpers import (
    CLIENT,
    NOW,
    PEER,
    PEER2,
    SERVER,
    Client,
    FakeOpener,
    error_code,
    make_server,
    only_response,
    responses,
)

CONTROL: FiveTuple = ("tcp", CLIENT, SERVER)
TCP = 6


def tcp_server(**settings: object) -> tuple[TurnServer, FakeOpener]:
    opener = FakeOpener()
    server, _ = make_server(opener=opener, **settings)
    return server, opener


def allocated(server: TurnServer, ft: FiveTuple = CONTROL) -> Client:
    client = Client(server, ft)
    answer, _ = client.request(Method.ALLOCATE, [(Attr.REQUESTED_TRANSPORT, TCP)])
    assert answer.cls == MessageClass.SUCCESS, answer.get(Attr.ERROR_CODE)
    return client


def connect(client: Client, peer: tuple[str, int], now: float = NOW) -> list[Effect]:
    msg = client.wire(client.build(Method.CONNECT, [(Attr.XOR_PEER_ADDRESS, peer)]))
    return client.server.handle(msg, client.ft, now)


def the(kind: type, effects: list[Effect]) -> object:
    found = [e for e in effects if type(e) is kind]
    assert len(found) == 1, effects
    return found[0]


def test_tcp_allocations_only_on_stream_control_connections() -> None:
    server, opener = tcp_server()
    answer, _ = Client(server).request(Method.ALLOCATE, [(Attr.REQUESTED_TRANSPORT, TCP)])
    assert error_code(answer) == 442
    for extra in ((Attr.EVEN_PORT, False), (Attr.DONT_FRAGMENT, True)):
        answer, _ = Client(server, ("tcp", CLIENT, SERVER)).request(
            Method.ALLOCATE, [(Attr.REQUESTED_TRANSPORT, TCP), extra])
        assert error_code(answer) == 400
    allocated(server)
    assert len(opener.tcp) == 1  # a listening TCP socket, not a UDP one
    off, _ = tcp_server(tcp_relay=False)
    answer, _ = Client(off, CONTROL).request(Method.ALLOCATE, [(Attr.REQUESTED_TRANSPORT, TCP)])
    assert error_code(answer) == 442


def test_connect_success_then_bind_within_the_deadline() -> None:
    server, _ = tcp_server()
    client = allocated(server)
    effects = connect(client, PEER)
    assert responses(effects) == []  # answered once the shell reports
    attempt = the(ConnectToPeer, effects)
    assert isinstance(attempt, ConnectToPeer) and attempt.peer == PEER
    answer = only_response(server.tcp.connected(attempt.cid, True, NOW + 1))
    client.check_signed(answer)
    assert answer.get(Attr.CONNECTION_ID) == attempt.cid
    assert error_code(only_response(connect(client, PEER, NOW + 2))) == 446
    data = Client(server, ("tcp", ("198.100.1.7", 40001), SERVER))
    answer, effects = data.request(Method.CONNECTION_BIND, [(Attr.CONNECTION_ID, attempt.cid)],
                                   NOW + 2)  # fmt: skip
    assert answer.cls == MessageClass.SUCCESS
    assert the(SpliceTcp, effects) == SpliceTcp(attempt.cid, data.ft)
    assert server.holds_connection(data.ft)
    # Bound: no deadline any more; the end of the control connection ends it.
    assert server.expire(NOW + 3600 * 24) != []  # the allocation itself expires
    assert attempt.cid not in server.tcp.connections


def test_connection_bind_that_never_comes_closes_the_peer_connection() -> None:
    server, _ = tcp_server()
    client = allocated(server)
    cid = the(ConnectToPeer, connect(client, PEER)).cid  # type: ignore[attr-defined]
    server.tcp.connected(cid, True, NOW + 1)
    deadline = server.next_deadline()
    assert deadline is not None and deadline <= NOW + 31  # 30 s for ConnectionBind
    assert [e for e in server.expire(NOW + 30.9) if type(e) is CloseTcp] == []
    assert [e for e in server.expire(NOW + 31) if type(e) is CloseTcp] == [CloseTcp(cid)]
    assert server.counters["tcp_bind_timeouts"] == 1
    data = Client(server, ("tcp", ("198.100.1.7", 40001), SERVER))
    answer, _ = data.request(Method.CONNECTION_BIND, [(Attr.CONNECTION_ID, cid)], NOW + 32)
    assert error_code(answer) == 400


def test_connect_timeout_and_failure_get_447() -> None:
    server, _ = tcp_server(tcp_connect_timeout=10.0)
    client = allocated(server)
    cid = the(ConnectToPeer, connect(client, PEER)).cid  # type: ignore[attr-defined]
    effects = server.expire(NOW + 10)
    answer = only_response(effects)
    assert error_code(answer) == 447
    client.check_signed(answer)
    assert the(CloseTcp, effects) == CloseTcp(cid)
    assert server.tcp.connected(cid, True, NOW + 11) == [CloseTcp(cid)]  # too late
    cid2 = the(ConnectToPeer, connect(client, PEER2, NOW + 12)).cid  # type: ignore[attr-defined]
    assert error_code(only_response(server.tcp.connected(cid2, False, NOW + 13))) == 447


def test_connect_policy_and_counts() -> None:
    server, _ = tcp_server(tcp_max_pending=2)
    client = allocated(server)
    assert error_code(only_response(connect(client, ("10.1.2.3", 80)))) == 403
    assert error_code(only_response(connect(client, ("127.0.0.1", 80)))) == 403
    connect(client, PEER)
    connect(client, PEER2)
    assert error_code(only_response(connect(client, ("9.9.9.9", 80)))) == 508
    udp = Client(server)
    udp.allocate()
    assert error_code(only_response(connect(udp, PEER))) == 400


def test_inbound_peer_needs_a_permission_and_gets_a_connection_attempt() -> None:
    server, opener = tcp_server()
    client = allocated(server)
    relay = next(iter(opener.tcp))
    assert server.tcp.peer_arrived(relay, PEER, NOW) == (None, [])
    assert server.counters["tcp_inbound_refused"] == 1
    client.permit(PEER)
    cid, effects = server.tcp.peer_arrived(relay, PEER, NOW + 1)
    assert cid is not None
    indication = only_response(effects)
    assert (indication.method, indication.cls) == (
        Method.CONNECTION_ATTEMPT, MessageClass.INDICATION)
    assert indication.get(Attr.XOR_PEER_ADDRESS) == PEER
    assert indication.get(Attr.CONNECTION_ID) == cid
    # Another user may not bind it; a UDP "data connection" is no data connection.
    bob = Client(server, ("tcp", ("198.100.1.8", 40001), SERVER), "bob", "hunter2")
    answer, _ = bob.request(Method.CONNECTION_BIND, [(Attr.CONNECTION_ID, cid)], NOW + 2)
    assert error_code(answer) == 441
    udp = Client(server, ("udp", ("198.100.1.8", 40002), SERVER))
    answer, _ = udp.request(Method.CONNECTION_BIND, [(Attr.CONNECTION_ID, cid)], NOW + 2)
    assert error_code(answer) == 400
    data = Client(server, ("tls", ("198.100.1.7", 40003), SERVER))
    answer, effects = data.request(Method.CONNECTION_BIND, [(Attr.CONNECTION_ID, cid)],
                                   NOW + 2)  # fmt: skip
    assert the(SpliceTcp, effects) == SpliceTcp(cid, data.ft)
    # The control connection closes: the allocation, and so the peer connection, end.
    assert CloseTcp(cid) in server.connection_closed(CONTROL, NOW + 3)
    assert server.tcp.connections == {} and server.tcp.by_data == {}


def test_data_connection_closing_ends_its_peer_connection() -> None:
    server, opener = tcp_server()
    client = allocated(server)
    client.permit(PEER)
    cid, _ = server.tcp.peer_arrived(next(iter(opener.tcp)), PEER, NOW)
    data = Client(server, ("tcp", ("198.100.1.7", 40001), SERVER))
    data.request(Method.CONNECTION_BIND, [(Attr.CONNECTION_ID, cid)])
    assert server.connection_closed(data.ft, NOW + 1) == [CloseTcp(cid)]
    assert server.allocations  # the allocation stays
