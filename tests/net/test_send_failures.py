"""Sends the kernel refuses under overload (EAGAIN, ENOBUFS) or for an unreachable
destination: the datagram is dropped and counted in
``natsrv_dropped_datagrams_total``, the listener keeps answering, nothing raises and no
task waits for good. The UDP listener runs on a real socket whose ``sendto`` fails."""

from __future__ import annotations

import errno
import socket

import pytest
import trio
import trio.testing

from natsrv.core.binding import BindingConfig, BindingService
from natsrv.core.server import Server
from natsrv.metrics import Collector, Metrics
from natsrv.net.relay import RelaySockets
from natsrv.net.shell import Shell
from natsrv.net.udp import bind_udp, local_address, serve_udp
from natsrv.stun import Message, MessageClass, Method
from tests.conftest import PRIMARY_IP


class RefusingSocket(socket.socket):
    """A UDP socket whose every ``sendto`` fails with ``errno``."""

    refuse_with = errno.ENOBUFS

    def sendto(self, *args: object) -> int:  # type: ignore[override]
        raise OSError(self.refuse_with, "refused by the test")


def dropped(metrics: Metrics, reason: str) -> float:
    for family in Collector(metrics, lambda: None).collect():
        if family.name == "natsrv_dropped_datagrams":
            for sample in family.samples:
                if sample.labels == {"reason": reason}:
                    return sample.value
    raise AssertionError(f"no natsrv_dropped_datagrams_total{{reason={reason!r}}}")


def refusing_listener(code: int) -> RefusingSocket:
    plain = bind_udp(PRIMARY_IP, 0)
    sock = RefusingSocket(plain.family, plain.type, fileno=plain.detach())
    sock.refuse_with = code
    return sock


@pytest.mark.parametrize(("code", "reason"), [
    (errno.ENOBUFS, "send-buffer-full"),
    (errno.EAGAIN, "send-buffer-full"),
    (errno.ENETUNREACH, "send-error"),
])  # fmt: skip
async def test_a_refused_send_is_dropped_and_counted_and_the_listener_goes_on(
    code: int, reason: str
) -> None:
    sock = refusing_listener(code)
    local = local_address(sock)
    binding = BindingService(BindingConfig(local))
    metrics = Metrics()
    server = Server({local: binding}, counters=metrics.counters)
    shell = Shell(server, RelaySockets(), metrics)
    client = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await client.bind((PRIMARY_IP, 0))
    with sock, client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_udp, sock, shell)
            with trio.fail_after(5):
                for n in range(1, 21):
                    request = Message(Method.BINDING, MessageClass.REQUEST)
                    await client.sendto(request.encode(), local)
                    while server.request_counts().get((Method.BINDING, "udp", "success"), 0) < n:
                        await trio.testing.wait_all_tasks_blocked()
                while dropped(metrics, reason) < 20:  # EAGAIN: after a wait for room
                    await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert dropped(metrics, reason) == 20
    assert metrics.counters["handler_errors"] == 0


def test_the_shell_drops_and_counts_sends_the_kernel_refuses() -> None:
    metrics = Metrics()
    shell = Shell(Server({("127.0.0.1", 3478): BindingService(BindingConfig(("127.0.0.1", 3478)))},
                         counters=metrics.counters), RelaySockets(), metrics)  # fmt: skip
    for code in (errno.ENOBUFS, errno.EAGAIN, errno.EHOSTUNREACH, errno.EPERM):
        sock = refusing_listener(code)
        with sock:
            shell.sendto(sock, b"x", ("127.0.0.1", 9))
    assert dropped(metrics, "send-buffer-full") == 2
    assert dropped(metrics, "send-error") == 2
