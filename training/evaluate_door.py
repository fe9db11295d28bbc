"""The product's own decisions on a face data set, through the CLI exactly as a site uses it.

The protocol of the trusted-gallery targets: ``facegate enroll --from-folder`` with each
person's FIRST photo (every enrolment rule applies: refusals, the dominant face, a face that
already matches someone else), then ``facegate identify`` on each person's next five photos
(genuine probes) and on a folder of one-photo people (strangers), at the threshold the
product chooses for that gallery size. Counted per probe photo:

- a genuine probe is *matched* when its subject face is accepted as its own person,
  *mistaken* when it is accepted as somebody else;
- a stranger is *accepted* when its subject face is accepted as anyone.

The subject face of a probe is the one enrolment would take (``choose_subject``: the most
prominent; the largest where two are alike): news photos often show a second, enrolled,
celebrity beside the labelled one, and the door recognising *that* face is right, not a false
accept. The same counts over every face of the photo are reported beside (``any_face``).

    python -m training.evaluate_door --data ../shared/data/lfw-a \\
        --strangers ../shared/data/lfw-a-singles --json bench/results/door-protocol.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from device.enrolment.subject import choose_subject
from device.errors import SeveralFaces
from training.evaluate import KNOWN_LABEL_NOISE, KNOWN_WRONG_FACE

PROBES_PER_PERSON = 5
TARGETS = {"strangers_accepted": 0.0015, "genuine_matched": 0.90, "mistaken": 0.001}


def facegate(*args: str) -> list[dict]:
    """Run the CLI as a user does; its JSON lines (a refusal exits 2, still with lines)."""
    result = subprocess.run([sys.executable, "-m", "device", *args], capture_output=True,
                            text=True, check=False)
    if result.returncode not in (0, 2):
        raise RuntimeError(f"facegate {args[0]} failed: {result.stderr.strip()[-500:]}")
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def people_photos(folder: Path) -> dict[str, list[Path]]:
    return {person.name: sorted(p for p in person.iterdir() if p.is_file())
            for person in sorted(folder.iterdir()) if person.is_dir()}


def enrol_first_photos(people: dict[str, list[Path]], db: Path, scratch: Path,
                       model: tuple[str, ...] = ()) -> list[dict]:
    """``enroll --from-folder`` over a folder holding each person's first photo."""
    first = scratch / "first-photos"
    for name, photos in people.items():
        (first / name).mkdir(parents=True)
        os.symlink(photos[0].resolve(), first / name / photos[0].name)
    return facegate("enroll", "--db", str(db), "--from-folder", str(first), "--json", *model)


def identify(db: Path, paths: list[Path], batch: int = 500) -> dict[str, list[dict]]:
    # No --model: identify runs the gallery's model, the one enrolment used.
    """Faces found in each photo, with the product's decision, by path."""
    found: dict[str, list[dict]] = {}
    for start in range(0, len(paths), batch):
        chunk = [str(p) for p in paths[start:start + batch]]
        for line in facegate("identify", "--db", str(db), *chunk):
            found[line["path"]] = line.get("faces", [])
    return found


@dataclass(frozen=True)
class _Boxed:
    box: np.ndarray

    @property
    def area(self) -> float:
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))


def subject_faces(path: str, faces: list[dict]) -> list[dict]:
    """[the probe's subject face] (see the module docstring), or [] with no face."""
    if not faces:
        return []
    shape = cv2.imread(path, cv2.IMREAD_GRAYSCALE).shape
    try:
        return [faces[choose_subject([_Boxed(np.array(f["box"])) for f in faces], shape)]]
    except SeveralFaces:
        return [faces[0]]


def accepted_as(faces: list[dict]) -> list[str]:
    return [f["person"] for f in faces if f["decision"] == "match"]


