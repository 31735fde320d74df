"""A bug in the core costs one datagram, never the listener: when ``Server.receive``
raises, the UDP listener (native and pure-Python data paths) counts it in
``handler_errors``, logs it, and goes on answering."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from natsrv.core.binding import BindingConfig, BindingService
from natsrv.core.effects import Effect
from natsrv.core.server import FiveTuple, Server
from natsrv.metrics import Metrics
from natsrv.net import fastpath
from natsrv.net.relay import RelaySockets
from natsrv.net.shell import Shell
from natsrv.net.udp import bind_udp, local_address, serve_udp
from natsrv.stun import Attr, Message, MessageClass, Method, decode_untrusted
from tests.conftest import PRIMARY_IP

POISON = b"\x00\x03\x00\x00" + bytes(16)  # well-formed enough to reach Server.receive


class BuggyServer(Server):
    """Raises for the poison datagram, as a bug in the core would."""

    def receive(self, data: bytes, five_tuple: FiveTuple, now: float) -> list[Effect]:
        if data == POISON:
            raise RuntimeError("a bug in the core")
        return super().receive(data, five_tuple, now)


async def test_a_raising_core_costs_one_datagram(
    data_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    sock = bind_udp(PRIMARY_IP, 0)
    local = local_address(sock)
    metrics = Metrics()
    server = BuggyServer({local: BindingService(BindingConfig(local))},
                         counters=metrics.counters)  # fmt: skip
    shell = Shell(server, RelaySockets(), metrics)
    fastpath.install(shell)
    assert (shell.native is not None) == (data_path == "native")
    client = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await client.bind((PRIMARY_IP, 0))
    client_address = client.getsockname()
    with sock, client, caplog.at_level(logging.ERROR, logger="natsrv.udp"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_udp, sock, shell)
            with trio.fail_after(5):
                for _ in range(3):
                    await client.sendto(POISON, local)
                # A Binding request with SOFTWARE goes to Server.receive on both paths.
                request = Message(Method.BINDING, MessageClass.REQUEST,
                                  attributes=[(Attr.SOFTWARE, "test")])  # fmt: skip
                await client.sendto(request.encode(), local)
                reply = decode_untrusted(await client.recv(2048))
            nursery.cancel_scope.cancel()
    assert reply.transaction_id == request.transaction_id
    assert reply.get(Attr.XOR_MAPPED_ADDRESS) == client_address
    assert metrics.counters["handler_errors"] == 3
    assert sum("error handling a datagram" in r.getMessage() for r in caplog.records) == 3
