"""Measure which face of a photo to enrol: the old rule, the training rule and ours, on lfw-a.

    python -m training.measure_subject_rule --cache var/subject-cache \
        --json bench/results/enrolment-subject.json

The door's own pipeline (``FacePipeline.process(frame, thorough=True)``, as enrolment runs it)
sees every image once; every face it returns is cached (box, score, embedding), so the rules
are then scored in seconds, without the networks. For each rule and setting:

- **refused**: the share of photos the rule refuses as ambiguous (``SeveralFaces``);
- **wrong person**: the share of the photos it accepts where the chosen face is not the person
  of the folder while another face of the photo is. Judged by identity, not geometry: a face's
  *identity score* is the median, over the person's other photos, of its best cosine to any
  face of that photo (no rule picks those faces, so no rule is judged by its own choices); a
  face "is the person" at the embedder card's 1:1 verification threshold (0.394 for the int8
  SFace: 0.1% of different-person pairs pass);
- **not centre**: the share of accepted photos where the chosen face is not the face nearest
  the image centre (the training rule's choice: LFW centres the labelled person).

LFW centres the labelled person, so a rule that leans on centrality cannot be caught out on
lfw-a itself; every lfw-a photo with two or more faces is therefore also cut to squares at its
four corners and run through the pipeline again (``shifted_views``): the subject is then off
centre and the faces at the edge move inward, as in an enrolment photo taken carelessly. The
``multi-face/`` and ``wild/`` folders of ``../shared/data`` are run as a sanity check.

The rule chosen is the one that refuses fewest lfw-a photos while choosing the wrong person in
at most ``MAX_WRONG_SHARE`` of the accepted photos, on lfw-a and on the shifted views alike.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.enrolment.subject import (
    CENTRE_WEIGHT,
    SIMILAR_PROMINENCE,
    choose_subject,
    offset_from_centre,
    prominence,
)
from device.errors import FacegateError, SeveralFaces
from device.vision.image_io import read_image
from device.vision.models import default_models_dir
from device.vision.pipeline import FacePipeline
from training.evaluate import embedding_cache_tag

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".webp"}
# The rule enrolment used before choose_subject (the_one_face in device/enrolment/ until the
# enrolment service): the largest face, refused when another has this share of its area.
OLD_AREA_SHARE = 0.25
# training/prepare.py's rule (choose_subject there, copied so that this measure stays put when
# prepare changes): the face nearest the centre; refused when another face of at least
# OLD_AREA_SHARE of its area is less than this share of the diagonal farther from the centre.
PREPARE_OFFSET_SHARE = 0.1
# Our rule's settings tried, (centre weight, similar prominence); the default is among them.
SETTINGS = ((0.0, 0.5), (0.5, 0.5), (0.75, 0.5), (1.0, 0.25), (1.0, 0.4), (1.0, 0.45),
            (1.0, 0.5), (1.0, 0.55), (1.0, 0.6), (1.25, 0.4), (1.25, 0.5), (1.5, 0.5))
# The shifted views' side, as a share of the photo's shorter side (see shifted_views).
SHIFT_FRACTIONS = (0.7, 0.85)
# "Almost never": at most this share of the accepted photos with the wrong person chosen.
MAX_WRONG_SHARE = 0.001
EXAMPLES_PER_KIND = 5


# --- every face of every image, once ----------------------------------------------------------

@dataclass(frozen=True)
class CachedFace:
    """What a rule may look at: the pipeline's box and area (and, for judging, the embedding)."""

    box: np.ndarray  # (4,) x1, y1, x2, y2 in frame pixels, clipped to the frame
    score: float
    embedding: np.ndarray

    @property
    def area(self) -> float:
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))


@dataclass(frozen=True)
class Photo:
    path: str  # the image, or for a shifted view "IMAGE@x,y,size" (the square cut out)
    person: str  # the folder's name ("" for a folder of loose photos)
    shape: tuple[int, int]  # height, width
    faces: list[CachedFace]  # largest first, as the pipeline returns them


