"""Slowloris against a real ``natsrv serve``'s TCP and TLS listeners, with legitimate
TCP and TLS clients allocating and relaying meanwhile.

An attacker process (this script with ``--attacker``) keeps ``--connections`` (3,000)
connections open from ``--sources`` loopback addresses (127.40.0.1, ...), half to the TCP
listener and half to the TLS one. Each sends the first byte of a message (a STUN header
or a TLS record) and then one more byte every ``--trickle`` seconds, never finishing
it; a connection the server closes is opened again at once. Meanwhile legitimate
clients, one over TCP and one over TLS, each from its own address, go round and round:
connect (and handshake), Binding, Allocate (401, then signed), ChannelBind to a UDP
peer, ChannelData to the peer and back, Refresh 0, close. A cycle counts as a success
when every step of it completed within ``--step-timeout`` seconds.

The server runs with its defaults for streams: 2,000 connection slots
(``tcp-max-connections``), 64 per source IP, 5 s for the TLS handshake and for the first
message; when the slots are full, the oldest connection that holds no allocation is
closed to make room.

    python benchmarks/slowloris.py                        # 3,000 connections, 60 s
    python benchmarks/slowloris.py --connections 600 --duration 10 --json
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.natsrv_process import NatsrvProcess, raise_nofile  # noqa: E402
from benchmarks.turnclient import TurnClient, TurnError, make_certificate  # noqa: E402

IP = "127.0.0.1"
REALM = "slowloris.test"
USER, PASSWORD = "alice", "wonderland"
#: The first bytes each kind of slow connection sends: a Binding request's header and
#: a TLS handshake record's header (a ClientHello that never comes).
FIRST_BYTES = {"tcp": bytes.fromhex("000100002112a442"), "tls": bytes.fromhex("1603010200")}


def source_ip(index: int) -> str:
    n = index + 1
    return f"127.40.{n // 254}.{n % 254 + 1}"


# -- the attacker ---------------------------------------------------------------------
def attacker(targets: dict[str, tuple[str, int]], connections: int, sources: int,
             duration: float, trickle: float) -> dict[str, Any]:  # fmt: skip
    raise_nofile(connections + 256)
    sel = selectors.DefaultSelector()
    stats = {"opened": 0, "closed_by_server": 0, "connect_failed": 0, "max_open": 0}
    kinds = ("tcp", "tls")
    #: sock -> [kind, bytes sent, next trickle time, slot]
    state: dict[socket.socket, list[Any]] = {}

    def open_one(slot: int) -> None:
        kind = kinds[slot % 2]
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.bind((source_ip(slot % sources), 0))
            sock.connect_ex(targets[kind])
        except OSError:
            stats["connect_failed"] += 1
            sock.close()
            return
        state[sock] = [kind, 0, float("inf"), slot]  # the first byte once connected
        sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        stats["opened"] += 1

    def close_one(sock: socket.socket, by_server: bool) -> int:
        slot: int = state.pop(sock)[3]
        sel.unregister(sock)
        sock.close()
        stats["closed_by_server" if by_server else "connect_failed"] += 1
        return slot

    for slot in range(connections):
        open_one(slot)
    deadline = time.monotonic() + duration
    while (now := time.monotonic()) < deadline:
        stats["max_open"] = max(stats["max_open"], len(state))
        reopen: list[int] = []
        for key, events in sel.select(timeout=0.05):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            entry = state[sock]
            if events & selectors.EVENT_READ:
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    reopen.append(close_one(sock, by_server=entry[1] > 0))
                    continue
            if events & selectors.EVENT_WRITE:
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    reopen.append(close_one(sock, by_server=False))
                    continue
                sel.modify(sock, selectors.EVENT_READ)
                entry[2] = now  # connected: the first byte goes now
        for sock, entry in list(state.items()):
            kind, sent, due, _ = entry
            if due <= now and sent < len(FIRST_BYTES[kind]):
                try:
                    sock.send(FIRST_BYTES[kind][sent:sent + 1])
                    entry[1] += 1
                    entry[2] = now + trickle
                except BlockingIOError:
                    pass
                except OSError:
                    reopen.append(close_one(sock, by_server=True))
        for slot in reopen:
            open_one(slot)
    for sock in list(state):
        sel.unregister(sock)
        sock.close()
    return stats


# -- the legitimate clients ---------------------------------------------------------------
class Tally:
    def __init__(self) -> None:
        self.ok = 0
        self.failed: dict[str, int] = {}
        self.seconds: list[float] = []

    def summary(self) -> dict[str, Any]:
        total = self.ok + sum(self.failed.values())
        times = sorted(self.seconds)
        return {"attempts": total, "ok": self.ok,
                "success": round(self.ok / total, 5) if total else None,
                "cycle_p50_ms": round(1000 * times[len(times) // 2], 1) if times else None,
                "cycle_max_ms": round(1000 * times[-1], 1) if times else None,
                "failures": self.failed}  # fmt: skip


def legit_cycles(kind: str, server: tuple[str, int], source: str, stop: threading.Event,
                 tally: Tally, step_timeout: float) -> None:  # fmt: skip
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind((source, 0))
    peer.settimeout(step_timeout)
    try:
        while not stop.is_set():
            begin = time.monotonic()
            try:
                with TurnClient(kind, server, user=USER, password=PASSWORD, realm=REALM,
                                source=source, connect_timeout=step_timeout,
                                stream_timeout=step_timeout) as client:  # fmt: skip
                    client.binding()
                    relay = client.allocate()
                    client.bind_channel(0x4000, peer.getsockname())
                    client.send_channel(0x4000, b"to the peer")
                    data, _ = peer.recvfrom(100)
                    assert data == b"to the peer", data
                    peer.sendto(b"to the client", relay)
                    frame = client.receive_frame(step_timeout)
                    while frame is not None and frame[:2] != b"\x40\x00":
                        frame = client.receive_frame(step_timeout)
                    if frame is None or b"to the client" not in frame:
                        raise TurnError("no ChannelData back")
                    client.refresh(0)
                tally.ok += 1
                tally.seconds.append(time.monotonic() - begin)
            except (TurnError, OSError, AssertionError) as exc:
                name = type(exc).__name__ + (f" {exc}" if isinstance(exc, TurnError) else "")
                tally.failed[name] = tally.failed.get(name, 0) + 1
    finally:
        peer.close()


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(connections: int, sources: int, duration: float, trickle: float = 1.0,
        step_timeout: float = 5.0, extra_args: tuple[str, ...] = ()) -> dict[str, Any]:  # fmt: skip
    raise_nofile(4096)
    slots = 2000  # tcp-max-connections, unless the extra arguments say otherwise
    if "--tcp-max-connections" in extra_args:
        slots = int(extra_args[extra_args.index("--tcp-max-connections") + 1])
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = make_certificate(tmp)
        args = ["--listen", f"{IP}:0", "--realm", REALM, "--user", f"{USER}:{PASSWORD}",
                "--allow-peer", "127.0.0.0/8", "--metrics-listen", f"{IP}:0",
                "--tls-cert", cert, "--tls-key", key, "--tls-port", "0",
                *extra_args]  # fmt: skip
        with NatsrvProcess(args) as server:
            targets = {"tcp": server.tcp[0], "tls": server.tls[0]}
            cpu_start = cpu_seconds(server.pid)
            attack = subprocess.Popen(
                [sys.executable, __file__, "--attacker", json.dumps(targets),
                 "--connections", str(connections), "--sources", str(sources),
                 "--duration", str(duration), "--trickle", str(trickle)],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            try:
                # Let the attack fill the slots before the legitimate clients start.
                fill_deadline = time.monotonic() + min(10.0, duration / 3)
                while time.monotonic() < fill_deadline:
                    open_now = server.metrics().get("natsrv_stream_connections", 0)
                    if open_now >= min(connections, slots) * 0.9:
                        break
                    time.sleep(0.1)
                slots_at_start = server.metrics().get("natsrv_stream_connections", 0)
                stop = threading.Event()
                tallies = {"tcp": Tally(), "tls": Tally()}
                threads = [threading.Thread(target=legit_cycles, args=(
                    kind, targets[kind], f"127.41.0.{i + 1}", stop, tallies[kind], step_timeout))
                    for i, kind in enumerate(("tcp", "tls"))]  # fmt: skip
                for t in threads:
                    t.start()
                peak = slots_at_start
                while attack.poll() is None:
                    peak = max(peak, server.metrics().get("natsrv_stream_connections", 0))
                    time.sleep(0.2)
                stop.set()
                for t in threads:
                    t.join(timeout=4 * step_timeout + 10)
                out, _ = attack.communicate(timeout=30)
            finally:
                if attack.poll() is None:
                    attack.kill()
                    attack.wait()
            metrics = server.metrics()
            alive = server.proc.poll() is None
            cpu_used = cpu_seconds(server.pid) - cpu_start
    counted = {k: v for k, v in metrics.items() if v and (
        "stream" in k or "tcp" in k or "tls" in k)}  # fmt: skip
    counters_seen = {k: v for k, v in metrics.items() if k.startswith("natsrv_stream")}
    return {
        "attack": {"connections": connections, "sources": sources, "duration_s": duration,
                   **json.loads(out)},
        "slots_in_use_when_clients_started": slots_at_start,
        "slots_in_use_peak": peak,
        "legit_tcp": tallies["tcp"].summary(),
        "legit_tls": tallies["tls"].summary(),
        "server_alive": alive,
        "server_cpu_share": round(cpu_used / duration, 3),
        "server_counted": {**counted, **counters_seen},
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--sources", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--trickle", type=float, default=1.0)
    parser.add_argument("--step-timeout", type=float, default=5.0)
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help="one more argument for natsrv serve (repeatable)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--attacker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not (1 <= args.connections <= 20000 and 1 <= args.sources <= 60000
            and 0 < args.duration <= 3600):  # fmt: skip
        parser.error("--connections 1-20000, --sources 1-60000, --duration at most 3600 s")
    if args.attacker:
        targets = {k: (v[0], int(v[1])) for k, v in json.loads(args.attacker).items()}
        if any(not ip.startswith("127.") for ip, _ in targets.values()):
            parser.error("loopback only")
        print(json.dumps(attacker(targets, args.connections, args.sources, args.duration,
                                  args.trickle)))  # fmt: skip
        return 0
    result = run(args.connections, args.sources, args.duration, args.trickle,
                 args.step_timeout, tuple(args.server_arg))  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    a = result["attack"]
    print(f"attack: {a['connections']:,} slow connections from {a['sources']:,} sources for "
          f"{a['duration_s']} s: {a['opened']:,} opened, {a['closed_by_server']:,} closed by "
          f"the server, at most {a['max_open']:,} open at once")
    start = result['slots_in_use_when_clients_started']
    print(f"slots in use when the clients started: {start:.0f}"
          f", peak {result['slots_in_use_peak']:.0f}")
    for name in ("legit_tcp", "legit_tls"):
        s = result[name]
        print(f"{name}: {s['ok']}/{s['attempts']} cycles = {100 * (s['success'] or 0):.2f} % "
              f"(p50 {s['cycle_p50_ms']} ms, max {s['cycle_max_ms']} ms) {s['failures'] or ''}")
    print(f"server CPU: {100 * result['server_cpu_share']:.0f} % of one core")
    for key, value in sorted(result["server_counted"].items()):
        print(f"  {key} {value:,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
