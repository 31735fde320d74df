"""One typed configuration, from a TOML file and command-line flags (flags win).

Every setting is declared once, as a field of :class:`Config` whose metadata is a
:class:`Setting`: its TOML key (the long flag without the dashes), flag, metavar,
parser, unit, default, check and help text. From that one table come the TOML parser
(:func:`load_toml`), the ``natsrv serve`` flags and their ``--help`` text
(:func:`add_flags`, :func:`values_from_flags`), the README's configuration tables
(:func:`markdown_table`) and ``deploy/natsrv.toml`` (:func:`example_toml`); tests keep
the last two in step with it.

A setting's parser turns what was written (a TOML value or a flag's text) into the
field's type, refusing any other type; its check bounds the typed value. Both run on
every value read; :meth:`Config.validate` runs every check again (for a ``Config``
built in code) and then the rules that tie settings together. A bad value raises
:class:`ConfigError` naming the key, which the CLI prints as one line before exiting
with status 2. ``alt_ip`` is accepted for ``alt-ip`` in a file.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
import textwrap
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

Address = tuple[str, int]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_PORT = 3478
DEFAULT_TLS_PORT = 5349
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
DEFAULT_FAMILIES = ("ipv4", "listener")

#: Sections of the schema: the README heading each one's table sits under.
SECTIONS = {"server": "Running the server", "turn": "TURN relay"}

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is wrong. ``key`` names it."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        super().__init__(f"{key}: {problem}")


# -- Parsers: what was written -> the field's type ------------------------------------------
def _kind(value: object) -> str:
    """The TOML type of ``value``, for messages that must not echo it."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return "a date or time"


def parse_text(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, f"expected a string, not {_kind(value)}")
    return value


def _lower_text(key: str, value: Any) -> str:
    return parse_text(key, value).lower()


def _optional_text(key: str, value: Any) -> str | None:
    """A string; empty means none."""
    return parse_text(key, value) or None


def parse_ip(key: str, text: Any) -> str:
    try:
        return str(ipaddress.ip_address(parse_text(key, text).strip("[]")))
    except ValueError:
        raise ConfigError(key, f"not an IP address: {text!r}") from None


def _whole(key: str, value: Any, what: str) -> int:
    """An integer, or a string of one: not a boolean, not a fraction."""
    if isinstance(value, int | str) and not isinstance(value, bool):
        try:
            return int(value)
        except ValueError:
            pass
    raise ConfigError(key, f"not {what}: {value!r}")


def _number(key: str, value: Any, what: str) -> float:
    """An integer, a float, or a string of one: not a boolean."""
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            pass
    raise ConfigError(key, f"not {what}: {value!r}")


def parse_port(key: str, value: Any) -> int:
    """A port number, syntax only: ``_port_range`` bounds it."""
    return _whole(key, value, "a port number")


def parse_seconds(key: str, value: Any) -> float:
    return _number(key, value, "a number of seconds")


def parse_rate(key: str, value: Any) -> float:
    return _number(key, value, "a number per second")


def parse_count(key: str, value: Any) -> int:
    return _whole(key, value, "a whole number")


def parse_endpoint(key: str, text: Any, default_port: int = DEFAULT_PORT) -> Address:
    """``IP``, ``IP:PORT``, ``[IPv6]:PORT`` or a bare IPv6 address."""
    text = parse_text(key, text).strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ConfigError(key, f"unclosed '[' in {text!r}")
        if rest and not rest.startswith(":"):
            raise ConfigError(key, f"cannot parse {text!r} as IP[:PORT]")
        port = parse_port(key, rest[1:]) if rest else default_port
        return parse_ip(key, host), port
    if text.count(":") == 1:
        host, _, port_text = text.partition(":")
        return parse_ip(key, host), parse_port(key, port_text)
    return parse_ip(key, text), default_port


def parse_network(key: str, text: Any) -> Network:
    try:
        return ipaddress.ip_network(parse_text(key, text), strict=False)
    except ValueError:
        raise ConfigError(key, f"not a CIDR range: {text!r}") from None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _listen(key: str, value: Any) -> tuple[Address, ...]:
    return tuple(parse_endpoint(key, e) for e in _list(value))


def _endpoint_9641(key: str, value: Any) -> Address:
    return parse_endpoint(key, value, 9641)


def _networks(key: str, value: Any) -> tuple[Network, ...]:
    return tuple(parse_network(key, e) for e in _list(value))


def _users(key: str, value: Any) -> tuple[tuple[str, str], ...]:
    """A table ``{name = "password"}``, or ``NAME:PASSWORD`` strings (one or a list)."""
    items: list[tuple[str, str]] = []
    if isinstance(value, dict):
        for name, password in value.items():
            if not isinstance(password, str):
                raise ConfigError(key, f"password of {name!r} is not a string")
            items.append((name, password))
    else:
        for entry in _list(value):
            if not isinstance(entry, str):
                raise ConfigError(key, f"expected NAME:PASSWORD, not {_kind(entry)}")
            name, sep, password = entry.partition(":")
            if not sep:
                raise ConfigError(key, f"expected NAME:PASSWORD, got {entry!r}")
            items.append((name, password))
    if any(not name for name, _ in items):
        raise ConfigError(key, "a user name is empty")
    return tuple(items)


