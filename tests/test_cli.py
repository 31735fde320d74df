"""The ``natsrv serve`` command as an operator runs it: start-up lines, config errors,
and a clean stop on SIGINT/SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_port

NATSRV = [sys.executable, "-m", "natsrv"]


def run(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NATSRV, *args], capture_output=True, text=True, timeout=timeout)


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
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


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
