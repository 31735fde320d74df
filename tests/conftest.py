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


def require_root() -> None:
    require(os.geteuid() == 0, "needs root")


def free_port(ip: str = PRIMARY_IP, kind: int = socket.SOCK_DGRAM) -> int:
    """A port free for both UDP and TCP on ``ip`` right now."""
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


def stun_config(**overrides: object) -> Config:
    """A server on 127.0.0.1 with alternate 127.0.0.2 and an alternate port, both free."""
    base: dict[str, object] = {
        "listen": ((PRIMARY_IP, free_port()),),
        "alt_ip": ALT_IP,
        "alt_port": free_port(),
        "software": "natsrv-test",
    }
    base.update(overrides)
    return Config(**base).validate()  # type: ignore[arg-type]


@pytest.fixture
async def stun_server(nursery: trio.Nursery) -> AsyncIterator[ServerInfo]:
    """natsrv in this test's trio run: primary 127.0.0.1, alternate 127.0.0.2."""
    info = await nursery.start(serve, stun_config())
    yield info
