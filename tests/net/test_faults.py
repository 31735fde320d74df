"""Faults, each against a real ``natsrv serve`` process on loopback: the system clock
jumping, descriptors running out (EMFILE at accept and at relay bind), the relay port
range exhausted, a peer answering with ICMP unreachable, SIGKILL and an immediate
restart on the same ports."""

from __future__ import annotations

import resource
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.natsrv_process import NatsrvProcess  # noqa: E402
from benchmarks.turnclient import TurnClient, TurnError, make_certificate  # noqa: E402
from tests.conftest import PRIVATE_PORTS, private_loopback_ip  # noqa: E402

IP = "127.0.0.1"
REALM = "natsrv.test"
USER, PASSWORD = "alice", "wonderland"
TURN_ARGS = ["--listen", f"{IP}:0", "--realm", REALM, "--user", f"{USER}:{PASSWORD}",
             "--allow-peer", "127.0.0.0/8", "--metrics-listen", f"{IP}:0"]  # fmt: skip


def client(server: NatsrvProcess, kind: str = "udp") -> TurnClient:
    address = {"udp": server.udp, "tcp": server.tcp, "tls": server.tls}[kind][0]
    return TurnClient(kind, address, user=USER, password=PASSWORD, realm=REALM, rto=0.1,
                      tries=5)  # fmt: skip


@pytest.fixture
def peer() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((IP, 0))
    sock.settimeout(5)
    yield sock
    sock.close()


#: Python run in the server before natsrv is imported: ``time.time`` jumps by the
#: number of seconds written in the file NATSRV_TEST_CLOCK_JUMP names.
CLOCK_PRELUDE = """
import os, time
_real_time = time.time
_jump_file = os.environ["NATSRV_TEST_CLOCK_JUMP"]
def _jumping_time():
    try:
        with open(_jump_file) as f:
            return _real_time() + float(f.read() or 0)
    except OSError:
        return _real_time()
time.time = _jumping_time
"""


@pytest.mark.parametrize("jump", [3600.0, -3600.0])
def test_the_system_clock_jumping_moves_no_lifetime(
    tmp_path: Path, peer: socket.socket, jump: float
) -> None:
    jump_file = tmp_path / "jump"
    args = [*TURN_ARGS, "--default-lifetime", "600", "--channel-lifetime", "600"]
    with NatsrvProcess(args, python_prelude=CLOCK_PRELUDE,
                       env={"NATSRV_TEST_CLOCK_JUMP": str(jump_file)}) as server, \
            client(server) as alice:  # fmt: skip
        alice.allocate()
        alice.bind_channel(0x4000, peer.getsockname())
        before = server.sessions()[0]
        jump_file.write_text(str(jump))  # the system clock is set an hour on (or back)
        after = server.sessions()[0]
        assert after["lifetime_left_s"] == pytest.approx(before["lifetime_left_s"], abs=5)
        alice.send_channel(0x4000, b"after the jump")
        assert peer.recv(100) == b"after the jump"  # the channel lives on
        alice.refresh(0)  # and is deleted when asked, not before
        assert server.sessions() == []


def limit_files(limit: int) -> Callable[[], None]:
    """A preexec_fn: the server process may hold at most ``limit`` descriptors (soft and
    hard, so natsrv cannot raise it at start)."""

    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return preexec


