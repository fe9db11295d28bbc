"""Whatever a script sends the JSON API, the answer is a 2xx, or a 4xx with one sentence.

Hypothesis sends, with an admin's API token, arbitrary JSON values (nested, huge numbers,
nan, wrong types, unicode junk, lone surrogates), bodies that are no JSON at all (invalid,
nested too deeply, another content type, not UTF-8) and junk query strings, to every route
that reads a body or filters: people add and edit, settings, tokens, door unlock and
hold-open, the events list. Never a 500 (the app is built with TESTING, so an exception
would surface here), and after a refusal the database is as it was; after an acceptance it
still holds only what the door can read back.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

import pytest
from gpiozero.pins.mock import MockFactory, MockPin
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from device.daemon.access import door_time, parse_schedule
from device.door import Door, DoorSettings
from device.events import KINDS
from device.gallery.store import Gallery
from device.site_settings import SETTABLE, read_site_settings, validate_site_settings
from device.web import create_app
from device.web.services import Services
from device.web.sessions import start_session
from device.web.tokens import create_token
from device.web.users import add_user

FUZZ = settings(max_examples=100, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
PASSWORD = "correct horse battery"
CSRF = "c" * 43
# The rows a refused request must leave as they were (api_tokens.last_used_at and the
# sessions' last_seen_at move on every call, by design).
STATE = {
    "people": "SELECT * FROM people ORDER BY id",
    "templates": "SELECT id, person_id FROM templates ORDER BY id",
    "settings": "SELECT key, value, version FROM settings ORDER BY key",
    "audit_log": "SELECT id, action, detail FROM audit_log ORDER BY id",
    "events": "SELECT id FROM events ORDER BY id",
    "api_tokens": "SELECT id, name, revoked_at FROM api_tokens ORDER BY id",
    "users": "SELECT id, name, role FROM users ORDER BY id",
}


class Site:
    """The app on a real SQLite file, a door on mock pins, an admin's token and session."""

    def __init__(self, folder: Path, factory: MockFactory) -> None:
        self.database = folder / "facegate.db"
        Gallery(self.database).close()
        self.admin = add_user(self.database, "alice", PASSWORD, "admin")
        add_user(self.database, "victor", PASSWORD, "viewer")
        self.door = Door(DoorSettings(relay_pin=17, unlock_seconds=0.5), pin_factory=factory)
        services = Services(database=self.database, snapshots=folder / "snapshots",
                            door=self.door)
        self.app = create_app({"TESTING": True, "SECRET_KEY": "test"}, services=services)
        self.token = create_token(self.database, "alice", "fuzz")
        self.client = self.app.test_client()
        self.browser = self.app.test_client()  # a signed-in session, for making tokens
        sid = start_session(self.database, self.admin.id, timedelta(hours=1))
        with self.browser.session_transaction() as session:
            session.update(sid=sid, user_id=self.admin.id, user_version=self.admin.version,
                           seen=time.time(), csrf=CSRF)

    def call(self, method: str, path: str, *, browser: bool = False, **kwargs: Any):
        if browser:  # the session's cookie travels by itself, the CSRF token beside it
            return self.browser.open(path, method=method, headers={"X-CSRF-Token": CSRF},
                                     **kwargs)
        headers = {"Authorization": f"Bearer {self.token}"}
        return self.client.open(path, method=method, headers=headers, **kwargs)

    def state(self) -> dict[str, list[tuple]]:
        with closing(sqlite3.connect(self.database)) as db:
            return {table: db.execute(query).fetchall() for table, query in STATE.items()}

    def person(self, name: str) -> dict[str, Any]:
        found = [p for p in self.call("GET", "/api/people").json["people"] if p["name"] == name]
        if found:
            return found[0]
        response = self.call("POST", "/api/people", json={"name": name})
        assert response.status_code == 201, response.json
        return response.json


@pytest.fixture(scope="module", name="site")
def fixture_site(tmp_path_factory) -> Iterator[Site]:
    factory = MockFactory(pin_class=MockPin)
    site = Site(tmp_path_factory.mktemp("api-fuzz"), factory)
    yield site
    site.door.close()
    factory.close()


def answer_is_sound(site: Site, before: dict, response) -> None:
    """2xx or 4xx with ``{"error": one sentence}``; a refusal changed nothing; what is
    stored is readable."""
    status = response.status_code
    if currently_in_test_context():
        event(f"status {status}")  # shown by pytest --hypothesis-show-statistics
    assert 200 <= status < 300 or 400 <= status < 500, (status, response.get_data(True)[:300])
    assert response.is_json, response.get_data(True)[:300]
    if status >= 400:
        error = response.json.get("error")
        assert isinstance(error, str) and error.strip(), response.json
        assert len(error.splitlines()) == 1, error
        assert len(error) < 600, error  # a sentence, not the value that was sent
        if status != 401 and status != 429:
            assert site.state() == before, "a refused request changed the database"
    assert_readable(site)


