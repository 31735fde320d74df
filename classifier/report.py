"""What ``natsrv classify`` prints: one JSON object (``--json``) or a rich table, one
plain sentence on what the result means for peer-to-peer calls, and the progress shown
on a terminal's stderr while the probes run. The only classifier module importing rich,
and the only one writing prose: the decisions give ``Finding`` facts, and ``say`` turns
each into its sentence (a result's ``reason``, a note), with the tests' labels and what
each NAT type means (``MEANING``).

The JSON object (DESIGN.md, "Command line"): ``nat_type``, ``reason`` and
``reason_code`` (null unless the type is unknown, or for udp-blocked why it looks
blocked), ``mapping``, ``filtering``, ``hairpinning``, ``mapped_address``,
``local_address``, ``server``, ``probes`` (each with ``target``, ``flags``, ``outcome``,
``rtt_ms`` and more), plus ``undetermined`` (what could not be found out and why),
``notes``, ``meaning``, ``alg_suspected``, ``cgnat_suspected``, ``port_allocation``,
``lifetime``, ``cross_check``, ``ipv6`` (the same object for IPv6, ``{"skipped": ...}``
or null). Addresses are ``{"ip": ..., "port": ...}`` objects.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from .model import Endpoint, Family, Finding, NatType, ProbeId, ProbeTest, ReasonCode, Why
from .model import fmt as _fmt
from .run import Observer, ProbeRecord, Result, Skipped

JSON = dict[str, Any]


# --------------------------------------------------------------------------- prose

#: One sentence per type: what it means for a peer-to-peer (VoIP, WebRTC) call.
MEANING: dict[NatType, str] = {
    NatType.OPEN_INTERNET: (
        "No NAT and no filtering: peers can reach this host directly, so calls connect "
        "peer-to-peer without a relay."
    ),
    NatType.FULL_CONE: (
        "Any peer can send to the mapped address once it is known, so direct "
        "peer-to-peer calls work whatever the other side's NAT."
    ),
    NatType.RESTRICTED_CONE: (
        "Peers get through once this host has sent them a packet, so ICE hole punching "
        "connects calls with almost every peer, even one behind a symmetric NAT."
    ),
    NatType.PORT_RESTRICTED_CONE: (
        "Hole punching connects calls with open hosts and cone NATs, but a call to a "
        "peer behind a symmetric NAT usually needs a TURN relay."
    ),
    NatType.SYMMETRIC: (
        "Every destination gets a new mapping, so direct media between two peers "
        "usually fails (unless the other side is open or a full or restricted cone) and "
        "calls need a TURN relay."
    ),
    NatType.SYMMETRIC_UDP_FIREWALL: (
        "A public address behind a firewall that drops unsolicited UDP: hole punching "
        "connects most calls, but a peer behind a symmetric NAT may need a TURN relay."
    ),
    NatType.UDP_BLOCKED: (
        "No UDP gets through, so calls work only through a TURN relay reached over TCP "
        "or TLS (best on port 443)."
    ),
    NatType.UNKNOWN: (
        "The NAT type could not be determined, so whether calls can connect "
        "peer-to-peer is unknown; see the reason."
    ),
}


_TEST_LABEL = {
    ProbeTest.TEST1: "Test I",
    ProbeTest.TEST2: "Test II (change IP and port)",
    ProbeTest.TEST1_ALT: "Test I to the alternate address",
    ProbeTest.TEST3: "Test III (change port)",
    ProbeTest.SEND: "the hairpinning request",
}
_MAPPING_LABEL = {
    ProbeTest.TEST2: "Test II (alternate IP, primary port)",
    ProbeTest.TEST3: "Test III (alternate IP and port)",
}


def label(probe: ProbeId | None) -> str:
    """A test as a reader knows it: ``Test I`` (classic), ``mapping Test II (alternate IP,
    primary port)``, ``filtering Test III (change port)``, ``hairpin Test I``."""
    if probe is None:
        return "a test"
    labels = _MAPPING_LABEL if probe.family is Family.MAPPING else {}
    name = labels.get(probe.test) or _TEST_LABEL.get(probe.test) or str(probe)
    return name if probe.family is Family.CLASSIC else f"{probe.family} {name}"


def _error(code: int | None) -> str:
    return "an error response" if code is None else f"error {code}"


def _second(f: Finding) -> str:
    return f"the second server {_fmt(f.at, 'no address')}"


def say(f: Finding) -> str:
    """The sentence for a finding: a result's ``reason`` or a note."""
    test, at, other = label(f.probe), _fmt(f.at), _fmt(f.other)
    match f.why:
        case Why.NOT_RUN:
            return f"{test} was not run"
        case Why.NO_RESPONSE:
            return (f"no response from {at} to {test}: UDP is blocked on this network, "
                    "or the server is down")
        case Why.ERROR_RESPONSE:
            return (f"the server answered {test} with {_error(f.error_code)} instead of a "
                    "mapped address")
        case Why.INVALID_RESPONSE:
            return f"the reply to {test} was not a valid Binding response"
        case Why.WRONG_SOURCE:
            return (f"the reply to {test} came from {at}, not from {other} where the "
                    "request was sent")
        case Why.NO_MAPPED_ADDRESS:
            return f"the reply to {test} carried no mapped address"
        case Why.GAVE_NO_MAPPED_ADDRESS:
            return f"{test} gave no mapped address"
        case Why.CHANGE_REJECTED:
            return (f"the server answered {test} with {_error(f.error_code)}: it does not "
                    "carry out CHANGE-REQUEST, so it cannot test the NAT's filtering")
        case Why.CHANGE_IGNORED_ELSEWHERE:
            return (f"the reply to {test} came from the wrong address, not from {other}: "
                    "the server ignored CHANGE-REQUEST, so the reply says nothing about the "
                    "NAT's filtering")
        case Why.SOURCE_NOT_RECORDED:
            return (f"the source of the reply to {test} was not recorded, so whether the "
                    "server honoured CHANGE-REQUEST cannot be checked")
        case Why.CHANGE_IGNORED:
            return (f"the reply to {test} came from {at} instead of {other}: the server "
                    "ignored CHANGE-REQUEST, so the reply says nothing about the NAT's "
                    "filtering")
        case Why.CHANGE_WRONG_SOURCE:
            return (f"the reply to {test} came from {at}, neither the primary address "
                    f"{_fmt(f.primary)} nor {other} where CHANGE-REQUEST should have sent "
                    "it from")
        case Why.NO_ALTERNATE:
            return ("server has no alternate address: its reply to Test I carried neither "
                    "OTHER-ADDRESS nor CHANGED-ADDRESS, so the tests that need a second IP "
                    "address and port cannot be run")
        case Why.ALTERNATE_SAME_IP:
            return (f"server's alternate address {at} is on the same IP as its primary "
                    f"{_fmt(f.primary)}, so it cannot send from a second IP address as the "
                    "test needs")
        case Why.ALTERNATE_SAME_PORT:
            return (f"server's alternate address {at} uses the same port as its primary "
                    f"{_fmt(f.primary)}, so it cannot send from a second port as the test "
                    "needs")
        case Why.ALTERNATE_UNREACHABLE:
            return (f"no response from the server's alternate address {at} to {test}, "
                    "although the primary address answered: the alternate is unreachable "
                    "or advertised wrongly, so a missing reply cannot be blamed on the NAT")
        case Why.NO_NAT_THEN_MAPPED:
            return (f"Test I saw no NAT (mapped address {at} is the local address) but "
                    f"Test I to the alternate address was mapped to {other}")
        case Why.NAT_VIEWS_DISAGREE:
            return "the mapping and filtering tests disagree on whether there is a NAT"
        case Why.MAPPING_WITHOUT_NAT:
            return f"mapping {f.behaviors[0]} cannot happen without a NAT"
        case Why.METHODS_DISAGREE | Why.METHODS_DISAGREE_SILENT:
            found = "no reply to any RFC 5780 Test I"
            if f.why is Why.METHODS_DISAGREE:
                found = (f"{f.nat[1]} (mapping {f.behaviors[0]}, filtering "
                         f"{f.behaviors[1]})")
            return (f"the classic RFC 3489 test says {f.nat[0]} but the RFC 5780 tests "
                    f"found {found}: the NAT behaved differently on different sockets or "
                    "changed during the test, so no single type fits")
        case Why.HAIRPIN_NO_MAPPED:
            return "hairpinning was not tested: no mapped address to send to"
        case Why.HAIRPIN_NO_NAT:
            return ("hairpinning does not apply: the mapped address is the local address "
                    "(no NAT)")
        case Why.HAIRPIN_NOT_RUN:
            return "the hairpinning test was not run"
        case Why.LIFETIME_NOT_RUN:
            return "the binding lifetime test was not run"
        case Why.LIFETIME_INCONSISTENT:
            gone, survived = f.seconds[:2]
            return (f"the binding was gone after {gone:g} s yet survived {survived:g} s: "
                    "packets were lost or the NAT expires bindings irregularly; the bounds "
                    f"use only the waits under {gone:g} s")
        case Why.LIFETIME_EXPIRED:
            upper = f.seconds[0]
            return (f"the binding was gone after every wait tried, the shortest {upper:g} "
                    f"s, so it lasts less than {upper:g} s")
        case Why.LIFETIME_TOO_SHORT:
            lower = f.seconds[0]
            return (f"the binding was only shown to last {lower:g} s, too short to "
                    "recommend a keepalive interval safely")
        case Why.LIFETIME_NEEDS_RFC5389:
            return ("the server answers only RFC 3489 requests, and the lifetime test "
                    "needs RESPONSE-PORT (RFC 5780 §7.5)")
        case Why.LIFETIME_RESPONSE_PORT_LOST:
            return ("no answer reached the first socket even without waiting: the server "
                    "does not honour RESPONSE-PORT, or the path drops it")
        case Why.LIFETIME_RESPONSE_PORT_ERROR:
            return (f"the server answered RESPONSE-PORT with error {f.error_code}: it does "
                    "not support RFC 5780 §7.5, which the lifetime test needs")
        case Why.LIFETIME_RESPONSE_PORT_IGNORED:
            return ("the server ignored RESPONSE-PORT (its answer came back to the asking "
                    "socket), which the lifetime test needs")
        case Why.LIFETIME_NO_BINDING:
            return "the server never answered, so there is no binding to time"
        case Why.RFC5780_ALSO:
            return f"RFC 5780 tests: {reason(f.cause)}"
        case Why.CLASSIC_INCONCLUSIVE:
            return f"the classic RFC 3489 test was inconclusive: {reason(f.cause)}"
        case Why.RFC5780_INCONCLUSIVE:
            return f"the RFC 5780 tests were inconclusive: {reason(f.cause)}"
        case Why.CLASSIC_UNTESTED_MAPPING:
            return (f"the classic RFC 3489 test reports {f.nat[0]} without testing the "
                    f"mapping; the RFC 5780 test found {f.behaviors[0]} mapping, so the NAT "
                    f"is {f.nat[1]}")
        case Why.ALG:
            more = f" (and in {f.count} other replies)" if f.count else ""
            return (f"MAPPED-ADDRESS {at} differs from XOR-MAPPED-ADDRESS {other} in the "
                    f"reply to {f.probe}{more}: a router ALG rewrites addresses inside "
                    "packets, which often breaks SIP and STUN (turn off 'SIP ALG' on the "
                    "router)")
        case Why.CGNAT_MAPPED:
            return (f"the mapped address {at} is in 100.64.0.0/10 (RFC 6598): the server "
                    "sits inside the carrier's network, behind or beside a carrier-grade NAT")
        case Why.CGNAT_LOCAL:
            return (f"this host's address {at} is in 100.64.0.0/10 (RFC 6598): the "
                    "provider uses carrier-grade NAT, a second NAT outside your control")
        case Why.PRIVATE_MAPPED:
            return (f"the mapped address {at} is private: the server is inside a private "
                    "network, so the result describes only the path to it")
        case Why.ALT_SILENT:
            return f"{_second(f)} did not answer: no cross-check"
        case Why.ALT_ERROR:
            return f"{_second(f)} answered with error {f.error_code}: no cross-check"
        case Why.ALT_WRONG_SOURCE:
            return (f"{_second(f)} answered from {_fmt(f.other, 'no address')} instead: no "
                    "cross-check")
        case Why.ALT_NO_MAPPED:
            return f"{_second(f)} gave no mapped address: no cross-check"
        case Why.ALT_NOTHING_TO_COMPARE:
            return (f"{_second(f)} mapped this host to {_fmt(f.other, 'no address')}, but "
                    "the primary gave no mapped address to compare with")
        case Why.ALT_ALSO_NO_NAT:
            return f"{_second(f)} also sees no NAT ({other})"
        case Why.ALT_PATHS_DIFFER:
            return (f"the primary server sees this host's own address {_fmt(f.primary)} "
                    f"(no NAT), but {_second(f)} sees {other}: they are reached through "
                    "different paths, so no single type fits")
        case Why.ALT_SAME_CONTRADICTS:
            return (f"{_second(f)} sees the same mapped address {other} as the primary, "
                    f"which contradicts {f.nat[0]} ({f.behaviors[0]} mapping)")
        case Why.ALT_SAME_CONFIRMED | Why.ALT_SAME_MEASURED:
            how = "confirmed" if f.why is Why.ALT_SAME_CONFIRMED else "(measured with it)"
            return (f"{_second(f)} sees the same mapped address {other}: "
                    f"endpoint-independent mapping {how}")
        case Why.ALT_DIFFERENT_CONTRADICTS:
            return (f"{_second(f)} sees {other} where the primary saw {_fmt(f.primary)}, "
                    f"which contradicts {f.nat[0]} ({f.behaviors[0]} mapping)")
        case Why.ALT_DEPENDENT_SYMMETRIC | Why.ALT_DEPENDENT_CONFIRMED:
            how = (" (a symmetric NAT; whether address- or address-and-port-dependent "
                   "needs the primary's alternate address)"
                   if f.why is Why.ALT_DEPENDENT_SYMMETRIC
                   else ": dependent mapping confirmed")
            return (f"{_second(f)} sees {other} where the primary saw {_fmt(f.primary)}: "
                    f"the mapping depends on the destination{how}")
        case Why.SEND_FAILED:
            return f"sending to {at} failed: {f.detail}"
        case Why.ORIGIN_MISMATCH:
            return (f"the server's reply to {f.probe} names {at} as its origin "
                    f"(RESPONSE-ORIGIN or SOURCE-ADDRESS) but came from {other}: a server "
                    "bug, or a server behind a NAT; the classifier goes by where replies "
                    "really come from")
        case Why.DIALECT_RERUN:
            return ("the server ignored every request with the magic cookie (RFC 5389) but "
                    "answered one without it: the tests were run again with RFC 3489 "
                    "requests")
        case Why.DIALECT_SILENT_TOO:
            return "a classic RFC 3489 request (no magic cookie) went unanswered too"
        case Why.IPV6_SILENT_BUT_IPV4_ANSWERS:
            return ("the same server name answers over IPv4, so the silence over IPv6 may "
                    "mean that the server does not serve IPv6 rather than that IPv6 UDP is "
                    "blocked")
        case Why.NO_IPV6_PATH:
            return f"no IPv6 path: {f.detail}"
    raise AssertionError(f"no sentence for {f.why}")  # pragma: no cover


