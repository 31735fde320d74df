"""The classifier's decisions: pure functions from probe observations to a verdict.

Implements the decision tables of RFC 3489 §10.1 (the classic flow: Test I, Test II,
Test I to the alternate address, Test III), RFC 5780 §4.3 (mapping), §4.4 (filtering),
§4.5 (hairpinning) and §4.6 (binding lifetime), RFC 4787 §4.2.1 port preservation, and
the mapping of RFC 4787 behaviours onto the RFC 3489 §5 NAT types.

No sockets, no trio, no clock: the transport runs the probes that ``classifier.plan``
asks for, records each as a ``Probe`` and hands them here.

The rule that shapes every function: a test the server cannot support gives
``unknown`` with a reason, never a NAT type. A missing reply means "not received"; it
counts as evidence of filtering only once the server has shown that it can send the reply
(an alternate address advertised, on another IP and port, that answers); an error
response or a reply from the wrong address is never taken for a reply.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import NamedTuple

#: An (IP address, port) pair as text and number, the way sockets report it.
Endpoint = tuple[str, int]


class NatType(StrEnum):
    """The RFC 3489 §5 NAT types; the values are the ``nat_type`` of ``--json``."""

    OPEN_INTERNET = "open-internet"  #: no NAT and no filtering
    FULL_CONE = "full-cone"  #: RFC 3489 §5; RFC 4787 EIM + EIF
    RESTRICTED_CONE = "restricted-cone"  #: RFC 3489 §5; RFC 4787 EIM + ADF
    PORT_RESTRICTED_CONE = "port-restricted-cone"  #: RFC 3489 §5; RFC 4787 EIM + APDF
    SYMMETRIC = "symmetric"  #: RFC 3489 §5; RFC 4787 ADM or APDM
    SYMMETRIC_UDP_FIREWALL = "symmetric-udp-firewall"  #: RFC 3489 §10.1: no NAT, filtered
    UDP_BLOCKED = "udp-blocked"  #: RFC 3489 §10.1: no reply to Test I
    UNKNOWN = "unknown"  #: the tests could not decide; a reason says why


class Behavior(StrEnum):
    """RFC 4787 §4.1 mapping and §5 filtering behaviour, measured by RFC 5780 §4.3-4.4."""

    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"
    UNKNOWN = "unknown"


class ProbeOutcome(StrEnum):
    """What became of one Binding request, as the transport saw it."""

    OK = "ok"  #: a Binding success response
    TIMEOUT = "timeout"  #: nothing received after every retransmission
    ERROR = "error"  #: an error response; ``Probe.error_code`` holds its code
    BAD_SOURCE = "bad-source"  #: a reply from the wrong address (CHANGE-REQUEST not honoured)
    INVALID = "invalid"  #: something came back, but not a usable Binding response


class ReasonCode(StrEnum):
    """Machine-stable codes for why a result is ``unknown`` (or, for udp-blocked, why)."""

    TEST_NOT_RUN = "test-not-run"
    NO_RESPONSE_FROM_SERVER = "no-response-from-server"
    SERVER_ERROR_RESPONSE = "server-error-response"
    INVALID_RESPONSE = "invalid-response"
    UNEXPECTED_RESPONSE_SOURCE = "unexpected-response-source"
    RESPONSE_SOURCE_UNKNOWN = "response-source-unknown"
    NO_MAPPED_ADDRESS = "no-mapped-address"
    NO_ALTERNATE_ADDRESS = "no-alternate-address"
    ALTERNATE_SAME_IP = "alternate-same-ip"
    ALTERNATE_SAME_PORT = "alternate-same-port"
    ALTERNATE_UNREACHABLE = "alternate-unreachable"
    CHANGE_REQUEST_IGNORED = "change-request-ignored"
    CHANGE_REQUEST_REJECTED = "change-request-rejected"
    INCONSISTENT_OBSERVATIONS = "inconsistent-observations"
    METHODS_DISAGREE = "methods-disagree"
    NO_NAT = "no-nat"
    LIFETIME_EXPIRED_AT_EVERY_WAIT = "lifetime-expired-at-every-wait"
    LIFETIME_INCONSISTENT = "lifetime-inconsistent"
    LIFETIME_TOO_SHORT = "lifetime-too-short"
    LIFETIME_UNSUPPORTED = "lifetime-unsupported"
    SERVERS_DISAGREE = "servers-disagree"


# --------------------------------------------------------------------------- observations


@dataclass(frozen=True)
class Probe:
    """One Binding transaction (or, for the hairpin test, one request sent to ourselves).

    ``mapped`` is XOR-MAPPED-ADDRESS, or MAPPED-ADDRESS from an RFC 3489 server that sends
    only that; ``legacy_mapped`` is MAPPED-ADDRESS when the reply carried both (a
    difference between them betrays an ALG). ``source`` is where the reply really came
    from (``recvfrom``); the transport must fill it. ``response_origin`` is RESPONSE-ORIGIN
    (RFC 5780 §7.3) or SOURCE-ADDRESS (RFC 3489 §11.2.5), the server's own view;
    ``other_address`` is OTHER-ADDRESS (RFC 5780 §7.4) or CHANGED-ADDRESS (RFC 3489
    §11.2.3). ``local`` is the address of the socket that sent the request;
    ``attempts`` how many times it was sent (RFC 8489 §6.2.1 retransmissions).
    """

    name: str
    target: Endpoint
    outcome: ProbeOutcome
    change_ip: bool = False
    change_port: bool = False
    mapped: Endpoint | None = None
    legacy_mapped: Endpoint | None = None
    source: Endpoint | None = None
    response_origin: Endpoint | None = None
    other_address: Endpoint | None = None
    error_code: int | None = None
    rtt_ms: float | None = None
    local: Endpoint | None = None
    attempts: int | None = None

    @property
    def flags(self) -> tuple[str, ...]:
        """The CHANGE-REQUEST flags sent, as JSON-friendly names."""
        return ("change-ip",) * self.change_ip + ("change-port",) * self.change_port

    @property
    def origin(self) -> Endpoint | None:
        """Where the reply came from: the real source, else what the server claims."""
        return self.source if self.source is not None else self.response_origin


def _require_local(local: Endpoint) -> None:
    ip = _ip(local[0])
    if not isinstance(ip, str) and ip.is_unspecified:
        raise ValueError(
            f"local address {local[0]} is a wildcard; pass the address the kernel used"
        )


@dataclass(frozen=True)
class ClassicObservations:
    """The RFC 3489 §10.1 tests, all from one socket bound to ``local``; None = not run."""

    local: Endpoint
    test1: Probe | None = None
    test2: Probe | None = None
    test1_alt: Probe | None = None
    test3: Probe | None = None

    def __post_init__(self) -> None:
        _require_local(self.local)


@dataclass(frozen=True)
class MappingObservations:
    """RFC 5780 §4.3 from one socket: Test I to the primary, Test II to the alternate IP
    and primary port, Test III to the alternate IP and port."""

    local: Endpoint
    test1: Probe | None = None
    test2: Probe | None = None
    test3: Probe | None = None

    def __post_init__(self) -> None:
        _require_local(self.local)


@dataclass(frozen=True)
class FilteringObservations:
    """RFC 5780 §4.4 from one socket: Test I, Test II (change IP and port), then, only
    when Test II went unanswered, a plain request to the alternate address proving that
    the alternate is alive, and Test III (change port). The extra request cannot change
    Test III's outcome: it opens the NAT to the alternate IP and port only, and Test III's
    reply comes from the primary IP and alternate port."""

    local: Endpoint
    test1: Probe | None = None
    test2: Probe | None = None
    test1_alt: Probe | None = None
    test3: Probe | None = None

    def __post_init__(self) -> None:
        _require_local(self.local)


@dataclass(frozen=True)
class HairpinObservations:
    """RFC 5780 §4.5: ``test1`` learns the mapped address of the socket at ``local``; a
    second socket then sends a Binding request to that mapped address, recorded as
    ``send`` with outcome ok when the first socket received it, timeout when not."""

    local: Endpoint
    test1: Probe | None = None
    send: Probe | None = None

    def __post_init__(self) -> None:
        _require_local(self.local)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ClassicResult:
    """The RFC 3489 §10.1 outcome. ``reason`` (a sentence) and ``reason_code`` say why the
    type is unknown, or why UDP looks blocked; ``undetermined`` names the tests whose
    results the verdict needed but could not use."""

    nat_type: NatType
    reason: str | None = None
    undetermined: tuple[str, ...] = ()
    reason_code: ReasonCode | None = None
    mapped: Endpoint | None = None
    local: Endpoint | None = None


@dataclass(frozen=True)
class BehaviorResult:
    """A mapping or filtering behaviour, with the reason when it is unknown."""

    behavior: Behavior
    reason: str | None = None
    reason_code: ReasonCode | None = None
    undetermined: tuple[str, ...] = ()


@dataclass(frozen=True)
class HairpinResult:
    """RFC 5780 §4.5: True/False, or None (with a reason) when untested or meaningless."""

    hairpinning: bool | None
    reason: str | None = None
    reason_code: ReasonCode | None = None
    undetermined: tuple[str, ...] = ()


@dataclass(frozen=True)
class PortAllocation:
    """RFC 4787 §4.2.1: does the NAT keep the local port, and if not, by what step does
    it hand out ports (None: inconsistent, random, or too few samples)."""

    preserves_port: bool | None
    delta: int | None


@dataclass(frozen=True)
class BindingLifetime:
    """RFC 5780 §4.6: the binding was still there after ``lower_s`` seconds of silence and
    gone after ``upper_s``; ``keepalive_s`` is a safe interval for keepalives."""

    lower_s: float | None
    upper_s: float | None
    keepalive_s: int | None
    consistent: bool = True
    reason: str | None = None
    reason_code: ReasonCode | None = None


class _Problem(NamedTuple):
    code: ReasonCode
    text: str


# --------------------------------------------------------------------------- addresses


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | str:
    """An address for comparing: IPv4-mapped IPv6 becomes IPv4; a non-IP stays text."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def same_ip(a: str, b: str) -> bool:
    """Whether two textual addresses name the same IP (``::ffff:1.2.3.4`` is ``1.2.3.4``)."""
    return _ip(a) == _ip(b)


