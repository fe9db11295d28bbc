"""Accounts: changing one's own password, and admins adding, disabling, enabling, resetting
and removing others, through the users service (on a real SQLite file), the page (Flask's
test client) and the CLI (a subprocess). The rules live in the service, so every front
refuses the same things in the same words: the last active admin stays, nobody disables
themselves, a changed password or a disabled account ends every session.
"""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient

from device.errors import AccountDisabled, AccountProtected, WeakPassword, WrongPassword
from device.gallery.migrations import MIGRATIONS
from device.gallery.store import Gallery
from device.web.sessions import session_owner, start_session
from device.web.tokens import authenticate, create_token
from device.web.users import (
    add_user,
    change_own_password,
    check_sign_in,
    disable_user,
    enable_user,
    get_user,
    list_users,
    remove_user,
    set_password,
    set_role,
    verify_password,
)
from tests.web_support import PASSWORD, audit_actions, post, sign_in

HOUR = timedelta(hours=1)
NEW = "a brand new password"
COOKIE = "facegate_session"


def copy_of(client: FlaskClient, app: Flask) -> FlaskClient:
    """Another browser holding a copy of ``client``'s session cookie."""
    browser = app.test_client()
    browser.set_cookie(COOKIE, client.get_cookie(COOKIE).value)
    return browser


def user_id(app: Flask, name: str) -> str:
    return next(user.id for user in list_users(app.config["DATABASE"]) if user.name == name)


def flashes(response) -> list[str]:
    return re.findall(r'<p class="flash [a-z]+"[^>]*>(.*?)</p>', response.get_data(as_text=True),
                      re.S)


# --- The service, on a real file and a real PostgreSQL ----------------------------------------


def test_disabling_an_account_revokes_its_sessions_and_refuses_its_sign_in_and_tokens(store):
    add_user(store, "ann", PASSWORD)
    vic = add_user(store, "vic", PASSWORD, role="viewer")
    session = start_session(store, vic.id, HOUR)
    token = create_token(store, "vic", "script")

    disabled = disable_user(store, "vic")

    assert disabled.is_disabled and disabled.version == vic.version + 1
    assert session_owner(store, session, HOUR) is None
    assert authenticate(store, token) is None
    assert verify_password(store, "vic", PASSWORD) is None
    with pytest.raises(AccountDisabled, match="disabled"):
        check_sign_in(store, "vic", PASSWORD)
    assert check_sign_in(store, "vic", "a wrong guess") is None  # a guesser learns nothing
    # Enabled again: the same password and tokens work; the old session stays ended.
    enabled = enable_user(store, "vic")
    assert not enabled.is_disabled and enabled.version == vic.version + 2
    assert check_sign_in(store, "vic", PASSWORD).id == vic.id
    assert authenticate(store, token).user.name == "vic"
    assert session_owner(store, session, HOUR) is None


def test_the_last_active_admin_cannot_be_disabled_removed_or_made_a_viewer(store):
    add_user(store, "ann", PASSWORD)
    for change in (lambda: disable_user(store, "ann"), lambda: remove_user(store, "ann"),
                   lambda: set_role(store, "ann", "viewer")):
        with pytest.raises(AccountProtected, match="ann is its last one"):
            change()
    bea = add_user(store, "bea", PASSWORD)
    disable_user(store, "bea")  # a disabled admin does not count
    with pytest.raises(AccountProtected):
        disable_user(store, "ann")
    enable_user(store, "bea")
    assert set_role(store, "ann", "viewer").role == "viewer"
    with pytest.raises(AccountProtected, match="bea is its last one"):
        remove_user(store, "bea")
    assert get_user(store, bea.id).is_admin and not get_user(store, bea.id).is_disabled


def test_nobody_disables_or_removes_their_own_account(store):
    ann = add_user(store, "ann", PASSWORD)
    add_user(store, "bea", PASSWORD)
    with pytest.raises(AccountProtected, match="your own account"):
        disable_user(store, "ann", acting=ann)
    with pytest.raises(AccountProtected, match="your own account"):
        remove_user(store, "ann", acting=ann)
    assert not get_user(store, ann.id).is_disabled


