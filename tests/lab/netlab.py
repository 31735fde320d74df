"""A NAT lab for tests: three network namespaces joined by veth pairs, a NAT router
made of nftables rules, one topology per RFC 3489 / RFC 4787 NAT behaviour.

::

    cli (client)                     rtr (NAT router)                      pub (STUN server)
    eth0 10.200.0.2/24    <-veth->   lan0 10.200.0.1/24
      (or 203.0.113.66/26)             (or 203.0.113.65/26)
                                     wan0 203.0.113.1/32      <-veth->     up0 198.51.100.1/24
                                                                               198.51.100.2/24

Only 198.51.100.0/24 and 203.0.113.0/24 ("public") and 10.200.0.0/16 (private) are
used; no namespace is connected to the host's own network, so nothing leaves the lab.

API::

    TOPOLOGIES: dict[str, Topology]        # name -> what it is and what it should measure
    nat_lab(topology, *, hairpin=None) -> ContextManager[Lab]
    Lab.pub, Lab.rtr, Lab.cli              # namespace names (unique per lab)
    Lab.server_ips                         # ("198.51.100.1", "198.51.100.2"), both in pub
    Lab.client_ip, Lab.router_public_ip, Lab.router_lan_ip, Lab.hairpin, Lab.ruleset
    Lab.netns_argv(ns, argv) -> list[str]  # "ip netns exec ns ..." (e.g. for trio.run_process)
    Lab.popen(ns, argv, **kw) -> Popen     # tracked; killed by PID when the lab closes
    Lab.run(ns, argv, *, timeout=10, **kw) -> CompletedProcess
    Lab.diagnostics() -> str               # router ruleset, sets and conntrack table
    wait_for_line(proc, needle, *, timeout=5, stream="stdout") -> str
    wait_udp_bound(proc, ip, port, *, timeout=5)   # server without a readiness line
    lab_unavailable_reason() -> str | None; require_root_lab()   # skip, or fail if CI=true

Example (a test under tests/lab/, using the ``nat_lab_factory`` fixture of conftest.py)::

    @pytest.mark.root
    def test_classify(nat_lab_factory):
        lab = nat_lab_factory("port-restricted-cone")
        srv = lab.popen(lab.pub, [sys.executable, "-m", "natsrv", "serve",
                                  "--listen", "198.51.100.1:3478",
                                  "--alt-ip", "198.51.100.2", "--alt-port", "3479"],
                        stderr=subprocess.PIPE, text=True)
        wait_for_line(srv, "listening on udp 198.51.100.2:3479", stream="stderr")
        out = lab.run(lab.cli, [sys.executable, "-m", "natsrv", "classify",
                                "198.51.100.1", "--json"], capture_output=True, text=True)

Topologies (``TOPOLOGIES`` holds the expected mapping, filtering and hairpinning):

- ``open-internet``: the client has a public address, the router only routes.
- ``full-cone``: static 1:1 NAT 10.200.0.2 <-> 203.0.113.1, ports preserved; any
  outside host can send to a mapped port.
- ``restricted-cone``: the same 1:1 NAT, plus a dynamic set of (internal ip, internal
  port, remote ip) the client has sent to; inbound UDP only from such a remote IP.
- ``port-restricted-cone``: masquerade; conntrack keeps the source port, inbound only
  on a conntrack entry, i.e. from exactly the remote ip:port contacted.
- ``symmetric``: masquerade with ``fully-random`` ports, a new port per destination.
- ``symmetric-udp-firewall``: no NAT, public client, stateful firewall
  (ct state established,related) dropping unsolicited inbound UDP.
- ``udp-blocked``: every UDP datagram from the client is dropped (client behind NAT).

Hairpinning (a datagram from the inside to the router's public ip:mapped port is looped
back, its source rewritten to the sender's public mapping): ``hairpin`` is a parameter
of the four NAT topologies; by default ``full-cone`` and ``port-restricted-cone``
hairpin, ``restricted-cone`` and ``symmetric`` do not (the router drops the datagram in
its input chain). In ``open-internet`` and ``symmetric-udp-firewall`` the "mapped
address" is the client's own, so the client's kernel delivers it locally: always
hairpins (only ``hairpin=None`` or ``True`` accepted). ``udp-blocked``: not applicable.

The netfilter trap: a datagram arriving at the router's public address that matches no
NAT mapping reaches the router's own INPUT hook; if it were accepted there, its
conntrack entry would be confirmed and would hold that port (for that remote ip:port),
so the next outbound mapping of the same port to that remote gets another port. Like a
real home router, every router here has an input chain with ``policy drop`` (only
loopback, established/related and ICMP echo pass), so such a datagram never gets a
confirmed conntrack entry. ``router_input_drop=False`` exists only to demonstrate the
trap in the self-test.

Namespaces are named ``natlab-<pid>-<hex>-<role>``; every lab deletes its own on exit
(after killing, by PID, the processes it started and any other process still inside
them), and each new lab first removes namespaces left by crashed runs of this fixture
(those whose ``<pid>`` is no longer alive).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
import selectors
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

EI = "endpoint-independent"
AD = "address-dependent"
APD = "address-and-port-dependent"

SERVER_IPS = ("198.51.100.1", "198.51.100.2")
ROUTER_PUBLIC_IP = "203.0.113.1"
PRIVATE_LAN = ("10.200.0.1", "10.200.0.2", 24)  # router, client, prefix length
PRIVATE_NET = "10.200.0.0/24"
PUBLIC_LAN = ("203.0.113.65", "203.0.113.66", 26)

NS_PREFIX = "natlab-"
_NS_RE = re.compile(r"^natlab-(\d+)-[0-9a-f]+-(pub|rtr|cli|chk)$")
_NETNS_DIR = Path("/run/netns")
_CMD_TIMEOUT = 10.0


@dataclass(frozen=True)
class Topology:
    """One router behaviour and what a correct classifier should report for it."""

    name: str
    description: str
    nat: bool  #: the client is behind address translation (private address)
    mapping: str | None  #: RFC 4787 mapping behaviour; None where UDP cannot pass
    filtering: str | None  #: RFC 4787 filtering behaviour; None where UDP cannot pass
    hairpin_default: bool | None  #: None: not applicable (UDP blocked)
    hairpin_configurable: bool  #: whether ``nat_lab(..., hairpin=False/True)`` changes it

    def resolve_hairpin(self, hairpin: bool | None) -> bool | None:
        if hairpin is None or hairpin == self.hairpin_default:
            return self.hairpin_default
        if not self.hairpin_configurable:
            raise ValueError(f"{self.name}: hairpinning is fixed at {self.hairpin_default}")
        return hairpin


TOPOLOGIES: dict[str, Topology] = {
    t.name: t
    for t in (
        Topology("open-internet", "public client, no NAT, no filtering",
                 nat=False, mapping=EI, filtering=EI,
                 hairpin_default=True, hairpin_configurable=False),
        Topology("full-cone", "static 1:1 NAT, ports preserved, no filtering",
                 nat=True, mapping=EI, filtering=EI,
                 hairpin_default=True, hairpin_configurable=True),
        Topology("restricted-cone", "1:1 NAT, inbound only from remote IPs contacted",
                 nat=True, mapping=EI, filtering=AD,
                 hairpin_default=False, hairpin_configurable=True),
        Topology("port-restricted-cone", "masquerade (source port kept), conntrack filter",
                 nat=True, mapping=EI, filtering=APD,
                 hairpin_default=True, hairpin_configurable=True),
        Topology("symmetric", "masquerade with fully random ports, conntrack filter",
                 nat=True, mapping=APD, filtering=APD,
                 hairpin_default=False, hairpin_configurable=True),
        Topology("symmetric-udp-firewall", "public client, stateful firewall, no NAT",
                 nat=False, mapping=EI, filtering=APD,
                 hairpin_default=True, hairpin_configurable=False),
        Topology("udp-blocked", "all UDP from the client dropped",
                 nat=True, mapping=None, filtering=None,
                 hairpin_default=None, hairpin_configurable=False),
    )
}


# ---------------------------------------------------------------------------- rulesets

def router_ruleset(topology: Topology, *, hairpin: bool | None,
                   input_drop: bool = True) -> str:
    """The router namespace's whole nftables ruleset (``nft -f`` input) for a topology."""
    pub = ROUTER_PUBLIC_IP
    lan_net = PRIVATE_NET
    client = PRIVATE_LAN[1]
    sets: list[str] = []
    pre: list[str] = []
    post: list[str] = []
    record: list[str] = []
    fwd = ["ct state established,related accept"]
    policy = "drop"
    name = topology.name

    if name == "open-internet":
        policy = "accept"
    elif name == "symmetric-udp-firewall":
        fwd.append('iifname "lan0" oifname "wan0" accept')
    elif name in ("full-cone", "restricted-cone"):
        # Static 1:1: every inbound UDP datagram to the public IP goes to the client,
        # same port; with hairpin also those from the LAN side.
        only_wan = "" if hairpin else 'iifname "wan0" '
        pre.append(f"{only_wan}ip daddr {pub} meta l4proto udp dnat to {client}")
        post.append(f'oifname "wan0" ip saddr {client} snat to {pub}')
        if name == "restricted-cone":
            sets.append("set contacted { type ipv4_addr . inet_service . ipv4_addr; "
                        "flags dynamic,timeout; timeout 10m; }")
            # Recorded (and refreshed) on every outbound datagram, so before the
            # established-flow shortcut.
            fwd.insert(0, 'iifname "lan0" oifname "wan0" meta l4proto udp '
                       "update @contacted { ip saddr . udp sport . ip daddr }")
            fwd.append('iifname "wan0" oifname "lan0" meta l4proto udp '
                       "ip daddr . udp dport . ip saddr @contacted accept")
        else:
            fwd.append('iifname "wan0" oifname "lan0" ct status dnat accept')
        fwd.append('iifname "lan0" oifname "wan0" accept')
    elif name in ("port-restricted-cone", "symmetric", "udp-blocked"):
        flags = " fully-random" if name == "symmetric" else ""
        post.append(f'oifname "wan0" ip saddr {lan_net} masquerade{flags}')
        if name == "udp-blocked":
            fwd.insert(0, 'iifname "lan0" meta l4proto udp drop')
        if hairpin:
            # Masquerade has no static DNAT to loop back through, so remember each
            # mapping (public port -> internal ip:port) as it is made and DNAT with that.
            sets.append("map hairpin { type inet_service : ipv4_addr . inet_service; "
                        "flags dynamic,timeout; timeout 10m; }")
            record.append('oifname "wan0" meta l4proto udp update @hairpin '
                          "{ ct reply proto-dst : ct original ip saddr . ct original proto-src }")
            pre.append(f'iifname "lan0" ip daddr {pub} meta l4proto udp '
                       "dnat ip to udp dport map @hairpin")
            post.append(f'oifname "lan0" ip saddr {lan_net} ct status dnat snat to {pub}{flags}')
        fwd.append('iifname "lan0" oifname "wan0" accept')
    else:  # pragma: no cover - TOPOLOGIES and this function are kept in step
        raise ValueError(name)

    if hairpin and name in ("full-cone", "restricted-cone"):
        post.append(f'oifname "lan0" ip saddr {lan_net} ct status dnat snat to {pub}')
    if hairpin and topology.nat:
        fwd.append('iifname "lan0" oifname "lan0" ct status dnat accept')

    def chain(cname: str, hook: str, prio: str, rules: list[str], pol: str) -> str:
        body = "".join(f"\t\t{r}\n" for r in rules)
        return (f"\tchain {cname} {{\n\t\ttype {hook} priority {prio}; policy {pol};\n"
                f"{body}\t}}\n")

    in_policy = "drop" if input_drop else "accept"
    text = "table ip natlab {\n"
    text += "".join(f"\t{s}\n" for s in sets)
    text += chain("input", "filter hook input", "filter", [
        'iifname "lo" accept',
        "ct state established,related accept",
        "icmp type echo-request accept",
    ], in_policy)
    text += chain("forward", "filter hook forward", "filter", fwd, policy)
    if pre:
        text += chain("prerouting", "nat hook prerouting", "dstnat", pre, "accept")
    if post:
        text += chain("postrouting", "nat hook postrouting", "srcnat", post, "accept")
    if record:
        text += chain("record", "filter hook postrouting", "srcnat + 1", record, "accept")
    return text + "}\n"


