"""``natsrv classify SERVER[:PORT] [--alt SERVER2[:PORT]] [--local IP[:PORT]] [--json]
[--timeout SECONDS] [--lifetime [--lifetime-limit SECONDS]]``.

Exit codes (DESIGN.md): 0 a verdict was reached (``udp-blocked`` is one); 3 inconclusive
(the output says what could not be determined and why); 2 bad usage, with one line on
stderr; 1 any other failure (a name that does not resolve, no route, a local address
that cannot be bound). Progress goes to stderr, and only when stderr is a terminal.

There is no default server: no public STUN server is ours to contact by default, so
SERVER is required.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import socket
import sys
import time
from collections.abc import Sequence
from typing import NoReturn

import trio

from .binding import DEFAULT_TIMING
from .model import Endpoint, NatType
from .run import Observer, Settings, classify_both

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INCONCLUSIVE = 3

DEFAULT_PORT = 3478
MAX_TIMEOUT_S = 60.0
PROG = "natsrv classify"

_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}\.?$){_LABEL}(?:\.{_LABEL})*\.?$")


class UsageError(ValueError):
    """Bad usage: exit status 2, one line on stderr."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _port(text: str, *, allow_zero: bool = False) -> int:
    if not text.isdigit() or not (0 if allow_zero else 1) <= int(text) <= 65535:
        raise UsageError(f"not a port number: {text!r}")
    return int(text)


def _split(text: str) -> tuple[str, str | None]:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 address."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise UsageError(f"bad address {text!r}: expected [IPv6]:PORT")
        return host, rest[1:] if rest else None
    if text.count(":") > 1:
        return text, None  # a bare IPv6 address has no port
    host, colon, port = text.partition(":")
    return host, port if colon else None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def parse_server(text: str) -> tuple[str, int]:
    """SERVER[:PORT]: a host name or IP address, port 3478 unless given."""
    host, port = _split(text)
    if not host or not (_is_ip(host) or (":" not in host and _HOSTNAME.match(host))):
        raise UsageError(f"bad server address {text!r}")
    return host, DEFAULT_PORT if port is None else _port(port)


def parse_local(text: str) -> tuple[str, int | None]:
    """IP[:PORT]: an address of this host (no name), optionally a port for the classic
    tests' socket."""
    host, port = _split(text)
    if not _is_ip(host):
        raise UsageError(f"bad local address {text!r}: expected an IP address[:PORT]")
    if ipaddress.ip_address(host).is_unspecified:
        raise UsageError(f"bad local address {text!r}: give the address itself, not a wildcard")
    return host, None if port is None else _port(port, allow_zero=True)