def reason(finding: Finding | None) -> str | None:
    """A result's ``reason``: the finding's sentence, None without a finding."""
    return None if finding is None else say(finding)


def endpoint_json(endpoint: Endpoint | None) -> JSON | None:
    return None if endpoint is None else {"ip": endpoint[0], "port": endpoint[1]}


def fmt(endpoint: Endpoint | None) -> str:
    """An endpoint in a table cell (``classifier.model.fmt``); ``-`` when unknown."""
    return _fmt(endpoint, "-")


def probe_json(record: ProbeRecord) -> JSON:
    p = record.probe
    return {
        "name": p.name,
        "family": record.family,
        "dialect": str(record.dialect),
        "used": record.used,
        "target": endpoint_json(p.target),
        "flags": list(p.flags),
        "outcome": str(p.outcome),
        "rtt_ms": p.rtt_ms,
        "attempts": p.attempts,
        "local": endpoint_json(p.local),
        "source": endpoint_json(p.source),
        "mapped_address": endpoint_json(p.mapped),
        "legacy_mapped_address": endpoint_json(p.legacy_mapped),
        "response_origin": endpoint_json(p.response_origin),
        "other_address": endpoint_json(p.other_address),
        "error_code": p.error_code,
    }


def undetermined(result: Result) -> list[JSON]:
    """What the run could not find out, each with a machine-readable code and a reason."""
    v = result.verdict
    out: list[JSON] = []

    def add(what: str, finding: Finding | None) -> None:
        code = None if finding is None else finding.code
        out.append({"what": what, "reason_code": None if code is None else str(code),
                    "reason": reason(finding)})

    if v.nat_type is NatType.UNKNOWN:
        add("nat_type", v.finding)
    r = v.rfc5780
    if r is not None:
        for what, behavior, found in (("mapping", v.mapping, r.mapping),
                                      ("filtering", v.filtering, r.filtering)):
            if behavior == "unknown" and v.nat_type is not NatType.UDP_BLOCKED:
                add(what, found.finding)
        hp = r.hairpinning
        if (v.hairpinning is None and hp.reason_code is not ReasonCode.NO_NAT
                and v.nat_type is not NatType.UDP_BLOCKED):
            add("hairpinning", hp.finding)
    life = result.lifetime
    if life is not None:
        if life.result is None:
            add("lifetime", life.finding)
        elif life.result.finding is not None:
            add("lifetime", life.result.finding)
    return out


