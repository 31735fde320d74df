"""coturn's own test client against natsrv relaying over IPv6 and both families at once.

``turnutils_uclient -x`` asks for an IPv6 relay (REQUESTED-ADDRESS-FAMILY), ``-Z`` for a
dual allocation (ADDITIONAL-ADDRESS-FAMILY, in the draft's attribute code 0x8032 that
coturn still sends). With ``-y`` each client sends to its partner's relayed address, so
every message crosses two allocations: here the clients talk to natsrv over IPv4
loopback (HOST), by UDP and by TCP (``-t``), and the relays sit on HOST and ``::1``
(``--relay-ip`` given once per family), with both loopback ranges allowed as peers.
Nothing may be lost.

A second natsrv with only an IPv4 relay shows the other side: ``-x`` is refused with
440 (Address Family not Supported). (``-Z`` there gets its IPv4 half with
ADDRESS-ERROR-CODE 440 for IPv6, which uclient does not read: it then refreshes the
IPv6 half it does not have, gets 443 as RFC 8656 §8.2 says, and gives up; the
project's own client checks that answer in tests/net/test_turn_families.py.)
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

from tests.conftest import ipv6_loopback, require, require_tool
from tests.interop.turn_servers import HOST, TurnServer, running_server

#: One uclient run takes about 6 s (it starts each client's traffic after 1-6 s).
UCLIENT_TIMEOUT = 40.0
MESSAGES = 50  # per client
CLIENTS = 2

_TOTALS = re.compile(r"start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$", re.MULTILINE)
_LOST = re.compile(r"Total lost packets (\d+) \([\d.]+%\), total send dropped (\d+)")



def _run_uclients(server: TurnServer, runs: dict[str, list[str]]) -> dict[str, tuple[int, str]]:
    """Run one uclient per entry of ``runs`` concurrently; (exit status, output) each."""
    tool = require_tool("turnutils_uclient")
    assert server.username is not None and server.password is not None
    common = [
        "-u", server.username, "-w", server.password, "-p", str(server.port),
        "-L", HOST, "-e", HOST, "-y", "-c",
        "-n", str(MESSAGES), "-m", str(CLIENTS), "-l", "120", "-z", "5",
    ]  # fmt: skip
    stdbuf = shutil.which("stdbuf")
    prefix = [stdbuf, "-oL"] if stdbuf else []
    processes = {
        name: subprocess.Popen(
            [*prefix, tool, *flags, *common, server.host],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        for name, flags in runs.items()
    }
    results: dict[str, tuple[int, str]] = {}
    deadline = time.monotonic() + UCLIENT_TIMEOUT
    try:
        for name, process in processes.items():
            try:
                out, _ = process.communicate(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()  # by PID: only the clients this test started
                out, _ = process.communicate()
            results[name] = (process.returncode, out.decode(errors="replace"))
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
            process.wait()
            if process.stdout is not None:
                process.stdout.close()
    return results


def _assert_nothing_lost(name: str, status: int, out: str, server: TurnServer) -> None:
    context = f"run {name}\n--- uclient ---\n{out[-3000:]}\n--- natsrv ---\n{server.log(3000)}"
    assert status == 0, context
    expected = str(MESSAGES * CLIENTS)
    assert _TOTALS.findall(out) == [(expected, expected)], context
    assert [(int(a), int(b)) for a, b in _LOST.findall(out)] == [(0, 0)], context


def test_uclient_ipv6_relay_and_dual_allocation(tmp_path: Path) -> None:
    require(ipv6_loopback(), "no IPv6 loopback (::1)")
    extra = ["--relay-ip", "::1", "--allow-peer", "::1/128"]
    with running_server("natsrv", tmp_path / "natsrv", extra_args=extra) as server:
        results = _run_uclients(server, {"ipv6": ["-x"], "dual": ["-Z"],
                                         "ipv6-tcp": ["-t", "-x"], "dual-tcp": ["-t", "-Z"]})
        for name, (status, out) in results.items():
            _assert_nothing_lost(name, status, out, server)
        log = server.log(200_000)
    # -x allocations got an IPv6 relay alone, -Z ones both (uclient may add one more
    # allocation of either kind); none was IPv4 alone.
    relays = re.findall(r'allocation-created .*relays="\[(.*?)\]"', log)
    ipv6_only = [r for r in relays if "127." not in r and "[::1]" in r]
    dual = [r for r in relays if "127." in r and "[::1]" in r]
    assert len(ipv6_only) >= 2 * CLIENTS and len(dual) >= 2 * CLIENTS, relays
    assert len(ipv6_only) + len(dual) == len(relays), relays


def test_uclient_ipv6_relay_without_an_ipv6_relay_address(tmp_path: Path) -> None:
    """No IPv6 relay address: -x gets 440."""
    with running_server("natsrv", tmp_path / "natsrv") as server:
        status, out = _run_uclients(server, {"ipv6": ["-x"]})["ipv6"]
        assert "error 440" in out and status != 0, out[-3000:]
