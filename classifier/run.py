"""One classification run, in trio: the probe plan (``classifier/plan.py``) carried out
over the transport (``classifier/transport.py``). This module only sends and waits;
what to send, where a reply must come from, what an answer means and the verdict are
the pure modules' (``plan.py``, ``verdict.py``, ``combine.py``, ``crosscheck.py``).

- Every family of tests gets fresh local sockets, bound to the address the kernel uses
  to reach the server (never a wildcard); the families of a phase run concurrently, so
  one family's packets cannot open the NAT for another's test. Within a family the plan
  orders the probes; it allows one liberty (``plan.sent_along``): Test III (change port)
  is sent along with Test II of the classic and filtering families, since it goes to
  the primary, already contacted, and on a filtering NAT it saves a whole timeout. The
  plan still decides whether its result is used.
- Every reply is checked: its transaction ID (the transport), then where it came from
  (``plan.expected_source``, ``plan.observe``): a plain request must be answered by the
  address it was sent to, a CHANGE-REQUEST by the changed IP and/or port of the
  OTHER-ADDRESS / CHANGED-ADDRESS that Test I gave. A reply from anywhere else is
  recorded as ``bad-source``, an error response as ``error``; the verdict treats neither
  as a reply.
- Dialects: requests carry the magic cookie (RFC 5389/8489). Only when every family's
  Test I went unanswered is one RFC 3489 request (no cookie) sent; if the server answers
  that, the whole run is repeated in the RFC 3489 dialect, and a note says so.
- Then, alone (RFC 4787 §4.2.1), the port allocation samples; with ``--alt``, a
  cross-check from the mapping family's socket (``classifier/crosscheck.py``); with
  ``--lifetime``, the RFC 5780 §4.6 binding lifetime, using RESPONSE-PORT.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

import trio

from .binding import DEFAULT_TIMING, Retransmission, binding_request, read_binding_response
from .combine import beside_primary
from .crosscheck import CrossCheck, cross_check
from .model import (
    BindingLifetime,
    Endpoint,
    Extra,
    Family,
    Finding,
    NatType,
    Probe,
    ProbeId,
    ProbeOutcome,
    ProbeTest,
    ReasonCode,
    Verdict,
    Why,
)
from .plan import (
    LIFETIME_LIMIT_S,
    PHASES,
    Answer,
    ExtraRequest,
    ProbeRequest,
    any_mapped,
    ends_family,
    expected_source,
    first_alternate,
    first_test1_outcome,
    lifetime_check,
    lifetime_waits,
    next_probe,
    observe,
    origin_mismatch,
    sent_along,
    verdict_from_probes,
)
from .transport import (
    Counters,
    Exchange,
    Transport,
    UdpSocket,
    family_of,
    route_source,
)
from .verdict import binding_lifetime


class Dialect(StrEnum):
    """Which kind of Binding request the run sends."""

    RFC5389 = "rfc5389"  #: with the magic cookie (RFC 5389, RFC 8489, RFC 5780)
    RFC3489 = "rfc3489"  #: classic STUN, no magic cookie


@dataclass(frozen=True)
class Settings:
    """What to classify against and how. ``local_port`` (``--local IP:PORT``) is used by
    the classic family's first socket, the one whose mapping the classic flow compares;
    every other socket needs a fresh port of its own."""

    server: Endpoint
    server_name: str = ""
    alt_server: Endpoint | None = None
    local_ip: str | None = None
    local_port: int | None = None
    timing: Retransmission = DEFAULT_TIMING
    lifetime: bool = False
    #: Longest silence the lifetime test tries; the first wait is 1/20 of it and the
    #: result is narrowed to 1/60 of it (300 s: 15 s first, 5 s resolution).
    lifetime_limit: float = LIFETIME_LIMIT_S


@dataclass(frozen=True)
class ProbeRecord:
    """A probe as sent, with what the report needs beyond the verdict's ``Probe``.
    ``used``: False for probes the verdict did not use (superseded by the RFC 3489
    rerun, the dialect check, the cross-check, lifetime trials)."""

    probe: Probe
    family: str
    dialect: Dialect
    used: bool = True


@dataclass(frozen=True)
class LifetimeReport:
    """RFC 5780 §4.6: ``result`` from the (wait, still forwarded) ``trials``; or, when
    the test could not run, ``result`` None with the finding that says why."""

    result: BindingLifetime | None
    trials: tuple[tuple[float, bool], ...] = ()
    finding: Finding | None = None

    @property
    def reason_code(self) -> ReasonCode | None:
        return None if self.finding is None else self.finding.code


@dataclass(frozen=True)
class Result:
    """Everything one classification found over one address family."""

    verdict: Verdict
    server_name: str
    server: Endpoint
    alternate: Endpoint | None
    dialect: Dialect
    software: str | None
    probes: tuple[ProbeRecord, ...]
    duration_s: float
    local_ip: str
    timing: Retransmission = DEFAULT_TIMING
    cross_check: CrossCheck | None = None
    lifetime: LifetimeReport | None = None
    counters: Counters = field(default_factory=Counters)

    @property
    def ip_version(self) -> int:
        return 6 if ":" in self.server[0] else 4


class Observer:
    """Progress callbacks; the default does nothing (report.py shows a progress bar)."""

    def probe_started(self, name: str, target: Endpoint) -> None:
        """A probe is about to be sent."""

    def probe_finished(self, record: ProbeRecord) -> None:
        """A probe has its outcome."""

    def waiting(self, trials: int, longest: float) -> None:
        """A round of lifetime trials, the longest idle for ``longest`` seconds, began."""


class _Unsupported(Exception):
    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.why)
        self.finding = finding


class _SocketSet:
    """A family's sockets by index, each opened on first use."""

    def __init__(self, transport: Transport, ip: str) -> None:
        self.transport = transport
        self.ip = ip
        self.opened: dict[int, UdpSocket] = {}

    async def get(self, index: int, port: int = 0) -> UdpSocket:
        if index not in self.opened:
            self.opened[index] = await self.transport.open((self.ip, port))
        return self.opened[index]

    def close(self) -> None:
        for udp in self.opened.values():
            self.transport.close(udp)


