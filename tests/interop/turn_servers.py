"""TURN servers under test, as subprocesses on loopback: coturn (the reference) and natsrv.

Both are started the same way: UDP and TCP on 127.0.0.1:P, TLS on 127.0.0.1:T with a
certificate made here (a throw-away CA and a leaf for ``localhost`` / ``127.0.0.1``),
realm ``natsrv``, relay addresses on 127.0.0.1 in a port range of their own, loopback
peers allowed (both refuse them by default), and either the static user
``alice:wonderland`` or a TURN REST shared secret.

A server is ready when it answers a STUN Binding over UDP (sent with natsrv's own codec)
and accepts TCP connections on both the plain and the TLS port; there are no fixed
sleeps. The process is stopped by its PID (SIGTERM, then SIGKILL) when the ``with``
block ends, and its log is kept for failure messages.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from natsrv.stun.constants import MessageClass, Method
from natsrv.stun.errors import ParseError
from natsrv.stun.message import Message, decode_untrusted

HOST = "127.0.0.1"
REALM = "natsrv"
USER = "alice"
PASSWORD = "wonderland"
#: How long a server may take to become ready (coturn needs ~0.1 s, natsrv ~0.5 s).
READY_TIMEOUT = 15.0
#: Relay ports come from below the kernel's ephemeral range (32768-60999 on Linux), so
#: they do not collide with the listening ports picked by ``free_port`` nor with
#: clients' own sockets. coturn does not hand out a deleted allocation's port again
#: for a while, so the range is several times what the tests of one server allocate.
RELAY_PORT_SPAN = 500

SERVERS = ("coturn", "natsrv")


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # the CA certificate that signed ``cert``: what a client trusts
    cert: Path  # leaf for DNS:localhost and IP:127.0.0.1
    key: Path


@dataclass
class TurnServer:
    """A running TURN server, as a client configures it."""

    kind: str  # "coturn" or "natsrv"
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
    port: int, tls_port: int, relay: tuple[int, int], tls: TlsFiles, auth_secret: str | None,
) -> list[str]:
    argv = [
        sys.executable, "-m", "natsrv", "serve",
        "--listen", f"{HOST}:{port}",
        "--tls-port", str(tls_port), "--tls-cert", str(tls.cert), "--tls-key", str(tls.key),
        "--realm", REALM,
        "--relay-ip", HOST, "--relay-ports", f"{relay[0]}-{relay[1]}",
        "--allow-peer", "127.0.0.0/8",  # natsrv refuses loopback peers by default
        "--log-level", "warning",
    ]
    if auth_secret is None:
        argv += ["--user", f"{USER}:{PASSWORD}"]
    else:
        argv += ["--auth-secret", auth_secret]
    return argv


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


def _wait_ready(server: TurnServer) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if not server.alive():
            raise RuntimeError(
                f"{server.kind} exited with status {server.process.returncode} before it "
                f"was ready; log:\n{server.log()}"
            )
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
        time.sleep(0.05)  # poll interval, not a guess at a start-up time


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
    tls: TlsFiles | None = None,
) -> Iterator[TurnServer]:
    """Start ``kind`` ("coturn" or "natsrv") in ``workdir`` and stop it afterwards.

    The caller checks prerequisites (``turnserver`` installed) first.
    """
    from tests.conftest import free_port

    workdir.mkdir(parents=True, exist_ok=True)
    tls = tls or make_tls_files(workdir)
    port, tls_port = free_port(HOST), free_port(HOST)
    while tls_port == port:
        tls_port = free_port(HOST)
    relay = relay_port_range()
    if kind == "coturn":
        tool = coturn_path()
        if tool is None:
            raise RuntimeError("turnserver (coturn) is not installed")
        argv = _coturn_argv(tool, workdir, port, tls_port, relay, tls, auth_secret)
    elif kind == "natsrv":
        argv = _natsrv_argv(port, tls_port, relay, tls, auth_secret)
    else:
        raise ValueError(f"unknown TURN server {kind!r}")

    log_path = workdir / f"{kind}.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=workdir, env=env,
        )
    server = TurnServer(
        kind=kind, host=HOST, port=port, tls_port=tls_port, relay_ports=relay, realm=REALM,
        username=None if auth_secret else USER, password=None if auth_secret else PASSWORD,
        auth_secret=auth_secret, tls=tls, log_path=log_path, process=process,
    )
    try:
        _wait_ready(server)
        yield server
    finally:
        _stop(process)
