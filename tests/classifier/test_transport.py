"""The classifier's transport and run on loopback (no root): RFC 8489 retransmission,
transaction-ID and source validation, reading both dialects, natsrv in this trio run
(127.0.0.1 with alternate 127.0.0.2: open-internet), limited servers (fake_stun.py),
the cross-check, the lifetime schedule, and IPv6 alongside IPv4."""

from __future__ import annotations

import errno
import itertools
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import replace

import pytest
import trio

from classifier.binding import (
    DEFAULT_TIMING,
    RFC8489_TIMING,
    Retransmission,
    binding_request,
    read_binding_response,
)
from classifier.crosscheck import cross_check
from classifier.model import (
    Behavior,
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
from classifier.plan import lifetime_waits
from classifier.report import reason, say
from classifier.run import Dialect, Settings, Skipped, classify, classify_both
from classifier.transport import Transport, route_source
from natsrv.net.serve import ServerInfo, serve
from natsrv.stun import (
    MAGIC_COOKIE,
    Attr,
    ChangeRequest,
    ErrorCodeValue,
    Message,
    MessageClass,
    Method,
    decode_untrusted,
)
from tests.conftest import ALT_IP, PRIMARY_IP, free_port, stun_config
from tests.lab.fake_stun import FakeConfig, serve_fake

Endpoint = tuple[str, int]

#: Fast retransmission for loopback: sends at 0, 20, 60, 140 ms, failure at 300 ms.
FAST = Retransmission(0.02, 4, 8)

# --------------------------------------------------------------------------- timing


def test_default_schedule_gives_up_after_one_and_a_half_seconds() -> None:
    assert DEFAULT_TIMING.offsets == pytest.approx((0, 0.1, 0.3, 0.7))
    assert DEFAULT_TIMING.total == pytest.approx(1.5)


def test_rfc8489_schedule() -> None:
    # RFC 8489 §6.2.1: "... the client will have sent seven requests, at times 0 ms,
    # 500 ms, 1500 ms, 3500 ms, 7500 ms, 15500 ms, and 31500 ms ... fail at 39500 ms".
    assert RFC8489_TIMING.offsets == pytest.approx((0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5))
    assert RFC8489_TIMING.total == pytest.approx(39.5)


def test_timeout_scales_the_rto() -> None:
    scaled = DEFAULT_TIMING.for_timeout(3.0)
    assert (scaled.rc, scaled.rm) == (4, 8)
    assert scaled.rto == pytest.approx(0.2)
    assert scaled.total == pytest.approx(3.0)
    with pytest.raises(ValueError, match="positive"):
        DEFAULT_TIMING.for_timeout(0)
    with pytest.raises(ValueError, match="RTO"):
        Retransmission(0.1, 0, 8)


# --------------------------------------------------------------------------- requests


def test_request_dialects_and_change_request() -> None:
    modern = binding_request()
    assert modern.cookie and len(modern.transaction_id) == 12
    assert modern.attributes == []  # no CHANGE-REQUEST unless a flag is set
    wire = decode_untrusted(binding_request(change_port=True).encode())
    assert wire.get(Attr.CHANGE_REQUEST) == ChangeRequest(False, True)
    assert decode_untrusted(binding_request(response_port=4000).encode()).get(
        Attr.RESPONSE_PORT) == 4000
    for _ in range(200):
        classic = binding_request(cookie=False)
        raw = classic.encode()
        assert int.from_bytes(raw[4:8], "big") != MAGIC_COOKIE
        assert not decode_untrusted(raw).cookie
        assert decode_untrusted(raw).transaction_id == classic.transaction_id


def _reply(attrs: list[tuple[int, object]], *, cookie: bool = True,
           cls: int = MessageClass.SUCCESS, method: int = Method.BINDING) -> Message:
    request = Message(method, MessageClass.REQUEST, cookie=cookie)
    return decode_untrusted(request.reply(cls, attrs).encode())


def test_reading_a_modern_reply() -> None:
    reply = read_binding_response(_reply([
        (Attr.XOR_MAPPED_ADDRESS, ("203.0.113.5", 4000)),
        (Attr.MAPPED_ADDRESS, ("10.0.0.5", 4000)),
        (Attr.RESPONSE_ORIGIN, ("198.51.100.1", 3478)),
        (Attr.OTHER_ADDRESS, ("198.51.100.2", 3479)),
        (Attr.SOFTWARE, "x"),
    ]))
    assert reply is not None and reply.success
    assert reply.mapped == ("203.0.113.5", 4000)
    assert reply.legacy_mapped == ("10.0.0.5", 4000)
    assert reply.response_origin == ("198.51.100.1", 3478)
    assert reply.other_address == ("198.51.100.2", 3479)
    assert reply.software == "x"


def test_reading_a_classic_reply() -> None:
    reply = read_binding_response(_reply([
        (Attr.MAPPED_ADDRESS, ("203.0.113.5", 4000)),
        (Attr.SOURCE_ADDRESS, ("198.51.100.1", 3478)),
        (Attr.CHANGED_ADDRESS, ("198.51.100.2", 3479)),
    ], cookie=False))
    assert reply is not None
    assert (reply.mapped, reply.legacy_mapped) == (("203.0.113.5", 4000), None)
    assert reply.response_origin == ("198.51.100.1", 3478)
    assert reply.other_address == ("198.51.100.2", 3479)


def test_reading_an_xor_only_reply_and_preferences() -> None:
    reply = read_binding_response(_reply([
        (Attr.XOR_MAPPED_ADDRESS, ("203.0.113.5", 4000)),
        (Attr.CHANGED_ADDRESS, ("192.0.2.9", 1)),
        (Attr.OTHER_ADDRESS, ("198.51.100.2", 3479)),
    ]))
    assert reply is not None
    assert (reply.mapped, reply.legacy_mapped) == (("203.0.113.5", 4000), None)
    assert reply.other_address == ("198.51.100.2", 3479)  # RFC 5780's attribute wins


def test_reading_errors_and_non_responses() -> None:
    error = read_binding_response(_reply(
        [(Attr.ERROR_CODE, ErrorCodeValue(420, "Unknown Attribute"))], cls=MessageClass.ERROR))
    assert error is not None and not error.success and error.error_code == 420
    assert error.mapped is None
    bare = read_binding_response(_reply([], cls=MessageClass.ERROR))
    assert bare is not None and bare.error_code is None
    assert read_binding_response(_reply([], cls=MessageClass.REQUEST)) is None
    assert read_binding_response(_reply([], method=Method.ALLOCATE)) is None


# --------------------------------------------------------------------------- transactions

Handler = Callable[[trio.socket.SocketType, bytes, tuple[str, int], int], Awaitable[None]]


async def scripted_server(nursery: trio.Nursery, handler: Handler) -> Endpoint:
    """A UDP server on 127.0.0.1 calling ``handler(sock, data, src, n)`` for the n-th
    datagram (from 1)."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind((PRIMARY_IP, 0))

    async def loop() -> None:
        with sock:
            n = 0
            while True:
                data, src = await sock.recvfrom(2048)
                n += 1
                await handler(sock, data, src, n)

    nursery.start_soon(loop)
    return PRIMARY_IP, sock.getsockname()[1]


def success(data: bytes, src: tuple[str, int]) -> bytes:
    request = decode_untrusted(data)
    return request.reply(MessageClass.SUCCESS, [(Attr.XOR_MAPPED_ADDRESS, src)]).encode()


async def test_retransmits_until_answered(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[tuple[float, bytes]] = []

    async def drop_two(sock: trio.socket.SocketType, data: bytes, src: tuple[str, int],
                       n: int) -> None:
        seen.append((trio.current_time(), data))
        if n > 2:
            await sock.sendto(success(data, src), src)

    server = await scripted_server(nursery, drop_two)
    transport = Transport(nursery, FAST)
    sock = await transport.open((PRIMARY_IP, 0))
    exchange = await transport.transaction(sock, server, binding_request())
    assert exchange.reply is not None
    assert exchange.attempts == 3
    assert exchange.reply.source == server
    assert len({data for _, data in seen}) == 1  # retransmissions are the same bytes
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(seen)]
    assert gaps[0] >= FAST.rto * 0.9 and gaps[1] >= 2 * FAST.rto * 0.9  # RTO doubles
    assert exchange.rtt_ms is not None and exchange.rtt_ms >= 3 * FAST.rto * 1000 * 0.9
    transport.close_all()


async def test_gives_up_after_rc_sends(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[bytes] = []
    all_seen = trio.Event()

    async def silent(sock: trio.socket.SocketType, data: bytes, src: tuple[str, int],
                     n: int) -> None:
        seen.append(data)
        if n == FAST.rc:
            all_seen.set()

    server = await scripted_server(nursery, silent)
    transport = Transport(nursery, FAST)
    sock = await transport.open((PRIMARY_IP, 0))
    start = trio.current_time()
    exchange = await transport.transaction(sock, server, binding_request())
    assert exchange.reply is None and exchange.rtt_ms is None
    assert exchange.attempts == FAST.rc
    assert trio.current_time() - start >= FAST.total * 0.95
    with trio.fail_after(1):
        await all_seen.wait()
    assert len(seen) == FAST.rc
    transport.close_all()


async def test_wrong_transaction_id_and_garbage_are_ignored(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def tricky(sock: trio.socket.SocketType, data: bytes, src: tuple[str, int],
                     n: int) -> None:
        request = decode_untrusted(data)
        wrong = Message(Method.BINDING, MessageClass.SUCCESS,
                        bytes(b ^ 0xFF for b in request.transaction_id),
                        [(Attr.XOR_MAPPED_ADDRESS, ("192.0.2.1", 1))])
        await sock.sendto(wrong.encode(), src)
        await sock.sendto(b"\x01\x01\x00\x00garbage", src)
        await sock.sendto(success(data, src), src)

    server = await scripted_server(nursery, tricky)
    transport = Transport(nursery, FAST)
    sock = await transport.open((PRIMARY_IP, 0))
    exchange = await transport.transaction(sock, server, binding_request())
    assert exchange.reply is not None and exchange.attempts == 1
    reply = read_binding_response(exchange.reply.message)
    assert reply is not None and reply.mapped == sock.local  # not 192.0.2.1
    assert (transport.counters.unmatched, transport.counters.malformed) == (1, 1)
    transport.close_all()


async def test_only_wrong_transaction_ids_is_a_timeout(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def wrong_only(sock: trio.socket.SocketType, data: bytes, src: tuple[str, int],
                         n: int) -> None:
        request = decode_untrusted(data)
        tid = bytes(b ^ 1 for b in request.transaction_id)
        await sock.sendto(Message(Method.BINDING, MessageClass.SUCCESS, tid).encode(), src)

    server = await scripted_server(nursery, wrong_only)
    transport = Transport(nursery, FAST)
    sock = await transport.open((PRIMARY_IP, 0))
    exchange = await transport.transaction(sock, server, binding_request())
    assert exchange.reply is None
    assert transport.counters.unmatched == FAST.rc
    transport.close_all()


async def test_reply_on_another_socket_is_accepted_only_when_asked(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RESPONSE-PORT sends the answer to another of our sockets: accepted there only
    when the transaction says so."""
    transport = Transport(nursery, FAST)
    asker = await transport.open((PRIMARY_IP, 0))
    other = await transport.open((PRIMARY_IP, 0))

    async def to_other(sock: trio.socket.SocketType, data: bytes, src: tuple[str, int],
                       n: int) -> None:
        await sock.sendto(success(data, src), other.local)

    server = await scripted_server(nursery, to_other)
    plain = await transport.transaction(asker, server, binding_request())
    assert plain.reply is None
    redirected = await transport.transaction(asker, server, binding_request(),
                                             accept=[asker, other])
    assert redirected.reply is not None and redirected.reply.on == other.local
    transport.close_all()


async def test_route_source_is_the_address_the_kernel_uses() -> None:
    assert await route_source((ALT_IP, 9)) in (PRIMARY_IP, ALT_IP)
    assert await route_source(("127.0.0.1", 9)) == "127.0.0.1"


# --------------------------------------------------------------------------- whole runs


def settings(server: Endpoint, **kw: object) -> Settings:
    return Settings(server, timing=FAST, **kw)  # type: ignore[arg-type]


async def test_natsrv_on_loopback_is_open_internet(
    stun_server: ServerInfo,
    autojump_clock: trio.testing.MockClock,
) -> None:
    primary = stun_server.udp[0]
    result = await classify(settings(primary))
    v = result.verdict
    assert (v.nat_type, v.mapping, v.filtering) == (
        NatType.OPEN_INTERNET, Behavior.ENDPOINT_INDEPENDENT, Behavior.ENDPOINT_INDEPENDENT)
    assert v.hairpinning is None  # no NAT: not applicable
    assert not v.inconclusive and v.finding is None
    assert v.local_address is not None and v.local_address[0] == PRIMARY_IP  # not 0.0.0.0
    assert v.mapped_address == v.local_address
    assert result.alternate is not None and result.alternate[0] == ALT_IP
    assert result.dialect is Dialect.RFC5389
    assert result.software == "natsrv-test"
    assert result.local_ip == PRIMARY_IP
    assert all(r.probe.outcome is ProbeOutcome.OK for r in result.probes)
    test2 = next(r.probe for r in result.probes if r.probe.name == "filtering/test2")
    assert test2.flags == ("change-ip", "change-port")
    assert test2.source == result.alternate  # validated: it came from the alternate
    assert v.port_allocation is not None and v.port_allocation.preserves_port
    assert result.duration_s < 1.0


async def test_every_family_uses_its_own_sockets(
    stun_server: ServerInfo,
    autojump_clock: trio.testing.MockClock,
) -> None:
    result = await classify(settings(stun_server.udp[0]))
    by_family: dict[str, set[Endpoint]] = {}
    for record in result.probes:
        assert record.probe.local is not None
        by_family.setdefault(record.family, set()).add(record.probe.local)
    # On loopback (no NAT) the hairpin family sends nothing from its second socket, and
    # the classic family sends Test II from its own second one (plan.py: the trap).
    assert [len(by_family[str(f)]) for f in (Family.CLASSIC, Family.MAPPING,
                                             Family.FILTERING, Family.HAIRPIN)] == [2, 1, 1, 1]
    assert len(by_family["port-allocation"]) == 4
    every = [ep for sockets in by_family.values() for ep in sockets]
    assert len(every) == len(set(every))  # no socket shared between families


async def start_fake(nursery: trio.Nursery, mode: str, **kw: object) -> Endpoint:
    primary = (PRIMARY_IP, free_port())
    alternate = (ALT_IP, free_port())
    config = FakeConfig(mode, primary, alternate, **kw)  # type: ignore[arg-type]
    await nursery.start(serve_fake, config)
    return primary


@pytest.mark.parametrize(("mode", "code"), [
    ("ignore-change", ReasonCode.CHANGE_REQUEST_IGNORED),
    ("reject-change", ReasonCode.CHANGE_REQUEST_REJECTED),
    ("xor-only", ReasonCode.NO_ALTERNATE_ADDRESS),
    ("alt-unreachable", ReasonCode.ALTERNATE_UNREACHABLE),
])
async def test_limited_servers_are_unknown_with_a_reason(
    nursery: trio.Nursery,
    mode: str,
    code: ReasonCode,
    autojump_clock: trio.testing.MockClock,
) -> None:
    result = await classify(settings(await start_fake(nursery, mode)))
    v = result.verdict
    assert (v.nat_type, v.reason_code) == (NatType.UNKNOWN, code), reason(v.finding)
    assert v.inconclusive and reason(v.finding)


async def test_change_request_ignored_is_a_bad_source(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
) -> None:
    primary = await start_fake(nursery, "ignore-change")
    result = await classify(settings(primary))
    test2 = next(r.probe for r in result.probes if r.probe.name == "classic/test2")
    assert test2.outcome is ProbeOutcome.BAD_SOURCE
    assert test2.source == primary


async def test_error_response_is_never_reachable(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
) -> None:
    result = await classify(settings(await start_fake(nursery, "reject-change")))
    test2 = next(r.probe for r in result.probes if r.probe.name == "filtering/test2")
    assert (test2.outcome, test2.error_code) == (ProbeOutcome.ERROR, 420)
    assert result.verdict.filtering is Behavior.UNKNOWN


async def test_a_plain_reply_from_another_port_is_a_bad_source(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
) -> None:
    elsewhere = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await elsewhere.bind((PRIMARY_IP, 0))

    async def answer_from_elsewhere(sock: trio.socket.SocketType, data: bytes,
                                    src: tuple[str, int], n: int) -> None:
        await elsewhere.sendto(success(data, src), src)

    server = await scripted_server(nursery, answer_from_elsewhere)
    elsewhere_address = elsewhere.getsockname()
    with elsewhere:
        result = await classify(settings(server))
    v = result.verdict
    assert (v.nat_type, v.reason_code) == (NatType.UNKNOWN, ReasonCode.UNEXPECTED_RESPONSE_SOURCE)
    test1 = next(r.probe for r in result.probes if r.probe.name == "classic/test1")
    assert test1.outcome is ProbeOutcome.BAD_SOURCE
    assert test1.source == elsewhere_address


async def test_classic_only_server_falls_back_and_says_so(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
) -> None:
    result = await classify(settings(await start_fake(nursery, "classic-only")))
    v = result.verdict
    assert v.nat_type is NatType.OPEN_INTERNET
    assert result.dialect is Dialect.RFC3489
    assert any("RFC 3489 requests" in say(note) for note in v.notes)
    dialect_probe = next(r for r in result.probes if r.family == "dialect")
    assert dialect_probe.probe.outcome is ProbeOutcome.OK and not dialect_probe.used
    modern = [r for r in result.probes if r.dialect is Dialect.RFC5389]
    assert len(modern) == 4 and not any(r.used for r in modern)
    assert all(r.probe.outcome is ProbeOutcome.TIMEOUT for r in modern)


async def test_silent_server_is_udp_blocked_after_trying_both_dialects(
    autojump_clock: trio.testing.MockClock,
) -> None:
    port = free_port()  # nothing listens there
    result = await classify(settings((PRIMARY_IP, port)))
    v = result.verdict
    assert v.nat_type is NatType.UDP_BLOCKED and not v.inconclusive
    assert v.reason_code is ReasonCode.NO_RESPONSE_FROM_SERVER
    assert any("went unanswered too" in say(note) for note in v.notes)
    assert {r.probe.name for r in result.probes} == {
        "classic/test1", "mapping/test1", "filtering/test1", "hairpin/test1", "dialect/test1"}
    assert result.duration_s < 2 * FAST.total + 0.5


async def test_alg_and_cgnat_hints(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
) -> None:
    alg = await classify(settings(await start_fake(nursery, "alg")))
    assert alg.verdict.alg_suspected
    assert sum("ALG" in say(note) for note in alg.verdict.notes) == 1
    cgnat = await classify(settings(await start_fake(nursery, "full", mapped_ip="100.64.7.9")))
    assert cgnat.verdict.cgnat_suspected
    assert cgnat.verdict.mapped_address is not None
    assert cgnat.verdict.mapped_address[0] == "100.64.7.9"


async def test_second_server_cross_check(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
) -> None:
    lone = await nursery.start(serve, stun_config(alt_ip=None, alt_port=None))
    other = await nursery.start(serve, stun_config(listen=((ALT_IP, free_port()),),
                                                   alt_ip=None, alt_port=None))
    result = await classify(settings(lone.udp[0], alt_server=other.udp[0]))
    assert result.cross_check is not None and result.cross_check.agrees is True
    assert "also sees no NAT" in say(result.cross_check.note)
    # Without an alternate the filtering stays unknown: a second server cannot test it.
    assert result.verdict.reason_code is ReasonCode.NO_ALTERNATE_ADDRESS
    alt_probe = next(r for r in result.probes if r.family == "cross-check")
    assert alt_probe.probe.target == other.udp[0] and not alt_probe.used


async def test_ipv6_alongside_ipv4(
    nursery: trio.Nursery,
    stun_server: ServerInfo,
    autojump_clock: trio.testing.MockClock,
) -> None:
    v6 = await nursery.start(serve, stun_config(listen=(("::1", free_port()),), alt_ip=None))
    primary, ipv6 = await classify_both(settings(stun_server.udp[0]), settings(v6.udp[0]))
    assert primary.verdict.nat_type is NatType.OPEN_INTERNET and primary.ip_version == 4
    assert isinstance(ipv6, type(primary)) and ipv6.ip_version == 6
    assert ipv6.local_ip == "::1"
    assert ipv6.verdict.mapping is Behavior.ENDPOINT_INDEPENDENT  # no NAT on ::1
    # One IPv6 loopback address: the alternate is on the same IP, so no type.
    assert ipv6.verdict.reason_code is ReasonCode.ALTERNATE_SAME_IP


async def test_ipv6_without_a_route_is_skipped(
    stun_server: ServerInfo,
    monkeypatch: pytest.MonkeyPatch,
    autojump_clock: trio.testing.MockClock,
) -> None:
    real = route_source

    async def no_ipv6_route(server: Endpoint) -> str:
        if ":" in server[0]:
            raise OSError(errno.ENETUNREACH, os.strerror(errno.ENETUNREACH))
        return await real(server)

    monkeypatch.setattr("classifier.run.route_source", no_ipv6_route)
    primary, ipv6 = await classify_both(settings(stun_server.udp[0]),
                                        settings(("2001:db8::1", 3478)))
    assert primary.verdict.nat_type is NatType.OPEN_INTERNET
    assert isinstance(ipv6, Skipped)
    assert say(ipv6.finding) == "no IPv6 path: Network is unreachable"


async def test_local_address_that_is_not_ours_fails_before_probing() -> None:
    with pytest.raises(OSError):
        await classify(settings((PRIMARY_IP, 3478), local_ip="192.0.2.200"))


async def test_local_port_is_used_by_the_classic_tests(
    stun_server: ServerInfo,
    autojump_clock: trio.testing.MockClock,
) -> None:
    port = free_port()
    result = await classify(settings(stun_server.udp[0], local_ip=PRIMARY_IP, local_port=port))
    first = [r.probe for r in result.probes
             if r.family == "classic" and r.probe.name in ("classic/test1", "classic/test1_alt")]
    assert first and all(p.local == (PRIMARY_IP, port) for p in first)
    assert result.verdict.nat_type is NatType.OPEN_INTERNET


# --------------------------------------------------------------------------- lifetime


async def test_lifetime_on_loopback_outlives_the_limit(
    stun_server: ServerInfo,
    autojump_clock: trio.testing.MockClock,
) -> None:
    result = await classify(settings(stun_server.udp[0], lifetime=True, lifetime_limit=0.2))
    life = result.lifetime
    assert life is not None and life.result is not None
    assert life.result.lower_s == pytest.approx(0.2) and life.result.upper_s is None
    assert [wait for wait, _ in life.trials] == pytest.approx([0.01, 0.02, 0.04, 0.08, 0.16,
                                                               0.2])
    assert all(alive for _, alive in life.trials)


async def test_lifetime_needs_response_port(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
) -> None:
    result = await classify(settings(await start_fake(nursery, "ignore-change"),
                                     lifetime=True, lifetime_limit=0.2))
    life = result.lifetime
    assert life is not None and life.result is None
    assert life.reason_code is ReasonCode.LIFETIME_UNSUPPORTED
    assert life.finding is not None and "ignored RESPONSE-PORT" in say(life.finding)


def test_lifetime_schedule() -> None:
    assert lifetime_waits([], first=15, limit=300) == [15, 30, 60, 120, 240, 300]
    # Bracketed between 30 (alive) and 60 (gone): three trials split it in four.
    trials = [(15, True), (30, True), (60, False)]
    assert lifetime_waits(trials, first=15, limit=300, resolution=5) == [37.5, 45, 52.5]
    assert lifetime_waits([(40, True), (44, False)], resolution=5) == []
    assert lifetime_waits([(300, True)], limit=300) == []
    assert lifetime_waits([(15, False)], resolution=5) == [3.75, 7.5, 11.25]
    assert lifetime_waits([(30, False), (60, True)]) == []  # contradictory: stop
    with pytest.raises(ValueError, match="parallel"):
        lifetime_waits([], parallel=0)


# --------------------------------------------------------------------------- cross-check

LOCAL: Endpoint = ("10.0.0.2", 5000)
M1: Endpoint = ("203.0.113.1", 5000)
M2: Endpoint = ("203.0.113.1", 6000)
ALT: Endpoint = ("192.0.2.7", 3478)


def verdict(nat_type: NatType, mapping: Behavior, filtering: Behavior) -> Verdict:
    return Verdict(nat_type, None, mapping, filtering, None, M1, LOCAL, False, False)


def alt_probe(mapped: Endpoint | None, outcome: ProbeOutcome = ProbeOutcome.OK) -> Probe:
    return Probe(ProbeId(Family.MAPPING, ProbeTest.ALT_SERVER), ALT, outcome, mapped=mapped,
                 source=ALT)


MAPPING_TEST1 = ProbeId(Family.MAPPING, ProbeTest.TEST1)
TEST1 = Probe(MAPPING_TEST1, ("198.51.100.1", 3478), ProbeOutcome.OK, mapped=M1)
EI, APD, UNK = (Behavior.ENDPOINT_INDEPENDENT, Behavior.ADDRESS_AND_PORT_DEPENDENT,
                Behavior.UNKNOWN)


def test_cross_check_confirms_and_completes() -> None:
    known = verdict(NatType.PORT_RESTRICTED_CONE, EI, APD)
    v, check = cross_check(known, TEST1, alt_probe(M1), LOCAL)
    assert check.agrees is True and v.nat_type is NatType.PORT_RESTRICTED_CONE
    unknown = replace(verdict(NatType.UNKNOWN, UNK, APD),
                      finding=Finding(Why.NO_ALTERNATE))
    v, check = cross_check(unknown, TEST1, alt_probe(M1), LOCAL)
    assert (v.mapping, v.nat_type, v.reason_code) == (EI, NatType.PORT_RESTRICTED_CONE, None)
    v, check = cross_check(replace(unknown, filtering=UNK), TEST1, alt_probe(M2), LOCAL)
    assert (v.nat_type, v.mapping) == (NatType.SYMMETRIC, UNK)
    assert v.finding is None


def test_cross_check_contradictions_are_unknown() -> None:
    for known, mapped in ((verdict(NatType.PORT_RESTRICTED_CONE, EI, APD), M2),
                          (verdict(NatType.SYMMETRIC, APD, APD), M1)):
        v, check = cross_check(known, TEST1, alt_probe(mapped), LOCAL)
        assert check.agrees is False
        assert (v.nat_type, v.reason_code) == (NatType.UNKNOWN, ReasonCode.SERVERS_DISAGREE)
        assert v.inconclusive
    no_nat = Probe(MAPPING_TEST1, ("198.51.100.1", 3478), ProbeOutcome.OK, mapped=LOCAL)
    v, check = cross_check(verdict(NatType.OPEN_INTERNET, EI, EI), no_nat, alt_probe(M1), LOCAL)
    assert v.reason_code is ReasonCode.SERVERS_DISAGREE


def test_cross_check_without_an_answer_changes_nothing() -> None:
    known = verdict(NatType.FULL_CONE, EI, EI)
    v, check = cross_check(known, TEST1, alt_probe(None, ProbeOutcome.TIMEOUT), LOCAL)
    assert check.agrees is None and "did not answer" in say(check.note)
    assert v.nat_type is NatType.FULL_CONE
