"""Faults, each against a real ``natsrv serve`` process on loopback: the system clock
jumping, descriptors running out (EMFILE at accept and at relay bind), the relay port
range exhausted, a peer answering with ICMP unreachable, SIGKILL and an immediate
restart on the same ports."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.natsrv_process import NatsrvProcess  # noqa: E402
from benchmarks.turnclient import TurnClient  # noqa: E402

IP = "127.0.0.1"
REALM = "natsrv.test"
USER, PASSWORD = "alice", "wonderland"
TURN_ARGS = ["--listen", f"{IP}:0", "--realm", REALM, "--user", f"{USER}:{PASSWORD}",
             "--allow-peer", "127.0.0.0/8", "--metrics-listen", f"{IP}:0"]  # fmt: skip


def client(server: NatsrvProcess, kind: str = "udp") -> TurnClient:
    address = server.udp[0] if kind == "udp" else server.tcp[0]
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
