"""The ``natsrv serve`` command as an operator runs it: start-up lines, config errors,
the open-file limit it raises, and a clean stop on SIGINT/SIGTERM."""

from __future__ import annotations

import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from natsrv.fdlimit import DEFAULT_CEILING, nofile_soft_limit
from natsrv.stun import MessageClass, Method, decode_untrusted
from natsrv.stun.message import encode_message
from tests.conftest import free_port

NATSRV = [sys.executable, "-m", "natsrv"]


def run(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NATSRV, *args], capture_output=True, text=True, timeout=timeout)


def reap(proc: subprocess.Popen[str]) -> None:
    """Kill (if still running) and wait for a server this test started; close its pipe."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    if proc.stderr:
        proc.stderr.close()


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["--alt-port", "abc"], "alt-port"),
        (["--alt-port", "70000"], "alt-port"),
        (["--listen", "300.1.2.3"], "listen"),
        (["--listen", "127.0.0.1", "--alt-ip", "nonsense"], "alt-ip"),
        (["--alt-ip", "127.0.0.2"], "alt-ip"),  # a wildcard primary has no alternate
        (["--log-level", "loud"], "log-level"),
        (["--relay-ports", "5000"], "relay-ports"),
        (["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.pem"], "tls-cert"),
        (["--user", "nopassword"], "user"),
        (["--unauth-rate", "fast"], "unauth-rate"),
        (["--unauth-global-rate", "-5"], "unauth-global-rate"),
    ],
)
def test_bad_flag_value_is_one_line_naming_the_key(args: list[str], key: str) -> None:
    result = run("serve", *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert key in lines[0]


def test_bad_config_file(tmp_path: Path) -> None:
    path = tmp_path / "natsrv.toml"
    path.write_text('listen = "127.0.0.1:3478"\nalt-port = "many"\n')
    result = run("serve", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "natsrv: config: alt-port: not a port number: 'many'"
    ]
    path.write_text('lisen = "127.0.0.1"\n')
    result = run("serve", "--config", str(path))
    assert (result.returncode, result.stderr.strip()) == (
        2, "natsrv: config: lisen: unknown setting"
    )
    path.write_text("listen = [\n")
    result = run("serve", "--config", str(path))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    path.write_text('unauth-global-rate = "lots"\n')
    result = run("serve", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "natsrv: config: unauth-global-rate: not a number per second: 'lots'"
    )


def test_unknown_flag_is_one_line() -> None:
    result = run("serve", "--frobnicate")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_logs_each_listener_and_stops_cleanly_on_signal(signum: int, tmp_path: Path) -> None:
    port, alt = free_port(), free_port()
    config = tmp_path / "natsrv.toml"
    # Flags win over the file: the file says another software string and port.
    config.write_text(f'listen = "127.0.0.1:{free_port()}"\nsoftware = "from-file"\n')
    proc = subprocess.Popen(
        [*NATSRV, "serve", "--config", str(config), "--listen", f"127.0.0.1:{port}",
         "--alt-ip", "127.0.0.2", "--alt-port", str(alt)],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        lines = []
        assert proc.stderr is not None
        deadline = time.monotonic() + 15
        while len(lines) < 8 and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            if "listening on" in line:
                lines.append(line.split("listening on ", 1)[1].strip())
        assert sorted(lines) == sorted(
            f"{kind} {ip}:{p}" for kind in ("udp", "tcp")
            for ip in ("127.0.0.1", "127.0.0.2") for p in (port, alt)
        )
        start = time.monotonic()
        proc.send_signal(signum)
        assert proc.wait(timeout=5) == 0
        assert time.monotonic() - start < 1.0
    finally:
        reap(proc)


def test_credentials_prints_a_working_rest_credential() -> None:
    import base64
    import hashlib
    import hmac
    import json

    before = time.time()
    result = run("credentials", "--auth-secret", "s3cret", "--user", "alice", "--ttl", "3600",
                 "--uri", "turn:turn.example.org:3478")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    expiry, _, user = out["username"].partition(":")
    assert user == "alice"
    assert before + 3600 - 1 <= int(expiry) <= time.time() + 3600
    expected = base64.b64encode(
        hmac.new(b"s3cret", out["username"].encode(), hashlib.sha1).digest()
    ).decode()
    assert out["password"] == expected
    assert out["iceServers"] == [{
        "urls": ["turn:turn.example.org:3478"],
        "username": out["username"],
        "credential": expected,
    }]


# -- The open-file limit -------------------------------------------------------------------
INF = resource.RLIM_INFINITY


@pytest.mark.parametrize(
    ("soft", "hard", "ceiling", "expected"),
    [
        (1024, 524288, DEFAULT_CEILING, 524288),  # up to the hard limit
        (1024, 1024, DEFAULT_CEILING, 1024),  # nothing to gain
        (1024, INF, 2_000_000, 2_000_000),  # unlimited: the kernel's nr_open
        (1024, INF, DEFAULT_CEILING, DEFAULT_CEILING),
        (4_000_000, INF, DEFAULT_CEILING, 4_000_000),  # never lowered
        (INF, INF, DEFAULT_CEILING, INF),
    ],
)
def test_nofile_soft_limit(soft: int, hard: int, ceiling: int, expected: int) -> None:
    assert nofile_soft_limit(soft, hard, ceiling=ceiling) == expected


def wait_until_answering(
    proc: subprocess.Popen[str], addr: tuple[str, int], timeout: float = 15.0
) -> None:
    """Send STUN Binding requests to ``addr`` until one is answered, for at most
    ``timeout`` seconds; fail if the server exits first."""
    tid = secrets.token_bytes(12)
    request = encode_message(Method.BINDING, MessageClass.REQUEST, tid, [])
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(0.1)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                stderr = proc.stderr.read() if proc.stderr else ""
                pytest.fail(f"natsrv exited with {proc.returncode}: {stderr}")
            probe.sendto(request, addr)
            try:
                data = probe.recv(2048)
            except (TimeoutError, ConnectionRefusedError):
                continue
            answer = decode_untrusted(data)
            if answer.transaction_id == tid and answer.cls == MessageClass.SUCCESS:
                return
    pytest.fail(f"no Binding answer from {addr} within {timeout} s")


def soft_nofile_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft = line.split()[3]
            return INF if soft == "unlimited" else int(soft)
    raise AssertionError("no open-file limit in /proc limits")


def nr_open() -> int:
    try:
        return int(Path("/proc/sys/fs/nr_open").read_text())
    except (OSError, ValueError):
        return DEFAULT_CEILING


@pytest.mark.parametrize("lower_hard", [False, True])
def test_serve_raises_the_open_file_limit(lower_hard: bool) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if lower_hard or (hard != INF and hard < 512):
        hard = 512
    expected = nofile_soft_limit(256, hard, ceiling=nr_open())
    # TURN on: max-allocations (10000) + tcp-max-connections (2000) + 64 descriptors.
    need = 10000 + 2000 + 64

    def lower_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    port = free_port()
    proc = subprocess.Popen(
        [*NATSRV, "serve", "--listen", f"127.0.0.1:{port}", "--user", "alice:secret"],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lower_soft_limit,
    )
    try:
        wait_until_answering(proc, ("127.0.0.1", port))
        assert soft_nofile_of(proc.pid) == expected
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert proc.stderr is not None
        warnings = [line for line in proc.stderr.read().splitlines() if "open-file limit" in line]
        if expected != INF and expected < need:
            assert len(warnings) == 1
            assert f"open-file limit is {expected}, below the {need}" in warnings[0]
            assert "WARNING" in warnings[0] and "max-allocations" in warnings[0]
        else:
            assert warnings == []
    finally:
        reap(proc)


@pytest.mark.parametrize(
    ("flags", "answered"),
    [
        # The per-IP limit: one source IP (127.0.0.1) gets its burst of 3 answers.
        (["--unauth-rate", "3", "--unauth-global-rate", "0"], 3),
        # The global limit: a burst of 2 for the whole server, per-IP limit off.
        (["--unauth-rate", "0", "--unauth-global-rate", "2"], 2),
        (["--unauth-rate", "0", "--unauth-global-rate", "0"], 12),
    ],
)
def test_unauth_rate_flags_bound_the_401_answers(flags: list[str], answered: int) -> None:
    port = free_port()
    proc = subprocess.Popen(
        # One process: with N workers each answers 1/N of unauth-global-rate, and this one
        # client's 4-tuple reaches one of them.
        [*NATSRV, "serve", "--listen", f"127.0.0.1:{port}", "--no-tcp", "--user", "a:b",
         "--workers", "1", *flags],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until_answering(proc, ("127.0.0.1", port))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(10)
            for _ in range(12):
                allocate = encode_message(
                    Method.ALLOCATE, MessageClass.REQUEST, secrets.token_bytes(12),
                    [(0x0019, 17)],  # REQUESTED-TRANSPORT UDP, no credentials
                )  # fmt: skip
                client.sendto(allocate, ("127.0.0.1", port))
            # The listener answers in order: once the Binding answer is here, every 401
            # the server was going to send has been sent.
            marker = secrets.token_bytes(12)
            client.sendto(encode_message(Method.BINDING, MessageClass.REQUEST, marker, []),
                          ("127.0.0.1", port))
            challenges = 0
            while True:
                answer = decode_untrusted(client.recv(2048))
                if answer.transaction_id == marker:
                    break
                assert answer.method == Method.ALLOCATE and answer.cls == MessageClass.ERROR
                challenges += 1
        assert challenges == answered
    finally:
        reap(proc)
