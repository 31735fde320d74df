"""STUN over TCP and TLS: framing, idle timeout, connection cap (RFC 8489 §6.2.2-6.2.3)."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import pytest
import trio
import trio.testing
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from natsrv.net.serve import ServerInfo
from natsrv.stun import (
    Attr,
    ChangeRequest,
    Message,
    MessageClass,
    Method,
    StreamFramer,
    decode_untrusted,
)
from tests.conftest import start_server, stun_config


async def read_messages(stream: trio.abc.Stream, count: int, timeout: float = 2.0) -> list[Message]:
    framer = StreamFramer()
    out: list[bytes] = []
    with trio.fail_after(timeout):
        while len(out) < count:
            data = await stream.receive_some(65536)
            assert data, "connection closed early"
            out += framer.feed(data)
    return [decode_untrusted(m) for m in out]


async def test_partial_writes_and_several_messages_per_segment(stun_server: ServerInfo) -> None:
    stream = await trio.open_tcp_stream(*stun_server.tcp[0])
    async with stream:
        one = Message(Method.BINDING, MessageClass.REQUEST)
        data = one.encode(fingerprint=True)
        for piece in (data[:3], data[3:21], data[21:]):
            await stream.send_all(piece)
        (reply,) = await read_messages(stream, 1)
        assert reply.transaction_id == one.transaction_id
        assert reply.get(Attr.XOR_MAPPED_ADDRESS) == stream.socket.getsockname()[:2]
        assert reply.get(Attr.RESPONSE_ORIGIN) == stun_server.tcp[0]
        two, three = (Message(Method.BINDING, MessageClass.REQUEST) for _ in range(2))
        await stream.send_all(two.encode() + three.encode(fingerprint=True))
        replies = await read_messages(stream, 2)
        assert [r.transaction_id for r in replies] == [two.transaction_id, three.transaction_id]


async def test_change_request_over_tcp_is_refused(stun_server: ServerInfo) -> None:
    stream = await trio.open_tcp_stream(*stun_server.tcp[0])
    async with stream:
        req = Message(Method.BINDING, MessageClass.REQUEST)
        req.add(Attr.CHANGE_REQUEST, ChangeRequest(True, True))
        await stream.send_all(req.encode())
        (reply,) = await read_messages(stream, 1)
        assert reply.cls == MessageClass.ERROR and reply.get(Attr.ERROR_CODE).code == 400


async def test_oversize_frame_closes_the_connection(nursery: trio.Nursery) -> None:
    info = await start_server(nursery, stun_config(max_message_size=1000))
    stream = await trio.open_tcp_stream(*info.tcp[0])
    async with stream:
        await stream.send_all(b"\x00\x01\x04\x00" + bytes(16))  # claims 1024 bytes of body
        with trio.fail_after(2):
            assert await stream.receive_some(100) == b""


async def test_idle_timeout_is_reset_by_keepalives(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # Virtual time (the server's idle timer runs on trio's clock): the 0.4 s pauses and
    # the timeout take no real time, and the close comes exactly when the timer says.
    info = await start_server(nursery, stun_config(tcp_idle_timeout=1.0))
    stream = await trio.open_tcp_stream(*info.tcp[0])
    async with stream:
        # A keepalive every 0.4 s for 2 s: twice the idle timeout, and still served.
        for _ in range(5):
            req = Message(Method.BINDING, MessageClass.REQUEST)
            await stream.send_all(req.encode())
            (reply,) = await read_messages(stream, 1)
            assert reply.transaction_id == req.transaction_id
            answered = trio.current_time()
            await trio.sleep(0.4)  # time passing between keepalives, not a wait for anything
        with trio.fail_after(3):
            assert await stream.receive_some(100) == b""
        # Closed 1 s after the last frame, not earlier (the keepalives reset the timer).
        assert trio.current_time() - answered == pytest.approx(1.0, abs=0.01)


async def test_connection_cap_evicts_the_oldest_unauthenticated(nursery: trio.Nursery) -> None:
    info = await start_server(nursery, stun_config(tcp_max_connections=2))
    held = [await trio.open_tcp_stream(*info.tcp[0]) for _ in range(2)]
    try:
        for s in held:  # both are really being served
            await s.send_all(Message(Method.BINDING, MessageClass.REQUEST).encode())
            await read_messages(s, 1)
        # All slots are taken by STUN-only clients (no allocation): the newcomer is
        # served and the oldest of them gives way.
        extra = await trio.open_tcp_stream(*info.tcp[0])
        async with extra:
            await extra.send_all(Message(Method.BINDING, MessageClass.REQUEST).encode())
            assert len(await read_messages(extra, 1)) == 1
            with trio.fail_after(2):
                try:
                    data = await held[0].receive_some(100)
                except trio.BrokenResourceError:
                    data = b""  # reset instead of FIN: closed all the same
            assert data == b""
        assert info.metrics.counters["stream_evicted"] == 1
        await held[1].send_all(Message(Method.BINDING, MessageClass.REQUEST).encode())
        assert len(await read_messages(held[1], 1)) == 1
    finally:
        for s in held:
            await s.aclose()


def make_certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    return make_certificate(tmp_path)


async def test_binding_over_tls(nursery: trio.Nursery, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    config = stun_config(tls_cert=str(cert), tls_key=str(key), tls_port=0)
    info = await start_server(nursery, config)
    assert info.tls[0][0] == info.tcp[0][0] and info.tls[0][1] not in (0, info.tcp[0][1])
    ctx = ssl.create_default_context(cafile=str(cert))
    tcp = await trio.open_tcp_stream(*info.tls[0])
    stream = trio.SSLStream(tcp, ctx, server_hostname="localhost")
    async with stream:
        req = Message(Method.BINDING, MessageClass.REQUEST)
        await stream.send_all(req.encode(fingerprint=True))
        (reply,) = await read_messages(stream, 1)
        assert reply.transaction_id == req.transaction_id
        assert reply.get(Attr.XOR_MAPPED_ADDRESS) == tcp.socket.getsockname()[:2]
