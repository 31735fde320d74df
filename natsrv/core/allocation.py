"""TURN allocation state: relayed addresses, permissions, channels, and relay ports.

RFC 8656 §6 (an allocation: its 5-tuple, authentication information, one relayed
transport address per family with its own time-to-expiry, permissions, channels),
§7.2 (choosing relay ports: EVEN-PORT, reservations and RESERVATION-TOKEN),
§9 (permissions are per peer IP address, port ignored, 300 s),
§12 (a channel binding is unique both ways: one channel number <-> one peer transport
address, within one allocation; 600 s); RFC 6062 §5 (the peer connections of a TCP
allocation, each with its CONNECTION-ID and state).

Everything here is plain data with small transitions; times are absolute (``now``
values), compared lazily, so nothing needs a timer per object. ``TurnServer`` in
``turn.py`` owns the tables that index these objects.
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass, field

from ..stun.constants import FAMILY_IPV4, FAMILY_IPV6
from ..stun.framing import CHANNEL_MAX, CHANNEL_MIN
from .effects import Address, FiveTuple, PeerRoute, RelayOpener

#: Address families as the core names them; RFC 8656 §18.6 codes map onto them.
IPV4 = 4
IPV6 = 6
FAMILY_CODES = {FAMILY_IPV4: IPV4, FAMILY_IPV6: IPV6}
FAMILY_CODE_OF = {IPV4: FAMILY_IPV4, IPV6: FAMILY_IPV6}


def family_of(ip: str) -> int:
    """The family an address is encoded in on the wire: IPv6 iff it has a colon
    (so ``::ffff:192.0.2.1`` is IPv6, as its XOR-PEER-ADDRESS encoding is)."""
    return IPV6 if ":" in ip else IPV4


@dataclass(slots=True, eq=False)
class Relay:
    """One relayed transport address of an allocation (RFC 8656 §6)."""

    address: Address  #: bound on this server
    public: Address  #: advertised in XOR-RELAYED-ADDRESS (external IP mapping applied)
    family: int
    expires_at: float


@dataclass(slots=True, eq=False)
class Channel:
    """A channel binding (RFC 8656 §12): ``number`` <-> ``peer`` through ``relay``."""

    number: int
    peer: Address
    relay: Relay
    expires_at: float
    #: What ChannelData on this channel is sent along (kept with ``relay``).
    route: PeerRoute = field(init=False)

    def __post_init__(self) -> None:
        self.route = PeerRoute(self.relay.address, self.peer)


#: States of an RFC 6062 peer connection.
CONNECTING = 0  #: Connect sent the shell to connect; the request waits for the outcome
AWAITING_BIND = 1  #: connected (or accepted); the client's ConnectionBind is due
BOUND = 2  #: spliced to the client's data connection


@dataclass(slots=True, eq=False)
class TcpConnection:
    """A peer TCP connection of a TCP allocation (RFC 6062 §5.2-5.4)."""

    cid: int  #: its CONNECTION-ID
    alloc: Allocation
    peer: Address
    state: int
    #: When the connect attempt or the wait for ConnectionBind gives up (inf once bound).
    deadline: float
    #: The Connect request to answer once the shell reports (RFC 6062 §5.2), with the
    #: keys that sign the answer.
    tid: bytes = b""
    keys: tuple[bytes | None, bytes | None] = (None, None)
    #: The client's data connection, once bound.
    data: FiveTuple | None = None


@dataclass(slots=True, eq=False)
class Allocation:
    """State of one allocation, identified by its 5-tuple (RFC 8656 §6)."""

    five_tuple: FiveTuple
    username: str
    relays: dict[int, Relay]  #: family -> relay; two for a dual allocation (§7.2)
    #: peer IP -> expiry (RFC 8656 §9: permissions are per IP, the port is ignored).
    permissions: dict[str, float] = field(default_factory=dict)
    channels: dict[int, Channel] = field(default_factory=dict)
    peer_channels: dict[Address, Channel] = field(default_factory=dict)
    #: When ``TurnServer.expire`` next looks at this allocation (a heap entry exists).
    wake_at: float = float("inf")
    # Retransmissions (RFC 8489 §6.3.1: remember responses for 40 s): the Allocate
    # that created the allocation, and the last other request answered on it.
    allocate_tid: bytes = b""
    allocate_response: bytes = b""
    allocate_until: float = 0.0
    last_tid: bytes = b""
    last_method: int = -1
    last_response: bytes = b""
    last_until: float = 0.0
    # Bandwidth token bucket (bytes), shared by both directions.
    tokens: float = 0.0
    refilled_at: float = 0.0
    dropped_bytes: int = 0
    #: When it was created (the core's clock), and what it relayed each way: payload
    #: bytes and datagrams to peers (ChannelData, Send) and to the client.
    created_at: float = 0.0
    to_peer_packets: int = 0
    to_peer_bytes: int = 0
    to_client_packets: int = 0
    to_client_bytes: int = 0
    #: RFC 6062: a TCP allocation (its relays listen and connect over TCP), and its
    #: peer connections by CONNECTION-ID.
    tcp: bool = False
    connections: dict[int, TcpConnection] = field(default_factory=dict)

    def relay_for(self, peer_ip: str) -> Relay | None:
        """The relay that talks to a peer of this IP's family, if the allocation has one."""
        return self.relays.get(family_of(peer_ip))

    def permitted(self, peer_ip: str, now: float) -> bool:
        return self.permissions.get(peer_ip, 0.0) > now

    def live_channel(self, number: int, now: float) -> Channel | None:
        channel = self.channels.get(number)
        if channel is None or channel.expires_at <= now:
            return None
        return channel

    def live_peer_channel(self, peer: Address, now: float) -> Channel | None:
        channel = self.peer_channels.get(peer)
        if channel is None or channel.expires_at <= now:
            return None
        return channel

    def bind_channel(self, number: int, peer: Address, relay: Relay, expires_at: float) -> None:
        """Create or refresh the binding; the caller has checked the RFC 8656 §12.2 rules."""
        channel = self.channels.get(number)
        if channel is not None and channel.peer == peer:
            channel.expires_at = expires_at
            if channel.relay is not relay:
                channel.relay = relay
                channel.route = PeerRoute(relay.address, peer)
            return
        self._unbind(number)
        old = self.peer_channels.get(peer)
        if old is not None:
            self._unbind(old.number)
        channel = Channel(number, peer, relay, expires_at)
        self.channels[number] = channel
        self.peer_channels[peer] = channel

    def _unbind(self, number: int) -> None:
        channel = self.channels.pop(number, None)
        if channel is not None and self.peer_channels.get(channel.peer) is channel:
            del self.peer_channels[channel.peer]

    def purge(self, now: float) -> None:
        """Forget expired permissions and channels, and those of expired relays."""
        families = self.relays.keys()
        for ip in [ip for ip, t in self.permissions.items() if t <= now]:
            del self.permissions[ip]
        for ip in [ip for ip in self.permissions if family_of(ip) not in families]:
            del self.permissions[ip]
        for number in [
            n
            for n, ch in self.channels.items()
            if ch.expires_at <= now or ch.relay.family not in families
        ]:
            self._unbind(number)

    def next_deadline(self) -> float:
        """The earliest time something of this allocation expires."""
        times = [r.expires_at for r in self.relays.values()]
        times.extend(self.permissions.values())
        times.extend(ch.expires_at for ch in self.channels.values())
        times.extend(c.deadline for c in self.connections.values())
        return min(times, default=float("inf"))

    def spend(self, size: int, now: float, rate: float, burst: float) -> bool:
        """Token bucket (RFC 8656 §5: discard traffic over the bandwidth quota)."""
        tokens = self.tokens + (now - self.refilled_at) * rate
        if tokens > burst:
            tokens = burst
        self.refilled_at = now
        if size > tokens:
            self.tokens = tokens
            self.dropped_bytes += size
            return False
        self.tokens = tokens - size
        return True


