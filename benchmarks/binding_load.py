"""STUN Binding load, side by side: coturn and natsrv (and baselines) on one core each.

For every server under test this script starts the server pinned to one CPU (``taskset``),
waits until it answers a Binding request (probing, no fixed sleeps), then drives it from
another CPU with ``stunload`` (benchmarks/stunload.c, compiled here with the machine's C
compiler into benchmarks/bin/):

1. saturation: a closed loop keeping a window of requests outstanding; responses/s;
2. latency: an open loop at a fixed rate (by default half of that server's saturation);
   p50/p99 round trip.

Then it stops the server (by its PID; only processes this script started) and moves on to
the next one, on the same port. It prints a table, or with ``--json`` one JSON object.

    python benchmarks/binding_load.py                      # coturn, then natsrv
    python benchmarks/binding_load.py --only coturn,python # coturn and the Python baseline
    python benchmarks/binding_load.py --only all --json

Servers: ``coturn`` (``turnserver``, one relay thread, STUN only), ``natsrv`` (``--natsrv-cmd``,
a template with ``{listen}``, ``{ip}``, ``{port}``, ``{python}``, ``{tmp}``), ``python`` (the plain
non-blocking socket loop in py_baseline_responder.py), ``c-echo`` (stunload's own trivial
C responder, which shows the generator's headroom). Traffic stays on 127.0.0.0/8.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BIN_DIR = HERE / "bin"
COMMON_HEADER = HERE / "loadcommon.h"
MAGIC = 0x2112A442
ALL_SERVERS = ("coturn", "natsrv", "python", "c-echo")
DEFAULT_NATSRV_CMD = "{python} -m natsrv serve --listen {listen} --workers 1 --log-level warning"
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A server could not be benchmarked (did not start, died, the load tool failed)."""


# ---------------------------------------------------------------- the load generator


def build_tool(name: str, cc: str, force: bool = False) -> Path:
    """Compile benchmarks/NAME.c into bin/ unless an up-to-date binary is there."""
    BIN_DIR.mkdir(exist_ok=True)
    source = HERE / f"{name}.c"
    exe = BIN_DIR / name
    newest = max(source.stat().st_mtime, COMMON_HEADER.stat().st_mtime)
    if not force and exe.exists() and exe.stat().st_mtime >= newest:
        return exe
    compiler = shutil.which(cc)
    if compiler is None:
        raise BenchError(f"C compiler {cc!r} not found (set --cc or CC)")
    tmp = BIN_DIR / f".{name}.{os.getpid()}"
    cmd = [compiler, "-O2", "-Wall", "-Wextra", "-o", str(tmp), str(source)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise BenchError(f"compiling {name} failed:\n{result.stderr}")
    tmp.replace(exe)
    return exe


def run_stunload(
    exe: Path, cpu: int, mode: str, target: str, options: list[str], budget_s: float
) -> dict[str, Any]:
    """Run one phase of a generator (stunload, turnload: ``EXE MODE -t TARGET ...``)
    pinned to ``cpu`` and return its JSON report."""
    cmd = ["taskset", "-c", str(cpu), str(exe), mode, "-t", target, *options]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=budget_s)
    except subprocess.TimeoutExpired:
        # subprocess.run kills its own child (the one it started) on timeout.
        raise BenchError(f"{exe.name} {mode} did not finish within {budget_s:.0f} s")
    if result.returncode != 0:
        raise BenchError(f"{exe.name} {mode} failed ({result.returncode}): {result.stderr.strip()}")
    report: dict[str, Any] = json.loads(result.stdout)
    return report


# ---------------------------------------------------------------- probing


def binding_request() -> tuple[bytes, bytes]:
    txid = secrets.token_bytes(12)
    return struct.pack("!HHI", 0x0001, 0, MAGIC) + txid, txid


def probe(ip: str, port: int, timeout: float) -> bool:
    """True when ip:port answers one Binding request with a matching success response."""
    request, txid = binding_request()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((ip, 0))
        sock.connect((ip, port))
        sock.settimeout(timeout)
        try:
            sock.send(request)
            deadline = time.monotonic() + timeout
            for _ in range(16):  # ignore a few stray datagrams, bounded
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                sock.settimeout(remaining)
                data = sock.recv(2048)
                if len(data) >= 20 and data[:2] == b"\x01\x01" and data[8:20] == txid:
                    return True
        except OSError:  # timeout, or ICMP port unreachable before the server binds
            return False
    return False


