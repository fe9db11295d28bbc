"""Backup and restore against the attacks of the hardening issue, on the real app: a backup
made by the app itself (GET /api/backup), edited with sqlite3 as an attacker would, and sent
back (POST /api/restore) through Flask's test client, on a real SQLite file.

- A row the door cannot read (an embedding of 4 bytes) must be refused, naming the row, and
  change nothing; a file edited by hand in place must not stop the door either.
- A ``users`` or ``api_tokens`` row slipped into a backup must not come back as an account;
  a backup carries no password or token hash unless a signed-in admin asks for them.
- Whatever bytes or rows are sent (hypothesis), a restore either succeeds with rows the door
  can read or raises RestoreRefused, and a refused one leaves the live file as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import sqlite3
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.backup import backup_database, restore_database
from device.daemon.access import access_refusal
from device.errors import RestoreRefused
from device.events.snapshots import snapshot_path
from device.gallery.migrations import MIGRATIONS
from device.gallery.store import Gallery
from device.identification import Decision, Identifier
from device.site_settings import read_site_settings, write_site_settings
from device.vision.models import DEFAULT_EMBEDDER
from device.web.tokens import create_token, token_hash
from device.web.users import (
    add_user,
    disable_user,
    enable_user,
    hash_password,
    list_users,
    verify_password,
)
from tests.conftest import DATA, load
from tests.web_support import PASSWORD, audit_actions, sign_in

COLIN = sorted((DATA / "people" / "Colin_Powell").glob("*.jpg"))
SERENA = sorted((DATA / "people" / "Serena_Williams").glob("*.jpg"))
DIM = 128
JPEG = cv2.imencode(".jpg", np.full((8, 8, 3), 128, np.uint8))[1].tobytes()


# --- Helpers -------------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def download(client, token: str | None = None, query: str = "") -> bytes:
    headers = bearer(token) if token else {}
    with client.get(f"/api/backup{query}", headers=headers) as response:
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.data


def send(client, data: bytes, token: str):
    return client.post("/api/restore", headers=bearer(token),
                       data={"database": (io.BytesIO(data), "facegate.db")},
                       content_type="multipart/form-data")


def edited(data: bytes, tmp_path: Path, *statements: tuple[str, list]) -> bytes:
    """The backup ``data`` after ``statements`` run on it with the sqlite3 module, as an
    attacker would edit it (no foreign keys, no checks beyond the schema's)."""
    path = tmp_path / f"edited-{uuid.uuid4().hex}.db"
    path.write_bytes(data)
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        for sql, params in statements:
            connection.execute(sql, params)
    return path.read_bytes()


def snapshot(database: Path, leave_out: tuple[str, ...] = ()) -> dict[str, list]:
    """Every row of every table of the live file, to tell that a refusal changed nothing
    (``leave_out``: tables the request's own bookkeeping writes, a token's last use)."""
    with contextlib.closing(sqlite3.connect(database)) as connection:
        tables = [row[0] for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            if row[0] not in leave_out]
        return {table: connection.execute(f'SELECT * FROM "{table}" ORDER BY rowid').fetchall()
                for table in tables}


def vector(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


def small_gallery(path: Path) -> None:
    """Two people with three templates (crops included), a schedule, and one event with its
    snapshot paths: a row of each kind a restore checks."""
    with Gallery(path) as gallery:
        ada = gallery.add_person("Ada")
        bob = gallery.add_person("Bob")
        gallery.update_person("Ada", schedule=[{"days": "mon-fri", "from": "07:00",
                                                "until": "19:00"}],
                              valid_from="2026-01-01T00:00:00Z")
        for number, person in enumerate((ada, ada, bob)):
            gallery.add_template(person.id, vector(number), "sface", {"sharpness": 50.0},
                                 JPEG, hashlib.sha256(bytes([number])).hexdigest(),
                                 source="cli")
        event_id = str(uuid.uuid4())
        at = datetime(2026, 3, 1, 12, tzinfo=UTC)
        gallery.db.execute(
            "INSERT INTO events (id, at, door, kind, face_path, frame_path, snapshot_bytes)"
            " VALUES (?, ?, 'front', 'unknown', ?, ?, 10)",
            [event_id, at.isoformat(), snapshot_path(event_id, at, "face"),
             snapshot_path(event_id, at, "frame")])
        gallery.db.conn.commit()


# --- 1. A restore must not take the door down ---------------------------------------------


def test_a_backup_with_a_four_byte_embedding_is_refused_naming_the_row(app, admin, tmp_path):
    database = app.config["DATABASE"]
    small_gallery(database)
    token = create_token(database, "ann", "attacker")
    data = download(admin)
    with Gallery(database) as gallery:
        bad_id = gallery.db.execute("SELECT id FROM templates ORDER BY rowid").fetchone()[0]
    before = snapshot(database, BOOKKEEPING)

    response = send(admin, edited(data, tmp_path, (
        "UPDATE templates SET embedding = X'00010203' WHERE id = ?", [bad_id])), token)

    assert response.status_code == 400
    error = response.json["error"]
    assert f"templates row '{bad_id}'" in error and "4 bytes" in error
    assert "nothing was restored" in error
    assert snapshot(database, BOOKKEEPING) == before
    assert not list(Path(database).parent.glob("*.before-restore-*"))
    with Gallery(database) as gallery:  # the door still reads every template
        assert len(gallery.embeddings("sface")[0]) == 3


BOOKKEEPING = ("api_tokens", "sessions", "audit_log")
NAN = np.full(DIM, np.nan, np.float32).tobytes()


@pytest.mark.parametrize(("sql", "params", "words"), [
    ("UPDATE templates SET embedding = X'00010203'", [], "4 bytes"),
    ("UPDATE templates SET embedding = zeroblob(256), dim = 64 WHERE rowid = 2", [],
     "same model"),
    ("UPDATE templates SET embedding = ? WHERE rowid = 1", [NAN], "NaN"),
    ("UPDATE templates SET embedding = zeroblob(512) WHERE rowid = 1", [], "all zeros"),
    ("UPDATE templates SET embedding = 'text' WHERE rowid = 1", [], "not a blob"),
    ("UPDATE templates SET model = ' ' WHERE rowid = 1", [], "empty model"),
    ("UPDATE templates SET crop_jpeg = X'89504E470D0A1A0A' WHERE rowid = 1", [], "crop_jpeg"),
    ("UPDATE templates SET quality = '[1' WHERE rowid = 1", [], "quality"),
    ("UPDATE templates SET created_at = 'last tuesday' WHERE rowid = 1", [], "created_at"),
    ("UPDATE templates SET person_id = 'nobody' WHERE rowid = 1", [], "refers to a row of"),
    ("UPDATE people SET name = '' WHERE name = 'Bob'", [], "empty name"),
    ("UPDATE people SET created_at = '2026-13-45' WHERE name = 'Bob'", [], "created_at"),
    ("UPDATE people SET valid_from = '2026-01-01T00:00:00' WHERE name = 'Ada'", [],
     "not in UTC"),
    ("UPDATE people SET valid_until = '2026-01-01T00:00:00+02:00' WHERE name = 'Ada'", [],
     "not in UTC"),
    ("UPDATE people SET schedule = 'mon-fri' WHERE name = 'Ada'", [], "schedule"),
    ("UPDATE people SET schedule = '{\"days\": \"mon\"}' WHERE name = 'Ada'", [], "schedule"),
    ("UPDATE people SET schedule = '[{\"days\": 1, \"from\": 2, \"until\": 3}]'"
     " WHERE name = 'Ada'", [], "schedule"),
    ("UPDATE events SET face_path = '/etc/passwd'", [], "absolute"),
    ("UPDATE events SET frame_path = '2026/03/../../../../etc/cron.d/x'", [], "'..'"),
    ("UPDATE events SET face_path = 'C:\\Windows\\x.jpg'", [], "backslash"),
    ("UPDATE gallery_meta SET value = 'arcface' WHERE key = 'model'", [], "gallery_meta"),
    ("UPDATE people SET external_id = CAST(X'FF80' AS TEXT) WHERE name = 'Bob'", [],
     "not UTF-8"),
    ("INSERT INTO audit_log (id, at, action) VALUES ('a', 'b', CAST(X'C3' AS TEXT))", [],
     "audit_log row 1 holds text that is not UTF-8"),
    ("INSERT INTO settings (key, value, updated_at) VALUES ('door.unlock_seconds', '{', 'x')",
     [], "settings row 'door.unlock_seconds'"),
    ("UPDATE people SET name = 'Bob' || char(8238) || 'evil' WHERE name = 'Bob'", [],
     "U+202E"),
    ("UPDATE people SET name = ? WHERE name = 'Bob'", ["B" * 101], "at most 100"),
    ("UPDATE people SET name = '  Bob  ' WHERE name = 'Bob'", [], "as the name rule writes"),
    ("UPDATE people SET external_id = 'E' || char(27) || '[2J' WHERE name = 'Bob'", [],
     "external_id that breaks the name rule"),
    ("UPDATE events SET person_name = 'Ada' || char(10) || 'x'", [],
     "person_name that breaks the name rule"),
])
def test_a_backup_with_a_row_the_door_cannot_read_is_refused(tmp_path, sql, params, words):
    live = tmp_path / "facegate.db"
    small_gallery(live)
    saved = tmp_path / "saved.db"
    backup_database(live, saved)
    bad = tmp_path / "bad.db"
    bad.write_bytes(edited(saved.read_bytes(), tmp_path, (sql, params)))
    before = snapshot(live)
    with pytest.raises(RestoreRefused, match="nothing was restored") as refused:
        restore_database(live, bad)
    assert words in str(refused.value)
    assert str(refused.value).count(". ") == 0  # one sentence
    assert snapshot(live) == before
    assert not list(tmp_path.glob("facegate.db.before-restore-*"))


def test_a_restored_name_must_pass_the_name_rule_and_the_refusal_names_its_row(app, admin,
                                                                                 tmp_path):
    database = app.config["DATABASE"]
    small_gallery(database)
    token = create_token(database, "ann", "attacker")
    data = download(admin)
    with Gallery(database) as gallery:
        bob = gallery.get_person("Bob").id
    before = snapshot(database, BOOKKEEPING)

    response = send(admin, edited(data, tmp_path, (
        "UPDATE people SET name = 'Bob' || char(8238) WHERE id = ?", [bob])), token)

    assert response.status_code == 400
    error = response.json["error"]
    assert f"people row '{bob}' has a name that breaks the name rule" in error
    assert "nothing was restored" in error
    assert snapshot(database, BOOKKEEPING) == before
    with Gallery(database) as gallery:
        assert [person.name for person in gallery.list_people()] == ["Ada", "Bob"]


def test_templates_of_another_length_than_their_models_card_are_refused(tmp_path):
    live = tmp_path / "facegate.db"
    Gallery(live).close()
    wrong = tmp_path / "wrong.db"
    with Gallery(wrong) as gallery:
        person = gallery.add_person("Ada")
        gallery.add_template(person.id, np.ones(3, np.float32), DEFAULT_EMBEDDER, {}, None,
                             "1" * 64)
    with pytest.raises(RestoreRefused, match="says its embeddings have 128"):
        restore_database(live, wrong)


def test_a_header_naming_a_later_sqlite_format_is_refused(tmp_path):
    live = tmp_path / "facegate.db"
    small_gallery(live)
    saved = tmp_path / "saved.db"
    backup_database(live, saved)
    data = bytearray(saved.read_bytes())
    data[18] = 3  # the write version: SQLite would open the file read-only
    saved.write_bytes(bytes(data))
    before = snapshot(live)
    with pytest.raises(RestoreRefused, match="file format"):
        restore_database(live, saved)
    assert snapshot(live) == before


def test_the_sound_backup_itself_restores(tmp_path):
    live = tmp_path / "facegate.db"
    small_gallery(live)
    saved = tmp_path / "saved.db"
    backup_database(live, saved)
    with Gallery(live) as gallery:
        gallery.remove_person("Bob")
    result = restore_database(live, saved)
    assert result["people"] == 2 and result["templates"] == 3 and result["events"] == 1


def test_a_gallery_edited_by_hand_still_lets_the_door_identify_everyone_else(
        tmp_path, pipeline, caplog):
    """Part (b): the root fix does not rely on the restore alone; a row broken in the live
    file (by hand, by a disk) costs only that row."""
    database = tmp_path / "facegate.db"
    with Gallery(database) as gallery:
        for name, photos in (("Colin Powell", COLIN[:2]), ("Serena Williams", SERENA[:2])):
            person = gallery.add_person(name)
            for photo in photos:
                face = pipeline.process(load(photo))[0]
                gallery.add_template(person.id, face.embedding, pipeline.model_name, {},
                                     None, hashlib.sha256(photo.read_bytes()).hexdigest())
        first = gallery.list_templates(gallery.find_person("Serena Williams").id)[0].id
        ghost = gallery.add_person("Ghost")
        second = gallery.add_template(ghost.id, vector(1), pipeline.model_name, {}, None,
                                      "0" * 64).id
    with contextlib.closing(sqlite3.connect(database)) as connection, connection:
        connection.execute("UPDATE templates SET embedding = X'00010203' WHERE id = ?", [first])
        connection.execute("UPDATE templates SET embedding = zeroblob(64), dim = 16"
                           " WHERE id = ?", [second])
        connection.execute("UPDATE people SET schedule = '[{\"days\": 1}]'"
                           " WHERE name = 'Serena Williams'")
        connection.execute("UPDATE people SET valid_from = '2026-01-01'"
                           " WHERE name = 'Colin Powell'")

    with Gallery(database) as gallery:
        identifier = Identifier(pipeline, gallery,
                                Decision.from_card(pipeline.embedder_card.threshold))
        colin = identifier.identify(load(COLIN[2]))
        serena_found = identifier.identify(load(SERENA[2]))
        assert [found.person_name for found in colin] == ["Colin Powell"]
        assert [found.person_name for found in serena_found] == ["Serena Williams"]
        now = datetime.now().astimezone()
        for found in (*colin, *serena_found):
            person = identifier.person(found.person_id)
            assert access_refusal(person, now) == "unreadable access rules"
    logged = caplog.text
    assert first in logged and second in logged and "cannot be read" in logged


# --- 3. A restore must not mint accounts ---------------------------------------------------


def test_an_account_smuggled_into_a_backup_does_not_come_back(app, admin, client, tmp_path):
    database = app.config["DATABASE"]
    token = create_token(database, "ann", "script")
    data = download(admin, token)  # what an API token gets: no accounts
    smuggled_token = "fg_" + "m" * 43
    mallory_id = str(uuid.uuid4())
    now = "2026-01-01T00:00:00.000Z"
    attack = edited(
        data, tmp_path,
        ("INSERT INTO users (id, name, password_hash, role, created_at, updated_at)"
         " VALUES (?, 'mallory', ?, 'admin', ?, ?)", [mallory_id, hash_password(PASSWORD), now,
                                                      now]),
        ("INSERT INTO api_tokens (id, user_id, name, token_hash, created_at)"
         " VALUES (?, ?, 'smuggled', ?, ?)", [str(uuid.uuid4()), mallory_id,
                                              token_hash(smuggled_token), now]),
        ("INSERT INTO setup_tokens (token_hash, created_at) VALUES (?, ?)",
         [token_hash("setup-me"), now]))

    response = send(admin, attack, token)

    assert response.status_code == 200, response.json
    assert verify_password(database, "mallory", PASSWORD) is None
    assert sign_in(client, "mallory", PASSWORD).status_code != 302
    assert client.get("/api/tokens").status_code == 401
    assert admin.get("/api/tokens", headers=bearer(smuggled_token)).status_code == 401
    with contextlib.closing(sqlite3.connect(database)) as connection:
        names = [row[0] for row in connection.execute("SELECT name FROM users")]
        setup = connection.execute("SELECT COUNT(*) FROM setup_tokens").fetchone()[0]
    assert names == ["ann"] and setup == 0
    # The door's own accounts go on working: the token and the browser's session.
    assert admin.get("/api/tokens", headers=bearer(token)).status_code == 200
    assert admin.get("/settings").status_code == 200


def test_a_backup_carries_no_password_or_token_hash_unless_a_signed_in_admin_asks(
        app, admin, tmp_path):
    database = app.config["DATABASE"]
    token = create_token(database, "ann", "script")
    with contextlib.closing(sqlite3.connect(database)) as connection:
        secrets_ = [row[0].encode() for row in connection.execute(
            "SELECT password_hash FROM users UNION ALL SELECT token_hash FROM api_tokens")]
    assert len(secrets_) == 2

    for plain in (download(admin, token), download(admin)):
        assert not any(secret in plain for secret in secrets_)  # not even in free pages
        path = tmp_path / "plain.db"
        path.write_bytes(plain)
        with contextlib.closing(sqlite3.connect(path)) as connection:
            for table in ("users", "api_tokens", "setup_tokens"):
                assert connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone() == (0,)

    refused = admin.get("/api/backup?accounts=1", headers=bearer(token))
    assert refused.status_code == 403 and "signed in" in refused.json["error"]
    full = download(admin, query="?accounts=1")
    assert all(secret in full for secret in secrets_)
    with contextlib.closing(sqlite3.connect(database)) as connection:
        details = [json.loads(row[0]) for row in connection.execute(
            "SELECT detail FROM audit_log WHERE action = 'backup' ORDER BY at, rowid")]
    assert [d["accounts"] for d in details] == [False, False, True]
    assert [d["via"] for d in details] == ["api", "page", "page"]


def test_a_restore_of_a_backup_with_accounts_still_keeps_the_current_ones(app, admin):
    database = app.config["DATABASE"]
    old_token = create_token(database, "ann", "old")
    full = download(admin, query="?accounts=1")
    with contextlib.closing(sqlite3.connect(database)) as connection, connection:
        connection.execute("UPDATE api_tokens SET revoked_at = '2026-01-01T00:00:00Z'")
    new_token = create_token(database, "ann", "new")

    assert send(admin, full, new_token).status_code == 200

    assert admin.get("/api/tokens", headers=bearer(old_token)).status_code == 401
    assert admin.get("/api/tokens", headers=bearer(new_token)).status_code == 200
    assert "restore" in audit_actions(database)


def test_a_restore_leaves_each_account_disabled_or_active_as_it_is_on_the_door(app, admin):
    database = app.config["DATABASE"]
    add_user(database, "vic", PASSWORD, role="viewer")
    add_user(database, "dan", PASSWORD, role="viewer")
    disable_user(database, "dan")
    full = download(admin, query="?accounts=1")  # the file: vic active, dan disabled
    disable_user(database, "vic")
    enable_user(database, "dan")
    token = create_token(database, "ann", "restore")

    assert send(admin, full, token).status_code == 200

    assert verify_password(database, "vic", PASSWORD) is None
    assert verify_password(database, "dan", PASSWORD) is not None


def test_a_backup_from_before_disabled_accounts_restores_and_keeps_them(tmp_path):
    # A door at schema 7 made this backup; restored on one at 8, with a disabled account.
    old = tmp_path / "old.db"
    with Gallery(old, migrations=MIGRATIONS[:7]) as gallery:
        gallery.add_person("Ada")
    live = tmp_path / "facegate.db"
    small_gallery(live)
    add_user(live, "ann", PASSWORD)
    add_user(live, "vic", PASSWORD, role="viewer")
    disable_user(live, "vic")

    result = restore_database(live, old)

    assert result["schema_version"] == 7 and result["people"] == 1
    assert [(user.name, user.is_disabled) for user in list_users(live)] == [
        ("ann", False), ("vic", True)]


def test_the_settings_page_offers_the_accounts_as_an_explicit_choice(admin):
    page = admin.get("/settings").get_data(as_text=True)
    assert 'id="backup-accounts" type="checkbox" name="accounts" value="1"' in page
    assert "never taken from the file" in page


# --- Property: whatever is uploaded -------------------------------------------------------

_BASE: dict[str, bytes] = {}


def _base_files() -> tuple[bytes, bytes]:
    """A live file and a backup of it, made once (hypothesis runs each example afresh)."""
    if not _BASE:
        with tempfile.TemporaryDirectory() as work:
            live = Path(work) / "facegate.db"
            small_gallery(live)
            add_user(live, "ann", PASSWORD, "admin")
            write_site_settings(live, {"door.unlock_seconds": "4"}, "ann")
            backup_database(live, Path(work) / "saved.db", accounts=True)
            with Gallery(live) as gallery:
                gallery.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            _BASE["live"] = live.read_bytes()
            _BASE["backup"] = (Path(work) / "saved.db").read_bytes()
    return _BASE["live"], _BASE["backup"]


def _attempt(upload: bytes) -> None:
    """Restore ``upload`` on a fresh live file: refused with nothing changed, or restored
    into a file the door reads without an error."""
    live_bytes, _ = _base_files()
    with tempfile.TemporaryDirectory() as work:
        live = Path(work) / "facegate.db"
        live.write_bytes(live_bytes)
        sent = Path(work) / "upload.db"
        sent.write_bytes(upload)
        before = snapshot(live)
        try:
            restore_database(live, sent)
        except RestoreRefused as refused:
            assert str(refused)
            assert snapshot(live) == before
            assert not list(Path(work).glob("facegate.db.before-restore-*"))
            return
        with Gallery(live) as gallery:
            for model in gallery.models():
                gallery.embeddings(model)
            now = datetime.now().astimezone()
            read_site_settings(live)
            for person in gallery.list_people():
                assert access_refusal(person, now) != "unreadable access rules"
                for template in gallery.list_templates(person.id):
                    assert template.embedding.size == template.dim
        after = snapshot(live)
        assert after["users"] == before["users"]


_PROPERTY = settings(max_examples=60, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])


@_PROPERTY
@given(st.binary(max_size=4096))
def test_random_bytes_are_refused(data):
    _attempt(data)


@_PROPERTY
@given(st.data())
def test_a_truncated_or_scribbled_backup_is_refused_or_sound(data):
    _, backup = _base_files()
    cut = data.draw(st.integers(0, len(backup)), label="cut")
    damaged = bytearray(backup[:cut] if data.draw(st.booleans(), label="truncate") else backup)
    for _ in range(data.draw(st.integers(0, 4), label="scribbles")):
        if not damaged:
            break
        at = data.draw(st.integers(0, len(damaged) - 1), label="at")
        damaged[at] = data.draw(st.integers(0, 255), label="byte")
    _attempt(bytes(damaged))


_COLUMNS = {
    "people": ["id", "name", "external_id", "active", "valid_from", "valid_until", "schedule",
               "created_at", "updated_at", "version"],
    "templates": ["id", "person_id", "model", "embedding", "dim", "quality", "crop_jpeg",
                  "source_sha256", "created_at", "updated_at", "version", "source"],
    "events": ["id", "face_path", "frame_path", "snapshot_bytes"],
    "gallery_meta": ["value"],
    "settings": ["key", "value"],
    "users": ["name", "role"],
}
_VALUES = st.one_of(
    st.none(), st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=True),
    st.text(max_size=40), st.binary(max_size=600),
    st.sampled_from(["", "..", "/etc/passwd", "2026-01-01T00:00:00Z", "2026-01-01",
                     '[{"days": "mon", "from": "07:00", "until": "08:00"}]', "{}", "[]",
                     "sface", "admin"]),
    st.builds(lambda seed: vector(seed).tobytes(), st.integers(0, 9)),
)


