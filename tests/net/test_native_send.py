"""``natsrv._fastpath.send_datagrams``: the answers the Python core gives on the native
path leave the listener in batches (sendmmsg), each datagram whole, in order, to its
own destination; what cannot be sent is counted, never raised."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from types import ModuleType

import pytest

from tests.conftest import native_built, require


@pytest.fixture
def native() -> ModuleType:
    require(native_built(), "natsrv._fastpath is not built (no C compiler or headers)")
    import natsrv._fastpath

    return natsrv._fastpath


@pytest.fixture
def sockets() -> Iterator[tuple[socket.socket, list[socket.socket]]]:
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    receivers = []
    for ip in ("127.0.0.1", "127.0.0.2"):
        r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        r.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        r.bind((ip, 0))
        r.settimeout(5)
        receivers.append(r)
    yield sender, receivers
    for s in (sender, *receivers):
        s.close()


def test_every_datagram_arrives_whole_and_in_order_across_batches(
    native: ModuleType, sockets: tuple[socket.socket, list[socket.socket]]
) -> None:
    sender, receivers = sockets
    dests = [r.getsockname() for r in receivers]
    # 150 messages: more than one sendmmsg batch, sizes varying, alternating receivers.
    items = [(bytes([i % 256]) * (20 + i % 97), dests[i % 2]) for i in range(150)]
    sent, errors, dropped = native.send_datagrams(sender.fileno(), items)
    assert (sent, errors, dropped) == (150, 0, 0)
    for k, receiver in enumerate(receivers):
        expected = [data for i, (data, _) in enumerate(items) if i % 2 == k]
        got = [receiver.recvfrom(2048) for _ in expected]
        assert [data for data, _ in got] == expected
        assert {source for _, source in got} == {sender.getsockname()}


def test_an_address_that_is_not_an_ip_is_counted_and_the_rest_still_go(
    native: ModuleType, sockets: tuple[socket.socket, list[socket.socket]]
) -> None:
    sender, receivers = sockets
    dest = receivers[0].getsockname()
    items = [(b"first", dest), (b"lost", ("not-an-ip", 9)), (b"last", dest)]
    assert native.send_datagrams(sender.fileno(), items) == (2, 1, 0)
    assert [receivers[0].recv(64) for _ in range(2)] == [b"first", b"last"]


def test_a_send_the_kernel_refuses_is_counted_not_raised(native: ModuleType) -> None:
    # A TCP socket that is not connected: sendmmsg fails for each message.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as stream:
        assert native.send_datagrams(stream.fileno(), [(b"x", ("127.0.0.1", 9))] * 3) == (
            0, 3, 0,
        )


def test_items_of_the_wrong_shape_are_a_type_error(native: ModuleType) -> None:
    with pytest.raises(TypeError):
        native.send_datagrams(0, [("text", ("127.0.0.1", 9))])
    with pytest.raises(TypeError):
        native.send_datagrams(0, [(b"x", "127.0.0.1:9")])
