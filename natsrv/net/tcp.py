"""STUN (and TURN) over TCP and TLS: framing, deadlines, bounded connection slots.

RFC 8489 §6.2.2-6.2.3: messages on a stream are delimited by their own length field;
ChannelData frames (RFC 8656 §12.5) are padded to 4 bytes. Every connection has a
deadline for its TLS handshake and its first message, then an idle deadline that any
complete message pushes back, a maximum frame size (a larger frame closes the
connection) and a bounded send queue. Connections take slots of a
:class:`StreamSlots` shared by all listeners: bounded in total and per source IP, and
when full the oldest connection that holds no allocation makes room. A listener behind
a load balancer may require a PROXY protocol header first (``natsrv.proxyproto``),
which then names the connection's client.
"""

from __future__ import annotations

import logging
import math
import socket
from collections import OrderedDict
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import trio

from ..core.effects import FiveTuple
from ..proxyproto import (
    ProxyHeader,
    ProxyProtocolError,
    header_bytes_wanted,
    parse_proxy_header_untrusted,
)
from ..stun.errors import ParseError
from ..stun.framing import StreamFramer

if TYPE_CHECKING:
    from .serve import TlsContext
    from .shell import Shell

log = logging.getLogger("natsrv.tcp")

Address = tuple[str, int]
#: Seconds a TLS handshake may take, and a new connection before its first complete
#: message (a slow client must not hold a slot for the idle timeout).
TLS_HANDSHAKE_TIMEOUT = 5.0
FIRST_MESSAGE_TIMEOUT = 5.0
SEND_QUEUE = 256


class StreamConnection:
    """One client connection: where it comes from, and a bounded queue of bytes to send.

    The TURN relay pushes Data indications and ChannelData here with ``send_nowait``;
    a full queue drops (UDP-like semantics for relayed media) rather than buffer without
    bound.
    """

    def __init__(
        self, stream: trio.abc.Stream, peer: Address, local: Address, tls: bool
    ) -> None:
        self.stream = stream
        self.peer = peer
        self.local = local
        self.tls = tls
        #: The connection's 5-tuple, as the core names it.
        self.five_tuple: FiveTuple = ("tls" if tls else "tcp", peer, local)
        self._send, self._receive = trio.open_memory_channel[bytes](SEND_QUEUE)
        self.closed = False
        #: RFC 6062: set when a ConnectionBind made this a data connection (the peer
        #: connection's CONNECTION-ID); ``sent`` is set once the send queue is done.
        self.splice_cid: int | None = None
        self.sent = trio.Event()

    def send_nowait(self, data: bytes) -> bool:
        try:
            self._send.send_nowait(data)
            return True
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            return False

    async def _sender(self) -> None:
        try:
            async for data in self._receive:
                await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self.closed = True
        finally:
            self.sent.set()


def _addr(name: Any) -> Address:
    return name[0], name[1]


class _Slot:
    __slots__ = ("five_tuple", "ip", "scope")

    def __init__(self, ip: str) -> None:
        self.ip = ip
        self.scope = trio.CancelScope()
        self.five_tuple: FiveTuple | None = None  #: once the connection is established