# ---------------------------------------------------------------------------- commands

def _cmd(argv: Sequence[str], *, stdin: str | None = None) -> str:
    """Run a setup command; raise with its stderr if it fails."""
    proc = subprocess.run(list(argv), input=stdin, capture_output=True, text=True,
                          timeout=_CMD_TIMEOUT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): "
                           f"{proc.stderr.strip()}\n{stdin or ''}")
    return proc.stdout


def _netns_argv(ns: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def _kill_pid(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _namespace_pids(ns: str) -> list[int]:
    proc = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                          timeout=_CMD_TIMEOUT, check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def _delete_namespace(ns: str) -> None:
    """Kill (by PID) whatever still runs inside ``ns``, then delete it."""
    for pid in _namespace_pids(ns):
        if pid != os.getpid():
            _kill_pid(pid)
    subprocess.run(["ip", "netns", "delete", ns], capture_output=True,
                   timeout=_CMD_TIMEOUT, check=False)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_namespaces() -> list[str]:
    """Delete namespaces left by crashed runs of this fixture (owner PID gone)."""
    removed = []
    names = os.listdir(_NETNS_DIR) if _NETNS_DIR.is_dir() else []
    for name in sorted(names):
        match = _NS_RE.match(name)
        if match and not _pid_alive(int(match.group(1))):
            _delete_namespace(name)
            removed.append(name)
    return removed


def _new_names(roles: Sequence[str]) -> dict[str, str]:
    token = secrets.token_hex(3)
    return {role: f"{NS_PREFIX}{os.getpid()}-{token}-{role}" for role in roles}


# ---------------------------------------------------------------------------- availability

@functools.cache
def lab_unavailable_reason() -> str | None:
    """Why the lab cannot run here (not root, no ip/nft, no netns or nftables), or None."""
    if os.geteuid() != 0:
        return "NAT lab needs root (network namespaces and nftables)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"NAT lab needs `{tool}` (apt-get install iproute2 nftables)"
    ns = _new_names(["chk"])["chk"]
    try:
        _cmd(["ip", "netns", "add", ns])
        _cmd(["ip", "-n", ns, "link", "set", "lo", "up"])
        _cmd(_netns_argv(ns, ["nft", "-f", "-"]),
             stdin="table ip t { chain c { type nat hook postrouting priority 100; "
                   "masquerade fully-random; }; }\n")
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return f"NAT lab cannot create a namespace with nftables NAT: {exc}"
    finally:
        _delete_namespace(ns)
    return None


def require_root_lab() -> None:
    """Skip the calling test when the lab cannot run; fail instead when CI == "true"."""
    reason = lab_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"prerequisite missing in CI: {reason}")
    pytest.skip(reason)


# ---------------------------------------------------------------------------- the lab

class Lab:
    """One running topology. Made by :func:`nat_lab`; see the module docstring."""

    server_ips = SERVER_IPS
    router_public_ip = ROUTER_PUBLIC_IP

    def __init__(self, topology: Topology, *, hairpin: bool | None,
                 router_input_drop: bool = True) -> None:
        self.topology = topology
        self.hairpin = hairpin
        names = _new_names(["pub", "rtr", "cli"])
        self.pub, self.rtr, self.cli = names["pub"], names["rtr"], names["cli"]
        lan = PRIVATE_LAN if topology.nat else PUBLIC_LAN
        self.router_lan_ip, self.client_ip, self._lan_prefix = lan
        self.ruleset = router_ruleset(topology, hairpin=hairpin, input_drop=router_input_drop)
        self._created: list[str] = []
        self._procs: list[subprocess.Popen[Any]] = []

    def __repr__(self) -> str:
        return f"<Lab {self.topology.name} hairpin={self.hairpin} rtr={self.rtr}>"

    # -- processes
    def netns_argv(self, ns: str, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside namespace ``ns`` (for callers starting it themselves)."""
        self._check_ns(ns)
        return _netns_argv(ns, argv)

    def popen(self, ns: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in ``ns``; the lab kills it by PID when it closes."""
        proc = subprocess.Popen(self.netns_argv(ns, argv), **kw)
        self._procs.append(proc)
        return proc

    def run(self, ns: str, argv: Sequence[str], *, timeout: float = _CMD_TIMEOUT,
            **kw: Any) -> subprocess.CompletedProcess[Any]:
        """Run ``argv`` in ``ns`` to completion (killed after ``timeout`` seconds)."""
        kw.setdefault("check", False)
        return subprocess.run(self.netns_argv(ns, argv), timeout=timeout, **kw)

    def diagnostics(self) -> str:
        """The router's ruleset (with set contents) and conntrack table, for a failure."""
        out = []
        for title, argv in (("nft list ruleset", ["nft", "list", "ruleset"]),
                            ("conntrack", ["cat", "/proc/net/nf_conntrack"])):
            done = self.run(self.rtr, argv, capture_output=True, text=True)
            out.append(f"--- {title} in {self.rtr}\n{done.stdout}{done.stderr}")
        return "\n".join(out)

    def _check_ns(self, ns: str) -> None:
        if ns not in (self.pub, self.rtr, self.cli):
            raise ValueError(f"{ns!r} is not a namespace of {self!r}")

    # -- life cycle
    def _build(self) -> None:
        # Namespaces first; each recorded as soon as it exists so teardown finds it.
        for ns in (self.pub, self.rtr, self.cli):
            _cmd(["ip", "netns", "add", ns])
            self._created.append(ns)
        for ns in (self.pub, self.rtr, self.cli):
            sysctls = ["net.ipv6.conf.all.disable_ipv6=1",
                       "net.ipv6.conf.default.disable_ipv6=1"]
            if ns == self.rtr:
                sysctls += ["net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0",
                            "net.ipv4.conf.default.rp_filter=0"]
            _cmd(_netns_argv(ns, ["sysctl", "-q", "-w", *sysctls]))
        # The router's ruleset is in place before any link is up.
        _cmd(_netns_argv(self.rtr, ["nft", "-f", "-"]), stdin=self.ruleset)
        lan_plen = self._lan_prefix
        _cmd(["ip", "-n", self.rtr, "-batch", "-"], stdin="\n".join([
            f"link add wan0 type veth peer name up0 netns {self.pub}",
            f"link add lan0 type veth peer name eth0 netns {self.cli}",
            "link set lo up",
            f"addr add {ROUTER_PUBLIC_IP}/32 dev wan0",
            f"addr add {self.router_lan_ip}/{lan_plen} dev lan0",
            "link set wan0 up",
            "link set lan0 up",
            f"route add 198.51.100.0/24 dev wan0 src {ROUTER_PUBLIC_IP}",
            "",
        ]))
        _cmd(["ip", "-n", self.pub, "-batch", "-"], stdin="\n".join([
            "link set lo up",
            *(f"addr add {ip}/24 dev up0" for ip in SERVER_IPS),
            "link set up0 up",
            f"route add 203.0.113.0/24 via {ROUTER_PUBLIC_IP} dev up0 onlink",
            "",
        ]))
        _cmd(["ip", "-n", self.cli, "-batch", "-"], stdin="\n".join([
            "link set lo up",
            f"addr add {self.client_ip}/{lan_plen} dev eth0",
            "link set eth0 up",
            f"route add default via {self.router_lan_ip} dev eth0",
            "",
        ]))

    def _teardown(self) -> None:
        # SIGTERM first, so that a server can exit cleanly; SIGKILL whatever lingers.
        for proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 2.0
        for proc in self._procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill_pid(proc.pid)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        for ns in reversed(self._created):
            _delete_namespace(ns)
        left = [ns for ns in self._created if (_NETNS_DIR / ns).exists()]
        if left:
            raise RuntimeError(f"NAT lab could not delete namespaces {left}")


@contextlib.contextmanager
def nat_lab(topology: str, *, hairpin: bool | None = None,
            router_input_drop: bool = True) -> Iterator[Lab]:
    """Build ``topology`` (a key of :data:`TOPOLOGIES`); tear it all down on exit.

    ``hairpin``: None for the topology's default, or True/False where configurable.
    ``router_input_drop=False`` only demonstrates the netfilter trap (module docstring).
    """
    if topology not in TOPOLOGIES:
        raise ValueError(f"unknown topology {topology!r}; one of {sorted(TOPOLOGIES)}")
    topo = TOPOLOGIES[topology]
    lab = Lab(topo, hairpin=topo.resolve_hairpin(hairpin),
              router_input_drop=router_input_drop)
    remove_stale_namespaces()
    try:
        lab._build()
        yield lab
    finally:
        lab._teardown()


# ---------------------------------------------------------------------------- readiness

def wait_for_line(proc: subprocess.Popen[Any], needle: str, *, timeout: float = 5.0,
                  stream: Literal["stdout", "stderr"] = "stdout") -> str:
    """Read ``proc``'s pipe until a line contains ``needle``; return that line.

    Reads the pipe's file descriptor a byte at a time, so nothing past that line is
    consumed: the caller can go on reading ``proc.stdout`` / ``proc.stderr`` (text or
    binary) afterwards, or call this again. Raises TimeoutError, with what was read, if
    no such line comes within ``timeout`` seconds or the pipe closes first.
    """
    pipe = proc.stdout if stream == "stdout" else proc.stderr
    if pipe is None:
        raise ValueError(f"start the process with {stream}=subprocess.PIPE")
    fd = pipe.fileno()
    read: list[str] = []
    line = bytearray()
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0 and sel.select(left):
            byte = os.read(fd, 1)
            if not byte:
                break
            line += byte
            if byte == b"\n":
                text = line.decode(errors="replace")
                read.append(text)
                line.clear()
                if needle in text:
                    return text
    read.append(line.decode(errors="replace"))
    raise TimeoutError(f"no line with {needle!r} within {timeout}s "
                       f"(exit {proc.poll()}); read: {''.join(read)!r}")


def wait_udp_bound(proc: subprocess.Popen[Any], ip: str, port: int, *,
                   timeout: float = 5.0) -> None:
    """Wait until some socket in ``proc``'s network namespace is bound to UDP ``ip:port``.

    For servers that print no readiness line: reads ``/proc/<pid>/net/udp`` (the
    namespace of ``proc``, started by :meth:`Lab.popen`) until the socket appears.
    """
    octets = [int(o) for o in ip.split(".")]
    want = {f"{octets[3]:02X}{octets[2]:02X}{octets[1]:02X}{octets[0]:02X}:{port:04X}",
            f"00000000:{port:04X}"}  # that address, or the wildcard
    table = Path(f"/proc/{proc.pid}/net/udp")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}) before binding {ip}:{port}")
        with contextlib.suppress(OSError):
            if any(line.split()[1] in want for line in table.read_text().splitlines()[1:]):
                return
        # Nothing signals "bound" from another process: read the table again shortly,
        # waiting on the process meanwhile (so that an exit ends the wait at once).
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.005)
    raise TimeoutError(f"nothing bound to udp {ip}:{port} within {timeout}s")
