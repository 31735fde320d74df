"""Reflection gain: what each unauthenticated, spoofable request gets back, at the IP level.

Starts natsrv and coturn (Debian's 4.6.1 and, with ``--coturn-new``, a newer build) on
loopback with their default settings (plus one user, so TURN answers; natsrv once more
with an alternate address, as an RFC 5780 server runs), sends each
request below once from a fresh UDP socket and adds up every datagram that comes back
within ``--wait`` seconds, from any source. The gain is (28 + answer bytes) / (28 +
request bytes): IPv4 and UDP headers included, what a victim of a spoofed source
address receives per byte the attacker sends.

    python benchmarks/amplification.py [--coturn-new /path/to/turnserver] [--json]
"""

from __future__ import annotations

import argparse
import json
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import binding_load as bl  # noqa: E402

from natsrv.stun import Attr, ChangeRequest, MessageClass, Method  # noqa: E402
from natsrv.stun.integrity import long_term_key  # noqa: E402
from natsrv.stun.message import encode_message  # noqa: E402

IP = "127.0.0.1"
ALT_IP = "127.0.0.2"
IP_UDP = 28  #: IPv4 and UDP headers


def _msg(method: int, attrs: list[tuple[int, object]], *, cls: int = MessageClass.REQUEST,
         fingerprint: bool = False, cookie: bool = True) -> bytes:  # fmt: skip
    tid = secrets.token_bytes(12 if cookie else 16)
    return encode_message(method, cls, tid, attrs, fingerprint=fingerprint, cookie=cookie)


#: name -> a fresh request (a new transaction ID each time)
REQUESTS: dict[str, Callable[[], bytes]] = {
    "Binding": lambda: _msg(Method.BINDING, []),
    "Binding + FINGERPRINT": lambda: _msg(Method.BINDING, [], fingerprint=True),
    "Binding, RFC 3489 (no cookie)": lambda: _msg(Method.BINDING, [], cookie=False),
    "Binding + CHANGE-REQUEST (ip, port)": lambda: _msg(
        Method.BINDING, [(Attr.CHANGE_REQUEST, ChangeRequest(True, True))]
    ),
    "Binding + RESPONSE-PORT": lambda: _msg(Method.BINDING, [(Attr.RESPONSE_PORT, 0)]),
    "Binding + PADDING 64": lambda: _msg(Method.BINDING, [(Attr.PADDING, bytes(64))]),
    "Binding + unknown required attribute (420)": lambda: _msg(
        Method.BINDING, [(0x0031, b"abcd")]
    ),
    "Allocate, browser's first (REQUESTED-TRANSPORT, FINGERPRINT)": lambda: _msg(
        Method.ALLOCATE, [(Attr.REQUESTED_TRANSPORT, 17)], fingerprint=True
    ),
    "Allocate, bare": lambda: _msg(Method.ALLOCATE, []),
    "Allocate with a bogus signature": lambda: _msg(
        Method.ALLOCATE, [(Attr.REQUESTED_TRANSPORT, 17), (Attr.USERNAME, "u"),
                          (Attr.REALM, "r"), (Attr.NONCE, "bogus"),
                          (Attr.MESSAGE_INTEGRITY, bytes(20))],
    ),
    "Refresh": lambda: _msg(Method.REFRESH, []),
    "CreatePermission": lambda: _msg(Method.CREATE_PERMISSION, [(Attr.XOR_PEER_ADDRESS,
                                                                 ("192.0.2.1", 9))]),
    "ChannelBind": lambda: _msg(Method.CHANNEL_BIND, [(Attr.CHANNEL_NUMBER, 0x4000),
                                                      (Attr.XOR_PEER_ADDRESS, ("192.0.2.1", 9))]),
    "Send indication": lambda: _msg(Method.SEND, [(Attr.XOR_PEER_ADDRESS, ("192.0.2.1", 9)),
                                                  (Attr.DATA, b"x")], cls=MessageClass.INDICATION),
    "Connect (RFC 6062)": lambda: _msg(Method.CONNECT, [(Attr.XOR_PEER_ADDRESS,
                                                         ("192.0.2.1", 9))]),
    "ChannelData to an unbound channel": lambda: b"\x40\x00\x00\x04abcd",
    "Binding + malformed CHANGE-REQUEST (400 or dropped)": lambda: (
        b"\x00\x01\x00\x08\x21\x12\xa4\x42" + secrets.token_bytes(12)
        + b"\x00\x03\x00\x02\x00\x06\x00\x00"
    ),
    # Needs a real account (anyone who can sign up for a TURN service has one): a
    # signed Allocate with a nonce the server never issued gets 438 and a fresh nonce.
    "Allocate signed by a real user, bogus nonce (438)": lambda: b"",  # built per server
}

