"""The classifier's decision tables (classifier/verdict.py) and probe plan
(classifier/plan.py): one test per branch, then whole runs against a simulated NAT."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from classifier.binding import BindingReply
from classifier.combine import Rfc5780Result, classify, combine, rfc5780_verdict
from classifier.model import (
    PORT_SAMPLES,
    Behavior,
    BehaviorResult,
    BindingLifetime,
    ClassicObservations,
    ClassicResult,
    Endpoint,
    Extra,
    Family,
    FilteringObservations,
    Finding,
    HairpinObservations,
    HairpinResult,
    MappingObservations,
    NatType,
    Probe,
    ProbeId,
    ProbeOutcome,
    ProbeTest,
    ReasonCode,
    Verdict,
    Why,
    same_endpoint,
    same_ip,
)
from classifier.plan import (
    PHASES,
    STEPS,
    Answer,
    ExtraRequest,
    ProbeRequest,
    Step,
    Target,
    lifetime_check,
    next_lifetime_wait,
    next_probe,
    observations,
    observe,
    origin_mismatch,
    port_pairs,
    verdict_from_probes,
)
from classifier.report import MEANING, reason, say
from classifier.verdict import (
    MAX_KEEPALIVE_S,
    binding_lifetime,
    classic_verdict,
    derive_nat_type,
    filtering_verdict,
    hairpin_verdict,
    hairpinning,
    mapping_behavior,
    mapping_verdict,
    port_allocation,
)

OK = ProbeOutcome.OK
TIMEOUT = ProbeOutcome.TIMEOUT
ERROR = ProbeOutcome.ERROR
BAD_SOURCE = ProbeOutcome.BAD_SOURCE
INVALID = ProbeOutcome.INVALID
EI = Behavior.ENDPOINT_INDEPENDENT
AD = Behavior.ADDRESS_DEPENDENT
APD = Behavior.ADDRESS_AND_PORT_DEPENDENT
UNK = Behavior.UNKNOWN

SERVER_IP = "198.51.100.1"
ALT_IP = "198.51.100.2"
PRIMARY: Endpoint = (SERVER_IP, 3478)
ALT: Endpoint = (ALT_IP, 3479)
PRIMARY_IP_ALT_PORT: Endpoint = (SERVER_IP, 3479)
ALT_IP_PRIMARY_PORT: Endpoint = (ALT_IP, 3478)
LOCAL: Endpoint = ("192.168.1.10", 50000)
MAPPED: Endpoint = ("203.0.113.5", 62000)
OPEN_LOCAL: Endpoint = ("203.0.113.5", 50000)  # a host with a public address


# --------------------------------------------------------------------------- builders


def why(result: ClassicResult | BehaviorResult | BindingLifetime | Verdict) -> str | None:
    """A result's reason as the report writes it."""
    return reason(result.finding)


def notes(verdict: Verdict) -> tuple[str, ...]:
    return tuple(say(note) for note in verdict.notes)


def pid(test: str, family: Family = Family.CLASSIC) -> ProbeId:
    """The id of a probe; the decisions take probes by observation field, not by id."""
    return ProbeId(family, ProbeTest(test))


def t1(mapped: Endpoint | None = MAPPED, other: Endpoint | None = ALT, **kw: object) -> Probe:
    fields: dict[str, object] = {"source": PRIMARY, "other_address": other, "mapped": mapped}
    fields.update(kw)
    return Probe(pid("test1"), PRIMARY, fields.pop("outcome", OK), **fields)  # type: ignore[arg-type]


def t2(outcome: ProbeOutcome = OK, source: Endpoint | None = ALT, **kw: object) -> Probe:
    return Probe(
        pid("test2"), PRIMARY, outcome, change_ip=True, change_port=True, source=source, **kw  # type: ignore[arg-type]
    )


def t1_alt(mapped: Endpoint | None = MAPPED, outcome: ProbeOutcome = OK, **kw: object) -> Probe:
    fields: dict[str, object] = {"source": ALT, "mapped": mapped}
    fields.update(kw)
    return Probe(pid("test1_alt"), ALT, outcome, **fields)  # type: ignore[arg-type]


def t3(
    outcome: ProbeOutcome = OK, source: Endpoint | None = PRIMARY_IP_ALT_PORT, **kw: object
) -> Probe:
    return Probe(pid("test3"), PRIMARY, outcome, change_port=True, source=source, **kw)  # type: ignore[arg-type]


def timeout(
    name: str, target: Endpoint = PRIMARY, *, change_ip: bool = False, change_port: bool = False
) -> Probe:
    return Probe(pid(name), target, TIMEOUT, change_ip=change_ip, change_port=change_port)


def classic(local: Endpoint = LOCAL, /, **probes: Probe | None) -> ClassicResult:
    return classic_verdict(ClassicObservations(local, **probes))


def unknown_code(result: ClassicResult | BehaviorResult) -> ReasonCode | None:
    kind = result.nat_type if isinstance(result, ClassicResult) else result.behavior
    assert kind in (NatType.UNKNOWN, Behavior.UNKNOWN)
    assert why(result)
    return result.reason_code


# --------------------------------------------------------------------------- addresses


def test_same_ip_treats_ipv4_mapped_ipv6_as_ipv4() -> None:
    assert same_ip("::ffff:192.0.2.1", "192.0.2.1")
    assert same_ip("2001:db8::1", "2001:DB8:0::1")
    assert not same_ip("192.0.2.1", "192.0.2.2")
    assert same_ip("stun.example", "stun.example")  # not an IP: compared as text


def test_same_endpoint_needs_both_and_equal_ports() -> None:
    assert same_endpoint(("::ffff:192.0.2.1", 1), ("192.0.2.1", 1))
    assert not same_endpoint(("192.0.2.1", 1), ("192.0.2.1", 2))
    assert not same_endpoint(None, None)


@pytest.mark.parametrize("wildcard", ["0.0.0.0", "::"])
def test_a_wildcard_local_address_is_refused(wildcard: str) -> None:
    with pytest.raises(ValueError, match="wildcard"):
        ClassicObservations((wildcard, 5000))
    with pytest.raises(ValueError, match="wildcard"):
        mapping_behavior(MAPPED, None, None, (wildcard, 5000))


def test_probe_flags_for_json() -> None:
    assert t2().flags == ("change-ip", "change-port")
    assert t3().flags == ("change-port",)
    assert t1().flags == ()


def test_probe_origin_prefers_the_real_source() -> None:
    assert Probe(pid("test1"), PRIMARY, OK, source=ALT, response_origin=PRIMARY).origin == ALT
    assert Probe(pid("test1"), PRIMARY, OK, response_origin=PRIMARY).origin == PRIMARY


# --------------------------------------------------------------------------- classic: Test I


def test_classic_without_test1_asks_for_it() -> None:
    result = classic()
    assert unknown_code(result) is ReasonCode.TEST_NOT_RUN
    assert result.undetermined == ("test1",)


def test_classic_test1_timeout_is_udp_blocked() -> None:
    result = classic(test1=timeout("test1"))
    assert result.nat_type is NatType.UDP_BLOCKED
    assert result.reason_code is ReasonCode.NO_RESPONSE_FROM_SERVER
    assert why(result) == (
        "no response from 198.51.100.1:3478 to Test I: UDP is blocked on this network, "
        "or the server is down"
    )


def test_classic_test1_error_is_unknown_never_reachable() -> None:
    result = classic(test1=t1(outcome=ERROR, mapped=None, error_code=401))
    assert unknown_code(result) is ReasonCode.SERVER_ERROR_RESPONSE
    assert why(result) == (
        "the server answered Test I with error 401 instead of a mapped address"
    )
    assert result.undetermined == ("test1",)


def test_classic_test1_error_without_code() -> None:
    result = classic(test1=t1(outcome=ERROR, mapped=None))
    assert "an error response" in (why(result) or "")


def test_classic_test1_invalid() -> None:
    assert unknown_code(classic(test1=t1(outcome=INVALID))) is ReasonCode.INVALID_RESPONSE


def test_classic_test1_bad_source() -> None:
    result = classic(test1=t1(outcome=BAD_SOURCE, source=None))
    assert unknown_code(result) is ReasonCode.UNEXPECTED_RESPONSE_SOURCE
    assert "came from an unknown address" in (why(result) or "")


