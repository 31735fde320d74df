"""Peer-address policy: which peers a TURN allocation may talk to.

RFC 8656 lets a server refuse peer addresses (403 Forbidden from CreatePermission and
ChannelBind, §9-§12; Security Considerations, §21). A relay reaching loopback, private
or link-local addresses lets any client reach services inside the server's own network
(SSRF; cloud metadata at 169.254.169.254). Deny lists that match only one spelling of
an address get bypassed: CVE-2020-26262 (coturn: peers 0.0.0.0 and [::] reached
loopback), CVE-2026-27624 (the IPv4-mapped ::ffff:127.0.0.1). So this module
canonicalises once and decides, in one place, for every path that names a peer:
``PeerPolicy.allows(ip, port)``.

Canonicalisation (``canonical_peer``), done once before any match:

* IPv4-mapped ``::ffff:a.b.c.d`` (RFC 4291 §2.5.5.2) and IPv4-compatible
  ``::a.b.c.d`` (§2.5.5.1; ``::`` and ``::1`` excepted) become the IPv4 address.

Embedded IPv4, checked as well as the IPv6 address itself, when the address is:

* 6to4 ``2002:V4::/48`` (RFC 3056 §2);
* Teredo ``2001::/32`` (RFC 4380 §4): the server IPv4 and the client IPv4, which is
  stored XOR 0xffffffff;
* NAT64 ``64:ff9b::/96`` (RFC 6052 §2.1) and ``64:ff9b:1::/48`` (RFC 8215), the IPv4
  in the last 32 bits (the /96 format; other RFC 6052 §2.2 formats inside the local-use
  prefix are not decoded, which matters only if an operator allows that prefix, since
  it is denied by default).

Decision, first match wins:

1. Invalid address, or a port outside 1-65535 -> deny.
2. The address, or any IPv4 it embeds, is in an operator ``--deny-peer`` range -> deny.
3. It is, or embeds, one of the server's own addresses (``own_addresses``: a bare IP
   denies every port, an ``(ip, port)`` pair that port only) -> deny, unless an operator
   ``--allow-peer`` entry names exactly that host (a /32 or /128). A broad allow such as
   10.0.0.0/8 does *not* lift it: relaying into the server's own listeners builds loops.
   Give listeners as ``(ip, port)`` pairs: a bare relay IP would also refuse other
   allocations' relayed addresses, which is how two clients of one server reach each
   other (relay-to-relay candidate pairs).
4. Every candidate (the address and each IPv4 it embeds) is judged on its own: inside an
   operator allow range -> fine; else default-denied -> deny. So an allow admits only
   what it covers: allowing 2002::/16 does not admit the 6to4 form of 127.0.0.1.
5. Otherwise allow.

With ``port=None`` the question is "may a permission for this IP exist" (permissions are
per IP address, RFC 8656 §9): port-specific own-address entries are not consulted then,
so callers that know the port (Send, ChannelBind, ChannelData, inbound data) pass it.

The default deny list (``DEFAULT_DENY_V4``, ``DEFAULT_DENY_V6``) is every range the IANA
special-purpose registries (RFC 6890) mark as not globally reachable, plus multicast
and, for IPv6, everything outside global unicast 2000::/3 except the NAT64 well-known
prefix (judged by its IPv4). It is frozen here rather than read from ``ipaddress``
predicates, whose lists change between Python releases; a test checks that it matches
what those predicates flag.

Matching is integer interval lookup (``bisect`` on merged, sorted ranges per family);
parsed strings are cached, so a call costs one to two microseconds.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from enum import Enum
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import TypeAlias

IPAddress: TypeAlias = IPv4Address | IPv6Address
Network: TypeAlias = IPv4Network | IPv6Network
OwnAddress: TypeAlias = "str | IPAddress | tuple[str | IPAddress, int]"

_V4 = IPv4Network
_V6 = IPv6Network

#: Default-denied IPv4 ranges (RFC 6890 and the IANA IPv4 special-purpose registry).
DEFAULT_DENY_V4: tuple[IPv4Network, ...] = (
    _V4("0.0.0.0/8"),  #: "this network", RFC 791; 0.0.0.0 reaches loopback (CVE-2020-26262)
    _V4("10.0.0.0/8"),  #: private, RFC 1918
    _V4("100.64.0.0/10"),  #: shared address space (CGN), RFC 6598
    _V4("127.0.0.0/8"),  #: loopback, RFC 1122 §3.2.1.3
    _V4("169.254.0.0/16"),  #: link-local, RFC 3927 (cloud metadata 169.254.169.254)
    _V4("172.16.0.0/12"),  #: private, RFC 1918
    _V4("192.0.0.0/24"),  #: IETF protocol assignments, RFC 6890 §2.1
    _V4("192.0.2.0/24"),  #: documentation TEST-NET-1, RFC 5737
    _V4("192.168.0.0/16"),  #: private, RFC 1918
    _V4("198.18.0.0/15"),  #: benchmarking, RFC 2544
    _V4("198.51.100.0/24"),  #: documentation TEST-NET-2, RFC 5737
    _V4("203.0.113.0/24"),  #: documentation TEST-NET-3, RFC 5737
    _V4("224.0.0.0/4"),  #: multicast, RFC 5771
    _V4("240.0.0.0/4"),  #: reserved, RFC 1112 §4, including 255.255.255.255 broadcast
)

#: Default-denied IPv6 ranges, after IPv4-mapped and -compatible forms became IPv4.
DEFAULT_DENY_V6: tuple[IPv6Network, ...] = (
    _V6("::/8"),  #: reserved (::, ::1, SIIT ::ffff:0:0:0/96, ...), RFC 4291 §2.4
    # 64:ff9b::/96 (RFC 6052) sits inside ::/8 and is carved out: judged by its IPv4.
    _V6("100::/8"),  #: reserved, includes the discard prefix 100::/64 (RFC 6666)
    _V6("200::/7"),  #: reserved (was OSI NSAP)
    _V6("400::/6"),  #: reserved
    _V6("800::/5"),  #: reserved
    _V6("1000::/4"),  #: reserved
    _V6("2001::/23"),  #: IETF protocol assignments, RFC 2928 (Teredo carved out)
    _V6("2001:db8::/32"),  #: documentation, RFC 3849
    _V6("3fff::/20"),  #: documentation, RFC 9637
    _V6("4000::/2"),  #: unassigned, outside global unicast 2000::/3
    # 8000::/1 holds the rest outside 2000::/3: fc00::/7 unique local (RFC 4193),
    # fe80::/10 link-local and ff00::/8 multicast (RFC 4291 §2.5.6, §2.7), fec0::/10
    # site-local (RFC 3879) and unassigned space.
    _V6("8000::/1"),
)

#: Carved out of DEFAULT_DENY_V6 because the IPv4 they embed is judged instead.
_DECODED_V6: tuple[IPv6Network, ...] = (
    _V6("64:ff9b::/96"),  # NAT64 well-known prefix, RFC 6052 §2.1
    _V6("2001::/32"),  # Teredo, RFC 4380
)

_NAT64_WKP = int(IPv6Address("64:ff9b::")) >> 32
_NAT64_LOCAL = int(IPv6Address("64:ff9b:1::")) >> 80
_LOW32 = 0xFFFFFFFF
_MAX_PORT = 0xFFFF


class PeerVerdict(Enum):
    """Why ``PeerPolicy.verdict`` decided as it did (for metrics; never for clients)."""

    ALLOWED = "allowed"
    OPERATOR_ALLOWED = "operator-allowed"  #: default-denied, admitted by --allow-peer
    INVALID = "invalid"  #: not an IP address, or a port outside 1-65535
    OPERATOR_DENIED = "operator-denied"  #: --deny-peer
    OWN_ADDRESS = "own-address"  #: one of the server's own listening/relay addresses
    DEFAULT_DENIED = "default-denied"  #: DEFAULT_DENY_V4 / DEFAULT_DENY_V6

    @property
    def allowed(self) -> bool:
        return self in (PeerVerdict.ALLOWED, PeerVerdict.OPERATOR_ALLOWED)


def canonical_peer(ip: str | IPAddress) -> IPAddress:
    """The address a peer really is: IPv4-mapped and IPv4-compatible IPv6 become IPv4,
    an IPv6 zone (``%eth0``) is dropped. ``ValueError`` for a string that is not an IP
    address, ``TypeError`` for anything but a string or an ``ipaddress`` address."""
    if isinstance(ip, IPv4Address | IPv6Address):
        addr: IPAddress = ip
    elif isinstance(ip, str):
        addr = ipaddress.ip_address(ip)
    else:  # ip_address() would also take ints and packed bytes: not here
        raise TypeError(f"not an IP address string: {type(ip).__name__}")
    if addr.version == 4:
        return addr
    value = int(addr)
    high = value >> 32
    if high == 0xFFFF or (high == 0 and value > 1):
        return IPv4Address(value & _LOW32)
    if addr.scope_id is not None:
        return IPv6Address(value)
    return addr


def _embedded_v4(value: int) -> tuple[int, ...]:
    """IPv4 addresses (as ints) an IPv6 address carries: 6to4, Teredo, NAT64."""
    top16 = value >> 112
    if top16 == 0x2002:
        return ((value >> 80) & _LOW32,)
    if value >> 96 == 0x20010000:
        return ((value >> 64) & _LOW32, (value & _LOW32) ^ _LOW32)
    if value >> 32 == _NAT64_WKP or value >> 80 == _NAT64_LOCAL:
        return (value & _LOW32,)
    return ()


_Parsed: TypeAlias = tuple[int, int, tuple[int, ...]]
_PARSE_CACHE: dict[str, _Parsed | None] = {}
_PARSE_CACHE_SIZE = 4096


def _parse(ip: str | IPAddress) -> _Parsed | None:
    """(version, integer value, embedded IPv4 ints) of the canonical peer, or None.

    Strings are cached (bounded; cleared when full): parsing dominates the cost.
    """
    if isinstance(ip, str) and ip in _PARSE_CACHE:
        return _PARSE_CACHE[ip]
    try:
        addr = canonical_peer(ip)
    except (ValueError, TypeError):
        parsed = None
    else:
        value = int(addr)
        parsed = (addr.version, value, () if addr.version == 4 else _embedded_v4(value))
    if isinstance(ip, str):
        if len(_PARSE_CACHE) >= _PARSE_CACHE_SIZE:
            _PARSE_CACHE.clear()
        _PARSE_CACHE[ip] = parsed
    return parsed


class _Ranges:
    """Disjoint, sorted, inclusive integer intervals with O(log n) membership."""

    __slots__ = ("_ends", "_starts")

    def __init__(self, intervals: Iterable[tuple[int, int]]) -> None:
        merged: list[list[int]] = []
        for start, end in sorted(intervals):
            if merged and start <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        self._starts = [start for start, _ in merged]
        self._ends = [end for _, end in merged]

    def __contains__(self, value: int) -> bool:
        i = bisect_right(self._starts, value) - 1
        return i >= 0 and value <= self._ends[i]

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __len__(self) -> int:
        return len(self._starts)


def _interval(net: Network) -> tuple[int, int]:
    return int(net.network_address), int(net.broadcast_address)


def _subtract(intervals: list[tuple[int, int]], hole: tuple[int, int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    lo, hi = hole
    for start, end in intervals:
        if end < lo or start > hi:
            out.append((start, end))
            continue
        if start < lo:
            out.append((start, lo - 1))
        if end > hi:
            out.append((hi + 1, end))
    return out


def _canonical_network(net: Network | str) -> Network:
    """A network as given by an operator; ::ffff:0:0/96 sub-ranges become IPv4."""
    if isinstance(net, str):
        net = ipaddress.ip_network(net, strict=False)
    if net.version == 6 and net.prefixlen >= 96 and int(net.network_address) >> 32 == 0xFFFF:
        return IPv4Network((int(net.network_address) & _LOW32, net.prefixlen - 96))
    return net


def _split(nets: Iterable[Network]) -> tuple[_Ranges, _Ranges]:
    v4: list[tuple[int, int]] = []
    v6: list[tuple[int, int]] = []
    for net in nets:
        (v4 if net.version == 4 else v6).append(_interval(net))
    return _Ranges(v4), _Ranges(v6)


def _default_ranges() -> tuple[_Ranges, _Ranges]:
    v6 = [_interval(n) for n in DEFAULT_DENY_V6]
    for hole in _DECODED_V6:
        v6 = _subtract(v6, _interval(hole))
    return _Ranges(_interval(n) for n in DEFAULT_DENY_V4), _Ranges(v6)


_DEFAULT_V4, _DEFAULT_V6 = _default_ranges()


class PeerPolicy:
    """The peer-address policy (see the module docstring for the order of rules).

    ``allow`` and ``deny`` are the operator's ``--allow-peer`` / ``--deny-peer`` ranges
    (networks or CIDR strings); ``own_addresses`` are the server's listening and relay
    addresses, bare (every port denied) or as ``(ip, port)`` pairs (that port only).
    Immutable after construction; safe to share.
    """

    __slots__ = (
        "_allow4",
        "_allow6",
        "_deny4",
        "_deny6",
        "_host_allow",
        "_own",
        "allow",
        "deny",
        "own_addresses",
    )

    def __init__(
        self,
        allow: Sequence[Network | str] = (),
        deny: Sequence[Network | str] = (),
        own_addresses: Iterable[OwnAddress] = (),
    ) -> None:
        self.allow: tuple[Network, ...] = tuple(_canonical_network(n) for n in allow)
        self.deny: tuple[Network, ...] = tuple(_canonical_network(n) for n in deny)
        self._allow4, self._allow6 = _split(self.allow)
        self._deny4, self._deny6 = _split(self.deny)
        self._host_allow = frozenset(
            (n.version, int(n.network_address))
            for n in self.allow
            if n.prefixlen == n.max_prefixlen
        )
        own: dict[tuple[int, int], frozenset[int] | None] = {}
        for entry in own_addresses:
            if isinstance(entry, tuple):
                host, port = entry
                addr = canonical_peer(host)
                key = (addr.version, int(addr))
                if key in own and own[key] is None:
                    continue
                own[key] = (own.get(key) or frozenset()) | {int(port)}
            else:
                addr = canonical_peer(entry)
                own[(addr.version, int(addr))] = None
        self._own = own
        self.own_addresses: tuple[tuple[IPAddress, int | None], ...] = tuple(
            (IPv4Address(v) if fam == 4 else IPv6Address(v), port)
            for (fam, v), ports in sorted(own.items())
            for port in (sorted(ports) if ports is not None else [None])
        )

    def __repr__(self) -> str:
        return (
            f"PeerPolicy(allow={[str(n) for n in self.allow]}, "
            f"deny={[str(n) for n in self.deny]}, own_addresses={len(self._own)})"
        )

    canonical_peer = staticmethod(canonical_peer)

    def allows(self, ip: str | IPAddress, port: int | None = None) -> bool:
        """May the relay exchange packets with this peer (at this port)?"""
        return self.verdict(ip, port).allowed

    def verdict(self, ip: str | IPAddress, port: int | None = None) -> PeerVerdict:
        """``allows`` with the reason; never raises for any ``ip`` or ``port``."""
        if port is not None and (type(port) is not int or not 0 < port <= _MAX_PORT):
            return PeerVerdict.INVALID
        parsed = _parse(ip)
        if parsed is None:
            return PeerVerdict.INVALID
        version, value, embedded = parsed
        if version == 4:
            deny, allow, default = self._deny4, self._allow4, _DEFAULT_V4
        else:
            deny, allow, default = self._deny6, self._allow6, _DEFAULT_V6
        if value in deny or any(v in self._deny4 for v in embedded):
            return PeerVerdict.OPERATOR_DENIED
        if self._own and (
            self._is_own(version, value, port) or any(self._is_own(4, v, port) for v in embedded)
        ):
            return PeerVerdict.OWN_ADDRESS
        verdict = PeerVerdict.ALLOWED
        if value in default:
            if value not in allow:
                return PeerVerdict.DEFAULT_DENIED
            verdict = PeerVerdict.OPERATOR_ALLOWED
        for v in embedded:
            if v in _DEFAULT_V4:
                if v not in self._allow4:
                    return PeerVerdict.DEFAULT_DENIED
                verdict = PeerVerdict.OPERATOR_ALLOWED
        return verdict

    def _is_own(self, version: int, value: int, port: int | None) -> bool:
        key = (version, value)
        if key not in self._own or key in self._host_allow:
            return False
        ports = self._own[key]
        return ports is None or (port is not None and port in ports)