@_PROPERTY
@given(st.data())
def test_a_backup_with_random_row_values_is_refused_or_sound(data):
    _, backup = _base_files()
    statements = []
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        table = data.draw(st.sampled_from(sorted(_COLUMNS)), label="table")
        column = data.draw(st.sampled_from(_COLUMNS[table]), label="column")
        value = data.draw(_VALUES, label="value")
        statements.append((f'UPDATE "{table}" SET "{column}" = ? WHERE rowid = '
                           f'(SELECT MIN(rowid) FROM "{table}")', [value]))
    with tempfile.TemporaryDirectory() as work:
        try:
            upload = edited(backup, Path(work), *statements)
        except sqlite3.IntegrityError:  # the schema itself refused the edit
            return
    _attempt(upload)


# --- Scheduled backups: facegate backup --to DIR ------------------------------------------


def test_a_backup_made_by_the_cli_restores_and_old_ones_are_pruned(tmp_path, capsys):
    from device.backup import backups_in
    from device.cli import main

    data = tmp_path / "data"
    data.mkdir()
    live = data / "facegate.db"
    small_gallery(live)
    add_user(live, "ann", PASSWORD, "admin")
    folder = tmp_path / "backups"
    folder.mkdir()
    older = [folder / f"facegate-2026010{day}T030000Z.db" for day in (1, 2, 3)]
    for path in older:
        path.write_bytes(b"an old backup")
    unrelated = folder / "notes.db"
    unrelated.write_bytes(b"not ours")
    assert main(["backup", "--data-dir", str(data), "--to", str(folder), "--keep", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    (made,) = [Path(line.split()[1]) for line in lines if line.startswith("backup: ")]
    assert [line for line in lines if line.startswith("removed: ")] == [
        f"removed: {path}" for path in older[:2]]
    assert backups_in(folder) == [older[2], made] and unrelated.exists()
    assert not list(folder.glob(".*partial"))
    with contextlib.closing(sqlite3.connect(made)) as connection:
        assert connection.execute("SELECT count(*) FROM users").fetchone() == (0,)
    assert "backup" in audit_actions(live)
    with Gallery(live) as gallery:
        gallery.remove_person("Bob")
    result = restore_database(live, made)
    assert result["people"] == 2 and result["templates"] == 3 and result["events"] == 1


def test_the_cli_backup_refuses_a_missing_database_in_one_line(tmp_path, capsys):
    from device.cli import main

    assert main(["backup", "--data-dir", str(tmp_path / "none"), "--to",
                 str(tmp_path / "b")]) == 1
    assert "no database at" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
