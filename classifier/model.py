"""The classifier's observations and results: what a probe saw, what the decisions
found, and the one reason type (``Finding``) every decision gives. Values only: no
decisions (``classifier/verdict.py``, ``classifier/combine.py``), no prose
(``classifier/report.py``), no sockets, no trio, no clock.

A probe is named by a ``ProbeId``, a typed (family, test) pair checked against the table
of which tests each family sends; its text form (``classic/test1``) is the ``name`` of
the ``--json`` output and is never parsed back.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .combine import Rfc5780Result

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




class Family(StrEnum):
    """A group of probes sharing the family's own sockets (``classifier/plan.py``)."""

    CLASSIC = "classic"  #: RFC 3489 §10.1
    MAPPING = "mapping"  #: RFC 5780 §4.3
    FILTERING = "filtering"  #: RFC 5780 §4.4
    HAIRPIN = "hairpin"  #: RFC 5780 §4.5
    PORT_ALLOCATION = "port-allocation"  #: RFC 4787 §4.2.1


class Extra(StrEnum):
    """Requests sent outside the plan's families; their probes never reach a verdict."""

    DIALECT = "dialect"  #: one RFC 3489 Test I (no magic cookie): does the server speak it?
    LIFETIME = "lifetime"  #: RFC 5780 §4.6 trials, named by their wait


class ProbeTest(StrEnum):
    """Which request of its family a probe is; the values are the observation fields."""

    TEST1 = "test1"  #: Test I to the primary
    TEST2 = "test2"  #: Test II: change IP and port (classic, filtering) or alternate IP
    TEST1_ALT = "test1_alt"  #: Test I to the alternate address
    TEST3 = "test3"  #: Test III: change port (classic, filtering) or the alternate
    SEND = "send"  #: hairpinning: our own request to our mapped address
    SAMPLE = "sample"  #: port allocation: one fresh socket's mapping
    ALT_SERVER = "alt-server"  #: the cross-check request to the second server (``--alt``)
    CHECK = "check"  #: lifetime: the RESPONSE-PORT request after the wait


_T = ProbeTest
#: Which tests each family sends; anything not in this table is no probe of ours.
TESTS: dict[Family | Extra, frozenset[ProbeTest]] = {
    Family.CLASSIC: frozenset({_T.TEST1, _T.TEST2, _T.TEST1_ALT, _T.TEST3}),
    Family.MAPPING: frozenset({_T.TEST1, _T.TEST2, _T.TEST3, _T.ALT_SERVER}),
    Family.FILTERING: frozenset({_T.TEST1, _T.TEST2, _T.TEST1_ALT, _T.TEST3}),
    Family.HAIRPIN: frozenset({_T.TEST1, _T.SEND}),
    Family.PORT_ALLOCATION: frozenset({_T.SAMPLE}),
    Extra.DIALECT: frozenset({_T.TEST1}),
    Extra.LIFETIME: frozenset({_T.TEST1, _T.CHECK}),
}

#: How many fresh sockets the port allocation family samples.
PORT_SAMPLES = 4


@dataclass(frozen=True)
class ProbeId:
    """Which probe: a family (or extra check) and its test, with the sample's socket
    number for port allocation and the wait for a lifetime trial. Only the pairs in
    ``TESTS`` can be built; ``str()`` gives the JSON name (``classic/test1``,
    ``port-allocation/sample2``, ``lifetime/15s/check``)."""

    family: Family | Extra
    test: ProbeTest
    index: int | None = None
    wait_s: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.family, Family | Extra) or not isinstance(self.test, ProbeTest):
            raise TypeError(f"a probe id takes a Family and a ProbeTest, not {self.family!r}, "
                            f"{self.test!r}")  # fmt: skip
        if self.test not in TESTS[self.family]:
            raise ValueError(f"the {self.family} family sends no {self.test}")
        sample = self.test is ProbeTest.SAMPLE
        if sample != (self.index is not None) or (
            self.index is not None and not 0 <= self.index < PORT_SAMPLES
        ):
            raise ValueError(f"a port allocation sample needs an index below {PORT_SAMPLES}")
        timed = self.family is Extra.LIFETIME
        if timed != (self.wait_s is not None) or (self.wait_s is not None and self.wait_s < 0):
            raise ValueError("a lifetime probe, and only it, has a wait of zero or more")

    def __str__(self) -> str:
        if self.wait_s is not None:
            return f"{self.family}/{self.wait_s:g}s/{self.test}"
        return f"{self.family}/{self.test}{'' if self.index is None else self.index}"

