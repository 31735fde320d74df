"""One typed configuration, from a TOML file and command-line flags (flags win).

Keys in the TOML file are the long flag names without the dashes (``alt-ip``,
``relay-ports``; ``alt_ip`` is accepted too). Every value is checked here; a bad one
raises :class:`ConfigError` naming the key, which the CLI prints as one line before
exiting with status 2.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

Address = tuple[str, int]

DEFAULT_PORT = 3478
DEFAULT_TLS_PORT = 5349


class ConfigError(ValueError):
    """A configuration value is wrong. ``key`` names it."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        super().__init__(f"{key}: {problem}")


def parse_ip(key: str, text: str) -> str:
    try:
        return str(ipaddress.ip_address(str(text).strip("[]")))
    except ValueError:
        raise ConfigError(key, f"not an IP address: {text!r}") from None


def parse_port(key: str, value: Any, *, allow_zero: bool = True) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise ConfigError(key, f"not a port number: {value!r}") from None
    if not (0 if allow_zero else 1) <= port <= 65535:
        raise ConfigError(key, f"port out of range 0-65535: {value!r}")
    return port


def parse_endpoint(key: str, text: str, default_port: int = DEFAULT_PORT) -> Address:
    """``IP``, ``IP:PORT``, ``[IPv6]:PORT`` or a bare IPv6 address."""
    text = str(text).strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ConfigError(key, f"unclosed '[' in {text!r}")
        port = parse_port(key, rest[1:]) if rest.startswith(":") else default_port
        if rest and not rest.startswith(":"):
            raise ConfigError(key, f"cannot parse {text!r} as IP[:PORT]")
        return parse_ip(key, host), port
    if text.count(":") == 1:
        host, _, port_text = text.partition(":")
        return parse_ip(key, host), parse_port(key, port_text)
    return parse_ip(key, text), default_port


