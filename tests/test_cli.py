"""The facegate command line, run as a user runs it, against a temporary SQLite gallery."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from device.cli import build_parser, main
from device.identification import Decision
from tests.conftest import DATA


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "device", *args], capture_output=True,
                          text=True, timeout=300)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def subcommands() -> list[str]:
    parser = build_parser()
    return sorted(parser._subparsers._group_actions[0].choices)  # noqa: SLF001


@pytest.mark.parametrize("command", subcommands())
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    assert len(capsys.readouterr().out) > 100


def test_embed_prints_one_json_line_per_image_and_goes_on_after_a_bad_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    good = DATA / "people" / "Colin_Powell" / "Colin_Powell_0001.jpg"
    result = run("embed", str(bad), str(good), str(DATA / "couple.jpg"))
    assert result.returncode == 1  # one file failed
    lines = json_lines(result.stdout)
    assert [line["path"] for line in lines] == [str(bad), str(good), str(DATA / "couple.jpg")]
    assert "not an image" in lines[0]["error"]
    (face,) = lines[1]["faces"]
    assert len(face["embedding"]) == 128
    assert len(face["landmarks5"]) == 5 and len(face["box"]) == 4
    assert set(face["quality"]) >= {"interocular_px", "sharpness", "yaw", "pitch", "roll"}
    couple = lines[2]["faces"]
    assert len(couple) == 2
    area = [(f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]) for f in couple]
    assert area[0] >= area[1]  # largest first


def test_embed_with_several_workers_says_the_same_in_the_same_order(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    photos = [*sorted((DATA / "people").glob("*/*.jpg")), bad, DATA / "couple.jpg",
              *sorted((DATA / "strangers").glob("*.jpg"))]
    alone, together = (run("embed", "--workers", workers, *map(str, photos))
                       for workers in ("1", "2"))
    assert alone.returncode == together.returncode == 1
    one, two = json_lines(alone.stdout), json_lines(together.stdout)
    assert [line["path"] for line in two] == [str(photo) for photo in photos]
    for first, second in zip(one, two, strict=True):
        assert first.get("error") == second.get("error")
        assert len(first.get("faces", [])) == len(second.get("faces", []))
        for a, b in zip(first.get("faces", []), second.get("faces", []), strict=True):
            # Interpreters of one thread or two add in another order: within rounding.
            assert np.allclose(a["embedding"], b["embedding"], atol=2e-3)
    assert "at least 1" in run("embed", "--workers", "0", str(photos[0])).stderr


@pytest.fixture
def enrolled_db(tmp_path, people) -> Path:
    db = tmp_path / "gallery.db"
    for name, paths in people.items():
        result = run("enroll", "--db", str(db), "--name", name, str(paths[0]))
        assert result.returncode == 0, result.stderr
    return db


def test_enrolled_people_are_identified_and_strangers_are_unknown(enrolled_db, people):
    probes = [people["Colin_Powell"][1], people["Serena_Williams"][2],
              *sorted((DATA / "strangers").glob("*.jpg"))]
    result = run("identify", "--db", str(enrolled_db), *map(str, probes))
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stdout)
    decided = [(line["faces"][0]["person"], line["faces"][0]["decision"]) for line in lines]
    assert decided == [("Colin_Powell", "match"), ("Serena_Williams", "match"),
                       (None, "unknown"), (None, "unknown")]
    assert all(len(line["faces"][0]["person_id"] or "x" * 36) == 36 for line in lines)


def test_a_threshold_above_every_score_makes_everyone_unknown(enrolled_db, people):
    result = run("identify", "--db", str(enrolled_db), "--threshold", "0.99",
                 str(people["Colin_Powell"][1]))
    assert json_lines(result.stdout)[0]["faces"][0]["decision"] == "unknown"


def test_enrolling_the_same_image_twice_adds_nothing(enrolled_db, people):
    again = run("enroll", "--db", str(enrolled_db), "--json", "--name", "Colin_Powell",
                str(people["Colin_Powell"][0]))
    assert again.returncode == 0
    assert json_lines(again.stdout)[0]["status"] == "already enrolled"
    listing = run("people", "list", "--db", str(enrolled_db), "--json")
    counts = {p["name"]: p["templates"] for p in json_lines(listing.stdout)}
    assert counts == {"Colin_Powell": 1, "Serena_Williams": 1}


def test_photos_with_no_face_or_several_faces_are_refused_with_the_reason(tmp_path):
    db = tmp_path / "gallery.db"
    result = run("enroll", "--db", str(db), "--json", "--name", "Nobody",
                 str(DATA / "page.png"), str(DATA / "couple.jpg"))
    assert result.returncode == 2  # some photos refused
    reasons = [line["reason"] for line in json_lines(result.stdout)]
    assert "no face found" in reasons[0]
    assert "2 faces of similar size found" in reasons[1]
    listing = run("people", "list", "--db", str(db), "--json")
    assert json_lines(listing.stdout) == []  # nothing half-enrolled


def test_enrol_from_a_folder_of_people(tmp_path):
    db = tmp_path / "gallery.db"
    folder = tmp_path / "people"
    shutil.copytree(DATA / "people", folder)
    result = run("enroll", "--db", str(db), "--from-folder", str(folder))
    assert result.returncode == 0, result.stderr
    listing = json_lines(run("people", "list", "--db", str(db), "--json").stdout)
    assert {p["name"]: p["templates"] for p in listing} == {"Colin_Powell": 3,
                                                            "Serena_Williams": 3}


def test_removing_a_person_removes_their_templates(enrolled_db):
    result = run("people", "remove", "Colin_Powell", "--db", str(enrolled_db))
    assert result.returncode == 0 and "1 templates" in result.stdout
    listing = json_lines(run("people", "list", "--db", str(enrolled_db), "--json").stdout)
    assert [p["name"] for p in listing] == ["Serena_Williams"]
    missing = run("people", "remove", "Colin_Powell", "--db", str(enrolled_db))
    assert missing.returncode == 1
    assert missing.stderr.count("\n") == 1 and "Colin_Powell" in missing.stderr


def test_verify_says_same_or_different(people):
    same = run("verify", "--json", *map(str, people["Serena_Williams"][:2]))
    different = run("verify", "--json", str(people["Serena_Williams"][0]),
                    str(people["Colin_Powell"][0]))
    assert json.loads(same.stdout)["same_person"] is True
    assert json.loads(different.stdout)["same_person"] is False


def test_info_reports_the_active_embedder_and_its_threshold(enrolled_db):
    result = run("info", "--json", "--db", str(enrolled_db))
    info = json.loads(result.stdout)
    models = Path(__file__).parents[1] / "models"
    card = json.loads((models / f"{info['embedder']}.json").read_text())
    assert info["embedder"].startswith("face_recognition_sface")
    # The threshold in force is the card's curve read at the gallery's size (two people).
    assert info["threshold"] == round(Decision.from_card(card["threshold"]).threshold_for(2), 4)
    assert info["threshold"] < card["threshold"]["score"]  # the score is for 1,000 people
    assert info["target_fpir"] == card["threshold"]["fpir"]
    assert info["gallery"]["people"] == 2
    assert all(model["sha256_ok"] for model in info["models"].values())


def test_an_unknown_model_is_one_clear_line(tmp_path):
    result = run("embed", "--model", "no_such_model", str(DATA / "page.png"))
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "no_such_model" in result.stderr and "available" in result.stderr


def test_reembed_recomputes_templates_from_their_stored_crops(enrolled_db, tmp_path):
    # A second embedder under another name: the same SFace file with its own card, as a model
    # trained by training/ would drop in beside the bundled ones.
    models = tmp_path / "models"
    shutil.copytree(Path(__file__).parents[1] / "models", models)
    card = json.loads((models / "face_recognition_sface_2021dec_float16.json").read_text())
    card["name"] = "sface_copy"
    (models / "sface_copy.json").write_text(json.dumps(card))
    shutil.copy(models / "face_recognition_sface_2021dec_float16.tflite",
                models / "sface_copy.tflite")
    result = run("reembed", "--db", str(enrolled_db), "--models-dir", str(models),
                 "--model", "sface_copy")
    assert result.returncode == 0, result.stderr
    assert "re-embedded 2 templates" in result.stdout
    info = json.loads(run("info", "--json", "--db", str(enrolled_db), "--models-dir",
                          str(models)).stdout)
    assert info["gallery"]["templates"] == {"sface_copy": 2}


def test_admins_and_api_tokens_are_managed_from_the_command_line(tmp_path):
    db = str(tmp_path / "facegate.db")
    weak = subprocess.run([sys.executable, "-m", "device", "admin", "add", "ada", "--db", db,
                           "--password-stdin"], input="short\n", capture_output=True,
                          text=True, timeout=120)
    assert weak.returncode == 1 and weak.stderr.count("\n") == 1
    added = subprocess.run([sys.executable, "-m", "device", "admin", "add", "ada", "--db", db,
                            "--password-stdin"], input="correct horse battery\n",
                           capture_output=True, text=True, timeout=120)
    assert added.returncode == 0, added.stderr
    assert "ada\tadmin" in run("admin", "list", "--db", db).stdout
    token = run("token", "add", "ada", "nightly-backup", "--db", db).stdout.strip()
    assert token.startswith("fg_")
    (listed,) = run("token", "list", "--db", db).stdout.splitlines()
    token_id = listed.split("\t")[0]
    assert "nightly-backup" in listed and "active" in listed
    assert run("token", "revoke", token_id, "--db", db).returncode == 0
    assert "revoked" in run("token", "list", "--db", db).stdout


@pytest.mark.parametrize("name", ["   ", "Ada\x1b[2J\x1b[H", "\u202eadA", "x" * 5000])
def test_a_blank_or_unprintable_name_is_one_line_everywhere_a_name_enters(
        tmp_path, monkeypatch, capsys, name):
    db = str(tmp_path / "facegate.db")
    from device.gallery import Gallery

    with Gallery(db) as gallery:
        gallery.add_person("Ada")
    monkeypatch.setattr(sys, "stdin", io.StringIO("correct horse battery\n"))
    assert main(["admin", "add", "ada", "--db", db, "--password-stdin"]) == 0
    capsys.readouterr()
    for argv in (["people", "edit", "Ada", "--rename", name],
                 *([["people", "edit", "Ada", "--external-id", name]] if name.strip() else []),
                 ["token", "add", "ada", name],
                 ["admin", "add", name, "--password-stdin"]):
        monkeypatch.setattr(sys, "stdin", io.StringIO("correct horse battery\n"))
        db_args = [] if "--db" in argv else ["--db", db]
        assert main([*argv, *db_args]) == 1, argv
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and err.startswith("facegate: "), err
        assert "\x1b" not in err and "\u202e" not in err and len(err) < 200
    assert main(["people", "list", "--db", db]) == 0
    assert capsys.readouterr().out.startswith("Ada\t")


def _real_gallery(path: Path) -> bytes:
    """A gallery with people, templates (JPEG crops) and events, as a file's bytes."""
    from device.events import EventLog
    from device.gallery import Gallery

    rng = np.random.default_rng(7)
    path.parent.mkdir()
    with Gallery(path) as gallery:
        for number in range(40):
            person = gallery.add_person(f"Person {number}")
            gallery.add_template(person.id, rng.normal(size=128).astype(np.float32), "sface",
                                 {}, b"\xff\xd8\xff" + rng.bytes(6000), f"{number:064x}")
    with EventLog(path, path.parent / "snapshots", door_id="front", stdout=io.StringIO()) as log:
        for _ in range(50):
            log.record("unknown", score=0.1)
    with Gallery(path) as gallery:  # into the main file: a copy is one file, no -wal
        gallery.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.read_bytes()


@pytest.fixture
def broken_galleries(tmp_path) -> dict[str, bytes]:
    real = _real_gallery(tmp_path / "real" / "facegate.db")
    assert len(real) > 100_000
    return {"random bytes": np.random.default_rng(3).bytes(len(real)),
            "truncated copy": real[: len(real) // 3], "empty file": b""}


@pytest.mark.parametrize("command", [["people", "list"], ["events"], ["info"], ["run"]])
@pytest.mark.parametrize("damage", ["random bytes", "truncated copy", "empty file"])
def test_a_corrupt_or_empty_gallery_is_one_line_naming_the_file(
        tmp_path, broken_galleries, capsys, command, damage):
    data_dir = tmp_path / "door"
    data_dir.mkdir()
    database = data_dir / "facegate.db"
    database.write_bytes(broken_galleries[damage])
    assert main([*command, "--data-dir", str(data_dir)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert str(database) in err and "backup" in err
    assert database.read_bytes() == broken_galleries[damage]  # nothing was changed
    # Only the daemon's lock (held for its life, released by the kernel) may have appeared.
    lock = ["facegate.lock"] if command == ["run"] else []
    assert sorted(p.name for p in data_dir.iterdir()) == ["facegate.db", *lock]
