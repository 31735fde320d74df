"""A spoofed flood of unsigned Allocates above the global 401 budget must not starve
honest clients, and must not get more than a bounded number of answers."""

from __future__ import annotations

import heapq
import random

from natsrv.stun import Attr, MessageClass, Method, decode_untrusted
from natsrv.stun.message import encode_message

from .turn_helpers import NOW, SERVER, Client, make_server

BUDGET = 1000.0  #: unauth-global-rate in this test
FLOOD_RATE = 5000  #: spoofed Allocates per second, five times the budget
DURATION = 2.0
RETRANSMIT_AFTER = (0.0, 0.5, 1.5)  #: RFC 8489 §6.2.1: RTO 500 ms, doubling


def unsigned_allocate(tid: bytes) -> bytes:
    # What a browser sends first: REQUESTED-TRANSPORT and FINGERPRINT (36 bytes).
    return encode_message(Method.ALLOCATE, MessageClass.REQUEST, tid,
                          [(Attr.REQUESTED_TRANSPORT, 17)], fingerprint=True)  # fmt: skip


def test_spoofed_flood_leaves_returning_and_new_clients_answered() -> None:
    rng = random.Random(7)
    server, _ = make_server(unauth_rate=20.0, unauth_global_rate=BUDGET)
    # Returning clients authenticated a while ago from their addresses.
    returning = [("udp", (f"127.1.0.{i + 1}", 40000), SERVER) for i in range(20)]
    for ft in returning:
        answer, _ = Client(server, ft).allocate(now=NOW - 60)
        assert answer.cls == MessageClass.SUCCESS
    newcomers = [("udp", (f"127.2.0.{i + 1}", 40000), SERVER) for i in range(20)]
    spoofed = [f"127.{rng.randrange(3, 256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
               for _ in range(2000)]  # fmt: skip
    # (time, order, five_tuple, transaction ID, client index or -1 for the flood)
    events: list[tuple[float, int, tuple[str, tuple[str, int], tuple[str, int]], bytes, int]]
    events = []
    for n in range(int(FLOOD_RATE * DURATION)):
        ft = ("udp", (rng.choice(spoofed), rng.randrange(1024, 65536)), SERVER)
        events.append((NOW + n / FLOOD_RATE, len(events), ft, rng.randbytes(12), -1))
    clients = returning + newcomers
    tids = [rng.randbytes(12) for _ in clients]
    for index, ft in enumerate(clients):
        start = NOW + rng.uniform(0.1, DURATION - 1.6)
        for delay in RETRANSMIT_AFTER:
            events.append((start + delay, len(events), ft, tids[index], index))
    heapq.heapify(events)
    answered_at: dict[int, int] = {}  # client index -> which transmission was answered
    sends: dict[int, int] = {}
    floods_answered = 0
    while events:
        now, _, ft, tid, index = heapq.heappop(events)
        if index >= 0:
            if index in answered_at:
                continue  # answered: it does not retransmit
            sends[index] = sends.get(index, 0) + 1
        effects = server.handle(decode_untrusted(unsigned_allocate(tid)), ft, now)
        if effects:
            assert decode_untrusted(effects[0].data).get(Attr.ERROR_CODE).code == 401
            if index >= 0:
                answered_at[index] = sends[index]
            else:
                floods_answered += 1
    # Returning clients skip the global budget: answered at once.
    assert all(answered_at.get(i) == 1 for i in range(len(returning)))
    # A new client's retransmission draws on the retransmission budget, which a flood of
    # fresh requests never touches: answered at the first send or the second.
    new = range(len(returning), len(clients))
    assert all(answered_at.get(i, 99) <= 2 for i in new), [answered_at.get(i) for i in new]
    # The flood got no more than the global budget (with its one-second burst).
    assert floods_answered <= BUDGET * (DURATION + 1)


def test_a_repeating_flood_gets_at_most_one_and_a_half_budgets() -> None:
    rng = random.Random(8)
    server, _ = make_server(unauth_rate=0.0, unauth_global_rate=BUDGET)
    answered = 0
    total = int(FLOOD_RATE * DURATION)
    for n in range(0, total, 2):
        ft = ("udp", (f"127.{rng.randrange(3, 256)}.{rng.randrange(256)}.9", 5000), SERVER)
        tid = rng.randbytes(12)
        for _ in range(2):  # every request sent twice, as a retransmission would be
            answered += bool(server.handle(decode_untrusted(unsigned_allocate(tid)), ft,
                                           NOW + n / FLOOD_RATE))  # fmt: skip
    assert answered <= 1.5 * BUDGET * (DURATION + 1)
    assert server.counters["unauth_dropped"] == total - answered