#: The realm each server runs with (the 438 row signs with the user's key in it).
REALMS = {"natsrv": "natsrv", "coturn": "r"}


def signed_bogus_nonce(realm: str) -> bytes:
    attrs: list[tuple[int, object]] = [
        (Attr.REQUESTED_TRANSPORT, 17), (Attr.USERNAME, "u"), (Attr.REALM, realm),
        (Attr.NONCE, "obMatJos2AAAB" + "0" * 32),
    ]  # fmt: skip
    return encode_message(Method.ALLOCATE, MessageClass.REQUEST, secrets.token_bytes(12), attrs,
                          key=long_term_key("u", realm, "p"), fingerprint=True)  # fmt: skip


def measure(port: int, wait: float, realm: str) -> dict[str, tuple[int, int]]:
    """name -> (request bytes, answer bytes) against the server on ``IP:port``."""
    out = {}
    for name, make in REQUESTS.items():
        request = make() or signed_bogus_nonce(realm)
        received = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((IP, 0))
            if name == "Binding + RESPONSE-PORT":  # aim the answer back at this socket
                request = _msg(Method.BINDING, [(Attr.RESPONSE_PORT, sock.getsockname()[1])])
            sock.sendto(request, (IP, port))
            deadline = time.monotonic() + wait
            for _ in range(8):  # bounded: at most a few answers are expected
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                sock.settimeout(left)
                try:
                    data, _ = sock.recvfrom(65535)
                except (TimeoutError, ConnectionRefusedError):
                    break
                received += len(data)
        out[name] = (len(request), received)
    return out


def start(argv: list[str], port: int, tmp: str) -> subprocess.Popen[bytes]:
    argv = [part.format(tmp=tmp) for part in argv]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        bl.wait_ready(proc, IP, port, 10.0)
    except BaseException:
        bl.stop(proc)
        raise
    return proc


def servers(args: argparse.Namespace) -> dict[str, Callable[[int], list[str]]]:
    natsrv = [sys.executable, "-m", "natsrv", "serve", "--user", "u:p", "--log-level", "warning"]
    out: dict[str, Callable[[int], list[str]]] = {
        "natsrv": lambda port: [*natsrv, "--listen", f"{IP}:{port}"],
        "natsrv, RFC 5780 (--alt-ip, --alt-port)": lambda port: [
            *natsrv, "--listen", f"{IP}:{port}", "--alt-ip", ALT_IP, "--alt-port", str(port + 1)
        ],
    }
    coturns = [("coturn 4.6.1", args.coturn)] + (
        [("coturn new", args.coturn_new)] if args.coturn_new else []
    )
    for label, exe in coturns:
        out[label] = lambda port, exe=exe: [
            exe, "-n", "--listening-ip", IP, "--listening-port", str(port),
            "--user", "u:p", "--realm", "r", "--lt-cred-mech", "--no-cli",
            "--no-tls", "--no-dtls", "--pidfile", "{tmp}/turnserver.pid",
            "--userdb", "{tmp}/turndb", "--log-file", "stdout",
        ]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coturn", default="turnserver", help="coturn 4.6.1 executable")
    parser.add_argument("--coturn-new", help="a newer coturn's turnserver, e.g. 4.17.1")
    parser.add_argument("--wait", type=float, default=0.3, help="seconds to collect answers")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    table: dict[str, dict[str, tuple[int, int]]] = {}
    for label, command in servers(args).items():
        port = bl.free_port(IP)
        with tempfile.TemporaryDirectory(prefix="natsrv-amp-") as tmp:
            proc = start(command(port), port, tmp)
            try:
                realm = REALMS["coturn" if label.startswith("coturn") else "natsrv"]
                table[label] = measure(port, args.wait, realm)
            finally:
                bl.stop(proc)
    if args.json:
        print(json.dumps(table, indent=1))
        return 0
    labels = list(table)
    print("| request | bytes | " + " | ".join(f"{label}: answer, gain" for label in labels) + " |")
    print("|---|---:|" + "---:|" * len(labels))
    worst = dict.fromkeys(labels, 0.0)
    for name in REQUESTS:
        size = max(table[label][name][0] for label in labels)
        cells = []
        for label in labels:
            req, answer = table[label][name]
            gain = (IP_UDP + answer) / (IP_UDP + req) if answer else 0.0
            worst[label] = max(worst[label], gain)
            cells.append(f"{answer} B, {gain:.2f}x" if answer else "no answer")
        print(f"| {name} | {size} | " + " | ".join(cells) + " |")
    print("| **worst case** | | " + " | ".join(f"**{worst[lb]:.2f}x**" for lb in labels) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
