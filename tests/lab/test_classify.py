"""``natsrv classify``, the real CLI as a subprocess in the lab's client namespace, against
real servers in its public namespace: natsrv, coturn, stund, and limited or broken
servers (fake_stun.py), through every NAT topology of netlab.py.

Expected answers:

- Each topology: its name as ``nat_type``, the mapping and filtering labelled in
  ``TOPOLOGIES``; hairpinning as the router was built, except where there is no NAT
  (open-internet, symmetric-udp-firewall): there the "mapped address" is the host's own,
  so hairpinning does not apply and is reported as null (the lab's ``hairpin`` flag says
  only that the kernel delivers such a datagram locally). udp-blocked: every behaviour
  unknown, hairpinning null, exit status 0 (udp-blocked is a verdict).

- Limited servers, each behind a port-restricted NAT, and what the honest answer is:

  ======================  ==============================================================
  no alternate            natsrv without --alt-ip/--alt-port: no OTHER-ADDRESS. unknown,
                          ``no-alternate-address``; hairpinning still measured (it needs
                          only the mapped address).
  alternate on same IP    natsrv --alt-port only: OTHER-ADDRESS on the primary IP. unknown,
                          ``alternate-same-ip`` (no test can send from a second IP).
  alternate unreachable   advertised, but nothing serves it. unknown,
                          ``alternate-unreachable``: the missing replies are the server's,
                          not the NAT's filtering.
  CHANGE-REQUEST ignored  replies from the primary whatever was asked. unknown,
                          ``change-request-ignored``; mapping still measured (it needs only
                          plain requests to the alternate): endpoint-independent.
  CHANGE-REQUEST -> 420   unknown, ``change-request-rejected``; mapping still measured.
  XOR-only (RFC 5389)     only XOR-MAPPED-ADDRESS, no OTHER-ADDRESS, 420 to CHANGE-REQUEST:
                          unknown, ``no-alternate-address`` (CHANGE-REQUEST is never even
                          sent: the reply names no alternate); the mapped address is still
                          reported, from XOR-MAPPED-ADDRESS.
  classic-only (RFC 3489) ignores requests with the magic cookie, answers cookie-less ones
                          with MAPPED-, SOURCE- and CHANGED-ADDRESS and honours
                          CHANGE-REQUEST: it supports every test the classic flow needs,
                          so the honest answer is the real type, port-restricted-cone,
                          found by the RFC 3489 fallback (dialect ``rfc3489``, with a note).
  ======================  ==============================================================

Timing (the issue's bounds, generously asserted): ``duration_s`` (the classification,
without interpreter start-up) under 2 s where everything is answered, under 4 s for a
port-restricted NAT, where every filtering probe goes unanswered.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_tool

from .netlab import TOPOLOGIES, Lab, wait_for_line, wait_udp_bound

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
IP1, IP2 = "198.51.100.1", "198.51.100.2"
P1, P2 = 3478, 3479
SERVER = f"{IP1}:{P1}"
CLASSIFY_TIMEOUT = 30.0
#: For runs whose timing is not under test: the lab's round trip is well under a
#: millisecond, so half a second per unanswered request is still generous.
FAST = ("--timeout", "0.5")

Make = Callable[..., Lab]


@dataclass(frozen=True)
class Classified:
    returncode: int
    out: dict[str, Any]
    stderr: str
    wall_s: float

    def summary(self) -> tuple[str, str, str, bool | None]:
        o = self.out
        return o["nat_type"], o["mapping"], o["filtering"], o["hairpinning"]


NO_ANSWER = "natsrv classify: no answer from the server; UDP may be blocked or the server down\n"


def classify(lab: Lab, *args: str, ns: str | None = None,
             timeout: float = CLASSIFY_TIMEOUT) -> Classified:
    """The real CLI, ``natsrv classify --json ARGS``, in the client namespace."""
    start = time.monotonic()
    done = lab.run(ns or lab.cli, [sys.executable, "-m", "natsrv", "classify", "--json", *args],
                   capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    wall = time.monotonic() - start
    assert done.returncode in (0, 3), (done.returncode, done.stderr)
    silent = json.loads(done.stdout)["nat_type"] == "udp-blocked"
    # Not a terminal: no progress, nothing else; but silence is said on stderr.
    assert done.stderr == (NO_ANSWER if silent else ""), done.stderr
    return Classified(done.returncode, json.loads(done.stdout), done.stderr, wall)


def start_natsrv(lab: Lab, *flags: str, listen: str = SERVER, ns: str | None = None,
                 ready: Sequence[str] = ()) -> subprocess.Popen[str]:
    """natsrv in the public namespace; waits for the "listening on udp" line of each
    endpoint in ``ready`` (default: the primary)."""
    proc = lab.popen(ns or lab.pub, [sys.executable, "-m", "natsrv", "serve", "--listen", listen,
                                     "--no-tcp", *flags],
                     stderr=subprocess.PIPE, text=True, cwd=ROOT)
    for endpoint in ready or [listen.replace("[", "").replace("]", "")]:
        wait_for_line(proc, f"listening on udp {endpoint}", stream="stderr", timeout=10)
    return proc


def start_rfc5780_natsrv(lab: Lab) -> subprocess.Popen[str]:
    # The four endpoints are logged in order; the last one means all are bound.
    return start_natsrv(lab, "--alt-ip", IP2, "--alt-port", str(P2), ready=[f"{IP2}:{P2}"])


def start_fake(lab: Lab, mode: str) -> subprocess.Popen[str]:
    proc = lab.popen(lab.pub, [sys.executable, str(HERE / "fake_stun.py"), "--mode", mode,
                               "--primary", SERVER, "--alternate", f"{IP2}:{P2}",
                               "--lifetime", "60"],
                     stdout=subprocess.PIPE, text=True)
    wait_for_line(proc, "ready", timeout=10)
    return proc


def expected(lab: Lab) -> tuple[str, str, str, bool | None]:
    topo = lab.topology
    hairpin = lab.hairpin if topo.nat and topo.mapping is not None else None
    return topo.name, topo.mapping or "unknown", topo.filtering or "unknown", hairpin


def diagnose(lab: Lab, result: Classified) -> str:
    return f"{json.dumps(result.out, indent=1)}\n{lab.diagnostics()}"


# --------------------------------------------------------------------------- topologies

CASES = [(name, None) for name in TOPOLOGIES] + [
    ("full-cone", False),  # a cone NAT that does not hairpin
    ("restricted-cone", True),  # one that does
    ("port-restricted-cone", False),
    ("symmetric", True),
]

#: Topologies where every probe is answered: the issue's "responsive network".
RESPONSIVE = {("open-internet", None), ("full-cone", None)}


@pytest.mark.root
@pytest.mark.parametrize(("topology", "hairpin"), CASES,
                         ids=[n if h is None else f"{n}-hairpin{h}" for n, h in CASES])
def test_classify_topology(nat_lab_factory: Make, topology: str, hairpin: bool | None) -> None:
    lab = nat_lab_factory(topology, hairpin=hairpin)
    start_rfc5780_natsrv(lab)
    result = classify(lab, SERVER)
    out = result.out
    assert result.summary() == expected(lab), diagnose(lab, result)
    # No answer at all cannot tell blocked UDP from a server that is down: exit 3.
    assert result.returncode == (3 if topology == "udp-blocked" else 0)
    assert out["reason"] is None or topology == "udp-blocked"
    assert out["server"]["primary"] == {"ip": IP1, "port": P1}
    assert out["local_address"]["ip"] == lab.client_ip
    if topology == "udp-blocked":
        assert out["reason_code"] == "no-response-from-server"
        assert out["mapped_address"] is None
        assert {p["outcome"] for p in out["probes"]} == {"timeout"}
        return
    assert out["server"]["alternate"] == {"ip": IP2, "port": P2}
    assert out["server"]["dialect"] == "rfc5389"
    assert out["undetermined"] == []
    public_ip = lab.router_public_ip if lab.topology.nat else lab.client_ip
    assert out["mapped_address"]["ip"] == public_ip
    if topology != "symmetric":  # these routers keep the source port
        assert out["port_allocation"] == {"preserves_port": True, "delta": None}
    for probe in out["probes"]:
        assert set(probe) >= {"target", "flags", "outcome", "rtt_ms"}
        assert (probe["rtt_ms"] is None) == (probe["outcome"] == "timeout")
    assert not out["alg_suspected"] and not out["cgnat_suspected"]
    # Timing: duration_s is the classification itself, without interpreter start-up.
    if (topology, hairpin) in RESPONSIVE:
        assert out["duration_s"] < 2.0, out["duration_s"]
        assert all(p["outcome"] == "ok" for p in out["probes"])
    if topology == "port-restricted-cone":
        assert out["duration_s"] < 4.0, out["duration_s"]
    assert result.wall_s < 8.0


@pytest.mark.root
@pytest.mark.parametrize("topology", ["port-restricted-cone", "restricted-cone"])
def test_classify_through_a_router_that_accepts_unsolicited_datagrams(
    nat_lab_factory: Make, topology: str
) -> None:
    """The netfilter trap (netlab.py): this router's INPUT chain accepts what its NAT
    filters, so each filtered reply leaves a conntrack entry holding that mapped port for
    its sender. Fresh sockets per family keep the families apart regardless, and the
    classic flow sends Test II/III from a second socket, so Test I to the alternate still
    sees Test I's mapping (it would otherwise look symmetric, and disagree)."""
    lab = nat_lab_factory(topology, router_input_drop=False)
    start_rfc5780_natsrv(lab)
    result = classify(lab, SERVER)
    # No answer at all cannot tell blocked UDP from a server that is down: exit 3.
    assert result.returncode == (3 if topology == "udp-blocked" else 0), diagnose(lab, result)
    assert result.summary() == expected(lab), diagnose(lab, result)


