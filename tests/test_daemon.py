"""``natsrv serve`` as an operator runs it: a real process with a user database changed
through ``natsrv user``, JSON logs, SIGHUP reload (a broken file keeps the old
configuration), and the first SIGTERM draining a live allocation before exiting 0."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from natsrv.stun import Attr, Message, MessageClass, Method, ParseError, decode_untrusted
from natsrv.stun.integrity import long_term_key

IP = "127.0.0.1"
REALM = "natsrv.test"
PASSWORD = "correct horse"


class Server:
    """The process, and its stderr lines as they come (JSON objects)."""

    def __init__(self, *argv: str, cwd: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "natsrv", "serve", *argv],
                                     stderr=subprocess.PIPE, text=True, cwd=cwd)  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[dict[str, object]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.reader.join(timeout=10)
        assert self.proc.stderr is not None
        self.proc.stderr.close()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)

    def wait_for(self, needle: str, timeout: float = 10.0) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            obj = json.loads(line)  # every line is one JSON object
            self.seen.append(obj)
            if needle in json.dumps(obj):
                return obj


def request(sock: socket.socket, server: tuple[str, int], method: int, *attrs: tuple[int, object],
            nonce: list[str], user: str = "alice",
            password: str = PASSWORD) -> Message:  # fmt: skip
    key = long_term_key(user, REALM, password)
    for _ in range(3):
        msg = Message(method, MessageClass.REQUEST, attributes=list(attrs))
        if nonce:
            msg.attributes += [(Attr.USERNAME, user), (Attr.REALM, REALM), (Attr.NONCE, nonce[0])]
        sock.sendto(msg.encode(key=key if nonce else None, fingerprint=True), server)
        while True:
            try:
                reply = decode_untrusted(sock.recv(2048))
            except ParseError:
                continue
            if reply.transaction_id == msg.transaction_id:
                break
        code = reply.get(Attr.ERROR_CODE)
        fresh = reply.get(Attr.NONCE)
        if code is not None and code.code in (401, 438) and fresh and fresh not in nonce:
            nonce[:] = [fresh]
            continue
        return reply
    return reply


def test_operator_lifecycle(tmp_path: Path) -> None:
    db = tmp_path / "users.sqlite"
    add = subprocess.run([sys.executable, "-m", "natsrv", "user", "add", "alice", "--realm",
                          REALM, "--user-db", str(db)], input=PASSWORD + "\n", text=True,
                         capture_output=True, timeout=30)  # fmt: skip
    assert add.returncode == 0, add.stderr
    config = tmp_path / "natsrv.toml"
    config.write_text(f'realm = "{REALM}"\nuser-db = "{db}"\nallow-peer = ["127.0.0.0/8"]\n')
    server = Server("--config", str(config), "--listen", f"{IP}:0", "--relay-ip", IP,
                    "--log-format", "json", "--drain-timeout", "20", cwd=tmp_path)
    try:
        listening = server.wait_for("listening on udp")
        host, _, port = str(listening["message"]).rpartition(" ")[2].rpartition(":")
        address = (host, int(port))
        server.wait_for("TURN enabled")
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.settimeout(5)
        client.bind((IP, 0))
        nonce: list[str] = []
        reply = request(client, address, Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, 17),
                        nonce=nonce)  # fmt: skip
        assert reply.cls == MessageClass.SUCCESS, reply.get(Attr.ERROR_CODE)
        assert server.wait_for("allocation-created")["username"] == "alice"
        # A user added now counts from the next request: no signal, no restart.
        subprocess.run([sys.executable, "-m", "natsrv", "user", "add", "bob", "--realm", REALM,
                        "--user-db", str(db)], input=PASSWORD, text=True, check=True,
                       timeout=30)  # fmt: skip
        bob = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        bob.settimeout(5)
        bob.bind((IP, 0))
        bob_nonce: list[str] = []
        reply = request(bob, address, Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, 17),
                        nonce=bob_nonce, user="bob")  # fmt: skip
        assert reply.cls == MessageClass.SUCCESS
        request(bob, address, Method.REFRESH, (Attr.LIFETIME, 0), nonce=bob_nonce, user="bob")
        # A changed password counts from the next request too, and so does a deletion.
        subprocess.run([sys.executable, "-m", "natsrv", "user", "passwd", "bob", "--realm",
                        REALM, "--user-db", str(db)], input="new secret", text=True,
                       check=True, timeout=30)  # fmt: skip
        reply = request(bob, address, Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, 17),
                        nonce=bob_nonce, user="bob")  # fmt: skip
        assert reply.get(Attr.ERROR_CODE).code == 401
        reply = request(bob, address, Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, 17),
                        nonce=bob_nonce, user="bob", password="new secret")  # fmt: skip
        assert reply.cls == MessageClass.SUCCESS
        request(bob, address, Method.REFRESH, (Attr.LIFETIME, 0), nonce=bob_nonce, user="bob",
                password="new secret")  # fmt: skip
        subprocess.run([sys.executable, "-m", "natsrv", "user", "delete", "bob", "--realm",
                        REALM, "--user-db", str(db)], check=True, timeout=30)  # fmt: skip
        reply = request(bob, address, Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, 17),
                        nonce=bob_nonce, user="bob", password="new secret")  # fmt: skip
        assert reply.get(Attr.ERROR_CODE).code == 401
        # SIGHUP with a broken file: refused, the old configuration stays.
        config.write_text("realm = 5\n")
        server.proc.send_signal(signal.SIGHUP)
        assert "realm" in str(server.wait_for("reload refused")["message"])
        config.write_text(f'realm = "{REALM}"\nuser-db = "{db}"\nallow-peer = ["127.0.0.0/8"]\n'
                          "user-quota = 5\n")  # fmt: skip
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for("reloaded the configuration")
        # The first SIGTERM drains: a new allocation is refused, the old one lives on.
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for("draining")
        newcomer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        newcomer.settimeout(5)
        newcomer.bind((IP, 0))
        reply = request(newcomer, address, Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, 17),
                        nonce=[])  # fmt: skip
        assert reply.get(Attr.ERROR_CODE).code == 508
        assert server.proc.poll() is None  # still serving the old allocation
        reply = request(client, address, Method.REFRESH, (Attr.LIFETIME, 0), nonce=nonce)
        assert reply.cls == MessageClass.SUCCESS
        assert server.proc.wait(timeout=10) == 0
        while not server.lines.empty():
            server.seen.append(json.loads(server.lines.get()))
        ended = [o for o in server.seen if o.get("event") == "allocation-ended"]
        assert ended and all({"duration_s", "to_peer_bytes"} <= set(o) for o in ended)
        assert all({"ts", "level", "event"} <= set(o) for o in server.seen)
        assert PASSWORD not in json.dumps(server.seen)
        for sock in (client, bob, newcomer):
            sock.close()
    finally:
        server.close()


def test_a_port_in_use_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((IP, 0))
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "natsrv", "serve", "--listen",
                               f"{IP}:{port}"], capture_output=True, text=True, timeout=30,
                              env={**os.environ, "NATSRV_AUTH_SECRET": ""})  # fmt: skip
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("natsrv:")]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr and "in use" in lines[0]


def _served_serial(address: tuple[str, int]) -> int:
    import ssl

    from cryptography import x509

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(address, timeout=5) as raw, \
            context.wrap_socket(raw) as tls:  # fmt: skip
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


@pytest.mark.parametrize("workers", [1, 2])
def test_usr1_is_ignored_and_usr2_reloads_the_certificate(tmp_path: Path, workers: int) -> None:
    """A logrotate hook's SIGUSR1 does not kill the server; certbot's SIGUSR2 swaps the
    certificate for new TLS connections (the same file paths, new contents)."""
    from tests.net.test_reload import certificate

    first = certificate(tmp_path, "first")
    cert, key = tmp_path / "live.pem", tmp_path / "live.key"
    cert.write_bytes(Path(first[0]).read_bytes())
    key.write_bytes(Path(first[1]).read_bytes())
    server = Server("--listen", f"{IP}:0", "--tls-port", "0", "--tls-cert", str(cert),
                    "--tls-key", str(key), "--log-format", "json", "--workers", str(workers),
                    cwd=tmp_path)  # fmt: skip
    try:
        line = str(server.wait_for("listening on tls")["message"])
        host, _, port = line.rpartition(" ")[2].rpartition(":")
        address = (host, int(port))
        # No wait for the workers: a reload signal that comes while one is still
        # starting reaches it once it is ready.
        assert _served_serial(address) == first[2]
        server.proc.send_signal(signal.SIGUSR1)
        assert "ignored" in str(server.wait_for("SIGUSR1")["message"])
        second = certificate(tmp_path, "second")
        cert.write_bytes(Path(second[0]).read_bytes())
        key.write_bytes(Path(second[1]).read_bytes())
        server.proc.send_signal(signal.SIGUSR2)
        for _ in range(workers):  # each worker says so
            server.wait_for("reloaded the TLS certificate")
        assert server.proc.poll() is None
        assert _served_serial(address) == second[2]
    finally:
        server.close()


def test_startup_warnings_name_the_risky_settings() -> None:
    from natsrv.config import Config
    from natsrv.daemon import startup_warnings

    lab = Config(listen=((IP, 3478),), users=(("bob", "pw"),)).validate()
    assert any("visible to other local users" in w for w in startup_warnings(lab))
    # coturn's most common mistake: a relay address the host does not have, unexplained.
    foreign = Config(listen=((IP, 3478),), auth_secret=("s",), relay_ip="203.0.113.7").validate()
    assert any("203.0.113.7 is not an address of this host" in w
               for w in startup_warnings(foreign))  # fmt: skip
    mapped = replace(foreign, external_ip=("203.0.113.7", "10.0.0.5"))
    assert startup_warnings(mapped) == []
    assert startup_warnings(Config(listen=((IP, 3478),), auth_secret=("s",)).validate()) == []
