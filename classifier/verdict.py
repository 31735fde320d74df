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
    TESTS,
    Behavior,
    BehaviorResult,
    BindingLifetime,
    ClassicObservations,
    ClassicResult,
    Endpoint,
    Family,
    FilteringObservations,
    Finding,
    HairpinObservations,
    HairpinResult,
    MappingObservations,
    NatType,
    PortAllocation,
    Probe,
    ProbeId,
    ProbeOutcome,
    ProbeTest,
    Why,
    require_local,
    same_endpoint,
    same_ip,
)

# --------------------------------------------------------------------------- shared checks


def _reply_problem(probe: Probe, test: ProbeId) -> Finding | None:
    """Why an answered request without CHANGE-REQUEST cannot be used, or None if it can.
    The caller has already dealt with a missing probe and with a timeout."""
    if probe.outcome is ProbeOutcome.ERROR:
        return Finding(Why.ERROR_RESPONSE, test, error_code=probe.error_code)
    if probe.outcome is ProbeOutcome.INVALID:
        return Finding(Why.INVALID_RESPONSE, test)
    origin = probe.origin
    if probe.outcome is ProbeOutcome.BAD_SOURCE or (
        origin is not None and not same_endpoint(origin, probe.target)
    ):
        return Finding(Why.WRONG_SOURCE, test, at=origin, other=probe.target)
    if probe.mapped is None:
        return Finding(Why.NO_MAPPED_ADDRESS, test)
    return None


def _change_reply_problem(
    probe: Probe, test: ProbeId, primary: Endpoint, expected: Endpoint
) -> Finding | None:
    """Why a reply to a CHANGE-REQUEST test is not proof that the NAT let in a packet
    from ``expected``, or None if it is. The caller has dealt with None and timeouts."""
    if probe.outcome is ProbeOutcome.ERROR:
        return Finding(Why.CHANGE_REJECTED, test, error_code=probe.error_code)
    if probe.outcome is ProbeOutcome.INVALID:
        return Finding(Why.INVALID_RESPONSE, test)
    origin = probe.origin
    if origin is None:
        if probe.outcome is ProbeOutcome.BAD_SOURCE:
            return Finding(Why.CHANGE_IGNORED_ELSEWHERE, test, other=expected)
        return Finding(Why.SOURCE_NOT_RECORDED, test)
    if probe.outcome is ProbeOutcome.OK and same_endpoint(origin, expected):
        return None
    if (probe.change_ip and same_ip(origin[0], primary[0])) or (
        probe.change_port and origin[1] == primary[1]
    ):
        return Finding(Why.CHANGE_IGNORED, test, at=origin, other=expected)
    return Finding(Why.CHANGE_WRONG_SOURCE, test, at=origin, other=expected, primary=primary)


def _alternate_problem(test1: Probe, *, need_ip: bool, need_port: bool) -> Finding | None:
    """Whether Test I advertised an alternate address usable for the coming tests."""
    alt, primary = test1.other_address, test1.target
    if alt is None:
        return Finding(Why.NO_ALTERNATE)
    if need_ip and same_ip(alt[0], primary[0]):
        return Finding(Why.ALTERNATE_SAME_IP, at=alt, primary=primary)
    if need_port and alt[1] == primary[1]:
        return Finding(Why.ALTERNATE_SAME_PORT, at=alt, primary=primary)
    return None


def _alternate_unreachable(probe: Probe, test: ProbeId) -> Finding:
    return Finding(Why.ALTERNATE_UNREACHABLE, test, at=probe.target)


def _not_run(test: ProbeId) -> Finding:
    return Finding(Why.NOT_RUN, test)


def _no_response(probe: Probe, test: ProbeId) -> Finding:
    return Finding(Why.NO_RESPONSE, test, at=probe.target)


# --------------------------------------------------------------------------- RFC 3489 §10.1

_T = ProbeTest