def wait_ready(proc: subprocess.Popen[bytes], ip: str, port: int, timeout: float) -> float:
    """Probe every 50 ms until the server answers; returns seconds waited. Bounded by
    ``timeout`` (a probe to a port nobody holds yet fails at once with ICMP unreachable)."""
    start = time.monotonic()
    interval = 0.05
    for _ in range(int(timeout / interval) + 1):
        if proc.poll() is not None:
            raise BenchError(f"server exited with code {proc.returncode} before answering")
        began = time.monotonic()
        if probe(ip, port, interval):
            return time.monotonic() - start
        if began - start > timeout:
            break
        time.sleep(max(0.0, interval - (time.monotonic() - began)))
    raise BenchError(f"server did not answer a Binding request within {timeout:.0f} s")


def free_port(ip: str) -> int:
    """A port free for both UDP and TCP on ip (servers may listen on both)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((ip, 0))
            port: int = udp.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                    tcp.bind((ip, port))
            except OSError:
                continue
            return port
    raise BenchError("no free port found")


# ---------------------------------------------------------------- CPU accounting


def process_cpu_s(pid: int) -> float:
    """utime + stime of a whole process (all threads), in seconds; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_jiffies(cpus: list[int]) -> dict[int, tuple[int, int]]:
    """Per CPU: (busy, total) jiffies from /proc/stat."""
    out: dict[int, tuple[int, int]] = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *rest = line.split()
            if not name.startswith("cpu") or name == "cpu":
                continue
            cpu = int(name[3:])
            if cpu in cpus:
                values = [int(v) for v in rest[:8]]
                idle = values[3] + values[4]
                out[cpu] = (sum(values) - idle, sum(values))
    return out


def busy_fraction(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]) -> float:
    busy = sum(after[c][0] - before[c][0] for c in after if c in before)
    total = sum(after[c][1] - before[c][1] for c in after if c in before)
    return busy / total if total else 0.0


def others_cpu_snapshot(exclude: set[int]) -> dict[int, float]:
    """CPU seconds (own + reaped children) of every user process not in ``exclude``."""
    snap: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid in exclude:
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[1] == "2" or pid == 2:  # kernel threads (children of kthreadd)
            continue
        snap[pid] = sum(int(v) for v in fields[11:15]) / CLK_TCK
    return snap


def others_cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two snapshots. A process that ended in between moved its
    whole time into its parent's children-time, so its earlier time is taken off again."""
    grown = sum(max(0.0, t - before.get(pid, 0.0)) for pid, t in after.items())
    gone = sum(t for pid, t in before.items() if pid not in after)
    return max(0.0, grown - gone)


def wait_quiet(cpus: list[int], max_wait: float, threshold: float) -> float:
    """Wait (bounded) until the given CPUs are mostly idle; returns the last busy fraction."""
    deadline = time.monotonic() + max_wait
    frac = 1.0
    for _ in range(int(max_wait / 0.5) + 1):
        before = cpu_jiffies(cpus)
        time.sleep(0.5)
        frac = busy_fraction(before, cpu_jiffies(cpus))
        if frac < threshold or time.monotonic() >= deadline:
            break
    return frac


# ---------------------------------------------------------------- servers


def coturn_command(
    executable: str, ip: str, port: int, *extra: str, relay_threads: int = 1
) -> list[str]:
    """coturn with one relay thread (or ``relay_threads``), UDP only, loopback only, no
    CLI, RFC 5780 off (it needs two addresses), its pid file and user database in
    ``{tmp}``; plus ``extra``."""
    turnserver = shutil.which(executable)
    if turnserver is None:
        raise BenchError(f"{executable!r} not found (apt-get install coturn)")
    return [
        turnserver,
        "-n",  # no configuration file
        "--listening-ip", ip,
        "--listening-port", str(port),
        "--relay-threads", str(relay_threads),
        "--no-rfc5780",
        "--no-tls",
        "--no-dtls",
        "--no-tcp",
        "--no-tcp-relay",
        "--no-cli",
        "--log-file", "stdout",
        "--simple-log",
        "--pidfile", "{tmp}/turnserver.pid",
        "--userdb", "{tmp}/turndb",  # not the system database
        *extra,
    ]  # fmt: skip


