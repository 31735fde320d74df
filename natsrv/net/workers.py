"""``natsrv serve --workers N``: one parent, N worker processes, one SO_REUSEPORT group.

The parent binds every listening socket (UDP and TCP on each listen address and its
RFC 5780 alternates, TLS) once per worker, each a member of the kernel's
``SO_REUSEPORT`` group for its address, and keeps them all open for its whole life.
Worker ``k`` is ``python -m natsrv serve`` with the same arguments, started with set
``k`` inherited (``pass_fds``) and a control socket; it serves exactly as one process
does (``net/serve.py``), on those sockets. When a worker dies the parent starts a
replacement on the same set: the group never changes, so the kernel's hash sends every
other worker's clients where it did before (closing a member would remap them all), and
datagrams or connections that reach the dead worker's sockets meanwhile wait in their
queues for the replacement.

What a client sees never depends on which worker answers:

* nonces: one key, made by the parent and given to every worker (RFC 8489 §9.2 nonces
  are stateless HMACs, ``core/nonce.py``), so a nonce one worker issued is good at
  another, e.g. after the client's NAT rebinds;
* relay ports: ``relay-ports`` is cut into one disjoint range per worker slot; a
  replacement gets its slot's range;
* quotas: ``user-quota`` and ``max-allocations`` are checked and taken in one step by
  the parent (:class:`HostLedger`), asked over a socket on the Allocate path only (never
  per packet); a worker that dies gives back all it held. ``bandwidth`` is per
  allocation, and an allocation lives in one worker. ``unauth-global-rate`` (401s per
  second from the whole server) is shared out, each worker answering its 1/N part;
  ``unauth-rate`` is per source IP and worker (a source's ports may hash to several).

Signals go to the parent and fan out: SIGHUP and SIGUSR2 reload in every worker (each
re-reads the configuration as one process does), the first SIGTERM drains every worker,
a second SIGTERM or SIGINT stops them; the parent exits once the last worker has (0
after a drain). The admin listener (``/metrics``, ``/sessions``, ``/healthz``,
``/readyz``) runs in the parent, which asks each worker for its figures and sums them:
one scrape counts every worker once. ``/sessions`` names the worker holding each
allocation.

Parent and worker talk in JSON lines over two socket pairs: ``ctl`` (the parent sends
the worker its set-up, then asks for metrics and sessions) and ``quota`` (the worker
asks, the parent answers).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..config import Config
from ..core.quota import Refusal
from ..metrics import Collector, SummedCollector, family_data
from .admin import AdminRoutes, serve_admin
from .sdnotify import notify
from .serve import (
    Listeners,
    ServerInfo,
    SocketSource,
    bind_listeners,
    credential_store,
    make_ssl_context,
    resolved_config,
)
from .steering import steer_by_source
from .udp import local_address

log = logging.getLogger("natsrv")

#: The environment variable naming a worker's control socket (set by the parent only).
WORKER_ENV = "NATSRV_WORKER_FD"
#: How long workers may take to start before the parent gives up.
START_TIMEOUT = 30.0
#: How long a worker may take to answer the parent (metrics, sessions) or the parent a
#: worker (quota).
ANSWER_TIMEOUT = 2.0
#: After a stop (SIGINT), how long workers get before SIGKILL.
STOP_TIMEOUT = 10.0
#: A worker that dies before it is ready is replaced only after this long.
RESTART_BACKOFF = 1.0
#: Longest JSON line either side accepts (a /sessions answer of 10,000 allocations).
MAX_LINE = 64 * 1024 * 1024
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def relay_range(ports: tuple[int, int], workers: int, slot: int) -> tuple[int, int]:
    """Worker ``slot``'s share of ``ports``: disjoint, together the whole range."""
    low, high = ports
    size = (high - low + 1) // workers
    first = low + slot * size
    return first, high if slot == workers - 1 else first + size - 1


