"""STUN (and TURN) over TCP and TLS: framing, idle timeout, a cap on connections.

RFC 8489 §6.2.2-6.2.3: messages on a stream are delimited by their own length field;
ChannelData frames (RFC 8656 §12.5) are padded to 4 bytes. Every connection has an idle
deadline that any complete message pushes back, a maximum frame size (a larger frame
closes the connection) and a bounded send queue.
"""

from __future__ import annotations

import logging
import socket
import ssl
from typing import TYPE_CHECKING, Any

import trio

from ..core.effects import FiveTuple
from ..stun.errors import ParseError
from ..stun.framing import StreamFramer

if TYPE_CHECKING:
    from .shell import Shell

log = logging.getLogger("natsrv.tcp")

Address = tuple[str, int]
TLS_HANDSHAKE_TIMEOUT = 10.0
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


def _addr(name: Any) -> Address:
    return name[0], name[1]


async def serve_stream(
    listener: trio.SocketListener,
    shell: Shell,
    *,
    idle_timeout: float,
    max_connections: int,
    max_frame: int,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """Accept connections forever; each is served by its own task, at most
    ``max_connections`` at once (the rest are closed at once). Every complete frame
    goes to ``Server.receive``; the effects go to the shell."""
    open_count = 0
    gauges = shell.metrics.gauges
    counters = shell.counters
    kind = "tls" if ssl_context else "tcp"

    async def handle(sock_stream: trio.SocketStream) -> None:
        nonlocal open_count
        try:
            peer = _addr(sock_stream.socket.getpeername())
            local = _addr(sock_stream.socket.getsockname())
        except OSError:
            await trio.aclose_forcefully(sock_stream)
            return
        stream: trio.abc.Stream = sock_stream
        try:
            sock_stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
            if ssl_context is not None:
                stream = trio.SSLStream(sock_stream, ssl_context, server_side=True)
                with trio.fail_after(TLS_HANDSHAKE_TIMEOUT):
                    await stream.do_handshake()
            conn = StreamConnection(stream, peer, local, ssl_context is not None)
            shell.connection_opened(conn)
            try:
                await _serve_connection(conn, shell, idle_timeout, max_frame)
            finally:
                conn.closed = True
                shell.connection_closed(conn)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError):
            pass
        except Exception:  # a bug in one connection must never stop the server
            counters["stream_handler_errors"] += 1
            log.exception("error serving %s connection from %s", kind, peer)
        finally:
            open_count -= 1
            gauges[f"{kind}_connections"] = open_count
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
            if open_count >= max_connections:
                counters[f"{kind}_refused_over_cap"] += 1
                await trio.aclose_forcefully(sock_stream)
                continue
            open_count += 1
            gauges[f"{kind}_connections"] = open_count
            counters[f"{kind}_accepted"] += 1
            nursery.start_soon(handle, sock_stream)


async def _serve_connection(
    conn: StreamConnection, shell: Shell, idle_timeout: float, max_frame: int
) -> None:
    framer = StreamFramer(max_frame)
    receive = shell.server.receive
    apply = shell.apply
    clock = shell.clock
    five_tuple = conn.five_tuple
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn._sender)
        with trio.CancelScope() as idle:
            idle.deadline = trio.current_time() + idle_timeout
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
        # Let what is queued go out (bounded), then stop.
        conn._send.close()
        nursery.cancel_scope.deadline = trio.current_time() + 2.0
