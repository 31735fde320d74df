"""systemd's readiness protocol (``Type=notify``): a datagram to ``$NOTIFY_SOCKET``.

``notify("READY=1")`` once every listener is bound, ``notify("STOPPING=1")`` when
draining starts. Without ``NOTIFY_SOCKET`` (not started by systemd) it does nothing;
a failure to send is logged once and otherwise ignored: readiness reporting must never
stop the server.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("natsrv")


def notify(state: str) -> bool:
    """Send ``state`` (e.g. ``READY=1``) to systemd; False if there is nobody to tell."""
    target = os.environ.get("NOTIFY_SOCKET")
    if not target or target[0] not in "@/":
        return False
    address = "\0" + target[1:] if target[0] == "@" else target  # '@': abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", target, exc)
        return False
    return True


__all__ = ["notify"]
