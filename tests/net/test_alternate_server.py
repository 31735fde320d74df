"""300 Try Alternate from a real server (RFC 8489 §10): at ``max-allocations``, and
for every new allocation with ``redirect-all`` switched on and off by a reload (what
SIGHUP does), while an existing allocation keeps working; the alternate is the one of
the client's family, and a server never names itself."""

from __future__ import annotations

from dataclasses import replace

import trio

from natsrv.stun import Attr, MessageClass, Method, verify_integrity
from natsrv.stun.integrity import long_term_key
from tests.conftest import PRIMARY_IP, start_server
from tests.net.test_turn_server import REALM, TurnClient, code_of, turn_config

ALT4 = ("198.51.100.9", 3478)
ALT6 = ("2001:db8::9", 3478)


async def _client(server: tuple[str, int]) -> TurnClient:
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sock.bind((PRIMARY_IP, 0))
    return TurnClient(sock, server, "alice", "wonderland")


async def test_a_full_server_redirects_to_the_alternate(nursery: trio.Nursery) -> None:
    info = await start_server(nursery, turn_config(max_allocations=1,
                                                   alternate_server=(ALT6, ALT4)))  # fmt: skip
    first = await _client(info.udp[0])
    await first.allocate()
    second = await _client(info.udp[0])
    reply = await second.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, 17))
    assert code_of(reply) == 300
    assert reply.get_all(Attr.ALTERNATE_SERVER) == [ALT4]
    # Authenticated, so the redirection cannot be forged by someone on the path.
    assert verify_integrity(reply, long_term_key("alice", REALM, "wonderland"))
    # Room again: the next Allocate is served here.
    assert (await first.request(Method.REFRESH, (Attr.LIFETIME, 0))).cls == MessageClass.SUCCESS
    await second.allocate()
    for c in (first, second):
        c.sock.close()


async def test_redirect_all_is_switched_by_a_reload(nursery: trio.Nursery) -> None:
    config = turn_config(alternate_server=(ALT4,))
    info = await start_server(nursery, config)
    old = await _client(info.udp[0])
    await old.allocate()
    assert info.reload(replace(config, redirect_all=True).validate()) == []
    new = await _client(info.udp[0])
    reply = await new.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, 17))
    assert code_of(reply) == 300 and reply.get(Attr.ALTERNATE_SERVER) == ALT4
    reply = await old.request(Method.REFRESH, (Attr.LIFETIME, 600))
    assert reply.cls == MessageClass.SUCCESS  # live allocations run on
    # A server that lists itself as the alternate answers 508, never a loop to itself.
    info.reload(replace(config, redirect_all=True, alternate_server=(info.udp[0],)).validate())
    reply = await new.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, 17))
    assert code_of(reply) == 508
    info.reload(config)
    await new.allocate()
    for c in (old, new):
        c.sock.close()
