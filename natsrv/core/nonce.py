"""Stateless nonces for the long-term credential mechanism.

RFC 8489 §9.2: the server hands out a NONCE with its 401 and answers 438 (Stale Nonce)
to a request whose nonce is no longer valid (§9.2.4); a nonce is made of qdtext and is
fewer than 128 characters (§14.10). Like
trio's DTLS cookies (``trio/_dtls.py``), a nonce here is an HMAC over the time it was
issued and the client's IP address, so checking it needs no per-client state: a flood
of unauthenticated requests costs no memory.

Layout (ASCII, 25 characters with the cookie, 12 without)::

    [ "obMatJos2" + base64(security features, 24 bits) ]     nonce cookie, RFC 8489 §9.2
    base64url( issued (5 bytes, unsigned, unix seconds)
               || HMAC-SHA256(key, label || cookie || issued || client IP)[:4] )

Short on purpose: every unauthenticated Allocate gets a 401 carrying it, and a spoofed
flood turns each byte of that answer into reflected traffic (the default 401 to a
browser's first Allocate is 76 bytes). A 32-bit tag is enough: the nonce travels
inside the client's MESSAGE-INTEGRITY, so forging one gains nothing without the
password, and the tag only keeps a client from minting nonces for another IP or time.

The nonce cookie advertises the STUN Security Features (RFC 8489 §18.1). Bits are
numbered from the least significant (verified erratum 6290; the Appendix B.1 vector's
cookie ``obMatJos2AAAC`` is bit 1, username anonymity), so "password algorithms" is
0x000001 and the default cookie is ``obMatJos2AAAB``. It
is covered by the HMAC, so a man in the middle cannot strip it to bid the client down
to MD5 without the nonce turning "invalid". Pass ``security_features=None`` for a plain
RFC 5389 nonce.

Times are whole seconds (``issued = floor(now)``), so a nonce is "ok" for between
``lifetime - 1`` and ``lifetime`` seconds. ``now`` must be the same clock wherever the
key is shared: wall-clock time if several worker processes share a key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import secrets
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Literal, TypeAlias

from ..stun.attributes import (
    SecurityFeature,
    nonce_cookie,
    pack_ip,
)
from .policy import canonical_peer

NonceStatus: TypeAlias = Literal["ok", "stale", "invalid"]
ClientAddress: TypeAlias = "str | IPv4Address | IPv6Address | tuple[str, int]"


_LABEL = b"natsrv nonce v2\x00"
_ISSUED_BYTES = 5  # unsigned seconds since 1970, good for 34,000 years
_MAX_ISSUED = 1 << (8 * _ISSUED_BYTES)
_TAG_BYTES = 4
_BODY_CHARS = 12  # base64 of 5 + 4 bytes, no padding needed
_BODY = re.compile(r"[A-Za-z0-9_-]{12}")
_MIN_KEY_BYTES = 16
#: Client addresses whose latest nonce ``NonceFactory.issue`` remembers.
RECENT_CLIENTS = 4096


def _client_ip(client_addr: ClientAddress) -> bytes:
    """Packed canonical IP (an IPv4-mapped IPv6 client is the IPv4 client)."""
    host = client_addr[0] if isinstance(client_addr, tuple) else client_addr
    if type(host) is str and ":" not in host:
        try:  # the common case, a dotted quad from recvfrom: the codec's cached packing
            return pack_ip(host)
        except ValueError:
            pass  # canonical_peer below says what is wrong with it
    return canonical_peer(host).packed


@dataclass(frozen=True, eq=False)
class NonceFactory:
    """Issues and checks stateless nonces; see the module docstring.

    ``key`` (at least 16 bytes; 32 random bytes by default) must stay secret and is
    kept out of the repr. Share one factory, or one key, between everything that must
    accept the same nonces.
    """

    key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    lifetime: float = 600.0
    security_features: int | None = field(default=SecurityFeature.PASSWORD_ALGORITHMS, kw_only=True)
    cookie: str = field(init=False)
    _mac: hmac.HMAC = field(init=False, repr=False)
    #: The last nonce issued to each recent client address, with its second: the same
    #: inputs give the same nonce, so a client's retransmissions and the clients behind
    #: one address cost one HMAC per second. Bounded; emptied when full.
    _recent: dict[object, tuple[int, str]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        if len(self.key) < _MIN_KEY_BYTES:
            raise ValueError(f"nonce key must be at least {_MIN_KEY_BYTES} bytes")
        if not (math.isfinite(self.lifetime) and self.lifetime > 0):
            raise ValueError("nonce lifetime must be a positive number of seconds")
        features = self.security_features
        cookie = "" if features is None else nonce_cookie(features)
        object.__setattr__(self, "cookie", cookie)
        mac = hmac.new(self.key, _LABEL + cookie.encode("ascii"), hashlib.sha256)
        object.__setattr__(self, "_mac", mac)

    @property
    def nonce_length(self) -> int:
        return len(self.cookie) + _BODY_CHARS

    def _tag(self, issued: bytes, ip: bytes) -> bytes:
        mac = self._mac.copy()
        mac.update(issued)
        mac.update(ip)
        return mac.digest()[:_TAG_BYTES]

    def issue(self, client_addr: ClientAddress, now: float) -> str:
        """A fresh nonce for this client IP. ``ValueError`` if the address is not an IP
        or ``now`` is not a finite time."""
        if not math.isfinite(now):
            raise ValueError("now must be a finite time")
        second = math.floor(now)
        host = client_addr[0] if type(client_addr) is tuple else client_addr
        recent = self._recent.get(host)
        if recent is not None and recent[0] == second:
            return recent[1]
        if not 0 <= second < _MAX_ISSUED:
            raise ValueError("now is out of range")
        issued = second.to_bytes(_ISSUED_BYTES, "big")
        body = issued + self._tag(issued, _client_ip(client_addr))
        nonce = self.cookie + base64.urlsafe_b64encode(body).decode("ascii")
        if len(self._recent) >= RECENT_CLIENTS:
            self._recent.clear()
        self._recent[host] = (second, nonce)
        return nonce

    def check(self, nonce: object, client_addr: ClientAddress, now: float) -> NonceStatus:
        """ "ok", "stale" (authentic but expired: answer 438) or "invalid" (not ours,
        tampered, malformed or issued to another IP: answer 401 with a fresh nonce).
        Never raises."""
        window = self.valid_window(nonce, client_addr)
        if window is None:
            return "invalid"
        # A nonce from the future (the clock stepped back) is stale, not ok: its
        # lifetime would otherwise stretch by the size of the step.
        if window[0] <= now < window[1]:
            return "ok"
        return "stale"

    def valid_window(self, nonce: object, client_addr: ClientAddress) -> tuple[float, float] | None:
        """``(issued, issued + lifetime)`` for an authentic nonce of this client IP, None
        for anything else. Never raises."""
        if not isinstance(nonce, str) or len(nonce) != self.nonce_length:
            return None
        cookie = self.cookie
        if not nonce.startswith(cookie):
            return None
        body = nonce[len(cookie) :]
        if _BODY.fullmatch(body) is None:
            return None
        raw = base64.urlsafe_b64decode(body)
        issued, tag = raw[:_ISSUED_BYTES], raw[_ISSUED_BYTES:]
        try:
            ip = _client_ip(client_addr)
        except (ValueError, TypeError, IndexError):
            return None
        if not hmac.compare_digest(tag, self._tag(issued, ip)):
            return None
        start = float(int.from_bytes(issued, "big"))
        return start, start + self.lifetime
