"""The peer-policy matrix: every path that names a peer, against every way of writing
an address the relay must never reach (SSRF: loopback, cloud metadata, private
networks, the server itself), through the real TURN core.

``python -m tests.core.ssrf_matrix`` prints it as the README's table;
``tests/core/test_ssrf.py`` requires every cell to be refused.
"""

from __future__ import annotations

from natsrv.stun import Attr, MessageClass

from .turn_helpers import NOW, PUBLIC_IP, RELAY_IP, SERVER, Client, error_code, make_server

RELAY_IP6_PRIVATE = "2001:4860::5"

#: (what it is, how it is written)
TARGETS: list[tuple[str, str]] = [
    ("loopback", "127.0.0.1"),
    ("loopback", "127.254.0.9"),
    ("loopback", "::1"),
    ("unspecified", "0.0.0.0"),
    ("unspecified", "::"),
    ("IPv4-mapped loopback", "::ffff:127.0.0.1"),
    ("IPv4-mapped private", "::ffff:10.0.0.1"),
    ("IPv4-compatible loopback", "::127.0.0.1"),
    ("6to4 of loopback", "2002:7f00:1::1"),
    ("6to4 of private", "2002:a00:1::1"),
    ("NAT64 of loopback", "64:ff9b::7f00:1"),
    ("NAT64 of cloud metadata", "64:ff9b::a9fe:a9fe"),
    ("Teredo of loopback", "2001:0:4136:e378:8000:63bf:80ff:fffe"),
    ("cloud metadata", "169.254.169.254"),
    ("link-local", "169.254.1.1"),
    ("link-local", "fe80::1"),
    ("multicast", "224.0.0.1"),
    ("multicast", "ff02::1"),
    ("broadcast", "255.255.255.255"),
    ("the server's listener", SERVER[0]),
    ("the server's relay address", RELAY_IP),
    ("private (RFC 1918)", "10.0.0.1"),
    ("private (RFC 1918)", "172.16.0.1"),
    ("private (RFC 1918)", "192.168.1.1"),
    ("carrier-grade NAT", "100.64.0.1"),
    ("unique local", "fc00::1"),
]
PATHS = ("CreatePermission", "ChannelBind", "Send", "inbound data")


def refused(path: str, ip: str) -> bool:
    """True if the relay refuses to reach ``ip`` (port 5000) through ``path``."""
    server, _ = make_server(relay_ips=(RELAY_IP, RELAY_IP6_PRIVATE),
                            external_ip=(PUBLIC_IP, RELAY_IP))  # fmt: skip
    client = Client(server)
    answer, _ = client.allocate((Attr.ADDITIONAL_ADDRESS_FAMILY, 0x02))
    assert answer.cls == MessageClass.SUCCESS
    relays = {r[0]: r for r in answer.get_all(Attr.XOR_RELAYED_ADDRESS)}
    peer = (ip, 5000)
    if path == "CreatePermission":
        return error_code(client.permit(peer)) in (403, 443)
    if path == "ChannelBind":
        return error_code(client.bind(0x4000, peer)) in (403, 443)
    # Send and inbound data: after the client asked for a permission and a channel in
    # every way it could (refused for a forbidden peer, granted for an allowed one).
    client.permit(peer)
    client.bind(0x4001, peer)
    if path == "Send":
        return client.send(peer, b"x") == []
    for public in relays.values():
        private = (RELAY_IP if ":" not in public[0] else RELAY_IP6_PRIVATE, public[1])
        if server.peer_to_client(private, peer, 1, NOW) is not None:
            return False
    return True


def table() -> str:
    lines = ["| target | address | " + " | ".join(PATHS) + " |",
             "|---|---|" + "---|" * len(PATHS)]  # fmt: skip
    for what, ip in TARGETS:
        cells = ["refused" if refused(path, ip) else "**RELAYED**" for path in PATHS]
        lines.append(f"| {what} | `{ip}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
