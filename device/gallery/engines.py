"""The two engines a gallery lives on: SQLite at a door, PostgreSQL at a site.

Every service that stores something (the gallery, the access log, the accounts, ...) talks
to a ``db`` with two calls, as sqlite-utils' ``Database`` offers them: ``execute(sql,
params)`` returns a cursor (``fetchone``, ``fetchall``, ``rowcount``) and ``query(sql,
params)`` yields rows as dicts. :class:`PostgresDatabase` offers the same two calls over a
psycopg 3 connection, so the SQL is written once, with ``?`` placeholders, in the subset
both engines read (docs/design/site.md lists it). What differs is said in one place here:
the column type of bytes, the write transaction, the change-log triggers.

A site's PostgreSQL holds what every door would hold, so the schema is the doors' own
migrations, each run with the engine's words for the few things the engines spell apart.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
# The key of the advisory lock every gallery write takes at a site (any constant: it only has
# to be the same in every process). "fg" in ASCII.
WRITE_LOCK_KEY = 0x6667


# What either engine raises when the database cannot do what was asked (a full disk, a lock
# held too long, the server gone): ``except DATABASE_ERRORS`` where sqlite3.Error was meant.
# PostgreSQL's errors are raised as the same DB-API classes by the adapter below
# (:func:`_dbapi_errors`), so that a door never imports psycopg to catch them (65 ms of
# every command's start) and one clause fits both engines.
DATABASE_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error,)
INTEGRITY_ERRORS: tuple[type[Exception], ...] = (sqlite3.IntegrityError,)  # UNIQUE, REFERENCES
OPERATIONAL_ERRORS: tuple[type[Exception], ...] = (sqlite3.OperationalError,)  # busy, gone


@contextlib.contextmanager
def _dbapi_errors() -> Iterator[None]:
    """psycopg's errors as the DB-API classes the services catch (the original chained)."""
    import psycopg

    try:
        yield
    except psycopg.IntegrityError as error:
        raise sqlite3.IntegrityError(str(error).strip()) from error
    except psycopg.OperationalError as error:
        raise sqlite3.OperationalError(str(error).strip()) from error
    except psycopg.Error as error:
        raise sqlite3.DatabaseError(str(error).strip()) from error


@dataclass(frozen=True)
class SchemaWords:
    """How each engine spells the few column types and defaults the schema needs."""

    blob: str  # bytes: embeddings, crops
    real: str  # a double: SQLite's REAL is 8 bytes, PostgreSQL's only 4
    serial_key: str  # an integer key that only grows and is never reused
    big_integer: str  # 64 bits (PostgreSQL's INTEGER has 32; SQLite's every integer 64)
    now: str  # the time now as the Python side writes times: UTC, milliseconds, "Z"


SQLITE_WORDS = SchemaWords(
    blob="BLOB", real="REAL", serial_key="INTEGER PRIMARY KEY AUTOINCREMENT",
    big_integer="INTEGER",
    now="strftime('%Y-%m-%dT%H:%M:%fZ', 'now')")
POSTGRES_WORDS = SchemaWords(
    blob="BYTEA", real="DOUBLE PRECISION",
    serial_key="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", big_integer="BIGINT",
    now="""to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')""")


def is_postgres(db: object) -> bool:
    return getattr(db, "engine", "sqlite") == "postgresql"


def schema_words(db: object) -> SchemaWords:
    return POSTGRES_WORDS if is_postgres(db) else SQLITE_WORDS


def insertion_order(db: object) -> str:
    """A column to break ties of equal times by: SQLite's rowid is the order rows were
    written; PostgreSQL has none (a site's events come from many doors in no order anyway),
    so the id, which is at least the same on every read."""
    return "id" if is_postgres(db) else "rowid"


_last_id_time = [0, 0]  # (milliseconds, counter) of the newest id made by this process
_id_lock = threading.Lock()


