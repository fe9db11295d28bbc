"""API tokens: how a script, rather than a browser, signs in to the JSON API.

A token belongs to one account of the admin page and acts with that account's role. It is
``fg_`` followed by 32 random bytes in URL-safe base64, shown once when it is made; only its
SHA-256 is stored (32 random bytes leave nothing to guess, so a plain hash is enough and a
salt would add nothing), so a copy of the database file grants nothing. A revoked token keeps
its row, so the list still says who had one and when it was last used; removing the account
removes its tokens (ON DELETE CASCADE, migration 4).

Every function takes the gallery file's path and opens its own connection, like
:mod:`device.web.users`: the CLI, the daemon and the web page may all call them.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from device.errors import FacegateError, TokenNotFound
from device.gallery.engines import OPERATIONAL_ERRORS
from device.gallery.migrations import write_transaction
from device.gallery.names import clean_name
from device.gallery.store import Gallery
from device.web.users import User

logger = logging.getLogger(__name__)

PREFIX = "fg_"
TOKEN_BYTES = 32
MAX_NAME_LENGTH = 100
# last_used_at is written at most this often per token, so that a script polling the door
# every second does not turn every read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# A token as made here is 46 characters; anything far from that is refused before hashing.
_MAX_TOKEN_LENGTH = 200


@dataclass(frozen=True)
class ApiToken:
    """A token as the lists show it: never the token itself, nor its hash."""

    id: str
    user_name: str
    name: str  # what the admin called it ("backup script")
    created_at: str
    last_used_at: str | None
    revoked_at: str | None

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class TokenOwner:
    """Who a presented token acts for: the account as it is now (its role may have changed
    since the token was made)."""

    token_id: str
    user: User


def create_token(db_path: str | Path, user_name: str, name: str) -> str:
    """Make a token for the account ``user_name``; return it (the only time it is seen).

    ``name`` says what it is for (1 to 100 characters). Raises :class:`FacegateError` for
    an unknown account or a bad name.
    """
    name = _clean_name(name)
    token = PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    with Gallery(db_path) as gallery, write_transaction(gallery.db):
        row = gallery.db.execute("SELECT id FROM users WHERE name = ?", [user_name]).fetchone()
        if row is None:
            raise FacegateError(f"no account named {user_name!r}")
        gallery.db.execute(
            "INSERT INTO api_tokens (id, user_id, name, token_hash, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            [str(uuid.uuid4()), row[0], name, token_hash(token), _now()],
        )
    return token


def list_tokens(db_path: str | Path, user_name: str | None = None) -> list[ApiToken]:
    """Every token (of ``user_name`` only, when given), revoked ones included, newest first."""
    where, params = ("WHERE users.name = ?", [user_name]) if user_name is not None else ("", [])
    with Gallery(db_path) as gallery:
        rows = gallery.db.query(
            f"SELECT {_COLUMNS} FROM api_tokens JOIN users ON users.id = api_tokens.user_id"
            f" {where} ORDER BY api_tokens.created_at DESC, api_tokens.id",
            params,
        )
        return [ApiToken(**row) for row in rows]


def revoke_token(db_path: str | Path, token_id: str) -> ApiToken:
    """Revoke the token with that id from now on; return it as revoked. Revoking a revoked
    token changes nothing. Raises :class:`TokenNotFound`."""
    with Gallery(db_path) as gallery, write_transaction(gallery.db):
        gallery.db.execute(
            "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            [_now(), token_id],
        )
        return _by_id(gallery, token_id)


def authenticate(db_path: str | Path, token: str) -> TokenOwner | None:
    """Who ``token`` acts for, or None when it is unknown, malformed or revoked, or its
    account is disabled (enabling the account makes its tokens work again).

    Records the use in ``last_used_at`` (at most once a minute per token).
    """
    if not isinstance(token, str) or not token.startswith(PREFIX) \
            or len(token) > _MAX_TOKEN_LENGTH:
        return None
    with Gallery(db_path) as gallery:
        rows = list(gallery.db.query(
            f"SELECT api_tokens.id AS token_id, api_tokens.last_used_at, {_USER_COLUMNS}"
            " FROM api_tokens JOIN users ON users.id = api_tokens.user_id"
            " WHERE api_tokens.token_hash = ? AND api_tokens.revoked_at IS NULL"
            " AND users.disabled_at IS NULL",
            [token_hash(token)],
        ))
        if not rows:
            return None
        row = rows[0]
        token_id, last_used = row.pop("token_id"), row.pop("last_used_at")
        now = datetime.now(UTC)
        if last_used is None or now - datetime.fromisoformat(last_used) >= LAST_USED_RESOLUTION:
            try:
                with write_transaction(gallery.db):
                    gallery.db.execute("UPDATE api_tokens SET last_used_at = ? WHERE id = ?",
                                       [_text(now), token_id])
            except OPERATIONAL_ERRORS as error:  # busy: bookkeeping must not refuse
                logger.warning("API token %s: last use not recorded (%s)", token_id, error)
    return TokenOwner(token_id, User(**row))


def find_token(db_path: str | Path, token: str) -> ApiToken | None:
    """The token (revoked or not) that ``token`` is, without recording a use; None if none."""
    with Gallery(db_path) as gallery:
        rows = list(gallery.db.query(
            f"SELECT {_COLUMNS} FROM api_tokens JOIN users ON users.id = api_tokens.user_id"
            " WHERE api_tokens.token_hash = ?", [token_hash(token)]))
    return ApiToken(**rows[0]) if rows else None


def token_hash(token: str) -> str:
    """The hex SHA-256 of ``token`` (what the database keeps)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# --- Private ------------------------------------------------------------------------------

_USER_COLUMNS = ", ".join(f"users.{name}" for name in
                          ("id", "name", "role", "created_at", "updated_at", "version",
                           "disabled_at", "last_sign_in_at"))
_COLUMNS = ("api_tokens.id, users.name AS user_name, api_tokens.name, api_tokens.created_at,"
            " api_tokens.last_used_at, api_tokens.revoked_at")


def _by_id(gallery: Gallery, token_id: str) -> ApiToken:
    rows = list(gallery.db.query(
        f"SELECT {_COLUMNS} FROM api_tokens JOIN users ON users.id = api_tokens.user_id"
        " WHERE api_tokens.id = ?", [token_id]))
    if not rows:
        raise TokenNotFound(f"no API token with id {token_id!r}")
    return ApiToken(**rows[0])


def _clean_name(name: str) -> str:
    return clean_name(name, what="an API token's name (what it is for)",
                      max_length=MAX_NAME_LENGTH)


def _now() -> str:
    return _text(datetime.now(UTC))


def _text(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
