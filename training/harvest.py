"""``harvest``: a door's faces, one folder per person, for ``prepare`` and fine-tuning.

The technician's loop from a door back to training. From a copy of the door's database
(``facegate.db``) and its snapshots folder, ``harvest --db facegate.db --out DIR`` writes:

- ``DIR/PERSON/template-<template id>.jpg``: the gallery's stored enrolment crops, already
  aligned (112x112 BGR JPEG, ArcFace 5-point similarity alignment: what the door's enrolment
  made them with); ``prepare`` takes these as they are;
- ``DIR/PERSON/grant-<event id>.jpg``: the face snapshot of each *granted* access event
  whose score is at least ``--min-score``: a box crop with margin of a real door photo, which
  ``prepare`` detects and aligns like any dataset photo;
- ``DIR/harvest.json``: when, from which database, with which options, how many files per
  person, what was skipped and why, and which files are aligned crops.

Only people still enrolled are harvested (a row in ``people``): a deleted person's events
are skipped even when their snapshot file is still on disk. Inactive people are left out
unless ``--include-inactive``: access withdrawn is often someone who has left, and their
face should not leave the door for training by default.

Why the default ``--min-score`` is 0.6: a grant is only as sure as its score, and a grant
just above the door's threshold is where a false accept would sit. A cosine of 0.6 is above
the door's own open-set threshold for the default SFace model up to about 5,000 people
(0.547 at 1,000, 0.583 at 3,000: the card's ``by_gallery_size``), so a stranger let in by
mistake rarely reaches it, while most genuine door photos do (0.57 to 0.84 on the LFW photos
of the tests). Where the door's threshold is higher (a larger gallery; the MobileFaceNet
cards, 0.79) every grant is above it anyway: in effect the bar is the higher of the two.

Hazard: the output is personal data (faces, with names as folder names). Keep it on the
technician's machine and delete it after the run; the command says so each time.

No path from the database becomes a path unchecked: folder names are made from person names
by keeping ``[A-Za-z0-9_-]`` (others become ``_``; names that then collide, ignoring case,
get a short id suffix), ids must look like ids, and snapshot paths must have the shape the
door makes (:class:`device.events.snapshots.Snapshots`).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from device.config import SNAPSHOTS_FOLDER
from device.errors import FacegateError

HARVEST_FILE = "harvest.json"
HARVEST_FORMAT = "facegate-harvest 1"
DEFAULT_MIN_SCORE = 0.6  # cosine of unit embeddings; see the module docstring
CROP_SIZE = 112
_SAFE_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
_SAFE_MODEL = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_UNSAFE_CHARACTER = re.compile(r"[^A-Za-z0-9_-]")
_MAX_FOLDER_NAME = 64
# What a harvest writes, and so what a later harvest into the same folder may remove.
_HARVESTED_FILE = re.compile(r"(template|grant)-[A-Za-z0-9-]{1,64}\.jpg")


def add_parser(sub) -> None:
    parser = sub.add_parser("harvest", help="a door's faces, one folder per person",
                            description="Write the gallery's enrolment crops and the face "
                            "snapshots of confident granted events, one folder per enrolled "
                            "person, for prepare and fine-tuning. The output is personal "
                            "data: keep it on this machine and delete it after the run.")
    parser.add_argument("--db", type=Path, required=True,
                        help="the door's database (a copy of its facegate.db)")
    parser.add_argument("--out", type=Path, required=True,
                        help="an empty folder, or an earlier harvest (written again)")
    parser.add_argument("--snapshots", type=Path, default=None,
                        help=f"the door's snapshots folder (default: {SNAPSHOTS_FOLDER}/ "
                             "beside --db, as the door keeps it)")
    parser.add_argument("--min-score", type=float, default=DEFAULT_MIN_SCORE,
                        help="least cosine of a granted event to take its snapshot "
                             f"(default: {DEFAULT_MIN_SCORE})")
    parser.add_argument("--include-inactive", action="store_true", default=False,
                        help="harvest inactive people too (default: only active ones)")


def harvest_command(values: dict) -> dict:
    """``harvest`` from the merged command-line values; prints the personal-data warning."""
    db = Path(values["db"])
    snapshots = Path(values["snapshots"]) if values.get("snapshots") else None
    summary = harvest(db, Path(values["out"]), snapshots=snapshots,
                      min_score=float(values.get("min_score", DEFAULT_MIN_SCORE)),
                      include_inactive=bool(values.get("include_inactive")),
                      command_line=values.get("command_line"))
    print(f"warning: {summary['out']} now holds personal data (the faces of "
          f"{summary['people']} people): keep it on this machine and delete it after "
          "training", file=sys.stderr)
    return summary


# --- Who and what ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Enrolled:
    id: str
    name: str
    active: bool


def folder_names(people: list[_Enrolled]) -> dict[str, str]:
    """A safe, distinct folder name for each person id.

    Names keep ``[A-Za-z0-9_-]``; every other character becomes ``_``. Names that then
    collide (ignoring case: the technician's disk may fold it) all get ``-<id prefix>``.
    """
    def plain(name: str) -> str:
        return _UNSAFE_CHARACTER.sub("_", name)[:_MAX_FOLDER_NAME] or "_"

    def id_part(person_id: str, length: int) -> str:
        return _UNSAFE_CHARACTER.sub("", person_id)[:length] or "x"

    base = {p.id: plain(p.name) for p in people}
    taken = Counter(name.casefold() for name in base.values())
    names = {pid: (name if taken[name.casefold()] == 1 else f"{name}-{id_part(pid, 8)}")
             for pid, name in base.items()}
    again = Counter(name.casefold() for name in names.values())
    return {pid: (name if again[name.casefold()] == 1 else f"{base[pid]}-{id_part(pid, 64)}")
            for pid, name in names.items()}


def _template_alignment(model: str, models_dir: Path | None) -> str:
    """How a model's crops were aligned: its card's ``alignment.method``; "similarity", the
    pipeline's own default, when the card names none or is not on this machine."""
    from device.vision.models import default_models_dir

    if not _SAFE_MODEL.fullmatch(model) or ".." in model:
        return "similarity"
    card = (Path(models_dir) if models_dir else default_models_dir()) / f"{model}.json"
    try:
        return json.loads(card.read_text()).get("alignment", {}).get("method", "similarity")
    except (OSError, ValueError, AttributeError):
        return "similarity"


# --- The output folder -------------------------------------------------------------------------


def _ready_output(out: Path) -> None:
    """An empty folder, or an earlier harvest with its harvested files removed (so a person
    deleted since leaves nothing behind); anything else is refused."""
    if out.exists() and not out.is_dir():
        raise FacegateError(f"{out} is a file, not a folder for the harvest")
    if out.is_dir() and any(out.iterdir()):
        if not (out / HARVEST_FILE).is_file():
            raise FacegateError(f"{out} is not empty and holds no {HARVEST_FILE}: harvest "
                                "writes only into an empty folder or an earlier harvest")
        for folder in [p for p in out.iterdir() if p.is_dir() and not p.is_symlink()]:
            for file in folder.iterdir():
                if file.is_file() and _HARVESTED_FILE.fullmatch(file.name):
                    file.unlink()
            if not any(folder.iterdir()):
                folder.rmdir()
    out.mkdir(parents=True, exist_ok=True)


def _write_record(out: Path, record: dict) -> None:
    temporary = out / (HARVEST_FILE + ".tmp")
    temporary.write_text(json.dumps(record, indent=2) + "\n")
    temporary.replace(out / HARVEST_FILE)


# --- The harvest -------------------------------------------------------------------------------


def harvest(db: Path, out: Path, *, snapshots: Path | None = None,
            min_score: float = DEFAULT_MIN_SCORE, include_inactive: bool = False,
            models_dir: Path | None = None, command_line: str | None = None) -> dict:
    """Write ``out`` from the door database ``db`` (see the module docstring); returns the
    summary (what ``harvest.json`` holds, without its list of files).

    ``snapshots`` defaults to ``snapshots/`` beside ``db``, where the door keeps it
    (``[paths] data_dir``). Missing snapshot files are counted and skipped.
    """
    from device.events.snapshots import Snapshots
    from device.gallery.store import Gallery

    db, out = Path(db), Path(out)
    if not db.is_file():
        raise FacegateError(f"no database at {db} ({'a folder' if db.is_dir() else 'missing'}"
                            "): --db names a copy of the door's facegate.db")
    snapshots = Path(snapshots) if snapshots is not None else db.parent / SNAPSHOTS_FOLDER
    record = {"format": HARVEST_FORMAT, "complete": False,
              "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
              "db": str(db.resolve()), "snapshots": str(snapshots.resolve()),
              "options": {"min_score": min_score, "include_inactive": include_inactive},
              "command_line": command_line}
    skipped: Counter[str] = Counter()
    per_person: dict[str, Counter[str]] = {}
    aligned: list[dict] = []
    with Gallery(db) as gallery:  # first: a file that is no gallery leaves no folder behind
        _ready_output(out)
        # Written first: an interrupted harvest is still known as one, and is written again.
        _write_record(out, record)
        people = [_Enrolled(row["id"], row["name"], bool(row["active"]))
                  for row in gallery.db.query("SELECT id, name, active FROM people")]
        enrolled = {p.id for p in people}
        kept = {p.id: p for p in people if p.active or include_inactive}
        folders = folder_names(list(kept.values()))

        def target(person_id: str, kind: str, item_id: str) -> Path | None:
            if not _SAFE_ID.fullmatch(item_id):
                skipped["unsafe_id"] += 1
                return None
            folder = out / folders[person_id]
            folder.mkdir(exist_ok=True)
            per_person.setdefault(folders[person_id], Counter())[kind + "s"] += 1
            return folder / f"{kind}-{item_id}.jpg"

        alignments: dict[str, str] = {}
        seen_sources: set[tuple[str, str]] = set()
        current = gallery.model
        for row in gallery.db.query(
                "SELECT id, person_id, model, source_sha256, crop_jpeg FROM templates"
                " WHERE crop_jpeg IS NOT NULL ORDER BY model != ?, created_at, id",
                [current or ""]):
            if row["person_id"] not in kept:
                skipped["templates_of_inactive_people"] += 1
                continue
            # A site's model switch keeps the same crop under two models: take it once.
            source = (row["person_id"], row["source_sha256"])
            if source in seen_sources:
                continue
            seen_sources.add(source)
            path = target(row["person_id"], "template", row["id"])
            if path is None:
                continue
            path.write_bytes(bytes(row["crop_jpeg"]))
            model = row["model"]
            alignments.setdefault(model, _template_alignment(model, models_dir))
            aligned.append({"file": path.relative_to(out).as_posix(),
                            "alignment": alignments[model], "size": CROP_SIZE})

        folder_of_snapshots = Snapshots(snapshots)
        for row in gallery.db.query(
                "SELECT id, person_id, score, face_path FROM events WHERE kind = 'granted'"
                " ORDER BY at, id"):
            person_id = row["person_id"]
            if person_id is None or person_id not in enrolled:
                skipped["person_not_enrolled"] += 1
            elif person_id not in kept:
                skipped["person_inactive"] += 1
            elif row["score"] is None or row["score"] < min_score:
                skipped["below_min_score"] += 1
            elif row["face_path"] is None:
                skipped["without_snapshot"] += 1
            else:
                _copy_snapshot(folder_of_snapshots, row, target, skipped)

    people_counts = {folder: {"templates": c["templates"], "grants": c["grants"]}
                     for folder, c in sorted(per_person.items())}
    summary = {
        "out": str(out),
        "people": len(people_counts),
        "templates": sum(c["templates"] for c in people_counts.values()),
        "grants": sum(c["grants"] for c in people_counts.values()),
        "skipped": dict(sorted(skipped.items())),
    }
    record.update({"complete": True, **summary, "per_person": people_counts,
                   "aligned_crops": aligned})
    _write_record(out, record)
    return summary


def _copy_snapshot(snapshots, row: dict, target, skipped: Counter) -> None:
    try:
        source = snapshots.path(row["face_path"])
    except ValueError:  # not a path the door makes: never followed
        skipped["unsafe_path"] += 1
        return
    if not source.is_file():
        skipped["missing_snapshot"] += 1
        return
    path = target(row["person_id"], "grant", row["id"])
    if path is not None:
        shutil.copyfile(source, path)