def result_json(result: Result) -> JSON:
    v = result.verdict
    port = v.port_allocation
    life = result.lifetime
    lifetime: JSON | None = None
    if life is not None:
        found = life.result
        finding = life.finding if found is None else found.finding
        code = None if finding is None else finding.code
        lifetime = {
            "lower_s": None if found is None else found.lower_s,
            "upper_s": None if found is None else found.upper_s,
            "keepalive_s": None if found is None else found.keepalive_s,
            "consistent": None if found is None else found.consistent,
            "trials": [{"wait_s": w, "alive": a} for w, a in life.trials],
            "reason": reason(finding),
            "reason_code": None if code is None else str(code),
        }
    check = result.cross_check
    return {
        "nat_type": str(v.nat_type),
        "reason": reason(v.finding),
        "reason_code": None if v.reason_code is None else str(v.reason_code),
        "mapping": str(v.mapping),
        "filtering": str(v.filtering),
        "hairpinning": v.hairpinning,
        "mapped_address": endpoint_json(v.mapped_address),
        "local_address": endpoint_json(v.local_address),
        "ip_version": result.ip_version,
        "server": {
            "name": result.server_name or fmt(result.server),
            "primary": endpoint_json(result.server),
            "alternate": endpoint_json(result.alternate),
            "dialect": str(result.dialect),
            "software": result.software,
        },
        "meaning": MEANING[v.nat_type],
        "undetermined": undetermined(result),
        "notes": [say(note) for note in v.notes],
        "alg_suspected": v.alg_suspected,
        "cgnat_suspected": v.cgnat_suspected,
        "port_allocation": None if port is None else {
            "preserves_port": port.preserves_port, "delta": port.delta,
        },
        "lifetime": lifetime,
        "cross_check": None if check is None else {
            "server": endpoint_json(check.server),
            "mapped_address": endpoint_json(check.mapped),
            "agrees": check.agrees,
            "note": say(check.note),
        },
        "retransmission": {
            "rto_ms": round(result.timing.rto * 1000, 3),
            "rc": result.timing.rc,
            "rm": result.timing.rm,
            "timeout_s": round(result.timing.total, 3),
        },
        "probes": [probe_json(r) for r in result.probes],
        "ignored_datagrams": {
            "malformed": result.counters.malformed,
            "unmatched": result.counters.unmatched,
        },
        "duration_s": result.duration_s,
    }


