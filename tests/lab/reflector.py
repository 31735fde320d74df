"""UDP reflector for the NAT lab self-test (run inside the "pub" namespace).

Listens on every ``--ip`` x ``--port`` pair, prints ``ready`` once all are bound, and
answers each JSON request ``{"id": ..., "reply_from": [ip, port] | null,
"reply_to": [ip, port] | null, "marker": bool}`` with ``{"id", "kind": "reply",
"seen": [ip, port] (the request's source), "at": [ip, port] (where it arrived),
"from": [ip, port] (where the reply leaves)}``, sent from ``reply_from`` (one of its own
sockets) to ``reply_to`` (default: the request's source). With ``marker`` it then sends
``{"id", "kind": "marker", ...}`` straight back from the receiving socket, so a client
knows its request arrived and the reply (if it was let through) came first.

Exits after ``--lifetime`` seconds, so that a crashed test run leaves nothing behind.
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import sys
import time

Addr = tuple[str, int]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ip", action="append", required=True)
    ap.add_argument("--port", action="append", type=int, required=True)
    ap.add_argument("--lifetime", type=float, default=300.0)
    args = ap.parse_args()

    socks: dict[Addr, socket.socket] = {}
    sel = selectors.DefaultSelector()
    for ip in args.ip:
        for port in args.port:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((ip, port))
            socks[(ip, port)] = s
            sel.register(s, selectors.EVENT_READ, (ip, port))
    print("ready", flush=True)

    deadline = time.monotonic() + args.lifetime
    while (left := deadline - time.monotonic()) > 0:
        for key, _ in sel.select(left):
            at: Addr = key.data
            data, src = socks[at].recvfrom(4096)
            try:
                req = json.loads(data)
                reply_from = tuple(req["reply_from"]) if req.get("reply_from") else at
                reply_to = tuple(req["reply_to"]) if req.get("reply_to") else src
                out = socks[reply_from]  # type: ignore[index]
            except (ValueError, KeyError, TypeError) as exc:
                print(f"reflector: bad request from {src}: {exc}", file=sys.stderr, flush=True)
                continue
            base = {"id": req.get("id"), "seen": list(src), "at": list(at)}
            out.sendto(json.dumps({**base, "kind": "reply", "from": list(reply_from)}).encode(),
                       reply_to)
            if req.get("marker"):
                socks[at].sendto(json.dumps({**base, "kind": "marker", "from": list(at)})
                                 .encode(), src)
    return 0


if __name__ == "__main__":
    sys.exit(main())
