"""The codec's one parse error, and request errors that carry their ERROR-CODE.

Malformed bytes raise :class:`ParseError` (the caller drops the datagram silently).
A well-formed request that the server refuses raises a :class:`RequestError`
subclass; the core turns it into an error response at one boundary (RFC 8489 §6.3.1.1).
"""

from __future__ import annotations

from .constants import REASONS


class ParseError(ValueError):
    """The bytes are not a valid STUN message (or ChannelData frame)."""


class RequestError(Exception):
    """A request that gets an error response. ``code`` is its ERROR-CODE."""

    code: int = 400

    def __init__(self, reason: str | None = None, **extra: object) -> None:
        self.reason = REASONS.get(self.code, "Error") if reason is None else reason
        self.extra = extra
        super().__init__(f"{self.code} {self.reason}")


class TryAlternate(RequestError):
    code = 300


class BadRequest(RequestError):
    code = 400


class Unauthorized(RequestError):
    code = 401


class Forbidden(RequestError):
    code = 403


class UnknownAttribute(RequestError):
    """420: carries the unknown comprehension-required types for UNKNOWN-ATTRIBUTES."""

    code = 420

    def __init__(self, unknown: tuple[int, ...] = (), reason: str | None = None) -> None:
        super().__init__(reason)
        self.unknown = unknown


class AllocationMismatch(RequestError):
    code = 437


class StaleNonce(RequestError):
    code = 438


class AddressFamilyNotSupported(RequestError):
    code = 440


class WrongCredentials(RequestError):
    code = 441


class UnsupportedTransport(RequestError):
    code = 442


class PeerAddressFamilyMismatch(RequestError):
    code = 443


class ConnectionAlreadyExists(RequestError):
    """RFC 6062 §5.2: a Connect to a peer the allocation already connects to."""

    code = 446


class ConnectionTimeoutOrFailure(RequestError):
    """RFC 6062 §5.2: the connection to the peer failed or timed out."""

    code = 447


class AllocationQuotaReached(RequestError):
    code = 486


class ServerError(RequestError):
    code = 500


class InsufficientCapacity(RequestError):
    code = 508
