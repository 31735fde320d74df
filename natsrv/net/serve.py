"""``serve(config)``: bind every listener, answer STUN (and TURN when configured).

Readiness is reported with ``task_status.started(ServerInfo)`` so tests and the CLI can
``await nursery.start(serve, config)`` and learn the bound addresses (port 0 picks a free
port; the alternate endpoints then reuse the primary's port number).
"""

from __future__ import annotations

import errno
import logging
import secrets
import socket
import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import trio

from ..config import Config
from ..core.allocation import family_of
from ..core.binding import BindingConfig, BindingService
from ..core.credentials import ChainedStore, CredentialStore, RestSecret, StaticUsers
from ..core.nonce import NonceFactory
from ..core.policy import PeerPolicy
from ..core.server import Server
from ..core.turn import TurnServer, TurnSettings
from ..metrics import Collector, Metrics
from ..stun.attributes import SecurityFeature
from .admin import AdminRoutes, serve_admin
from .relay import RelaySockets, read_relays
from .sdnotify import notify
from .shell import Shell, SteadyClock
from .tcp import StreamSlots, serve_stream
from .udp import bind_udp, local_address, serve_udp

log = logging.getLogger("natsrv")

Address = tuple[str, int]
_WILDCARDS = ("0.0.0.0", "::")


@dataclass
class ServerInfo:
    """What ``serve`` bound: the primary endpoint first in each list; and the handle to
    drain the server (``drain``, ``drained``)."""

    udp: list[Address] = field(default_factory=list)
    tcp: list[Address] = field(default_factory=list)
    tls: list[Address] = field(default_factory=list)
    relay: list[Address] = field(default_factory=list)
    admin: list[Address] = field(default_factory=list)
    metrics: Metrics = field(default_factory=Metrics)
    server: Server | None = None
    #: The configuration in force (the last one reloaded).
    config: Config | None = None
    #: Set once draining has started and no allocation is left.
    drained: trio.Event = field(default_factory=trio.Event)
    _drain_requested: trio.Event = field(default_factory=trio.Event)
    _reload: Callable[[Config], list[str]] | None = None

    @property
    def primary(self) -> Address:
        return self.udp[0] if self.udp else self.tcp[0]

    @property
    def draining(self) -> bool:
        return self._drain_requested.is_set()

    def reload(self, config: Config) -> list[str]:
        """Apply what can change live from a new, validated ``config`` (peer policy,
        quotas, lifetimes, rates, REST secrets and users, realm, log level, the TLS
        certificate for new connections); return the keys that changed but need a
        restart. A certificate that does not load raises ``ssl.SSLError`` or
        ``OSError`` and changes nothing."""
        if self._reload is None:
            raise RuntimeError("the server is not running")
        return self._reload(config)

    def drain(self) -> None:
        """Refuse new allocations (300 with ALTERNATE-SERVER when configured, else 508)
        while Bindings are answered and existing allocations live on; ``drained`` is set
        when the last of them ends. Idempotent."""
        if self.server is not None and self.server.turn is not None:
            self.server.turn.draining = True
        self._drain_requested.set()


async def _watch_drain(info: ServerInfo) -> None:
    await info._drain_requested.wait()
    notify("STOPPING=1")
    log.info("draining: new allocations are refused")
    turn = info.server.turn if info.server is not None else None
    while turn is not None and turn.allocations:
        await trio.sleep(0.1)  # a periodic look, not a synchronisation: bounded by drain-timeout
    info.drained.set()


def count_tasks() -> int:
    """The trio tasks running in this process (``/metrics``: a leak shows)."""
    root = trio.lowlevel.current_root_task()
    count, todo = 0, [] if root is None else [root]
    while todo:
        task = todo.pop()
        count += 1
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return count


#: Tries at a port number the kernel picked that turned out taken for TCP or an alternate.
_PORT_ZERO_ATTEMPTS = 32


