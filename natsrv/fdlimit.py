"""The open-file limit ``natsrv serve`` runs with.

Every TURN allocation holds a UDP relay socket and every TCP/TLS client a connection,
so the common default soft ``RLIMIT_NOFILE`` of 1024 would stop a server at about 1000
allocations. At start the soft limit is raised as far as the hard limit allows.
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger("natsrv")

#: The soft limit asked for when the hard limit is unlimited and ``/proc/sys/fs/nr_open``
#: (the kernel's ceiling, whose default this is) cannot be read.
DEFAULT_CEILING = 1 << 20

#: Descriptors the server needs besides allocations and connections: listeners, the
#: trio wakeup pipe, stdio, log files.
SPARE_FILES = 64


def nofile_soft_limit(soft: int, hard: int, *, ceiling: int = DEFAULT_CEILING) -> int:
    """The soft open-file limit to run with, given the current ``(soft, hard)``: the hard
    limit, or ``ceiling`` when the hard limit is ``RLIM_INFINITY``; never above the hard
    limit and never below ``soft``."""
    if soft == resource.RLIM_INFINITY:
        return soft
    target = ceiling if hard == resource.RLIM_INFINITY else hard
    return max(soft, target)


def _kernel_ceiling() -> int:
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read())
    except (OSError, ValueError):
        return DEFAULT_CEILING


def raise_nofile_limit(need: int) -> int:
    """Raise the soft ``RLIMIT_NOFILE`` (see ``nofile_soft_limit``) and return the soft
    limit in force. A refused ``setrlimit`` is not fatal; a limit below ``need`` is
    logged as one warning."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = nofile_soft_limit(soft, hard, ceiling=_kernel_ceiling())
    if wanted != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (OSError, ValueError) as exc:
            log.debug("cannot raise the open-file limit to %d: %s", wanted, exc)
    if soft != resource.RLIM_INFINITY and soft < need:
        log.warning(
            "open-file limit is %d, below the %d this configuration may need "
            "(max-allocations + tcp-max-connections + %d); raise the hard limit "
            "(ulimit -Hn, systemd LimitNOFILE=) or lower max-allocations or "
            "tcp-max-connections",
            soft,
            need,
            SPARE_FILES,
        )
    return soft


__all__ = ["DEFAULT_CEILING", "SPARE_FILES", "nofile_soft_limit", "raise_nofile_limit"]
