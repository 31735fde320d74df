"""StreamSlots: TCP/TLS connection slots bounded in total and per source IP, where the
oldest connection without an allocation makes room for a newcomer."""

from __future__ import annotations

from collections import Counter

from natsrv.net.tcp import StreamSlots


def five_tuple(ip: str, port: int) -> tuple[str, tuple[str, int], tuple[str, int]]:
    return ("tcp", (ip, port), ("127.0.0.1", 3478))


async def test_full_slots_evict_the_oldest_connection_without_an_allocation() -> None:
    allocated: set[tuple[str, tuple[str, int], tuple[str, int]]] = set()
    counters: Counter[str] = Counter()
    slots = StreamSlots(3, 10, allocated.__contains__, counters)
    first, second, third = (slots.admit(f"127.0.0.{i}") for i in (1, 2, 3))
    assert first and second and third and len(slots) == 3
    for i, slot in enumerate((first, second, third), 1):
        slot.five_tuple = five_tuple(f"127.0.0.{i}", 5000)
    allocated.add(first.five_tuple)  # the oldest authenticated and holds an allocation
    fourth = slots.admit("127.0.0.4")
    assert fourth is not None and len(slots) == 3
    assert second.scope.cancel_called and not first.scope.cancel_called
    assert counters["stream_evicted"] == 1
    # A connection still in its handshake (no 5-tuple yet) is fair game too.
    fifth = slots.admit("127.0.0.5")
    assert fifth is not None and third.scope.cancel_called
    # When every slot holds an allocation, the newcomer is refused.
    for slot in (fourth, fifth):
        slot.five_tuple = five_tuple(slot.ip, 6000)
        allocated.add(slot.five_tuple)
    assert slots.admit("127.0.0.6") is None
    # Releasing an evicted slot twice (its task ends later) changes nothing.
    slots.release(second)
    assert len(slots) == 3


async def test_one_source_cannot_take_more_than_its_share() -> None:
    counters: Counter[str] = Counter()
    slots = StreamSlots(100, 2, lambda ft: False, counters)
    a, b = slots.admit("127.0.0.9"), slots.admit("127.0.0.9")
    assert a and b and slots.admit("127.0.0.9") is None
    assert counters["stream_refused_per_source"] == 1
    assert slots.admit("127.0.0.10") is not None
    slots.release(a)
    assert slots.admit("127.0.0.9") is not None
