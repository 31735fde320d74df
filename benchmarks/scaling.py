"""Scaling across cores: natsrv ``--workers N`` beside coturn with ``-m N`` relay threads.

For each N of ``--workers`` (default 1,2) and each server (natsrv with N worker
processes; coturn 4.17.1 and Debian's coturn 4.6.1, each with N relay threads), this
script starts the server with TURN credentials and a loopback relay, waits until it
answers Bindings from many source ports (so that every worker of an SO_REUSEPORT group
is up), and measures, with N load generators side by side (each its own process, its
own source sockets and allocations, so the kernel's hash spreads them over the workers;
on a host too small for that, one generator for every N):

1. Binding responses/s: ``stunload sat`` (benchmarks/stunload.c), summed over the
   generators;
2. relayed packets/s: ``turnload relay`` (benchmarks/turnload.c), 16 allocations per
   generator, ChannelData of 100 and of 1000 bytes to UDP peers, summed.

Placement: with at least 2N + 1 CPUs the server runs on CPUs 0..N-1 and the generators
on CPUs N..2N, each on cores of its own. A host with fewer CPUs cannot keep them apart:
the script says so, and then runs server and generators on all the CPUs it has (shared);
on such a host the figures compare configurations with one another (is N = 2 slower in
total than N = 1 when it shares the cores with its load?), not a server's capacity.
Servers are stopped by PID (only processes this script started). Traffic stays on
127.0.0.0/8.

    python benchmarks/scaling.py                           # N = 1, 2; all three servers
    python benchmarks/scaling.py --workers 1,2,4 --json
    python benchmarks/scaling.py --only natsrv --duration 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import binding_load as bl
import turn_load as tl

#: coturn 4.17.1's turnserver (built from source beside the project, a benchmark peer
#: only): $COTURN_4_17, else whatever `turnserver-4.17.1` is on PATH.
COTURN_4_17 = os.environ.get("COTURN_4_17", "turnserver-4.17.1")
SERVERS = {
    "natsrv": None,
    "coturn-4.17.1": COTURN_4_17,
    "coturn-4.6.1": "turnserver",  # Debian's
}
#: Sources a Binding generator uses: enough 4-tuples for the kernel's hash to spread.
BINDING_SOCKETS = 32


@dataclass
class Run:
    server: str
    workers: int
    placement: str
    generators: int = 1
    binding_per_s: float | None = None
    relay_per_s: dict[int, float] = field(default_factory=dict)
    error: str | None = None


def placement(n: int, generators: int) -> tuple[str, str, str]:
    """(server CPUs, generator CPUs, description) as taskset lists."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2 * n + 1 and len(cpus) >= n + generators:
        server = ",".join(str(c) for c in cpus[:n])
        load = ",".join(str(c) for c in cpus[n : n + max(generators, n + 1)])
        return server, load, f"server on CPUs {server}, load on CPUs {load}"
    shared = ",".join(str(c) for c in cpus)
    return shared, shared, (
        f"SHARED: {len(cpus)} CPUs, fewer than 2N+1 = {2 * n + 1}; server and load "
        f"generators share CPUs {shared}"
    )


def command(name: str, n: int, args: argparse.Namespace, ip: str, port: int) -> list[str]:
    ns = argparse.Namespace(**vars(args))
    ns.relay_threads = n
    if name == "natsrv":
        ns.natsrv_cmd = tl.DEFAULT_NATSRV_CMD.replace("--workers 1", f"--workers {n}")
        return tl.server_command("natsrv", ns, ip, port)
    ns.turnserver = SERVERS[name]
    return tl.server_command("coturn", ns, ip, port)


def wait_all_workers(proc: subprocess.Popen[bytes], ip: str, port: int, timeout: float) -> None:
    """Until 16 Bindings in a row, each from a new source port, are answered."""
    bl.wait_ready(proc, ip, port, timeout)
    deadline = time.monotonic() + timeout
    answered = 0
    while answered < 16:
        if time.monotonic() > deadline or proc.poll() is not None:
            raise bl.BenchError("not every worker answered in time")
        answered = answered + 1 if bl.probe(ip, port, 0.2) else 0


def generate(exe: Path, cpus: str, mode: str, target: str, options: list[str], count: int,
             budget: float) -> list[dict[str, Any]]:  # fmt: skip
    """``count`` generators at once; their JSON reports."""
    procs = [
        subprocess.Popen(["taskset", "-c", cpus, str(exe), mode, "-t", target, *options],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(count)
    ]  # fmt: skip
    reports = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=budget)
            if proc.returncode != 0:
                raise bl.BenchError(f"{exe.name} {mode} failed: {err.strip()}")
            reports.append(json.loads(out))
    except subprocess.TimeoutExpired:
        raise bl.BenchError(f"{exe.name} {mode} did not finish within {budget:.0f} s") from None
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
    return reports


