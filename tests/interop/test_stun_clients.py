"""Real STUN clients written by others against natsrv on loopback.

The server runs in this test's trio run (primary 127.0.0.1:P, alternate 127.0.0.2:A, both
bound on port 0 and read back from ``ServerInfo``); each client runs in a worker thread
(pystun3, aioice) or as a subprocess (the Debian ``stun`` client, coturn's
``turnutils_stunclient``), every one bounded by a timeout. Clients that need a fixed
port, or whose address should not be the server's own, use this process's own loopback
address (``private_loopback_ip``).
Each test asserts on the values the client itself reports, so that it fails if the server
feature it exercises (RFC 3489 CHANGE-REQUEST / CHANGED-ADDRESS, RFC 5780 RESPONSE-ORIGIN /
OTHER-ADDRESS / RESPONSE-PORT, XOR-MAPPED-ADDRESS, FINGERPRINT) were missing or wrong.
"""

from __future__ import annotations

import asyncio
import importlib
import re
import socket
import types
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio

from natsrv.config import Config
from natsrv.net.serve import ServerInfo
from tests.conftest import (
    ALT_IP,
    PRIMARY_IP,
    PRIVATE_PORTS,
    private_loopback_ip,
    require,
    require_tool,
    start_server,
    stun_config,
)

Address = tuple[str, int]

#: Upper bound for one client run. Every client here finishes in well under a second on
#: loopback when the server answers; the bound only matters when something is broken.
CLIENT_TIMEOUT = 15


def _import(name: str) -> types.ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        require(False, f"python package {name!r} is not installed")
        raise  # unreachable: require() skipped or failed


def _endpoints(info: ServerInfo) -> tuple[Address, Address]:
    """(primary, alternate IP + alternate port) from what the server bound."""
    primary, alt_port_ep, alt_ip_ep, both = info.udp
    assert primary[0] == PRIMARY_IP and alt_ip_ep == (ALT_IP, primary[1])
    assert alt_port_ep[0] == PRIMARY_IP and both == (ALT_IP, alt_port_ep[1])
    return primary, both


async def _start(nursery: trio.Nursery, **overrides: object) -> ServerInfo:
    return await start_server(nursery, stun_config(**overrides))


async def _run_in_thread(fn: Any) -> Any:
    """Run a blocking client in a thread, failing the test (not hanging) if it hangs."""
    with trio.fail_after(CLIENT_TIMEOUT):
        return await trio.to_thread.run_sync(fn, abandon_on_cancel=True)


async def _run_tool(argv: list[str]) -> trio.CompletedProcess:
    """Run a client binary; trio kills it (by its PID) if the deadline passes."""
    with trio.fail_after(CLIENT_TIMEOUT):
        return await trio.run_process(
            argv, capture_stdout=True, capture_stderr=True, check=False
        )


# ---------------------------------------------------------------------------------------
# 1. pystun3: classic RFC 3489 tests (CHANGE-REQUEST, MAPPED-ADDRESS, CHANGED-ADDRESS)
# ---------------------------------------------------------------------------------------


@dataclass
class _Wire:
    """What pystun3's socket sent and received (pystun3 reports neither)."""

    sent: list[tuple[bytes, Address]] = field(default_factory=list)
    received: list[tuple[bytes, Address]] = field(default_factory=list)
    sockets: list[socket.socket] = field(default_factory=list)
    bound: list[Address] = field(default_factory=list)  # where each socket was bound


def _recording_socket_module(wire: _Wire) -> types.SimpleNamespace:
    """A stand-in for the ``socket`` module as pystun3 sees it, whose sockets log traffic."""

    class RecordingSocket(socket.socket):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            wire.sockets.append(self)  # pystun3 leaks its socket when it raises

        def bind(self, address: Any) -> None:
            super().bind(address)
            wire.bound.append(self.getsockname())

        def sendto(self, data: Any, *args: Any) -> int:
            wire.sent.append((bytes(data), args[-1]))
            return super().sendto(data, *args)

        def recvfrom(self, *args: Any) -> tuple[bytes, Any]:
            data, addr = super().recvfrom(*args)
            wire.received.append((data, addr))
            return data, addr

    names = {k: getattr(socket, k) for k in dir(socket) if not k.startswith("__")}
    names["socket"] = RecordingSocket
    return types.SimpleNamespace(**names)