def _line(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


# -- The host's quota ledger (parent) and its client (worker) ----------------------------
class HostLedger:
    """Allocations per user and in total across every worker, by worker slot, so that a
    worker that dies gives back what it held."""

    def __init__(self, workers: int) -> None:
        self.per_slot: list[Counter[str]] = [Counter() for _ in range(workers)]
        self.totals = [0] * workers

    def total(self) -> int:
        return sum(self.totals)

    def held(self, username: str) -> int:
        return sum(held[username] for held in self.per_slot)

    def acquire(self, slot: int, username: str, count: int, user_quota: int,
                total: int) -> Refusal | None:  # fmt: skip
        if self.total() + count > total:
            return "total"
        if self.held(username) + count > user_quota:
            return "user"
        self.per_slot[slot][username] += count
        self.totals[slot] += count
        return None

    def release(self, slot: int, username: str, count: int) -> None:
        held = self.per_slot[slot]
        count = min(count, held[username])
        held[username] -= count
        self.totals[slot] -= count
        if held[username] <= 0:
            del held[username]

    def forget(self, slot: int) -> None:
        self.per_slot[slot].clear()
        self.totals[slot] = 0


class RemoteLedger:
    """A worker's :class:`~natsrv.core.quota.AllocationLedger`: asks the parent's
    :class:`HostLedger` over a blocking socket (Allocate and allocation ends only)."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        sock.settimeout(ANSWER_TIMEOUT)
        self.sock = sock
        self.buffer = bytearray()
        self.next_id = 0

    def _ask(self, request: dict[str, Any]) -> dict[str, Any] | None:
        self.next_id += 1
        request["id"] = self.next_id
        try:
            self.sock.sendall(_line(request))
            while True:  # an answer that came too late to an earlier question is skipped
                end = self.buffer.find(b"\n")
                while end < 0:
                    data = self.sock.recv(65536)
                    if not data:
                        return None
                    self.buffer += data
                    end = self.buffer.find(b"\n")
                answer = json.loads(self.buffer[:end])
                del self.buffer[: end + 1]
                if answer.get("id") == self.next_id:
                    return dict(answer)
        except (OSError, ValueError) as exc:
            log.error("the parent did not answer a quota question: %s", exc)
            return None

    def acquire(self, username: str, count: int, user_quota: int, total: int) -> Refusal | None:
        answer = self._ask({"op": "acquire", "user": username, "count": count,
                            "quota": user_quota, "total": total})  # fmt: skip
        if answer is None:
            return "total"  # no answer: refuse with 508 rather than overrun a quota
        refused = answer.get("refused")
        return "user" if refused == "user" else "total" if refused == "total" else None

    def release(self, username: str, count: int) -> None:
        try:
            self.sock.sendall(_line({"op": "release", "user": username, "count": count}))
        except OSError as exc:
            log.error("cannot tell the parent an allocation ended: %s", exc)

    def held(self, username: str) -> int:
        answer = self._ask({"op": "held", "user": username})
        return int(answer.get("held", 0)) if answer is not None else 0


class _Lines:
    """JSON lines from a trio stream, bounded in length."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def receive(self) -> Any:
        """The next line's object; None at end of stream."""
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0:
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 1]
                return json.loads(line)
            if len(self.buffer) > MAX_LINE:
                raise ValueError("line too long")
            data = await self.stream.receive_some(1 << 20)
            if not data:
                return None
            self.buffer += data

    async def send(self, obj: object) -> None:
        await self.stream.send_all(_line(obj))


# -- The worker side --------------------------------------------------------------------
@dataclass
class WorkerSetup:
    """What the parent gave this worker process."""

    slot: int
    workers: int
    nonce_key: bytes
    sockets: list[socket.socket]
    ctl: socket.socket
    ledger: RemoteLedger
    overrides: dict[str, Any]

    def apply(self, config: Config) -> Config:
        """``config`` (as read from the file and flags) as this worker serves it: the
        parent's resolved ports, its slot's relay ports, no admin listener, and its
        share of ``unauth-global-rate`` (so that the host answers no more 401s than
        configured)."""
        share = config.unauth_global_rate / self.workers
        return replace(config, **self.overrides, unauth_global_rate=share)

    def serve_options(self) -> dict[str, Any]:
        return {"sockets": SocketSource(inherited=self.sockets), "nonce_key": self.nonce_key,
                "ledger": self.ledger}  # fmt: skip

    async def serve_control(
        self, info: ServerInfo, stop: trio.CancelScope, drain: Callable[[], None]
    ) -> None:
        """Tell the parent this worker is ready, then answer its questions and do what
        it says (``drain``: what the first SIGTERM does); stop when the parent is gone."""
        lines = _Lines(trio.SocketStream(trio.socket.from_stdlib_socket(self.ctl)))
        await lines.send({"ready": os.getpid()})
        while True:
            try:
                request = await lines.receive()
            except (trio.BrokenResourceError, OSError, ValueError):
                request = None
            if request is None:
                log.warning("worker %d: the parent is gone: stopping", self.slot)
                stop.cancel()
                return
            what = request.get("get")
            data: Any = None
            if what == "metrics":
                data = family_data(Collector(info.metrics, lambda: info.server))
            elif what == "refuse":  # draining comes next: no new allocation from now on
                if info.server is not None and info.server.turn is not None:
                    info.server.turn.draining = True
                data = True
            elif what == "drain":  # a SIGTERM sent to this worker as well drains it once
                drain()
                data = True
            elif what == "sessions":
                turn = info.server.turn if info.server is not None else None
                data = turn.sessions(time.time()) if turn is not None else []
            try:
                await lines.send({"id": request.get("id"), "data": data})
            except (trio.BrokenResourceError, OSError):
                continue  # the next receive sees the parent gone


