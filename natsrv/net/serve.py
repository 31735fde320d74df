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
from dataclasses import dataclass, field, replace
from functools import partial

import trio

from ..config import DEFAULT_TLS_PORT, Config
from ..core.allocation import family_of
from ..core.binding import BindingConfig, BindingService
from ..core.credentials import (
    ChainedStore,
    CredentialStore,
    RestSecret,
    StaticUsers,
    UserhashStore,
)
from ..core.nonce import NonceFactory
from ..core.policy import PeerPolicy
from ..core.quota import AllocationLedger
from ..core.server import Server
from ..core.turn import TurnServer, TurnSettings
from ..metrics import Collector, Metrics
from ..stun.attributes import SecurityFeature
from .admin import AdminRoutes, serve_admin
from .dtls import DtlsEndpoint, make_dtls_context
from .fastpath import install as install_data_path
from .relay import RelaySockets, read_relays
from .sdnotify import notify
from .shell import Shell, SteadyClock
from .tcp import StreamSlots, serve_stream
from .udp import bind_udp, local_address, serve_udp

log = logging.getLogger("natsrv")

Address = tuple[str, int]
_WILDCARDS = ("0.0.0.0", "::")
#: What binding [::] fails with where the kernel or the host has no IPv6.
_NO_IPV6 = (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT)


@dataclass
class ServerInfo:
    """What ``serve`` bound: the primary endpoint first in each list; and the handle to
    drain the server (``drain``, ``drained``)."""

    udp: list[Address] = field(default_factory=list)
    tcp: list[Address] = field(default_factory=list)
    tls: list[Address] = field(default_factory=list)
    dtls: list[Address] = field(default_factory=list)
    #: The DTLS endpoints with their sessions (natsrv.net.dtls.DtlsEndpoint).
    dtls_endpoints: list[DtlsEndpoint] = field(default_factory=list)
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


