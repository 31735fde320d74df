"""The SQLite user database: keys only, changes seen on the next lookup, one-line errors."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from natsrv.core.credentials import MD5, SHA256, CredentialStore, password_key
from natsrv.userdb import (
    UserDatabase,
    UserDbError,
    add_user,
    delete_user,
    list_users,
    set_password,
)


def test_keys_not_passwords_and_changes_on_the_next_lookup(tmp_path: Path) -> None:
    db = tmp_path / "users.sqlite"
    add_user(db, "alice", "example.org", "wonderland")
    store = UserDatabase(db)
    assert isinstance(store, CredentialStore)
    assert store.key_for("alice", "example.org", 0.0) == password_key(
        "alice", "example.org", "wonderland")
    assert store.key_for("alice", "example.org", 0.0, SHA256) == password_key(
        "alice", "example.org", "wonderland", SHA256)
    assert store.key_for("alice", "other.realm", 0.0) is None
    assert store.keys_for("bob", "example.org", 0.0) == ()
    # No password in the file, only keys.
    raw = db.read_bytes() + (tmp_path / "users.sqlite-wal").read_bytes()
    assert b"wonderland" not in raw
    # A writer elsewhere: the open store sees each change on its next lookup.
    set_password(db, "alice", "example.org", "looking-glass")
    assert store.key_for("alice", "example.org", 0.0, MD5) == password_key(
        "alice", "example.org", "looking-glass")
    add_user(db, "bob", "example.org", "builder")
    assert store.key_for("bob", "example.org", 0.0) is not None
    delete_user(db, "alice", "example.org")
    assert store.key_for("alice", "example.org", 0.0) is None
    assert list_users(db) == [("bob", "example.org")]
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()


def error_of(fn: Callable[..., object], *args: object) -> str:
    with pytest.raises(UserDbError) as caught:
        fn(*args)
    return str(caught.value)


def test_errors_are_one_line(tmp_path: Path) -> None:
    db = tmp_path / "users.sqlite"
    assert error_of(UserDatabase, db) == f"user-db: no such database: {db}"
    add_user(db, "alice", "r", "pw")
    assert error_of(add_user, db, "alice", "r", "x") == "user: 'alice' already exists in realm 'r'"
    assert error_of(set_password, db, "carol", "r", "x") == "user: no user 'carol' in realm 'r'"
    assert error_of(delete_user, db, "carol", "r") == "user: no user 'carol' in realm 'r'"
    assert error_of(add_user, db, "dave", "r", "") == "user: the password must not be empty"
    assert error_of(add_user, db, "a:b", "r", "x") == (
        "user: a name must be non-empty and contain no ':'")
    missing = tmp_path / "missing-dir" / "users.sqlite"
    message = error_of(add_user, missing, "x", "r", "pw")
    assert message.startswith(f"user-db: cannot open {missing}: ") and "\n" not in message
    # Attacker-chosen usernames never raise in the server's lookups.
    store = UserDatabase(db)
    for name in ("", "\udcff", "x" * 10000, "'; DROP TABLE users; --"):
        assert store.key_for(name, "r", 0.0) is None
    assert list_users(db) == [("alice", "r")]