def _secrets(key: str, value: Any) -> tuple[str, ...]:
    """One secret or a list of them (rotation: the first signs, all verify)."""
    items = tuple(parse_text(key, v) for v in _list(value))
    if not items or any(not v for v in items):
        raise ConfigError(key, "is empty")
    return items


def split_secrets(text: str) -> tuple[str, ...]:
    """Secrets from a file or ``NATSRV_AUTH_SECRET``: one per line, blank lines skipped."""
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def _relay_ports(key: str, value: Any) -> tuple[int, int]:
    if isinstance(value, list) and len(value) == 2:
        low, high = value
    elif isinstance(value, str) and "-" in value:
        low, _, high = value.partition("-")
    else:
        raise ConfigError(key, f"expected LOW-HIGH, got {value!r}")
    return parse_port(key, low), parse_port(key, high)


def _external_ip(key: str, value: Any) -> tuple[str, str | None]:
    public, _, private = parse_text(key, value).partition("/")
    public_ip = parse_ip(key, public)
    private_ip = parse_ip(key, private) if private else None
    if private_ip is not None and _family(private_ip) != _family(public_ip):
        raise ConfigError(key, f"PUBLIC and PRIVATE are of different families: {value!r}")
    return public_ip, private_ip


def _external_ips(key: str, value: Any) -> tuple[tuple[str, str | None], ...]:
    return tuple(_external_ip(key, e) for e in _list(value))


def _relay_ips(key: str, value: Any) -> tuple[str, ...]:
    return tuple(parse_ip(key, e) for e in _list(value))


def _family(ip: str) -> int:
    return 6 if ":" in ip else 4


def _proxy_listeners(key: str, value: Any) -> tuple[str, ...]:
    """``tcp``, ``tls`` or an endpoint (kept as ``IP:PORT``, ``[IPv6]:PORT``)."""
    out = []
    for entry in _list(value):
        text = parse_text(key, entry).strip().lower()
        if text in ("tcp", "tls"):
            out.append(text)
            continue
        try:
            out.append(_show_address(parse_endpoint(key, text)))
        except ConfigError:
            raise ConfigError(key, f"expected tcp, tls or IP:PORT, got {entry!r}") from None
    return tuple(out)


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).lower() if isinstance(value, str) else None
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(key, f"expected true or false, got {value!r}")


#: The most worker processes ``workers`` accepts.
MAX_WORKERS = 256


def _workers(key: str, value: Any) -> int | None:
    """``auto`` (None: one per CPU this process may run on), or a whole number."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return None
    return _whole(key, value, "a number of workers or auto")


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, not the host's count)."""
    return len(os.sched_getaffinity(0)) or 1


# -- Checks: bounds on the typed value; a problem, or None -----------------------------------
Check = Callable[[Any], "str | None"]


def _port_range(port: int) -> str | None:
    return None if 0 <= port <= 65535 else "port out of range 0-65535"


def _listen_ports(listen: tuple[Address, ...]) -> str | None:
    if not listen:
        return "needs at least one address"
    return next(filter(None, (_port_range(port) for _, port in listen)), None)


def _relay_range(ports: tuple[int, int]) -> str | None:
    low, high = ports
    return None if 1 <= low <= high <= 65535 else "need LOW-HIGH within 1-65535"


def _one_per_family(ips: tuple[str, ...]) -> str | None:
    families = [_family(ip) for ip in ips]
    return "at most one address per family" if len(set(families)) != len(families) else None


def _relay_ips_check(ips: tuple[str, ...]) -> str | None:
    return _one_per_family(ips)


def _external_ips_check(pairs: tuple[tuple[str, str | None], ...]) -> str | None:
    return _one_per_family(tuple(public for public, _ in pairs))


def _alternates_check(alternates: tuple[Address, ...]) -> str | None:
    return _one_per_family(tuple(ip for ip, _ in alternates)) or next(
        filter(None, (_port_range(port) for _, port in alternates)), None)


def _seconds_at_least(minimum: float) -> Check:
    # ``not >=`` so that NaN fails too.
    return lambda s: None if s >= minimum else f"must be at least {minimum:g} seconds"


def _count_at_least(minimum: int) -> Check:
    return lambda n: None if n >= minimum else f"must be at least {minimum}"


def _count_within(low: int, high: int, unit: str) -> Check:
    return lambda n: None if low <= n <= high else f"must be within {low}-{high} {unit}"


def _finite_rate(rate: float) -> str | None:
    if 0 <= rate < float("inf"):
        return None
    return "must be a finite number per second, 0 or more"


def _one_of(choices: tuple[str, ...]) -> Check:
    text = ", ".join(choices)
    return lambda v: None if v in choices else f"not one of {text}"


