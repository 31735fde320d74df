"""TURN load, side by side: coturn and natsrv, server on one core, load on the other.

For each server this script starts it pinned to one CPU (``taskset``) with long-term
credentials (one static user, one realm) and a relay address on loopback, waits until it
answers a Binding request, and drives it from the other CPU with ``turnload``
(benchmarks/turnload.c, compiled here with the machine's C compiler):

1. relay throughput: 16 allocations, each with a ChannelBind to its own UDP peer socket;
   ChannelData of 100 and of 1000 bytes, client -> server -> relay -> peer, in a closed
   loop (a window of messages outstanding per allocation); delivered messages/s;
2. allocations/s: concurrent clients, each one a fresh socket doing what a browser does
   (Allocate, 401, Allocate with MESSAGE-INTEGRITY), then deleting it (Refresh 0);
3. RSS per held allocation: on a freshly started server, allocations are created and
   kept until 1,000 and then 5,000 are held; the server's resident set size is read
   from /proc before and at each count.

Then it stops the server (by its PID; only processes this script started). It prints a
table with natsrv/coturn ratios and the targets, or with ``--json`` one JSON object.

    python benchmarks/turn_load.py                   # coturn, then natsrv
    python benchmarks/turn_load.py --only natsrv     # one server
    python benchmarks/turn_load.py --repeat 3 --json # best of 3 for the throughput phases

Traffic stays on 127.0.0.0/8: servers on ``--ip``, clients from 127.1.0.0/16, peers on
``--peer-ip``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import secrets
import select
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import binding_load as bl

HERE = Path(__file__).resolve().parent
USER = "bench"
REALM = "natsrv-bench"
SERVERS = ("coturn", "natsrv")
DEFAULT_NATSRV_CMD = (
    "{python} -m natsrv serve --listen {listen} --no-tcp --relay-ip {ip} "
    "--realm {realm} --user {user}:{password} --allow-peer 127.0.0.0/8 "
    "--max-allocations 100000 --user-quota 100000 --workers 1 --log-level warning"
)
#: Targets from the TURN issue: natsrv/coturn ratios (RSS: at most, the others: at least).
TARGETS = {"relay": 0.5, "alloc": 1.0, "rss": 1.0}
PHASES = ("relay", "alloc", "rss")


def server_command(name: str, args: argparse.Namespace, ip: str, port: int) -> list[str]:
    values = {
        "listen": f"{ip}:{port}", "ip": ip, "port": port, "python": sys.executable,
        "tmp": "{tmp}", "realm": REALM, "user": USER, "password": args.password,
    }  # fmt: skip
    if name == "coturn":
        return bl.coturn_command(
            args.turnserver, ip, port,
            "--relay-ip", ip,
            "--lt-cred-mech",
            "--user", f"{USER}:{args.password}",
            "--realm", REALM,
            "--allow-loopback-peers",
            relay_threads=getattr(args, "relay_threads", 1),
        )  # fmt: skip
    if name == "natsrv":
        return [part.format(**values) for part in shlex.split(args.natsrv_cmd)]
    raise bl.BenchError(f"unknown server {name!r}")


def rss_bytes(pid: int) -> int:
    """Resident set size of a whole process (VmRSS), in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise bl.BenchError(f"no VmRSS for process {pid}")


@dataclass
class Result:
    server: str
    command: list[str] = field(default_factory=list)
    relay: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    alloc: list[dict[str, Any]] = field(default_factory=list)
    hold: dict[str, Any] | None = None
    error: str | None = None

    def relay_pps(self, size: int) -> float | None:
        runs = self.relay.get(size) or []
        return max((r["packets_per_s"] for r in runs), default=None)

    def relay_best(self, size: int) -> dict[str, Any] | None:
        runs = self.relay.get(size) or []
        return max(runs, key=lambda r: r["packets_per_s"]) if runs else None

    def alloc_rate(self) -> float | None:
        return max((r["allocations_per_s"] for r in self.alloc), default=None)

    def alloc_best(self) -> dict[str, Any] | None:
        return max(self.alloc, key=lambda r: r["allocations_per_s"]) if self.alloc else None

    def rss_per_alloc(self, count: int) -> float | None:
        if not self.hold:
            return None
        point = self.hold["points"].get(str(count))
        return None if point is None else point["bytes_per_allocation"]

    def summary(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "command": self.command,
            "error": self.error,
            "relay_packets_per_s": {str(s): self.relay_pps(s) for s in self.relay},
            "relay_runs": {str(s): runs for s, runs in self.relay.items()},
            "allocations_per_s": self.alloc_rate(),
            "alloc_runs": self.alloc,
            "hold": self.hold,
        }


