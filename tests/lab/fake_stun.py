"""A limited or misbehaving STUN server for the classifier's tests, built on natsrv's
own codec (``natsrv.stun``). Each mode models a kind of server found in the wild:

==================  ===================================================================
``full``            RFC 5780 done right (like natsrv): four endpoints, OTHER-ADDRESS,
                    RESPONSE-ORIGIN, CHANGE-REQUEST and RESPONSE-PORT honoured.
``ignore-change``   A server that advertises an alternate (and answers there) but ignores
                    CHANGE-REQUEST: every reply leaves from the socket that got the request
                    (a one-socket-per-address server whose operator never wired the
                    change logic, or a load balancer in front of an RFC 5780 server).
``reject-change``   Advertises and serves its alternate, but answers CHANGE-REQUEST with
                    420 (RFC 5780 §6.1 lets a server refuse; e.g. disabled by policy).
``xor-only``        An RFC 5389 server without RFC 5780: one endpoint, only
                    XOR-MAPPED-ADDRESS (no MAPPED-ADDRESS, no OTHER-ADDRESS), and 420 with
                    UNKNOWN-ATTRIBUTES for CHANGE-REQUEST, an attribute it does not know
                    (RFC 8489 §7.3.1). A cookie-less request gets MAPPED-ADDRESS only
                    (RFC 5389 §12.2 backwards compatibility).
``classic-only``    An RFC 3489 server that silently drops requests with the magic cookie
                    and answers cookie-less ones RFC 3489-style (MAPPED-ADDRESS,
                    SOURCE-ADDRESS, CHANGED-ADDRESS), honouring CHANGE-REQUEST.
``alt-unreachable`` Advertises an alternate address it does not serve (a second address
                    configured but firewalled, or a private one behind the server's NAT):
                    only the primary endpoint answers, and CHANGE-REQUEST replies, which
                    would leave from the alternate, never arrive.
``alg``             Like ``full``, but MAPPED-ADDRESS carries ``--legacy-ip`` in place of
                    the real address, as an ALG rewriting plain addresses in transit does;
                    XOR-MAPPED-ADDRESS stays right.
==================  ===================================================================

``--mapped-ip`` reports that IP in every mapped address (e.g. a carrier-grade NAT's
100.64.0.0/10 address, as seen by a server inside the carrier's network).

Run as a script (``python fake_stun.py --mode M --primary IP:PORT --alternate IP:PORT``)
it prints ``ready`` on stdout once every socket is bound; tests on loopback start
:func:`serve_fake` in their own trio run instead.
"""

from __future__ import annotations

import argparse
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import trio

if __package__ in (None, ""):  # run as a script inside a lab namespace
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from natsrv.stun import (
    Attr,
    ChangeRequest,
    ErrorCodeValue,
    MessageClass,
    Method,
    ParseError,
    decode_untrusted,
)

Endpoint = tuple[str, int]
MODES = ("full", "ignore-change", "reject-change", "xor-only", "classic-only",
         "alt-unreachable", "alg")


@dataclass(frozen=True)
class FakeConfig:
    """``primary`` and ``alternate`` (IP and port differing from the primary's); the
    server binds every combination of their IPs and ports unless the mode says not."""

    mode: str
    primary: Endpoint
    alternate: Endpoint | None = None
    mapped_ip: str | None = None
    legacy_ip: str = "192.0.2.99"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}")
        if self.mode not in ("xor-only",) and self.alternate is None:
            raise ValueError(f"mode {self.mode} needs an alternate address")

    def endpoints(self) -> list[Endpoint]:
        if self.mode in ("xor-only", "alt-unreachable") or self.alternate is None:
            return [self.primary]
        (ip1, port1), (ip2, port2) = self.primary, self.alternate
        return [(ip1, port1), (ip1, port2), (ip2, port1), (ip2, port2)]

    def other(self, at: Endpoint) -> Endpoint | None:
        """OTHER-ADDRESS / CHANGED-ADDRESS for a request received at ``at``."""
        if self.alternate is None or self.mode == "xor-only":
            return None
        if self.mode == "alt-unreachable":
            return self.alternate
        return self.changed(at, True, True)

    def changed(self, at: Endpoint, change_ip: bool, change_port: bool) -> Endpoint:
        assert self.alternate is not None
        (ip1, port1), (ip2, port2) = self.primary, self.alternate
        ip, port = at
        if change_ip:
            ip = ip2 if ip == ip1 else ip1
        if change_port:
            port = port2 if port == port1 else port1
        return ip, port