# --------------------------------------------------------------------------- observations


@dataclass(frozen=True)
class Probe:
    """One Binding transaction (or, for the hairpin test, one request sent to ourselves),
    named by its typed ``id``.

    ``mapped`` is XOR-MAPPED-ADDRESS, or MAPPED-ADDRESS from an RFC 3489 server that sends
    only that; ``legacy_mapped`` is MAPPED-ADDRESS when the reply carried both (a
    difference between them betrays an ALG). ``source`` is where the reply really came
    from (``recvfrom``); the transport must fill it. ``response_origin`` is RESPONSE-ORIGIN
    (RFC 5780 §7.3) or SOURCE-ADDRESS (RFC 3489 §11.2.5), the server's own view;
    ``other_address`` is OTHER-ADDRESS (RFC 5780 §7.4) or CHANGED-ADDRESS (RFC 3489
    §11.2.3). ``local`` is the address of the socket that sent the request;
    ``attempts`` how many times it was sent (RFC 8489 §6.2.1 retransmissions).
    """

    id: ProbeId
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
    def name(self) -> str:
        """The probe's name in the JSON output and the notes (``classic/test1``)."""
        return str(self.id)

    @property
    def flags(self) -> tuple[str, ...]:
        """The CHANGE-REQUEST flags sent, as JSON-friendly names."""
        return ("change-ip",) * self.change_ip + ("change-port",) * self.change_port

    @property
    def origin(self) -> Endpoint | None:
        """Where the reply came from: the real source, else what the server claims."""
        return self.source if self.source is not None else self.response_origin


def require_local(local: Endpoint) -> None:
    ip = comparable_ip(local[0])
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
        require_local(self.local)


@dataclass(frozen=True)
class MappingObservations:
    """RFC 5780 §4.3 from one socket: Test I to the primary, Test II to the alternate IP
    and primary port, Test III to the alternate IP and port."""

    local: Endpoint
    test1: Probe | None = None
    test2: Probe | None = None
    test3: Probe | None = None

    def __post_init__(self) -> None:
        require_local(self.local)


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
        require_local(self.local)


@dataclass(frozen=True)
class HairpinObservations:
    """RFC 5780 §4.5: ``test1`` learns the mapped address of the socket at ``local``; a
    second socket then sends a Binding request to that mapped address, recorded as
    ``send`` with outcome ok when the first socket received it, timeout when not."""

    local: Endpoint
    test1: Probe | None = None
    send: Probe | None = None

    def __post_init__(self) -> None:
        require_local(self.local)


# --------------------------------------------------------------------------- results


