"""The probe plan as data, and which probe comes next: sans-IO, no sockets, no clock.

Each family of tests runs on its own fresh UDP sockets, so that one family's packets
never open the NAT for another family's test; the families of a phase run concurrently,
and the probes within a family one at a time, since each depends on the replies before
it. The transport (``classifier/transport.py``) loops::

    while (request := next_probe(family, server, local, probes)) is not None:
        probes.append(observe(request, ...what came back...))

and finally calls ``verdict_from_probes``. Which probe comes next is the verdict's
decision, not a second copy of it: a family asks for the first test its verdict reports
as not run (``ReasonCode.TEST_NOT_RUN``), so plan and verdict cannot disagree about which
tests a conclusion needs.

Phases: classic (RFC 3489 §10.1), mapping (RFC 5780 §4.3), filtering (§4.4) and
hairpinning (§4.5) together; then port allocation (RFC 4787 §4.2.1) alone, because other
families' new mappings would interleave with its samples and hide the NAT's step; binding
lifetime (§4.6) only when asked for (``--lifetime``), as it takes minutes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from .binding import BindingReply
from .combine import classify
from .model import (
    PORT_SAMPLES,
    ClassicObservations,
    Endpoint,
    Family,
    FilteringObservations,
    Finding,
    HairpinObservations,
    MappingObservations,
    Probe,
    ProbeId,
    ProbeOutcome,
    ProbeTest,
    ReasonCode,
    Verdict,
    Why,
    same_endpoint,
)
from .verdict import (
    binding_lifetime,
    classic_verdict,
    filtering_verdict,
    hairpin_verdict,
    mapping_verdict,
)


class Target(StrEnum):
    """Where a step sends, resolved against the server and the family's Test I."""

    PRIMARY = "primary"  #: the server as given on the command line
    ALTERNATE = "alternate"  #: OTHER-ADDRESS / CHANGED-ADDRESS from Test I
    ALT_IP_PRIMARY_PORT = "alt-ip-primary-port"  #: alternate IP, primary port
    OWN_MAPPED = "own-mapped"  #: the mapped address Test I learned (hairpinning)


@dataclass(frozen=True)
class Step:
    """One probe of a family. ``test`` is the observation field it fills (``index``:
    which port allocation sample). ``socket`` numbers the family's sockets (0 is the one
    ``local`` names). A step that does not ``expect_reply`` is a request sent from
    ``socket`` to be received on socket 0: ok when it arrived, timeout when not."""

    test: ProbeTest
    target: Target
    change_ip: bool = False
    change_port: bool = False
    socket: int = 0
    expect_reply: bool = True
    index: int | None = None

    def id(self, family: Family) -> ProbeId:
        """The id of this step's probe in ``family``."""
        return _step_id(self, family)


@functools.cache
def _step_id(step: Step, family: Family) -> ProbeId:
    return ProbeId(family, step.test, step.index)

_CHANGE_TESTS = (
    Step(ProbeTest.TEST1, Target.PRIMARY),
    Step(ProbeTest.TEST2, Target.PRIMARY, change_ip=True, change_port=True),
    Step(ProbeTest.TEST1_ALT, Target.ALTERNATE),
    Step(ProbeTest.TEST3, Target.PRIMARY, change_port=True),
)

#: The classic flow compares Test I's mapping with Test I to the alternate's, so the socket
#: doing that must never receive a datagram its NAT filters: a router that accepts such a
#: datagram in its INPUT chain confirms a conntrack entry holding the mapped port for that
#: sender (the alternate, for Test II), and Test I to the alternate then gets another port
#: (the netfilter trap, tests/lab/netlab.py). Test II and Test III therefore go from the
#: family's second socket: their replies test filtering just the same, on a mapping of
#: their own toward the primary.
_CLASSIC_TESTS = (
    Step(ProbeTest.TEST1, Target.PRIMARY),
    Step(ProbeTest.TEST2, Target.PRIMARY, change_ip=True, change_port=True, socket=1),
    Step(ProbeTest.TEST1_ALT, Target.ALTERNATE),
    Step(ProbeTest.TEST3, Target.PRIMARY, change_port=True, socket=1),
)