def worker_setup() -> WorkerSetup | None:
    """This process's set-up from the parent, if it is a worker (None otherwise)."""
    fd = os.environ.pop(WORKER_ENV, None)
    if fd is None:
        return None
    # A reload signal before the signal handlers are in place must not kill the worker.
    for signum in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, signal.SIG_IGN)
    ctl = socket.socket(fileno=int(fd))
    ctl.setblocking(True)
    data = b""
    while not data.endswith(b"\n"):
        chunk = ctl.recv(65536)
        if not chunk:
            raise SystemExit("natsrv: worker: the parent went away before the set-up")
        data += chunk
    setup = json.loads(data)
    slot = int(setup["slot"])

    def name_the_worker(record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("listening on "):
            return False  # the parent names each listener once
        record.msg = f"worker {slot}: {record.msg}"
        return True

    for handler in logging.getLogger().handlers:
        handler.addFilter(name_the_worker)
    overrides = {
        "listen": tuple((ip, port) for ip, port in setup["listen"]),
        "alt_port": setup["alt_port"], "tls_port": setup["tls_port"],
        "relay_ports": tuple(setup["relay_ports"]), "metrics_listen": None, "workers": 1,
    }  # fmt: skip
    return WorkerSetup(
        slot=setup["slot"], workers=setup["workers"],
        nonce_key=bytes.fromhex(setup["nonce_key"]),
        sockets=[socket.socket(fileno=n) for n in setup["fds"]],
        ctl=ctl, ledger=RemoteLedger(socket.socket(fileno=setup["quota_fd"])),
        overrides=overrides,
    )  # fmt: skip


# -- The parent ---------------------------------------------------------------------------
@dataclass
class _Slot:
    index: int
    listeners: Listeners
    relay_ports: tuple[int, int]
    process: trio.Process | None = None
    lines: _Lines | None = None
    lock: trio.Lock = field(default_factory=trio.Lock)
    ready: bool = False
    next_id: int = 0
    #: Reload signals that came while this slot's worker was starting (it could not
    #: take them yet): sent once it is ready.
    pending: set[int] = field(default_factory=set)


class Supervisor:
    """The parent: starts the workers, replaces any that dies, fans signals out, and
    serves the admin listener for the whole host."""

    def __init__(self, config: Config, argv: Sequence[str], sets: list[Listeners]) -> None:
        self.config = config
        self.argv = list(argv)
        resolved = resolved_config(config, sets[0])
        self.handshake = {
            "workers": len(sets),
            "nonce_key": secrets.token_bytes(32).hex(),
            "listen": [list(a) for a in resolved.listen],
            "alt_port": resolved.alt_port, "tls_port": resolved.tls_port,
        }  # fmt: skip
        self.slots = [_Slot(k, bound, relay_range(config.relay_ports, len(sets), k))
                      for k, bound in enumerate(sets)]  # fmt: skip
        self.ledger = HostLedger(len(sets))
        self.draining = False
        self.stopping = False
        self.restarts = 0
        self.failure: int | None = None
        self.all_ready = trio.Event()
        self.all_exited = trio.Event()
        self.running = 0
        self.summed = SummedCollector(self._own_families)
        self.sessions: list[dict[str, Any]] = []
        self.admin_listeners: list[trio.SocketListener] = []
        self.nursery: trio.Nursery | None = None

    # -- one worker slot --------------------------------------------------------------
    async def _spawn(self, slot: _Slot) -> tuple[trio.Process, _Lines, _Lines]:
        ctl_parent, ctl_child = socket.socketpair()
        quota_parent, quota_child = socket.socketpair()
        fds = [s.fileno() for s in slot.listeners.sockets()]
        quota_fd = quota_child.fileno()
        env = {**os.environ, WORKER_ENV: str(ctl_child.fileno())}
        env.pop("NOTIFY_SOCKET", None)  # systemd hears from the parent only
        try:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "natsrv", "serve", *self.argv],
                pass_fds=[*fds, ctl_child.fileno(), quota_child.fileno()], env=env,
            )  # fmt: skip
        except BaseException:
            ctl_parent.close()
            quota_parent.close()
            raise
        finally:
            ctl_child.close()
            quota_child.close()
        ctl = _Lines(trio.SocketStream(trio.socket.from_stdlib_socket(ctl_parent)))
        quota = _Lines(trio.SocketStream(trio.socket.from_stdlib_socket(quota_parent)))
        try:
            await ctl.send({**self.handshake, "slot": slot.index, "fds": fds,
                            "quota_fd": quota_fd,
                            "relay_ports": list(slot.relay_ports)})  # fmt: skip
        except BaseException:
            process.kill()
            ctl_parent.close()
            quota_parent.close()
            raise
        return process, ctl, quota

    async def _keep_running(self, slot: _Slot) -> None:
        """Run slot's worker, and a replacement whenever it dies, until stopping."""
        self.running += 1
        try:
            while not (self.draining or self.stopping):
                try:
                    process, ctl, quota = await self._spawn(slot)
                except (OSError, trio.BrokenResourceError) as exc:
                    log.error("cannot start worker %d: %s", slot.index, exc)
                    self._fail(1)
                    return
                slot.process, slot.lines = process, ctl
                slot.pending.clear()  # a new worker reads the configuration as it is now
                if self.draining or self.stopping:  # a signal came while it was starting
                    os.kill(process.pid, signal.SIGINT if self.stopping else signal.SIGTERM)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._answer_quota, slot, quota)
                    nursery.start_soon(self._await_ready, slot, ctl)
                    status = await process.wait()
                    nursery.cancel_scope.cancel()
                was_ready, slot.ready, slot.lines = slot.ready, False, None
                self.ledger.forget(slot.index)
                for lines in (ctl, quota):
                    lines.stream.socket.close()
                if self.draining or self.stopping:
                    if status != 0:
                        log.warning("worker %d (pid %d) exited with status %d", slot.index,
                                    process.pid, status)  # fmt: skip
                    return
                if not self.all_ready.is_set() and not was_ready:
                    log.error("worker %d (pid %d) failed to start (exit status %d)",
                              slot.index, process.pid, status)  # fmt: skip
                    self._fail(status if status > 0 else 1)
                    return
                how = f"signal {-status}" if status < 0 else f"exit status {status}"
                log.warning("worker %d (pid %d) ended (%s): starting a replacement on the "
                            "same sockets", slot.index, process.pid, how)  # fmt: skip
                self.restarts += 1
                if not was_ready:
                    await trio.sleep(RESTART_BACKOFF)  # one that dies starting: no busy loop
        finally:
            slot.process = None
            self.running -= 1
            if self.running == 0:
                self.all_exited.set()

    async def _await_ready(self, slot: _Slot, ctl: _Lines) -> None:
        async with slot.lock:
            try:
                hello = await ctl.receive()
            except (trio.BrokenResourceError, OSError, ValueError):
                return
        if isinstance(hello, dict) and "ready" in hello:
            slot.ready = True
            for signum in sorted(slot.pending):
                if slot.process is not None and slot.process.returncode is None:
                    os.kill(slot.process.pid, signum)
            slot.pending.clear()
            if slot.process is not None and self.all_ready.is_set():
                log.info("worker %d ready again: pid %d", slot.index, slot.process.pid)
            if all(s.ready for s in self.slots):
                self.all_ready.set()

    async def _answer_quota(self, slot: _Slot, quota: _Lines) -> None:
        ledger = self.ledger
        while True:
            try:
                request = await quota.receive()
            except (trio.BrokenResourceError, OSError, ValueError):
                return
            if not isinstance(request, dict):
                return
            op = request.get("op")
            user = str(request.get("user", ""))
            answer: dict[str, Any] = {"id": request.get("id")}
            try:
                if op == "release":
                    ledger.release(slot.index, user, max(0, int(request["count"])))
                    continue
                if op == "acquire":
                    answer["refused"] = ledger.acquire(
                        slot.index, user, int(request["count"]), int(request["quota"]),
                        int(request["total"]),
                    )  # fmt: skip
                else:
                    answer["held"] = ledger.held(user)
            except (KeyError, TypeError, ValueError):  # a bug in a worker, not in the parent
                log.error("worker %d asked a malformed quota question", slot.index)
                answer["refused"] = "total"
            try:
                await quota.send(answer)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return

    def _fail(self, status: int) -> None:
        if self.failure is None:
            self.failure = status
        self._signal_all(signal.SIGINT)
        self.stopping = True
        self.all_ready.set()

    # -- asking the workers -----------------------------------------------------------
    async def _ask(self, slot: _Slot, what: str) -> Any:
        if not slot.ready or slot.lines is None:
            return None
        async with slot.lock:
            lines = slot.lines
            if lines is None:
                return None
            slot.next_id += 1
            with trio.move_on_after(ANSWER_TIMEOUT):
                try:
                    await lines.send({"id": slot.next_id, "get": what})
                    while True:
                        answer = await lines.receive()
                        if answer is None:
                            return None
                        if answer.get("id") == slot.next_id:
                            return answer.get("data")
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, ValueError):
                    return None
            log.warning("worker %d did not answer for %s in time", slot.index, what)
            return None

    async def refresh(self, path: str) -> None:
        """Before an admin answer: gather what every worker reports."""
        if path == "/metrics":
            parts = [await self._ask(slot, "metrics") for slot in self.slots]
            self.summed.parts = [p for p in parts if p is not None]
        elif path == "/sessions":
            sessions: list[dict[str, Any]] = []
            for slot in self.slots:
                found = await self._ask(slot, "sessions")
                pid = slot.process.pid if slot.process is not None else None
                for entry in found or ():
                    sessions.append({**entry, "worker": slot.index, "worker_pid": pid})
            self.sessions = sessions

    def _own_families(self) -> list[Metric]:
        live = sum(1 for s in self.slots if s.ready)
        return [
            GaugeMetricFamily("natsrv_workers", "Worker processes serving", value=live),
            CounterMetricFamily("natsrv_worker_restarts", "Workers replaced after dying",
                                value=self.restarts),
        ]  # fmt: skip

    # -- signals ----------------------------------------------------------------------
    def _signal_all(self, signum: int) -> None:
        for slot in self.slots:
            if slot.process is not None and slot.process.returncode is None:
                try:
                    os.kill(slot.process.pid, signum)
                except ProcessLookupError:
                    pass

    def _reload_all(self, signum: int) -> None:
        """SIGHUP or SIGUSR2 to every ready worker; a worker still starting gets it once
        it is ready (before, the signal would be lost or kill it)."""
        for slot in self.slots:
            if slot.process is None or slot.process.returncode is not None:
                continue
            if slot.ready:
                try:
                    os.kill(slot.process.pid, signum)
                except ProcessLookupError:
                    pass
            else:
                slot.pending.add(signum)

    def drain(self) -> None:
        """The first SIGTERM (or ``POST /drain``): every worker drains."""
        if self.draining or self.stopping or self.nursery is None:
            return
        self.draining = True
        self.all_ready.set()  # nothing more to wait for
        self.nursery.start_soon(self._drain_workers)

    async def _drain_workers(self) -> None:
        # Every worker refuses new allocations before any says it drains; then each
        # drains as one process does on SIGTERM (log lines, drain-timeout, exit 0). The
        # word goes over the control socket, not as a signal: a worker that got SIGTERM
        # too (a signal to the process group) must not take the parent's as a second.
        for slot in self.slots:
            await self._ask(slot, "refuse")
        notify("STOPPING=1")
        log.info("draining: every worker refuses new allocations and stops when its last "
                 "one ends (at most %g s)", self.config.drain_timeout)  # fmt: skip
        for slot in self.slots:
            if await self._ask(slot, "drain") is None and slot.process is not None:
                os.kill(slot.process.pid, signal.SIGTERM)  # not answering: the signal

    async def _stop(self) -> None:
        self.stopping = True
        self._signal_all(signal.SIGINT)
        self.all_ready.set()
        await trio.sleep(STOP_TIMEOUT)
        log.warning("workers still running %g s after the stop: killing them", STOP_TIMEOUT)
        self._signal_all(signal.SIGKILL)

    async def _handle_signals(self, signals: Any, nursery: trio.Nursery) -> None:
        async for signum in signals:
            if signum in (signal.SIGHUP, signal.SIGUSR2):
                log.info("%s: passed to every worker", signal.Signals(signum).name)
                self._reload_all(signum)
            elif signum == signal.SIGUSR1:
                log.info("SIGUSR1 ignored (SIGHUP reloads, SIGUSR2 reloads TLS)")
            elif signum == signal.SIGTERM and not self.draining and not self.stopping:
                self.drain()
            elif not self.stopping:
                log.info("stopping on %s", signal.Signals(signum).name)
                nursery.start_soon(self._stop)

    # -- the whole ----------------------------------------------------------------------
    async def run(self, signals: Any) -> int:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            nursery.start_soon(self._handle_signals, signals, nursery)
            for slot in self.slots:
                nursery.start_soon(self._keep_running, slot)
            with trio.move_on_after(START_TIMEOUT):
                await self.all_ready.wait()
            if not self.all_ready.is_set():
                log.error("workers did not start within %g s", START_TIMEOUT)
                self._fail(1)
            if self.failure is None and not (self.stopping or self.draining):
                self._started(nursery)
            await self.all_exited.wait()
            nursery.cancel_scope.cancel()
        return self.failure or 0

    def _started(self, nursery: trio.Nursery) -> None:
        workers = ", ".join(
            f"worker {s.index} pid {s.process.pid} relay ports {s.relay_ports[0]}-"
            f"{s.relay_ports[1]}" for s in self.slots if s.process is not None
        )  # fmt: skip
        log.info("%d workers: %s", len(self.slots), workers)
        notify("READY=1")
        if self.admin_listeners:
            routes = AdminRoutes(
                self.summed, sessions=lambda: self.sessions,
                ready=lambda: not (self.draining or self.stopping)
                and all(s.ready for s in self.slots),
                drain=self.drain, refresh=self.refresh,
            )  # fmt: skip
            nursery.start_soon(serve_admin, self.admin_listeners, routes)
            for lst in self.admin_listeners:
                log.info("admin (metrics, sessions, health) on http://%s:%d/",
                         *local_address(lst.socket))  # fmt: skip


