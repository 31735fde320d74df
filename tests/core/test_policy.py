"""The peer-address policy (natsrv.core.policy): default deny list in every address
form, operator allow/deny, own addresses, and a reference implementation written with
``ipaddress`` predicates that the integer matcher must agree with."""

from __future__ import annotations

from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natsrv.core import policy as policy_module
from natsrv.core.policy import (
    DEFAULT_DENY_V4,
    DEFAULT_DENY_V6,
    PeerPolicy,
    PeerVerdict,
    canonical_peer,
)

M32 = 0xFFFFFFFF
DEFAULT = PeerPolicy()


# -- address forms -------------------------------------------------------------------


def mapped(v4: str) -> str:
    return f"::ffff:{v4}"


def compatible(v4: str) -> str:
    return str(IPv6Address(int(IPv4Address(v4))))


def sixtofour(v4: str) -> str:
    return str(IPv6Address((0x2002 << 112) | (int(IPv4Address(v4)) << 80) | 1))


def teredo(client: str, server: str = "65.54.227.120", port: int = 40000) -> str:
    """RFC 4380 §4: prefix, server, flags, port ^ 0xffff, client ^ 0xffffffff."""
    value = (0x20010000 << 96) | (int(IPv4Address(server)) << 64)
    value |= (port ^ 0xFFFF) << 32 | (int(IPv4Address(client)) ^ M32)
    return str(IPv6Address(value))


def nat64(v4: str) -> str:
    return str(IPv6Address(int(IPv6Address("64:ff9b::")) | int(IPv4Address(v4))))


def nat64_local(v4: str) -> str:
    return str(IPv6Address(int(IPv6Address("64:ff9b:1::")) | int(IPv4Address(v4))))


FORMS = {
    "v4": str,
    "mapped": mapped,
    "compatible": compatible,
    "6to4": sixtofour,
    "teredo-client": teredo,
    "teredo-server": lambda v4: teredo("8.8.8.8", server=v4),
    "nat64": nat64,
    "nat64-local": nat64_local,
}

DENIED_V4 = [
    "0.0.0.0",  # CVE-2020-26262
    "0.1.2.3",
    "10.0.0.1",
    "10.255.255.255",
    "100.64.0.1",
    "100.127.255.254",
    "127.0.0.1",  # CVE-2026-27624 as ::ffff:127.0.0.1
    "127.255.255.254",
    "169.254.169.254",  # cloud metadata
    "172.16.0.1",
    "172.31.255.255",
    "192.0.0.10",
    "192.0.2.1",
    "192.168.1.1",
    "198.18.0.1",
    "198.51.100.7",
    "203.0.113.9",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
]

PUBLIC_V4 = ["8.8.8.8", "1.1.1.1", "9.255.255.255", "11.0.0.0", "172.32.0.1", "223.255.255.1"]

DENIED_V6 = [
    "::",  # CVE-2020-26262 ([::])
    "::1",
    "::ffff:0:7f00:1",  # SIIT ::ffff:0:0:0/96
    "100::1",  # discard
    "fe80::1",
    "fe80::1%eth0",
    "febf:ffff::1",
    "fc00::1",
    "fd12:3456:789a::1",
    "fec0::1",  # site-local
    "ff02::1",
    "ff0e::1",
    "2001:db8::1",
    "2001:10::1",  # ORCHID
    "2001:2::1",  # benchmarking
    "3fff::1",  # documentation, RFC 9637
    "4000::1",
    "1000::1",
    "64:ff9b:1::808:808",  # NAT64 local-use: denied whatever it embeds
]

PUBLIC_V6 = [
    "2606:4700:4700::1111",
    "2001:4860:4860::8888",
    "2a00:1450:4001:80b::200e",
    "3ffe::1",
    "2001:200::1",
]


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("v4", DENIED_V4)
def test_default_denied_ipv4_in_every_form(v4: str, form: str) -> None:
    peer = FORMS[form](v4)
    assert not DEFAULT.allows(peer), peer
    assert not DEFAULT.allows(peer, 3478), peer
    assert not DEFAULT.allows(ip_address(peer.partition("%")[0]), 3478), peer


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("v4", PUBLIC_V4)
def test_public_ipv4_allowed_in_every_form_but_local_nat64(v4: str, form: str) -> None:
    peer = FORMS[form](v4)
    if form == "nat64-local":
        assert DEFAULT.verdict(peer, 5000) is PeerVerdict.DEFAULT_DENIED
    else:
        assert DEFAULT.verdict(peer, 5000) is PeerVerdict.ALLOWED, peer


