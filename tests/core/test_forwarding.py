"""The decisions the TURN core offers a data plane's forwarding table (core/forwarding.py),
sans-IO: what is offered, until when, what is never offered, and when it is taken back
with what it relayed."""

from __future__ import annotations

from dataclasses import replace

from natsrv.core.credentials import StaticUsers
from natsrv.core.effects import Address, FiveTuple, PeerRoute
from natsrv.core.forwarding import NO_TRAFFIC, Traffic
from natsrv.core.policy import PeerPolicy
from natsrv.stun.constants import Attr, MessageClass
from tests.core.turn_helpers import FT, NOW, PEER, PEER2, RELAY_IP, USERS, Client, make_server


class RecordingTable:
    """A table that keeps what the core offered and counts as a data plane would."""

    def __init__(self) -> None:
        self.to_peers: dict[tuple[FiveTuple, int], tuple[PeerRoute, float]] = {}
        self.to_clients: dict[tuple[Address, Address], tuple[FiveTuple, int | None, float]] = {}
        self.relayed: dict[FiveTuple, Traffic] = {}
        self.forgotten: list[FiveTuple] = []

    def to_peer(self, five_tuple: FiveTuple, channel: int, route: PeerRoute, until: float) -> None:
        self.to_peers[(five_tuple, channel)] = (route, until)

    def to_client(self, relay: Address, peer: Address, five_tuple: FiveTuple,
                  channel: int | None, until: float) -> None:  # fmt: skip
        self.to_clients[(relay, peer)] = (five_tuple, channel, until)

    def forget(self, five_tuple: FiveTuple) -> Traffic:
        self.forgotten.append(five_tuple)
        self.to_peers = {k: v for k, v in self.to_peers.items() if k[0] != five_tuple}
        self.to_clients = {k: v for k, v in self.to_clients.items() if v[0] != five_tuple}
        return self.relayed.pop(five_tuple, NO_TRAFFIC)

    def traffic(self, five_tuple: FiveTuple) -> Traffic:
        return self.relayed.get(five_tuple, NO_TRAFFIC)


def allocated(**settings: object) -> tuple[Client, RecordingTable, Address]:
    server, _ = make_server(**settings)
    table = RecordingTable()
    server.forwarding = table
    client = Client(server)
    answer, _ = client.allocate()
    assert answer.cls == MessageClass.SUCCESS
    return client, table, (RELAY_IP, answer.get(Attr.XOR_RELAYED_ADDRESS)[1])


def test_channel_bind_offers_both_directions_until_the_first_expiry() -> None:
    client, table, relay = allocated()
    assert client.bind(0x4001, PEER).cls == MessageClass.SUCCESS
    # The permission (300 s) runs out before the channel (600 s) and the relay (600 s).
    assert table.to_peers == {(FT, 0x4001): (PeerRoute(relay, PEER), NOW + 300)}
    assert table.to_clients == {(relay, PEER): (FT, 0x4001, NOW + 300)}


def test_each_relay_decision_is_offered_with_its_own_deadline() -> None:
    client, table, relay = allocated()
    server = client.server
    client.permit(PEER2)
    assert server.peer_to_client(relay, PEER2, 5, NOW + 10) == (FT, None)
    assert table.to_clients[(relay, PEER2)] == (FT, None, NOW + 300)  # a Data indication
    client.bind(0x4002, PEER)
    client.permit(PEER, now=NOW + 100)
    assert server.channel_to_peer(FT, 0x4002, 10, NOW + 150) == PeerRoute(relay, PEER)
    assert table.to_peers[(FT, 0x4002)] == (PeerRoute(relay, PEER), NOW + 400)
    # Refused decisions are not offered.
    assert server.peer_to_client(relay, ("9.9.9.9", 1), 5, NOW) is None
    assert (relay, ("9.9.9.9", 1)) not in table.to_clients


def test_allocations_under_a_bandwidth_cap_are_never_offered() -> None:
    client, table, relay = allocated(bandwidth=1_000_000)
    client.bind(0x4001, PEER)
    assert client.server.channel_to_peer(FT, 0x4001, 10, NOW) is not None
    assert client.server.peer_to_client(relay, PEER, 10, NOW) is not None
    assert table.to_peers == {} and table.to_clients == {}


def test_entries_are_taken_back_when_state_shrinks_and_their_traffic_is_kept() -> None:
    client, table, _ = allocated()
    server = client.server
    client.bind(0x4001, PEER)
    table.relayed[FT] = (3, 300, 4, 400)
    assert server.traffic() == (3, 300, 4, 400)
    assert server.sessions(NOW)[0]["to_client"] == {"packets": 4, "bytes": 400}
    server.expire(NOW + 301)  # the permission expired: everything of FT is taken back
    assert table.forgotten == [FT] and table.to_peers == {} and table.to_clients == {}
    assert server.traffic() == (3, 300, 4, 400)
    assert server.allocations[FT].to_peer_packets == 3
    # A reload may change the policy or the caps: every entry goes.
    client.bind(0x4001, PEER, now=NOW + 310)
    assert table.to_peers
    server.reconfigure(replace(server.settings, bandwidth=10), credentials=StaticUsers(USERS),
                       policy=PeerPolicy())  # fmt: skip
    assert table.to_peers == {} and table.to_clients == {}
    # Deleting the allocation reports what the table relayed for it.
    table.relayed[FT] = (1, 10, 2, 20)
    _, effects = client.refresh(0, now=NOW + 320)
    (ended,) = [e for e in effects if getattr(e, "name", "") == "allocation-ended"]
    assert ended.fields["to_peer_packets"] == 4 and ended.fields["to_client_bytes"] == 420
    assert server.traffic() == (4, 310, 6, 420)
