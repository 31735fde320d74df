"""TURN servers under test, as subprocesses on loopback: coturn (the reference) and natsrv.

Both are started the same way: UDP and TCP on HOST:P, TLS on HOST:T with a certificate
made here (a throw-away CA and a leaf for ``localhost`` / HOST), realm ``natsrv``, relay
addresses on HOST in a port range of their own, loopback peers allowed (both refuse them
by default), and either the static user ``alice:wonderland`` or a TURN REST shared
secret.

HOST is this test process's own loopback address (``private_loopback_ip``), not
127.0.0.1. natsrv binds port 0 and says which ports it got ("listening on udp HOST:P",
"listening on tls HOST:T" on its log); coturn cannot, so it is given ports from
``COTURN_PORTS``: fixed ones, below the kernel's ephemeral range, on an address no other
process binds, so that nothing can take them between the choice and coturn's bind.

A server is ready when natsrv has logged its last start-up line (every listener is bound
before it), or, for coturn, which logs none, when it answers a STUN Binding over UDP
(sent with natsrv's own codec, a bounded receive per try) and accepts TCP connections on
both the plain and the TLS port; there are no fixed sleeps. The process is stopped by
its PID (SIGTERM, then SIGKILL) when the ``with`` block ends, and its log is kept for
failure messages.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import itertools
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from natsrv.stun.constants import MessageClass, Method
from natsrv.stun.errors import ParseError
from natsrv.stun.message import Message, decode_untrusted
from tests.conftest import PRIVATE_PORTS, START_ATTEMPTS, private_loopback_ip

HOST = private_loopback_ip()
REALM = "natsrv"
USER = "alice"
PASSWORD = "wonderland"
#: How long a server may take to become ready (coturn needs ~0.1 s, natsrv ~0.5 s).
READY_TIMEOUT = 15.0
#: Relay ports come from below the kernel's ephemeral range (32768-60999 on Linux), so
#: they do not collide with clients' own sockets. coturn does not hand out a deleted
#: allocation's port again for a while, so the range is several times what the tests
#: of one server allocate.
RELAY_PORT_SPAN = 500
#: coturn's listening ports, taken in turn (on HOST, so only this process binds them).
COTURN_PORTS = PRIVATE_PORTS[20:]
_next_coturn_port = itertools.cycle(COTURN_PORTS)

SERVERS = ("coturn", "natsrv", "natsrv-workers2")
#: natsrv's kinds and their worker processes: one, and two sharing one SO_REUSEPORT group.
NATSRV_WORKERS = {"natsrv": 1, "natsrv-workers2": 2}


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # the CA certificate that signed ``cert``: what a client trusts
    cert: Path  # leaf for DNS:localhost and IP:127.0.0.1
    key: Path


@dataclass
class TurnServer:
    """A running TURN server, as a client configures it."""

    kind: str  # "coturn", "natsrv" or "natsrv-workers2"
    host: str
    port: int  # UDP and TCP
    tls_port: int
    relay_ports: tuple[int, int]
    realm: str
    username: str | None  # the static user, or None for a REST-secret server
    password: str | None
    auth_secret: str | None
    tls: TlsFiles
    log_path: Path
    process: subprocess.Popen[bytes]

    def log(self, limit: int = 6000) -> str:
        """The end of the server's log, for failure messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"<no log: {exc}>"
        return text[-limit:]

    def alive(self) -> bool:
        return self.process.poll() is None


def make_tls_files(directory: Path) -> TlsFiles:
    """A CA and a leaf certificate it signed (SAN localhost and 127.0.0.1), EC P-256."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "natsrv test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    pem = serialization.Encoding.PEM
    files = TlsFiles(
        ca=directory / "ca.pem", cert=directory / "cert.pem", key=directory / "key.pem"
    )
    files.ca.write_bytes(ca_cert.public_bytes(pem))
    files.cert.write_bytes(cert.public_bytes(pem))
    files.key.write_bytes(
        key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return files


class LogTee:
    """Copies a process's output pipe into its log file, line by line, in a thread, and
    lets the caller wait for a line (an event, not a poll of the file)."""

    def __init__(self, pipe: Any, path: Path) -> None:
        self._pipe, self._path = pipe, path
        self._lines: list[str] = []
        self._closed = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._copy, name="log-tee", daemon=True)
        self._thread.start()

    def _copy(self) -> None:
        with self._path.open("wb") as log:
            for raw in iter(self._pipe.readline, b""):
                log.write(raw)
                log.flush()
                with self._changed:
                    self._lines.append(raw.decode(errors="replace"))
                    self._changed.notify_all()
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str] | None:
        """The first line matching ``pattern`` (waiting up to ``timeout`` seconds for it),
        or None if the output ends or the time runs out first."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self._lines[seen:]:
                    if match := pattern.search(line):
                        return match
                seen = len(self._lines)
                left = deadline - time.monotonic()
                if self._closed or left <= 0:
                    return None
                self._changed.wait(left)

    def close(self) -> None:
        """After the process has exited: let the copy finish."""
        self._thread.join(timeout=5)
        self._pipe.close()