@pytest.mark.parametrize("v6", DENIED_V6)
def test_default_denied_ipv6(v6: str) -> None:
    assert DEFAULT.verdict(v6, 5000) is PeerVerdict.DEFAULT_DENIED
    assert not DEFAULT.allows(v6)


@pytest.mark.parametrize("v6", PUBLIC_V6)
def test_public_ipv6_allowed(v6: str) -> None:
    assert DEFAULT.allows(v6, 5000)
    assert DEFAULT.allows(IPv6Address(v6))


def test_the_published_bypasses() -> None:
    for peer in ("0.0.0.0", "::", "[::]", "::ffff:127.0.0.1", "::ffff:0.0.0.0", "::ffff:0:0"):
        assert not DEFAULT.allows(peer, 3478), peer
    assert not DEFAULT.allows("::ffff:7f00:1", 22)
    assert not DEFAULT.allows("0:0:0:0:0:FFFF:7F00:0001", 22)


def test_teredo_client_address_is_deobfuscated() -> None:
    # RFC 4380 §4 example-style address: client 192.168.1.1 stored as 3f57:fefe.
    address = teredo("192.168.1.1", server="65.54.227.120")
    assert address.endswith("3f57:fefe")
    assert IPv6Address(address).teredo == (IPv4Address("65.54.227.120"), IPv4Address("192.168.1.1"))
    assert not DEFAULT.allows(address)
    assert DEFAULT.allows(teredo("8.8.4.4", server="65.54.227.120"))


# -- canonicalisation ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_ip", "expected"),
    [
        ("::ffff:127.0.0.1", IPv4Address("127.0.0.1")),
        ("::ffff:0.0.0.0", IPv4Address("0.0.0.0")),
        ("::ffff:8.8.8.8", IPv4Address("8.8.8.8")),
        ("::8.8.8.8", IPv4Address("8.8.8.8")),
        ("::0.0.0.2", IPv4Address("0.0.0.2")),
        ("::", IPv6Address("::")),
        ("::1", IPv6Address("::1")),
        ("fe80::1%eth0", IPv6Address("fe80::1")),
        ("2002:808:808::1", IPv6Address("2002:808:808::1")),
        ("64:ff9b::808:808", IPv6Address("64:ff9b::808:808")),
        ("8.8.8.8", IPv4Address("8.8.8.8")),
        (IPv6Address("::ffff:1.2.3.4"), IPv4Address("1.2.3.4")),
        (IPv4Address("1.2.3.4"), IPv4Address("1.2.3.4")),
    ],
)
def test_canonical_peer(given_ip: str | IPv4Address | IPv6Address, expected: object) -> None:
    assert canonical_peer(given_ip) == expected
    assert PeerPolicy.canonical_peer(given_ip) == expected
    assert str(canonical_peer(given_ip)) == str(expected)


def test_canonical_peer_rejects_non_addresses() -> None:
    for bad in ("", "localhost", "1.2.3", "1.2.3.4.5", "01.2.3.4", "::ffff:1.2.3.4.5", " 1.2.3.4"):
        with pytest.raises(ValueError):
            canonical_peer(bad)
    for wrong in (5, b"\x7f\x00\x00\x01", None):
        with pytest.raises(TypeError):
            canonical_peer(wrong)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "peer", ["", "localhost", "1.2.3", "[::1]", "1.2.3.4:80", "x" * 10_000, "\x00", "é", "::g"]
)
def test_invalid_addresses_are_denied_not_raised(peer: str) -> None:
    assert DEFAULT.verdict(peer) is PeerVerdict.INVALID