def list_images(folder: Path) -> list[tuple[str, Path]]:
    """(person, path) for ``folder/PERSON/*`` images and for loose images in ``folder``."""
    found = [("", p) for p in sorted(folder.iterdir())
             if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    for person in sorted(p for p in folder.iterdir() if p.is_dir()):
        found += [(person.name, p) for p in sorted(person.iterdir())
                  if p.suffix.lower() in IMAGE_SUFFIXES]
    return found


def detect_folder(folder: Path, pipeline: FacePipeline, cache: Path | None = None,
                  progress: bool = True) -> list[Photo]:
    """Every face of every image under ``folder`` (cached in ``cache``, an .npz, if given)."""
    if cache is not None and cache.is_file():
        return _load(cache)
    photos = []
    images = list_images(folder)
    for number, (person, path) in enumerate(images, 1):
        try:
            frame, _ = read_image(path)
        except FacegateError:
            continue
        faces = [CachedFace(face.box.astype(np.float32), float(face.score), face.embedding)
                 for face in pipeline.process(frame, thorough=True)]
        photos.append(Photo(str(path), person, frame.shape[:2], faces))
        if progress and number % 250 == 0:
            print(f"{folder.name}: {number}/{len(images)} images", file=sys.stderr)
    if cache is not None:
        _save(cache, photos)
    return photos


def _save(cache: Path, photos: list[Photo]) -> None:
    faces = [(row, face) for row, photo in enumerate(photos) for face in photo.faces]
    dim = faces[0][1].embedding.shape[0] if faces else 0
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, paths=np.array([p.path for p in photos]),
             people=np.array([p.person for p in photos]),
             shapes=np.array([p.shape for p in photos], np.int32).reshape(-1, 2),
             face_photo=np.array([row for row, _ in faces], np.int32),
             boxes=np.array([f.box for _, f in faces], np.float32).reshape(-1, 4),
             scores=np.array([f.score for _, f in faces], np.float32),
             embeddings=np.array([f.embedding for _, f in faces], np.float32).reshape(-1, dim))


def _load(cache: Path) -> list[Photo]:
    data = np.load(cache, allow_pickle=False)
    photos = [Photo(str(path), str(person), (int(shape[0]), int(shape[1])), [])
              for path, person, shape in zip(data["paths"], data["people"], data["shapes"],
                                             strict=True)]
    for row, box, score, embedding in zip(data["face_photo"], data["boxes"], data["scores"],
                                          data["embeddings"], strict=True):
        photos[row].faces.append(CachedFace(box, float(score), embedding))
    return photos


def shifted_views(photos: list[Photo], pipeline: FacePipeline, fractions=SHIFT_FRACTIONS,
                  cache: Path | None = None) -> list[Photo]:
    """Each photo with two or more faces, cut to a square of ``fractions`` of its shorter side
    at each of its four corners, and run through the pipeline again.

    LFW centres the labelled person, so on lfw-a a rule may lean on centrality and never be
    caught. Cut to a corner, the subject lies a fifth (0.85) to a half (0.7) of the way to the
    corner of the view, and faces at the edge move inward: enrolment photos are not always
    centred, and a rule must still choose the person of the folder.
    """
    if cache is not None and cache.is_file():
        return _load(cache)
    views = []
    for photo in photos:
        if len(photo.faces) < 2:
            continue
        frame, _ = read_image(photo.path)
        height, width = frame.shape[:2]
        for fraction in fractions:
            size = int(round(min(height, width) * fraction))
            for x, y in ((0, 0), (width - size, 0), (0, height - size),
                         (width - size, height - size)):
                view = np.ascontiguousarray(frame[y:y + size, x:x + size])
                faces = [CachedFace(f.box.astype(np.float32), float(f.score), f.embedding)
                         for f in pipeline.process(view, thorough=True)]
                views.append(Photo(f"{photo.path}@{x},{y},{size}", photo.person, (size, size),
                                   faces))
    if cache is not None:
        _save(cache, views)
    return views


# --- the rules: a photo -> the index of the chosen face, or None when refused -----------------

Rule = Callable[[Photo], "int | None"]


