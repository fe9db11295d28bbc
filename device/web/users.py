"""Accounts of the admin page, their passwords, and the one-time link that creates the first.

Passwords are hashed with scrypt (``hashlib.scrypt``, standard library): memory-hard (16 MiB
per hash at n=2**14, r=8), so a stolen copy of the file is slow to attack on a GPU, yet quick
enough to check at sign-in (80 ms on one PC core, a few hundred on a Pi). The stored text is
``scrypt$n$r$p$salt$hash`` (base64), so the cost can be raised later without locking anyone
out. Hashes are compared in constant time, and an unknown name costs one hash too, so timing
does not tell which names exist.

Every rule about accounts lives here, and the CLI (``facegate admin``), the daemon and the
web page (``/account``, ``/accounts``) all call these functions, each taking the gallery
file's path and opening its own connection:

- A password is 8 to 1024 characters (:func:`_checked_password`). Changing one's own needs
  the current one (:func:`change_own_password`); an admin or the CLI sets anyone's
  (:func:`set_password`). Either way every open session of the account is revoked.
- A disabled account (:func:`disable_user`) keeps its row, name, role and password, but
  cannot sign in (:func:`check_sign_in` says so only to whoever gives its right password),
  its sessions are revoked and its API tokens refused; :func:`enable_user` undoes it.
- The door always keeps an active admin: its last one cannot be disabled, removed or made a
  viewer; and nobody disables or removes their own account (``acting``), so an admin cannot
  lock themselves out by a slip. Each check runs inside the write transaction that makes the
  change, so two admins acting at once cannot both pass it.
- Every change bumps ``users.version`` (what replication and the signed-in sessions follow);
  the last sign-in (``last_sign_in_at``) is bookkeeping and does not.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from device.errors import (
    AccountDisabled,
    AccountProtected,
    FacegateError,
    UserExists,
    WeakPassword,
    WrongPassword,
)
from device.gallery.engines import INTEGRITY_ERRORS
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
    disabled_at: str | None = None  # when an admin disabled it; None while it may sign in
    last_sign_in_at: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_disabled(self) -> bool:
        return self.disabled_at is not None


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
    """Give ``name`` a new password (an admin's reset, ``facegate admin passwd``); every open
    session of theirs is revoked (signed out), in the same transaction."""
    encoded = hash_password(_checked_password(password))
    with Gallery(db_path) as gallery, write_transaction(gallery.db):
        user = _existing(gallery, name)
        _change(gallery, user, "password_hash = ?", [encoded])
        return _by_name(gallery, name)


def change_own_password(db_path: str | Path, user_id: str, current: str, new: str) -> User:
    """The signed-in account ``user_id`` changes its own password: ``current`` must be its
    password now (else :class:`WrongPassword`), ``new`` passes the password rules and differs
    from it. Every session of the account is revoked, the one asking included (the page
    signs it in afresh, so whoever copied that cookie is signed out as well)."""
    with Gallery(db_path) as gallery:
        row = gallery.db.execute("SELECT name, password_hash FROM users WHERE id = ?",
                                 [user_id]).fetchone()
    if row is None:
        raise FacegateError("this account no longer exists")
    if len(current) > MAX_PASSWORD_LENGTH or not password_matches(row[1], current):
        raise WrongPassword("the current password is wrong")
    if new == current:
        raise WeakPassword("the new password is the same as the current one")
    encoded = hash_password(_checked_password(new))  # hashed before the write lock is taken
    with Gallery(db_path) as gallery, write_transaction(gallery.db):
        user = _existing(gallery, row[0])
        if gallery.db.execute("SELECT password_hash FROM users WHERE id = ?",
                              [user_id]).fetchone()[0] != row[1]:
            raise WrongPassword("the password was changed meanwhile; sign in again")
        _change(gallery, user, "password_hash = ?", [encoded])
        return _by_name(gallery, user.name)


def disable_user(db_path: str | Path, name: str, *, acting: User | None = None) -> User:
    """Disable ``name``: it cannot sign in, its sessions are revoked and its API tokens
    refused, until :func:`enable_user`. ``acting`` is the admin asking (None: the CLI on the
    door). Raises :class:`AccountProtected` for one's own account or the last active admin;
    disabling a disabled account changes nothing."""
    with Gallery(db_path) as gallery, write_transaction(gallery.db):
        user = _existing(gallery, name)
        if acting is not None and acting.id == user.id:
            raise AccountProtected("you cannot disable your own account; ask another admin")
        if user.is_disabled:
            return user
        _keep_an_admin(gallery, user, "disabled")
        _change(gallery, user, "disabled_at = ?", [_now()])
        return _by_name(gallery, name)


def enable_user(db_path: str | Path, name: str) -> User:
    """Let the disabled account ``name`` sign in again, with its old password and role."""
    with Gallery(db_path) as gallery, write_transaction(gallery.db):
        user = _existing(gallery, name)
        if not user.is_disabled:
            return user
        _change(gallery, user, "disabled_at = NULL", [])
        return _by_name(gallery, name)


def set_role(db_path: str | Path, name: str, role: str) -> User:
    """Make ``name`` an admin or a viewer; their sessions are revoked (they sign in again
    with the new role). Raises :class:`AccountProtected` for the last active admin."""
    if role not in ROLES:
        raise FacegateError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    with Gallery(db_path) as gallery, write_transaction(gallery.db):
        user = _existing(gallery, name)
        if user.role == role:
            return user
        _keep_an_admin(gallery, user, "made a viewer")
        _change(gallery, user, "role = ?", [role])
        return _by_name(gallery, name)


def check_sign_in(db_path: str | Path, name: str, password: str) -> User | None:
    """The account if ``password`` is right for ``name`` and it may sign in; None for a
    wrong name or password (the same cost either way). Raises :class:`AccountDisabled`
    when the password is right but the account is disabled: only someone who knows its
    password learns that, so a guesser cannot tell a disabled name from a wrong one."""
    user = _password_right(db_path, name, password)
    if user is not None and user.is_disabled:
        raise AccountDisabled("this account is disabled; ask an admin of this door")
    return user


def verify_password(db_path: str | Path, name: str, password: str) -> User | None:
    """The account if ``password`` is right for ``name`` and it is not disabled, else None
    (the same cost either way)."""
    user = _password_right(db_path, name, password)
    return None if user is None or user.is_disabled else user


def get_user(db_path: str | Path, user_id: str) -> User | None:
    with Gallery(db_path) as gallery:
        rows = list(gallery.db.query(f"SELECT {_COLUMNS} FROM users WHERE id = ?", [user_id]))
    return User(**rows[0]) if rows else None


def list_users(db_path: str | Path) -> list[User]:
    with Gallery(db_path) as gallery:
        rows = gallery.db.query(f"SELECT {_COLUMNS} FROM users ORDER BY lower(name), name")
        return [User(**row) for row in rows]


def remove_user(db_path: str | Path, name: str, *, acting: User | None = None) -> None:
    """Remove the account ``name``, its API tokens and its sessions (ON DELETE CASCADE).
    ``acting`` as for :func:`disable_user`; raises :class:`AccountProtected` for one's own
    account or the last active admin."""
    with Gallery(db_path) as gallery, write_transaction(gallery.db):
        user = _existing(gallery, name)
        if acting is not None and acting.id == user.id:
            raise AccountProtected("you cannot remove your own account; ask another admin")
        _keep_an_admin(gallery, user, "removed")
        gallery.db.execute("DELETE FROM users WHERE id = ?", [user.id])


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

_COLUMNS = "id, name, role, created_at, updated_at, version, disabled_at, last_sign_in_at"


def _insert_user(gallery: Gallery, name: str, encoded: str, role: str) -> User:
    now = _now()
    user = User(id=str(uuid.uuid4()), name=name, role=role, created_at=now, updated_at=now,
                version=1)
    try:
        gallery.db.execute(
            "INSERT INTO users (id, name, password_hash, role, created_at, updated_at, version)"
            " VALUES (?, ?, ?, ?, ?, ?, 1)", [user.id, name, encoded, role, now, now])
    except INTEGRITY_ERRORS:
        raise UserExists(f"an account named {name!r} already exists") from None
    return user


def _password_right(db_path: str | Path, name: str, password: str) -> User | None:
    with Gallery(db_path) as gallery:
        row = gallery.db.execute(
            "SELECT password_hash FROM users WHERE name = ?", [name]).fetchone()
        encoded = row[0] if row else _dummy_hash()
        if len(password) > MAX_PASSWORD_LENGTH:
            password = ""
        matches = password_matches(encoded, password)
        return _by_name(gallery, name) if row and matches else None


def _existing(gallery: Gallery, name: str) -> User:
    user = _by_name(gallery, name)
    if user is None:
        raise FacegateError(f"no account named {name!r}")
    return user


def _change(gallery: Gallery, user: User, assignment: str, params: list[str]) -> None:
    """Change ``user``'s row (inside the caller's write transaction): bump its version and
    revoke its sessions, so every browser signed in as it signs in again."""
    gallery.db.execute(
        f"UPDATE users SET {assignment}, updated_at = ?, version = version + 1 WHERE id = ?",
        [*params, _now(), user.id])
    revoke_sessions(gallery, user.id)


def _keep_an_admin(gallery: Gallery, user: User, what: str) -> None:
    """Refuse to take away the door's last active admin (inside the write transaction)."""
    if not user.is_admin or user.is_disabled:
        return
    others = gallery.db.execute(
        "SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled_at IS NULL AND id != ?",
        [user.id]).fetchone()[0]
    if others == 0:
        raise AccountProtected(f"the door needs an active admin, and {user.name} is its last "
                               f"one, so cannot be {what}; make another account an admin "
                               f"first")


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