@pytest.mark.parametrize("peer", [2130706433, b"\x7f\x00\x00\x01", None, 1.5, ("8.8.8.8", 53)])
def test_non_string_peers_are_invalid(peer: object) -> None:
    assert DEFAULT.verdict(peer) is PeerVerdict.INVALID  # type: ignore[arg-type]


@pytest.mark.parametrize("port", [0, -1, 65536, True, 80.0, "80"])
def test_ports_outside_the_range_are_invalid(port: object) -> None:
    assert DEFAULT.verdict("8.8.8.8", port) is PeerVerdict.INVALID  # type: ignore[arg-type]
    assert DEFAULT.allows("8.8.8.8", 1) and DEFAULT.allows("8.8.8.8", 65535)


# -- operator ranges -----------------------------------------------------------------


def test_allow_admits_only_what_it_covers() -> None:
    policy = PeerPolicy(allow=[ip_network("10.0.0.0/8")])
    assert policy.verdict("10.1.2.3", 5000) is PeerVerdict.OPERATOR_ALLOWED
    assert policy.allows(mapped("10.1.2.3"), 5000)
    assert policy.allows(nat64("10.1.2.3"), 5000)
    assert policy.allows(sixtofour("10.1.2.3"), 5000)
    assert not policy.allows("192.168.1.1", 5000)
    assert not policy.allows("127.0.0.1", 5000)
    assert policy.allows("8.8.8.8", 5000)


def test_allow_of_the_v6_form_does_not_admit_the_embedded_ipv4() -> None:
    policy = PeerPolicy(allow=["2002::/16", "2001::/32", "64:ff9b::/96", "64:ff9b:1::/48"])
    for form in ("6to4", "teredo-client", "nat64", "nat64-local"):
        assert not policy.allows(FORMS[form]("127.0.0.1")), form
        assert policy.allows(FORMS[form]("8.8.8.8")), form
    assert policy.verdict(nat64_local("8.8.8.8")) is PeerVerdict.OPERATOR_ALLOWED


def test_deny_always_wins() -> None:
    policy = PeerPolicy(allow=["10.0.0.0/8", "0.0.0.0/0"], deny=["10.0.0.0/24", "8.8.8.0/24"])
    assert policy.verdict("10.0.0.5", 5000) is PeerVerdict.OPERATOR_DENIED
    assert policy.verdict("10.0.1.5", 5000) is PeerVerdict.OPERATOR_ALLOWED
    for form in sorted(FORMS):
        if form != "teredo-server":
            peer = FORMS[form]("8.8.8.8")
            assert policy.verdict(peer, 5000) is PeerVerdict.OPERATOR_DENIED, form
    assert policy.verdict(teredo("1.1.1.1", server="8.8.8.8")) is PeerVerdict.OPERATOR_DENIED


def test_operator_ranges_written_as_mapped_ipv6_mean_ipv4() -> None:
    policy = PeerPolicy(allow=["::ffff:10.0.0.0/104"], deny=["::ffff:9.9.9.9/128"])
    assert policy.allow == (IPv4Network("10.0.0.0/8"),)
    assert policy.deny == (IPv4Network("9.9.9.9/32"),)
    assert policy.allows("10.2.3.4")
    assert not policy.allows("9.9.9.9")


def test_ipv6_operator_ranges() -> None:
    policy = PeerPolicy(allow=["fd00:1::/64"], deny=["2606:4700::/32"])
    assert policy.allows("fd00:1::5")
    assert not policy.allows("fd00:2::5")
    assert policy.verdict("2606:4700::1111") is PeerVerdict.OPERATOR_DENIED
    assert policy.allows("2606:4701::1")


# -- own addresses -------------------------------------------------------------------


def test_own_bare_address_denies_every_port_and_form() -> None:
    policy = PeerPolicy(own_addresses=["5.6.7.8", "2a01:4f8::2"])
    for peer in ("5.6.7.8", mapped("5.6.7.8"), nat64("5.6.7.8"), sixtofour("5.6.7.8")):
        assert policy.verdict(peer, 443) is PeerVerdict.OWN_ADDRESS, peer
        assert policy.verdict(peer) is PeerVerdict.OWN_ADDRESS, peer
    assert policy.verdict("2a01:4f8::2", 3478) is PeerVerdict.OWN_ADDRESS
    assert policy.allows("5.6.7.9", 443)
    assert policy.allows("2a01:4f8::3", 443)


