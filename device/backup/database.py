"""Backup and restore of the gallery file: people, templates, the access log, the audit log
and the site settings (and, only when asked, the accounts), all in one SQLite file, so one
copy is one backup.

Both directions use SQLite's online backup API (``sqlite3.Connection.backup``), never a file
copy: a copy of a file in WAL mode taken while the door writes may miss the pages still in
the ``-wal`` file or catch a transaction half-way. The API copies every page inside one read
transaction (all pages in one step), so a backup is the database as it was at one instant;
in WAL mode the door goes on writing meanwhile. A restore is one write transaction on the
live file: other connections (the door daemon's) see the old database or the new one, never
a mixture, and need no restart.

The access log's snapshot files are not in the database and are neither saved nor restored;
an event restored without its file shows no picture.

The accounts (``ACCOUNT_TABLES``: users with their password hashes, API token hashes, set-up
tokens, sessions) are left out of a backup unless asked for, and a restore never brings them
in, whatever the file holds: the door's current ones are copied into the restored database
in the same swap. A restore is an admin API token's power, and a ``users`` row slipped into
a backup must not come back as a browser admin.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlite_utils import Database

from device.backup.rows import check_rows
from device.errors import FacegateError, RestoreRefused
from device.gallery.engines import is_postgres_location
from device.gallery.migrations import MIGRATIONS, MIGRATIONS_TABLE, migrate, schema_version

SQLITE_MAGIC = b"SQLite format 3\x00"
BUSY_TIMEOUT_S = 10.0  # a restore waits this long for the door's current write to finish
# Header bytes 18 and 19 are the file format's write and read versions: 2 in WAL mode.
_WAL_VERSION_OFFSET = 18
# The restored change log jumps this far past the live one: a gallery edit committed between
# reading the live number and the copy still leaves the restored number the higher.
_CHANGE_SEQ_GAP = 1000
# Who may sign in or call the API: never taken from a file. Parents before the tables that
# refer to them; a table missing at a schema version is skipped.
ACCOUNT_TABLES = ("users", "api_tokens", "setup_tokens", "sessions")


SITE_STORE = ("a site's store is PostgreSQL: back it up and restore it with pg_dump and "
              "pg_restore (docs/site.md), not with facegate's backup file")


def refuse_site_store(location: object) -> None:
    """The rule every front obeys before a backup or a restore (and these functions
    themselves): a door's SQLite file only."""
    if is_postgres_location(location):
        raise RestoreRefused(SITE_STORE)