def time_ordered_id(when: datetime) -> str:
    """A UUID version 7 (RFC 9562) for an event at ``when``: 48 bits of Unix milliseconds,
    a 12-bit counter within the millisecond, 62 random bits.

    Ids made by one process sort in the order they were made, even within one millisecond
    (and if the clock steps back), so "newest first" needs no other column on an engine
    without SQLite's rowid (:func:`insertion_order`): at a site, a door's events keep
    their order. They stay as
    unique as uuid4's where it matters, across doors (62 random bits per millisecond)."""
    millis = int(when.timestamp() * 1000)
    with _id_lock:
        last_millis, counter = _last_id_time
        if millis <= last_millis:
            millis, counter = last_millis, counter + 1
            if counter > 0xFFF:  # 4,096 ids in one millisecond: borrow the next one
                millis, counter = millis + 1, 0
        else:
            counter = 0
        _last_id_time[:] = [millis, counter]
    random_bits = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (millis << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | random_bits
    return str(uuid.UUID(int=value))


def is_postgres_location(location: object) -> bool:
    """Whether a gallery location is a PostgreSQL connection string (else a file path)."""
    return isinstance(location, str) and location.startswith(POSTGRES_SCHEMES)


def describe_location(location: object) -> str:
    """A gallery location for messages: a path as it is, a connection string without its
    password."""
    if not is_postgres_location(location):
        return str(location)
    from urllib.parse import urlsplit

    parts = urlsplit(str(location))
    user = f"{parts.username}@" if parts.username else ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{user}{parts.hostname or ''}{port}{parts.path}"


def to_pyformat(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s``, and a literal ``%`` doubled, outside quoted
    strings and identifiers (a ``?`` inside ``'...'`` is text, not a parameter)."""
    out: list[str] = []
    quote: str | None = None
    for char in sql:
        if quote:
            out.append("%%" if char == "%" else char)
            if char == quote:
                quote = None  # a doubled quote closes and reopens: the same result
        elif char in "'\"":
            quote = char
            out.append(char)
        elif char == "?":
            out.append("%s")
        elif char == "%":
            out.append("%%")
        else:
            out.append(char)
    return "".join(out)


class PostgresConnection:
    """What the services ask of ``db.conn``: whether a transaction is open, and running the
    statements of one (``BEGIN``, ``COMMIT``, ``ROLLBACK``)."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return self._connection.info.transaction_status != TransactionStatus.IDLE

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        with _dbapi_errors():
            return self._connection.execute(to_pyformat(sql), params)

    def close(self) -> None:
        self._connection.close()


class PostgresDatabase:
    """A PostgreSQL database behind the same ``execute``/``query`` calls as sqlite-utils'.

    The connection runs in autocommit mode, as Python's sqlite3 does outside an explicit
    ``BEGIN``: a lone statement commits itself, and a write transaction is begun and ended
    by :func:`write_transaction`. One object per thread, as with SQLite.
    """

    engine = "postgresql"
    blob_type = "BYTEA"

    def __init__(self, dsn: str, *, connect_timeout_s: float = 10.0) -> None:
        import psycopg

        self.dsn = dsn
        with _dbapi_errors():
            self._connection = psycopg.connect(dsn, autocommit=True,
                                               connect_timeout=max(1, round(connect_timeout_s)))
        self.conn = PostgresConnection(self._connection)

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        with _dbapi_errors():
            return self._connection.execute(to_pyformat(sql), _parameters(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Any:
        with _dbapi_errors(), self._connection.cursor() as cursor:
            cursor.executemany(to_pyformat(sql), [_parameters(row) for row in rows])
            return cursor

    def query(self, sql: str, params: Sequence[Any] | None = None) -> Iterator[dict]:
        from psycopg.rows import dict_row

        with _dbapi_errors(), self._connection.cursor(row_factory=dict_row) as cursor:
            cursor.execute(to_pyformat(sql), _parameters(params))
            yield from cursor

    def table_names(self) -> list[str]:
        return [row[0] for row in self.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            " ORDER BY tablename")]

    def table_exists(self, name: str) -> bool:
        return self.execute("SELECT to_regclass(?) IS NOT NULL", [name]).fetchone()[0]

    def close(self) -> None:
        self._connection.close()


def _parameters(params: Sequence[Any] | None) -> Sequence[Any] | None:
    """sqlite3 takes ``bytes`` for a BLOB and so does psycopg for a BYTEA; a ``memoryview``
    or ``bytearray`` (numpy's buffers) is passed as ``bytes`` for both."""
    if params is None:
        return None
    return [bytes(value) if isinstance(value, memoryview | bytearray) else value
            for value in params]


@contextlib.contextmanager
def postgres_write_transaction(db: PostgresDatabase) -> Iterator[PostgresDatabase]:
    """One transaction, all of it committed or none, that first takes the site's gallery
    write lock: writes are serialised as SQLite's ``BEGIN IMMEDIATE`` serialises them at a
    door. That is what keeps the change log's sequence numbers in commit order, which the
    doors' "changes since N" depends on (two overlapping writers could otherwise commit seq
    41 before seq 40, and a door that read 41 would never see 40)."""
    if db.conn.in_transaction:
        raise RuntimeError("write_transaction() cannot be nested inside another transaction")
    db.execute("BEGIN")
    try:
        db.execute("SELECT pg_advisory_xact_lock(?)", [WRITE_LOCK_KEY])
        yield db
    except BaseException:
        if db.conn.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
