"""``serve(config)``: bind every listener, answer STUN (and TURN when configured).

Readiness is reported with ``task_status.started(ServerInfo)`` so tests and the CLI can
``await nursery.start(serve, config)`` and learn the bound addresses (port 0 picks a free
port; the alternate endpoints then reuse the primary's port number).
"""

from __future__ import annotations

import logging
import secrets
import socket
import ssl
from dataclasses import dataclass, field

import trio

from ..config import Config
from ..core.binding import BindingConfig, BindingService
from ..core.credentials import ChainedStore, RestSecret, StaticUsers
from ..core.nonce import NonceFactory
from ..core.policy import PeerPolicy
from ..core.turn import TurnServer, TurnSettings
from ..metrics import Metrics
from ..stun.attributes import ErrorCodeValue
from ..stun.constants import Attr, MessageClass, Method
from ..stun.errors import ParseError
from ..stun.message import decode_untrusted, encode_message
from .relay import RelaySockets, TurnShell
from .tcp import StreamConnection, serve_stream
from .udp import bind_udp, local_address, serve_udp

log = logging.getLogger("natsrv")

Address = tuple[str, int]


@dataclass
class ServerInfo:
    """What ``serve`` bound: the primary endpoint first in each list."""

    udp: list[Address] = field(default_factory=list)
    tcp: list[Address] = field(default_factory=list)
    tls: list[Address] = field(default_factory=list)
    relay: list[Address] = field(default_factory=list)
    metrics: Metrics = field(default_factory=Metrics)

    @property
    def primary(self) -> Address:
        return self.udp[0] if self.udp else self.tcp[0]


def _bind_group(ip: str, port: int, alt_ip: str | None, alt_port: int | None
                ) -> tuple[list[socket.socket], int, int | None]:
    """Bind the UDP sockets for one listen address and its alternates, resolving port 0."""
    socks: list[socket.socket] = []
    try:
        first = bind_udp(ip, port)
        socks.append(first)
        port = local_address(first)[1]
        if alt_port == 0:
            probe = bind_udp(ip, 0)
            socks.append(probe)
            alt_port = local_address(probe)[1]
        elif alt_port is not None:
            socks.append(bind_udp(ip, alt_port))
        if alt_ip is not None:
            socks.append(bind_udp(alt_ip, port))
            if alt_port is not None:
                socks.append(bind_udp(alt_ip, alt_port))
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks, port, alt_port


def make_stun_handler(binding: BindingService):
    """The UDP datagram handler for a STUN-only listener."""
    answer = binding.answer
    software = binding.config.software

    def handle(data: bytes, src: Address, local: Address):
        if len(data) >= 20 and data[0] == 0 and data[1] == 1:
            return answer(data, src, local)
        msg = decode_untrusted(data)
        if msg.cls != MessageClass.REQUEST or msg.method == Method.BINDING:
            return None
        # A TURN (or unknown) method on a server without TURN: a small 400.
        attrs: list[tuple[int, object]] = [
            (Attr.ERROR_CODE, ErrorCodeValue(400, "Bad Request: method not served here"))
        ]
        if software:
            attrs.append((Attr.SOFTWARE, software))
        out = encode_message(msg.method, MessageClass.ERROR, msg.transaction_id, attrs,
                             cookie=msg.cookie, fingerprint=True)
        return out, src, local

    return handle


def make_turn_udp_handler(binding: BindingService, shell: TurnShell):
    """The UDP datagram handler with TURN: Binding requests take the STUN fast path,
    everything else (TURN requests, indications, ChannelData) goes to the TURN shell."""
    answer = binding.answer
    on_client_message = shell.on_client_message

    def handle(data: bytes, src: Address, local: Address):
        if len(data) >= 20 and data[0] == 0 and data[1] == 1:
            return answer(data, src, local)
        if not data:
            raise ParseError("empty datagram")
        on_client_message(data, ("udp", src, local))
        return None

    return handle


def make_stream_handler(binding: BindingService, shell: TurnShell | None = None):
    def on_frame(frame: bytes, conn: StreamConnection):
        if shell is not None and not (frame[0] == 0 and frame[1] == 1):
            shell.on_client_message(frame, ("tls" if conn.tls else "tcp", conn.peer, conn.local))
            return None
        if frame[0] >= 0x40:
            return None  # ChannelData without TURN
        msg = decode_untrusted(frame)
        if msg.cls != MessageClass.REQUEST:
            return None
        if msg.method != Method.BINDING:
            attrs: list[tuple[int, object]] = [
                (Attr.ERROR_CODE, ErrorCodeValue(400, "Bad Request: method not served here"))
            ]
            return encode_message(msg.method, MessageClass.ERROR, msg.transaction_id, attrs,
                                  cookie=msg.cookie, fingerprint=True)
        return binding.handle(msg, conn.peer, conn.local, udp=False).data

    return on_frame


def make_ssl_context(config: Config) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    assert config.tls_cert is not None
    ctx.load_cert_chain(config.tls_cert, config.tls_key)
    return ctx


