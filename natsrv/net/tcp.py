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
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ..metrics import Metrics
from ..stun.errors import ParseError
from ..stun.framing import StreamFramer

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

    def __init__(self, stream: trio.abc.Stream, peer: Address, local: Address, tls: bool):
        self.stream = stream
        self.peer = peer
        self.local = local
        self.tls = tls
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


#: ``(frame, connection) -> list[bytes] | bytes | None`` answers to send on the connection.
FrameHandler = Callable[[bytes, StreamConnection], Any]


def _addr(name: Any) -> Address:
    return name[0], name[1]


async def serve_stream(
    listener: trio.SocketListener,
    on_frame: FrameHandler,
    *,
    metrics: Metrics,
    idle_timeout: float,
    max_connections: int,
    max_frame: int,
    ssl_context: ssl.SSLContext | None = None,
    on_open: Callable[[StreamConnection], None] | None = None,
    on_close: Callable[[StreamConnection], Awaitable[None] | None] | None = None,
) -> None:
    """Accept connections forever; each is served by its own task, at most
    ``max_connections`` at once (the rest are closed at once)."""
    open_count = 0
    gauges = metrics.gauges
    counters = metrics.counters
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
            if on_open is not None:
                on_open(conn)
            try:
                await _serve_connection(conn, on_frame, idle_timeout, max_frame, counters)
            finally:
                conn.closed = True
                if on_close is not None:
                    result = on_close(conn)
                    if result is not None:
                        await result
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
    conn: StreamConnection,
    on_frame: FrameHandler,
    idle_timeout: float,
    max_frame: int,
    counters: Any,
) -> None:
    framer = StreamFramer(max_frame)
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
                    counters["stream_framing_errors"] += 1
                    break
                for frame in frames:
                    idle.deadline = trio.current_time() + idle_timeout
                    try:
                        replies = on_frame(frame, conn)
                    except ParseError:
                        counters["dropped_malformed"] += 1
                        continue
                    if replies is None:
                        continue
                    if isinstance(replies, bytes):
                        replies = [replies]
                    for reply in replies:
                        if not conn.send_nowait(reply):
                            counters["stream_send_dropped"] += 1
        # Let what is queued go out (bounded), then stop.
        conn._send.close()
        nursery.cancel_scope.deadline = trio.current_time() + 2.0