def backup_database(db_path: str | Path, dest_path: str | Path, *,
                    accounts: bool = False) -> None:
    """Write a consistent copy of the live database ``db_path`` to ``dest_path``.
    (A site's PostgreSQL is refused: pg_dump's job.)

    The copy is a single self-contained file (rollback-journal mode, no ``-wal`` beside
    it), written beside ``dest_path`` and renamed into place, so ``dest_path`` is either
    the whole backup or untouched. An existing ``dest_path`` is replaced. The door is not
    held up: in WAL mode the copy reads a snapshot while it goes on writing.

    ``accounts`` False (the default) empties ``ACCOUNT_TABLES`` in the copy, with SQLite's
    secure delete, so no password or token hash is left in the file, not even in its free
    pages; True keeps them (the audited ``?accounts=1`` of a signed-in admin, and the copy a
    restore keeps of the live file).
    """
    refuse_site_store(db_path)
    dest = Path(dest_path)
    partial = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    try:
        with _connection(db_path) as source, _connection(partial) as target:
            source.backup(target)
            # The header says WAL when the source is; a backup file stands alone instead.
            target.execute("PRAGMA journal_mode = DELETE")
            if not accounts:
                _empty_accounts(target)
        os.replace(partial, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise


def restore_database(db_path: str | Path, uploaded_path: str | Path, *,
                     models_dir: Path | None = None) -> dict[str, Any]:
    """Replace the live database ``db_path`` with the backup at ``uploaded_path``.

    The upload is checked first, on a private copy opened read-only: it must be an SQLite
    file that passes ``PRAGMA integrity_check`` and ``foreign_key_check``, with facegate's
    migrations table at a version this facegate knows (not newer), and exactly the tables,
    indexes and triggers that version has. Any failure raises :class:`RestoreRefused` and
    changes nothing. An older backup is then migrated (on the copy) to the current schema.

    Every row it brings in is then checked (:func:`device.backup.rows.check_rows`:
    the embeddings decode, times are UTC, schedules are the door's, snapshot paths stay in
    their folder, templates of a model whose card is in ``models_dir`` have the card's
    length, ...) and the foreign keys must hold; the first bad row is named in the
    :class:`RestoreRefused` and nothing is replaced.

    The accounts never come from the file: ``ACCOUNT_TABLES`` of the copy are replaced by the
    live database's just before the swap, so everyone signed in stays signed in and every
    token keeps working. Hazard: an account change made in the very instant between that
    copy and the swap is lost. Site settings and the audit log do come back as they were in
    the backup. Before the swap the live database is kept as
    ``<name>.before-restore-<UTC time>`` beside it (made with :func:`backup_database`, with
    the accounts).

    Returns ``{"schema_version": version of the backup, "people", "templates", "events",
    "kept_previous": path of the kept copy}``.
    """
    refuse_site_store(db_path)
    db_path = Path(db_path)
    with tempfile.TemporaryDirectory(prefix=".restore-", dir=db_path.parent) as work:
        candidate = Path(work) / "candidate.db"
        _private_copy(Path(uploaded_path), candidate)
        version = _check_backup(candidate)
        with _connection(candidate) as connection:
            _migrate_and_check(connection, models_dir)
            try:
                _prepare(connection, db_path)
            except sqlite3.DatabaseError as error:  # before the live file is touched
                raise RestoreRefused(f"the backup cannot be made ready to restore ({error}); "
                                     "nothing was restored") from None
            counts = {table: connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                      for table in ("people", "templates", "events")}
            kept = _kept_name(db_path)
            backup_database(db_path, kept, accounts=True)
            _keep_live_accounts(connection, db_path)
            with _connection(db_path) as live:
                connection.backup(live)
    return {"schema_version": version, **counts, "kept_previous": str(kept)}


# --- Checking an upload --------------------------------------------------------------------


def _private_copy(uploaded: Path, candidate: Path) -> None:
    """Copy the upload and, when its header says WAL, mark the copy as a rollback-journal
    file: a WAL file opened read-only needs its ``-shm`` beside it, and an upload has none."""
    with open(uploaded, "rb") as source, open(candidate, "wb") as target:
        header = source.read(100)
        if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
            raise RestoreRefused("the file is not an SQLite database (a facegate backup is "
                                 "the .db file downloaded from Backup)")
        versions = header[_WAL_VERSION_OFFSET:_WAL_VERSION_OFFSET + 2]
        if not set(versions) <= {1, 2}:  # a later format, which SQLite opens read-only
            raise RestoreRefused("the file's header names an SQLite file format this door "
                                 "does not know; nothing was restored")
        if versions != b"\x01\x01":
            header = (header[:_WAL_VERSION_OFFSET] + b"\x01\x01"
                      + header[_WAL_VERSION_OFFSET + 2:])
        target.write(header)
        while chunk := source.read(1 << 20):
            target.write(chunk)


def _check_backup(candidate: Path) -> int:
    """The backup's schema version, once it has passed every check; else RestoreRefused."""
    uri = f"file:{quote(str(candidate))}?mode=ro"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as connection:
            problems = [row[0] for row in connection.execute("PRAGMA integrity_check")]
            if problems != ["ok"]:
                raise RestoreRefused(f"the file is a damaged SQLite database ({problems[0]}); "
                                     "nothing was restored")
            db = Database(connection)
            version = _schema_of(db)
            _check_foreign_keys(connection)
    except (sqlite3.DatabaseError, UnicodeDecodeError) as error:
        raise RestoreRefused(f"the file is not a readable SQLite database ({error}); "
                             "nothing was restored") from None
    return version


def _schema_of(db: Database) -> int:
    if not db[MIGRATIONS_TABLE].exists():
        raise RestoreRefused("the file is an SQLite database but not facegate's (it has no "
                             f"{MIGRATIONS_TABLE} table)")
    version = schema_version(db)
    applied = [row[0] for row in db.execute(
        f"SELECT version FROM {MIGRATIONS_TABLE} ORDER BY version")]
    if version > len(MIGRATIONS):
        raise RestoreRefused(f"the backup is at schema version {version}, written by a newer "
                             f"facegate; this one knows version {len(MIGRATIONS)} at most")
    if version < 1 or applied != list(range(1, version + 1)):
        raise RestoreRefused(f"the backup's {MIGRATIONS_TABLE} table is not facegate's "
                             f"(versions {applied})")
    expected = _schema(_reference(version))
    found = _schema(db)
    if found != expected:
        differing = sorted({key[1] for key in found.keys() | expected.keys()
                            if found.get(key) != expected.get(key)})
        raise RestoreRefused("the database does not have facegate's tables for schema "
                             f"version {version} (differs in: {', '.join(differing)})")
    return version


def _reference(version: int) -> Database:
    """An empty database with the schema of ``version``, built by the migrations themselves,
    so the check never goes stale when a migration is added."""
    db = Database(memory=True)
    migrate(db, MIGRATIONS[:version])
    return db


def _schema(db: Database) -> dict[tuple[str, str], str]:
    """``{(type, name): SQL}`` of every table, index, trigger and view, leaving out SQLite's
    own; the SQL with its whitespace collapsed. Compared whole, so that a file with an extra
    trigger or view (which a restore would bring into the live file) is refused too."""
    rows = db.execute("SELECT type, name, sql FROM sqlite_master"
                      " WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\'").fetchall()
    return {(kind, name): " ".join((sql or "").split()) for kind, name, sql in rows}


def _check_foreign_keys(connection: sqlite3.Connection) -> None:
    """Refuse, naming the first row, a row whose parent is missing (a template whose person
    is not in the file, a token whose account is not)."""
    broken = connection.execute("PRAGMA main.foreign_key_check").fetchone()
    if broken is None:
        return
    table, rowid, parent = broken[0], broken[1], broken[2]
    found = connection.execute(f'SELECT * FROM "{table}" WHERE rowid = ?', [rowid]).fetchone()
    row_id = found[0] if found else rowid
    raise RestoreRefused(f"the backup's {table} row {row_id!r} refers to a row of {parent} "
                         "that is not in the file; nothing was restored")


# --- Making the copy ready -----------------------------------------------------------------


def _migrate_and_check(connection: sqlite3.Connection, models_dir: Path | None) -> None:
    """Migrate the checked copy to this facegate's schema, then check every row it would
    bring in. Whatever a hostile file makes SQLite or a migration say is a RestoreRefused:
    the live database has not been touched yet."""
    try:
        migrate(Database(connection), MIGRATIONS)
        check_rows(connection, models_dir, replaced=ACCOUNT_TABLES)
        _check_foreign_keys(connection)
    except RestoreRefused:
        raise
    except (sqlite3.DatabaseError, UnicodeDecodeError, FacegateError) as error:
        raise RestoreRefused(f"the backup cannot be brought to this facegate's schema "
                             f"({error}); nothing was restored") from None


def _empty_accounts(connection: sqlite3.Connection) -> None:
    """Delete every row of ``ACCOUNT_TABLES``, overwriting them on disk (secure delete)."""
    connection.execute("PRAGMA secure_delete = ON")
    with connection:
        for table in _tables(connection, "main", ACCOUNT_TABLES):
            connection.execute(f"DELETE FROM main.{table}")


def _keep_live_accounts(connection: sqlite3.Connection, live_path: Path) -> None:
    """Give the copy the live database's ``ACCOUNT_TABLES`` in place of the file's, in one
    transaction; the file's own rows are overwritten on disk (secure delete)."""
    connection.execute("PRAGMA secure_delete = ON")
    connection.execute("ATTACH DATABASE ? AS live", [str(live_path)])
    try:
        with connection:
            ours = _tables(connection, "main", ACCOUNT_TABLES)
            theirs = set(_tables(connection, "live", ACCOUNT_TABLES))
            for table in reversed(ours):
                connection.execute(f"DELETE FROM main.{table}")
            for table in ours:
                if table not in theirs:
                    continue
                live_columns = set(_columns(connection, "live", table))
                shared = ", ".join(c for c in _columns(connection, "main", table)
                                   if c in live_columns)
                connection.execute(f"INSERT INTO main.{table} ({shared})"
                                   f" SELECT {shared} FROM live.{table}")
    finally:
        connection.execute("DETACH DATABASE live")


def _tables(connection: sqlite3.Connection, schema: str, names: tuple[str, ...]) -> list[str]:
    present = {row[0] for row in connection.execute(
        f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table'")}
    return [name for name in names if name in present]


def _columns(connection: sqlite3.Connection, schema: str, table: str) -> list[str]:
    return [row[1] for row in connection.execute(f"PRAGMA {schema}.table_info({table})")]


def _prepare(connection: sqlite3.Connection, live_path: Path) -> None:
    """Give the migrated, checked copy the live file's page size (a WAL database cannot
    change its page size, so the backup API would refuse), and move its change counters past
    the live ones so running processes notice the swap."""
    with _connection(live_path) as live:
        live_page_size = live.execute("PRAGMA page_size").fetchone()[0]
        live_changes = live.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]
        live_settings = live.execute(
            "SELECT COALESCE(SUM(version), 0) FROM settings").fetchone()[0]
    if connection.execute("PRAGMA page_size").fetchone()[0] != live_page_size:
        connection.execute(f"PRAGMA page_size = {int(live_page_size)}")
        connection.execute("VACUUM")
    with connection:
        # Messages waiting to be published in the backup were the old door's to send (or
        # sent already): a restore brings none, and a hand-made file cannot have the door
        # publish what it never recorded.
        connection.execute("DELETE FROM outbox")
        # The door reloads its matcher when MAX(changes.seq) moves (Gallery.change_seq): a
        # restored log could end at the very number it has seen, and then the door would go
        # on recognising people the restore removed. One row for the restore as a whole.
        own = connection.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]
        connection.execute(
            "INSERT INTO changes (seq, entity, entity_id, op, version)"
            " VALUES (?, 'person', '*', 'update', 0)",
            [max(own, live_changes) + _CHANGE_SEQ_GAP],
        )
        # The daemon re-reads site settings when SUM(settings.version) changes
        # (site_settings_seq); equal sums with different rows would go unnoticed.
        own_settings = connection.execute(
            "SELECT COALESCE(SUM(version), 0) FROM settings").fetchone()[0]
        if own_settings and own_settings == live_settings:
            connection.execute(
                "UPDATE settings SET version = version + 1"
                " WHERE key = (SELECT MIN(key) FROM settings)")


@contextlib.contextmanager
def _connection(path: str | Path) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S)
    try:
        yield connection
    finally:
        connection.close()


def _kept_name(db_path: Path) -> Path:
    """``<name>.before-restore-<UTC time>``, with a counter when one such exists already."""
    base = f"{db_path.name}.before-restore-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    kept, number = db_path.with_name(base), 1
    while kept.exists():
        number += 1
        kept = db_path.with_name(f"{base}-{number}")
    return kept