def _ids(family: Family) -> dict[ProbeTest, ProbeId]:
    return {test: ProbeId(family, test) for test in TESTS[family]}


_CLASSIC = _ids(Family.CLASSIC)
_MAPPING = _ids(Family.MAPPING)
_FILTERING = _ids(Family.FILTERING)
_HAIRPIN = _ids(Family.HAIRPIN)


def classic_verdict(obs: ClassicObservations) -> ClassicResult:
    """RFC 3489 §10.1: Test I; Test II; Test I to CHANGED-ADDRESS; Test III.

    Test II is also followed by Test I to the alternate address when there is no NAT:
    RFC 3489 concludes "symmetric UDP firewall" from Test II's silence alone, but that
    silence only means filtering once the alternate address is known to answer.
    """
    local = obs.local
    ids = _CLASSIC

    def unknown(problem: Finding, *tests: ProbeTest) -> ClassicResult:
        return ClassicResult(NatType.UNKNOWN, problem, tests, mapped, local)

    def found(nat_type: NatType) -> ClassicResult:
        return ClassicResult(nat_type, mapped=mapped, local=local)

    mapped: Endpoint | None = None
    t1 = obs.test1
    if t1 is None:
        return unknown(_not_run(ids[_T.TEST1]), _T.TEST1)
    if t1.outcome is ProbeOutcome.TIMEOUT:
        silence = _no_response(t1, ids[_T.TEST1])
        return ClassicResult(NatType.UDP_BLOCKED, silence, (), None, local)
    if problem := _reply_problem(t1, ids[_T.TEST1]):
        return unknown(problem, _T.TEST1)
    mapped = t1.mapped
    primary = t1.target
    if problem := _alternate_problem(t1, need_ip=True, need_port=True):
        return unknown(problem, _T.TEST2, _T.TEST1_ALT, _T.TEST3)
    assert t1.other_address is not None
    alternate = t1.other_address
    no_nat = same_endpoint(mapped, local)

    t2 = obs.test2
    if t2 is None:
        return unknown(_not_run(ids[_T.TEST2]), _T.TEST2)
    if t2.outcome is not ProbeOutcome.TIMEOUT:
        if problem := _change_reply_problem(t2, ids[_T.TEST2], primary, alternate):
            return unknown(problem, _T.TEST2)
        return found(NatType.OPEN_INTERNET if no_nat else NatType.FULL_CONE)

    # Test II went unanswered: filtering, or a server that cannot send from its
    # alternate address. A plain request to the alternate tells the two apart.
    ta = obs.test1_alt
    if ta is None:
        return unknown(_not_run(ids[_T.TEST1_ALT]), _T.TEST1_ALT)
    if ta.outcome is ProbeOutcome.TIMEOUT:
        return unknown(_alternate_unreachable(ta, ids[_T.TEST1_ALT]), _T.TEST1_ALT)
    if problem := _reply_problem(ta, ids[_T.TEST1_ALT]):
        return unknown(problem, _T.TEST1_ALT)
    if no_nat:
        if not same_endpoint(ta.mapped, local):
            inconsistent = Finding(Why.NO_NAT_THEN_MAPPED, at=mapped, other=ta.mapped)
            return unknown(inconsistent, _T.TEST1_ALT)
        return found(NatType.SYMMETRIC_UDP_FIREWALL)
    if not same_endpoint(ta.mapped, mapped):
        return found(NatType.SYMMETRIC)

    t3 = obs.test3
    if t3 is None:
        return unknown(_not_run(ids[_T.TEST3]), _T.TEST3)
    if t3.outcome is ProbeOutcome.TIMEOUT:
        return found(NatType.PORT_RESTRICTED_CONE)
    expected = (primary[0], alternate[1])
    if problem := _change_reply_problem(t3, ids[_T.TEST3], primary, expected):
        return unknown(problem, _T.TEST3)
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
        return _no_mapped(_T.TEST1)
    if same_endpoint(test1_mapped, local):
        return BehaviorResult(Behavior.ENDPOINT_INDEPENDENT)
    if test2_mapped is None:
        return _no_mapped(_T.TEST2)
    if same_endpoint(test2_mapped, test1_mapped):
        return BehaviorResult(Behavior.ENDPOINT_INDEPENDENT)
    if test3_mapped is None:
        return _no_mapped(_T.TEST3)
    if same_endpoint(test3_mapped, test2_mapped):
        return BehaviorResult(Behavior.ADDRESS_DEPENDENT)
    return BehaviorResult(Behavior.ADDRESS_AND_PORT_DEPENDENT)


