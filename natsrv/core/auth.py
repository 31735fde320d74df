"""Long-term credential authentication of TURN requests, and the 401 rate limiter.

RFC 8489 §9.2.4 (the server's checks, in this order):

1. no MESSAGE-INTEGRITY(-SHA256) -> 401 with REALM, NONCE (and PASSWORD-ALGORITHMS);
2. MESSAGE-INTEGRITY present but USERNAME (or USERHASH), REALM or NONCE missing -> 400;
3. the nonce carries the security-feature cookie with "password algorithms" set:
   neither PASSWORD-ALGORITHM nor PASSWORD-ALGORITHMS -> MD5; otherwise both must be
   present, PASSWORD-ALGORITHMS must equal what this server advertises and
   PASSWORD-ALGORITHM must be one of them, else 400;
4. unknown username (or a REALM not ours) -> 401;
5. MESSAGE-INTEGRITY-SHA256 if present, else MESSAGE-INTEGRITY, is checked with the key
   of the chosen password algorithm (§9.2.2: MD5 or SHA-256 of
   ``username:realm:password``) -> 401 if wrong;
6. the nonce is stale (or not ours, e.g. issued before a restart) -> 438 with a fresh
   NONCE, REALM and PASSWORD-ALGORITHMS.

Responses to an authenticated request carry MESSAGE-INTEGRITY-SHA256 when the request
used it or named a password algorithm, and MESSAGE-INTEGRITY when the request used it
or named no password algorithm (§9.2.4, last paragraph: processed as MD5 means
MESSAGE-INTEGRITY); so an RFC 5389 client gets MESSAGE-INTEGRITY only, an RFC 8489
client with PASSWORD-ALGORITHM gets MESSAGE-INTEGRITY-SHA256 only, and the mixed cases
get both. Each is computed with the key that verified the request.

The key follows PASSWORD-ALGORITHM, not the HMAC: a SHA-256 password algorithm means a
SHA-256 key even under MESSAGE-INTEGRITY, and MESSAGE-INTEGRITY-SHA256 without
PASSWORD-ALGORITHM is keyed with the MD5 key, as §14.6 and §9.2.2 say.

Nonces are stateless HMACs (``nonce.NonceFactory``): nothing is stored for a client
until a request authenticates.

USERHASH (§14.4) stands in for USERNAME when the credential store can resolve it
(``credentials.UserhashStore``: static users, the user database; not REST usernames):
the username it names (in the server's realm) is then checked as above, and an unknown
USERHASH gets 401 like an unknown USERNAME. The server advertises "username anonymity"
in the nonce cookie only when its ``NonceFactory`` is made with that feature bit (the
cookie lengthens every 401, so the operator chooses).

``ChallengeLimiter`` bounds how many answers unauthenticated requests get per source IP
(a token bucket per IP in a bounded table, plus a global bucket), so the server is a
poor reflector (RFC 8656 §21, security considerations); requests over the limit
are dropped without an answer.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ..stun.attributes import Address, PasswordAlgorithm, SecurityFeature, nonce_features
from ..stun.constants import Attr
from ..stun.errors import BadRequest, StaleNonce, Unauthorized
from ..stun.message import Message, verify_integrity, verify_integrity_sha256
from .credentials import MD5, SHA256, CredentialStore, UserhashStore
from .nonce import NonceFactory

#: Algorithms in the order they are offered in PASSWORD-ALGORITHMS (preferred first).
ALGORITHM_PREFERENCE = (SHA256, MD5)
_PASSWORD_ALGORITHMS = int(SecurityFeature.PASSWORD_ALGORITHMS)  # plain int: IntFlag ops are slow


@dataclass(frozen=True, slots=True)
class Credentials:
    """Who a request authenticated as, and how to protect the response."""

    username: str
    realm: str
    key: bytes  #: long-term key of ``algorithm`` (16 bytes MD5, 32 bytes SHA-256)
    algorithm: int
    sha256: bool  #: sign the response with MESSAGE-INTEGRITY-SHA256
    sha1: bool  #: sign the response with MESSAGE-INTEGRITY
    #: What ``encode_message`` takes as ``key`` and ``key_sha256`` for the response.
    sha1_key: bytes | None = field(init=False, repr=False, compare=False)
    sha256_key: bytes | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha1_key", self.key if self.sha1 else None)
        object.__setattr__(self, "sha256_key", self.key if self.sha256 else None)


class Challenge(Unauthorized):
    """401 before authentication; ``attributes`` are REALM, NONCE (+ algorithms).
    ``failed`` tells credentials that did not verify from a first, unsigned request
    (for counters only: both get the same answer)."""

    def __init__(
        self, attributes: list[tuple[int, Any]], *, failed: bool = False, failure: str = ""
    ) -> None:
        # The reason phrase is empty (RFC 8489 §14.8 leaves it free): every unsigned
        # request gets this answer, and each byte of it is reflected traffic.
        super().__init__("")
        self.attributes = attributes
        self.failed = failed
        #: Why credentials failed, for metrics and logs only (never on the wire: it
        #: would tell an attacker which usernames exist): ``wrong-realm``,
        #: ``unknown-user``, ``bad-integrity``.
        self.failure = failure or ("bad-integrity" if failed else "")


class StaleChallenge(StaleNonce):
    """438 after a request's integrity verified; ``attributes`` carry a fresh NONCE."""

    def __init__(self, attributes: list[tuple[int, Any]]) -> None:
        super().__init__()
        self.attributes = attributes


