"""The ``natsrv`` command: ``serve``, ``classify``, ``credentials``, ``user``,
``sessions``, ``drain``, ``ping``.

Exit codes: 0 success; 2 bad usage or configuration, with one line naming
the problem; 3 classify was inconclusive; 1 any other failure.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from . import __version__
from .config import Config, ConfigError, add_flags, build_config, load_toml, values_from_flags

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the problem, and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _serve_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve", help="run the STUN/TURN server",
        description="Run the STUN/TURN server. Every flag is also a key of the TOML file "
                    "(its name without the dashes); flags win over the file.",
    )
    p.add_argument("--config", metavar="FILE", help="TOML configuration file")
    add_flags(p)


def config_from_args(args: argparse.Namespace) -> Config:
    file_values = load_toml(args.config) if args.config else {}
    return build_config(file_values, values_from_flags(args))


def run_serve(args: argparse.Namespace, argv: Sequence[str] = ()) -> int:
    """``natsrv serve``; ``argv`` are its arguments (given again to worker processes)."""
    from . import daemon, logs
    from .fdlimit import SPARE_FILES, raise_nofile_limit
    from .net.workers import WORKER_ENV
    from .userdb import UserDbError

    try:
        config = config_from_args(args)
    except ConfigError as exc:
        return _usage_problem(f"config: {exc}")
    logs.configure(config.log_level, config.log_format)
    # One relay socket per allocation and one descriptor per TCP/TLS client (a worker
    # process has its parent's limit, raised and warned about there).
    if WORKER_ENV not in os.environ:
        raise_nofile_limit(
            (config.max_allocations if config.turn_enabled else 0)
            + (config.tcp_max_connections if config.tcp or config.tls_enabled else 0)
            + SPARE_FILES
        )
    try:
        return daemon.run(config, lambda: config_from_args(args), argv)
    except UserDbError as exc:
        return _usage_problem(str(exc))


def run_credentials(args: argparse.Namespace) -> int:
    import json
    import time

    from .config import split_secrets
    from .core.credentials import rest_credentials

    signing = split_secrets(args.auth_secret or "")  # a rotation file's first line signs
    if not signing:
        return _usage_problem("credentials: auth-secret: is empty")
    if not args.ttl > 0:
        return _usage_problem(f"credentials: ttl: must be at least 1 second: {args.ttl}")
    try:
        username, password = rest_credentials(signing[0], args.user, args.ttl, time.time())
    except ValueError as exc:  # a user name that is not UTF-8
        return _usage_problem(f"credentials: user: {exc}")
    server: dict[str, Any] = {"username": username, "credential": password}
    if args.uri:
        server = {"urls": args.uri, **server}
    print(json.dumps({"username": username, "password": password, "ttl": args.ttl,
                      "iceServers": [server]}, indent=2))
    return 0


def _usage_problem(line: str) -> int:
    print(f"natsrv: {line}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _Parser(prog="natsrv", description="STUN/TURN server and NAT-type classifier")
    parser.add_argument("--version", action="version", version=f"natsrv {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _serve_parser(sub)
    sub.add_parser("classify", help="classify the NAT in front of this host", add_help=False)
    sub.add_parser("user", help="manage the TURN user database", add_help=False)
    sub.add_parser("sessions", help="list a server's live allocations", add_help=False)
    sub.add_parser("drain", help="stop a server taking new allocations", add_help=False)
    sub.add_parser("ping", help="send one STUN Binding request", add_help=False)
    cred = sub.add_parser("credentials", help="print TURN REST credentials")
    cred.add_argument("--auth-secret", required=True, metavar="SECRET")
    cred.add_argument("--user", default=None, metavar="NAME")
    cred.add_argument("--ttl", type=int, default=86400, metavar="SECONDS")
    cred.add_argument("--uri", action="append", metavar="turn:HOST[:PORT]")
    if not argv:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if argv[0] == "classify":
        from classifier.cli import main as classify_main

        return classify_main(argv[1:])
    if argv[0] in ("user", "sessions", "drain", "ping"):
        from . import admin_cli

        commands = {"user": admin_cli.user_main, "sessions": admin_cli.sessions_main,
                    "drain": admin_cli.drain_main, "ping": admin_cli.ping_main}  # fmt: skip
        return commands[argv[0]](argv[1:])
    args = parser.parse_args(argv)
    if args.command == "serve":
        return run_serve(args, argv[1:])
    if args.command == "credentials":
        return run_credentials(args)
    parser.error(f"unknown command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
