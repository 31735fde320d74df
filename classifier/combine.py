"""Combining: one verdict from the classic RFC 3489 §10.1 flow and the RFC 5780 §4.3-4.5
families, with the hints every reply gives (an ALG rewriting MAPPED-ADDRESS, a
carrier-grade NAT, a private mapped address). The second server's cross-check
(``--alt``) is ``classifier/crosscheck.py``. Pure: no sockets, no trio, no clock.

When the methods disagree the type is unknown: the NAT behaved differently on different
sockets or over time, and no single type fits.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace

from .model import (
    Behavior,
    BehaviorResult,
    ClassicObservations,
    ClassicResult,
    Endpoint,
    FilteringObservations,
    Finding,
    HairpinObservations,
    HairpinResult,
    MappingObservations,
    NatType,
    Probe,
    ProbeOutcome,
    ProbeTest,
    ReasonCode,
    Verdict,
    Why,
    comparable_ip,
    same_endpoint,
)
from .verdict import (
    binding_lifetime,
    classic_verdict,
    derive_nat_type,
    filtering_verdict,
    hairpin_verdict,
    mapping_verdict,
    port_allocation,
)

_EI = Behavior.ENDPOINT_INDEPENDENT
_AD = Behavior.ADDRESS_DEPENDENT
_APD = Behavior.ADDRESS_AND_PORT_DEPENDENT
_UNK = Behavior.UNKNOWN


@dataclass(frozen=True)
class Rfc5780Result:
    """The RFC 5780 §4.3-4.5 findings, each family from its own socket."""

    mapping: BehaviorResult
    filtering: BehaviorResult
    hairpinning: HairpinResult
    no_nat: bool | None
    udp_reachable: bool | None
    mapped: Endpoint | None = None
    local: Endpoint | None = None

    @property
    def nat_type(self) -> NatType:
        return derive_nat_type(
            self.mapping.behavior, self.filtering.behavior, self.no_nat, self.udp_reachable
        )

    @property
    def problem(self) -> Finding | None:
        """Why ``nat_type`` is unknown (None when it is known)."""
        if self.nat_type is not NatType.UNKNOWN:
            return None
        for result in (self.mapping, self.filtering):
            if result.behavior is Behavior.UNKNOWN and result.finding is not None:
                return result.finding
        if self.no_nat is None:
            return Finding(Why.NAT_VIEWS_DISAGREE)
        return Finding(Why.MAPPING_WITHOUT_NAT, behaviors=(self.mapping.behavior,))


def rfc5780_verdict(
    mapping: MappingObservations,
    filtering: FilteringObservations,
    hairpin: HairpinObservations | None = None,
) -> Rfc5780Result:
    """RFC 5780 §4.3-4.5 from the probes of the mapping, filtering and hairpin sockets."""
    firsts = [(obs.test1, obs.local) for obs in (mapping, filtering) if obs.test1 is not None]
    if not firsts:
        reachable = None
    elif any(t.outcome is not ProbeOutcome.TIMEOUT for t, _ in firsts):
        reachable = True  # any reply at all, even an error, shows that UDP gets through
    else:
        reachable = False
    usable = [
        (t.mapped, local)
        for t, local in firsts
        if t.outcome is ProbeOutcome.OK and t.mapped is not None
    ]
    views = {same_endpoint(m, local) for m, local in usable}
    hairpin_result = (
        hairpin_verdict(hairpin)
        if hairpin is not None
        else HairpinResult(None, Finding(Why.HAIRPIN_NOT_RUN), (ProbeTest.TEST1,))
    )
    return Rfc5780Result(
        mapping=mapping_verdict(mapping),
        filtering=filtering_verdict(filtering),
        hairpinning=hairpin_result,
        no_nat=views.pop() if len(views) == 1 else None,
        udp_reachable=reachable,
        mapped=usable[0][0] if usable else None,
        local=usable[0][1] if usable else mapping.local,
    )


#: What each classic type says about (UDP reachable, no NAT, mapping, filtering); an
#: RFC 5780 finding agrees when each value it knows is among these. Full cone says nothing
#: about mapping: RFC 3489 stops at Test II's reply without testing it.
_ANY = frozenset(Behavior) - {_UNK}
_DEPENDENT = frozenset({_AD, _APD})
_CLASSIC_IMPLIES: dict[
    NatType, tuple[bool, frozenset[bool], frozenset[Behavior], frozenset[Behavior]]
] = {
    NatType.UDP_BLOCKED: (False, frozenset({True, False}), _ANY, _ANY),
    NatType.OPEN_INTERNET: (True, frozenset({True}), frozenset({_EI}), frozenset({_EI})),
    NatType.SYMMETRIC_UDP_FIREWALL: (True, frozenset({True}), frozenset({_EI}), _DEPENDENT),
    NatType.FULL_CONE: (True, frozenset({False}), _ANY, frozenset({_EI})),
    NatType.RESTRICTED_CONE: (True, frozenset({False}), frozenset({_EI}), frozenset({_AD})),
    NatType.PORT_RESTRICTED_CONE: (True, frozenset({False}), frozenset({_EI}), frozenset({_APD})),
    NatType.SYMMETRIC: (True, frozenset({False}), _DEPENDENT, _DEPENDENT),
}


def _agrees(classic: NatType, r: Rfc5780Result) -> bool:
    reachable, no_nat, mappings, filterings = _CLASSIC_IMPLIES[classic]
    if r.udp_reachable is not None and r.udp_reachable is not reachable:
        return False
    if not reachable:
        return True
    return (
        (r.no_nat is None or r.no_nat in no_nat)
        and (r.mapping.behavior is _UNK or r.mapping.behavior in mappings)
        and (r.filtering.behavior is _UNK or r.filtering.behavior in filterings)
    )


_CGNAT = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598 shared address space


def _in_cgnat(endpoint: Endpoint | None) -> bool:
    if endpoint is None:
        return False
    ip = comparable_ip(endpoint[0])
    return isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT


_PRIVATE = tuple(
    ipaddress.ip_network(net) for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)  # RFC 1918
_ULA = ipaddress.ip_network("fc00::/7")  # RFC 4193


def _is_private(endpoint: Endpoint | None) -> bool:
    if endpoint is None:
        return False
    ip = comparable_ip(endpoint[0])
    if isinstance(ip, ipaddress.IPv4Address):
        return any(ip in net for net in _PRIVATE)
    return isinstance(ip, ipaddress.IPv6Address) and ip in _ULA


def combine(
    classic: ClassicResult, rfc5780: Rfc5780Result, probes: Sequence[Probe] = ()
) -> Verdict:
    """One verdict from the classic flow and the RFC 5780 tests.

    Both known and in agreement: the more specific answer (RFC 5780's: classic full
    cone never tested the mapping). One unknown: the other, with a note. Any
    contradiction, including a known type against a partial RFC 5780 finding:
    unknown, because the NAT's behaviour varied between sockets or over time.
    """
    c, r = classic.nat_type, rfc5780.nat_type
    notes: list[Finding] = []
    finding: Finding | None = None
    r_problem = rfc5780.problem

    if c is NatType.UNKNOWN and r is NatType.UNKNOWN:
        nat = NatType.UNKNOWN
        finding = classic.finding
        if r_problem is not None and (
            finding is None or finding.code is ReasonCode.TEST_NOT_RUN
        ):
            finding = r_problem
        elif r_problem is not None and r_problem != classic.finding:
            notes.append(Finding(Why.RFC5780_ALSO, cause=r_problem))
    elif c is NatType.UNKNOWN:
        nat = r
        notes.append(Finding(Why.CLASSIC_INCONCLUSIVE, cause=classic.finding))
    elif not _agrees(c, rfc5780):
        nat = NatType.UNKNOWN
        if rfc5780.udp_reachable is False:
            finding = Finding(Why.METHODS_DISAGREE_SILENT, nat=(c,))
        else:
            finding = Finding(
                Why.METHODS_DISAGREE,
                nat=(c, r),
                behaviors=(rfc5780.mapping.behavior, rfc5780.filtering.behavior),
            )
    elif r is NatType.UNKNOWN:
        nat = c
        assert r_problem is not None  # an unknown type always has a problem
        notes.append(Finding(Why.RFC5780_INCONCLUSIVE, cause=r_problem))
        if c is NatType.UDP_BLOCKED:
            finding = classic.finding
    else:
        nat = r
        if c is NatType.UDP_BLOCKED:
            finding = classic.finding
        if r is not c:
            notes.append(
                Finding(
                    Why.CLASSIC_UNTESTED_MAPPING,
                    nat=(c, r),
                    behaviors=(rfc5780.mapping.behavior,),
                )
            )

    rewritten = [
        probe
        for probe in probes
        if probe.mapped is not None
        and probe.legacy_mapped is not None
        and not same_endpoint(probe.mapped, probe.legacy_mapped)
    ]
    alg = bool(rewritten)
    if rewritten:  # one note, naming the first reply: every reply usually shows it
        first = rewritten[0]
        notes.append(
            Finding(
                Why.ALG,
                first.id,
                at=first.legacy_mapped,
                other=first.mapped,
                count=len(rewritten) - 1,
            )
        )
    mapped = rfc5780.mapped or classic.mapped
    local = rfc5780.local or classic.local
    cgnat = False
    if _in_cgnat(mapped):
        cgnat = True
        notes.append(Finding(Why.CGNAT_MAPPED, at=mapped))
    if _in_cgnat(local):
        cgnat = True
        notes.append(Finding(Why.CGNAT_LOCAL, at=local))
    if _is_private(mapped):
        notes.append(Finding(Why.PRIVATE_MAPPED, at=mapped))
    return Verdict(
        nat_type=nat,
        finding=finding,
        mapping=rfc5780.mapping.behavior,
        filtering=rfc5780.filtering.behavior,
        hairpinning=rfc5780.hairpinning.hairpinning,
        mapped_address=mapped,
        local_address=local,
        alg_suspected=alg,
        cgnat_suspected=cgnat,
        notes=tuple(notes),
        classic=classic,
        rfc5780=rfc5780,
        probes=tuple(probes),
    )


def classify(
    classic: ClassicObservations,
    mapping: MappingObservations,
    filtering: FilteringObservations,
    hairpin: HairpinObservations | None = None,
    *,
    port_pairs: Sequence[tuple[int, int]] = (),
    lifetime: Iterable[tuple[float, bool]] | None = None,
    extra_probes: Sequence[Probe] = (),
) -> Verdict:
    """The whole verdict from every family's observations."""
    probes = [
        p
        for obs in (classic, mapping, filtering, hairpin)
        if obs is not None
        for p in _probes_of(obs)
    ]
    probes.extend(extra_probes)
    verdict = combine(
        classic_verdict(classic), rfc5780_verdict(mapping, filtering, hairpin), probes
    )
    return replace(
        verdict,
        port_allocation=port_allocation(port_pairs) if port_pairs else None,
        lifetime=binding_lifetime(lifetime) if lifetime is not None else None,
    )


def _probes_of(
    obs: ClassicObservations | MappingObservations | FilteringObservations | HairpinObservations,
) -> list[Probe]:
    return [p for f in fields(obs) if isinstance(p := getattr(obs, f.name), Probe)]


def beside_primary(ipv6: Verdict, primary: Verdict) -> Verdict:
    """The IPv6 verdict of a server name that also has an IPv4 address, with a note when
    silence over IPv6 may only mean that the server does not serve IPv6."""
    if ipv6.nat_type is NatType.UDP_BLOCKED and primary.nat_type is not NatType.UDP_BLOCKED:
        return replace(ipv6, notes=(*ipv6.notes, Finding(Why.IPV6_SILENT_BUT_IPV4_ANSWERS)))
    return ipv6


__all__ = [
    "Rfc5780Result",
    "beside_primary",
    "classify",
    "combine",
    "rfc5780_verdict",
]
