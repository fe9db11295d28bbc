"""The gallery file: people, templates, the change log, migrations and sharing between processes.

Every test runs on a real SQLite file in a temporary directory (sqlite-utils' ``fresh_db``
habit): WAL mode and foreign keys only exist on a file, not in a mock.
"""

import hashlib
import sqlite3
import threading

import numpy as np
import pytest

from device.errors import DuplicateTemplate, FacegateError, ModelMismatch, PersonNotFound
from device.gallery import Gallery, Person
from device.gallery.migrations import MIGRATIONS, Migration, migrate, schema_version

DIM = 128
NEXT = len(MIGRATIONS) + 1  # the number a migration added by a test gets
CROP = b"\xff\xd8\xff\xe0 not a real JPEG body, only its magic"


@pytest.fixture
def gallery_path(tmp_path):
    return tmp_path / "gallery.db"


@pytest.fixture(params=["sqlite", "postgresql"])
def gallery(request, gallery_path):
    """A new gallery on each engine: a door's SQLite file, and a site's PostgreSQL database
    (the same interface; tests that are about the file itself take ``gallery_path``)."""
    location = (gallery_path if request.param == "sqlite"
                else request.getfixturevalue("postgres_dsn"))
    with Gallery(location) as fresh:
        yield fresh


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


