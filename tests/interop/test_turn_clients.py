"""Real TURN clients written by others, through a TURN server on loopback.

The server under test runs as a subprocess (``tests/interop/turn_servers.py``): coturn,
the reference, and natsrv with one worker process and with two (``--workers 2``: one
SO_REUSEPORT group, so clients land on either), from the same parametrized fixture so
that every test runs against each. The clients:

1. aioice gathers a relayed candidate over UDP, TCP and TLS with long-term credentials;
   a wrong password gets 401; allocations made and deleted in quick succession.
2. Two aioice agents, both restricted to relay candidates, complete ICE through the
   server and exchange datagrams.
3. coturn's ``turnutils_uclient``: client-to-client load over UDP and TCP, with
   ChannelData and with Send/Data indications; and RFC 6062 TCP relays (``-T``) with
   TCP and TLS control connections; nothing may be lost.
4. Chromium (headless, through Playwright): two RTCPeerConnections with
   ``iceTransportPolicy: "relay"`` open a data channel and echo 100 messages over
   ``turn:...?transport=udp``, ``turn:...?transport=tcp`` and ``turns:...``;
   getStats() must show a relay/relay pair.
5. TURN REST credentials (shared secret): a fresh one works, an expired one or one
   signed with another secret gets 401.
6. A client that vanishes from a TCP or TLS connection (reset; FIN without TLS
   close_notify) costs the server that connection only.

The servers are shared by the tests of a module (one per kind and credential type) and
checked after every test: a test that brings its server down fails itself (at
teardown), and the next test gets a new server instead of a confusing error.

Everything talks to loopback only: the servers, their relays and the clients are on
HOST, this test process's own loopback address (see turn_servers.py). Every client is
bounded by a timeout.

Chromium needs two flags here (see ``chromium_args``):

* ``--allow-loopback-in-peer-connection``: WebRTC ignores the loopback interface when it
  enumerates networks; on a host whose only interface is ``lo`` (a CI container, a
  network namespace) it then gathers nothing at all, not even relay candidates, and
  ICE never starts. With other interfaces present it works without the flag.
* ``--ignore-certificate-errors-spki-list=<sha256 of the test key>``: Chromium verifies
  the ``turns:`` server's certificate (an untrusted one fails with ICE candidate error
  701). This flag trusts exactly the test certificate's key, nothing else; Chromium
  honours it only together with an explicit ``--user-data-dir``, which Playwright's
  persistent context passes.

Every test runs against natsrv and, as the reference, coturn.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar

import pytest

from natsrv.core.credentials import rest_credentials
from natsrv.stun.constants import MessageClass, Method
from natsrv.stun.message import Message, decode_untrusted
from tests.conftest import require, require_tool
from tests.interop.turn_servers import (
    HOST,
    TlsFiles,
    TurnServer,
    answers_binding,
    coturn_path,
    make_tls_files,
    running_server,
)

T = TypeVar("T")
Address = tuple[str, int]

#: Upper bound for one asyncio client run (a few hundred ms when things work).
CLIENT_TIMEOUT = 15.0
#: Upper bound for ICE between two aioice agents through the relay (~50 ms when it works).
ICE_TIMEOUT = 8.0
#: Upper bound for one turnutils_uclient run. It starts each client's traffic after a
#: random 1-6 s (hard-coded in uclient), so a run takes about 6 s whatever the load.
UCLIENT_TIMEOUT = 40.0
#: Upper bound for one Chromium echo run (about 0.2 s when things work).
BROWSER_TIMEOUT_MS = 15_000
ECHO_COUNT = 100
#: Allocate/delete cycles in the churn test (a few ms each).
CHURN = 40

SERVER_PARAMS = [
    pytest.param("coturn", id="coturn"),
    pytest.param("natsrv", id="natsrv"),
    pytest.param("natsrv-workers2", id="natsrv-workers2"),
]

# The three ways a client reaches the server, as (aioice turn_transport, use TLS).
TRANSPORTS = {"udp": ("udp", False), "tcp": ("tcp", False), "tls": ("tcp", True)}


# ---------------------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------------------


def _require_server(kind: str) -> None:
    if kind == "coturn":
        require(coturn_path() is not None, "turnserver (Debian package coturn) is not installed")


def _import(name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        require(False, f"python package {name!r} is not installed")
        raise


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """One certificate for every server of this module (Chromium trusts its key)."""
    return make_tls_files(tmp_path_factory.mktemp("tls"))


class _ServerSlot:
    """A server shared by the tests of a module, started on first use and started
    again (fresh ports) if a test brought it down, so that one crash fails the test
    that caused it (see ``_check_up``) and not every test after it."""

    def __init__(self, kind: str, workdirs: Callable[[], Path], tls: TlsFiles,
                 auth_secret: str | None) -> None:
        self.kind, self.workdirs, self.tls, self.auth_secret = kind, workdirs, tls, auth_secret
        self._stack = ExitStack()
        self._server: TurnServer | None = None

    def get(self) -> TurnServer:
        if self._server is None or not self._server.alive():
            self._stack.close()
            self._stack = ExitStack()
            self._server = self._stack.enter_context(running_server(
                self.kind, self.workdirs(), tls=self.tls, auth_secret=self.auth_secret
            ))
        return self._server

    def close(self) -> None:
        self._stack.close()


def _check_up(server: TurnServer) -> None:
    """Fail the test that just ran if it brought the server down."""
    if not (answers_binding(server.port, 2.0) and server.alive()):
        pytest.fail(f"{server.kind} went down during this test; log:\n{server.log()}")


def _slot(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tls: TlsFiles,
    auth_secret: str | None,
) -> Iterator[_ServerSlot]:
    kind = request.param
    _require_server(kind)
    name = kind if auth_secret is None else f"{kind}-rest"
    slot = _ServerSlot(kind, lambda: tmp_path_factory.mktemp(name), tls, auth_secret)
    try:
        yield slot
    finally:
        slot.close()


@pytest.fixture(scope="module", params=SERVER_PARAMS)
def _static_user_slot(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles
) -> Iterator[_ServerSlot]:
    yield from _slot(request, tmp_path_factory, tls_files, None)


@pytest.fixture
def turn_server(_static_user_slot: _ServerSlot) -> Iterator[TurnServer]:
    """The server under test with the static user alice:wonderland."""
    server = _static_user_slot.get()
    yield server
    _check_up(server)


REST_SECRET = "natsrv-interop-rest-secret"


@pytest.fixture(scope="module", params=SERVER_PARAMS)
def _rest_secret_slot(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles
) -> Iterator[_ServerSlot]:
    yield from _slot(request, tmp_path_factory, tls_files, REST_SECRET)


@pytest.fixture
def rest_server(_rest_secret_slot: _ServerSlot) -> Iterator[TurnServer]:
    """The server under test with TURN REST credentials (shared secret) only."""
    server = _rest_secret_slot.get()
    yield server
    _check_up(server)


@pytest.fixture
def loopback_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """aioice leaves loopback out of its host addresses; here HOST is the only one."""
    aioice = _import("aioice")
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: [HOST])


def _run_asyncio(main: Callable[[], Coroutine[Any, Any, T]], timeout: float = CLIENT_TIMEOUT) -> T:
    """Run an asyncio client in its own thread and event loop, bounded by ``timeout``.

    (A thread, so that no asyncio loop is ever set in the main thread, where the
    synchronous Playwright API keeps its own.)
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = asyncio.run(asyncio.wait_for(main(), timeout))
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="asyncio-client", daemon=True)
    thread.start()
    thread.join(timeout + 5)
    if thread.is_alive():
        pytest.fail(f"asyncio client still running {timeout + 5} s after it started")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _ssl_context(server: TurnServer) -> ssl.SSLContext:
    """A client context that trusts the test CA and checks the name (HOST, an IP)."""
    return ssl.create_default_context(cafile=str(server.tls.ca))