def test_changing_ones_own_password_needs_the_current_one_and_ends_every_session(store):
    ann = add_user(store, "ann", PASSWORD)
    sessions = [start_session(store, ann.id, HOUR) for _ in range(2)]
    with pytest.raises(WrongPassword, match="current password is wrong"):
        change_own_password(store, ann.id, "not my password", NEW)
    with pytest.raises(WeakPassword, match="the same as the current one"):
        change_own_password(store, ann.id, PASSWORD, PASSWORD)
    with pytest.raises(WeakPassword, match="at least 8"):
        change_own_password(store, ann.id, PASSWORD, "short")
    assert get_user(store, ann.id).version == ann.version  # nothing changed yet
    assert all(session_owner(store, s, HOUR) == ann.id for s in sessions)

    changed = change_own_password(store, ann.id, PASSWORD, NEW)

    assert changed.version == ann.version + 1
    assert verify_password(store, "ann", NEW) is not None
    assert verify_password(store, "ann", PASSWORD) is None
    assert all(session_owner(store, s, HOUR) is None for s in sessions)


def test_a_sign_in_is_recorded_without_changing_the_accounts_version(store):
    ann = add_user(store, "ann", PASSWORD)
    assert ann.last_sign_in_at is None
    start_session(store, ann.id, HOUR)
    after = get_user(store, ann.id)
    assert after.last_sign_in_at is not None and after.version == ann.version


def test_migration_8_keeps_the_accounts_of_an_older_file_active(tmp_path):
    path = tmp_path / "old.db"
    with Gallery(path, migrations=MIGRATIONS[:7]) as old:
        old.db.execute(
            "INSERT INTO users (id, name, password_hash, role, created_at, updated_at)"
            " VALUES ('u1', 'ann', 'x', 'admin', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')")
    (ann,) = list_users(path)  # migrated to 8 on opening
    assert ann.name == "ann" and not ann.is_disabled and ann.last_sign_in_at is None


# --- Your own account, on the page ------------------------------------------------------------


def change_password(client: FlaskClient, current: str, new: str, again: str | None = None):
    return post(client, "/account/password",
                {"current_password": current, "new_password": new,
                 "new_password2": new if again is None else again}, page="/account")


def test_a_new_password_keeps_this_browser_signed_in_and_refuses_a_copied_cookie(app, admin):
    copy = copy_of(admin, app)
    assert copy.get("/people").status_code == 200

    response = change_password(admin, PASSWORD, NEW)

    assert response.status_code == 302 and response.location == "/account"
    assert "Your password is changed" in " ".join(flashes(admin.get("/account")))
    assert admin.get("/people").status_code == 200  # signed in afresh
    refused = copy.get("/people")
    assert refused.status_code == 302 and refused.location.startswith("/login")
    assert sign_in(app.test_client(), "ann", PASSWORD).status_code == 401
    assert sign_in(app.test_client(), "ann", NEW).status_code == 302
    assert "password_change" in audit_actions(app.config["DATABASE"])


@pytest.mark.parametrize(("current", "new", "again", "says"), [
    ("not my password", NEW, None, "The current password is wrong."),
    (PASSWORD, NEW, "another one entirely", "The two new passwords differ."),
    (PASSWORD, "short", None, "A password needs at least 8 characters."),
])
def test_a_refused_password_change_says_why_and_changes_nothing(app, admin, current, new,
                                                                again, says):
    response = change_password(admin, current, new, again)
    assert response.status_code == 400
    assert says in response.get_data(as_text=True)
    assert verify_password(app.config["DATABASE"], "ann", PASSWORD) is not None
    assert admin.get("/people").status_code == 200


def test_wrong_current_passwords_are_throttled_like_failed_sign_ins(make_app):
    app = make_app(LOGIN_RATE_LIMIT=3)
    add_user(app.config["DATABASE"], "ann", PASSWORD)
    client = app.test_client()
    assert sign_in(client, "ann", PASSWORD).status_code == 302
    for _ in range(3):
        assert change_password(client, "a guess", NEW).status_code == 400
    assert change_password(client, PASSWORD, NEW).status_code == 429
    assert verify_password(app.config["DATABASE"], "ann", PASSWORD) is not None


