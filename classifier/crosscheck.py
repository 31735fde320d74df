"""Cross-checking the verdict with a second, independent server (``--alt``): pure.

After the mapping family's RFC 5780 tests, the same socket sends a plain Binding request
to the second server. A NAT with endpoint-independent mapping (RFC 4787 §4.1) gives that
socket the same public address whatever the destination, so:

- the same mapped address confirms endpoint-independent mapping, and supplies it when
  the primary server could not test the mapping (no alternate address);
- a different one shows a destination-dependent mapping: a symmetric NAT (RFC 3489 §5),
  whether address- or address-and-port-dependent the second server alone cannot say;
- either, against a verdict that says the opposite, means the servers saw different
  NAT behaviour (another path, another NAT, a VPN): the type is then unknown.

With no NAT (the primary saw the local address) the second server must see it too.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .model import (
    Behavior,
    Endpoint,
    Finding,
    NatType,
    Probe,
    ProbeOutcome,
    Verdict,
    Why,
    same_endpoint,
)
from .verdict import derive_nat_type

_CONES = frozenset({NatType.FULL_CONE, NatType.RESTRICTED_CONE, NatType.PORT_RESTRICTED_CONE})
_NO_NAT = frozenset({NatType.OPEN_INTERNET, NatType.SYMMETRIC_UDP_FIREWALL})
_DEPENDENT = frozenset({Behavior.ADDRESS_DEPENDENT, Behavior.ADDRESS_AND_PORT_DEPENDENT})


@dataclass(frozen=True)
class CrossCheck:
    """What the second server saw. ``agrees``: True confirmed or completed the verdict,
    False contradicted it, None could not check (the note says why)."""

    server: Endpoint
    mapped: Endpoint | None
    agrees: bool | None
    note: Finding


def _disagree(verdict: Verdict, finding: Finding) -> Verdict:
    return replace(verdict, nat_type=NatType.UNKNOWN, finding=finding)


_NO_CHECK = {
    ProbeOutcome.TIMEOUT: Why.ALT_SILENT,
    ProbeOutcome.ERROR: Why.ALT_ERROR,
    ProbeOutcome.BAD_SOURCE: Why.ALT_WRONG_SOURCE,
}


def cross_check(
    verdict: Verdict, test1: Probe | None, alt: Probe, local: Endpoint
) -> tuple[Verdict, CrossCheck]:
    """Apply the second server's view. ``test1`` is the mapping family's Test I to the
    primary, ``alt`` the request from the same socket (bound at ``local``) to the second
    server."""
    server = alt.target

    def result(v: Verdict, agrees: bool | None, note: Finding) -> tuple[Verdict, CrossCheck]:
        return replace(v, notes=(*v.notes, note)), CrossCheck(server, alt.mapped, agrees, note)

    if alt.outcome is not ProbeOutcome.OK or alt.mapped is None:
        why = _NO_CHECK.get(alt.outcome, Why.ALT_NO_MAPPED)
        return result(verdict, None, Finding(why, at=server, other=alt.source,
                                             error_code=alt.error_code))
    if test1 is None or test1.outcome is not ProbeOutcome.OK or test1.mapped is None:
        return result(verdict, None, Finding(Why.ALT_NOTHING_TO_COMPARE, at=server,
                                             other=alt.mapped))
    m1, m2 = test1.mapped, alt.mapped
    if same_endpoint(m1, local):
        if same_endpoint(m2, local):
            return result(verdict, True, Finding(Why.ALT_ALSO_NO_NAT, at=server, other=m2))
        differ = Finding(Why.ALT_PATHS_DIFFER, at=server, other=m2, primary=m1)
        return result(_disagree(verdict, differ), False, differ)

    nat_type = verdict.nat_type

    def seen(
        why: Why, nat: tuple[NatType, ...] = (), behaviors: tuple[Behavior, ...] = ()
    ) -> Finding:
        return Finding(why, at=server, other=m2, primary=m1, nat=nat, behaviors=behaviors)

    if same_endpoint(m1, m2):
        if verdict.mapping in _DEPENDENT or nat_type is NatType.SYMMETRIC or nat_type in _NO_NAT:
            contradiction = seen(Why.ALT_SAME_CONTRADICTS, (nat_type,), (verdict.mapping,))
            return result(_disagree(verdict, contradiction), False, contradiction)
        if verdict.mapping is Behavior.ENDPOINT_INDEPENDENT:
            return result(verdict, True, seen(Why.ALT_SAME_CONFIRMED))
        # The primary could not test the mapping: the second server supplies it.
        filled = replace(verdict, mapping=Behavior.ENDPOINT_INDEPENDENT)
        if nat_type is NatType.UNKNOWN:
            derived = derive_nat_type(
                Behavior.ENDPOINT_INDEPENDENT, verdict.filtering, False, True
            )
            if derived is not NatType.UNKNOWN:
                filled = replace(filled, nat_type=derived, finding=None)
        return result(filled, True, seen(Why.ALT_SAME_MEASURED))

    if verdict.mapping is Behavior.ENDPOINT_INDEPENDENT or nat_type in _CONES | _NO_NAT:
        contradiction = seen(Why.ALT_DIFFERENT_CONTRADICTS, (nat_type,), (verdict.mapping,))
        return result(_disagree(verdict, contradiction), False, contradiction)
    if nat_type is NatType.UNKNOWN and verdict.mapping is Behavior.UNKNOWN:
        # Address- or address-and-port-dependent: either way a symmetric NAT.
        symmetric = replace(verdict, nat_type=NatType.SYMMETRIC, finding=None)
        return result(symmetric, True, seen(Why.ALT_DEPENDENT_SYMMETRIC))
    return result(verdict, True, seen(Why.ALT_DEPENDENT_CONFIRMED))


__all__ = ["CrossCheck", "cross_check"]
