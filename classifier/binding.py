"""What the classifier sends and reads, without sending it: the Binding request in
either dialect (RFC 5389/8489 with the magic cookie, RFC 3489 without; CHANGE-REQUEST,
RFC 5780 §7.2; RESPONSE-PORT, §7.5), the fields of a Binding response in either dialect,
and the RFC 8489 §6.2.1 retransmission schedule. Pure: the bytes are ``natsrv.stun``'s,
the sending and waiting ``classifier/transport.py``'s.

Retransmission (RFC 8489 §6.2.1): the request is sent at 0, RTO, 3·RTO, 7·RTO, ... —
Rc sends in all — and the transaction fails Rm·RTO after the last send. The RFC's
defaults (RTO 500 ms, Rc 7, Rm 16) give up after 39.5 s; the classifier waits for many
replies that a NAT is expected to drop, so its default is RTO 100 ms, Rc 4, Rm 8: sends
at 0, 100, 300 and 700 ms, failure at 1.5 s. :meth:`Retransmission.for_timeout` scales
the RTO so that an unanswered request takes a given time.
"""

from __future__ import annotations

from dataclasses import dataclass

from natsrv.stun import (
    MAGIC_COOKIE,
    Attr,
    ChangeRequest,
    ErrorCodeValue,
    Message,
    MessageClass,
    Method,
)

from .model import Endpoint

# --------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class Retransmission:
    """RFC 8489 §6.2.1 parameters: initial RTO (seconds), Rc sends, Rm·RTO final wait."""

    rto: float = 0.1
    rc: int = 4
    rm: int = 8

    def __post_init__(self) -> None:
        if not (self.rto > 0 and self.rc >= 1 and self.rm >= 1):
            raise ValueError("RTO must be positive, Rc and Rm at least 1")

    @property
    def offsets(self) -> tuple[float, ...]:
        """When each send happens, from the first: 0, RTO, 3·RTO, 7·RTO, ..."""
        return tuple(self.rto * ((1 << i) - 1) for i in range(self.rc))

    @property
    def total(self) -> float:
        """How long an unanswered transaction takes before it fails."""
        return self.offsets[-1] + self.rm * self.rto

    def for_timeout(self, seconds: float) -> Retransmission:
        """The same Rc and Rm with the RTO scaled so that ``total`` is ``seconds``."""
        if seconds <= 0:
            raise ValueError("timeout must be positive")
        return Retransmission(self.rto * seconds / self.total, self.rc, self.rm)


#: The classifier's default: 1.5 s per unanswered request.
DEFAULT_TIMING = Retransmission()
#: RFC 8489 §6.2.1's own defaults, for comparison: 39.5 s per unanswered request.
RFC8489_TIMING = Retransmission(0.5, 7, 16)


# --------------------------------------------------------------------------- requests


def binding_request(
    *,
    cookie: bool = True,
    change_ip: bool = False,
    change_port: bool = False,
    response_port: int | None = None,
) -> Message:
    """A Binding request: RFC 5389/8489 with the magic cookie, or an RFC 3489 one
    without it (a 128-bit transaction ID whose first 32 bits are not the cookie, or the
    server would take it for a modern request). CHANGE-REQUEST only when a flag is set:
    a server that does not know the attribute must answer 420 (RFC 8489 §7.3.1)."""
    while True:
        msg = Message(Method.BINDING, MessageClass.REQUEST, cookie=cookie)
        if cookie or int.from_bytes(msg.transaction_id[:4], "big") != MAGIC_COOKIE:
            break
    if change_ip or change_port:
        msg.add(Attr.CHANGE_REQUEST, ChangeRequest(change_ip, change_port))
    if response_port is not None:
        msg.add(Attr.RESPONSE_PORT, response_port)
    return msg


# --------------------------------------------------------------------------- replies


@dataclass(frozen=True)
class BindingReply:
    """What a Binding response says, in either dialect.

    ``mapped``: XOR-MAPPED-ADDRESS (RFC 8489 §14.2), else MAPPED-ADDRESS (§14.1, RFC 3489
    §11.2.1); ``legacy_mapped``: MAPPED-ADDRESS when both are present (a difference
    betrays an ALG). ``other_address``: OTHER-ADDRESS (RFC 5780 §7.4), else
    CHANGED-ADDRESS (RFC 3489 §11.2.3). ``response_origin``: RESPONSE-ORIGIN (RFC 5780
    §7.3), else SOURCE-ADDRESS (RFC 3489 §11.2.5).
    """

    success: bool
    mapped: Endpoint | None = None
    legacy_mapped: Endpoint | None = None
    other_address: Endpoint | None = None
    response_origin: Endpoint | None = None
    error_code: int | None = None
    software: str | None = None


def read_binding_response(msg: Message) -> BindingReply | None:
    """The fields of a Binding success or error response; None for anything else
    (a request, an indication, another method)."""
    if msg.method != Method.BINDING or msg.cls not in (MessageClass.SUCCESS, MessageClass.ERROR):
        return None
    software = msg.get(Attr.SOFTWARE)
    if isinstance(software, str):
        software = software.rstrip("\x00 ")
    if msg.cls == MessageClass.ERROR:
        error = msg.get(Attr.ERROR_CODE)
        code = error.code if isinstance(error, ErrorCodeValue) else None
        return BindingReply(False, error_code=code, software=software)
    xor = msg.get(Attr.XOR_MAPPED_ADDRESS)
    plain = msg.get(Attr.MAPPED_ADDRESS)
    return BindingReply(
        True,
        mapped=xor if xor is not None else plain,
        legacy_mapped=plain if xor is not None else None,
        other_address=_first(msg, Attr.OTHER_ADDRESS, Attr.CHANGED_ADDRESS),
        response_origin=_first(msg, Attr.RESPONSE_ORIGIN, Attr.SOURCE_ADDRESS),
        software=software,
    )


def _first(msg: Message, *types: int) -> Endpoint | None:
    for attr_type in types:
        value = msg.get(attr_type)
        if value is not None:
            return value  # type: ignore[no-any-return]
    return None


__all__ = [
    "DEFAULT_TIMING",
    "RFC8489_TIMING",
    "BindingReply",
    "Retransmission",
    "binding_request",
    "read_binding_response",
]
