"""Codec micro-benchmark: microseconds per parse-and-answer of a Binding request.

Runs the same code the UDP listener runs per datagram (``BindingService.answer``), with
no sockets, for a few request shapes, and the general decoder and encoder on their own.

    python benchmarks/codec_micro.py [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from natsrv.core.binding import BindingConfig, BindingService
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
    src, local = ("203.0.113.7", 40000), ("198.51.100.1", 3478)
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
    response = service.answer(with_fp, src, local)
    assert response is not None
    cases = {
        "answer: Binding, no attributes": lambda: service.answer(plain, src, local),
        "answer: Binding + FINGERPRINT": lambda: service.answer(with_fp, src, local),
        "answer: Binding + SOFTWARE + FINGERPRINT": lambda: service.answer(
            with_software, src, local
        ),
        "answer: CHANGE-REQUEST (RFC 5780)": lambda: service.answer(change, src, local),
        "answer: classic RFC 3489 request": lambda: service.answer(classic, src, local),
        "decode_untrusted: 6-attribute response": lambda: decode_untrusted(response.data),
    }
    width = max(map(len, cases))
    for name, fn in cases.items():
        print(f"{name:<{width}}  {per_call_us(fn, args.seconds):6.2f} µs")


if __name__ == "__main__":
    main()