class _Run:
    def __init__(
        self, settings: Settings, transport: Transport, local_ip: str, observer: Observer
    ) -> None:
        self.settings = settings
        self.transport = transport
        self.local_ip = local_ip
        self.observer = observer
        self.records: list[ProbeRecord] = []
        self.notes: list[Finding] = []
        self.software: str | None = None
        self.alt_probe: Probe | None = None
        self._origin_mismatches: set[tuple[Endpoint | None, Endpoint | None]] = set()

    @contextlib.asynccontextmanager
    async def _sockets(self) -> AsyncIterator[_SocketSet]:
        """A family's sockets, all closed when it is done (so that no local port is
        reused within the family)."""
        sockets = _SocketSet(self.transport, self.local_ip)
        try:
            yield sockets
        finally:
            sockets.close()

    def _note(self, finding: Finding) -> None:
        if finding not in self.notes:
            self.notes.append(finding)

    def _record(self, probe: Probe, family: str, dialect: Dialect, *, used: bool = True) -> None:
        record = ProbeRecord(probe, family, dialect, used)
        self.records.append(record)
        self.observer.probe_finished(record)

    # -- one probe ----------------------------------------------------------------
    def _probe_from(
        self, sent: ProbeRequest | ExtraRequest, exchange: Exchange, expected: Endpoint,
        local: Endpoint,
    ) -> Probe:
        """The ``Probe`` for a transaction (``plan.observe``), noting send errors and a
        reply that names another origin than its source."""
        for error in exchange.send_errors:
            self._note(Finding(Why.SEND_FAILED, at=sent.target, detail=str(error)))
        answer: Answer | None = None
        if exchange.reply is not None:
            reply = read_binding_response(exchange.reply.message)
            if self.software is None and reply is not None and reply.software:
                self.software = reply.software
            answer = Answer(exchange.reply.source, exchange.rtt_ms, reply)
        probe = observe(sent, answer, expected=expected, local=local, attempts=exchange.attempts)
        mismatch = origin_mismatch(probe)
        if mismatch is not None and (mismatch.at, mismatch.other) not in self._origin_mismatches:
            self._origin_mismatches.add((mismatch.at, mismatch.other))
            self._note(mismatch)
        return probe

    async def _ask(
        self, sent: ProbeRequest | ExtraRequest, sock: UdpSocket, dialect: Dialect, *,
        expected: Endpoint | None = None, change_ip: bool = False, change_port: bool = False,
    ) -> Probe:
        """One Binding transaction from ``sock`` to ``sent.target``."""
        message = binding_request(
            cookie=dialect is Dialect.RFC5389, change_ip=change_ip, change_port=change_port
        )
        self.observer.probe_started(sent.name, sent.target)
        exchange = await self.transport.transaction(sock, sent.target, message)
        return self._probe_from(sent, exchange, expected or sent.target, sock.local)

    async def _hairpin(
        self, request: ProbeRequest, sender: UdpSocket, receiver: UdpSocket, dialect: Dialect
    ) -> Probe:
        """RFC 5780 §4.5: our own request, sent to the receiver's mapped address, must
        come back in on the receiver."""
        message = binding_request(cookie=dialect is Dialect.RFC5389)
        self.observer.probe_started(request.name, request.target)
        exchange = await self.transport.transaction(
            sender, request.target, message, accept=[receiver]
        )
        common: dict[str, object] = {"local": sender.local, "attempts": exchange.attempts}
        if exchange.reply is None:
            return request.record(ProbeOutcome.TIMEOUT, **common)
        return request.record(
            ProbeOutcome.OK, source=exchange.reply.source, rtt_ms=exchange.rtt_ms, **common
        )

    # -- a family -----------------------------------------------------------------
    async def _family(self, family: Family, dialect: Dialect) -> tuple[Endpoint, list[Probe]]:
        server = self.settings.server
        port0 = 0
        if family is Family.CLASSIC and self.settings.local_port:
            port0 = self.settings.local_port
        probes: list[Probe] = []
        early: dict[ProbeId, _Early] = {}
        async with self._sockets() as sockets:
            first = await sockets.get(0, port0)
            local = first.local
            async with trio.open_nursery() as nursery:
                while (request := next_probe(family, server, local, probes)) is not None:
                    probe = await self._next(request, family, dialect, sockets, probes, early,
                                             nursery)
                    probes.append(probe)
                    self._record(probe, family, dialect)
                    if ends_family(probe):
                        break
                nursery.cancel_scope.cancel()  # an early Test III the plan did not need
            alt = self.settings.alt_server
            if (family is Family.MAPPING and alt is not None
                    and first_test1_outcome(probes) is ProbeOutcome.OK):
                sent = ExtraRequest(ProbeId(family, ProbeTest.ALT_SERVER), alt)
                self.alt_probe = await self._ask(sent, first, dialect)
                self._record(self.alt_probe, "cross-check", dialect, used=False)
        return local, probes

    async def _next(
        self, request: ProbeRequest, family: Family, dialect: Dialect, sockets: _SocketSet,
        probes: Sequence[Probe], early: dict[ProbeId, _Early], nursery: trio.Nursery,
    ) -> Probe:
        """Carry out the plan's next request (or collect it, if it was sent early)."""
        step = request.step
        if request.id in early:
            return await early.pop(request.id).wait()
        sender = await sockets.get(step.socket)
        if not step.expect_reply:
            return await self._hairpin(request, sender, await sockets.get(0), dialect)
        if (along := sent_along(request)) is not None:
            early[along.id] = _Early()
            nursery.start_soon(self._early, early[along.id], along, sender, dialect,
                               expected_source(along, probes))
        return await self._ask(
            request, sender, dialect, expected=expected_source(request, probes),
            change_ip=step.change_ip, change_port=step.change_port,
        )

    async def _early(
        self, slot: _Early, request: ProbeRequest, sock: UdpSocket, dialect: Dialect,
        expected: Endpoint,
    ) -> None:
        step = request.step
        slot.probe = await self._ask(request, sock, dialect, expected=expected,
                                     change_ip=step.change_ip, change_port=step.change_port)
        slot.done.set()

    async def _phase(
        self, families: Sequence[Family], dialect: Dialect
    ) -> dict[Family, tuple[Endpoint, list[Probe]]]:
        found: dict[Family, tuple[Endpoint, list[Probe]]] = {}

        async def one(family: Family) -> None:
            found[family] = await self._family(family, dialect)

        async with trio.open_nursery() as nursery:
            for family in families:
                nursery.start_soon(one, family)
        return {f: found[f] for f in families}

    async def _classic_answers(self) -> bool:
        """The dialect check: one RFC 3489 Test I (no magic cookie) from a fresh socket."""
        async with self._sockets() as sockets:
            sock = await sockets.get(0)
            probe = await self._ask(
                ExtraRequest(ProbeId(Extra.DIALECT, ProbeTest.TEST1), self.settings.server), sock,
                Dialect.RFC3489,
            )
        self._record(probe, "dialect", Dialect.RFC3489, used=False)
        return probe.outcome is not ProbeOutcome.TIMEOUT

    # -- binding lifetime (RFC 5780 §4.6) ---------------------------------------------
    async def _lifetime_trial(self, wait: float) -> bool | None:
        """A fresh socket X learns its mapping and stays silent ``wait`` seconds; then a
        second socket asks the primary to answer to X's mapped port (RESPONSE-PORT).
        True: X got the answer; False: it did not; None: the trial could not start."""
        server = self.settings.server
        async with self._sockets() as sockets:
            x = await sockets.get(0)
            y = await sockets.get(1)
            probe = await self._ask(
                ExtraRequest(ProbeId(Extra.LIFETIME, ProbeTest.TEST1, wait_s=wait), server), x,
                Dialect.RFC5389,
            )
            self._record(probe, "lifetime", Dialect.RFC5389, used=False)
            if probe.outcome is not ProbeOutcome.OK or probe.mapped is None:
                return None
            if wait > 0:
                await trio.sleep(wait)  # the measurement itself: the binding stays idle
            check = ExtraRequest(ProbeId(Extra.LIFETIME, ProbeTest.CHECK, wait_s=wait), server)
            self.observer.probe_started(check.name, server)
            exchange = await self.transport.transaction(
                y, server, binding_request(response_port=probe.mapped[1]), accept=[x, y]
            )
            result = self._probe_from(check, exchange, server, y.local)
            self._record(result, "lifetime", Dialect.RFC5389, used=False)
            found = lifetime_check(
                result, exchange.reply is not None and exchange.reply.on == y.local
            )
            if isinstance(found, Finding):
                raise _Unsupported(found)
            return found

    async def _lifetime_round(self, waits: Sequence[float]) -> list[tuple[float, bool]]:
        """Trials side by side; one that finds the binding gone cancels the longer ones."""
        scopes = {wait: trio.CancelScope() for wait in waits}
        done: list[tuple[float, bool]] = []

        async def trial(wait: float) -> None:
            with scopes[wait]:
                alive = await self._lifetime_trial(wait)
                if alive is None:
                    return
                done.append((wait, alive))
                if not alive:
                    for other, scope in scopes.items():
                        if other > wait:
                            scope.cancel()

        async with trio.open_nursery() as nursery:
            for wait in waits:
                nursery.start_soon(trial, wait)
        return sorted(done)

    async def _lifetime(self, dialect: Dialect) -> LifetimeReport:
        if dialect is not Dialect.RFC5389:
            return LifetimeReport(None, (), Finding(Why.LIFETIME_NEEDS_RFC5389))
        limit = self.settings.lifetime_limit
        trials: list[tuple[float, bool]] = []
        try:
            if not await self._lifetime_trial(0.0):
                return LifetimeReport(None, (), Finding(Why.LIFETIME_RESPONSE_PORT_LOST))
            for _ in range(12):  # a bound on rounds; the schedule needs about five
                waits = lifetime_waits(
                    trials, first=limit / 20, limit=limit, resolution=limit / 60
                )
                if not waits:
                    break
                self.observer.waiting(len(waits), max(waits))
                trials.extend(await self._lifetime_round(waits))
        except _Unsupported as exc:
            return LifetimeReport(None, tuple(trials), exc.finding)
        return LifetimeReport(binding_lifetime(trials), tuple(trials))

    # -- the whole run ------------------------------------------------------------
    async def run(self) -> tuple[Verdict, Dialect, LifetimeReport | None, CrossCheck | None]:
        dialect = Dialect.RFC5389
        found = await self._phase(PHASES[0], dialect)
        if all(first_test1_outcome(probes) is ProbeOutcome.TIMEOUT
               for _, probes in found.values()):
            if await self._classic_answers():
                families = {str(f) for f in Family}
                self.records = [replace(r, used=False) if r.family in families else r
                                for r in self.records]
                self.alt_probe = None
                dialect = Dialect.RFC3489
                self._note(Finding(Why.DIALECT_RERUN))
                found = await self._phase(PHASES[0], dialect)
            else:
                self._note(Finding(Why.DIALECT_SILENT_TOO))
        reachable = any_mapped(p for _, probes in found.values() for p in probes)
        if reachable:
            for phase in PHASES[1:]:
                found.update(await self._phase(phase, dialect))
        lifetime: LifetimeReport | None = None
        if self.settings.lifetime:
            if reachable:
                lifetime = await self._lifetime(dialect)
            else:
                lifetime = LifetimeReport(None, (), Finding(Why.LIFETIME_NO_BINDING))
        probes = [p for _, family_probes in found.values() for p in family_probes]
        locals_ = {family: local for family, (local, _) in found.items()}
        trials = lifetime.trials if lifetime is not None and lifetime.result else None
        verdict = verdict_from_probes(locals_, probes, lifetime=trials)
        check: CrossCheck | None = None
        if self.alt_probe is not None:
            mapping_local, mapping_probes = found[Family.MAPPING]
            test1 = next((p for p in mapping_probes
                          if p.id == ProbeId(Family.MAPPING, ProbeTest.TEST1)), None)
            verdict, check = cross_check(verdict, test1, self.alt_probe, mapping_local)
        verdict = replace(verdict, notes=(*verdict.notes, *self.notes))
        return verdict, dialect, lifetime, check