_BLOCK = struct.Struct(">1024I")


class _SecretPool:
    """``secrets.randbelow`` without a getrandom() system call per use: 32-bit numbers
    come from ``secrets.token_bytes`` in blocks and are used once each."""

    __slots__ = ("_values",)

    def __init__(self) -> None:
        self._values: list[int] = []

    def randbelow(self, n: int) -> int:
        if not 0 < n <= 1 << 32:
            return secrets.randbelow(n)
        limit = (1 << 32) - (1 << 32) % n  # rejection sampling: no modulo bias
        values = self._values
        while True:
            if not values:
                values.extend(_BLOCK.unpack(secrets.token_bytes(_BLOCK.size)))
            value = values.pop()
            if value < limit:
                return value % n


_POOL = _SecretPool()


@dataclass(slots=True, eq=False)
class Reservation:
    """A relay port held for a later Allocate with RESERVATION-TOKEN (RFC 8656 §7.2)."""

    token: bytes
    relay: Address
    expires_at: float
    #: Who asked for it: a reservation counts against that user's quota until it is
    #: claimed or expires.
    username: str = ""


class RelayPorts:
    """Picks, binds, reserves and releases relay ports within ``[low, high]``.

    Ports are tried from a ``secrets``-random starting point onwards (wrapping), so
    relayed addresses are not predictable (as RFC 6056 argues for ports); ports this
    pool already holds are skipped without asking the opener, and at most
    ``max_attempts`` binds are tried per request before giving up (508).
    """

    __slots__ = ("high", "in_use", "low", "max_attempts", "opener", "reservations")

    def __init__(self, opener: RelayOpener, low: int, high: int, max_attempts: int = 64) -> None:
        if not 1 <= low <= high <= 65535:
            raise ValueError(f"bad relay port range {low}-{high}")
        self.opener = opener
        self.low = low
        self.high = high
        self.max_attempts = max_attempts
        self.in_use: set[Address] = set()
        self.reservations: dict[bytes, Reservation] = {}

    def open(
        self, ip: str, *, even: bool = False, pair: bool = False, tcp: bool = False
    ) -> int | None:
        """Bind a relay port on ``ip`` and return it, or None when none is free.

        ``even``: the port is even. ``pair``: it is even and port+1 is bound too (the
        caller reserves it with ``reserve``). ``tcp``: a listening TCP socket (RFC
        6062), not a UDP one.
        """
        if even or pair:
            first = self.low + (self.low & 1)
            last = self.high - 1 if pair else self.high
            step = 2
        else:
            first, last, step = self.low, self.high, 1
        if last < first:
            return None
        count = (last - first) // step + 1
        start = _POOL.randbelow(count)
        in_use = self.in_use
        opener = self.opener
        attempts = 0
        for i in range(count):
            port = first + ((start + i) % count) * step
            if (ip, port) in in_use or (pair and (ip, port + 1) in in_use):
                continue
            attempts += 1
            if attempts > self.max_attempts:
                return None
            if not (opener.bind_tcp(ip, port) if tcp else opener.bind(ip, port)):
                continue
            if pair and not opener.bind(ip, port + 1):
                opener.close((ip, port))
                continue
            in_use.add((ip, port))
            if pair:
                in_use.add((ip, port + 1))
            return port
        return None

    def close(self, relay: Address) -> None:
        if relay in self.in_use:
            self.in_use.discard(relay)
            self.opener.close(relay)

    def reserve(self, relay: Address, expires_at: float, username: str = "") -> Reservation:
        """Hold an already bound ``relay`` under a fresh 8-byte token for ``username``."""
        token = secrets.token_bytes(8)
        while token in self.reservations:  # pragma: no cover - 2**-64
            token = secrets.token_bytes(8)
        reservation = Reservation(token, relay, expires_at, username)
        self.reservations[token] = reservation
        return reservation

    def claim(self, token: bytes, now: float) -> Reservation | None:
        """The live reservation for ``token``, removed from the table (the port stays
        bound: it now belongs to the caller), or None."""
        reservation = self.reservations.get(token)
        if reservation is None or reservation.expires_at <= now:
            return None
        del self.reservations[token]
        return reservation

    def peek(self, token: bytes, now: float) -> Reservation | None:
        reservation = self.reservations.get(token)
        if reservation is None or reservation.expires_at <= now:
            return None
        return reservation

    def release(self, reservation: Reservation) -> bool:
        """Drop an unclaimed reservation and close its port; False if already claimed."""
        if self.reservations.get(reservation.token) is not reservation:
            return False
        del self.reservations[reservation.token]
        self.close(reservation.relay)
        return True


__all__ = [
    "AWAITING_BIND",
    "BOUND",
    "CHANNEL_MAX",
    "CHANNEL_MIN",
    "CONNECTING",
    "FAMILY_CODES",
    "FAMILY_CODE_OF",
    "IPV4",
    "IPV6",
    "Allocation",
    "Channel",
    "Relay",
    "RelayPorts",
    "Reservation",
    "TcpConnection",
    "family_of",
]