def report_json(result: Result, ipv6: Result | Skipped | None) -> JSON:
    out = result_json(result)
    if isinstance(ipv6, Result):
        out["ipv6"] = result_json(ipv6)
    elif isinstance(ipv6, Skipped):
        out["ipv6"] = {"skipped": say(ipv6.finding), "server": endpoint_json(ipv6.server)}
    else:
        out["ipv6"] = None
    return out


# --------------------------------------------------------------------------- the table

_STYLE = {
    NatType.OPEN_INTERNET: "bold green",
    NatType.FULL_CONE: "bold green",
    NatType.RESTRICTED_CONE: "bold green",
    NatType.PORT_RESTRICTED_CONE: "bold yellow",
    NatType.SYMMETRIC_UDP_FIREWALL: "bold yellow",
    NatType.SYMMETRIC: "bold red",
    NatType.UDP_BLOCKED: "bold red",
    NatType.UNKNOWN: "bold magenta",
}
_OUTCOME_STYLE = {"ok": "green", "timeout": "yellow", "error": "red", "bad-source": "red",
                  "invalid": "red"}


def _yes_no(value: bool | None) -> str:
    return "unknown" if value is None else ("yes" if value else "no")


def summary_table(result: Result, title: str) -> Table:
    v = result.verdict
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("NAT type", Text(str(v.nat_type), style=_STYLE[v.nat_type]))
    if v.finding is not None:
        table.add_row("Reason", Text(f"{say(v.finding)} [{v.reason_code}]"))
    why = {u["what"]: u["reason_code"] for u in undetermined(result)}

    def value(what: str, text: str) -> str:
        return f"{text} [{why[what]}]" if what in why else text

    table.add_row("Mapping", value("mapping", str(v.mapping)))
    table.add_row("Filtering", value("filtering", str(v.filtering)))
    hairpin = value("hairpinning", _yes_no(v.hairpinning))
    if v.rfc5780 is not None and v.rfc5780.hairpinning.reason_code is ReasonCode.NO_NAT:
        hairpin = "not applicable (no NAT)"
    table.add_row("Hairpinning", hairpin)
    table.add_row("Mapped address", fmt(v.mapped_address))
    table.add_row("Local address", fmt(v.local_address))
    server = fmt(result.server)
    named = result.server_name
    table.add_row("Server", Text(server if named in ("", server) else f"{named} ({server})"))
    table.add_row("Alternate", fmt(result.alternate))
    table.add_row("Dialect", str(result.dialect))
    if result.software:
        table.add_row("Server software", Text(result.software))
    port = v.port_allocation
    if port is not None:
        text = "preserved" if port.preserves_port else (
            "not preserved" + (f", step {port.delta:+d}" if port.delta is not None else ""))
        table.add_row("Port allocation", text)
    life = result.lifetime
    if life is not None:
        found = life.result
        if found is None or found.lower_s is None:
            unknown = reason(life.finding if found is None else found.finding)
            table.add_row("Binding lifetime", Text(f"unknown: {unknown}"))
        else:
            upper = f"{found.upper_s:g} s" if found.upper_s is not None else "the limit"
            keep = f"{found.keepalive_s} s" if found.keepalive_s else "-"
            table.add_row("Binding lifetime", f"at least {found.lower_s:g} s, under {upper}")
            table.add_row("Keepalive", f"every {keep}")
    table.add_row("ALG suspected", _yes_no(v.alg_suspected))
    table.add_row("Carrier-grade NAT", _yes_no(v.cgnat_suspected))
    if result.cross_check is not None:
        table.add_row("Second server", Text(say(result.cross_check.note)))
    table.add_row("Took", f"{result.duration_s:.2f} s")
    return table


