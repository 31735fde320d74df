"""The trio shell around the TURN core: relay sockets, client connections, timers.

The sans-IO :class:`~natsrv.core.turn.TurnServer` decides; this module moves bytes.
Relay sockets are plain non-blocking UDP sockets bound by :meth:`RelaySockets.bind`
(the core picks the port) and registered in one ``epoll`` set of their own; a single
task waits for that set to be readable and drains every ready socket in batches, the
same way the listeners do (DESIGN.md, "Concurrency and scale"). So an allocation costs
no task, no trio registration and no cancellation: a socket, one ``epoll_ctl`` to add
it and one to remove it. ChannelData in both directions takes the core's fast paths,
which return plain tuples: no effect objects, no awaits per datagram.
"""

from __future__ import annotations

import _socket
import logging
import select
import socket
import time
from typing import Any

import trio

from ..core.effects import RelayClosed, RelayOpened, SendToClient, SendToPeer
from ..metrics import Metrics
from ..stun.constants import MessageClass, Method
from ..stun.errors import ParseError
from ..stun.framing import encode_channel_data
from ..stun.message import decode_untrusted
from .tcp import StreamConnection
from .udp import RECV_SIZE

log = logging.getLogger("natsrv.relay")

Address = tuple[str, int]
FiveTuple = tuple[str, Address, Address]
BATCH = 64  #: datagrams read from one relay socket before the next ready one
MAX_EVENTS = 256  #: ready relay sockets taken per wake-up
_AF_INET = int(socket.AF_INET)
_AF_INET6 = int(socket.AF_INET6)
_UDP_NONBLOCK = int(socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)


class RelaySockets:
    """The core's RelayOpener: binds and closes relay sockets, and keeps them in the
    epoll set that :meth:`TurnShell.read_relays` waits on."""

    def __init__(self) -> None:
        self.sockets: dict[Address, _socket.socket] = {}
        #: fd -> (socket, relay address), for the sockets in ``epoll``.
        self.by_fd: dict[int, tuple[_socket.socket, Address]] = {}
        self.epoll = select.epoll()

    def bind(self, ip: str, port: int) -> bool:
        v6 = ":" in ip
        # The C socket type: the ``socket.socket`` subclass adds Python-level __init__
        # and close() that an allocate/delete cycle would pay for twice.
        sock = _socket.socket(_AF_INET6 if v6 else _AF_INET, _UDP_NONBLOCK)
        try:
            if v6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((ip, port))
            fd = sock.fileno()
            self.epoll.register(fd, select.EPOLLIN)
        except OSError:
            sock.close()
            return False
        self.sockets[(ip, port)] = sock
        self.by_fd[fd] = (sock, (ip, port))
        return True

    def close(self, relay: Address) -> None:
        sock = self.sockets.pop(relay, None)
        if sock is not None:
            self.by_fd.pop(sock.fileno(), None)
            sock.close()  # closing the only descriptor also takes it out of the epoll set

    def close_all(self) -> None:
        for relay in list(self.sockets):
            self.close(relay)
        self.epoll.close()