class StreamSlots:
    """The server's TCP and TLS connection slots, shared by every stream listener.

    At most ``max_connections`` connections at once and ``max_per_source`` from one
    source IP. When all slots are taken, the oldest connection whose 5-tuple holds no
    allocation (``holds_state`` says so: it never authenticated, or is a STUN-only
    client) is closed to make room, so idle or slow clients cannot lock legitimate ones
    out; only when every connection holds an allocation is the newcomer refused.
    """

    def __init__(
        self,
        max_connections: int,
        max_per_source: int,
        holds_state: Callable[[FiveTuple], bool],
        counters: MutableMapping[str, int],
    ) -> None:
        self.max_connections = max_connections
        self.max_per_source = max_per_source
        self.holds_state = holds_state
        self.counters = counters
        self._open: OrderedDict[_Slot, None] = OrderedDict()  # oldest first
        self._per_source: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, ip: str, *, per_source: bool = True) -> _Slot | None:
        """A slot for a new connection from ``ip``, or None to refuse it.
        ``per_source=False``: ``ip`` is a proxy's, not the client's; the per-source cap
        applies when :meth:`move` names the client."""
        if per_source and self._per_source.get(ip, 0) >= self.max_per_source:
            self.counters["stream_refused_per_source"] += 1
            return None
        if len(self._open) >= self.max_connections:
            victim = next(
                (slot for slot in self._open
                 if slot.five_tuple is None or not self.holds_state(slot.five_tuple)),
                None,
            )  # fmt: skip
            if victim is None:
                self.counters["stream_refused_full"] += 1
                return None
            self.counters["stream_evicted"] += 1
            victim.scope.cancel()
            self.release(victim)
        slot = _Slot(ip)
        self._open[slot] = None
        self._per_source[ip] = self._per_source.get(ip, 0) + 1
        return slot

    def move(self, slot: _Slot, ip: str) -> bool:
        """Count ``slot`` against ``ip`` (the client a PROXY header named) instead of the
        address it was admitted for; False (the slot is left as it was) when ``ip`` is
        at its cap."""
        if self._per_source.get(ip, 0) >= self.max_per_source:
            self.counters["stream_refused_per_source"] += 1
            return False
        if slot in self._open:
            self._uncount(slot.ip)
            self._per_source[ip] = self._per_source.get(ip, 0) + 1
        slot.ip = ip
        return True

    def release(self, slot: _Slot) -> None:
        if self._open.pop(slot, False) is None:
            self._uncount(slot.ip)

    def _uncount(self, ip: str) -> None:
        count = self._per_source[ip] - 1
        if count:
            self._per_source[ip] = count
        else:
            del self._per_source[ip]


async def serve_stream(
    listener: trio.SocketListener,
    shell: Shell,
    slots: StreamSlots,
    *,
    idle_timeout: float,
    max_frame: int,
    tls: TlsContext | None = None,
    first_message_timeout: float = FIRST_MESSAGE_TIMEOUT,
    handshake_timeout: float = TLS_HANDSHAKE_TIMEOUT,
    proxy_protocol: bool = False,
) -> None:
    """Accept connections forever; each is served by its own task in a slot of
    ``slots``. A TLS handshake must finish within ``handshake_timeout`` seconds and
    the first complete message arrive within ``first_message_timeout``; ``tls`` holds
    the certificate new connections get (a reload replaces it). After that a
    connection lives while it sends a message every ``idle_timeout`` seconds. Every
    complete frame goes to ``Server.receive``; the effects go to the shell.

    With ``proxy_protocol`` every connection must start with a PROXY protocol header
    (v1 or v2, ``natsrv.proxyproto``), read within ``first_message_timeout`` and before
    any TLS handshake; the client it names is the connection's peer from then on (its
    5-tuple, the per-source cap, logs). A connection without a valid one is closed."""
    gauges = shell.metrics.gauges
    counters = shell.counters
    kind = "tls" if tls else "tcp"

    async def handle(sock_stream: trio.SocketStream, slot: _Slot, peer: Address) -> None:
        ssl_context = tls.current if tls is not None else None  # the newest, at accept
        stream: trio.abc.Stream = sock_stream
        try:
            with slot.scope:
                local = _addr(sock_stream.socket.getsockname())
                sock_stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
                if proxy_protocol:
                    with trio.fail_after(first_message_timeout):
                        header = await read_proxy_header(sock_stream)
                    if header.source is not None:
                        if not slots.move(slot, header.source[0]):
                            return
                        peer = header.source
                if ssl_context is not None:
                    stream = trio.SSLStream(sock_stream, ssl_context, server_side=True)
                    with trio.move_on_after(handshake_timeout) as handshake:
                        await stream.do_handshake()
                    if handshake.cancelled_caught:
                        counters["tls_handshake_timeouts"] += 1
                        return
                conn = StreamConnection(stream, peer, local, ssl_context is not None)
                if conn.five_tuple in shell.connections:
                    # Only a PROXY header can name a 5-tuple already open: never let a
                    # second connection take over the first one's allocation.
                    counters["stream_duplicate_client"] += 1
                    return
                slot.five_tuple = conn.five_tuple
                shell.connection_opened(conn)
                try:
                    await _serve_connection(
                        conn, shell, idle_timeout, first_message_timeout, max_frame
                    )
                finally:
                    conn.closed = True
                    shell.connection_closed(conn)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError):
            pass
        except ProxyProtocolError:
            counters["stream_proxy_header_errors"] += 1
        except Exception:  # a bug in one connection must never stop the server
            counters["stream_handler_errors"] += 1
            log.exception("error serving %s connection from %s", kind, peer)
        finally:
            slots.release(slot)
            gauges["stream_connections"] = len(slots)
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        while True:
            try:
                sock_stream = await listener.accept()
            except OSError as exc:
                # EMFILE and friends: back off briefly rather than spin.
                counters[f"{kind}_accept_errors"] += 1
                log.warning("accept failed on %s: %s", kind, exc)
                await trio.sleep(0.1)
                continue
            try:
                peer = _addr(sock_stream.socket.getpeername())
            except OSError:
                await trio.aclose_forcefully(sock_stream)
                continue
            slot = slots.admit(peer[0], per_source=not proxy_protocol)
            if slot is None:
                counters[f"{kind}_refused_over_cap"] += 1
                await trio.aclose_forcefully(sock_stream)
                continue
            gauges["stream_connections"] = len(slots)
            counters[f"{kind}_accepted"] += 1
            nursery.start_soon(handle, sock_stream, slot, peer)


