"""Slow clients over TCP and TLS: a connection that never completes its first message
or its TLS handshake is closed at the deadline (``tcp-first-message-timeout``,
``tls-handshake-timeout``), not at the idle timeout, and each close is counted in
``natsrv_stream_connection_events_total``. Virtual time: the deadlines run on trio's
clock, so the test takes no real time and the close comes exactly when they say."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from tests.conftest import start_server, stun_config
from tests.net.test_stun_stream import make_certificate


async def closed(stream: trio.SocketStream) -> bool:
    with trio.fail_after(30):
        try:
            return await stream.receive_some(100) == b""
        except trio.BrokenResourceError:
            return True  # reset instead of FIN: closed all the same


async def test_a_first_message_that_never_completes_is_cut_at_its_deadline(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    info = await start_server(nursery, stun_config(tcp_first_message_timeout=2.0,
                                                   tcp_idle_timeout=300.0))  # fmt: skip
    stream = await trio.open_tcp_stream(*info.tcp[0])
    async with stream:
        opened = trio.current_time()
        await stream.send_all(bytes.fromhex("000100002112a442"))  # half a STUN header
        assert await closed(stream)
        assert trio.current_time() - opened == pytest.approx(2.0, abs=0.01)
    assert info.metrics.counters["stream_timeouts"] == 1


async def test_a_tls_handshake_that_never_completes_is_cut_at_its_deadline(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    cert, key = make_certificate(tmp_path)
    info = await start_server(nursery, stun_config(
        tls_cert=str(cert), tls_key=str(key), tls_port=0, tls_handshake_timeout=3.0,
        tcp_first_message_timeout=60.0))  # fmt: skip
    stream = await trio.open_tcp_stream(*info.tls[0])
    async with stream:
        opened = trio.current_time()
        await stream.send_all(bytes.fromhex("1603010200"))  # a ClientHello that never comes
        assert await closed(stream)
        assert trio.current_time() - opened == pytest.approx(3.0, abs=0.01)
    assert info.metrics.counters["tls_handshake_timeouts"] == 1
