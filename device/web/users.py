"""Accounts of the admin page, their passwords, and the one-time link that creates the first.

Passwords are hashed with scrypt (``hashlib.scrypt``, standard library): memory-hard (16 MiB
per hash at n=2**14, r=8), so a stolen copy of the file is slow to attack on a GPU, yet quick
enough to check at sign-in (80 ms on one PC core, a few hundred on a Pi). The stored text is
``scrypt$n$r$p$salt$hash`` (base64), so the cost can be raised later without locking anyone
out. Hashes are compared in constant time, and an unknown name costs one hash too, so timing
does not tell which names exist.

Every function takes the gallery file's path and opens its own connection: the CLI
(``facegate admin add``), the daemon and the web page all call them.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
import sqlite3
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from device.errors import FacegateError, UserExists, WeakPassword
from device.gallery.migrations import write_transaction
from device.gallery.names import clean_name
from device.gallery.store import Gallery
from device.web.sessions import revoke_sessions

ROLES = ("admin", "viewer")
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024  # a megabyte "password" would be hashed all the same
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SALT_BYTES = 16
HASH_BYTES = 32
SETUP_TOKEN_LIFETIME = timedelta(hours=24)
_MAX_N = 2**20  # refuse stored parameters that would take a gigabyte to check


@dataclass(frozen=True)
class User:
    """An account of the admin page (never with its password hash)."""

    id: str
    name: str
    role: str  # "admin" or "viewer"
    created_at: str
    updated_at: str
    version: int  # grows on every change; a session of an older version is signed out

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


# --- Hashing ------------------------------------------------------------------------------


def hash_password(password: str) -> str:
    """``scrypt$n$r$p$salt$hash`` for ``password`` with a fresh 16-byte salt."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return "$".join(["scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P),
                     _b64(salt), _b64(digest)])


def password_matches(encoded: str, password: str) -> bool:
    """Whether ``password`` hashes to ``encoded`` (constant-time compare); False for a
    malformed or unknown encoding rather than an error."""
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        n, r, p = int(n), int(r), int(p)
        if scheme != "scrypt" or not (2 <= n <= _MAX_N and 1 <= r <= 32 and 1 <= p <= 16):
            return False
        expected = base64.b64decode(digest)
        actual = _scrypt(password, base64.b64decode(salt), n, r, p, len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int,
            length: int = HASH_BYTES) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                          maxmem=256 * n * r + 1024 * 1024, dklen=length)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@functools.cache
def _dummy_hash() -> str:
    """Checked against when the name is unknown, so a wrong name costs what a wrong password
    does."""
    return hash_password(secrets.token_urlsafe(16))


# --- Accounts -----------------------------------------------------------------------------


def add_user(db_path: str | Path, name: str, password: str, role: str = "admin") -> User:
    """Create an account. Raises :class:`UserExists`, :class:`WeakPassword`, or
    :class:`FacegateError` for an empty name or an unknown role."""
    name = _clean_name(name)
    if role not in ROLES:
        raise FacegateError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    encoded = hash_password(_checked_password(password))
    with Gallery(db_path) as gallery, write_transaction(gallery.db):
        return _insert_user(gallery, name, encoded, role)


def set_password(db_path: str | Path, name: str, password: str) -> User:
    """Give ``name`` a new password; their open sessions are revoked (signed out)."""
    encoded = hash_password(_checked_password(password))
    with Gallery(db_path) as gallery, write_transaction(gallery.db):
        user = _by_name(gallery, name)
        if user is None:
            raise FacegateError(f"no account named {name!r}")
        gallery.db.execute(
            "UPDATE users SET password_hash = ?, updated_at = ?, version = version + 1"
            " WHERE id = ?", [encoded, _now(), user.id])
        revoke_sessions(gallery, user.id)
        return _by_name(gallery, name)


def verify_password(db_path: str | Path, name: str, password: str) -> User | None:
    """The account if ``password`` is right for ``name``, else None (same cost either way)."""
    with Gallery(db_path) as gallery:
        row = gallery.db.execute(
            "SELECT password_hash FROM users WHERE name = ?", [name]).fetchone()
        encoded = row[0] if row else _dummy_hash()
        if len(password) > MAX_PASSWORD_LENGTH:
            password = ""
        matches = password_matches(encoded, password)
        return _by_name(gallery, name) if row and matches else None


