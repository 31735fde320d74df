"""Self-test of the NAT lab: every topology in ``TOPOLOGIES`` maps, filters and
hairpins UDP exactly as labelled, unsolicited datagrams leave no mapping behind (the
netfilter trap), and labs clean up after themselves, even after a failure.

A reflector (reflector.py) in "pub" listens on both server IPs, two ports each; a probe
(probe.py) in "cli" asks it for replies, from other addresses too, and reports what
came back (RFC 5780 section 4 tests, done by hand).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI, PRIVATE_PORTS, private_loopback_ip

from .netlab import (
    AD,
    APD,
    EI,
    NS_PREFIX,
    TOPOLOGIES,
    Lab,
    lab_unavailable_reason,
    nat_lab,
    remove_stale_namespaces,
    require_root_lab,
    wait_for_line,
    wait_udp_bound,
)

HERE = Path(__file__).resolve().parent
P1, P2 = 3478, 3479
NETNS_DIR = Path("/run/netns")

Make = Callable[..., Lab]


def start_reflector(lab: Lab) -> subprocess.Popen[str]:
    argv = [sys.executable, str(HERE / "reflector.py"), "--lifetime", "60"]
    for ip in lab.server_ips:
        argv += ["--ip", ip]
    argv += ["--port", str(P1), "--port", str(P2)]
    proc = lab.popen(lab.pub, argv, stdout=subprocess.PIPE, text=True)
    wait_for_line(proc, "ready")
    return proc


def run_probe(lab: Lab, steps: list[dict[str, Any]], **plan: Any) -> dict[str, Any]:
    done = lab.run(lab.cli, [sys.executable, str(HERE / "probe.py")],
                   input=json.dumps({"steps": steps, **plan}),
                   capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def servers(lab: Lab) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
    ip1, ip2 = lab.server_ips
    return [ip1, P1], [ip1, P2], [ip2, P1], [ip2, P2]


def seen(result: dict[str, Any]) -> tuple[str, int] | None:
    reply = result["reply"]
    return None if reply is None else (reply["seen"][0], reply["seen"][1])


CASES = [(name, None) for name in TOPOLOGIES] + [
    (name, not t.hairpin_default) for name, t in TOPOLOGIES.items() if t.hairpin_configurable
]


@pytest.mark.root
@pytest.mark.parametrize(("topology", "hairpin"), CASES,
                         ids=[f"{n}-hairpin{h}" if h is not None else n for n, h in CASES])
def test_topology_behaves_as_labelled(nat_lab_factory: Make, topology: str,
                                      hairpin: bool | None) -> None:
    lab = nat_lab_factory(topology, hairpin=hairpin)
    topo = lab.topology
    start_reflector(lab)
    s11, s12, s21, s22 = servers(lab)

    if topo.mapping is None:  # udp-blocked: nothing gets through, either way
        r = run_probe(lab, [
            {"op": "bind", "key": "m", "sock": "m"},
            {"op": "ask", "key": "a", "sock": "m", "to": s11, "timeout": 0.3},
            {"op": "ask", "key": "b", "sock": "m", "to": s22, "reply_from": s11,
             "timeout": 0.3},
        ])
        assert r["a"] == {"reply": None, "marker": False}
        assert r["b"] == {"reply": None, "marker": False}
        assert lab.hairpin is None
        return

    steps: list[dict[str, Any]] = [{"op": "bind", "key": "m", "sock": "m"}]
    steps += [{"op": "ask", "key": f"map{i}", "sock": "m", "to": s}
              for i, s in enumerate((s11, s12, s21, s22))]
    # Filtering: a fresh socket (so a fresh mapping) per question.
    for key, sock, reply_from in (("other_ip", "a", s21), ("other_port", "b", s12),
                                  ("other_ip_and_port", "c", s22)):
        steps += [{"op": "bind", "key": sock, "sock": sock},
                  {"op": "ask", "key": key, "sock": sock, "to": s11, "reply_from": reply_from}]
    # Filtering state follows what this mapping has sent to: after contacting s22,
    # s21 (same IP, other port) and s22 itself try again.
    steps += [{"op": "bind", "key": "d", "sock": "d"},
              {"op": "ask", "key": "contact", "sock": "d", "to": s22},
              {"op": "ask", "key": "contacted_ip", "sock": "d", "to": s11, "reply_from": s21},
              {"op": "ask", "key": "contacted_endpoint", "sock": "d", "to": s11,
               "reply_from": s22}]
    # Hairpinning: h1 sends to h2's mapped address; h2's own round trip afterwards is
    # the barrier that says the looped datagram, if any, has had time to arrive.
    steps += [{"op": "bind", "key": "h1", "sock": "h1"},
              {"op": "bind", "key": "h2", "sock": "h2"},
              {"op": "ask", "key": "h1map", "sock": "h1", "to": s11},
              {"op": "ask", "key": "h2map", "sock": "h2", "to": s11},
              {"op": "send", "key": "hsend", "sock": "h1", "to": {"seen_of": "h2map"},
               "payload": "hairpin"},
              {"op": "ask", "key": "hbarrier", "sock": "h2", "to": s11},
              {"op": "take", "key": "hairpin", "sock": "h2", "payload": "hairpin"}]
    r = run_probe(lab, steps)

    # Every request arrived (the marker came back), so a missing reply was filtered.
    assert all(v["marker"] for v in r.values() if "marker" in v), (r, lab.diagnostics())

    public_ip = lab.router_public_ip if topo.nat else lab.client_ip
    local_port = r["m"]["local"][1]
    mapped = [seen(r[f"map{i}"]) for i in range(4)]
    if topo.mapping == EI:
        # The same mapping everywhere, source port preserved.
        assert mapped == [(public_ip, local_port)] * 4, lab.diagnostics()
    else:
        assert topo.mapping == APD
        assert {m[0] for m in mapped if m} == {public_ip}
        # A new port per destination.
        assert len({m[1] for m in mapped if m}) == 4, lab.diagnostics()

    got = {k: r[k]["reply"] is not None for k in
           ("other_ip", "other_port", "other_ip_and_port", "contacted_ip", "contacted_endpoint")}
    want = {
        "other_ip": topo.filtering == EI,
        "other_port": topo.filtering in (EI, AD),
        "other_ip_and_port": topo.filtering == EI,
        "contacted_ip": topo.filtering in (EI, AD),
        # Filtering is per mapping: with APD mapping, d's mapping toward s11 is not
        # the one that contacted s22.
        "contacted_endpoint": topo.filtering == EI or topo.mapping == EI,
    }
    assert got == want, lab.diagnostics()

    assert lab.hairpin is (topo.hairpin_default if hairpin is None else hairpin)
    looped = r["hairpin"]["from"]
    if not lab.hairpin:
        assert looped is None
    elif topo.mapping == EI:
        assert tuple(looped) == seen(r["h1map"])  # source is the sender's public mapping
    else:
        assert looped[0] == lab.router_public_ip  # a new mapping, toward h2's


@pytest.mark.root
@pytest.mark.parametrize("router_input_drop", [True, False], ids=["guarded", "trap"])
def test_unsolicited_datagram_leaves_no_mapping(nat_lab_factory: Make,
                                                router_input_drop: bool) -> None:
    """A datagram from s11 to the router's public IP:X, before the client has used X,
    must not change the mapping the client then gets for X toward s11. With the
    router's input chain accepting it (the trap), conntrack confirms an entry that
    holds X, and masquerade has to pick another port."""
    lab = nat_lab_factory("port-restricted-cone", router_input_drop=router_input_drop)
    start_reflector(lab)
    s11 = servers(lab)[0]
    # A first probe run only learns a free port X; the second binds it before anything
    # else, has s11 send to the router's public IP:X, then sends from X itself.
    x = run_probe(lab, [{"op": "bind", "key": "t", "sock": "t"}])["t"]["local"][1]
    r = run_probe(lab, [
        {"op": "bind", "key": "t", "sock": "t", "port": x},
        {"op": "bind", "key": "c", "sock": "c"},
        {"op": "ask", "key": "unsolicited", "sock": "c", "to": s11, "reply_from": s11,
         "reply_to": [lab.router_public_ip, x]},
        {"op": "ask", "key": "map", "sock": "t", "to": s11},
    ])
    assert r["unsolicited"]["marker"]
    mapped = seen(r["map"])
    assert mapped is not None
    assert mapped[0] == lab.router_public_ip
    if router_input_drop:
        assert mapped[1] == x
    else:
        assert mapped[1] != x  # the trap is real on this kernel; the guard matters


@pytest.mark.root
def test_lab_cleans_up_after_failure() -> None:
    require_root_lab()
    with pytest.raises(RuntimeError, match="boom"), nat_lab("symmetric") as lab:
        names = (lab.pub, lab.rtr, lab.cli)
        assert all((NETNS_DIR / ns).exists() for ns in names)
        tracked = lab.popen(lab.pub, [sys.executable, "-c", "import time; time.sleep(60)"])
        # Started behind the lab's back: found inside its namespace and killed too.
        untracked = subprocess.Popen(lab.netns_argv(lab.cli, [
            sys.executable, "-c",
            "import socket, time; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            "s.bind(('0.0.0.0', 4000)); print('bound', flush=True); time.sleep(60)"]),
            stdout=subprocess.PIPE, text=True)
        wait_for_line(untracked, "bound", timeout=10)  # running inside cli by now
        raise RuntimeError("boom")
    assert not any((NETNS_DIR / ns).exists() for ns in names)
    assert tracked.poll() is not None
    assert untracked.wait(timeout=5) == -9
    assert untracked.stdout is not None
    untracked.stdout.close()


@pytest.mark.root
def test_stale_namespaces_of_dead_runs_are_removed() -> None:
    require_root_lab()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=10)
    stale = f"{NS_PREFIX}{gone.pid}-abcdef-rtr"
    live = f"{NS_PREFIX}{os.getpid()}-abcdef-rtr"
    other = "natlabx-1-abcdef-rtr"  # not ours: another prefix
    try:
        for ns in (stale, live, other):
            subprocess.run(["ip", "netns", "add", ns], check=True, timeout=10)
        assert remove_stale_namespaces() == [stale]
        assert not (NETNS_DIR / stale).exists()
        assert (NETNS_DIR / live).exists()
        assert (NETNS_DIR / other).exists()
    finally:
        for ns in (stale, live, other):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, timeout=10)


def test_unknown_topology_and_fixed_hairpin_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown topology"), nat_lab("cone-ish"):
        pass
    with pytest.raises(ValueError, match="fixed"), nat_lab("open-internet", hairpin=False):
        pass


@pytest.mark.parametrize("ci", ["true", None])
def test_require_root_lab_skips_or_fails_in_ci(monkeypatch: pytest.MonkeyPatch,
                                               ci: str | None) -> None:
    monkeypatch.setattr("tests.lab.netlab.lab_unavailable_reason", lambda: "no lab here")
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
        with pytest.raises(pytest.skip.Exception, match="no lab here"):
            require_root_lab()
    else:
        monkeypatch.setenv("CI", ci)
        with pytest.raises(pytest.fail.Exception, match="prerequisite missing in CI: no lab"):
            require_root_lab()


def test_wait_for_line_consumes_only_up_to_the_line() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdout.write('a\\nready 1\\nb\\nc\\n')"],
        stdout=subprocess.PIPE, text=True,
    ) as proc:
        assert wait_for_line(proc, "ready", timeout=10) == "ready 1\n"
        assert wait_for_line(proc, "b", timeout=10) == "b\n"
        assert proc.stdout is not None
        assert proc.stdout.read() == "c\n"
        with pytest.raises(TimeoutError, match="no line with 'never'"):
            wait_for_line(proc, "never", timeout=10)


def test_wait_udp_bound_sees_that_socket_only() -> None:
    ip, port = private_loopback_ip(), PRIVATE_PORTS[2]  # nothing else binds these
    script = ("import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
              "s.bind((sys.argv[1], int(sys.argv[2]))); sys.stdin.read()")
    with subprocess.Popen([sys.executable, "-c", script, ip, str(port)],
                          stdin=subprocess.PIPE) as proc:
        wait_udp_bound(proc, ip, port, timeout=10)
        with pytest.raises(TimeoutError, match=f"nothing bound to udp {ip}:{port + 1}"):
            wait_udp_bound(proc, ip, port + 1, timeout=0.2)
        assert proc.stdin is not None
        proc.stdin.close()  # the child's cue to exit
        assert proc.wait(timeout=10) == 0
        with pytest.raises(RuntimeError, match="process exited"):
            wait_udp_bound(proc, ip, port, timeout=10)


@pytest.fixture
def fresh_availability() -> Iterator[None]:
    """``lab_unavailable_reason`` is cached: recompute it in the test and after it."""
    lab_unavailable_reason.cache_clear()
    yield
    lab_unavailable_reason.cache_clear()


def test_availability_is_reported(monkeypatch: pytest.MonkeyPatch,
                                  fresh_availability: None) -> None:
    reason = lab_unavailable_reason()
    assert reason is None or reason.startswith("NAT lab")
    if IN_CI:  # CI runs the lab: as root, with ip and nft
        assert reason is None
    lab_unavailable_reason.cache_clear()
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert lab_unavailable_reason() == "NAT lab needs root (network namespaces and nftables)"
    lab_unavailable_reason.cache_clear()
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda tool: None if tool == "nft" else "/bin/true")
    assert lab_unavailable_reason() == (
        "NAT lab needs `nft` (apt-get install iproute2 nftables)"
    )
