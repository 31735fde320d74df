"""natsrv behind a real HAProxy, as the README sets it up: one TLS port shared by SNI
(``turns:`` for one name, anything else to a web server), PROXY protocol v2 to natsrv's
TLS listener and v1 to its TCP listener. The client's own address, not HAProxy's, is
what natsrv answers with (XOR-MAPPED-ADDRESS) and allocates for.

HAProxy (Debian package ``haproxy``) runs in the foreground as a child of this test,
bound on this process's own loopback address (``private_loopback_ip``) at fixed ports;
it is ready when its frontends accept connections (each try waits on I/O or on the
process), and is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import trio

from natsrv.stun import Attr, Message, MessageClass, Method
from natsrv.stun.integrity import long_term_key
from tests.conftest import PRIVATE_PORTS, private_loopback_ip, require_tool, start_server
from tests.net.test_stun_stream import make_certificate, read_messages
from tests.net.test_turn_server import REALM, turn_config

HOST = private_loopback_ip()
TLS_FRONT, TCP_FRONT = PRIVATE_PORTS[4], PRIVATE_PORTS[5]
READY_TIMEOUT = 10.0

CONFIG = """
global
    maxconn 64
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend shared_tls
    bind {host}:{tls_front}
    tcp-request inspect-delay 5s
    tcp-request content accept if {{ req_ssl_hello_type 1 }}
    use_backend natsrv_tls if {{ req_ssl_sni -i localhost }}
    default_backend web
frontend plain_tcp
    bind {host}:{tcp_front}
    default_backend natsrv_tcp
backend natsrv_tls
    server natsrv {tls[0]}:{tls[1]} send-proxy-v2
backend natsrv_tcp
    server natsrv {tcp[0]}:{tcp[1]} send-proxy
backend web
    server web {web[0]}:{web[1]}
"""


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def haproxy(config: str, workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    tool = require_tool("haproxy")
    path = workdir / "haproxy.cfg"
    path.write_text(config)
    log = (workdir / "haproxy.log").open("wb")
    process = subprocess.Popen([tool, "-db", "-f", str(path)], stdin=subprocess.DEVNULL,
                               stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not (_accepts(TLS_FRONT) and _accepts(TCP_FRONT)):
            if process.poll() is not None or time.monotonic() > deadline:
                text = (workdir / "haproxy.log").read_text(errors="replace")
                raise RuntimeError(f"haproxy did not start:\n{text}")
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0.05)  # a refused connect returns at once
        yield process
    finally:
        process.terminate()  # by PID: this child only
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


async def _allocate(stream: trio.abc.Stream) -> Message:
    nonce = None
    key = long_term_key("alice", REALM, "wonderland")
    for _ in range(2):
        request = Message(Method.ALLOCATE, MessageClass.REQUEST,
                          attributes=[(Attr.REQUESTED_TRANSPORT, 17)])  # fmt: skip
        if nonce is not None:
            request.attributes += [(Attr.USERNAME, "alice"), (Attr.REALM, REALM),
                                   (Attr.NONCE, nonce)]  # fmt: skip
        await stream.send_all(request.encode(key=key if nonce else None))
        (reply,) = await read_messages(stream, 1)
        nonce = reply.get(Attr.NONCE)
    return reply


async def test_turn_over_tls_and_tcp_behind_haproxy(nursery: trio.Nursery, tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    info = await start_server(nursery, turn_config(
        tls_cert=str(cert), tls_key=str(key), tls_port=0, proxy_protocol=True,
    ))  # fmt: skip
    web_hits: list[bytes] = []
    web_listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")

    async def web(stream: trio.SocketStream) -> None:
        async with stream:
            web_hits.append(await stream.receive_some(4096))

    nursery.start_soon(trio.serve_listeners, web, web_listeners)
    web_addr = web_listeners[0].socket.getsockname()[:2]
    config = CONFIG.format(host=HOST, tls_front=TLS_FRONT, tcp_front=TCP_FRONT,
                           tls=info.tls[0], tcp=info.tcp[0], web=web_addr)  # fmt: skip
    with haproxy(config, tmp_path):
        # TLS with natsrv's name: through HAProxy (PROXY v2) to natsrv, which allocates
        # for this client's own address and port, not HAProxy's.
        tcp = await trio.open_tcp_stream(HOST, TLS_FRONT)
        stream = trio.SSLStream(tcp, ssl.create_default_context(cafile=str(cert)),
                                server_hostname="localhost")  # fmt: skip
        async with stream:
            reply = await _allocate(stream)
            assert reply.cls == MessageClass.SUCCESS, reply.get(Attr.ERROR_CODE)
            assert reply.get(Attr.XOR_MAPPED_ADDRESS) == tcp.socket.getsockname()[:2]
        # Plain TCP (PROXY v1): a Binding answers with this client's address.
        plain = await trio.open_tcp_stream(HOST, TCP_FRONT)
        async with plain:
            request = Message(Method.BINDING, MessageClass.REQUEST)
            await plain.send_all(request.encode(fingerprint=True))
            (answer,) = await read_messages(plain, 1)
            assert answer.get(Attr.XOR_MAPPED_ADDRESS) == plain.socket.getsockname()[:2]
        # Another name on the same port goes to the web server, with no header.
        other = trio.SSLStream(await trio.open_tcp_stream(HOST, TLS_FRONT),
                               ssl.create_default_context(), server_hostname="www.example")
        with trio.move_on_after(5):
            with contextlib.suppress(trio.BrokenResourceError, ssl.SSLError):
                await other.do_handshake()  # the fake web server just closes
        await trio.aclose_forcefully(other)
        # (The readiness probes' empty connections went there too: they sent nothing.)
        hellos = [hit for hit in web_hits if hit]
        assert len(hellos) == 1 and hellos[0][:1] == b"\x16"  # a TLS ClientHello
    assert info.metrics.counters["stream_proxy_header_errors"] == 0