def get_user(db_path: str | Path, user_id: str) -> User | None:
    with Gallery(db_path) as gallery:
        rows = list(gallery.db.query(f"SELECT {_COLUMNS} FROM users WHERE id = ?", [user_id]))
    return User(**rows[0]) if rows else None


def list_users(db_path: str | Path) -> list[User]:
    with Gallery(db_path) as gallery:
        rows = gallery.db.query(f"SELECT {_COLUMNS} FROM users ORDER BY name COLLATE NOCASE")
        return [User(**row) for row in rows]


def remove_user(db_path: str | Path, name: str) -> None:
    """Remove the account ``name``, its API tokens and its sessions (ON DELETE CASCADE)."""
    with Gallery(db_path) as gallery, write_transaction(gallery.db):
        if gallery.db.execute("DELETE FROM users WHERE name = ?", [name]).rowcount == 0:
            raise FacegateError(f"no account named {name!r}")


def admin_exists(db_path: str | Path) -> bool:
    with Gallery(db_path) as gallery:
        return gallery.db.execute(
            "SELECT 1 FROM users WHERE role = 'admin' LIMIT 1").fetchone() is not None


# --- The set-up link ----------------------------------------------------------------------


def create_setup_token(db_path: str | Path) -> str:
    """A new one-time token for ``/setup/<token>``, valid until used or for 24 hours.

    Only its SHA-256 is stored, so a copy of the file hands out no admin account. The
    daemon calls this at start while :func:`admin_exists` is False and logs the link.
    """
    token = secrets.token_urlsafe(32)
    with Gallery(db_path) as gallery, write_transaction(gallery.db):
        gallery.db.execute("INSERT INTO setup_tokens (token_hash, created_at) VALUES (?, ?)",
                           [_token_hash(token), _now()])
    return token


def setup_token_valid(db_path: str | Path, token: str) -> bool:
    """Whether ``token`` may still create the first admin (unused, recent, no admin yet)."""
    with Gallery(db_path) as gallery:
        return _usable(gallery, token)


def use_setup_token(db_path: str | Path, token: str, name: str, password: str) -> User:
    """Create the first admin with ``token`` and spend it, in one transaction (two people
    opening the link at once get one account). Raises :class:`FacegateError` when the
    link is no longer usable."""
    name = _clean_name(name)
    encoded = hash_password(_checked_password(password))
    with Gallery(db_path) as gallery, write_transaction(gallery.db):
        if not _usable(gallery, token):
            raise FacegateError("this set-up link has been used or has expired")
        user = _insert_user(gallery, name, encoded, "admin")
        gallery.db.execute("UPDATE setup_tokens SET used_at = ? WHERE used_at IS NULL",
                           [_now()])
        return user


def _usable(gallery: Gallery, token: str) -> bool:
    if not isinstance(token, str) or not 20 <= len(token) <= 100:
        return False
    row = gallery.db.execute("SELECT created_at, used_at FROM setup_tokens WHERE token_hash = ?",
                             [_token_hash(token)]).fetchone()
    if row is None or row[1] is not None:
        return False
    if datetime.now(UTC) - datetime.fromisoformat(row[0]) > SETUP_TOKEN_LIFETIME:
        return False
    admins = gallery.db.execute("SELECT 1 FROM users WHERE role = 'admin' LIMIT 1").fetchone()
    return admins is None


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# --- Private ------------------------------------------------------------------------------

_COLUMNS = "id, name, role, created_at, updated_at, version"


def _insert_user(gallery: Gallery, name: str, encoded: str, role: str) -> User:
    now = _now()
    user = User(id=str(uuid.uuid4()), name=name, role=role, created_at=now, updated_at=now,
                version=1)
    try:
        gallery.db.execute(
            "INSERT INTO users (id, name, password_hash, role, created_at, updated_at, version)"
            " VALUES (?, ?, ?, ?, ?, ?, 1)", [user.id, name, encoded, role, now, now])
    except sqlite3.IntegrityError:
        raise UserExists(f"an account named {name!r} already exists") from None
    return user


def _by_name(gallery: Gallery, name: str) -> User | None:
    rows = list(gallery.db.query(f"SELECT {_COLUMNS} FROM users WHERE name = ?", [name]))
    return User(**rows[0]) if rows else None


def _clean_name(name: str) -> str:
    return clean_name(name, what="an account's name", field="username")


def _checked_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPassword(f"a password is at most {MAX_PASSWORD_LENGTH} characters")
    return password


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