def score(people: dict[str, list[Path]], enrolled: list[dict],
          genuine: dict[str, list[dict]], strangers: dict[str, list[dict]]) -> dict:
    """The counts and shares of the protocol (see the module docstring)."""
    refused = [line for line in enrolled if line["status"] != "enrolled"]
    counts = {"matched": 0, "mistaken": 0, "any_face_matched": 0, "any_face_mistaken": 0}
    probes, mistaken_list = 0, []
    for name, photos in people.items():
        for path in photos[1:1 + PROBES_PER_PERSON]:
            if path.name in KNOWN_WRONG_FACE:
                continue
            probes += 1
            faces = genuine.get(str(path), [])
            subject = subject_faces(str(path), faces)
            for prefix, judged in (("", subject), ("any_face_", faces)):
                accepted = accepted_as(judged)
                counts[prefix + "matched"] += name in accepted
                counts[prefix + "mistaken"] += any(person != name for person in accepted)
            mistaken_list += [{"path": str(path), "as": f["person"], "score": f["score"]}
                              for f in subject if f["decision"] == "match"
                              and f["person"] != name]
    accepted_strangers = [
        {"path": path, "as": f["person"], "score": f["score"]}
        for path, faces in strangers.items() for f in subject_faces(path, faces)
        if f["decision"] == "match"]
    any_face_strangers = {path for path, faces in strangers.items() if accepted_as(faces)}
    stranger_photos = len(strangers)
    matched, mistaken = counts["matched"], counts["mistaken"]
    threshold = next((f["threshold"] for faces in genuine.values() for f in faces), None)
    figures = {
        "people": len(people),
        "enrolled": len(enrolled) - len(refused),
        "enrolment_refused": len(refused),
        "enrolment_refusals": sorted({line.get("code") or "other" for line in refused}),
        "refusal_reasons": [line["reason"] for line in refused][:40],
        "threshold_in_force": threshold,
        "genuine_probes": probes,
        "genuine_matched": round(matched / probes, 4) if probes else None,
        "mistaken": round(mistaken / probes, 4) if probes else None,
        "mistaken_count": mistaken,
        # Look at these before trusting the figure: LFW photos often show a second person.
        "mistaken_list": mistaken_list,
        "stranger_probes": stranger_photos,
        "strangers_accepted": (round(len({a["path"] for a in accepted_strangers})
                                     / stranger_photos, 4) if stranger_photos else None),
        "strangers_accepted_list": accepted_strangers,
        "any_face": {
            "genuine_matched": round(counts["any_face_matched"] / probes, 4) if probes else None,
            "mistaken": round(counts["any_face_mistaken"] / probes, 4) if probes else None,
            "strangers_accepted": (round(len(any_face_strangers) / stranger_photos, 4)
                                   if stranger_photos else None),
        },
    }
    figures["targets"] = {key: {"target": goal, "met": _met(key, figures[key], goal)}
                          for key, goal in TARGETS.items()}
    return figures


def _met(key: str, value: float | None, goal: float) -> bool | None:
    if value is None:
        return None
    return value >= goal if key == "genuine_matched" else value <= goal


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True,
                        help="one sub-folder per person; the first photo is enrolled")
    parser.add_argument("--strangers", type=Path, required=True,
                        help="people never enrolled (every photo is a stranger probe)")
    parser.add_argument("--model", help="the embedder to enrol with (default: the CLI's, "
                                        "DEFAULT_EMBEDDER)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    people = people_photos(args.data)
    # A "stranger" that is in fact an enrolled person under another name is left out, and
    # reported (training.evaluate.KNOWN_LABEL_NOISE).
    stranger_paths = [p for photos in people_photos(args.strangers).values() for p in photos
                      if p.name not in KNOWN_LABEL_NOISE]
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        db = scratch / "gallery.db"
        enrolled = enrol_first_photos(people, db, scratch,
                                      ("--model", args.model) if args.model else ())
        probes = [p for photos in people.values() for p in photos[1:1 + PROBES_PER_PERSON]]
        genuine = identify(db, probes)
        strangers = identify(db, stranger_paths)
    report = {"command": "python -m training.evaluate_door " + " ".join(
                  argv if argv is not None else sys.argv[1:]),
              "data": str(args.data), "strangers": str(args.strangers),
              "strangers_left_out_as_label_noise": KNOWN_LABEL_NOISE,
              "probes_left_out_as_someone_else": KNOWN_WRONG_FACE,
              **score(people, enrolled, genuine, strangers),
              "seconds": round(time.perf_counter() - started, 1)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items()
                      if k not in ("strangers_accepted_list", "refusal_reasons",
                                   "mistaken_list")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