# --------------------------------------------------------------------------- limited servers


def no_alternate(lab: Lab) -> None:
    start_natsrv(lab)


def alternate_same_ip(lab: Lab) -> None:
    start_natsrv(lab, "--alt-port", str(P2), ready=[f"{IP1}:{P2}"])


def fake(mode: str) -> Callable[[Lab], None]:
    def start(lab: Lab) -> None:
        start_fake(lab, mode)

    return start


@dataclass(frozen=True)
class Fault:
    name: str
    start: Callable[[Lab], None]
    nat_type: str
    reason_code: str | None
    mapping: str
    filtering: str
    dialect: str = "rfc5389"


FAULTS = [
    Fault("no-alternate", no_alternate, "unknown", "no-alternate-address", "unknown", "unknown"),
    Fault("alternate-same-ip", alternate_same_ip, "unknown", "alternate-same-ip",
          "unknown", "unknown"),
    Fault("alternate-unreachable", fake("alt-unreachable"), "unknown", "alternate-unreachable",
          "unknown", "unknown"),
    Fault("change-request-ignored", fake("ignore-change"), "unknown", "change-request-ignored",
          "endpoint-independent", "unknown"),
    Fault("change-request-420", fake("reject-change"), "unknown", "change-request-rejected",
          "endpoint-independent", "unknown"),
    Fault("xor-only", fake("xor-only"), "unknown", "no-alternate-address", "unknown", "unknown"),
    Fault("classic-only", fake("classic-only"), "port-restricted-cone", None,
          "endpoint-independent", "address-and-port-dependent", dialect="rfc3489"),
]