def server_command(name: str, args: argparse.Namespace, exe: Path, ip: str, port: int) -> list[str]:
    bound = str(int(args.server_lifetime))
    if name == "coturn":
        return coturn_command(args.turnserver, ip, port, "--stun-only")
    if name == "natsrv":
        template = args.natsrv_cmd
        return [
            part.format(listen=f"{ip}:{port}", ip=ip, port=port, python=sys.executable, tmp="{tmp}")
            for part in shlex.split(template)
        ]
    if name == "python":
        return [
            sys.executable,
            str(HERE / "py_baseline_responder.py"),
            "--listen", f"{ip}:{port}",
            "--seconds", bound,
        ]  # fmt: skip
    if name == "c-echo":
        return [str(exe), "echo", "-l", f"{ip}:{port}", "-d", bound]
    raise BenchError(f"unknown server {name!r}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop one process this script started, by its PID: SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@dataclass
class Result:
    server: str
    command: list[str]
    ready_s: float = 0.0
    saturation: list[dict[str, Any]] = field(default_factory=list)
    latency: dict[str, Any] | None = None
    error: str | None = None
    disturbed_limit: float = 0.05

    def best(self) -> dict[str, Any] | None:
        if not self.saturation:
            return None
        return max(self.saturation, key=lambda r: r["responses_per_s"])

    def summary(self) -> dict[str, Any]:
        best = self.best()
        lat = self.latency
        return {
            "server": self.server,
            "command": self.command,
            "error": self.error,
            "ready_s": round(self.ready_s, 3),
            "responses_per_s": best["responses_per_s"] if best else None,
            "responses_per_s_runs": [r["responses_per_s"] for r in self.saturation],
            "server_cpu": best["server_cpu"] if best else None,
            "server_cpu_busy": best["server_cpu_busy"] if best else None,
            "load_cpu_busy": best["load_cpu_busy"] if best else None,
            "disturbed": any(
                r["other_processes_cpu"] > self.disturbed_limit
                for r in [*([best] if best else []), *([lat] if lat else [])]
            ),
            "saturation_loss": best["loss_fraction"] if best else None,
            "latency_rate": lat["rate_target"] if lat else None,
            "latency_achieved_per_s": lat["responses_per_s"] if lat else None,
            "latency_loss": lat["loss_fraction"] if lat else None,
            "p50_us": lat["latency_us"]["p50"] if lat else None,
            "p99_us": lat["latency_us"]["p99"] if lat else None,
            "p999_us": lat["latency_us"]["p999"] if lat else None,
            "saturation_runs": self.saturation,
            "latency_run": lat,
        }


def measure_phase(
    args: argparse.Namespace,
    exe: Path,
    proc: subprocess.Popen[bytes],
    mode: str,
    target: str,
    options: list[str],
) -> dict[str, Any]:
    """One phase; re-run (at most ``--retries`` times) while other processes disturbed it,
    keeping the least disturbed run."""
    best: dict[str, Any] | None = None
    for attempt in range(args.retries + 1):
        report = measure_once(args, exe, proc, mode, target, options)
        report["attempt"] = attempt + 1
        if best is None or report["other_processes_cpu"] < best["other_processes_cpu"]:
            best = report
        if report["other_processes_cpu"] <= args.disturbed:
            break
        warn(
            f"{mode}: other processes used {report['other_processes_cpu']:.0%} of a CPU "
            "during the run; numbers are disturbed"
            + ("; running it again" if attempt < args.retries else "")
        )
    assert best is not None
    return best


def measure_once(
    args: argparse.Namespace,
    exe: Path,
    proc: subprocess.Popen[bytes],
    mode: str,
    target: str,
    options: list[str],
) -> dict[str, Any]:
    cpus = [args.server_cpu, args.load_cpu]
    if args.quiet_wait > 0:
        idle_before = wait_quiet(cpus, args.quiet_wait, args.quiet_threshold)
    else:
        idle_before = -1.0
    exclude = {os.getpid(), proc.pid}
    others0 = others_cpu_snapshot(exclude)
    jiffies0 = cpu_jiffies(cpus)
    server0 = process_cpu_s(proc.pid)
    t0 = time.monotonic()
    budget = args.warmup + args.duration + 30
    report = run_stunload(exe, args.load_cpu, mode, target, options, budget)
    elapsed = time.monotonic() - t0
    server1 = process_cpu_s(proc.pid)
    jiffies1 = cpu_jiffies(cpus)
    # The generator is our child and was reaped: exclude it by excluding ourselves above;
    # a process that started during the phase counts in full.
    other = others_cpu_delta(others0, others_cpu_snapshot(exclude))
    if proc.poll() is not None:
        raise BenchError(f"server exited with code {proc.returncode} during {mode}")
    report["server_cpu"] = round((server1 - server0) / elapsed, 3)
    # Whole-CPU busy fractions (including softirq time, which process times leave out).
    for label, cpu in (("server_cpu_busy", args.server_cpu), ("load_cpu_busy", args.load_cpu)):
        report[label] = round(busy_fraction({cpu: jiffies0[cpu]}, {cpu: jiffies1[cpu]}), 3)
    report["busy_before"] = round(idle_before, 3)
    report["other_processes_cpu"] = round(other / elapsed, 3)
    return report


def bench_server(
    name: str, args: argparse.Namespace, exe: Path, ip: str, port: int, rate_hint: float | None
) -> Result:
    workdir = Path(tempfile.mkdtemp(prefix=f"binding_load_{name}_"))
    try:
        command = server_command(name, args, exe, ip, port)
        command = [part.replace("{tmp}", str(workdir)) for part in command]
    except BenchError as exc:
        return Result(name, [], error=str(exc))
    result = Result(name, command, disturbed_limit=args.disturbed)
    log_path = workdir / "server.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                ["taskset", "-c", str(args.server_cpu), *command],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=HERE.parent,  # so `python -m natsrv` works uninstalled
            )
        result.ready_s = wait_ready(proc, ip, port, args.ready_timeout)
        target = f"{ip}:{port}"
        common = ["-d", str(args.duration), "-W", str(args.warmup), "-s", str(args.sockets)]
        if args.fingerprint:
            common.append("-f")
        for i in range(args.repeat):
            sat = measure_phase(args, exe, proc, "sat", target, [*common, "-w", str(args.window)])
            note(
                f"{name}: saturation run {i + 1}/{args.repeat}: "
                f"{sat['responses_per_s']:,.0f} responses/s, server CPU {sat['server_cpu']:.0%}"
            )
            result.saturation.append(sat)
        best = result.best()
        assert best is not None
        if args.rate:
            rate = args.rate
        elif rate_hint:
            rate = rate_hint
        else:
            rate = best["responses_per_s"] * args.rate_fraction
        if rate >= 1:
            result.latency = measure_phase(
                args, exe, proc, "rate", target, [*common, "-r", f"{rate:.0f}"]
            )
            lat = result.latency["latency_us"]
            note(f"{name}: at {rate:,.0f}/s p50 {lat['p50']:.0f} µs, p99 {lat['p99']:.0f} µs")
    except BenchError as exc:
        result.error = str(exc)
        tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
        if tail:
            result.error += " | server log: " + " / ".join(tail)
    finally:
        if proc is not None:
            stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)
    return result


