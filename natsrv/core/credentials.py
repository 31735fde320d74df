"""Where long-term credentials come from: the key for a USERNAME in a REALM.

RFC 8489 §9.2.2 (RFC 5389 §15.4): the long-term key is
MD5(username ":" realm ":" password), or SHA-256 of the same string when the client
chose PASSWORD-ALGORITHM SHA-256 (RFC 8489 §14.12, §18.5). A ``CredentialStore`` turns
(username, realm, now, algorithm) into that key, or None when the user is unknown, the
credential expired or the algorithm is not one the store can serve. Stores never see a
message and never read the clock.

Implementations:

* ``StaticUsers({name: password})``: ``--user NAME:PASSWORD``.
* ``RestSecret(secret)``: the TURN REST API (draft-uberti-behave-turn-rest-00 §2.2), as
  coturn's ``use-auth-secret``: the username is ``EXPIRY[:USER]`` with EXPIRY a unix
  time in seconds, the password ``base64(HMAC-SHA1(secret, username))``. Older secrets
  can be kept during a rotation (``previous=``); ``keys_for`` then yields one key each.
* ``ChainedStore(*stores)``: the first store that knows the username.

USERHASH (RFC 8489 §14.4): a client may send SHA-256(username ":" realm) in place of
USERNAME. Stores that know their usernames in advance (``StaticUsers``, the SQLite
user database) also implement :class:`UserhashStore` and turn a USERHASH back into the
username; REST usernames are minted by a web service, so ``RestSecret`` cannot.

Passwords are hashed as the UTF-8 of the string given ("SASLprep-lite": no mapping or
normalisation). RFC 8489 asks for OpaqueString (RFC 8265) processing, but libwebrtc and
coturn hash the bytes as typed; for ASCII passwords, which include every REST password
(base64), the two are the same. A non-ASCII password must be configured in the form
clients send (normally NFC).

Secrets, passwords and keys never appear in a repr, a log line or an exception message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from ..stun.constants import PASSWORD_ALGORITHM_MD5, PASSWORD_ALGORITHM_SHA256
from ..stun.integrity import userhash

MD5 = PASSWORD_ALGORITHM_MD5
SHA256 = PASSWORD_ALGORITHM_SHA256

#: Every PASSWORD-ALGORITHM this module can derive keys for (RFC 8489 §18.5).
ALL_ALGORITHMS: frozenset[int] = frozenset({MD5, SHA256})

#: Digits accepted in a REST username's EXPIRY: enough for any real date.
_MAX_EXPIRY_DIGITS = 15


@runtime_checkable
class CredentialStore(Protocol):
    """A source of long-term keys (RFC 8489 §9.2.2)."""

    @property
    def algorithms(self) -> frozenset[int]:
        """The PASSWORD-ALGORITHM values this store derives keys for; the server should
        advertise only these in PASSWORD-ALGORITHMS."""
        ...

    def key_for(self, username: str, realm: str, now: float, algorithm: int = MD5) -> bytes | None:
        """The long-term key, or None: unknown user, expired, or algorithm not served.
        Never raises for any username (it is attacker input)."""
        ...

    def keys_for(
        self, username: str, realm: str, now: float, algorithm: int = MD5
    ) -> tuple[bytes, ...]:
        """Every key that may be right (several while a REST secret is rotated); the
        caller accepts the message if its MESSAGE-INTEGRITY verifies with any of them.
        ``key_for`` is the first of these."""
        ...


@runtime_checkable
class UserhashStore(Protocol):
    """A store that can tell which of its users a USERHASH names (RFC 8489 §14.4)."""

    @property
    def resolves_userhash(self) -> bool:
        """Whether ``resolve_userhash`` can answer (the server advertises "username
        anonymity" only then)."""
        ...

    def resolve_userhash(self, userhash: bytes, realm: str) -> str | None:
        """The username whose SHA-256(username ":" realm) is ``userhash``, or None.
        Never raises for any input (it is attacker input)."""
        ...


def userhash_of(username: str, realm: str) -> bytes | None:
    """RFC 8489 §14.4: SHA-256(OpaqueString(username) ":" OpaqueString(realm)); None
    if the text cannot be encoded."""
    try:
        return userhash(username, realm)
    except UnicodeError:
        return None


def _utf8(text: str) -> bytes | None:
    # surrogateescape gives back the wire bytes of a username the codec decoded that way;
    # other lone surrogates cannot have come off the wire and name nobody.
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return None


def password_key(username: str, realm: str, password: str, algorithm: int = MD5) -> bytes | None:
    """RFC 8489 §9.2.2: H(username ":" realm ":" password) with H = MD5 or SHA-256.

    None if the text cannot be encoded; ``ValueError`` for an unknown algorithm.
    """
    data = _utf8(f"{username}:{realm}:{password}")
    if data is None:
        return None
    if algorithm == MD5:
        return hashlib.md5(data, usedforsecurity=False).digest()
    if algorithm == SHA256:
        return hashlib.sha256(data).digest()
    raise ValueError(f"unknown password algorithm {algorithm:#06x}")


class StaticUsers:
    """Users and passwords fixed in the configuration (``--user NAME:PASSWORD``)."""

    __slots__ = ("_hashes", "_keys", "_passwords")

    def __init__(self, users: Mapping[str, str]) -> None:
        self._passwords: dict[str, str] = dict(users)
        # Derived keys, computed once per (user, realm, algorithm) actually asked for;
        # bounded: only names in ``users`` and only the realms the server serves.
        self._keys: dict[tuple[str, str, int], bytes | None] = {}
        #: realm -> {USERHASH: username}, built on first use (a few realms at most).
        self._hashes: dict[str, dict[bytes, str]] = {}

    @property
    def resolves_userhash(self) -> bool:
        return True

    def resolve_userhash(self, userhash: bytes, realm: str) -> str | None:
        table = self._hashes.get(realm)
        if table is None:
            if len(self._hashes) >= 4:
                self._hashes.clear()
            table = self._hashes[realm] = {}
            for name in self._passwords:
                digest = userhash_of(name, realm)
                if digest is not None:
                    table.setdefault(digest, name)
        return table.get(bytes(userhash))

    def __repr__(self) -> str:
        return f"StaticUsers(<{len(self._passwords)} users>)"

    def __len__(self) -> int:
        return len(self._passwords)

    @property
    def algorithms(self) -> frozenset[int]:
        return ALL_ALGORITHMS

    def key_for(self, username: str, realm: str, now: float, algorithm: int = MD5) -> bytes | None:
        if algorithm not in ALL_ALGORITHMS:
            return None
        cached = self._keys.get((username, realm, algorithm))
        if cached is not None:
            return cached
        password = self._passwords.get(username)
        if password is None:
            return None
        key = password_key(username, realm, password, algorithm)
        if len(self._keys) < 64 * len(self._passwords) + 64:
            self._keys[(username, realm, algorithm)] = key
        return key

    def keys_for(
        self, username: str, realm: str, now: float, algorithm: int = MD5
    ) -> tuple[bytes, ...]:
        key = self.key_for(username, realm, now, algorithm)
        return () if key is None else (key,)


def _secret_bytes(secret: str | bytes) -> bytes:
    data = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if not data:
        raise ValueError("the REST shared secret is empty")
    return data


#: HMACs a REST password may be made with: SHA-1 (what applications send today, as
#: coturn's ``use-auth-secret``) or SHA-256 (as eturnal and pion offer).
REST_DIGESTS = ("sha1", "sha256")


def rest_password(secret: str | bytes, username: str, digest: str = "sha1") -> str | None:
    """TURN REST password: base64(HMAC-<digest>(secret, username)); None if the
    username cannot be encoded."""
    if digest not in REST_DIGESTS:
        raise ValueError(f"unknown REST digest {digest!r}")
    data = _utf8(username)
    if data is None:
        return None
    mac = hmac.new(_secret_bytes(secret), data, digest).digest()
    return base64.b64encode(mac).decode("ascii")


def rest_expiry_untrusted(username: str) -> int | None:
    """The EXPIRY of a TURN REST username ``EXPIRY[:USER]``, or None if malformed.

    Only ASCII digits (``int()`` alone would take spaces, signs, underscores and
    non-ASCII digits), at most 15 of them.
    """
    head = username.partition(":")[0]
    if not 0 < len(head) <= _MAX_EXPIRY_DIGITS or not head.isascii() or not head.isdigit():
        return None
    return int(head)


def rest_credentials(
    secret: str | bytes, user: str | None, ttl: float, now: float, digest: str = "sha1"
) -> tuple[str, str]:
    """A TURN REST (username, password) valid for ``ttl`` seconds from ``now`` (unix
    time): username ``EXPIRY`` or ``EXPIRY:USER``, EXPIRY = floor(now + ttl)."""
    if not ttl > 0:
        raise ValueError("ttl must be a positive number of seconds")
    expiry = int(now + ttl)
    username = f"{expiry}:{user}" if user else str(expiry)
    password = rest_password(secret, username, digest)
    if password is None:
        raise ValueError("the user name cannot be encoded as UTF-8")
    return username, password


class RestSecret:
    """Time-limited credentials from a shared secret (TURN REST API).

    A username is accepted until its EXPIRY has passed (EXPIRY < now means expired).
    ``max_ttl``, if set, also refuses usernames expiring more than that many seconds
    after ``now``, so a web service minting year-long credentials is caught.
    ``previous`` holds secrets being rotated out; ``key_for`` uses only ``secret``.
    ``digest`` is the HMAC of the passwords (``sha1`` or ``sha256``).
    """

    __slots__ = ("_secrets", "digest", "max_ttl")

    def __init__(
        self,
        secret: str | bytes,
        *,
        previous: Sequence[str | bytes] = (),
        max_ttl: float | None = None,
        digest: str = "sha1",
    ) -> None:
        self._secrets: tuple[bytes, ...] = tuple(_secret_bytes(s) for s in (secret, *previous))
        if max_ttl is not None and not max_ttl > 0:
            raise ValueError("max_ttl must be a positive number of seconds")
        if digest not in REST_DIGESTS:
            raise ValueError(f"unknown REST digest {digest!r}")
        self.max_ttl = max_ttl
        self.digest = digest

    def __repr__(self) -> str:
        return f"RestSecret(<{len(self._secrets)} secrets>, max_ttl={self.max_ttl!r})"

    @property
    def algorithms(self) -> frozenset[int]:
        return ALL_ALGORITHMS

    def key_for(self, username: str, realm: str, now: float, algorithm: int = MD5) -> bytes | None:
        keys = self._keys(username, realm, now, algorithm, self._secrets[:1])
        return keys[0] if keys else None

    def keys_for(
        self, username: str, realm: str, now: float, algorithm: int = MD5
    ) -> tuple[bytes, ...]:
        return self._keys(username, realm, now, algorithm, self._secrets)

    def _keys(
        self,
        username: str,
        realm: str,
        now: float,
        algorithm: int,
        secrets: tuple[bytes, ...],
    ) -> tuple[bytes, ...]:
        if algorithm not in ALL_ALGORITHMS:
            return ()
        expiry = rest_expiry_untrusted(username)
        if expiry is None or not expiry >= now:
            return ()
        if self.max_ttl is not None and not expiry - now <= self.max_ttl:
            return ()
        keys = []
        for secret in secrets:
            password = rest_password(secret, username, self.digest)
            key = None if password is None else password_key(username, realm, password, algorithm)
            if key is not None:
                keys.append(key)
        return tuple(keys)


class ChainedStore:
    """Several stores in order: ``key_for`` answers from the first that knows the user.

    ``algorithms`` is what every store serves, so an advertised algorithm works for
    every user. Two stores that both accept a username shadow each other in
    ``key_for``; ``keys_for`` returns the keys of all of them.
    """

    __slots__ = ("stores",)

    def __init__(self, *stores: CredentialStore) -> None:
        self.stores: tuple[CredentialStore, ...] = stores

    def __repr__(self) -> str:
        return f"ChainedStore({', '.join(map(repr, self.stores))})"

    @property
    def algorithms(self) -> frozenset[int]:
        if not self.stores:
            return frozenset()
        return frozenset.intersection(*(store.algorithms for store in self.stores))

    def key_for(self, username: str, realm: str, now: float, algorithm: int = MD5) -> bytes | None:
        for store in self.stores:
            key = store.key_for(username, realm, now, algorithm)
            if key is not None:
                return key
        return None

    @property
    def resolves_userhash(self) -> bool:
        """True if any store resolves USERHASH (its users can use it; others not)."""
        return any(isinstance(s, UserhashStore) and s.resolves_userhash for s in self.stores)

    def resolve_userhash(self, userhash: bytes, realm: str) -> str | None:
        for store in self.stores:
            if isinstance(store, UserhashStore):
                name = store.resolve_userhash(userhash, realm)
                if name is not None:
                    return name
        return None

    def keys_for(
        self, username: str, realm: str, now: float, algorithm: int = MD5
    ) -> tuple[bytes, ...]:
        return tuple(
            key for store in self.stores for key in store.keys_for(username, realm, now, algorithm)
        )
