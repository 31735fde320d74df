"""Carries out the core's effects: the one place where the trio shell sends to clients
and peers.

The listeners (``udp.py``, ``tcp.py``) and the relay reader (``relay.py``) hand every
datagram and frame to ``Server.receive`` / ``Server.receive_from_peer`` and pass what
comes back to :meth:`Shell.apply` (the UDP listener sends its own direct answers
inline, which is the same operation without the call). Sends never wait: a full socket
buffer or stream queue drops the message and counts it, as a router would.
"""

from __future__ import annotations

import _socket
import errno
import socket
import time
from collections.abc import Callable, Iterable, MutableMapping
from types import ModuleType
from typing import TYPE_CHECKING

import trio

from ..core.effects import Address, Effect, Event, FiveTuple, SendToClient
from ..core.server import Server
from ..logs import log_event
from ..metrics import Metrics
from .tcp_relay import TcpRelayShell

if TYPE_CHECKING:
    from .dtls import DtlsEndpoint
    from .fastpath import NativeForwarding
    from .relay import RelaySockets
    from .tcp import StreamConnection

_UDP = "udp"
_DTLS = "dtls"


#: Send errors that mean "no room now" (the socket buffer, or the interface queue under
#: overload): the datagram is dropped, as a router would.
NO_ROOM = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS})


def count_send_failure(counters: MutableMapping[str, int], exc: OSError) -> None:
    """Count a datagram a ``sendto`` refused: no room (``udp_send_dropped``) or another
    error such as an unreachable network (``udp_send_errors``). Both are drops in
    ``natsrv_dropped_datagrams_total``; neither ever stops the caller."""
    counters["udp_send_dropped" if exc.errno in NO_ROOM else "udp_send_errors"] += 1


class SteadyClock:
    """Unix time that never steps: the wall clock read once, at construction, advanced
    by the monotonic clock since.

    Every lifetime in the core (allocations, permissions, channels, reservations,
    nonces, rate limits) is a difference of two ``now`` values, so a system clock set
    back an hour must not keep allocations alive for an extra hour, nor one set forward
    expire them all at once. ``CLOCK_MONOTONIC`` is slewed by NTP but never stepped, so
    this clock follows real time at the rate NTP keeps; a step of the system clock
    (``date -s``, a VM resumed, a first NTP sync) is ignored until the next restart.
    REST usernames carry unix expiry times, so start the server once the clock is set
    (systemd: after ``time-sync.target``).
    """

    __slots__ = ("_offset",)

    def __init__(self) -> None:
        self._offset = time.time() - time.monotonic()

    def __call__(self) -> float:
        return self._offset + time.monotonic()


class Shell:
    """The sockets and connections effects are carried out on, and the server's clock.

    ``senders`` maps each local UDP endpoint to the socket bound on it (a CHANGE-REQUEST
    answer leaves from another endpoint than the request arrived on); ``connections``
    maps a stream's 5-tuple to its connection; ``clock`` is where the core's ``now``
    comes from: unix time (REST usernames and nonces are unix times) that never steps
    (:class:`SteadyClock`), so lifetimes do not jump with the system clock.
    """

    def __init__(
        self,
        server: Server,
        relays: RelaySockets,
        metrics: Metrics,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.server = server
        self.relays = relays
        self.metrics = metrics
        self.counters = metrics.counters
        self.clock = clock if clock is not None else SteadyClock()
        self.senders: dict[Address, socket.socket] = {}
        self.connections: dict[FiveTuple, StreamConnection] = {}
        #: RFC 6062 peer connections (net/tcp_relay.py).
        self.tcp_relay = TcpRelayShell(self)
        #: DTLS (net/dtls.py): the endpoints, and the one holding each session.
        self.dtls_endpoints: list[DtlsEndpoint] = []
        self.dtls_sessions: dict[FiveTuple, DtlsEndpoint] = {}
        #: The native data path (``natsrv._fastpath``) and its routing table, when
        #: ``fastpath.install`` chose it; None on the pure-Python path.
        self.native: ModuleType | None = None
        self.forwarding: NativeForwarding | None = None

    def apply(self, effects: Iterable[Effect]) -> None:
        for effect in effects:
            if type(effect) is SendToClient:
                self.send_to_client(effect.five_tuple, effect.data)
            elif type(effect) is Event:
                log_event(effect.name, effect.fields)
            elif isinstance(effect, tuple):  # SendToPeer, a plain (route, data) tuple
                route, data = effect
                sock = self.relays.sockets.get(route.relay)
                if sock is not None:
                    self.sendto(sock, data, route.peer)
            else:  # RFC 6062: ConnectToPeer, SpliceTcp, CloseTcp
                self.tcp_relay.apply(effect)

    def send_to_client(self, five_tuple: FiveTuple, data: bytes) -> None:
        transport = five_tuple[0]
        if transport == _UDP:
            sock = self.senders.get(five_tuple[2])
            if sock is not None:
                self.sendto(sock, data, five_tuple[1])
        elif transport == _DTLS:
            endpoint = self.dtls_sessions.get(five_tuple)
            if endpoint is not None:
                endpoint.send(five_tuple, data)
        else:
            conn = self.connections.get(five_tuple)
            if conn is not None and not conn.send_nowait(data):
                self.counters["stream_send_dropped"] += 1

    def sendto(self, sock: socket.socket | _socket.socket, data: bytes, dest: Address) -> None:
        try:
            sock.sendto(data, dest)
        except OSError as exc:
            count_send_failure(self.counters, exc)

    # -- connections and time ------------------------------------------------------------
    def connection_opened(self, conn: StreamConnection) -> None:
        self.connections[conn.five_tuple] = conn

    def connection_closed(self, conn: StreamConnection) -> None:
        self.connections.pop(conn.five_tuple, None)
        self.apply(self.server.connection_closed(conn.five_tuple, self.clock()))

    async def run_timers(self) -> None:
        """Call ``Server.expire`` when the core's next deadline comes (at least once a
        second, so a wall-clock step is noticed)."""
        server = self.server
        while True:
            now = self.clock()
            deadline = server.next_deadline()
            delay = 1.0 if deadline is None else min(max(deadline - now, 0.0), 1.0)
            await trio.sleep(delay)
            self.apply(server.expire(self.clock()))


__all__ = ["NO_ROOM", "Shell", "SteadyClock", "count_send_failure"]
