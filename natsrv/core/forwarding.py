"""The forwarding table the core fills for a native data path (docs/architecture.md,
"The native data path").

The core is the only place of decisions; a data plane may only repeat one it already
made. So after ``TurnServer`` decides that ChannelData on (client 5-tuple, channel)
goes along a route, or that a datagram from (relay, peer) goes to a client, it offers
that decision to the table with the deadline until which nothing but time could change
it (the earliest expiry of the channel, the permission and the relay). The core takes
entries back whenever an allocation's state shrinks (something expired, a relay
closed, the allocation ended, the settings were reloaded); later decisions are
offered again on the next packet that reaches the core. Allocations with a bandwidth
cap are never offered: their packets all come to the core, which meters them.

The shell provides the table (``net/fastpath.py``); the pure-Python path has none.
What a table forwarded is counted per entry and read back by the core for metrics,
``/sessions`` and the allocation-ended log line.
"""

from __future__ import annotations

from typing import Protocol

from .effects import Address, FiveTuple, PeerRoute

#: Payload packets and bytes to peers, then to the client.
Traffic = tuple[int, int, int, int]
NO_TRAFFIC: Traffic = (0, 0, 0, 0)


class ForwardingTable(Protocol):
    def to_peer(self, five_tuple: FiveTuple, channel: int, route: PeerRoute, until: float) -> None:
        """ChannelData from the client on ``five_tuple`` on ``channel`` goes along
        ``route`` until ``until``."""

    def to_client(
        self, relay: Address, peer: Address, five_tuple: FiveTuple, channel: int | None,
        until: float,
    ) -> None:
        """A datagram from ``peer`` to ``relay`` goes to the client on ``five_tuple`` as
        ChannelData on ``channel`` (None: a Data indication) until ``until``."""

    def forget(self, five_tuple: FiveTuple) -> Traffic:
        """Drop every entry of the allocation on ``five_tuple``; what they forwarded
        since they were last forgotten."""

    def traffic(self, five_tuple: FiveTuple) -> Traffic:
        """What the allocation's entries forwarded since they were last forgotten."""


__all__ = ["NO_TRAFFIC", "ForwardingTable", "Traffic"]
