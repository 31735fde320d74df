"""Baseline: the plainest Python STUN Binding responder, a non-blocking socket loop.

docs/architecture.md ("The hot paths") quotes about 180k responses/s on one core for such a
loop; this file is that loop, so ``binding_load.py --only python`` can check the number on
the machine at hand. It waits for readability with ``select.poll``, then drains the socket
with ``recvfrom_into`` into one reused buffer and answers each Binding request at once with a
32-byte success response carrying only XOR-MAPPED-ADDRESS (IPv4). Anything else is ignored.

    python benchmarks/py_baseline_responder.py --listen 127.0.0.1:3478 [--seconds 600]

It stops by itself after ``--seconds`` (or on SIGTERM/SIGINT).
"""

from __future__ import annotations

import argparse
import select
import socket
import struct
import sys
import time

MAGIC = 0x2112A442
BATCH = 256
#: type, length, cookie, then the 12-byte transaction id; then XOR-MAPPED-ADDRESS (IPv4).
RESPONSE_HEAD = struct.Struct("!HHI12sHHBBH4s")


def serve(ip: str, port: int, seconds: float) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    sock.bind((ip, port))
    sock.setblocking(False)
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    buf = bytearray(2048)
    view = memoryview(buf)
    recvfrom_into = sock.recvfrom_into
    sendto = sock.sendto
    pack = RESPONSE_HEAD.pack
    from_bytes = int.from_bytes
    # Source address -> its XOR-ed IPv4 bytes; bounded so a flood of sources cannot grow it.
    xored: dict[str, bytes] = {}
    answered = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not poller.poll(100):
            continue
        for _ in range(BATCH):
            try:
                n, src = recvfrom_into(buf)
            except BlockingIOError:
                break
            except OSError:
                continue
            if n < 20 or buf[0] != 0 or buf[1] != 1 or from_bytes(view[4:8], "big") != MAGIC:
                continue
            host, sport = src
            xip = xored.get(host)
            if xip is None:
                if len(xored) > 4096:
                    xored.clear()
                raw = from_bytes(socket.inet_aton(host), "big") ^ MAGIC
                xip = xored[host] = raw.to_bytes(4, "big")
            out = pack(0x0101, 12, MAGIC, bytes(view[8:20]), 0x0020, 8, 0, 1, sport ^ 0x2112, xip)
            try:
                sendto(out, src)
                answered += 1
            except OSError:
                # Full send buffer (or an ICMP error): drop, as a server would.
                pass
    sock.close()
    print(f"py_baseline_responder: answered {answered}", file=sys.stderr)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:3478", help="IPv4 IP:PORT")
    parser.add_argument("--seconds", type=float, default=600.0, help="stop after this long")
    args = parser.parse_args()
    ip, _, port = args.listen.rpartition(":")
    return serve(ip, int(port), args.seconds)


if __name__ == "__main__":
    sys.exit(main())