async def _check_bindable(ip: str, port: int) -> None:
    """Raise OSError now, not from inside a family's task, when ``ip:port`` cannot be
    bound (not an address of this host, a port in use, a privileged port)."""
    sock = trio.socket.socket(family_of(ip), socket.SOCK_DGRAM)
    with sock:
        await sock.bind((ip, port))


@dataclass
class _Early:
    """A probe sent ahead of the plan asking for it."""

    done: trio.Event = field(default_factory=trio.Event)
    probe: Probe | None = None

    async def wait(self) -> Probe:
        await self.done.wait()
        assert self.probe is not None
        return self.probe


async def classify(settings: Settings, observer: Observer | None = None) -> Result:
    """Classify the path to ``settings.server``. Raises OSError when there is no route
    to it or a socket cannot be bound (``--local`` not an address of this host)."""
    observer = observer or Observer()
    started = trio.current_time()
    local_ip = settings.local_ip or await route_source(settings.server)
    await _check_bindable(local_ip, settings.local_port or 0)
    async with trio.open_nursery() as nursery:
        transport = Transport(nursery, settings.timing)
        run = _Run(settings, transport, local_ip, observer)
        try:
            verdict, dialect, lifetime, check = await run.run()
        finally:
            transport.close_all()

    return Result(
        verdict=verdict,
        server_name=settings.server_name,
        server=settings.server,
        alternate=first_alternate(r.probe for r in run.records if r.used),
        dialect=dialect,
        software=run.software,
        probes=tuple(run.records),
        duration_s=round(trio.current_time() - started, 3),
        local_ip=local_ip,
        timing=settings.timing,
        cross_check=check,
        lifetime=lifetime,
        counters=transport.counters,
    )