def assert_readable(site: Site) -> None:
    with closing(sqlite3.connect(site.database)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        people = db.execute("SELECT name, external_id, valid_from, valid_until, schedule "
                            "FROM people").fetchall()
    for name, external_id, valid_from, valid_until, schedule in people:
        name.encode("utf-8")  # no lone surrogate got in
        assert name == " ".join(name.split()) and name
        if external_id is not None:
            external_id.encode("utf-8")
        for when in (valid_from, valid_until):
            if when is not None:
                assert when.endswith("Z") and len(when) == len("2026-01-31T18:00:00.000Z")
        parse_schedule(schedule)
    stored = read_site_settings(site.database)
    assert validate_site_settings(stored) == stored


# --- What to send ------------------------------------------------------------------------

junk_text = st.text(max_size=20) | st.sampled_from(
    ["", " ", "\x00", "\u202e", "\ud800", "\udcff", "\n", "é" * 200, "a" * 5000])
numbers = st.one_of(st.integers(), st.integers(-10**30, 10**30), st.floats(),
                    st.sampled_from([10**300, -(10**300), 1e308, 5e-324, -0.0]))
json_scalars = st.none() | st.booleans() | numbers | junk_text
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(junk_text, inner, max_size=4), max_leaves=10)
times = st.one_of(
    junk_text,
    st.datetimes().map(lambda when: when.isoformat()),
    st.sampled_from(["0001-01-01", "0001-01-01T00:00+01:00", "9999-12-31T23:59:59-01:00",
                     "9999-12-31", "2026-01-31T18:00+14:00", "2099-01-01T00:00Z", "now",
                     "2026-13-01", "24:00", "2026-01-31T18:00:00.123456789"]),
)
schedules = st.one_of(
    junk_text,
    st.sampled_from(["mon-fri 07:00-19:00", "sat 08:00-12:00; sun 22:00-06:00",
                     "fri-mon 00:00-23:59", "mon 07:00-07:00", "xyz 1-2"]),
    st.lists(st.dictionaries(st.sampled_from(["days", "from", "until", "x"]),
                             junk_text | st.sampled_from(["mon", "07:00", "19:00"]) | json_values,
                             max_size=4), max_size=3),
)


def body_of(fields: dict[str, st.SearchStrategy]) -> st.SearchStrategy:
    """Objects of the route's fields with plausible values, with junk values, with junk
    fields too, and any JSON value at all."""
    plausible = st.fixed_dictionaries({}, optional=fields)
    known = st.fixed_dictionaries({}, optional={name: values | json_values
                                                for name, values in fields.items()})
    return st.one_of(plausible, known, known.flatmap(
        lambda body: st.dictionaries(junk_text, json_values, max_size=2).map(
            lambda extra: {**extra, **body})), json_values)


