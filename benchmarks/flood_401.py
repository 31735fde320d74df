"""Honest clients' 401s during a spoofed flood of unsigned Allocates (sans-IO, no sockets).

Drives the TURN core (``TurnServer.handle``) with a flood of unsigned Allocates from many
spoofed source addresses at a given rate, interleaved with honest clients that send the
same unsigned Allocate a browser sends first and retransmit it as RFC 8489 §6.2.1 says
(after 0.5, 1.5, 3.5 s). *Returning* clients authenticated from their address a minute
before; *new* clients never did. Prints, per flood rate, the share of each kind whose
401 came back at the first transmission, by the second and by the fourth, and the 401s
per second the flood itself got (the reflected volume; ``unauth-global-rate`` bounds
it, plus its one-second burst spread over the run, 1.5 times over for a flood that
repeats every request). Honest clients start in the second half of the run, once the
flood has spent the burst.

    python benchmarks/flood_401.py [--rates 30000,100000] [--seconds 3] [--clients 200]
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from natsrv.core.credentials import StaticUsers
from natsrv.core.nonce import NonceFactory
from natsrv.core.policy import PeerPolicy
from natsrv.core.turn import TurnServer, TurnSettings
from natsrv.stun import Attr, MessageClass, Method, decode_untrusted
from natsrv.stun.integrity import long_term_key
from natsrv.stun.message import encode_message

SERVER = ("198.51.100.1", 3478)
RETRANSMITS = (0.0, 0.5, 1.5, 3.5)


class NoRelays:
    def bind(self, ip: str, port: int) -> bool:
        return True

    def bind_tcp(self, ip: str, port: int) -> bool:
        return True

    def close(self, relay: tuple[str, int]) -> None:
        pass


def allocate(tid: bytes, attrs: list[tuple[int, object]] | None = None,
             key: bytes | None = None) -> bytes:  # fmt: skip
    return encode_message(Method.ALLOCATE, MessageClass.REQUEST, tid,
                          [(Attr.REQUESTED_TRANSPORT, 17), *(attrs or [])], key=key,
                          fingerprint=True)  # fmt: skip


def run(rate: int, seconds: float, clients: int, budget: float, seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    turn = TurnServer(
        TurnSettings(realm="r", relay_ips=("198.51.100.1",), unauth_global_rate=budget,
                     max_allocations=10**6, user_quota=10**6),
        credentials=StaticUsers({"u": "p"}), nonces=NonceFactory(bytes(32), 600),
        policy=PeerPolicy(), opener=NoRelays(),
    )  # fmt: skip
    now0 = 1_700_000_000.0
    returning = [("udp", (f"127.1.{i // 250}.{i % 250 + 1}", 40000), SERVER)
                 for i in range(clients)]  # fmt: skip
    newcomers = [("udp", (f"127.2.{i // 250}.{i % 250 + 1}", 40000), SERVER)
                 for i in range(clients)]  # fmt: skip
    key = long_term_key("u", "r", "p")
    for ft in returning:  # each authenticates once, a minute before the flood
        challenge = decode_untrusted(turn.handle(decode_untrusted(allocate(rng.randbytes(12))),
                                                 ft, now0 - 60)[0].data)  # fmt: skip
        signed = allocate(rng.randbytes(12), [(Attr.USERNAME, "u"), (Attr.REALM, "r"),
                                              (Attr.NONCE, challenge.get(Attr.NONCE))], key)
        turn.handle(decode_untrusted(signed), ft, now0 - 60)
    sources = [f"127.{rng.randrange(3, 256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
               for _ in range(max(2000, rate // 50))]  # fmt: skip
    events: list[tuple[float, int, int, tuple[str, tuple[str, int], tuple[str, int]], bytes]] = []
    for n in range(int(rate * seconds)):
        ft = ("udp", (rng.choice(sources), rng.randrange(1024, 65536)), SERVER)
        events.append((now0 + n / rate, n, -1, ft, rng.randbytes(12)))
    everyone = returning + newcomers
    for index, ft in enumerate(everyone):
        # after the global budget's one-second burst is spent, with time to retransmit
        start, tid = now0 + rng.uniform(seconds / 2, seconds - 3.6), rng.randbytes(12)
        for delay in RETRANSMITS:
            events.append((start + delay, len(events), index, ft, tid))
    heapq.heapify(events)
    answered: dict[int, int] = {}
    sends: dict[int, int] = {}
    flood_answers = 0
    while events:
        now, _, index, ft, tid = heapq.heappop(events)
        if index >= 0:
            if index in answered:
                continue
            sends[index] = sends.get(index, 0) + 1
        if turn.handle(decode_untrusted(allocate(tid)), ft, now):
            if index >= 0:
                answered[index] = sends[index]
            else:
                flood_answers += 1

    def share(group: range, by: int) -> float:
        return round(100 * sum(1 for i in group if answered.get(i, 99) <= by) / len(group), 1)

    old, new = range(clients), range(clients, 2 * clients)
    return {
        "flood_per_s": rate, "budget_per_s": budget, "seconds": seconds,
        "returning_first_send_pct": share(old, 1), "returning_by_4th_pct": share(old, 4),
        "new_first_send_pct": share(new, 1), "new_by_2nd_pct": share(new, 2),
        "new_by_4th_pct": share(new, 4),
        "flood_401_per_s": round(flood_answers / seconds),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="30000,100000", help="flood rates, per second")
    parser.add_argument("--seconds", type=float, default=8.0, help="simulated seconds (>= 8)")
    parser.add_argument("--clients", type=int, default=200, help="honest clients of each kind")
    parser.add_argument("--budget", type=float, default=20000.0, help="unauth-global-rate")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [run(int(r), args.seconds, args.clients, args.budget, args.seed)
            for r in args.rates.split(",")]  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        print("  ".join(f"{k}={v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
