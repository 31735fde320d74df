"""Spoofed floods against a real ``natsrv serve`` on loopback, with legitimate clients
at work meanwhile.

A sender process (this script with ``--sender``) binds one UDP socket on each of
``--sources`` loopback addresses (127.10.0.1, 127.10.0.2, ...: what a flood with spoofed
source addresses looks like to the server) and sends ``--packets`` datagrams at
``--rate`` per second, round robin over the sources and five kinds of packet: unsigned
Allocate (REQUESTED-TRANSPORT, FINGERPRINT: a browser's first), Allocate signed with a
real user's key but a bogus nonce, Binding, ChannelData to a channel nobody bound, and
Send indications. Meanwhile, from addresses outside the flood, one legitimate client
does Binding transactions back to back and another allocates (401, signed Allocate,
ChannelBind, Refresh 0) again and again, each time from a new 5-tuple: half of them
from a source IP that authenticated before ("returning"), half from one never seen
("new"). Requests are retransmitted the RFC 8489 way (RTO ``--rto``, 7 sends); a
transaction counts as a success when its answer comes within that schedule.

Reported: the flood's achieved rate, the server's RSS at start, at its highest and
after the flood, its open descriptors, the legitimate success rates, what the server
counted (answered, dropped and why) and what the kernel dropped at the listening socket
(its receive queue is the only queue between the flood and the server: SO_RCVBUF,
4 MiB).

    python benchmarks/spoof_flood.py                         # 10^6 packets, 2,000 sources
    python benchmarks/spoof_flood.py --packets 100000 --json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.natsrv_process import NatsrvProcess, raise_nofile  # noqa: E402
from benchmarks.turnclient import TurnClient, TurnError  # noqa: E402
from natsrv.stun import Attr, MessageClass, Method  # noqa: E402
from natsrv.stun.integrity import long_term_key  # noqa: E402
from natsrv.stun.message import encode_message  # noqa: E402

IP = "127.0.0.1"
REALM = "flood.test"
USER, PASSWORD = "alice", "wonderland"
KINDS = ("allocate-unsigned", "allocate-bogus-nonce", "binding", "channeldata", "send")
POOL = 4096  #: distinct packets per kind (fresh transaction IDs), sent round robin


def source_ip(index: int, base: int = 10) -> str:
    """The flood's ``index``-th source: 127.<base>.x.y, never .0 or .255."""
    n = index + 1
    return f"127.{base}.{n // 254}.{n % 254 + 1}"


def packets_of(kind: str, count: int, rng: random.Random) -> list[bytes]:
    key = long_term_key(USER, REALM, PASSWORD)
    out = []
    for _ in range(count):
        tid = rng.randbytes(12)
        if kind == "allocate-unsigned":
            data = encode_message(Method.ALLOCATE, MessageClass.REQUEST, tid,
                                  [(Attr.REQUESTED_TRANSPORT, 17)], fingerprint=True)  # fmt: skip
        elif kind == "allocate-bogus-nonce":
            attrs: list[tuple[int, Any]] = [
                (Attr.REQUESTED_TRANSPORT, 17), (Attr.USERNAME, USER), (Attr.REALM, REALM),
                (Attr.NONCE, "obMatJos2AAAB" + rng.randbytes(16).hex()),
            ]  # fmt: skip
            data = encode_message(Method.ALLOCATE, MessageClass.REQUEST, tid, attrs, key=key,
                                  fingerprint=True)  # fmt: skip
        elif kind == "binding":
            data = encode_message(Method.BINDING, MessageClass.REQUEST, tid, [])
        elif kind == "channeldata":
            channel = rng.randrange(0x4000, 0x4FFF)
            data = channel.to_bytes(2, "big") + (64).to_bytes(2, "big") + rng.randbytes(64)
        else:
            data = encode_message(Method.SEND, MessageClass.INDICATION, tid,
                                  [(Attr.XOR_PEER_ADDRESS, ("192.0.2.7", 9)),
                                   (Attr.DATA, rng.randbytes(64))])  # fmt: skip
        out.append(data)
    return out