def _bind_tcp(ip: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((ip, port))
        sock.listen(1024)
    except BaseException:
        sock.close()
        raise
    return sock


class SocketSource:
    """Where ``serve`` gets its listening sockets: bound here (with ``reuse_port``, as
    members of an ``SO_REUSEPORT`` group), or ``inherited`` from the parent of a worker
    process (``net/workers.py``), found by kind and address."""

    def __init__(self, *, reuse_port: bool = False,
                 inherited: list[socket.socket] | None = None) -> None:  # fmt: skip
        self.reuse_port = reuse_port or inherited is not None
        self.inherited = {(s.type, local_address(s)): s for s in inherited or ()}

    def udp(self, ip: str, port: int) -> socket.socket:
        found = self.inherited.pop((socket.SOCK_DGRAM, (ip, port)), None)
        return found if found is not None else bind_udp(ip, port, reuse_port=self.reuse_port)

    def tcp(self, ip: str, port: int) -> socket.socket:
        found = self.inherited.pop((socket.SOCK_STREAM, (ip, port)), None)
        return found if found is not None else _bind_tcp(ip, port, reuse_port=self.reuse_port)


def _bind_group_once(
    source: SocketSource, ip: str, port: int, alt_ip: str | None, alt_port: int | None,
    tcp: bool,
) -> tuple[list[socket.socket], list[socket.socket], int, int | None]:  # fmt: skip
    udp_socks: list[socket.socket] = []
    tcp_socks: list[socket.socket] = []
    try:
        first = source.udp(ip, port)
        udp_socks.append(first)
        port = local_address(first)[1]
        if alt_port == 0:
            probe = source.udp(ip, 0)
            udp_socks.append(probe)
            alt_port = local_address(probe)[1]
        elif alt_port is not None:
            udp_socks.append(source.udp(ip, alt_port))
        if alt_ip is not None:
            udp_socks.append(source.udp(alt_ip, port))
            if alt_port is not None:
                udp_socks.append(source.udp(alt_ip, alt_port))
        if tcp:
            for ep in BindingConfig((ip, port), alt_ip, alt_port).endpoints():
                tcp_socks.append(source.tcp(*ep))
    except BaseException:
        for s in udp_socks + tcp_socks:
            s.close()
        raise
    return udp_socks, tcp_socks, port, alt_port


def _bind_group(
    source: SocketSource, ip: str, port: int, alt_ip: str | None, alt_port: int | None,
    tcp: bool,
) -> tuple[list[socket.socket], list[socket.socket], int, int | None]:
    """Bind the UDP (and TCP) sockets for one listen address and its alternates on
    every combination of IP and port. Port 0 lets the kernel pick the UDP port; the
    same number may be taken for TCP or on the alternate IP, so then the whole group
    is tried again with another."""
    attempts = _PORT_ZERO_ATTEMPTS if 0 in (port, alt_port) else 1
    for attempt in range(attempts):
        try:
            return _bind_group_once(source, ip, port, alt_ip, alt_port, tcp)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _bind_tls(
    source: SocketSource, ip: str, port: int, dtls: bool
) -> tuple[socket.socket, socket.socket | None]:
    """The TLS listener and, with ``dtls``, the UDP socket of the same port number
    (RFC 7350). Port 0: the number the kernel picks for TCP may be taken for UDP, so
    then both are tried again with another."""
    attempts = _PORT_ZERO_ATTEMPTS if port == 0 and dtls else 1
    for attempt in range(attempts):
        tcp = source.tcp(ip, port)
        if not dtls:
            return tcp, None
        try:
            return tcp, source.udp(ip, local_address(tcp)[1])
        except OSError as exc:
            tcp.close()
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
    """The TURN core's settings from the application's ``Config``: the ``relay_ip``
    addresses (one per family) if set, else the first specific (non-wildcard) listen
    address of each family."""
    candidates = list(config.relay_ip) or [ip for ip, _ in config.listen]
    chosen: dict[int, str] = {}
    for ip in candidates:
        if ip not in _WILDCARDS:
            chosen.setdefault(family_of(ip), ip)
    return TurnSettings(
        realm=config.realm,
        relay_ips=tuple(chosen.values()),
        relay_ports=config.relay_ports,
        external_ips=config.external_ip,
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
        tcp_relay=config.tcp_relay,
        tcp_connect_timeout=config.tcp_relay_connect_timeout,
        tcp_bind_timeout=config.tcp_relay_bind_timeout,
        tcp_max_pending=config.tcp_relay_max_pending,
        tcp_max_per_allocation=config.tcp_relay_max_per_allocation,
        tcp_max_connections=config.tcp_relay_max_connections,
        redirect_all=config.redirect_all,
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
        first, *previous = config.auth_secret
        stores.append(RestSecret(first, previous=previous, digest=config.auth_secret_algorithm))
    return stores[0] if len(stores) == 1 else ChainedStore(*stores)


def peer_policy(config: Config, listening: list[Address]) -> PeerPolicy:
    """The peer policy: the operator's ranges, and never the server's own endpoints
    (``listening``, port 0 resolved, and the same ports on the external IP)."""
    own: list[str | Address] = list(dict.fromkeys(listening))
    for public, _ in config.external_ip:
        own += [(public, port) for port in {port for _, port in listening}]
    return PeerPolicy(allow=config.allow_peer, deny=config.deny_peer, own_addresses=own)


def make_turn(
    config: Config,
    relays: RelaySockets,
    counters: Counter[str],
    listening: list[Address],
    *,
    nonce_key: bytes | None = None,
    ledger: AllocationLedger | None = None,
) -> TurnServer:
    """The TURN core with its credential sources, nonces and peer policy; ``nonce_key``
    and ``ledger`` when shared with other worker processes."""
    # PASSWORD-ALGORITHMS (RFC 8489 §9.2.4) and username anonymity (§14.4) only when
    # asked for: the nonce cookie and the attribute make every 401 longer, and browsers
    # use neither anyway.
    store = credential_store(config)
    features = 0
    if config.password_algorithms:
        features |= SecurityFeature.PASSWORD_ALGORITHMS
    if config.userhash:
        if isinstance(store, UserhashStore) and store.resolves_userhash:
            features |= SecurityFeature.USERNAME_ANONYMITY
        else:
            log.warning("userhash: the user database has no userhash column yet (any "
                        "`natsrv user` command adds it): not advertised")  # fmt: skip
    nonces = NonceFactory(nonce_key or secrets.token_bytes(32), config.nonce_lifetime,
                          security_features=features or None)  # fmt: skip
    return TurnServer(turn_settings(config), credentials=store, nonces=nonces,
                      policy=peer_policy(config, listening), opener=relays,
                      counters=counters, ledger=ledger)  # fmt: skip


def uses_proxy_protocol(config: Config, kind: str, address: Address) -> bool:
    """Whether the ``kind`` ("tcp" or "tls") listener bound on ``address`` requires a
    PROXY protocol header (never unless ``proxy-protocol`` is on)."""
    if not config.proxy_protocol:
        return False
    ip, port = address
    shown = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
    return kind in config.proxy_protocol_listeners or shown in config.proxy_protocol_listeners


#: Settings that only a restart changes (sockets, listeners, their options).
RESTART_KEYS = (
    "listen", "alt_ip", "alt_port", "udp", "tcp", "tls_port", "metrics_listen",
    "relay_ip", "relay_ports", "external_ip", "mapped_address", "software",
    "password_algorithms", "userhash", "max_message_size", "tcp_max_connections",
    "tcp_max_per_source", "proxy_protocol", "proxy_protocol_listeners", "dtls",
    "dtls_max_sessions", "workers",
)  # fmt: skip


class TlsContext:
    """The TLS context new connections get; replaced on reload (open ones keep theirs)."""

    def __init__(self, context: ssl.SSLContext | None) -> None:
        self.current = context


@dataclass
class Listeners:
    """The listening sockets of one server process, bound (or inherited) before it
    serves: UDP and plain TCP by listen address and its alternates, then TLS."""

    udp: list[socket.socket] = field(default_factory=list)
    tcp: list[socket.socket] = field(default_factory=list)
    tls: list[tuple[socket.socket, BindingService]] = field(default_factory=list)
    #: The UDP socket of each TLS listener's port for DTLS (RFC 7350), or None.
    dtls: list[socket.socket | None] = field(default_factory=list)
    #: Each listen address's endpoints (primary first) and the Binding service they share.
    groups: list[tuple[list[Address], BindingService]] = field(default_factory=list)

    def sockets(self) -> list[socket.socket]:
        return (self.udp + self.tcp + [sock for sock, _ in self.tls]
                + [sock for sock in self.dtls if sock is not None])  # fmt: skip

    def close(self) -> None:
        for sock in self.sockets():
            sock.close()


def bind_listeners(config: Config, source: SocketSource | None = None) -> Listeners:
    """Bind (or take from ``source``) every listening socket ``config`` names. A
    failure closes what was bound and raises ``OSError`` naming the problem."""
    source = source or SocketSource()
    bound = Listeners()
    try:
        for index, (ip, port) in enumerate(config.listen):
            alt_ip = config.alt_ip if index == 0 else None
            alt_port = config.alt_port if index == 0 else None
            try:
                socks, tcp_socks, port, alt_port = _bind_group(source, ip, port, alt_ip,
                                                               alt_port, config.tcp)  # fmt: skip
            except OSError as exc:
                # The default listens on [::] too; a host without IPv6 keeps IPv4 only.
                if ip != "::" or index == 0 or exc.errno not in _NO_IPV6:
                    raise
                log.warning("not listening on [::]:%d: this host has no IPv6 (%s)",
                            port, exc.strerror)  # fmt: skip
                continue
            bound.tcp.extend(tcp_socks)
            if not config.udp:
                for s in socks:
                    s.close()
                socks = []
            binding = BindingService(
                BindingConfig((ip, port), alt_ip, alt_port, config.software,
                              config.mapped_address)
            )  # fmt: skip
            bound.udp.extend(socks)
            bound.groups.append((binding.config.endpoints(), binding))
        if config.tls_enabled:
            tls_port = config.tls_port if config.tls_port is not None else DEFAULT_TLS_PORT
            for endpoints, binding in bound.groups:
                tls_sock, dtls_sock = _bind_tls(source, endpoints[0][0], tls_port, config.dtls)
                bound.tls.append((tls_sock, binding))
                bound.dtls.append(dtls_sock)
    except OSError as exc:
        bound.close()
        raise OSError(exc.errno, f"cannot bind: {exc.strerror}") from None
    return bound


def resolved_config(config: Config, bound: Listeners) -> Config:
    """``config`` with the port numbers the kernel picked for port 0, so that binding
    it again gives the same addresses (the other members of an SO_REUSEPORT group)."""
    listen = tuple(endpoints[0] for endpoints, _ in bound.groups)
    alt_port = bound.groups[0][1].config.alt_port if bound.groups else config.alt_port
    tls_port = local_address(bound.tls[0][0])[1] if bound.tls else config.tls_port
    return replace(config, listen=listen, alt_port=alt_port, tls_port=tls_port)


async def serve(
    config: Config,
    *,
    clock: Callable[[], float] = SteadyClock(),  # noqa: B008 - one per process is right
    sockets: SocketSource | None = None,
    nonce_key: bytes | None = None,
    ledger: AllocationLedger | None = None,
    task_status: trio.TaskStatus[ServerInfo] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the server until cancelled. ``clock`` is the unix-time clock the core is
    given; by default a :class:`SteadyClock`, which system clock steps do not move.
    A worker process passes the sockets it inherited, the nonce key every worker
    shares and the host's allocation ledger (``net/workers.py``)."""
    metrics = Metrics()
    info = ServerInfo(metrics=metrics)
    relays = RelaySockets()
    bound = bind_listeners(config, sockets)
    udp_socks = bound.udp
    bindings: dict[Address, BindingService] = {}
    for endpoints, binding in bound.groups:
        for endpoint in endpoints:
            bindings.setdefault(endpoint, binding)
    info.udp.extend(local_address(s) for s in udp_socks)
    stream_listeners: list[tuple[trio.SocketListener, ssl.SSLContext | None]] = []
    admin_listeners: list[trio.SocketListener] = []
    dtls_socks: list[socket.socket] = []
    try:
        ssl_context = make_ssl_context(config) if config.tls_enabled else None
        tls = TlsContext(ssl_context)
        tcp_by_address = {local_address(sock): sock for sock in bound.tcp}
        for endpoints, _ in bound.groups:
            if config.tcp:
                for ep in endpoints:
                    sock = tcp_by_address.pop(ep)
                    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
                    stream_listeners.append((listener, None))
                    info.tcp.append(ep)
        for (sock, binding), dtls_sock in zip(bound.tls, bound.dtls, strict=True):
            listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
            stream_listeners.append((listener, ssl_context))
            addr = local_address(sock)
            info.tls.append(addr)
            bindings.setdefault(addr, binding)
            if dtls_sock is not None:
                dtls_socks.append(dtls_sock)
                info.dtls.append(addr)
        turn = (
            make_turn(config, relays, metrics.counters, list(bindings), nonce_key=nonce_key,
                      ledger=ledger)
            if config.turn_enabled else None
        )  # fmt: skip
        server = Server(bindings, turn, counters=metrics.counters, software=config.software)
        shell = Shell(server, relays, metrics, clock)
        install_data_path(shell)
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
                for dtls_endpoint in shell.dtls_endpoints:
                    assert new.tls_cert is not None and new.tls_key is not None
                    dtls_endpoint.context = make_dtls_context(new.tls_cert, new.tls_key)
            logging.getLogger().setLevel(new.log_level.upper())
            keys = [k for k in RESTART_KEYS if getattr(new, k) != getattr(old, k)]
            renamed = {"relay_ips": "relay_ip", "external_ips": "external_ip"}
            keys += [renamed.get(k, k) for k in restart if renamed.get(k, k) not in keys]
            current[0] = info.config = new
            return sorted(set(keys))

        info._reload = reload
        slots = StreamSlots(config.tcp_max_connections, config.tcp_max_per_source,
                            server.holds_allocation, metrics.counters)  # fmt: skip
        if config.metrics_listen is not None:
            ip, port = config.metrics_listen
            admin_listeners = await trio.open_tcp_listeners(port, host=ip)
            info.admin = [local_address(lst.socket) for lst in admin_listeners]
        for sock in dtls_socks:
            assert config.tls_cert is not None and config.tls_key is not None
            shell.dtls_endpoints.append(DtlsEndpoint(
                sock, shell, make_dtls_context(config.tls_cert, config.tls_key),
                max_sessions=config.dtls_max_sessions,
                handshake_timeout=config.tls_handshake_timeout,
                idle_timeout=config.tcp_idle_timeout,
            ))  # fmt: skip
        info.dtls_endpoints = shell.dtls_endpoints
        async with trio.open_nursery() as nursery:
            shell.tcp_relay.nursery = nursery  # RFC 6062 connect attempts run here
            for dtls_endpoint in shell.dtls_endpoints:
                nursery.start_soon(dtls_endpoint.serve)
                log.info("listening on dtls %s:%d", *dtls_endpoint.local)
            for s in udp_socks:
                shell.senders[local_address(s)] = s
                nursery.start_soon(serve_udp, s, shell)
                log.info("listening on udp %s:%d", *local_address(s))
            for listener, ctx in stream_listeners:
                kind, addr = "tls" if ctx else "tcp", local_address(listener.socket)
                log.info("listening on %s %s:%d", kind, *addr)
                proxied = uses_proxy_protocol(config, kind, addr)
                if proxied:
                    log.info("PROXY protocol header required on %s %s:%d", kind, *addr)
                nursery.start_soon(partial(
                    serve_stream, listener, shell, slots, idle_timeout=config.tcp_idle_timeout,
                    max_frame=config.max_message_size, tls=tls if ctx else None,
                    first_message_timeout=config.tcp_first_message_timeout,
                    handshake_timeout=config.tls_handshake_timeout,
                    proxy_protocol=proxied,
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
        bound.close()


__all__ = ["Listeners", "ServerInfo", "SocketSource", "bind_listeners", "resolved_config",
           "serve", "turn_settings"]
