"""RFC 6062 TCP allocations, sans-IO: Connect, ConnectionBind, ConnectionAttempt, and
the life of each peer connection.

A TCP allocation (REQUESTED-TRANSPORT 6 on a TCP or TLS control connection) has a
listening TCP socket as its relayed address. Its peer connections come two ways:

* **Connect** (§5.2): the client names a peer; the policy must allow it (403), a
  connection to it must not exist yet (446), the counts must have room (508). The core
  asks the shell to connect (``ConnectToPeer``) and answers later: success with
  CONNECTION-ID when ``connected(cid, True)`` comes, 447 when it fails or when
  ``connect_timeout`` passes first (the core's deadline; the shell just stops).
* **Inbound** (§5.3): a peer connects to the relayed address. Without a permission for
  its IP (or against the policy, or over the counts) the shell closes it; else the
  client gets a ConnectionAttempt indication with XOR-PEER-ADDRESS and CONNECTION-ID.

Either way the client then opens a new connection and sends ConnectionBind (§5.4) with
the CONNECTION-ID within ``bind_timeout`` (30 s by the RFC), authenticated as the
allocation's user; the core answers and tells the shell to splice the two connections
(``SpliceTcp``). Past the deadline the peer connection is closed (``CloseTcp``).

Bounds: per allocation at most ``max_pending`` connections waiting (connecting or for
their ConnectionBind) and ``max_per_allocation`` in all; ``max_connections`` for the
server. Every peer connection ends with its allocation or its data connection.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from ..stun.attributes import ErrorCodeValue
from ..stun.constants import REASONS, Attr, MessageClass, Method
from ..stun.errors import (
    AllocationMismatch,
    BadRequest,
    ConnectionAlreadyExists,
    Forbidden,
    InsufficientCapacity,
    PeerAddressFamilyMismatch,
    WrongCredentials,
)
from ..stun.message import Message, encode_message
from .allocation import AWAITING_BIND, BOUND, CONNECTING, Allocation, TcpConnection
from .effects import Address, CloseTcp, ConnectToPeer, Effect, FiveTuple, SendToClient, SpliceTcp

if TYPE_CHECKING:
    from .auth import Credentials
    from .turn import TurnServer

_INF = float("inf")

#: Counters kept for TCP allocations (all start at 0).
COUNTERS = (
    "tcp_peer_connections",  #: peer connections made (Connect) or accepted (inbound)
    "tcp_connect_failures",  #: Connects answered 447 (refused, unreachable, timed out)
    "tcp_bind_timeouts",  #: peer connections closed: no ConnectionBind in time
    "tcp_inbound_refused",  #: inbound peer connections closed: no permission, policy, counts
)


class TcpRelay:
    """The peer connections of every TCP allocation of a :class:`TurnServer`."""

    def __init__(self, turn: TurnServer) -> None:
        self.turn = turn
        #: Every peer connection by CONNECTION-ID.
        self.connections: dict[int, TcpConnection] = {}
        #: Bound peer connections by the 5-tuple of the client's data connection.
        self.by_data: dict[FiveTuple, TcpConnection] = {}
        for name in COUNTERS:
            turn.counters.setdefault(name, 0)

    # -- requests (called from TurnServer.handle, authenticated) ---------------------------
    def connect(
        self,
        msg: Message,
        five_tuple: FiveTuple,
        alloc: Allocation | None,
        creds: Credentials,
        now: float,
        effects: list[Effect],
    ) -> list[tuple[int, Any]] | None:
        """RFC 6062 §5.2. None: the answer comes when the shell reports."""
        turn = self.turn
        s = turn.settings
        if alloc is None:
            raise AllocationMismatch()
        if alloc.username != creds.username:
            raise WrongCredentials()
        if not alloc.tcp:
            raise BadRequest("Connect needs a TCP allocation")
        peer = msg.get(Attr.XOR_PEER_ADDRESS)
        if peer is None:
            raise BadRequest("XOR-PEER-ADDRESS is missing")
        relay = alloc.relay_for(peer[0])
        if relay is None:
            raise PeerAddressFamilyMismatch()
        if not turn.policy.allows(peer[0], peer[1]):
            turn.counters["policy_refusals"] += 1
            raise Forbidden()
        if any(c.peer == peer for c in alloc.connections.values()):
            raise ConnectionAlreadyExists()
        self._check_room(alloc)
        conn = self._add(alloc, peer, CONNECTING, now + s.tcp_connect_timeout)
        conn.tid = msg.transaction_id
        conn.keys = (creds.sha1_key, creds.sha256_key)
        effects.append(ConnectToPeer(conn.cid, relay.address, peer))
        turn.schedule(alloc)
        return None

    def connection_bind(
        self,
        msg: Message,
        five_tuple: FiveTuple,
        alloc: Allocation | None,
        creds: Credentials,
        now: float,
        effects: list[Effect],
    ) -> list[tuple[int, Any]]:
        """RFC 6062 §5.4: on a new TCP/TLS connection, bind it to a peer connection."""
        if five_tuple[0] not in ("tcp", "tls") or alloc is not None or five_tuple in self.by_data:
            raise BadRequest("ConnectionBind needs a new TCP or TLS connection")
        cid = msg.get(Attr.CONNECTION_ID)
        conn = self.connections.get(cid) if cid is not None else None
        if conn is None or conn.state != AWAITING_BIND or conn.deadline <= now:
            raise BadRequest("Unknown CONNECTION-ID")
        if conn.alloc.username != creds.username:
            raise WrongCredentials()
        conn.state = BOUND
        conn.deadline = _INF
        conn.data = five_tuple
        self.by_data[five_tuple] = conn
        effects.append(SpliceTcp(conn.cid, five_tuple))
        return []

    # -- what the shell reports -----------------------------------------------------------
    def peer_arrived(
        self, relay: Address, peer: Address, now: float
    ) -> tuple[int | None, list[Effect]]:
        """RFC 6062 §5.3: a peer connected to the relayed address ``relay``. Returns its
        CONNECTION-ID and the ConnectionAttempt for the client, or None: close it."""
        turn = self.turn
        entry = turn.relay_entry(relay)
        effects: list[Effect] = []
        if entry is None:
            self._refuse()
            return None, effects
        alloc, relay_state = entry
        if (
            not alloc.tcp
            or relay_state.expires_at <= now
            or not alloc.permitted(peer[0], now)
            or not turn.peer_allowed(peer)
            or not self._has_room(alloc)
        ):
            self._refuse()
            return None, effects
        conn = self._add(alloc, peer, AWAITING_BIND, now + turn.settings.tcp_bind_timeout)
        attempt = encode_message(
            Method.CONNECTION_ATTEMPT, MessageClass.INDICATION, secrets.token_bytes(12),
            [(Attr.XOR_PEER_ADDRESS, peer), (Attr.CONNECTION_ID, conn.cid)], fingerprint=True,
        )  # fmt: skip
        effects.append(SendToClient(alloc.five_tuple, attempt))
        turn.schedule(alloc)
        return conn.cid, effects

    def connected(self, cid: int, ok: bool, now: float) -> list[Effect]:
        """The shell's connect attempt for ``cid`` ended: answer the Connect."""
        conn = self.connections.get(cid)
        if conn is None or conn.state != CONNECTING:
            return [CloseTcp(cid)]  # given up already (timeout, allocation gone)
        alloc = conn.alloc
        if not ok:
            self._drop(conn)
            self.turn.counters["tcp_connect_failures"] += 1
            return [self._answer_connect(conn, 447), CloseTcp(cid)]
        conn.state = AWAITING_BIND
        conn.deadline = now + self.turn.settings.tcp_bind_timeout
        # Data may now come from this peer: a permission for its IP, as for CreatePermission.
        if conn.peer[0] in alloc.permissions or (
            len(alloc.permissions) < self.turn.settings.max_permissions
        ):
            alloc.permissions[conn.peer[0]] = max(
                alloc.permissions.get(conn.peer[0], 0.0),
                now + self.turn.settings.permission_lifetime,
            )
        self.turn.schedule(alloc)
        return [self._answer_connect(conn, None)]

    def ended(self, cid: int, to_peer: int = 0, to_client: int = 0) -> list[Effect]:
        """The shell says the peer or the data connection of ``cid`` closed, after
        relaying these many bytes (counted in the allocation's traffic)."""
        conn = self.connections.get(cid)
        if conn is not None:
            self._drop(conn)
            alloc = conn.alloc
            alloc.to_peer_bytes += to_peer
            alloc.to_client_bytes += to_client
        return [CloseTcp(cid)]

    def data_connection_closed(self, five_tuple: FiveTuple) -> list[Effect]:
        conn = self.by_data.get(five_tuple)
        if conn is None:
            return []
        self._drop(conn)
        return [CloseTcp(conn.cid)]

    # -- time and the end of allocations --------------------------------------------------
    def expire(self, alloc: Allocation, now: float, effects: list[Effect]) -> None:
        """Give up the connect attempts and binds of ``alloc`` that are past due."""
        for conn in [c for c in alloc.connections.values() if c.deadline <= now]:
            self._drop(conn)
            if conn.state == CONNECTING:
                self.turn.counters["tcp_connect_failures"] += 1
                effects.append(self._answer_connect(conn, 447))
            else:
                self.turn.counters["tcp_bind_timeouts"] += 1
            effects.append(CloseTcp(conn.cid))

    def close_all(self, alloc: Allocation, effects: list[Effect]) -> None:
        """The allocation ends: so do its peer connections (RFC 6062 §5)."""
        for conn in list(alloc.connections.values()):
            self._drop(conn)
            effects.append(CloseTcp(conn.cid))

    # -- helpers ----------------------------------------------------------------------------
    def _has_room(self, alloc: Allocation) -> bool:
        s = self.turn.settings
        pending = sum(1 for c in alloc.connections.values() if c.state != BOUND)
        return (
            pending < s.tcp_max_pending
            and len(alloc.connections) < s.tcp_max_per_allocation
            and len(self.connections) < s.tcp_max_connections
        )

    def _check_room(self, alloc: Allocation) -> None:
        if not self._has_room(alloc):
            raise InsufficientCapacity("Too many peer connections")

    def _refuse(self) -> None:
        self.turn.counters["tcp_inbound_refused"] += 1

    def _add(self, alloc: Allocation, peer: Address, state: int, deadline: float) -> TcpConnection:
        cid = secrets.randbits(32)
        while cid == 0 or cid in self.connections:  # pragma: no cover - rare
            cid = secrets.randbits(32)
        conn = TcpConnection(cid, alloc, peer, state, deadline)
        self.connections[cid] = conn
        alloc.connections[cid] = conn
        self.turn.counters["tcp_peer_connections"] += 1
        return conn

    def _drop(self, conn: TcpConnection) -> None:
        self.connections.pop(conn.cid, None)
        conn.alloc.connections.pop(conn.cid, None)
        if conn.data is not None and self.by_data.get(conn.data) is conn:
            del self.by_data[conn.data]

    def _answer_connect(self, conn: TcpConnection, code: int | None) -> SendToClient:
        """The deferred answer to the Connect of ``conn``: success with CONNECTION-ID,
        or the error ``code``; signed as the request was."""
        five_tuple = conn.alloc.five_tuple
        if code is None:
            cls, result = MessageClass.SUCCESS, "success"
            attrs: list[tuple[int, Any]] = [(Attr.CONNECTION_ID, conn.cid)]
        else:
            cls, result = MessageClass.ERROR, str(code)
            attrs = [(Attr.ERROR_CODE, ErrorCodeValue(code, REASONS[code]))]
        key, key_sha256 = conn.keys
        data = encode_message(Method.CONNECT, cls, conn.tid, attrs, key=key,
                              key_sha256=key_sha256, fingerprint=True)  # fmt: skip
        self.turn.requests[(Method.CONNECT, five_tuple[0], result)] += 1
        return SendToClient(five_tuple, data)


__all__ = ["COUNTERS", "TcpRelay"]
