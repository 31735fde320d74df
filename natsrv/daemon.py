"""``natsrv serve`` as a process: signals, reload, drain, start-up checks, exit codes.

Signals (the parent process's; with systemd, ``systemctl reload`` and ``stop``):

* SIGHUP re-reads the configuration file and applies what can change live (peer
  policy, quotas, lifetimes, rates, REST secrets, users, realm, log level, the TLS
  certificate for new connections). A file that does not load, or a certificate that
  does not, is refused with one log line naming the problem; the old configuration
  stays in force. Changed settings that need a restart are named in a log line.
* SIGUSR2 reloads the TLS certificate and key alone (certbot's deploy hook).
* SIGUSR1 is logged and otherwise ignored (a logrotate hook must not stop the server).
* The first SIGTERM drains: new allocations get 300 (with ``alternate-server``) or 508,
  Bindings are still answered and existing allocations run on until they end or
  ``drain-timeout`` passes; then the process exits 0. A second SIGTERM, or SIGINT,
  stops at once.

Start-up problems (a port in use, an address not on this host, an unreadable
certificate) are one line naming the address or key, and exit status 2.
"""

from __future__ import annotations

import errno
import logging
import signal
import socket
import ssl
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING

import trio

from . import __version__
from .config import Config, ConfigError

if TYPE_CHECKING:
    from .net.serve import ServerInfo

log = logging.getLogger("natsrv")

EXIT_USAGE = 2
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def _is_local_address(ip: str) -> bool:
    """Whether ``ip`` is an address of this host: one a UDP socket can bind to."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((ip, 0))
        except OSError:
            return False
    return True


def startup_warnings(config: Config) -> list[str]:
    """What an operator should hear about at start (each one log line)."""
    out = []
    if config.users:
        out.append("static --user passwords are visible to other local users (ps, "
                   "/proc); use user-db or auth-secret-file in production")  # fmt: skip
    if config.turn_enabled:
        relays = list(config.relay_ip) or [
            next((ip for ip, _ in config.listen if ip not in ("0.0.0.0", "::")), "::")
        ]
        for relay in relays:
            if relay not in ("0.0.0.0", "::") and not config.external_ip \
                    and not _is_local_address(relay):
                out.append(f"relay address {relay} is not an address of this host and no "
                           "external-ip maps it: clients will get a relay they cannot use")
    return out


def _oserror_line(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    if exc.errno == errno.EADDRINUSE:
        return f"cannot listen: {text} (is another server running on that port?)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen: {text} (an address in listen, alt-ip or relay-ip is not " \
               "an address of this host)"
    return text


def _leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _leaf(first) if isinstance(first, BaseExceptionGroup) else first


def _first_oserror(exc: BaseException) -> OSError | None:
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first_oserror(inner)
            if found is not None:
                return found
    return None


def run(config: Config, reload_config: Callable[[], Config], argv: Sequence[str] = ()) -> int:
    """Serve ``config`` until stopped; ``reload_config`` reads the configuration anew
    (SIGHUP). Returns the process's exit status. With ``workers`` above 1 this process
    is the parent of that many workers (``net/workers.py``), each started with the
    ``natsrv serve`` arguments ``argv``; a worker serves as one process does, on the
    sockets its parent gave it."""
    from .net import workers
    from .net.serve import serve

    setup = workers.worker_setup()
    if setup is not None:
        config = setup.apply(config)
        reload_worker = reload_config
        reload_config = lambda: setup.apply(reload_worker())  # noqa: E731
    else:
        log.info("natsrv %s starting", __version__)
        for warning in startup_warnings(config):
            log.warning("%s", warning)
        if not config.turn_enabled:
            log.info("TURN is off: no credential source (users, user-db, auth-secret) is "
                     "configured, so this is a STUN server only")  # fmt: skip
    options = setup.serve_options() if setup is not None else {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            with trio.open_signal_receiver(*_SIGNALS) as signals:
                info: ServerInfo = await nursery.start(partial(serve, config, **options))
                draining = False

                def drain() -> None:
                    """The first SIGTERM (or, in a worker, the parent's word)."""
                    nonlocal draining
                    if draining:
                        return
                    draining = True
                    log.info("SIGTERM: draining for at most %g s (another SIGTERM or "
                             "SIGINT stops at once)", config.drain_timeout)  # fmt: skip
                    info.drain()
                    nursery.start_soon(_stop_when_drained, info, config.drain_timeout,
                                       nursery.cancel_scope)  # fmt: skip

                if setup is not None:
                    nursery.start_soon(setup.serve_control, info, nursery.cancel_scope, drain)
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if signum == signal.SIGHUP:
                        _reload(info, reload_config, tls_only=False)
                    elif signum == signal.SIGUSR2:
                        _reload(info, reload_config, tls_only=True)
                    elif signum == signal.SIGUSR1:
                        log.info("SIGUSR1 ignored (SIGHUP reloads, SIGUSR2 reloads TLS)")
                    elif signum == signal.SIGTERM and not draining:
                        drain()
                    else:
                        log.info("stopping on %s", name)
                        nursery.cancel_scope.cancel()
                        break

    try:
        if setup is None and config.worker_count > 1:
            return trio.run(workers.supervise, config, argv)
        trio.run(main)
    except (OSError, BaseExceptionGroup) as exc:
        found = _first_oserror(exc)
        if found is None:
            from .userdb import UserDbError

            if isinstance(exc, BaseExceptionGroup):
                problem = exc.subgroup(UserDbError)
                if problem is not None:  # one line from the CLI, not a traceback
                    raise _leaf(problem) from None
            raise
        print(f"natsrv: {_oserror_line(found)}", file=sys.stderr)
        return EXIT_USAGE if found.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL,
                                             errno.EACCES) else 1  # fmt: skip
    except ssl.SSLError as exc:
        print(f"natsrv: config: tls-cert: cannot load: {exc.reason or exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0


async def _stop_when_drained(info: ServerInfo, timeout: float, scope: trio.CancelScope) -> None:
    with trio.move_on_after(timeout) as waited:
        await info.drained.wait()
    if waited.cancelled_caught:
        log.info("drain timeout reached: stopping with allocations still open")
    else:
        log.info("drained: no allocation left, stopping")
    scope.cancel()


def _reload(info: ServerInfo, reload_config: Callable[[], Config], *, tls_only: bool) -> None:
    what = "TLS certificate" if tls_only else "configuration"
    try:
        new = reload_config()
    except ConfigError as exc:
        log.error("reload refused, the old configuration stays: config: %s", exc)
        return
    try:
        if tls_only and info.config is not None:
            new = replace(info.config, tls_cert=new.tls_cert, tls_key=new.tls_key)
        restart = info.reload(new)
    except (ssl.SSLError, OSError) as exc:
        log.error("reload refused, the old configuration stays: tls-cert: %s", exc)
        return
    log.info("reloaded the %s", what)
    if restart:
        log.warning("changed settings that need a restart to apply: %s", ", ".join(restart))


__all__ = ["run", "startup_warnings"]
