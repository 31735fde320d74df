"""USERHASH round trips over a real server (RFC 8489 §14.4): with ``userhash = true``
the 401's nonce advertises username anonymity, and a client that never sends its name
allocates, refreshes and relays; for static users and for the user database, with MD5
and with SHA-256 keys. Without the switch the nonce says nothing, and USERHASH still
works for those users."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import trio

from natsrv.config import ConfigError
from natsrv.stun import Attr, Message, MessageClass, Method, PasswordAlgorithm
from natsrv.stun.attributes import SecurityFeature, nonce_features
from natsrv.stun.integrity import long_term_key, long_term_key_sha256, userhash
from natsrv.stun.message import decode_untrusted, verify_integrity, verify_integrity_sha256
from natsrv.userdb import add_user
from tests.conftest import PRIMARY_IP, start_server
from tests.net.test_turn_server import REALM, code_of, turn_config

SHA256 = PasswordAlgorithm(0x0002)
MD5 = PasswordAlgorithm(0x0001)


class HashedClient:
    """A TURN client over UDP that sends USERHASH, never USERNAME."""

    def __init__(self, sock: trio.socket.SocketType, server: tuple[str, int], user: str,
                 password: str, *, sha256: bool = False) -> None:  # fmt: skip
        self.sock, self.server, self.sha256 = sock, server, sha256
        self.hash = userhash(user, REALM)
        self.key = (long_term_key_sha256 if sha256 else long_term_key)(user, REALM, password)
        self.nonce: str | None = None
        self.offered: list[PasswordAlgorithm] = []

    async def _send(self, msg: Message) -> Message:
        await self.sock.sendto(msg.encode(
            key=None if self.sha256 or self.nonce is None else self.key,
            key_sha256=self.key if self.sha256 and self.nonce else None, fingerprint=True,
        ), self.server)  # fmt: skip
        with trio.fail_after(2):
            while True:
                raw, _ = await self.sock.recvfrom(65535)
                reply = decode_untrusted(raw)
                if reply.transaction_id == msg.transaction_id:
                    return reply

    async def request(self, method: int, *attrs: tuple[int, object]) -> Message:
        for _ in range(3):
            msg = Message(method, MessageClass.REQUEST, attributes=list(attrs))
            if self.nonce is not None:
                msg.attributes += [(Attr.USERHASH, self.hash), (Attr.REALM, REALM),
                                   (Attr.NONCE, self.nonce)]  # fmt: skip
                if self.sha256:
                    msg.attributes += [(Attr.PASSWORD_ALGORITHMS, self.offered),
                                       (Attr.PASSWORD_ALGORITHM, SHA256)]  # fmt: skip
            reply = await self._send(msg)
            if code_of(reply) in (401, 438) and self.nonce != reply.get(Attr.NONCE):
                self.nonce = reply.get(Attr.NONCE)
                self.offered = list(reply.get(Attr.PASSWORD_ALGORITHMS) or [])
                continue
            return reply
        return reply

    def signed(self, reply: Message) -> bool:
        if self.sha256:
            return verify_integrity_sha256(reply, self.key)
        return verify_integrity(reply, self.key)


async def _client(info_udp: tuple[str, int], user: str, password: str,
                  sha256: bool = False) -> HashedClient:  # fmt: skip
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sock.bind((PRIMARY_IP, 0))
    return HashedClient(sock, info_udp, user, password, sha256=sha256)


@pytest.mark.parametrize("store", ["static", "user-db"])
@pytest.mark.parametrize("sha256", [False, True], ids=["md5", "sha256"])
async def test_allocate_refresh_and_relay_with_userhash(
    nursery: trio.Nursery, tmp_path: Path, store: str, sha256: bool
) -> None:
    options: dict[str, object] = {"userhash": True, "password_algorithms": sha256,
                                  "allow_peer": (ipaddress.ip_network("127.0.0.0/8"),)}
    if store == "user-db":
        db = tmp_path / "users.sqlite"
        add_user(db, "carol", REALM, "s3cret")
        options.update(users=(), user_db=str(db))
    else:
        options.update(users=(("carol", "s3cret"),))
    info = await start_server(nursery, turn_config(**options))
    client = await _client(info.udp[0], "carol", "s3cret", sha256)
    reply = await client.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, 17))
    assert reply.cls == MessageClass.SUCCESS, reply.get(Attr.ERROR_CODE)
    assert client.signed(reply)
    assert client.nonce is not None
    features = nonce_features(client.nonce)
    assert features is not None and features & SecurityFeature.USERNAME_ANONYMITY
    assert bool(features & SecurityFeature.PASSWORD_ALGORITHMS) == sha256
    relay = reply.get(Attr.XOR_RELAYED_ADDRESS)
    peer = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await peer.bind((PRIMARY_IP, 0))
    reply = await client.request(Method.CREATE_PERMISSION,
                                 (Attr.XOR_PEER_ADDRESS, peer.getsockname()))  # fmt: skip
    assert reply.cls == MessageClass.SUCCESS and client.signed(reply)
    await peer.sendto(b"to carol", relay)
    with trio.fail_after(2):
        raw, _ = await client.sock.recvfrom(2048)
    assert decode_untrusted(raw).get(Attr.DATA) == b"to carol"
    reply = await client.request(Method.REFRESH, (Attr.LIFETIME, 0))
    assert reply.cls == MessageClass.SUCCESS and client.signed(reply)
    # Someone else's hash (or a wrong password) gets 401.
    stranger = await _client(info.udp[0], "mallory", "s3cret", sha256)
    reply = await stranger.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, 17))
    assert code_of(reply) == 401
    for s in (client.sock, stranger.sock, peer):
        s.close()


async def test_without_the_switch_nothing_is_advertised_but_userhash_works(
    nursery: trio.Nursery,
) -> None:
    info = await start_server(nursery, turn_config())  # static user alice
    client = await _client(info.udp[0], "alice", "wonderland")
    reply = await client.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, 17))
    assert reply.cls == MessageClass.SUCCESS and client.signed(reply)
    assert client.nonce is not None and nonce_features(client.nonce) is None
    client.sock.close()


def test_userhash_needs_a_store_that_knows_its_names() -> None:
    with pytest.raises(ConfigError) as exc:
        turn_config(users=(), userhash=True)  # the REST secret alone
    assert str(exc.value).startswith("userhash: needs users or user-db")
