"""``facegate liveness``: every face of each image judged live or a presentation attack, by the
real liveness model on real photos (pad-dev's held-apart test part, tests/liveness_support.py),
and ``facegate info`` naming the liveness model in force."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from device.config import Config
from device.gallery.store import Gallery
from device.site_settings import write_site_settings
from device.vision.liveness import LivenessModel
from device.vision.models import list_cards
from tests.conftest import DATA, load
from tests.liveness_support import BONA_FIDE, PRINT_ATTACKS, needs_pad_dev, pad_dev
from tests.test_cli import json_lines, run

COUPLE = DATA / "couple.jpg"
PAGE = DATA / "page.png"


@pytest.fixture(scope="module")
def default_model() -> LivenessModel:
    return LivenessModel.by_name("")


def empty_db(tmp_path: Path) -> str:
    """A new gallery with nothing in it: no site settings apply (a --db that does not exist
    is refused, "no database at PATH")."""
    path = tmp_path / "empty.db"
    Gallery(path).close()
    return str(path)


def liveness(tmp_path: Path, *args: str):
    return run("liveness", "--db", empty_db(tmp_path), *args)


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "facegate.toml"
    path.write_text(text)
    return path


def faces_of(result) -> dict[str, list[dict]]:
    return {Path(line["path"]).name: line["faces"] for line in json_lines(result.stdout)}


@needs_pad_dev
def test_a_bona_fide_photo_is_live_and_a_printed_photo_is_an_attack(tmp_path, default_model):
    photos = [pad_dev(name) for name in BONA_FIDE + PRINT_ATTACKS]
    result = liveness(tmp_path, *map(str, photos))
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stdout)
    assert [line["path"] for line in lines] == [str(path) for path in photos]
    decisions = []
    for line, path in zip(lines, photos, strict=True):
        (face,) = line["faces"]  # one person in front of the camera, or on the paper
        height, width = load(path).shape[:2]
        x1, y1, x2, y2 = face["box"]
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        assert 0.0 <= face["live_score"] <= 1.0
        assert face["threshold"] == round(default_model.threshold, 4)
        decisions.append(face["decision"])
    assert decisions == ["live"] * len(BONA_FIDE) + ["attack"] * len(PRINT_ATTACKS)


def test_every_face_found_by_the_door_is_scored_and_a_page_has_none(tmp_path, pipeline):
    result = liveness(tmp_path, str(COUPLE), str(PAGE))
    assert result.returncode == 0, result.stderr
    found = faces_of(result)
    assert found["page.png"] == []  # no face is no error
    couple = found["couple.jpg"]
    # The door's face finding, thorough as for every still photo: the same boxes, largest
    # first, as the recognition pipeline's.
    expected = pipeline.process(load(COUPLE), thorough=True)
    assert len(couple) == len(expected) == 2
    assert [face["box"] for face in couple] == [[round(float(v), 1) for v in face.box]
                                                for face in expected]
    assert all(face["decision"] in ("live", "attack") for face in couple)


def test_an_unreadable_file_is_an_error_line_and_exit_2_while_the_others_are_judged(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    missing = tmp_path / "missing.jpg"
    result = liveness(tmp_path, str(broken), str(COUPLE), str(missing), str(PAGE))
    assert result.returncode == 2  # some images could not be read, as with enroll
    assert "Traceback" not in result.stderr
    lines = json_lines(result.stdout)
    assert [line["path"] for line in lines] == [str(broken), str(COUPLE), str(missing),
                                                str(PAGE)]
    assert "not an image" in lines[0]["error"] and "faces" not in lines[0]
    assert "no such file" in lines[2]["error"]
    assert all("\n" not in line["error"] for line in (lines[0], lines[2]))
    assert len(lines[1]["faces"]) == 2 and lines[3]["faces"] == []


@needs_pad_dev
def test_the_threshold_option_decides_around_the_score(tmp_path):
    attack = str(pad_dev(PRINT_ATTACKS[0]))
    (face,) = faces_of(liveness(tmp_path, attack))[Path(attack).name]
    score = face["live_score"]  # rounded to 4 places: the raw score is within 0.00005
    below, above = max(0.0, score - 0.0001), min(1.0, score + 0.0001)
    (lower,) = faces_of(liveness(tmp_path, "--threshold", str(below), attack))[Path(attack).name]
    (higher,) = faces_of(liveness(tmp_path, "--threshold", str(above), attack))[Path(attack)
                                                                                 .name]
    assert (lower["decision"], lower["threshold"]) == ("live", round(below, 4))
    assert (higher["decision"], higher["threshold"]) == ("attack", round(above, 4))


@needs_pad_dev
def test_the_configured_threshold_decides_and_the_option_beats_it(tmp_path):
    attack = str(pad_dev(PRINT_ATTACKS[0]))
    config = str(config_file(tmp_path, "[liveness]\nthreshold = 0.0\n"))
    (configured,) = faces_of(liveness(tmp_path, "--config", config, attack))[Path(attack).name]
    assert (configured["decision"], configured["threshold"]) == ("live", 0.0)
    (overridden,) = faces_of(liveness(tmp_path, "--config", config, "--threshold", "0.5",
                                      attack))[Path(attack).name]
    assert (overridden["decision"], overridden["threshold"]) == ("attack", 0.5)


@needs_pad_dev
def test_the_settings_pages_threshold_decides_as_at_the_door(tmp_path):
    database = tmp_path / "facegate.db"
    write_site_settings(database, {"liveness.threshold": "0"}, "ann")
    attack = str(pad_dev(PRINT_ATTACKS[0]))
    result = run("liveness", "--db", str(database), attack)
    (face,) = faces_of(result)[Path(attack).name]
    assert (face["decision"], face["threshold"]) == ("live", 0.0)
    info = json.loads(run("info", "--json", "--db", str(database)).stdout)["liveness"]
    assert (info["threshold"], info["threshold_source"]) == (0.0, "configuration")


@pytest.mark.parametrize(("args", "message"), [
    (["--threshold", "1.5"], "--threshold must be from 0 to 1"),
    (["--threshold", "nan"], "--threshold must be from 0 to 1"),
    (["--model", "face_landmark"], "not a liveness model"),
    (["--model", "no_such_model"], "no_such_model"),
])
def test_a_bad_threshold_or_model_is_one_line(tmp_path, args, message):
    result = liveness(tmp_path, *args, str(COUPLE))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_info_names_the_liveness_model_and_its_card_decision(tmp_path, default_model):
    result = run("info", "--json", "--db", empty_db(tmp_path))
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["liveness"] == {
        "enabled": True, "model": default_model.name,
        "threshold": default_model.threshold, "threshold_source": "model card",
        "votes_needed": default_model.votes_needed, "votes_source": "model card",
        "votes_window": Config().recognition.votes_window,
    }
    liveness_models = {card.name for card in list_cards() if card.task == "liveness"}
    assert default_model.name in liveness_models
    assert {name for name, model in info["models"].items()
            if model["task"] == "liveness"} == liveness_models


def test_info_shows_the_configured_liveness_settings_also_as_text(tmp_path, default_model):
    config = str(config_file(tmp_path, "[liveness]\nenabled = false\nthreshold = 0.8\n"
                                       "votes_needed = 3\n"))
    result = run("info", "--json", "--config", config, "--db", empty_db(tmp_path))
    live = json.loads(result.stdout)["liveness"]
    assert (live["enabled"], live["threshold"], live["votes_needed"]) == (False, 0.8, 3)
    assert live["threshold_source"] == live["votes_source"] == "configuration"
    text = run("info", "--config", config, "--db", empty_db(tmp_path)).stdout
    (line,) = [line for line in text.splitlines() if line.startswith("liveness")]
    assert "off" in line and default_model.name in line
    assert "threshold 0.8 (configuration)" in line and "3 of 3 frames" in line


def test_info_reports_a_liveness_model_that_cannot_be_loaded_and_goes_on(tmp_path):
    config = str(config_file(tmp_path, '[liveness]\nmodel = "no_such_liveness"\n'))
    result = run("info", "--json", "--config", config, "--db", empty_db(tmp_path))
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["embedder"].startswith("face_recognition")
    assert info["liveness"]["model"] == "no_such_liveness"
    assert "no_such_liveness" in info["liveness"]["error"]
