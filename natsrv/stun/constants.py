"""STUN/TURN registries, each member citing where it is defined.

RFC 8489 §18 (STUN), RFC 5389, RFC 3489 §11.2 (classic attributes), RFC 5780 §7
(NAT behaviour discovery), RFC 8656 §18 (TURN), RFC 6062 (TURN over TCP), RFC 8445 (ICE).

A registry is a class of plain ``int`` attributes, not an ``IntEnum``: reading an enum
member costs about 70 ns on CPython 3.11 against 15 ns for a class attribute, and the
request paths read a few dozen per message. ``Attr.name_of(0x0015)`` gives ``"NONCE"``.
"""

from __future__ import annotations

from typing import ClassVar


class Registry:
    """Named integer constants of one STUN registry (see the module docstring)."""

    _names: ClassVar[dict[int, str]]

    def __init_subclass__(cls) -> None:
        cls._names = {
            value: name
            for name, value in vars(cls).items()
            if not name.startswith("_") and type(value) is int
        }

    @classmethod
    def name_of(cls, value: int) -> str | None:
        """The member's name, or None for a value the registry does not name."""
        return cls._names.get(value)

    @classmethod
    def values(cls) -> frozenset[int]:
        return frozenset(cls._names)

#: RFC 8489 §5: fixed value in bytes 4..8 of every modern STUN message.
MAGIC_COOKIE = 0x2112A442
MAGIC_COOKIE_BYTES = MAGIC_COOKIE.to_bytes(4, "big")
HEADER_SIZE = 20
#: RFC 8489 §14.7: CRC-32 of the message up to FINGERPRINT, XOR-ed with this.
FINGERPRINT_XOR = 0x5354554E


class Method(Registry):
    """STUN methods (RFC 8489 §18.2, RFC 8656 §17, RFC 6062 §6.1)."""

    BINDING = 0x001  #: RFC 8489
    SHARED_SECRET = 0x002  #: RFC 3489 (reserved in RFC 8489)
    ALLOCATE = 0x003  #: RFC 8656 §7
    REFRESH = 0x004  #: RFC 8656 §8
    SEND = 0x006  #: RFC 8656 §11
    DATA = 0x007  #: RFC 8656 §11
    CREATE_PERMISSION = 0x008  #: RFC 8656 §10
    CHANNEL_BIND = 0x009  #: RFC 8656 §12
    CONNECT = 0x00A  #: RFC 6062 §4.3
    CONNECTION_BIND = 0x00B  #: RFC 6062 §4.4
    CONNECTION_ATTEMPT = 0x00C  #: RFC 6062 §4.4


class MessageClass(Registry):
    """The two class bits of the message type (RFC 8489 §5)."""

    REQUEST = 0b00
    INDICATION = 0b01
    SUCCESS = 0b10
    ERROR = 0b11


class Attr(Registry):
    """Attribute types. Below 0x8000 comprehension-required, above optional (RFC 8489 §18.3)."""

    MAPPED_ADDRESS = 0x0001  #: RFC 8489 §14.1
    RESPONSE_ADDRESS = 0x0002  #: RFC 3489 §11.2.2 (deprecated)
    CHANGE_REQUEST = 0x0003  #: RFC 5780 §7.2 (RFC 3489 §11.2.4)
    SOURCE_ADDRESS = 0x0004  #: RFC 3489 §11.2.5
    CHANGED_ADDRESS = 0x0005  #: RFC 3489 §11.2.3
    USERNAME = 0x0006  #: RFC 8489 §14.3
    PASSWORD = 0x0007  #: RFC 3489 §11.2.7 (deprecated)
    MESSAGE_INTEGRITY = 0x0008  #: RFC 8489 §14.5
    ERROR_CODE = 0x0009  #: RFC 8489 §14.8
    UNKNOWN_ATTRIBUTES = 0x000A  #: RFC 8489 §14.9
    REFLECTED_FROM = 0x000B  #: RFC 3489 §11.2.11 (deprecated)
    CHANNEL_NUMBER = 0x000C  #: RFC 8656 §18.1
    LIFETIME = 0x000D  #: RFC 8656 §18.2
    XOR_PEER_ADDRESS = 0x0012  #: RFC 8656 §18.3
    DATA = 0x0013  #: RFC 8656 §18.4
    REALM = 0x0014  #: RFC 8489 §14.9
    NONCE = 0x0015  #: RFC 8489 §14.10
    XOR_RELAYED_ADDRESS = 0x0016  #: RFC 8656 §18.5
    REQUESTED_ADDRESS_FAMILY = 0x0017  #: RFC 8656 §18.6
    EVEN_PORT = 0x0018  #: RFC 8656 §18.7
    REQUESTED_TRANSPORT = 0x0019  #: RFC 8656 §18.8
    DONT_FRAGMENT = 0x001A  #: RFC 8656 §18.9
    ACCESS_TOKEN = 0x001B  #: RFC 7635 §6.2
    MESSAGE_INTEGRITY_SHA256 = 0x001C  #: RFC 8489 §14.6
    PASSWORD_ALGORITHM = 0x001D  #: RFC 8489 §14.12
    USERHASH = 0x001E  #: RFC 8489 §14.4
    XOR_MAPPED_ADDRESS = 0x0020  #: RFC 8489 §14.2
    RESERVATION_TOKEN = 0x0022  #: RFC 8656 §18.10
    PRIORITY = 0x0024  #: RFC 8445 §16.1
    USE_CANDIDATE = 0x0025  #: RFC 8445 §16.1
    PADDING = 0x0026  #: RFC 5780 §7.6
    RESPONSE_PORT = 0x0027  #: RFC 5780 §7.5
    CONNECTION_ID = 0x002A  #: RFC 6062 §6.2.1
    ADDITIONAL_ADDRESS_FAMILY = 0x8000  #: RFC 8656 §18.11
    ADDRESS_ERROR_CODE = 0x8001  #: RFC 8656 §18.12
    PASSWORD_ALGORITHMS = 0x8002  #: RFC 8489 §14.11
    ALTERNATE_DOMAIN = 0x8003  #: RFC 8489 §14.16
    ICMP = 0x8004  #: RFC 8656 §18.13
    SOFTWARE = 0x8022  #: RFC 8489 §14.14
    ALTERNATE_SERVER = 0x8023  #: RFC 8489 §14.15
    CACHE_TIMEOUT = 0x8027  #: RFC 5780 §7.7
    FINGERPRINT = 0x8028  #: RFC 8489 §14.7
    ICE_CONTROLLED = 0x8029  #: RFC 8445 §16.1
    ICE_CONTROLLING = 0x802A  #: RFC 8445 §16.1
    RESPONSE_ORIGIN = 0x802B  #: RFC 5780 §7.3
    OTHER_ADDRESS = 0x802C  #: RFC 5780 §7.4
    #: draft-ietf-tram-dual-allocation's codes for ADDITIONAL-ADDRESS-FAMILY and
    #: ADDRESS-ERROR-CODE, before RFC 8656 assigned 0x8000/0x8001: what coturn's
    #: clients (``turnutils_uclient -Z``) still send and read.
    ADDITIONAL_ADDRESS_FAMILY_DRAFT = 0x8032  #: draft-ietf-tram-dual-allocation
    ADDRESS_ERROR_CODE_DRAFT = 0x8033  #: draft-ietf-tram-dual-allocation