@dataclass(frozen=True)
class Skipped:
    """An address family that was not classified, and why."""

    server: Endpoint
    finding: Finding


async def classify_both(
    primary: Settings, ipv6: Settings | None, observer: Observer | None = None
) -> tuple[Result, Result | Skipped | None]:
    """The primary classification and, when the server also has an IPv6 address, an
    IPv6 one alongside (fresh sockets of their own). Only the primary may raise."""
    results: dict[str, Result | Skipped] = {}

    async def second(settings: Settings) -> None:
        try:
            results["ipv6"] = await classify(settings, observer)
        except OSError as exc:
            results["ipv6"] = Skipped(
                settings.server, Finding(Why.NO_IPV6_PATH, detail=str(exc.strerror or exc))
            )

    async with trio.open_nursery() as nursery:
        if ipv6 is not None:
            nursery.start_soon(second, ipv6)
        results["primary"] = await classify(primary, observer)
    first = results["primary"]
    assert isinstance(first, Result)
    second_result = results.get("ipv6")
    if isinstance(second_result, Result):
        verdict = beside_primary(second_result.verdict, first.verdict)
        second_result = replace(second_result, verdict=verdict)
    return first, second_result


__all__ = [
    "Dialect",
    "LifetimeReport",
    "NatType",
    "Observer",
    "ProbeRecord",
    "Result",
    "Settings",
    "Skipped",
    "classify",
    "classify_both",
]