def _no_mapped(test: ProbeTest) -> BehaviorResult:
    return _behavior_unknown(Finding(Why.GAVE_NO_MAPPED_ADDRESS, _MAPPING[test]), test)


def _behavior_unknown(problem: Finding, *tests: ProbeTest) -> BehaviorResult:
    return BehaviorResult(Behavior.UNKNOWN, problem, tests)


def mapping_verdict(obs: MappingObservations) -> BehaviorResult:
    """RFC 5780 §4.3 from probes: checks every reply and the server's alternate address,
    then decides with ``mapping_behavior``."""
    ids = _MAPPING
    t1 = obs.test1
    if t1 is None:
        return _behavior_unknown(_not_run(ids[_T.TEST1]), _T.TEST1)
    if t1.outcome is ProbeOutcome.TIMEOUT:
        return _behavior_unknown(_no_response(t1, ids[_T.TEST1]), _T.TEST1)
    if problem := _reply_problem(t1, ids[_T.TEST1]):
        return _behavior_unknown(problem, _T.TEST1)
    if same_endpoint(t1.mapped, obs.local):
        return mapping_behavior(t1.mapped, None, None, obs.local)
    if problem := _alternate_problem(t1, need_ip=True, need_port=False):
        return _behavior_unknown(problem, _T.TEST2, _T.TEST3)

    t2 = obs.test2
    if t2 is None:
        return _behavior_unknown(_not_run(ids[_T.TEST2]), _T.TEST2)
    if t2.outcome is ProbeOutcome.TIMEOUT:
        return _behavior_unknown(_alternate_unreachable(t2, ids[_T.TEST2]), _T.TEST2)
    if problem := _reply_problem(t2, ids[_T.TEST2]):
        return _behavior_unknown(problem, _T.TEST2)
    if same_endpoint(t2.mapped, t1.mapped):
        return mapping_behavior(t1.mapped, t2.mapped, None, obs.local)
    if problem := _alternate_problem(t1, need_ip=True, need_port=True):
        return _behavior_unknown(problem, _T.TEST3)

    t3 = obs.test3
    if t3 is None:
        return _behavior_unknown(_not_run(ids[_T.TEST3]), _T.TEST3)
    if t3.outcome is ProbeOutcome.TIMEOUT:
        return _behavior_unknown(_alternate_unreachable(t3, ids[_T.TEST3]), _T.TEST3)
    if problem := _reply_problem(t3, ids[_T.TEST3]):
        return _behavior_unknown(problem, _T.TEST3)
    return mapping_behavior(t1.mapped, t2.mapped, t3.mapped, obs.local)


# --------------------------------------------------------------------------- RFC 5780 §4.4