def same_endpoint(a: Endpoint | None, b: Endpoint | None) -> bool:
    """Whether two endpoints are the same; a missing one matches nothing."""
    return a is not None and b is not None and a[1] == b[1] and same_ip(a[0], b[0])


def _fmt(endpoint: Endpoint | None) -> str:
    if endpoint is None:
        return "an unknown address"
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _error(code: int | None) -> str:
    return "an error response" if code is None else f"error {code}"


# --------------------------------------------------------------------------- shared checks


def _reply_problem(probe: Probe, label: str) -> _Problem | None:
    """Why an answered request without CHANGE-REQUEST cannot be used, or None if it can.
    The caller has already dealt with a missing probe and with a timeout."""
    if probe.outcome is ProbeOutcome.ERROR:
        return _Problem(
            ReasonCode.SERVER_ERROR_RESPONSE,
            f"the server answered {label} with {_error(probe.error_code)} instead of "
            "a mapped address",
        )
    if probe.outcome is ProbeOutcome.INVALID:
        return _Problem(
            ReasonCode.INVALID_RESPONSE,
            f"the reply to {label} was not a valid Binding response",
        )
    origin = probe.origin
    if probe.outcome is ProbeOutcome.BAD_SOURCE or (
        origin is not None and not same_endpoint(origin, probe.target)
    ):
        return _Problem(
            ReasonCode.UNEXPECTED_RESPONSE_SOURCE,
            f"the reply to {label} came from {_fmt(origin)}, not from "
            f"{_fmt(probe.target)} where the request was sent",
        )
    if probe.mapped is None:
        return _Problem(
            ReasonCode.NO_MAPPED_ADDRESS,
            f"the reply to {label} carried no mapped address",
        )
    return None


