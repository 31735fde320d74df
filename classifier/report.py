"""What ``natsrv classify`` prints: one JSON object (``--json``) or a rich table, one
plain sentence on what the result means for peer-to-peer calls, and the progress shown
on a terminal's stderr while the probes run. The only classifier module importing rich.

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

from .model import Endpoint, NatType, ReasonCode
from .model import fmt as _fmt
from .run import Observer, ProbeRecord, Result, Skipped

JSON = dict[str, Any]


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

    def add(what: str, code: ReasonCode | None, reason: str | None) -> None:
        out.append({"what": what, "reason_code": None if code is None else str(code),
                    "reason": reason})

    if v.nat_type is NatType.UNKNOWN:
        add("nat_type", v.reason_code, v.reason)
    r = v.rfc5780
    if r is not None:
        for what, behavior, found in (("mapping", v.mapping, r.mapping),
                                      ("filtering", v.filtering, r.filtering)):
            if behavior == "unknown" and v.nat_type is not NatType.UDP_BLOCKED:
                add(what, found.reason_code, found.reason)
        hp = r.hairpinning
        if (v.hairpinning is None and hp.reason_code is not ReasonCode.NO_NAT
                and v.nat_type is not NatType.UDP_BLOCKED):
            add("hairpinning", hp.reason_code, hp.reason)
    life = result.lifetime
    if life is not None:
        if life.result is None:
            add("lifetime", life.reason_code, life.reason)
        elif life.result.reason_code is not None:
            add("lifetime", life.result.reason_code, life.result.reason)
    return out


def result_json(result: Result) -> JSON:
    v = result.verdict
    port = v.port_allocation
    life = result.lifetime
    lifetime: JSON | None = None
    if life is not None:
        found = life.result
        code = life.reason_code if found is None else found.reason_code
        lifetime = {
            "lower_s": None if found is None else found.lower_s,
            "upper_s": None if found is None else found.upper_s,
            "keepalive_s": None if found is None else found.keepalive_s,
            "consistent": None if found is None else found.consistent,
            "trials": [{"wait_s": w, "alive": a} for w, a in life.trials],
            "reason": life.reason if found is None else found.reason,
            "reason_code": None if code is None else str(code),
        }
    check = result.cross_check
    return {
        "nat_type": str(v.nat_type),
        "reason": v.reason,
        "reason_code": None if v.reason_code is None else str(v.reason_code),
        "mapping": str(v.mapping),
        "filtering": str(v.filtering),
        "hairpinning": v.hairpinning,
        "mapped_address": endpoint_json(v.mapped_address),
        "local_address": endpoint_json(v.local_address),
        "ip_version": result.ip_version,
        "server": {
            "name": result.server_name,
            "primary": endpoint_json(result.server),
            "alternate": endpoint_json(result.alternate),
            "dialect": str(result.dialect),
            "software": result.software,
        },
        "meaning": v.meaning,
        "undetermined": undetermined(result),
        "notes": list(v.notes),
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
            "note": check.note,
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
        out["ipv6"] = {"skipped": ipv6.reason, "server": endpoint_json(ipv6.server)}
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
    if v.reason:
        table.add_row("Reason", Text(f"{v.reason} [{v.reason_code}]"))
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
            unknown = life.reason if found is None else found.reason
            table.add_row("Binding lifetime", Text(f"unknown: {unknown}"))
        else:
            upper = f"{found.upper_s:g} s" if found.upper_s is not None else "the limit"
            keep = f"{found.keepalive_s} s" if found.keepalive_s else "-"
            table.add_row("Binding lifetime", f"at least {found.lower_s:g} s, under {upper}")
            table.add_row("Keepalive", f"every {keep}")
    table.add_row("ALG suspected", _yes_no(v.alg_suspected))
    table.add_row("Carrier-grade NAT", _yes_no(v.cgnat_suspected))
    if result.cross_check is not None:
        table.add_row("Second server", Text(result.cross_check.note))
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
        console.print(Text(f"note: {note}"))
    if isinstance(ipv6, Result):
        table = summary_table(ipv6, "IPv6")
        if ascii_only:
            table.box = box.ASCII
        console.print(table)
        for note in ipv6.verdict.notes:
            console.print(Text(f"IPv6 note: {note}"))
    elif isinstance(ipv6, Skipped):
        console.print(Text(f"IPv6: not classified ({ipv6.reason})"))
    # The one plain sentence: no markup, no table.
    print(result.verdict.meaning, file=out, flush=True)


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

    def waiting(self, text: str) -> None:
        self._show(text)


__all__ = [
    "ProgressDisplay",
    "endpoint_json",
    "print_table",
    "probe_json",
    "report_json",
    "result_json",
    "undetermined",
]
