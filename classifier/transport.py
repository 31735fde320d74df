"""UDP STUN transactions for the classifier, in trio: sending on the RFC 8489 §6.2.1
retransmission schedule and matching replies by transaction ID.

One :class:`Transport` owns every socket of a classification run. Each socket has a
reader task that decodes what arrives (with the server's codec, ``natsrv.stun``) and
hands a message to the transaction waiting for its transaction ID, if that transaction
accepts it on that socket; everything else (malformed datagrams, unknown transaction
IDs, a reply arriving on the wrong socket, a second reply) is dropped and counted. So
a reply is matched by transaction ID only; whether it came from the address the probe
expects is the caller's question (``classifier/run.py``), answered with the real source
recorded here.

The retransmission schedule (RFC 8489 §6.2.1), the requests and the reading of replies
are pure, in ``classifier/binding.py``; this module only sends and waits.
"""

from __future__ import annotations

import errno
import os
import socket as _socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import trio

from natsrv.stun import Message, ParseError, decode_untrusted

from .binding import DEFAULT_TIMING, Retransmission
from .model import Endpoint

#: Largest datagram read; a Binding response is far smaller.
RECV_SIZE = 2048


# --------------------------------------------------------------------------- sockets


@dataclass(frozen=True)
class Received:
    """A message that a transaction accepted: where it came from (``recvfrom``), the
    local address of the socket it arrived on, and when (``trio.current_time()``)."""

    message: Message
    source: Endpoint
    on: Endpoint
    at: float


@dataclass(frozen=True)
class Exchange:
    """The outcome of one transaction: the accepted reply (None: none in time), how many
    times the request was sent, and errors the kernel gave for sends."""

    reply: Received | None
    attempts: int
    started: float
    send_errors: tuple[str, ...] = ()

    @property
    def rtt_ms(self) -> float | None:
        """From the first send to the reply (with retransmissions this includes the
        waits between sends; ``attempts`` says how many there were)."""
        if self.reply is None:
            return None
        return round((self.reply.at - self.started) * 1000, 3)


@dataclass
class Counters:
    """Datagrams the transport dropped, by why."""

    malformed: int = 0  #: not a STUN message (decode_untrusted refused it)
    unmatched: int = 0  #: no transaction waits for its ID on that socket (or a duplicate)
    receive_errors: int = 0  #: recvfrom raised (e.g. an ICMP error surfaced)


class UdpSocket:
    """One bound UDP socket of a run. ``local`` is the address the kernel bound."""

    def __init__(self, sock: trio.socket.SocketType, local: Endpoint) -> None:
        self.sock = sock
        self.local = local
        self.cancel_scope = trio.CancelScope()

    def __repr__(self) -> str:
        return f"<UdpSocket {self.local}>"


@dataclass
class _Waiter:
    accept: frozenset[int]  # id() of the sockets that may deliver the reply
    event: trio.Event = field(default_factory=trio.Event)
    reply: Received | None = None


def family_of(ip: str) -> int:
    return _socket.AF_INET6 if ":" in ip else _socket.AF_INET


def _endpoint(addr: tuple[object, ...]) -> Endpoint:
    return str(addr[0]), int(addr[1])  # type: ignore[call-overload]


async def route_source(server: Endpoint) -> str:
    """The local IP the kernel uses to reach ``server``: getsockname of a UDP socket
    connected to it (connecting a UDP socket sends nothing). Raises OSError (e.g.
    ENETUNREACH) when there is no route."""
    sock = trio.socket.socket(family_of(server[0]), _socket.SOCK_DGRAM)
    with sock:
        await sock.connect(server)
        return str(sock.getsockname()[0])


class Transport:
    """Opens sockets and runs transactions; every reader task lives in ``nursery``."""

    def __init__(self, nursery: trio.Nursery, timing: Retransmission = DEFAULT_TIMING) -> None:
        self.nursery = nursery
        self.timing = timing
        self.counters = Counters()
        self._pending: dict[bytes, _Waiter] = {}
        self._open: list[UdpSocket] = []

    async def open(self, local: Endpoint) -> UdpSocket:
        """A UDP socket bound to ``local`` (an IP address, never a wildcard, so that the
        address reported is the one the kernel really uses; port 0 for any)."""
        sock = trio.socket.socket(family_of(local[0]), _socket.SOCK_DGRAM)
        try:
            if sock.family == _socket.AF_INET6:
                sock.setsockopt(_socket.IPPROTO_IPV6, _socket.IPV6_V6ONLY, 1)
            await sock.bind(local)
            bound = _endpoint(sock.getsockname())
        except BaseException:
            sock.close()
            raise
        udp = UdpSocket(sock, bound)
        self._open.append(udp)
        self.nursery.start_soon(self._reader, udp)
        return udp

    def close(self, udp: UdpSocket) -> None:
        """Stop reading and close; idempotent."""
        udp.cancel_scope.cancel()
        udp.sock.close()
        if udp in self._open:
            self._open.remove(udp)

    def close_all(self) -> None:
        for udp in list(self._open):
            self.close(udp)

    async def _reader(self, udp: UdpSocket) -> None:
        with udp.cancel_scope:
            while True:
                try:
                    data, src = await udp.sock.recvfrom(RECV_SIZE)
                except (trio.ClosedResourceError, OSError) as exc:
                    if isinstance(exc, trio.ClosedResourceError) or (
                        isinstance(exc, OSError) and exc.errno == errno.EBADF
                    ):
                        return
                    self.counters.receive_errors += 1
                    continue
                self._deliver(udp, data, _endpoint(src), trio.current_time())

    def _deliver(self, udp: UdpSocket, data: bytes, source: Endpoint, at: float) -> None:
        try:
            msg = decode_untrusted(data)
        except ParseError:
            self.counters.malformed += 1
            return
        waiter = self._pending.get(msg.transaction_id)
        if waiter is None or id(udp) not in waiter.accept or waiter.reply is not None:
            self.counters.unmatched += 1
            return
        waiter.reply = Received(msg, source, udp.local, at)
        waiter.event.set()

    async def transaction(
        self,
        sender: UdpSocket,
        target: Endpoint,
        request: Message,
        *,
        accept: Iterable[UdpSocket] | None = None,
    ) -> Exchange:
        """Send ``request`` from ``sender`` to ``target`` on the retransmission schedule
        until a message with its transaction ID arrives on one of ``accept`` (default:
        the sender itself) or the schedule runs out."""
        data = request.encode()
        tid = request.transaction_id
        if tid in self._pending:
            raise ValueError("transaction ID already in use")
        sockets: Sequence[UdpSocket] = list(accept) if accept is not None else [sender]
        waiter = _Waiter(frozenset(id(s) for s in sockets))
        self._pending[tid] = waiter
        started = trio.current_time()
        attempts = 0
        errors: list[str] = []
        try:
            for offset in self.timing.offsets:
                with trio.move_on_at(started + offset):
                    await waiter.event.wait()
                if waiter.reply is not None:
                    break
                attempts += 1
                try:
                    await sender.sock.sendto(data, target)
                except OSError as exc:
                    errors.append(exc.strerror or os.strerror(exc.errno or 0) or str(exc))
            else:
                with trio.move_on_at(started + self.timing.total):
                    await waiter.event.wait()
        finally:
            del self._pending[tid]
        return Exchange(waiter.reply, attempts, started, tuple(dict.fromkeys(errors)))


__all__ = [
    "Counters",
    "Exchange",
    "Received",
    "Transport",
    "UdpSocket",
    "route_source",
]