# -- the sender (its own process, so the legitimate clients keep their core time) ----------
def sender(target: tuple[str, int], packets: int, sources: int, rate: float) -> dict[str, Any]:
    import socket

    raise_nofile(sources + 64)
    rng = random.Random(1)
    pool: list[bytes] = []
    for batch in zip(*(packets_of(kind, POOL, rng) for kind in KINDS), strict=True):
        pool.extend(batch)
    socks = []
    for i in range(sources):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((source_ip(i), 0))
        s.setblocking(False)
        socks.append(s)
    sends = [s.sendto for s in socks]
    sent = would_block = 0
    chunk = 64
    start = time.monotonic()
    n_pool = len(pool)
    while sent < packets:
        # Paced in chunks: as far ahead of the schedule as one chunk.
        due = start + sent / rate if rate > 0 else 0.0
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        for i in range(sent, min(sent + chunk, packets)):
            try:
                sends[i % sources](pool[i % n_pool], target)
            except BlockingIOError:
                would_block += 1
        sent = min(sent + chunk, packets)
    elapsed = time.monotonic() - start
    for s in socks:
        s.close()
    return {"packets": sent, "sources": sources, "seconds": round(elapsed, 3),
            "rate": round(sent / elapsed), "sender_would_block": would_block}  # fmt: skip


# -- the legitimate clients ---------------------------------------------------------------
class Tally:
    def __init__(self) -> None:
        self.ok = self.failed = self.first_try = 0
        self.errors: dict[str, int] = {}

    def add(self, ok: bool, error: str = "", first: bool = False) -> None:
        if ok:
            self.ok += 1
            self.first_try += first
        else:
            self.failed += 1
            self.errors[error] = self.errors.get(error, 0) + 1

    def summary(self) -> dict[str, Any]:
        total = self.ok + self.failed
        return {"attempts": total, "ok": self.ok,
                "success": round(self.ok / total, 5) if total else None,
                "answered_at_first_send": self.first_try, "errors": self.errors}  # fmt: skip


def legit_bindings(server: tuple[str, int], stop: threading.Event, tally: Tally,
                   rto: float) -> None:  # fmt: skip
    with TurnClient("udp", server, source="127.20.0.1", rto=rto) as client:
        while not stop.is_set():
            begin = time.monotonic()
            try:
                client.binding()
                tally.add(True, first=time.monotonic() - begin < rto)
            except TurnError as exc:
                tally.add(False, str(exc))
            time.sleep(0.005)


def legit_allocations(server: tuple[str, int], stop: threading.Event, new: Tally,
                      returning: Tally, rto: float, peer: tuple[str, int]) -> None:  # fmt: skip
    n = 0
    while not stop.is_set():
        n += 1
        is_new = n % 2 == 0
        # "returning": 127.21.0.1 authenticated on its first cycle; "new": never seen.
        source = f"127.22.{n // 250 % 250}.{n % 250 + 1}" if is_new else "127.21.0.1"
        tally = new if is_new else returning
        begin = time.monotonic()
        try:
            with TurnClient("udp", server, user=USER, password=PASSWORD, realm=REALM,
                            source=source, rto=rto) as client:  # fmt: skip
                client.allocate()
                client.bind_channel(0x4000, peer)
                client.refresh(0)
            tally.add(True, first=time.monotonic() - begin < 4 * rto)
        except TurnError as exc:
            tally.add(False, str(exc))
        except OSError as exc:
            tally.add(False, f"OSError {exc.errno}")