def test_a_viewer_has_an_account_page_and_may_change_their_password(app, viewer):
    page = viewer.get("/account").get_data(as_text=True)
    assert 'id="password-form"' in page and 'id="nav-account"' in page
    assert 'id="nav-accounts"' not in page
    assert change_password(viewer, PASSWORD, NEW).status_code == 302
    assert verify_password(app.config["DATABASE"], "vic", NEW) is not None


# --- Everyone's accounts, on the page (admins) -------------------------------------------------


@pytest.mark.parametrize("url", ["/accounts", "/accounts/{vic}"])
def test_a_viewer_may_not_open_the_accounts_pages(app, viewer, url):
    assert viewer.get(url.format(vic=user_id(app, "vic"))).status_code == 403


@pytest.mark.parametrize("action", ["disable", "password", "role", "remove"])
def test_a_viewer_may_not_change_an_account(app, admin, viewer, action):
    ann = user_id(app, "ann")
    response = post(viewer, f"/accounts/{ann}/{action}",
                    {"password": NEW, "password2": NEW, "role": "viewer", "confirm": "yes"},
                    page="/account")
    assert response.status_code == 403
    assert post(viewer, "/accounts/new", {"username": "mallory", "role": "admin",
                                          "password": NEW, "password2": NEW},
                page="/account").status_code == 403
    (ann_now,) = [u for u in list_users(app.config["DATABASE"]) if u.name == "ann"]
    assert ann_now.version == 1 and [u.name for u in list_users(app.config["DATABASE"])] == [
        "ann", "vic"]


@pytest.mark.parametrize(("url", "data"), [
    ("/account/password", {"current_password": PASSWORD, "new_password": NEW,
                           "new_password2": NEW}),
    ("/accounts/new", {"username": "mallory", "role": "admin", "password": NEW,
                       "password2": NEW}),
    ("/accounts/{vic}/disable", {}),
    ("/accounts/{vic}/password", {"password": NEW, "password2": NEW}),
    ("/accounts/{vic}/remove", {"confirm": "yes"}),
])
def test_an_account_form_without_its_csrf_token_is_refused_and_changes_nothing(
        app, admin, viewer, url, data):
    before = [(u.name, u.version) for u in list_users(app.config["DATABASE"])]
    response = admin.post(url.format(vic=user_id(app, "vic")), data=data)
    assert response.status_code == 400
    assert "This form has expired" in response.get_data(as_text=True)
    assert [(u.name, u.version) for u in list_users(app.config["DATABASE"])] == before


def test_the_accounts_page_lists_name_role_state_and_last_sign_in(app, admin, viewer):
    disable_user(app.config["DATABASE"], "vic")
    page = admin.get("/accounts").get_data(as_text=True)
    ann = re.search(r'<tr data-account-name="ann".*?</tr>', page, re.S)[0]
    vic = re.search(r'<tr data-account-name="vic".*?</tr>', page, re.S)[0]
    assert ">admin<" in ann and ">active<" in ann and "<time" in ann and "(you)" in ann
    assert ">viewer<" in vic and ">disabled<" in vic
    assert 'id="account-add"' in page and 'id="nav-accounts"' in page


