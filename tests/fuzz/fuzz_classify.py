"""Fuzz the classifier's reply handling: the whole probe plan driven by hostile replies.

A NAT classifier talks to whatever server it is pointed at (or whatever answers in its
place), so every reply is attacker input. One fuzz input is a sequence of records, one
per probe the plan asks for:

    control (1 byte): bits 0-1 == 0 -> no reply (a timeout); else a reply follows,
                      and bits 2-3 say where it came from: 0 the probe's target,
                      1 the server's alternate endpoint, 2 the other port of the
                      target's IP, 3 an address from the next 6 bytes
    length (2 bytes, big-endian, mod 1501), then that many bytes: the datagram

The datagram goes through what the classifier does with a reply: ``decode_untrusted``
(returns or raises ParseError), ``read_binding_response`` (None or a ``BindingReply`` of
well-typed fields), the ``Probe`` recorded from it, and ``next_probe`` for the next
step, family after family; at the end ``verdict_from_probes``. Invariants: nothing but
ParseError is raised, each family's plan ends within a bounded number of probes, and
the verdict is one of the documented NAT types. Seeds (tests/fuzz/corpus/classify) are
the answers natsrv itself gives to the classifier's requests (RFC 5389 with and
without CHANGE-REQUEST, RFC 3489 classic ones, an error), see make_seeds.py.
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path
from typing import Any

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports():
    from classifier import plan
    from natsrv.stun.errors import ParseError
    from natsrv.stun.message import decode_untrusted

    try:  # the reply readers' module since the classifier was split into modules
        from classifier.binding import read_binding_response
    except ImportError:
        from classifier.transport import read_binding_response

#: What turns a reply into a Probe: the plan's own ``observe`` where it has one (else
#: the same steps as classifier/run.py, below).
OBSERVE = getattr(plan, "observe", None)

SERVER = ("192.0.2.1", 3478)
ALTERNATE = ("192.0.2.2", 3479)
#: The families a full run walks (the port-allocation samples last).
FAMILIES = [plan.Family.CLASSIC, plan.Family.MAPPING, plan.Family.FILTERING,
            plan.Family.HAIRPIN, plan.Family.PORT_ALLOCATION]  # fmt: skip
MAX_PROBES_PER_FAMILY = 32
NAT_TYPES = {"open-internet", "full-cone", "restricted-cone", "port-restricted-cone",
             "symmetric", "symmetric-udp-firewall", "udp-blocked", "unknown"}  # fmt: skip


class Records:
    """The fuzz input, read record by record; exhausted input means timeouts."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, n: int) -> bytes:
        chunk = self.data[self.at : self.at + n]
        self.at += n
        return chunk

    def next_reply(self, target: tuple[str, int]) -> tuple[bytes, tuple[str, int]] | None:
        control = self.take(1)
        if not control or control[0] & 3 == 0:
            return None
        where = control[0] >> 2 & 3
        if where == 0:
            source = target
        elif where == 1:
            source = ALTERNATE
        elif where == 2:
            source = (target[0], ALTERNATE[1] if target[1] == SERVER[1] else SERVER[1])
        else:
            raw = self.take(6).ljust(6, b"\0")
            source = (str(ipaddress.IPv4Address(raw[:4])), int.from_bytes(raw[4:], "big"))
        length = int.from_bytes(self.take(2).ljust(2, b"\0"), "big") % 1501
        return self.take(length), source


def check_reply(reply: Any) -> None:
    for endpoint in (reply.mapped, reply.legacy_mapped, reply.other_address,
                     reply.response_origin):  # fmt: skip
        if endpoint is not None:
            ip, port = endpoint
            ipaddress.ip_address(ip)
            assert 0 <= port <= 65535
    assert reply.error_code is None or 0 <= reply.error_code <= 699
    assert reply.software is None or isinstance(reply.software, str)


def probe_for(request: Any, records: Records, local: tuple[str, int], probes: list[Any]) -> Any:
    """What the classifier records for one probe."""
    got = records.next_reply(request.target)
    message = None
    if got is not None:
        try:
            message = decode_untrusted(got[0])
        except ParseError:
            pass  # dropped, as the transport drops it: no reply
    reply = None if message is None else read_binding_response(message)
    if reply is not None:
        check_reply(reply)
    if OBSERVE is not None:
        answer = None if got is None or message is None else plan.Answer(got[1], 1.0, reply)
        return OBSERVE(request, answer, expected=plan.expected_source(request, probes),
                       local=local, attempts=1)  # fmt: skip
    common: dict[str, object] = {"local": local, "attempts": 1}
    if got is None or message is None:
        return request.record(plan.ProbeOutcome.TIMEOUT, **common)
    source = got[1]
    common.update(source=source, rtt_ms=1.0)
    if reply is None:
        return request.record(plan.ProbeOutcome.INVALID, **common)
    common.update(mapped=reply.mapped, legacy_mapped=reply.legacy_mapped,
                  response_origin=reply.response_origin, other_address=reply.other_address,
                  error_code=reply.error_code)  # fmt: skip
    if not reply.success:
        return request.record(plan.ProbeOutcome.ERROR, **common)
    ok = source == request.target
    return request.record(plan.ProbeOutcome.OK if ok else plan.ProbeOutcome.BAD_SOURCE, **common)


def one_input(data: bytes) -> None:
    records = Records(data)
    probes: list[Any] = []
    locals_ = {}
    for index, family in enumerate(FAMILIES):
        local = ("10.200.0.2", 40000 + index)
        locals_[family] = local
        count = 0
        while (request := plan.next_probe(family, SERVER, local, probes)) is not None:
            count += 1
            assert count <= MAX_PROBES_PER_FAMILY, f"{family}: the plan does not end"
            probes.append(probe_for(request, records, local, probes))
    verdict = plan.verdict_from_probes(locals_, probes)
    nat_type = getattr(verdict, "nat_type", None)
    assert str(getattr(nat_type, "value", nat_type)) in NAT_TYPES, nat_type


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