class Authenticator:
    """Checks requests against a ``CredentialStore`` in one realm (see module docstring)."""

    __slots__ = (
        "_advertised", "_credentials", "_features", "_verified", "credentials", "nonces", "realm",
    )  # fmt: skip

    #: Nonces already checked for a client that proved its key, with their validity
    #: window: a client's second and later requests skip the HMAC over the nonce.
    #: Only requests whose MESSAGE-INTEGRITY verified add entries; bounded, cleared when full.
    VERIFIED_NONCES = 16384

    def __init__(self, realm: str, credentials: CredentialStore, nonces: NonceFactory) -> None:
        self.realm = realm
        self.credentials = credentials
        self.nonces = nonces
        self._verified: dict[tuple[str, str], tuple[float, float]] = {}
        self._credentials: dict[tuple[str, bytes, int, bool, bool], Credentials] = {}
        served = credentials.algorithms
        features = nonces.security_features or 0
        self._features = int(features)
        advertise = bool(features & SecurityFeature.PASSWORD_ALGORITHMS)
        self._advertised: tuple[PasswordAlgorithm, ...] = (
            tuple(PasswordAlgorithm(a) for a in ALGORITHM_PREFERENCE if a in served)
            if advertise
            else ()
        )

    @property
    def password_algorithms(self) -> tuple[PasswordAlgorithm, ...]:
        """What 401 and 438 answers list in PASSWORD-ALGORITHMS (empty: not sent)."""
        return self._advertised

    def challenge_attributes(self, client: Address, now: float) -> list[tuple[int, Any]]:
        """REALM, a fresh NONCE for this client IP and, if any, PASSWORD-ALGORITHMS."""
        attrs: list[tuple[int, Any]] = [
            (Attr.REALM, self.realm),
            (Attr.NONCE, self.nonces.issue(client, now)),
        ]
        if self._advertised:
            attrs.append((Attr.PASSWORD_ALGORITHMS, self._advertised))
        return attrs

    def authenticate(self, msg: Message, client: Address, now: float) -> Credentials:
        """The credentials ``msg`` verified with, or raise ``Challenge`` (401),
        ``BadRequest`` (400) or ``StaleChallenge`` (438)."""
        has_sha1 = msg.integrity_offset is not None
        has_sha256 = msg.integrity_sha256_offset is not None
        if not (has_sha1 or has_sha256):
            raise Challenge(self.challenge_attributes(client, now))
        username = msg.get(Attr.USERNAME)
        realm = msg.get(Attr.REALM)
        nonce = msg.get(Attr.NONCE)
        if (username is None and Attr.USERHASH not in msg) or realm is None or nonce is None:
            raise BadRequest("USERNAME, REALM and NONCE are required")
        algorithm = MD5
        named_algorithm = False
        own_cookie = self.nonces.cookie
        if own_cookie and nonce.startswith(own_cookie):
            features: int | None = self._features  # our own nonce: no decoding
        else:
            features = nonce_features(nonce)
        if features is not None and features & _PASSWORD_ALGORITHMS:
            chosen = msg.get(Attr.PASSWORD_ALGORITHM)
            offered = msg.get(Attr.PASSWORD_ALGORITHMS)
            if chosen is not None or offered is not None:
                if (
                    chosen is None
                    or offered is None
                    or tuple(offered) != self._advertised
                    or chosen not in offered
                ):
                    raise BadRequest("PASSWORD-ALGORITHM(S) do not match")
                algorithm = chosen.algorithm
                named_algorithm = True
        if realm != self.realm:
            raise Challenge(self.challenge_attributes(client, now), failed=True,
                            failure="wrong-realm")
        if username is None:
            username = self._resolve_userhash(msg.get(Attr.USERHASH), realm)
            if username is None:
                raise Challenge(self.challenge_attributes(client, now), failed=True,
                                failure="unknown-user")
        verify = verify_integrity_sha256 if has_sha256 else verify_integrity
        key = None
        known_user = False
        for candidate in self.credentials.keys_for(username, realm, now, algorithm):
            known_user = True
            if verify(msg, candidate):
                key = candidate
                break
        if key is None:
            raise Challenge(self.challenge_attributes(client, now), failed=True,
                            failure="bad-integrity" if known_user else "unknown-user")
        known = (nonce, client[0])
        window = self._verified.get(known)
        if window is None:
            window = self.nonces.valid_window(nonce, client)
            if window is not None:
                if len(self._verified) >= self.VERIFIED_NONCES:
                    self._verified.clear()
                self._verified[known] = window
        # Not ours (or another IP's), expired, or from the future: 438 with a fresh one.
        if window is None or not window[0] <= now < window[1]:
            raise StaleChallenge(self.challenge_attributes(client, now))
        sha256 = has_sha256 or named_algorithm
        # §9.2.4: a request processed as MD5 (no PASSWORD-ALGORITHM) is answered with
        # MESSAGE-INTEGRITY; one that used it keeps getting it.
        sha1 = has_sha1 or not named_algorithm
        # Credentials are values: the same user signing the same way gets the same one.
        signature = (username, key, algorithm, sha256, sha1)
        creds = self._credentials.get(signature)
        if creds is None:
            creds = Credentials(username, realm, key, algorithm, sha256, sha1)
            if len(self._credentials) >= self.VERIFIED_NONCES:
                self._credentials.clear()
            self._credentials[signature] = creds
        return creds


    def _resolve_userhash(self, value: object, realm: str) -> str | None:
        store = self.credentials
        if not isinstance(value, bytes) or not isinstance(store, UserhashStore):
            return None
        return store.resolve_userhash(value, realm)


