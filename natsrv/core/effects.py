"""What the sans-IO core asks the trio shell to do, and what it needs from the shell.

The core (``natsrv.core.server.Server`` and the TURN state behind it) never touches a
socket: ``Server.receive``, ``Server.expire`` and ``Server.connection_closed`` return a
list of the effects below, which ``natsrv/net`` carries out in order: send bytes to a
client (on UDP from a given local endpoint, on a stream over its
connection) and send a datagram from a relay socket to a peer; a third, rare one,
hands the shell an :class:`Event` to log. RFC 6062 TCP allocations add three: connect
to a peer from a relayed address, splice a client's data connection to a peer
connection, close a peer connection.

The one piece of I/O the core performs synchronously is binding and closing relay
sockets, through the :class:`RelayOpener` the shell hands it: RFC 8656 §7.2 needs to
know at once whether a port is free (EVEN-PORT, RESERVATION-TOKEN, 508 Insufficient
Capacity), so an effect carried out later would be too late.

Effects are plain slotted records, not frozen ones: a frozen dataclass costs twice as
much to create, and the core creates several per request.

Addresses are ``(ip, port)`` with the IP in the text form ``socket`` uses (dotted IPv4,
RFC 5952 IPv6). A ``FiveTuple`` identifies an allocation (RFC 8656 §2, §6):
``(transport, client address, server local address)`` with transport ``"udp"``,
``"tcp"``, ``"tls"`` or ``"dtls"`` (RFC 7350: STUN and TURN over DTLS on the TLS port).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol, TypeAlias, final

Address: TypeAlias = tuple[str, int]
FiveTuple: TypeAlias = tuple[str, Address, Address]


class RelayOpener(Protocol):
    """Binds and closes relay UDP sockets for the core, synchronously (implemented by
    net/relay.py): the core's only I/O.

    ``bind`` is called for every relay port the core wants, including the second port
    of an EVEN-PORT reservation (RFC 8656 §7.2), and ``close`` exactly once for every
    address ``bind`` returned True for.
    """

    def bind(self, ip: str, port: int) -> bool:
        """Bind a UDP socket on ``(ip, port)`` now; False if the port is taken."""
        ...

    def bind_tcp(self, ip: str, port: int) -> bool:
        """Bind and listen on a TCP socket on ``(ip, port)`` now (the relayed address
        of an RFC 6062 TCP allocation); False if the port is taken."""
        ...

    def close(self, relay: Address) -> None:
        """Close the socket bound on ``relay`` (UDP or TCP)."""
        ...


@final
@dataclass(slots=True)
class SendToClient:
    """Send ``data`` (a STUN or ChannelData message) to the client on ``five_tuple``:
    over UDP to ``five_tuple[1]`` from the local endpoint ``five_tuple[2]`` (a
    CHANGE-REQUEST answer names another local endpoint, a RESPONSE-PORT answer another
    client port), over TCP/TLS on that 5-tuple's connection."""

    five_tuple: FiveTuple
    data: bytes


class PeerRoute(NamedTuple):
    """Where data for a peer goes: from the relay socket bound on ``relay`` to ``peer``.
    A channel keeps its route, so relaying its ChannelData builds no new one."""

    relay: Address
    peer: Address


#: Send ``data`` as one UDP datagram along ``route``. A plain ``(route, data)`` tuple:
#: the relay hot path builds one per packet, and a tuple is the cheapest record there.
SendToPeer: TypeAlias = tuple[PeerRoute, bytes]


def send_to_peer(relay: Address, peer: Address, data: bytes) -> SendToPeer:
    """The :data:`SendToPeer` effect for ``data`` from ``relay`` to ``peer``."""
    return (PeerRoute(relay, peer), data)


@final
@dataclass(slots=True)
class Event:
    """Something an operator wants in the log: an allocation's lifecycle (created,
    refreshed, permission or channel added, ended with its duration and traffic), or a
    refused or failed request (bounded in rate by the core). ``fields`` hold no secret:
    never a password, key, MESSAGE-INTEGRITY or REST secret. The shell logs it."""

    name: str
    fields: dict[str, object]


@final
@dataclass(slots=True)
class ConnectToPeer:
    """RFC 6062 §5.2: open a TCP connection from the relayed address ``relay`` to
    ``peer`` for the peer connection ``cid``, and tell ``Server.tcp_peer_connected``
    whether it worked. The core keeps the deadline: a ``CloseTcp`` ends a slow try."""

    cid: int
    relay: Address
    peer: Address


@final
@dataclass(slots=True)
class SpliceTcp:
    """RFC 6062 §5.4: the client's data connection on ``five_tuple`` now carries raw
    bytes to and from the peer connection ``cid``, with back-pressure both ways; when
    either side ends, tell ``Server.tcp_connection_ended``."""

    cid: int
    five_tuple: FiveTuple


@final
@dataclass(slots=True)
class CloseTcp:
    """Close the peer connection ``cid`` (or stop trying to open it), and its data
    connection if it has one."""

    cid: int


Effect: TypeAlias = SendToClient | SendToPeer | Event | ConnectToPeer | SpliceTcp | CloseTcp

__all__ = [
    "Address",
    "CloseTcp",
    "ConnectToPeer",
    "Effect",
    "Event",
    "FiveTuple",
    "PeerRoute",
    "RelayOpener",
    "SendToClient",
    "SendToPeer",
    "SpliceTcp",
    "send_to_peer",
]