def encoded(value: Any, ascii_only: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


bad_bodies = st.one_of(
    st.binary(max_size=60),
    st.sampled_from([b"{", b"{'name': 'x'}", b"\xff\xfe{}", b'{"name": "\xff"}', b"NaN",
                     b'{"name": "x"} trailing', b"1" * 5000, b'{"seconds": ' + b"9" * 5000 + b"}",
                     b'"\\ud800"', b"\x00", "{\"name\": \"Zoë\"}".encode("latin-1"),
                     "{\"name\": \"Zoë\"}".encode("utf-16")]),
    st.integers(1000, 100_000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(1000, 50_000).map(lambda depth: b'{"a":' * depth + b"1" + b"}" * depth),
)
content_types = st.sampled_from(["application/json", "text/plain", "application/x-www-form-"
                                 "urlencoded", "application/json; charset=latin-1", "",
                                 "multipart/form-data", "application/json-patch+json"])

ROUTES = {
    ("POST", "/api/people"): {"name": junk_text | st.sampled_from(["Zoë Ng", "  Pat  "]),
                              "external_id": junk_text | st.none(),
                              "active": st.booleans()},
    ("PATCH", "/api/settings"): {key: json_scalars | st.sampled_from(["0.4", "3", "nan",
                                                                      "1e400", ""])
                                 for key in sorted(SETTABLE)},
    ("POST", "/api/door/unlock"): {"seconds": numbers | st.floats(0.5, 60)},
    ("POST", "/api/door/hold-open"): {"until": times},
    ("POST", "/api/door/lock"): {},
}


@FUZZ
@given(route=st.sampled_from(sorted(ROUTES)), data=st.data(), ascii_only=st.booleans())
def test_any_json_body_is_answered_with_a_2xx_or_one_sentence(site, route, data, ascii_only):
    method, path = route
    body = data.draw(body_of(ROUTES[route]))
    before = site.state()
    response = site.call(method, path, data=encoded(body, ascii_only),
                         content_type="application/json")
    answer_is_sound(site, before, response)
    if path.startswith("/api/door") and response.status_code < 300:
        site.call("POST", "/api/door/lock")  # the next example starts from a locked door


person_fields = {
    "name": junk_text | st.sampled_from(["Pat", "Zoë Ng", "  Pat  "]),
    "external_id": junk_text | st.none(),
    "active": st.booleans(),
    "valid_from": times | st.none(),
    "valid_until": times | st.none(),
    "schedule": schedules | st.none(),
    "version": st.integers() | st.integers(-3, 3),
}


@FUZZ
@given(body=body_of(person_fields), ascii_only=st.booleans())
def test_any_person_edit_is_answered_with_a_2xx_or_one_sentence(site, body, ascii_only):
    person = site.person("Pat")
    if isinstance(body, dict) and body.get("version") in (-1, 0, 1):
        body["version"] = person["version"]  # often the right version, so edits go through
    before = site.state()
    response = site.call("PATCH", f"/api/people/{person['id']}", data=encoded(body, ascii_only),
                         content_type="application/json")
    answer_is_sound(site, before, response)


@FUZZ
@given(body=body_of({"name": junk_text | st.just("wall display"),
                     "user": junk_text | st.sampled_from(["alice", "victor"])}))
def test_any_token_request_is_answered_with_a_2xx_or_one_sentence(site, body):
    before = site.state()
    response = site.call("POST", "/api/tokens", browser=True, data=encoded(body, True),
                         content_type="application/json")
    answer_is_sound(site, before, response)


BODY_ROUTES = sorted(ROUTES) + [("POST", "/api/tokens"), ("PATCH", "/api/people/{pat}"),
                                ("DELETE", "/api/people/{nobody}")]


@FUZZ
@given(route=st.sampled_from(BODY_ROUTES), body=bad_bodies, content_type=content_types)
def test_a_body_that_is_no_json_object_is_refused_in_one_sentence(site, route, body,
                                                                  content_type):
    method, path = route
    path = path.format(pat=site.person("Pat")["id"], nobody="no-such-id")
    before = site.state()
    response = site.call(method, path, data=body, content_type=content_type,
                         browser=path == "/api/tokens")
    answer_is_sound(site, before, response)
    if body and not (content_type.startswith("application/json") and is_json_object(body)):
        assert response.status_code >= 400, response.json


def is_json_object(body: bytes) -> bool:
    try:
        return isinstance(json.loads(body), dict)
    except (ValueError, RecursionError):
        return False


@pytest.mark.parametrize("body", [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"name":' * 50_000 + b'"x"' + b"}" * 50_000,
])
def test_json_nested_too_deeply_is_refused_in_one_sentence(site, body):
    before = site.state()
    response = site.call("POST", "/api/people", data=body, content_type="application/json")
    answer_is_sound(site, before, response)
    assert response.status_code == 400


@pytest.mark.parametrize("name", ["\ud800", "Pat\udcff", "\udfff\udbff"])
def test_a_lone_surrogate_in_a_name_is_refused_in_one_sentence(site, name):
    before = site.state()
    response = site.call("POST", "/api/people", data=encoded({"name": name}, True),
                         content_type="application/json")
    answer_is_sound(site, before, response)
    assert response.status_code == 400 and response.json["field"] == "name"


@pytest.mark.parametrize("until", ["0001-01-01T00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_time_beyond_the_calendar_is_refused_in_one_sentence(site, until):
    person = site.person("Pat")
    for method, path, body in [("POST", "/api/door/hold-open", {"until": until}),
                               ("PATCH", f"/api/people/{person['id']}", {"valid_from": until})]:
        before = site.state()
        response = site.call(method, path, json=body)
        answer_is_sound(site, before, response)
        assert response.status_code == 400, response.json


@pytest.mark.parametrize("text", ["0001-01-01T00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_door_time_refuses_a_time_beyond_the_calendar_in_utc(text):
    """The rule under the API, the page and the CLI: a ValueError each front turns into its
    sentence, not an OverflowError when the store converts it to UTC."""
    with pytest.raises(ValueError, match="beyond the years 1 to 9999"):
        door_time(text)


# A URL carries UTF-8 (no lone surrogates); other bytes come percent-encoded.
query_text = st.text(st.characters(codec="utf-8"), max_size=20)
query_values = query_text | times.filter(lambda text: text.isascii()) | st.sampled_from(
    sorted(KINDS) + ["0", "500", "501", "-1", "1e3", "²", "9" * 5000, "Pat", "10m", "1h30m",
                     "99999999999w", "\x00", "\u202e"])


@FUZZ
@given(args=st.dictionaries(st.sampled_from(["since", "until", "kind", "person", "limit",
                                             "offset"]) | query_text, query_values, max_size=4)
       | st.binary(max_size=40).map(lambda raw: quote_from_bytes(raw, safe="=&")))
def test_any_events_filter_is_answered_with_a_2xx_or_one_sentence(site, args):
    before = site.state()
    response = site.call("GET", "/api/events", query_string=args)
    answer_is_sound(site, before, response)
    if response.status_code == 200:
        assert isinstance(response.json["events"], list)
