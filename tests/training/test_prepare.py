import csv
import shutil

from tests.training.conftest import DATA, TRAIN_MINI
from training.data import CropSet, split_people
from training.prepare import prepare


def _rows(path):
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def test_every_photo_becomes_a_crop_or_a_listed_rejection(prepared):
    sources = sorted(p for p in TRAIN_MINI.rglob("*.jpg"))
    crops, rejected = _rows(prepared / "manifest.csv"), _rows(prepared / "rejected.csv")
    assert len(crops) + len(rejected) == len(sources)
    assert len(crops) >= len(sources) - 2
    first = prepared / crops[0]["crop"]
    assert first.is_file() and first.suffix == ".jpg"
    assert CropSet.load(prepared).image(0).shape == (112, 112, 3)


def test_photos_without_one_clear_face_are_listed_with_the_reason(tmp_path):
    source = tmp_path / "source"
    (source / "Nobody").mkdir(parents=True)
    shutil.copy(DATA / "chelsea.png", source / "Nobody" / "chelsea.png")
    shutil.copy(DATA / "couple.jpg", source / "Nobody" / "couple.jpg")
    shutil.copytree(DATA / "people" / "Colin_Powell", source / "Colin_Powell")
    (source / "Broken").mkdir()
    (source / "Broken" / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    counts = prepare(source, tmp_path / "out", workers=1, progress=False)
    reasons = {r["source"].split("/")[-1]: r["reason"]
               for r in _rows(tmp_path / "out" / "rejected.csv")}
    assert reasons["chelsea.png"] == "no face found"
    assert "faces of similar size" in reasons["couple.jpg"]
    assert reasons["truncated.jpg"].startswith("unreadable")
    assert counts["crops"] == 3 and counts["rejected"] == 3


def test_an_interrupted_prepare_resumes_without_redoing_or_duplicating(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(DATA / "people", source)
    out = tmp_path / "out"
    first = prepare(source, out, workers=1, progress=False, max_people=1)
    assert first["people"] == 1
    crop = out / _rows(out / "manifest.csv")[0]["crop"]
    written = crop.stat().st_mtime_ns
    second = prepare(source, out, workers=1, progress=False)
    assert second["people"] == 2 and second["crops"] == 6
    assert crop.stat().st_mtime_ns == written  # not aligned again
    assert len({r["source"] for r in _rows(out / "manifest.csv")}) == 6


def test_the_held_out_people_are_never_trained_on_and_the_deal_is_seeded(prepared):
    train, held_out = split_people(prepared, 0.34, seed=0)
    assert not set(train) & set(held_out)
    assert len(held_out) == 4 and len(train) == 8
    assert split_people(prepared, 0.34, seed=0) == (train, held_out)
    assert split_people(prepared, 0.34, seed=1) != (train, held_out)