def probes_table(result: Result) -> Table:
    table = Table(title="Probes", title_justify="left")
    for name in ("probe", "target", "flags", "outcome", "rtt ms", "sent", "mapped", "from"):
        table.add_column(name, justify="right" if name in ("rtt ms", "sent") else "left")
    for record in result.probes:
        p = record.probe
        outcome = str(p.outcome) + (f" {p.error_code}" if p.error_code else "")
        name = p.name if record.used else f"({p.name})"
        table.add_row(
            name, fmt(p.target), ",".join(p.flags) or "-",
            Text(outcome, style=_OUTCOME_STYLE.get(str(p.outcome), "")),
            "-" if p.rtt_ms is None else f"{p.rtt_ms:.1f}",
            str(p.attempts or "-"), fmt(p.mapped), fmt(p.source),
        )
    return table


def run_metadata(started: float) -> JSON:
    """What a saved ``--json`` report needs to be read later: the tool and its version,
    when the run started (RFC 3339, UTC) and the host it ran on."""
    import datetime
    import platform

    from natsrv import __version__

    stamp = datetime.datetime.fromtimestamp(started, datetime.UTC)
    return {
        "tool": "natsrv classify",
        "version": __version__,
        "started": stamp.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "host": {"name": platform.node(), "system": platform.system(),
                 "release": platform.release(), "python": platform.python_version()},
    }  # fmt: skip