#: Every step each family may send, in order; which of them run depends on the replies.
STEPS: dict[Family, tuple[Step, ...]] = {
    Family.CLASSIC: _CLASSIC_TESTS,
    Family.MAPPING: (
        Step(ProbeTest.TEST1, Target.PRIMARY),
        Step(ProbeTest.TEST2, Target.ALT_IP_PRIMARY_PORT),
        Step(ProbeTest.TEST3, Target.ALTERNATE),
    ),
    Family.FILTERING: _CHANGE_TESTS,
    Family.HAIRPIN: (
        Step(ProbeTest.TEST1, Target.PRIMARY),
        Step(ProbeTest.SEND, Target.OWN_MAPPED, socket=1, expect_reply=False),
    ),
    Family.PORT_ALLOCATION: tuple(
        Step(ProbeTest.SAMPLE, Target.PRIMARY, socket=i, index=i) for i in range(PORT_SAMPLES)
    ),
}

#: Families run concurrently within a phase; phases one after another. Keep every socket
#: of a family open until the family is done, so no local port is reused within it.
PHASES: tuple[tuple[Family, ...], ...] = (
    (Family.CLASSIC, Family.MAPPING, Family.FILTERING, Family.HAIRPIN),
    (Family.PORT_ALLOCATION,),
)