def test_classic_test1_answered_from_another_address() -> None:
    result = classic(test1=t1(source=ALT))
    assert unknown_code(result) is ReasonCode.UNEXPECTED_RESPONSE_SOURCE
    assert why(result) == (
        "the reply to Test I came from 198.51.100.2:3479, not from 198.51.100.1:3478 "
        "where the request was sent"
    )


def test_classic_test1_without_mapped_address() -> None:
    result = classic(test1=t1(mapped=None))
    assert unknown_code(result) is ReasonCode.NO_MAPPED_ADDRESS


# --------------------------------------------------------------------------- classic: server


def test_classic_server_without_alternate_is_unknown_even_when_test2_would_answer() -> None:
    result = classic(test1=t1(other=None), test2=t2())
    assert unknown_code(result) is ReasonCode.NO_ALTERNATE_ADDRESS
    assert (why(result) or "").startswith("server has no alternate address")
    assert result.undetermined == ("test2", "test1_alt", "test3")
    assert result.mapped == MAPPED


def test_classic_alternate_on_the_same_ip() -> None:
    result = classic(test1=t1(other=(SERVER_IP, 3479)))
    assert unknown_code(result) is ReasonCode.ALTERNATE_SAME_IP
    assert "same IP" in (why(result) or "")


def test_classic_alternate_on_the_same_ip_written_differently() -> None:
    result = classic(test1=t1(other=("::ffff:" + SERVER_IP, 3479)))
    assert unknown_code(result) is ReasonCode.ALTERNATE_SAME_IP


def test_classic_alternate_on_the_same_port() -> None:
    result = classic(test1=t1(other=(ALT_IP, 3478)))
    assert unknown_code(result) is ReasonCode.ALTERNATE_SAME_PORT


# --------------------------------------------------------------------------- classic: Test II


def test_classic_without_test2_asks_for_it() -> None:
    result = classic(test1=t1())
    assert unknown_code(result) is ReasonCode.TEST_NOT_RUN
    assert result.undetermined == ("test2",)


def test_classic_no_nat_and_test2_answered_is_open_internet() -> None:
    result = classic(OPEN_LOCAL, test1=t1(mapped=OPEN_LOCAL), test2=t2())
    assert result == ClassicResult(NatType.OPEN_INTERNET, mapped=OPEN_LOCAL, local=OPEN_LOCAL)


def test_classic_nat_and_test2_answered_is_full_cone() -> None:
    result = classic(test1=t1(), test2=t2())
    assert result == ClassicResult(NatType.FULL_CONE, mapped=MAPPED, local=LOCAL)


def test_classic_no_nat_seen_through_ipv4_mapped_local() -> None:
    local = ("::ffff:203.0.113.5", 50000)
    result = classic(local, test1=t1(mapped=OPEN_LOCAL), test2=t2())
    assert result.nat_type is NatType.OPEN_INTERNET


def test_classic_test2_answered_from_response_origin_when_source_unrecorded() -> None:
    result = classic(test1=t1(), test2=t2(source=None, response_origin=ALT))
    assert result.nat_type is NatType.FULL_CONE


def test_classic_change_request_rejected_with_420() -> None:
    result = classic(test1=t1(), test2=t2(ERROR, source=PRIMARY, error_code=420))
    assert unknown_code(result) is ReasonCode.CHANGE_REQUEST_REJECTED
    assert why(result) == (
        "the server answered Test II (change IP and port) with error 420: it does not "
        "carry out CHANGE-REQUEST, so it cannot test the NAT's filtering"
    )
    assert result.undetermined == ("test2",)


def test_classic_test2_invalid() -> None:
    result = classic(test1=t1(), test2=t2(INVALID))
    assert unknown_code(result) is ReasonCode.INVALID_RESPONSE


@pytest.mark.parametrize(
    ("outcome", "source"),
    [
        (OK, PRIMARY),  # the transport did not check; the verdict does
        (BAD_SOURCE, PRIMARY),
        (OK, ALT_IP_PRIMARY_PORT),  # changed the IP only
        (OK, PRIMARY_IP_ALT_PORT),  # changed the port only
        (BAD_SOURCE, ALT),  # the transport says wrong; the verdict believes it
    ],
)
def test_classic_change_request_ignored_is_unknown_not_full_cone(
    outcome: ProbeOutcome, source: Endpoint
) -> None:
    result = classic(test1=t1(), test2=t2(outcome, source=source))
    expected = (
        ReasonCode.UNEXPECTED_RESPONSE_SOURCE
        if source == ALT
        else ReasonCode.CHANGE_REQUEST_IGNORED
    )
    assert unknown_code(result) is expected


def test_classic_change_request_ignored_reason() -> None:
    result = classic(test1=t1(), test2=t2(source=PRIMARY))
    assert why(result) == (
        "the reply to Test II (change IP and port) came from 198.51.100.1:3478 instead of "
        "198.51.100.2:3479: the server ignored CHANGE-REQUEST, so the reply says nothing "
        "about the NAT's filtering"
    )


def test_classic_bad_source_without_address_is_change_request_ignored() -> None:
    result = classic(test1=t1(), test2=t2(BAD_SOURCE, source=None))
    assert unknown_code(result) is ReasonCode.CHANGE_REQUEST_IGNORED


def test_classic_test2_from_a_third_address() -> None:
    result = classic(test1=t1(), test2=t2(source=("192.0.2.99", 9999)))
    assert unknown_code(result) is ReasonCode.UNEXPECTED_RESPONSE_SOURCE
    assert "neither the primary address" in (why(result) or "")


def test_classic_test2_source_not_recorded() -> None:
    result = classic(test1=t1(), test2=t2(source=None))
    assert unknown_code(result) is ReasonCode.RESPONSE_SOURCE_UNKNOWN


# --------------------------------------------------------------------------- classic: Test I'


def test_classic_test2_silent_asks_for_test1_alt() -> None:
    result = classic(test1=t1(), test2=timeout("test2", change_ip=True, change_port=True))
    assert unknown_code(result) is ReasonCode.TEST_NOT_RUN
    assert result.undetermined == ("test1_alt",)


@pytest.mark.parametrize("local", [LOCAL, OPEN_LOCAL])
def test_classic_alternate_unreachable_is_unknown_not_filtering(local: Endpoint) -> None:
    result = classic(
        local,
        test1=t1(mapped=MAPPED if local == LOCAL else OPEN_LOCAL),
        test2=timeout("test2"),
        test1_alt=timeout("test1_alt", ALT),
    )
    assert unknown_code(result) is ReasonCode.ALTERNATE_UNREACHABLE
    assert why(result) == (
        "no response from the server's alternate address 198.51.100.2:3479 to Test I to "
        "the alternate address, although the primary address answered: the alternate is "
        "unreachable or advertised wrongly, so a missing reply cannot be blamed on the NAT"
    )


def test_classic_test1_alt_error_is_not_reachable() -> None:
    result = classic(
        test1=t1(), test2=timeout("test2"), test1_alt=t1_alt(None, ERROR, error_code=500)
    )
    assert unknown_code(result) is ReasonCode.SERVER_ERROR_RESPONSE


def test_classic_test1_alt_answered_from_elsewhere() -> None:
    result = classic(test1=t1(), test2=timeout("test2"), test1_alt=t1_alt(source=PRIMARY))
    assert unknown_code(result) is ReasonCode.UNEXPECTED_RESPONSE_SOURCE


def test_classic_no_nat_filtered_is_symmetric_udp_firewall() -> None:
    result = classic(
        OPEN_LOCAL,
        test1=t1(mapped=OPEN_LOCAL),
        test2=timeout("test2"),
        test1_alt=t1_alt(OPEN_LOCAL),
    )
    assert result.nat_type is NatType.SYMMETRIC_UDP_FIREWALL
    assert why(result) is None


def test_classic_no_nat_then_mapped_on_alternate_is_inconsistent() -> None:
    result = classic(
        OPEN_LOCAL,
        test1=t1(mapped=OPEN_LOCAL),
        test2=timeout("test2"),
        test1_alt=t1_alt(MAPPED),
    )
    assert unknown_code(result) is ReasonCode.INCONSISTENT_OBSERVATIONS


@pytest.mark.parametrize("alt_mapped", [("203.0.113.5", 62001), ("203.0.113.6", 62000)])
def test_classic_mapping_changes_with_destination_is_symmetric(alt_mapped: Endpoint) -> None:
    result = classic(test1=t1(), test2=timeout("test2"), test1_alt=t1_alt(alt_mapped))
    assert result.nat_type is NatType.SYMMETRIC