class Why(StrEnum):
    """What a finding says; each member is one sentence, written in
    ``classifier/report.py``. The comments name the ``Finding`` fields it uses."""

    # -- a reply that cannot be used (probe: the test)
    NOT_RUN = "not-run"  #: probe
    NO_RESPONSE = "no-response"  #: probe, at: where it was sent
    ERROR_RESPONSE = "error-response"  #: probe, error_code
    INVALID_RESPONSE = "invalid-response"  #: probe
    WRONG_SOURCE = "wrong-source"  #: probe, at: the reply's origin, other: the target
    NO_MAPPED_ADDRESS = "no-mapped-address"  #: probe
    GAVE_NO_MAPPED_ADDRESS = "gave-no-mapped-address"  #: probe (mapped addresses alone)
    # -- CHANGE-REQUEST (probe; other: where the reply should come from)
    CHANGE_REJECTED = "change-rejected"  #: probe, error_code
    CHANGE_IGNORED_ELSEWHERE = "change-ignored-elsewhere"  #: probe, other
    SOURCE_NOT_RECORDED = "source-not-recorded"  #: probe
    CHANGE_IGNORED = "change-ignored"  #: probe, at: the origin, other
    CHANGE_WRONG_SOURCE = "change-wrong-source"  #: probe, at: the origin, primary, other
    # -- the server's alternate address (at: the alternate, primary)
    NO_ALTERNATE = "no-alternate"
    ALTERNATE_SAME_IP = "alternate-same-ip"  #: at, primary
    ALTERNATE_SAME_PORT = "alternate-same-port"  #: at, primary
    ALTERNATE_UNREACHABLE = "alternate-unreachable"  #: probe, at: where it was sent
    # -- contradictions
    NO_NAT_THEN_MAPPED = "no-nat-then-mapped"  #: at: Test I's mapping, other: the alternate's
    NAT_VIEWS_DISAGREE = "nat-views-disagree"
    MAPPING_WITHOUT_NAT = "mapping-without-nat"  #: behaviors: (mapping,)
    METHODS_DISAGREE = "methods-disagree"  #: nat: (classic, RFC 5780), behaviors: (m, f)
    METHODS_DISAGREE_SILENT = "methods-disagree-silent"  #: nat: (classic,)
    # -- hairpinning
    HAIRPIN_NO_MAPPED = "hairpin-no-mapped"
    HAIRPIN_NO_NAT = "hairpin-no-nat"
    HAIRPIN_NOT_RUN = "hairpin-not-run"
    # -- binding lifetime (seconds)
    LIFETIME_NOT_RUN = "lifetime-not-run"
    LIFETIME_INCONSISTENT = "lifetime-inconsistent"  #: seconds: (gone after, survived)
    LIFETIME_EXPIRED = "lifetime-expired"  #: seconds: (shortest wait,)
    LIFETIME_TOO_SHORT = "lifetime-too-short"  #: seconds: (lower bound,)
    LIFETIME_NEEDS_RFC5389 = "lifetime-needs-rfc5389"
    LIFETIME_RESPONSE_PORT_LOST = "lifetime-response-port-lost"
    LIFETIME_RESPONSE_PORT_ERROR = "lifetime-response-port-error"  #: error_code
    LIFETIME_RESPONSE_PORT_IGNORED = "lifetime-response-port-ignored"
    LIFETIME_NO_BINDING = "lifetime-no-binding"
    # -- notes on combining (cause: the finding noted)
    RFC5780_ALSO = "rfc5780-also"  #: cause
    CLASSIC_INCONCLUSIVE = "classic-inconclusive"  #: cause
    RFC5780_INCONCLUSIVE = "rfc5780-inconclusive"  #: cause
    CLASSIC_UNTESTED_MAPPING = "classic-untested-mapping"  #: nat: (classic, RFC 5780), behaviors
    ALG = "alg"  #: probe, at: MAPPED-ADDRESS, other: XOR-MAPPED-ADDRESS, count: other replies
    CGNAT_MAPPED = "cgnat-mapped"  #: at
    CGNAT_LOCAL = "cgnat-local"  #: at
    PRIVATE_MAPPED = "private-mapped"  #: at
    # -- the second server (at: the second server, other: its view, primary: the primary's)
    ALT_SILENT = "alt-silent"  #: at
    ALT_ERROR = "alt-error"  #: at, error_code
    ALT_WRONG_SOURCE = "alt-wrong-source"  #: at, other: where the answer came from
    ALT_NO_MAPPED = "alt-no-mapped"  #: at
    ALT_NOTHING_TO_COMPARE = "alt-nothing-to-compare"  #: at, other
    ALT_ALSO_NO_NAT = "alt-also-no-nat"  #: at, other
    ALT_PATHS_DIFFER = "alt-paths-differ"  #: at, other, primary
    ALT_SAME_CONTRADICTS = "alt-same-contradicts"  #: at, other, nat: (type,), behaviors
    ALT_SAME_CONFIRMED = "alt-same-confirmed"  #: at, other
    ALT_SAME_MEASURED = "alt-same-measured"  #: at, other
    ALT_DIFFERENT_CONTRADICTS = "alt-different-contradicts"  #: at, other, primary, nat, behaviors
    ALT_DEPENDENT_SYMMETRIC = "alt-dependent-symmetric"  #: at, other, primary
    ALT_DEPENDENT_CONFIRMED = "alt-dependent-confirmed"  #: at, other, primary
    # -- the run
    SEND_FAILED = "send-failed"  #: at: where to, detail: the error
    ORIGIN_MISMATCH = "origin-mismatch"  #: probe, at: the claimed origin, other: the source
    DIALECT_RERUN = "dialect-rerun"
    DIALECT_SILENT_TOO = "dialect-silent-too"
    IPV6_SILENT_BUT_IPV4_ANSWERS = "ipv6-silent-but-ipv4-answers"
    NO_IPV6_PATH = "no-ipv6-path"  #: detail: the error


