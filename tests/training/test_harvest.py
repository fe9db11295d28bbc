"""``harvest``: a real door's gallery and access log back to one folder per person, and
``prepare`` taking that folder as it is. The door is built with the device's own services:
people enrolled from photos with the pipeline's embeddings and crops, grants decided by the
identifier and logged with the daemon's own face snapshot."""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest

from device.errors import FacegateError
from device.events import EventLog
from device.events.event import Event
from device.gallery.store import Gallery
from device.identification import Decision, Identifier
from device.vision.image_io import read_image
from device.vision.pipeline import FacePipeline
from tests.training.conftest import TRAIN_MINI
from training.harvest import DEFAULT_MIN_SCORE, add_parser, folder_names, harvest
from training.prepare import TEMPLATE_INTEROCULAR_PX, prepare


def photo(person: str, number: int) -> Path:
    return TRAIN_MINI / person / f"{person}_{number:04d}.jpg"


@dataclass
class Door:
    db: Path
    snapshots: Path
    ids: dict[str, str] = field(default_factory=dict)  # enrolled name -> person id
    events: dict[str, Event] = field(default_factory=dict)  # label -> logged event


def _enrol(pipeline, gallery, name: str, image: Path) -> str:
    """Enrol ``name`` from one photo through the gallery API, with the pipeline's own
    embedding and aligned crop (the enrolment service's quality gate wants 30 px between
    the eyes, more than these 160x160 LFW photos have)."""
    frame, sha256 = read_image(image)
    face = max(pipeline.process(frame, thorough=True), key=lambda face: face.area)
    ok, crop = cv2.imencode(".jpg", face.aligned, [cv2.IMWRITE_JPEG_QUALITY, 95])
    person = gallery.add_person(name)
    gallery.add_template(person.id, face.embedding, pipeline.model_name,
                         face.quality.as_dict(), crop.tobytes(), sha256, source="cli")
    return person.id


def _decide(pipeline, gallery, log, kind: str, image: Path) -> Event:
    """What the door logs for a photo in front of it: the identifier's match of the one face,
    the largest, with the daemon's face snapshot (a box crop with margin)."""
    from device.daemon.loop import face_snapshot

    decision = Decision.from_card(pipeline.embedder_card.threshold)
    frame, _ = read_image(image)
    found = max(Identifier(pipeline, gallery, decision).identify(frame, thorough=True),
                key=lambda identification: identification.face.area)
    assert found.decision == "match", f"{image.name} is not recognised; pick another photo"
    return log.record(kind, person_id=found.person_id, person_name=found.person_name,
                      score=round(found.score, 4), face_crop=face_snapshot(frame, found.face.box),
                      frame=frame)


@pytest.fixture(scope="module")
def door(tmp_path_factory) -> Door:
    root = tmp_path_factory.mktemp("door")
    door = Door(root / "facegate.db", root / "snapshots")
    pipeline = FacePipeline.from_models_dir()
    with Gallery(door.db) as gallery, EventLog(door.db, door.snapshots, door_id="front",
                                               stdout=io.StringIO()) as log:
        for name, person in [("Alec Baldwin", "Alec_Baldwin"), ("../Rita Wilson", "Rita_Wilson"),
                             ("Tim Duncan", "Tim_Duncan"), ("tim_duncan", "Vince_Carter"),
                             ("David Stern", "David_Stern"), ("Billy Crystal", "Billy_Crystal"),
                             ("Yoko Ono", "Yoko_Ono")]:
            door.ids[name] = _enrol(pipeline, gallery, name, photo(person, 1))
        for label, kind, image in [
                ("alec-2", "granted", photo("Alec_Baldwin", 2)),
                ("alec-3", "granted", photo("Alec_Baldwin", 3)),
                ("rita-2", "granted", photo("Rita_Wilson", 2)),
                ("rita-3", "granted", photo("Rita_Wilson", 3)),
                ("tim-2", "granted", photo("Tim_Duncan", 2)),
                ("vince-2", "granted", photo("Vince_Carter", 2)),
                ("david-2", "denied", photo("David_Stern", 2)),  # e.g. outside his schedule
                ("billy-2", "granted", photo("Billy_Crystal", 2)),
                ("yoko-2", "granted", photo("Yoko_Ono", 2))]:
            door.events[label] = _decide(pipeline, gallery, log, kind, image)
        # Billy leaves: his row goes, his old event's snapshot is still on the disk.
        gallery.remove_person(door.ids["Billy Crystal"])
        gallery.update_person(door.ids["Yoko Ono"], active=False)
    # Retention (or a hand) took this one's file; the row still names it.
    (door.snapshots / door.events["rita-3"].face_path).unlink()
    assert (door.snapshots / door.events["billy-2"].face_path).is_file()
    return door