# --------------------------------------------------------------------------- classic: Test III


def cone(**kw: Probe | None) -> ClassicResult:
    return classic(test1=t1(), test2=timeout("test2"), test1_alt=t1_alt(), **kw)


def test_classic_cone_asks_for_test3() -> None:
    result = cone()
    assert unknown_code(result) is ReasonCode.TEST_NOT_RUN
    assert result.undetermined == ("test3",)


def test_classic_test3_silent_is_port_restricted_cone() -> None:
    assert cone(test3=timeout("test3", change_port=True)).nat_type is (NatType.PORT_RESTRICTED_CONE)


def test_classic_test3_answered_is_restricted_cone() -> None:
    assert cone(test3=t3()).nat_type is NatType.RESTRICTED_CONE


def test_classic_test3_from_primary_is_change_request_ignored() -> None:
    result = cone(test3=t3(source=PRIMARY))
    assert unknown_code(result) is ReasonCode.CHANGE_REQUEST_IGNORED
    assert result.undetermined == ("test3",)


def test_classic_test3_rejected() -> None:
    result = cone(test3=t3(ERROR, source=PRIMARY, error_code=420))
    assert unknown_code(result) is ReasonCode.CHANGE_REQUEST_REJECTED
    assert "error 420" in (why(result) or "")


def test_classic_test3_from_alternate_ip_is_unexpected() -> None:
    result = cone(test3=t3(source=ALT))
    assert unknown_code(result) is ReasonCode.UNEXPECTED_RESPONSE_SOURCE


# --------------------------------------------------------------------------- RFC 5780 mapping

M2: Endpoint = ("203.0.113.5", 62001)
M3: Endpoint = ("203.0.113.5", 62002)


def test_mapping_behavior_without_test1() -> None:
    result = mapping_behavior(None, M2, M3, LOCAL)
    assert unknown_code(result) is ReasonCode.NO_MAPPED_ADDRESS
    assert result.undetermined == ("test1",)


def test_mapping_behavior_no_nat_is_endpoint_independent() -> None:
    assert mapping_behavior(OPEN_LOCAL, None, None, OPEN_LOCAL) == BehaviorResult(EI)


def test_mapping_behavior_missing_test2_is_unknown_not_endpoint_independent() -> None:
    result = mapping_behavior(MAPPED, None, None, LOCAL)
    assert unknown_code(result) is ReasonCode.NO_MAPPED_ADDRESS
    assert result.undetermined == ("test2",)


def test_mapping_behavior_same_mapping_is_endpoint_independent() -> None:
    assert mapping_behavior(MAPPED, MAPPED, None, LOCAL).behavior is EI


def test_mapping_behavior_missing_test3() -> None:
    result = mapping_behavior(MAPPED, M2, None, LOCAL)
    assert unknown_code(result) is ReasonCode.NO_MAPPED_ADDRESS
    assert result.undetermined == ("test3",)


def test_mapping_behavior_address_dependent() -> None:
    assert mapping_behavior(MAPPED, M2, M2, LOCAL).behavior is AD


def test_mapping_behavior_address_and_port_dependent() -> None:
    assert mapping_behavior(MAPPED, M2, M3, LOCAL).behavior is APD


def m_test2(mapped: Endpoint | None = MAPPED, outcome: ProbeOutcome = OK, **kw: object) -> Probe:
    fields: dict[str, object] = {"source": ALT_IP_PRIMARY_PORT, "mapped": mapped}
    fields.update(kw)
    return Probe(pid("test2", Family.MAPPING), ALT_IP_PRIMARY_PORT, outcome, **fields)  # type: ignore[arg-type]


def m_test3(mapped: Endpoint | None = M2, outcome: ProbeOutcome = OK) -> Probe:
    return Probe(pid("test3", Family.MAPPING), ALT, outcome, mapped=mapped, source=ALT)


def mapping(local: Endpoint = LOCAL, **probes: Probe | None) -> BehaviorResult:
    return mapping_verdict(MappingObservations(local, **probes))


def test_mapping_verdict_without_test1() -> None:
    assert unknown_code(mapping()) is ReasonCode.TEST_NOT_RUN


def test_mapping_verdict_test1_timeout() -> None:
    assert unknown_code(mapping(test1=timeout("test1"))) is ReasonCode.NO_RESPONSE_FROM_SERVER


def test_mapping_verdict_test1_error() -> None:
    result = mapping(test1=t1(outcome=ERROR, mapped=None, error_code=400))
    assert unknown_code(result) is ReasonCode.SERVER_ERROR_RESPONSE


def test_mapping_verdict_no_nat_needs_no_alternate() -> None:
    result = mapping(OPEN_LOCAL, test1=t1(mapped=OPEN_LOCAL, other=None))
    assert result.behavior is EI


def test_mapping_verdict_without_alternate() -> None:
    result = mapping(test1=t1(other=None))
    assert unknown_code(result) is ReasonCode.NO_ALTERNATE_ADDRESS


def test_mapping_verdict_alternate_same_ip() -> None:
    result = mapping(test1=t1(other=(SERVER_IP, 3479)))
    assert unknown_code(result) is ReasonCode.ALTERNATE_SAME_IP


def test_mapping_verdict_asks_for_test2() -> None:
    result = mapping(test1=t1())
    assert unknown_code(result) is ReasonCode.TEST_NOT_RUN
    assert result.undetermined == ("test2",)


def test_mapping_verdict_test2_timeout_is_alternate_unreachable() -> None:
    result = mapping(test1=t1(), test2=timeout("test2", ALT_IP_PRIMARY_PORT))
    assert unknown_code(result) is ReasonCode.ALTERNATE_UNREACHABLE


def test_mapping_verdict_test2_invalid() -> None:
    result = mapping(test1=t1(), test2=m_test2(outcome=INVALID))
    assert unknown_code(result) is ReasonCode.INVALID_RESPONSE


def test_mapping_verdict_endpoint_independent_needs_no_alternate_port() -> None:
    result = mapping(test1=t1(other=(ALT_IP, 3478)), test2=m_test2())
    assert result.behavior is EI


def test_mapping_verdict_dependent_without_alternate_port_is_unknown() -> None:
    result = mapping(test1=t1(other=(ALT_IP, 3478)), test2=m_test2(M2))
    assert unknown_code(result) is ReasonCode.ALTERNATE_SAME_PORT
    assert result.undetermined == ("test3",)


def test_mapping_verdict_asks_for_test3() -> None:
    result = mapping(test1=t1(), test2=m_test2(M2))
    assert unknown_code(result) is ReasonCode.TEST_NOT_RUN
    assert result.undetermined == ("test3",)


def test_mapping_verdict_test3_timeout() -> None:
    result = mapping(test1=t1(), test2=m_test2(M2), test3=m_test3(None, TIMEOUT))
    assert unknown_code(result) is ReasonCode.ALTERNATE_UNREACHABLE


def test_mapping_verdict_test3_invalid() -> None:
    result = mapping(test1=t1(), test2=m_test2(M2), test3=m_test3(None, INVALID))
    assert unknown_code(result) is ReasonCode.INVALID_RESPONSE


def test_mapping_verdict_address_dependent() -> None:
    assert mapping(test1=t1(), test2=m_test2(M2), test3=m_test3(M2)).behavior is AD


def test_mapping_verdict_address_and_port_dependent() -> None:
    assert mapping(test1=t1(), test2=m_test2(M2), test3=m_test3(M3)).behavior is APD


# --------------------------------------------------------------------------- RFC 5780 filtering


def filtering(**probes: Probe | None) -> BehaviorResult:
    return filtering_verdict(FilteringObservations(LOCAL, **probes))


def test_filtering_without_test1() -> None:
    assert unknown_code(filtering()) is ReasonCode.TEST_NOT_RUN


def test_filtering_test1_timeout() -> None:
    result = filtering(test1=timeout("test1"))
    assert unknown_code(result) is ReasonCode.NO_RESPONSE_FROM_SERVER


def test_filtering_test1_bad_source() -> None:
    result = filtering(test1=t1(outcome=BAD_SOURCE))
    assert unknown_code(result) is ReasonCode.UNEXPECTED_RESPONSE_SOURCE