def _change_reply_problem(
    probe: Probe, label: str, primary: Endpoint, expected: Endpoint
) -> _Problem | None:
    """Why a reply to a CHANGE-REQUEST test is not proof that the NAT let in a packet
    from ``expected``, or None if it is. The caller has dealt with None and timeouts."""
    if probe.outcome is ProbeOutcome.ERROR:
        return _Problem(
            ReasonCode.CHANGE_REQUEST_REJECTED,
            f"the server answered {label} with {_error(probe.error_code)}: it does not "
            "carry out CHANGE-REQUEST, so it cannot test the NAT's filtering",
        )
    if probe.outcome is ProbeOutcome.INVALID:
        return _Problem(
            ReasonCode.INVALID_RESPONSE,
            f"the reply to {label} was not a valid Binding response",
        )
    origin = probe.origin
    if origin is None:
        if probe.outcome is ProbeOutcome.BAD_SOURCE:
            return _Problem(
                ReasonCode.CHANGE_REQUEST_IGNORED,
                f"the reply to {label} came from the wrong address, not from "
                f"{_fmt(expected)}: the server ignored CHANGE-REQUEST, so the reply says "
                "nothing about the NAT's filtering",
            )
        return _Problem(
            ReasonCode.RESPONSE_SOURCE_UNKNOWN,
            f"the source of the reply to {label} was not recorded, so whether the server "
            "honoured CHANGE-REQUEST cannot be checked",
        )
    if probe.outcome is ProbeOutcome.OK and same_endpoint(origin, expected):
        return None
    if (probe.change_ip and same_ip(origin[0], primary[0])) or (
        probe.change_port and origin[1] == primary[1]
    ):
        return _Problem(
            ReasonCode.CHANGE_REQUEST_IGNORED,
            f"the reply to {label} came from {_fmt(origin)} instead of {_fmt(expected)}: "
            "the server ignored CHANGE-REQUEST, so the reply says nothing about the "
            "NAT's filtering",
        )
    return _Problem(
        ReasonCode.UNEXPECTED_RESPONSE_SOURCE,
        f"the reply to {label} came from {_fmt(origin)}, neither the primary address "
        f"{_fmt(primary)} nor {_fmt(expected)} where CHANGE-REQUEST should have sent it from",
    )


