"""Relay sockets: bound for the core, read in batches.

The sans-IO core decides; this module moves bytes. Relay sockets are plain
non-blocking UDP sockets bound by :meth:`RelaySockets.bind` (the core picks the
port) and registered in one ``epoll`` set of their own; a single task waits for that
set to be readable and drains every ready socket in batches, the same way the
listeners do (docs/architecture.md). So an allocation costs no task, no trio
registration and no cancellation: a socket, one ``epoll_ctl`` to add it and one to
remove it. Each datagram from a peer goes to ``Server.receive_from_peer``, which
returns a plain ``(five_tuple, bytes)``: no effect objects, no awaits per datagram.

The listening sockets of RFC 6062 TCP allocations (:meth:`RelaySockets.bind_tcp`) sit
in the same epoll set; a peer connecting to one is accepted and handed to
``tcp_relay.py``, which asks the core whether to keep it.
"""

from __future__ import annotations

import _socket
import select
import socket
from typing import TYPE_CHECKING

import trio

from .fastpath import count_io
from .udp import RECV_SIZE

if TYPE_CHECKING:
    from .shell import Shell

Address = tuple[str, int]
BATCH = 64  #: datagrams read from one relay socket before the next ready one
MAX_EVENTS = 256  #: ready relay sockets taken per wake-up
LISTEN_BACKLOG = 16  #: pending peer connections per TCP relay, before the core sees them
_AF_INET = int(socket.AF_INET)
_AF_INET6 = int(socket.AF_INET6)
_UDP_NONBLOCK = int(socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)


class RelaySockets:
    """The core's RelayOpener: binds and closes relay sockets, and keeps them in the
    epoll set that :func:`read_relays` waits on."""

    def __init__(self) -> None:
        self.sockets: dict[Address, _socket.socket] = {}
        #: fd -> (socket, relay address), for the sockets in ``epoll``.
        self.by_fd: dict[int, tuple[_socket.socket, Address]] = {}
        #: The listening sockets of TCP relays (RFC 6062), by address and by fd.
        self.tcp_listeners: dict[Address, socket.socket] = {}
        self.listeners_by_fd: dict[int, tuple[socket.socket, Address]] = {}
        self.epoll = select.epoll()

    def bind(self, ip: str, port: int) -> bool:
        v6 = ":" in ip
        # The C socket type: the ``socket.socket`` subclass adds Python-level __init__
        # and close() that an allocate/delete cycle would pay for twice.
        try:
            sock = _socket.socket(_AF_INET6 if v6 else _AF_INET, _UDP_NONBLOCK)
        except OSError:  # EMFILE, ENFILE, ENOBUFS: no socket now; the core answers 508
            return False
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

    def bind_tcp(self, ip: str, port: int) -> bool:
        """A listening TCP socket on ``(ip, port)``: an RFC 6062 relayed address.
        SO_REUSEPORT lets the connections made for Connect leave from the same address."""
        v6 = ":" in ip
        family = socket.AF_INET6 if v6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        try:
            if v6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((ip, port))
            sock.listen(LISTEN_BACKLOG)
            fd = sock.fileno()
            self.epoll.register(fd, select.EPOLLIN)
        except OSError:
            sock.close()
            return False
        self.tcp_listeners[(ip, port)] = sock
        self.listeners_by_fd[fd] = (sock, (ip, port))
        return True

    def close(self, relay: Address) -> None:
        sock = self.sockets.pop(relay, None)
        if sock is not None:
            self.by_fd.pop(sock.fileno(), None)
            sock.close()  # closing the only descriptor also takes it out of the epoll set
            return
        listener = self.tcp_listeners.pop(relay, None)
        if listener is not None:
            self.listeners_by_fd.pop(listener.fileno(), None)
            listener.close()

    def close_all(self) -> None:
        for relay in [*self.sockets, *self.tcp_listeners]:
            self.close(relay)
        self.epoll.close()