@pytest.mark.parametrize(
    ("other", "code"),
    [
        (None, ReasonCode.NO_ALTERNATE_ADDRESS),
        ((SERVER_IP, 3479), ReasonCode.ALTERNATE_SAME_IP),
        ((ALT_IP, 3478), ReasonCode.ALTERNATE_SAME_PORT),
    ],
)
def test_filtering_needs_a_capable_server(other: Endpoint | None, code: ReasonCode) -> None:
    # Test II "answered" makes no difference: the server was never shown capable.
    result = filtering(test1=t1(other=other), test2=t2())
    assert unknown_code(result) is code


def test_filtering_asks_for_test2() -> None:
    result = filtering(test1=t1())
    assert result.undetermined == ("test2",)


def test_filtering_test2_answered_is_endpoint_independent() -> None:
    assert filtering(test1=t1(), test2=t2()) == BehaviorResult(EI)


def test_filtering_test2_rejected() -> None:
    result = filtering(test1=t1(), test2=t2(ERROR, error_code=420))
    assert unknown_code(result) is ReasonCode.CHANGE_REQUEST_REJECTED


def test_filtering_test2_ignored() -> None:
    result = filtering(test1=t1(), test2=t2(source=PRIMARY))
    assert unknown_code(result) is ReasonCode.CHANGE_REQUEST_IGNORED


def test_filtering_test2_silent_asks_to_prove_the_alternate() -> None:
    result = filtering(test1=t1(), test2=timeout("test2"))
    assert result.undetermined == ("test1_alt",)


def test_filtering_alternate_unreachable() -> None:
    result = filtering(test1=t1(), test2=timeout("test2"), test1_alt=timeout("test1_alt", ALT))
    assert unknown_code(result) is ReasonCode.ALTERNATE_UNREACHABLE


def test_filtering_alternate_error_is_not_reachable() -> None:
    result = filtering(
        test1=t1(), test2=timeout("test2"), test1_alt=t1_alt(None, ERROR, error_code=500)
    )
    assert unknown_code(result) is ReasonCode.SERVER_ERROR_RESPONSE


def proven(**kw: Probe | None) -> BehaviorResult:
    return filtering(test1=t1(), test2=timeout("test2"), test1_alt=t1_alt(), **kw)


def test_filtering_asks_for_test3() -> None:
    assert proven().undetermined == ("test3",)


def test_filtering_test3_silent_is_address_and_port_dependent() -> None:
    assert proven(test3=timeout("test3", change_port=True)).behavior is APD


def test_filtering_test3_answered_is_address_dependent() -> None:
    assert proven(test3=t3()).behavior is AD


def test_filtering_test3_ignored() -> None:
    result = proven(test3=t3(source=PRIMARY))
    assert unknown_code(result) is ReasonCode.CHANGE_REQUEST_IGNORED


def test_filtering_test3_rejected() -> None:
    result = proven(test3=t3(ERROR, error_code=420))
    assert unknown_code(result) is ReasonCode.CHANGE_REQUEST_REJECTED


# --------------------------------------------------------------------------- hairpinning


def test_hairpinning_without_mapped_address() -> None:
    result = hairpinning(None, LOCAL, True)
    assert result.hairpinning is None
    assert result.reason_code is ReasonCode.NO_MAPPED_ADDRESS


def test_hairpinning_without_nat_does_not_apply() -> None:
    result = hairpinning(OPEN_LOCAL, OPEN_LOCAL, True)
    assert result.hairpinning is None
    assert result.reason_code is ReasonCode.NO_NAT


def test_hairpinning_not_run() -> None:
    result = hairpinning(MAPPED, LOCAL, None)
    assert (result.hairpinning, result.reason_code) == (None, ReasonCode.TEST_NOT_RUN)
    assert result.undetermined == ("send",)


@pytest.mark.parametrize("received", [True, False])
def test_hairpinning_result(received: bool) -> None:
    assert hairpinning(MAPPED, LOCAL, received) == HairpinResult(received)


def hairpin(**probes: Probe | None) -> HairpinResult:
    return hairpin_verdict(HairpinObservations(LOCAL, **probes))


def test_hairpin_verdict_without_test1() -> None:
    assert hairpin().reason_code is ReasonCode.TEST_NOT_RUN


def test_hairpin_verdict_test1_timeout() -> None:
    assert hairpin(test1=timeout("test1")).reason_code is ReasonCode.NO_RESPONSE_FROM_SERVER


def test_hairpin_verdict_test1_error() -> None:
    result = hairpin(test1=t1(outcome=ERROR, mapped=None))
    assert result.reason_code is ReasonCode.SERVER_ERROR_RESPONSE


@pytest.mark.parametrize(("outcome", "expected"), [(OK, True), (TIMEOUT, False)])
def test_hairpin_verdict(outcome: ProbeOutcome, expected: bool) -> None:
    send = Probe(pid("send", Family.HAIRPIN), MAPPED, outcome)
    assert hairpin(test1=t1(), send=send).hairpinning is expected


def test_hairpin_verdict_send_not_run() -> None:
    assert hairpin(test1=t1()).undetermined == ("send",)


# --------------------------------------------------------------------------- port allocation


def test_port_allocation_without_samples() -> None:
    assert port_allocation([]) == (port_allocation([]))
    assert (port_allocation([]).preserves_port, port_allocation([]).delta) == (None, None)


def test_port_allocation_preserved() -> None:
    result = port_allocation([(50000, 50000), (50001, 50001)])
    assert (result.preserves_port, result.delta) == (True, None)


@pytest.mark.parametrize(
    ("mapped_ports", "delta"),
    [
        ([40000, 40001, 40002], 1),
        ([40010, 40008, 40006], -2),
        ([65533, 65535, 1], 2),  # wraps around
        ([40000, 40001, 40005], None),  # inconsistent
        ([40000], None),  # one sample has no step
        ([50000, 40001, 40002], None),  # first preserved, then not: no single step
    ],
)
def test_port_allocation_not_preserved(mapped_ports: list[int], delta: int | None) -> None:
    pairs = [(50000 + i * 7, port) for i, port in enumerate(mapped_ports)]
    result = port_allocation(pairs)
    assert (result.preserves_port, result.delta) == (False, delta)


# --------------------------------------------------------------------------- lifetime


def test_lifetime_not_run() -> None:
    result = binding_lifetime([])
    assert (result.lower_s, result.upper_s, result.keepalive_s) == (None, None, None)
    assert result.reason_code is ReasonCode.TEST_NOT_RUN


def test_lifetime_negative_wait_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        binding_lifetime([(-1.0, True)])


def test_lifetime_bounded() -> None:
    result = binding_lifetime([(15, True), (30, True), (60, False), (45, True)])
    assert (result.lower_s, result.upper_s, result.keepalive_s) == (45, 60, 22)
    assert result.consistent and why(result) is None


def test_lifetime_long_bindings_cap_the_keepalive() -> None:
    result = binding_lifetime([(300, True)])
    assert (result.lower_s, result.upper_s, result.keepalive_s) == (300, None, MAX_KEEPALIVE_S)


def test_lifetime_expired_at_every_wait() -> None:
    result = binding_lifetime([(15, False), (30, False)])
    assert (result.lower_s, result.upper_s, result.keepalive_s) == (None, 15, None)
    assert result.reason_code is ReasonCode.LIFETIME_EXPIRED_AT_EVERY_WAIT
    assert result.consistent


def test_lifetime_inconsistent_uses_the_waits_below_the_first_death() -> None:
    result = binding_lifetime([(15, True), (30, False), (60, True)])
    assert (result.lower_s, result.upper_s, result.keepalive_s) == (15, 30, 7)
    assert not result.consistent
    assert result.reason_code is ReasonCode.LIFETIME_INCONSISTENT
    assert why(result) == (
        "the binding was gone after 30 s yet survived 60 s: packets were lost or the NAT "
        "expires bindings irregularly; the bounds use only the waits under 30 s"
    )


def test_lifetime_inconsistent_without_lower_bound() -> None:
    result = binding_lifetime([(5, False), (60, True)])
    assert (result.lower_s, result.keepalive_s, result.consistent) == (None, None, False)
    assert result.reason_code is ReasonCode.LIFETIME_INCONSISTENT