def unit(rng, dim=DIM):
    vector = rng.standard_normal(dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


def sha(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def enrol(gallery, person, rng, image, model="sface", crop=CROP):
    return gallery.add_template(person.id, unit(rng), model, {"sharpness": 50.0}, crop, sha(image))


# --- Opening and migrations ----------------------------------------------------------------


def test_a_new_gallery_is_at_the_latest_schema_and_empty(gallery):
    assert schema_version(gallery.db) == len(MIGRATIONS)
    assert {"people", "templates", "changes", "events", "users", "outbox"} <= set(
        gallery.db.table_names())
    assert gallery.counts() == {"people": 0, "templates": {}}
    assert gallery.change_seq() == 0


def test_a_new_gallery_file_is_in_wal_mode_with_foreign_keys(gallery_path):
    with Gallery(gallery_path) as gallery:
        assert gallery.db.journal_mode == "wal"
        assert gallery.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_reopening_an_existing_gallery_keeps_its_data_and_applies_only_new_migrations(
    gallery_path, rng
):
    with Gallery(gallery_path) as first:
        alice = first.add_person("Alice")
        template = enrol(first, alice, rng, "alice-1.jpg")
    applied_at = (
        sqlite3.connect(gallery_path)
        .execute("SELECT applied_at FROM _migrations WHERE version = 1")
        .fetchone()
    )

    def add_notes(db):
        db.execute("ALTER TABLE people ADD COLUMN notes TEXT")

    with Gallery(gallery_path) as same_code:
        assert migrate(same_code.db, MIGRATIONS) == []
    # Migration 1 has no IF NOT EXISTS: were it applied again, opening would fail.
    notes = Migration(NEXT, "notes", add_notes)
    with Gallery(gallery_path, migrations=[*MIGRATIONS, notes]) as newer:
        assert schema_version(newer.db) == NEXT
        assert newer.get_person("Alice") == alice
        assert np.array_equal(newer.get_template(template.id).embedding, template.embedding)
        assert "notes" in newer.db["people"].columns_dict
        assert (
            newer.db.execute("SELECT applied_at FROM _migrations WHERE version = 1").fetchone()
            == applied_at
        )


def test_processes_opening_a_new_file_at_once_apply_each_migration_once(gallery_path):
    # Threads stand in for the daemon, the CLI and the web page starting together; each has
    # its own connection, as separate processes would.
    errors = []

    def open_and_close():
        try:
            Gallery(gallery_path).close()
        except Exception as error:  # reported below, in the test's own thread
            errors.append(error)

    threads = [threading.Thread(target=open_and_close) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with Gallery(gallery_path) as gallery:
        versions = gallery.db.execute("SELECT version FROM _migrations").fetchall()
        assert versions == [(version,) for version in range(1, NEXT)]


def test_a_failing_migration_leaves_the_database_as_it_was(gallery_path, rng):
    with Gallery(gallery_path) as first:
        enrol(first, first.add_person("Alice"), rng, "alice-1.jpg")

    def half_done_then_broken(db):
        db.execute("CREATE TABLE doors (id TEXT PRIMARY KEY)")
        db.execute("UPDATE people SET name = 'Mallory'")
        raise RuntimeError("migration 2 is broken")

    broken = [*MIGRATIONS, Migration(NEXT, "broken", half_done_then_broken)]
    with pytest.raises(RuntimeError, match="migration 2 is broken"):
        Gallery(gallery_path, migrations=broken)

    with Gallery(gallery_path) as after:
        assert schema_version(after.db) == len(MIGRATIONS)
        assert "doors" not in after.db.table_names()
        assert [person.name for person in after.list_people()] == ["Alice"]


def test_a_failing_migration_on_an_empty_file_keeps_the_migrations_before_it(gallery_path):
    def broken(db):
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        Gallery(gallery_path, migrations=[*MIGRATIONS, Migration(NEXT, "broken", broken)])
    with Gallery(gallery_path) as after:
        assert schema_version(after.db) == len(MIGRATIONS)


def test_a_gallery_written_by_a_newer_facegate_is_refused(gallery_path):
    newer = [*MIGRATIONS, Migration(NEXT, "from the future", lambda db: None)]
    Gallery(gallery_path, migrations=newer).close()
    with pytest.raises(FacegateError, match="newer facegate"):
        Gallery(gallery_path)


def test_migrations_must_be_numbered_from_one_without_gaps(gallery_path):
    with pytest.raises(ValueError, match="numbered"):
        Gallery(gallery_path, migrations=[Migration(2, "two", lambda db: None)])


# --- People ---------------------------------------------------------------------------------


def test_a_person_is_found_by_name_and_by_id(gallery):
    alice = gallery.add_person("Alice", external_id="HR-17")
    assert gallery.get_person("Alice") == alice
    assert gallery.get_person(alice.id) == alice
    assert gallery.find_person("Alice") == alice
    assert alice.active and alice.version == 1 and alice.external_id == "HR-17"
    assert alice.created_at == alice.updated_at and alice.created_at.endswith("Z")


def test_an_unknown_person_raises_person_not_found_naming_the_key(gallery):
    assert gallery.find_person("Nobody") is None
    with pytest.raises(PersonNotFound, match="'Nobody'"):
        gallery.get_person("Nobody")


def test_two_people_cannot_share_a_name(gallery):
    gallery.add_person("Alice")
    with pytest.raises(FacegateError, match="'Alice' is already"):
        gallery.add_person("  Alice ")


def test_people_are_listed_by_name_with_their_template_counts(gallery, rng):
    carol = gallery.add_person("Carol")
    alice = gallery.add_person("alice")
    gallery.add_person("Bob")
    for image in ("a1", "a2"):
        enrol(gallery, alice, rng, image)
    enrol(gallery, carol, rng, "c1", model="other")
    listed = gallery.list_people()
    assert [(p.name, p.template_count) for p in listed] == [("alice", 2), ("Bob", 0), ("Carol", 1)]
    assert isinstance(listed[0], Person) and listed[0].id == alice.id


def test_updating_a_person_bumps_version_and_updated_at(gallery):
    alice = gallery.add_person("Alice")
    updated = gallery.update_person(
        "Alice",
        name="Alice Smith",
        active=False,
        valid_until="2030-01-01T00:00:00+01:00",
        schedule={"mon": ["08:00", "18:00"]},
    )
    assert updated.id == alice.id and updated.name == "Alice Smith" and not updated.active
    assert updated.version == 2 and updated.updated_at >= alice.updated_at
    assert updated.created_at == alice.created_at
    assert updated.valid_until == "2029-12-31T23:00:00.000Z"
    assert updated.schedule == '{"mon": ["08:00", "18:00"]}'
    assert gallery.update_person(alice.id, external_id="X").version == 3


def test_update_person_refuses_unknown_fields_naive_times_and_taken_names(gallery):
    gallery.add_person("Alice")
    gallery.add_person("Bob")
    with pytest.raises(TypeError, match="version"):
        gallery.update_person("Alice", version=7)
    with pytest.raises(ValueError, match="time zone"):
        gallery.update_person("Alice", valid_from="2030-01-01T08:00:00")
    with pytest.raises(FacegateError, match="'Bob' is already"):
        gallery.update_person("Alice", name="Bob")
    assert gallery.get_person("Alice").version == 1


def test_removing_a_person_removes_their_templates_and_no_one_elses(gallery, rng):
    alice, bob = gallery.add_person("Alice"), gallery.add_person("Bob")
    for image in ("a1", "a2", "a3"):
        enrol(gallery, alice, rng, image)
    kept = enrol(gallery, bob, rng, "b1")
    assert gallery.remove_person("Alice") == 3
    assert gallery.find_person("Alice") is None
    person_ids, template_ids, _ = gallery.embeddings("sface")
    assert person_ids == [bob.id] and template_ids == [kept.id]
    assert gallery.counts() == {"people": 1, "templates": {"sface": 1}}


# --- Templates ------------------------------------------------------------------------------


def test_embeddings_round_trip_exactly_grouped_by_person(gallery, rng):
    alice, bob = gallery.add_person("Alice"), gallery.add_person("Bob")
    stored = {}
    for person, image in ((alice, "a1"), (bob, "b1"), (alice, "a2"), (bob, "b2")):
        stored[enrol(gallery, person, rng, image).id] = person.id
    float64 = rng.standard_normal(DIM)
    rounded = gallery.add_template(bob.id, float64, "sface", {}, None, sha("b3"))
    stored[rounded.id] = bob.id

    person_ids, template_ids, matrix = gallery.embeddings("sface")
    assert matrix.dtype == np.float32 and matrix.shape == (5, DIM)
    assert [stored[t] for t in template_ids] == person_ids
    assert person_ids == sorted(person_ids)  # grouped: each person's rows are contiguous
    for row, template_id in enumerate(template_ids):
        assert np.array_equal(matrix[row], gallery.get_template(template_id).embedding)
    assert np.array_equal(matrix[template_ids.index(rounded.id)], float64.astype(np.float32))


def test_embeddings_of_a_model_without_templates_are_empty(gallery):
    person_ids, template_ids, matrix = gallery.embeddings("sface")
    assert person_ids == [] and template_ids == [] and matrix.shape == (0, 0)


def test_a_template_keeps_its_crop_quality_and_source(gallery, rng):
    alice = gallery.add_person("Alice")
    quality = {"sharpness": np.float32(61.5), "frontal": np.bool_(True), "note": "ok"}
    template = gallery.add_template(alice.id, unit(rng), "sface", quality, CROP, sha("a1"))
    assert template.quality == {"sharpness": 61.5, "frontal": True, "note": "ok"}
    assert template.crop_jpeg == CROP and template.source_sha256 == sha("a1")
    assert template.dim == DIM and template.version == 1 and template.person_id == alice.id
    assert not template.embedding.flags.writeable


def test_the_same_image_is_refused_naming_the_person_who_has_it(gallery, rng):
    alice, bob = gallery.add_person("Alice"), gallery.add_person("Bob")
    enrol(gallery, alice, rng, "shared.jpg")
    with pytest.raises(DuplicateTemplate, match="already enrolled for Alice"):
        enrol(gallery, bob, rng, "shared.jpg")
    assert gallery.has_source("sface", sha("shared.jpg")) == alice
    assert gallery.has_source("sface", sha("other.jpg")) is None
    # Under another model the same image is a new template (how a gallery is re-embedded).
    enrol(gallery, alice, rng, "shared.jpg", model="other")
    assert gallery.counts()["templates"] == {"other": 1, "sface": 1}


@pytest.mark.parametrize(
    "embedding, message",
    [
        (np.ones((2, DIM), np.float32), "1-D"),
        (np.ones(DIM, np.int64), "1-D float"),
        (np.full(DIM, np.nan, np.float32), "NaN"),
        (np.zeros(DIM, np.float32), "all zeros"),
    ],
)
def test_a_bad_embedding_is_refused(gallery, embedding, message):
    alice = gallery.add_person("Alice")
    with pytest.raises(ValueError, match=message):
        gallery.add_template(alice.id, embedding, "sface", {}, None, sha("a1"))
    assert gallery.counts()["templates"] == {}


def test_every_template_of_a_model_has_the_same_length(gallery, rng):
    alice = gallery.add_person("Alice")
    enrol(gallery, alice, rng, "a1")
    with pytest.raises(ModelMismatch, match="128"):
        gallery.add_template(alice.id, unit(rng, 64), "sface", {}, None, sha("a2"))


def test_a_template_needs_an_existing_person_a_sha256_and_a_jpeg_crop(gallery, rng):
    alice = gallery.add_person("Alice")
    with pytest.raises(PersonNotFound):
        gallery.add_template("no-such-id", unit(rng), "sface", {}, None, sha("a1"))
    with pytest.raises(ValueError, match="hex"):
        gallery.add_template(alice.id, unit(rng), "sface", {}, None, "photo.jpg")
    with pytest.raises(ValueError, match="JPEG"):
        gallery.add_template(alice.id, unit(rng), "sface", {}, b"\x89PNG", sha("a1"))


def test_templates_with_crops_can_be_re_embedded_in_place(gallery, rng):
    alice = gallery.add_person("Alice")
    with_crop = enrol(gallery, alice, rng, "a1")
    enrol(gallery, alice, rng, "a2", crop=None)
    assert [t.id for t in gallery.templates_with_crops()] == [with_crop.id]
    assert list(gallery.templates_with_crops("other")) == []

    for template in gallery.templates_with_crops("sface"):
        new = unit(rng, 64)
        replaced = gallery.replace_embedding(template.id, new, "sface-v2")
    assert replaced.model == "sface-v2" and replaced.version == 2
    assert np.array_equal(replaced.embedding, new)
    assert gallery.counts()["templates"] == {"sface": 1, "sface-v2": 1}


# --- Change log and sharing -----------------------------------------------------------------


def test_change_seq_grows_on_every_insert_update_and_delete(gallery, rng):
    seqs = [gallery.change_seq()]
    alice = gallery.add_person("Alice")
    seqs.append(gallery.change_seq())
    template = enrol(gallery, alice, rng, "a1")
    seqs.append(gallery.change_seq())
    gallery.update_person("Alice", active=False)
    seqs.append(gallery.change_seq())
    gallery.replace_embedding(template.id, unit(rng), "sface")
    seqs.append(gallery.change_seq())
    gallery.remove_person("Alice")
    seqs.append(gallery.change_seq())
    assert seqs == sorted(set(seqs)) and seqs[0] == 0

    log = [
        (row["entity"], row["op"], row["version"])
        for row in gallery.db.query("SELECT * FROM changes ORDER BY seq")
    ]
    assert log == [
        ("person", "insert", 1),
        ("template", "insert", 1),
        ("person", "update", 2),
        ("template", "update", 2),
        ("template", "delete", 2),
        ("person", "delete", 2),
    ]


def test_a_refused_write_changes_nothing(gallery, rng):
    alice = gallery.add_person("Alice")
    enrol(gallery, alice, rng, "a1")
    before = gallery.change_seq()
    with pytest.raises(DuplicateTemplate):
        enrol(gallery, alice, rng, "a1")
    with pytest.raises(PersonNotFound):
        gallery.remove_person("Nobody")
    assert gallery.change_seq() == before
    assert not gallery.db.conn.in_transaction


def test_two_galleries_on_one_file_see_each_others_writes(gallery_path, rng):
    with Gallery(gallery_path) as daemon, Gallery(gallery_path) as cli:
        seen = daemon.change_seq()
        alice = cli.add_person("Alice")
        assert daemon.get_person("Alice") == alice
        template = enrol(daemon, alice, rng, "a1")
        assert cli.embeddings("sface")[1] == [template.id]
        assert daemon.change_seq() == cli.change_seq() > seen
        assert cli.remove_person(alice.id) == 1
        assert daemon.find_person("Alice") is None


def test_only_a_missing_file_becomes_a_new_gallery_an_empty_one_is_refused(tmp_path):
    from device.errors import GalleryUnreadable

    empty = tmp_path / "facegate.db"
    empty.touch()
    with pytest.raises(GalleryUnreadable, match=r"facegate\.db cannot be used .*0 bytes.*backup"):
        Gallery(empty)
    assert empty.stat().st_size == 0
    Gallery(tmp_path / "new.db").close()
    assert (tmp_path / "new.db").stat().st_size > 0
