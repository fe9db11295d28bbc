"""Face templates on every front: list a person's and remove one enrolled by mistake, with
the CLI, the JSON API and the person page.

Templates are enrolled by the real models from the real photos of tests/data (through the
CLI, the API's upload and the page's upload), into a real temporary SQLite file. Each removal
is judged in the gallery (that template gone, the person and their other templates kept) and
in the audit log (a ``template_remove`` row naming who removed it).
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from device.audit import cli_user, list_audit
from device.cli import main
from device.gallery.store import Gallery
from device.web.tokens import create_token
from device.web.users import add_user
from tests.web_support import (
    COLIN,
    PASSWORD,
    SERENA,
    add_person,
    csrf_from,
    photo,
    post,
    upload,
)

TEMPLATE_FIELDS = {"id", "person_id", "created", "source", "model", "quality", "version",
                   "has_crop"}


def template_ids(db_path: Path, person_id: str) -> list[str]:
    with Gallery(db_path) as gallery:
        return [template.id for template in gallery.list_templates(person_id)]


def person_id_of(db_path: Path, name: str) -> str:
    with Gallery(db_path) as gallery:
        return gallery.get_person(name).id


def removals(db_path: Path) -> list[dict]:
    return [row for row in list_audit(db_path) if row["action"] == "template_remove"]


def enrol_with_cli(db_path: Path, name: str, *paths: Path, no_crops: bool = False) -> None:
    flags = ["--no-crops"] if no_crops else []
    assert main(["enroll", "--db", str(db_path), *flags, "--name", name,
                 *map(str, paths)]) == 0


# --- The command line --------------------------------------------------------------------------


@pytest.fixture(name="cli_db")
def fixture_cli_db(tmp_path: Path) -> Path:
    """Colin Powell with two templates and Serena Williams with one, enrolled by the CLI."""
    db_path = tmp_path / "facegate.db"
    enrol_with_cli(db_path, "Colin Powell", COLIN[0], COLIN[1])
    enrol_with_cli(db_path, "Serena Williams", SERENA[0])
    return db_path


def test_cli_lists_a_persons_templates_as_json_lines_and_as_text(cli_db, capsys):
    colin = person_id_of(cli_db, "Colin Powell")
    capsys.readouterr()
    assert main(["templates", "list", "--db", str(cli_db), "Colin Powell", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["id"] for line in lines] == template_ids(cli_db, colin)
    for line in lines:
        assert TEMPLATE_FIELDS <= set(line)
        assert line["person_id"] == colin and line["has_crop"] is True
        assert line["source"] == "cli"
        assert line["model"].startswith("face_recognition_sface")
        assert line["quality"]["interocular_px"] > 0 and line["created"].endswith("Z")
        assert "embedding" not in line
    assert main(["templates", "list", "--db", str(cli_db), colin]) == 0  # by id too
    text = capsys.readouterr().out.splitlines()
    assert len(text) == 2
    for line, template in zip(text, lines, strict=True):
        assert line.startswith(template["id"]) and template["model"] in line


def test_cli_removes_one_template_and_the_person_keeps_the_others(cli_db, capsys):
    colin, serena = person_id_of(cli_db, "Colin Powell"), person_id_of(cli_db, "Serena Williams")
    wrong, kept = template_ids(cli_db, colin)
    serenas = template_ids(cli_db, serena)
    with Gallery(cli_db) as gallery:
        removed = gallery.get_template(wrong)
    capsys.readouterr()
    assert main(["templates", "remove", "--db", str(cli_db), wrong]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and wrong in out and "Colin Powell" in out
    assert template_ids(cli_db, colin) == [kept]
    assert template_ids(cli_db, serena) == serenas
    with Gallery(cli_db) as gallery:
        assert gallery.get_person(colin).name == "Colin Powell"
    (row,) = removals(cli_db)
    assert row["user"] == cli_user()
    assert row["detail"] == {"person_id": colin, "name": "Colin Powell", "template_id": wrong,
                             "model": removed.model, "source": removed.source}


def test_cli_a_missing_template_or_person_is_one_line_and_exit_1(cli_db, capsys):
    colin = person_id_of(cli_db, "Colin Powell")
    before = template_ids(cli_db, colin)
    capsys.readouterr()
    assert main(["templates", "remove", "--db", str(cli_db), "no-such-template"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no-such-template" in err
    assert main(["templates", "list", "--db", str(cli_db), "Nobody"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Nobody" in err
    assert template_ids(cli_db, colin) == before
    assert removals(cli_db) == []


# --- The JSON API ------------------------------------------------------------------------------


class Api:
    """Bearer-token calls as a script makes them: an admin's token and a viewer's."""

    def __init__(self, app) -> None:
        self.db_path = app.config["DATABASE"]
        add_user(self.db_path, "alice", PASSWORD, "admin")
        add_user(self.db_path, "victor", PASSWORD, "viewer")
        self.tokens = {"admin": create_token(self.db_path, "alice", "tests"),
                       "viewer": create_token(self.db_path, "victor", "wall")}
        self.client = app.test_client()

    def call(self, method: str, path: str, *, token: str = "admin", **kwargs):
        headers = {"Authorization": f"Bearer {self.tokens[token]}"}
        return self.client.open(path, method=method, headers=headers, **kwargs)

    def enrol(self, name: str, *paths: Path) -> str:
        made = self.call("POST", "/api/people", json={"name": name})
        assert made.status_code == 201, made.json
        files = {"photos": [(io.BytesIO(path.read_bytes()), path.name) for path in paths]}
        enrolled = self.call("POST", f"/api/people/{made.json['id']}/photos", data=files,
                             content_type="multipart/form-data")
        assert enrolled.status_code == 201, enrolled.json
        return made.json["id"]


@pytest.fixture(name="api")
def fixture_api(app) -> Api:
    return Api(app)


def test_api_lists_templates_serves_crops_and_removes_one(api):
    colin = api.enrol("Colin Powell", COLIN[0], COLIN[1])
    serena = api.enrol("Serena Williams", SERENA[0])
    listed = api.call("GET", f"/api/people/{colin}/templates")
    assert listed.status_code == 200
    templates = listed.json["templates"]
    assert [t["id"] for t in templates] == template_ids(api.db_path, colin)
    assert all(TEMPLATE_FIELDS <= set(t) and t["person_id"] == colin for t in templates)
    assert {t["source"] for t in templates} == {"api"}
    wrong, kept = templates
    with api.call("GET", wrong["crop_url"]) as crop:
        assert crop.status_code == 200 and crop.mimetype == "image/jpeg"
        assert crop.data.startswith(b"\xff\xd8\xff")

    removed = api.call("DELETE", f"/api/templates/{wrong['id']}")
    assert removed.status_code == 200
    assert removed.json["id"] == wrong["id"] and removed.json["model"] == wrong["model"]
    assert template_ids(api.db_path, colin) == [kept["id"]]
    assert len(template_ids(api.db_path, serena)) == 1
    assert api.call("GET", f"/api/people/{colin}").json["templates"] == 1
    (row,) = removals(api.db_path)
    assert row["user"] == "alice"
    assert row["detail"] == {"person_id": colin, "name": "Colin Powell",
                             "template_id": wrong["id"], "model": wrong["model"],
                             "source": wrong["source"]}
    assert api.call("GET", f"/api/templates/{wrong['id']}/crop").status_code == 404


def test_api_a_missing_template_or_crop_is_404_with_one_sentence(api):
    colin = api.enrol("Colin Powell", COLIN[0])
    enrol_with_cli(api.db_path, "Serena Williams", SERENA[0], no_crops=True)
    serena = person_id_of(api.db_path, "Serena Williams")
    (no_crop,) = api.call("GET", f"/api/people/{serena}/templates").json["templates"]
    assert no_crop["has_crop"] is False and no_crop["crop_url"] is None
    for method, path in [("DELETE", "/api/templates/no-such-template"),
                         ("GET", "/api/templates/no-such-template/crop"),
                         ("GET", f"/api/templates/{no_crop['id']}/crop"),
                         ("GET", "/api/people/no-such-person/templates")]:
        response = api.call(method, path)
        assert response.status_code == 404, (method, path)
        assert set(response.json) == {"error"} and "\n" not in response.json["error"]
    assert len(template_ids(api.db_path, colin)) == 1
    assert removals(api.db_path) == []


def test_api_a_viewer_can_neither_list_nor_remove_templates(api):
    colin = api.enrol("Colin Powell", COLIN[0])
    (template_id,) = template_ids(api.db_path, colin)
    for method, path in [("GET", f"/api/people/{colin}/templates"),
                         ("DELETE", f"/api/templates/{template_id}"),
                         ("GET", f"/api/templates/{template_id}/crop")]:
        response = api.call(method, path, token="viewer")
        assert response.status_code == 403 and "admin" in response.json["error"]
    assert template_ids(api.db_path, colin) == [template_id]
    assert removals(api.db_path) == []


# --- The person page ---------------------------------------------------------------------------


def test_the_person_page_shows_each_template_with_a_remove_form(app, admin):
    person_id = add_person(admin, "Colin Powell")
    upload(admin, person_id, [photo(COLIN[0]), photo(COLIN[1])])
    page = admin.get(f"/people/{person_id}").get_data(as_text=True)
    with Gallery(app.config["DATABASE"]) as gallery:
        stored = gallery.list_templates(person_id)
    items = re.findall(r'<li class="template" id="template-([^"]+)">(.*?)</li>', page, re.S)
    assert [template_id for template_id, _ in items] == [t.id for t in stored]
    for (template_id, item), template in zip(items, stored, strict=True):
        assert f'src="/templates/{template_id}/crop.jpg"' in item
        assert template.model in item
        assert f'<time datetime="{template.created_at}">' in item
        assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d</time>", item)  # local, readable
        assert '<small class="template-source">upload</small>' in item
        assert template.source == "upload"
        form = re.search(r'<form class="remove-template" method="post" action="([^"]+)">'
                         r'(.*?)</form>', item, re.S)
        assert form[1] == f"/templates/{template_id}/remove"
        assert 'name="csrf_token"' in form[2] and "Remove" in form[2]


def test_the_page_removes_a_template_after_a_confirmation(app, admin):
    db_path = app.config["DATABASE"]
    colin = add_person(admin, "Colin Powell")
    upload(admin, colin, [photo(COLIN[0]), photo(COLIN[1])])
    serena = add_person(admin, "Serena Williams")
    upload(admin, serena, [photo(SERENA[0])])
    wrong, kept = template_ids(db_path, colin)
    url = f"/templates/{wrong}/remove"

    asked = post(admin, url, page=f"/people/{colin}")  # the Remove button: a confirm step
    assert asked.status_code == 200
    text = asked.get_data(as_text=True)
    assert 'id="confirm-remove-template"' in text and "1 other face template stays" in text
    assert admin.get(url).status_code == 200  # the same page, by address
    assert template_ids(db_path, colin) == [wrong, kept]

    done = post(admin, url, {"confirm": "1"}, page=url)
    assert done.status_code == 302 and done.location == f"/people/{colin}"
    assert "Face template removed from Colin Powell" in admin.get(done.location).get_data(
        as_text=True)
    assert template_ids(db_path, colin) == [kept]
    assert len(template_ids(db_path, serena)) == 1
    with Gallery(db_path) as gallery:
        assert gallery.get_person(colin).name == "Colin Powell"
    (row,) = removals(db_path)
    assert row["user"] == "ann" and row["address"] == "127.0.0.1"
    assert row["detail"]["template_id"] == wrong and row["detail"]["person_id"] == colin
    assert admin.get(url).status_code == 404  # gone


def test_the_page_answers_404_for_a_missing_template(app, admin):
    assert admin.get("/templates/no-such-template/remove").status_code == 404
    token = csrf_from(admin, "/people")
    response = admin.post("/templates/no-such-template/remove",
                          data={"confirm": "1", "csrf_token": token})
    assert response.status_code == 404
    assert removals(app.config["DATABASE"]) == []


def test_a_viewer_cannot_remove_a_template_on_the_page(app, admin, viewer):
    colin = add_person(admin, "Colin Powell")
    upload(admin, colin, [photo(COLIN[0])])
    (template_id,) = template_ids(app.config["DATABASE"], colin)
    url = f"/templates/{template_id}/remove"
    assert viewer.get(url).status_code == 403
    assert post(viewer, url, {"confirm": "1"}, page="/").status_code == 403
    assert template_ids(app.config["DATABASE"], colin) == [template_id]
    assert removals(app.config["DATABASE"]) == []


# --- A template row damaged by hand --------------------------------------------------------------

DAMAGES = {  # what a hand edit of the live file may leave in a template row
    "short": ("UPDATE templates SET embedding = X'00010203' WHERE id = ?", "4 bytes"),
    "nan": ("UPDATE templates SET embedding = CAST(? AS BLOB) WHERE id = ?", "NaN"),
}


def damage(db_path: Path, template_id: str, kind: str) -> None:
    import sqlite3

    import numpy as np

    sql, _ = DAMAGES[kind]
    with Gallery(db_path) as gallery:
        dim = gallery.get_template(template_id).dim
    params = ([np.full(dim, np.nan, np.float32).tobytes(), template_id] if kind == "nan"
              else [template_id])
    with sqlite3.connect(db_path) as db:
        db.execute(sql, params)
    db.close()


@pytest.mark.parametrize("kind", sorted(DAMAGES))
def test_cli_lists_a_damaged_template_flagged_and_removes_it(cli_db, capsys, kind):
    colin = person_id_of(cli_db, "Colin Powell")
    bad, good = template_ids(cli_db, colin)
    damage(cli_db, bad, kind)
    capsys.readouterr()
    assert main(["templates", "list", "--db", str(cli_db), "Colin Powell", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["id"] for line in lines] == [bad, good]
    assert DAMAGES[kind][1] in lines[0]["damaged"] and lines[1]["damaged"] is None
    assert main(["templates", "list", "--db", str(cli_db), "Colin Powell"]) == 0
    text = capsys.readouterr().out.splitlines()
    assert "DAMAGED" in text[0] and "remove it" in text[0] and "DAMAGED" not in text[1]

    assert main(["templates", "remove", "--db", str(cli_db), bad]) == 0
    assert template_ids(cli_db, colin) == [good]
    assert removals(cli_db)[0]["detail"]["template_id"] == bad


@pytest.mark.parametrize("kind", sorted(DAMAGES))
def test_api_lists_a_damaged_template_flagged_and_removes_it(api, kind):
    colin = api.enrol("Colin Powell", COLIN[0], COLIN[1])
    bad, good = template_ids(api.db_path, colin)
    damage(api.db_path, bad, kind)
    listed = api.call("GET", f"/api/people/{colin}/templates")
    assert listed.status_code == 200
    first, second = listed.json["templates"]
    assert first["id"] == bad and DAMAGES[kind][1] in first["damaged"]
    assert second["id"] == good and second["damaged"] is None
    assert api.call("GET", f"/api/people/{colin}").status_code == 200

    removed = api.call("DELETE", f"/api/templates/{bad}")
    assert removed.status_code == 200 and removed.json["id"] == bad
    assert template_ids(api.db_path, colin) == [good]


@pytest.mark.parametrize("kind", sorted(DAMAGES))
def test_the_person_page_shows_a_damaged_template_and_its_remove_button_works(app, admin,
                                                                               kind):
    db_path = app.config["DATABASE"]
    colin = add_person(admin, "Colin Powell")
    upload(admin, colin, [photo(COLIN[0]), photo(COLIN[1])])
    bad, good = template_ids(db_path, colin)
    damage(db_path, bad, kind)

    page = admin.get(f"/people/{colin}")
    assert page.status_code == 200
    item = re.search(rf'<li class="template damaged" id="template-{bad}">(.*?)</li>',
                     page.get_data(as_text=True), re.S)
    assert item and "damaged template — remove it" in item[1]
    assert f'action="/templates/{bad}/remove"' in item[1]
    assert f'<li class="template" id="template-{good}">' in page.get_data(as_text=True)
    assert admin.get("/people").status_code == 200

    url = f"/templates/{bad}/remove"
    asked = post(admin, url, page=f"/people/{colin}")
    assert asked.status_code == 200 and "This template is damaged" in asked.get_data(
        as_text=True)
    done = post(admin, url, {"confirm": "1"}, page=url)
    assert done.status_code == 302
    assert template_ids(db_path, colin) == [good]