def answer(config: FakeConfig, data: bytes, src: Endpoint, at: Endpoint
           ) -> tuple[bytes, Endpoint, Endpoint] | None:
    """(reply bytes, destination, local endpoint to send from), or None to stay silent."""
    try:
        msg = decode_untrusted(data)
    except ParseError:
        return None
    if msg.method != Method.BINDING or msg.cls != MessageClass.REQUEST:
        return None
    mode = config.mode
    if mode == "classic-only" and msg.cookie:
        return None
    change: ChangeRequest = msg.get(Attr.CHANGE_REQUEST) or ChangeRequest()
    flagged = change.change_ip or change.change_port
    software = (Attr.SOFTWARE, f"fake-stun {mode}")
    if flagged and mode in ("xor-only", "reject-change"):
        attrs: list[tuple[int, object]] = [
            (Attr.ERROR_CODE, ErrorCodeValue(420, "Unknown Attribute")), software]
        if mode == "xor-only":
            attrs.insert(1, (Attr.UNKNOWN_ATTRIBUTES, (int(Attr.CHANGE_REQUEST),)))
        return msg.reply(MessageClass.ERROR, attrs).encode(), src, at
    if flagged and mode == "alt-unreachable":
        return None  # it would leave from the alternate, which nothing serves
    via = at
    if flagged and mode not in ("ignore-change",):
        via = config.changed(at, change.change_ip, change.change_port)
    dest = src
    response_port = msg.get(Attr.RESPONSE_PORT)
    if response_port is not None and mode in ("full", "alg"):
        dest = (src[0], response_port)
    mapped = (config.mapped_ip or src[0], src[1])
    other = config.other(at)
    attrs = []
    if msg.cookie:
        attrs.append((Attr.XOR_MAPPED_ADDRESS, mapped))
        if mode == "alg":
            attrs.append((Attr.MAPPED_ADDRESS, (config.legacy_ip, mapped[1])))
        elif mode != "xor-only":
            attrs.append((Attr.MAPPED_ADDRESS, mapped))
        if mode != "xor-only":
            attrs.append((Attr.RESPONSE_ORIGIN, via))
        if other is not None:
            attrs.append((Attr.OTHER_ADDRESS, other))
    else:
        attrs.append((Attr.MAPPED_ADDRESS, mapped))
        if mode != "xor-only":
            attrs.append((Attr.SOURCE_ADDRESS, via))
        if other is not None:
            attrs.append((Attr.CHANGED_ADDRESS, other))
    attrs.append(software)
    return msg.reply(MessageClass.SUCCESS, attrs).encode(), dest, via


def _family(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


async def serve_fake(config: FakeConfig, *,
                     task_status: trio.TaskStatus[list[Endpoint]] = trio.TASK_STATUS_IGNORED
                     ) -> None:
    """Serve until cancelled; ``started`` with the bound endpoints."""
    socks: dict[Endpoint, trio.socket.SocketType] = {}
    try:
        for ep in config.endpoints():
            sock = trio.socket.socket(_family(ep[0]), socket.SOCK_DGRAM)
            await sock.bind(ep)
            socks[ep] = sock

        async def serve_one(at: Endpoint, sock: trio.socket.SocketType) -> None:
            while True:
                data, src = await sock.recvfrom(2048)
                out = answer(config, data, (src[0], src[1]), at)
                if out is None:
                    continue
                reply, dest, via = out
                sender = socks.get(via)
                if sender is not None:
                    await sender.sendto(reply, dest)

        async with trio.open_nursery() as nursery:
            for at, sock in socks.items():
                nursery.start_soon(serve_one, at, sock)
            task_status.started(list(socks))
    finally:
        for sock in socks.values():
            sock.close()


def _endpoint(text: str) -> Endpoint:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def main() -> int:
    ap = argparse.ArgumentParser(description="a limited STUN server for tests")
    ap.add_argument("--mode", choices=MODES, required=True)
    ap.add_argument("--primary", type=_endpoint, required=True)
    ap.add_argument("--alternate", type=_endpoint)
    ap.add_argument("--mapped-ip")
    ap.add_argument("--lifetime", type=float, default=120.0,
                    help="exit after this many seconds, so a crashed test leaves nothing")
    args = ap.parse_args()
    config = FakeConfig(args.mode, args.primary, args.alternate, args.mapped_ip)

    async def run() -> None:
        with trio.move_on_after(args.lifetime):
            async with trio.open_nursery() as nursery:
                await nursery.start(serve_fake, config)
                print("ready", flush=True)

    trio.run(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
