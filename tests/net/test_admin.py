"""The admin listener of a real server: /metrics (parsed with prometheus_client's own
parser) moving with relayed traffic, /sessions, /healthz, /readyz, and draining."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from natsrv.config import Config
from natsrv.net.serve import ServerInfo, serve
from natsrv.stun import Attr, Message, MessageClass, Method, decode_untrusted
from natsrv.stun.integrity import long_term_key

IP = "127.0.0.1"
PEER_IP = "127.0.0.2"
REALM = "natsrv.test"


def config(**overrides: object) -> Config:
    base: dict[str, object] = {
        "listen": ((IP, 0),), "realm": REALM, "users": (("alice", "wonderland"),),
        "relay_ip": IP, "allow_peer": (), "metrics_listen": (IP, 0),
    }  # fmt: skip
    base.update(overrides)
    return Config(**base).validate()  # type: ignore[arg-type]


class Client:
    """A UDP TURN client with long-term credentials, just enough for these tests."""

    def __init__(self, sock: trio.socket.SocketType, server: tuple[str, int],
                 user: str = "alice", password: str = "wonderland") -> None:  # fmt: skip
        self.sock, self.server, self.nonce, self.user = sock, server, None, user
        self.key = long_term_key(user, REALM, password)

    async def request(self, method: int, *attrs: tuple[int, object]) -> Message:
        for _ in range(3):
            msg = Message(method, MessageClass.REQUEST, attributes=list(attrs))
            if self.nonce is not None:
                msg.attributes += [(Attr.USERNAME, self.user), (Attr.REALM, REALM),
                                   (Attr.NONCE, self.nonce)]  # fmt: skip
            await self.sock.sendto(msg.encode(key=self.key if self.nonce else None,
                                              fingerprint=True), self.server)  # fmt: skip
            with trio.fail_after(2):
                while True:
                    reply = decode_untrusted((await self.sock.recvfrom(65535))[0])
                    if reply.transaction_id == msg.transaction_id:
                        break
            code = reply.get(Attr.ERROR_CODE)
            fresh = reply.get(Attr.NONCE)
            if code is not None and code.code in (401, 438) and fresh and fresh != self.nonce:
                self.nonce = fresh
                continue
            return reply
        return reply


async def udp_socket(ip: str = IP) -> trio.socket.SocketType:
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sock.bind((ip, 0))
    return sock


async def http_get(address: tuple[str, int], path: str) -> tuple[int, bytes]:
    stream = await trio.open_tcp_stream(*address)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def allocate_and_relay(info: ServerInfo) -> tuple[Client, trio.socket.SocketType]:
    client = Client(await udp_socket(), info.udp[0])
    reply = await client.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, 17))
    assert reply.cls == MessageClass.SUCCESS
    relay = reply.get(Attr.XOR_RELAYED_ADDRESS)
    peer = await udp_socket(PEER_IP)
    peer_address = peer.getsockname()
    reply = await client.request(Method.CHANNEL_BIND, (Attr.CHANNEL_NUMBER, 0x4001),
                                 (Attr.XOR_PEER_ADDRESS, peer_address))  # fmt: skip
    assert reply.cls == MessageClass.SUCCESS
    for _ in range(3):
        await client.sock.sendto(b"\x40\x01\x00\x05hello", info.udp[0])
        with trio.fail_after(2):
            data, _ = await peer.recvfrom(100)
        assert data == b"hello"
    await peer.sendto(b"back", relay)
    with trio.fail_after(2):
        data, _ = await client.sock.recvfrom(100)
    assert data == b"\x40\x01\x00\x04back"
    return client, peer


async def test_metrics_and_sessions_follow_real_traffic(nursery: trio.Nursery) -> None:
    info: ServerInfo = await nursery.start(
        serve, config(allow_peer=(ipaddress.ip_network("127.0.0.0/8"),))
    )
    admin = info.admin[0]
    status, body = await http_get(admin, "/metrics")
    assert status == 200
    before = samples(body)
    assert before[("natsrv_allocations", (("family", "ipv4"),))] == 0
    client, peer = await allocate_and_relay(info)
    status, body = await http_get(admin, "/metrics")
    after = samples(body)
    assert after[("natsrv_allocations", (("family", "ipv4"),))] == 1
    assert after[("natsrv_channels", ())] == 1 and after[("natsrv_permissions", ())] == 1
    assert after[("natsrv_relay_packets_total", (("direction", "to_peer"),))] == 3
    assert after[("natsrv_relay_bytes_total", (("direction", "to_peer"),))] == 15
    assert after[("natsrv_relay_packets_total", (("direction", "to_client"),))] == 1
    key = ("natsrv_stun_requests_total",
           (("method", "allocate"), ("result", "success"), ("transport", "udp")))  # fmt: skip
    assert after[key] == 1
    assert after[("natsrv_relay_ports_free", ())] < before[("natsrv_relay_ports_free", ())]
    status, body = await http_get(admin, "/sessions")
    [session] = json.loads(body)["sessions"]
    assert session["username"] == "alice" and session["transport"] == "udp"
    assert session["client"] == "{}:{}".format(*client.sock.getsockname())
    assert session["to_peer"] == {"packets": 3, "bytes": 15}
    assert session["channels"][0]["peer"] == "{}:{}".format(*peer.getsockname())
    assert (await http_get(admin, "/healthz"))[0] == 200
    assert (await http_get(admin, "/readyz"))[0] == 200
    assert (await http_get(admin, "/nothing"))[0] == 404
    client.sock.close()
    peer.close()


async def test_drain_refuses_new_allocations_and_waits_for_the_old(nursery: trio.Nursery) -> None:
    info: ServerInfo = await nursery.start(
        serve, config(allow_peer=(ipaddress.ip_network("127.0.0.0/8"),))
    )
    client, peer = await allocate_and_relay(info)
    info.drain()
    assert (await http_get(info.admin[0], "/readyz"))[0] == 503
    newcomer = Client(await udp_socket(), info.udp[0])
    reply = await newcomer.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, 17))
    assert reply.get(Attr.ERROR_CODE).code == 508
    # Bindings are still answered, and the old allocation still relays.
    binding = Message(Method.BINDING, MessageClass.REQUEST)
    await newcomer.sock.sendto(binding.encode(), info.udp[0])
    with trio.fail_after(2):
        assert decode_untrusted((await newcomer.sock.recvfrom(200))[0]).cls == MessageClass.SUCCESS
    await client.sock.sendto(b"\x40\x01\x00\x02hi", info.udp[0])
    with trio.fail_after(2):
        assert (await peer.recvfrom(100))[0] == b"hi"
    assert not info.drained.is_set()
    reply = await client.request(Method.REFRESH, (Attr.LIFETIME, 0))
    assert reply.cls == MessageClass.SUCCESS
    with trio.fail_after(2):
        await info.drained.wait()
    for sock in (client.sock, peer, newcomer.sock):
        sock.close()


async def test_systemd_hears_ready_and_stopping(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listener = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    await listener.bind(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    info: ServerInfo = await nursery.start(serve, config())
    with trio.fail_after(2):
        assert await listener.recv(100) == b"READY=1"
    info.drain()
    with trio.fail_after(2):
        assert await listener.recv(100) == b"STOPPING=1"
    listener.close()