def test_lifetime_too_short_for_a_keepalive() -> None:
    result = binding_lifetime([(1, True), (3, False)])
    assert (result.lower_s, result.keepalive_s) == (1, None)
    assert result.reason_code is ReasonCode.LIFETIME_TOO_SHORT


# --------------------------------------------------------------------------- derive_nat_type


@pytest.mark.parametrize(
    ("mapping", "filtering", "no_nat", "expected"),
    [
        (EI, EI, True, NatType.OPEN_INTERNET),
        (UNK, EI, True, NatType.OPEN_INTERNET),
        (EI, AD, True, NatType.SYMMETRIC_UDP_FIREWALL),
        (EI, APD, True, NatType.SYMMETRIC_UDP_FIREWALL),
        (UNK, APD, True, NatType.SYMMETRIC_UDP_FIREWALL),
        (EI, UNK, True, NatType.UNKNOWN),
        (AD, EI, True, NatType.UNKNOWN),  # a dependent mapping without a NAT: contradiction
        (EI, EI, False, NatType.FULL_CONE),
        (EI, AD, False, NatType.RESTRICTED_CONE),
        (EI, APD, False, NatType.PORT_RESTRICTED_CONE),
        (EI, UNK, False, NatType.UNKNOWN),
        (AD, EI, False, NatType.SYMMETRIC),
        (AD, AD, False, NatType.SYMMETRIC),
        (APD, APD, False, NatType.SYMMETRIC),
        (APD, UNK, False, NatType.SYMMETRIC),
        (UNK, EI, False, NatType.UNKNOWN),
        (EI, EI, None, NatType.UNKNOWN),
    ],
)
def test_derive_nat_type(
    mapping: Behavior, filtering: Behavior, no_nat: bool | None, expected: NatType
) -> None:
    assert derive_nat_type(mapping, filtering, no_nat, True) is expected


def test_derive_nat_type_udp_blocked_and_unreached() -> None:
    assert derive_nat_type(UNK, UNK, None, False) is NatType.UDP_BLOCKED
    assert derive_nat_type(EI, EI, False, None) is NatType.UNKNOWN


# --------------------------------------------------------------------------- rfc5780_verdict


def test_rfc5780_not_run_is_unknown_reachability() -> None:
    result = rfc5780_verdict(MappingObservations(LOCAL), FilteringObservations(LOCAL))
    assert result.udp_reachable is None
    assert result.nat_type is NatType.UNKNOWN
    assert result.hairpinning.reason_code is ReasonCode.TEST_NOT_RUN
    assert result.local == LOCAL
    assert result.problem is not None and result.problem.code is ReasonCode.TEST_NOT_RUN


def test_rfc5780_all_silent_is_udp_blocked() -> None:
    result = rfc5780_verdict(
        MappingObservations(LOCAL, timeout("test1")),
        FilteringObservations(LOCAL, timeout("test1")),
    )
    assert (result.udp_reachable, result.nat_type) == (False, NatType.UDP_BLOCKED)
    assert result.problem is None


def test_rfc5780_error_reply_shows_udp_gets_through() -> None:
    result = rfc5780_verdict(
        MappingObservations(LOCAL, t1(outcome=ERROR, mapped=None)),
        FilteringObservations(LOCAL, timeout("test1")),
    )
    assert (result.udp_reachable, result.no_nat, result.nat_type) == (True, None, NatType.UNKNOWN)


def test_rfc5780_families_disagree_on_nat() -> None:
    result = rfc5780_verdict(
        MappingObservations(OPEN_LOCAL, t1(mapped=OPEN_LOCAL)),
        FilteringObservations(LOCAL, t1(), t2()),
    )
    assert result.no_nat is None
    assert result.mapping.behavior is EI and result.filtering.behavior is EI
    assert result.problem is not None
    assert (result.problem.code, say(result.problem)) == (
        ReasonCode.INCONSISTENT_OBSERVATIONS,
        "the mapping and filtering tests disagree on whether there is a NAT",
    )


def test_rfc5780_dependent_mapping_without_nat_is_a_contradiction() -> None:
    r = Rfc5780Result(BehaviorResult(AD), BehaviorResult(EI), HairpinResult(None), True, True)
    assert r.nat_type is NatType.UNKNOWN
    assert r.problem is not None
    assert (r.problem.code, say(r.problem)) == (
        ReasonCode.INCONSISTENT_OBSERVATIONS,
        "mapping address-dependent cannot happen without a NAT",
    )


def test_rfc5780_full_run_with_hairpin() -> None:
    result = rfc5780_verdict(
        MappingObservations(LOCAL, t1(), m_test2()),
        FilteringObservations(LOCAL, t1(), t2()),
        HairpinObservations(LOCAL, t1(), Probe(pid("send", Family.HAIRPIN), MAPPED, OK)),
    )
    assert result.nat_type is NatType.FULL_CONE
    assert result.hairpinning.hairpinning is True
    assert (result.mapped, result.local) == (MAPPED, LOCAL)


# --------------------------------------------------------------------------- combine


def r5780(
    mapping: Behavior = EI,
    filtering: Behavior = APD,
    no_nat: bool | None = False,
    udp_reachable: bool | None = True,
    mapped: Endpoint | None = MAPPED,
    local: Endpoint | None = LOCAL,
) -> Rfc5780Result:
    def behaviour(b: Behavior) -> BehaviorResult:
        return BehaviorResult(UNK, RFC5780_ALT_SILENT) if b is UNK else BehaviorResult(b)

    return Rfc5780Result(
        behaviour(mapping),
        behaviour(filtering),
        HairpinResult(False),
        no_nat,
        udp_reachable,
        mapped,
        local,
    )


#: The reason the builders give an unknown RFC 5780 behaviour, and its sentence.
RFC5780_ALT_SILENT = Finding(
    Why.ALTERNATE_UNREACHABLE, ProbeId(Family.FILTERING, ProbeTest.TEST1_ALT), at=ALT
)
RFC5780_ALT_SILENT_TEXT = (
    "no response from the server's alternate address 198.51.100.2:3479 to filtering Test I "
    "to the alternate address, although the primary address answered: the alternate is "
    "unreachable or advertised wrongly, so a missing reply cannot be blamed on the NAT"
)
CLASSIC_SILENT = Finding(Why.NO_RESPONSE, ProbeId(Family.CLASSIC, ProbeTest.TEST1), at=PRIMARY)
CLASSIC_SILENT_TEXT = (
    "no response from 198.51.100.1:3478 to Test I: UDP is blocked on this network, "
    "or the server is down"
)


def cr(nat: NatType, finding: Finding | None = None) -> ClassicResult:
    return ClassicResult(nat, finding, (), MAPPED, LOCAL)


def test_the_builders_reasons() -> None:
    assert say(RFC5780_ALT_SILENT) == RFC5780_ALT_SILENT_TEXT
    assert say(CLASSIC_SILENT) == CLASSIC_SILENT_TEXT


def test_combine_agreement() -> None:
    verdict = combine(cr(NatType.PORT_RESTRICTED_CONE), r5780())
    assert verdict.nat_type is NatType.PORT_RESTRICTED_CONE
    assert (why(verdict), verdict.reason_code, notes(verdict)) == (None, None, ())
    assert (verdict.mapping, verdict.filtering, verdict.hairpinning) == (EI, APD, False)
    assert not verdict.inconclusive


def test_combine_both_unknown_reports_the_classic_reason() -> None:
    classic = cr(NatType.UNKNOWN, Finding(Why.NO_ALTERNATE))
    verdict = combine(classic, r5780(filtering=UNK))
    assert verdict.inconclusive
    assert verdict.reason_code is ReasonCode.NO_ALTERNATE_ADDRESS
    assert (why(verdict) or "").startswith("server has no alternate address:")
    assert notes(verdict) == (f"RFC 5780 tests: {RFC5780_ALT_SILENT_TEXT}",)


def test_combine_both_unknown_same_reason_adds_no_note() -> None:
    verdict = combine(cr(NatType.UNKNOWN, RFC5780_ALT_SILENT), r5780(filtering=UNK))
    assert notes(verdict) == ()


def test_combine_both_unknown_classic_not_run_uses_the_rfc5780_reason() -> None:
    classic = cr(NatType.UNKNOWN, Finding(Why.NOT_RUN, ProbeId(Family.CLASSIC, ProbeTest.TEST1)))
    verdict = combine(classic, r5780(filtering=UNK))
    assert verdict.reason_code is ReasonCode.ALTERNATE_UNREACHABLE