def _turn_options(server: TurnServer, transport: str, username: str | None = None,
                  password: str | None = None) -> dict[str, Any]:
    """aioice.Connection keyword arguments for reaching ``server`` over ``transport``."""
    turn_transport, use_tls = TRANSPORTS[transport]
    return {
        "turn_server": (server.host, server.tls_port if use_tls else server.port),
        "turn_username": server.username if username is None else username,
        "turn_password": server.password if password is None else password,
        "turn_transport": turn_transport,
        # aioice hands turn_ssl to loop.create_connection(ssl=...): a context works.
        "turn_ssl": _ssl_context(server) if use_tls else False,
    }


def _in_relay_range(server: TurnServer, port: int) -> bool:
    low, high = server.relay_ports
    return low <= port <= high


def _context(server: TurnServer, **details: Any) -> str:
    lines = [f"{k}: {v!r}" for k, v in details.items()]
    return "\n".join([*lines, f"{server.kind} log (end):", server.log()])


class _Receiver(asyncio.DatagramProtocol):
    """What sits on top of an aioice TURN endpoint: records that it was closed."""

    def __init__(self) -> None:
        self.closed: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)


async def _allocate(server: TurnServer, transport: str, username: str | None,
                    password: str | None) -> tuple[Address, Address]:
    """One Allocate with aioice's TURN client: (relayed, mapped) address, or raises
    aioice's TransactionFailed carrying the server's error response. The allocation
    is deleted (Refresh, LIFETIME 0) before returning."""
    turn = _import("aioice.turn")
    options = _turn_options(server, transport, username, password)
    receiver: _Receiver | None = None

    def factory() -> _Receiver:
        nonlocal receiver
        receiver = _Receiver()
        return receiver

    endpoint, _ = await turn.create_turn_endpoint(
        factory,
        server_addr=options["turn_server"],
        username=options["turn_username"],
        password=options["turn_password"],
        ssl=options["turn_ssl"],
        transport=options["turn_transport"],
    )
    try:
        return endpoint.get_extra_info("sockname"), endpoint.get_extra_info("related_address")
    finally:
        endpoint.close()
        assert receiver is not None
        await asyncio.wait_for(receiver.closed, 5)