def test_out_of_descriptors_allocate_gets_508_accept_backs_off_and_service_resumes() -> None:
    limit = 40
    args = [*TURN_ARGS, "--tcp-first-message-timeout", "60", "--tcp-idle-timeout", "60"]
    with NatsrvProcess(args, preexec=limit_files(limit)) as server:
        assert server.fds() < limit - 5
        # Hold connections until the server's accept fails with EMFILE.
        hogs = []
        try:
            for _ in range(limit):
                hog = socket.create_connection(server.tcp[0], timeout=5)
                hogs.append(hog)
            server.wait_for("accept failed on tcp")  # EMFILE: it backs off and retries
            assert server.fds() == limit
            with client(server) as alice:
                alice.binding()  # UDP is served meanwhile
                with pytest.raises(TurnError) as refused:
                    alice.allocate()  # no descriptor for a relay socket
                assert refused.value.code == 508
        finally:
            for hog in hogs:
                hog.close()
        # The connections are gone: accept works again, and so does Allocate.
        with client(server, "tcp") as bob:
            bob.binding()
            bob.allocate()
            bob.refresh(0)
        with client(server) as alice:
            alice.allocate()
        assert server.proc.poll() is None
        assert server.metrics()['natsrv_stream_connection_events_total{event="accept-error"}'] > 0


def test_the_relay_port_range_exhausted_gets_508_until_a_port_is_free() -> None:
    relay_ip = private_loopback_ip()
    low = PRIVATE_PORTS[40]
    args = [*TURN_ARGS, "--relay-ip", relay_ip, "--relay-ports", f"{low}-{low + 2}"]
    with NatsrvProcess(args) as server:
        clients = [client(server) for _ in range(4)]
        try:
            relays = [c.allocate() for c in clients[:3]]
            assert sorted(port for _, port in relays) == [low, low + 1, low + 2]
            with pytest.raises(TurnError) as refused:
                clients[3].allocate()
            assert refused.value.code == 508
            assert server.metrics()["natsrv_relay_ports_free"] == 0
            clients[0].refresh(0)
            assert clients[3].allocate() == relays[0]
        finally:
            for c in clients:
                c.close()


def test_a_peer_answering_icmp_unreachable_leaves_the_allocation_alive(
    peer: socket.socket,
) -> None:
    gone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    gone.bind((IP, 0))
    dead_peer = gone.getsockname()
    gone.close()  # nothing listens there now: the kernel answers port unreachable
    with NatsrvProcess(TURN_ARGS) as server, client(server) as alice:
        relay = alice.allocate()
        alice.bind_channel(0x4000, dead_peer)
        alice.bind_channel(0x4001, peer.getsockname())
        for _ in range(50):
            alice.send_channel(0x4000, b"into the void")
        alice.send_channel(0x4001, b"still here")
        assert peer.recv(100) == b"still here"
        peer.sendto(b"and back", relay)
        frame = alice.receive_frame(5)
        assert frame is not None and frame.endswith(b"and back")
        alice.refresh(600)
        assert server.proc.poll() is None
        assert len(server.sessions()) == 1


def test_sigkill_then_an_immediate_restart_on_the_same_ports(tmp_path: Path) -> None:
    ip = private_loopback_ip()
    port, tls_port = PRIVATE_PORTS[50], PRIVATE_PORTS[51]
    cert, key = make_certificate(str(tmp_path))
    workdir = tmp_path / "run"
    workdir.mkdir()
    args = ["--listen", f"{ip}:{port}", "--realm", REALM, "--user", f"{USER}:{PASSWORD}",
            "--relay-ip", ip, "--relay-ports", f"{PRIVATE_PORTS[60]}-{PRIVATE_PORTS[69]}",
            "--tls-cert", cert, "--tls-key", key, "--tls-port", str(tls_port)]  # fmt: skip
    first = NatsrvProcess(args, cwd=workdir)
    try:
        with client(first) as alice, client(first, "tcp") as bob:
            alice.allocate()
            bob.allocate()  # a relay port, a UDP and a TCP 5-tuple in use at the kill
            first.kill()
    finally:
        first.close()
    assert list(workdir.iterdir()) == []  # no pid file, no state left behind
    with NatsrvProcess(args, cwd=workdir) as second:  # at once: no "address in use"
        assert second.udp[0] == second.tcp[0] == (ip, port)
        assert second.tls[0] == (ip, tls_port)
        for kind in ("udp", "tcp"):
            with client(second, kind) as carol:
                carol.allocate()
                carol.refresh(0)
    assert list(workdir.iterdir()) == []