def kernel_drops(pid: int, port: int) -> int:
    """Datagrams the kernel dropped at the server's UDP socket on ``port`` (its receive
    queue full): the last column of /proc/PID/net/udp."""
    with open(f"/proc/{pid}/net/udp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port:
                return int(fields[-1])
    return 0


def run(packets: int, sources: int, rate: float, rto: float = 0.2) -> dict[str, Any]:
    """The whole benchmark; returns its figures."""
    import socket

    raise_nofile(4096)
    args = ["--listen", f"{IP}:0", "--realm", REALM, "--user", f"{USER}:{PASSWORD}",
            "--allow-peer", "127.0.0.0/8", "--metrics-listen", f"{IP}:0"]  # fmt: skip
    with NatsrvProcess(args) as server:
        target = server.udp[0]
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind(("127.30.0.1", 0))
        # Warm up: the returning client authenticates once; one of each legit path runs.
        with TurnClient("udp", target, user=USER, password=PASSWORD, realm=REALM,
                        source="127.21.0.1") as first:  # fmt: skip
            first.allocate()
            first.refresh(0)
        rss_start, fds_start = server.rss(), server.fds()
        drops_start = kernel_drops(server.pid, target[1])
        stop = threading.Event()
        bindings, new, returning = Tally(), Tally(), Tally()
        threads = [
            threading.Thread(target=legit_bindings, args=(target, stop, bindings, rto)),
            threading.Thread(target=legit_allocations,
                             args=(target, stop, new, returning, rto, peer.getsockname())),
        ]  # fmt: skip
        for t in threads:
            t.start()
        rss_peak = rss_start
        sender_proc = subprocess.Popen(
            [sys.executable, __file__, "--sender", f"{target[0]}:{target[1]}",
             "--packets", str(packets), "--sources", str(sources), "--rate", str(rate)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            while sender_proc.poll() is None:
                rss_peak = max(rss_peak, server.rss())
                time.sleep(0.1)
            out, _ = sender_proc.communicate(timeout=10)
        finally:
            if sender_proc.poll() is None:
                sender_proc.kill()
                sender_proc.wait()
        flood = json.loads(out)
        stop.set()  # each legitimate client finishes the transaction it is in, then stops
        for t in threads:
            t.join(timeout=30)
        peer.close()
        rss_end, fds_end = server.rss(), server.fds()
        metrics = server.metrics()
        drops = kernel_drops(server.pid, target[1]) - drops_start
        alive = server.proc.poll() is None
    counted = {k: v for k, v in metrics.items()
               if k.startswith(("natsrv_dropped_datagrams_total", "natsrv_stun_requests_total"))
               and v}  # fmt: skip
    return {
        "flood": flood,
        "rss_start_bytes": rss_start, "rss_peak_bytes": rss_peak, "rss_end_bytes": rss_end,
        "rss_growth_bytes": rss_end - rss_start, "rss_peak_growth_bytes": rss_peak - rss_start,
        "fds_start": fds_start, "fds_end": fds_end,
        "kernel_receive_queue_drops": drops,
        "legit_binding": bindings.summary(),
        "legit_allocation_returning": returning.summary(),
        "legit_allocation_new": new.summary(),
        "server_alive": alive,
        "server_counted": counted,
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--sources", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=100_000, help="packets/s (0: flat out)")
    parser.add_argument("--rto", type=float, default=0.2)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--sender", metavar="IP:PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 1 <= args.sources <= 60000 or args.packets > 10**8:
        parser.error("--sources 1-60000, --packets at most 10^8")
    if args.sender:
        host, _, port = args.sender.rpartition(":")
        if not host.startswith("127."):
            parser.error("loopback only")
        print(json.dumps(sender((host, int(port)), args.packets, args.sources, args.rate)))
        return 0
    result = run(args.packets, args.sources, args.rate, args.rto)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    f = result["flood"]
    print(f"flood: {f['packets']:,} packets from {f['sources']:,} sources in {f['seconds']} s "
          f"({f['rate']:,}/s)")
    mib = 1 << 20
    print(f"RSS: start {result['rss_start_bytes'] / mib:.2f} MiB, peak +"
          f"{result['rss_peak_growth_bytes'] / 1024:.0f} KiB, end +"
          f"{result['rss_growth_bytes'] / 1024:.0f} KiB; fds {result['fds_start']} -> "
          f"{result['fds_end']}; kernel receive-queue drops "
          f"{result['kernel_receive_queue_drops']:,}")
    for name in ("legit_binding", "legit_allocation_returning", "legit_allocation_new"):
        s = result[name]
        print(f"{name}: {s['ok']}/{s['attempts']} = {100 * (s['success'] or 0):.2f} % "
              f"({s['answered_at_first_send']} at the first send) {s['errors'] or ''}")
    for key, value in sorted(result["server_counted"].items()):
        print(f"  {key} {value:,.0f}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
