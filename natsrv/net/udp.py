"""UDP listeners: wait for readability, then drain the socket synchronously.

DESIGN.md, "Concurrency and scale": awaiting once per datagram costs more than coturn's
whole per-request work, so each listener waits with ``trio.lowlevel.wait_readable``
and then reads with non-blocking ``recvfrom`` until the kernel has nothing more or a
batch is done, answering each datagram at once with a non-blocking ``sendto``; it
yields to trio between batches so timers and other tasks run.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

import trio

from ..metrics import Metrics
from ..stun.errors import ParseError

log = logging.getLogger("natsrv.udp")

Address = tuple[str, int]
#: ``(data, src, local) -> list of (data, dest, via)`` or None; raises ParseError to drop.
DatagramHandler = Callable[[bytes, Address, Address], "object | None"]

BATCH = 256
RECV_SIZE = 65535


def bind_udp(ip: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
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


def local_address(sock: socket.socket) -> Address:
    name = sock.getsockname()
    return name[0], name[1]


async def serve_udp(
    sock: socket.socket,
    handler: Callable[[bytes, Address, Address], object],
    senders: dict[Address, socket.socket],
    metrics: Metrics,
) -> None:
    """Serve one UDP socket forever. ``handler`` returns a Reply-like ``(data, dest, via)``,
    a list of them, or None. ``senders`` maps a local endpoint to the socket that sends
    from it (for CHANGE-REQUEST answers from another address)."""
    local = local_address(sock)
    recvfrom = sock.recvfrom
    wait_readable = trio.lowlevel.wait_readable
    counters = metrics.counters
    while True:
        await wait_readable(sock)
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
                reply = handler(data, src, local)
            except ParseError:
                counters["dropped_malformed"] += 1
                continue
            except Exception:  # a bug must cost one datagram, never the listener
                counters["handler_errors"] += 1
                if counters["handler_errors"] <= 10:
                    log.exception("error handling a datagram from %s", src)
                continue
            if reply is None:
                continue
            if type(reply) is list:
                for item in reply:
                    await _send(senders, item[0], item[1], item[2], sock, counters)
            else:
                data_out, dest, via = reply  # type: ignore[misc]
                out = sock if via == local else senders.get(via)
                if out is None:
                    continue
                try:
                    out.sendto(data_out, dest)
                except BlockingIOError:
                    await _send(senders, data_out, dest, via, sock, counters)
                except OSError:
                    counters["udp_send_errors"] += 1
        else:
            # A full batch: let timers and other listeners run before the next one.
            await trio.lowlevel.checkpoint()


async def _send(
    senders: dict[Address, socket.socket],
    data: bytes,
    dest: Address,
    via: Address,
    default: socket.socket,
    counters: dict[str, int],
) -> None:
    out = senders.get(via, default)
    for _ in range(2):
        try:
            out.sendto(data, dest)
            return
        except BlockingIOError:
            with trio.move_on_after(0.05):
                await trio.lowlevel.wait_writable(out)
        except OSError:
            counters["udp_send_errors"] += 1
            return
    counters["udp_send_dropped"] += 1