def old_rule(photo: Photo) -> int | None:
    """The largest face, unless another has at least a quarter of its area."""
    faces = photo.faces
    if any(f.area >= OLD_AREA_SHARE * faces[0].area for f in faces[1:]):
        return None
    return 0


def prepare_rule(photo: Photo) -> int | None:
    """The face nearest the centre, unless a face of similar size is almost as near."""
    offsets = [offset_from_centre(f.box, photo.shape) for f in photo.faces]
    # prepare.py measures in shares of the whole diagonal; offset_from_centre of half of it.
    by_offset = sorted(range(len(photo.faces)), key=lambda i: offsets[i])
    subject = by_offset[0]
    rivals = [i for i in by_offset[1:]
              if photo.faces[i].area >= OLD_AREA_SHARE * photo.faces[subject].area
              and offsets[i] < offsets[subject] + 2 * PREPARE_OFFSET_SHARE]
    return None if rivals else subject


def our_rule(centre_weight: float = CENTRE_WEIGHT,
             similar_prominence: float = SIMILAR_PROMINENCE) -> Rule:
    """device.enrolment.subject.choose_subject with these settings."""
    def rule(photo: Photo) -> int | None:
        try:
            return choose_subject(photo.faces, photo.shape, centre_weight=centre_weight,
                                  similar_prominence=similar_prominence)
        except SeveralFaces:
            return None
    return rule


def visible_share_rule(photo: Photo) -> int | None:
    """Ours with the prominence also weighted by the share of the face inside the frame (the
    detector's boxes are square, so a clipped box's short side over its long one): tried, and
    not kept, because the clipped area already counts only the visible part."""
    scores = [prominence(f, photo.shape) * _square_share(f.box) for f in photo.faces]
    order = np.argsort(scores)[::-1]
    if len(order) > 1 and scores[order[1]] >= SIMILAR_PROMINENCE * scores[order[0]]:
        return None
    return int(order[0])


def all_rules() -> dict[str, Rule]:
    rules = {f"old: largest, refused at {OLD_AREA_SHARE:g} of its area": old_rule,
             "prepare: nearest the centre": prepare_rule}
    for weight, share in SETTINGS:
        rules[rule_name(weight, share)] = our_rule(weight, share)
    rules["tried: ours x share of the face inside the frame"] = visible_share_rule
    return rules


def rule_name(centre_weight: float, similar_prominence: float) -> str:
    return f"ours: centre weight {centre_weight:g}, refused at {similar_prominence:g}"


# --- judging by identity ----------------------------------------------------------------------

def identity_scores(photos: list[Photo], references: list[Photo]) -> list[np.ndarray]:
    """For every face of every photo: the median, over the same person's other reference
    photos, of its best cosine to any face there (NaN with no other photo to compare).

    Embeddings are unit length, so a dot product is a cosine. A shifted view is compared with
    every photo of its person except the one it was cut from.
    """
    by_person: dict[str, list[Photo]] = defaultdict(list)
    for reference in references:
        if reference.faces and reference.person:
            by_person[reference.person].append(reference)
    scores = []
    for photo in photos:
        source = photo.path.split("@")[0]
        others = [r for r in by_person.get(photo.person, []) if r.path != source]
        if not photo.faces or not others:
            scores.append(np.full(len(photo.faces), np.nan))
            continue
        mine = np.stack([f.embedding for f in photo.faces])
        best = np.stack([(mine @ np.stack([g.embedding for g in other.faces]).T).max(axis=1)
                         for other in others])
        scores.append(np.median(best, axis=0))
    return scores


def nearest_centre(photo: Photo) -> int:
    return int(np.argmin([offset_from_centre(f.box, photo.shape) for f in photo.faces]))