def test_own_address_with_port_denies_only_that_port() -> None:
    policy = PeerPolicy(own_addresses=[("5.6.7.8", 3478), ("5.6.7.8", 5349), ("::ffff:5.6.7.9", 1)])
    assert policy.verdict("5.6.7.8", 3478) is PeerVerdict.OWN_ADDRESS
    assert policy.verdict("5.6.7.8", 5349) is PeerVerdict.OWN_ADDRESS
    assert policy.verdict(mapped("5.6.7.8"), 3478) is PeerVerdict.OWN_ADDRESS
    assert policy.verdict(nat64("5.6.7.8"), 3478) is PeerVerdict.OWN_ADDRESS
    assert policy.verdict("5.6.7.9", 1) is PeerVerdict.OWN_ADDRESS
    # Another port of the same IP (say, another allocation's relayed address) is fine,
    # and so is a per-IP permission (port None).
    assert policy.allows("5.6.7.8", 50000)
    assert policy.allows("5.6.7.8")
    assert policy.own_addresses == (
        (IPv4Address("5.6.7.8"), 3478),
        (IPv4Address("5.6.7.8"), 5349),
        (IPv4Address("5.6.7.9"), 1),
    )


def test_bare_own_address_overrides_ports_given_for_it() -> None:
    for entries in (["5.6.7.8", ("5.6.7.8", 1)], [("5.6.7.8", 1), "5.6.7.8"]):
        policy = PeerPolicy(own_addresses=entries)
        assert policy.verdict("5.6.7.8", 2) is PeerVerdict.OWN_ADDRESS
        assert policy.own_addresses == ((IPv4Address("5.6.7.8"), None),)


def test_broad_allow_does_not_lift_own_address() -> None:
    own = ["10.0.0.5", ("5.6.7.8", 3478)]
    broad = PeerPolicy(allow=["10.0.0.0/8", "0.0.0.0/0"], own_addresses=own)
    assert broad.verdict("10.0.0.5", 9) is PeerVerdict.OWN_ADDRESS
    assert broad.verdict("5.6.7.8", 3478) is PeerVerdict.OWN_ADDRESS
    assert broad.verdict("10.0.0.6", 9) is PeerVerdict.OPERATOR_ALLOWED
    exact = PeerPolicy(allow=["10.0.0.5/32", "5.6.7.8/32"], own_addresses=own)
    assert exact.verdict("10.0.0.5", 9) is PeerVerdict.OPERATOR_ALLOWED
    assert exact.verdict("5.6.7.8", 3478) is PeerVerdict.ALLOWED
    assert not exact.allows("10.0.0.6", 9)


def test_operator_deny_beats_exact_allow_of_own_address() -> None:
    policy = PeerPolicy(allow=["5.6.7.8/32"], deny=["5.6.7.0/24"], own_addresses=["5.6.7.8"])
    assert policy.verdict("5.6.7.8", 1) is PeerVerdict.OPERATOR_DENIED


def test_policy_repr_and_constants() -> None:
    policy = PeerPolicy(allow=["10.0.0.0/8"], own_addresses=["5.6.7.8"])
    assert repr(policy) == "PeerPolicy(allow=['10.0.0.0/8'], deny=[], own_addresses=1)"
    assert IPv4Network("169.254.0.0/16") in DEFAULT_DENY_V4
    assert all(isinstance(n, IPv6Network) for n in DEFAULT_DENY_V6)
    assert PeerVerdict.OPERATOR_ALLOWED.allowed and not PeerVerdict.OWN_ADDRESS.allowed


def test_parse_cache_is_bounded_and_consistent() -> None:
    for i in range(policy_module._PARSE_CACHE_SIZE + 10):
        DEFAULT.allows(str(IPv4Address(0x08000000 + i)))
    assert len(policy_module._PARSE_CACHE) <= policy_module._PARSE_CACHE_SIZE
    assert DEFAULT.allows("::ffff:127.0.0.1") is DEFAULT.allows("::ffff:127.0.0.1") is False


# -- reference implementation --------------------------------------------------------

