"""``prepare``: align every photo of a one-folder-per-person dataset once, as the door does.

The device's own detector, FaceMesh and aligner make the crops (``FacePipeline.locate``), so a
network trained on them sees exactly what the door will show it. Output, in ``--out``:

- ``crops/PERSON/IMAGE.jpg``: 112x112 aligned crops (BGR JPEG, quality 95);
- ``manifest.csv``: one row per crop (crop path, person, source image, face width);
- ``rejected.csv``: every source image that gave no crop, and why (no face, several faces of
  similar size, unreadable) — listed, never silently dropped;
- ``prepare.json``: the settings, so a later run can check it aligns the same way.

Rows are appended as images finish, so an interrupted run picks up where it stopped.

A door's harvest (``python -m training harvest``) is taken as it is: the files its
``harvest.json`` lists as aligned crops (the gallery's enrolment crops, which a detector would
not find again reliably at 112x112) become crops directly, once they decode at 112x112 and
were aligned the way this run aligns; the other files (grant snapshots) are aligned as usual.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from device.errors import FacegateError
from device.vision.alignment import ARCFACE_TEMPLATE_112
from device.vision.image_io import read_image
from device.vision.models import default_models_dir
from device.vision.pipeline import FacePipeline, LocatedFace

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".webp"}
MANIFEST_FIELDS = ("crop", "person", "source", "interocular_px")
REJECTED_FIELDS = ("source", "person", "reason")
CROP_JPEG_QUALITY = 95
# A face under this share of the subject's area is a passer-by, never a rival.
RIVAL_AREA_SHARE = 0.25
# A rival face whose centre is within this share of the image diagonal of the subject's
# distance from the centre makes the photo ambiguous.
AMBIGUOUS_OFFSET_SHARE = 0.1
HARVEST_FILE = "harvest.json"  # training/harvest.py writes it; read here without importing
CROP_SIZE = 112
# An aligned crop's eyes sit where the template puts them.
TEMPLATE_INTEROCULAR_PX = float(np.linalg.norm(ARCFACE_TEMPLATE_112[1] - ARCFACE_TEMPLATE_112[0]))


@dataclass(frozen=True)
class Outcome:
    source: str
    person: str
    crop_jpeg: bytes | None
    interocular_px: float
    reason: str


def list_sources(folder: Path) -> Iterator[tuple[str, Path]]:
    """(person, image path) for every image under ``folder/PERSON/``, in a fixed order."""
    for person in sorted(p for p in folder.iterdir() if p.is_dir()):
        for image in sorted(person.iterdir()):
            if image.suffix.lower() in IMAGE_SUFFIXES:
                yield person.name, image


# One pipeline per worker process: TFLite interpreters are not shared between processes.
_pipeline: FacePipeline | None = None


def _start_worker(models_dir: str, alignment: str) -> None:
    global _pipeline
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _pipeline = FacePipeline.without_embedder(models_dir, alignment=alignment)


def align_one(job: tuple[str, str]) -> Outcome:
    """The crop of the one subject of a photo, or why there is none."""
    person, source = job
    try:
        frame, _ = read_image(source)
    except FacegateError as error:
        return Outcome(source, person, None, 0.0, f"unreadable: {error}")
    faces = _pipeline.locate(frame, thorough=True)
    if not faces:
        return Outcome(source, person, None, 0.0, "no face found")
    subject, rivals = choose_subject(faces, frame.shape)
    if rivals:
        return Outcome(source, person, None, 0.0,
                       f"{rivals + 1} faces of similar size near the centre")
    ok, encoded = cv2.imencode(".jpg", subject.aligned, [cv2.IMWRITE_JPEG_QUALITY,
                                                         CROP_JPEG_QUALITY])
    interocular = float(np.linalg.norm(subject.landmarks5[1] - subject.landmarks5[0]))
    return Outcome(source, person, encoded.tobytes() if ok else None, interocular,
                   "" if ok else "could not encode the crop")


def harvested_crops(folder: Path) -> dict[str, str]:
    """``{"PERSON/FILE": alignment}`` for the aligned crops a harvest in ``folder`` lists
    (empty when ``folder`` is no harvest); an unfinished or unreadable harvest is refused."""
    path = folder / HARVEST_FILE
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
        if not record.get("complete"):
            raise FacegateError(f"{path}: that harvest did not finish; run harvest again")
        return {str(entry["file"]): str(entry["alignment"])
                for entry in record.get("aligned_crops", [])}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
        raise FacegateError(f"{path} is not a harvest record ({error})") from None


def take_aligned(person: str, source: str, made_with: str, alignment: str) -> Outcome:
    """A harvested crop, already aligned, taken as it is (or why not)."""
    if made_with != alignment:
        return Outcome(source, person, None, 0.0,
                       f"aligned crop of another alignment: made with {made_with}, this "
                       f"prepare aligns with {alignment} (use --alignment {made_with})")
    try:
        data = Path(source).read_bytes()
    except OSError as error:
        return Outcome(source, person, None, 0.0, f"unreadable: {error.strerror or error}")
    crop = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if crop is None:
        return Outcome(source, person, None, 0.0, "unreadable: the aligned crop does not decode")
    if crop.shape[:2] != (CROP_SIZE, CROP_SIZE):
        return Outcome(source, person, None, 0.0,
                       f"aligned crop not {CROP_SIZE}x{CROP_SIZE}: {crop.shape[1]}x"
                       f"{crop.shape[0]}")
    if not data.startswith(b"\xff\xd8\xff"):  # keep the crops' one format
        ok, encoded = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, CROP_JPEG_QUALITY])
        data = encoded.tobytes() if ok else b""
    return Outcome(source, person, data or None, TEMPLATE_INTEROCULAR_PX,
                   "" if data else "could not encode the crop")


def choose_subject(faces: list[LocatedFace], frame_shape: tuple[int, ...]
                   ) -> tuple[LocatedFace, int]:
    """The labelled face of a dataset photo, and how many faces could equally be it.

    Face datasets (LFW, CASIA-WebFace, VGGFace2) centre the labelled person, and one photo in
    eight of LFW has someone else of similar size beside them, so the subject is the face
    nearest the centre. Another face of similar size (the enrolment rule's quarter of the
    area) almost as near the centre makes the label ambiguous: that photo is rejected.
    """
    height, width = frame_shape[:2]
    centre, diagonal = np.array([width / 2, height / 2]), float(np.hypot(width, height))

    def offset(face: LocatedFace) -> float:
        box = face.box
        return float(np.linalg.norm((box[:2] + box[2:]) / 2 - centre))

    by_offset = sorted(faces, key=offset)
    subject = by_offset[0]
    rivals = [f for f in by_offset[1:]
              if f.area >= RIVAL_AREA_SHARE * subject.area
              and offset(f) < offset(subject) + AMBIGUOUS_OFFSET_SHARE * diagonal]
    return subject, len(rivals)

def _done_sources(out: Path) -> set[str]:
    done = set()
    for name in ("manifest.csv", "rejected.csv"):
        path = out / name
        if path.is_file():
            with path.open(newline="") as file:
                done.update(row["source"] for row in csv.DictReader(file))
    return done


def _appender(path: Path, fields: tuple[str, ...]):
    new = not path.is_file()
    file = path.open("a", newline="")
    writer = csv.DictWriter(file, fields)
    if new:
        writer.writeheader()
    return file, writer


def prepare(source: Path, out: Path, *, workers: int = 0, alignment: str = "similarity",
            models_dir: Path | None = None, max_people: int | None = None,
            progress: bool = True) -> dict:
    """Align ``source`` into ``out`` (resumable); returns the counts written to prepare.json."""
    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise FacegateError(f"{source} is not a folder (expected one sub-folder per person)")
    models_dir = Path(models_dir) if models_dir else default_models_dir()
    settings = {"source": str(source.resolve()), "alignment": alignment, "size": 112,
                "template": "ArcFace 5-point", "crop_format": "BGR JPEG q95"}
    settings_path = out / "prepare.json"
    if settings_path.is_file():
        previous = json.loads(settings_path.read_text())["settings"]
        if previous != settings:
            raise FacegateError(f"{out} was prepared with other settings ({previous}); "
                                "use a new --out folder")
    out.mkdir(parents=True, exist_ok=True)
    sources = list(list_sources(source))
    if max_people is not None:
        keep = set(sorted({person for person, _ in sources})[:max_people])
        sources = [(p, s) for p, s in sources if p in keep]
    done = _done_sources(out)
    aligned = harvested_crops(source)
    jobs = [(person, str(path)) for person, path in sources if str(path) not in done]
    taken = [(p, s) for p, s in jobs if f"{p}/{Path(s).name}" in aligned]
    jobs = [job for job in jobs if job not in taken]
    workers = workers or max(1, (os.cpu_count() or 2))
    manifest_file, manifest = _appender(out / "manifest.csv", MANIFEST_FIELDS)
    rejected_file, rejected = _appender(out / "rejected.csv", REJECTED_FIELDS)
    bar = _progress_bar(len(sources), len(sources) - len(jobs) - len(taken), progress)

    def record(outcome: Outcome) -> None:
        _record(outcome, out, manifest, rejected)
        manifest_file.flush(), rejected_file.flush()
        bar.update(1)

    try:
        for person, path in taken:
            record(take_aligned(person, path, aligned[f"{person}/{Path(path).name}"],
                                alignment))
        if jobs:
            with multiprocessing.get_context("spawn").Pool(
                    workers, _start_worker, (str(models_dir), alignment)) as pool:
                for outcome in pool.imap_unordered(align_one, jobs, chunksize=4):
                    record(outcome)
    finally:
        bar.close()
        manifest_file.close(), rejected_file.close()
    counts = summarise(out)
    settings_path.write_text(json.dumps({"settings": settings, **counts}, indent=2))
    return counts


def _record(outcome: Outcome, out: Path, manifest, rejected) -> None:
    if outcome.crop_jpeg is None:
        rejected.writerow({"source": outcome.source, "person": outcome.person,
                           "reason": outcome.reason})
        return
    # The crop's name comes from the dataset's own file name, under the person's folder.
    crop = Path("crops") / outcome.person / (Path(outcome.source).stem + ".jpg")
    (out / crop).parent.mkdir(parents=True, exist_ok=True)
    temporary = out / crop.with_suffix(".tmp")
    temporary.write_bytes(outcome.crop_jpeg)
    temporary.replace(out / crop)
    manifest.writerow({"crop": crop.as_posix(), "person": outcome.person,
                       "source": outcome.source,
                       "interocular_px": round(outcome.interocular_px, 1)})


def summarise(out: Path) -> dict:
    with (out / "manifest.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    with (out / "rejected.csv").open(newline="") as file:
        reasons: dict[str, int] = {}
        for row in csv.DictReader(file):
            key = row["reason"].split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
    return {"crops": len(rows), "people": len({r["person"] for r in rows}),
            "rejected": sum(reasons.values()), "rejected_by_reason": reasons}


class _NoBar:
    def update(self, n: int) -> None: ...
    def close(self) -> None: ...


def _progress_bar(total: int, done: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit="image", desc="aligning",
                disable=None, file=sys.stderr)
