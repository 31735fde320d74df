"""Codec micro-benchmark: microseconds per parse-and-answer of a Binding request.

Runs the same code the UDP listener runs per datagram (``Server.receive``, the one
entry point), with no sockets, for a few request shapes, and the general decoder on its
own.

    python benchmarks/codec_micro.py [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Callable

from natsrv.core.binding import BindingConfig, BindingService
from natsrv.core.server import Server
from natsrv.stun import Attr, ChangeRequest, Message, MessageClass, Method, decode_untrusted


def per_call_us(fn: Callable[[], object], seconds: float) -> float:
    n = 1000
    while True:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed / n * 1e6
        n *= 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="time per case")
    args = parser.parse_args()
    service = BindingService(
        BindingConfig(("198.51.100.1", 3478), "198.51.100.2", 3479, "natsrv")
    )
    server = Server(dict.fromkeys(service.config.endpoints(), service), counters=Counter())
    receive = server.receive
    src, local = ("203.0.113.7", 40000), ("198.51.100.1", 3478)
    now = time.time()
    plain = Message(Method.BINDING, MessageClass.REQUEST).encode()
    with_fp = Message(Method.BINDING, MessageClass.REQUEST).encode(fingerprint=True)
    with_software = Message(
        Method.BINDING, MessageClass.REQUEST, attributes=[(Attr.SOFTWARE, "client 1.0")]
    ).encode(fingerprint=True)
    change = Message(
        Method.BINDING,
        MessageClass.REQUEST,
        attributes=[(Attr.CHANGE_REQUEST, ChangeRequest(True, True))],
    ).encode()
    classic = Message(Method.BINDING, MessageClass.REQUEST, cookie=False).encode()
    [response] = receive(with_fp, ("udp", src, local), now)
    cases = {
        "receive: Binding, no attributes": lambda: receive(plain, ("udp", src, local), now),
        "receive: Binding + FINGERPRINT": lambda: receive(with_fp, ("udp", src, local), now),
        "receive: Binding + SOFTWARE + FINGERPRINT": lambda: receive(
            with_software, ("udp", src, local), now
        ),
        "receive: CHANGE-REQUEST (RFC 5780)": lambda: receive(change, ("udp", src, local), now),
        "receive: classic RFC 3489 request": lambda: receive(classic, ("udp", src, local), now),
        "decode_untrusted: 6-attribute response": lambda: decode_untrusted(response.data),
    }
    width = max(map(len, cases))
    for name, fn in cases.items():
        print(f"{name:<{width}}  {per_call_us(fn, args.seconds):6.2f} µs")


if __name__ == "__main__":
    main()