def test_an_admin_adds_resets_disables_enables_and_removes_an_account(app, admin):
    database = app.config["DATABASE"]
    added = post(admin, "/accounts/new", {"username": "dan", "role": "viewer",
                                          "password": PASSWORD, "password2": PASSWORD},
                 page="/accounts")
    assert added.status_code == 302
    dan = app.test_client()
    assert sign_in(dan, "dan", PASSWORD).status_code == 302
    dan_id = user_id(app, "dan")
    page = f"/accounts/{dan_id}"

    reset = post(admin, f"{page}/password", {"password": NEW, "password2": NEW}, page=page)
    assert reset.status_code == 302
    assert dan.get("/log").status_code == 302  # signed out by the reset
    assert sign_in(dan, "dan", NEW).status_code == 302

    assert post(admin, f"{page}/disable", page=page).status_code == 302
    assert dan.get("/log").status_code == 302
    refused = sign_in(dan, "dan", NEW)
    assert refused.status_code == 403
    assert "This account is disabled; ask an admin of this door." in flashes(refused)
    assert "Wrong name or password." in flashes(sign_in(dan, "dan", "a wrong guess"))

    assert post(admin, f"{page}/enable", page=page).status_code == 302
    assert sign_in(dan, "dan", NEW).status_code == 302

    assert post(admin, f"{page}/role", {"role": "admin"}, page=page).status_code == 302
    assert get_user(database, dan_id).is_admin

    unconfirmed = post(admin, f"{page}/remove", page=page)
    assert unconfirmed.status_code == 400 and "Tick the box" in unconfirmed.get_data(
        as_text=True)
    assert post(admin, f"{page}/remove", {"confirm": "yes"}, page=page).status_code == 302
    assert get_user(database, dan_id) is None
    assert dan.get("/log").status_code == 302
    actions = audit_actions(database)
    for action in ("user_add", "user_password", "user_disable", "user_enable", "user_role",
                   "user_remove"):
        assert action in actions


def test_the_page_refuses_what_the_service_refuses_in_its_words(app, admin):
    ann = user_id(app, "ann")
    page = f"/accounts/{ann}"
    own = admin.get(page).get_data(as_text=True)
    assert 'id="account-disable"' not in own and 'id="account-remove"' not in own
    disable = post(admin, f"{page}/disable", page=page)
    assert disable.status_code == 400
    assert "You cannot disable your own account; ask another admin." in disable.get_data(
        as_text=True)
    demote = post(admin, f"{page}/role", {"role": "viewer"}, page=page)
    assert demote.status_code == 400
    assert ("The door needs an active admin, and ann is its last one, so cannot be made a "
            "viewer") in demote.get_data(as_text=True)
    taken = post(admin, "/accounts/new", {"username": "ann", "role": "admin",
                                          "password": PASSWORD, "password2": PASSWORD},
                 page="/accounts")
    assert taken.status_code == 400
    assert "An account named &#39;ann&#39; already exists." in taken.get_data(as_text=True)
    assert admin.get("/people").status_code == 200  # still signed in, still an admin


def test_an_unknown_account_is_not_found(admin):
    assert admin.get("/accounts/no-such-id").status_code == 404
    assert post(admin, "/accounts/no-such-id/disable", page="/accounts").status_code == 404


# --- The CLI: the same service ------------------------------------------------------------------


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "device", *args], capture_output=True,
                          text=True, timeout=120, input=stdin)


def test_the_cli_disables_enables_and_lists_accounts_by_the_services_rules(db_path):
    db = str(db_path)
    add_user(db_path, "ann", PASSWORD)
    vic = add_user(db_path, "vic", PASSWORD, role="viewer")
    session = start_session(db_path, vic.id, HOUR)

    disabled = run("admin", "disable", "vic", "--db", db)
    assert disabled.returncode == 0, disabled.stderr
    assert session_owner(db_path, session, HOUR) is None
    listed = run("admin", "list", "--db", db).stdout.splitlines()
    assert listed[0] == "ann\tadmin\tactive" and listed[1].startswith("vic\tviewer\tdisabled ")

    last = run("admin", "disable", "ann", "--db", db)
    assert last.returncode == 1 and last.stderr.count("\n") == 1
    assert "the door needs an active admin, and ann is its last one" in last.stderr
    assert run("admin", "enable", "vic", "--db", db).returncode == 0
    assert verify_password(db_path, "vic", PASSWORD) is not None
    no_role = run("admin", "role", "vic", "--db", db)
    assert no_role.returncode == 1 and "--role" in no_role.stderr
    assert run("admin", "role", "vic", "--role", "admin", "--db", db).returncode == 0
    assert get_user(db_path, vic.id).is_admin
    actions = audit_actions(db_path)
    assert {"user_disable", "user_enable", "user_role"} <= set(actions)


def test_a_reset_password_does_not_enable_a_disabled_account(store):
    add_user(store, "ann", PASSWORD)
    add_user(store, "vic", PASSWORD, role="viewer")
    disable_user(store, "vic")
    assert set_password(store, "vic", NEW).is_disabled
    assert verify_password(store, "vic", NEW) is None