def _alternate_problem(test1: Probe, *, need_ip: bool, need_port: bool) -> _Problem | None:
    """Whether Test I advertised an alternate address usable for the coming tests."""
    alt, primary = test1.other_address, test1.target
    if alt is None:
        return _Problem(
            ReasonCode.NO_ALTERNATE_ADDRESS,
            "server has no alternate address: its reply to Test I carried neither "
            "OTHER-ADDRESS nor CHANGED-ADDRESS, so the tests that need a second IP "
            "address and port cannot be run",
        )
    if need_ip and same_ip(alt[0], primary[0]):
        return _Problem(
            ReasonCode.ALTERNATE_SAME_IP,
            f"server's alternate address {_fmt(alt)} is on the same IP as its primary "
            f"{_fmt(primary)}, so it cannot send from a second IP address as the test needs",
        )
    if need_port and alt[1] == primary[1]:
        return _Problem(
            ReasonCode.ALTERNATE_SAME_PORT,
            f"server's alternate address {_fmt(alt)} uses the same port as its primary "
            f"{_fmt(primary)}, so it cannot send from a second port as the test needs",
        )
    return None


def _alternate_unreachable(probe: Probe, label: str) -> _Problem:
    return _Problem(
        ReasonCode.ALTERNATE_UNREACHABLE,
        f"no response from the server's alternate address {_fmt(probe.target)} to {label}, "
        "although the primary address answered: the alternate is unreachable or "
        "advertised wrongly, so a missing reply cannot be blamed on the NAT",
    )


def _not_run(label: str) -> _Problem:
    return _Problem(ReasonCode.TEST_NOT_RUN, f"{label} was not run")


def _no_response(probe: Probe, label: str) -> _Problem:
    return _Problem(
        ReasonCode.NO_RESPONSE_FROM_SERVER,
        f"no response from {_fmt(probe.target)} to {label}: UDP is blocked on this "
        "network, or the server is down",
    )


# --------------------------------------------------------------------------- RFC 3489 §10.1

_CLASSIC_LABEL = {
    "test1": "Test I",
    "test2": "Test II (change IP and port)",
    "test1_alt": "Test I to the alternate address",
    "test3": "Test III (change port)",
}


