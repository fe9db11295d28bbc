"""The enrolment service's rules, seen through the CLI (the page and the API have theirs in
test_web_people.py / test_web_api.py): real models, real photos, a real SQLite file."""

from __future__ import annotations

import json
import shutil

import pytest

from device.audit import list_audit
from device.cli import main
from device.gallery.store import Gallery
from device.vision.models import DEFAULT_EMBEDDER
from tests.conftest import DATA

COLIN = sorted((DATA / "people" / "Colin_Powell").glob("*.jpg"))
SERENA = sorted((DATA / "people" / "Serena_Williams").glob("*.jpg"))
FLOAT16 = "face_recognition_sface_2021dec_float16"
INT8 = DEFAULT_EMBEDDER  # what enrolment uses when nothing says otherwise


def enrol(db, name, *photos, extra=()) -> int:
    return main(["enroll", "--db", str(db), "--name", name, *extra, *map(str, photos)])


def outcome_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "gallery.db"
    assert enrol(path, "Colin Powell", COLIN[0]) == 0
    return path


def test_a_photo_of_someone_else_is_refused_under_an_enrolled_name(db, capsys):
    assert enrol(db, "Colin Powell", SERENA[0]) == 2
    err = capsys.readouterr().err
    assert "does not look like Colin Powell's enrolled photos (similarity" in err
    assert "--force --reason" in err
    with Gallery(db) as gallery:
        assert gallery.counts()["templates"] == {INT8: 1}
    refused = [row for row in list_audit(db) if row["action"] == "enrol_refused"]
    assert refused[0]["detail"]["code"] == "not_same_person"
    assert refused[0]["user"].startswith("cli")


def test_a_second_photo_of_the_same_person_is_accepted(db):
    assert enrol(db, "Colin Powell", COLIN[1]) == 0
    with Gallery(db) as gallery:
        (colin,) = gallery.list_people()
        assert colin.template_count == 2
        assert {t.source for t in gallery.list_templates(colin.id)} == {"cli"}


def test_a_second_name_for_an_enrolled_face_is_refused(db, capsys):
    assert enrol(db, "Someone Else", COLIN[1]) == 2
    assert "already enrolled as Colin Powell (similarity" in capsys.readouterr().err
    with Gallery(db) as gallery:
        assert [p.name for p in gallery.list_people()] == ["Colin Powell"]  # nobody created


def test_an_override_needs_a_reason_and_is_audited_with_who_and_why(db, capsys):
    assert enrol(db, "Colin Powell", SERENA[0], extra=["--force"]) == 2
    assert "needs a reason" in capsys.readouterr().err
    assert enrol(db, "Colin Powell", SERENA[0],
                 extra=["--force", "--reason", "checked the badge", "--json"]) == 0
    (line,) = outcome_lines(capsys.readouterr().out)
    assert line["status"] == "enrolled" and "does not look like" in line["overridden"]
    (forced,) = [row for row in list_audit(db) if row["action"] == "enrol_forced"]
    assert forced["user"].startswith("cli")
    assert forced["detail"]["why"] == "checked the badge"
    assert forced["detail"]["overridden"] == "not_same_person"
    assert forced["detail"]["template_id"] == line["template_id"]


def test_every_cli_enrolment_is_in_the_audit_log(db):
    enrols = [row for row in list_audit(db) if row["action"] == "enrol"]
    assert len(enrols) == 1
    assert enrols[0]["detail"]["name"] == "Colin Powell"
    assert enrols[0]["detail"]["source"] == "cli"


def test_a_photo_of_two_similar_faces_lists_them_and_face_n_picks_one(tmp_path, capsys):
    db = tmp_path / "gallery.db"
    couple = DATA / "couple.jpg"
    assert enrol(db, "Partner", couple, extra=["--json"]) == 2
    (line,) = outcome_lines(capsys.readouterr().out)
    assert line["status"] == "refused" and len(line["faces"]) == 2
    assert enrol(db, "Partner", couple, extra=["--face", "2"]) == 0
    with Gallery(db) as gallery:
        (person,) = gallery.list_people()
        assert person.template_count == 1


