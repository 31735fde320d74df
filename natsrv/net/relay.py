"""Relay sockets: bound for the core, read in batches.

The sans-IO core decides; this module moves bytes. Relay sockets are plain
non-blocking UDP sockets bound by :meth:`RelaySockets.bind` (the core picks the
port) and registered in one ``epoll`` set of their own; a single task waits for that
set to be readable and drains every ready socket in batches, the same way the
listeners do (docs/architecture.md). So an allocation costs no task, no trio
registration and no cancellation: a socket, one ``epoll_ctl`` to add it and one to
remove it. Each datagram from a peer goes to ``Server.receive_from_peer``, which
returns a plain ``(five_tuple, bytes)``: no effect objects, no awaits per datagram.
"""

from __future__ import annotations

import _socket
import select
import socket
from typing import TYPE_CHECKING

import trio

from .udp import RECV_SIZE

if TYPE_CHECKING:
    from .shell import Shell

Address = tuple[str, int]
BATCH = 64  #: datagrams read from one relay socket before the next ready one
MAX_EVENTS = 256  #: ready relay sockets taken per wake-up
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

    def close(self, relay: Address) -> None:
        sock = self.sockets.pop(relay, None)
        if sock is not None:
            self.by_fd.pop(sock.fileno(), None)
            sock.close()  # closing the only descriptor also takes it out of the epoll set

    def close_all(self) -> None:
        for relay in list(self.sockets):
            self.close(relay)
        self.epoll.close()


async def read_relays(shell: Shell) -> None:
    """Wait for any relay socket to be readable, then drain the ready ones: each
    datagram goes to ``Server.receive_from_peer`` and what it returns to the client."""
    relays = shell.relays
    epoll_fd = relays.epoll.fileno()
    poll = relays.epoll.poll
    by_fd = relays.by_fd
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
