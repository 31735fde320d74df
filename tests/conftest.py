"""Shared test helpers: servers on loopback, and prerequisites that skip on a laptop but
fail in CI (CI=true), where every test must run."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import AsyncIterator

import pytest
import trio

from natsrv.config import Config
from natsrv.net.serve import ServerInfo, serve

IN_CI = os.environ.get("CI") == "true"
PRIMARY_IP = "127.0.0.1"
ALT_IP = "127.0.0.2"


def require(condition: bool, reason: str) -> None:
    """Skip when ``condition`` is false, except in CI, where it is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"prerequisite missing in CI: {reason}")
    pytest.skip(reason)


def require_tool(name: str) -> str:
    path = shutil.which(name)
    require(path is not None, f"{name} is not installed")
    assert path is not None
    return path


def ipv6_loopback() -> bool:
    """Whether this host can bind ``::1`` (some containers have no IPv6 at all)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def require_root() -> None:
    require(os.geteuid() == 0, "needs root")


def free_port(ip: str = PRIMARY_IP, kind: int = socket.SOCK_DGRAM) -> int:
    """A port free for both UDP and TCP on ``ip`` right now, and only right now.

    Racy by nature: once this returns, the kernel may hand the port to any other socket
    (it is an ephemeral one). So never use it for a server a test starts: bind that on
    port 0 and read the port back (``ServerInfo``, or the "listening on" log line of a
    ``natsrv serve`` subprocess). It is fit only for "a port where nothing listens".
    """
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, kind) as s:
            s.bind((ip, 0))
            port = s.getsockname()[1]
        try:
            with socket.socket(family, socket.SOCK_STREAM) as t:
                t.bind((ip, port))
            with socket.socket(family, socket.SOCK_DGRAM) as u:
                u.bind((ip, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


def private_loopback_ip() -> str:
    """A loopback address of this test process alone: 127.(100-163).B.C from its PID.

    For what must be given a fixed port (coturn, a client that binds a port pair, a
    test of the server's own configured address). A fixed port on an address that no
    other process binds, and below the kernel's ephemeral range (32768-60999 on Linux),
    cannot be taken between choosing it and binding it: other processes' sockets live
    on other addresses, and ephemeral (also wildcard, auto-bound) ports never fall
    below that range. Tests of this process bind such ports one after another.
    """
    pid = os.getpid()  # at most 2**22 on Linux: 22 bits into the last three octets
    return f"127.{100 + (pid >> 16 & 0x3F)}.{pid >> 8 & 0xFF}.{pid & 0xFF}"


#: Fixed ports for use on ``private_loopback_ip()`` only (below the ephemeral range, and
#: below 20000, where the interop tests pick their relay port ranges).
PRIVATE_PORTS = range(13478, 13578)


def stun_config(**overrides: object) -> Config:
    """A server on 127.0.0.1 with alternate 127.0.0.2 and an alternate port.

    Both ports are 0: ``serve`` binds them and reports what it got in ``ServerInfo``
    (the alternate IP reuses the primary's and the alternate port numbers).
    """
    base: dict[str, object] = {
        "listen": ((PRIMARY_IP, 0),),
        "alt_ip": ALT_IP,
        "alt_port": 0,
        "software": "natsrv-test",
    }
    base.update(overrides)
    return Config(**base).validate()  # type: ignore[arg-type]


#: How often the interop tests start a natsrv subprocess on port 0 before giving up.
START_ATTEMPTS = 5


async def start_server(nursery: trio.Nursery, config: Config) -> ServerInfo:
    """``await nursery.start(serve, config)``. (``serve`` itself tries another port
    number when a port-0 group collides on TCP or an alternate IP.)"""
    info: ServerInfo = await nursery.start(serve, config)
    return info


def native_built() -> bool:
    try:
        import natsrv._fastpath  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(params=["native", "pure"])
def data_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test on the native data path (natsrv._fastpath, which CI builds) and on the
    pure-Python one (NATSRV_PURE_PYTHON=1): servers started after this read it."""
    if request.param == "native":
        require(native_built(), "natsrv._fastpath is not built (no C compiler or headers)")
        monkeypatch.delenv("NATSRV_PURE_PYTHON", raising=False)
    else:
        monkeypatch.setenv("NATSRV_PURE_PYTHON", "1")
    return str(request.param)


@pytest.fixture
async def stun_server(nursery: trio.Nursery) -> AsyncIterator[ServerInfo]:
    """natsrv in this test's trio run: primary 127.0.0.1, alternate 127.0.0.2."""
    info = await start_server(nursery, stun_config())
    yield info
