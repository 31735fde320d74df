"""The native data path, when it is built and allowed (docs/architecture.md, "The native
data path").

``natsrv._fastpath`` (``natsrv/_fastpath.c``) is built by ``pip install`` when a C
compiler and the Python headers are there; ``NATSRV_PURE_PYTHON=1`` turns it off, and
``NATSRV_NO_GSO=1`` keeps it but turns off its UDP GSO (runs of datagrams to one
destination sent as one ``UDP_SEGMENT`` super-datagram). This
module loads it and gives the core its :class:`NativeForwarding` table: the core's
decisions (``core/forwarding.py``) turned into the native routing table, whose keys
are (socket, address, channel) and whose routes name the socket to send from.
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping
from types import ModuleType
from typing import TYPE_CHECKING

from ..core.effects import Address, FiveTuple, PeerRoute
from ..core.forwarding import NO_TRAFFIC, Traffic

if TYPE_CHECKING:
    from .._fastpath import Route
    from .shell import Shell

PURE_PYTHON_VARIABLE = "NATSRV_PURE_PYTHON"
NO_GSO_VARIABLE = "NATSRV_NO_GSO"
log = logging.getLogger("natsrv.fastpath")


def _turned_on(variable: str) -> bool:
    return os.environ.get(variable, "") not in ("", "0")


def native_module() -> ModuleType | None:
    """``natsrv._fastpath`` if it is built and not turned off, else None."""
    if _turned_on(PURE_PYTHON_VARIABLE):
        return None
    try:
        from .. import _fastpath
    except ImportError:
        return None
    return _fastpath


def describe(native: ModuleType | None, gso: bool) -> str:
    """The one log line that says which data path runs (and, native, whether with GSO)."""
    if native is not None:
        if gso:
            segments = "UDP GSO for runs to one destination"
        elif _turned_on(NO_GSO_VARIABLE):
            segments = "no UDP GSO: turned off by " + NO_GSO_VARIABLE
        else:
            segments = "no UDP GSO: this kernel has no UDP_SEGMENT"
        return (f"data path: native (natsrv._fastpath: recvmmsg/sendmmsg batches of "
                f"{native.BATCH}, {segments}, plain Binding and table forwarding in "
                f"C)")  # fmt: skip
    reason = ("turned off by " + PURE_PYTHON_VARIABLE if _turned_on(PURE_PYTHON_VARIABLE)
              else "natsrv._fastpath is not built")  # fmt: skip
    return f"data path: pure Python ({reason})"


def install(shell: Shell) -> None:
    """Choose the data path for ``shell`` once, at start, and say which in the log: with
    the native one, the listeners and relay reader drain through it and the TURN core
    gets the forwarding table."""
    native = native_module()
    gso = native is not None and native.set_gso(not _turned_on(NO_GSO_VARIABLE))
    log.info("%s", describe(native, gso))
    shell.native = native
    turn = shell.server.turn
    if native is not None and turn is not None:
        shell.forwarding = NativeForwarding(native, shell)
        turn.forwarding = shell.forwarding


class NativeForwarding:
    """The core's forwarding table (``core.forwarding.ForwardingTable``) on the native
    routing table ``routes``. Only UDP clients are served natively; entries are bounded
    per allocation and in all, beyond which packets simply keep going to the core."""

    MAX_PER_ALLOCATION = 256
    MAX_ENTRIES = 1 << 18
    _UDP = "udp"

    def __init__(self, native: ModuleType, shell: Shell) -> None:
        self._native = native
        self._shell = shell
        self.routes: dict[bytes, Route] = {}
        #: Allocation -> its keys and whether each counts to the peer (True) or client.
        self._keys: dict[FiveTuple, dict[bytes, bool]] = {}
        #: What entries replaced since the allocation was last forgotten.
        self._retired: dict[FiveTuple, list[int]] = {}

    def to_peer(self, five_tuple: FiveTuple, channel: int, route: PeerRoute, until: float) -> None:
        if five_tuple[0] != self._UDP:
            return
        listener = self._shell.senders.get(five_tuple[2])
        relay = self._shell.relays.sockets.get(route.relay)
        if listener is None or relay is None:
            return
        client = five_tuple[1]
        native = self._native
        key = native.route_key(listener.fileno(), client[0], client[1], channel)
        self._put(five_tuple, key, True,
                  native.Route(relay.fileno(), route.peer[0], route.peer[1], 0, until))  # fmt: skip

    def to_client(
        self, relay: Address, peer: Address, five_tuple: FiveTuple, channel: int | None,
        until: float,
    ) -> None:
        if five_tuple[0] != self._UDP:
            return
        listener = self._shell.senders.get(five_tuple[2])
        sock = self._shell.relays.sockets.get(relay)
        if listener is None or sock is None:
            return
        native = self._native
        key = native.route_key(sock.fileno(), peer[0], peer[1], 0)
        host, port = five_tuple[1]
        self._put(five_tuple, key, False,
                  native.Route(listener.fileno(), host, port, channel or 0, until))  # fmt: skip

    def _put(self, owner: FiveTuple, key: bytes, to_peer: bool, route: Route) -> None:
        keys = self._keys.get(owner)
        if keys is None:
            keys = self._keys[owner] = {}
        old = self.routes.get(key)
        if old is not None:
            if key not in keys:  # another allocation's entry (cannot happen: forgotten first)
                return
            self._retire(owner, old, to_peer)
        elif len(keys) >= self.MAX_PER_ALLOCATION or len(self.routes) >= self.MAX_ENTRIES:
            return
        keys[key] = to_peer
        self.routes[key] = route

    def _retire(self, owner: FiveTuple, route: Route, to_peer: bool) -> None:
        if not route.packets:
            return
        retired = self._retired.get(owner)
        if retired is None:
            retired = self._retired[owner] = [0, 0, 0, 0]
        i = 0 if to_peer else 2
        retired[i] += route.packets
        retired[i + 1] += route.bytes

    def forget(self, five_tuple: FiveTuple) -> Traffic:
        keys = self._keys.pop(five_tuple, None)
        if keys is not None:
            routes = self.routes
            for key, to_peer in keys.items():
                route = routes.pop(key, None)
                if route is not None:
                    self._retire(five_tuple, route, to_peer)
        retired = self._retired.pop(five_tuple, None)
        if retired is None:
            return NO_TRAFFIC
        return retired[0], retired[1], retired[2], retired[3]

    def traffic(self, five_tuple: FiveTuple) -> Traffic:
        out = list(self._retired.get(five_tuple, NO_TRAFFIC))
        routes = self.routes
        for key, to_peer in self._keys.get(five_tuple, {}).items():
            route = routes.get(key)
            if route is not None:
                i = 0 if to_peer else 2
                out[i] += route.packets
                out[i + 1] += route.bytes
        return out[0], out[1], out[2], out[3]


def count_io(
    counters: MutableMapping[str, int], recv_key: str, recv_errors: int, send_errors: int,
    dropped: int, gso_sends: int, gso_segments: int, gso_refused: int,
) -> None:
    """Add what one native drain call counted to the shell's counters (metrics.py)."""
    counters[recv_key] += recv_errors
    counters["udp_send_errors"] += send_errors
    counters["udp_send_dropped"] += dropped
    counters["udp_gso_sends"] += gso_sends
    counters["udp_gso_segments"] += gso_segments
    if gso_refused:
        if not counters["udp_gso_refused"]:  # once: a refusal per socket is possible
            log.warning("the kernel refused a UDP GSO send: that socket's datagrams (all of "
                        "them, if the device cannot) go one by one from now on")  # fmt: skip
        counters["udp_gso_refused"] += gso_refused


__all__ = [
    "NO_GSO_VARIABLE", "PURE_PYTHON_VARIABLE", "NativeForwarding", "count_io", "describe",
    "install", "native_module",
]  # fmt: skip