class ErrorCode(Registry):
    """ERROR-CODE values (RFC 8489 §14.8, RFC 8656 §18.12 and §19, RFC 6062 §6.3)."""

    TRY_ALTERNATE = 300  #: RFC 8489
    BAD_REQUEST = 400  #: RFC 8489
    UNAUTHORIZED = 401  #: RFC 8489
    FORBIDDEN = 403  #: RFC 8656
    UNKNOWN_ATTRIBUTE = 420  #: RFC 8489
    ALLOCATION_MISMATCH = 437  #: RFC 8656
    STALE_NONCE = 438  #: RFC 8489
    ADDRESS_FAMILY_NOT_SUPPORTED = 440  #: RFC 8656
    WRONG_CREDENTIALS = 441  #: RFC 8656
    UNSUPPORTED_TRANSPORT_PROTOCOL = 442  #: RFC 8656
    PEER_ADDRESS_FAMILY_MISMATCH = 443  #: RFC 8656
    CONNECTION_ALREADY_EXISTS = 446  #: RFC 6062
    CONNECTION_TIMEOUT_OR_FAILURE = 447  #: RFC 6062
    ALLOCATION_QUOTA_REACHED = 486  #: RFC 8656
    ROLE_CONFLICT = 487  #: RFC 8445
    SERVER_ERROR = 500  #: RFC 8489
    INSUFFICIENT_CAPACITY = 508  #: RFC 8656


#: Reason phrases sent with each error code (RFC 8489 §14.8 suggests these).
REASONS: dict[int, str] = {
    300: "Try Alternate",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    420: "Unknown Attribute",
    437: "Allocation Mismatch",
    438: "Stale Nonce",
    440: "Address Family not Supported",
    441: "Wrong Credentials",
    442: "Unsupported Transport Protocol",
    443: "Peer Address Family Mismatch",
    446: "Connection Already Exists",
    447: "Connection Timeout or Failure",
    486: "Allocation Quota Reached",
    487: "Role Conflict",
    500: "Server Error",
    508: "Insufficient Capacity",
}

#: Address family codes inside address attributes (RFC 8489 §14.1).
FAMILY_IPV4 = 0x01
FAMILY_IPV6 = 0x02

#: PASSWORD-ALGORITHM values (RFC 8489 §18.5).
PASSWORD_ALGORITHM_MD5 = 0x0001
PASSWORD_ALGORITHM_SHA256 = 0x0002

#: REQUESTED-TRANSPORT protocol numbers (RFC 8656 §18.8, RFC 6062).
TRANSPORT_UDP = 17
TRANSPORT_TCP = 6


def method_name(method: int) -> str:
    """``binding``, ``allocate``, ``create_permission``, ...; ``0x00d`` for others."""
    name = Method.name_of(method)
    return name.lower() if name else f"0x{method:03x}"