def start_server(
    name: str, args: argparse.Namespace, workdir: Path, ip: str, port: int
) -> tuple[subprocess.Popen[bytes], list[str]]:
    command = [part.replace("{tmp}", str(workdir)) for part in server_command(name, args, ip, port)]
    log = open(workdir / "server.log", "ab")  # noqa: SIM115 - closed by the Popen's end
    try:
        proc = subprocess.Popen(
            ["taskset", "-c", str(args.server_cpu), *command],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=HERE.parent,  # so `python -m natsrv` works uninstalled
        )
    finally:
        log.close()
    try:
        bl.wait_ready(proc, ip, port, args.ready_timeout)
    except bl.BenchError:
        bl.stop(proc)
        raise
    return proc, command


def load_options(args: argparse.Namespace) -> list[str]:
    return ["-u", USER, "-k", args.key, "-T", str(args.timeout_ms), "-S", str(args.sources)]


def run_hold(
    args: argparse.Namespace, exe: Path, proc: subprocess.Popen[bytes], target: str
) -> dict[str, Any]:
    """Hold allocations up to each count of ``--holds``; read the server's RSS at each."""
    time.sleep(args.settle)  # let start-up allocations (imports, first requests) settle
    baseline = rss_bytes(proc.pid)
    counts = ",".join(str(n) for n in args.holds)
    cmd = [
        "taskset", "-c", str(args.load_cpu), str(exe), "hold", "-t", target,
        *load_options(args), "-n", counts, "-c", str(args.concurrent),
        "-d", str(args.hold_timeout),
    ]  # fmt: skip
    points: dict[str, Any] = {}
    gen = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert gen.stdin is not None and gen.stdout is not None
        deadline = time.monotonic() + args.hold_timeout * len(args.holds) + 30
        for _ in args.holds:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([gen.stdout], [], [], max(0.0, remaining))
            if not ready:
                raise bl.BenchError("turnload hold did not report in time")
            line = gen.stdout.readline()
            if not line:
                err = gen.stderr.read() if gen.stderr else ""
                raise bl.BenchError(f"turnload hold ended early: {err.strip()}")
            event = json.loads(line)
            if event.get("event") != "held":
                raise bl.BenchError(f"turnload hold: unexpected {line.strip()}")
            held = event["held"]
            # The generator has every success response in hand, so the server holds
            # every allocation; give it a moment to finish whatever it buffered.
            time.sleep(args.settle)
            rss = rss_bytes(proc.pid)
            points[str(held)] = {
                "held": held,
                "rss_bytes": rss,
                "bytes_per_allocation": (rss - baseline) / held,
                "seconds_to_create": event["seconds"],
                "failed": event["failed"],
            }
            bl.note(
                f"  held {held}: RSS {rss / 2**20:.1f} MiB, "
                f"{(rss - baseline) / held / 1024:.1f} KiB per allocation"
            )
            gen.stdin.write("\n")
            gen.stdin.flush()
        gen.stdin.close()
        gen.wait(timeout=30)
    finally:
        if gen.poll() is None:
            gen.kill()
            gen.wait(timeout=5)
    return {"baseline_rss_bytes": baseline, "points": points}


