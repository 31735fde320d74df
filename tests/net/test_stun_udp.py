"""natsrv's STUN service over UDP, seen from a client socket on loopback."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator

import pytest
import trio

from natsrv.config import Config
from natsrv.net.serve import ServerInfo
from natsrv.stun import (
    Attr,
    ChangeRequest,
    ErrorCodeValue,
    Message,
    MessageClass,
    Method,
    decode_untrusted,
)
from tests.conftest import ALT_IP, PRIMARY_IP, start_server

#: Every test here runs on the native and on the pure-Python data path.
pytestmark = pytest.mark.usefixtures("data_path")

Address = tuple[str, int]


_OPEN: list[trio.socket.SocketType] = []


@pytest.fixture(autouse=True)
async def _close_client_sockets() -> AsyncIterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


async def client_socket(ip: str = PRIMARY_IP) -> trio.socket.SocketType:
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    _OPEN.append(sock)
    await sock.bind((ip, 0))
    return sock


async def exchange(
    sock: trio.socket.SocketType, data: bytes, dest: Address, timeout: float = 2.0
) -> tuple[Message, Address]:
    await sock.sendto(data, dest)
    with trio.fail_after(timeout):
        reply, src = await sock.recvfrom(65535)
    return decode_untrusted(reply), src


def request(*attrs: tuple[int, object], cookie: bool = True) -> Message:
    return Message(Method.BINDING, MessageClass.REQUEST, attributes=list(attrs), cookie=cookie)


async def test_binding_response_attributes(stun_server: ServerInfo) -> None:
    primary, alt_port_ep, _alt_ip_ep, alt_both = stun_server.udp
    sock = await client_socket()
    req = request()
    reply, src = await exchange(sock, req.encode(fingerprint=True), primary)
    me = sock.getsockname()
    assert src == primary
    assert reply.cls == MessageClass.SUCCESS and reply.transaction_id == req.transaction_id
    assert reply.get(Attr.XOR_MAPPED_ADDRESS) == me
    assert Attr.MAPPED_ADDRESS not in reply  # only with mapped-address = true
    assert reply.get(Attr.RESPONSE_ORIGIN) == primary
    assert reply.get(Attr.OTHER_ADDRESS) == alt_both == (ALT_IP, alt_port_ep[1])
    assert reply.get(Attr.SOFTWARE) == "natsrv-test"
    assert reply.attributes[-1][0] == Attr.FINGERPRINT  # verified by decode_untrusted


async def test_default_answer_reflects_no_more_than_xor_mapped_address(
    nursery: trio.Nursery,
) -> None:
    # The defaults: no alternate, no SOFTWARE, no MAPPED-ADDRESS. A 20-byte Binding gets
    # 32 bytes (1.25x at the IP level), 40 with FINGERPRINT when it sent one.
    info = await start_server(nursery, Config(listen=((PRIMARY_IP, 0),)).validate())
    sock = await client_socket()
    for fingerprint, size in ((False, 32), (True, 40)):
        await sock.sendto(request().encode(fingerprint=fingerprint), info.udp[0])
        with trio.fail_after(2):
            raw, _ = await sock.recvfrom(2048)
        assert len(raw) == size
        assert [t for t, _ in decode_untrusted(raw).attributes] == (
            [Attr.XOR_MAPPED_ADDRESS] + ([Attr.FINGERPRINT] if fingerprint else []))
    with_mapped = await start_server(
        nursery, Config(listen=((PRIMARY_IP, 0),), mapped_address=True).validate())
    reply, _ = await exchange(sock, request().encode(), with_mapped.udp[0])
    assert reply.get(Attr.MAPPED_ADDRESS) == sock.getsockname()


async def test_every_endpoint_answers_with_its_own_other_address(stun_server: ServerInfo) -> None:
    (pip, pport), (_, aport) = stun_server.udp[0], stun_server.udp[1]
    sock = await client_socket()
    for ep in stun_server.udp:
        reply, src = await exchange(sock, request().encode(), ep)
        assert src == ep and reply.get(Attr.RESPONSE_ORIGIN) == ep
        other = (ALT_IP if ep[0] == pip else pip, aport if ep[1] == pport else pport)
        assert reply.get(Attr.OTHER_ADDRESS) == other


async def test_change_request_is_answered_from_the_changed_endpoint(
    stun_server: ServerInfo,
) -> None:
    primary = stun_server.udp[0]
    alt_port = stun_server.udp[1][1]
    sock = await client_socket()
    cases = {
        (True, True): (ALT_IP, alt_port),
        (True, False): (ALT_IP, primary[1]),
        (False, True): (PRIMARY_IP, alt_port),
        (False, False): primary,
    }
    for (change_ip, change_port), expected in cases.items():
        req = request((Attr.CHANGE_REQUEST, ChangeRequest(change_ip, change_port)))
        reply, src = await exchange(sock, req.encode(), primary)
        assert src == expected, (change_ip, change_port)
        assert reply.get(Attr.RESPONSE_ORIGIN) == expected
        assert reply.get(Attr.OTHER_ADDRESS) == (ALT_IP, alt_port)
        assert reply.get(Attr.XOR_MAPPED_ADDRESS) == sock.getsockname()


async def test_classic_rfc3489_request_is_answered_in_kind(stun_server: ServerInfo) -> None:
    primary = stun_server.udp[0]
    sock = await client_socket()
    tid = bytes(range(1, 17))
    req = Message(Method.BINDING, MessageClass.REQUEST, tid, cookie=False)
    req.add(Attr.CHANGE_REQUEST, ChangeRequest(False, True))
    await sock.sendto(req.encode(), primary)
    with trio.fail_after(2):
        raw, src = await sock.recvfrom(2048)
    assert raw[4:20] == tid  # the whole 16-byte transaction ID is echoed
    reply = decode_untrusted(raw)
    assert not reply.cookie
    assert src == (PRIMARY_IP, stun_server.udp[1][1])
    assert reply.get(Attr.MAPPED_ADDRESS) == sock.getsockname()
    assert reply.get(Attr.SOURCE_ADDRESS) == src
    assert reply.get(Attr.CHANGED_ADDRESS) == stun_server.udp[3]
    assert Attr.XOR_MAPPED_ADDRESS not in reply


async def test_response_port_sends_the_answer_elsewhere(stun_server: ServerInfo) -> None:
    sock, other = await client_socket(), await client_socket()
    port = other.getsockname()[1]
    req = request((Attr.RESPONSE_PORT, port))
    await sock.sendto(req.encode(), stun_server.udp[0])
    with trio.fail_after(2):
        raw, _ = await other.recvfrom(2048)
    reply = decode_untrusted(raw)
    assert reply.transaction_id == req.transaction_id
    assert reply.get(Attr.XOR_MAPPED_ADDRESS) == sock.getsockname()


async def test_padding_never_makes_the_response_larger_than_the_request(
    stun_server: ServerInfo,
) -> None:
    sock = await client_socket()
    for size in (0, 8, 100, 1000):
        req = request((Attr.PADDING, bytes(size)))
        data = req.encode()
        await sock.sendto(data, stun_server.udp[0])
        with trio.fail_after(2):
            raw, _ = await sock.recvfrom(65535)  # the datagram as sent, not re-encoded
        reply = decode_untrusted(raw)
        assert reply.transaction_id == req.transaction_id
        assert len(raw) <= max(len(data), 200), size
        if size >= 200:
            assert len(raw) >= len(data) - 16, size  # padded up to (about) the request size
            assert Attr.PADDING in reply


async def test_unknown_comprehension_required_attribute_gets_420(stun_server: ServerInfo) -> None:
    sock = await client_socket()
    reply, _ = await exchange(sock, request((0x0031, b"abcd")).encode(), stun_server.udp[0])
    assert reply.cls == MessageClass.ERROR
    assert reply.get(Attr.ERROR_CODE).code == 420
    assert reply.get(Attr.UNKNOWN_ATTRIBUTES) == (0x0031,)


async def test_change_request_without_alternate_gets_420(nursery: trio.Nursery) -> None:
    info = await start_server(nursery, Config(listen=((PRIMARY_IP, 0),)).validate())
    assert len(info.udp) == 1
    sock = await client_socket()
    plain, _ = await exchange(sock, request().encode(), info.udp[0])
    assert Attr.OTHER_ADDRESS not in plain
    req = request((Attr.CHANGE_REQUEST, ChangeRequest(True, True)))
    reply, src = await exchange(sock, req.encode(), info.udp[0])
    assert src == info.udp[0]
    assert reply.get(Attr.ERROR_CODE) == ErrorCodeValue(420, "Unknown Attribute")
    assert reply.get(Attr.UNKNOWN_ATTRIBUTES) == (Attr.CHANGE_REQUEST,)


async def test_turn_method_without_turn_gets_400(stun_server: ServerInfo) -> None:
    sock = await client_socket()
    req = Message(
        Method.ALLOCATE, MessageClass.REQUEST, attributes=[(Attr.REQUESTED_TRANSPORT, 17)]
    )
    reply, _ = await exchange(sock, req.encode(), stun_server.udp[0])
    assert reply.cls == MessageClass.ERROR and reply.get(Attr.ERROR_CODE).code == 400


def malformed_requests() -> dict[str, bytes]:
    good = request((Attr.SOFTWARE, "abcd")).encode(fingerprint=True)
    runs_past = bytearray(good)
    struct.pack_into(">H", runs_past, 22, 200)
    fp_wrong = good[:-1] + bytes([good[-1] ^ 0xFF])
    body = good[20:] + struct.pack(">HH", Attr.SOFTWARE, 4) + b"late"
    fp_not_last = good[:2] + struct.pack(">H", len(body)) + good[4:20] + body
    odd_length = good[:2] + struct.pack(">H", len(good) - 20 + 2) + good[4:] + b"\0\0"
    return {
        "attribute runs past the end": bytes(runs_past),
        "FINGERPRINT wrong": fp_wrong,
        "FINGERPRINT not last": fp_not_last,
        "length not a multiple of 4": odd_length,
        "truncated header": good[:12],
        "not STUN at all": b"\xff" * 64,
    }


async def test_malformed_datagrams_get_no_reply(stun_server: ServerInfo) -> None:
    sock = await client_socket()
    counters = stun_server.metrics.counters
    for name, bad in malformed_requests().items():
        dropped = counters["dropped_malformed"]
        await sock.sendto(bad, stun_server.udp[0])
        good = request()
        # One socket, one server loop, in order: the first reply is the good one's or the
        # bad one got an answer; and by then the bad one has been counted, once.
        reply, _ = await exchange(sock, good.encode(), stun_server.udp[0])
        assert reply.transaction_id == good.transaction_id, name
        assert counters["dropped_malformed"] == dropped + 1, name


async def test_burst_of_malformed_datagrams_then_valid_request(stun_server: ServerInfo) -> None:
    sock = await client_socket()
    bad = list(malformed_requests().values())
    for i in range(10_000):
        await sock.sendto(bad[i % len(bad)], stun_server.udp[0])
    good = request()
    data = good.encode(fingerprint=True)
    # The kernel may drop part of the burst (and the request) when the socket buffer is
    # full: retransmit like any STUN client does (RFC 8489 §6.2.1), for at most 5 s.
    with trio.fail_after(5):
        while True:
            await sock.sendto(data, stun_server.udp[0])
            with trio.move_on_after(0.25):
                raw, _ = await sock.recvfrom(2048)
                break
    reply = decode_untrusted(raw)
    assert reply.transaction_id == good.transaction_id
    assert stun_server.metrics.counters["dropped_malformed"] > 1000


async def test_a_host_without_ipv6_keeps_the_ipv4_listener(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The default listens on [::] as well; where binding it fails for want of IPv6,
    natsrv says so and serves IPv4 (any other failure still stops it)."""
    import errno

    from natsrv.net import serve as serve_module

    real = serve_module._bind_group

    def no_ipv6(source: object, ip: str, *args: object) -> object:
        if ip == "::":
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        return real(source, ip, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(serve_module, "_bind_group", no_ipv6)
    info = await start_server(nursery, Config(listen=((PRIMARY_IP, 0), ("::", 0))).validate())
    assert [ip for ip, _ in info.udp] == [PRIMARY_IP]
    assert "this host has no IPv6" in caplog.text
    sock = await client_socket()
    reply, _ = await exchange(sock, request().encode(), info.udp[0])
    assert reply.cls == MessageClass.SUCCESS