_W, _R = Why, ReasonCode
#: The machine-stable code of each finding that can be a result's reason; the others are
#: notes only.
REASON_CODES: dict[Why, ReasonCode] = {
    _W.NOT_RUN: _R.TEST_NOT_RUN,
    _W.NO_RESPONSE: _R.NO_RESPONSE_FROM_SERVER,
    _W.ERROR_RESPONSE: _R.SERVER_ERROR_RESPONSE,
    _W.INVALID_RESPONSE: _R.INVALID_RESPONSE,
    _W.WRONG_SOURCE: _R.UNEXPECTED_RESPONSE_SOURCE,
    _W.NO_MAPPED_ADDRESS: _R.NO_MAPPED_ADDRESS,
    _W.GAVE_NO_MAPPED_ADDRESS: _R.NO_MAPPED_ADDRESS,
    _W.CHANGE_REJECTED: _R.CHANGE_REQUEST_REJECTED,
    _W.CHANGE_IGNORED_ELSEWHERE: _R.CHANGE_REQUEST_IGNORED,
    _W.SOURCE_NOT_RECORDED: _R.RESPONSE_SOURCE_UNKNOWN,
    _W.CHANGE_IGNORED: _R.CHANGE_REQUEST_IGNORED,
    _W.CHANGE_WRONG_SOURCE: _R.UNEXPECTED_RESPONSE_SOURCE,
    _W.NO_ALTERNATE: _R.NO_ALTERNATE_ADDRESS,
    _W.ALTERNATE_SAME_IP: _R.ALTERNATE_SAME_IP,
    _W.ALTERNATE_SAME_PORT: _R.ALTERNATE_SAME_PORT,
    _W.ALTERNATE_UNREACHABLE: _R.ALTERNATE_UNREACHABLE,
    _W.NO_NAT_THEN_MAPPED: _R.INCONSISTENT_OBSERVATIONS,
    _W.NAT_VIEWS_DISAGREE: _R.INCONSISTENT_OBSERVATIONS,
    _W.MAPPING_WITHOUT_NAT: _R.INCONSISTENT_OBSERVATIONS,
    _W.METHODS_DISAGREE: _R.METHODS_DISAGREE,
    _W.METHODS_DISAGREE_SILENT: _R.METHODS_DISAGREE,
    _W.HAIRPIN_NO_MAPPED: _R.NO_MAPPED_ADDRESS,
    _W.HAIRPIN_NO_NAT: _R.NO_NAT,
    _W.HAIRPIN_NOT_RUN: _R.TEST_NOT_RUN,
    _W.LIFETIME_NOT_RUN: _R.TEST_NOT_RUN,
    _W.LIFETIME_INCONSISTENT: _R.LIFETIME_INCONSISTENT,
    _W.LIFETIME_EXPIRED: _R.LIFETIME_EXPIRED_AT_EVERY_WAIT,
    _W.LIFETIME_TOO_SHORT: _R.LIFETIME_TOO_SHORT,
    _W.LIFETIME_NEEDS_RFC5389: _R.LIFETIME_UNSUPPORTED,
    _W.LIFETIME_RESPONSE_PORT_LOST: _R.LIFETIME_UNSUPPORTED,
    _W.LIFETIME_RESPONSE_PORT_ERROR: _R.LIFETIME_UNSUPPORTED,
    _W.LIFETIME_RESPONSE_PORT_IGNORED: _R.LIFETIME_UNSUPPORTED,
    _W.LIFETIME_NO_BINDING: _R.NO_RESPONSE_FROM_SERVER,
    _W.ALT_PATHS_DIFFER: _R.SERVERS_DISAGREE,
    _W.ALT_SAME_CONTRADICTS: _R.SERVERS_DISAGREE,
    _W.ALT_DIFFERENT_CONTRADICTS: _R.SERVERS_DISAGREE,
}