# ---------------------------------------------------------------- output


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr, flush=True)


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(results: list[Result]) -> None:
    summaries = [r.summary() for r in results]
    coturn = next((s for s in summaries if s["server"] == "coturn"), None)
    base = coturn["responses_per_s"] if coturn else None
    header = (
        f"{'server':<8} {'resp/s':>10} {'proc CPU':>8} {'srv core':>8} {'load core':>9} "
        f"{'lost':>7} {'@ rate/s':>10} {'p50 µs':>8} {'p99 µs':>8} {'vs coturn':>9}"
    )
    print(header)
    print("-" * len(header))
    any_disturbed = False
    for s in summaries:
        if s["error"] and s["responses_per_s"] is None:
            print(f"{s['server']:<8} error: {s['error']}")
            continue
        ratio = s["responses_per_s"] / base if base and s["responses_per_s"] else None
        loss = s["saturation_loss"]
        loss_pct = fmt(loss * 100 if loss is not None else None, ".2f")
        mark = "*" if s["disturbed"] else ""
        any_disturbed = any_disturbed or s["disturbed"]
        print(
            f"{s['server'] + mark:<8} {fmt(s['responses_per_s'], ',.0f'):>10} "
            f"{fmt(s['server_cpu'], '.0%'):>8} {fmt(s['server_cpu_busy'], '.0%'):>8} "
            f"{fmt(s['load_cpu_busy'], '.0%'):>9} {loss_pct:>6}% "
            f"{fmt(s['latency_rate'], ',.0f'):>10} {fmt(s['p50_us'], '.0f'):>8} "
            f"{fmt(s['p99_us'], '.0f'):>8} {fmt(ratio, '.2f'):>9}"
        )
        if s["error"]:
            print(f"{'':<8} error: {s['error']}")
    print(
        "\nresp/s: best saturation run; proc CPU: the server process's CPU time per second;"
        "\nsrv/load core: whole-core busy (incl. softirq) of the server's and generator's CPUs;"
        "\np50/p99: open-loop round trip at '@ rate/s'."
    )
    if any_disturbed:
        print("* other processes used the CPUs during the run: numbers are disturbed")
    natsrv = next((s for s in summaries if s["server"] == "natsrv"), None)
    if base and natsrv and natsrv["responses_per_s"]:
        print(f"\nnatsrv/coturn throughput ratio: {natsrv['responses_per_s'] / base:.2f}")


