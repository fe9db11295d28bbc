"""`facegate people edit` and `facegate admin passwd`: the rules they share with the page and
the API live in the services below, so the fronts agree."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta

import pytest

from device.audit import list_audit
from device.daemon.access import access_refusal, door_time
from device.gallery.store import Gallery
from device.web.sessions import session_owner, start_session
from device.web.users import add_user, verify_password


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "device", *args], capture_output=True,
                          text=True, timeout=120, input=stdin)


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "facegate.db"
    with Gallery(path) as gallery:
        gallery.add_person("Ada")
    return path


def test_a_date_alone_as_end_of_access_is_the_whole_of_that_day():
    end = door_time("2027-06-30", end_of_day=True)
    assert end == datetime(2027, 6, 30, 23, 59, 59, 999_000).astimezone()
    assert door_time("2027-06-30") == datetime(2027, 6, 30).astimezone()  # a start: 00:00
    # A time given is kept as given, end or not.
    assert door_time("2027-06-30T12:00", end_of_day=True) == datetime(2027, 6, 30, 12).astimezone()


def test_valid_until_a_date_lets_them_in_all_that_day_and_not_the_next(db):
    result = run("people", "edit", "Ada", "--valid-until", "2027-06-30", "--db", str(db))
    assert result.returncode == 0 and result.stderr == "", result.stderr
    with Gallery(db) as gallery:
        ada = gallery.get_person("Ada")
    evening = datetime(2027, 6, 30, 23, 59).astimezone()
    assert access_refusal(ada, evening) is None
    assert access_refusal(ada, evening + timedelta(minutes=1)) == "no longer valid"


def test_a_valid_until_in_the_past_is_stored_with_a_warning(db):
    result = run("people", "edit", "Ada", "--valid-until", "2020-01-01", "--db", str(db))
    assert result.returncode == 0
    assert result.stderr.count("\n") == 1 and "already past" in result.stderr
    with Gallery(db) as gallery:
        assert gallery.get_person("Ada").valid_until.startswith("2020-01-01")


def test_active_and_inactive_together_are_refused(db):
    result = run("people", "edit", "Ada", "--active", "--inactive", "--db", str(db))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "not allowed with" in result.stderr
    with Gallery(db) as gallery:
        assert gallery.get_person("Ada").version == 1  # nothing changed


def test_admin_passwd_sets_a_new_password_and_signs_the_user_out(db):
    user = add_user(db, "ann", "the old password")
    session = start_session(db, user.id, timedelta(hours=1))
    result = run("admin", "passwd", "ann", "--db", str(db), "--password-stdin",
                 stdin="a brand new password\n")
    assert result.returncode == 0, result.stderr
    assert "signed out" in result.stdout
    assert verify_password(db, "ann", "a brand new password") is not None
    assert verify_password(db, "ann", "the old password") is None
    assert session_owner(db, session, timedelta(hours=1)) is None
    assert list_audit(db)[0]["action"] == "user_password"


@pytest.mark.parametrize(("name", "password", "says"), [
    ("nobody", "a brand new password", "no account named 'nobody'"),
    ("ann", "short", "8"),
])
def test_admin_passwd_for_no_such_user_or_a_weak_password_is_one_line(db, name, password,
                                                                      says):
    add_user(db, "ann", "the old password")
    result = run("admin", "passwd", name, "--db", str(db), "--password-stdin",
                 stdin=password + "\n")
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert says in result.stderr
    assert verify_password(db, "ann", "the old password") is not None
