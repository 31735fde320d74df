"""The TURN server, sans-IO: Allocate, Refresh, CreatePermission, ChannelBind, Send,
and the relay fast paths.

RFC 8656 (TURN; RFC 5766 clients are served by the same rules):
§5 (general behaviour: 437 without an allocation, 441 for another username, bandwidth
quotas), §7.2 (Allocate checks in order: 437, REQUESTED-TRANSPORT 400/442,
DONT-FRAGMENT, RESERVATION-TOKEN 400/508, REQUESTED- and ADDITIONAL-ADDRESS-FAMILY
400/440, EVEN-PORT 400/508, quotas 486/508; lifetimes), §8 (Refresh, LIFETIME 0 deletes,
per-family refresh of dual allocations, 443), §9 (permissions per IP, 300 s), §10
(CreatePermission), §11 (Send and Data indications), §12 (ChannelBind, ChannelData),
§21 (security: peer policy, no open relay). RFC 8489 §6.3.1 (retransmitted requests get
the same answer for 40 s), §9.2 (long-term credentials, in ``auth.py``).

``TurnServer.handle(msg, five_tuple, now)`` returns a list of effects (``effects.py``)
and never raises for a well-formed message: every refusal becomes an error response
at one boundary. Nothing is stored for a request before it authenticates; answers to
unauthenticated requests (401, 400, 420) are rate-limited per source IP and carry no
SOFTWARE, so the server is a poor reflector.

The relay hot path does not build effects: ``channel_to_peer`` and ``peer_to_client``
are a few dictionary lookups each, checking expiry lazily against ``now``;
``expire(now)`` reclaims what timed out (one heap entry per allocation and per
reservation) and ``next_deadline()`` says when to call it next.

Error-code decisions beyond the RFC's letter:

* Too many permissions or channels on one allocation -> 508 (§10.2 and §12.2: "unable
  to fulfill the request due to some capacity limit"), not 400: the request is valid.
* Too many allocations for one username -> 486; for the whole server -> 508, or 300 Try
  Alternate when an alternate server of the client's family is configured (RFC 8489
  §10), as while draining or with ``redirect_all``. A user's quota is not redirected:
  it bounds one user, not the server.
* A REQUESTED-ADDRESS-FAMILY value that is neither IPv4 nor IPv6 -> 440.
* A peer the policy refuses -> 403, also when only one of several XOR-PEER-ADDRESS in a
  CreatePermission is refused (nothing is installed then).
* A stale or unrecognised nonce on a request whose integrity verified -> 438 (so
  clients recover after a server restart changed the nonce key).
* Methods other than the four TURN requests and RFC 6062's Connect and
  ConnectionBind -> 400.
* RFC 6062 (``tcp_relay.py``): REQUESTED-TRANSPORT TCP over UDP -> 442 (as for any
  transport the server cannot relay over that connection); with EVEN-PORT,
  RESERVATION-TOKEN or DONT-FRAGMENT -> 400; ChannelBind on a TCP allocation -> 400 and
  Send indications on it are dropped; too many peer connections -> 508.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import Counter
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, replace
from typing import Any

from ..stun.attributes import AddressErrorCode, ErrorCodeValue
from ..stun.constants import (
    REASONS,
    TRANSPORT_TCP,
    TRANSPORT_UDP,
    Attr,
    MessageClass,
    Method,
    method_name,
)
from ..stun.errors import (
    AddressFamilyNotSupported,
    AllocationMismatch,
    AllocationQuotaReached,
    BadRequest,
    Forbidden,
    InsufficientCapacity,
    PeerAddressFamilyMismatch,
    RequestError,
    TryAlternate,
    UnknownAttribute,
    UnsupportedTransport,
    WrongCredentials,
)
from ..stun.fast import MAX_DATA_INDICATION_PAYLOAD, PreparedResponse
from ..stun.message import Message, encode_message
from .allocation import (
    CHANNEL_MAX,
    CHANNEL_MIN,
    FAMILY_CODE_OF,
    FAMILY_CODES,
    IPV4,
    IPV6,
    Allocation,
    Relay,
    RelayPorts,
    Reservation,
    family_of,
)
from .auth import Authenticator, Challenge, ChallengeLimiter, Credentials, StaleChallenge
from .credentials import CredentialStore
from .effects import (
    Address,
    Effect,
    Event,
    FiveTuple,
    PeerRoute,
    RelayOpener,
    SendToClient,
    send_to_peer,
)
from .forwarding import ForwardingTable
from .nonce import NonceFactory
from .policy import PeerPolicy
from .quota import AllocationLedger, LocalLedger
from .tcp_relay import TcpRelay

_WILDCARDS = ("0.0.0.0", "::")
_INF = float("inf")

_FINGERPRINT = Attr.FINGERPRINT
#: Refusals too common to log: a second Allocate on a 5-tuple (437) is a retry.
_QUIET = frozenset({437})
_SUCCESS = MessageClass.SUCCESS
_ERROR = MessageClass.ERROR
_ALLOCATE = Method.ALLOCATE
_REFRESH = Method.REFRESH

#: Counters kept by ``TurnServer`` (all start at 0).
COUNTERS = (
    "allocations_active",
    "allocations_created",
    "allocations_deleted",
    "allocations_expired",
    "allocations_closed",
    "reservations_created",
    "reservations_claimed",
    "reservations_expired",
    "auth_challenges",
    "auth_failures",
    "stale_nonces",
    "unauth_dropped",
    "retransmissions",
    "policy_refusals",
    "policy_drops",
    "permission_drops",
    "channel_drops",
    "bandwidth_drops",
    "no_allocation_drops",
    "malformed_drops",
    "oversize_drops",
)


@dataclass(frozen=True, slots=True)
class TurnSettings:
    """The TURN part of the configuration, in the core's terms.

    ``relay_ips`` holds at most one address per family; ``external_ips`` holds
    ``(public, private)`` pairs, at most one per family (``external_ip``: one more pair,
    the older form): relays bound on ``private`` (or, with ``private`` None, on any
    address of ``public``'s family) are advertised as ``public``. Times are
    seconds, ``bandwidth`` bytes per second per allocation (0: no cap) with bursts of
    ``bandwidth_burst`` bytes (default: max(bandwidth, 65536)); ``unauth_rate`` is
    answers per second per source IP to unauthenticated requests and
    ``unauth_global_rate`` answers per second to them from the whole server (0: no
    limit).
    """

    realm: str = "natsrv"
    relay_ips: tuple[str, ...] = ()
    relay_ports: tuple[int, int] = (49152, 65535)
    external_ip: tuple[str, str | None] | None = None
    external_ips: tuple[tuple[str, str | None], ...] = ()
    software: str | None = "natsrv"
    default_lifetime: float = 600.0
    max_lifetime: float = 3600.0
    permission_lifetime: float = 300.0
    channel_lifetime: float = 600.0
    reservation_lifetime: float = 30.0
    transaction_lifetime: float = 40.0
    max_allocations: int = 10000
    user_quota: int = 100
    max_permissions: int = 64
    max_channels: int = 64
    bandwidth: int = 0
    bandwidth_burst: int | None = None
    unauth_rate: float = 20.0
    unauth_global_rate: float = 20000.0
    unauth_table_size: int = 4096
    #: ``"ipv4"`` (RFC 8656 §7.2) or ``"listener"``: the family of the server address
    #: the Allocate arrived on, when the request names no family.
    default_family: str = "ipv4"
    max_bind_attempts: int = 64
    #: Where 300 Try Alternate sends new allocations (RFC 8489 §10) while draining, at
    #: ``max_allocations`` or with ``redirect_all``: at most one per family, the one of
    #: the client's family; none (or only this server itself): 508.
    alternate_servers: tuple[Address, ...] = ()
    #: RFC 6062 TCP allocations on TCP/TLS control connections; how long a Connect may
    #: take and a ConnectionBind may be awaited; how many peer connections may wait
    #: (connecting or for their ConnectionBind) per allocation, exist per allocation,
    #: and exist in the server.
    tcp_relay: bool = True
    tcp_connect_timeout: float = 30.0
    tcp_bind_timeout: float = 30.0
    tcp_max_pending: int = 8
    tcp_max_per_allocation: int = 64
    tcp_max_connections: int = 4096
    #: Send every new allocation to the alternate server (maintenance); existing
    #: allocations live on.
    redirect_all: bool = False

    def __post_init__(self) -> None:
        if self.default_family not in ("ipv4", "listener"):
            raise ValueError("default_family must be 'ipv4' or 'listener'")
        families = [family_of(ip) for ip in self.relay_ips]
        if len(set(families)) != len(families):
            raise ValueError("at most one relay address per family")


#: A request handler: the attributes of the success answer, or None when the answer
#: comes later (RFC 6062 Connect).
_Handler = Callable[
    [Message, FiveTuple, Allocation | None, Credentials, float, list[Effect]],
    list[tuple[int, Any]] | None,
]


def _who(alloc: Allocation) -> dict[str, object]:
    transport, client, _ = alloc.five_tuple
    return {"username": alloc.username, "transport": transport, "client": _endpoint(client)}


def _endpoint(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class TurnServer:
    """TURN allocations of one server process (see the module docstring)."""

    #: Peer addresses whose policy verdict is cached (cleared when full).
    PEER_CACHE_SIZE = 65536

    def __init__(
        self,
        settings: TurnSettings,
        *,
        credentials: CredentialStore,
        nonces: NonceFactory,
        policy: PeerPolicy,
        opener: RelayOpener,
        counters: MutableMapping[str, int] | None = None,
        ledger: AllocationLedger | None = None,
    ) -> None:
        self.settings = settings
        #: Allocations and reservations per user and in total (shared between workers).
        self.ledger: AllocationLedger = LocalLedger() if ledger is None else ledger
        self.nonces = nonces
        low, high = settings.relay_ports
        self.ports = RelayPorts(opener, low, high, settings.max_bind_attempts)
        self.limiter = ChallengeLimiter(
            settings.unauth_rate,
            size=settings.unauth_table_size,
            global_rate=settings.unauth_global_rate,
        )
        #: Every allocation by its 5-tuple.
        self.allocations: dict[FiveTuple, Allocation] = {}
        #: The server's one counter store (shared with the rest of the server when given).
        self.counters: MutableMapping[str, int] = {} if counters is None else counters
        for name in COUNTERS:
            self.counters.setdefault(name, 0)
        self._by_relay: dict[Address, tuple[Allocation, Relay]] = {}
        #: What allocations that ended relayed: packets and bytes to peers, to clients.
        self.closed_traffic = [0, 0, 0, 0]
        #: Answers by (method, transport, result): "success" or the error code.
        self.requests: Counter[tuple[int, str, str]] = Counter()
        #: Requests whose credentials failed, by reason.
        self.auth_failures: Counter[str] = Counter()
        #: While draining, new allocations are refused (300 or 508); existing ones keep
        #: relaying, refreshing and binding until they end.
        self.draining = False
        #: Log lines for refused and failed requests: at most 20 a second (bursts of 50).
        self._log_budget = ChallengeLimiter(20.0, 50.0, size=1)
        self._heap: list[tuple[float, int, Allocation | Reservation]] = []
        self._seq = itertools.count()
        self._relay_ips: dict[int, str] = {family_of(ip): ip for ip in settings.relay_ips}
        self._public_ips: dict[int, str] = {
            fam: self._advertised_ip(ip) for fam, ip in self._relay_ips.items()
        }
        #: RFC 6062: the peer connections of TCP allocations.
        self.tcp = TcpRelay(self)
        #: The data plane's table of decisions (``forwarding.py``), when the shell has one.
        self.forwarding: ForwardingTable | None = None
        self._handlers: dict[int, _Handler] = {
            Method.ALLOCATE: self._allocate,
            Method.REFRESH: self._refresh,
            Method.CREATE_PERMISSION: self._create_permission,
            Method.CHANNEL_BIND: self._channel_bind,
            Method.CONNECT: self.tcp.connect,
            Method.CONNECTION_BIND: self.tcp.connection_bind,
        }
        self._apply(settings, credentials, policy)

    #: Settings bound to sockets and ports: a change needs a restart.
    RESTART_SETTINGS = (
        "relay_ips", "relay_ports", "external_ip", "external_ips", "max_bind_attempts",
    )  # fmt: skip

    def reconfigure(
        self, settings: TurnSettings, *, credentials: CredentialStore, policy: PeerPolicy
    ) -> list[str]:
        """Apply new settings, credential sources and peer policy now (SIGHUP): realm,
        lifetimes, quotas, rates, bandwidth, alternates, secrets and users, peer rules.
        Live allocations keep relaying; what they already have stays. Returns the names
        of changed settings that need a restart (kept as they were)."""
        restart = [name for name in self.RESTART_SETTINGS
                   if getattr(settings, name) != getattr(self.settings, name)]  # fmt: skip
        if restart:
            settings = replace(settings, **{n: getattr(self.settings, n) for n in restart})
        self.settings = settings
        for alloc in self.allocations.values():
            self._forget_routes(alloc)  # the policy or the bandwidth cap may change
        limiter = self.limiter
        limiter.rate, limiter.burst = settings.unauth_rate, max(1.0, settings.unauth_rate)
        limiter.global_rate = settings.unauth_global_rate
        limiter.global_burst = max(1.0, settings.unauth_global_rate)
        self._apply(settings, credentials, policy)
        return restart

    def _apply(
        self, settings: TurnSettings, credentials: CredentialStore, policy: PeerPolicy
    ) -> None:
        """Everything derived from the settings that may change while running."""
        self.auth = Authenticator(settings.realm, credentials, self.nonces)
        self.policy = policy
        self._peer_ok: dict[Address, bool] = {}
        self._rate = float(settings.bandwidth)
        self._burst = float(
            settings.bandwidth_burst
            if settings.bandwidth_burst is not None
            else max(settings.bandwidth, 65536)
        )
        # The 401 every new client gets first (RFC 8489 §9.2.4), prepared: ERROR-CODE
        # and REALM before the per-client NONCE, PASSWORD-ALGORITHMS after.
        after: list[tuple[int, Any]] = []
        if self.auth.password_algorithms:
            after.append((Attr.PASSWORD_ALGORITHMS, self.auth.password_algorithms))
        self._challenge_401 = PreparedResponse(
            MessageClass.ERROR,
            [(Attr.ERROR_CODE, ErrorCodeValue(401, "")), (Attr.REALM, settings.realm)],
            Attr.NONCE,
            after,
        )
        self._software: tuple[int, str] | None = (
            (Attr.SOFTWARE, settings.software) if settings.software else None
        )

    def _advertised_ip(self, relay_ip: str) -> str:
        s = self.settings
        mappings: tuple[tuple[str, str | None], ...] = (
            *s.external_ips, *((s.external_ip,) if s.external_ip else ())
        )
        for public, private in mappings:
            if private == relay_ip:
                return public
        for public, private in mappings:
            if private is None and family_of(public) == family_of(relay_ip):
                return public
        if relay_ip in _WILDCARDS:
            raise ValueError(f"relay address {relay_ip} needs an external IP to advertise")
        return relay_ip

    # -- requests and indications ------------------------------------------------------
    def handle(self, msg: Message, five_tuple: FiveTuple, now: float) -> list[Effect]:
        """Process one decoded TURN request or indication from the client on
        ``five_tuple``; return what to do."""
        effects: list[Effect] = []
        if not msg.cookie:
            return effects  # TURN needs RFC 5389 or later: no answer to RFC 3489 messages
        if msg.cls == MessageClass.INDICATION:
            if msg.method == Method.SEND:
                self._send(msg, five_tuple, now, effects)
            return effects
        if msg.cls != MessageClass.REQUEST:
            return effects
        alloc = self._live(five_tuple, now, effects)
        if alloc is not None:
            cached = self._cached(alloc, msg, now)
            if cached is not None:
                self.counters["retransmissions"] += 1
                effects.append(SendToClient(five_tuple, cached))
                return effects
        if (
            msg.integrity_offset is None
            and msg.integrity_sha256_offset is None
            and not msg.unknown_required
            and msg.method in self._handlers
        ):
            # Unsigned: the answer is a 401, whatever else is wrong with the request.
            self.counters["errors_401"] = self.counters.get("errors_401", 0) + 1
            if five_tuple[0] == "udp" and not self.limiter.allow(
                five_tuple[1][0], now, msg.transaction_id
            ):
                self.counters["unauth_dropped"] += 1
                return effects
            self.counters["auth_challenges"] += 1
            self.requests[(msg.method, five_tuple[0], "401")] += 1
            effects.append(SendToClient(five_tuple, self._challenge(msg, five_tuple[1], now)))
            return effects
        creds: Credentials | None = None
        try:
            if msg.unknown_required:
                raise UnknownAttribute(msg.unknown_required)
            handler = self._handlers.get(msg.method)
            if handler is None:
                raise BadRequest("Unsupported method")
            creds = self.auth.authenticate(msg, five_tuple[1], now)
            self.limiter.trust(five_tuple[1][0], now)
            answer = handler(msg, five_tuple, alloc, creds, now, effects)
            if answer is None:
                return effects  # answered later (RFC 6062 Connect)
            attrs = answer
            cls, result = _SUCCESS, "success"
        except StaleChallenge as exc:
            # Integrity verified: the client holds the password, so no rate limit.
            self.limiter.trust(five_tuple[1][0], now)
            self.counters["stale_nonces"] += 1
            self.auth_failures["stale-nonce"] += 1
            self.requests[(msg.method, five_tuple[0], "438")] += 1
            effects.append(SendToClient(five_tuple, self._error(msg, exc).encode(fingerprint=True)))
            return effects
        except RequestError as exc:
            self.counters[f"errors_{exc.code}"] = self.counters.get(f"errors_{exc.code}", 0) + 1
            if creds is None:
                if isinstance(exc, Challenge) and exc.failed:
                    self.auth_failures[exc.failure] += 1
                    if self._log_budget.allow("", now):
                        effects.append(Event("auth-failed", {
                            "username": msg.get(Attr.USERNAME), "transport": five_tuple[0],
                            "client": _endpoint(five_tuple[1]), "reason": exc.failure,
                            "method": method_name(msg.method),
                        }))  # fmt: skip
                if self._answer_unauthenticated(msg, exc, five_tuple, now, effects):
                    self.requests[(msg.method, five_tuple[0], str(exc.code))] += 1
                return effects
            attrs = self._error_attributes(exc)
            cls, result = _ERROR, str(exc.code)
            if exc.code not in _QUIET and self._log_budget.allow("", now):
                effects.append(Event("request-refused", {
                    "username": creds.username, "transport": five_tuple[0],
                    "client": _endpoint(five_tuple[1]), "method": method_name(msg.method),
                    "code": exc.code, "reason": exc.reason,
                }))  # fmt: skip
        method = msg.method
        if self._software is not None and method in (_ALLOCATE, _REFRESH):
            attrs.append(self._software)
        data = encode_message(
            method, cls, msg.transaction_id, attrs,
            key=creds.sha1_key, key_sha256=creds.sha256_key, fingerprint=True,
        )  # fmt: skip
        self._remember(msg, five_tuple, data, cls, now)
        self.requests[(method, five_tuple[0], result)] += 1
        effects.append(SendToClient(five_tuple, data))
        return effects

    def _challenge(self, msg: Message, client: Address, now: float) -> bytes:
        """The 401 with REALM, a fresh NONCE and PASSWORD-ALGORITHMS, and FINGERPRINT."""
        nonce = self.auth.nonces.issue(client, now).encode("ascii")
        return self._challenge_401.render(msg.method, msg.transaction_id, nonce,
                                          fingerprint=_FINGERPRINT in msg)  # fmt: skip

    def _answer_unauthenticated(
        self,
        msg: Message,
        exc: RequestError,
        five_tuple: FiveTuple,
        now: float,
        effects: list[Effect],
    ) -> bool:
        """Answer a refused unauthenticated request, within the rate limit (False: it
        was dropped)."""
        # Only UDP sources can be spoofed to make us a reflector; over TCP/TLS the
        # handshake proved the address, and a silent drop would leave the client hanging
        # (no retransmission on streams).
        if five_tuple[0] == "udp" and not self.limiter.allow(
            five_tuple[1][0], now, msg.transaction_id
        ):
            self.counters["unauth_dropped"] += 1
            return False
        if isinstance(exc, Challenge):
            self.counters["auth_failures" if exc.failed else "auth_challenges"] += 1
        # FINGERPRINT only when the request had one: less to reflect for spoofed sources.
        answer = self._error(msg, exc).encode(fingerprint=_FINGERPRINT in msg)
        effects.append(SendToClient(five_tuple, answer))
        return True

    def _alternate_for(self, five_tuple: FiveTuple) -> Address | None:
        """The configured alternate server of the client's family, if any, unless it
        is this server itself (RFC 8489 §10 leaves loops to clients; a server listed as
        its own alternate, on the address the request came to or on one it advertises,
        must not send the client round in a circle)."""
        local_ip, local_port = five_tuple[2]
        family = family_of(five_tuple[1][0])  # the client's (behind a proxy: its own)
        own = {local_ip, *self._relay_ips.values(), *self._public_ips.values()}
        for address in self.settings.alternate_servers:
            if family_of(address[0]) == family:
                if address[1] == local_port and address[0] in own:
                    return None
                return address
        return None

    def _redirect(self, five_tuple: FiveTuple) -> None:
        """Raise 300 Try Alternate to the alternate of the client's family, if any."""
        alternate = self._alternate_for(five_tuple)
        if alternate is not None:
            self.counters["redirects"] = self.counters.get("redirects", 0) + 1
            raise TryAlternate(alternate=alternate)

    @staticmethod
    def _error_attributes(exc: RequestError) -> list[tuple[int, Any]]:
        attrs: list[tuple[int, Any]] = [(Attr.ERROR_CODE, ErrorCodeValue(exc.code, exc.reason))]
        if isinstance(exc, TryAlternate):
            attrs.append((Attr.ALTERNATE_SERVER, exc.extra["alternate"]))
        if isinstance(exc, UnknownAttribute):
            attrs.append((Attr.UNKNOWN_ATTRIBUTES, exc.unknown))
        if isinstance(exc, Challenge | StaleChallenge):
            attrs.extend(exc.attributes)
        return attrs

    def _error(self, msg: Message, exc: RequestError) -> Message:
        return msg.reply(MessageClass.ERROR, self._error_attributes(exc))

    def _cached(self, alloc: Allocation, msg: Message, now: float) -> bytes | None:
        """The answer already sent to this transaction, if it is a retransmission."""
        tid = msg.transaction_id
        if (
            msg.method == Method.ALLOCATE
            and tid == alloc.allocate_tid
            and now < alloc.allocate_until
        ):
            return alloc.allocate_response
        if msg.method == alloc.last_method and tid == alloc.last_tid and now < alloc.last_until:
            return alloc.last_response
        return None

    def _remember(
        self, msg: Message, five_tuple: FiveTuple, data: bytes, cls: int, now: float
    ) -> None:
        alloc = self.allocations.get(five_tuple)
        if alloc is None:
            return
        until = now + self.settings.transaction_lifetime
        if msg.method == Method.ALLOCATE and cls == MessageClass.SUCCESS:
            alloc.allocate_tid, alloc.allocate_response, alloc.allocate_until = (
                msg.transaction_id,
                data,
                until,
            )
        else:
            alloc.last_method, alloc.last_tid = msg.method, msg.transaction_id
            alloc.last_response, alloc.last_until = data, until

    @staticmethod
    def _owned(alloc: Allocation | None, creds: Credentials) -> Allocation:
        """RFC 8656 §5: 437 without an allocation, 441 for another user's allocation."""
        if alloc is None:
            raise AllocationMismatch()
        if alloc.username != creds.username:
            raise WrongCredentials()
        return alloc

    def _lifetime(self, requested: int | None) -> float:
        """RFC 8656 §7.2 / §8.2: min(requested, maximum), but never below the default."""
        s = self.settings
        if requested is None:
            return s.default_lifetime
        desired = min(float(requested), s.max_lifetime)
        return desired if desired > s.default_lifetime else s.default_lifetime

    # Allocate (RFC 8656 §7.2) ------------------------------------------------------------
    def _allocate(
        self,
        msg: Message,
        five_tuple: FiveTuple,
        alloc: Allocation | None,
        creds: Credentials,
        now: float,
        effects: list[Effect],
    ) -> list[tuple[int, Any]]:
        s = self.settings
        if alloc is not None:
            raise AllocationMismatch()
        if self.draining or s.redirect_all:
            # RFC 8489 §10: send the client elsewhere when we know where; else 508.
            self._redirect(five_tuple)
            raise InsufficientCapacity("Server is draining" if self.draining else
                                       "Server is under maintenance")  # fmt: skip
        transport = msg.get(Attr.REQUESTED_TRANSPORT)
        if transport is None:
            raise BadRequest("REQUESTED-TRANSPORT is missing")
        tcp = transport == TRANSPORT_TCP
        if tcp:
            # RFC 6062 §5.1: TCP relays for TCP/TLS control connections only.
            if five_tuple[0] not in ("tcp", "tls") or not s.tcp_relay:
                raise UnsupportedTransport()
            if (
                Attr.DONT_FRAGMENT in msg
                or Attr.EVEN_PORT in msg
                or Attr.RESERVATION_TOKEN in msg
            ):
                raise BadRequest("DONT-FRAGMENT, EVEN-PORT or RESERVATION-TOKEN with TCP")
        elif transport != TRANSPORT_UDP:
            raise UnsupportedTransport()
        # DONT-FRAGMENT is accepted: the shell sets DF where the platform allows.
        token = msg.get(Attr.RESERVATION_TOKEN)
        even = msg.get(Attr.EVEN_PORT)  # None, or the R bit
        requested = msg.get(Attr.REQUESTED_ADDRESS_FAMILY)
        additional = msg.get(Attr.ADDITIONAL_ADDRESS_FAMILY)
        error_attr = Attr.ADDRESS_ERROR_CODE
        if additional is None:
            # coturn's clients still use the draft's code: answer them in kind.
            additional = msg.get(Attr.ADDITIONAL_ADDRESS_FAMILY_DRAFT)
            if additional is not None:
                error_attr = Attr.ADDRESS_ERROR_CODE_DRAFT
        reservation = None
        if token is not None:
            if even is not None or requested is not None or additional is not None:
                raise BadRequest("RESERVATION-TOKEN with EVEN-PORT or an address family")
            reservation = self.ports.peek(token, now)
            if reservation is None:
                raise InsufficientCapacity("Reservation unknown or expired")
        if requested is not None and additional is not None:
            raise BadRequest("REQUESTED- and ADDITIONAL-ADDRESS-FAMILY together")
        if reservation is not None:
            families: tuple[int, ...] = (family_of(reservation.relay[0]),)
        elif additional is not None:
            if additional != FAMILY_CODE_OF[IPV6]:
                raise BadRequest("ADDITIONAL-ADDRESS-FAMILY must be IPv6")
            families = (IPV4, IPV6)
        else:
            if requested is not None:
                family = FAMILY_CODES.get(requested)
            elif s.default_family == "listener":
                family = family_of(five_tuple[2][0])
            else:
                family = IPV4
            if family is None or family not in self._relay_ips:
                raise AddressFamilyNotSupported()
            families = (family,)
        if even and additional is not None:
            raise BadRequest("EVEN-PORT reservation with ADDITIONAL-ADDRESS-FAMILY")
        # An EVEN-PORT reservation holds a second port: it counts as an allocation of its
        # user's and of the server's until it is claimed or expires.
        needed = 2 if even else 1
        refused = self.ledger.acquire(creds.username, needed, s.user_quota, s.max_allocations)
        if refused == "total":
            self._redirect(five_tuple)
            raise InsufficientCapacity()
        if refused == "user":
            raise AllocationQuotaReached()
        lifetime = self._lifetime(msg.get(Attr.LIFETIME))
        expires_at = now + lifetime
        relays: dict[int, Relay] = {}
        address_errors: list[AddressErrorCode] = []
        reserved: Reservation | None = None
        if reservation is not None:
            self.ports.claim(reservation.token, now)
            self._uncount(reservation.username)
            self.counters["reservations_claimed"] += 1
            family = families[0]
            public = (self._public_ips[family], reservation.relay[1])
            relays[family] = Relay(reservation.relay, public, family, expires_at)
        else:
            for family in families:
                ip = self._relay_ips.get(family)
                if ip is None:
                    address_errors.append(
                        AddressErrorCode(FAMILY_CODE_OF[family], 440, REASONS[440])
                    )
                    continue
                port = self.ports.open(ip, even=even is not None, pair=bool(even), tcp=tcp)
                if port is None:
                    if len(families) == 1:
                        self.ledger.release(creds.username, needed)
                        raise InsufficientCapacity()
                    address_errors.append(
                        AddressErrorCode(FAMILY_CODE_OF[family], 508, REASONS[508])
                    )
                    continue
                relays[family] = Relay(
                    (ip, port), (self._public_ips[family], port), family, expires_at
                )
                if even:
                    reserved = self.ports.reserve(
                        (ip, port + 1), now + s.reservation_lifetime, creds.username
                    )
                    self._push(reserved.expires_at, reserved)
                    self.counters["reservations_created"] += 1
            if not relays:
                self.ledger.release(creds.username, needed)
                raise InsufficientCapacity()
        alloc = Allocation(
            five_tuple, creds.username, relays, tokens=self._burst, refilled_at=now,
            created_at=now, tcp=tcp,
        )
        self.allocations[five_tuple] = alloc
        for relay in relays.values():
            self._by_relay[relay.address] = (alloc, relay)
        # A new allocation's first deadline is its relays' expiry (no permissions yet).
        alloc.wake_at = expires_at
        self._push(expires_at, alloc)
        self.counters["allocations_created"] += 1
        self.counters["allocations_active"] = len(self.allocations)
        effects.append(Event("allocation-created", {
            **_who(alloc), "relays": [_endpoint(r.address) for r in relays.values()],
            "lifetime_s": int(lifetime),
        }))  # fmt: skip
        # One XOR-RELAYED-ADDRESS per relay, IPv4 first.
        attrs: list[tuple[int, Any]] = [
            (Attr.XOR_RELAYED_ADDRESS, r.public)
            for r in (relays.values() if len(relays) == 1 else (relays[IPV4], relays[IPV6]))
        ]
        attrs.append((Attr.LIFETIME, int(lifetime)))
        if reserved is not None:
            attrs.append((Attr.RESERVATION_TOKEN, reserved.token))
        attrs.append((Attr.XOR_MAPPED_ADDRESS, five_tuple[1]))
        if address_errors:
            attrs.extend((error_attr, e) for e in address_errors)
        return attrs

    # Refresh (RFC 8656 §8.2) -------------------------------------------------------------
    def _refresh(
        self,
        msg: Message,
        five_tuple: FiveTuple,
        alloc: Allocation | None,
        creds: Credentials,
        now: float,
        effects: list[Effect],
    ) -> list[tuple[int, Any]]:
        alloc = self._owned(alloc, creds)
        targets = list(alloc.relays.values())
        requested_family = msg.get(Attr.REQUESTED_ADDRESS_FAMILY)
        if requested_family is not None:
            family = FAMILY_CODES.get(requested_family)
            relay = alloc.relays.get(family) if family is not None else None
            if relay is None:
                raise PeerAddressFamilyMismatch()
            targets = [relay]
        requested = msg.get(Attr.LIFETIME)
        if requested == 0:
            for relay in targets:
                self._close_relay(alloc, relay, effects)
            if alloc.relays:
                alloc.purge(now)
            else:
                self._remove(alloc, effects, "allocations_deleted", now)
            return [(Attr.LIFETIME, 0)]
        lifetime = self._lifetime(requested)
        for relay in targets:
            relay.expires_at = now + lifetime
        self._schedule(alloc)
        effects.append(Event("allocation-refreshed", {**_who(alloc), "lifetime_s": int(lifetime)}))
        return [(Attr.LIFETIME, int(lifetime))]

    # CreatePermission (RFC 8656 §10.2) ---------------------------------------------------
    def _create_permission(
        self,
        msg: Message,
        five_tuple: FiveTuple,
        alloc: Allocation | None,
        creds: Credentials,
        now: float,
        effects: list[Effect],
    ) -> list[tuple[int, Any]]:
        s = self.settings
        alloc = self._owned(alloc, creds)
        peers: list[Address] = msg.get_all(Attr.XOR_PEER_ADDRESS)
        if not peers:
            raise BadRequest("XOR-PEER-ADDRESS is missing")
        ips = list(dict.fromkeys(ip for ip, _ in peers))
        if any(alloc.relay_for(ip) is None for ip in ips):
            raise PeerAddressFamilyMismatch()
        if not all(self.policy.allows(ip) for ip in ips):
            self.counters["policy_refusals"] += 1
            raise Forbidden()
        alloc.purge(now)
        new = sum(1 for ip in ips if ip not in alloc.permissions)
        if len(alloc.permissions) + new > s.max_permissions:
            raise InsufficientCapacity("Too many permissions")
        until = now + s.permission_lifetime
        added = [ip for ip in ips if ip not in alloc.permissions]
        for ip in ips:
            alloc.permissions[ip] = until
        self._schedule(alloc)
        if added:
            effects.append(Event("permission-created", {**_who(alloc), "peers": added}))
        return []

    # ChannelBind (RFC 8656 §12.2) --------------------------------------------------------
    def _channel_bind(
        self,
        msg: Message,
        five_tuple: FiveTuple,
        alloc: Allocation | None,
        creds: Credentials,
        now: float,
        effects: list[Effect],
    ) -> list[tuple[int, Any]]:
        s = self.settings
        alloc = self._owned(alloc, creds)
        if alloc.tcp:
            raise BadRequest("No channels on a TCP allocation")
        number = msg.get(Attr.CHANNEL_NUMBER)
        peer = msg.get(Attr.XOR_PEER_ADDRESS)
        if number is None or peer is None:
            raise BadRequest("CHANNEL-NUMBER and XOR-PEER-ADDRESS are required")
        if not CHANNEL_MIN <= number <= CHANNEL_MAX:
            raise BadRequest("Channel number out of range")
        channel = alloc.live_channel(number, now)
        if channel is not None and channel.peer != peer:
            raise BadRequest("Channel bound to another peer")
        other = alloc.live_peer_channel(peer, now)
        if other is not None and other.number != number:
            raise BadRequest("Peer bound to another channel")
        relay = alloc.relay_for(peer[0])
        if relay is None:
            raise PeerAddressFamilyMismatch()
        if not self.policy.allows(peer[0], peer[1]):
            self.counters["policy_refusals"] += 1
            raise Forbidden()
        alloc.purge(now)
        if channel is None and len(alloc.channels) >= s.max_channels:
            raise InsufficientCapacity("Too many channels")
        if peer[0] not in alloc.permissions and len(alloc.permissions) >= s.max_permissions:
            raise InsufficientCapacity("Too many permissions")
        alloc.bind_channel(number, peer, relay, now + s.channel_lifetime)
        alloc.permissions[peer[0]] = now + s.permission_lifetime
        self._schedule(alloc)
        if self.forwarding is not None and not self._rate:
            bound = alloc.channels[number]
            until = min(bound.expires_at, alloc.permissions[peer[0]], relay.expires_at)
            self.forwarding.to_peer(five_tuple, number, bound.route, until)
            self.forwarding.to_client(relay.address, peer, five_tuple, number, until)
        if channel is None:
            effects.append(Event("channel-bound", {
                **_who(alloc), "channel": number, "peer": _endpoint(peer),
            }))  # fmt: skip
        return []

    # Send indication (RFC 8656 §11.2) ----------------------------------------------------
    def _send(self, msg: Message, five_tuple: FiveTuple, now: float, effects: list[Effect]) -> None:
        counters = self.counters
        alloc = self._live(five_tuple, now, effects)
        if alloc is None:
            counters["no_allocation_drops"] += 1
            return
        peer = msg.get(Attr.XOR_PEER_ADDRESS)
        data = msg.get(Attr.DATA)
        relay = alloc.relay_for(peer[0]) if peer is not None else None
        if data is None or relay is None or msg.unknown_required or alloc.tcp:
            counters["malformed_drops"] += 1
            return
        if not alloc.permitted(peer[0], now):
            counters["permission_drops"] += 1
            return
        if not self._peer_allowed(peer):
            counters["policy_drops"] += 1
            return
        if self._rate and not alloc.spend(len(data), now, self._rate, self._burst):
            counters["bandwidth_drops"] += 1
            return
        alloc.to_peer_packets += 1
        alloc.to_peer_bytes += len(data)
        effects.append(send_to_peer(relay.address, peer, data))

    # -- the relay hot path ------------------------------------------------------------
    def channel_to_peer(
        self, five_tuple: FiveTuple, channel: int, size: int, now: float
    ) -> PeerRoute | None:
        """The route for a ChannelData message of ``size`` payload bytes from
        the client, or None to drop it (RFC 8656 §12.6; no channel, expired permission,
        over the bandwidth quota). Receiving data refreshes nothing."""
        alloc = self.allocations.get(five_tuple)
        if alloc is None:
            self.counters["no_allocation_drops"] += 1
            return None
        ch = alloc.channels.get(channel)
        if ch is None or ch.expires_at <= now or ch.relay.expires_at <= now:
            self.counters["channel_drops"] += 1
            return None
        peer = ch.peer
        if alloc.permissions.get(peer[0], 0.0) <= now:
            self.counters["permission_drops"] += 1
            return None
        if self._rate and not alloc.spend(size, now, self._rate, self._burst):
            self.counters["bandwidth_drops"] += 1
            return None
        alloc.to_peer_packets += 1
        alloc.to_peer_bytes += size
        if self.forwarding is not None and not self._rate:
            until = min(ch.expires_at, ch.relay.expires_at, alloc.permissions[peer[0]])
            self.forwarding.to_peer(five_tuple, channel, ch.route, until)
        return ch.route

    def peer_to_client(
        self, relay: Address, peer: Address, size: int, now: float
    ) -> tuple[FiveTuple, int | None] | None:
        """Where a datagram of ``size`` bytes from ``peer`` to ``relay`` goes: the
        client's 5-tuple and the channel bound to ``peer`` (None: send a Data
        indication), or None to drop it (RFC 8656 §11.3:
        no permission for the peer's IP, policy, bandwidth)."""
        entry = self._by_relay.get(relay)
        if entry is None:
            self.counters["no_allocation_drops"] += 1
            return None
        alloc, relay_state = entry
        if relay_state.expires_at <= now:
            self.counters["no_allocation_drops"] += 1
            return None
        if alloc.permissions.get(peer[0], 0.0) <= now:
            self.counters["permission_drops"] += 1
            return None
        allowed = self._peer_ok.get(peer)
        if allowed is None:
            allowed = self._peer_allowed(peer)
        if not allowed:
            self.counters["policy_drops"] += 1
            return None
        if self._rate and not alloc.spend(size, now, self._rate, self._burst):
            self.counters["bandwidth_drops"] += 1
            return None
        ch = alloc.peer_channels.get(peer)
        number = ch.number if ch is not None and ch.expires_at > now else None
        if number is None and size > MAX_DATA_INDICATION_PAYLOAD:
            self.counters["oversize_drops"] += 1
            return None
        alloc.to_client_packets += 1
        alloc.to_client_bytes += size
        if self.forwarding is not None and not self._rate:
            until = min(relay_state.expires_at, alloc.permissions[peer[0]])
            if ch is not None and number is not None:
                until = min(until, ch.expires_at)
            self.forwarding.to_client(relay, peer, alloc.five_tuple, number, until)
        return alloc.five_tuple, number

    def _peer_allowed(self, peer: Address) -> bool:
        """``policy.allows(ip, port)``, cached per peer address (the policy is immutable).
        Only reached for peers an allocation has a permission for."""
        allowed = self._peer_ok.get(peer)
        if allowed is None:
            allowed = self.policy.allows(peer[0], peer[1])
            if len(self._peer_ok) >= self.PEER_CACHE_SIZE:
                self._peer_ok.clear()
            self._peer_ok[peer] = allowed
        return allowed

    # -- lifetimes ---------------------------------------------------------------------
    def expire(self, now: float) -> list[Effect]:
        """Reclaim everything that expired by ``now``: allocations (the opener closes
        their relays), dual-allocation relays, permissions, channels
        and unclaimed reservations."""
        effects: list[Effect] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if not self._scheduled(entry):
                continue
            item = entry[2]
            if isinstance(item, Reservation):
                if self.ports.release(item):
                    self._uncount(item.username)
                self.counters["reservations_expired"] += 1
            else:
                self._reap(item, now, effects)
            heap = self._heap  # _reap may have compacted it
        return effects

    def next_deadline(self) -> float | None:
        """When ``expire`` next has something to do (None: nothing scheduled)."""
        heap = self._heap
        while heap:
            if self._scheduled(heap[0]):
                return heap[0][0]
            heapq.heappop(heap)
        return None

    def timers(self) -> tuple[int, int]:
        """(timers that still stand for something, heap entries in all): what
        ``/metrics`` shows, so a leak of either is visible."""
        return sum(1 for entry in self._heap if self._scheduled(entry)), len(self._heap)

    def connection_closed(self, five_tuple: FiveTuple, now: float) -> list[Effect]:
        """The client's TCP/TLS connection closed: its 5-tuple, and so its allocation,
        is gone."""
        effects = self.tcp.data_connection_closed(five_tuple)
        alloc = self.allocations.get(five_tuple)
        if alloc is not None:
            self._remove(alloc, effects, "allocations_closed", now)
        return effects

    def holds_connection(self, five_tuple: FiveTuple) -> bool:
        """Whether ``five_tuple`` holds an allocation or is a bound RFC 6062 data
        connection (the shell keeps such connections over others)."""
        return five_tuple in self.allocations or five_tuple in self.tcp.by_data

    def relay_entry(self, relay: Address) -> tuple[Allocation, Relay] | None:
        """The allocation and relay bound on ``relay``."""
        return self._by_relay.get(relay)

    def peer_allowed(self, peer: Address) -> bool:
        """Whether the peer policy allows ``peer`` (cached)."""
        return self._peer_allowed(peer)

    def schedule(self, alloc: Allocation) -> None:
        """Make sure ``expire`` looks at ``alloc`` by its next deadline."""
        self._schedule(alloc)

    def _push(self, when: float, item: Allocation | Reservation) -> None:
        heap = self._heap
        if len(heap) >= 2 * (len(self.allocations) + len(self.ports.reservations)) + 1024:
            # Deleted allocations and claimed reservations leave entries behind; drop
            # them now and then so churn cannot grow the heap (amortised O(1) per push).
            self._heap = heap = [entry for entry in heap if self._scheduled(entry)]
            heapq.heapify(heap)
        heapq.heappush(heap, (when, next(self._seq), item))

    def _scheduled(self, entry: tuple[float, int, Allocation | Reservation]) -> bool:
        """Whether a heap entry still stands for something ``expire`` must do."""
        when, _, item = entry
        if isinstance(item, Reservation):
            return self.ports.reservations.get(item.token) is item
        return self.allocations.get(item.five_tuple) is item and item.wake_at == when

    def _schedule(self, alloc: Allocation) -> None:
        """Make sure ``expire`` looks at ``alloc`` no later than its next deadline."""
        deadline = alloc.next_deadline()
        if deadline < alloc.wake_at and math.isfinite(deadline):
            alloc.wake_at = deadline
            self._push(deadline, alloc)

    def _live(self, five_tuple: FiveTuple, now: float, effects: list[Effect]) -> Allocation | None:
        """The allocation on ``five_tuple`` with anything expired reclaimed first."""
        alloc = self.allocations.get(five_tuple)
        if alloc is not None and alloc.wake_at <= now:
            self._reap(alloc, now, effects)
            alloc = self.allocations.get(five_tuple)
        return alloc

    def _reap(self, alloc: Allocation, now: float, effects: list[Effect]) -> None:
        self._forget_routes(alloc)
        for relay in [r for r in alloc.relays.values() if r.expires_at <= now]:
            self._close_relay(alloc, relay, effects)
        if not alloc.relays:
            self._remove(alloc, effects, "allocations_expired", now)
            return
        if alloc.connections:
            self.tcp.expire(alloc, now, effects)
        alloc.purge(now)
        alloc.wake_at = _INF
        self._schedule(alloc)

    def _close_relay(self, alloc: Allocation, relay: Relay, effects: list[Effect]) -> None:
        self._forget_routes(alloc)
        del alloc.relays[relay.family]
        self._by_relay.pop(relay.address, None)
        self.ports.close(relay.address)

    def _forget_routes(self, alloc: Allocation) -> None:
        """Take the allocation's decisions back from the data plane, keeping what they
        relayed."""
        if self.forwarding is not None:
            to_peer, to_peer_bytes, to_client, to_client_bytes = self.forwarding.forget(
                alloc.five_tuple
            )
            alloc.to_peer_packets += to_peer
            alloc.to_peer_bytes += to_peer_bytes
            alloc.to_client_packets += to_client
            alloc.to_client_bytes += to_client_bytes

    def _relayed(self, alloc: Allocation) -> tuple[int, int, int, int]:
        """Packets and bytes to peers and to the client, the data plane's included."""
        out = (alloc.to_peer_packets, alloc.to_peer_bytes, alloc.to_client_packets,
               alloc.to_client_bytes)  # fmt: skip
        if self.forwarding is None:
            return out
        more = self.forwarding.traffic(alloc.five_tuple)
        return out[0] + more[0], out[1] + more[1], out[2] + more[2], out[3] + more[3]

    def _remove(self, alloc: Allocation, effects: list[Effect], reason: str, now: float) -> None:
        if alloc.connections:
            self.tcp.close_all(alloc, effects)
        self._forget_routes(alloc)
        for relay in list(alloc.relays.values()):
            self._close_relay(alloc, relay, effects)
        del self.allocations[alloc.five_tuple]
        alloc.wake_at = _INF
        self._uncount(alloc.username)
        totals = self.closed_traffic
        totals[0] += alloc.to_peer_packets
        totals[1] += alloc.to_peer_bytes
        totals[2] += alloc.to_client_packets
        totals[3] += alloc.to_client_bytes
        self.counters[reason] += 1
        self.counters["allocations_active"] = len(self.allocations)
        effects.append(Event("allocation-ended", {
            **_who(alloc), "reason": reason.removeprefix("allocations_"),
            "duration_s": round(now - alloc.created_at, 3),
            "to_peer_packets": alloc.to_peer_packets, "to_peer_bytes": alloc.to_peer_bytes,
            "to_client_packets": alloc.to_client_packets,
            "to_client_bytes": alloc.to_client_bytes,
        }))  # fmt: skip

    def _uncount(self, username: str) -> None:
        self.ledger.release(username, 1)

    def traffic(self) -> tuple[int, int, int, int]:
        """Packets and bytes relayed to peers and to clients since the start, by live
        and ended allocations together."""
        out = list(self.closed_traffic)
        for alloc in self.allocations.values():
            relayed = self._relayed(alloc)
            for i in range(4):
                out[i] += relayed[i]
        return out[0], out[1], out[2], out[3]

    def sessions(self, now: float) -> list[dict[str, Any]]:
        """The live allocations as plain data (for ``/sessions``): who, from where,
        through which relays, to which peers, for how long, and what they relayed."""
        out: list[dict[str, Any]] = []
        realm = self.settings.realm
        for alloc in self.allocations.values():
            transport, client, server = alloc.five_tuple
            expires = max((r.expires_at for r in alloc.relays.values()), default=now)
            relayed = self._relayed(alloc)
            out.append({
                "username": alloc.username,
                "realm": realm,
                "transport": transport,
                "client": _endpoint(client),
                "server": _endpoint(server),
                "relays": [{"family": "ipv4" if r.family == IPV4 else "ipv6",
                            "address": _endpoint(r.address), "public": _endpoint(r.public)}
                           for r in alloc.relays.values()],
                "permissions": sorted(ip for ip, until in alloc.permissions.items()
                                      if until > now),
                "channels": [{"number": ch.number, "peer": _endpoint(ch.peer)}
                             for ch in alloc.channels.values() if ch.expires_at > now],
                "age_s": round(now - alloc.created_at, 3),
                "lifetime_left_s": round(max(0.0, expires - now), 3),
                "to_peer": {"packets": relayed[0], "bytes": relayed[1]},
                "to_client": {"packets": relayed[2], "bytes": relayed[3]},
            })  # fmt: skip
        return out

    def allocations_of(self, username: str) -> int:
        """How many allocations and unclaimed EVEN-PORT reservations ``username`` holds
        (the quota counts these)."""
        return self.ledger.held(username)


__all__ = [
    "COUNTERS",
    "TurnServer",
    "TurnSettings",
]