def test_combine_classic_unknown_takes_rfc5780_with_a_note() -> None:
    silent = ProbeId(Family.CLASSIC, ProbeTest.TEST1_ALT)
    classic = cr(NatType.UNKNOWN, Finding(Why.ALTERNATE_UNREACHABLE, silent, at=ALT))
    verdict = combine(classic, r5780())
    assert verdict.nat_type is NatType.PORT_RESTRICTED_CONE
    assert notes(verdict) == (
        "the classic RFC 3489 test was inconclusive: no response from the server's "
        "alternate address 198.51.100.2:3479 to Test I to the alternate address, although "
        "the primary address answered: the alternate is unreachable or advertised wrongly, "
        "so a missing reply cannot be blamed on the NAT",
    )


def test_combine_rfc5780_unknown_takes_classic_with_a_note() -> None:
    verdict = combine(cr(NatType.RESTRICTED_CONE), r5780(filtering=UNK))
    assert verdict.nat_type is NatType.RESTRICTED_CONE
    assert notes(verdict) == (f"the RFC 5780 tests were inconclusive: {RFC5780_ALT_SILENT_TEXT}",)


def test_combine_full_cone_with_dependent_mapping_is_symmetric() -> None:
    verdict = combine(cr(NatType.FULL_CONE), r5780(mapping=AD, filtering=EI))
    assert verdict.nat_type is NatType.SYMMETRIC
    assert notes(verdict) == (
        "the classic RFC 3489 test reports full-cone without testing the mapping; the RFC "
        "5780 test found address-dependent mapping, so the NAT is symmetric",
    )


@pytest.mark.parametrize(
    ("classic_type", "rfc"),
    [
        (NatType.RESTRICTED_CONE, r5780()),
        (NatType.PORT_RESTRICTED_CONE, r5780(mapping=AD, filtering=UNK)),
        (NatType.SYMMETRIC, r5780(filtering=EI, mapping=AD)),
        (NatType.OPEN_INTERNET, r5780(no_nat=False, filtering=EI)),
        (NatType.UDP_BLOCKED, r5780(filtering=UNK, mapping=UNK, no_nat=None)),
        (NatType.FULL_CONE, r5780(udp_reachable=False)),
    ],
)
def test_combine_disagreement_is_unknown(classic_type: NatType, rfc: Rfc5780Result) -> None:
    verdict = combine(cr(classic_type), rfc)
    assert verdict.inconclusive
    assert verdict.reason_code is ReasonCode.METHODS_DISAGREE
    assert (why(verdict) or "").startswith(f"the classic RFC 3489 test says {classic_type}")


def test_combine_disagreement_reason_names_both() -> None:
    verdict = combine(cr(NatType.RESTRICTED_CONE), r5780())
    assert why(verdict) == (
        "the classic RFC 3489 test says restricted-cone but the RFC 5780 tests found "
        "port-restricted-cone (mapping endpoint-independent, filtering "
        "address-and-port-dependent): the NAT behaved differently on different sockets "
        "or changed during the test, so no single type fits"
    )


def test_combine_disagreement_with_silent_rfc5780() -> None:
    verdict = combine(cr(NatType.FULL_CONE), r5780(udp_reachable=False))
    assert "no reply to any RFC 5780 Test I" in (why(verdict) or "")


def test_combine_udp_blocked_both() -> None:
    classic = cr(NatType.UDP_BLOCKED, CLASSIC_SILENT)
    verdict = combine(classic, r5780(UNK, UNK, None, False, None, None))
    assert verdict.nat_type is NatType.UDP_BLOCKED
    assert (why(verdict), verdict.reason_code) == (
        CLASSIC_SILENT_TEXT,
        ReasonCode.NO_RESPONSE_FROM_SERVER,
    )
    assert not verdict.inconclusive


def test_combine_udp_blocked_with_rfc5780_not_run() -> None:
    classic = cr(NatType.UDP_BLOCKED, CLASSIC_SILENT)
    verdict = combine(classic, r5780(UNK, UNK, None, None))
    assert verdict.nat_type is NatType.UDP_BLOCKED
    assert why(verdict) == CLASSIC_SILENT_TEXT


def test_combine_alg_suspected_when_mapped_addresses_differ() -> None:
    rewritten = Probe(pid("test1"), PRIMARY, OK, mapped=MAPPED, legacy_mapped=LOCAL)
    honest = Probe(pid("test1", Family.MAPPING), PRIMARY, OK, mapped=MAPPED, legacy_mapped=MAPPED)
    verdict = combine(cr(NatType.PORT_RESTRICTED_CONE), r5780(), [rewritten, honest])
    assert verdict.alg_suspected
    assert verdict.probes == (rewritten, honest)
    assert notes(verdict) == (
        "MAPPED-ADDRESS 192.168.1.10:50000 differs from XOR-MAPPED-ADDRESS "
        "203.0.113.5:62000 in the reply to classic/test1: a router ALG rewrites addresses "
        "inside packets, which often breaks SIP and STUN (turn off 'SIP ALG' on the router)",
    )


def test_combine_no_alg_when_only_one_mapped_address() -> None:
    probe = Probe(pid("test1"), PRIMARY, OK, mapped=MAPPED)
    assert not combine(cr(NatType.PORT_RESTRICTED_CONE), r5780(), [probe]).alg_suspected


def test_combine_cgnat_from_the_mapped_address() -> None:
    verdict = combine(cr(NatType.PORT_RESTRICTED_CONE), r5780(mapped=("100.64.1.2", 4000)))
    assert verdict.cgnat_suspected
    assert "100.64.0.0/10 (RFC 6598)" in notes(verdict)[0]


def test_combine_cgnat_from_the_local_address() -> None:
    verdict = combine(cr(NatType.PORT_RESTRICTED_CONE), r5780(local=("100.127.255.1", 5000)))
    assert verdict.cgnat_suspected
    assert "carrier-grade NAT" in notes(verdict)[0]


def test_combine_no_cgnat_just_outside_the_range() -> None:
    verdict = combine(cr(NatType.PORT_RESTRICTED_CONE), r5780(mapped=("100.128.0.1", 4000)))
    assert not verdict.cgnat_suspected
    assert notes(verdict) == ()


def test_combine_private_mapped_address_note() -> None:
    verdict = combine(cr(NatType.PORT_RESTRICTED_CONE), r5780(mapped=("10.0.0.7", 4000)))
    assert not verdict.cgnat_suspected
    assert notes(verdict) == (
        "the mapped address 10.0.0.7:4000 is private: the server is inside a private "
        "network, so the result describes only the path to it",
    )


@pytest.mark.parametrize(
    ("mapped", "private"),
    [(("fd00::7", 4000), True), (("2001:db8::7", 4000), False), (("stun.invalid", 1), False)],
)
def test_combine_private_mapped_address_ipv6(mapped: Endpoint, private: bool) -> None:
    verdict = combine(cr(NatType.PORT_RESTRICTED_CONE), r5780(mapped=mapped))
    assert bool(notes(verdict)) is private


def test_combine_uses_classic_addresses_when_rfc5780_has_none() -> None:
    verdict = combine(cr(NatType.PORT_RESTRICTED_CONE), r5780(mapped=None, local=None))
    assert (verdict.mapped_address, verdict.local_address) == (MAPPED, LOCAL)


def test_every_nat_type_has_a_meaning() -> None:
    assert set(MEANING) == set(NatType)
    assert "TURN relay" in MEANING[NatType.SYMMETRIC]
    assert all(text.count(". ") == 0 and text.endswith(".") for text in MEANING.values())


def test_enum_values_are_the_json_strings() -> None:
    assert [t.value for t in NatType] == [
        "open-internet",
        "full-cone",
        "restricted-cone",
        "port-restricted-cone",
        "symmetric",
        "symmetric-udp-firewall",
        "udp-blocked",
        "unknown",
    ]
    assert [b.value for b in Behavior] == [
        "endpoint-independent",
        "address-dependent",
        "address-and-port-dependent",
        "unknown",
    ]
    assert [o.value for o in ProbeOutcome] == ["ok", "timeout", "error", "bad-source", "invalid"]


# --------------------------------------------------------------------------- classify