def classic_verdict(obs: ClassicObservations) -> ClassicResult:
    """RFC 3489 §10.1: Test I; Test II; Test I to CHANGED-ADDRESS; Test III.

    Test II is also followed by Test I to the alternate address when there is no NAT:
    RFC 3489 concludes "symmetric UDP firewall" from Test II's silence alone, but that
    silence only means filtering once the alternate address is known to answer.
    """
    local = obs.local

    def unknown(problem: _Problem, *tests: str) -> ClassicResult:
        return ClassicResult(NatType.UNKNOWN, problem.text, tests, problem.code, mapped, local)

    def found(nat_type: NatType) -> ClassicResult:
        return ClassicResult(nat_type, mapped=mapped, local=local)

    mapped: Endpoint | None = None
    t1 = obs.test1
    if t1 is None:
        return unknown(_not_run("Test I"), "test1")
    if t1.outcome is ProbeOutcome.TIMEOUT:
        silence = _no_response(t1, "Test I")
        return ClassicResult(NatType.UDP_BLOCKED, silence.text, (), silence.code, None, local)
    if problem := _reply_problem(t1, "Test I"):
        return unknown(problem, "test1")
    mapped = t1.mapped
    primary = t1.target
    if problem := _alternate_problem(t1, need_ip=True, need_port=True):
        return unknown(problem, "test2", "test1_alt", "test3")
    assert t1.other_address is not None
    alternate = t1.other_address
    no_nat = same_endpoint(mapped, local)

    t2 = obs.test2
    if t2 is None:
        return unknown(_not_run(_CLASSIC_LABEL["test2"]), "test2")
    if t2.outcome is not ProbeOutcome.TIMEOUT:
        if problem := _change_reply_problem(t2, _CLASSIC_LABEL["test2"], primary, alternate):
            return unknown(problem, "test2")
        return found(NatType.OPEN_INTERNET if no_nat else NatType.FULL_CONE)

    # Test II went unanswered: filtering, or a server that cannot send from its
    # alternate address. A plain request to the alternate tells the two apart.
    ta = obs.test1_alt
    if ta is None:
        return unknown(_not_run(_CLASSIC_LABEL["test1_alt"]), "test1_alt")
    if ta.outcome is ProbeOutcome.TIMEOUT:
        return unknown(_alternate_unreachable(ta, _CLASSIC_LABEL["test1_alt"]), "test1_alt")
    if problem := _reply_problem(ta, _CLASSIC_LABEL["test1_alt"]):
        return unknown(problem, "test1_alt")
    if no_nat:
        if not same_endpoint(ta.mapped, local):
            return unknown(
                _Problem(
                    ReasonCode.INCONSISTENT_OBSERVATIONS,
                    f"Test I saw no NAT (mapped address {_fmt(mapped)} is the local "
                    f"address) but Test I to the alternate address was mapped to "
                    f"{_fmt(ta.mapped)}",
                ),
                "test1_alt",
            )
        return found(NatType.SYMMETRIC_UDP_FIREWALL)
    if not same_endpoint(ta.mapped, mapped):
        return found(NatType.SYMMETRIC)

    t3 = obs.test3
    if t3 is None:
        return unknown(_not_run(_CLASSIC_LABEL["test3"]), "test3")
    if t3.outcome is ProbeOutcome.TIMEOUT:
        return found(NatType.PORT_RESTRICTED_CONE)
    expected = (primary[0], alternate[1])
    if problem := _change_reply_problem(t3, _CLASSIC_LABEL["test3"], primary, expected):
        return unknown(problem, "test3")
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
    _require_local(local)
    if test1_mapped is None:
        return _behavior_unknown(
            _Problem(ReasonCode.NO_MAPPED_ADDRESS, "mapping Test I gave no mapped address"),
            "test1",
        )
    if same_endpoint(test1_mapped, local):
        return BehaviorResult(Behavior.ENDPOINT_INDEPENDENT)
    if test2_mapped is None:
        return _behavior_unknown(
            _Problem(
                ReasonCode.NO_MAPPED_ADDRESS,
                "mapping Test II (alternate IP, primary port) gave no mapped address",
            ),
            "test2",
        )
    if same_endpoint(test2_mapped, test1_mapped):
        return BehaviorResult(Behavior.ENDPOINT_INDEPENDENT)
    if test3_mapped is None:
        return _behavior_unknown(
            _Problem(
                ReasonCode.NO_MAPPED_ADDRESS,
                "mapping Test III (alternate IP and port) gave no mapped address",
            ),
            "test3",
        )
    if same_endpoint(test3_mapped, test2_mapped):
        return BehaviorResult(Behavior.ADDRESS_DEPENDENT)
    return BehaviorResult(Behavior.ADDRESS_AND_PORT_DEPENDENT)


def _behavior_unknown(problem: _Problem, *tests: str) -> BehaviorResult:
    return BehaviorResult(Behavior.UNKNOWN, problem.text, problem.code, tests)


def mapping_verdict(obs: MappingObservations) -> BehaviorResult:
    """RFC 5780 §4.3 from probes: checks every reply and the server's alternate address,
    then decides with ``mapping_behavior``."""
    t1 = obs.test1
    if t1 is None:
        return _behavior_unknown(_not_run("mapping Test I"), "test1")
    if t1.outcome is ProbeOutcome.TIMEOUT:
        return _behavior_unknown(_no_response(t1, "mapping Test I"), "test1")
    if problem := _reply_problem(t1, "mapping Test I"):
        return _behavior_unknown(problem, "test1")
    if same_endpoint(t1.mapped, obs.local):
        return mapping_behavior(t1.mapped, None, None, obs.local)
    if problem := _alternate_problem(t1, need_ip=True, need_port=False):
        return _behavior_unknown(problem, "test2", "test3")

    label2 = "mapping Test II (alternate IP, primary port)"
    t2 = obs.test2
    if t2 is None:
        return _behavior_unknown(_not_run(label2), "test2")
    if t2.outcome is ProbeOutcome.TIMEOUT:
        return _behavior_unknown(_alternate_unreachable(t2, label2), "test2")
    if problem := _reply_problem(t2, label2):
        return _behavior_unknown(problem, "test2")
    if same_endpoint(t2.mapped, t1.mapped):
        return mapping_behavior(t1.mapped, t2.mapped, None, obs.local)
    if problem := _alternate_problem(t1, need_ip=True, need_port=True):
        return _behavior_unknown(problem, "test3")

    label3 = "mapping Test III (alternate IP and port)"
    t3 = obs.test3
    if t3 is None:
        return _behavior_unknown(_not_run(label3), "test3")
    if t3.outcome is ProbeOutcome.TIMEOUT:
        return _behavior_unknown(_alternate_unreachable(t3, label3), "test3")
    if problem := _reply_problem(t3, label3):
        return _behavior_unknown(problem, "test3")
    return mapping_behavior(t1.mapped, t2.mapped, t3.mapped, obs.local)