def _seconds(text: str, *, low: float, high: float, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{what}: not a number of seconds: {text!r}")
    if not low < value <= high:
        raise UsageError(f"{what}: must be more than {low:g} and at most {high:g} seconds")
    return value


def build_parser() -> _Parser:
    p = _Parser(prog=PROG, description="Classify the NAT between this host and a STUN server "
                "(RFC 3489 §10.1 and RFC 5780 behaviour discovery).")
    p.add_argument("server", nargs="?", metavar="SERVER[:PORT]",
                   help=f"STUN server (port {DEFAULT_PORT} unless given)")
    p.add_argument("--alt", metavar="SERVER2[:PORT]",
                   help="a second, independent STUN server to cross-check the mapping with")
    p.add_argument("--local", metavar="IP[:PORT]",
                   help="local address to send from (the port is used by the classic tests)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--ascii", action="store_true",
                   help="plain ASCII table (the default when standard output is not a terminal)")
    p.add_argument("--timeout", metavar="SECONDS", default=str(DEFAULT_TIMING.total),
                   help=f"how long an unanswered request is retried (default "
                   f"{DEFAULT_TIMING.total:g}); the retransmission timer scales with it")
    p.add_argument("--lifetime", action="store_true",
                   help="also measure how long the NAT keeps an idle UDP binding (minutes)")
    p.add_argument("--lifetime-limit", metavar="SECONDS", default=None,
                   help="longest idle time the lifetime test tries (default 300; implies "
                   "--lifetime)")
    return p


def _resolve(host: str, port: int) -> dict[int, Endpoint]:
    """The first address of each family (AF_INET, AF_INET6) ``host`` resolves to.
    Raises socket.gaierror."""
    found: dict[int, Endpoint] = {}
    for family, _, _, _, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM):
        if family in (socket.AF_INET, socket.AF_INET6) and family not in found:
            found[family] = (str(sockaddr[0]), int(sockaddr[1]))
    return found


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str]) -> int:
    try:
        args = build_parser().parse_args(list(argv))
        if args.server is None:
            raise UsageError("a STUN server is required: natsrv classify SERVER[:PORT] "
                             "(there is no default server)")
        host, port = parse_server(args.server)
        alt = parse_server(args.alt) if args.alt else None
        local_ip, local_port = parse_local(args.local) if args.local else (None, None)
        timeout = _seconds(args.timeout, low=0, high=MAX_TIMEOUT_S, what="--timeout")
        limit = (None if args.lifetime_limit is None else
                 _seconds(args.lifetime_limit, low=1, high=3600, what="--lifetime-limit"))
    except UsageError as exc:
        return _fail(f"error: {exc}", EXIT_USAGE)

    try:
        servers = _resolve(host, port)
    except (socket.gaierror, UnicodeError) as exc:
        return _fail(f"cannot resolve {host}: {_why(exc)}", EXIT_FAILURE)
    try:
        alts = _resolve(*alt) if alt else {}
    except (socket.gaierror, UnicodeError) as exc:
        return _fail(f"cannot resolve --alt {alt[0] if alt else ''}: {_why(exc)}", EXIT_FAILURE)
    families = [socket.AF_INET, socket.AF_INET6]
    if local_ip is not None:
        families = [socket.AF_INET6 if ":" in local_ip else socket.AF_INET]
    usable = [f for f in families if f in servers]
    if not usable:
        return _fail(f"error: {host} has no address of the same family as --local {local_ip}",
                     EXIT_USAGE)
    name = args.server

    def settings(family: int) -> Settings:
        return Settings(
            server=servers[family], server_name=name, alt_server=alts.get(family),
            local_ip=local_ip, local_port=local_port,
            timing=DEFAULT_TIMING.for_timeout(timeout),
            lifetime=bool(args.lifetime or limit), **({} if limit is None else
                                                       {"lifetime_limit": limit}),
        )

    primary = settings(usable[0])
    # A name with both A and AAAA records: IPv6 is classified too, alongside.
    ipv6 = settings(socket.AF_INET6) if len(usable) == 2 and not _is_ip(host) else None

    from . import report  # rich is imported only once the arguments are known to be good

    started = time.time()
    observer: Observer = Observer()
    progress = report.ProgressDisplay() if sys.stderr.isatty() else None
    try:
        if progress is not None:
            with progress:
                result, v6 = trio.run(classify_both, primary, ipv6, progress)
        else:
            result, v6 = trio.run(classify_both, primary, ipv6, observer)
    except (OSError, BaseExceptionGroup) as exc:
        error = _os_error(exc)
        if error is None:
            raise
        return _fail(f"cannot classify against {name}: {error.strerror or error}", EXIT_FAILURE)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_FAILURE)

    if args.json:
        out = {**report.report_json(result, v6), "meta": report.run_metadata(started)}
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        sys.stdout.flush()
    else:
        report.print_table(result, v6, ascii_only=args.ascii or not sys.stdout.isatty())
    if result.verdict.nat_type is NatType.UDP_BLOCKED:
        # Silence from the server cannot tell blocked UDP from a server that is down.
        print("natsrv classify: no answer from the server; UDP may be blocked or the "
              "server down", file=sys.stderr)  # fmt: skip
        return EXIT_INCONCLUSIVE
    return EXIT_INCONCLUSIVE if result.verdict.inconclusive else EXIT_OK


def _os_error(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc``, unwrapping trio's exception groups; None if ``exc``
    holds anything else (a bug, to be shown with its traceback)."""
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        found = [_os_error(e) for e in exc.exceptions]
        if found and all(found):
            return found[0]
    return None


def _why(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc)


__all__ = [
    "EXIT_FAILURE",
    "EXIT_INCONCLUSIVE",
    "EXIT_OK",
    "EXIT_USAGE",
    "UsageError",
    "main",
    "parse_local",
    "parse_server",
]
