"""The ``natsrv`` command: ``serve``, ``classify``, ``credentials``.

Exit codes (DESIGN.md): 0 success; 2 bad usage or configuration, with one line naming
the problem; 3 classify was inconclusive; 1 any other failure.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from . import __version__
from .config import ConfigError, build_config, load_toml, settings_from_mapping

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the problem, and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _serve_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the STUN/TURN server")
    p.add_argument("--config", metavar="FILE", help="TOML configuration file")
    p.add_argument("--listen", action="append", metavar="IP[:PORT]",
                   help="listen address (repeatable; the first is the primary)")
    p.add_argument("--alt-ip", metavar="IP", help="alternate IP for RFC 5780 / RFC 3489")
    p.add_argument("--alt-port", metavar="PORT", help="alternate port")
    p.add_argument("--software", metavar="TEXT", help="SOFTWARE attribute ('' for none)")
    p.add_argument("--log-level", metavar="LEVEL", help="debug, info, warning, error")
    p.add_argument("--no-tcp", dest="tcp", action="store_const", const=False, default=None)
    p.add_argument("--tls-port", metavar="PORT")
    p.add_argument("--tls-cert", metavar="FILE")
    p.add_argument("--tls-key", metavar="FILE")
    p.add_argument("--realm", metavar="REALM")
    p.add_argument("--user", action="append", metavar="NAME:PASSWORD",
                   help="static TURN user (repeatable)")
    p.add_argument("--auth-secret", metavar="SECRET", help="TURN REST shared secret")
    p.add_argument("--relay-ip", metavar="IP")
    p.add_argument("--relay-ports", metavar="LOW-HIGH")
    p.add_argument("--external-ip", metavar="PUBLIC[/PRIVATE]")
    p.add_argument("--allow-peer", action="append", metavar="CIDR")
    p.add_argument("--deny-peer", action="append", metavar="CIDR")
    p.add_argument("--max-allocations", metavar="N")
    p.add_argument("--user-quota", metavar="N")
    p.add_argument("--bandwidth", metavar="BYTES_PER_SECOND")
    p.add_argument("--unauth-rate", metavar="PER_SECOND",
                   help="answers to unauthenticated requests per source IP (0: no limit)")
    p.add_argument("--unauth-global-rate", metavar="PER_SECOND",
                   help="answers to unauthenticated requests in total (0: no limit)")
    p.add_argument("--default-family", metavar="ipv4|listener")
    p.add_argument("--tcp-idle-timeout", metavar="SECONDS")
    p.add_argument("--tcp-max-connections", metavar="N")


_FLAG_KEYS = {
    "listen": "listen", "alt_ip": "alt-ip", "alt_port": "alt-port", "software": "software",
    "log_level": "log-level", "tcp": "tcp", "tls_port": "tls-port", "tls_cert": "tls-cert",
    "tls_key": "tls-key", "realm": "realm", "user": "user", "auth_secret": "auth-secret",
    "relay_ip": "relay-ip", "relay_ports": "relay-ports", "external_ip": "external-ip",
    "allow_peer": "allow-peer", "deny_peer": "deny-peer",
    "max_allocations": "max-allocations", "user_quota": "user-quota",
    "bandwidth": "bandwidth", "unauth_rate": "unauth-rate",
    "unauth_global_rate": "unauth-global-rate", "default_family": "default-family",
    "tcp_idle_timeout": "tcp-idle-timeout", "tcp_max_connections": "tcp-max-connections",
}


def config_from_args(args: argparse.Namespace) -> Any:
    file_values = load_toml(args.config) if args.config else {}
    flags = {key: getattr(args, attr) for attr, key in _FLAG_KEYS.items()
             if getattr(args, attr, None) is not None}
    return build_config(file_values, settings_from_mapping(flags))


def run_serve(args: argparse.Namespace) -> int:
    import trio

    from .fdlimit import SPARE_FILES, raise_nofile_limit
    from .net.serve import serve

    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"natsrv: config: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # One relay socket per allocation and one descriptor per TCP/TLS client.
    raise_nofile_limit(
        (config.max_allocations if config.turn_enabled else 0)
        + (config.tcp_max_connections if config.tcp or config.tls_enabled else 0)
        + SPARE_FILES
    )

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                await nursery.start(serve, config)
                async for signum in signals:
                    logging.getLogger("natsrv").info(
                        "stopping on %s", signal.Signals(signum).name
                    )
                    nursery.cancel_scope.cancel()
                    break

    try:
        trio.run(main)
    except OSError as exc:
        print(f"natsrv: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def run_credentials(args: argparse.Namespace) -> int:
    import json
    import time

    from .core.credentials import rest_credentials

    username, password = rest_credentials(args.auth_secret, args.user, args.ttl, time.time())
    server: dict[str, Any] = {"username": username, "credential": password}
    if args.uri:
        server = {"urls": args.uri, **server}
    print(json.dumps({"username": username, "password": password, "ttl": args.ttl,
                      "iceServers": [server]}, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _Parser(prog="natsrv", description="STUN/TURN server and NAT-type classifier")
    parser.add_argument("--version", action="version", version=f"natsrv {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _serve_parser(sub)
    sub.add_parser("classify", help="classify the NAT in front of this host", add_help=False)
    cred = sub.add_parser("credentials", help="print TURN REST credentials")
    cred.add_argument("--auth-secret", required=True, metavar="SECRET")
    cred.add_argument("--user", default=None, metavar="NAME")
    cred.add_argument("--ttl", type=int, default=86400, metavar="SECONDS")
    cred.add_argument("--uri", action="append", metavar="turn:HOST[:PORT]")
    if argv and argv[0] == "classify":
        from classifier.cli import main as classify_main

        return classify_main(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "serve":
        return run_serve(args)
    if args.command == "credentials":
        return run_credentials(args)
    parser.error(f"unknown command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
