"""Soak: many allocations held for a long time with churn, against a real ``natsrv
serve`` on loopback; afterwards nothing may be left behind.

``--allocations`` clients (10,000), each on its own UDP socket from its own
loopback address (127.50.0.0/16), ramp up over the first tenth of ``--duration``
and then, until it ends: allocate (the 401, then signed), bind a channel to one of
a few echoing UDP peers and keep it refreshed (ChannelBind again at half its
lifetime), refresh the allocation at half its lifetime, send ChannelData every
``--traffic-interval`` seconds (the peer echoes it back through the relay), and a
Send indication now and then. Some let things expire on purpose: a fifth of the
clients add a permission for a second peer and never refresh it, another fifth a
second channel; every so often (``--churn``, per client per minute) a client deletes
its allocation (Refresh 0) and starts over on a new socket; 1 % vanish without a
word, leaving their allocations to expire. Lifetimes are shortened in proportion to
the duration (``default-lifetime`` = duration / 5, permissions / 10, channels /
7.5, at least 5 s), so every kind of expiry happens many times.

At the end the remaining clients delete their allocations; the script waits for the
vanished ones to expire, then reads from the process: allocations, permissions,
channels and timers (``/metrics``), free relay ports, open descriptors
(``/proc/PID/fd``), trio tasks, and RSS, against what they were before the first
client came. It also reports RSS against a warm state: after a first, short round of
the same load (``--warmup`` allocations, a tenth of the duration) has come and gone,
which is what a server that has run for a while looks like: CPython keeps freed memory
in its pools, and the bounded tables of recently seen clients (401 rate limits,
recently authenticated addresses) are full.

    python benchmarks/soak.py                                    # 10,000 for 10 minutes
    python benchmarks/soak.py --allocations 2000 --duration 30 --json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.natsrv_process import NatsrvProcess, raise_nofile  # noqa: E402
from natsrv.stun import (  # noqa: E402
    Attr,
    Message,
    MessageClass,
    Method,
    ParseError,
    decode_untrusted,
    encode_channel_data,
)
from natsrv.stun.integrity import long_term_key  # noqa: E402

IP = "127.0.0.1"
REALM = "soak.test"
USER, PASSWORD = "alice", "wonderland"
KEY = long_term_key(USER, REALM, PASSWORD)
PEERS = 8
RELAY_PORTS = (20000, 59999)
Address = tuple[str, int]


@dataclass
class Stats:
    allocations: int = 0
    deletes: int = 0
    vanished: int = 0
    refreshes: int = 0
    channel_binds: int = 0
    permissions: int = 0
    sent: int = 0
    echoed: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    live: int = 0
    peak_live: int = 0

    def fail(self, what: str) -> None:
        self.failures[what] = self.failures.get(what, 0) + 1


class Client:
    """One client 5-tuple (a socket) and its allocation."""

    def __init__(self, sock: trio.socket.SocketType, server: Address, stats: Stats) -> None:
        self.sock, self.server, self.stats = sock, server, stats
        self.nonce: str | None = None

    async def request(self, method: int, *attrs: tuple[int, Any]) -> Message | None:
        for _ in range(3):
            msg = Message(method, MessageClass.REQUEST, attributes=list(attrs))
            if self.nonce is not None:
                msg.attributes += [(Attr.USERNAME, USER), (Attr.REALM, REALM),
                                   (Attr.NONCE, self.nonce)]  # fmt: skip
            data = msg.encode(key=KEY if self.nonce else None, fingerprint=True)
            reply = await self.transact(data, msg.transaction_id)
            if reply is None:
                return None
            code = reply.get(Attr.ERROR_CODE)
            fresh = reply.get(Attr.NONCE)
            if code is not None and code.code in (401, 438) and fresh and fresh != self.nonce:
                self.nonce = fresh
                continue
            return reply
        return None

    async def transact(self, data: bytes, tid: bytes) -> Message | None:
        rto = 0.5
        for _ in range(5):
            await self.sock.sendto(data, self.server)
            with trio.move_on_after(rto):
                while True:
                    raw = await self.sock.recv(2048)
                    if raw and raw[0] >= 0x40:
                        self.stats.echoed += 1  # ChannelData from a peer
                        continue
                    try:
                        reply = decode_untrusted(raw)
                    except ParseError:
                        continue
                    if reply.transaction_id == tid:
                        return reply
            rto *= 2
        return None

    async def listen_until(self, deadline: float) -> None:
        with trio.move_on_at(deadline):
            while True:
                raw = await self.sock.recv(2048)
                if raw and raw[0] >= 0x40:
                    self.stats.echoed += 1


async def client_life(index: int, server: Address, peers: list[Address],
                      settings: dict[str, float], start_at: float, end_at: float, stats: Stats,
                      rng: random.Random) -> None:  # fmt: skip
    lifetime, perm_life, chan_life = (settings["lifetime"], settings["permission"],
                                      settings["channel"])  # fmt: skip
    vanish_at = rng.uniform(start_at, end_at) if rng.random() < 0.01 else None
    expiring_permission = rng.random() < 0.2
    expiring_channel = not expiring_permission and rng.random() < 0.25
    churn_per_s = settings["churn"] / 60
    await trio.sleep_until(start_at)
    generation = 0
    while trio.current_time() < end_at:
        generation += 1
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        # Each client keeps its address (a new port, so a new 5-tuple, each time).
        await sock.bind((f"127.50.{index // 250 % 250}.{index % 250 + 1}", 0))
        client = Client(sock, server, stats)
        try:
            reply = await client.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, 17))
            if reply is None or reply.cls != MessageClass.SUCCESS:
                stats.fail("allocate")
                await trio.sleep(1)
                continue
            stats.allocations += 1
            stats.live += 1
            stats.peak_live = max(stats.peak_live, stats.live)
            peer = peers[index % len(peers)]
            other = peers[(index + 1) % len(peers)]
            if await client.request(Method.CHANNEL_BIND, (Attr.CHANNEL_NUMBER, 0x4000),
                                    (Attr.XOR_PEER_ADDRESS, peer)) is None:  # fmt: skip
                stats.fail("channel-bind")
            if expiring_permission:
                await client.request(Method.CREATE_PERMISSION, (Attr.XOR_PEER_ADDRESS, other))
                stats.permissions += 1
            if expiring_channel:
                await client.request(Method.CHANNEL_BIND, (Attr.CHANNEL_NUMBER, 0x4001),
                                     (Attr.XOR_PEER_ADDRESS, other))  # fmt: skip
            now = trio.current_time()
            refresh_at, rebind_at = now + lifetime / 2, now + min(perm_life, chan_life) / 2
            traffic_at = now + rng.uniform(0, settings["traffic"])
            delete_at = now + rng.expovariate(churn_per_s) if churn_per_s > 0 else end_at
            while True:
                now = trio.current_time()
                if vanish_at is not None and now >= vanish_at:
                    stats.vanished += 1
                    stats.live -= 1
                    return  # no Refresh 0: the server must expire it
                if now >= end_at or now >= delete_at:
                    if await client.request(Method.REFRESH, (Attr.LIFETIME, 0)) is None:
                        stats.fail("delete")
                    stats.deletes += 1
                    stats.live -= 1
                    break
                if now >= refresh_at:
                    if await client.request(Method.REFRESH) is None:
                        stats.fail("refresh")
                    stats.refreshes += 1
                    refresh_at = now + lifetime / 2
                if now >= rebind_at:
                    if await client.request(Method.CHANNEL_BIND, (Attr.CHANNEL_NUMBER, 0x4000),
                                            (Attr.XOR_PEER_ADDRESS, peer)) is None:  # fmt: skip
                        stats.fail("channel-refresh")
                    stats.channel_binds += 1
                    rebind_at = now + min(perm_life, chan_life) / 2
                if now >= traffic_at:
                    await sock.sendto(encode_channel_data(0x4000, b"soak %d" % index), server)
                    stats.sent += 1
                    if rng.random() < 0.1:
                        send = Message(Method.SEND, MessageClass.INDICATION, attributes=[
                            (Attr.XOR_PEER_ADDRESS, peer), (Attr.DATA, b"indication")])
                        await sock.sendto(send.encode(), server)
                        stats.sent += 1
                    traffic_at = now + settings["traffic"]
                nxt = min(refresh_at, rebind_at, traffic_at, delete_at, end_at,
                          vanish_at if vanish_at is not None else end_at)  # fmt: skip
                await client.listen_until(nxt)
        finally:
            sock.close()


async def echo(sock: trio.socket.SocketType) -> None:
    while True:
        data, source = await sock.recvfrom(2048)
        await sock.sendto(data, source)


def snapshot(server: NatsrvProcess) -> dict[str, float]:
    m = server.metrics()
    return {
        "allocations": m.get('natsrv_allocations{family="ipv4"}', 0)
        + m.get('natsrv_allocations{family="ipv6"}', 0),
        "permissions": m.get("natsrv_permissions", 0),
        "channels": m.get("natsrv_channels", 0),
        "relay_ports_free": m.get("natsrv_relay_ports_free", 0),
        "timers": m.get("natsrv_timers", 0),
        "timer_heap_entries": m.get("natsrv_timer_heap_entries", 0),
        "tasks": m.get("natsrv_tasks", 0),
        "relayed_to_peers": m.get('natsrv_relay_packets_total{direction="to_peer"}', 0),
        "relayed_to_clients": m.get('natsrv_relay_packets_total{direction="to_client"}', 0),
        "dropped": sum(v for k, v in m.items() if k.startswith("natsrv_dropped_datagrams_total")),
        "fds": server.fds(),
        "rss_bytes": server.rss(),
    }  # fmt: skip


async def load(server: NatsrvProcess, allocations: int, duration: float,
               settings: dict[str, float], seed: int) -> tuple[Stats, float]:  # fmt: skip
    stats = Stats()
    target = server.udp[0]
    peak_rss = 0
    async with trio.open_nursery() as nursery:
        peer_socks = []
        for i in range(PEERS):
            s = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
            await s.bind((f"127.60.0.{i + 1}", 0))
            peer_socks.append(s)
            nursery.start_soon(echo, s)
        peers = [s.getsockname() for s in peer_socks]
        start = trio.current_time()
        end = start + duration
        ramp = duration / 10
        async with trio.open_nursery() as clients:
            for i in range(allocations):
                rng = random.Random(seed * 1_000_003 + i)
                clients.start_soon(client_life, i, target, peers, settings,
                                   start + ramp * i / allocations, end, stats, rng)  # fmt: skip
            while trio.current_time() < end:
                await trio.sleep(1)
                peak_rss = max(peak_rss, await trio.to_thread.run_sync(server.rss))
        nursery.cancel_scope.cancel()
        for s in peer_socks:
            s.close()
    return stats, peak_rss


def settle(server: NatsrvProcess, baseline: dict[str, float], timeout: float) -> dict[str, float]:
    """Wait (up to ``timeout``) for the server to hold nothing; the final snapshot."""
    deadline = time.monotonic() + timeout
    while True:
        now = snapshot(server)
        if (now["allocations"] == now["timers"] == 0
                and now["relay_ports_free"] == baseline["relay_ports_free"]
                and now["fds"] <= baseline["fds"]) or time.monotonic() > deadline:  # fmt: skip
            return now
        time.sleep(0.5)


def run(allocations: int, duration: float, *, churn: float = 1.0, traffic: float = 5.0,
        warmup: int = 0, seed: int = 1) -> dict[str, Any]:  # fmt: skip
    raise_nofile(allocations + PEERS + 1024)
    lifetime = max(5.0, duration / 5)
    settings = {"lifetime": lifetime, "permission": max(5.0, duration / 10),
                "channel": max(5.0, duration / 7.5), "churn": churn, "traffic": traffic}
    args = ["--listen", f"{IP}:0", "--realm", REALM, "--user", f"{USER}:{PASSWORD}",
            "--allow-peer", "127.0.0.0/8", "--metrics-listen", f"{IP}:0",
            "--relay-ports", f"{RELAY_PORTS[0]}-{RELAY_PORTS[1]}",
            "--max-allocations", str(2 * allocations + 100),
            "--user-quota", str(2 * allocations + 100),
            "--default-lifetime", f"{lifetime:g}", "--max-lifetime", f"{lifetime:g}",
            "--permission-lifetime", f"{settings['permission']:g}",
            "--channel-lifetime", f"{settings['channel']:g}"]  # fmt: skip
    with NatsrvProcess(args) as server:
        start = snapshot(server)
        warm = None
        if warmup:
            trio.run(load, server, warmup, max(10.0, duration / 10), settings, seed + 1)
            warm = settle(server, start, lifetime + 30)
        stats, peak_rss = trio.run(load, server, allocations, duration, settings, seed)
        end = settle(server, start, lifetime + 30)
        alive = server.proc.poll() is None
    reference = warm if warm is not None else start
    return {
        "allocations": allocations, "duration_s": duration, "lifetimes_s": settings,
        "client": {**stats.__dict__},
        "start": start, "warm": warm, "end": end, "peak_rss_bytes": peak_rss,
        "leaks": {
            "allocations": end["allocations"], "permissions": end["permissions"],
            "channels": end["channels"], "timers": end["timers"],
            "relay_ports": start["relay_ports_free"] - end["relay_ports_free"],
            "fds": end["fds"] - start["fds"], "tasks": end["tasks"] - start["tasks"],
        },
        "rss_vs_start": round(end["rss_bytes"] / start["rss_bytes"] - 1, 4),
        "rss_vs_warm": round(end["rss_bytes"] / reference["rss_bytes"] - 1, 4),
        "server_alive": alive,
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--allocations", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--churn", type=float, default=1.0,
                        help="deletes and re-creates per client per minute")
    parser.add_argument("--traffic-interval", type=float, default=5.0)
    parser.add_argument("--warmup", type=int, default=None,
                        help="allocations in the warm-up round (default: as many)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not (1 <= args.allocations <= 30000 and 5 <= args.duration <= 7200):
        parser.error("--allocations 1-30000, --duration 5-7200 s")
    warmup = args.allocations if args.warmup is None else args.warmup
    result = run(args.allocations, args.duration, churn=args.churn,
                 traffic=args.traffic_interval, warmup=warmup, seed=args.seed)  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    c = result["client"]
    mib = 1 << 20
    print(f"{args.allocations:,} clients for {args.duration:g} s ({result['lifetimes_s']})")
    print(f"client: {c['allocations']:,} allocations made (at most {c['peak_live']:,} at once), "
          f"{c['deletes']:,} deleted, {c['vanished']} vanished, {c['refreshes']:,} refreshes, "
          f"{c['channel_binds']:,} channel refreshes, {c['sent']:,} sent, {c['echoed']:,} "
          f"echoed back; failures {c['failures'] or 'none'}")
    s, e = result["start"], result["end"]
    print(f"RSS: start {s['rss_bytes'] / mib:.1f} MiB, peak {result['peak_rss_bytes'] / mib:.1f}"
          f" MiB, end {e['rss_bytes'] / mib:.1f} MiB ({100 * result['rss_vs_start']:+.1f} % vs "
          f"start, {100 * result['rss_vs_warm']:+.1f} % vs warm)")
    print(f"server relayed {e['relayed_to_peers']:,.0f} datagrams to peers and "
          f"{e['relayed_to_clients']:,.0f} to clients")
    print(f"leaks: {result['leaks']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
