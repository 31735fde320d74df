"""The classifier's decisions: pure functions from probe observations to a verdict.

Implements the decision tables of RFC 3489 §10.1 (the classic flow: Test I, Test II,
Test I to the alternate address, Test III), RFC 5780 §4.3 (mapping), §4.4 (filtering),
§4.5 (hairpinning) and §4.6 (binding lifetime), RFC 4787 §4.2.1 port preservation, and
the mapping of RFC 4787 behaviours onto the RFC 3489 §5 NAT types.

No sockets, no trio, no clock: the transport runs the probes that ``classifier.plan``
asks for, records each as a ``Probe`` (``classifier/model.py``) and hands them here;
every reason is a ``Finding``. Combining the families' results into one verdict is
``classifier/combine.py``.

The rule that shapes every function: a test the server cannot support gives
``unknown`` with a reason, never a NAT type. A missing reply means "not received"; it
counts as evidence of filtering only once the server has shown that it can send the reply
(an alternate address advertised, on another IP and port, that answers); an error
response or a reply from the wrong address is never taken for a reply.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

from .model import (
    Behavior,
    BehaviorResult,
    BindingLifetime,
    ClassicObservations,
    ClassicResult,
    Endpoint,
    FilteringObservations,
    Finding,
    HairpinObservations,
    HairpinResult,
    MappingObservations,
    NatType,
    PortAllocation,
    Probe,
    ProbeOutcome,
    ProbeTest,
    ReasonCode,
    fmt,
    require_local,
    same_endpoint,
    same_ip,
)


def _error(code: int | None) -> str:
    return "an error response" if code is None else f"error {code}"


# --------------------------------------------------------------------------- shared checks


def _reply_problem(probe: Probe, label: str) -> Finding | None:
    """Why an answered request without CHANGE-REQUEST cannot be used, or None if it can.
    The caller has already dealt with a missing probe and with a timeout."""
    if probe.outcome is ProbeOutcome.ERROR:
        return Finding(
            ReasonCode.SERVER_ERROR_RESPONSE,
            f"the server answered {label} with {_error(probe.error_code)} instead of "
            "a mapped address",
        )
    if probe.outcome is ProbeOutcome.INVALID:
        return Finding(
            ReasonCode.INVALID_RESPONSE,
            f"the reply to {label} was not a valid Binding response",
        )
    origin = probe.origin
    if probe.outcome is ProbeOutcome.BAD_SOURCE or (
        origin is not None and not same_endpoint(origin, probe.target)
    ):
        return Finding(
            ReasonCode.UNEXPECTED_RESPONSE_SOURCE,
            f"the reply to {label} came from {fmt(origin)}, not from "
            f"{fmt(probe.target)} where the request was sent",
        )
    if probe.mapped is None:
        return Finding(
            ReasonCode.NO_MAPPED_ADDRESS,
            f"the reply to {label} carried no mapped address",
        )
    return None


def _change_reply_problem(
    probe: Probe, label: str, primary: Endpoint, expected: Endpoint
) -> Finding | None:
    """Why a reply to a CHANGE-REQUEST test is not proof that the NAT let in a packet
    from ``expected``, or None if it is. The caller has dealt with None and timeouts."""
    if probe.outcome is ProbeOutcome.ERROR:
        return Finding(
            ReasonCode.CHANGE_REQUEST_REJECTED,
            f"the server answered {label} with {_error(probe.error_code)}: it does not "
            "carry out CHANGE-REQUEST, so it cannot test the NAT's filtering",
        )
    if probe.outcome is ProbeOutcome.INVALID:
        return Finding(
            ReasonCode.INVALID_RESPONSE,
            f"the reply to {label} was not a valid Binding response",
        )
    origin = probe.origin
    if origin is None:
        if probe.outcome is ProbeOutcome.BAD_SOURCE:
            return Finding(
                ReasonCode.CHANGE_REQUEST_IGNORED,
                f"the reply to {label} came from the wrong address, not from "
                f"{fmt(expected)}: the server ignored CHANGE-REQUEST, so the reply says "
                "nothing about the NAT's filtering",
            )
        return Finding(
            ReasonCode.RESPONSE_SOURCE_UNKNOWN,
            f"the source of the reply to {label} was not recorded, so whether the server "
            "honoured CHANGE-REQUEST cannot be checked",
        )
    if probe.outcome is ProbeOutcome.OK and same_endpoint(origin, expected):
        return None
    if (probe.change_ip and same_ip(origin[0], primary[0])) or (
        probe.change_port and origin[1] == primary[1]
    ):
        return Finding(
            ReasonCode.CHANGE_REQUEST_IGNORED,
            f"the reply to {label} came from {fmt(origin)} instead of {fmt(expected)}: "
            "the server ignored CHANGE-REQUEST, so the reply says nothing about the "
            "NAT's filtering",
        )
    return Finding(
        ReasonCode.UNEXPECTED_RESPONSE_SOURCE,
        f"the reply to {label} came from {fmt(origin)}, neither the primary address "
        f"{fmt(primary)} nor {fmt(expected)} where CHANGE-REQUEST should have sent it from",
    )


def _alternate_problem(test1: Probe, *, need_ip: bool, need_port: bool) -> Finding | None:
    """Whether Test I advertised an alternate address usable for the coming tests."""
    alt, primary = test1.other_address, test1.target
    if alt is None:
        return Finding(
            ReasonCode.NO_ALTERNATE_ADDRESS,
            "server has no alternate address: its reply to Test I carried neither "
            "OTHER-ADDRESS nor CHANGED-ADDRESS, so the tests that need a second IP "
            "address and port cannot be run",
        )
    if need_ip and same_ip(alt[0], primary[0]):
        return Finding(
            ReasonCode.ALTERNATE_SAME_IP,
            f"server's alternate address {fmt(alt)} is on the same IP as its primary "
            f"{fmt(primary)}, so it cannot send from a second IP address as the test needs",
        )
    if need_port and alt[1] == primary[1]:
        return Finding(
            ReasonCode.ALTERNATE_SAME_PORT,
            f"server's alternate address {fmt(alt)} uses the same port as its primary "
            f"{fmt(primary)}, so it cannot send from a second port as the test needs",
        )
    return None


def _alternate_unreachable(probe: Probe, label: str) -> Finding:
    return Finding(
        ReasonCode.ALTERNATE_UNREACHABLE,
        f"no response from the server's alternate address {fmt(probe.target)} to {label}, "
        "although the primary address answered: the alternate is unreachable or "
        "advertised wrongly, so a missing reply cannot be blamed on the NAT",
    )


def _not_run(label: str) -> Finding:
    return Finding(ReasonCode.TEST_NOT_RUN, f"{label} was not run")


def _no_response(probe: Probe, label: str) -> Finding:
    return Finding(
        ReasonCode.NO_RESPONSE_FROM_SERVER,
        f"no response from {fmt(probe.target)} to {label}: UDP is blocked on this "
        "network, or the server is down",
    )


# --------------------------------------------------------------------------- RFC 3489 §10.1

_CLASSIC_LABEL: dict[ProbeTest, str] = {
    ProbeTest.TEST1: "Test I",
    ProbeTest.TEST2: "Test II (change IP and port)",
    ProbeTest.TEST1_ALT: "Test I to the alternate address",
    ProbeTest.TEST3: "Test III (change port)",
}


def classic_verdict(obs: ClassicObservations) -> ClassicResult:
    """RFC 3489 §10.1: Test I; Test II; Test I to CHANGED-ADDRESS; Test III.

    Test II is also followed by Test I to the alternate address when there is no NAT:
    RFC 3489 concludes "symmetric UDP firewall" from Test II's silence alone, but that
    silence only means filtering once the alternate address is known to answer.
    """
    local = obs.local

    def unknown(problem: Finding, *tests: ProbeTest) -> ClassicResult:
        return ClassicResult(NatType.UNKNOWN, problem, tests, mapped, local)

    def found(nat_type: NatType) -> ClassicResult:
        return ClassicResult(nat_type, mapped=mapped, local=local)

    mapped: Endpoint | None = None
    t1 = obs.test1
    if t1 is None:
        return unknown(_not_run("Test I"), ProbeTest.TEST1)
    if t1.outcome is ProbeOutcome.TIMEOUT:
        silence = _no_response(t1, "Test I")
        return ClassicResult(NatType.UDP_BLOCKED, silence, (), None, local)
    if problem := _reply_problem(t1, "Test I"):
        return unknown(problem, ProbeTest.TEST1)
    mapped = t1.mapped
    primary = t1.target
    if problem := _alternate_problem(t1, need_ip=True, need_port=True):
        return unknown(problem, ProbeTest.TEST2, ProbeTest.TEST1_ALT, ProbeTest.TEST3)
    assert t1.other_address is not None
    alternate = t1.other_address
    no_nat = same_endpoint(mapped, local)

    t2 = obs.test2
    if t2 is None:
        return unknown(_not_run(_CLASSIC_LABEL[ProbeTest.TEST2]), ProbeTest.TEST2)
    if t2.outcome is not ProbeOutcome.TIMEOUT:
        label2 = _CLASSIC_LABEL[ProbeTest.TEST2]
        if problem := _change_reply_problem(t2, label2, primary, alternate):
            return unknown(problem, ProbeTest.TEST2)
        return found(NatType.OPEN_INTERNET if no_nat else NatType.FULL_CONE)

    # Test II went unanswered: filtering, or a server that cannot send from its
    # alternate address. A plain request to the alternate tells the two apart.
    ta = obs.test1_alt
    if ta is None:
        return unknown(_not_run(_CLASSIC_LABEL[ProbeTest.TEST1_ALT]), ProbeTest.TEST1_ALT)
    if ta.outcome is ProbeOutcome.TIMEOUT:
        label_alt = _CLASSIC_LABEL[ProbeTest.TEST1_ALT]
        return unknown(_alternate_unreachable(ta, label_alt), ProbeTest.TEST1_ALT)
    if problem := _reply_problem(ta, _CLASSIC_LABEL[ProbeTest.TEST1_ALT]):
        return unknown(problem, ProbeTest.TEST1_ALT)
    if no_nat:
        if not same_endpoint(ta.mapped, local):
            return unknown(
                Finding(
                    ReasonCode.INCONSISTENT_OBSERVATIONS,
                    f"Test I saw no NAT (mapped address {fmt(mapped)} is the local "
                    f"address) but Test I to the alternate address was mapped to "
                    f"{fmt(ta.mapped)}",
                ),
                ProbeTest.TEST1_ALT,
            )
        return found(NatType.SYMMETRIC_UDP_FIREWALL)
    if not same_endpoint(ta.mapped, mapped):
        return found(NatType.SYMMETRIC)

    t3 = obs.test3
    if t3 is None:
        return unknown(_not_run(_CLASSIC_LABEL[ProbeTest.TEST3]), ProbeTest.TEST3)
    if t3.outcome is ProbeOutcome.TIMEOUT:
        return found(NatType.PORT_RESTRICTED_CONE)
    expected = (primary[0], alternate[1])
    if problem := _change_reply_problem(t3, _CLASSIC_LABEL[ProbeTest.TEST3], primary, expected):
        return unknown(problem, ProbeTest.TEST3)
    return found(NatType.RESTRICTED_CONE)


# --------------------------------------------------------------------------- RFC 5780 §4.3


def mapping_behavior(
    test1_mapped: Endpoint | None,
    test2_mapped: Endpoint | None,
    test3_mapped: Endpoint | None,
    local: Endpoint,
) -> BehaviorResult:
    """RFC 5780 §4.3 on mapped addresses alone: Test I to the primary, Test II to the
    alternate IP and primary port, Test III to the alternate IP and port. A missing
    address gives unknown, never endpoint-independent."""
    require_local(local)
    if test1_mapped is None:
        return _behavior_unknown(
            Finding(ReasonCode.NO_MAPPED_ADDRESS, "mapping Test I gave no mapped address"),
            ProbeTest.TEST1,
        )
    if same_endpoint(test1_mapped, local):
        return BehaviorResult(Behavior.ENDPOINT_INDEPENDENT)
    if test2_mapped is None:
        return _behavior_unknown(
            Finding(
                ReasonCode.NO_MAPPED_ADDRESS,
                "mapping Test II (alternate IP, primary port) gave no mapped address",
            ),
            ProbeTest.TEST2,
        )
    if same_endpoint(test2_mapped, test1_mapped):
        return BehaviorResult(Behavior.ENDPOINT_INDEPENDENT)
    if test3_mapped is None:
        return _behavior_unknown(
            Finding(
                ReasonCode.NO_MAPPED_ADDRESS,
                "mapping Test III (alternate IP and port) gave no mapped address",
            ),
            ProbeTest.TEST3,
        )
    if same_endpoint(test3_mapped, test2_mapped):
        return BehaviorResult(Behavior.ADDRESS_DEPENDENT)
    return BehaviorResult(Behavior.ADDRESS_AND_PORT_DEPENDENT)


def _behavior_unknown(problem: Finding, *tests: ProbeTest) -> BehaviorResult:
    return BehaviorResult(Behavior.UNKNOWN, problem, tests)


def mapping_verdict(obs: MappingObservations) -> BehaviorResult:
    """RFC 5780 §4.3 from probes: checks every reply and the server's alternate address,
    then decides with ``mapping_behavior``."""
    t1 = obs.test1
    if t1 is None:
        return _behavior_unknown(_not_run("mapping Test I"), ProbeTest.TEST1)
    if t1.outcome is ProbeOutcome.TIMEOUT:
        return _behavior_unknown(_no_response(t1, "mapping Test I"), ProbeTest.TEST1)
    if problem := _reply_problem(t1, "mapping Test I"):
        return _behavior_unknown(problem, ProbeTest.TEST1)
    if same_endpoint(t1.mapped, obs.local):
        return mapping_behavior(t1.mapped, None, None, obs.local)
    if problem := _alternate_problem(t1, need_ip=True, need_port=False):
        return _behavior_unknown(problem, ProbeTest.TEST2, ProbeTest.TEST3)

    label2 = "mapping Test II (alternate IP, primary port)"
    t2 = obs.test2
    if t2 is None:
        return _behavior_unknown(_not_run(label2), ProbeTest.TEST2)
    if t2.outcome is ProbeOutcome.TIMEOUT:
        return _behavior_unknown(_alternate_unreachable(t2, label2), ProbeTest.TEST2)
    if problem := _reply_problem(t2, label2):
        return _behavior_unknown(problem, ProbeTest.TEST2)
    if same_endpoint(t2.mapped, t1.mapped):
        return mapping_behavior(t1.mapped, t2.mapped, None, obs.local)
    if problem := _alternate_problem(t1, need_ip=True, need_port=True):
        return _behavior_unknown(problem, ProbeTest.TEST3)

    label3 = "mapping Test III (alternate IP and port)"
    t3 = obs.test3
    if t3 is None:
        return _behavior_unknown(_not_run(label3), ProbeTest.TEST3)
    if t3.outcome is ProbeOutcome.TIMEOUT:
        return _behavior_unknown(_alternate_unreachable(t3, label3), ProbeTest.TEST3)
    if problem := _reply_problem(t3, label3):
        return _behavior_unknown(problem, ProbeTest.TEST3)
    return mapping_behavior(t1.mapped, t2.mapped, t3.mapped, obs.local)


# --------------------------------------------------------------------------- RFC 5780 §4.4


def filtering_verdict(obs: FilteringObservations) -> BehaviorResult:
    """RFC 5780 §4.4: Test II (change IP and port) answered → endpoint-independent; else
    Test III (change port) answered → address-dependent; else address-and-port-dependent.
    Silence counts only from a server proven able to answer from its alternate."""
    t1 = obs.test1
    if t1 is None:
        return _behavior_unknown(_not_run("filtering Test I"), ProbeTest.TEST1)
    if t1.outcome is ProbeOutcome.TIMEOUT:
        return _behavior_unknown(_no_response(t1, "filtering Test I"), ProbeTest.TEST1)
    if problem := _reply_problem(t1, "filtering Test I"):
        return _behavior_unknown(problem, ProbeTest.TEST1)
    if problem := _alternate_problem(t1, need_ip=True, need_port=True):
        return _behavior_unknown(problem, ProbeTest.TEST2, ProbeTest.TEST1_ALT, ProbeTest.TEST3)
    assert t1.other_address is not None
    primary, alternate = t1.target, t1.other_address

    label2 = "filtering Test II (change IP and port)"
    t2 = obs.test2
    if t2 is None:
        return _behavior_unknown(_not_run(label2), ProbeTest.TEST2)
    if t2.outcome is not ProbeOutcome.TIMEOUT:
        if problem := _change_reply_problem(t2, label2, primary, alternate):
            return _behavior_unknown(problem, ProbeTest.TEST2)
        return BehaviorResult(Behavior.ENDPOINT_INDEPENDENT)

    label_alt = "filtering Test I to the alternate address"
    ta = obs.test1_alt
    if ta is None:
        return _behavior_unknown(_not_run(label_alt), ProbeTest.TEST1_ALT)
    if ta.outcome is ProbeOutcome.TIMEOUT:
        return _behavior_unknown(_alternate_unreachable(ta, label_alt), ProbeTest.TEST1_ALT)
    if problem := _reply_problem(ta, label_alt):
        return _behavior_unknown(problem, ProbeTest.TEST1_ALT)

    label3 = "filtering Test III (change port)"
    t3 = obs.test3
    if t3 is None:
        return _behavior_unknown(_not_run(label3), ProbeTest.TEST3)
    if t3.outcome is ProbeOutcome.TIMEOUT:
        return BehaviorResult(Behavior.ADDRESS_AND_PORT_DEPENDENT)
    expected = (primary[0], alternate[1])
    if problem := _change_reply_problem(t3, label3, primary, expected):
        return _behavior_unknown(problem, ProbeTest.TEST3)
    return BehaviorResult(Behavior.ADDRESS_DEPENDENT)


# --------------------------------------------------------------------------- RFC 5780 §4.5


def hairpinning(mapped: Endpoint | None, local: Endpoint, received: bool | None) -> HairpinResult:
    """RFC 5780 §4.5: did a request sent from a second socket to this socket's mapped
    address come back in? None when there is nothing to test (no mapped address, no NAT,
    test not run)."""
    require_local(local)
    if mapped is None:
        return HairpinResult(
            None,
            Finding(
                ReasonCode.NO_MAPPED_ADDRESS,
                "hairpinning was not tested: no mapped address to send to",
            ),
            (ProbeTest.TEST1,),
        )
    if same_endpoint(mapped, local):
        return HairpinResult(
            None,
            Finding(
                ReasonCode.NO_NAT,
                "hairpinning does not apply: the mapped address is the local address (no NAT)",
            ),
        )
    if received is None:
        return HairpinResult(
            None, Finding(ReasonCode.TEST_NOT_RUN, "the hairpinning test was not run"),
            (ProbeTest.SEND,),
        )
    return HairpinResult(received)


def hairpin_verdict(obs: HairpinObservations) -> HairpinResult:
    """RFC 5780 §4.5 from probes."""
    t1 = obs.test1
    if t1 is None:
        missing = _not_run("hairpin Test I")
        return HairpinResult(None, missing, (ProbeTest.TEST1,))
    if t1.outcome is ProbeOutcome.TIMEOUT:
        silence = _no_response(t1, "hairpin Test I")
        return HairpinResult(None, silence, (ProbeTest.TEST1,))
    if problem := _reply_problem(t1, "hairpin Test I"):
        return HairpinResult(None, problem, (ProbeTest.TEST1,))
    received = None if obs.send is None else obs.send.outcome is ProbeOutcome.OK
    return hairpinning(t1.mapped, obs.local, received)


# --------------------------------------------------------------------------- RFC 4787 §4.2.1


def port_allocation(pairs: Sequence[tuple[int, int]]) -> PortAllocation:
    """From (local port, mapped port) pairs of fresh sockets, in the order the mappings
    were made: whether the NAT preserves ports, and otherwise the constant step between
    successive mapped ports (None when the steps differ: random or busy allocation)."""
    if not pairs:
        return PortAllocation(None, None)
    if all(local == mapped for local, mapped in pairs):
        return PortAllocation(True, None)
    steps = {(b - a + 0x8000) % 0x10000 - 0x8000 for (_, a), (_, b) in itertools.pairwise(pairs)}
    return PortAllocation(False, steps.pop() if len(steps) == 1 else None)


# --------------------------------------------------------------------------- RFC 5780 §4.6

#: The longest keepalive recommended however long bindings last. WireGuard's advice for
#: its PersistentKeepalive is 25 s; ICE (RFC 8445 §11) defaults to 15 s and WebRTC's
#: consent checks (RFC 7675) run every 5 s; SIP softphones use 15-30 s. Real NATs expire
#: idle UDP bindings after as little as 30 s, whatever RFC 4787 REQ-5 asks (2 minutes).
MAX_KEEPALIVE_S = 25


def binding_lifetime(observations: Iterable[tuple[float, bool]]) -> BindingLifetime:
    """RFC 5780 §4.6 from (seconds of silence, binding still forwarded afterwards) pairs.

    The lower bound is the longest wait the binding survived, the upper bound the
    shortest it did not. A binding that died at a shorter wait than one it survived
    (packet loss, or a NAT expiring bindings irregularly) is reported as inconsistent
    and the bounds use only the waits below that death. The keepalive is half the lower
    bound, at most ``MAX_KEEPALIVE_S``: half, so one lost keepalive does not lose the
    binding.
    """
    obs = list(observations)
    if any(wait < 0 for wait, _ in obs):
        raise ValueError("a wait cannot be negative")
    if not obs:
        return BindingLifetime(
            None,
            None,
            None,
            True,
            Finding(ReasonCode.TEST_NOT_RUN, "the binding lifetime test was not run"),
        )
    dead = [wait for wait, alive in obs if not alive]
    upper = min(dead) if dead else None
    alive = [wait for wait, ok in obs if ok]
    consistent = upper is None or all(wait < upper for wait in alive)
    lower = max((wait for wait in alive if upper is None or wait < upper), default=None)
    keepalive = None if lower is None else min(MAX_KEEPALIVE_S, int(lower // 2)) or None
    if not consistent:
        assert upper is not None
        return BindingLifetime(
            lower,
            upper,
            keepalive,
            False,
            Finding(
                ReasonCode.LIFETIME_INCONSISTENT,
                f"the binding was gone after {upper:g} s yet survived {max(alive):g} s: "
                "packets were lost or the NAT expires bindings irregularly; the bounds use "
                f"only the waits under {upper:g} s",
            ),
        )
    if lower is None:
        assert upper is not None
        return BindingLifetime(
            None,
            upper,
            None,
            True,
            Finding(
                ReasonCode.LIFETIME_EXPIRED_AT_EVERY_WAIT,
                f"the binding was gone after every wait tried, the shortest {upper:g} s, so "
                f"it lasts less than {upper:g} s",
            ),
        )
    if keepalive is None:
        return BindingLifetime(
            lower,
            upper,
            None,
            True,
            Finding(
                ReasonCode.LIFETIME_TOO_SHORT,
                f"the binding was only shown to last {lower:g} s, too short to recommend a "
                "keepalive interval safely",
            ),
        )
    return BindingLifetime(lower, upper, keepalive)


# --------------------------------------------------------------------------- combining

_EI = Behavior.ENDPOINT_INDEPENDENT
_AD = Behavior.ADDRESS_DEPENDENT
_APD = Behavior.ADDRESS_AND_PORT_DEPENDENT
_UNK = Behavior.UNKNOWN

#: (no NAT, mapping, filtering) -> type. Anything not in this table is unknown. With no
#: NAT the mapping is endpoint-independent by definition, so an untested mapping is fine;
#: a dependent mapping measured with no NAT is a contradiction and stays out.
_NAT_TABLE: dict[tuple[bool, Behavior, Behavior], NatType] = {
    **{(True, m, _EI): NatType.OPEN_INTERNET for m in (_EI, _UNK)},
    **{(True, m, f): NatType.SYMMETRIC_UDP_FIREWALL for m in (_EI, _UNK) for f in (_AD, _APD)},
    (False, _EI, _EI): NatType.FULL_CONE,
    (False, _EI, _AD): NatType.RESTRICTED_CONE,
    (False, _EI, _APD): NatType.PORT_RESTRICTED_CONE,
    **{(False, m, f): NatType.SYMMETRIC for m in (_AD, _APD) for f in (_EI, _AD, _APD, _UNK)},
}


def derive_nat_type(
    mapping: Behavior, filtering: Behavior, no_nat: bool | None, udp_reachable: bool | None
) -> NatType:
    """The RFC 3489 type for RFC 4787 behaviours. ``no_nat``: the mapped address is the
    local address; ``udp_reachable``: the server answered at all."""
    if udp_reachable is False:
        return NatType.UDP_BLOCKED
    if udp_reachable is None or no_nat is None:
        return NatType.UNKNOWN
    return _NAT_TABLE.get((no_nat, mapping, filtering), NatType.UNKNOWN)




__all__ = [
    "MAX_KEEPALIVE_S",
    "binding_lifetime",
    "classic_verdict",
    "derive_nat_type",
    "filtering_verdict",
    "hairpin_verdict",
    "hairpinning",
    "mapping_behavior",
    "mapping_verdict",
    "port_allocation",
]