def make_turn(
    config: Config,
    relays: RelaySockets,
    senders: dict[Address, socket.socket],
    metrics: Metrics,
) -> TurnShell:
    """The TURN core with its credential sources, nonces and peer policy."""
    stores: list[object] = []
    if config.users:
        stores.append(StaticUsers(dict(config.users)))
    if config.auth_secret is not None:
        stores.append(RestSecret(config.auth_secret))
    credentials = stores[0] if len(stores) == 1 else ChainedStore(*stores)
    settings = TurnSettings.from_config(config)
    own: list[object] = [ep for ip, port in config.listen
                         for ep in BindingConfig((ip, port), config.alt_ip, config.alt_port)
                         .endpoints()]
    if config.tls_port is not None:
        own += [(ip, config.tls_port) for ip, _ in config.listen]
    if config.external_ip is not None:
        own += [(config.external_ip[0], port) for _, port in config.listen]
    policy = PeerPolicy(allow=config.allow_peer, deny=config.deny_peer, own_addresses=own)
    nonces = NonceFactory(secrets.token_bytes(32), config.nonce_lifetime)
    turn = TurnServer(settings, credentials=credentials, nonces=nonces, policy=policy,
                      opener=relays)
    return TurnShell(turn, relays, senders, metrics)


async def serve(config: Config, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Run the server until cancelled."""
    metrics = Metrics()
    info = ServerInfo(metrics=metrics)
    udp_socks: list[tuple[socket.socket, object]] = []
    senders: dict[Address, socket.socket] = {}
    relays = RelaySockets()
    shell = make_turn(config, relays, senders, metrics) if config.turn_enabled else None
    stream_groups: list[tuple[list[Address], BindingService]] = []
    try:
        for index, (ip, port) in enumerate(config.listen):
            alt_ip = config.alt_ip if index == 0 else None
            alt_port = config.alt_port if index == 0 else None
            socks, port, alt_port = _bind_group(ip, port, alt_ip, alt_port)
            if not config.udp:
                for s in socks:
                    s.close()
                socks = []
            binding = BindingService(
                BindingConfig((ip, port), alt_ip, alt_port, config.software,
                              config.mapped_address)
            )
            handler = (
                make_stun_handler(binding) if shell is None
                else make_turn_udp_handler(binding, shell)
            )
            for s in socks:
                addr = local_address(s)
                senders[addr] = s
                udp_socks.append((s, handler))
                info.udp.append(addr)
            endpoints = BindingConfig((ip, port), alt_ip, alt_port).endpoints()
            stream_groups.append((endpoints, binding))
    except OSError as exc:
        for s, _ in udp_socks:
            s.close()
        raise OSError(exc.errno, f"cannot bind: {exc.strerror}") from None

    ssl_context = make_ssl_context(config) if config.tls_enabled else None
    stream_listeners: list[trio.SocketListener] = []
    try:
        async with trio.open_nursery() as nursery:
            for s, handler in udp_socks:
                nursery.start_soon(serve_udp, s, handler, senders, metrics)
                log.info("listening on udp %s:%d", *local_address(s))
            if config.tcp or ssl_context is not None:
                for endpoints, binding in stream_groups:
                    on_frame = make_stream_handler(binding, shell)
                    plans: list[tuple[Address, ssl.SSLContext | None, list[Address]]] = []
                    if config.tcp:
                        plans += [(ep, None, info.tcp) for ep in endpoints]
                    if ssl_context is not None:
                        tls_port = config.tls_port if config.tls_port is not None else 5349
                        plans.append(((endpoints[0][0], tls_port), ssl_context, info.tls))
                    for (ip, port), ctx, record in plans:
                        listeners = await trio.open_tcp_listeners(port, host=ip)
                        stream_listeners.extend(listeners)
                        for listener in listeners:
                            addr = local_address(listener.socket)
                            record.append(addr)
                            log.info("listening on %s %s:%d", "tls" if ctx else "tcp", *addr)
                            nursery.start_soon(
                                lambda lst=listener, c=ctx, h=on_frame: serve_stream(
                                    lst, h, metrics=metrics,
                                    idle_timeout=config.tcp_idle_timeout,
                                    max_connections=config.tcp_max_connections,
                                    max_frame=config.max_message_size, ssl_context=c,
                                    on_open=shell.connection_opened if shell else None,
                                    on_close=shell.connection_closed if shell else None,
                                )
                            )
            if shell is not None:
                nursery.start_soon(shell.run_timers)
                nursery.start_soon(shell.read_relays)
                log.info("TURN enabled: realm %r, relay %s, ports %d-%d",
                         config.realm, ", ".join(shell.turn.settings.relay_ips),
                         *config.relay_ports)
            task_status.started(info)
    finally:
        relays.close_all()
        for s, _ in udp_socks:
            s.close()
        for listener in stream_listeners:
            listener.socket.close()


__all__ = ["ParseError", "ServerInfo", "serve"]