@dataclass(frozen=True)
class ProbeRequest:
    """A step resolved to an address: send a Binding request to ``target`` from the
    family's socket ``step.socket``, with CHANGE-REQUEST when a flag is set."""

    family: Family
    step: Step
    target: Endpoint

    @property
    def id(self) -> ProbeId:
        return self.step.id(self.family)

    @property
    def name(self) -> str:
        return str(self.id)

    def record(self, outcome: ProbeOutcome, **observed: object) -> Probe:
        """The ``Probe`` for this request; ``observed`` holds the reply's fields."""
        return Probe(
            id=self.id,
            target=self.target,
            outcome=outcome,
            change_ip=self.step.change_ip,
            change_port=self.step.change_port,
            **observed,  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class ExtraRequest:
    """A request outside the plan's families: the dialect check, the cross-check to the
    second server, a lifetime trial's requests. Its probe never reaches a family's
    verdict."""

    id: ProbeId
    target: Endpoint

    @property
    def name(self) -> str:
        return str(self.id)

    def record(self, outcome: ProbeOutcome, **observed: object) -> Probe:
        """The ``Probe`` for this request; ``observed`` holds the reply's fields."""
        return Probe(id=self.id, target=self.target, outcome=outcome, **observed)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Answer:
    """What came back to a request: where from (``recvfrom``), after how long, and the
    Binding response read from it (None: a STUN message, but no Binding response)."""

    source: Endpoint
    rtt_ms: float | None
    reply: BindingReply | None


def observe(
    request: ProbeRequest | ExtraRequest,
    answer: Answer | None,
    *,
    expected: Endpoint,
    local: Endpoint,
    attempts: int,
) -> Probe:
    """The ``Probe`` for a transaction sent from ``local``: no answer is a timeout, an
    answer that is no Binding response invalid, an error response an error; a success
    response from anywhere but ``expected`` is ``bad-source``, whatever it says."""
    common: dict[str, object] = {"local": local, "attempts": attempts}
    if answer is None:
        return request.record(ProbeOutcome.TIMEOUT, **common)
    common.update(source=answer.source, rtt_ms=answer.rtt_ms)
    reply = answer.reply
    if reply is None:
        return request.record(ProbeOutcome.INVALID, **common)
    common.update(
        mapped=reply.mapped,
        legacy_mapped=reply.legacy_mapped,
        response_origin=reply.response_origin,
        other_address=reply.other_address,
        error_code=reply.error_code,
    )
    if not reply.success:
        return request.record(ProbeOutcome.ERROR, **common)
    ok = same_endpoint(answer.source, expected)
    return request.record(ProbeOutcome.OK if ok else ProbeOutcome.BAD_SOURCE, **common)


def origin_mismatch(probe: Probe) -> Finding | None:
    """A note when a success response names as its origin (RESPONSE-ORIGIN or
    SOURCE-ADDRESS) another address than the one it came from: a server bug or a server
    behind a NAT. The classifier goes by the real source either way."""
    origin, source = probe.response_origin, probe.source
    if (
        probe.outcome not in (ProbeOutcome.OK, ProbeOutcome.BAD_SOURCE)
        or origin is None
        or source is None
        or same_endpoint(origin, source)
    ):
        return None
    return Finding(Why.ORIGIN_MISMATCH, probe.id, at=origin, other=source)


def _recorded(family: Family, probes: Iterable[Probe]) -> dict[ProbeId, Probe]:
    """This family's probes by id; a later record of a step replaces an earlier."""
    ids = _family_ids(family)
    return {probe.id: probe for probe in probes if probe.id in ids}


@functools.cache
def _family_ids(family: Family) -> frozenset[ProbeId]:
    return frozenset(step.id(family) for step in STEPS[family])


def _fields(family: Family, probes: Iterable[Probe]) -> dict[str, Probe]:
    """This family's probes as observation fields (``test1=...``)."""
    return {str(pid.test): probe for pid, probe in _recorded(family, probes).items()}


_Observations = (
    ClassicObservations | MappingObservations | FilteringObservations | HairpinObservations
)
_OBSERVATIONS: dict[Family, Callable[..., _Observations]] = {
    Family.CLASSIC: ClassicObservations,
    Family.MAPPING: MappingObservations,
    Family.FILTERING: FilteringObservations,
    Family.HAIRPIN: HairpinObservations,
}


def observations(family: Family, local: Endpoint, probes: Iterable[Probe]) -> _Observations:
    """The observations of ``family`` (not port allocation) from a list of probes."""
    return _OBSERVATIONS[family](local, **_fields(family, probes))


def _missing_step(family: Family, local: Endpoint, probes: Sequence[Probe]) -> ProbeTest | None:
    obs = observations(family, local, probes)
    if isinstance(obs, ClassicObservations):
        result = classic_verdict(obs)
        code, undetermined = result.reason_code, result.undetermined
    elif isinstance(obs, MappingObservations):
        behavior = mapping_verdict(obs)
        code, undetermined = behavior.reason_code, behavior.undetermined
    elif isinstance(obs, FilteringObservations):
        behavior = filtering_verdict(obs)
        code, undetermined = behavior.reason_code, behavior.undetermined
    else:
        hairpin = hairpin_verdict(obs)
        code, undetermined = hairpin.reason_code, hairpin.undetermined
    return undetermined[0] if code is ReasonCode.TEST_NOT_RUN else None


def _resolve(target: Target, server: Endpoint, test1: Probe | None) -> Endpoint:
    if target is Target.PRIMARY:
        return server
    # The verdict asks for these only after validating Test I and its alternate address.
    assert test1 is not None
    if target is Target.OWN_MAPPED:
        assert test1.mapped is not None
        return test1.mapped
    assert test1.other_address is not None
    if target is Target.ALTERNATE:
        return test1.other_address
    return (test1.other_address[0], server[1])


def next_probe(
    family: Family, server: Endpoint, local: Endpoint, probes: Sequence[Probe]
) -> ProbeRequest | None:
    """The next probe ``family`` needs given the probes so far, or None when it is done.
    ``local`` is the address the kernel used for the family's socket 0."""
    if family is Family.PORT_ALLOCATION:
        done = _recorded(family, probes)
        step = next((s for s in STEPS[family] if s.id(family) not in done), None)
        return None if step is None else ProbeRequest(family, step, server)
    missing = _missing_step(family, local, probes)
    if missing is None:
        return None
    step = next(s for s in STEPS[family] if s.test is missing)
    test1 = _recorded(family, probes).get(ProbeId(family, ProbeTest.TEST1))
    return ProbeRequest(family, step, _resolve(step.target, server, test1))


def expected_source(request: ProbeRequest, probes: Sequence[Probe]) -> Endpoint:
    """Where the reply to ``request`` must come from: its target, or for CHANGE-REQUEST
    the target with the IP and/or port of the family's Test I OTHER-ADDRESS."""
    step = request.step
    if not (step.change_ip or step.change_port):
        return request.target
    test1 = _recorded(request.family, probes)[ProbeId(request.family, ProbeTest.TEST1)]
    alt = test1.other_address
    assert alt is not None  # the plan asks for CHANGE-REQUEST only with a valid alternate
    ip = alt[0] if step.change_ip else request.target[0]
    port = alt[1] if step.change_port else request.target[1]
    return ip, port


#: Families whose Test III may be sent along with Test II: it goes to the primary too, so
#: it opens nothing new in the NAT, and its reply (primary IP, alternate port) is filtered
#: independently of Test II's and of the request to the alternate; sent early, it saves a
#: whole timeout on a filtering NAT. The plan still decides whether its result is used.
_EARLY_TEST3 = frozenset({Family.CLASSIC, Family.FILTERING})


def sent_along(request: ProbeRequest) -> ProbeRequest | None:
    """The request that may be sent together with ``request`` (Test III with Test II of
    the classic and filtering families), or None."""
    if request.family not in _EARLY_TEST3 or request.step.test is not ProbeTest.TEST2:
        return None
    step = next(s for s in STEPS[request.family] if s.test is ProbeTest.TEST3)
    return ProbeRequest(request.family, step, request.target)


def ends_family(probe: Probe) -> bool:
    """Whether ``probe`` ends its family early whatever the plan would ask next: a port
    allocation sample without a reply (the samples count only as an unbroken sequence)."""
    return probe.id.family is Family.PORT_ALLOCATION and probe.outcome is not ProbeOutcome.OK


def first_test1_outcome(probes: Iterable[Probe]) -> ProbeOutcome | None:
    """What became of the first Test I among ``probes`` (one family's), None if not sent."""
    return next((p.outcome for p in probes if p.id.test is ProbeTest.TEST1), None)


def any_mapped(probes: Iterable[Probe]) -> bool:
    """Whether some Test I got a mapped address: the server is reachable, and the later
    phases (port allocation, lifetime) have something to measure."""
    return any(
        p.outcome is ProbeOutcome.OK and p.mapped is not None
        for p in probes
        if p.id.test is ProbeTest.TEST1
    )


def first_alternate(probes: Iterable[Probe]) -> Endpoint | None:
    """The alternate address the first Test I reported (OTHER-ADDRESS/CHANGED-ADDRESS)."""
    return next(
        (p.other_address for p in probes if p.id.test is ProbeTest.TEST1 and p.other_address),
        None,
    )


def port_pairs(probes: Iterable[Probe]) -> list[tuple[int, int]]:
    """(local port, mapped port) of each answered port allocation sample, in step order;
    samples without a reply, a mapped address or a recorded local address are skipped."""
    done = _recorded(Family.PORT_ALLOCATION, probes)
    pairs = []
    for step in STEPS[Family.PORT_ALLOCATION]:
        probe = done.get(step.id(Family.PORT_ALLOCATION))
        if (
            probe is not None
            and probe.outcome is ProbeOutcome.OK
            and probe.mapped is not None
            and probe.local is not None
        ):
            pairs.append((probe.local[1], probe.mapped[1]))
    return pairs


def verdict_from_probes(
    locals_: Mapping[Family, Endpoint],
    probes: Sequence[Probe],
    *,
    lifetime: Iterable[tuple[float, bool]] | None = None,
) -> Verdict:
    """The verdict from every probe of every family; ``locals_`` gives each family's
    socket 0 address (the classic, mapping and filtering families are required)."""
    hairpin_local = locals_.get(Family.HAIRPIN)
    return classify(
        ClassicObservations(locals_[Family.CLASSIC], **_fields(Family.CLASSIC, probes)),
        MappingObservations(locals_[Family.MAPPING], **_fields(Family.MAPPING, probes)),
        FilteringObservations(locals_[Family.FILTERING], **_fields(Family.FILTERING, probes)),
        None
        if hairpin_local is None
        else HairpinObservations(hairpin_local, **_fields(Family.HAIRPIN, probes)),
        port_pairs=port_pairs(probes),
        lifetime=lifetime,
        extra_probes=list(_recorded(Family.PORT_ALLOCATION, probes).values()),
    )


# --------------------------------------------------------------------------- RFC 5780 §4.6

#: Lifetime trial schedule: the first wait, doubling up to the limit, then bisection
#: until the bounds are this close. Each trial: a fresh socket X gets a mapping from the
#: primary and stays silent for the wait; a second socket then sends a Binding request
#: to the primary with RESPONSE-PORT set to X's mapped port, and the trial records
#: whether X received the response (the binding was still there).
LIFETIME_FIRST_S = 15.0
LIFETIME_LIMIT_S = 300.0
LIFETIME_RESOLUTION_S = 5.0


def next_lifetime_wait(
    trials: Sequence[tuple[float, bool]],
    *,
    first: float = LIFETIME_FIRST_S,
    limit: float = LIFETIME_LIMIT_S,
    resolution: float = LIFETIME_RESOLUTION_S,
) -> float | None:
    """The next wait to try, from (wait, still forwarded) trials so far; None when the
    bounds are tight enough, the binding outlived ``limit``, or the trials contradict
    each other (``binding_lifetime`` then says so)."""
    if not trials:
        return first
    found = binding_lifetime(trials)
    lower, upper = found.lower_s, found.upper_s
    if not found.consistent:
        return None
    if upper is None:
        assert lower is not None
        return None if lower >= limit else min(max(lower * 2, first), limit)
    if lower is None:
        return None if upper <= resolution else upper / 2
    return None if upper - lower <= resolution else (lower + upper) / 2


def lifetime_check(check: Probe, came_back_to_asker: bool) -> bool | Finding:
    """A trial's result from its RESPONSE-PORT request: True when the idle socket got the
    answer (the binding was still there), False when nothing came, or the finding that
    the server cannot do the test (an error response, or an answer sent back to the
    asking socket: RESPONSE-PORT ignored)."""
    if check.outcome is ProbeOutcome.TIMEOUT:
        return False
    if check.outcome is ProbeOutcome.ERROR:
        return Finding(Why.LIFETIME_RESPONSE_PORT_ERROR, error_code=check.error_code)
    if came_back_to_asker:
        return Finding(Why.LIFETIME_RESPONSE_PORT_IGNORED)
    return check.outcome is ProbeOutcome.OK


def lifetime_waits(
    trials: Sequence[tuple[float, bool]],
    *,
    first: float = LIFETIME_FIRST_S,
    limit: float = LIFETIME_LIMIT_S,
    resolution: float = LIFETIME_RESOLUTION_S,
    parallel: int = 3,
) -> list[float]:
    """The waits of the next round of trials run side by side (each trial has its own
    sockets, so trials do not disturb each other), or [] when done.

    The first round is the whole doubling series ``first, 2·first, ...`` up to and
    including ``limit``; each later round splits the bracket between the longest wait
    survived and the shortest not survived into ``parallel + 1`` equal parts, so a round
    narrows it by that factor where ``next_lifetime_wait`` halves it. Done, as there,
    when the bracket is within ``resolution``, the binding outlived ``limit``, or the
    trials contradict each other."""
    if parallel < 1:
        raise ValueError("parallel must be at least 1")
    if not trials:
        waits = []
        wait = first
        while wait < limit:
            waits.append(wait)
            wait *= 2
        return [*waits, limit]
    found = binding_lifetime(trials)
    if not found.consistent:
        return []
    lower, upper = found.lower_s, found.upper_s
    if upper is None:
        assert lower is not None
        if lower >= limit:
            return []
        return [w for w in lifetime_waits((), first=lower * 2, limit=limit) if w > lower]
    low = 0.0 if lower is None else lower
    if upper - low <= resolution:
        return []
    step = (upper - low) / (parallel + 1)
    return [low + step * i for i in range(1, parallel + 1)]