def _bind_tcp(ip: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((ip, port))
        sock.listen(1024)
    except BaseException:
        sock.close()
        raise
    return sock


def _bind_group_once(
    ip: str, port: int, alt_ip: str | None, alt_port: int | None, tcp: bool
) -> tuple[list[socket.socket], list[socket.socket], int, int | None]:
    udp_socks: list[socket.socket] = []
    tcp_socks: list[socket.socket] = []
    try:
        first = bind_udp(ip, port)
        udp_socks.append(first)
        port = local_address(first)[1]
        if alt_port == 0:
            probe = bind_udp(ip, 0)
            udp_socks.append(probe)
            alt_port = local_address(probe)[1]
        elif alt_port is not None:
            udp_socks.append(bind_udp(ip, alt_port))
        if alt_ip is not None:
            udp_socks.append(bind_udp(alt_ip, port))
            if alt_port is not None:
                udp_socks.append(bind_udp(alt_ip, alt_port))
        if tcp:
            for ep in BindingConfig((ip, port), alt_ip, alt_port).endpoints():
                tcp_socks.append(_bind_tcp(*ep))
    except BaseException:
        for s in udp_socks + tcp_socks:
            s.close()
        raise
    return udp_socks, tcp_socks, port, alt_port


def _bind_group(
    ip: str, port: int, alt_ip: str | None, alt_port: int | None, tcp: bool
) -> tuple[list[socket.socket], list[socket.socket], int, int | None]:
    """Bind the UDP (and TCP) sockets for one listen address and its alternates on
    every combination of IP and port. Port 0 lets the kernel pick the UDP port; the
    same number may be taken for TCP or on the alternate IP, so then the whole group
    is tried again with another."""
    attempts = _PORT_ZERO_ATTEMPTS if 0 in (port, alt_port) else 1
    for attempt in range(attempts):
        try:
            return _bind_group_once(ip, port, alt_ip, alt_port, tcp)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def make_ssl_context(config: Config) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    assert config.tls_cert is not None
    ctx.load_cert_chain(config.tls_cert, config.tls_key)
    return ctx


def turn_settings(config: Config) -> TurnSettings:
    """The TURN core's settings from the application's ``Config``: ``relay_ip`` if set,
    else the first specific (non-wildcard) listen address of each family."""
    candidates = [config.relay_ip] if config.relay_ip else [ip for ip, _ in config.listen]
    chosen: dict[int, str] = {}
    for ip in candidates:
        if ip not in _WILDCARDS:
            chosen.setdefault(family_of(ip), ip)
    return TurnSettings(
        realm=config.realm,
        relay_ips=tuple(chosen.values()),
        relay_ports=config.relay_ports,
        external_ip=config.external_ip,
        software=config.software,
        default_lifetime=config.default_lifetime,
        max_lifetime=config.max_lifetime,
        permission_lifetime=config.permission_lifetime,
        channel_lifetime=config.channel_lifetime,
        max_allocations=config.max_allocations,
        user_quota=config.user_quota,
        max_permissions=config.max_permissions,
        max_channels=config.max_channels,
        bandwidth=config.bandwidth,
        unauth_rate=config.unauth_rate,
        unauth_global_rate=config.unauth_global_rate,
        default_family=config.default_family,
        alternate_servers=config.alternate_server,
    )


def credential_store(config: Config) -> CredentialStore:
    """The credential sources the configuration names, in order."""
    stores: list[CredentialStore] = []
    if config.users:
        stores.append(StaticUsers(dict(config.users)))
    if config.user_db is not None:
        from ..userdb import UserDatabase

        stores.append(UserDatabase(config.user_db))
    if config.auth_secret is not None:
        stores.append(RestSecret(config.auth_secret, digest=config.auth_secret_algorithm))
    return stores[0] if len(stores) == 1 else ChainedStore(*stores)


def peer_policy(config: Config, listening: list[Address]) -> PeerPolicy:
    """The peer policy: the operator's ranges, and never the server's own endpoints
    (``listening``, port 0 resolved, and the same ports on the external IP)."""
    own: list[str | Address] = list(dict.fromkeys(listening))
    if config.external_ip is not None:
        own += [(config.external_ip[0], port) for port in {port for _, port in listening}]
    return PeerPolicy(allow=config.allow_peer, deny=config.deny_peer, own_addresses=own)


def make_turn(
    config: Config,
    relays: RelaySockets,
    counters: Counter[str],
    listening: list[Address],
) -> TurnServer:
    """The TURN core with its credential sources, nonces and peer policy."""
    # PASSWORD-ALGORITHMS (RFC 8489 §9.2.4) only when asked for: the nonce cookie and
    # the attribute make every 401 longer, and browsers use MD5 keys anyway.
    features = SecurityFeature.PASSWORD_ALGORITHMS if config.password_algorithms else None
    nonces = NonceFactory(secrets.token_bytes(32), config.nonce_lifetime,
                          security_features=features)  # fmt: skip
    return TurnServer(turn_settings(config), credentials=credential_store(config),
                      nonces=nonces, policy=peer_policy(config, listening), opener=relays,
                      counters=counters)  # fmt: skip


#: Settings that only a restart changes (sockets, listeners, their options).
RESTART_KEYS = (
    "listen", "alt_ip", "alt_port", "udp", "tcp", "tls_port", "metrics_listen",
    "relay_ip", "relay_ports", "external_ip", "mapped_address", "software",
    "password_algorithms", "max_message_size", "tcp_max_connections", "tcp_max_per_source",
)  # fmt: skip


class TlsContext:
    """The TLS context new connections get; replaced on reload (open ones keep theirs)."""

    def __init__(self, context: ssl.SSLContext | None) -> None:
        self.current = context


async def serve(
    config: Config,
    *,
    clock: Callable[[], float] = SteadyClock(),  # noqa: B008 - one per process is right
    task_status: trio.TaskStatus[ServerInfo] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the server until cancelled. ``clock`` is the unix-time clock the core is
    given; by default a :class:`SteadyClock`, which system clock steps do not move."""
    metrics = Metrics()
    info = ServerInfo(metrics=metrics)
    relays = RelaySockets()
    udp_socks: list[socket.socket] = []
    stream_socks: list[socket.socket] = []  # TCP listeners, bound with their UDP group
    bindings: dict[Address, BindingService] = {}
    groups: list[tuple[list[Address], BindingService]] = []
    try:
        for index, (ip, port) in enumerate(config.listen):
            alt_ip = config.alt_ip if index == 0 else None
            alt_port = config.alt_port if index == 0 else None
            socks, tcp_socks, port, alt_port = _bind_group(ip, port, alt_ip, alt_port,
                                                           config.tcp)  # fmt: skip
            stream_socks.extend(tcp_socks)
            if not config.udp:
                for s in socks:
                    s.close()
                socks = []
            binding = BindingService(
                BindingConfig((ip, port), alt_ip, alt_port, config.software,
                              config.mapped_address)
            )  # fmt: skip
            endpoints = binding.config.endpoints()
            for endpoint in endpoints:
                bindings.setdefault(endpoint, binding)
            for s in socks:
                udp_socks.append(s)
                info.udp.append(local_address(s))
            groups.append((endpoints, binding))
    except OSError as exc:
        for s in udp_socks + stream_socks:
            s.close()
        raise OSError(exc.errno, f"cannot bind: {exc.strerror}") from None

    ssl_context = make_ssl_context(config) if config.tls_enabled else None
    tls = TlsContext(ssl_context)
    stream_listeners: list[tuple[trio.SocketListener, ssl.SSLContext | None]] = []
    admin_listeners: list[trio.SocketListener] = []
    try:
        tcp_by_address = {local_address(sock): sock for sock in stream_socks}
        for endpoints, binding in groups:
            if config.tcp:
                for ep in endpoints:
                    sock = tcp_by_address.pop(ep)
                    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
                    stream_listeners.append((listener, None))
                    info.tcp.append(ep)
            if ssl_context is not None:
                tls_port = config.tls_port if config.tls_port is not None else 5349
                for listener in await trio.open_tcp_listeners(tls_port, host=endpoints[0][0]):
                    stream_listeners.append((listener, ssl_context))
                    addr = local_address(listener.socket)
                    info.tls.append(addr)
                    bindings.setdefault(addr, binding)
        turn = (
            make_turn(config, relays, metrics.counters, list(bindings))
            if config.turn_enabled else None
        )  # fmt: skip
        server = Server(bindings, turn, counters=metrics.counters, software=config.software)
        shell = Shell(server, relays, metrics, clock)
        info.server = server
        info.config = config
        current = [config]

        def reload(new: Config) -> list[str]:
            old = current[0]
            context = make_ssl_context(new) if new.tls_enabled else None  # may raise
            if turn is not None and new.turn_enabled:
                restart = turn.reconfigure(turn_settings(new), credentials=credential_store(new),
                                           policy=peer_policy(new, list(bindings)))  # fmt: skip
            else:
                restart = ["users/auth-secret"] if new.turn_enabled != old.turn_enabled else []
            if context is not None and tls.current is not None:
                tls.current = context
            logging.getLogger().setLevel(new.log_level.upper())
            keys = [k for k in RESTART_KEYS if getattr(new, k) != getattr(old, k)]
            keys += [k.replace("relay_ips", "relay_ip") for k in restart if k not in keys]
            current[0] = info.config = new
            return sorted(set(keys))

        info._reload = reload
        slots = StreamSlots(config.tcp_max_connections, config.tcp_max_per_source,
                            server.holds_allocation, metrics.counters)  # fmt: skip
        if config.metrics_listen is not None:
            ip, port = config.metrics_listen
            admin_listeners = await trio.open_tcp_listeners(port, host=ip)
            info.admin = [local_address(lst.socket) for lst in admin_listeners]
        async with trio.open_nursery() as nursery:
            for s in udp_socks:
                shell.senders[local_address(s)] = s
                nursery.start_soon(serve_udp, s, shell)
                log.info("listening on udp %s:%d", *local_address(s))
            for listener, ctx in stream_listeners:
                log.info("listening on %s %s:%d", "tls" if ctx else "tcp",
                         *local_address(listener.socket))  # fmt: skip
                nursery.start_soon(partial(
                    serve_stream, listener, shell, slots, idle_timeout=config.tcp_idle_timeout,
                    max_frame=config.max_message_size, tls=tls if ctx else None,
                    first_message_timeout=config.tcp_first_message_timeout,
                    handshake_timeout=config.tls_handshake_timeout,
                ))  # fmt: skip
            if admin_listeners:
                routes = AdminRoutes(
                    Collector(metrics, lambda: info.server, tasks=count_tasks),
                    sessions=(lambda: turn.sessions(clock())) if turn is not None else list,
                    ready=lambda: not info.draining,
                    drain=info.drain,
                )
                nursery.start_soon(serve_admin, admin_listeners, routes)
                for addr in info.admin:
                    log.info("admin (metrics, sessions, health) on http://%s:%d/", *addr)
            nursery.start_soon(_watch_drain, info)
            if turn is not None:
                nursery.start_soon(shell.run_timers)
                nursery.start_soon(read_relays, shell)
                log.info("TURN enabled: realm %r, relay %s, ports %d-%d",
                         config.realm, ", ".join(turn.settings.relay_ips),
                         *config.relay_ports)  # fmt: skip
            task_status.started(info)
            notify("READY=1")
    finally:
        for admin in admin_listeners:
            admin.socket.close()
        relays.close_all()
        for s in udp_socks:
            s.close()
        for listener, _ in stream_listeners:
            listener.socket.close()
        for sock in stream_socks:
            sock.close()


__all__ = ["ServerInfo", "serve", "turn_settings"]