def filtering_verdict(obs: FilteringObservations) -> BehaviorResult:
    """RFC 5780 §4.4: Test II (change IP and port) answered → endpoint-independent; else
    Test III (change port) answered → address-dependent; else address-and-port-dependent.
    Silence counts only from a server proven able to answer from its alternate."""
    ids = _FILTERING
    t1 = obs.test1
    if t1 is None:
        return _behavior_unknown(_not_run(ids[_T.TEST1]), _T.TEST1)
    if t1.outcome is ProbeOutcome.TIMEOUT:
        return _behavior_unknown(_no_response(t1, ids[_T.TEST1]), _T.TEST1)
    if problem := _reply_problem(t1, ids[_T.TEST1]):
        return _behavior_unknown(problem, _T.TEST1)
    if problem := _alternate_problem(t1, need_ip=True, need_port=True):
        return _behavior_unknown(problem, _T.TEST2, _T.TEST1_ALT, _T.TEST3)
    assert t1.other_address is not None
    primary, alternate = t1.target, t1.other_address

    t2 = obs.test2
    if t2 is None:
        return _behavior_unknown(_not_run(ids[_T.TEST2]), _T.TEST2)
    if t2.outcome is not ProbeOutcome.TIMEOUT:
        if problem := _change_reply_problem(t2, ids[_T.TEST2], primary, alternate):
            return _behavior_unknown(problem, _T.TEST2)
        return BehaviorResult(Behavior.ENDPOINT_INDEPENDENT)

    ta = obs.test1_alt
    if ta is None:
        return _behavior_unknown(_not_run(ids[_T.TEST1_ALT]), _T.TEST1_ALT)
    if ta.outcome is ProbeOutcome.TIMEOUT:
        return _behavior_unknown(_alternate_unreachable(ta, ids[_T.TEST1_ALT]), _T.TEST1_ALT)
    if problem := _reply_problem(ta, ids[_T.TEST1_ALT]):
        return _behavior_unknown(problem, _T.TEST1_ALT)

    t3 = obs.test3
    if t3 is None:
        return _behavior_unknown(_not_run(ids[_T.TEST3]), _T.TEST3)
    if t3.outcome is ProbeOutcome.TIMEOUT:
        return BehaviorResult(Behavior.ADDRESS_AND_PORT_DEPENDENT)
    expected = (primary[0], alternate[1])
    if problem := _change_reply_problem(t3, ids[_T.TEST3], primary, expected):
        return _behavior_unknown(problem, _T.TEST3)
    return BehaviorResult(Behavior.ADDRESS_DEPENDENT)


# --------------------------------------------------------------------------- RFC 5780 §4.5


def hairpinning(mapped: Endpoint | None, local: Endpoint, received: bool | None) -> HairpinResult:
    """RFC 5780 §4.5: did a request sent from a second socket to this socket's mapped
    address come back in? None when there is nothing to test (no mapped address, no NAT,
    test not run)."""
    require_local(local)
    if mapped is None:
        return HairpinResult(None, Finding(Why.HAIRPIN_NO_MAPPED), (_T.TEST1,))
    if same_endpoint(mapped, local):
        return HairpinResult(None, Finding(Why.HAIRPIN_NO_NAT))
    if received is None:
        return HairpinResult(None, Finding(Why.HAIRPIN_NOT_RUN), (_T.SEND,))
    return HairpinResult(received)


def hairpin_verdict(obs: HairpinObservations) -> HairpinResult:
    """RFC 5780 §4.5 from probes."""
    test1 = _HAIRPIN[_T.TEST1]
    t1 = obs.test1
    if t1 is None:
        return HairpinResult(None, _not_run(test1), (_T.TEST1,))
    if t1.outcome is ProbeOutcome.TIMEOUT:
        return HairpinResult(None, _no_response(t1, test1), (_T.TEST1,))
    if problem := _reply_problem(t1, test1):
        return HairpinResult(None, problem, (_T.TEST1,))
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
            Finding(Why.LIFETIME_NOT_RUN),
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
            Finding(Why.LIFETIME_INCONSISTENT, seconds=(upper, max(alive))),
        )
    if lower is None:
        assert upper is not None
        return BindingLifetime(
            None,
            upper,
            None,
            True,
            Finding(Why.LIFETIME_EXPIRED, seconds=(upper,)),
        )
    if keepalive is None:
        return BindingLifetime(
            lower,
            upper,
            None,
            True,
            Finding(Why.LIFETIME_TOO_SHORT, seconds=(lower,)),
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
