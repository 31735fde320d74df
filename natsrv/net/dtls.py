"""STUN and TURN over DTLS 1.2 (RFC 7350) on the UDP side of the TLS port.

OpenSSL does the DTLS, through pyOpenSSL with memory BIOs: this module moves datagrams
between the socket and one ``OpenSSL.SSL.Connection`` per client address, and hands
every decrypted record to ``Server.receive`` with the transport ``"dtls"``; answers,
Data indications and ChannelData come back through ``Shell.send_to_client`` and
:meth:`DtlsEndpoint.send`, encrypted by that client's session.

No state before the client proves its address (RFC 6347 §4.2.1): a datagram from an
unknown address goes to a throw-away ``Connection`` whose ``DTLSv1_listen`` answers a
ClientHello without a valid cookie with a HelloVerifyRequest and keeps nothing. The
cookie is an HMAC over a time tick and the client's address with a per-process key;
this tick's and the last one's are accepted (as trio's DTLS does). Only a ClientHello
that returns a valid cookie creates a session. Sessions are bounded in number
(``max_sessions``: over it, new clients are ignored), must finish the handshake within
``handshake_timeout`` (OpenSSL's retransmission timer is served meanwhile) and end
after ``idle_timeout`` without a record, or at the client's close_notify; the end of a
session ends its allocation, as the end of a TCP connection does.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import socket
import struct
from typing import TYPE_CHECKING

import trio
from OpenSSL import SSL

from ..core.effects import Address, FiveTuple

if TYPE_CHECKING:
    from .shell import Shell

log = logging.getLogger("natsrv.dtls")

#: DTLS 1.2 (RFC 6347) is the floor; OpenSSL's DTLS_METHOD offers nothing newer.
DTLS1_2_VERSION = 0xFEFD
#: Ciphertext MTU given to OpenSSL (a memory BIO cannot ask the path): certificate
#: flights are cut to this, safe on any path.
MTU = 1200
#: Seconds per cookie tick; a cookie is good for one to two ticks.
COOKIE_TICK = 30.0
BATCH = 64
RECV_SIZE = 65536
#: How often handshake retransmissions, handshake deadlines and idle sessions are served.
SWEEP = 0.25
_TICK = struct.Struct(">I")


def make_dtls_context(cert: str, key: str) -> SSL.Context:
    """A DTLS 1.2 server context with the server's TLS certificate and key."""
    ctx = SSL.Context(SSL.DTLS_SERVER_METHOD)
    ctx.set_min_proto_version(DTLS1_2_VERSION)
    ctx.set_options(SSL.OP_NO_QUERY_MTU | SSL.OP_NO_RENEGOTIATION)
    ctx.use_certificate_chain_file(cert)
    ctx.use_privatekey_file(key)
    ctx.check_privatekey()
    return ctx


class Cookies:
    """Stateless HelloVerifyRequest cookies: tick || HMAC-SHA256(key, tick || address)."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def make(self, address: Address, now: float) -> bytes:
        return self._make(address, int(now // COOKIE_TICK))

    def _make(self, address: Address, tick: int) -> bytes:
        head = _TICK.pack(tick & 0xFFFFFFFF)
        mac = hmac.new(self._key, head + f"{address[0]}|{address[1]}".encode(), hashlib.sha256)
        return head + mac.digest()[:16]

    def check(self, address: Address, cookie: bytes, now: float) -> bool:
        if len(cookie) != 20:
            return False
        tick = _TICK.unpack_from(cookie)[0]
        current = int(now // COOKIE_TICK) & 0xFFFFFFFF
        if tick not in (current, (current - 1) & 0xFFFFFFFF):
            return False
        return hmac.compare_digest(cookie, self._make(address, tick))


class DtlsSession:
    """One client's DTLS session (its address, its OpenSSL connection, its deadlines)."""

    __slots__ = ("address", "conn", "established", "five_tuple", "handshake_deadline", "last")

    def __init__(self, conn: SSL.Connection, five_tuple: FiveTuple, deadline: float) -> None:
        self.conn = conn
        self.five_tuple = five_tuple
        self.address = five_tuple[1]
        self.established = False
        self.handshake_deadline = deadline
        self.last = 0.0  #: trio time of the last record from the client


