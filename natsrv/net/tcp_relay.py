"""RFC 6062 peer connections: connecting from a relayed address, accepting on it, and
splicing a peer connection to the client's data connection.

The core (``core/tcp_relay.py``) decides which connections exist, with their
CONNECTION-IDs and deadlines; this module carries out its three effects:

* ``ConnectToPeer``: a task binds a TCP socket to the relayed address (SO_REUSEPORT,
  beside the relay's listening socket: RFC 6062 §5.2 has the connection come from the
  relayed address) and connects; the outcome goes to ``Server.tcp_peer_connected``.
* ``SpliceTcp``: marks the client's data connection; its task (``tcp.py``) stops
  framing STUN once the ConnectionBind answer is out and calls :meth:`splice`.
* ``CloseTcp``: cancels the connect attempt or the splice and closes the peer socket.

Relaying is back-pressured both ways: each direction reads at most ``CHUNK`` bytes and
awaits ``send_all`` before it reads again, so a side that does not read stops the
other side's reads (its kernel buffers fill, then its sender blocks) and the server
holds at most one chunk per direction. Inbound peer connections (accepted by
``relay.py``) are not read before they are bound; the kernel holds what they send.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import trio

from ..core.effects import Address, CloseTcp, ConnectToPeer, SpliceTcp

if TYPE_CHECKING:
    from .shell import Shell
    from .tcp import StreamConnection

#: Bytes read from one side before they are written to the other.
CHUNK = 16384


class TcpRelayShell:
    """The peer connections of this process's TCP allocations, by CONNECTION-ID."""

    def __init__(self, shell: Shell) -> None:
        self.shell = shell
        #: Connected or accepted peer connections.
        self.peers: dict[int, trio.SocketStream] = {}
        #: The connect attempt or splice running for a connection.
        self.tasks: dict[int, trio.CancelScope] = {}
        #: Where connect attempts run (set by ``serve``).
        self.nursery: trio.Nursery | None = None

    def apply(self, effect: ConnectToPeer | SpliceTcp | CloseTcp) -> None:
        server = self.shell.server
        if type(effect) is ConnectToPeer:
            if self.nursery is None:
                self.shell.apply(server.tcp_peer_connected(effect.cid, False, self.shell.clock()))
            else:
                self.nursery.start_soon(self._connect, effect.cid, effect.relay, effect.peer)
        elif type(effect) is SpliceTcp:
            conn = self.shell.connections.get(effect.five_tuple)
            if conn is None:
                self.shell.apply(server.tcp_connection_ended(effect.cid, self.shell.clock()))
            else:
                conn.splice_cid = effect.cid
        elif type(effect) is CloseTcp:
            self.close(effect.cid)

    def close(self, cid: int) -> None:
        scope = self.tasks.pop(cid, None)
        if scope is not None:
            scope.cancel()
        stream = self.peers.pop(cid, None)
        if stream is not None:
            stream.socket.close()

    def accepted(self, sock: socket.socket, relay: Address, peer: Address, now: float) -> None:
        """A peer connected to the relayed address ``relay`` (RFC 6062 §5.3)."""
        cid, effects = self.shell.server.tcp_peer_arrived(relay, peer, now)
        if cid is None:
            sock.close()
            self.shell.counters["tcp_relay_refused"] += 1
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        self.peers[cid] = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        self.shell.apply(effects)

    async def _connect(self, cid: int, relay: Address, peer: Address) -> None:
        scope = trio.CancelScope()
        self.tasks[cid] = scope
        family = socket.AF_INET6 if ":" in peer[0] else socket.AF_INET
        sock = trio.socket.socket(family, socket.SOCK_STREAM)
        ok = False
        with scope:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                await sock.bind(relay)
                await sock.connect(peer)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
                ok = True
            except OSError:
                pass
        if self.tasks.get(cid) is scope:
            del self.tasks[cid]
        if scope.cancelled_caught:
            sock.close()  # the core gave up (its deadline, or the allocation ended)
            return
        if ok:
            self.peers[cid] = trio.SocketStream(sock)
        else:
            sock.close()
            self.shell.counters["tcp_relay_connect_failed"] += 1
        self.shell.apply(self.shell.server.tcp_peer_connected(cid, ok, self.shell.clock()))

    async def splice(self, conn: StreamConnection, cid: int, rest: bytes) -> None:
        """Relay raw bytes between the data connection ``conn`` and the peer connection
        ``cid`` until either ends (``rest``: what the client sent after ConnectionBind)."""
        peer = self.peers.get(cid)
        if peer is None:
            return
        scope = trio.CancelScope()
        self.tasks[cid] = scope
        moved = [0, 0]  # bytes to the peer, to the client
        try:
            with scope:
                if rest:
                    await peer.send_all(rest)
                    moved[0] += len(rest)
                async with trio.open_nursery() as nursery:
                    done = nursery.cancel_scope
                    nursery.start_soon(self._pump, conn.stream, peer, moved, 0, done)
                    nursery.start_soon(self._pump, peer, conn.stream, moved, 1, done)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            if self.tasks.get(cid) is scope:
                del self.tasks[cid]
            stream = self.peers.pop(cid, None)
            if stream is not None:
                stream.socket.close()
        counters = self.shell.counters
        counters["tcp_relay_to_peer_bytes"] += moved[0]
        counters["tcp_relay_to_client_bytes"] += moved[1]
        self.shell.apply(self.shell.server.tcp_connection_ended(
            cid, self.shell.clock(), to_peer=moved[0], to_client=moved[1]))  # fmt: skip

    @staticmethod
    async def _pump(
        source: trio.abc.Stream,
        sink: trio.abc.Stream,
        moved: list[int],
        index: int,
        done: trio.CancelScope,
    ) -> None:
        """Copy ``source`` to ``sink`` a chunk at a time, each write awaited before the
        next read. At the end of ``source``, half-close ``sink`` where the stream can
        (plain TCP) and let the other direction finish; else end both."""
        try:
            while True:
                data = await source.receive_some(CHUNK)
                if not data:
                    break
                await sink.send_all(data)
                moved[index] += len(data)
            if isinstance(sink, trio.abc.HalfCloseableStream):
                await sink.send_eof()
                return
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        done.cancel()  # ends the splice: the other direction stops too


__all__ = ["CHUNK", "TcpRelayShell"]