@pytest.mark.parametrize(
    "software",
    [
        pytest.param(None, id="without-software"),
        # A regression test: natsrv once put SOFTWARE (0x8022) into its answers to
        # cookie-less RFC 3489 requests with a length that is not a multiple of 4
        # ("natsrv" = 6 bytes, the default). RFC 3489 attributes are all multiples of 4
        # long and classic clients step over an attribute by 4 + length, without RFC 5389
        # padding; pystun3 then read the FINGERPRINT header 2 bytes early, walked off the
        # end of the datagram and raised ValueError.
        pytest.param(Config().software, id="default-software"),
    ],
)
async def test_pystun3_reports_open_internet(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, software: str | None
) -> None:
    stun = _import("stun")
    info = await _start(nursery, software=software)
    primary, alternate = _endpoints(info)
    wire = _Wire()
    monkeypatch.setattr(stun, "socket", _recording_socket_module(wire))

    def client() -> tuple[str, str | None, int | None]:
        return stun.get_ip_info(
            source_ip=PRIMARY_IP,
            source_port=0,  # the kernel picks; the recording socket tells which
            stun_host=primary[0],
            stun_port=primary[1],
        )

    error: ValueError | None = None
    try:
        result = await _run_in_thread(client)
    except ValueError as exc:
        error = exc
    finally:
        for s in wire.sockets:
            s.close()
    if error is not None:
        pytest.fail(
            f"pystun3 could not parse natsrv's RFC 3489 response: {error!r}; "
            f"received {[(d.hex(), a) for d, a in wire.received]}"
        )

    # Open Internet: the mapped address is the source itself and the change-IP-and-port
    # request (test II) was answered.
    (source,) = wire.bound
    assert source[0] == PRIMARY_IP and source[1] != 0
    assert result == ("Open Internet", PRIMARY_IP, source[1])
    # pystun3's two requests: a plain one, then CHANGE-REQUEST 0x06 (change IP and port).
    assert [addr for _, addr in wire.sent] == [primary, primary]
    plain, change = (data for data, _ in wire.sent)
    assert len(plain) == 20
    assert change[20:] == bytes.fromhex("0003 0004 00000006")
    # The answers came from the primary, then from the other IP and port (which the first
    # answer's CHANGED-ADDRESS named): pystun3 alone would not notice a server that
    # ignored CHANGE-REQUEST, so check where the datagrams came from.
    assert [addr for _, addr in wire.received] == [primary, alternate]
    for (request, _), (response, _) in zip(wire.sent, wire.received, strict=True):
        assert response[:2] == b"\x01\x01"  # Binding success
        assert response[4:20] == request[4:20]  # all 16 bytes of the RFC 3489 ID


# ---------------------------------------------------------------------------------------
# 2. aioice: ICE candidate gathering with a STUN server
# ---------------------------------------------------------------------------------------


async def test_aioice_gathers_server_reflexive_candidate(
    stun_server: ServerInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    aioice = _import("aioice")
    primary, _ = _endpoints(stun_server)
    # aioice leaves 127.0.0.1 out of its host addresses; on loopback it is the only one.
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: [PRIMARY_IP])

    async def gather() -> list[Any]:
        conn = aioice.Connection(ice_controlling=True, stun_server=primary, use_ipv6=False)
        try:
            await asyncio.wait_for(conn.gather_candidates(), CLIENT_TIMEOUT - 5)
            return list(conn.local_candidates)
        finally:
            await conn.close()

    candidates = await _run_in_thread(lambda: asyncio.run(gather()))

    hosts = [c for c in candidates if c.type == "host"]
    srflx = [c for c in candidates if c.type == "srflx"]
    assert len(hosts) == 1, candidates
    host = hosts[0]
    assert host.host == PRIMARY_IP
    # aioice drops a failed STUN query silently: no srflx candidate means no (valid)
    # answer, e.g. a wrong XOR-MAPPED-ADDRESS or FINGERPRINT.
    assert len(srflx) == 1, f"no server-reflexive candidate from natsrv: {candidates}"
    (reflexive,) = srflx
    # No NAT on loopback: the reflexive address is the host candidate's own.
    assert (reflexive.host, reflexive.port) == (host.host, host.port)
    assert (reflexive.related_address, reflexive.related_port) == (host.host, host.port)
    assert reflexive.component == host.component == 1


