"""The admin page's sessions as the door records them, so that ending one ends it everywhere.

The browser's cookie is signed by the door (Flask's session) and carries a random session id;
the ``sessions`` table (migration 6) keeps the id's SHA-256 beside the account, when the
session started, when it was last active and when it was revoked. A request counts as signed
in only while both agree (:func:`session_owner`), so a copy of the cookie taken before
signing out (:func:`end_session`), before a new password or before the account was disabled
or removed (:func:`revoke_sessions`, in the same transaction) is refused like the original.

The idle time-out is kept here too, not only in the cookie: a session whose row has not been
active for ``idle`` is revoked on its next use, whichever copy of the cookie presents it.
``last_seen_at`` is written at most once a minute per session (the time-out allows for that
minute), so that browsing does not turn every read into a write on the SD card. Rows of
sessions that ended more than a day ago are deleted whenever someone signs in.

Every function takes the gallery file's path and opens its own connection, like
:mod:`device.web.users`, except :func:`revoke_sessions`, which joins its caller's transaction.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

from device.gallery.engines import DATABASE_ERRORS
from device.gallery.migrations import write_transaction
from device.gallery.store import Gallery

logger = logging.getLogger(__name__)

ID_BYTES = 32
LAST_SEEN_RESOLUTION = timedelta(minutes=1)
KEEP_ENDED = timedelta(days=1)
_MAX_ID_LENGTH = 100  # an id as made here is 43 characters


def start_session(db_path: str | Path, user_id: str, idle: timedelta) -> str:
    """Record a new session of the account ``user_id``; return its id (for the cookie only:
    the door keeps its hash). ``idle`` is the idle time-out, used to tidy up old rows."""
    session_id = secrets.token_urlsafe(ID_BYTES)
    now = datetime.now(UTC)
    with Gallery(db_path) as gallery, write_transaction(gallery.db):
        gallery.db.execute(
            "DELETE FROM sessions WHERE revoked_at < ? OR last_seen_at < ?",
            [_text(now - KEEP_ENDED), _text(now - KEEP_ENDED - idle)])
        gallery.db.execute(
            "INSERT INTO sessions (id_hash, user_id, created_at, last_seen_at)"
            " VALUES (?, ?, ?, ?)", [_hash(session_id), user_id, _text(now), _text(now)])
        # Shown on the accounts page; bookkeeping, so the account's version stays.
        gallery.db.execute("UPDATE users SET last_sign_in_at = ? WHERE id = ?",
                           [_text(now), user_id])
    return session_id


def session_owner(db_path: str | Path, session_id: object, idle: timedelta, *,
                  active: bool = True) -> str | None:
    """The account id of the session ``session_id`` while it is live, else None (unknown,
    revoked, its account removed, or idle for longer than ``idle``, which revokes it).

    ``active`` records this use as activity (a page opened; not the live view's polling).
    """
    if not isinstance(session_id, str) or not 0 < len(session_id) <= _MAX_ID_LENGTH:
        return None
    now = datetime.now(UTC)
    with Gallery(db_path) as gallery:
        row = gallery.db.execute(
            "SELECT user_id, last_seen_at FROM sessions WHERE id_hash = ? AND revoked_at IS NULL",
            [_hash(session_id)]).fetchone()
        if row is None:
            return None
        user_id, last_seen = row[0], datetime.fromisoformat(row[1])
        if now - last_seen > idle + LAST_SEEN_RESOLUTION:
            _write(gallery, "UPDATE sessions SET revoked_at = ? WHERE id_hash = ?",
                   [_text(now), _hash(session_id)])
            return None
        if active and now - last_seen >= LAST_SEEN_RESOLUTION:
            _write(gallery, "UPDATE sessions SET last_seen_at = ? WHERE id_hash = ?",
                   [_text(now), _hash(session_id)])
    return user_id


def end_session(db_path: str | Path, session_id: object) -> None:
    """Revoke the session ``session_id`` (signing out); an unknown or ended one is left."""
    if not isinstance(session_id, str) or not 0 < len(session_id) <= _MAX_ID_LENGTH:
        return
    with Gallery(db_path) as gallery, write_transaction(gallery.db):
        gallery.db.execute(
            "UPDATE sessions SET revoked_at = ? WHERE id_hash = ? AND revoked_at IS NULL",
            [_text(datetime.now(UTC)), _hash(session_id)])


def revoke_sessions(gallery: Gallery, user_id: str) -> int:
    """Revoke every open session of ``user_id``, inside the caller's write transaction (a
    new password, the account removed); return how many were open."""
    return gallery.db.execute(
        "UPDATE sessions SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
        [_text(datetime.now(UTC)), user_id]).rowcount


# --- Private ------------------------------------------------------------------------------


def _write(gallery: Gallery, sql: str, params: list[str]) -> None:
    """Bookkeeping that must never refuse a page: on a busy database, a full disk or one
    that cannot be written, it is logged and left undone (the next request tries again)."""
    try:
        with write_transaction(gallery.db):
            gallery.db.execute(sql, params)
    except DATABASE_ERRORS as error:
        logger.warning("session bookkeeping not recorded (%s)", error)
        try:  # a failed COMMIT leaves its transaction open on this connection
            if gallery.db.conn.in_transaction:
                gallery.db.conn.execute("ROLLBACK")
        except DATABASE_ERRORS:
            pass


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


def _text(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
