"""The trio shell around the TURN core: relay sockets, client connections, timers.

The sans-IO :class:`~natsrv.core.turn.TurnServer` decides; this module moves bytes.
Relay sockets are plain non-blocking UDP sockets bound by :meth:`RelaySockets.bind`
(the core picks the port); each is read by its own task that drains it the same way
the listeners do (DESIGN.md, "Concurrency and scale"). ChannelData in both directions
takes the core's fast paths, which return plain tuples: no effect objects, no awaits
per datagram.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
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
BATCH = 256


class RelaySockets:
    """The core's RelayOpener: binds and closes relay sockets."""

    def __init__(self) -> None:
        self.sockets: dict[Address, socket.socket] = {}
        self.on_open: Callable[[Address, socket.socket], None] | None = None

    def bind(self, ip: str, port: int) -> bool:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((ip, port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            return False
        self.sockets[(ip, port)] = sock
        return True

    def close(self, relay: Address) -> None:
        sock = self.sockets.pop(relay, None)
        if sock is not None:
            try:
                trio.lowlevel.notify_closing(sock)
            except RuntimeError:
                pass  # outside trio (tests of the core's opener contract)
            sock.close()

    def close_all(self) -> None:
        for relay in list(self.sockets):
            self.close(relay)


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
        self.nursery: trio.Nursery | None = None

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
            elif kind is RelayOpened:
                sock = self.relays.sockets.get(effect.relay)
                if sock is not None and self.nursery is not None:
                    self.nursery.start_soon(self.read_relay, sock, effect.relay)
            elif kind is RelayClosed:
                self.relays.close(effect.relay)
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
    async def read_relay(self, sock: socket.socket, relay: Address) -> None:
        turn = self.turn
        peer_to_client = turn.peer_to_client
        counters = self.metrics.counters
        wait_readable = trio.lowlevel.wait_readable
        recvfrom = sock.recvfrom
        try:
            while True:
                if sock.fileno() < 0:
                    return  # closed (allocation gone) before or while this task ran
                await wait_readable(sock)
                now = time.time()
                for _ in range(BATCH):
                    try:
                        data, peer = recvfrom(RECV_SIZE)
                    except BlockingIOError:
                        break
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
                else:
                    await trio.lowlevel.checkpoint()
        except (trio.ClosedResourceError, OSError, ValueError):
            return

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