@pytest.mark.root
@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_limited_server_behind_port_restricted_nat(nat_lab_factory: Make, fault: Fault) -> None:
    lab = nat_lab_factory("port-restricted-cone")
    fault.start(lab)
    result = classify(lab, SERVER, *FAST)
    out = result.out
    assert (out["nat_type"], out["reason_code"], out["mapping"], out["filtering"]) == (
        fault.nat_type, fault.reason_code, fault.mapping, fault.filtering,
    ), diagnose(lab, result)
    assert out["server"]["dialect"] == fault.dialect
    # The parts that a limited server still supports are measured all the same.
    assert out["mapped_address"]["ip"] == lab.router_public_ip
    assert out["hairpinning"] is True
    if fault.nat_type == "unknown":
        assert result.returncode == 3
        assert out["reason"]
        whats = {u["what"]: u["reason_code"] for u in out["undetermined"]}
        assert whats["nat_type"] == fault.reason_code
        assert whats["filtering"] == fault.reason_code
    else:
        assert result.returncode == 0
        assert any("RFC 3489 requests" in note for note in out["notes"]), out["notes"]
        # Every family's Test I went out with the cookie first, unanswered.
        modern = [p for p in out["probes"] if p["dialect"] == "rfc5389"]
        assert modern and all(p["outcome"] == "timeout" and not p["used"] for p in modern)
    if fault.name == "xor-only":
        assert out["server"]["alternate"] is None
        assert all(p["legacy_mapped_address"] is None for p in out["probes"])
        assert not any(p["flags"] for p in out["probes"])  # CHANGE-REQUEST never sent


# --------------------------------------------------------------------------- coturn, stund