def _software_size(text: str) -> str | None:
    return None if len(text.encode()) <= 128 else "longer than 128 bytes"


# -- Showing a value the way it is written -----------------------------------------------------
def _show_address(address: Address) -> str:
    ip, port = address
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _show_listen(listen: tuple[Address, ...]) -> list[str]:
    return [_show_address(a) for a in listen]


def _show_relay_ports(ports: tuple[int, int]) -> str:
    return f"{ports[0]}-{ports[1]}"


def _show_external_ip(value: tuple[str, str | None]) -> str:
    public, private = value
    return f"{public}/{private}" if private else public


def _show_external_ips(value: tuple[tuple[str, str | None], ...]) -> list[str]:
    return [_show_external_ip(pair) for pair in value]


def _show_ips(value: tuple[str, ...]) -> list[str]:
    return list(value)


def _show_users(users: tuple[tuple[str, str], ...]) -> list[str]:
    return [f"{name}:{password}" for name, password in users]


def _show_workers(workers: int | None) -> str | int:
    return "auto" if workers is None else workers


def _show_networks(networks: tuple[Network, ...]) -> list[str]:
    return [str(n) for n in networks]


# -- The schema ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """How one ``Config`` field is written, read, checked and documented.

    ``key`` is the TOML key and, with ``--``, the flag (``flag`` when that differs);
    ``help`` may mark code with backticks (the README shows them, ``--help`` drops them).
    ``metavar`` is None for a switch (``--tcp`` / ``--no-tcp``). ``unit`` is the unit of
    a number. ``show`` turns a value back into what ``parse`` reads (the default is
    shown that way); ``default_text`` says the default in words when the value alone
    does not, and ``example`` is a TOML value for the example file when there is no
    default to show. A ``secret`` is never echoed in a message.
    """

    key: str
    parse: Callable[[str, Any], Any]
    help: str
    section: str
    metavar: str | None
    unit: str = ""
    flag: str = ""
    aliases: tuple[str, ...] = ()
    repeatable: bool = False
    check: Check | None = None
    show: Callable[[Any], Any] | None = None
    default_text: str = ""
    example: str = ""
    secret: bool = False
    #: Filled in from the ``Config`` field.
    name: str = ""
    default: Any = None

    @property
    def flags(self) -> tuple[str, ...]:
        if self.metavar is None:
            return (f"--{self.key}", f"--no-{self.key}")
        return (self.flag or f"--{self.key}",)

    @property
    def plain_help(self) -> str:
        """``help`` without its Markdown code marks, for ``--help`` and the TOML file."""
        return self.help.replace("`", "")

    def shown(self, value: Any) -> Any:
        """``value`` as written in a file or a flag: text, a number, a bool, a list."""
        return value if self.show is None or value is None else self.show(value)

    def problem(self, value: Any) -> str | None:
        return None if self.check is None or value is None else self.check(value)

    def read(self, key: str, raw: Any) -> Any:
        """Parse and check ``raw`` (a TOML value or a flag's text) under ``key``."""
        value = self.parse(key, raw)
        problem = self.problem(value)
        if problem is not None:
            raise ConfigError(key, problem if self.secret else f"{problem}: {raw!r}")
        return value


def setting(default: T, key: str, parse: Callable[[str, Any], Any], help: str, *,
            section: str = "server", metavar: str | None, **more: Any) -> T:
    """A ``Config`` field declared with its :class:`Setting`."""
    spec = Setting(key, parse, help, section, metavar, **more)
    return field(default=default, metadata={"setting": spec})


@dataclass(frozen=True)
class Config:
    """Everything ``natsrv serve`` needs. Units are in the names: seconds, bytes, counts."""

    listen: tuple[Address, ...] = setting(
        (("0.0.0.0", DEFAULT_PORT), ("::", DEFAULT_PORT)), "listen", _listen,
        "listen addresses; the first is the primary (the default listens on both families; "
        "`::` is skipped with a warning where the host has no IPv6)",
        metavar="IP[:PORT]", repeatable=True, check=_listen_ports, show=_show_listen)
    alt_ip: str | None = setting(
        None, "alt-ip", parse_ip,
        "alternate IP (RFC 5780 / RFC 3489); needs a specific `--listen`",
        metavar="IP", example='"198.51.100.2"')
    alt_port: int | None = setting(
        None, "alt-port", parse_port, "alternate port (RFC 5780 / RFC 3489)",
        metavar="PORT", check=_port_range, example="3479")
    software: str | None = setting(
        None, "software", _optional_text,
        "SOFTWARE attribute (≤ 128 bytes); none by default: it only lengthens answers",
        metavar="TEXT", check=_software_size, example='"natsrv"')
    log_level: str = setting(
        "info", "log-level", _lower_text, "debug, info, warning, error or critical",
        metavar="LEVEL", check=_one_of(LOG_LEVELS))
    udp: bool = setting(True, "udp", _bool, "STUN/TURN over UDP", metavar=None)
    tcp: bool = setting(True, "tcp", _bool, "STUN/TURN over TCP", metavar=None)
    #: STUN over TCP/TLS (RFC 8489 §6.2.2): idle connections close after this long.
    tcp_idle_timeout: float = setting(
        300.0, "tcp-idle-timeout", parse_seconds,
        "a TCP/TLS connection with no message for this long is closed",
        metavar="SECONDS", unit="seconds", check=_seconds_at_least(1))
    tcp_max_connections: int = setting(
        2000, "tcp-max-connections", parse_count,
        "concurrent TCP/TLS connections; when full, the oldest one holding no allocation "
        "makes room",
        metavar="N", check=_count_at_least(1))
    max_message_size: int = setting(
        65535 + 4, "max-message-size", parse_count,
        "largest STUN/ChannelData frame on a stream (548-65539)",
        metavar="BYTES", unit="bytes", check=_count_within(548, 65539, "bytes"))
    mapped_address: bool = setting(
        False, "mapped-address", _bool,
        "MAPPED-ADDRESS beside XOR-MAPPED-ADDRESS (for old parsers and ALG detection)",
        metavar=None)
    # -- TLS (RFC 8489 §6.2.3, RFC 8656 §3.1) -------------------------------------------
    tls_port: int | None = setting(
        None, "tls-port", parse_port, "STUN/TURN over TLS on this port",
        metavar="PORT", check=_port_range,
        default_text=f"{DEFAULT_TLS_PORT} when a certificate is given",
        example=str(DEFAULT_TLS_PORT))
    tls_cert: str | None = setting(
        None, "tls-cert", parse_text, "TLS certificate chain (PEM); turns TLS on",
        metavar="FILE", example='"/etc/natsrv/cert.pem"')
    tls_key: str | None = setting(
        None, "tls-key", parse_text, "TLS private key (PEM); goes with `tls-cert`",
        metavar="FILE", example='"/etc/natsrv/key.pem"')
    # -- TURN (RFC 8656) -----------------------------------------------------------------
    realm: str = setting(
        "natsrv", "realm", parse_text, "REALM of the long-term credentials",
        section="turn", metavar="REALM")
    users: tuple[tuple[str, str], ...] = setting(
        (), "users", _users,
        'static users (in a file: a table `{name = "password"}` or `NAME:PASSWORD` strings)',
        section="turn", metavar="NAME:PASSWORD", flag="--user", aliases=("user",),
        repeatable=True, show=_show_users, example='{ alice = "change-me" }')
    auth_secret: tuple[str, ...] | None = setting(
        None, "auth-secret", _secrets,
        "TURN REST shared secret (username `EXPIRY[:USER]`, password "
        "base64(HMAC-SHA1(secret, username))); several for rotation: the first signs "
        "`natsrv credentials`, all verify",
        section="turn", metavar="SECRET", repeatable=True, secret=True, show=list,
        example='["new-secret", "old-secret"]')
    nonce_lifetime: float = setting(
        600.0, "nonce-lifetime", parse_seconds, "a nonce older than this is stale (438)",
        section="turn", metavar="SECONDS", unit="seconds", check=_seconds_at_least(1))
    relay_ip: tuple[str, ...] = setting(
        (), "relay-ip", _relay_ips,
        "address relay sockets bind to, at most one per family (IPv4 and IPv6 for dual "
        "allocations); needed when listening on a wildcard",
        section="turn", metavar="IP", repeatable=True, check=_relay_ips_check,
        show=_show_ips, default_text="the listen addresses",
        example='["198.51.100.1", "2001:db8::1"]')
    relay_ports: tuple[int, int] = setting(
        (49152, 65535), "relay-ports", _relay_ports, "relay port range",
        section="turn", metavar="LOW-HIGH", check=_relay_range, show=_show_relay_ports)
    external_ip: tuple[tuple[str, str | None], ...] = setting(
        (), "external-ip", _external_ips,
        "advertise PUBLIC in XOR-RELAYED-ADDRESS (server behind a 1:1 cloud NAT); at "
        "most one per family",
        section="turn", metavar="PUBLIC[/PRIVATE]", repeatable=True,
        check=_external_ips_check, show=_show_external_ips,
        example='["203.0.113.10/10.0.0.5"]')
    allow_peer: tuple[Any, ...] = setting(
        (), "allow-peer", _networks, "peer ranges admitted despite the default denials",
        section="turn", metavar="CIDR", repeatable=True, show=_show_networks,
        example='["198.51.100.0/24"]')
    deny_peer: tuple[Any, ...] = setting(
        (), "deny-peer", _networks, "peer ranges refused (wins over `allow-peer`)",
        section="turn", metavar="CIDR", repeatable=True, show=_show_networks,
        example='["203.0.113.0/24"]')
    default_lifetime: float = setting(
        600.0, "default-lifetime", parse_seconds,
        "allocation lifetime when the client asks none (at most `max-lifetime`)",
        section="turn", metavar="SECONDS", unit="seconds", check=_seconds_at_least(1))
    max_lifetime: float = setting(
        3600.0, "max-lifetime", parse_seconds, "longest allocation lifetime granted",
        section="turn", metavar="SECONDS", unit="seconds", check=_seconds_at_least(1))
    permission_lifetime: float = setting(
        300.0, "permission-lifetime", parse_seconds, "permission lifetime",
        section="turn", metavar="SECONDS", unit="seconds", check=_seconds_at_least(1))
    channel_lifetime: float = setting(
        600.0, "channel-lifetime", parse_seconds, "channel binding lifetime",
        section="turn", metavar="SECONDS", unit="seconds", check=_seconds_at_least(1))
    max_allocations: int = setting(
        10000, "max-allocations", parse_count, "allocations in total (508 beyond)",
        section="turn", metavar="N", check=_count_at_least(1))
    user_quota: int = setting(
        100, "user-quota", parse_count, "allocations per user (486 beyond)",
        section="turn", metavar="N", check=_count_at_least(1))
    max_permissions: int = setting(
        64, "max-permissions", parse_count, "permissions per allocation (508 beyond)",
        section="turn", metavar="N", check=_count_at_least(1))
    max_channels: int = setting(
        64, "max-channels", parse_count, "channels per allocation (508 beyond)",
        section="turn", metavar="N", check=_count_at_least(1))
    bandwidth: int = setting(
        0, "bandwidth", parse_count, "relayed bytes per second per allocation, 0 for no cap",
        section="turn", metavar="BYTES_PER_SECOND", unit="bytes per second",
        check=_count_at_least(0))
    #: The server must be a poor reflector.
    unauth_rate: float = setting(
        20.0, "unauth-rate", parse_rate,
        "401 answers per second per source IP (the rest are dropped; 0 for no limit)",
        section="turn", metavar="PER_SECOND", unit="per second", check=_finite_rate)
    unauth_global_rate: float = setting(
        20000.0, "unauth-global-rate", parse_rate,
        "401 answers per second from the whole server, all source IPs together (the rest "
        "are dropped; 0 for no limit). One process authenticates at most ~15k new "
        "allocations/s, so this never holds back honest clients; a flood of unsigned "
        "requests from spoofed sources, each far cheaper to answer than a whole "
        "allocation, gets at most ~16 Mbit/s of ~100-byte answers reflected",
        section="turn", metavar="PER_SECOND", unit="per second", check=_finite_rate)
    tcp_max_per_source: int = setting(
        64, "tcp-max-per-source", parse_count,
        "concurrent TCP/TLS connections from one source IP",
        metavar="N", check=_count_at_least(1))
    tcp_first_message_timeout: float = setting(
        5.0, "tcp-first-message-timeout", parse_seconds,
        "a new TCP/TLS connection must send a complete message within this long",
        metavar="SECONDS", unit="seconds", check=_seconds_at_least(0.1))
    tls_handshake_timeout: float = setting(
        5.0, "tls-handshake-timeout", parse_seconds,
        "a TLS handshake must finish within this long",
        metavar="SECONDS", unit="seconds", check=_seconds_at_least(0.1))
    log_format: str = setting(
        "text", "log-format", _lower_text, "text, or json (one object per line)",
        metavar="FORMAT", check=_one_of(("text", "json")))
    metrics_listen: tuple[str, int] | None = setting(
        None, "metrics-listen", _endpoint_9641,
        "admin HTTP listener: /metrics, /sessions, /healthz, /readyz (keep it on "
        "loopback or a private network)",
        metavar="IP[:PORT]", example='"127.0.0.1:9641"')
    drain_timeout: float = setting(
        30.0, "drain-timeout", parse_seconds,
        "after the first SIGTERM, how long existing allocations may run on",
        metavar="SECONDS", unit="seconds", check=_seconds_at_least(0))
    workers: int | None = setting(
        None, "workers", _workers,
        "worker processes sharing the listening sockets (one `SO_REUSEPORT` group the "
        "parent owns); `auto`: one per CPU this process may run on; 1: a single process",
        metavar="N|auto", check=_count_within(1, MAX_WORKERS, "workers"), show=_show_workers,
        default_text="auto (the CPUs this process may run on)", example='"auto"')
    user_db: str | None = setting(
        None, "user-db", parse_text,
        "SQLite user database (`natsrv user add`); changes apply on the next request",
        section="turn", metavar="PATH", example='"/var/lib/natsrv/users.sqlite"')
    auth_secret_file: str | None = setting(
        None, "auth-secret-file", parse_text,
        "file holding the REST shared secrets, one per line, the signing one first (also "
        "read from `NATSRV_AUTH_SECRET`)",
        section="turn", metavar="FILE", example='"/etc/natsrv/auth-secret"')
    auth_secret_algorithm: str = setting(
        "sha1", "auth-secret-algorithm", _lower_text,
        "HMAC of REST passwords: sha1 (what applications send today) or sha256",
        section="turn", metavar="sha1|sha256", check=_one_of(("sha1", "sha256")))
    alternate_server: tuple[Address, ...] = setting(
        (), "alternate-server", _listen,
        "where 300 Try Alternate sends new allocations while draining, at "
        "`max-allocations` or with `redirect-all` (one per family: the client's)",
        section="turn", metavar="IP[:PORT]", repeatable=True, show=_show_listen,
        check=_alternates_check,
        example='["198.51.100.9:3478"]')
    password_algorithms: bool = setting(
        False, "password-algorithms", _bool,
        "offer SHA-256 keys (RFC 8489 PASSWORD-ALGORITHMS); makes every 401 longer",
        section="turn", metavar=None)
    default_family: str = setting(
        "ipv4", "default-family", parse_text,
        "relay family when a client sends no REQUESTED-ADDRESS-FAMILY (browsers never do): "
        "`ipv4` (RFC 8656 §7.2) or `listener` (that of the listening socket)",
        section="turn", metavar="ipv4|listener", check=_one_of(DEFAULT_FAMILIES))
    tcp_relay: bool = setting(
        True, "tcp-relay", _bool,
        "RFC 6062 TCP allocations (REQUESTED-TRANSPORT TCP) on TCP and TLS connections",
        section="turn", metavar=None)
    tcp_relay_connect_timeout: float = setting(
        30.0, "tcp-relay-connect-timeout", parse_seconds,
        "how long a Connect to a TCP peer may take before it gets 447",
        section="turn", metavar="SECONDS", unit="seconds", check=_seconds_at_least(0.1))
    tcp_relay_bind_timeout: float = setting(
        30.0, "tcp-relay-bind-timeout", parse_seconds,
        "how long a peer connection waits for the client's ConnectionBind before it is "
        "closed (RFC 6062: 30 s)",
        section="turn", metavar="SECONDS", unit="seconds", check=_seconds_at_least(0.1))
    tcp_relay_max_pending: int = setting(
        8, "tcp-relay-max-pending", parse_count,
        "peer connections of one TCP allocation that are connecting or awaiting their "
        "ConnectionBind",
        section="turn", metavar="N", check=_count_at_least(1))
    tcp_relay_max_per_allocation: int = setting(
        64, "tcp-relay-max-per-allocation", parse_count,
        "peer connections of one TCP allocation, in all",
        section="turn", metavar="N", check=_count_at_least(1))
    tcp_relay_max_connections: int = setting(
        4096, "tcp-relay-max-connections", parse_count,
        "peer connections of all TCP allocations together (each costs two sockets)",
        section="turn", metavar="N", check=_count_at_least(1))
    dtls: bool = setting(
        True, "dtls", _bool,
        "STUN and TURN over DTLS 1.2 (RFC 7350) on the UDP side of the TLS port, with the "
        "same certificate (only when tls-cert is given)",
        metavar=None)
    dtls_max_sessions: int = setting(
        2000, "dtls-max-sessions", parse_count,
        "concurrent DTLS sessions (a session exists only once its client returned a "
        "HelloVerifyRequest cookie); over it new clients are ignored",
        metavar="N", check=_count_at_least(1))
    redirect_all: bool = setting(
        False, "redirect-all", _bool,
        "maintenance: every new allocation gets 300 Try Alternate to `alternate-server` "
        "(508 without one); live allocations run on; SIGHUP turns it on and off",
        section="turn", metavar=None)
    userhash: bool = setting(
        False, "userhash", _bool,
        "advertise username anonymity (RFC 8489 USERHASH: clients send SHA-256 of "
        "`name:realm` instead of the name); needs `users` or `user-db`, whose users may "
        "send USERHASH either way; makes every 401 16 bytes longer unless "
        "`password-algorithms` already does",
        section="turn", metavar=None)
    proxy_protocol: bool = setting(
        False, "proxy-protocol", _bool,
        "stream listeners named by `proxy-protocol-listeners` require a HAProxy PROXY "
        "protocol v1/v2 header first (before TLS) and take the client's address from it; "
        "only for listeners that nothing but the proxy can reach",
        metavar=None)
    proxy_protocol_listeners: tuple[str, ...] = setting(
        ("tcp", "tls"), "proxy-protocol-listeners", _proxy_listeners,
        "with `proxy-protocol`: which stream listeners: `tcp`, `tls`, or one `IP:PORT`",
        metavar="tcp|tls|IP:PORT", repeatable=True, show=list)
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Code written before relay-ip and external-ip took one value per family may
        # still pass one address or one (public, private) pair.
        if isinstance(self.relay_ip, str):
            object.__setattr__(self, "relay_ip", (self.relay_ip,))
        elif self.relay_ip is None:
            object.__setattr__(self, "relay_ip", ())
        ext: Any = self.external_ip
        if ext is None:
            object.__setattr__(self, "external_ip", ())
        elif ext and isinstance(ext[0], str):
            object.__setattr__(self, "external_ip", (tuple(ext),))

    @property
    def primary(self) -> Address:
        return self.listen[0]

    @property
    def turn_enabled(self) -> bool:
        """TURN runs only with a credential source: never an open relay."""
        return bool(self.users) or self.auth_secret is not None or self.user_db is not None

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert is not None

    @property
    def worker_count(self) -> int:
        """How many worker processes ``workers`` means here (``auto`` resolved)."""
        return min(available_cpus(), MAX_WORKERS) if self.workers is None else self.workers

    def validate(self) -> Config:
        """Every setting's check, then the rules between settings. Returns ``self``."""
        for s in SETTINGS:
            value = getattr(self, s.name)
            problem = s.problem(value)
            if problem is not None:
                shown = "" if s.secret else f": {s.shown(value)!r}"
                raise ConfigError(s.key, problem + shown)
        primary_ip, primary_port = self.primary
        wildcard = primary_ip in ("0.0.0.0", "::")
        if self.alt_ip is not None:
            if wildcard:
                raise ConfigError("alt-ip", "needs a specific --listen address, not a wildcard")
            family = ipaddress.ip_address(primary_ip).version
            if ipaddress.ip_address(self.alt_ip).version != family:
                raise ConfigError("alt-ip", "must be of the same family as the listen address")
            if self.alt_ip == primary_ip:
                raise ConfigError("alt-ip", "must differ from the listen address")
        if self.alt_port is not None and self.alt_port == primary_port and primary_port != 0:
            raise ConfigError("alt-port", "must differ from the listen port")
        if self.tls_port is not None and self.tls_cert is None:
            raise ConfigError("tls-port", "needs tls-cert and tls-key")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls-cert" if self.tls_cert is None else "tls-key",
                              "tls-cert and tls-key go together")
        for key, path in (("tls-cert", self.tls_cert), ("tls-key", self.tls_key)):
            if path is not None and not Path(path).is_file():
                raise ConfigError(key, f"no such file: {path}")
        if self.default_lifetime > self.max_lifetime:
            raise ConfigError("default-lifetime", "larger than max-lifetime")
        if self.turn_enabled and not self.relay_ip and wildcard:
            raise ConfigError(
                "relay-ip", "TURN needs --relay-ip (or a specific --listen address)"
            )
        if self.userhash and not (self.users or self.user_db):
            raise ConfigError("userhash", "needs users or user-db (REST usernames cannot "
                                          "be hashed in advance)")  # fmt: skip
        external_families = {_family(public) for public, _ in self.external_ip}
        for ip in self.relay_ip:
            if ip in ("0.0.0.0", "::") and _family(ip) not in external_families:
                raise ConfigError("relay-ip",
                                  f"a wildcard relay address ({ip}) needs an --external-ip "
                                  "of its family")  # fmt: skip
        low, high = self.relay_ports
        if self.turn_enabled and high - low + 1 < self.worker_count:
            raise ConfigError("workers", f"{self.worker_count} workers need at least as many "
                              f"relay ports, and relay-ports has {high - low + 1}")
        return self