async def test_aioice_codec_reads_rfc5780_answer(stun_server: ServerInfo) -> None:
    """aioice's STUN codec (the one its ICE agent uses) on an RFC 5780 change request."""
    aioice_stun = _import("aioice.stun")
    primary, alternate = _endpoints(stun_server)
    request = aioice_stun.Message(
        message_method=aioice_stun.Method.BINDING, message_class=aioice_stun.Class.REQUEST
    )
    request.attributes["CHANGE-REQUEST"] = 0x06  # change IP and port
    request.add_fingerprint()

    with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
        await sock.bind((PRIMARY_IP, 0))
        local = sock.getsockname()
        await sock.sendto(bytes(request), primary)
        with trio.fail_after(5):
            data, origin = await sock.recvfrom(2048)

    # parse_message checks the length and FINGERPRINT (ValueError if wrong).
    response = aioice_stun.parse_message(data)
    assert origin == alternate
    assert response.message_method == aioice_stun.Method.BINDING
    assert response.message_class == aioice_stun.Class.RESPONSE
    assert response.transaction_id == request.transaction_id
    attrs = response.attributes
    assert attrs["XOR-MAPPED-ADDRESS"] == local
    assert "MAPPED-ADDRESS" not in attrs  # only with mapped-address = true
    assert attrs["RESPONSE-ORIGIN"] == alternate
    # OTHER-ADDRESS names the endpoint differing in IP and port from the one that
    # received the request (the primary).
    assert attrs["OTHER-ADDRESS"] == alternate
    assert attrs["SOFTWARE"] == "natsrv-test"
    assert "FINGERPRINT" in attrs


# ---------------------------------------------------------------------------------------
# 3. The Debian "stun" client (Vovida stund 0.97): RFC 3489 NAT-type tests
# ---------------------------------------------------------------------------------------

_VOVIDA_ADDR = re.compile(r"^(MappedAddress|SourceAddress|ChangedAddress) = ([\d.]+):(\d+)$")
_VOVIDA_END = re.compile(r"^Received message of type (\d+)\s+id=(\d+)$")
_VOVIDA_RESULT = re.compile(
    r"^(test I|test II|test III|test I\(2\)|hairpin) = (\d+)\s*$", re.MULTILINE
)


def _vovida_responses(log: str) -> dict[int, dict[str, Address]]:
    """The address attributes of each response the client decoded, by its test id."""
    responses: dict[int, dict[str, Address]] = {}
    current: dict[str, Address] = {}
    for line in log.splitlines():
        line = line.strip()
        if m := _VOVIDA_ADDR.match(line):
            current[m[1]] = (m[2], int(m[3]))
        elif m := _VOVIDA_END.match(line):
            if int(m[1]) == 0x0101:  # Binding success response
                responses[int(m[2])] = current
            current = {}
    return responses


async def test_vovida_stun_client_reports_open(stun_server: ServerInfo) -> None:
    tool = require_tool("stun")
    primary, alternate = _endpoints(stun_server)
    p, a = primary[1], alternate[1]
    # The client binds src and src + 1 itself: fixed ports, so on this process's own
    # loopback address, where nothing can take them first (see private_loopback_ip).
    client_ip, src = private_loopback_ip(), PRIVATE_PORTS[0]
    result = await _run_tool(
        [tool, f"{primary[0]}:{p}", "-v", "-p", str(src), "-i", client_ip]
    )
    out, log = result.stdout.decode(), result.stderr.decode()
    context = f"stdout:\n{out}\nstderr:\n{log}"

    # The verdict, and its numeric code (also the exit status): 0x1c would be "Blocked".
    assert "Primary: Open" in out, context
    assert "Return value is 0x000001" in out, context
    assert result.returncode == 1, context
    results = dict(_VOVIDA_RESULT.findall(log))
    assert results == {
        "test I": "1", "test II": "1", "test III": "1", "test I(2)": "1", "hairpin": "1"
    }, context

    # What the client read from each answer. Test I: plain; test II: change IP (flag 4);
    # test III: change port (flag 2), both from the second socket (src + 1); test I(2)
    # (id 10): plain request to the CHANGED-ADDRESS IP at the primary port.
    responses = _vovida_responses(log)
    assert responses[1] == {
        "MappedAddress": (client_ip, src),
        "SourceAddress": (PRIMARY_IP, p),
        "ChangedAddress": (ALT_IP, a),
    }, context
    assert responses[2] == {
        "MappedAddress": (client_ip, src + 1),
        "SourceAddress": (ALT_IP, p),
        "ChangedAddress": (ALT_IP, a),
    }, context
    assert responses[3] == {
        "MappedAddress": (client_ip, src + 1),
        "SourceAddress": (PRIMARY_IP, a),
        "ChangedAddress": (ALT_IP, a),
    }, context
    assert responses[10] == {
        "MappedAddress": (client_ip, src),
        "SourceAddress": (ALT_IP, p),
        "ChangedAddress": (PRIMARY_IP, a),
    }, context


