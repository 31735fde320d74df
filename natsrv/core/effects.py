"""What the TURN core asks the trio shell to do, and what it needs from the shell.

The core (``natsrv.core.turn``) never touches a socket: ``TurnServer.handle`` and
``TurnServer.expire`` return a list of the effects below, which ``natsrv/net`` carries
out in order. The one thing the core does synchronously through the shell is binding
relay sockets (``RelayOpener``), because RFC 8656 §7.2 needs to know at once whether a
port is free (EVEN-PORT, RESERVATION-TOKEN, 508 Insufficient Capacity).

Effects are plain slotted records, not frozen ones: a frozen dataclass costs twice as
much to create, and the core creates several per request.

Addresses are ``(ip, port)`` with the IP in the text form ``socket`` uses (dotted IPv4,
RFC 5952 IPv6). A ``FiveTuple`` identifies an allocation (RFC 8656 §2, §6):
``(transport, client address, server local address)`` with transport ``"udp"``,
``"tcp"`` or ``"tls"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeAlias

Address: TypeAlias = tuple[str, int]
FiveTuple: TypeAlias = tuple[str, Address, Address]


class RelayOpener(Protocol):
    """Binds and closes relay UDP sockets for the core (implemented by net/relay.py).

    ``bind`` is called for every relay port the core wants, including the second port
    of an EVEN-PORT reservation (RFC 8656 §7.2), and ``close`` exactly once for every
    address ``bind`` returned True for.
    """

    def bind(self, ip: str, port: int) -> bool:
        """Bind a UDP socket on ``(ip, port)`` now; False if the port is taken."""
        ...

    def close(self, relay: Address) -> None:
        """Close the socket bound on ``relay``."""
        ...


@dataclass(slots=True)
class SendToClient:
    """Send ``data`` (a STUN message) to the client on ``five_tuple``."""

    five_tuple: FiveTuple
    data: bytes


@dataclass(slots=True)
class SendToPeer:
    """Send ``data`` as one UDP datagram from the relay socket ``relay`` to ``peer``."""

    relay: Address
    peer: Address
    data: bytes


@dataclass(slots=True)
class RelayOpened:
    """An allocation now owns ``relay`` (already bound through ``RelayOpener.bind``):
    start reading it; datagrams go to ``TurnServer.peer_to_client``."""

    relay: Address
    five_tuple: FiveTuple


@dataclass(slots=True)
class RelayClosed:
    """``relay`` no longer belongs to an allocation: stop reading it. The core has
    already called ``RelayOpener.close`` for it."""

    relay: Address


@dataclass(slots=True)
class CloseConnection:
    """Close the TCP/TLS connection of ``five_tuple`` (reserved; not emitted yet)."""

    five_tuple: FiveTuple


Effect: TypeAlias = SendToClient | SendToPeer | RelayOpened | RelayClosed | CloseConnection

__all__ = [
    "Address",
    "CloseConnection",
    "Effect",
    "FiveTuple",
    "RelayClosed",
    "RelayOpened",
    "RelayOpener",
    "SendToClient",
    "SendToPeer",
]
