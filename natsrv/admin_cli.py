"""``natsrv user ...``, ``natsrv sessions`` and ``natsrv drain``: the operator's commands.

* ``natsrv user add|passwd|delete|list`` changes the SQLite user database (``--user-db``);
  a running server sees the change on its next request. A password is read from standard
  input when it is not a terminal, else prompted for twice without echo; it never goes
  on the command line.
* ``natsrv sessions --metrics-url URL`` prints the live allocations of a server's admin
  listener as a table (``--json`` for the JSON it serves).
* ``natsrv drain --metrics-url URL`` starts draining (``POST /drain``), as the first
  SIGTERM does.

Errors are one line on standard error and exit status 2 (usage, a missing database, a
duplicate or unknown user) or 1 (the server could not be reached).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any, NoReturn

from .userdb import UserDbError, add_user, delete_user, list_users, set_password

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _read_password(name: str) -> str:
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    first = getpass.getpass(f"password for {name}: ")
    second = getpass.getpass("again: ")
    if first != second:
        raise UserDbError("user: the two passwords differ")
    return first


def user_main(argv: Sequence[str]) -> int:
    parser = _Parser(prog="natsrv user", description="manage the TURN user database")
    sub = parser.add_subparsers(dest="action", required=True, parser_class=_Parser)
    for action, help_text in (("add", "add a user (password from stdin or a prompt)"),
                              ("passwd", "change a user's password"),
                              ("delete", "delete a user")):  # fmt: skip
        p = sub.add_parser(action, help=help_text)
        p.add_argument("name", metavar="NAME")
        p.add_argument("--realm", default="natsrv", help="the user's realm (default: natsrv)")
        p.add_argument("--user-db", required=True, metavar="PATH", help="SQLite database")
    p = sub.add_parser("list", help="list users and realms (never keys)")
    p.add_argument("--user-db", required=True, metavar="PATH", help="SQLite database")
    args = parser.parse_args(list(argv))
    try:
        if args.action == "list":
            for name, realm in list_users(args.user_db):
                print(f"{name}\t{realm}")
        elif args.action == "delete":
            delete_user(args.user_db, args.name, args.realm)
        else:
            password = _read_password(args.name)
            change = add_user if args.action == "add" else set_password
            change(args.user_db, args.name, args.realm, password)
    except UserDbError as exc:
        print(f"natsrv: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (EOFError, KeyboardInterrupt):
        print("natsrv: user: no password given", file=sys.stderr)
        return EXIT_USAGE
    return 0


def _fetch_sessions(url: str) -> list[dict[str, Any]]:
    target = url.rstrip("/") + "/sessions"
    with urllib.request.urlopen(target, timeout=5) as response:  # noqa: S310 - operator's URL
        data: dict[str, Any] = json.loads(response.read())
    sessions: list[dict[str, Any]] = data["sessions"]
    return sessions


def sessions_main(argv: Sequence[str]) -> int:
    parser = _Parser(prog="natsrv sessions", description="list a server's live allocations")
    parser.add_argument("--metrics-url", required=True, metavar="URL",
                        help="the admin listener, e.g. http://127.0.0.1:9641")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the JSON the server serves")
    parser.add_argument("--ascii", action="store_true", help="plain ASCII table")
    args = parser.parse_args(list(argv))
    if not args.metrics_url.startswith(("http://", "https://")):
        parser.error(f"--metrics-url: not an http(s) URL: {args.metrics_url!r}")
    try:
        sessions = _fetch_sessions(args.metrics_url)
    except (OSError, ValueError, KeyError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"natsrv: sessions: cannot read {args.metrics_url}: {reason}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"sessions": sessions}, indent=1))
        return 0
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(sessions)} allocations",
                  box=box.ASCII if args.ascii or not sys.stdout.isatty() else box.SQUARE)
    workers = any("worker" in s for s in sessions)  # a server with --workers above 1
    for column in ("user", "client", "relays", "peers", "channels", "age", "left",
                   "to peer", "to client", *(["worker"] if workers else [])):  # fmt: skip
        table.add_column(column)
    for s in sessions:
        table.add_row(
            s["username"], f"{s['transport']} {s['client']}",
            " ".join(r["public"] for r in s["relays"]), str(len(s["permissions"])),
            str(len(s["channels"])), f"{s['age_s']:.0f} s", f"{s['lifetime_left_s']:.0f} s",
            f"{s['to_peer']['packets']} pkt / {s['to_peer']['bytes']} B",
            f"{s['to_client']['packets']} pkt / {s['to_client']['bytes']} B",
            *([f"{s.get('worker')} (pid {s.get('worker_pid')})"] if workers else []),
        )  # fmt: skip
    Console(width=160).print(table)
    return 0


def drain_main(argv: Sequence[str]) -> int:
    parser = _Parser(prog="natsrv drain", description="stop taking new allocations")
    parser.add_argument("--metrics-url", required=True, metavar="URL",
                        help="the admin listener, e.g. http://127.0.0.1:9641")  # fmt: skip
    args = parser.parse_args(list(argv))
    if not args.metrics_url.startswith(("http://", "https://")):
        parser.error(f"--metrics-url: not an http(s) URL: {args.metrics_url!r}")
    url = args.metrics_url.rstrip("/") + "/drain"  # http(s) only, checked above
    request = urllib.request.Request(url, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            print(response.read().decode().strip())
    except OSError as exc:
        print(f"natsrv: drain: cannot reach {args.metrics_url}: {getattr(exc, 'reason', exc)}",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


def ping_main(argv: Sequence[str]) -> int:
    """Send one Binding request; exit 0 if the answer comes (a container health check)."""
    import secrets
    import socket

    from .config import ConfigError, parse_endpoint
    from .stun import Attr, MessageClass, Method, ParseError, decode_untrusted
    from .stun.message import encode_message

    parser = _Parser(prog="natsrv ping", description="send one STUN Binding request")
    parser.add_argument("server", metavar="IP[:PORT]", help="default port 3478")
    parser.add_argument("--timeout", type=float, default=2.0, metavar="SECONDS")
    args = parser.parse_args(list(argv))
    try:
        ip, port = parse_endpoint("server", args.server)
    except ConfigError as exc:
        parser.error(str(exc))
    tid = secrets.token_bytes(12)
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(args.timeout)
        try:
            sock.sendto(encode_message(Method.BINDING, MessageClass.REQUEST, tid, []), (ip, port))
            while True:
                data, _ = sock.recvfrom(2048)
                try:
                    answer = decode_untrusted(data)
                except ParseError:
                    continue
                if answer.transaction_id == tid and answer.cls == MessageClass.SUCCESS:
                    mapped = answer.get(Attr.XOR_MAPPED_ADDRESS)
                    print(f"{ip}:{port} answered: mapped address {mapped[0]}:{mapped[1]}")
                    return 0
        except OSError as exc:  # a timeout or ICMP unreachable
            print(f"natsrv: ping: no answer from {ip}:{port}: {exc}", file=sys.stderr)
            return 1


__all__ = ["drain_main", "ping_main", "sessions_main", "user_main"]
