"""Numbered schema migrations for the gallery file, each applied in one transaction.

The shape follows sqlite-utils' ``migrations.py``: a migration is a function of the database,
run inside a transaction together with the record of it having been applied, so a migration
that raises leaves the file exactly as it was and stays pending. Two differences, both because
several processes (the door daemon, the CLI, the web page) open the same file and may start
at the same moment: migrations are numbered rather than named, and the version is read again
*after* taking the write lock, so two processes never apply the same migration twice.

Never edit a migration once it has shipped: a door already at that version would not run it
again. Append a new one instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlite_utils import Database

from device.errors import FacegateError
from device.gallery.engines import is_postgres, postgres_write_transaction, schema_words

MIGRATIONS_TABLE = "_migrations"


@dataclass(frozen=True)
class Migration:
    """Schema version ``version`` (1, 2, ...), reached by calling ``apply(db)``.

    ``apply`` runs inside an open transaction: it must not commit, and it must not use
    statements SQLite refuses inside a transaction (``VACUUM``, ``PRAGMA journal_mode``).
    """

    version: int
    name: str
    apply: Callable[[Database], None]


@contextlib.contextmanager
def write_transaction(db: Database) -> Iterator[Database]:
    """Run a block as one ``BEGIN IMMEDIATE`` transaction: all of it is committed, or none.
    (At a site, on PostgreSQL: :func:`~device.gallery.engines.postgres_write_transaction`.)

    IMMEDIATE takes the write lock at the start. With a plain (deferred) ``BEGIN``, a
    transaction that reads and then writes can fail with "database is locked" *without
    waiting* when another process wrote in between, because SQLite cannot upgrade a stale
    read snapshot; taking the lock first makes a second writer wait for the busy timeout
    instead. Not re-entrant: nesting raises, so that a rollback never undoes less than the
    caller expects.
    """
    if is_postgres(db):
        with postgres_write_transaction(db):
            yield db
        return
    if db.conn.in_transaction:
        raise RuntimeError("write_transaction() cannot be nested inside another transaction")
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        # Some errors (a full disk, an interrupt) end the transaction themselves.
        if db.conn.in_transaction:
            db.conn.execute("ROLLBACK")
        raise
    db.conn.execute("COMMIT")


def schema_version(db: Database) -> int:
    """The highest migration applied to this file, 0 for a new (or foreign) file."""
    if not table_exists(db, MIGRATIONS_TABLE):
        return 0
    return db.execute(f"SELECT COALESCE(MAX(version), 0) FROM {MIGRATIONS_TABLE}").fetchone()[0]


def migrate(db: Database, migrations: Sequence[Migration]) -> list[int]:
    """Apply the pending ``migrations`` in order; return the versions applied now.

    Each migration commits on its own, so an error in migration 3 keeps 1 and 2 and leaves
    the file at version 2. Raises :class:`FacegateError` when the file is at a higher version
    than this code knows (it was written by a newer facegate): running old code against a
    newer schema could silently lose data.
    """
    _check_numbering(migrations)
    latest = len(migrations)
    # The common case, an up-to-date file, is answered without taking the write lock.
    if schema_version(db) == latest:
        return []
    applied = []
    for migration in migrations:
        with write_transaction(db):
            db.execute(
                f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            current = schema_version(db)
            if current > latest:
                raise FacegateError(
                    f"the gallery file is at schema version {current}, written by a newer "
                    f"facegate; this one knows version {latest} at most, so upgrade it"
                )
            if migration.version <= current:
                continue
            migration.apply(db)
            db.execute(
                f"INSERT INTO {MIGRATIONS_TABLE} (version, name, applied_at) VALUES (?, ?, ?)",
                [migration.version, migration.name, datetime.now(UTC).isoformat()],
            )
        applied.append(migration.version)
    return applied


def table_exists(db: Database, name: str) -> bool:
    if is_postgres(db):
        return db.table_exists(name)
    return db[name].exists()


def _check_numbering(migrations: Sequence[Migration]) -> None:
    versions = [migration.version for migration in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migrations must be numbered 1, 2, 3, ... in order, got {versions}")


# --- The migrations ------------------------------------------------------------------------

# The schema is one for both engines (a site's PostgreSQL holds what a door's file holds):
# each migration runs on either, with the engine's words (schema_words) for bytes, doubles,
# growing keys and "now", and its own triggers (_log_changes, _outbox_follows_events).


def _create_people_templates_changes(db: Database) -> None:
    words = schema_words(db)
    db.execute(
        """
        CREATE TABLE people (
            id TEXT PRIMARY KEY NOT NULL,
            name TEXT NOT NULL UNIQUE,
            external_id TEXT,
            active INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
            valid_from TEXT,
            valid_until TEXT,
            schedule TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            version INTEGER NOT NULL DEFAULT 1
        )
        """
    )
    db.execute(
        f"""
        CREATE TABLE templates (
            id TEXT PRIMARY KEY NOT NULL,
            person_id TEXT NOT NULL REFERENCES people (id) ON DELETE CASCADE,
            model TEXT NOT NULL,
            embedding {words.blob} NOT NULL,
            dim INTEGER NOT NULL,
            quality TEXT NOT NULL DEFAULT '{{}}',
            crop_jpeg {words.blob},
            source_sha256 TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            version INTEGER NOT NULL DEFAULT 1,
            UNIQUE (model, source_sha256)
        )
        """
    )
    db.execute("CREATE INDEX templates_model_person ON templates (model, person_id)")
    db.execute(
        f"""
        CREATE TABLE changes (
            seq {words.serial_key},
            entity TEXT NOT NULL CHECK (entity IN ('person', 'template')),
            entity_id TEXT NOT NULL,
            op TEXT NOT NULL CHECK (op IN ('insert', 'update', 'delete')),
            version INTEGER NOT NULL,
            at TEXT NOT NULL DEFAULT ({words.now})
        )
        """
    )
    _log_changes(db)


def _log_changes(db: Database) -> None:
    """Triggers rather than Python calls, so that a write made by any process, or by hand
    with the sqlite3 shell or psql, is logged too (a seq is never reused after a delete)."""
    tables = (("people", "person"), ("templates", "template"))
    if is_postgres(db):
        db.execute(
            "CREATE FUNCTION log_change() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " IF TG_OP = 'DELETE' THEN"
            "  INSERT INTO changes (entity, entity_id, op, version)"
            "  VALUES (TG_ARGV[0], OLD.id, 'delete', OLD.version); RETURN OLD;"
            " END IF;"
            " INSERT INTO changes (entity, entity_id, op, version)"
            " VALUES (TG_ARGV[0], NEW.id, lower(TG_OP), NEW.version); RETURN NEW;"
            " END $$")
        for table, entity in tables:
            db.execute(f"CREATE TRIGGER {table}_log AFTER INSERT OR UPDATE OR DELETE ON {table}"
                       f" FOR EACH ROW EXECUTE FUNCTION log_change('{entity}')")
        return
    for table, entity in tables:
        for op, row in (("insert", "NEW"), ("update", "NEW"), ("delete", "OLD")):
            db.execute(
                f"CREATE TRIGGER {table}_{op}_log AFTER {op.upper()} ON {table} BEGIN"
                f" INSERT INTO changes (entity, entity_id, op, version)"
                f" VALUES ('{entity}', {row}.id, '{op}', {row}.version); END"
            )


def _create_events(db: Database) -> None:
    # The access log lives in the gallery's file so that one copy of the file is one
    # consistent backup. No foreign key to people: an event outlives its person (their name
    # and snapshots are erased, the door's decision stays; see device/events/log.py). No
    # CHECK on kind either: SQLite cannot change a CHECK without rebuilding the table, and a
    # door receiving a newer door's kinds by replication must still accept them.
    db.execute(
        f"""
        CREATE TABLE events (
            id TEXT PRIMARY KEY NOT NULL,
            at TEXT NOT NULL,
            door TEXT NOT NULL,
            kind TEXT NOT NULL,
            person_id TEXT,
            person_name TEXT,
            score {schema_words(db).real},
            reason TEXT,
            face_path TEXT,
            frame_path TEXT,
            snapshot_bytes INTEGER NOT NULL DEFAULT 0 CHECK (snapshot_bytes >= 0),
            detail TEXT,
            version INTEGER NOT NULL DEFAULT 1
        )
        """
    )
    db.execute("CREATE INDEX events_at ON events (at)")
    db.execute("CREATE INDEX events_person_at ON events (person_id, at)")
    db.execute("CREATE INDEX events_kind_at ON events (kind, at)")
    # Retention walks the events that still have snapshots, oldest first, and sums their
    # bytes; a partial index holds only those rows, so both stay cheap once most of a long
    # log has had its snapshots removed.
    db.execute(
        "CREATE INDEX events_snapshots ON events (at, snapshot_bytes) WHERE snapshot_bytes > 0"
    )


def _create_web_tables(db: Database) -> None:
    # The admin page's own tables. Users and settings carry a version like people do, so a
    # later replication or an optimistic "edited meanwhile" check can use it. Tokens for the
    # one-time set-up link are stored hashed: a copy of the file does not hand out an admin.
    db.execute(
        """
        CREATE TABLE users (
            id TEXT PRIMARY KEY NOT NULL,
            name TEXT NOT NULL UNIQUE,
            password_hash TEXT NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('admin', 'viewer')),
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            version INTEGER NOT NULL DEFAULT 1
        )
        """
    )
    db.execute(
        """
        CREATE TABLE audit_log (
            id TEXT PRIMARY KEY NOT NULL,
            at TEXT NOT NULL,
            "user" TEXT,
            action TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT '{}',
            address TEXT
        )
        """
    )
    db.execute("CREATE INDEX audit_log_at ON audit_log (at)")
    db.execute(
        """
        CREATE TABLE settings (
            key TEXT PRIMARY KEY NOT NULL,
            value TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            updated_by TEXT,
            version INTEGER NOT NULL DEFAULT 1
        )
        """
    )
    db.execute(
        """
        CREATE TABLE setup_tokens (
            token_hash TEXT PRIMARY KEY NOT NULL,
            created_at TEXT NOT NULL,
            used_at TEXT
        )
        """
    )


def _create_api_tokens(db: Database) -> None:
    # Per-admin tokens for the JSON API. Only the SHA-256 of a token is kept (a token is 32
    # random bytes, so a plain hash is enough: there is nothing to guess), so a copy of the
    # file grants nothing. A revoked token keeps its row, for the audit trail.
    db.execute(
        """
        CREATE TABLE api_tokens (
            id TEXT PRIMARY KEY NOT NULL,
            user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            token_hash TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL,
            last_used_at TEXT,
            revoked_at TEXT
        )
        """
    )
    db.execute("CREATE INDEX api_tokens_user ON api_tokens (user_id)")


def _template_sources_and_gallery_model(db: Database) -> None:
    # Where each template came from (upload, capture, cli, api; NULL for templates enrolled
    # before this migration), so an admin can tell a suspicious one and remove it alone.
    db.execute("ALTER TABLE templates ADD COLUMN source TEXT")
    # Which embedder the gallery's templates belong to: the door must run that one, and a
    # re-embed switches it in the same transaction as the templates. Versioned like people,
    # so replication can carry it later.
    db.execute(
        """
        CREATE TABLE gallery_meta (
            key TEXT PRIMARY KEY NOT NULL,
            value TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            version INTEGER NOT NULL DEFAULT 1
        )
        """
    )
    # An existing gallery whose templates are all of one model adopts that model; a mixed
    # one (possible before) adopts the model with the most templates, and the rest is
    # reported by `facegate info` until `facegate reembed` moves it.
    db.execute(
        f"INSERT INTO gallery_meta (key, value, updated_at)"
        f" SELECT 'model', model, {schema_words(db).now} FROM templates"
        f" GROUP BY model ORDER BY COUNT(*) DESC, model LIMIT 1"
    )


def _create_sessions(db: Database) -> None:
    # The admin page's signed-in sessions, so that signing out, a new password or removing
    # the account ends a session on the door and not only in the browser that asked: a copy
    # of the cookie taken before dies with it. Only the SHA-256 of a session's random id is
    # kept, so a copy of the file rebuilds no cookie. A revoked session keeps its row for a
    # day (see device/web/sessions.py); removing the account removes its sessions.
    db.execute(
        """
        CREATE TABLE sessions (
            id_hash TEXT PRIMARY KEY NOT NULL,
            user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            created_at TEXT NOT NULL,
            last_seen_at TEXT NOT NULL,
            revoked_at TEXT
        )
        """
    )
    db.execute("CREATE INDEX sessions_user ON sessions (user_id)")


def _create_outbox(db: Database) -> None:
    # Events waiting to leave the door (device/events/outbox.py; MQTT today, the site server
    # later). A row is written in the same transaction as its event and removed once the
    # broker has acknowledged it, so a crash loses none and at worst sends one twice. seq
    # orders them (AUTOINCREMENT: never reused, so "oldest first" survives deletions). The
    # payload is the message as it will be sent, made when the event was recorded.
    db.execute(
        f"""
        CREATE TABLE outbox (
            seq {schema_words(db).serial_key},
            event_id TEXT NOT NULL,
            created_at TEXT NOT NULL,
            payload TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX outbox_event ON outbox (event_id)")
    _outbox_follows_events(db)


def _outbox_follows_events(db: Database) -> None:
    """An outbox row never outlives its event, nor its event's person: triggers rather than
    Python calls, so that retention, a person's erasure or a hand edit in the sqlite3
    shell, from any process, takes the waiting message with it (privacy: a deleted
    person's name must not leave the door afterwards)."""
    if is_postgres(db):
        db.execute(
            "CREATE FUNCTION outbox_forget_event() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN DELETE FROM outbox WHERE event_id = OLD.id; RETURN NULL; END $$")
        db.execute("CREATE TRIGGER events_delete_outbox AFTER DELETE ON events"
                   " FOR EACH ROW EXECUTE FUNCTION outbox_forget_event()")
        db.execute("CREATE TRIGGER events_erase_person_outbox AFTER UPDATE OF person_id ON events"
                   " FOR EACH ROW WHEN (OLD.person_id IS NOT NULL AND NEW.person_id IS NULL)"
                   " EXECUTE FUNCTION outbox_forget_event()")
        return
    db.execute(
        "CREATE TRIGGER events_delete_outbox AFTER DELETE ON events BEGIN"
        " DELETE FROM outbox WHERE event_id = OLD.id; END"
    )
    db.execute(
        "CREATE TRIGGER events_erase_person_outbox AFTER UPDATE OF person_id ON events"
        " WHEN OLD.person_id IS NOT NULL AND NEW.person_id IS NULL BEGIN"
        " DELETE FROM outbox WHERE event_id = OLD.id; END"
    )


def _users_disabled_and_last_sign_in(db: Database) -> None:
    # An account an admin has disabled (disabled_at: when; NULL while active) keeps its row,
    # so the audit log and the accounts list still say who it was, and enabling it again
    # gives back its name, role and password. Disabling is a change of the account like a
    # new password: it bumps users.version (device/web/users.py), which is what replication
    # and the signed-in sessions follow. last_sign_in_at is bookkeeping written at each
    # sign-in and does not bump the version (a sign-in must not sign the other sessions out).
    db.execute("ALTER TABLE users ADD COLUMN disabled_at TEXT")
    db.execute("ALTER TABLE users ADD COLUMN last_sign_in_at TEXT")


def _create_site_tables(db: Database) -> None:
    # A site of many doors (docs/site.md). At the site's store: the doors registered with it,
    # each with the SHA-256 of its credential (shown once, as API tokens are) and what the
    # site last heard from it. At a member door: where its replica of the site's gallery
    # stands (the site's change seq reached, when it last heard from the site, the digest
    # check), and the uplink: the door's events waiting to go up to the site, written in the
    # same transaction as the event and removed once the site has acknowledged it. Both
    # ends have every table (one schema); each uses its own.
    words = schema_words(db)
    db.execute(
        f"""
        CREATE TABLE site_doors (
            id TEXT PRIMARY KEY NOT NULL,
            token_hash TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL,
            removed_at TEXT,
            last_contact_at TEXT,
            replica_seq {words.big_integer} NOT NULL DEFAULT 0,
            replica_model TEXT,
            pending_events INTEGER NOT NULL DEFAULT 0,
            version INTEGER NOT NULL DEFAULT 1
        )
        """
    )
    db.execute(
        """
        CREATE TABLE site_replica (
            key TEXT PRIMARY KEY NOT NULL,
            value TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )
        """
    )
    db.execute(
        f"""
        CREATE TABLE uplink (
            seq {words.serial_key},
            event_id TEXT NOT NULL,
            created_at TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX uplink_event ON uplink (event_id)")
    _uplink_follows_events(db)


def _uplink_follows_events(db: Database) -> None:
    """An event removed by retention before it went up leaves the uplink with it (an erased
    person's event goes up as it now is, without them: the row is read when it is sent)."""
    if is_postgres(db):
        db.execute(
            "CREATE FUNCTION uplink_forget_event() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN DELETE FROM uplink WHERE event_id = OLD.id; RETURN NULL; END $$")
        db.execute("CREATE TRIGGER events_delete_uplink AFTER DELETE ON events"
                   " FOR EACH ROW EXECUTE FUNCTION uplink_forget_event()")
        return
    db.execute("CREATE TRIGGER events_delete_uplink AFTER DELETE ON events BEGIN"
               " DELETE FROM uplink WHERE event_id = OLD.id; END")


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "people, templates and the change log", _create_people_templates_changes),
    Migration(2, "the access log (events)", _create_events),
    Migration(3, "web users, audit log, site settings and set-up tokens", _create_web_tables),
    Migration(4, "API tokens", _create_api_tokens),
    Migration(5, "template sources and the gallery's model", _template_sources_and_gallery_model),
    Migration(6, "the admin page's sessions", _create_sessions),
    Migration(7, "the outbox of events waiting to be published", _create_outbox),
    Migration(8, "disabled accounts and their last sign-in", _users_disabled_and_last_sign_in),
    Migration(9, "a site's doors, a door's replica and its uplink", _create_site_tables),
)
SITE_SCHEMA = 9  # the first version with site_doors, site_replica and uplink
