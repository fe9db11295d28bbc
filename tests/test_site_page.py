"""The site server's admin page: the same pages as a door's, on the site's PostgreSQL, with
no camera or relay; enrolment by upload goes into the site's store (and from there to the
doors, tests/test_site.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from device.events import EventLog
from device.gallery.store import Gallery
from device.site.doors import add_door
from device.site.server import site_app
from tests.test_site import site_config
from tests.web_support import PASSWORD, post, signed_in, upload

DATA = Path(__file__).parent / "data"
COLIN = DATA / "people" / "Colin_Powell"


@pytest.fixture
def app(postgres_dsn, tmp_path):
    site = site_app(site_config(postgres_dsn, tmp_path / "site",
                                **{"liveness.enabled": False}))
    site.config["TESTING"] = True
    return site


@pytest.fixture
def admin(app):
    return signed_in(app, "ann", "admin")


def test_every_page_answers_on_the_sites_store(app, admin):
    home = admin.get("/")
    assert home.status_code == 302 and home.location.endswith("/site/doors")  # no door here
    for url in ("/people", "/people/new", "/log", "/settings", "/audit", "/account",
                "/accounts", "/site/doors"):
        response = admin.get(url)
        assert response.status_code == 200, url


def test_an_admin_enrols_by_upload_into_the_sites_store(app, admin, postgres_dsn):
    created = post(admin, "/people/new", {"name": "Colin Powell"}, page="/people/new")
    assert created.status_code == 302
    with Gallery(postgres_dsn) as gallery:
        person = gallery.get_person("Colin Powell")
    photos = [(path.read_bytes(), path.name) for path in sorted(COLIN.glob("*.jpg"))[:2]]
    response = upload(admin, person.id, photos)
    assert response.status_code in (200, 302)
    with Gallery(postgres_dsn) as gallery:
        templates = gallery.list_templates(person.id)
    assert len(templates) == 2 and all(t.crop_jpeg for t in templates)  # crops at the site


def test_the_doors_page_lists_each_doors_contact_replica_and_pending_events(app, admin,
                                                                            postgres_dsn):
    add_door(postgres_dsn, "front")
    page = admin.get("/site/doors").get_data(as_text=True)
    assert "front" in page and "never" in page


def test_the_sites_log_shows_events_from_every_door(app, admin, postgres_dsn, tmp_path):
    for door in ("front", "back"):
        with EventLog(postgres_dsn, tmp_path / "site" / "snapshots", door_id=door) as events:
            events.record("unknown", reason="stranger")
    page = admin.get("/log").get_data(as_text=True)
    assert "front" in page and "back" in page


def test_a_backup_of_the_site_is_pg_dumps_job(app, admin):
    response = admin.get("/api/backup")
    assert response.status_code == 400 and "pg_dump" in response.get_json()["error"]
    assert "pg_dump" in admin.get("/settings").get_data(as_text=True)


def test_signing_in_works_against_the_sites_accounts(app, postgres_dsn):
    from device.web.users import add_user
    from tests.web_support import sign_in

    add_user(postgres_dsn, "bob", PASSWORD)
    client = app.test_client()
    assert sign_in(client, "bob", PASSWORD).status_code == 302
    assert client.get("/people").status_code == 200