def test_reembed_moves_the_gallery_and_identify_still_matches(db, capsys):
    assert main(["reembed", "--db", str(db), "--model", FLOAT16]) == 0
    assert f"the gallery's model is now {FLOAT16}" in capsys.readouterr().out
    assert main(["identify", "--db", str(db), str(COLIN[1])]) == 0
    (face,) = outcome_lines(capsys.readouterr().out)[0]["faces"]
    assert face["person"] == "Colin Powell" and face["decision"] == "match"
    assert main(["info", "--db", str(db), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["embedder"] == FLOAT16
    assert info["gallery"]["model"] == FLOAT16
    assert info["gallery"]["template_sets"] == {FLOAT16: 1}
    assert 0.3 < info["threshold"] < 0.9 and info["target_fpir"]
    audit = [row for row in list_audit(db) if row["action"] == "reembed"]
    assert audit[0]["detail"] == {"from": INT8, "to": FLOAT16, "templates": 1, "dropped": 0}


def test_an_enrolment_with_another_model_than_the_gallerys_is_refused(db, capsys):
    assert enrol(db, "Colin Powell", COLIN[1], extra=["--model", FLOAT16]) == 1
    err = capsys.readouterr().err
    assert f"the gallery's templates are for {INT8}" in err and "reembed" in err


def test_reembed_refuses_templates_without_crops_unless_told_to_drop_them(tmp_path, capsys):
    db = tmp_path / "gallery.db"
    assert enrol(db, "Colin Powell", COLIN[0], extra=["--no-crops"]) == 0
    assert main(["reembed", "--db", str(db), "--model", FLOAT16]) == 1
    assert "no stored crop" in capsys.readouterr().err
    with Gallery(db) as gallery:
        assert gallery.model == INT8  # nothing changed
    assert main(["reembed", "--db", str(db), "--model", FLOAT16,
                 "--drop-without-crops"]) == 0
    with Gallery(db) as gallery:
        assert gallery.model == FLOAT16 and gallery.counts()["templates"] == {}


def test_run_refuses_a_gallery_of_another_model_in_one_sentence(db, tmp_path, capsys):
    config = tmp_path / "facegate.toml"
    config.write_text(f'[recognition]\nmodel = "{FLOAT16}"\n')
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copy(db, data_dir / "facegate.db")
    frames = tmp_path / "frames"
    frames.mkdir()
    shutil.copy(COLIN[1], frames / "0001.jpg")
    code = main(["run", "--config", str(config), "--data-dir", str(data_dir), "--camera",
                 str(frames), "--exit-at-end", "--no-web"])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"the gallery's templates are for {INT8} but recognition.model is {FLOAT16}" in err
    assert f"facegate reembed --model {FLOAT16}" in err


def test_a_photo_with_a_face_in_the_background_enrols_the_dominant_face(tmp_path, capsys):
    # Both were refused as "2 faces found" before the dominant-face rule (tests/data/SOURCES.md).
    db = tmp_path / "gallery.db"
    for photo in sorted((DATA / "background").glob("*.jpg")):
        assert enrol(db, photo.stem.rsplit("_", 1)[0], photo, extra=["--json"]) == 0
        (line,) = outcome_lines(capsys.readouterr().out)
        assert line["status"] == "enrolled"
    with Gallery(db) as gallery:
        assert gallery.counts() == {"people": 2, "templates": {INT8: 2}}


def test_a_running_identifier_follows_the_gallery_to_its_new_model(db, capsys):
    from device.identification import Decision, Identifier
    from device.vision.image_io import read_image
    from device.vision.pipeline import FacePipeline

    def load(name: str):
        pipeline = FacePipeline.from_models_dir(embedder=name)
        return pipeline, Decision.from_card(pipeline.embedder_card.threshold)

    with Gallery(db) as gallery:
        pipeline, decision = load(INT8)
        identifier = Identifier(pipeline, gallery, decision, load_model=load)
        frame, _ = read_image(COLIN[1])
        assert identifier.identify(frame)[0].person_name == "Colin Powell"
        assert main(["reembed", "--db", str(db), "--model", FLOAT16]) == 0  # another process
        (result,) = identifier.identify(frame)
        assert identifier.pipeline.model_name == FLOAT16
        assert result.person_name == "Colin Powell" and result.decision == "match"