# ---------------------------------------------------------------------------------------
# 1. aioice gathers a relayed candidate (long-term credentials) over UDP, TCP and TLS
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", list(TRANSPORTS))
def test_aioice_gathers_relay_candidate(
    turn_server: TurnServer, transport: str, loopback_host: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    aioice = _import("aioice")
    # Where aioice's TURN client socket is (its address as the server must see it).
    client_sockets: list[Address] = []
    made = aioice.turn.TurnClientMixin.connection_made

    def recording(self: Any, transport_: Any) -> None:
        client_sockets.append(transport_.get_extra_info("sockname"))
        made(self, transport_)

    monkeypatch.setattr(aioice.turn.TurnClientMixin, "connection_made", recording)

    async def gather() -> list[Any]:
        conn = aioice.Connection(
            ice_controlling=True, use_ipv6=False, **_turn_options(turn_server, transport)
        )
        try:
            await conn.gather_candidates()
            return conn.local_candidates
        finally:
            await conn.close()

    candidates = _run_asyncio(gather)
    context = _context(turn_server, candidates=candidates)

    hosts = [c for c in candidates if c.type == "host"]
    relays = [c for c in candidates if c.type == "relay"]
    assert len(hosts) == 1, context
    # aioice drops a failed allocation silently: no relay candidate means the Allocate
    # (or its authentication, or the response's attributes) failed.
    if not relays:
        # Ask aioice's TURN client directly, for the reason.
        try:
            why = repr(_run_asyncio(lambda: _allocate(turn_server, transport, None, None)))
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}"
        pytest.fail(f"no relayed candidate over {transport}; Allocate: {why}\n{context}")
    assert len(relays) == 1, context
    (relay,) = relays
    # XOR-RELAYED-ADDRESS: the server's relay IP, a port from the configured range.
    assert relay.host == HOST, context
    assert _in_relay_range(turn_server, relay.port), context
    assert relay.transport == "udp" and relay.component == 1, context
    # XOR-MAPPED-ADDRESS (the related address): the client's socket as seen by the server.
    assert len(client_sockets) == 1, context
    assert (relay.related_address, relay.related_port) == client_sockets[0], context