async def read_relays(shell: Shell) -> None:
    """Wait for any relay socket to be readable, then drain the ready ones: each
    datagram goes to ``Server.receive_from_peer`` and what it returns to the client."""
    relays = shell.relays
    if shell.native is not None:
        await _read_relays_native(shell)
        return
    epoll_fd = relays.epoll.fileno()
    poll = relays.epoll.poll
    by_fd = relays.by_fd
    listeners = relays.listeners_by_fd
    clock = shell.clock
    wait_readable = trio.lowlevel.wait_readable
    while True:
        await wait_readable(epoll_fd)
        try:
            events = poll(0, MAX_EVENTS)
        except (OSError, ValueError):  # closed at shutdown
            return
        now = clock()
        for fd, _ in events:
            entry = by_fd.get(fd)
            if entry is not None:
                _drain(shell, entry[0], entry[1], now)
        await _accept_ready(shell, events, listeners, now)


async def _accept_ready(
    shell: Shell, events: list[tuple[int, int]],
    listeners: dict[int, tuple[socket.socket, Address]], now: float,
) -> None:
    """Accept the peers of every ready RFC 6062 relay listener (they share the relay
    sockets' epoll set), then yield to trio."""
    accept_failed = False
    for fd, _ in events:
        listener = listeners.get(fd)
        if listener is not None:
            accept_failed |= _accept(shell, listener[0], listener[1], now)
    if accept_failed:
        # EMFILE and friends leave the listener readable: back off briefly rather than
        # spin on it (as the client listeners do).
        await trio.sleep(0.05)
    else:
        await trio.lowlevel.checkpoint()


def _accept(shell: Shell, sock: socket.socket, relay: Address, now: float) -> bool:
    """Peers connecting to a TCP relay: each goes to the core through ``tcp_relay``.
    True if accepting failed (the caller backs off)."""
    for _ in range(BATCH):
        try:
            conn, peer = sock.accept()
        except BlockingIOError:
            return False
        except OSError:  # EMFILE and friends: the core never sees this peer
            shell.counters["relay_accept_errors"] += 1
            return True
        conn.setblocking(False)
        shell.tcp_relay.accepted(conn, relay, (peer[0], peer[1]), now)
    return False


async def _read_relays_native(shell: Shell) -> None:
    """``read_relays`` on the native data path: one ``drain_relays`` call per wake-up
    reads every ready socket with recvmmsg and sends what the core's table routes
    (ChannelData or Data indications) with one sendmmsg per listener; the rest goes to
    ``Server.receive_from_peer``."""
    native = shell.native
    assert native is not None
    relays = shell.relays
    epoll_fd = relays.epoll.fileno()
    poll = relays.epoll.poll
    by_fd = relays.by_fd
    listeners = relays.listeners_by_fd
    clock = shell.clock
    counters = shell.counters
    routes = shell.forwarding.routes if shell.forwarding is not None else {}
    drain = native.drain_relays
    receive_from_peer = shell.server.receive_from_peer
    send_to_client = shell.send_to_client
    wait_readable = trio.lowlevel.wait_readable
    checkpoint = trio.lowlevel.checkpoint
    events: list[tuple[int, int]] = []
    while True:
        # After a busy round, yield and look again: an empty epoll poll is cheaper than
        # re-arming the epoll descriptor in trio's own set (as udp.py's listener does).
        if events:
            await checkpoint()
        else:
            await wait_readable(epoll_fd)
        try:
            events = poll(0, MAX_EVENTS)
        except (OSError, ValueError):  # closed at shutdown
            return
        if not events:
            continue
        now = clock()
        (misses, _, recv_errors, send_errors, dropped, gso_sends, gso_segments, gso_refused,
         _) = drain([fd for fd, _ in events if fd in by_fd], routes, now)  # fmt: skip
        if recv_errors or send_errors or dropped or gso_sends or gso_refused:
            count_io(counters, "relay_recv_errors", recv_errors, send_errors, dropped,
                     gso_sends, gso_segments, gso_refused)  # fmt: skip
        for fd, data, peer in misses:
            entry = by_fd.get(fd)
            if entry is None:
                continue
            hop = receive_from_peer(entry[1], peer, data, now)
            if hop is not None:
                send_to_client(hop[0], hop[1])
        await _accept_ready(shell, events, listeners, now)


def _drain(shell: Shell, sock: _socket.socket, relay: Address, now: float) -> None:
    receive_from_peer = shell.server.receive_from_peer
    send_to_client = shell.send_to_client
    counters = shell.counters
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
        hop = receive_from_peer(relay, peer, data, now)
        if hop is not None:
            send_to_client(hop[0], hop[1])
