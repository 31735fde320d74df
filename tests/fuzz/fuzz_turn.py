"""Fuzz the TURN core with sequences of messages from several clients and a moving clock.

The input is cut into steps. Each step picks a client 5-tuple (of four, over UDP and
TCP), moves the clock forward, and sends either raw bytes or a well-formed request
(Allocate, Refresh, CreatePermission, ChannelBind, Send, ChannelData) that the harness
signs with the client's real credentials, so the fuzzer reaches the handlers behind
authentication. Invariants: nothing raises; effects are well formed; and once every
lifetime has passed, ``expire`` leaves no allocation, reservation or relay port held.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports():
    from natsrv.stun import Attr, Message, MessageClass, Method, decode_untrusted
    from natsrv.stun.attributes import ChangeRequest
    from natsrv.stun.integrity import long_term_key
    from tests.fuzz.harness import PRIMARY, REALM, USERS, check_effects, make_server

CLIENTS = [("udp", ("198.51.100.7", 4000), PRIMARY), ("udp", ("198.51.100.8", 4001), PRIMARY),
           ("tcp", ("198.51.100.7", 4002), PRIMARY), ("udp", ("2001:db8::7", 4003), PRIMARY)]
PEERS = [("203.0.113.5", 5000), ("203.0.113.6", 5001), ("2001:db8:1::5", 5002),
         ("127.0.0.1", 5003), ("10.200.0.1", 5004)]
METHODS = [Method.ALLOCATE, Method.REFRESH, Method.CREATE_PERMISSION, Method.CHANNEL_BIND,
           Method.SEND, Method.BINDING]
NAMES = list(USERS)


def build(fdp: atheris.FuzzedDataProvider, nonce: str | None, user: str) -> bytes:
    method = METHODS[fdp.ConsumeIntInRange(0, len(METHODS) - 1)]
    cls = MessageClass.INDICATION if method == Method.SEND else MessageClass.REQUEST
    msg = Message(method, cls)
    for _ in range(fdp.ConsumeIntInRange(0, 4)):
        choice = fdp.ConsumeIntInRange(0, 9)
        peer = PEERS[fdp.ConsumeIntInRange(0, len(PEERS) - 1)]
        if choice == 0:
            msg.add(Attr.REQUESTED_TRANSPORT, fdp.PickValueInList([17, 6, 0]))
        elif choice == 1:
            msg.add(Attr.LIFETIME, fdp.ConsumeIntInRange(0, 7200))
        elif choice == 2:
            msg.add(Attr.XOR_PEER_ADDRESS, peer)
        elif choice == 3:
            msg.add(Attr.CHANNEL_NUMBER, fdp.ConsumeIntInRange(0x3FFF, 0x4003))
        elif choice == 4:
            msg.add(Attr.DATA, fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64)))
        elif choice == 5:
            msg.add(Attr.EVEN_PORT, fdp.ConsumeBool())
        elif choice == 6:
            msg.add(Attr.REQUESTED_ADDRESS_FAMILY, fdp.PickValueInList([1, 2, 3]))
        elif choice == 7:
            msg.add(Attr.ADDITIONAL_ADDRESS_FAMILY, fdp.PickValueInList([1, 2]))
        elif choice == 8:
            msg.add(Attr.RESERVATION_TOKEN, fdp.ConsumeBytes(8).ljust(8, b"\0"))
        else:
            msg.add(Attr.CHANGE_REQUEST, ChangeRequest(fdp.ConsumeBool(), fdp.ConsumeBool()))
    if cls == MessageClass.REQUEST and nonce is not None and fdp.ConsumeBool():
        msg.add(Attr.USERNAME, user).add(Attr.REALM, REALM).add(Attr.NONCE, nonce)
        return msg.encode(key=long_term_key(user, REALM, USERS[user]), fingerprint=True)
    return msg.encode(fingerprint=fdp.ConsumeBool())


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    server, opener = make_server()
    now = 1_700_000_000.0
    nonces: dict[int, str] = {}
    for _ in range(fdp.ConsumeIntInRange(1, 24)):
        index = fdp.ConsumeIntInRange(0, len(CLIENTS) - 1)
        five_tuple = CLIENTS[index]
        now += fdp.ConsumeIntInRange(0, 900) / 3.0
        kind = fdp.ConsumeIntInRange(0, 3)
        if kind == 0:
            payload = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 200))
        elif kind == 1:
            payload = b"\x40" + bytes([fdp.ConsumeIntInRange(0, 3)]) + b"\x00\x04abcd"
        else:
            payload = build(fdp, nonces.get(index), NAMES[index % len(NAMES)])
        effects = server.receive(payload, five_tuple, now)
        check_effects(effects)
        for effect in effects:
            data_out = getattr(effect, "data", None)
            if isinstance(data_out, bytes) and data_out[:1] in (b"\x01", b"\x00"):
                answer = decode_untrusted(data_out)
                nonce = answer.get(Attr.NONCE)
                if nonce:
                    nonces[index] = nonce
        if fdp.ConsumeBool() and server.turn is not None:
            for relay in list(opener.bound):
                hop = server.receive_from_peer(relay, PEERS[0], b"x", now)
                assert hop is None or isinstance(hop[1], bytes)
        if fdp.ConsumeIntInRange(0, 7) == 0:
            check_effects(server.connection_closed(CLIENTS[2], now))
        check_effects(server.expire(now))
    check_effects(server.expire(now + 10**6))
    assert server.turn is not None
    assert not server.turn.allocations and not server.turn.ports.reservations
    assert not opener.bound, opener.bound


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