# --------------------------------------------------------------------------- RFC 5780 §4.4


def filtering_verdict(obs: FilteringObservations) -> BehaviorResult:
    """RFC 5780 §4.4: Test II (change IP and port) answered → endpoint-independent; else
    Test III (change port) answered → address-dependent; else address-and-port-dependent.
    Silence counts only from a server proven able to answer from its alternate."""
    t1 = obs.test1
    if t1 is None:
        return _behavior_unknown(_not_run("filtering Test I"), "test1")
    if t1.outcome is ProbeOutcome.TIMEOUT:
        return _behavior_unknown(_no_response(t1, "filtering Test I"), "test1")
    if problem := _reply_problem(t1, "filtering Test I"):
        return _behavior_unknown(problem, "test1")
    if problem := _alternate_problem(t1, need_ip=True, need_port=True):
        return _behavior_unknown(problem, "test2", "test1_alt", "test3")
    assert t1.other_address is not None
    primary, alternate = t1.target, t1.other_address

    label2 = "filtering Test II (change IP and port)"
    t2 = obs.test2
    if t2 is None:
        return _behavior_unknown(_not_run(label2), "test2")
    if t2.outcome is not ProbeOutcome.TIMEOUT:
        if problem := _change_reply_problem(t2, label2, primary, alternate):
            return _behavior_unknown(problem, "test2")
        return BehaviorResult(Behavior.ENDPOINT_INDEPENDENT)

    label_alt = "filtering Test I to the alternate address"
    ta = obs.test1_alt
    if ta is None:
        return _behavior_unknown(_not_run(label_alt), "test1_alt")
    if ta.outcome is ProbeOutcome.TIMEOUT:
        return _behavior_unknown(_alternate_unreachable(ta, label_alt), "test1_alt")
    if problem := _reply_problem(ta, label_alt):
        return _behavior_unknown(problem, "test1_alt")

    label3 = "filtering Test III (change port)"
    t3 = obs.test3
    if t3 is None:
        return _behavior_unknown(_not_run(label3), "test3")
    if t3.outcome is ProbeOutcome.TIMEOUT:
        return BehaviorResult(Behavior.ADDRESS_AND_PORT_DEPENDENT)
    expected = (primary[0], alternate[1])
    if problem := _change_reply_problem(t3, label3, primary, expected):
        return _behavior_unknown(problem, "test3")
    return BehaviorResult(Behavior.ADDRESS_DEPENDENT)


# --------------------------------------------------------------------------- RFC 5780 §4.5


def hairpinning(mapped: Endpoint | None, local: Endpoint, received: bool | None) -> HairpinResult:
    """RFC 5780 §4.5: did a request sent from a second socket to this socket's mapped
    address come back in? None when there is nothing to test (no mapped address, no NAT,
    test not run)."""
    _require_local(local)
    if mapped is None:
        return HairpinResult(
            None,
            "hairpinning was not tested: no mapped address to send to",
            ReasonCode.NO_MAPPED_ADDRESS,
            ("test1",),
        )
    if same_endpoint(mapped, local):
        return HairpinResult(
            None,
            "hairpinning does not apply: the mapped address is the local address (no NAT)",
            ReasonCode.NO_NAT,
        )
    if received is None:
        return HairpinResult(
            None, "the hairpinning test was not run", ReasonCode.TEST_NOT_RUN, ("send",)
        )
    return HairpinResult(received)


