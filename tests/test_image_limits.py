"""Every way an image comes in refuses a decompression bomb by its header, before decoding:
the CLI, the admin page's upload and the API; and the CLI reads no more than a file's worth.

The bomb is an 875 KB PNG of 30000x30000 grey pixels (tests/image_bombs.py), which would
decode to 900 MB (2.7 GB as BGR). The message names its size from the header, which only the
check before decoding gives; ``tests/test_image_io.py`` shows the check allocates nothing.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys

from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from device.cli import main
from device.web.tokens import create_token
from device.web.users import add_user
from tests.conftest import DATA
from tests.image_bombs import BOMB_SIDE, png_bomb
from tests.web_support import add_person, csrf_from, results

REFUSAL = f"image too large ({BOMB_SIDE}x{BOMB_SIDE} pixels, limit 40 megapixels)"


def bomb_form(**fields: str) -> dict:
    """A multipart body with the bomb as "photos", built in memory: the test client would
    spool a body this size to a temporary file it never closes (a ResourceWarning)."""
    upload = FileStorage(io.BytesIO(png_bomb()), filename="bomb.png", content_type="image/png")
    boundary, body = encode_multipart({"photos": upload, **fields})
    return {"data": body, "content_type": f"multipart/form-data; boundary={boundary}"}


def test_the_cli_refuses_a_png_bomb_by_its_header(tmp_path, capsys):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb())
    code = main(["enroll", "--db", str(tmp_path / "gallery.db"), "--name", "Bomb", "--json",
                 str(bomb)])
    assert code == 2  # refused
    (line,) = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    assert line["status"] == "refused" and line["code"] == "unreadable"
    assert line["reason"] == f"{bomb}: {REFUSAL}"


def test_the_cli_refuses_a_device_file_instead_of_reading_it_for_ever(tmp_path):
    result = subprocess.run([sys.executable, "-m", "device", "enroll", "--db",
                             str(tmp_path / "gallery.db"), "--name", "Zero", "/dev/zero"],
                            capture_output=True, text=True, timeout=120, cwd=DATA.parents[1])
    assert result.returncode == 2, result.stderr
    assert "/dev/zero: not a regular file (a device, pipe or socket)" in result.stderr
    assert "0 enrolled, 0 already enrolled, 1 refused" in result.stderr


def test_the_page_refuses_a_png_bomb_by_its_header(admin):
    person_id = add_person(admin, "Bomb")
    token = csrf_from(admin, f"/people/{person_id}")
    response = admin.post(f"/people/{person_id}/photos", **bomb_form(csrf_token=token))
    assert response.status_code == 200
    assert results(response) == [("refused", REFUSAL)]


def test_the_api_refuses_a_png_bomb_by_its_header(app):
    add_user(app.config["DATABASE"], "api-admin", "correct horse battery", "admin")
    token = create_token(app.config["DATABASE"], "api-admin", "tests")
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    person = client.post("/api/people", json={"name": "Bomb"}, headers=headers)
    assert person.status_code == 201, person.json
    url = f"/api/people/{person.json['id']}/photos"
    multipart = client.post(url, headers=headers, **bomb_form())
    raw = client.post(url, headers=headers, data=png_bomb(), content_type="image/png")
    for response in (multipart, raw):
        assert response.status_code == 422, response.json
        (photo,) = response.json["photos"]
        assert photo["status"] == "refused" and photo["code"] == "unreadable"
        assert photo["reason"] == REFUSAL