@dataclass(frozen=True)
class Finding:
    """What a decision found, as facts: why a result is unknown (or, for udp-blocked,
    why UDP looks blocked), or a note. The one reason type of every decision; ``why``
    picks the sentence ``classifier/report.py`` writes, the other fields fill it in.
    ``code`` is the machine-stable ``reason_code`` of ``--json``."""

    why: Why
    probe: ProbeId | None = None
    at: Endpoint | None = None
    other: Endpoint | None = None
    primary: Endpoint | None = None
    error_code: int | None = None
    seconds: tuple[float, ...] = ()
    nat: tuple[NatType, ...] = ()
    behaviors: tuple[Behavior, ...] = ()
    count: int = 0
    cause: Finding | None = None
    detail: str = ""

    @property
    def code(self) -> ReasonCode | None:
        return REASON_CODES.get(self.why)


class _Explained:
    """``reason_code``, read from a result's ``finding`` (the sentence is the report's)."""

    finding: Finding | None

    @property
    def reason_code(self) -> ReasonCode | None:
        return None if self.finding is None else self.finding.code


@dataclass(frozen=True)
class ClassicResult(_Explained):
    """The RFC 3489 §10.1 outcome. ``finding`` says why the type is unknown, or why UDP
    looks blocked; ``undetermined`` names the tests whose results the verdict needed but
    could not use."""

    nat_type: NatType
    finding: Finding | None = None
    undetermined: tuple[ProbeTest, ...] = ()
    mapped: Endpoint | None = None
    local: Endpoint | None = None


@dataclass(frozen=True)
class BehaviorResult(_Explained):
    """A mapping or filtering behaviour, with the finding when it is unknown."""

    behavior: Behavior
    finding: Finding | None = None
    undetermined: tuple[ProbeTest, ...] = ()


@dataclass(frozen=True)
class HairpinResult(_Explained):
    """RFC 5780 §4.5: True/False, or None (with a finding) when untested or meaningless."""

    hairpinning: bool | None
    finding: Finding | None = None
    undetermined: tuple[ProbeTest, ...] = ()


@dataclass(frozen=True)
class PortAllocation:
    """RFC 4787 §4.2.1: does the NAT keep the local port, and if not, by what step does
    it hand out ports (None: inconsistent, random, or too few samples)."""

    preserves_port: bool | None
    delta: int | None


@dataclass(frozen=True)
class BindingLifetime(_Explained):
    """RFC 5780 §4.6: the binding was still there after ``lower_s`` seconds of silence and
    gone after ``upper_s``; ``keepalive_s`` is a safe interval for keepalives."""

    lower_s: float | None
    upper_s: float | None
    keepalive_s: int | None
    consistent: bool = True
    finding: Finding | None = None

@dataclass(frozen=True)
class Verdict(_Explained):
    """Everything ``natsrv classify`` reports. ``inconclusive`` is exit code 3."""

    nat_type: NatType
    finding: Finding | None
    mapping: Behavior
    filtering: Behavior
    hairpinning: bool | None
    mapped_address: Endpoint | None
    local_address: Endpoint | None
    alg_suspected: bool
    cgnat_suspected: bool
    notes: tuple[Finding, ...] = ()
    classic: ClassicResult | None = None
    rfc5780: Rfc5780Result | None = None
    probes: tuple[Probe, ...] = ()
    port_allocation: PortAllocation | None = None
    lifetime: BindingLifetime | None = None

    @property
    def inconclusive(self) -> bool:
        return self.nat_type is NatType.UNKNOWN


# --------------------------------------------------------------------------- addresses


@functools.lru_cache(maxsize=256)
def comparable_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | str:
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
    return comparable_ip(a) == comparable_ip(b)


def same_endpoint(a: Endpoint | None, b: Endpoint | None) -> bool:
    """Whether two endpoints are the same; a missing one matches nothing."""
    return a is not None and b is not None and a[1] == b[1] and same_ip(a[0], b[0])




def fmt(endpoint: Endpoint | None, missing: str = "an unknown address") -> str:
    """The one way an endpoint is written: ``192.0.2.1:3478``, ``[2001:db8::1]:3478``;
    ``missing`` stands in for an address that is not known."""
    if endpoint is None:
        return missing
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