def hairpin_verdict(obs: HairpinObservations) -> HairpinResult:
    """RFC 5780 §4.5 from probes."""
    t1 = obs.test1
    if t1 is None:
        missing = _not_run("hairpin Test I")
        return HairpinResult(None, missing.text, missing.code, ("test1",))
    if t1.outcome is ProbeOutcome.TIMEOUT:
        silence = _no_response(t1, "hairpin Test I")
        return HairpinResult(None, silence.text, silence.code, ("test1",))
    if problem := _reply_problem(t1, "hairpin Test I"):
        return HairpinResult(None, problem.text, problem.code, ("test1",))
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
            "the binding lifetime test was not run",
            ReasonCode.TEST_NOT_RUN,
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
            f"the binding was gone after {upper:g} s yet survived {max(alive):g} s: "
            "packets were lost or the NAT expires bindings irregularly; the bounds use "
            f"only the waits under {upper:g} s",
            ReasonCode.LIFETIME_INCONSISTENT,
        )
    if lower is None:
        assert upper is not None
        return BindingLifetime(
            None,
            upper,
            None,
            True,
            f"the binding was gone after every wait tried, the shortest {upper:g} s, so "
            f"it lasts less than {upper:g} s",
            ReasonCode.LIFETIME_EXPIRED_AT_EVERY_WAIT,
        )
    if keepalive is None:
        return BindingLifetime(
            lower,
            upper,
            None,
            True,
            f"the binding was only shown to last {lower:g} s, too short to recommend a "
            "keepalive interval safely",
            ReasonCode.LIFETIME_TOO_SHORT,
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
    def problem(self) -> tuple[ReasonCode, str] | None:
        """Why ``nat_type`` is unknown (None when it is known)."""
        if self.nat_type is not NatType.UNKNOWN:
            return None
        for result in (self.mapping, self.filtering):
            if result.behavior is Behavior.UNKNOWN and result.reason_code is not None:
                return result.reason_code, result.reason or ""
        if self.no_nat is None:
            return (
                ReasonCode.INCONSISTENT_OBSERVATIONS,
                "the mapping and filtering tests disagree on whether there is a NAT",
            )
        return (
            ReasonCode.INCONSISTENT_OBSERVATIONS,
            f"mapping {self.mapping.behavior} cannot happen without a NAT",
        )


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
        else HairpinResult(
            None, "the hairpinning test was not run", ReasonCode.TEST_NOT_RUN, ("test1",)
        )
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


#: One sentence per type: what it means for a peer-to-peer (VoIP, WebRTC) call.
MEANING: dict[NatType, str] = {
    NatType.OPEN_INTERNET: (
        "No NAT and no filtering: peers can reach this host directly, so calls connect "
        "peer-to-peer without a relay."
    ),
    NatType.FULL_CONE: (
        "Any peer can send to the mapped address once it is known, so direct "
        "peer-to-peer calls work whatever the other side's NAT."
    ),
    NatType.RESTRICTED_CONE: (
        "Peers get through once this host has sent them a packet, so ICE hole punching "
        "connects calls with almost every peer, even one behind a symmetric NAT."
    ),
    NatType.PORT_RESTRICTED_CONE: (
        "Hole punching connects calls with open hosts and cone NATs, but a call to a "
        "peer behind a symmetric NAT usually needs a TURN relay."
    ),
    NatType.SYMMETRIC: (
        "Every destination gets a new mapping, so direct media between two peers "
        "usually fails (unless the other side is open or a full or restricted cone) and "
        "calls need a TURN relay."
    ),
    NatType.SYMMETRIC_UDP_FIREWALL: (
        "A public address behind a firewall that drops unsolicited UDP: hole punching "
        "connects most calls, but a peer behind a symmetric NAT may need a TURN relay."
    ),
    NatType.UDP_BLOCKED: (
        "No UDP gets through, so calls work only through a TURN relay reached over TCP "
        "or TLS (best on port 443)."
    ),
    NatType.UNKNOWN: (
        "The NAT type could not be determined, so whether calls can connect "
        "peer-to-peer is unknown; see the reason."
    ),
}

_CGNAT = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598 shared address space


def _in_cgnat(endpoint: Endpoint | None) -> bool:
    if endpoint is None:
        return False
    ip = _ip(endpoint[0])
    return isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT


_PRIVATE = tuple(
    ipaddress.ip_network(net) for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)  # RFC 1918
_ULA = ipaddress.ip_network("fc00::/7")  # RFC 4193


def _is_private(endpoint: Endpoint | None) -> bool:
    if endpoint is None:
        return False
    ip = _ip(endpoint[0])
    if isinstance(ip, ipaddress.IPv4Address):
        return any(ip in net for net in _PRIVATE)
    return isinstance(ip, ipaddress.IPv6Address) and ip in _ULA


@dataclass(frozen=True)
class Verdict:
    """Everything ``natsrv classify`` reports. ``inconclusive`` is exit code 3."""

    nat_type: NatType
    reason: str | None
    reason_code: ReasonCode | None
    mapping: Behavior
    filtering: Behavior
    hairpinning: bool | None
    mapped_address: Endpoint | None
    local_address: Endpoint | None
    alg_suspected: bool
    cgnat_suspected: bool
    meaning: str
    notes: tuple[str, ...] = ()
    classic: ClassicResult | None = None
    rfc5780: Rfc5780Result | None = None
    probes: tuple[Probe, ...] = ()
    port_allocation: PortAllocation | None = None
    lifetime: BindingLifetime | None = None

    @property
    def inconclusive(self) -> bool:
        return self.nat_type is NatType.UNKNOWN


def _describe(r: Rfc5780Result) -> str:
    if r.udp_reachable is False:
        return "no reply to any RFC 5780 Test I"
    return f"{r.nat_type} (mapping {r.mapping.behavior}, filtering {r.filtering.behavior})"


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
    notes: list[str] = []
    reason: str | None = None
    code: ReasonCode | None = None
    r_problem = rfc5780.problem

    if c is NatType.UNKNOWN and r is NatType.UNKNOWN:
        nat = NatType.UNKNOWN
        reason, code = classic.reason, classic.reason_code
        if r_problem is not None and (code is None or code is ReasonCode.TEST_NOT_RUN):
            code, reason = r_problem
        elif r_problem is not None and r_problem[1] != reason:
            notes.append(f"RFC 5780 tests: {r_problem[1]}")
    elif c is NatType.UNKNOWN:
        nat = r
        notes.append(f"the classic RFC 3489 test was inconclusive: {classic.reason}")
    elif not _agrees(c, rfc5780):
        nat = NatType.UNKNOWN
        code = ReasonCode.METHODS_DISAGREE
        reason = (
            f"the classic RFC 3489 test says {c} but the RFC 5780 tests found "
            f"{_describe(rfc5780)}: the NAT behaved differently on different sockets or "
            "changed during the test, so no single type fits"
        )
    elif r is NatType.UNKNOWN:
        nat = c
        assert r_problem is not None  # an unknown type always has a problem
        notes.append(f"the RFC 5780 tests were inconclusive: {r_problem[1]}")
        if c is NatType.UDP_BLOCKED:
            reason, code = classic.reason, classic.reason_code
    else:
        nat = r
        if c is NatType.UDP_BLOCKED:
            reason, code = classic.reason, classic.reason_code
        if r is not c:
            notes.append(
                f"the classic RFC 3489 test reports {c} without testing the mapping; the "
                f"RFC 5780 test found {rfc5780.mapping.behavior} mapping, so the NAT is {r}"
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
        more = len(rewritten) - 1
        notes.append(
            f"MAPPED-ADDRESS {_fmt(first.legacy_mapped)} differs from XOR-MAPPED-ADDRESS "
            f"{_fmt(first.mapped)} in the reply to {first.name}"
            + (f" (and in {more} other replies)" if more else "")
            + ": a router ALG rewrites addresses inside packets, which often breaks SIP "
            "and STUN (turn off 'SIP ALG' on the router)"
        )
    mapped = rfc5780.mapped or classic.mapped
    local = rfc5780.local or classic.local
    cgnat = False
    if _in_cgnat(mapped):
        cgnat = True
        notes.append(
            f"the mapped address {_fmt(mapped)} is in 100.64.0.0/10 (RFC 6598): the "
            "server sits inside the carrier's network, behind or beside a carrier-grade NAT"
        )
    if _in_cgnat(local):
        cgnat = True
        notes.append(
            f"this host's address {_fmt(local)} is in 100.64.0.0/10 (RFC 6598): the "
            "provider uses carrier-grade NAT, a second NAT outside your control"
        )
    if _is_private(mapped):
        notes.append(
            f"the mapped address {_fmt(mapped)} is private: the server is inside a private "
            "network, so the result describes only the path to it"
        )
    return Verdict(
        nat_type=nat,
        reason=reason,
        reason_code=code,
        mapping=rfc5780.mapping.behavior,
        filtering=rfc5780.filtering.behavior,
        hairpinning=rfc5780.hairpinning.hairpinning,
        mapped_address=mapped,
        local_address=local,
        alg_suspected=alg,
        cgnat_suspected=cgnat,
        meaning=MEANING[nat],
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
    names = ("test1", "test2", "test1_alt", "test3", "send")
    return [p for n in names if (p := getattr(obs, n, None)) is not None]


__all__ = [
    "MAX_KEEPALIVE_S",
    "MEANING",
    "Behavior",
    "BehaviorResult",
    "BindingLifetime",
    "ClassicObservations",
    "ClassicResult",
    "Endpoint",
    "FilteringObservations",
    "HairpinObservations",
    "HairpinResult",
    "MappingObservations",
    "NatType",
    "PortAllocation",
    "Probe",
    "ProbeOutcome",
    "ReasonCode",
    "Rfc5780Result",
    "Verdict",
    "binding_lifetime",
    "classic_verdict",
    "classify",
    "combine",
    "derive_nat_type",
    "filtering_verdict",
    "hairpin_verdict",
    "hairpinning",
    "mapping_behavior",
    "mapping_verdict",
    "port_allocation",
    "rfc5780_verdict",
    "same_endpoint",
    "same_ip",
]
