"""The admin HTTP listener (``--metrics-listen``): ``/metrics``, ``/sessions``,
``/healthz``, ``/readyz``.

A deliberately small HTTP/1.1 server on trio: GET and HEAD (and ``POST /drain``), one request per
connection (``Connection: close``), the request head bounded in size and time, a bounded
number of connections at once. It is meant for loopback or a private network (a
Prometheus scraper, a Kubernetes probe, ``natsrv sessions``), never for the internet.

* ``/metrics``: the Prometheus text format, from ``prometheus_client`` over
  ``natsrv.metrics.Collector``.
* ``/sessions``: the live allocations as JSON (``TurnServer.sessions``).
* ``/healthz``: 200 while the process runs its loop.
* ``/readyz``: 200 while listening and not draining, else 503.
* ``POST /drain``: start draining (what the first SIGTERM does).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

log = logging.getLogger("natsrv.admin")

MAX_HEAD = 8192  #: bytes of request line and headers
HEAD_TIMEOUT = 5.0  #: seconds to send them
MAX_CONNECTIONS = 32


@dataclass
class AdminRoutes:
    """What the admin listener reports, as callables read per request."""

    collector: Collector
    sessions: Callable[[], list[dict[str, object]]]
    ready: Callable[[], bool]
    drain: Callable[[], None] = lambda: None
    #: Awaited with the path before each answer (the workers' parent gathers their
    #: figures then, ``net/workers.py``).
    refresh: Callable[[str], Awaitable[None]] | None = None


def _response(status: str, body: bytes, content_type: str, head_only: bool) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode("ascii")
    return head if head_only else head + body


def answer(routes: AdminRoutes, registry: CollectorRegistry, head: bytes) -> bytes:
    """The whole HTTP response to a request ``head`` (request line and headers)."""
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return _response("400 Bad Request", b"bad request\n", "text/plain", False)
    method, target, _ = parts
    head_only = method == "HEAD"
    path = target.split("?", 1)[0]
    if method == "POST" and path == "/drain":
        routes.drain()
        return _response("202 Accepted", b"draining\n", "text/plain", False)
    if method not in ("GET", "HEAD"):
        return _response("405 Method Not Allowed", b"GET only\n", "text/plain", False)
    if path == "/metrics":
        return _response("200 OK", generate_latest(registry), CONTENT_TYPE_LATEST, head_only)
    if path == "/sessions":
        body = json.dumps({"sessions": routes.sessions()}, indent=1).encode()
        return _response("200 OK", body + b"\n", "application/json", head_only)
    if path == "/healthz":
        return _response("200 OK", b"ok\n", "text/plain", head_only)
    if path == "/readyz":
        if routes.ready():
            return _response("200 OK", b"ready\n", "text/plain", head_only)
        return _response("503 Service Unavailable", b"not ready\n", "text/plain", head_only)
    return _response("404 Not Found", b"not found\n", "text/plain", head_only)


async def serve_admin(
    listeners: list[trio.SocketListener],
    routes: AdminRoutes,
) -> None:
    """Serve the admin endpoints on ``listeners`` until cancelled."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(routes.collector)
    open_count = 0

    async def handle(stream: trio.SocketStream) -> None:
        nonlocal open_count
        try:
            head = b""
            with trio.move_on_after(HEAD_TIMEOUT):
                while b"\r\n\r\n" not in head and len(head) <= MAX_HEAD:
                    data = await stream.receive_some(4096)
                    if not data:
                        break
                    head += data
            if b"\r\n\r\n" in head and len(head) <= MAX_HEAD + 4096:
                if routes.refresh is not None:
                    target = head.split(b" ", 2)[1:2]
                    await routes.refresh(target[0].decode("latin-1").split("?")[0]
                                         if target else "")  # fmt: skip
                await stream.send_all(answer(routes, registry, head))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        except Exception:  # a bug in one request must not stop the listener
            log.exception("error answering an admin request")
        finally:
            open_count -= 1
            await trio.aclose_forcefully(stream)

    async def accept_loop(listener: trio.SocketListener) -> None:
        nonlocal open_count
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    log.warning("admin accept failed: %s", exc)
                    await trio.sleep(0.1)
                    continue
                if open_count >= MAX_CONNECTIONS:
                    await trio.aclose_forcefully(stream)
                    continue
                open_count += 1
                nursery.start_soon(handle, stream)

    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(accept_loop, listener)


__all__ = ["AdminRoutes", "answer", "serve_admin"]
