"""Test doubles for the TURN core: a fake relay opener and a scripted TURN client.

Everything is pure: no sockets, ``now`` passed in, messages go through the real codec
(encode, then ``decode_untrusted``) so integrity and fingerprints are exercised.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from natsrv.core.credentials import MD5, SHA256, CredentialStore, StaticUsers, password_key
from natsrv.core.effects import Address, Effect, Event, FiveTuple, SendToClient
from natsrv.core.nonce import NonceFactory
from natsrv.core.policy import PeerPolicy
from natsrv.core.turn import TurnServer, TurnSettings
from natsrv.stun import (
    Attr,
    Message,
    MessageClass,
    Method,
    PasswordAlgorithm,
    decode_untrusted,
    verify_integrity,
    verify_integrity_sha256,
)

NOW = 1_700_000_000.0
REALM = "example.org"
SERVER: Address = ("100.1.2.3", 3478)
CLIENT: Address = ("198.100.1.7", 40000)
FT: FiveTuple = ("udp", CLIENT, SERVER)
RELAY_IP = "10.0.0.5"
PUBLIC_IP = "100.1.2.4"
RELAY_IP6 = "2001:4860::5"
PEER: Address = ("1.2.3.4", 5000)
PEER2: Address = ("5.6.7.8", 6000)
PEER6: Address = ("2a00:1450::1", 7000)
USERS = {"alice": "secret", "bob": "hunter2"}
NONCE_KEY = b"n" * 32


def five_tuple(i: int, transport: str = "udp") -> FiveTuple:
    """A distinct client 5-tuple per ``i``."""
    return (transport, (f"198.100.{i // 250}.{i % 250 + 1}", 40000 + i % 1000), SERVER)


class FakeOpener:
    """Records binds and closes; ``taken`` ports refuse to bind."""

    def __init__(self, taken: Iterable[Address] = ()) -> None:
        self.bound: set[Address] = set()
        self.taken: set[Address] = set(taken)
        self.closed: list[Address] = []
        self.attempts = 0
        self.tcp: set[Address] = set()

    def bind(self, ip: str, port: int) -> bool:
        self.attempts += 1
        if (ip, port) in self.bound or (ip, port) in self.taken:
            return False
        self.bound.add((ip, port))
        return True

    def bind_tcp(self, ip: str, port: int) -> bool:
        """RFC 6062 relays: the same port bookkeeping (``tcp`` records them)."""
        if not self.bind(ip, port):
            return False
        self.tcp.add((ip, port))
        return True

    def close(self, relay: Address) -> None:
        assert relay in self.bound, f"closing {relay} which is not bound"
        self.bound.remove(relay)
        self.closed.append(relay)


def make_server(
    *,
    credentials: CredentialStore | None = None,
    nonces: NonceFactory | None = None,
    policy: PeerPolicy | None = None,
    opener: FakeOpener | None = None,
    **settings: Any,
) -> tuple[TurnServer, FakeOpener]:
    base: dict[str, Any] = {
        "realm": REALM,
        "relay_ips": (RELAY_IP,),
        "relay_ports": (50000, 50099),
        "external_ip": (PUBLIC_IP, RELAY_IP),
        "software": "natsrv-test",
        "unauth_rate": 0.0,
        "unauth_global_rate": 0.0,
    }
    base.update(settings)
    opener = opener or FakeOpener()
    server = TurnServer(
        TurnSettings(**base),
        credentials=credentials or StaticUsers(USERS),
        nonces=nonces or NonceFactory(NONCE_KEY, 600.0),
        policy=policy or PeerPolicy(own_addresses=[SERVER[0], ("100.1.2.9", 3478)]),
        opener=opener,
    )
    return server, opener


def events(effects: list[Effect]) -> list[str]:
    """The names of the Event effects, in order."""
    return [e.name for e in effects if isinstance(e, Event)]


def responses(effects: list[Effect]) -> list[Message]:
    return [decode_untrusted(e.data) for e in effects if isinstance(e, SendToClient)]


def only_response(effects: list[Effect]) -> Message:
    found = responses(effects)
    assert len(found) == 1, effects
    return found[0]


def error_code(msg: Message) -> int | None:
    value = msg.get(Attr.ERROR_CODE)
    return None if value is None else value.code


class Client:
    """A TURN client speaking to ``server`` on ``five_tuple``.

    ``algorithm``: None for RFC 5389 clients (MESSAGE-INTEGRITY, MD5 key, no
    PASSWORD-ALGORITHM), or MD5/SHA256 to answer PASSWORD-ALGORITHMS as RFC 8489 says
    (MESSAGE-INTEGRITY-SHA256).
    """

    def __init__(
        self,
        server: TurnServer,
        ft: FiveTuple = FT,
        username: str = "alice",
        password: str = "secret",
        *,
        algorithm: int | None = None,
        sha256: bool = False,
    ) -> None:
        self.server = server
        self.ft = ft
        self.username = username
        self.password = password
        self.algorithm = algorithm
        self.sha256 = sha256 or algorithm is not None
        self.realm = server.settings.realm
        self.nonce: str | None = None
        self.offered: tuple[PasswordAlgorithm, ...] = ()

    @property
    def key(self) -> bytes:
        key = password_key(
            self.username, self.realm, self.password, self.algorithm or MD5
        )
        assert key is not None
        return key

    def challenge(self, now: float = NOW) -> Message:
        """Send an unauthenticated Allocate and keep the NONCE of the 401."""
        msg = Message(Method.ALLOCATE, MessageClass.REQUEST)
        msg.add(Attr.REQUESTED_TRANSPORT, 17)
        answer = only_response(self.server.handle(_wire(msg), self.ft, now))
        assert error_code(answer) == 401
        self.take_nonce(answer)
        return answer

    def take_nonce(self, answer: Message) -> None:
        self.nonce = answer.get(Attr.NONCE)
        self.realm = answer.get(Attr.REALM)
        self.offered = tuple(answer.get(Attr.PASSWORD_ALGORITHMS) or ())

    def build(
        self, method: int, attrs: Iterable[tuple[int, Any]] = (), tid: bytes | None = None
    ) -> Message:
        msg = Message(method, MessageClass.REQUEST, tid)
        for attr in attrs:
            msg.add(*attr)
        msg.add(Attr.USERNAME, self.username)
        msg.add(Attr.REALM, self.realm)
        assert self.nonce is not None
        msg.add(Attr.NONCE, self.nonce)
        if self.algorithm is not None:
            msg.add(Attr.PASSWORD_ALGORITHMS, self.offered)
            msg.add(Attr.PASSWORD_ALGORITHM, PasswordAlgorithm(self.algorithm))
        return msg

    def wire(self, msg: Message) -> Message:
        if self.sha256:
            return _wire(msg, key_sha256=self.key)
        return _wire(msg, key=self.key)

    def request(
        self,
        method: int,
        attrs: Iterable[tuple[int, Any]] = (),
        now: float = NOW,
        *,
        tid: bytes | None = None,
        retry_stale: bool = True,
    ) -> tuple[Message, list[Effect]]:
        """Send a signed request; return the (checked) answer and all effects. A 438 is
        retried once with the fresh nonce, as RFC 8489 §9.2.5 says."""
        if self.nonce is None:
            self.challenge(now)
        attrs = list(attrs)
        effects = self.server.handle(self.wire(self.build(method, attrs, tid)), self.ft, now)
        answer = only_response(effects)
        if retry_stale and error_code(answer) == 438:
            self.take_nonce(answer)
            effects = self.server.handle(self.wire(self.build(method, attrs)), self.ft, now)
            answer = only_response(effects)
        assert answer.transaction_id == (tid or answer.transaction_id)
        if error_code(answer) not in (400, 401, 420, 438):
            self.check_signed(answer)
        return answer, effects

    def check_signed(self, answer: Message) -> None:
        if self.sha256:
            assert answer.integrity_sha256_offset is not None, answer
            assert verify_integrity_sha256(answer, self.key)
        else:
            assert answer.integrity_offset is not None, answer
            assert verify_integrity(answer, self.key)

    def allocate(
        self,
        *attrs: tuple[int, Any],
        now: float = NOW,
        tid: bytes | None = None,
        retry_stale: bool = True,
    ) -> tuple[Message, list[Effect]]:
        return self.request(
            Method.ALLOCATE,
            [(Attr.REQUESTED_TRANSPORT, 17), *attrs],
            now,
            tid=tid,
            retry_stale=retry_stale,
        )

    def permit(self, *peers: Address, now: float = NOW) -> Message:
        answer, _ = self.request(
            Method.CREATE_PERMISSION, [(Attr.XOR_PEER_ADDRESS, p) for p in peers], now
        )
        return answer

    def bind(self, channel: int, peer: Address, now: float = NOW) -> Message:
        answer, _ = self.request(
            Method.CHANNEL_BIND,
            [(Attr.CHANNEL_NUMBER, channel), (Attr.XOR_PEER_ADDRESS, peer)],
            now,
        )
        return answer

    def refresh(self, lifetime: int | None = None, now: float = NOW,
                *attrs: tuple[int, Any]) -> tuple[Message, list[Effect]]:
        extra = [] if lifetime is None else [(Attr.LIFETIME, lifetime)]
        return self.request(Method.REFRESH, [*extra, *attrs], now)

    def send(self, peer: Address, data: bytes, now: float = NOW) -> list[Effect]:
        msg = Message(Method.SEND, MessageClass.INDICATION)
        msg.add(Attr.XOR_PEER_ADDRESS, peer)
        msg.add(Attr.DATA, data)
        return self.server.handle(_wire(msg), self.ft, now)


def _wire(msg: Message, *, key: bytes | None = None, key_sha256: bytes | None = None) -> Message:
    """Through the codec, as the shell would hand it over."""
    return decode_untrusted(msg.encode(key=key, key_sha256=key_sha256, fingerprint=True))


wire = _wire

__all__ = [
    "CLIENT",
    "FT",
    "MD5",
    "NOW",
    "PEER",
    "PEER2",
    "PEER6",
    "PUBLIC_IP",
    "REALM",
    "RELAY_IP",
    "RELAY_IP6",
    "SERVER",
    "SHA256",
    "Client",
    "FakeOpener",
    "error_code",
    "five_tuple",
    "make_server",
    "only_response",
    "responses",
    "wire",
]