def test_aioice_wrong_password_is_refused(turn_server: TurnServer) -> None:
    stun = _import("aioice.stun")
    with pytest.raises(stun.TransactionFailed) as failure:
        _run_asyncio(lambda: _allocate(turn_server, "udp", turn_server.username, "not-it"))
    assert failure.value.response.error_code == 401, _context(turn_server)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_aioice_allocation_churn(
    turn_server: TurnServer, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Allocate and delete at once, again and again (what a client that gathers and
    then hangs up does): each relay socket is closed right after it was opened."""
    aioice = _import("aioice")
    client_ports: list[int] = []
    made = aioice.turn.TurnClientMixin.connection_made

    def recording(self: Any, transport_: Any) -> None:
        client_ports.append(transport_.get_extra_info("sockname")[1])
        made(self, transport_)

    monkeypatch.setattr(aioice.turn.TurnClientMixin, "connection_made", recording)
    blockers: list[socket.socket] = []

    async def churn() -> list[tuple[Address, Address]]:
        results = []
        for _ in range(CHURN):
            results.append(await _allocate(turn_server, transport, None, None))
            if transport == "udp":
                # The kernel picks UDP client ports at random, and a server may remember
                # a deleted allocation's 5-tuple for a while (coturn then answers a new
                # Allocate from the same port with 437): keep used ports out of reach.
                # (TCP needs nothing: the client's side of a closed connection waits
                # in TIME_WAIT.)
                blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                blockers.append(blocker)
                try:
                    blocker.bind((HOST, client_ports[-1]))
                except OSError:
                    pass  # taken by someone else: out of reach all the same
        return results

    try:
        results = _run_asyncio(churn)
    except Exception as exc:
        pytest.fail(f"allocation churn failed: {type(exc).__name__}: {exc}\n"
                    f"{_context(turn_server)}")
    finally:
        for blocker in blockers:
            blocker.close()
    assert len(results) == CHURN
    for relayed, _ in results:
        assert relayed[0] == HOST and _in_relay_range(turn_server, relayed[1]), results


# ---------------------------------------------------------------------------------------
# 2. Two aioice agents connect over a relay-only path and exchange datagrams
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", list(TRANSPORTS))
def test_aioice_relay_only_ice_exchanges_data(turn_server: TurnServer, transport: str) -> None:
    aioice = _import("aioice")
    relay_only = aioice.ice.TransportPolicy.RELAY

    async def session() -> dict[str, Any]:
        a = aioice.Connection(ice_controlling=True, use_ipv6=False, transport_policy=relay_only,
                              **_turn_options(turn_server, transport))
        b = aioice.Connection(ice_controlling=False, use_ipv6=False, transport_policy=relay_only,
                              **_turn_options(turn_server, transport))
        try:
            await asyncio.gather(a.gather_candidates(), b.gather_candidates())
            gathered = {"a": a.local_candidates, "b": b.local_candidates}
            # Hand over only relay candidates (with RELAY policy there are no others, but
            # a host candidate slipping through must not give a direct path).
            for local, remote in ((a, b), (b, a)):
                local.remote_username = remote.local_username
                local.remote_password = remote.local_password
                for candidate in remote.local_candidates:
                    if candidate.type == "relay":
                        await local.add_remote_candidate(candidate)
                await local.add_remote_candidate(None)
            try:
                await asyncio.wait_for(asyncio.gather(a.connect(), b.connect()), ICE_TIMEOUT)
            except (TimeoutError, ConnectionError) as exc:
                return {"gathered": gathered, "error": f"ICE did not complete: {exc!r}"}
            # aioice has no public accessor for the selected pair.
            selected = {name: conn._nominated.get(1) for name, conn in (("a", a), ("b", b))}

            sent_ab = [f"a->b {i}".encode() for i in range(10)]
            sent_ba = [f"b->a {i}".encode() for i in range(10)]
            for x, y in zip(sent_ab, sent_ba, strict=True):
                await a.send(x)
                await b.send(y)
            got_b = [await asyncio.wait_for(b.recv(), 5) for _ in sent_ab]
            got_a = [await asyncio.wait_for(a.recv(), 5) for _ in sent_ba]
            return {"gathered": gathered, "selected": selected, "sent": (sent_ab, sent_ba),
                    "received": (got_b, got_a)}
        finally:
            await asyncio.gather(a.close(), b.close())

    result = _run_asyncio(session)
    context = _context(turn_server, **result)
    assert "error" not in result, context
    for name in ("a", "b"):
        gathered = result["gathered"][name]
        assert [c.type for c in gathered] == ["relay"], context
        pair = result["selected"][name]
        assert pair is not None, context
        # relay <-> relay, both ends allocated on this server.
        assert pair.local_candidate.type == "relay", context
        assert pair.remote_candidate.type == "relay", context
        assert pair.local_candidate.host == pair.remote_candidate.host == HOST, context
        assert _in_relay_range(turn_server, pair.local_candidate.port), context
        assert _in_relay_range(turn_server, pair.remote_candidate.port), context
    sent_ab, sent_ba = result["sent"]
    got_b, got_a = result["received"]
    assert sorted(got_b) == sorted(sent_ab), context
    assert sorted(got_a) == sorted(sent_ba), context


# ---------------------------------------------------------------------------------------
# 3. coturn's turnutils_uclient: client-to-client load, nothing lost
# ---------------------------------------------------------------------------------------

UCLIENT_MESSAGES = 100  # per client
UCLIENT_CLIENTS = 4  # -y pairs them: each sends to its partner's relayed address
UCLIENT_RUNS = {
    "udp-channel": [],  # UDP to the server, ChannelData
    "udp-send": ["-s"],  # UDP, Send/Data indications
    "tcp-channel": ["-t"],  # TCP to the server (the relay is UDP either way)
    "tcp-send": ["-t", "-s"],
}
_UCLIENT_TOTALS = re.compile(
    r"start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$", re.MULTILINE
)
_UCLIENT_LOST = re.compile(
    r"Total lost packets (\d+) \(([\d.]+)%\), total send dropped (\d+) \(([\d.]+)%\)"
)


def _run_uclients(
    turn_server: TurnServer, runs: dict[str, list[str]]
) -> dict[str, tuple[int | None, str]]:
    """Run turnutils_uclient once per entry of ``runs`` (its own flags; -S runs go to
    the TLS port), client to client, all at once; each run's exit status (None: still
    running at the deadline, then killed) and output."""
    tool = require_tool("turnutils_uclient")

    def argv(flags: list[str]) -> list[str]:
        port = turn_server.tls_port if "-S" in flags else turn_server.port
        return [
            tool, *flags,
            "-u", str(turn_server.username), "-w", str(turn_server.password),
            "-p", str(port), "-L", HOST, "-e", HOST,
            "-y",  # client to client: every message crosses two allocations
            "-c",  # no RTCP companion allocations
            "-n", str(UCLIENT_MESSAGES), "-m", str(UCLIENT_CLIENTS),
            "-l", "200",  # bytes per message
            "-z", "5",  # ms between a client's messages
            turn_server.host,
        ]  # fmt: skip

    # uclient's log goes to stdout, block-buffered into a pipe: line-buffer it, so
    # that a run killed at the deadline still shows how far it got.
    stdbuf = shutil.which("stdbuf")
    prefix = [stdbuf, "-oL"] if stdbuf else []
    # The runs go concurrently: each one idles for seconds before it sends.
    processes = {
        name: subprocess.Popen(
            [*prefix, *argv(flags)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        for name, flags in runs.items()
    }
    results: dict[str, tuple[int | None, str]] = {}
    deadline = time.monotonic() + UCLIENT_TIMEOUT
    try:
        for name, process in processes.items():
            status: int | None
            try:
                out, _ = process.communicate(timeout=max(0.1, deadline - time.monotonic()))
                status = process.returncode
            except subprocess.TimeoutExpired:
                status = None
                process.kill()  # by PID: only the clients this test started
                out, _ = process.communicate()
            results[name] = (status, out.decode(errors="replace"))
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
            process.wait()
            if process.stdout is not None:
                process.stdout.close()
    return results


def _assert_nothing_lost(turn_server: TurnServer, runs: dict[str, list[str]]) -> None:
    expected = UCLIENT_MESSAGES * UCLIENT_CLIENTS
    for name, (status, out) in _run_uclients(turn_server, runs).items():
        context = _context(turn_server, run=name, output=out[-3000:])
        assert status is not None, f"still running after {UCLIENT_TIMEOUT} s\n{context}"
        assert status == 0, context
        totals = _UCLIENT_TOTALS.findall(out)
        assert totals == [(str(expected), str(expected))], context
        lost = _UCLIENT_LOST.findall(out)
        assert len(lost) == 1, context
        lost_packets, _, dropped, _ = lost[0]
        assert (int(lost_packets), int(dropped)) == (0, 0), context


def test_turnutils_uclient_load_loses_nothing(turn_server: TurnServer) -> None:
    _assert_nothing_lost(turn_server, UCLIENT_RUNS)


#: RFC 6062 runs of turnutils_uclient: -T relays over TCP allocations, client to client
#: (each client Connects to its partner's relayed address, which gets a
#: ConnectionAttempt; both bind data connections); the control connection over TCP, or
#: over TLS with -S.
UCLIENT_TCP_RUNS = {"tcp-relay": ["-T"], "tcp-relay-tls": ["-T", "-S"]}


def test_turnutils_uclient_tcp_relay_loses_nothing(turn_server: TurnServer) -> None:
    _assert_nothing_lost(turn_server, UCLIENT_TCP_RUNS)


#: DTLS (RFC 7350) runs of turnutils_uclient: -S without -t is DTLS over UDP, to the TLS
#: port; ChannelData, and Send/Data indications. uclient offers DTLS 1.0 or 1.2 at
#: random and tries again after natsrv's "protocol version" alert (DTLS 1.2 only).
UCLIENT_DTLS_RUNS = {"dtls-channel": ["-S"], "dtls-send": ["-S", "-s"]}


def test_turnutils_uclient_over_dtls_loses_nothing(
    tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles
) -> None:
    # natsrv only: the reference coturn of these tests runs with --no-dtls.
    with running_server("natsrv", tmp_path_factory.mktemp("natsrv-dtls"), tls=tls_files) as server:
        _assert_nothing_lost(server, UCLIENT_DTLS_RUNS)


# ---------------------------------------------------------------------------------------
# 4. Chromium: a data channel between two relay-only RTCPeerConnections
# ---------------------------------------------------------------------------------------

PAGE = Path(__file__).with_name("turn_page.html")


def _spki_sha256(cert_path: Path) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)): what --ignore-certificate-errors-spki-list
    takes."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


def chromium_args(tls: TlsFiles) -> list[str]:
    return [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        # WebRTC leaves out the loopback network; with only "lo" nothing is gathered.
        "--allow-loopback-in-peer-connection",
        # Trust the test certificate's key (for turns:) and nothing else.
        f"--ignore-certificate-errors-spki-list={_spki_sha256(tls.cert)}",
    ]


@pytest.fixture(scope="module")
def chromium_page(tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles) -> Iterator[Any]:
    """A page of a headless Chromium (fresh profile) with ``runEcho`` loaded."""
    chromium = require_tool("chromium")
    sync_api = _import("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=chromium,
            headless=True,
            args=chromium_args(tls_files),
        )
        try:
            page = context.new_page()
            page.set_content(PAGE.read_text())
            yield page
        finally:
            context.close()


CHROMIUM_URLS = {
    "udp": ("turn:{host}:{port}?transport=udp", "udp"),
    "tcp": ("turn:{host}:{port}?transport=tcp", "tcp"),
    "tls": ("turns:{host}:{tls_port}?transport=tcp", "tls"),
}


def _parse_candidate(line: str) -> tuple[str, int, str]:
    """(address, port, type) of an a=candidate line."""
    fields = line.split()
    return fields[4], int(fields[5]), fields[fields.index("typ") + 1]


@pytest.mark.parametrize("transport", list(CHROMIUM_URLS))
def test_chromium_data_channel_over_relay(
    turn_server: TurnServer, chromium_page: Any, transport: str
) -> None:
    template, relay_protocol = CHROMIUM_URLS[transport]
    url = template.format(host=turn_server.host, port=turn_server.port,
                          tls_port=turn_server.tls_port)
    result = chromium_page.evaluate(
        "config => runEcho(config)",
        {"urls": url, "username": turn_server.username, "credential": turn_server.password,
         "count": ECHO_COUNT, "timeoutMs": BROWSER_TIMEOUT_MS},
    )
    echoes = result.pop("echoes")
    context = _context(turn_server, url=url, echoes=len(echoes), **result)

    assert result["error"] is None, context
    assert result["iceErrors"] == [], context
    # Every message came back, in order (a reliable, ordered channel).
    assert echoes == [f"message {i}" for i in range(ECHO_COUNT)], context
    # Both sides gathered relayed candidates only, all on this server.
    for side in ("a", "b"):
        gathered = [_parse_candidate(c) for c in result["candidates"][side]]
        assert gathered, context
        for address, port, kind in gathered:
            assert (address, kind) == (HOST, "relay"), context
            assert _in_relay_range(turn_server, port), context
    selected = result["selected"]
    assert selected is not None, context
    assert selected["state"] == "succeeded", context
    local, remote = selected["local"], selected["remote"]
    assert local["candidateType"] == remote["candidateType"] == "relay", context
    assert local["address"] == remote["address"] == HOST, context
    assert _in_relay_range(turn_server, local["port"]), context
    assert _in_relay_range(turn_server, remote["port"]), context
    # The browser reached the server the way the URL said (udp, tcp or tls).
    assert local["relayProtocol"] == relay_protocol, context
    assert local["url"] == url, context
    assert selected["nominated"] and selected["responsesReceived"] > 0, context
    # (Only what was sent: the echoes may come back on the other side's own selected
    # pair, which can end at another of this side's relayed candidates.)
    assert selected["bytesSent"] > 0, context


# ---------------------------------------------------------------------------------------
# 5. TURN REST credentials (shared secret): fresh works, expired or forged is refused
# ---------------------------------------------------------------------------------------


def test_rest_credential_allocates(rest_server: TurnServer, loopback_host: None) -> None:
    aioice = _import("aioice")
    username, password = rest_credentials(REST_SECRET, "alice", ttl=600, now=time.time())

    async def gather() -> list[Any]:
        conn = aioice.Connection(
            ice_controlling=True, use_ipv6=False,
            **_turn_options(rest_server, "udp", username, password),
        )
        try:
            await conn.gather_candidates()
            return conn.local_candidates
        finally:
            await conn.close()

    candidates = _run_asyncio(gather)
    relays = [c for c in candidates if c.type == "relay"]
    context = _context(rest_server, username=username, candidates=candidates)
    assert len(relays) == 1, context
    assert relays[0].host == HOST and _in_relay_range(rest_server, relays[0].port), context


@pytest.mark.parametrize(
    "case",
    [
        pytest.param("expired", id="expired"),
        pytest.param("other-secret", id="other-secret"),
        pytest.param("static-user", id="static-user"),  # no --user on this server
    ],
)
def test_rest_server_refuses(rest_server: TurnServer, case: str) -> None:
    stun = _import("aioice.stun")
    now = time.time()
    if case == "expired":  # expired an hour ago, signed with the right secret
        username, password = rest_credentials(REST_SECRET, "alice", ttl=60, now=now - 3600)
    elif case == "other-secret":
        username, password = rest_credentials("another secret", "alice", ttl=600, now=now)
    else:
        username, password = "alice", "wonderland"
    with pytest.raises(stun.TransactionFailed) as failure:
        _run_asyncio(lambda: _allocate(rest_server, "udp", username, password))
    assert failure.value.response.error_code == 401, _context(rest_server, username=username)


# ---------------------------------------------------------------------------------------
# 6. A client vanishing from a stream costs the server that connection only
# ---------------------------------------------------------------------------------------


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def _stream_binding(server: TurnServer, use_tls: bool) -> socket.socket:
    """A TCP (or TLS) connection to ``server`` that has had one Binding answered."""
    request = Message(Method.BINDING, MessageClass.REQUEST)
    port = server.tls_port if use_tls else server.port
    sock = socket.create_connection((server.host, port), timeout=5)
    try:
        if use_tls:
            sock = _ssl_context(server).wrap_socket(sock, server_hostname=server.host)
        sock.sendall(request.encode(fingerprint=True))
        header = _recv_exactly(sock, 20)
        length = int.from_bytes(header[2:4], "big")
        answer = decode_untrusted(header + _recv_exactly(sock, length))
    except BaseException:
        sock.close()
        raise
    assert answer.transaction_id == request.transaction_id
    assert answer.cls == MessageClass.SUCCESS
    return sock


@pytest.mark.parametrize(
    "how",
    [
        # Browsers and asyncio clients often end TLS with a bare TCP FIN, without the
        # TLS close_notify alert (a page closed, an event loop ended).
        pytest.param("tls-fin", id="tls-without-close-notify"),
        # A client process killed, a NAT forgetting the mapping: a TCP reset.
        pytest.param("tcp-rst", id="tcp-reset"),
    ],
)
@pytest.mark.parametrize("kind", SERVER_PARAMS)
def test_server_survives_client_vanishing(
    kind: str, how: str, tmp_path: Path, tls_files: TlsFiles
) -> None:
    """Its own server, so that a crash does not take other tests with it."""
    use_tls = how == "tls-fin"
    _require_server(kind)
    with running_server(kind, tmp_path / kind, tls=tls_files) as server:
        try:
            for _ in range(3):
                sock = _stream_binding(server, use_tls)
                if use_tls:
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)  # FIN, no close_notify
                else:
                    linger = struct.pack("ii", 1, 0)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                sock.close()  # (with SO_LINGER 0: RST)
            # The server goes on: a new connection is answered (its event loop has seen
            # the earlier FINs or RSTs long before this handshake completes) ...
            _stream_binding(server, use_tls).close()
        except OSError as exc:
            pytest.fail(
                f"{kind} stopped answering after a client vanished ({how}): {exc!r}\n"
                f"{_context(server)}"
            )
        # ... and the process is still there.
        assert server.alive(), _context(server)
