"""The user database: long-term keys in SQLite, never passwords.

One table, ``users(name, realm, md5_key, sha256_key, userhash)``: the RFC 8489 §9.2.2
keys MD5 and SHA-256 of ``name ":" realm ":" password``, and the USERHASH (§14.4:
SHA-256 of ``name ":" realm``, indexed) that lets a client authenticate without sending
its name. A database made before the ``userhash`` column existed gets it, filled in,
the next time ``natsrv user`` writes to it; until then the server resolves no USERHASH
from it. The server reads it through
:class:`UserDatabase`, a ``CredentialStore`` (``natsrv.core.credentials``) with a small
cache that is emptied whenever another connection has written to the database
(``PRAGMA data_version``), so a user added, changed or deleted with ``natsrv user``
counts from the next request on: no signal, no restart. The database runs in WAL mode,
so the CLI writing never blocks the server reading.

The server's connection is read-only (``mode=ro``); the functions below that change
users (:func:`add_user`, :func:`set_password`, :func:`delete_user`) open their own.
Errors are :class:`UserDbError` with one line for the operator.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .core.credentials import MD5, SHA256, password_key, userhash_of

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT NOT NULL,
    realm TEXT NOT NULL,
    md5_key BLOB NOT NULL,
    sha256_key BLOB NOT NULL,
    userhash BLOB,
    PRIMARY KEY (name, realm)
) WITHOUT ROWID
"""
_USERHASH_INDEX = "CREATE INDEX IF NOT EXISTS users_by_userhash ON users (userhash)"
#: Keys remembered between changes of the database (users actually asked for).
CACHE_SIZE = 4096


class UserDbError(Exception):
    """A user-database operation failed; ``str()`` is one line for the operator."""


def _connect(path: str | Path, *, write: bool) -> sqlite3.Connection:
    target = Path(path)
    if not write and not target.is_file():
        raise UserDbError(f"user-db: no such database: {target}")
    uri = f"file:{target.resolve()}?mode={'rwc' if write else 'ro'}"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=5.0, isolation_level=None,
                               check_same_thread=False)  # fmt: skip
        if write:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(_SCHEMA)
            _add_userhashes(conn)
        else:
            conn.execute("SELECT 1 FROM users LIMIT 1").fetchall()
    except sqlite3.Error as exc:
        raise UserDbError(f"user-db: cannot open {target}: {exc}") from None
    return conn


def _has_userhash(conn: sqlite3.Connection) -> bool:
    return any(row[1] == "userhash" for row in conn.execute("PRAGMA table_info(users)"))


def _add_userhashes(conn: sqlite3.Connection) -> None:
    """Give a database from before USERHASH its column and index, and fill in the
    userhash of every row that lacks one (in one transaction)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        if not _has_userhash(conn):
            conn.execute("ALTER TABLE users ADD COLUMN userhash BLOB")
        conn.execute(_USERHASH_INDEX)
        rows = conn.execute("SELECT name, realm FROM users WHERE userhash IS NULL").fetchall()
        for name, realm in rows:
            conn.execute("UPDATE users SET userhash = ? WHERE name = ? AND realm = ?",
                         (userhash_of(name, realm), name, realm))  # fmt: skip
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


class UserDatabase:
    """A ``CredentialStore`` over the database at ``path`` (read-only)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn = _connect(self.path, write=False)
        self._version = -1
        self._cache: dict[tuple[str, str], tuple[bytes, bytes] | None] = {}
        self._names: dict[tuple[bytes, str], str | None] = {}

    def __repr__(self) -> str:
        return f"UserDatabase({str(self.path)!r})"

    def close(self) -> None:
        self._conn.close()

    @property
    def algorithms(self) -> frozenset[int]:
        return frozenset({MD5, SHA256})

    @property
    def resolves_userhash(self) -> bool:
        """Whether the database has its ``userhash`` column (``natsrv user`` adds it)."""
        try:
            return _has_userhash(self._conn)
        except sqlite3.Error:
            return False

    def resolve_userhash(self, userhash: bytes, realm: str) -> str | None:
        if len(userhash) != 32:
            return None
        try:
            self._check_version()
            key = (bytes(userhash), realm)
            if key in self._names:
                return self._names[key]
            row = self._conn.execute(
                "SELECT name FROM users WHERE userhash = ? AND realm = ?", key
            ).fetchone()
        except (sqlite3.Error, UnicodeEncodeError):
            return None  # no userhash column yet, a database being replaced, ...
        name = str(row[0]) if row is not None else None
        if len(self._names) >= CACHE_SIZE:
            self._names.clear()
        self._names[key] = name
        return name

    def _check_version(self) -> None:
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._version:
            self._cache.clear()  # someone wrote: forget what we knew
            self._names.clear()
            self._version = version

    def _keys(self, username: str, realm: str) -> tuple[bytes, bytes] | None:
        try:
            self._check_version()
            key = (username, realm)
            if key in self._cache:
                return self._cache[key]
            row = self._conn.execute(
                "SELECT md5_key, sha256_key FROM users WHERE name = ? AND realm = ?", key
            ).fetchone()
        except (sqlite3.Error, UnicodeEncodeError):
            return None  # a database being replaced, or a name SQLite cannot hold
        keys = (bytes(row[0]), bytes(row[1])) if row is not None else None
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[key] = keys
        return keys

    def key_for(self, username: str, realm: str, now: float, algorithm: int = MD5) -> bytes | None:
        keys = self._keys(username, realm)
        if keys is None:
            return None
        if algorithm == MD5:
            return keys[0]
        if algorithm == SHA256:
            return keys[1]
        return None

    def keys_for(
        self, username: str, realm: str, now: float, algorithm: int = MD5
    ) -> tuple[bytes, ...]:
        key = self.key_for(username, realm, now, algorithm)
        return () if key is None else (key,)