EXTRA_V4 = [IPv4Network(n) for n in ("100.64.0.0/10", "192.0.0.0/24", "224.0.0.0/4")]
EXTRA_V6 = [IPv6Network(n) for n in ("2001::/23", "2001:db8::/32", "3fff::/20")]
NAT64_WKP = IPv6Network("64:ff9b::/96")
NAT64_LOCAL = IPv6Network("64:ff9b:1::/48")


def special(addr: IPv4Address | IPv6Address) -> bool:
    """Not a place a relay should send to, by ``ipaddress`` predicates + a short list."""
    if (
        addr.is_private
        or addr.is_loopback
        or addr.is_link_local
        or addr.is_multicast
        or addr.is_reserved
        or addr.is_unspecified
        or not addr.is_global
    ):
        return True
    if isinstance(addr, IPv6Address):
        return addr.is_site_local or any(addr in n for n in EXTRA_V6)
    return any(addr in n for n in EXTRA_V4)


Candidate = tuple[IPv4Address | IPv6Address, bool]


def reference_candidates(text: str) -> list[Candidate]:
    """(address, judged by the default list) for the peer and each IPv4 it embeds."""
    addr = ip_address(text)
    if isinstance(addr, IPv4Address):
        return [(addr, True)]
    addr = IPv6Address(int(addr))  # drop any zone
    if addr.ipv4_mapped is not None:
        return [(addr.ipv4_mapped, True)]
    if int(addr) >> 32 == 0 and int(addr) > 1:
        return [(IPv4Address(int(addr)), True)]
    low = IPv4Address(int(addr) & M32)
    if addr.sixtofour is not None:
        return [(addr, False), (addr.sixtofour, True)]
    if addr.teredo is not None:
        server, client = addr.teredo
        return [(addr, False), (server, True), (client, True)]
    if addr in NAT64_WKP:
        return [(addr, False), (low, True)]
    if addr in NAT64_LOCAL:
        return [(addr, True), (low, True)]
    return [(addr, True)]


def reference_network(net: IPv4Network | IPv6Network) -> IPv4Network | IPv6Network:
    if isinstance(net, IPv6Network) and net.prefixlen >= 96:
        v4 = net.network_address.ipv4_mapped
        if v4 is not None:
            return IPv4Network(f"{v4}/{net.prefixlen - 96}")
    return net


def within(addr: IPv4Address | IPv6Address, nets: list[IPv4Network | IPv6Network]) -> bool:
    return any(addr.version == n.version and addr in n for n in nets)


def reference_allows(
    text: str,
    port: int | None,
    allow: list[IPv4Network | IPv6Network] = [],  # noqa: B006
    deny: list[IPv4Network | IPv6Network] = [],  # noqa: B006
    own: list[tuple[IPv4Address | IPv6Address, int | None]] = [],  # noqa: B006
) -> bool:
    try:
        candidates = reference_candidates(text)
    except ValueError:
        return False
    if port is not None and not 1 <= port <= 65535:
        return False
    allow = [reference_network(n) for n in allow]
    deny = [reference_network(n) for n in deny]
    if any(within(c, deny) for c, _ in candidates):
        return False
    exact = {n.network_address for n in allow if n.num_addresses == 1}
    for c, _ in candidates:
        for own_ip, own_port in own:
            if c == own_ip and c not in exact and (own_port is None or own_port == port):
                return False
    return all(within(c, allow) or not (judged and special(c)) for c, judged in candidates)


# Written out here rather than taken from the module, so a range missing there is hit.
SPECIAL_NETS = [
    IPv4Network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "255.255.255.255/32",
        "8.0.0.0/8",
        "172.32.0.0/16",
    )
]


@st.composite
def ipv4_texts(draw: st.DrawFn) -> str:
    """Random IPv4, biased to the default-denied ranges and their edges."""
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return str(IPv4Address(draw(st.integers(0, M32))))
    net = draw(st.sampled_from(SPECIAL_NETS))
    lo, hi = int(net.network_address), int(net.broadcast_address)
    if choice == 1:
        value = draw(st.sampled_from([lo, hi, max(lo - 1, 0), min(hi + 1, M32)]))
    else:
        value = draw(st.integers(lo, hi))
    return str(IPv4Address(value))