def score_rule(rule: Rule, photos: list[Photo], identity: list[np.ndarray],
               threshold: float) -> dict:
    """Counts and shares for one rule on photos with at least one face."""
    judged = [(p, s) for p, s in zip(photos, identity, strict=True) if p.faces]
    refused = wrong = not_centre = unverifiable = 0
    wrong_photos = []
    for photo, scores in judged:
        chosen = rule(photo)
        if chosen is None:
            refused += 1
            continue
        not_centre += chosen != nearest_centre(photo)
        known = scores[~np.isnan(scores)]
        if not len(known) or known.max() < threshold:
            unverifiable += 1
        elif scores[chosen] < threshold:
            wrong += 1
            wrong_photos.append(photo.path)
    accepted = len(judged) - refused
    return {"photos": len(judged),
            "with_several_faces": sum(len(p.faces) > 1 for p, _ in judged),
            "refused": refused, "refused_share": _share(refused, len(judged)),
            "accepted": accepted,
            "wrong_person": wrong, "wrong_person_share": _share(wrong, accepted),
            "not_centre": not_centre, "not_centre_share": _share(not_centre, accepted),
            "unverifiable": unverifiable, "wrong_person_photos": wrong_photos}


def _share(count: int, total: int) -> float:
    return round(count / total, 5) if total else 0.0


def pick_rule(results: dict[str, dict[str, dict]], sets: tuple[str, ...]) -> str:
    """Our setting with the fewest refusals on the first set whose wrong-person share stays at
    most MAX_WRONG_SHARE on every set."""
    ours = [name for name in results if name.startswith("ours:")]
    fit = [name for name in ours
           if all(results[name][s]["wrong_person_share"] <= MAX_WRONG_SHARE for s in sets)]
    return min(fit or ours, key=lambda name: (results[name][sets[0]]["refused"], name))


# --- the photos a test can use ---------------------------------------------------------------

def examples(photos: list[Photo], identity: list[np.ndarray], threshold: float) -> dict:
    """lfw-a photos the old rule refused and ours accepts with the person's own face: the
    second face cut by the frame's edge, or whole but at the side."""
    found: dict[str, list[dict]] = {"cut_by_the_edge": [], "beside": []}
    rule = our_rule()
    for photo, scores in zip(photos, identity, strict=True):
        if len(photo.faces) < 2 or old_rule(photo) is not None:
            continue
        chosen = rule(photo)
        if chosen is None or not scores[chosen] >= threshold:
            continue
        rivals = [f for i, f in enumerate(photo.faces) if i != chosen]
        cut = any(_is_cut(f.box) for f in rivals)
        kind = found["cut_by_the_edge" if cut else "beside"]
        if len(kind) < EXAMPLES_PER_KIND:
            kind.append({"photo": photo.path, "faces": len(photo.faces), "chosen": chosen,
                         "boxes": [[round(float(v), 1) for v in f.box] for f in photo.faces],
                         "identity": [round(float(v), 3) for v in scores]})
    return found


def _square_share(box: np.ndarray) -> float:
    """The detector's boxes are square (to 0.03% on lfw-a), so a clipped box's short side over
    its long one is about the share of the face inside the frame."""
    width, height = float(box[2] - box[0]), float(box[3] - box[1])
    return min(width, height) / max(width, height, 1e-9)


def _is_cut(box: np.ndarray) -> bool:
    return _square_share(box) < 0.8


def multi_face_report(photos: list[Photo], rules: dict[str, Rule]) -> list[dict]:
    """What each rule does with each photo of a folder without people (multi-face/)."""
    report = []
    for photo in photos:
        outcome = {}
        for name, rule in rules.items():
            chosen = rule(photo) if photo.faces else None
            outcome[name] = "refused" if chosen is None else f"face {chosen}"
        report.append({"photo": photo.path, "faces": len(photo.faces), "rules": outcome})
    return report


# --- the whole measurement --------------------------------------------------------------------