def bench(name: str, n: int, args: argparse.Namespace, tools: dict[str, Path]) -> Run:
    # The generators busy-poll, each a whole CPU: N of them on cores of their own when
    # the host has them; sharing the server's cores, one for every N, so that each N
    # gets the same load.
    generators = args.generators or (n if len(os.sched_getaffinity(0)) >= 2 * n + 1 else 1)
    server_cpus, load_cpus, where = placement(n, generators)
    run = Run(name, n, where, generators)
    ip = args.ip
    port = bl.free_port(ip)
    target = f"{ip}:{port}"
    workdir = Path(tempfile.mkdtemp(prefix=f"scaling_{name}_"))
    proc: subprocess.Popen[bytes] | None = None
    budget = args.warmup + args.duration + 30
    try:
        if name != "natsrv" and shutil.which(str(SERVERS[name])) is None:
            raise bl.BenchError(f"{SERVERS[name]} not found")
        cmd = [p.replace("{tmp}", str(workdir)) for p in command(name, n, args, ip, port)]
        with open(workdir / "server.log", "wb") as log:
            proc = subprocess.Popen(
                ["taskset", "-c", server_cpus, *cmd], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, cwd=bl.HERE.parent,
            )  # fmt: skip
        wait_all_workers(proc, ip, port, args.ready_timeout)
        common = ["-d", str(args.duration), "-W", str(args.warmup)]
        reports = generate(tools["stunload"], load_cpus, "sat", target,
                           [*common, "-s", str(BINDING_SOCKETS), "-w", str(args.window)],
                           generators, budget)  # fmt: skip
        run.binding_per_s = sum(r["responses_per_s"] for r in reports)
        bl.note(f"{name} N={n}: {run.binding_per_s:,.0f} Binding responses/s")
        for size in args.sizes:
            options = [
                *tl.load_options(args), *common, "-n", str(args.allocations),
                "-w", str(args.relay_window), "-z", str(size), "-P", args.peer_ip,
            ]  # fmt: skip
            reports = generate(tools["turnload"], load_cpus, "relay", target, options,
                               generators, budget)  # fmt: skip
            run.relay_per_s[size] = sum(r["packets_per_s"] for r in reports)
            bl.note(f"{name} N={n}: relay {size} B: {run.relay_per_s[size]:,.0f} packets/s")
    except bl.BenchError as exc:
        run.error = str(exc)
        bl.warn(f"{name} N={n}: {exc}")
    finally:
        if proc is not None:
            bl.stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)
    return run


def print_table(runs: list[Run], sizes: list[int]) -> None:
    head = ["server", "N", "gen", "Binding/s", *[f"relay {s} B/s" for s in sizes], "placement"]
    rows = [head]
    for r in runs:
        rows.append([
            r.server, str(r.workers), str(r.generators), bl.fmt(r.binding_per_s, ",.0f"),
            *[bl.fmt(r.relay_per_s.get(s), ",.0f") for s in sizes],
            r.error or r.placement,
        ])  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(head) - 1)]
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2", help="N values, comma-separated")
    parser.add_argument("--only", default=",".join(SERVERS), help="servers, comma-separated")
    parser.add_argument("--generators", type=int, default=0,
                        help="load generator processes (0: N with 2N+1 CPUs, else 1)")  # fmt: skip
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per phase")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds before measuring")
    parser.add_argument("--sizes", type=tl.parse_sizes, default="100,1000", help="bytes")
    parser.add_argument("--allocations", type=int, default=16, help="per generator")
    parser.add_argument("--window", type=int, default=512, help="Bindings in flight")
    parser.add_argument("--relay-window", type=int, default=32, help="per allocation")
    parser.add_argument("--sources", type=int, default=1024, help="client addresses")
    parser.add_argument("--timeout-ms", type=int, default=200, help="turnload timeout")
    parser.add_argument("--ip", type=bl.loopback_ip, default="127.0.0.1")
    parser.add_argument("--peer-ip", type=bl.loopback_ip, default="127.0.0.2")
    parser.add_argument("--ready-timeout", type=float, default=20.0)
    parser.add_argument("--cc", default=os.environ.get("CC", "gcc"), help="C compiler")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    ns = sorted({int(x) for x in args.workers.split(",")})
    names = [x for x in args.only.split(",") if x]
    if any(x not in SERVERS for x in names) or not ns or min(ns) < 1 or max(ns) > 64:
        parser.error(f"--only from {', '.join(SERVERS)}; --workers from 1 to 64")
    if not 0 < args.duration <= 60 or shutil.which("taskset") is None:
        parser.error("--duration must be in (0, 60], and taskset is needed")
    args.password = secrets.token_hex(8)
    args.key = hashlib.md5(f"{tl.USER}:{tl.REALM}:{args.password}".encode()).hexdigest()
    try:
        tools = {t: bl.build_tool(t, args.cc) for t in ("stunload", "turnload")}
    except bl.BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    cpus = len(os.sched_getaffinity(0))
    for n in ns:
        if cpus < 2 * n + 1:
            bl.note(f"this host has {cpus} CPUs, fewer than 2N+1 = {2 * n + 1} for N = {n}: "
                    "server and load generators share the CPUs")  # fmt: skip
    runs = [bench(name, n, args, tools) for name in names for n in ns]  # N side by side
    if args.json:
        print(json.dumps({
            "machine": bl.machine_info(),
            "config": {k: getattr(args, k) for k in ("duration", "warmup", "sizes",
                                                     "allocations", "generators")},
            "runs": [{"server": r.server, "workers": r.workers, "placement": r.placement,
                      "generators": r.generators,
                      "binding_per_s": r.binding_per_s, "relay_per_s": r.relay_per_s,
                      "error": r.error} for r in runs],
        }, indent=2))  # fmt: skip
    else:
        print_table(runs, args.sizes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