# The grants of active people whose snapshot is still there.
HARVESTABLE = ("alec-2", "alec-3", "rita-2", "tim-2", "vince-2")


def _low_score_grant(door: Door) -> tuple[str, float]:
    """The weakest real grant of the people harvested, and a --min-score just above it."""
    weakest = min(HARVESTABLE, key=lambda label: door.events[label].score)
    return weakest, door.events[weakest].score + 1e-4


def _files(out: Path) -> dict[str, list[str]]:
    return {folder.name: sorted(f.name for f in folder.iterdir())
            for folder in sorted(out.iterdir()) if folder.is_dir()}


@pytest.fixture(scope="module")
def harvested(door, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("harvest") / "front-door"
    weakest, min_score = _low_score_grant(door)
    harvest(door.db, out, min_score=min_score)
    return out


def test_the_enrolment_crops_and_confident_grants_of_the_people_still_enrolled_are_written(
        door, harvested):
    weakest, _ = _low_score_grant(door)
    files = _files(harvested)
    # Billy (deleted) and Yoko (inactive) have no folder; "../Rita Wilson" is made safe.
    tim = f"Tim_Duncan-{door.ids['Tim Duncan'][:8]}"
    vince = f"tim_duncan-{door.ids['tim_duncan'][:8]}"
    assert set(files) == {"Alec_Baldwin", "___Rita_Wilson", "David_Stern", tim, vince}
    grants = {label: f"grant-{door.events[label].id}.jpg"
              for label in ("alec-2", "alec-3", "rita-2", "tim-2", "vince-2")}
    expected = {"Alec_Baldwin": ["alec-2", "alec-3"], "___Rita_Wilson": ["rita-2"],
                "David_Stern": [], tim: ["tim-2"], vince: ["vince-2"]}
    for folder, labels in expected.items():
        names = files[folder]
        assert sum(n.startswith("template-") for n in names) == 1, folder
        assert {n for n in names if n.startswith("grant-")} == {
            grants[label] for label in labels if label != weakest}, folder
    # The crops are the gallery's own bytes: 112x112 aligned faces.
    with Gallery(door.db) as gallery:
        (template,) = gallery.list_templates(door.ids["Alec Baldwin"])
    written = harvested / "Alec_Baldwin" / f"template-{template.id}.jpg"
    assert written.read_bytes() == template.crop_jpeg
    assert cv2.imread(str(written)).shape == (112, 112, 3)
    # A grant is the door's snapshot of that event, byte for byte.
    event = door.events["rita-2"]
    assert (harvested / "___Rita_Wilson" / grants["rita-2"]).read_bytes() == (
        door.snapshots / event.face_path).read_bytes()


def test_harvest_json_records_the_counts_the_options_and_which_files_are_aligned(
        door, harvested):
    record = json.loads((harvested / "harvest.json").read_text())
    weakest, min_score = _low_score_grant(door)
    assert record["complete"] is True
    assert record["db"] == str(door.db.resolve())
    assert record["snapshots"] == str(door.snapshots.resolve())
    assert record["options"] == {"min_score": min_score, "include_inactive": False}
    assert record["written_at"]
    assert record["per_person"]["Alec_Baldwin"] == {
        "templates": 1, "grants": 1 if weakest.startswith("alec") else 2}
    # rita-3 lost its file; whether it counts as that or as too weak depends on its score.
    rita_weak = door.events["rita-3"].score < min_score
    assert record["people"] == 5 and record["templates"] == 5 and record["grants"] == 4
    expected = {"below_min_score": 1 + rita_weak, "missing_snapshot": 1 - rita_weak,
                "person_inactive": 1, "person_not_enrolled": 1,
                "templates_of_inactive_people": 1}
    assert record["skipped"] == {key: n for key, n in expected.items() if n}
    aligned = {entry["file"] for entry in record["aligned_crops"]}
    on_disk = {f"{folder}/{name}" for folder, names in _files(harvested).items()
               for name in names if name.startswith("template-")}
    assert aligned == on_disk
    assert {entry["alignment"] for entry in record["aligned_crops"]} == {"similarity"}


def test_inactive_people_come_only_when_asked_for(door, tmp_path):
    harvest(door.db, tmp_path / "out", min_score=0.0, include_inactive=True)
    files = _files(tmp_path / "out")
    assert f"grant-{door.events['yoko-2'].id}.jpg" in files["Yoko_Ono"]
    assert "Billy_Crystal" not in files  # deleted is deleted, whatever the options


def test_a_second_harvest_into_the_first_rewrites_it_and_leaves_nothing_stale(door, tmp_path):
    out = tmp_path / "out"
    harvest(door.db, out, min_score=0.0)
    assert any(name.startswith("grant-") for names in _files(out).values() for name in names)
    summary = harvest(door.db, out, min_score=1.01)  # no grant is that sure
    assert summary["grants"] == 0 and summary["skipped"]["below_min_score"] == 6
    assert not any(name.startswith("grant-") for names in _files(out).values()
                   for name in names)


def test_a_folder_that_is_not_empty_and_no_harvest_is_refused(door, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thesis.tex").write_text("mine")
    with pytest.raises(FacegateError, match="not empty") as error:
        harvest(door.db, tmp_path / "out")
    assert "\n" not in str(error.value)
    assert (tmp_path / "out" / "thesis.tex").read_text() == "mine"


def test_a_missing_database_is_one_sentence_and_writes_nothing(tmp_path):
    with pytest.raises(FacegateError, match="no database at") as error:
        harvest(tmp_path / "nowhere.db", tmp_path / "out")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / "nowhere.db").exists()


def test_snapshots_are_looked_for_beside_the_database_unless_named(door, tmp_path):
    summary = harvest(door.db, tmp_path / "out", snapshots=tmp_path / "elsewhere",
                      min_score=0.0)
    assert summary["grants"] == 0 and summary["skipped"]["missing_snapshot"] == 6


def test_folder_names_keep_safe_characters_and_collisions_get_an_id_suffix():
    from training.harvest import _Enrolled

    people = [_Enrolled("1a2b3c4d-0000", "../../etc", True),
              _Enrolled("9f8e7d6c-1111", "Zoë O'Brien", True),
              _Enrolled("aaaa1111-2222", "ann lee", True),
              _Enrolled("bbbb2222-3333", "Ann_Lee", True)]
    assert folder_names(people) == {"1a2b3c4d-0000": "______etc",
                                    "9f8e7d6c-1111": "Zo__O_Brien",
                                    "aaaa1111-2222": "ann_lee-aaaa1111",
                                    "bbbb2222-3333": "Ann_Lee-bbbb2222"}


def test_the_command_line_has_help_and_the_documented_default_threshold(tmp_path):
    parser = argparse.ArgumentParser(prog="python -m training")
    add_parser(parser.add_subparsers(dest="command"))
    values = vars(parser.parse_args(["harvest", "--db", "x.db", "--out", "o"]))
    assert values["min_score"] == DEFAULT_MIN_SCORE == 0.6
    assert values["include_inactive"] is False and values["snapshots"] is None
    assert "personal data" in parser._subparsers._group_actions[0].choices[
        "harvest"].format_help()


def test_the_command_warns_that_the_output_is_personal_data(door, tmp_path, capsys):
    from training.harvest import harvest_command

    summary = harvest_command({"db": door.db, "out": tmp_path / "out", "min_score": 0.6,
                               "include_inactive": False, "command_line": "test"})
    warning = capsys.readouterr().err.strip()
    assert "personal data" in warning and "\n" not in warning
    assert summary["people"] == 5


# --- prepare on a harvest ------------------------------------------------------------------


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def test_prepare_takes_the_aligned_crops_as_they_are_and_aligns_the_snapshots(
        harvested, tmp_path):
    counts = prepare(harvested, tmp_path / "prepared", workers=1, progress=False)
    rows = _rows(tmp_path / "prepared" / "manifest.csv")
    templates = [r for r in rows if Path(r["source"]).name.startswith("template-")]
    grants = [r for r in rows if Path(r["source"]).name.startswith("grant-")]
    assert len(templates) == 5
    assert len(grants) >= 3  # real door snapshots: detected and aligned again
    assert counts["crops"] + counts["rejected"] == 9
    for row in templates:
        assert float(row["interocular_px"]) == round(TEMPLATE_INTEROCULAR_PX, 1)
        crop = tmp_path / "prepared" / row["crop"]
        assert crop.read_bytes() == Path(row["source"]).read_bytes()
    for row in grants:
        assert cv2.imread(str(tmp_path / "prepared" / row["crop"])).shape == (112, 112, 3)
    again = prepare(harvested, tmp_path / "prepared", workers=1, progress=False)
    assert again == counts
    assert len(_rows(tmp_path / "prepared" / "manifest.csv")) == len(rows)  # resumed


def test_prepare_rejects_aligned_crops_it_cannot_take_with_the_reason(harvested, tmp_path):
    source = tmp_path / "harvest"
    shutil.copytree(harvested, source)
    broken = next((source / "David_Stern").glob("template-*.jpg"))
    ok, small = cv2.imencode(".jpg", np.full((100, 100, 3), 128, np.uint8))
    broken.write_bytes(small.tobytes())
    truncated = next((source / "Alec_Baldwin").glob("template-*.jpg"))
    truncated.write_bytes(b"\xff\xd8\xff\xe0 not really")
    prepare(source, tmp_path / "prepared", workers=1, progress=False)
    reasons = {Path(r["source"]).name: r["reason"]
               for r in _rows(tmp_path / "prepared" / "rejected.csv")}
    assert reasons[broken.name] == "aligned crop not 112x112: 100x100"
    assert reasons[truncated.name].startswith("unreadable")

    prepare(source, tmp_path / "homography", workers=1, progress=False,
            alignment="homography")
    rejected = _rows(tmp_path / "homography" / "rejected.csv")
    other = [r for r in rejected if r["reason"].startswith("aligned crop of another")]
    assert len(other) == 5 and "made with similarity" in other[0]["reason"]
    assert any(Path(r["source"]).name.startswith("grant-")
               for r in _rows(tmp_path / "homography" / "manifest.csv"))


def test_prepare_refuses_a_harvest_that_did_not_finish(harvested, tmp_path):
    source = tmp_path / "harvest"
    shutil.copytree(harvested, source)
    record = json.loads((source / "harvest.json").read_text())
    (source / "harvest.json").write_text(json.dumps({**record, "complete": False}))
    with pytest.raises(FacegateError, match="did not finish"):
        prepare(source, tmp_path / "prepared", workers=1, progress=False)


def test_by_default_only_grants_at_cosine_0_6_or_more_are_taken(door, tmp_path):
    harvest(door.db, tmp_path / "out")
    taken = {name for names in _files(tmp_path / "out").values() for name in names
             if name.startswith("grant-")}
    for label in HARVESTABLE:
        event = door.events[label]
        assert (f"grant-{event.id}.jpg" in taken) == (event.score >= 0.6), label


def test_a_file_that_is_no_gallery_is_one_sentence_and_leaves_no_folder(tmp_path):
    (tmp_path / "facegate.db").write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(FacegateError) as error:
        harvest(tmp_path / "facegate.db", tmp_path / "out")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def busy_door(tmp_path_factory) -> Door:
    """Every train-mini person enrolled from their first photo and let in with the other
    two, where the identifier recognises them: enough people to hold some apart."""
    root = tmp_path_factory.mktemp("busy-door")
    door = Door(root / "facegate.db", root / "snapshots")
    pipeline = FacePipeline.from_models_dir()
    with Gallery(door.db) as gallery, EventLog(door.db, door.snapshots, door_id="front",
                                               stdout=io.StringIO()) as log:
        people = sorted(p.name for p in TRAIN_MINI.iterdir() if p.is_dir())
        for person in people:
            door.ids[person] = _enrol(pipeline, gallery, person.replace("_", " "),
                                      photo(person, 1))
        for person in people:
            for number in (2, 3):
                try:
                    door.events[f"{person}-{number}"] = _decide(
                        pipeline, gallery, log, "granted", photo(person, number))
                except AssertionError:  # not recognised at the door: no grant to log
                    pass
    return door


def test_the_technicians_whole_loop_from_a_door_back_to_the_door(busy_door, tmp_path, capsys):
    """harvest -> prepare -> train --init-from sface -> export -> evaluate --against ->
    facegate reembed --model NEW, each step through its command line."""
    from device.cli import main as facegate
    from device.vision.models import default_models_dir
    from training.cli import main as training

    door = busy_door
    harvest_dir, prepared, run = tmp_path / "harvest", tmp_path / "prepared", tmp_path / "run"
    models = tmp_path / "models"
    shutil.copytree(default_models_dir(), models)
    assert training(["harvest", "--db", str(door.db), "--out", str(harvest_dir),
                     "--min-score", "0.3"]) == 0
    assert training(["prepare", "--data", str(harvest_dir), "--out", str(prepared),
                     "--workers", "1", "--no-progress"]) == 0
    assert training(["train", "--data", str(prepared), "--out", str(run),
                     "--backbone", "sface", "--init-from", "sface", "--epochs", "2",
                     "--warmup-centres-epochs", "1", "--train-top-units", "2",
                     "--freeze-batchnorm", "--decay-towards", "start", "--batch-size", "4",
                     "--steps-per-epoch", "2", "--holdout-share", "0.34",
                     "--learning-rate", "0.001", "--workers", "1", "--eval-every", "0",
                     "--checkpoint-every", "0"]) == 0
    assert training(["export", "--run", str(run), "--name", "site_sface", "--out", str(models),
                     "--int8", "dynamic", "--precision", "int8", "--min-cosine", "0.99"]) == 0
    capsys.readouterr()
    assert training(["evaluate", "--tflite", str(models / "site_sface_int8.tflite"),
                     "--data", str(prepared), "--people", "all",
                     "--against", "face_recognition_sface_2021dec_int8dr_xnnpack",
                     "--models-dir", str(models)]) == 0
    judged = json.loads(capsys.readouterr().out)
    people = len([p for p in harvest_dir.iterdir() if p.is_dir()])
    assert judged["model"] == "site_sface_int8" and judged["people"] == people >= 10
    assert set(judged["verdict"]["candidate"]) == {"pairs_accuracy", "tar_at_far_1e-3"}

    # The door moves its gallery to the new model, from the crops it stored at enrolment.
    gallery = tmp_path / "door.db"
    shutil.copy(door.db, gallery)
    common = ["--db", str(gallery), "--models-dir", str(models),
              "--data-dir", str(tmp_path / "data")]
    assert facegate(["reembed", *common, "--model", "site_sface_int8"]) == 0
    assert "with site_sface_int8" in capsys.readouterr().out
    assert facegate(["identify", *common, "--model", "site_sface_int8",
                     str(photo("Alec_Baldwin", 2))]) == 0
    match = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["faces"][0]
    assert match["person"] == "Alec Baldwin"


def test_export_of_a_run_with_too_few_held_out_people_is_one_sentence(door, tmp_path):
    from training.cli import main as training

    harvest_dir, prepared, run = tmp_path / "harvest", tmp_path / "prepared", tmp_path / "run"
    harvest(door.db, harvest_dir, min_score=0.0)
    prepare(harvest_dir, prepared, workers=1, progress=False)
    assert training(["train", "--data", str(prepared), "--out", str(run), "--backbone", "sface",
                     "--init-from", "sface", "--epochs", "1", "--batch-size", "4",
                     "--holdout-share", "0.2", "--train-top-units", "1", "--workers", "1",
                     "--eval-every", "0", "--checkpoint-every", "0"]) == 0
    with pytest.raises(FacegateError, match="held-out people; export sets the thresholds"):
        from training.export import export_command

        export_command({"run": str(run), "name": "too_few", "out": str(tmp_path / "models"),
                        "int8": "dynamic"})