class ChallengeLimiter:
    """How many answers unauthenticated requests may get.

    Every source IP gets ``rate`` answers per second (bursts of ``burst``): a spoofed
    flood aimed at one victim reflects at most that. All sources together get
    ``global_rate`` per second, which bounds what a flood from many spoofed sources
    can reflect in total; but a first-come budget would let such a flood starve honest
    clients, so two kinds of request are served beyond it:

    * **returning clients**: a source IP that authenticated within ``trust_lifetime``
      seconds (``trust``; a bounded table of ``trusted_size`` entries) is not counted
      against the global budget. Spoofing it only reflects to that client, within its
      per-IP rate.
    * **retransmissions**: a request that the global budget dropped is remembered by
      (source IP, transaction ID) in a bounded table; when the client retransmits it
      (RFC 8489 §6.2.1: the same transaction ID), the answer comes from a second budget
      of ``global_rate / 2`` per second. A flood of fresh requests never draws on it,
      so an honest new client gets through at its first retransmission; a flooder that
      repeats every request can take at most 1.5 times ``global_rate`` in total.

    The per-IP table holds at most ``size`` entries; when full, the entry created
    longest ago is forgotten. A rate of 0 means no limit.
    """

    __slots__ = (
        "_dropped",
        "_global",
        "_retry",
        "_table",
        "_trusted",
        "burst",
        "dropped_size",
        "global_burst",
        "global_rate",
        "rate",
        "size",
        "trust_lifetime",
        "trusted_size",
    )

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        size: int = 4096,
        global_rate: float = 0.0,
        global_burst: float | None = None,
        trusted_size: int = 65536,
        trust_lifetime: float = 3600.0,
        dropped_size: int = 65536,
    ) -> None:
        if size < 1 or trusted_size < 1 or dropped_size < 1:
            raise ValueError("the limiter tables need at least one entry")
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self.size = size
        self.global_rate = global_rate
        self.global_burst = global_burst if global_burst is not None else max(1.0, global_rate)
        self.trusted_size = trusted_size
        self.trust_lifetime = trust_lifetime
        self.dropped_size = dropped_size
        self._table: OrderedDict[str, list[float]] = OrderedDict()
        self._global: list[float] | None = None
        self._retry: list[float] | None = None
        #: source IP -> when its trust ends; oldest first.
        self._trusted: OrderedDict[str, float] = OrderedDict()
        #: (source IP, transaction ID) of requests the global budget dropped; oldest first.
        self._dropped: OrderedDict[tuple[str, bytes], None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def trust(self, ip: str, now: float) -> None:
        """``ip`` authenticated at ``now``: its unauthenticated requests skip the global
        budget for ``trust_lifetime`` seconds."""
        trusted = self._trusted
        if ip in trusted:
            trusted.move_to_end(ip)
        elif len(trusted) >= self.trusted_size:
            trusted.popitem(last=False)
        trusted[ip] = now + self.trust_lifetime

    def allow(self, ip: str, now: float, transaction_id: bytes = b"") -> bool:
        if self.rate > 0:
            bucket = self._table.get(ip)
            if bucket is None:
                if len(self._table) >= self.size:
                    self._table.popitem(last=False)
                bucket = self._table[ip] = [self.burst, now]
            if not _take(bucket, now, self.rate, self.burst):
                return False
        if self.global_rate <= 0:
            return True
        until = self._trusted.get(ip)
        if until is not None:
            if until > now:
                return True
            del self._trusted[ip]
        if self._global is None:
            self._global = [self.global_burst, now]
        if _take(self._global, now, self.global_rate, self.global_burst):
            return True
        key = (ip, transaction_id)
        dropped = self._dropped
        if key in dropped:
            del dropped[key]
            if self._retry is None:
                half = self.global_rate / 2
                self._retry = [max(1.0, half), now]
            return _take(self._retry, now, self.global_rate / 2, max(1.0, self.global_rate / 2))
        if len(dropped) >= self.dropped_size:
            dropped.popitem(last=False)
        dropped[key] = None
        return False


def _take(bucket: list[float], now: float, rate: float, burst: float) -> bool:
    tokens = bucket[0] + max(0.0, now - bucket[1]) * rate
    bucket[1] = now
    if tokens > burst:
        tokens = burst
    if tokens < 1.0:
        bucket[0] = tokens
        return False
    bucket[0] = tokens - 1.0
    return True


__all__ = [
    "ALGORITHM_PREFERENCE",
    "Authenticator",
    "Challenge",
    "ChallengeLimiter",
    "Credentials",
    "StaleChallenge",
    "nonce_features",
]