class DtlsEndpoint:
    """The DTLS side of one TLS endpoint: its UDP socket and its sessions."""

    def __init__(
        self,
        sock: socket.socket,
        shell: Shell,
        context: SSL.Context,
        *,
        max_sessions: int,
        handshake_timeout: float,
        idle_timeout: float,
    ) -> None:
        self.sock = sock
        self.shell = shell
        self.local: Address = sock.getsockname()[:2]
        self.max_sessions = max_sessions
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.sessions: dict[Address, DtlsSession] = {}
        self.cookies = Cookies()
        self._cookie_time = 0.0
        self.context = context

    @property
    def context(self) -> SSL.Context:
        return self._context

    @context.setter
    def context(self, ctx: SSL.Context) -> None:
        """The context new sessions get (a reload replaces it; sessions keep theirs)."""
        ctx.set_cookie_generate_callback(self._cookie_for)
        ctx.set_cookie_verify_callback(self._cookie_ok)
        self._context = ctx

    def _cookie_for(self, conn: SSL.Connection) -> bytes:
        return self.cookies.make(conn.get_app_data(), self._cookie_time)

    def _cookie_ok(self, conn: SSL.Connection, cookie: bytes) -> bool:
        return self.cookies.check(conn.get_app_data(), cookie, self._cookie_time)

    # -- datagrams in ----------------------------------------------------------------------
    async def serve(self) -> None:
        """Read datagrams in batches forever; serve the sessions' timers beside."""
        sock = self.sock
        counters = self.shell.counters
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sweep)
            while True:
                await trio.lowlevel.wait_readable(sock)
                for _ in range(BATCH):
                    try:
                        data, src = sock.recvfrom(RECV_SIZE)
                    except BlockingIOError:
                        break
                    except OSError:
                        counters["dtls_recv_errors"] += 1
                        continue
                    try:
                        self.receive(data, (src[0], src[1]))
                    except Exception:  # a bug with one client must not stop the endpoint
                        counters["dtls_handler_errors"] += 1
                        log.exception("error serving DTLS datagram from %s", src)
                        self._end(self.sessions.get((src[0], src[1])))
                else:
                    await trio.lowlevel.checkpoint()

    def receive(self, data: bytes, src: Address) -> None:
        session = self.sessions.get(src)
        if session is None:
            self._hello(data, src)
            return
        conn = session.conn
        try:
            conn.bio_write(data)
            if not session.established:
                try:
                    conn.do_handshake()
                except SSL.WantReadError:
                    self._flush(session)
                    return
                session.established = True
                self.shell.counters["dtls_sessions_established"] += 1
            session.last = trio.current_time()
            while True:
                try:
                    record = conn.recv(RECV_SIZE)
                except SSL.WantReadError:
                    break
                effects = self.shell.server.receive(record, session.five_tuple,
                                                    self.shell.clock())  # fmt: skip
                self.shell.apply(effects)
                if self.sessions.get(src) is not session:
                    return
        except SSL.ZeroReturnError:  # close_notify
            self._end(session)
            return
        except SSL.Error:
            self.shell.counters["dtls_session_errors"] += 1
            self._end(session)
            return
        self._flush(session)

    def _hello(self, data: bytes, src: Address) -> None:
        """A datagram from an address without a session: a ClientHello gets a
        HelloVerifyRequest, a ClientHello with a valid cookie a session; anything else
        is dropped. Nothing is kept until then."""
        counters = self.shell.counters
        if len(self.sessions) >= self.max_sessions:
            counters["dtls_refused_over_cap"] += 1
            return
        conn = SSL.Connection(self.context)
        conn.set_app_data(src)
        conn.set_ciphertext_mtu(MTU)
        self._cookie_time = self.shell.clock()
        try:
            conn.bio_write(data)
            conn.DTLSv1_listen()
        except SSL.WantReadError:
            out = _pending(conn)
            if out:
                counters["dtls_hello_verify_sent"] += 1
                for datagram in out:
                    self._sendto(datagram, src)
            else:
                counters["dtls_dropped"] += 1
            return
        except SSL.Error:
            counters["dtls_dropped"] += 1
            return
        five_tuple: FiveTuple = ("dtls", src, self.local)
        session = DtlsSession(conn, five_tuple, trio.current_time() + self.handshake_timeout)
        self.sessions[src] = session
        self.shell.dtls_sessions[five_tuple] = self
        counters["dtls_sessions_created"] += 1
        self.shell.metrics.gauges["dtls_sessions"] = sum(
            len(e.sessions) for e in self.shell.dtls_endpoints
        )
        try:
            conn.do_handshake()
        except SSL.WantReadError:
            pass
        except SSL.Error as exc:
            log.debug("DTLS handshake with %s failed: %s", src, exc)
            counters["dtls_handshake_failures"] += 1
            self._flush(session)  # the alert
            self._end(session)
            return
        self._flush(session)

    # -- datagrams out ---------------------------------------------------------------------
    def send(self, five_tuple: FiveTuple, data: bytes) -> None:
        """Encrypt ``data`` (one STUN or ChannelData message) for the client of
        ``five_tuple`` and send it, if its session is up."""
        session = self.sessions.get(five_tuple[1])
        if session is None or not session.established:
            return
        try:
            session.conn.send(data)
        except SSL.Error:
            self.shell.counters["dtls_session_errors"] += 1
            self._end(session)
            return
        self._flush(session)

    def _flush(self, session: DtlsSession) -> None:
        for datagram in _pending(session.conn):
            self._sendto(datagram, session.address)

    def _sendto(self, datagram: bytes, dest: Address) -> None:
        try:
            self.sock.sendto(datagram, dest)
        except BlockingIOError:
            self.shell.counters["udp_send_dropped"] += 1
        except OSError:
            self.shell.counters["udp_send_errors"] += 1

    # -- time ------------------------------------------------------------------------------
    async def _sweep(self) -> None:
        while True:
            await trio.sleep(SWEEP)
            now = trio.current_time()
            for session in list(self.sessions.values()):
                if session.established:
                    if now - session.last > self.idle_timeout:
                        self.shell.counters["dtls_sessions_idle"] += 1
                        self._end(session)
                    continue
                if now > session.handshake_deadline:
                    self.shell.counters["dtls_handshake_timeouts"] += 1
                    self._end(session)
                    continue
                timeout = session.conn.DTLSv1_get_timeout()
                if timeout is not None and timeout <= 0:
                    try:
                        session.conn.DTLSv1_handle_timeout()
                    except SSL.Error:
                        self._end(session)
                        continue
                    self._flush(session)

    def _end(self, session: DtlsSession | None) -> None:
        """Forget ``session`` (and its allocation, through the core)."""
        if session is None or self.sessions.get(session.address) is not session:
            return
        del self.sessions[session.address]
        self.shell.dtls_sessions.pop(session.five_tuple, None)
        self.shell.metrics.gauges["dtls_sessions"] = sum(
            len(e.sessions) for e in self.shell.dtls_endpoints
        )
        try:
            session.conn.shutdown()
            self._flush(session)
        except SSL.Error:
            pass
        self.shell.apply(self.shell.server.connection_closed(session.five_tuple,
                                                             self.shell.clock()))  # fmt: skip

    def close_all(self) -> None:
        for session in list(self.sessions.values()):
            self._end(session)


def _pending(conn: SSL.Connection) -> list[bytes]:
    """What OpenSSL wrote to the memory BIO, as datagrams to send."""
    written = bytearray()
    while True:
        try:
            written += conn.bio_read(RECV_SIZE)
        except SSL.WantReadError:
            return split_records(bytes(written))


def split_records(written: bytes, mtu: int = MTU) -> list[bytes]:
    """Cut the bytes OpenSSL wrote into datagrams of whole DTLS records, each at most
    ``mtu`` bytes unless one record is larger: pyOpenSSL's memory BIO keeps no datagram
    boundaries, and a record must not span datagrams (RFC 6347 §4.1.1). Only the
    record header's length (its last two of 13 bytes, RFC 6347 §4.1) is read."""
    out: list[bytes] = []
    current = b""
    pos = 0
    while pos + 13 <= len(written):
        end = pos + 13 + int.from_bytes(written[pos + 11 : pos + 13], "big")
        record = written[pos:end]
        pos = end
        if current and len(current) + len(record) > mtu:
            out.append(current)
            current = b""
        current += record
    if current:
        out.append(current)
    return out


__all__ = ["Cookies", "DtlsEndpoint", "make_dtls_context", "split_records"]
