"""``natsrv serve --workers 2`` as a real process on loopback: one SO_REUSEPORT group
the parent owns, shared nonces, quotas and relay port ranges, a worker killed and
replaced on the same sockets, signals fanned out, metrics and sessions of the whole host.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from natsrv.config import Config
from natsrv.core.credentials import rest_credentials
from natsrv.net.steering import worker_of
from natsrv.net.workers import HostLedger, WorkerSetup, relay_range
from natsrv.stun import Attr, Message, MessageClass, Method, ParseError, decode_untrusted
from natsrv.stun.integrity import long_term_key

IP = "127.0.0.1"
REALM = "natsrv.workers"
SECRET = "workers-test-secret"
#: Clients: 100 source addresses, two source ports on each (distinct 5-tuples).
CLIENT_IPS = [f"127.0.3.{i}" for i in range(1, 101)]


class Process:
    """``natsrv serve`` and its log lines as they come."""

    def __init__(self, *argv: str, cwd: Path) -> None:
        env = {**os.environ, "NATSRV_AUTH_SECRET": SECRET}
        argv = (sys.executable, "-m", "natsrv", "serve", *argv)
        self.proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, cwd=cwd, env=env)
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no log line {pattern!r}; log:\n" + "\n".join(self.log))
            self.log.append(line)
            found = re.search(pattern, line)
            if found:
                return found

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.reader.join(timeout=10)
        assert self.proc.stderr is not None
        self.proc.stderr.close()


class Client:
    """One TURN client on its own 5-tuple, with TURN REST credentials for ``user``."""

    def __init__(self, ip: str, server: tuple[str, int], user: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, 0))
        self.sock.settimeout(0.5)
        self.address = self.sock.getsockname()
        self.server = server
        self.username, password = rest_credentials(SECRET, user, 3600, time.time())
        self.key = long_term_key(self.username, REALM, password)
        self.nonce: str | None = None
        self.relay: tuple[str, int] | None = None

    @property
    def name(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    def request(self, method: int, *attrs: tuple[int, Any], nonce: str | None = None) -> Message:
        """Send a signed request (getting a nonce first), retransmitted on silence."""
        for _ in range(8):
            msg = Message(method, MessageClass.REQUEST, attributes=list(attrs))
            use = nonce or self.nonce
            if use is not None:
                msg.attributes += [(Attr.USERNAME, self.username), (Attr.REALM, REALM),
                                   (Attr.NONCE, use)]  # fmt: skip
            self.sock.sendto(msg.encode(key=self.key if use else None), self.server)
            reply = self._reply(msg.transaction_id)
            if reply is None:
                continue
            code = reply.get(Attr.ERROR_CODE)
            if code is not None and code.code in (401, 438) and nonce is None and (
                reply.get(Attr.NONCE) != self.nonce
            ):
                self.nonce = reply.get(Attr.NONCE)
                continue
            return reply
        raise AssertionError(f"no answer to {method:#x} from {self.name}")

    def _reply(self, transaction_id: bytes) -> Message | None:
        while True:
            try:
                data = self.sock.recv(2048)
            except TimeoutError:
                return None
            try:
                reply = decode_untrusted(data)
            except ParseError:
                continue
            if reply.transaction_id == transaction_id:
                return reply

    def allocate(self) -> Message:
        reply = self.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, 17))
        if reply.cls == MessageClass.SUCCESS:
            self.relay = tuple(reply.get(Attr.XOR_RELAYED_ADDRESS))  # type: ignore[assignment]
        return reply

    def send(self, peer: tuple[str, int], data: bytes) -> None:
        msg = Message(Method.SEND, MessageClass.INDICATION,
                      attributes=[(Attr.XOR_PEER_ADDRESS, peer), (Attr.DATA, data)])  # fmt: skip
        self.sock.sendto(msg.encode(), self.server)

    def data(self) -> bytes:
        self.sock.settimeout(3)
        try:
            while True:
                msg = decode_untrusted(self.sock.recv(2048))
                if msg.method == Method.DATA and msg.cls == MessageClass.INDICATION:
                    return bytes(msg.get(Attr.DATA))
        finally:
            self.sock.settimeout(0.5)

    def binding_answered(self) -> bool:
        """One Binding, waited for 50 ms."""
        msg = Message(Method.BINDING, MessageClass.REQUEST)
        self.sock.settimeout(0.05)
        try:
            self.sock.sendto(msg.encode(), self.server)
            return self._reply(msg.transaction_id) is not None
        finally:
            self.sock.settimeout(0.5)


def admin(base: str, path: str) -> str:
    with urllib.request.urlopen(base + path, timeout=10) as answer:
        return str(answer.read().decode())


def sessions_by_client(base: str) -> dict[str, dict[str, Any]]:
    return {s["client"]: s for s in json.loads(admin(base, "/sessions"))["sessions"]}


def relay_both_ways(client: Client, peer: socket.socket, tag: bytes) -> None:
    """The client's data reaches the peer from its relay, and the peer's comes back."""
    assert client.relay is not None
    client.send(peer.getsockname(), tag)
    while True:
        data, source = peer.recvfrom(2048)
        if data == tag:
            break
    assert source == client.relay
    peer.sendto(tag + b"-back", client.relay)
    assert client.data() == tag + b"-back"


def test_relay_ranges_are_disjoint_and_cover_the_range() -> None:
    for workers in (1, 2, 3, 7):
        ranges = [relay_range((49152, 65535), workers, k) for k in range(workers)]
        assert ranges[0][0] == 49152 and ranges[-1][1] == 65535
        assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(ranges))


def test_host_ledger_counts_across_workers_and_forgets_a_dead_one() -> None:
    ledger = HostLedger(2)
    assert ledger.acquire(0, "q", 1, 3, 100) is None
    assert ledger.acquire(1, "q", 2, 3, 100) is None
    assert ledger.acquire(0, "q", 1, 3, 100) == "user"
    assert ledger.acquire(0, "r", 98, 100, 100) == "total"
    ledger.forget(1)
    assert ledger.held("q") == 1 and ledger.acquire(1, "q", 2, 3, 100) is None


def test_a_worker_serves_its_share_of_the_configuration() -> None:
    overrides = {"listen": ((IP, 3478),), "alt_port": None, "tls_port": None,
                 "relay_ports": relay_range((50000, 50999), 2, 1), "metrics_listen": None,
                 "workers": 1}  # fmt: skip
    setup = WorkerSetup(slot=1, workers=2, nonce_key=b"k" * 32, sockets=[], ctl=None,
                        ledger=None, overrides=overrides)  # type: ignore[arg-type]
    config = setup.apply(Config(listen=((IP, 0),), metrics_listen=(IP, 9641),
                                unauth_global_rate=300.0, relay_ports=(50000, 50999)))
    assert config.relay_ports == (50500, 50999) and config.listen == ((IP, 3478),)
    assert config.metrics_listen is None and config.worker_count == 1
    assert config.unauth_global_rate == 150.0  # the host answers no more than configured


def test_two_workers_share_one_host(tmp_path: Path) -> None:
    server = Process("--listen", f"{IP}:0", "--relay-ip", IP, "--workers", "2",
                     "--realm", REALM, "--allow-peer", "127.0.0.0/8", "--user-quota", "3",
                     "--metrics-listen", f"{IP}:0", "--drain-timeout", "20",
                     cwd=tmp_path)  # fmt: skip
    clients: list[Client] = []
    everyone: list[Client] = []  # to close
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind((IP, 0))
    peer.settimeout(3)
    try:
        port = int(server.wait_for(r"listening on udp 127\.0\.0\.1:(\d+)").group(1))
        started = server.wait_for(r"2 workers: (.*)")
        workers = {int(k): (int(pid), (int(lo), int(hi))) for k, pid, lo, hi in re.findall(
            r"worker (\d) pid (\d+) relay ports (\d+)-(\d+)", started.group(1))}  # fmt: skip
        assert sorted(workers) == [0, 1]
        (_, (lo0, hi0)), (_, (lo1, hi1)) = workers[0], workers[1]
        assert hi0 < lo1 or hi1 < lo0, "relay port ranges overlap"
        base = "http://{}:{}".format(*server.wait_for(r"admin .* on http://([\d.]+):(\d+)/")
                                      .groups())  # fmt: skip
        address = (IP, port)

        # 200 allocations from distinct 5-tuples, each its own user; all relay both ways.
        for n, ip in enumerate(CLIENT_IPS):
            for side in range(2):
                client = Client(ip, address, f"user{n}-{side}")
                assert client.allocate().cls == MessageClass.SUCCESS
                reply = client.request(Method.CREATE_PERMISSION,
                                       (Attr.XOR_PEER_ADDRESS, (IP, 9)))  # fmt: skip
                assert reply.cls == MessageClass.SUCCESS
                clients.append(client)
                everyone.append(client)
        for n, client in enumerate(clients):
            relay_both_ways(client, peer, b"hello-%d" % n)

        # Spread over both workers, each relay port in its worker's range, counted once.
        sessions = sessions_by_client(base)
        assert len(sessions) == 200
        holder = {c.name: sessions[c.name]["worker"] for c in clients}
        spread = Counter(holder.values())
        assert spread[0] > 20 and spread[1] > 20, spread
        for c in clients:
            low, high = workers[holder[c.name]][1]
            assert c.relay is not None and low <= c.relay[1] <= high
        metrics = admin(base, "/metrics")
        assert 'natsrv_allocations{family="ipv4"} 200.0' in metrics
        assert "natsrv_workers 2.0" in metrics

        # Every 5-tuple of one client address is with one worker (steered by address).
        for a, b in zip(clients[::2], clients[1::2], strict=True):
            assert holder[a.name] == holder[b.name] == worker_of(a.address[0], 2)

        # user-quota 3 holds across workers: free two 5-tuples on each worker, then one
        # user allocates from them in turn; the fourth is refused with 486.
        on = {k: [c for c in clients if holder[c.name] == k] for k in (0, 1)}
        a0, a1, b0, b1 = on[0][-1], on[0][-2], on[1][-1], on[1][-2]
        for c in (a0, a1, b0, b1):
            assert c.request(Method.REFRESH, (Attr.LIFETIME, 0)).cls == MessageClass.SUCCESS
            clients.remove(c)
        quota = [Client(c.address[0], address, "q") for c in (a0, b0, a1, b1)]
        for c, old in zip(quota, (a0, b0, a1, b1), strict=True):
            c.sock.close()
            c.sock = old.sock  # the same 5-tuple, so the same worker
            c.address = old.address
        assert [c.allocate().cls for c in quota[:3]] == [MessageClass.SUCCESS] * 3
        assert quota[3].allocate().get(Attr.ERROR_CODE).code == 486

        # kill -9 worker 0: worker 1's allocations keep relaying; the replacement, on
        # the same sockets, answers a client whose 5-tuple hashed to worker 0.
        survivor = on[1][0]
        os.kill(workers[0][0], signal.SIGKILL)
        killed_at = time.monotonic()
        relay_both_ways(survivor, peer, b"after-the-kill")
        while not a0.binding_answered():
            assert time.monotonic() - killed_at < 10, "no replacement for the killed worker"
        replaced_in = time.monotonic() - killed_at
        # The issue asks for one second; 0.3-0.45 s measured here, bounded at 2 s so a
        # loaded CI machine (Python starting the worker) does not make it flaky.
        assert replaced_in < 2.0, f"the replacement answered after {replaced_in:.2f} s"
        server.wait_for(r"worker 0 \(pid \d+\) ended \(signal 9\)")
        sessions = sessions_by_client(base)
        assert {s["worker"] for s in sessions.values()} == {1}  # worker 0's went with it
        assert len(sessions) == len(on[1]) - 2 + 1  # b0's slot went to the quota user
        # What the dead worker held is given back: "q" holds one (on worker 1) again.
        assert quota[0].allocate().cls == MessageClass.SUCCESS
        # ... by the replacement, with the dead worker's relay ports.
        assert quota[0].relay is not None and lo0 <= quota[0].relay[1] <= hi0
        assert sessions_by_client(base)[quota[0].name]["worker"] == 0
        assert "natsrv_worker_restarts_total 1.0" in admin(base, "/metrics")
        # One nonce key for every worker: a nonce the dead worker issued is good at its
        # replacement, another process (no 401 or 438: the request is taken as signed).
        moved = on[0][0]
        assert moved.nonce is not None
        reply = moved.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, 17), nonce=moved.nonce)
        assert reply.cls == MessageClass.SUCCESS, reply.get(Attr.ERROR_CODE)
        clients = [c for c in clients if holder[c.name] == 1] + [quota[0], quota[1], moved]

        # SIGHUP reaches every worker (the replacement too): each reloads.
        server.proc.send_signal(signal.SIGHUP)
        reloaded = {server.wait_for(r"worker (\d): reloaded the configuration").group(1)
                    for _ in workers}  # fmt: skip
        assert reloaded == {"0", "1"}

        # SIGTERM drains every worker: live allocations relay on, new ones get 508,
        # and the parent exits 0 once the last allocation has gone.
        server.proc.send_signal(signal.SIGTERM)
        for _ in workers:  # each worker says so
            server.wait_for("draining: new allocations are refused")
        newcomer = Client("127.0.4.1", address, "late")
        everyone.append(newcomer)
        assert newcomer.allocate().get(Attr.ERROR_CODE).code == 508
        relay_both_ways(survivor, peer, b"while-draining")
        for c in clients:
            assert c.request(Method.REFRESH, (Attr.LIFETIME, 0)).cls == MessageClass.SUCCESS
        assert server.proc.wait(timeout=15) == 0
        print(f"the replacement answered {replaced_in:.2f} s after the kill")
    finally:
        server.close()
        peer.close()
        for c in everyone:
            c.sock.close()


def test_a_start_up_problem_is_one_line_and_exit_2_with_workers(tmp_path: Path) -> None:
    for workers in ("1", "2"):
        done = subprocess.run(
            [sys.executable, "-m", "natsrv", "serve", "--listen", f"{IP}:0", "--relay-ip", IP,
             "--workers", workers, "--user-db", str(tmp_path / "missing" / "users.sqlite")],
            capture_output=True, text=True, timeout=30, cwd=tmp_path,
        )  # fmt: skip
        lines = [ln for ln in done.stderr.splitlines() if ln.startswith("natsrv:")]
        assert done.returncode == 2 and len(lines) == 1, done.stderr
        assert "Traceback" not in done.stderr and "user-db" in lines[0]