def test_classify_collects_probes_ports_and_lifetime() -> None:
    verdict = classify(
        ClassicObservations(LOCAL, t1(), timeout("test2"), t1_alt(), timeout("test3")),
        MappingObservations(LOCAL, t1(), m_test2()),
        FilteringObservations(LOCAL, t1(), timeout("test2"), t1_alt(), timeout("test3")),
        port_pairs=[(50000, 40000), (50001, 40001)],
        lifetime=[(30, True), (60, False)],
    )
    assert verdict.nat_type is NatType.PORT_RESTRICTED_CONE
    assert len(verdict.probes) == 4 + 2 + 4
    assert verdict.port_allocation is not None and verdict.port_allocation.delta == 1
    assert verdict.lifetime is not None and verdict.lifetime.keepalive_s == 15
    assert verdict.hairpinning is None


def test_classify_without_extras() -> None:
    verdict = classify(
        ClassicObservations(LOCAL), MappingObservations(LOCAL), FilteringObservations(LOCAL)
    )
    assert verdict.inconclusive
    assert (verdict.port_allocation, verdict.lifetime) == (None, None)


# --------------------------------------------------------------------------- plan: data


def test_plan_families_and_phases() -> None:
    assert set(STEPS) == set(Family)
    assert {f for phase in PHASES for f in phase} == set(Family)
    assert PHASES[-1] == (Family.PORT_ALLOCATION,)  # alone: its samples must be successive


def test_plan_port_samples_use_fresh_sockets() -> None:
    samples = STEPS[Family.PORT_ALLOCATION]
    assert [s.socket for s in samples] == list(range(PORT_SAMPLES))


def test_probe_request_record() -> None:
    step = Step(ProbeTest.TEST2, Target.PRIMARY, change_ip=True, change_port=True)
    request = ProbeRequest(Family.CLASSIC, step, PRIMARY)
    probe = request.record(OK, mapped=MAPPED, source=ALT, rtt_ms=12.5)
    assert probe == Probe(
        ProbeId(Family.CLASSIC, ProbeTest.TEST2),
        PRIMARY,
        OK,
        change_ip=True,
        change_port=True,
        mapped=MAPPED,
        source=ALT,
        rtt_ms=12.5,
    )


def named(family: Family, probe: Probe) -> Probe:
    return replace(probe, id=ProbeId(family, probe.id.test))


def test_observations_keep_the_last_record_and_ignore_foreign_names() -> None:
    first = named(Family.CLASSIC, timeout("test1"))
    again = named(Family.CLASSIC, t1())
    foreign = [named(Family.MAPPING, t1()), named(Family.HAIRPIN, t1())]
    obs = observations(Family.CLASSIC, LOCAL, [first, *foreign, again])
    assert obs == ClassicObservations(LOCAL, test1=again)


# --------------------------------------------------------------------------- plan: next_probe


def test_next_probe_classic_starts_with_test1() -> None:
    request = next_probe(Family.CLASSIC, PRIMARY, LOCAL, [])
    assert request is not None
    assert (request.name, request.target, request.step.socket) == ("classic/test1", PRIMARY, 0)


def test_next_probe_stops_when_the_verdict_is_decided() -> None:
    probes = [named(Family.CLASSIC, t1()), named(Family.CLASSIC, t2())]
    assert next_probe(Family.CLASSIC, PRIMARY, LOCAL, probes) is None


def test_next_probe_stops_when_the_server_cannot_do_the_test() -> None:
    probes = [named(Family.FILTERING, t1(other=None))]
    assert next_probe(Family.FILTERING, PRIMARY, LOCAL, probes) is None


def test_next_probe_mapping_goes_to_alternate_ip_primary_port_then_alternate() -> None:
    probes = [named(Family.MAPPING, t1())]
    request = next_probe(Family.MAPPING, PRIMARY, LOCAL, probes)
    assert request is not None and request.target == ALT_IP_PRIMARY_PORT
    probes.append(named(Family.MAPPING, m_test2(M2)))
    request = next_probe(Family.MAPPING, PRIMARY, LOCAL, probes)
    assert request is not None and (request.name, request.target) == ("mapping/test3", ALT)


def test_next_probe_filtering_change_requests() -> None:
    probes = [named(Family.FILTERING, t1())]
    request = next_probe(Family.FILTERING, PRIMARY, LOCAL, probes)
    assert request is not None
    assert (request.target, request.step.change_ip, request.step.change_port) == (
        PRIMARY,
        True,
        True,
    )


def test_next_probe_hairpin_sends_to_own_mapped_address_from_the_second_socket() -> None:
    probes = [named(Family.HAIRPIN, t1())]
    request = next_probe(Family.HAIRPIN, PRIMARY, LOCAL, probes)
    assert request is not None
    assert (request.name, request.target) == ("hairpin/send", MAPPED)
    assert (request.step.socket, request.step.expect_reply) == (1, False)


def test_next_probe_port_allocation_samples_then_stops() -> None:
    probes: list[Probe] = []
    for i in range(PORT_SAMPLES):
        request = next_probe(Family.PORT_ALLOCATION, PRIMARY, LOCAL, probes)
        assert request is not None
        assert (request.name, request.step.socket) == (f"port-allocation/sample{i}", i)
        probes.append(request.record(TIMEOUT))
    assert next_probe(Family.PORT_ALLOCATION, PRIMARY, LOCAL, probes) is None


def test_port_pairs_skip_unusable_samples() -> None:
    def sample(i: int, outcome: ProbeOutcome, local: Endpoint | None) -> Probe:
        return Probe(
            ProbeId(Family.PORT_ALLOCATION, ProbeTest.SAMPLE, i),
            PRIMARY,
            outcome,
            mapped=(MAPPED[0], 40000 + i),
            local=local,
        )

    probes = [
        sample(2, OK, ("192.168.1.10", 50002)),
        sample(0, OK, ("192.168.1.10", 50000)),
        sample(1, TIMEOUT, ("192.168.1.10", 50001)),
        sample(3, OK, None),
    ]
    assert port_pairs(probes) == [(50000, 40000), (50002, 40002)]


# --------------------------------------------------------------------------- plan: lifetime


@pytest.mark.parametrize(
    ("trials", "expected"),
    [
        ([], 15.0),
        ([(15, True)], 30.0),
        ([(0, True)], 15.0),
        ([(15, True), (30, True), (60, True), (120, True), (240, True)], 300.0),
        ([(300, True)], None),  # outlived the limit
        ([(15, True), (30, True), (60, False)], 45.0),
        ([(40, True), (45, False)], None),  # within the resolution
        ([(15, False)], 7.5),
        ([(15, False), (7.5, False), (3.75, False)], None),
        ([(15, True), (30, False), (60, True)], None),  # contradictory: stop
    ],
)
def test_next_lifetime_wait(trials: list[tuple[float, bool]], expected: float | None) -> None:
    assert next_lifetime_wait(trials) == expected


# --------------------------------------------------------------------------- whole runs

PUBLIC_IP = "203.0.113.5"


@dataclass
class FakeNetwork:
    """A NAT (or none) in front of the client, and a STUN server with up to four endpoints.

    ``mapping``/``filtering`` follow RFC 4787; ``mapping=None`` means no NAT (the host has
    ``PUBLIC_IP``) and a filtering of EI then means no firewall either.
    """

    mapping: Behavior | None = EI
    filtering: Behavior = EI
    alternate: Endpoint | None = ALT
    alternate_alive: bool = True
    honours_change: bool = True
    udp: bool = True
    hairpin: bool = False
    preserve_ports: bool = False
    next_port: int = 40000
    mappings: dict[tuple[Endpoint, object], Endpoint] = field(default_factory=dict)
    permits: set[tuple[Endpoint, Endpoint]] = field(default_factory=set)

    def external(self, local: Endpoint, dest: Endpoint) -> Endpoint:
        if self.mapping is None:
            return local
        key = {EI: None, AD: dest[0], APD: dest}[self.mapping]
        if (local, key) not in self.mappings:
            taken = {port for _, port in self.mappings.values()}
            if self.preserve_ports and local[1] not in taken:
                port = local[1]
            else:
                port, self.next_port = self.next_port, self.next_port + 1
            self.mappings[(local, key)] = (PUBLIC_IP, port)
        return self.mappings[(local, key)]

    def answers_at(self, endpoint: Endpoint) -> bool:
        if endpoint == PRIMARY:
            return True
        if self.alternate is None:
            return False
        ips = {SERVER_IP} | ({self.alternate[0]} if self.alternate_alive else set())
        return endpoint[0] in ips and endpoint[1] in {PRIMARY[1], self.alternate[1]}

    def admits(self, ext: Endpoint, src: Endpoint) -> bool:
        if self.filtering is EI:
            return True
        if self.filtering is AD:
            return any(e == ext and r[0] == src[0] for e, r in self.permits)
        return (ext, src) in self.permits

    def transact(self, local: Endpoint, request: ProbeRequest) -> Probe:
        dest = request.target
        if not self.udp or not self.answers_at(dest):
            return request.record(TIMEOUT, local=local)
        ext = self.external(local, dest)
        self.permits.add((ext, dest))
        other = None
        src = dest
        if self.alternate is not None:
            other_ip = self.alternate[0] if dest[0] == SERVER_IP else SERVER_IP
            other_port = self.alternate[1] if dest[1] == PRIMARY[1] else PRIMARY[1]
            other = (other_ip, other_port)
            if self.honours_change:
                src = (
                    other_ip if request.step.change_ip else dest[0],
                    other_port if request.step.change_port else dest[1],
                )
        if not self.answers_at(src) or not self.admits(ext, src):
            return request.record(TIMEOUT, local=local)
        return request.record(OK, mapped=ext, source=src, other_address=other, local=local)


