"""``natsrv classify`` as a user runs it: exit codes 0/1/2/3, the ``--json`` object, the
table and its one plain sentence, and progress only on a terminal's stderr."""

from __future__ import annotations

import json
import os
import pty
import socket
import sys
from typing import Any

import pytest
import trio

from classifier import cli
from classifier.model import NatType
from classifier.report import MEANING
from natsrv.net.serve import ServerInfo, serve
from tests.conftest import PRIMARY_IP, free_port, stun_config

NATSRV = [sys.executable, "-m", "natsrv", "classify"]
RUN_TIMEOUT = 20


async def run_cli(*args: str, **kw: Any) -> trio.CompletedProcess[bytes]:
    with trio.fail_after(RUN_TIMEOUT):
        return await trio.run_process([*NATSRV, *args], capture_stdout=True,
                                      capture_stderr="stderr" not in kw, check=False, **kw)


def server_arg(info: ServerInfo) -> str:
    ip, port = info.udp[0]
    return f"{ip}:{port}"


# --------------------------------------------------------------------------- exit 2


@pytest.mark.parametrize(("argv", "message"), [
    ([], "a STUN server is required"),
    (["127.0.0.1:0"], "not a port number: '0'"),
    (["127.0.0.1:99999"], "not a port number: '99999'"),
    (["bad host!"], "bad server address 'bad host!'"),
    (["[::1"], "bad address '[::1': expected [IPv6]:PORT"),
    (["127.0.0.1", "--bogus"], "unrecognized arguments: --bogus"),
    (["127.0.0.1", "--local", "nonsense"], "bad local address 'nonsense'"),
    (["127.0.0.1", "--local", "0.0.0.0"], "not a wildcard"),
    (["127.0.0.1", "--local", "127.0.0.1:70000"], "not a port number"),
    (["127.0.0.1", "--alt", "x:y"], "not a port number: 'y'"),
    (["127.0.0.1", "--timeout", "0"], "--timeout: must be more than 0"),
    (["127.0.0.1", "--timeout", "soon"], "--timeout: not a number of seconds"),
    (["127.0.0.1", "--lifetime-limit", "0.5"], "--lifetime-limit: must be more than 1"),
    (["127.0.0.1", "--local", "::1"], "no address of the same family as --local ::1"),
])
def test_bad_usage_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert cli.main(argv) == cli.EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("natsrv classify: error: ")
    assert message in lines[0]


async def test_bad_usage_through_the_natsrv_command() -> None:
    done = await run_cli("--nonsense")
    assert done.returncode == 2
    assert done.stdout == b""
    assert done.stderr.decode().splitlines() == [
        "natsrv classify: error: unrecognized arguments: --nonsense"]


def test_parsing_addresses() -> None:
    assert cli.parse_server("stun.example.org") == ("stun.example.org", 3478)
    assert cli.parse_server("198.51.100.1:3479") == ("198.51.100.1", 3479)
    assert cli.parse_server("[2001:db8::1]:5000") == ("2001:db8::1", 5000)
    assert cli.parse_server("2001:db8::1") == ("2001:db8::1", 3478)
    assert cli.parse_local("10.0.0.2") == ("10.0.0.2", None)
    assert cli.parse_local("10.0.0.2:0") == ("10.0.0.2", 0)
    assert cli.parse_local("[fe80::1]:5060") == ("fe80::1", 5060)


# --------------------------------------------------------------------------- exit 1


def test_name_that_does_not_resolve_is_exit_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_such_name(*args: object, **kw: object) -> list[Any]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)  # no DNS traffic in tests
    assert cli.main(["stun.example.invalid"]) == cli.EXIT_FAILURE
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ("natsrv classify: cannot resolve stun.example.invalid: "
                   "Name or service not known\n")


