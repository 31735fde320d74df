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

from .combine import MEANING
from .model import (
    Behavior,
    Endpoint,
    Finding,
    NatType,
    Probe,
    ProbeOutcome,
    ReasonCode,
    Verdict,
    fmt,
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
    note: str


def _fmt(endpoint: Endpoint | None) -> str:
    return fmt(endpoint, "no address")


def _disagree(verdict: Verdict, text: str) -> Verdict:
    return replace(
        verdict,
        nat_type=NatType.UNKNOWN,
        finding=Finding(ReasonCode.SERVERS_DISAGREE, text),
        meaning=MEANING[NatType.UNKNOWN],
    )


def cross_check(
    verdict: Verdict, test1: Probe | None, alt: Probe, local: Endpoint
) -> tuple[Verdict, CrossCheck]:
    """Apply the second server's view. ``test1`` is the mapping family's Test I to the
    primary, ``alt`` the request from the same socket (bound at ``local``) to the second
    server."""
    server = alt.target

    def result(v: Verdict, agrees: bool | None, note: str) -> tuple[Verdict, CrossCheck]:
        return replace(v, notes=(*v.notes, note)), CrossCheck(server, alt.mapped, agrees, note)

    if alt.outcome is not ProbeOutcome.OK or alt.mapped is None:
        what = {
            ProbeOutcome.TIMEOUT: "did not answer",
            ProbeOutcome.ERROR: f"answered with error {alt.error_code}",
            ProbeOutcome.BAD_SOURCE: f"answered from {_fmt(alt.source)} instead",
        }.get(alt.outcome, "gave no mapped address")
        return result(verdict, None, f"the second server {_fmt(server)} {what}: no cross-check")
    if test1 is None or test1.outcome is not ProbeOutcome.OK or test1.mapped is None:
        return result(
            verdict, None,
            f"the second server {_fmt(server)} mapped this host to {_fmt(alt.mapped)}, but "
            "the primary gave no mapped address to compare with",
        )
    m1, m2 = test1.mapped, alt.mapped
    if same_endpoint(m1, local):
        if same_endpoint(m2, local):
            return result(verdict, True,
                          f"the second server {_fmt(server)} also sees no NAT ({_fmt(m2)})")
        text = (
            f"the primary server sees this host's own address {_fmt(m1)} (no NAT), but the "
            f"second server {_fmt(server)} sees {_fmt(m2)}: they are reached through "
            "different paths, so no single type fits"
        )
        return result(_disagree(verdict, text), False, text)

    nat_type = verdict.nat_type
    if same_endpoint(m1, m2):
        if verdict.mapping in _DEPENDENT or nat_type is NatType.SYMMETRIC or nat_type in _NO_NAT:
            text = (
                f"the second server {_fmt(server)} sees the same mapped address {_fmt(m2)} "
                f"as the primary, which contradicts {nat_type} ({verdict.mapping} mapping)"
            )
            return result(_disagree(verdict, text), False, text)
        note = (
            f"the second server {_fmt(server)} sees the same mapped address {_fmt(m2)}: "
            "endpoint-independent mapping confirmed"
        )
        if verdict.mapping is Behavior.ENDPOINT_INDEPENDENT:
            return result(verdict, True, note)
        # The primary could not test the mapping: the second server supplies it.
        filled = replace(verdict, mapping=Behavior.ENDPOINT_INDEPENDENT)
        if nat_type is NatType.UNKNOWN:
            derived = derive_nat_type(
                Behavior.ENDPOINT_INDEPENDENT, verdict.filtering, False, True
            )
            if derived is not NatType.UNKNOWN:
                filled = replace(filled, nat_type=derived, finding=None,
                                 meaning=MEANING[derived])
        return result(filled, True, note.replace("confirmed", "(measured with it)"))

    if verdict.mapping is Behavior.ENDPOINT_INDEPENDENT or nat_type in _CONES | _NO_NAT:
        text = (
            f"the second server {_fmt(server)} sees {_fmt(m2)} where the primary saw "
            f"{_fmt(m1)}, which contradicts {nat_type} ({verdict.mapping} mapping)"
        )
        return result(_disagree(verdict, text), False, text)
    note = (
        f"the second server {_fmt(server)} sees {_fmt(m2)} where the primary saw {_fmt(m1)}: "
        "the mapping depends on the destination"
    )
    if nat_type is NatType.UNKNOWN and verdict.mapping is Behavior.UNKNOWN:
        # Address- or address-and-port-dependent: either way a symmetric NAT.
        symmetric = replace(verdict, nat_type=NatType.SYMMETRIC, finding=None,
                            meaning=MEANING[NatType.SYMMETRIC])
        return result(symmetric, True, note + " (a symmetric NAT; whether address- or "
                      "address-and-port-dependent needs the primary's alternate address)")
    return result(verdict, True, note + ": dependent mapping confirmed")


__all__ = ["CrossCheck", "cross_check"]