def bench_server(name: str, args: argparse.Namespace, exe: Path, ip: str, port: int) -> Result:
    result = Result(name)
    target = f"{ip}:{port}"
    workdir = Path(tempfile.mkdtemp(prefix=f"turn_load_{name}_"))
    proc: subprocess.Popen[bytes] | None = None
    common = ["-d", str(args.duration), "-W", str(args.warmup)]
    try:
        # Throughput phases on one server instance.
        proc, result.command = start_server(name, args, workdir, ip, port)
        for _ in range(args.repeat):
            for size in args.sizes:
                options = [
                    *load_options(args), *common, "-n", str(args.allocations),
                    "-w", str(args.window), "-z", str(size), "-P", args.peer_ip,
                ]  # fmt: skip
                run = bl.measure_phase(args, exe, proc, "relay", target, options)
                result.relay.setdefault(size, []).append(run)
                bl.note(
                    f"{name}: relay {size} B: {run['packets_per_s']:,.0f} packets/s "
                    f"({run['payload_mbit_s']:,.0f} Mbit/s), lost {run['lost']}, "
                    f"server CPU {run['server_cpu']:.0%}"
                )
            if "alloc" not in args.phases:
                continue
            options = [*load_options(args), *common, "-c", str(args.concurrent)]
            run = bl.measure_phase(args, exe, proc, "alloc", target, options)
            result.alloc.append(run)
            bl.note(
                f"{name}: {run['allocations_per_s']:,.0f} allocations/s "
                f"(handshake p50 {run['handshake_us']['p50'] / 1000:.1f} ms), "
                f"failed {run['failed']}, errors {run['error_responses']}, "
                f"server CPU {run['server_cpu']:.0%}"
            )
        bl.stop(proc)
        proc = None
        # Memory on a fresh instance, so churn above does not blur it.
        if args.holds:
            proc, _ = start_server(name, args, workdir, ip, port)
            result.hold = run_hold(args, exe, proc, target)
    except bl.BenchError as exc:
        result.error = str(exc)
        log_path = workdir / "server.log"
        if log_path.exists():
            tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
            if tail:
                result.error += " | server log: " + " / ".join(tail)
    finally:
        if proc is not None:
            bl.stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def print_table(results: list[Result], args: argparse.Namespace) -> None:
    by = {r.server: r for r in results}
    coturn, natsrv = by.get("coturn"), by.get("natsrv")
    rows: list[tuple[str, float | None, float | None, str, str, str]] = []
    for size in args.sizes:
        c = coturn.relay_pps(size) if coturn else None
        n = natsrv.relay_pps(size) if natsrv else None
        rows.append((f"relay {size} B, packets/s", c, n, ",.0f", "relay", ">="))
    if "alloc" in args.phases:
        c = coturn.alloc_rate() if coturn else None
        n = natsrv.alloc_rate() if natsrv else None
        rows.append(("allocations/s (401 + auth + delete)", c, n, ",.0f", "alloc", ">="))
    for count in args.holds:
        c = coturn.rss_per_alloc(count) if coturn else None
        n = natsrv.rss_per_alloc(count) if natsrv else None
        rows.append((
            f"RSS per allocation at {count:,}, KiB",
            c / 1024 if c is not None else None,
            n / 1024 if n is not None else None,
            ".1f", "rss", "<=",
        ))  # fmt: skip
    header = f"{'':<38} {'coturn':>10} {'natsrv':>10} {'natsrv/coturn':>14} {'target':>9}"
    print(header)
    print("-" * len(header))
    for label, c, n, spec, key, sense in rows:
        r = ratio(n, c)
        goal = TARGETS[key]
        ok = r is not None and (r >= goal if sense == ">=" else r <= goal)
        met = "" if r is None else ("  ok" if ok else "  MISSED")
        print(
            f"{label:<38} {bl.fmt(c, spec):>10} {bl.fmt(n, spec):>10} "
            f"{bl.fmt(r, '.2f'):>14} {sense + ' ' + format(goal, '.1f'):>9}{met}"
        )
    print()
    for r in results:
        parts = []
        for size in args.sizes:
            best = r.relay_best(size)
            if best:
                parts.append(
                    f"relay {size} B: {best['payload_mbit_s']:,.0f} Mbit/s, server CPU "
                    f"{best['server_cpu']:.0%}, load core {best['load_cpu_busy']:.0%}, "
                    f"lost {best['lost']}"
                )
        best = r.alloc_best()
        if best:
            parts.append(
                f"alloc: handshake p50 {best['handshake_us']['p50'] / 1000:.1f} ms, p99 "
                f"{best['handshake_us']['p99'] / 1000:.1f} ms, failed {best['failed']}, "
                f"error responses {best['error_responses']}, retransmits {best['retransmits']}"
            )
        if r.hold:
            parts.append(f"baseline RSS {r.hold['baseline_rss_bytes'] / 2**20:.1f} MiB")
        print(f"{r.server}: " + ("; ".join(parts) if parts else "-"))
        if r.error:
            print(f"{r.server}: error: {r.error}")


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}")
    if not sizes or any(not 12 <= s <= 1400 for s in sizes):
        raise argparse.ArgumentTypeError("payload sizes must be 12..1400 bytes")
    return sizes


def parse_holds(text: str) -> list[int]:
    try:
        holds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}")
    if holds != sorted(set(holds)) or any(not 1 <= h <= 15000 for h in holds):
        raise argparse.ArgumentTypeError("hold counts must be increasing, 1..15000")
    return holds


def parse_phases(text: str) -> list[str]:
    phases = [part.strip() for part in text.split(",") if part.strip()]
    if not phases or any(p not in PHASES for p in phases):
        raise argparse.ArgumentTypeError(f"phases are some of {', '.join(PHASES)}")
    return phases