def parse_servers(text: str) -> list[str]:
    aliases = {"both": ["coturn", "natsrv"], "all": list(ALL_SERVERS)}
    out: list[str] = []
    for part in text.split(","):
        part = part.strip()
        for name in aliases.get(part, [part]):
            if name not in ALL_SERVERS:
                raise argparse.ArgumentTypeError(
                    f"unknown server {name!r} (choose from {', '.join(ALL_SERVERS)}, both, all)"
                )
            if name not in out:
                out.append(name)
    return out


def loopback_ip(text: str) -> str:
    try:
        packed = socket.inet_aton(text)
    except OSError:
        raise argparse.ArgumentTypeError(f"not an IPv4 address: {text!r}")
    if packed[0] != 127:
        raise argparse.ArgumentTypeError("only 127.0.0.0/8 addresses are allowed")
    return text


def machine_info() -> dict[str, object]:
    """What the JSON reports say about the machine they ran on."""
    return {
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def add_machine_arguments(parser: argparse.ArgumentParser, tool: str) -> None:
    """The options every side-by-side benchmark here shares: phases, CPUs, quiet machine,
    build."""
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per phase")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds before measuring")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of each measured phase; the best one counts"
    )
    parser.add_argument("--server-cpu", type=int, default=0, help="CPU for the server")
    parser.add_argument("--load-cpu", type=int, default=1, help="CPU for the generator")
    parser.add_argument(
        "--ready-timeout", type=float, default=20.0, help="seconds to wait for a server to answer"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=20.0,
        help="before each phase wait up to this long for idle CPUs (0: don't)",
    )
    parser.add_argument(
        "--quiet-threshold", type=float, default=0.05, help="CPU busy fraction that counts as idle"
    )
    parser.add_argument(
        "--disturbed",
        type=float,
        default=0.05,
        help="a run is disturbed when other processes used more than this fraction of a CPU",
    )
    parser.add_argument(
        "--retries", type=int, default=2, help="re-runs of a disturbed phase (best kept)"
    )
    parser.add_argument("--cc", default=os.environ.get("CC", "gcc"), help="C compiler")
    parser.add_argument("--rebuild", action="store_true", help=f"recompile {tool}")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def check_machine_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.duration <= 0 or args.duration > 600 or args.warmup < 0 or args.warmup > 60:
        parser.error("--duration must be in (0, 600] and --warmup in [0, 60]")
    if not 1 <= args.repeat <= 20 or not 0 <= args.retries <= 10:
        parser.error("--repeat must be 1..20 and --retries 0..10")
    available = os.sched_getaffinity(0)
    for cpu in (args.server_cpu, args.load_cpu):
        if cpu not in available:
            parser.error(f"CPU {cpu} is not available (have {sorted(available)})")
    if args.server_cpu == args.load_cpu:
        parser.error("--server-cpu and --load-cpu must differ")
    if shutil.which("taskset") is None:
        parser.error("taskset (util-linux) is required")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--only", type=parse_servers, default="both",
        help="comma-separated servers: coturn, natsrv, python, c-echo; or both, all",
    )  # fmt: skip
    parser.add_argument(
        "--natsrv-cmd",
        default=DEFAULT_NATSRV_CMD,
        help="natsrv command template ({listen} {ip} {port} {python} {tmp})",
    )
    parser.add_argument("--turnserver", default="turnserver", help="coturn executable")
    parser.add_argument("--ip", type=loopback_ip, default="127.0.0.1", help="loopback IP")
    parser.add_argument("--port", type=int, default=0, help="server port (0: pick a free one)")
    parser.add_argument("--sockets", type=int, default=8, help="generator source sockets")
    parser.add_argument(
        "--window", type=int, default=512, help="outstanding requests in the saturation run"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="latency-run rate for every server (0: a fraction of its own "
        "saturation, see --rate-fraction; --same-rate uses coturn's)",
    )
    parser.add_argument(
        "--rate-fraction",
        type=float,
        default=0.5,
        help="latency-run rate as a fraction of saturation",
    )
    parser.add_argument(
        "--same-rate", action="store_true", help="run every server's latency phase at coturn's rate"
    )
    parser.add_argument(
        "--fingerprint", action="store_true", help="requests carry a FINGERPRINT attribute"
    )
    add_machine_arguments(parser, tool="stunload")
    args = parser.parse_args()

    if not 1 <= args.sockets <= 64 or not 1 <= args.window <= 65536:
        parser.error("--sockets must be 1..64 and --window 1..65536")
    check_machine_arguments(parser, args)
    per_server = (args.repeat + 1) * (args.retries + 1)
    # Each server lives at most this long (the baselines stop by themselves).
    args.server_lifetime = (
        args.ready_timeout + per_server * (args.warmup + args.duration + 1 + args.quiet_wait) + 60
    )

    try:
        exe = build_tool("stunload", args.cc, args.rebuild)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    port = args.port or free_port(args.ip)
    results: list[Result] = []
    rate_hint: float | None = None
    for name in args.only:
        note(f"== {name} on {args.ip}:{port}, CPUs: server {args.server_cpu}, load {args.load_cpu}")
        result = bench_server(name, args, exe, args.ip, port, rate_hint)
        if result.error:
            warn(f"{name}: {result.error}")
        if args.same_rate and name == "coturn" and result.latency:
            rate_hint = result.latency["rate_target"]
        results.append(result)

    if args.json:
        summaries = [r.summary() for r in results]
        by_name = {s["server"]: s for s in summaries}
        ratio = None
        if by_name.get("coturn", {}).get("responses_per_s") and by_name.get("natsrv", {}).get(
            "responses_per_s"
        ):
            ratio = by_name["natsrv"]["responses_per_s"] / by_name["coturn"]["responses_per_s"]
        out = {
            "machine": machine_info(),
            "config": {
                "ip": args.ip,
                "port": port,
                "duration_s": args.duration,
                "warmup_s": args.warmup,
                "repeat": args.repeat,
                "sockets": args.sockets,
                "window": args.window,
                "fingerprint": args.fingerprint,
                "server_cpu": args.server_cpu,
                "load_cpu": args.load_cpu,
            },
            "results": summaries,
            "ratio_natsrv_coturn": ratio,
        }
        print(json.dumps(out, indent=2))
    else:
        print_table(results)
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