async def supervise(config: Config, argv: Sequence[str]) -> int:
    """Bind every worker's sockets, run the workers until they are stopped; the exit
    status. ``argv`` are the ``natsrv serve`` arguments the workers get."""
    workers = config.worker_count
    sets: list[Listeners] = []
    # Signals are taken from the start: one that came before would kill the parent.
    with trio.open_signal_receiver(*_FORWARDED) as signals:
        return await _supervise(config, argv, workers, sets, signals)


async def _supervise(config: Config, argv: Sequence[str], workers: int,
                     sets: list[Listeners], signals: Any) -> int:  # fmt: skip
    try:
        first = bind_listeners(config, SocketSource(reuse_port=True))
        sets.append(first)
        resolved = resolved_config(config, first)
        for _ in range(workers - 1):
            sets.append(bind_listeners(resolved, SocketSource(reuse_port=True)))
        # Every 5-tuple of one client address to one worker (the first member of each
        # group holds the group's program).
        for sock in sets[0].sockets():
            if not steer_by_source(sock, workers):
                break
        if config.tls_enabled:
            make_ssl_context(config)  # a certificate that does not load: one line, exit 2
        if config.turn_enabled:
            credential_store(config)  # a user database that does not open: the same
        supervisor = Supervisor(config, argv, sets)
        # Bound: the kernel queues what comes before the workers read it.
        for s in sets[0].udp:
            log.info("listening on udp %s:%d", *local_address(s))
        for s in sets[0].tcp:
            log.info("listening on tcp %s:%d", *local_address(s))
        for s, _ in sets[0].tls:
            log.info("listening on tls %s:%d", *local_address(s))
        if config.metrics_listen is not None:
            ip, port = config.metrics_listen
            supervisor.admin_listeners = await trio.open_tcp_listeners(port, host=ip)
        try:
            return await supervisor.run(signals)
        finally:
            for lst in supervisor.admin_listeners:
                lst.socket.close()
    finally:
        for bound in sets:
            bound.close()


__all__ = ["HostLedger", "RemoteLedger", "Supervisor", "WorkerSetup", "relay_range",
           "supervise", "worker_setup"]