V6_PREFIXES = [
    IPv6Network(n)
    for n in (
        "::/96",
        "::ffff:0:0/96",
        "::ffff:0:0:0/96",
        "::/8",
        "64:ff9b::/96",
        "64:ff9b:1::/48",
        "100::/64",
        "2000::/3",
        "2001::/32",
        "2001::/23",
        "2001:db8::/32",
        "2002::/16",
        "2400::/12",
        "3fff::/20",
        "3ffe::/16",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
        "::/0",
    )
]


@st.composite
def ipv6_texts(draw: st.DrawFn) -> str:
    """Random IPv6 inside interesting prefixes, often carrying an interesting IPv4."""
    net = draw(st.sampled_from(V6_PREFIXES))
    host_bits = 128 - net.prefixlen
    value = int(net.network_address) | draw(st.integers(0, (1 << host_bits) - 1))
    embed = draw(st.integers(0, 2))
    if embed and net.prefixlen <= 96:
        v4 = int(IPv4Address(draw(ipv4_texts())))
        if net.prefixlen == 16 and int(net.network_address) >> 112 == 0x2002:
            value = (value & ~(M32 << 80)) | (v4 << 80)
        elif embed == 1:
            value = (value & ~M32) | v4
        else:  # Teredo's obfuscated client
            value = (value & ~M32) | (v4 ^ M32)
    text = str(IPv6Address(value))
    if draw(st.booleans()) and IPv6Address(value).ipv4_mapped is not None:
        text = f"::ffff:{IPv6Address(value).ipv4_mapped}"  # dotted-quad spelling
    return text


peer_texts = st.one_of(ipv4_texts(), ipv6_texts())
ports = st.one_of(st.none(), st.integers(0, 65536), st.sampled_from([3478, 5349]))


@settings(max_examples=1000)
@given(peer_texts, ports)
def test_default_policy_matches_reference(text: str, port: int | None) -> None:
    assert DEFAULT.allows(text, port) is reference_allows(text, port), (text, port)


@st.composite
def networks(draw: st.DrawFn) -> IPv4Network | IPv6Network:
    text = draw(peer_texts)
    addr = ip_address(text)
    prefix = draw(st.integers(0, addr.max_prefixlen))
    if draw(st.integers(0, 3)) == 0:
        prefix = addr.max_prefixlen
    return ip_network(f"{addr}/{prefix}", strict=False)


@st.composite
def own_entries(draw: st.DrawFn) -> tuple[str, int | None]:
    return draw(peer_texts), draw(st.one_of(st.none(), st.sampled_from([3478, 5349, 50000])))


@settings(max_examples=300)
@given(
    st.lists(networks(), max_size=4),
    st.lists(networks(), max_size=3),
    st.lists(own_entries(), max_size=3),
    st.lists(st.tuples(peer_texts, ports), min_size=1, max_size=8),
    st.data(),
)
def test_operator_policy_matches_reference(
    allow: list[IPv4Network | IPv6Network],
    deny: list[IPv4Network | IPv6Network],
    own: list[tuple[str, int | None]],
    peers: list[tuple[str, int | None]],
    data: st.DataObject,
) -> None:
    policy = PeerPolicy(
        allow=allow,
        deny=deny,
        own_addresses=[ip if p is None else (ip, p) for ip, p in own],
    )
    # Probe the ranges' own edges and the own addresses too, not just random peers.
    extra = [(str(n.network_address), None) for n in allow + deny]
    extra += [(ip, p) for ip, p in own]
    own_list = [(reference_candidates(ip)[0][0], p) for ip, p in own]
    for text, port in peers + extra:
        expected = reference_allows(text, port, allow, deny, own_list)
        assert policy.allows(text, port) is expected, (text, port)


def test_reference_agrees_on_hand_picked_cases() -> None:
    assert reference_allows("8.8.8.8", None)
    assert not reference_allows("::ffff:127.0.0.1", None)
    assert not reference_allows(teredo("10.0.0.1"), None)
    assert reference_allows(nat64("8.8.8.8"), None)
