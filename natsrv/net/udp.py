"""UDP listeners: wait for readability, then drain the socket synchronously.

docs/architecture.md, "The hot paths": awaiting once per datagram costs more than coturn's
whole per-request work, so each listener waits with ``trio.lowlevel.wait_readable``
and then reads with non-blocking ``recvfrom`` until the kernel has nothing more or a
batch is done, handing each datagram to ``Server.receive`` (with ``now`` read once per
batch) and answering at once with a non-blocking ``sendto``; it yields to trio between
batches so timers and other tasks run.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import MutableMapping

import trio

from ..core.effects import SendToClient
from .fastpath import count_io
from .shell import Shell, count_send_failure

log = logging.getLogger("natsrv.udp")

Address = tuple[str, int]
_UDP = "udp"

BATCH = 256
RECV_SIZE = 65535


def bind_udp(ip: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if reuse_port:  # one member of the workers' SO_REUSEPORT group (net/workers.py)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
        sock.bind((ip, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def local_address(sock: socket.socket | trio.socket.SocketType) -> Address:
    name = sock.getsockname()
    return name[0], name[1]


async def serve_udp(sock: socket.socket, shell: Shell) -> None:
    """Serve one UDP socket forever: each datagram goes to ``Server.receive``; answers to
    the sender from this socket are sent at once, other effects through the shell."""
    if shell.native is not None and await _serve_udp_native(sock, shell):
        return
    local = local_address(sock)
    recvfrom = sock.recvfrom
    sendto = sock.sendto
    receive = shell.server.receive
    apply = shell.apply
    relay_sockets = shell.relays.sockets
    clock = shell.clock
    counters = shell.counters
    wait_readable = trio.lowlevel.wait_readable
    while True:
        await wait_readable(sock)
        now = clock()
        for _ in range(BATCH):
            try:
                data, src = recvfrom(RECV_SIZE)
            except BlockingIOError:
                break
            except OSError:
                # ICMP errors surface here (ECONNREFUSED on Linux): not our problem.
                counters["udp_recv_errors"] += 1
                continue
            if len(src) > 2:
                src = (src[0], src[1])
            try:
                effects = receive(data, (_UDP, src, local), now)
            except Exception:  # a bug must cost one datagram, never the listener
                _handler_error(counters, src)
                continue
            for effect in effects:
                if type(effect) is SendToClient:
                    five_tuple = effect.five_tuple
                    if five_tuple[2] is local and five_tuple[0] == _UDP:
                        try:
                            sendto(effect.data, five_tuple[1])
                        except BlockingIOError:
                            await _send_when_writable(sock, effect.data, five_tuple[1],
                                                      counters)  # fmt: skip
                        except OSError as exc:  # ENOBUFS, unreachable: drop and count
                            count_send_failure(counters, exc)
                    else:
                        apply((effect,))
                    continue
                if not isinstance(effect, tuple):  # Event (no RFC 6062 effect on UDP)
                    apply((effect,))
                    continue
                route, payload = effect  # SendToPeer: a plain (route, data) tuple
                relay = relay_sockets.get(route[0])
                if relay is not None:
                    try:
                        relay.sendto(payload, route[1])
                    except OSError as exc:
                        count_send_failure(counters, exc)
        else:
            # A full batch: let timers and other listeners run before the next one.
            await trio.lowlevel.checkpoint()


async def _serve_udp_native(sock: socket.socket, shell: Shell) -> bool:
    """The native data path (``net/fastpath.py``): one ``drain_listener`` call per
    wake-up reads up to ``BATCH`` x ``ROUNDS`` datagrams with recvmmsg, answers plain
    Binding requests and forwards ChannelData the core's table routes, with sendmmsg;
    what it hands back goes to ``Server.receive`` as on the pure path. False (serve
    in Python) if this endpoint's answers do not fit the native encoder."""
    native = shell.native
    assert native is not None
    local = local_address(sock)
    plain = shell.server.plain_binding(local)
    tail = plain.tail
    if len(tail) > native.MAX_TAIL:
        return False
    mapped = plain.mapped_address
    fd = sock.fileno()
    routes = shell.forwarding.routes if shell.forwarding is not None else {}
    drain = native.drain_listener
    send_datagrams = native.send_datagrams
    receive = shell.server.receive
    apply = shell.apply
    plain_answers = shell.server.plain_answers
    clock = shell.clock
    counters = shell.counters
    wait_readable = trio.lowlevel.wait_readable
    checkpoint = trio.lowlevel.checkpoint
    busy = False
    while True:
        if busy:
            # The last drain found datagrams: more are likely queued by now. Yielding
            # and draining again costs one empty recvmmsg when none came, where waiting
            # for readability re-arms the socket in trio's epoll set every time.
            await checkpoint()
        else:
            await wait_readable(sock)
        now = clock()
        (misses, answered, _, recv_errors, send_errors, dropped, gso_sends, gso_segments,
         gso_refused, more) = drain(fd, tail, mapped, routes, now)  # fmt: skip
        busy = more or answered > 0 or len(misses) > 0
        if answered:
            plain_answers[_UDP] += answered
        if recv_errors or send_errors or dropped or gso_sends or gso_refused:
            count_io(counters, "udp_recv_errors", recv_errors, send_errors, dropped,
                     gso_sends, gso_segments, gso_refused)  # fmt: skip
        if not misses:
            continue
        # What the core answers from this listener leaves in one send_datagrams call
        # (sendmmsg) after the batch; anything else goes through the shell at once.
        out: list[tuple[bytes, Address]] = []
        for data, src in misses:
            try:
                effects = receive(data, (_UDP, src, local), now)
            except Exception:  # a bug must cost one datagram, never the listener
                _handler_error(counters, src)
                continue
            for effect in effects:
                if type(effect) is SendToClient:
                    five_tuple = effect.five_tuple
                    if five_tuple[2] is local and five_tuple[0] == _UDP:
                        out.append((effect.data, five_tuple[1]))
                        continue
                apply((effect,))
        if out:
            _, send_errors, dropped = send_datagrams(fd, out)
            if send_errors or dropped:
                counters["udp_send_errors"] += send_errors
                counters["udp_send_dropped"] += dropped


def _handler_error(counters: MutableMapping[str, int], src: Address) -> None:
    """Count (and log, the first ten times) a bug ``Server.receive`` raised for ``src``;
    called from the ``except`` of a listener loop, so the traceback is the one raised."""
    counters["handler_errors"] += 1
    if counters["handler_errors"] <= 10:
        log.exception("error handling a datagram from %s", src)


async def _send_when_writable(
    sock: socket.socket, data: bytes, dest: Address, counters: MutableMapping[str, int]
) -> None:
    """The kernel's send buffer is full: wait for room briefly, once, then drop."""
    with trio.move_on_after(0.05):
        await trio.lowlevel.wait_writable(sock)
    try:
        sock.sendto(data, dest)
    except OSError as exc:
        count_send_failure(counters, exc)