def print_table(
    result: Result,
    ipv6: Result | Skipped | None,
    file: TextIO | None = None,
    *,
    ascii_only: bool = False,
) -> None:
    """The tables and notes; ``ascii_only`` draws them with plain ASCII (for logs,
    e-mail and terminals without box-drawing characters)."""
    out = file or sys.stdout
    # A pipe or file gets the whole table, not one cut to 80 columns.
    console = Console(file=out, highlight=False, width=None if out.isatty() else 160,
                      safe_box=True, no_color=ascii_only)  # fmt: skip
    summary = summary_table(result, f"NAT classification (IPv{result.ip_version})")
    probes = probes_table(result)
    if ascii_only:
        summary.box = probes.box = box.ASCII
    console.print(summary)
    console.print(probes)
    for note in result.verdict.notes:
        console.print(Text(f"note: {say(note)}"))
    if isinstance(ipv6, Result):
        table = summary_table(ipv6, "IPv6")
        if ascii_only:
            table.box = box.ASCII
        console.print(table)
        for note in ipv6.verdict.notes:
            console.print(Text(f"IPv6 note: {say(note)}"))
    elif isinstance(ipv6, Skipped):
        console.print(Text(f"IPv6: not classified ({say(ipv6.finding)})"))
    # The one plain sentence: no markup, no table.
    print(MEANING[result.verdict.nat_type], file=out, flush=True)


