"""The one entry point, sans-IO: bytes and a 5-tuple in, effects out."""

from __future__ import annotations

from collections import Counter
from collections.abc import MutableMapping

from natsrv.core.binding import BindingConfig, BindingService
from natsrv.core.effects import SendToClient, send_to_peer
from natsrv.core.server import Server
from natsrv.stun import Attr, ChangeRequest, MessageClass, Method, decode_untrusted
from natsrv.stun.message import encode_message

from .turn_helpers import CLIENT, NOW, PEER, RELAY_IP, Client, make_server

PRIMARY = ("192.0.2.1", 3478)
ALT_IP = "192.0.2.2"
ALT_PORT = 3479
TID = bytes(range(12))


def stun_server(**turn_settings: object) -> tuple[Server, MutableMapping[str, int]]:
    counters: Counter[str] = Counter()
    binding = BindingService(BindingConfig(PRIMARY, ALT_IP, ALT_PORT, "natsrv"))
    bindings = dict.fromkeys(binding.config.endpoints(), binding)
    turn = None
    if turn_settings:
        turn, _ = make_server(**turn_settings)
    store = counters if turn is None else turn.counters  # one store for the process
    return Server(bindings, turn, counters=store, software="natsrv"), store


def request(method: int = Method.BINDING, *attrs: tuple[int, object], cookie: bool = True) -> bytes:
    return encode_message(method, MessageClass.REQUEST, TID + (b"" if cookie else bytes(4)),
                          list(attrs), cookie=cookie)  # fmt: skip


def test_plain_binding_is_answered_to_its_sender() -> None:
    server, _ = stun_server()
    ft = ("udp", CLIENT, PRIMARY)
    [effect] = server.receive(request(), ft, NOW)
    assert isinstance(effect, SendToClient) and effect.five_tuple == ft
    answer = decode_untrusted(effect.data)
    assert (answer.method, answer.cls) == (Method.BINDING, MessageClass.SUCCESS)
    assert answer.get(Attr.XOR_MAPPED_ADDRESS) == CLIENT
    assert answer.get(Attr.RESPONSE_ORIGIN) == PRIMARY
    assert answer.get(Attr.OTHER_ADDRESS) == (ALT_IP, ALT_PORT)


def test_change_request_and_response_port_name_the_endpoints() -> None:
    server, _ = stun_server()
    ft = ("udp", CLIENT, PRIMARY)
    both = request(Method.BINDING, (Attr.CHANGE_REQUEST, ChangeRequest(True, True)))
    [effect] = server.receive(both, ft, NOW)
    assert effect.five_tuple == ("udp", CLIENT, (ALT_IP, ALT_PORT))
    assert decode_untrusted(effect.data).get(Attr.RESPONSE_ORIGIN) == (ALT_IP, ALT_PORT)
    elsewhere = request(Method.BINDING, (Attr.RESPONSE_PORT, 9999))
    [effect] = server.receive(elsewhere, ft, NOW)
    assert effect.five_tuple == ("udp", (CLIENT[0], 9999), PRIMARY)
    # Over TCP the same request is a 400: the answer stays on the connection.
    tcp = ("tcp", CLIENT, PRIMARY)
    [effect] = server.receive(both, tcp, NOW)
    assert effect.five_tuple == tcp
    assert decode_untrusted(effect.data).get(Attr.ERROR_CODE).code == 400


def test_classic_request_is_answered_in_kind() -> None:
    server, _ = stun_server()
    [effect] = server.receive(request(cookie=False), ("udp", CLIENT, PRIMARY), NOW)
    answer = decode_untrusted(effect.data)
    assert not answer.cookie and answer.transaction_id == TID + bytes(4)
    assert answer.get(Attr.MAPPED_ADDRESS) == CLIENT
    assert answer.get(Attr.CHANGED_ADDRESS) == (ALT_IP, ALT_PORT)


def test_stream_on_a_wildcard_listener_is_served_by_its_group() -> None:
    counters: Counter[str] = Counter()
    binding = BindingService(BindingConfig(("0.0.0.0", 3478)))
    server = Server({("0.0.0.0", 3478): binding}, counters=counters)
    # A TCP connection accepted on the wildcard reports its specific local address.
    [effect] = server.receive(request(), ("tcp", CLIENT, ("192.0.2.9", 3478)), NOW)
    answer = decode_untrusted(effect.data)
    assert answer.get(Attr.XOR_MAPPED_ADDRESS) == CLIENT
    assert Attr.RESPONSE_ORIGIN not in answer  # a wildcard cannot name its origin


def test_malformed_and_unanswerable_input_is_dropped_and_counted() -> None:
    server, counters = stun_server()
    ft = ("udp", CLIENT, PRIMARY)
    lying = request()[:2] + b"\x01\x00" + request()[4:]  # length says 256, datagram has 0
    for garbage in (b"", b"\xff" * 30, lying, request()[:19], request() + b"\x00"):
        assert server.receive(garbage, ft, NOW) == []
    assert counters["dropped_malformed"] == 5
    indication = encode_message(Method.BINDING, MessageClass.INDICATION, TID, [])
    assert server.receive(indication, ft, NOW) == []
    assert counters["dropped_not_a_request"] == 1
    assert server.receive(b"\x40\x00\x00\x00", ft, NOW) == []
    assert counters["dropped_channel_data_without_turn"] == 1


def test_turn_method_without_turn_gets_a_400() -> None:
    server, counters = stun_server()
    [effect] = server.receive(request(Method.ALLOCATE), ("udp", CLIENT, PRIMARY), NOW)
    answer = decode_untrusted(effect.data)
    assert (answer.method, answer.cls) == (Method.ALLOCATE, MessageClass.ERROR)
    assert answer.get(Attr.ERROR_CODE).code == 400
    assert counters["errors_not_served"] == 1


def test_channel_data_and_peer_data_through_the_entry_point() -> None:
    server, counters = stun_server(relay_ips=(RELAY_IP,))
    assert server.turn is not None
    ft = ("udp", CLIENT, PRIMARY)
    client = Client(server.turn, ft)
    answer, _ = client.allocate()
    relay = (RELAY_IP, answer.get(Attr.XOR_RELAYED_ADDRESS)[1])
    client.bind(0x4001, PEER)
    assert server.receive(b"\x40\x01\x00\x03abc", ft, NOW) == [send_to_peer(relay, PEER, b"abc")]
    # An unbound channel is dropped with the core's reason.
    assert server.receive(b"\x40\x02\x00\x01x", ft, NOW) == []
    assert counters["channel_drops"] == 1
    # From the peer: ChannelData on UDP (unpadded), on TCP padded to 4 bytes.
    assert server.receive_from_peer(relay, PEER, b"xyz", NOW) == (ft, b"\x40\x01\x00\x03xyz")
    assert server.receive_from_peer(relay, ("192.0.2.99", 1), b"x", NOW) is None
    assert counters["permission_drops"] == 1
