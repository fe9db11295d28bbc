"""Sessions the door records: signing out, a new password or removing the account ends a
session everywhere, so a copy of its cookie is refused like the original."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient

from device.gallery.store import Gallery
from device.web.auth import add_user, disable_user, remove_user, set_password
from tests.web_support import PASSWORD, csrf_from, post, relay_on, sign_in

COOKIE = "facegate_session"


def copy_of(client: FlaskClient, app: Flask) -> FlaskClient:
    """Another browser holding a copy of ``client``'s session cookie (stolen, or an old tab)."""
    return browser_with(app, client.get_cookie(COOKIE).value)


def browser_with(app: Flask, cookie: str) -> FlaskClient:
    browser = app.test_client()
    browser.set_cookie(COOKIE, cookie)
    return browser


def session_rows(app: Flask) -> list[dict]:
    with Gallery(app.config["DATABASE"]) as gallery:
        return list(gallery.db.query("SELECT * FROM sessions ORDER BY created_at"))


def remove_ann(app: Flask) -> None:
    """Remove "ann", once another admin exists (the door keeps an active admin)."""
    add_user(app.config["DATABASE"], "bea", PASSWORD, role="admin")
    remove_user(app.config["DATABASE"], "ann")


ENDINGS = {
    "sign_out": lambda app, admin: post(admin, "/logout"),
    "password": lambda app, admin: set_password(app.config["DATABASE"], "ann", "a new password"),
    "disabled": lambda app, admin: (add_user(app.config["DATABASE"], "bea", PASSWORD),
                                    disable_user(app.config["DATABASE"], "ann")),
    "removal": lambda app, admin: remove_ann(app),
}


def test_a_copied_cookie_works_while_the_session_is_open(app, admin, pin_factory):
    copy = copy_of(admin, app)
    assert copy.get("/people").status_code == 200
    response = copy.post("/api/door/unlock", headers={"X-CSRF-Token": csrf_from(copy, "/")})
    assert response.status_code == 200 and relay_on(pin_factory)


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_a_copied_cookie_is_refused_once_the_session_has_ended(app, admin, pin_factory,
                                                               ending):
    copy = copy_of(admin, app)
    token = csrf_from(copy, "/")  # taken while the session was open
    stolen = copy.get_cookie(COOKIE).value
    ENDINGS[ending](app, admin)
    response = browser_with(app, stolen).get("/people")
    assert response.status_code == 302 and response.location.startswith("/login")
    assert browser_with(app, stolen).get("/api/door").status_code == 401
    unlock = browser_with(app, stolen).post("/api/door/unlock", headers={"X-CSRF-Token": token})
    assert unlock.status_code in (400, 401)  # the CSRF token died with the session, too
    assert not relay_on(pin_factory)


def test_signing_out_revokes_the_sessions_record(app, admin):
    (row,) = session_rows(app)
    assert row["revoked_at"] is None
    post(admin, "/logout")
    (row,) = session_rows(app)
    assert row["revoked_at"] is not None


def test_a_new_password_revokes_every_session_of_the_account_only(app, admin, viewer):
    second = app.test_client()
    assert sign_in(second, "ann", PASSWORD).status_code == 302
    set_password(app.config["DATABASE"], "ann", "a new password")
    assert admin.get("/").status_code == 302 and second.get("/").status_code == 302
    assert viewer.get("/").status_code == 200


def test_removing_the_account_removes_its_sessions(app, admin):
    remove_ann(app)
    assert session_rows(app) == []
    assert admin.get("/").status_code == 302


def test_the_door_keeps_only_a_hash_of_the_session_id(app, admin):
    with admin.session_transaction() as session:
        session_id = session["sid"]
    (row,) = session_rows(app)
    assert row["id_hash"] == hashlib.sha256(session_id.encode()).hexdigest()
    with Gallery(app.config["DATABASE"]) as gallery:
        dump = "\n".join(gallery.db.conn.iterdump())
    assert session_id not in dump


def test_a_session_idle_on_the_door_is_refused_whatever_its_cookie_says(app, admin):
    # A copy of the cookie carries its own "last seen"; the door's record decides.
    old = (datetime.now(UTC) - timedelta(minutes=45)).isoformat().replace("+00:00", "Z")
    with Gallery(app.config["DATABASE"]) as gallery:
        gallery.db.execute("UPDATE sessions SET last_seen_at = ?", [old])
        gallery.db.conn.commit()
    assert admin.get("/people").status_code == 302
    (row,) = session_rows(app)
    assert row["revoked_at"] is not None


def test_the_live_view_polling_is_not_activity_on_the_door_either(app, admin):
    old = (datetime.now(UTC) - timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    with Gallery(app.config["DATABASE"]) as gallery:
        gallery.db.execute("UPDATE sessions SET last_seen_at = ?", [old])
        gallery.db.conn.commit()
    assert admin.get("/live.jpg").status_code == 200
    assert session_rows(app)[0]["last_seen_at"] == old
    assert admin.get("/").status_code == 200
    assert session_rows(app)[0]["last_seen_at"] > old


def test_a_cookie_without_a_session_record_is_signed_out(app, admin):
    with admin.session_transaction() as session:
        session.pop("sid")
    assert admin.get("/people").status_code == 302


def test_signing_out_still_signs_this_browser_out_when_the_door_cannot_record_it(app, admin):
    with Gallery(app.config["DATABASE"]) as gallery:
        gallery.db.execute("CREATE TRIGGER sessions_unwritable BEFORE UPDATE ON sessions"
                           " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
        gallery.db.conn.commit()
    response = post(admin, "/logout")
    assert response.status_code == 302 and response.location == "/login"
    assert admin.get("/").status_code == 302