# --------------------------------------------------------------------------- progress


class ProgressDisplay(Observer):
    """A spinner on stderr while probes run; only ever used when stderr is a terminal."""

    def __init__(self, file: TextIO | None = None) -> None:
        self.console = Console(file=file or sys.stderr)
        self.progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
            console=self.console, transient=True,
        )
        self.task = self.progress.add_task("classifying", total=None)
        self.done = 0
        self.running: dict[str, str] = {}

    def __enter__(self) -> ProgressDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _show(self, text: str) -> None:
        self.progress.update(self.task, description=escape(text))

    def probe_started(self, name: str, target: Endpoint) -> None:
        self.running[name] = fmt(target)
        self._show(f"{self.done} probes done; sending {name} to {fmt(target)}")

    def probe_finished(self, record: ProbeRecord) -> None:
        self.done += 1
        self.running.pop(record.probe.name, None)
        waiting = f"; waiting for {len(self.running)}" if self.running else ""
        self._show(f"{self.done} probes done; {record.probe.name}: {record.probe.outcome}"
                   f"{waiting}")

    def waiting(self, trials: int, longest: float) -> None:
        self._show(f"binding lifetime: {trials} idle trials, the longest {longest:g} s")


__all__ = [
    "MEANING",
    "ProgressDisplay",
    "endpoint_json",
    "label",
    "print_table",
    "probe_json",
    "reason",
    "report_json",
    "result_json",
    "say",
    "undetermined",
]