def _keys(name: str, realm: str, password: str) -> tuple[bytes, bytes]:
    md5 = password_key(name, realm, password, MD5)
    sha256 = password_key(name, realm, password, SHA256)
    if md5 is None or sha256 is None:
        raise UserDbError("user: the name, realm or password cannot be encoded as UTF-8")
    return md5, sha256


def _check(name: str, realm: str, password: str | None = None) -> None:
    if not name or ":" in name:
        raise UserDbError("user: a name must be non-empty and contain no ':'")
    if not realm:
        raise UserDbError("user: the realm must not be empty")
    if password is not None and not password:
        raise UserDbError("user: the password must not be empty")


def _write(path: str | Path, sql: str, params: tuple[object, ...]) -> int:
    """Run one change; the number of rows it touched."""
    conn = _connect(path, write=True)
    try:
        return conn.execute(sql, params).rowcount
    except sqlite3.Error as exc:
        raise UserDbError(f"user-db: cannot write {path}: {exc}") from None
    finally:
        conn.close()


def add_user(path: str | Path, name: str, realm: str, password: str) -> None:
    _check(name, realm, password)
    md5, sha256 = _keys(name, realm, password)
    sql = "INSERT INTO users (name, realm, md5_key, sha256_key, userhash) VALUES (?, ?, ?, ?, ?)"
    try:
        _write(path, sql, (name, realm, md5, sha256, userhash_of(name, realm)))
    except UserDbError as exc:
        if isinstance(exc.__context__, sqlite3.IntegrityError):
            raise UserDbError(f"user: {name!r} already exists in realm {realm!r}") from None
        raise


def set_password(path: str | Path, name: str, realm: str, password: str) -> None:
    _check(name, realm, password)
    md5, sha256 = _keys(name, realm, password)
    sql = "UPDATE users SET md5_key = ?, sha256_key = ? WHERE name = ? AND realm = ?"
    if not _write(path, sql, (md5, sha256, name, realm)):
        raise UserDbError(f"user: no user {name!r} in realm {realm!r}")


def delete_user(path: str | Path, name: str, realm: str) -> None:
    _check(name, realm)
    if not _write(path, "DELETE FROM users WHERE name = ? AND realm = ?", (name, realm)):
        raise UserDbError(f"user: no user {name!r} in realm {realm!r}")


def list_users(path: str | Path) -> list[tuple[str, str]]:
    """``(name, realm)`` of every user, sorted; never a key."""
    conn = _connect(path, write=False)
    try:
        return [(str(n), str(r)) for n, r in
                conn.execute("SELECT name, realm FROM users ORDER BY realm, name")]  # fmt: skip
    except sqlite3.Error as exc:
        raise UserDbError(f"user-db: cannot read {path}: {exc}") from None
    finally:
        conn.close()


__all__ = [
    "UserDatabase",
    "UserDbError",
    "add_user",
    "delete_user",
    "list_users",
    "set_password",
]