def parse_network(key: str, text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(str(text), strict=False)
    except ValueError:
        raise ConfigError(key, f"not a CIDR range: {text!r}") from None


def parse_seconds(key: str, value: Any, *, minimum: float = 0.0) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ConfigError(key, f"not a number of seconds: {value!r}") from None
    if seconds < minimum or seconds != seconds:
        raise ConfigError(key, f"must be at least {minimum:g} seconds: {value!r}")
    return seconds


def parse_rate(key: str, value: Any) -> float:
    """A rate per second: a finite number, 0 or more (0 meaning no limit)."""
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise ConfigError(key, f"not a number per second: {value!r}") from None
    if not 0 <= rate < float("inf"):
        raise ConfigError(key, f"must be a finite number per second, 0 or more: {value!r}")
    return rate


def parse_count(key: str, value: Any, *, minimum: int = 0) -> int:
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise ConfigError(key, f"not a whole number: {value!r}") from None
    if count < minimum:
        raise ConfigError(key, f"must be at least {minimum}: {value!r}")
    return count


@dataclass(frozen=True)
class Config:
    """Everything ``natsrv serve`` needs. Units are in the names: seconds, bytes, counts."""

    listen: tuple[Address, ...] = (("0.0.0.0", DEFAULT_PORT),)
    alt_ip: str | None = None
    alt_port: int | None = None
    software: str | None = None
    log_level: str = "info"
    udp: bool = True
    tcp: bool = True
    #: STUN over TCP/TLS (RFC 8489 §6.2.2): idle connections close after this long.
    tcp_idle_timeout: float = 300.0
    tcp_max_connections: int = 2000
    max_message_size: int = 65535 + 4
    mapped_address: bool = False
    # -- TLS (RFC 8489 §6.2.3, RFC 8656 §3.1) -------------------------------------------
    tls_port: int | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    # -- TURN (RFC 8656) -----------------------------------------------------------------
    realm: str = "natsrv"
    users: tuple[tuple[str, str], ...] = ()
    auth_secret: str | None = None
    nonce_lifetime: float = 600.0
    relay_ip: str | None = None
    relay_ports: tuple[int, int] = (49152, 65535)
    external_ip: tuple[str, str | None] | None = None
    allow_peer: tuple[Any, ...] = ()
    deny_peer: tuple[Any, ...] = ()
    default_lifetime: float = 600.0
    max_lifetime: float = 3600.0
    permission_lifetime: float = 300.0
    channel_lifetime: float = 600.0
    max_allocations: int = 10000
    user_quota: int = 100
    max_permissions: int = 64
    max_channels: int = 64
    #: Bytes per second per allocation; 0 means no cap.
    bandwidth: int = 0
    #: 401 answers per source IP per second (the server must be a poor reflector).
    unauth_rate: float = 20.0
    #: 401 answers per second from the whole server, all sources together; 0 means no
    #: limit. One process authenticates at most ~15k new allocations/s, so 20000 never
    #: holds back honest clients, while a flood of unsigned requests from spoofed
    #: sources (each far cheaper to answer than a whole allocation) gets at most
    #: ~16 Mbit/s of ~100-byte answers reflected.
    unauth_global_rate: float = 20000.0
    #: ``ipv4`` (RFC 8656 §7.2 default) or ``listener``: the family of the listening socket.
    default_family: str = "ipv4"
    alternate_server: tuple[Address, ...] = ()
    password_algorithms: bool = False
    drain_timeout: float = 30.0
    metrics_listen: Address | None = None
    tcp_max_per_source: int = 64
    tcp_first_message_timeout: float = 5.0
    tls_handshake_timeout: float = 5.0
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def primary(self) -> Address:
        return self.listen[0]

    @property
    def turn_enabled(self) -> bool:
        """TURN runs only with a credential source: never an open relay."""
        return bool(self.users) or self.auth_secret is not None

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert is not None

    def validate(self) -> Config:
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
        if self.software is not None and len(self.software.encode()) > 128:
            raise ConfigError("software", "longer than 128 bytes")
        if self.log_level.lower() not in ("debug", "info", "warning", "error", "critical"):
            raise ConfigError("log-level", f"unknown level {self.log_level!r}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls-cert" if self.tls_cert is None else "tls-key",
                              "tls-cert and tls-key go together")
        for key in ("tls_cert", "tls_key"):
            value = getattr(self, key)
            if value is not None and not Path(value).is_file():
                raise ConfigError(key.replace("_", "-"), f"no such file: {value}")
        low, high = self.relay_ports
        if not 1 <= low <= high <= 65535:
            raise ConfigError("relay-ports", f"need LOW-HIGH within 1-65535: {low}-{high}")
        if self.default_family not in ("ipv4", "listener"):
            raise ConfigError("default-family", "must be 'ipv4' or 'listener'")
        if self.default_lifetime > self.max_lifetime:
            raise ConfigError("default-lifetime", "larger than max-lifetime")
        if self.max_message_size < 548 or self.max_message_size > 65539:
            raise ConfigError("max-message-size", "must be within 548-65539 bytes")
        if self.auth_secret is not None and not self.auth_secret:
            raise ConfigError("auth-secret", "is empty")
        if self.turn_enabled and self.relay_ip is None and wildcard:
            raise ConfigError(
                "relay-ip", "TURN needs --relay-ip (or a specific --listen address)"
            )
        if self.relay_ip in ("0.0.0.0", "::") and self.external_ip is None:
            raise ConfigError("relay-ip", "a wildcard relay address needs --external-ip")
        return self


def _users(key: str, value: Any) -> tuple[tuple[str, str], ...]:
    if isinstance(value, dict):
        items = [(str(k), str(v)) for k, v in value.items()]
    else:
        items = []
        for entry in value if isinstance(value, list) else [value]:
            name, sep, password = str(entry).partition(":")
            if not sep or not name:
                raise ConfigError(key, f"expected NAME:PASSWORD, got {entry!r}")
            items.append((name, password))
    return tuple(items)


def _relay_ports(key: str, value: Any) -> tuple[int, int]:
    if isinstance(value, list) and len(value) == 2:
        low, high = value
    else:
        low, sep, high = str(value).partition("-")
        if not sep:
            raise ConfigError(key, f"expected LOW-HIGH, got {value!r}")
    return parse_port(key, low, allow_zero=False), parse_port(key, high, allow_zero=False)


def _external_ip(key: str, value: Any) -> tuple[str, str | None]:
    public, _, private = str(value).partition("/")
    return parse_ip(key, public), parse_ip(key, private) if private else None


def _listen(key: str, value: Any) -> tuple[Address, ...]:
    entries = value if isinstance(value, list) else [value]
    if not entries:
        raise ConfigError(key, "needs at least one address")
    return tuple(parse_endpoint(key, str(e)) for e in entries)


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(key, f"expected true or false, got {value!r}")


def _optional_text(key: str, value: Any) -> str | None:
    return None if value in (None, "") else str(value)


# key -> (Config field, parser)
_PARSERS: dict[str, tuple[str, Any]] = {
    "listen": ("listen", _listen),
    "alt-ip": ("alt_ip", parse_ip),
    "alt-port": ("alt_port", lambda k, v: parse_port(k, v)),
    "software": ("software", _optional_text),
    "log-level": ("log_level", lambda k, v: str(v).lower()),
    "udp": ("udp", _bool),
    "tcp": ("tcp", _bool),
    "tcp-idle-timeout": ("tcp_idle_timeout", lambda k, v: parse_seconds(k, v, minimum=1)),
    "tcp-max-connections": ("tcp_max_connections", lambda k, v: parse_count(k, v, minimum=1)),
    "max-message-size": ("max_message_size", lambda k, v: parse_count(k, v, minimum=1)),
    "mapped-address": ("mapped_address", _bool),
    "tls-port": ("tls_port", lambda k, v: parse_port(k, v)),
    "tls-cert": ("tls_cert", lambda k, v: str(v)),
    "tls-key": ("tls_key", lambda k, v: str(v)),
    "realm": ("realm", lambda k, v: str(v)),
    "user": ("users", _users),
    "users": ("users", _users),
    "auth-secret": ("auth_secret", lambda k, v: str(v)),
    "nonce-lifetime": ("nonce_lifetime", lambda k, v: parse_seconds(k, v, minimum=1)),
    "relay-ip": ("relay_ip", parse_ip),
    "relay-ports": ("relay_ports", _relay_ports),
    "external-ip": ("external_ip", _external_ip),
    "allow-peer": ("allow_peer", lambda k, v: tuple(parse_network(k, x) for x in _list(v))),
    "deny-peer": ("deny_peer", lambda k, v: tuple(parse_network(k, x) for x in _list(v))),
    "default-lifetime": ("default_lifetime", lambda k, v: parse_seconds(k, v, minimum=1)),
    "max-lifetime": ("max_lifetime", lambda k, v: parse_seconds(k, v, minimum=1)),
    "permission-lifetime": ("permission_lifetime", lambda k, v: parse_seconds(k, v, minimum=1)),
    "channel-lifetime": ("channel_lifetime", lambda k, v: parse_seconds(k, v, minimum=1)),
    "max-allocations": ("max_allocations", lambda k, v: parse_count(k, v, minimum=1)),
    "user-quota": ("user_quota", lambda k, v: parse_count(k, v, minimum=1)),
    "max-permissions": ("max_permissions", lambda k, v: parse_count(k, v, minimum=1)),
    "max-channels": ("max_channels", lambda k, v: parse_count(k, v, minimum=1)),
    "bandwidth": ("bandwidth", lambda k, v: parse_count(k, v)),
    "unauth-rate": ("unauth_rate", parse_rate),
    "unauth-global-rate": ("unauth_global_rate", parse_rate),
    "default-family": ("default_family", lambda k, v: str(v)),
}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def settings_from_mapping(values: dict[str, Any], *, source: str = "") -> dict[str, Any]:
    """Parse ``{key: raw value}`` (TOML or flags) into Config field values."""
    out: dict[str, Any] = {}
    for raw_key, value in values.items():
        key = raw_key.replace("_", "-")
        entry = _PARSERS.get(key)
        if entry is None:
            raise ConfigError(f"{source}{raw_key}", "unknown setting")
        name, parser = entry
        out[name] = parser(f"{source}{key}", value)
    return out


def load_toml(path: str) -> dict[str, Any]:
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
    return replace(Config(), **merged).validate()