def run(net: FakeNetwork) -> Verdict:
    host = PUBLIC_IP if net.mapping is None else LOCAL[0]
    locals_ = {family: (host, 50000 + 100 * i) for i, family in enumerate(Family)}
    probes: list[Probe] = []
    for phase in PHASES:
        for family in phase:
            local = locals_[family]
            while (request := next_probe(family, PRIMARY, local, probes)) is not None:
                sock = (local[0], local[1] + request.step.socket)
                if request.step.expect_reply:
                    probes.append(net.transact(sock, request))
                else:
                    arrived = OK if net.hairpin else TIMEOUT
                    probes.append(request.record(arrived, local=sock))
    return verdict_from_probes(locals_, probes)


@pytest.mark.parametrize(
    ("net", "nat_type", "mapping_b", "filtering_b"),
    [
        (FakeNetwork(mapping=None), NatType.OPEN_INTERNET, EI, EI),
        (FakeNetwork(mapping=None, filtering=APD), NatType.SYMMETRIC_UDP_FIREWALL, EI, APD),
        (FakeNetwork(mapping=None, filtering=AD), NatType.SYMMETRIC_UDP_FIREWALL, EI, AD),
        (FakeNetwork(), NatType.FULL_CONE, EI, EI),
        (FakeNetwork(filtering=AD), NatType.RESTRICTED_CONE, EI, AD),
        (FakeNetwork(filtering=APD), NatType.PORT_RESTRICTED_CONE, EI, APD),
        (FakeNetwork(mapping=AD, filtering=AD), NatType.SYMMETRIC, AD, AD),
        (FakeNetwork(mapping=APD, filtering=APD), NatType.SYMMETRIC, APD, APD),
        (FakeNetwork(mapping=APD, filtering=EI), NatType.SYMMETRIC, APD, EI),
    ],
)
def test_whole_run_classifies_each_nat(
    net: FakeNetwork, nat_type: NatType, mapping_b: Behavior, filtering_b: Behavior
) -> None:
    verdict = run(net)
    assert verdict.nat_type is nat_type, why(verdict)
    assert (verdict.mapping, verdict.filtering) == (mapping_b, filtering_b)
    assert why(verdict) is None
    assert verdict.classic is not None
    assert verdict.classic.nat_type in (nat_type, NatType.FULL_CONE)


def test_whole_run_udp_blocked() -> None:
    verdict = run(FakeNetwork(udp=False))
    assert verdict.nat_type is NatType.UDP_BLOCKED
    assert verdict.reason_code is ReasonCode.NO_RESPONSE_FROM_SERVER
    assert verdict.port_allocation is None


@pytest.mark.parametrize(
    ("net", "code"),
    [
        (FakeNetwork(alternate=None, filtering=APD), ReasonCode.NO_ALTERNATE_ADDRESS),
        (FakeNetwork(honours_change=False, filtering=APD), ReasonCode.CHANGE_REQUEST_IGNORED),
        (FakeNetwork(honours_change=False), ReasonCode.CHANGE_REQUEST_IGNORED),
        (FakeNetwork(alternate_alive=False), ReasonCode.ALTERNATE_UNREACHABLE),
        (FakeNetwork(alternate_alive=False, filtering=APD), ReasonCode.ALTERNATE_UNREACHABLE),
        (
            FakeNetwork(mapping=None, filtering=APD, alternate_alive=False),
            ReasonCode.ALTERNATE_UNREACHABLE,
        ),
    ],
)
def test_whole_run_incapable_server_is_unknown_never_a_type(
    net: FakeNetwork, code: ReasonCode
) -> None:
    verdict = run(net)
    assert verdict.inconclusive
    assert verdict.reason_code is code
    assert verdict.filtering is UNK


def test_whole_run_symmetric_even_when_change_request_is_ignored() -> None:
    # Mapping needs no CHANGE-REQUEST: a dependent mapping is symmetric whatever the filter.
    verdict = run(FakeNetwork(mapping=APD, filtering=APD, honours_change=False))
    assert verdict.nat_type is NatType.SYMMETRIC
    assert verdict.filtering is UNK
    assert any("inconclusive" in note for note in notes(verdict))


def test_whole_run_hairpinning_and_ports() -> None:
    verdict = run(FakeNetwork(filtering=APD, hairpin=True))
    assert verdict.hairpinning is True
    assert verdict.port_allocation is not None
    assert (verdict.port_allocation.preserves_port, verdict.port_allocation.delta) == (False, 1)
    names = [p.name for p in verdict.probes]
    assert "hairpin/send" in names and "port-allocation/sample3" in names


def test_whole_run_port_preservation() -> None:
    verdict = run(FakeNetwork(preserve_ports=True))
    assert verdict.port_allocation is not None
    assert verdict.port_allocation.preserves_port is True
    assert verdict.hairpinning is False


# --------------------------------------------------------------------------- plan: recording


def test_observe_turns_an_answer_into_a_probe() -> None:
    request = ProbeRequest(Family.FILTERING, STEPS[Family.FILTERING][1], PRIMARY)

    def seen(answer: Answer | None) -> Probe:
        return observe(request, answer, expected=ALT, local=LOCAL, attempts=2)

    silent = seen(None)
    assert (silent.outcome, silent.attempts, silent.local, silent.source) == (
        TIMEOUT, 2, LOCAL, None,
    )
    assert seen(Answer(ALT, 3.0, None)).outcome is INVALID
    error = seen(Answer(ALT, 3.0, BindingReply(False, error_code=420)))
    assert (error.outcome, error.error_code) == (ERROR, 420)
    reply = BindingReply(True, mapped=MAPPED, other_address=ALT, response_origin=ALT)
    good = seen(Answer(ALT, 3.0, reply))
    assert (good.outcome, good.mapped, good.rtt_ms, good.change_ip) == (OK, MAPPED, 3.0, True)
    assert origin_mismatch(good) is None
    wrong = seen(Answer(PRIMARY, 3.0, reply))
    assert wrong.outcome is BAD_SOURCE
    mismatch = origin_mismatch(wrong)
    assert mismatch is not None and say(mismatch) == (
        "the server's reply to filtering/test2 names 198.51.100.2:3479 as its origin "
        "(RESPONSE-ORIGIN or SOURCE-ADDRESS) but came from 198.51.100.1:3478: a server bug, "
        "or a server behind a NAT; the classifier goes by where replies really come from"
    )


def test_lifetime_check() -> None:
    check = ExtraRequest(ProbeId(Extra.LIFETIME, ProbeTest.CHECK, wait_s=15.0), PRIMARY)
    assert lifetime_check(check.record(TIMEOUT), False) is False
    assert lifetime_check(check.record(OK, source=PRIMARY), False) is True
    ignored = lifetime_check(check.record(OK, source=PRIMARY), True)
    assert isinstance(ignored, Finding) and ignored.code is ReasonCode.LIFETIME_UNSUPPORTED
    rejected = lifetime_check(check.record(ERROR, error_code=420), False)
    assert isinstance(rejected, Finding) and "error 420" in say(rejected)
