"""The probe plan as data, and which probe comes next: sans-IO, no sockets, no clock.

Each family of tests runs on its own fresh UDP sockets, so that one family's packets
never open the NAT for another family's test; the families of a phase run concurrently,
and the probes within a family one at a time, since each depends on the replies before
it. The transport (``classifier/transport.py``) loops::

    while (request := next_probe(family, server, local, probes)) is not None:
        probes.append(request.record(...what came back...))

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

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from .verdict import (
    ClassicObservations,
    Endpoint,
    FilteringObservations,
    HairpinObservations,
    MappingObservations,
    Probe,
    ProbeOutcome,
    ReasonCode,
    Verdict,
    binding_lifetime,
    classic_verdict,
    classify,
    filtering_verdict,
    hairpin_verdict,
    mapping_verdict,
)


class Family(StrEnum):
    """A group of probes sharing the family's own sockets."""

    CLASSIC = "classic"  #: RFC 3489 §10.1
    MAPPING = "mapping"  #: RFC 5780 §4.3
    FILTERING = "filtering"  #: RFC 5780 §4.4
    HAIRPIN = "hairpin"  #: RFC 5780 §4.5
    PORT_ALLOCATION = "port-allocation"  #: RFC 4787 §4.2.1


class Target(StrEnum):
    """Where a step sends, resolved against the server and the family's Test I."""

    PRIMARY = "primary"  #: the server as given on the command line
    ALTERNATE = "alternate"  #: OTHER-ADDRESS / CHANGED-ADDRESS from Test I
    ALT_IP_PRIMARY_PORT = "alt-ip-primary-port"  #: alternate IP, primary port
    OWN_MAPPED = "own-mapped"  #: the mapped address Test I learned (hairpinning)


@dataclass(frozen=True)
class Step:
    """One probe of a family. ``name`` is the observation field it fills. ``socket``
    numbers the family's sockets (0 is the one ``local`` names). A step that does not
    ``expect_reply`` is a request sent from ``socket`` to be received on socket 0: ok
    when it arrived, timeout when not."""

    name: str
    target: Target
    change_ip: bool = False
    change_port: bool = False
    socket: int = 0
    expect_reply: bool = True


#: How many fresh sockets the port allocation family samples.
PORT_SAMPLES = 4

_CHANGE_TESTS = (
    Step("test1", Target.PRIMARY),
    Step("test2", Target.PRIMARY, change_ip=True, change_port=True),
    Step("test1_alt", Target.ALTERNATE),
    Step("test3", Target.PRIMARY, change_port=True),
)

#: The classic flow compares Test I's mapping with Test I to the alternate's, so the socket
#: doing that must never receive a datagram its NAT filters: a router that accepts such a
#: datagram in its INPUT chain confirms a conntrack entry holding the mapped port for that
#: sender (the alternate, for Test II), and Test I to the alternate then gets another port
#: (the netfilter trap, tests/lab/netlab.py). Test II and Test III therefore go from the
#: family's second socket: their replies test filtering just the same, on a mapping of
#: their own toward the primary.
_CLASSIC_TESTS = (
    Step("test1", Target.PRIMARY),
    Step("test2", Target.PRIMARY, change_ip=True, change_port=True, socket=1),
    Step("test1_alt", Target.ALTERNATE),
    Step("test3", Target.PRIMARY, change_port=True, socket=1),
)

#: Every step each family may send, in order; which of them run depends on the replies.
STEPS: dict[Family, tuple[Step, ...]] = {
    Family.CLASSIC: _CLASSIC_TESTS,
    Family.MAPPING: (
        Step("test1", Target.PRIMARY),
        Step("test2", Target.ALT_IP_PRIMARY_PORT),
        Step("test3", Target.ALTERNATE),
    ),
    Family.FILTERING: _CHANGE_TESTS,
    Family.HAIRPIN: (
        Step("test1", Target.PRIMARY),
        Step("send", Target.OWN_MAPPED, socket=1, expect_reply=False),
    ),
    Family.PORT_ALLOCATION: tuple(
        Step(f"sample{i}", Target.PRIMARY, socket=i) for i in range(PORT_SAMPLES)
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
    def name(self) -> str:
        return probe_name(self.family, self.step.name)

    def record(self, outcome: ProbeOutcome, **observed: object) -> Probe:
        """The ``Probe`` for this request; ``observed`` holds the reply's fields."""
        return Probe(
            name=self.name,
            target=self.target,
            outcome=outcome,
            change_ip=self.step.change_ip,
            change_port=self.step.change_port,
            **observed,  # type: ignore[arg-type]
        )


def probe_name(family: Family, step: str) -> str:
    """The name a probe carries in observations and in the JSON output."""
    return f"{family}/{step}"


def _fields(family: Family, probes: Iterable[Probe]) -> dict[str, Probe]:
    """This family's probes by step name; a later record of a step replaces an earlier."""
    prefix = f"{family}/"
    names = {step.name for step in STEPS[family]}
    found: dict[str, Probe] = {}
    for probe in probes:
        step = probe.name.removeprefix(prefix)
        if probe.name.startswith(prefix) and step in names:
            found[step] = probe
    return found


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


def _missing_step(family: Family, local: Endpoint, probes: Sequence[Probe]) -> str | None:
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
        done = _fields(family, probes)
        step = next((s for s in STEPS[family] if s.name not in done), None)
        return None if step is None else ProbeRequest(family, step, server)
    missing = _missing_step(family, local, probes)
    if missing is None:
        return None
    step = next(s for s in STEPS[family] if s.name == missing)
    test1 = _fields(family, probes).get("test1")
    return ProbeRequest(family, step, _resolve(step.target, server, test1))


def port_pairs(probes: Iterable[Probe]) -> list[tuple[int, int]]:
    """(local port, mapped port) of each answered port allocation sample, in step order;
    samples without a reply, a mapped address or a recorded local address are skipped."""
    done = _fields(Family.PORT_ALLOCATION, probes)
    pairs = []
    for step in STEPS[Family.PORT_ALLOCATION]:
        probe = done.get(step.name)
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
        extra_probes=list(_fields(Family.PORT_ALLOCATION, probes).values()),
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