def parse_servers(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if text == "both":
        return list(SERVERS)
    for name in names:
        if name not in SERVERS:
            raise argparse.ArgumentTypeError(f"unknown server {name!r} (coturn, natsrv, both)")
    return names


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--only", type=parse_servers, default="both", help="coturn, natsrv, both")
    parser.add_argument(
        "--natsrv-cmd",
        default=DEFAULT_NATSRV_CMD,
        help="natsrv command template ({listen} {ip} {port} {python} {tmp} {realm} {user} "
        "{password})",
    )
    parser.add_argument("--turnserver", default="turnserver", help="coturn executable")
    parser.add_argument("--ip", type=bl.loopback_ip, default="127.0.0.1", help="server IP")
    parser.add_argument("--peer-ip", type=bl.loopback_ip, default="127.0.0.2", help="peer IP")
    parser.add_argument("--port", type=int, default=0, help="server port (0: a free one)")
    parser.add_argument(
        "--phases", type=parse_phases, default=",".join(PHASES), help="what to measure"
    )
    parser.add_argument("--sizes", type=parse_sizes, default="100,1000", help="payload bytes")
    parser.add_argument("--allocations", type=int, default=16, help="allocations relaying")
    parser.add_argument("--window", type=int, default=32, help="messages in flight per allocation")
    parser.add_argument("--concurrent", type=int, default=64, help="clients allocating at once")
    parser.add_argument("--sources", type=int, default=1024, help="client source addresses")
    parser.add_argument("--timeout-ms", type=int, default=200, help="request/message timeout")
    parser.add_argument(
        "--holds", type=parse_holds, default="1000,5000", help="allocation counts for RSS"
    )
    parser.add_argument(
        "--hold-timeout", type=float, default=60.0, help="seconds to reach each hold count"
    )
    parser.add_argument(
        "--settle", type=float, default=0.5, help="seconds before each RSS reading"
    )
    bl.add_machine_arguments(parser, tool="turnload")
    args = parser.parse_args()

    if not 1 <= args.allocations <= 1024 or not 1 <= args.window <= 4096:
        parser.error("--allocations must be 1..1024 and --window 1..4096")
    if not 1 <= args.concurrent <= 1024 or not 1 <= args.sources <= 65000:
        parser.error("--concurrent must be 1..1024 and --sources 1..65000")
    if not 0 < args.hold_timeout <= 600 or not 0 <= args.settle <= 10:
        parser.error("--hold-timeout must be in (0, 600] and --settle in [0, 10]")
    bl.check_machine_arguments(parser, args)
    if "relay" not in args.phases:
        args.sizes = []
    if "rss" not in args.phases:
        args.holds = []
    args.password = secrets.token_hex(8)
    args.key = hashlib.md5(f"{USER}:{REALM}:{args.password}".encode()).hexdigest()

    try:
        exe = bl.build_tool("turnload", args.cc, args.rebuild)
    except bl.BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    port = args.port or bl.free_port(args.ip)
    results: list[Result] = []
    for name in args.only:
        bl.note(f"== {name} on {args.ip}:{port}, CPUs: server {args.server_cpu}, "
                f"load {args.load_cpu}")
        result = bench_server(name, args, exe, args.ip, port)
        if result.error:
            bl.warn(f"{name}: {result.error}")
        results.append(result)

    if args.json:
        by = {r.server: r for r in results}
        c, n = by.get("coturn"), by.get("natsrv")
        ratios: dict[str, float | None] = {}
        if c and n:
            for size in args.sizes:
                ratios[f"relay_{size}"] = ratio(n.relay_pps(size), c.relay_pps(size))
            if "alloc" in args.phases:
                ratios["allocations_per_s"] = ratio(n.alloc_rate(), c.alloc_rate())
            for count in args.holds:
                ratios[f"rss_per_allocation_{count}"] = ratio(
                    n.rss_per_alloc(count), c.rss_per_alloc(count)
                )
        out = {
            "machine": bl.machine_info(),
            "config": {
                key: getattr(args, key)
                for key in ("ip", "peer_ip", "duration", "warmup", "repeat", "phases", "sizes",
                            "allocations", "window", "concurrent", "sources", "holds",
                            "server_cpu", "load_cpu")
            },
            "results": [r.summary() for r in results],
            "ratios_natsrv_coturn": ratios,
            "targets": TARGETS,
        }
        print(json.dumps(out, indent=2))
    else:
        print_table(results, args)
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