# ---------------------------------------------------------------------------------------
# 4. coturn's turnutils_stunclient
# ---------------------------------------------------------------------------------------

_ADDR = r"([\d.]+):(\d+)"
_COTURN_ORIGIN = re.compile(r"Response origin:\s*:?\s*" + _ADDR)
_COTURN_OTHER = re.compile(r"Other addr:\s*:?\s*" + _ADDR)
_COTURN_REFLEXIVE = re.compile(r"UDP reflexive addr:?\s*:?\s*" + _ADDR)
_COTURN_BLOCK = re.compile(r"^RFC 5780 response (\d+)$", re.MULTILINE)


def _addresses(pattern: re.Pattern[str], text: str) -> set[Address]:
    return {(ip, int(port)) for ip, port in pattern.findall(text)}


async def test_turnutils_stunclient_plain(nursery: trio.Nursery) -> None:
    """Plain Binding: a server without alternates (so no OTHER-ADDRESS, and the client
    does not switch to its RFC 5780 tests by itself)."""
    tool = require_tool("turnutils_stunclient")
    info = await _start(nursery, alt_ip=None, alt_port=None)
    (primary,) = info.udp
    # From this process's own loopback address: a reflexive IP that is the client's and
    # not merely the server's (127.0.0.1) is one the server really read off the packet.
    client_ip = private_loopback_ip()
    result = await _run_tool([tool, "-L", client_ip, "-p", str(primary[1]), primary[0]])
    out = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, out
    assert "error" not in out.lower() and "Cannot read" not in out, out
    assert not _COTURN_BLOCK.search(out), out
    # (coturn's address printer writes each line twice: to stdout and to its log, stdout.)
    reflexive = _addresses(_COTURN_REFLEXIVE, out)
    assert len(reflexive) == 1, out
    ((ip, port),) = reflexive
    assert ip == client_ip, out
    # The client's ephemeral port: not knowable beforehand, but never one of the server's.
    assert 1024 <= port <= 65535 and port != primary[1], out


async def test_turnutils_stunclient_rfc5780(stun_server: ServerInfo) -> None:
    """-f: a plain request, then CHANGE-REQUEST (IP and port) with RESPONSE-PORT, then
    CHANGE-REQUEST with PADDING from the RESPONSE-PORT socket."""
    tool = require_tool("turnutils_stunclient")
    primary, alternate = _endpoints(stun_server)
    client_ip = private_loopback_ip()  # see test_turnutils_stunclient_plain
    result = await _run_tool(
        [tool, "-f", "-L", client_ip, "-p", str(primary[1]), primary[0]]
    )
    out = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, out
    assert "error" not in out.lower() and "Cannot read" not in out, out

    parts = _COTURN_BLOCK.split(out)  # [preamble, "1", block1, "2", block2, ...]
    blocks = dict(zip(map(int, parts[1::2]), parts[2::2], strict=True))
    assert sorted(blocks) == [1, 2, 3], out
    reflexive = {n: _addresses(_COTURN_REFLEXIVE, b) for n, b in blocks.items()}
    origin = {n: _addresses(_COTURN_ORIGIN, b) for n, b in blocks.items()}
    other = {n: _addresses(_COTURN_OTHER, b) for n, b in blocks.items()}

    # 1: the plain request, answered by the primary.
    assert len(reflexive[1]) == 1, out
    (mapped,) = reflexive[1]
    assert mapped[0] == client_ip, out
    assert origin[1] == {primary}, out
    assert other[1] == {alternate}, out
    # 2: change IP and port, RESPONSE-PORT = mapped port + 1: the answer reached the
    # client's second socket (else it would wait forever) from the alternate endpoint,
    # and still maps the first socket.
    assert reflexive[2] == {mapped}, out
    assert origin[2] == {alternate}, out
    assert other[2] == {alternate}, out
    # 3: sent from that second socket (bound by the client at mapped port + 1).
    assert reflexive[3] == {(client_ip, mapped[1] + 1)}, out
    assert origin[3] == {alternate}, out
    assert other[3] == {alternate}, out