def test_local_address_not_on_this_host_is_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([f"{PRIMARY_IP}:{free_port()}", "--local", "192.0.2.200"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("natsrv classify: cannot classify against ")
    assert "Cannot assign requested address" in err
    assert len(err.splitlines()) == 1


# --------------------------------------------------------------------------- exit 0 and 3


def check_shape(obj: dict[str, Any]) -> None:
    for key in ("nat_type", "mapping", "filtering", "hairpinning", "mapped_address",
                "local_address", "server", "probes", "reason", "reason_code", "meaning",
                "undetermined", "notes", "alg_suspected", "cgnat_suspected",
                "port_allocation", "lifetime", "cross_check", "ipv6", "duration_s"):
        assert key in obj, key
    assert obj["nat_type"] in {t.value for t in NatType}
    assert obj["meaning"] == MEANING[NatType(obj["nat_type"])]
    assert obj["probes"]
    for probe in obj["probes"]:
        assert set(probe["target"]) == {"ip", "port"}
        assert isinstance(probe["flags"], list)
        assert set(probe["flags"]) <= {"change-ip", "change-port"}
        assert probe["outcome"] in {"ok", "timeout", "error", "bad-source", "invalid"}
        assert probe["rtt_ms"] is None or probe["rtt_ms"] >= 0


async def test_json_verdict_is_exit_0_and_clean(stun_server: ServerInfo) -> None:
    done = await run_cli(server_arg(stun_server), "--json")
    assert done.returncode == 0, done.stderr
    assert done.stderr == b""  # not a terminal: no progress at all
    obj = json.loads(done.stdout)  # exactly one JSON object, nothing else
    check_shape(obj)
    assert (obj["nat_type"], obj["mapping"], obj["filtering"], obj["hairpinning"]) == (
        "open-internet", "endpoint-independent", "endpoint-independent", None)
    assert obj["reason"] is None and obj["undetermined"] == []
    assert obj["local_address"]["ip"] == PRIMARY_IP
    assert obj["mapped_address"] == obj["local_address"]
    assert obj["server"]["primary"] == {"ip": PRIMARY_IP, "port": stun_server.udp[0][1]}
    assert obj["server"]["alternate"]["ip"] == "127.0.0.2"
    flags = {tuple(p["flags"]) for p in obj["probes"]}
    assert ("change-ip", "change-port") in flags


async def test_inconclusive_is_exit_3_with_the_reason(nursery: trio.Nursery) -> None:
    info = await nursery.start(serve, stun_config(alt_ip=None, alt_port=None))
    done = await run_cli(server_arg(info), "--json")
    assert done.returncode == 3, done.stderr
    obj = json.loads(done.stdout)
    check_shape(obj)
    assert obj["nat_type"] == "unknown"
    assert obj["reason_code"] == "no-alternate-address"
    assert "no alternate address" in obj["reason"]
    assert {"what": "nat_type", "reason_code": "no-alternate-address",
            "reason": obj["reason"]} in obj["undetermined"]


async def test_no_answer_at_all_says_so_and_exits_inconclusive() -> None:
    # Silence cannot tell blocked UDP from a server that is down: exit 3, and say both.
    done = await run_cli(f"{PRIMARY_IP}:{free_port()}", "--json", "--timeout", "0.2")
    assert done.returncode == 3, done.stderr
    assert done.stderr == (b"natsrv classify: no answer from the server; UDP may be "
                           b"blocked or the server down\n")
    obj = json.loads(done.stdout)
    assert obj["nat_type"] == "udp-blocked"
    assert obj["reason_code"] == "no-response-from-server"
    assert obj["duration_s"] < 1.0


async def test_json_carries_tool_version_time_and_host(stun_server: ServerInfo) -> None:
    from natsrv import __version__

    done = await run_cli(server_arg(stun_server), "--json")
    meta = json.loads(done.stdout)["meta"]
    assert meta["tool"] == "natsrv classify" and meta["version"] == __version__
    assert meta["started"].endswith("Z") and meta["host"]["name"]


async def test_ascii_table_has_no_box_drawing(stun_server: ServerInfo) -> None:
    done = await run_cli(server_arg(stun_server), "--ascii")
    text = done.stdout.decode()
    assert "NAT type" in text and "+--" in text
    assert all(ord(c) < 128 for c in text), [c for c in text if ord(c) >= 128][:5]


async def test_table_ends_with_one_plain_sentence(stun_server: ServerInfo) -> None:
    done = await run_cli(server_arg(stun_server))
    assert done.returncode == 0
    text = done.stdout.decode()
    assert "NAT type" in text and "open-internet" in text and "Probes" in text
    assert "\x1b[" not in text  # no colour codes into a pipe
    assert text.splitlines()[-1] == MEANING[NatType.OPEN_INTERNET]
    assert done.stderr == b""


async def test_progress_goes_to_a_terminal_stderr_never_stdout(stun_server: ServerInfo) -> None:
    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: every copy of the terminal's other end is closed
                return
            if not data:
                return
            chunks.append(data)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: trio.to_thread.run_sync(drain, abandon_on_cancel=True))
            try:
                done = await run_cli(server_arg(stun_server), "--json", stderr=slave)
            finally:
                os.close(slave)
    finally:
        os.close(master)
    assert done.returncode == 0
    obj = json.loads(done.stdout)  # stdout stays pure JSON
    assert obj["nat_type"] == "open-internet"
    shown = b"".join(chunks)
    assert b"probes done" in shown, shown