def _schema() -> tuple[Setting, ...]:
    return tuple(
        replace(f.metadata["setting"], name=f.name, default=f.default)
        for f in fields(Config) if "setting" in f.metadata
    )


#: Every setting, in the order of the ``Config`` fields.
SETTINGS = _schema()
#: TOML key (and alias) -> setting.
_BY_KEY = {k: s for s in SETTINGS for k in (s.key, *s.aliases)}


# -- Reading ----------------------------------------------------------------------------------
def settings_from_mapping(values: dict[str, Any], *, source: str = "") -> dict[str, Any]:
    """Parse ``{key: raw value}`` (TOML keys, ``_`` or ``-``) into Config field values."""
    out: dict[str, Any] = {}
    given: dict[str, str] = {}
    for raw_key, value in values.items():
        key = raw_key.replace("_", "-")
        spec = _BY_KEY.get(key)
        if spec is None:
            raise ConfigError(f"{source}{raw_key}", "unknown setting")
        if spec.name in given:
            raise ConfigError(f"{source}{raw_key}", f"given twice (also as {given[spec.name]})")
        given[spec.name] = raw_key
        out[spec.name] = spec.read(f"{source}{key}", value)
    return out


def load_toml(path: str) -> dict[str, Any]:
    """Config field values from a TOML file (checked one by one, not yet together)."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{path}: {exc}") from None
    # A [server] table is accepted as well as top-level keys.
    if isinstance(data.get("server"), dict):
        data = {**{k: v for k, v in data.items() if k != "server"}, **data["server"]}
    return settings_from_mapping(data)


def build_config(file_values: dict[str, Any], flag_values: dict[str, Any]) -> Config:
    """Defaults, then the file, then the flags; validated."""
    names = {f.name for f in fields(Config)}
    merged = {**file_values, **flag_values}
    unknown = set(merged) - names
    if unknown:
        raise ConfigError(sorted(unknown)[0], "unknown setting")
    if merged.get("auth_secret") is None:
        # Secrets stay off the command line (``ps`` shows it): a file, or the environment.
        path = merged.get("auth_secret_file")
        if path is not None:
            try:
                found = split_secrets(Path(path).read_text(encoding="utf-8"))
            except (OSError, UnicodeError) as exc:
                raise ConfigError("auth-secret-file", f"cannot read {path}: {exc}") from None
            if not found:
                raise ConfigError("auth-secret-file", f"{path} is empty")
            merged["auth_secret"] = found
        elif split_secrets(os.environ.get("NATSRV_AUTH_SECRET", "")):
            merged["auth_secret"] = split_secrets(os.environ["NATSRV_AUTH_SECRET"])
    return replace(Config(), **merged).validate()


# -- Flags ------------------------------------------------------------------------------------
def default_text(s: Setting) -> str:
    """The default in words: ``300 seconds``, ``0.0.0.0:3478``, ``none``."""
    if s.default_text:
        return s.default_text
    shown = s.shown(s.default)
    if shown is None or shown == []:
        return "none"
    if isinstance(shown, list):
        text = ", ".join(str(x) for x in shown)
    elif isinstance(shown, bool):
        text = "true" if shown else "false"
    else:
        text = _number_text(shown) if isinstance(shown, float) else str(shown)
    return f"{text} {s.unit}" if s.unit else text


def _number_text(number: float) -> str:
    return str(int(number)) if number.is_integer() else repr(number)


def add_flags(parser: argparse.ArgumentParser) -> None:
    """A flag for every setting, in groups by section, with its help and default."""
    for section, title in SECTIONS.items():
        group = parser.add_argument_group(title.lower())
        for s in SETTINGS:
            if s.section != section:
                continue
            help_text = f"{s.plain_help} (default: {default_text(s)})".replace("%", "%%")
            if s.metavar is None:
                group.add_argument(s.flags[0], dest=s.name, action=argparse.BooleanOptionalAction,
                                   default=None, help=help_text)
            else:
                group.add_argument(*s.flags, dest=s.name, metavar=s.metavar, help=help_text,
                                   action="append" if s.repeatable else "store")


def values_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    """Config field values from the flags given (parsed and checked one by one)."""
    out: dict[str, Any] = {}
    for s in SETTINGS:
        raw = getattr(args, s.name, None)
        if raw is not None:
            out[s.name] = s.read(s.flags[0].removeprefix("--"), raw)
    return out


# -- Documents generated from the schema ------------------------------------------------------
def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _flag_cell(s: Setting) -> str:
    if s.metavar is None:
        return ", ".join(f"`{f}`" for f in s.flags)
    text = f"`{s.flags[0]} {_cell(s.metavar)}`"
    return f"{text} (repeatable)" if s.repeatable else text


def _default_cell(s: Setting) -> str:
    if s.default_text or default_text(s) == "none":
        return _cell(default_text(s))
    text = default_text(s)
    value = text.removesuffix(f" {s.unit}") if s.unit else text
    return f"`{_cell(value)}` {s.unit}".rstrip()


def markdown_table(section: str) -> str:
    """The README's table of one section's settings: flag | TOML key | meaning | default."""
    rows = ["| flag | TOML key | meaning | default |", "|---|---|---|---|"]
    if section == "server":
        rows.append("| `--config FILE` | | TOML file; flags win over it | |")
    for s in SETTINGS:
        if s.section == section:
            keys = ", ".join(f"`{k}`" for k in (s.key, *s.aliases))
            rows.append(f"| {_flag_cell(s)} | {keys} | {_cell(s.help)} | {_default_cell(s)} |")
    return "\n".join(rows) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _number_text(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def example_toml() -> str:
    """``deploy/natsrv.toml``: every key, commented out, with its default and unit."""
    lines = [
        "# natsrv configuration: every key with its default (generated by",
        "# `python -m natsrv.config --toml`). Keys are the long flag names without the",
        "# dashes; flags win over this file. Uncomment what you change.",
    ]
    for section, title in SECTIONS.items():
        lines += ["", f"# -- {title} " + "-" * (72 - len(title))]
        for s in SETTINGS:
            if s.section != section:
                continue
            note = s.unit or s.metavar or "true or false"
            if s.repeatable:
                note += ", a list"
            if s.default is None or s.default == () or s.default_text:
                value = s.example
                note += f"; default: {default_text(s)}"
            else:
                value = _toml_value(s.shown(s.default))
            wrapped = textwrap.wrap(s.plain_help, 88, initial_indent="# ",
                                    subsequent_indent="# ")  # fmt: skip
            lines += ["", *wrapped, f"# {s.key} = {value}   # {note}"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m natsrv.config --toml | --markdown SECTION``: print a generated document."""
    parser = argparse.ArgumentParser(prog="python -m natsrv.config", description=main.__doc__)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--toml", action="store_true", help="the example deploy/natsrv.toml")
    what.add_argument("--markdown", choices=SECTIONS, help="the README's table of a section")
    args = parser.parse_args(argv)
    sys.stdout.write(example_toml() if args.toml else markdown_table(args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