def start_coturn(lab: Lab) -> None:
    turnserver = require_tool("turnserver")
    proc = lab.popen(lab.pub, [
        turnserver, "-n", "--no-cli", "--no-tls", "--no-dtls", "--stun-only",
        "-L", IP1, "-L", IP2, "-p", str(P1), "--alt-listening-port", str(P2),
        "--log-file", "stdout", "--simple-log", "--no-stdout-log",
    ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for ip in (IP1, IP2):
        for port in (P1, P2):
            wait_udp_bound(proc, ip, port, timeout=10)


def start_stund(lab: Lab) -> None:
    require_tool("stund")
    stund = "/usr/sbin/stund" if Path("/usr/sbin/stund").exists() else "stund"
    proc = lab.popen(lab.pub, [stund, "-h", IP1, "-a", IP2, "-p", str(P1), "-o", str(P2)],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for ip in (IP1, IP2):
        for port in (P1, P2):
            wait_udp_bound(proc, ip, port, timeout=10)


THIRD_PARTY = [(server, topology) for server in ("coturn", "stund")
               for topology in ("port-restricted-cone", "symmetric")]


@pytest.mark.root
@pytest.mark.parametrize(("server", "topology"), THIRD_PARTY,
                         ids=[f"{s}-{t}" for s, t in THIRD_PARTY])
def test_classify_against_other_servers(nat_lab_factory: Make, server: str,
                                        topology: str) -> None:
    lab = nat_lab_factory(topology)
    {"coturn": start_coturn, "stund": start_stund}[server](lab)
    result = classify(lab, SERVER, *FAST)
    assert result.returncode == 0
    assert result.summary() == expected(lab), diagnose(lab, result)
    software = result.out["server"]["software"]
    assert software is not None
    assert ("Coturn" if server == "coturn" else "Vovida") in software


# --------------------------------------------------------------------------- more


@pytest.mark.root
def test_second_server_classifies_a_symmetric_nat_without_alternates(
    nat_lab_factory: Make,
) -> None:
    """Two plain servers (no OTHER-ADDRESS): on its own the primary cannot test the
    mapping, but --alt shows that it changes with the destination."""
    lab = nat_lab_factory("symmetric")
    start_natsrv(lab)
    start_natsrv(lab, listen=f"{IP2}:{P1}")
    alone = classify(lab, SERVER, *FAST)
    assert (alone.returncode, alone.out["reason_code"]) == (3, "no-alternate-address")
    both = classify(lab, SERVER, "--alt", f"{IP2}:{P1}", *FAST)
    out = both.out
    assert both.returncode == 0, diagnose(lab, both)
    assert (out["nat_type"], out["mapping"]) == ("symmetric", "unknown")
    check = out["cross_check"]
    assert check["server"] == {"ip": IP2, "port": P1}
    assert check["agrees"] is True
    assert check["mapped_address"] != out["mapped_address"]


@pytest.mark.root
def test_binding_lifetime_is_measured(nat_lab_factory: Make) -> None:
    """RFC 5780 §4.6 with RESPONSE-PORT, against a router whose conntrack forgets an idle
    UDP binding after 1 s (set in the router's own namespace only)."""
    lab = nat_lab_factory("port-restricted-cone")
    lab.run(lab.rtr, ["sysctl", "-q", "-w", "net.netfilter.nf_conntrack_udp_timeout=1"],
            check=True)
    start_rfc5780_natsrv(lab)
    result = classify(lab, SERVER, "--lifetime", "--lifetime-limit", "3", "--timeout", "0.3")
    out = result.out
    assert out["nat_type"] == "port-restricted-cone"
    life = out["lifetime"]
    assert life["consistent"] is True, life
    assert life["lower_s"] <= 1.0 + 0.05 and life["upper_s"] >= 1.0 - 0.05, life
    assert life["upper_s"] - life["lower_s"] <= 3 / 60 + 1e-9, life
    # Half of a one-second binding is no keepalive interval to recommend.
    assert (life["keepalive_s"], life["reason_code"]) == (None, "lifetime-too-short")
    assert {t["alive"] for t in life["trials"]} == {True, False}


@pytest.mark.root
def test_lifetime_unsupported_without_response_port(nat_lab_factory: Make) -> None:
    lab = nat_lab_factory("port-restricted-cone")
    start_fake(lab, "ignore-change")  # ignores RESPONSE-PORT too
    out = classify(lab, SERVER, "--lifetime", "--lifetime-limit", "3", *FAST).out
    assert out["lifetime"]["reason_code"] == "lifetime-unsupported"
    assert "RESPONSE-PORT" in out["lifetime"]["reason"]


@pytest.mark.root
def test_ipv6_open_internet(nat_lab_factory: Make) -> None:
    """IPv6 literal server, classified over IPv6: server and client share the public
    namespace, with two IPv6 addresses on its loopback (the lab itself is IPv4-only)."""
    lab = nat_lab_factory("open-internet")
    v6a, v6b = "2001:db8::1", "2001:db8::2"
    lab.run(lab.pub, ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=0",
                      "net.ipv6.conf.lo.disable_ipv6=0"], check=True)
    for ip in (v6a, v6b):
        lab.run(lab.pub, ["ip", "-6", "addr", "add", f"{ip}/128", "dev", "lo", "nodad"],
                check=True)
    start_natsrv(lab, "--alt-ip", v6b, "--alt-port", str(P2), listen=f"[{v6a}]:{P1}",
                 ns=lab.pub, ready=[f"{v6b}:{P2}"])
    result = classify(lab, f"[{v6a}]:{P1}", ns=lab.pub)
    out = result.out
    assert result.summary() == ("open-internet", "endpoint-independent",
                                "endpoint-independent", None), out
    assert out["ip_version"] == 6
    assert out["server"]["alternate"] == {"ip": v6b, "port": P2}
    assert out["mapped_address"] == out["local_address"]