def _bindable(port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                return False
    return True


def relay_port_range() -> tuple[int, int]:
    """A range of RELAY_PORT_SPAN ports below the ephemeral range, mostly free.

    Random, so that servers of consecutive tests (and of parallel runs) rarely share
    ports; a server skips a port it cannot bind anyway.
    """
    for _ in range(50):
        low = random.randrange(20000, 32000 - RELAY_PORT_SPAN)
        if _bindable(low) and _bindable(low + RELAY_PORT_SPAN - 1):
            return low, low + RELAY_PORT_SPAN - 1
    raise RuntimeError("no free relay port range")


def _coturn_argv(
    tool: str, workdir: Path, port: int, tls_port: int, relay: tuple[int, int],
    tls: TlsFiles, auth_secret: str | None,
) -> list[str]:
    argv = [
        tool, "-n",  # no configuration file: the command line only
        "--listening-ip", HOST, "--listening-port", str(port),
        "--tls-listening-port", str(tls_port),
        # Without these coturn would also bind port + 1 / tls_port + 1 (RFC 5780).
        "--no-rfc5780",
        "--alt-listening-port", str(port), "--alt-tls-listening-port", str(tls_port),
        "--relay-ip", HOST, "--min-port", str(relay[0]), "--max-port", str(relay[1]),
        "--realm", REALM, "--lt-cred-mech", "--fingerprint",
        "--allow-loopback-peers",  # coturn refuses 127.0.0.0/8 peers by default
        "--cert", str(tls.cert), "--pkey", str(tls.key), "--no-dtls",
        "--no-cli", "--no-software-attribute",
        "--pidfile", str(workdir / "turnserver.pid"),
        "--userdb", str(workdir / "turndb"),  # not the system's /var/lib/turn/turndb
        "--log-file", "stdout", "--simple-log",
        "--relay-threads", "1",
    ]
    if auth_secret is None:
        argv += ["--user", f"{USER}:{PASSWORD}"]
    else:
        argv += ["--use-auth-secret", "--static-auth-secret", auth_secret]
    return argv


def _natsrv_argv(
    relay: tuple[int, int], tls: TlsFiles, auth_secret: str | None,
    extra_args: Sequence[str] = (), workers: int = 1,
) -> list[str]:
    argv = [
        sys.executable, "-m", "natsrv", "serve",
        "--listen", f"{HOST}:0",  # ports 0: natsrv logs the ones it bound
        "--tls-port", "0", "--tls-cert", str(tls.cert), "--tls-key", str(tls.key),
        "--realm", REALM,
        "--relay-ip", HOST, "--relay-ports", f"{relay[0]}-{relay[1]}",
        "--allow-peer", "127.0.0.0/8",  # natsrv refuses loopback peers by default
        "--log-level", "info",  # for the "listening on" lines
        "--workers", str(workers),
    ]
    if auth_secret is None:
        argv += ["--user", f"{USER}:{PASSWORD}"]
    else:
        argv += ["--auth-secret", auth_secret]
    return [*argv, *extra_args]


def answers_binding(port: int, timeout: float) -> bool:
    """Whether a STUN Binding over UDP to 127.0.0.1:``port`` is answered in time."""
    request = Message(Method.BINDING, MessageClass.REQUEST)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(request.encode(fingerprint=True), (HOST, port))
            data, origin = s.recvfrom(2048)
            answer = decode_untrusted(data)
        except (OSError, ParseError):  # ECONNREFUSED, timeout, garbage
            return False
    return (
        origin == (HOST, port)
        and answer.transaction_id == request.transaction_id
        and answer.cls == MessageClass.SUCCESS
    )


def _tcp_accepts(port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _natsrv_ready(
    process: subprocess.Popen[bytes], tee: LogTee, log: Path, workers: int
) -> tuple[int, int]:
    """Wait for natsrv's start-up lines; its (UDP and TCP port, TLS port)."""
    found = []
    started = _NATSRV_STARTED if workers == 1 else re.compile(rf" {workers} workers: ")
    for pattern in (_NATSRV_UDP, _NATSRV_TLS, started):
        # In the order natsrv logs them; the last comes once every listener is bound.
        match = tee.wait_for(pattern, READY_TIMEOUT)
        if match is None:
            raise RuntimeError(
                f"natsrv (exit status {process.poll()}) did not log {pattern.pattern!r} "
                f"within {READY_TIMEOUT} s; log:\n{log.read_text(errors='replace')}"
            )
        found.append(match)
    return int(found[0]["port"]), int(found[1]["port"])


_NATSRV_UDP = re.compile(r"listening on udp " + re.escape(HOST) + r":(?P<port>\d+)$")
_NATSRV_TLS = re.compile(r"listening on tls " + re.escape(HOST) + r":(?P<port>\d+)$")
_NATSRV_STARTED = re.compile(r"TURN enabled: ")


def _wait_ready(server: TurnServer) -> None:
    """Probe coturn (it logs no readiness line) until it serves UDP, TCP and TLS."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if not server.alive():
            raise RuntimeError(
                f"{server.kind} exited with status {server.process.returncode} before it "
                f"was ready; log:\n{server.log()}"
            )
        # Each try waits on I/O: a Binding's answer (up to 0.2 s), the TCP handshakes.
        if (
            answers_binding(server.port, 0.2)
            and _tcp_accepts(server.port, 0.5)
            and _tcp_accepts(server.tls_port, 0.5)
        ):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{server.kind} not ready after {READY_TIMEOUT} s; log:\n{server.log()}"
            )
        # A refused connection returns at once: between such tries, wait on the process
        # (an exit ends the wait at once) instead of spinning.
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.process.wait(timeout=0.05)


def _coturn_ports() -> tuple[int, int]:
    """Two ports for coturn (UDP and TCP, TLS), free on HOST for both UDP and TCP."""
    picked: list[int] = []
    for port in itertools.islice(_next_coturn_port, 2 * len(COTURN_PORTS)):
        if port not in picked and _bindable(port):
            picked.append(port)
            if len(picked) == 2:
                return picked[0], picked[1]
    raise RuntimeError(f"no two free ports among {COTURN_PORTS} on {HOST}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()  # by PID: SIGTERM to this child only
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def coturn_path() -> str | None:
    return shutil.which("turnserver")


@contextmanager
def running_server(
    kind: str, workdir: Path, *, auth_secret: str | None = None,
    tls: TlsFiles | None = None, extra_args: Sequence[str] = (),
) -> Iterator[TurnServer]:
    """Start ``kind`` (one of ``SERVERS``) in ``workdir`` and stop it afterwards.
    ``extra_args`` go to natsrv's command line (e.g. a second ``--relay-ip``).

    The caller checks prerequisites (``turnserver`` installed) first.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    tls = tls or make_tls_files(workdir)
    relay = relay_port_range()
    if kind == "coturn":
        tool = coturn_path()
        if tool is None:
            raise RuntimeError("turnserver (coturn) is not installed")
        port, tls_port = _coturn_ports()
        argv = _coturn_argv(tool, workdir, port, tls_port, relay, tls, auth_secret)
    elif kind in NATSRV_WORKERS:
        argv = _natsrv_argv(relay, tls, auth_secret, extra_args, NATSRV_WORKERS[kind])
    else:
        raise ValueError(f"unknown TURN server {kind!r}")

    log_path = workdir / f"{kind}.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # natsrv picks its ports (0), and may pick a UDP port whose number is taken for TCP
    # (see tests.conftest.start_server): it then exits at once, and is started again.
    for attempt in range(1, (START_ATTEMPTS if kind != "coturn" else 1) + 1):
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            cwd=workdir, env=env,
        )
        tee = LogTee(process.stdout, log_path)
        if kind == "coturn":
            break
        try:
            port, tls_port = _natsrv_ready(process, tee, log_path, NATSRV_WORKERS[kind])
            break
        except RuntimeError:
            _stop(process)
            tee.close()
            if attempt == START_ATTEMPTS or "Address already in use" not in log_path.read_text(
                errors="replace"
            ):
                raise
    try:
        server = TurnServer(
            kind=kind, host=HOST, port=port, tls_port=tls_port, relay_ports=relay,
            realm=REALM, username=None if auth_secret else USER,
            password=None if auth_secret else PASSWORD, auth_secret=auth_secret, tls=tls,
            log_path=log_path, process=process,
        )
        if kind == "coturn":
            _wait_ready(server)
        yield server
    finally:
        _stop(process)
        tee.close()