class TurnShell:
    """Carries out the TURN core's effects and feeds it datagrams, frames and time."""

    def __init__(
        self,
        turn: Any,
        relays: RelaySockets,
        senders: dict[Address, socket.socket],
        metrics: Metrics,
    ) -> None:
        self.turn = turn
        self.relays = relays
        self.senders = senders
        self.metrics = metrics
        self.connections: dict[FiveTuple, StreamConnection] = {}

    # -- effects -----------------------------------------------------------------------
    def apply(self, effects: list[Any]) -> None:
        for effect in effects:
            kind = type(effect)
            if kind is SendToClient:
                self.send_to_client(effect.five_tuple, effect.data)
            elif kind is SendToPeer:
                sock = self.relays.sockets.get(effect.relay)
                if sock is not None:
                    self._sendto(sock, effect.data, effect.peer)
            elif kind is RelayOpened or kind is RelayClosed:
                pass  # RelaySockets.bind and .close (called by the core) did the work
            else:
                close = getattr(effect, "five_tuple", None)
                conn = self.connections.get(close) if close is not None else None
                if conn is not None:
                    conn.closed = True
                    conn._send.close()

    def send_to_client(self, five_tuple: FiveTuple, data: bytes) -> None:
        transport, client, local = five_tuple
        if transport == "udp":
            sock = self.senders.get(local)
            if sock is not None:
                self._sendto(sock, data, client)
        else:
            conn = self.connections.get(five_tuple)
            if conn is not None and not conn.send_nowait(data):
                self.metrics.counters["stream_send_dropped"] += 1

    def _sendto(self, sock: socket.socket, data: bytes, dest: Address) -> None:
        try:
            sock.sendto(data, dest)
        except BlockingIOError:
            self.metrics.counters["udp_send_dropped"] += 1
        except OSError:
            self.metrics.counters["udp_send_errors"] += 1

    # -- client side -------------------------------------------------------------------
    def on_client_message(self, data: bytes, five_tuple: FiveTuple) -> None:
        """A STUN message (not a Binding request) or ChannelData from a client."""
        first = data[0]
        if 0x40 <= first <= 0x7F:
            if len(data) < 4:
                raise ParseError("short ChannelData")
            channel = (first << 8) | data[1]
            length = (data[2] << 8) | data[3]
            if 4 + length > len(data):
                raise ParseError("ChannelData length runs past the datagram")
            hop = self.turn.channel_to_peer(five_tuple, channel, length, time.time())
            if hop is not None:
                sock = self.relays.sockets.get(hop[0])
                if sock is not None:
                    self._sendto(sock, data[4 : 4 + length], hop[1])
            return
        msg = decode_untrusted(data)
        if msg.method == Method.BINDING and msg.cls != MessageClass.REQUEST:
            return
        self.apply(self.turn.handle(msg, five_tuple, time.time()))

    # -- peer side ---------------------------------------------------------------------
    async def read_relays(self) -> None:
        """Wait for any relay socket to be readable, then drain the ready ones."""
        relays = self.relays
        epoll_fd = relays.epoll.fileno()
        poll = relays.epoll.poll
        by_fd = relays.by_fd
        drain = self._drain
        wait_readable = trio.lowlevel.wait_readable
        while True:
            await wait_readable(epoll_fd)
            try:
                events = poll(0, MAX_EVENTS)
            except (OSError, ValueError):  # closed at shutdown
                return
            now = time.time()
            for fd, _ in events:
                entry = by_fd.get(fd)
                if entry is not None:
                    drain(entry[0], entry[1], now)

    def _drain(self, sock: socket.socket, relay: Address, now: float) -> None:
        turn = self.turn
        peer_to_client = turn.peer_to_client
        counters = self.metrics.counters
        recvfrom = sock.recvfrom
        for _ in range(BATCH):
            try:
                data, peer = recvfrom(RECV_SIZE)
            except BlockingIOError:
                return
            except OSError:
                counters["relay_recv_errors"] += 1
                continue
            if len(peer) > 2:
                peer = (peer[0], peer[1])
            hop = peer_to_client(relay, peer, len(data), now)
            if hop is None:
                counters["relay_dropped_no_permission"] += 1
                continue
            five_tuple, channel = hop
            if channel is not None:
                out = encode_channel_data(channel, data, stream=five_tuple[0] != "udp")
            else:
                try:
                    out = turn.data_indication(peer, data)
                except ValueError:  # too large for a Data indication
                    counters["relay_dropped_oversize"] += 1
                    continue
            self.send_to_client(five_tuple, out)

    # -- time and connections ----------------------------------------------------------
    async def run_timers(self) -> None:
        # The core's clock is wall time (REST usernames and nonces are unix times).
        while True:
            now = time.time()
            deadline = self.turn.next_deadline()
            delay = 1.0 if deadline is None else min(max(deadline - now, 0.0), 1.0)
            await trio.sleep(delay)
            self.apply(self.turn.expire(time.time()))

    def connection_opened(self, conn: StreamConnection) -> None:
        self.connections[("tls" if conn.tls else "tcp", conn.peer, conn.local)] = conn

    def connection_closed(self, conn: StreamConnection) -> None:
        five_tuple = ("tls" if conn.tls else "tcp", conn.peer, conn.local)
        self.connections.pop(five_tuple, None)
        self.apply(self.turn.connection_closed(five_tuple, time.time()))