def measure(data: Path, cache: Path | None, models_dir: Path | None = None,
            progress: bool = True) -> dict:
    """Every figure of the JSON: lfw-a, its shifted views, wild/ and multi-face/."""
    pipeline = FacePipeline.from_models_dir(models_dir)
    threshold = float(pipeline.embedder_card.card["verification_threshold"]["score"])
    shared = data.parent

    def cached(name: str) -> Path | None:
        # The tag changes with the detector's code and models (a stale cache is not reused).
        return cache / f"{embedding_cache_tag(pipeline)}-thorough-{name}.npz" if cache else None

    lfw = detect_folder(data, pipeline, cached(data.name), progress)
    views = "-".join(f"{f:g}" for f in SHIFT_FRACTIONS)
    shifted = shifted_views(lfw, pipeline, cache=cached(f"{data.name}-shifted-{views}"))
    sets = {data.name: (lfw, identity_scores(lfw, lfw)),
            f"{data.name} shifted": (shifted, identity_scores(shifted, lfw))}
    wild_folder = shared / "wild"
    if wild_folder.is_dir():
        wild = detect_folder(wild_folder, pipeline, cached("wild"), progress)
        sets["wild"] = (wild, identity_scores(wild, wild))
    rules = all_rules()
    results = {name: {set_name: score_rule(rule, photos, identity, threshold)
                      for set_name, (photos, identity) in sets.items()}
               for name, rule in rules.items()}
    judged_on = (data.name, f"{data.name} shifted")
    chosen = pick_rule(results, judged_on)
    multi_folder = shared / "multi-face"
    multi = (multi_face_report(detect_folder(multi_folder, pipeline, cached("multi-face"),
                                             progress), rules)
             if multi_folder.is_dir() else [])
    return {
        "model": pipeline.model_name,
        "verification_threshold": threshold,
        "data": str(data),
        "shift_fractions": list(SHIFT_FRACTIONS),
        "max_wrong_share": MAX_WRONG_SHARE,
        "default": rule_name(CENTRE_WEIGHT, SIMILAR_PROMINENCE),
        "chosen": chosen,
        "chosen_is_default": chosen == rule_name(CENTRE_WEIGHT, SIMILAR_PROMINENCE),
        "rules": results,
        "multi_face": multi,
        "examples": examples(lfw, sets[data.name][1], threshold),
    }


def print_table(report: dict, file=sys.stdout) -> None:
    sets = list(next(iter(report["rules"].values())))
    print(f"{'rule':<50}" + "".join(f"{s[:22]:>24}" for s in sets), file=file)
    print(f"{'':<50}" + f"{'refused wrong !centre':>24}" * len(sets), file=file)
    for name, by_set in report["rules"].items():
        mark = " *" if name == report["chosen"] else ""
        cells = "".join(f"{r['refused_share']:>8.2%}{r['wrong_person_share']:>7.2%}"
                        f"{r['not_centre_share']:>9.2%}" for r in by_set.values())
        print(f"{(name + mark)[:50]:<50}{cells}", file=file)
    print(f"* chosen: fewest refused on lfw-a, wrong person at most "
          f"{report['max_wrong_share']:.1%} on lfw-a and its shifted views; "
          f"default: {report['default']}", file=file)
    for photo in report["multi_face"]:
        outcomes = ", ".join(f"{name.split(':')[0]} {v}" for name, v in photo["rules"].items()
                             if name.startswith(("old", "prepare")) or name == report["default"])
        print(f"{Path(photo['photo']).name}: {photo['faces']} faces; {outcomes}", file=file)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.measure_subject_rule",
        description="Score the rules that pick the face to enrol from a photo with several "
                    "faces: refused share, wrong-person share (by identity), not-centre share.")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/lfw-a"),
                        help="one folder per person (default: %(default)s); wild/ and "
                             "multi-face/ beside it are measured too when present")
    parser.add_argument("--cache", type=Path, default=None,
                        help="folder for the faces found (reruns skip the networks), e.g. "
                             "var/subject-cache")
    parser.add_argument("--models-dir", type=Path, default=default_models_dir())
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    try:
        if not args.data.is_dir():
            raise FacegateError(f"{args.data} is not a folder (one sub-folder per person)")
        report = measure(args.data, args.cache, args.models_dir, progress=not args.quiet)
    except FacegateError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    report["command"] = shlex.join(["python", "-m", "training.measure_subject_rule",
                                    *(sys.argv[1:] if argv is None else argv)])
    print_table(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