async def read_proxy_header(stream: trio.SocketStream) -> ProxyHeader:
    """Read a PROXY protocol header off ``stream`` and not a byte more (what follows is
    STUN, or a TLS handshake); ``ProxyProtocolError`` for anything else, or an end of
    stream before it is complete."""
    data = b""
    while True:
        header = parse_proxy_header_untrusted(data)
        if header is not None:
            return header
        chunk = await stream.receive_some(header_bytes_wanted(data))
        if not chunk:
            raise ProxyProtocolError("connection closed inside the PROXY header")
        data += chunk


async def _serve_connection(
    conn: StreamConnection,
    shell: Shell,
    idle_timeout: float,
    first_message_timeout: float,
    max_frame: int,
) -> None:
    framer = StreamFramer(max_frame)
    receive = shell.server.receive
    apply = shell.apply
    clock = shell.clock
    five_tuple = conn.five_tuple
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn._sender)
        with trio.CancelScope() as idle:
            idle.deadline = trio.current_time() + min(first_message_timeout, idle_timeout)
            while True:
                try:
                    data = await conn.stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    break  # reset, or TLS closed without close_notify: this connection only
                if not data:
                    break
                try:
                    frames = framer.feed(data)
                except ParseError:
                    shell.counters["stream_framing_errors"] += 1
                    break
                if frames:
                    idle.deadline = trio.current_time() + idle_timeout
                    now = clock()
                    for frame in frames:
                        apply(receive(frame, five_tuple, now))
                        if conn.splice_cid is not None:
                            break
                    if conn.splice_cid is not None:
                        break
            cid = conn.splice_cid
            if cid is not None:
                # RFC 6062 §5.4: after the ConnectionBind answer the connection carries
                # the client's raw stream; no idle deadline while the allocation lives.
                idle.deadline = math.inf
                conn._send.close()
                await conn.sent.wait()
                if not conn.closed:
                    await shell.tcp_relay.splice(conn, cid, framer.take_rest())
        if idle.cancelled_caught:
            shell.counters["stream_timeouts"] += 1
        # Let what is queued go out (bounded), then stop.
        conn._send.close()
        nursery.cancel_scope.deadline = trio.current_time() + 2.0
