"""The ``facegate`` command line: a thin face over the vision and gallery services.

Every command has ``--help``; a failure prints one line on stderr and exits non-zero.
Results meant for scripts are JSON, one object per line.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import re
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import NoReturn

import numpy as np

from device import __version__
from device.config import SNAPSHOTS_FOLDER, Config, load_config
from device.errors import (
    DuplicateTemplate,
    FacegateError,
    GalleryUnreadable,
    IdentityConflict,
    ImageUnreadable,
    SeveralFaces,
)
from device.events import KINDS as EVENT_KINDS
from device.events import EventLog, format_event_line, parse_since
from device.gallery.engines import DATABASE_ERRORS, describe_location, is_postgres_location
from device.gallery.store import Gallery, Template
from device.identification import Decision, Identifier, embedder_name
from device.liveness import LivenessCheck, LivenessSettings, liveness_loader
from device.vision.image_io import read_image
from device.vision.models import DEFAULT_EMBEDDER, list_cards, load_card
from device.vision.pipeline import Face, FacePipeline

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".tif", ".tiff", ".webp"}
PROJECT_DIR = Path(__file__).resolve().parents[1]


def _config(args: argparse.Namespace) -> Config:
    """The configuration with this command's flags on top (loaded once per command)."""
    if getattr(args, "_config", None) is None:
        overrides = {"paths.data_dir": args.data_dir,
                     "recognition.models_dir": getattr(args, "models_dir", None)}
        overrides.update(getattr(args, "overrides", {}))
        args._config = load_config(args.config, overrides)
    return args._config


def _db_path(args: argparse.Namespace) -> Path | str:
    """``--db`` if given, else the site's PostgreSQL when the configuration is a site
    server's (``[site] database``: every gallery command then works on the whole site),
    else the configuration's database (``<data dir>/facegate.db``)."""
    if getattr(args, "db", None):
        return args.db
    config = _config(args)
    return config.site.database or config.paths.database


# --- output helpers -------------------------------------------------------------------------

def _print_json(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def _face_json(face: Face, with_embedding: bool = True) -> dict:
    result = {
        "box": [round(float(v), 1) for v in face.box],
        "score": round(face.score, 4),
        "landmarks5": [[round(float(x), 1), round(float(y), 1)] for x, y in face.landmarks5],
        "quality": face.quality.as_dict(),
    }
    if with_embedding:
        result["embedding"] = [round(float(v), 6) for v in face.embedding]
    return result


def _warn(message: str) -> None:
    print(f"facegate: {message}", file=sys.stderr, flush=True)


def _pipeline(args: argparse.Namespace, gallery: Gallery | None = None) -> FacePipeline:
    """The pipeline with the embedder the gallery's templates belong to (``--model`` or
    ``recognition.model`` must agree with it; see ``embedder_name``)."""
    config = _config(args)
    configured = getattr(args, "model", None) or config.recognition.model or None
    model = embedder_name(gallery, configured) if gallery is not None else configured
    return FacePipeline.from_models_dir(config.recognition.models_dir, embedder=model)


def _decision(args: argparse.Namespace, pipeline: FacePipeline) -> Decision:
    """The door's decision: the card's curve, or a threshold set in the configuration or on
    the settings page (a site setting beats the file, as at the door)."""
    config = _door_config(args)
    recognition = config.recognition
    threshold = getattr(args, "threshold", None)
    margin = getattr(args, "margin", None)
    return Decision.from_card(pipeline.embedder_card.threshold,
                              recognition.threshold if threshold is None else threshold,
                              recognition.margin if margin is None else margin)


def _door_config(args: argparse.Namespace) -> Config:
    """The configuration with the settings page's values on top, as the door runs it."""
    from device.site_settings import apply_site_settings, read_site_settings

    config = _config(args)
    # A --db named on the command line must be there (a typo is no "door without settings").
    database = _existing_db(args) if getattr(args, "db", None) else _db_path(args)
    if isinstance(database, Path) and not database.exists():
        return config
    try:
        return apply_site_settings(config, read_site_settings(database))
    except GalleryUnreadable:
        raise  # the command cannot work on this file at all: say so once
    except FacegateError as exc:
        _warn(f"settings from the admin page ignored: {exc}")
        return config


def _existing_db(args: argparse.Namespace) -> Path | str:
    """The database a command reads: it must be there. A mistyped ``--db`` or ``--data-dir``
    is one sentence, never a new empty gallery that silently answers "nobody". (A site's
    PostgreSQL is there or not: connecting says which.)"""
    path = _db_path(args)
    if isinstance(path, str):
        return path
    if path.is_dir():
        raise FacegateError(f"{path} is a folder, not a database file")
    if not path.exists():
        raise FacegateError(f"no database at {path} (check --db or --data-dir; `facegate "
                            "enroll` or `facegate admin add` creates one)")
    return path


def _new_or_existing_db(args: argparse.Namespace) -> Path | str:
    """The database a command may create (``enroll``, ``admin add``), its folder made."""
    path = _db_path(args)
    if isinstance(path, str):
        return path
    if path.is_dir():
        raise FacegateError(f"{path} is a folder, not a database file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FacegateError(f"cannot make the data folder {path.parent}: "
                            f"{exc.strerror or exc}") from None
    return path


def _open_gallery(args: argparse.Namespace, *, create: bool = False) -> Gallery:
    return Gallery(_new_or_existing_db(args) if create else _existing_db(args))


def _open_events(args: argparse.Namespace) -> EventLog:
    # Snapshots live beside the database they belong to, also when --db names another file;
    # a site server's in its data folder.
    database = _existing_db(args)
    snapshots = (_config(args).paths.snapshots if isinstance(database, str)
                 else database.parent / SNAPSHOTS_FOLDER)
    return EventLog(database, snapshots, door_id=_config(args).door.id)


# --- commands -------------------------------------------------------------------------------

def _given_files(paths: list[Path]) -> list[Path]:
    """The images named on the command line, refused in one sentence before any work when
    one is missing or a folder: a typo, for the commands that write (``enroll``) or compare
    two (``verify``); the batch readers report each on its JSON line (:func:`_readable`)."""
    for path in paths:
        if path.is_dir():
            raise FacegateError(f"{path} is a folder, not an image (--from-folder takes "
                                "folders in enroll)")
        if not path.exists():
            raise FacegateError(f"{path}: no such file")
    return paths


def _readable(paths: list[Path], unreadable: list[Path]) -> Iterator[tuple[Path, np.ndarray]]:
    """Each image that can be read; one that cannot is a JSON error line, and the command goes
    on to the next (the caller exits non-zero if ``unreadable`` is not empty)."""
    for path in paths:
        try:
            frame, _ = read_image(path)
        except ImageUnreadable as exc:
            _print_json({"path": str(path), "error": str(exc)})
            unreadable.append(path)
            continue
        yield path, frame


def _unreadable_summary(unreadable: list[Path], total: int) -> None:
    """The one line on stderr that says a batch had files it could not read."""
    if unreadable:
        _warn(f"{len(unreadable)} of {total} images could not be read (see their JSON lines)")


def cmd_embed(args: argparse.Namespace) -> int:
    from device.vision.batch import default_workers, process_files

    config = _config(args)
    model = args.model or config.recognition.model or DEFAULT_EMBEDDER
    failed: list[Path] = []
    if args.workers is not None and args.workers < 1:
        raise FacegateError(f"--workers must be at least 1, got {args.workers}")
    workers = args.workers or default_workers(len(args.images))
    for path, found in process_files(
            args.images, lambda factory: FacePipeline.from_models_dir(
                config.recognition.models_dir, embedder=model, interpreter_factory=factory),
            workers=workers, thorough=True):
        if isinstance(found, ImageUnreadable):
            _print_json({"path": str(path), "error": str(found)})
            failed.append(path)
            continue
        _print_json({"path": str(path), "model": model,
                     "faces": [_face_json(face) for face in found]})
    _unreadable_summary(failed, len(args.images))
    return 1 if failed else 0


def _person_folders(top: Path) -> list[Path]:
    """The person folders of ``--from-folder``; a folder of photos (one level too deep) or
    of nothing is one sentence saying what to give instead."""
    if not top.is_dir():
        raise FacegateError(f"{top}: not a folder")
    people = sorted(p for p in top.iterdir() if p.is_dir())
    if not people:
        loose = any(p.suffix.lower() in IMAGE_SUFFIXES for p in top.iterdir())
        raise FacegateError(
            f"{top} has no person folders (--from-folder wants DIR/<person name>/<images>)"
            + (f": it holds photos itself, so give its parent, --from-folder "
               f"{top.resolve().parent}, or --name NAME {top}/*" if loose else ""))
    return people


def _images_by_person(args: argparse.Namespace) -> Iterator[tuple[str, Path]]:
    if args.from_folder:
        for folder in _person_folders(args.from_folder):
            for path in sorted(folder.iterdir()):
                if path.suffix.lower() in IMAGE_SUFFIXES:
                    yield folder.name.replace("_", " ") if args.underscores else folder.name, path
    else:
        for path in args.images:
            yield args.name, path


def cmd_enroll(args: argparse.Namespace) -> int:
    from device.audit import cli_user
    from device.enrolment import Actor, EnrolmentPolicy, EnrolmentService

    if bool(args.name) == bool(args.from_folder):
        raise FacegateError("give either --name NAME IMAGE... or --from-folder DIR")
    if args.name and not args.images:
        raise FacegateError("no images given to enrol")
    if args.face is not None and (args.from_folder or len(args.images) != 1):
        raise FacegateError("--face picks a face of ONE photo: give a single image")
    if args.from_folder:
        _person_folders(args.from_folder)  # before a gallery is made for nothing
    _given_files(args.images)
    counts = {"enrolled": 0, "already": 0, "refused": 0}
    actor = Actor(cli_user(), "cli")
    with _open_gallery(args, create=True) as gallery:
        pipeline = _pipeline(args, gallery)
        policy = EnrolmentPolicy.from_card(pipeline.embedder_card.card,
                                           _decision(args, pipeline))
        service = EnrolmentService(pipeline, gallery, policy, store_crops=not args.no_crops
                                   and _config(args).recognition.store_crops)
        for name, path in _images_by_person(args):
            outcome: dict = {"path": str(path), "person": name}
            try:
                frame, sha256 = read_image(path)
                enrolled = service.enrol(
                    name, frame, sha256, actor, label=str(path), force=args.force,
                    reason=args.reason,
                    face_index=None if args.face is None else args.face - 1)
                outcome.update(status="enrolled", person_id=enrolled.person.id,
                               template_id=enrolled.template.id,
                               quality=enrolled.face.quality.as_dict())
                if enrolled.forced is not None:
                    outcome["overridden"] = str(enrolled.forced)
                counts["enrolled"] += 1
            except DuplicateTemplate as exc:
                outcome.update(status="already enrolled", reason=str(exc))
                counts["already"] += 1
            except FacegateError as exc:
                outcome.update(status="refused", reason=str(exc),
                               code=exc.code)
                if isinstance(exc, SeveralFaces) and getattr(exc, "faces", None):
                    outcome["faces"] = exc.faces
                counts["refused"] += 1
                if not args.json:
                    _warn(f"refused {exc}{_hint(exc)}")
            if args.json:
                _print_json(outcome)
            elif outcome["status"] == "enrolled":
                forced = " (override audited)" if "overridden" in outcome else ""
                print(f"enrolled {name} from {path}{forced}", flush=True)
    print(f"{counts['enrolled']} enrolled, {counts['already']} already enrolled, "
          f"{counts['refused']} refused", file=sys.stderr)
    # Exit 2 says "some photos were refused" to a script, distinct from a failure (1).
    return 2 if counts["refused"] else 0


def _hint(error: FacegateError) -> str:
    """What the admin can do about a refusal, after looking."""
    if isinstance(error, IdentityConflict):
        return " (if you are sure, enrol it with --force --reason TEXT; it is audited)"
    if isinstance(error, SeveralFaces):
        return " (pick one with --face N, faces numbered largest first)"
    return ""


def cmd_identify(args: argparse.Namespace) -> int:
    failed: list[Path] = []
    with _open_gallery(args) as gallery:
        pipeline = _pipeline(args, gallery)
        identifier = Identifier(pipeline, gallery, _decision(args, pipeline))
        threshold = identifier.threshold
        for path, frame in _readable(args.images, failed):
            faces = []
            for result in identifier.identify(frame, thorough=True):
                faces.append({
                    "box": [round(float(v), 1) for v in result.face.box],
                    "person": result.person_name,
                    "person_id": result.person_id,
                    "active": result.active,
                    "score": round(result.score, 4),
                    "runner_up_score": round(result.runner_up_score, 4),
                    "threshold": round(threshold, 4),
                    "decision": result.decision,
                })
            _print_json({"path": str(path), "faces": faces})
    _unreadable_summary(failed, len(args.images))
    return 1 if failed else 0


def _liveness_check(config: Config, *, model: str | None = None,
                    threshold: float | None = None) -> LivenessCheck:
    """The door's liveness rule (``[liveness]``, the settings page's values on top), with
    ``model`` and ``threshold`` from the command line over it; its model loaded now, so that
    one that cannot be is one sentence (:class:`FacegateError`)."""
    settings = LivenessSettings.from_config(config.liveness)
    settings = replace(settings, model=model or settings.model,
                       threshold=settings.threshold if threshold is None else threshold)
    check = LivenessCheck(liveness_loader(config.recognition.models_dir), settings)
    check.require()
    return check


def cmd_liveness(args: argparse.Namespace) -> int:
    """Score every face of each image for presentation attack, as the door would (also when
    the door's check is off: this is how an admin tries the model)."""
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise FacegateError(f"--threshold must be from 0 to 1, got {args.threshold:g}")
    config = _door_config(args)
    check = _liveness_check(config, model=args.model, threshold=args.threshold)
    # The door's face finding (detector, then FaceMesh to drop what is not a face); the
    # embedder is not needed to judge liveness.
    pipeline = FacePipeline.without_embedder(config.recognition.models_dir)
    unreadable: list[Path] = []
    for path, frame in _readable(args.images, unreadable):
        faces = []
        for face in pipeline.locate(frame, thorough=True):
            verdict = check.judge(frame, face.box)
            faces.append({
                "box": [round(float(v), 1) for v in face.box],
                "live_score": None if verdict.score is None else round(verdict.score, 4),
                "threshold": round(verdict.threshold, 4),
                # A face the model could not score is not live, but no attack either.
                "decision": ("live" if verdict.live else "attack" if verdict.attack
                             else "unscored"),
            })
        _print_json({"path": str(path), "faces": faces})
    # As with enroll: 2 says "some images could not be judged", distinct from a failure (1).
    _unreadable_summary(unreadable, len(args.images))
    return 2 if unreadable else 0


def cmd_verify(args: argparse.Namespace) -> int:
    pipeline = _pipeline(args)
    embeddings = []
    for path in _given_files([args.image1, args.image2]):
        frame, _ = read_image(path)
        faces = pipeline.process(frame, thorough=True)
        if not faces:
            raise FacegateError(f"{path}: no face found")
        embeddings.append(faces[0].embedding)
    similarity = float(np.dot(embeddings[0], embeddings[1]))
    card = pipeline.embedder_card.card
    threshold = args.threshold if args.threshold is not None else \
        card["verification_threshold"]["score"]
    same = similarity >= threshold
    if args.json:
        _print_json({"similarity": round(similarity, 4), "threshold": threshold,
                     "same_person": same})
    else:
        print(f"similarity {similarity:.4f} (threshold {threshold:.4f}): "
              f"{'same person' if same else 'different people'}")
    return 0


def cmd_people(args: argparse.Namespace) -> int:
    with _open_gallery(args) as gallery:
        if args.action == "list":
            return _list_people(gallery, args.json)
        if not args.person:
            raise FacegateError(f"people {args.action} needs the person's name or id")
        person = gallery.get_person(args.person)
        if args.action == "edit":
            changes = _person_changes(args)
            if not changes:
                raise FacegateError("nothing to change: give --active, --inactive, --rename, "
                                    "--external-id, --valid-from, --valid-until or --schedule")
            try:
                person = gallery.update_person(person.id, **changes)
            except ValueError as exc:
                raise FacegateError(f"{person.name}: {exc}") from None
            print(f"updated {person.name} (version {person.version})")
            return 0
        removed = gallery.remove_person(person.id)
    # Privacy: their access-log snapshots go with them.
    with _open_events(args) as events:
        anonymised = events.delete_person(person.id)
    print(f"removed {person.name}, {removed} templates and the snapshots of "
          f"{anonymised} events")
    return 0


def _list_people(gallery: Gallery, as_json: bool) -> int:
    for person in gallery.list_people():
        if as_json:
            _print_json({"id": person.id, "name": person.name,
                         "external_id": person.external_id, "active": person.active,
                         "valid_from": person.valid_from, "valid_until": person.valid_until,
                         "schedule": json.loads(person.schedule) if person.schedule else None,
                         "templates": person.template_count, "version": person.version})
        else:
            state = "" if person.active else " (inactive)"
            print(f"{person.name}{state}\t{person.template_count} templates\t{person.id}")
    return 0


def _person_changes(args: argparse.Namespace) -> dict:
    from device.daemon.access import schedule_from_text

    changes: dict = {}
    if args.active is not None:
        changes["active"] = args.active
    if args.rename:
        changes["name"] = args.rename
    if args.external_id is not None:
        changes["external_id"] = args.external_id or None
    for field in ("valid_from", "valid_until"):
        value = getattr(args, field)
        if value is not None:
            changes[field] = _aware_time(value, end_of_day=field == "valid_until") or None
    until = changes.get("valid_until")
    if until and datetime.fromisoformat(until) <= datetime.now().astimezone():
        _warn(f"--valid-until {args.valid_until} is already past: this person is refused at "
              "the door from now on")
    if args.schedule is not None:
        changes["schedule"] = (schedule_from_text(args.schedule)
                               if args.schedule.strip().lower() not in ("", "none") else None)
    return changes


def _aware_time(text: str, *, end_of_day: bool = False) -> str | None:
    """An ISO time; without a zone it is the door's local time (``door_time``: a date alone
    as an end of access is the whole day)."""
    from device.daemon.access import door_time

    try:
        when = door_time(text, end_of_day=end_of_day)
        return None if when is None else when.isoformat()
    except ValueError:
        raise FacegateError(f"{text!r} is not a date or time (use 2026-01-31 or "
                            "2026-01-31T18:00)") from None


def cmd_templates(args: argparse.Namespace) -> int:
    from device import audit, templates

    with _open_gallery(args) as gallery:
        if args.action == "list":
            found = templates.templates_of(gallery, args.target)
            for template in found:
                if args.json:
                    _print_json(templates.template_json(template))
                else:
                    print(_template_line(template))
            if not found and not args.json:
                print(f"no face templates are enrolled for {args.target}", file=sys.stderr)
            return 0
        removed = templates.remove_template(gallery, args.target, user=audit.cli_user())
        person = gallery.get_person(removed.person_id)
    print(f"removed template {removed.id} ({removed.model}) of {person.name}")
    return 0


def _template_line(template: Template) -> str:
    created = datetime.fromisoformat(template.created_at).astimezone()
    crop = "crop" if template.crop_jpeg is not None else "no crop"
    damaged = (f"\tDAMAGED: {template.damaged} (the door ignores it; remove it)"
               if template.damaged else "")
    return (f"{template.id}\t{template.model}\t{template.source or 'source unknown'}\t"
            f"{created:%Y-%m-%d %H:%M}\t{crop}{damaged}")


def cmd_events(args: argparse.Namespace) -> int:
    since = parse_since(args.since) if args.since else None
    with _open_events(args) as events:
        found = events.list(since=since, kind=args.kind, limit=args.limit)
    for event in reversed(found):  # oldest first, like a log
        print(json.dumps(event.to_json()) if args.json else format_event_line(event))
    return 0


def cmd_admin(args: argparse.Namespace) -> int:
    """The accounts of the admin page, through the users service (its rules: the password
    rules, the door's last active admin)."""
    from device import audit
    from device.web import auth

    database = _new_or_existing_db(args) if args.action == "add" else _existing_db(args)
    Gallery(database).close()  # applies the migrations that create the users table
    if args.action == "list":
        for user in auth.list_users(database):
            state = f"disabled {user.disabled_at}" if user.is_disabled else "active"
            print(f"{user.name}\t{user.role}\t{state}")
        return 0
    if not args.name:
        raise FacegateError(f"admin {args.action} needs a user name")
    if args.action in ("remove", "disable", "enable", "role"):
        message, detail = _change_account(auth, database, args)
        audit.record(database, f"user_{args.action}", {"name": args.name, **detail},
                     audit.cli_user(), None)
        print(message)
        return 0
    password = _read_password(args.password_stdin)
    if args.action == "passwd":  # the users service signs their open sessions out
        user = auth.set_password(database, args.name, password)
        audit.record(database, "user_password", {"name": user.name}, audit.cli_user(), None)
        print(f"changed the password of {user.name}; their sessions are signed out")
        return 0
    user = auth.add_user(database, args.name, password, role=args.role or "admin")
    audit.record(database, "user_add", {"name": user.name, "role": user.role},
                 audit.cli_user(), None)
    print(f"added {user.name} ({user.role})")
    return 0


def _change_account(auth, database: Path, args: argparse.Namespace) -> tuple[str, dict]:
    """``admin remove|disable|enable|role NAME``: what to print, and the audit detail."""
    name = args.name
    if args.action == "remove":
        auth.remove_user(database, name)
        return f"removed {name}", {}
    if args.action == "disable":
        auth.disable_user(database, name)
        return f"disabled {name}; their sessions are signed out, their API tokens refused", {}
    if args.action == "enable":
        auth.enable_user(database, name)
        return f"enabled {name}; they may sign in again", {}
    if not args.role:
        raise FacegateError("admin role needs --role admin or --role viewer")
    user = auth.set_role(database, name, args.role)
    return f"{name} is now {user.role}; their sessions are signed out", {"role": user.role}


def cmd_token(args: argparse.Namespace) -> int:
    from device import audit
    from device.web import tokens

    database = _existing_db(args)
    Gallery(database).close()
    if args.action == "list":
        for token in tokens.list_tokens(database):
            state = "active" if token.is_active else f"revoked {token.revoked_at}"
            print(f"{token.id}\t{token.user_name}\t{token.name}\t{state}")
        return 0
    if args.action == "revoke":
        if not args.target:
            raise FacegateError("token revoke needs the token's id (see `facegate token list`)")
        token = tokens.revoke_token(database, args.target)
        audit.record(database, "token_revoke", {"id": token.id, "name": token.name}, "cli")
        print(f"revoked {token.name} of {token.user_name}")
        return 0
    if not args.target or not args.name:
        raise FacegateError("token add needs the account and a name for the token, e.g. "
                            "`facegate token add admin backup-script`")
    secret = tokens.create_token(database, args.target, args.name)
    audit.record(database, "token_create", {"user": args.target, "name": args.name}, "cli")
    print(secret)  # shown once: only its hash is kept
    return 0


def _read_password(from_stdin: bool) -> str:
    import getpass

    if from_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise FacegateError("the two passwords differ")
    else:
        raise FacegateError("no terminal to ask for the password: use --password-stdin")
    return password  # its strength is checked by add_user (WeakPassword)


def cmd_run(args: argparse.Namespace) -> int:
    from device.daemon.run import run_daemon

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args.overrides = {"web.listen": args.web, "web.enabled": True if args.web else None}
    if args.no_web:
        args.overrides["web.enabled"] = False
    return run_daemon(_config(args), camera_spec=args.camera, exit_at_end=args.exit_at_end)


def cmd_info(args: argparse.Namespace) -> int:
    from device.daemon.access import door_time_zone
    from device.door_info import door_facts, summary_lines

    config = _door_config(args)
    models_dir = config.recognition.models_dir
    # A path named on the command line must be there; the configured one may not be yet
    # (a fresh door: info still tells its models and settings).
    named = args.db is not None or args.data_dir is not None
    database = _existing_db(args) if named else _db_path(args)
    gallery = Gallery(database) if isinstance(database, str) or database.exists() else None
    try:
        configured = args.model or config.recognition.model or None
        embedder = load_card(embedder_name(gallery, configured) if gallery else
                             configured or DEFAULT_EMBEDDER, models_dir)
        decision = Decision.from_card(embedder.threshold, config.recognition.threshold,
                                      config.recognition.margin)
        people = gallery.counts()["people"] if gallery else 0
        info = {
            "version": __version__,
            "models_dir": str(models_dir),
            "models": {card.name: {"task": card.task, "sha256_ok": card.verify_sha256()}
                       for card in list_cards(models_dir)},
            "embedder": embedder.name,
            # The threshold in force for this gallery's size, and what it was set for.
            "threshold": round(decision.threshold_for(people), 4),
            "threshold_source": ("configuration" if config.recognition.threshold is not None
                                 else "model card, for the gallery's size"),
            "target_fpir": decision.target_fpir,
            "margin": decision.margin,
            "threshold_by_gallery_size": embedder.threshold.get("by_gallery_size"),
            "verification_threshold": embedder.card.get("verification_threshold", {}).get(
                "score"),
            "enrolment_threshold": (embedder.card.get("enrolment_threshold") or embedder.card
                                    .get("verification_threshold", {})).get("score"),
            "alignment": embedder.card.get("alignment", {}).get("method"),
            "db": str(database),
            # Schedules are read in this zone (docs/door.md, "Time zone").
            "time_zone": door_time_zone(),
        }
        if gallery is not None:
            info["gallery"] = {**gallery.counts(), "model": gallery.model,
                               "template_sets": gallery.models()}
    finally:
        if gallery is not None:
            gallery.close()
    info["liveness"] = _liveness_info(config)
    info.update(door_facts(config))
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print("\n".join(summary_lines(info)))
    return 0


def _liveness_info(config: Config) -> dict:
    """The liveness rule in force: the configuration's (or the settings page's) threshold and
    votes, else its model card's. A model that cannot be loaded is reported, not raised: the
    rest of ``info`` is still worth reading."""
    settings = config.liveness
    window = config.recognition.votes_window
    info: dict = {"enabled": settings.enabled}
    try:
        check = _liveness_check(config)
    except FacegateError as exc:
        return {**info, "model": settings.model or None, "error": str(exc)}
    info.update(
        model=check.require().name,
        threshold=check.threshold,
        threshold_source="configuration" if settings.threshold is not None else "model card",
        votes_needed=check.votes_needed(window),
        votes_source="configuration" if settings.votes_needed is not None else "model card",
        votes_window=window)
    return info


def cmd_reembed(args: argparse.Namespace) -> int:
    import cv2

    from device.audit import cli_user, record_in

    config = _config(args)
    target = args.model or config.recognition.model or DEFAULT_EMBEDDER
    pipeline = FacePipeline.from_models_dir(config.recognition.models_dir, embedder=target)
    with _open_gallery(args) as gallery:
        before = gallery.model
        embeddings: dict[str, np.ndarray] = {}
        without_crop: list[str] = []
        # Every new embedding is computed before anything is written: the gallery then
        # switches in one transaction, and the door never sees half of each model.
        for template in gallery.templates_with_crops():
            if template.model == target:
                continue
            crop = cv2.imdecode(np.frombuffer(template.crop_jpeg, np.uint8), cv2.IMREAD_COLOR)
            embeddings[template.id] = pipeline.embed_crop(crop)
        without_crop = [row[0] for row in gallery.db.execute(
            "SELECT id FROM templates WHERE model != ? AND crop_jpeg IS NULL", [target])]
        if without_crop and not args.drop_without_crops:
            raise FacegateError(
                f"{len(without_crop)} templates have no stored crop and cannot be re-embedded "
                f"with {target}: enrol those people again, or pass --drop-without-crops to "
                "remove those templates in the same switch; nothing was changed")
        if isinstance(gallery.location, str) and is_postgres_location(gallery.location):
            # A site: a second set beside the current one; doors move when they hold it.
            from device.site.feed import swap_model

            if without_crop:
                raise FacegateError(f"{len(without_crop)} templates have no stored crop: a "
                                    "site re-embeds from crops only; enrol those people again")
            swap_model(gallery, target, embeddings)
        else:
            gallery.switch_model(target, embeddings, drop=without_crop)
        record_in(gallery, "reembed", {"from": before, "to": target,
                                       "templates": len(embeddings),
                                       "dropped": len(without_crop)}, cli_user())
    print(f"re-embedded {len(embeddings)} templates with {target}; the gallery's model is now "
          f"{target}" + (f" ({len(without_crop)} templates without a crop removed)"
                         if without_crop else ""))
    if config.recognition.model and config.recognition.model != target:
        _warn(f"recognition.model in the configuration is still {config.recognition.model}: "
              f"set it to {target} (or remove it) before the door starts again")
    return 0


def cmd_mqtt(args: argparse.Namespace) -> int:
    """Check the door's MQTT settings against its broker, one line per check."""
    from device.mqtt.check import check_broker
    from device.mqtt.settings import MqttSettings

    config = _config(args)
    if not config.mqtt.enabled:
        raise FacegateError("MQTT is off: set [mqtt] url in the configuration "
                            "(docs/mqtt.md) to test it")
    settings = MqttSettings.from_config(config)
    print(f"testing {settings.broker.describe()} for door {config.door.id}", flush=True)
    failed = False
    for check in check_broker(settings, timeout=args.timeout):
        print(check.line(), flush=True)
        failed = failed or check.ok is False
    return 1 if failed else 0


def cmd_camera(args: argparse.Namespace) -> int:
    """Grab one frame from the camera, save it and say how big the faces in it are."""
    from device.camera_check import check_camera

    out = args.out or Path(f"facegate-camera-{datetime.now():%Y%m%d-%H%M%S}.jpg")
    for line in check_camera(_config(args), out, spec=args.camera).lines():
        print(line, flush=True)
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    """Write a dated backup into ``--to``, as the page's download, and prune old ones."""
    from device.audit import cli_user, record
    from device.backup import backup_to_folder, refuse_site_store

    database = _db_path(args)
    refuse_site_store(database)
    if not database.exists():
        raise FacegateError(f"no database at {database} to back up (check --data-dir)")
    if args.keep is not None and args.keep < 1:
        raise FacegateError(f"--keep must be at least 1, got {args.keep}")
    try:
        made, removed = backup_to_folder(database, args.to, keep=args.keep)
    except OSError as exc:
        raise FacegateError(f"cannot write a backup into {args.to}: "
                            f"{exc.strerror or exc}") from None
    record(database, "backup", {"bytes": made.stat().st_size, "accounts": False, "via": "cli",
                                "file": str(made), "removed": len(removed)}, user=cli_user())
    print(f"backup: {made} ({made.stat().st_size} bytes)", flush=True)
    for old in removed:
        print(f"removed: {old}", flush=True)
    return 0


def cmd_site(args: argparse.Namespace) -> int:
    """The site server (``serve``) and its doors (``door add|list|remove``): docs/site.md."""
    from device.site.doors import add_door, list_doors, remove_door
    from device.site.server import serve, site_database

    config = _config(args)
    if args.action == "serve":
        if args.door_action or args.door_id:
            raise FacegateError("site serve takes no door action")
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        return serve(config)
    database = site_database(config)
    if args.door_action is None:
        raise FacegateError("site door needs add, list or remove")
    if args.door_action == "list":
        for door in list_doors(database):
            state = "active" if door.is_active else f"removed {door.removed_at}"
            print(f"{door.id}\t{state}\tlast contact {door.last_contact_at or 'never'}\t"
                  f"replica seq {door.replica_seq}\t{door.pending_events} events pending",
                  flush=True)
        return 0
    if not args.door_id:
        raise FacegateError(f"site door {args.door_action} needs the door's id (its door.id)")
    if args.door_action == "add":
        # The credential alone on stdout, ready for: ... > /etc/facegate/site-token
        print(add_door(database, args.door_id), flush=True)
        _warn(f"door {args.door_id} registered: save the line above as that door's "
              "site.token_file (readable by facegate only); it is not shown again")
        return 0
    remove_door(database, args.door_id)
    _warn(f"door {args.door_id} removed: its credential is refused from now on")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Enrol the first photo of each demo person, then identify every other photo."""
    import tempfile

    folder = args.folder
    _config(args)  # a configuration that cannot be read is said once, not once per step
    if not (folder / "people").is_dir():
        raise FacegateError(f"{folder} has no people/ folder of demo photos")
    with tempfile.TemporaryDirectory() as scratch:
        db = Path(scratch) / "demo.db"
        people = sorted(p for p in (folder / "people").iterdir() if p.is_dir())
        base = ["--db", str(db)] + (["--models-dir", str(args.models_dir)]
                                    if args.models_dir else [])
        base += ["--config", str(args.config)] if args.config else []
        for person in people:
            first = sorted(person.iterdir())[0]
            if main(["enroll", *base, "--name", person.name, str(first)]) == 1:
                return 1  # the reason is said; the rest would fail the same way
        probes = [p for person in people for p in sorted(person.iterdir())[1:]]
        probes += sorted((folder / "strangers").iterdir())
        return main(["identify", *base, *map(str, probes)])


# --- parser ---------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse that reports a mistake in one line, with "did you mean" for a near spelling
    (as the configuration's checker does), pointing at ``--help`` instead of the usage."""

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.split())
        suggestion = self._suggestion(message)
        if suggestion:  # the near spelling says more than the list of every choice
            message = re.sub(r" \(choose from .*\)$", "", message)
        self.exit(2, f"{self.prog}: {message}{suggestion} (see `{self.prog} --help`)\n")

    def _suggestion(self, message: str) -> str:
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            wrong, known = choice[1], re.findall(r"'([^']*)'", choice[2])
        elif message.startswith("unrecognized arguments:"):
            wrong = next((word.partition("=")[0] for word in message.split()[2:]
                          if word.startswith("-")), "")
            known = [option for action in self._actions for option in action.option_strings]
        else:
            return ""
        close = difflib.get_close_matches(wrong, known, n=1) if wrong else []
        return f" (did you mean {close[0]}?)" if close else ""


def _command_parser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    commands = next(action for action in parser._actions  # noqa: SLF001
                    if isinstance(action, argparse._SubParsersAction))  # noqa: SLF001
    return commands.choices[name]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="facegate", description="Face-recognition access control: enrol, identify, verify.")
    parser.add_argument("--version", action="version", version=f"facegate {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func, help_text: str, *, db: bool = False, model: bool = True):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--config", type=Path, default=None, metavar="FILE",
                         help="TOML configuration (default: $FACEGATE_CONFIG, "
                              "/etc/facegate/facegate.toml, or none)")
        sub.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                         help="gallery, access log and snapshots (default: the configuration's"
                              " paths.data_dir)")
        sub.add_argument("--models-dir", type=Path, default=None,
                         help="folder of .tflite models and their cards (default: models/)")
        if model:
            sub.add_argument("--model", default=None,
                             help="embedder name in the models folder (default: SFace)")
        if db:
            sub.add_argument("--db", type=Path, default=None,
                             help="the SQLite file (default: <data dir>/facegate.db)")
        sub.set_defaults(func=func)
        return sub

    sub = command("embed", cmd_embed, "Print faces and embeddings of images as JSON lines.")
    sub.add_argument("--workers", type=int, default=None, metavar="N",
                     help="photos worked on at once, each by its own pipeline of one thread "
                          "(default: one per core, $FACEGATE_WORKERS)")
    sub.add_argument("images", nargs="+", type=Path, metavar="IMAGE")

    sub = command("enroll", cmd_enroll, "Enrol photos of a person into the gallery.", db=True)
    sub.add_argument("--name", help="the person's name (created if new)")
    sub.add_argument("--from-folder", type=Path, metavar="DIR",
                     help="enrol DIR/<person name>/<images> (the LFW / CASIA-WebFace layout)")
    sub.add_argument("--underscores", action="store_true",
                     help="with --from-folder: turn '_' in folder names into spaces")
    sub.add_argument("--no-crops", action="store_true",
                     help="do not keep the aligned face crop (then `reembed` cannot recompute "
                          "this template after a model change)")
    sub.add_argument("--face", type=int, metavar="N",
                     help="with one photo of several faces: enrol face N (1 = the largest)")
    sub.add_argument("--force", action="store_true",
                     help="enrol even if the face looks like someone else (or not like the "
                          "person's enrolled photos); needs --reason, and is audited")
    sub.add_argument("--reason", metavar="TEXT",
                     help="with --force: why this face is right for this person")
    sub.add_argument("--json", action="store_true", help="one JSON line per image")
    sub.add_argument("images", nargs="*", type=Path, metavar="IMAGE")

    sub = command("identify", cmd_identify, "Identify the faces in images against the gallery.",
                  db=True)
    sub.add_argument("--threshold", type=float, default=None,
                     help="minimum cosine to accept (default: the configuration's, else the "
                          "model card's for the gallery's size)")
    sub.add_argument("--margin", type=float, default=None,
                     help="minimum lead over the next person (default: the model card's)")
    sub.add_argument("images", nargs="+", type=Path, metavar="IMAGE")

    sub = command("liveness", cmd_liveness,
                  "Judge each face in images live or a presentation attack (a printed photo, "
                  "a screen): JSON lines with the liveness score of every face. Exits 2 when "
                  "some images could not be read.", db=True, model=False)
    sub.add_argument("--model", default=None,
                     help="liveness model name in the models folder (default: the "
                          "configuration's liveness.model, else the default liveness model)")
    sub.add_argument("--threshold", type=float, default=None,
                     help="minimum liveness score (0 to 1) for 'live' (default: "
                          "liveness.threshold as the door has it, from the settings page or "
                          "the configuration, else the model card's)")
    sub.add_argument("images", nargs="+", type=Path, metavar="IMAGE")

    sub = command("verify", cmd_verify, "Compare the largest faces of two images (1:1).")
    sub.add_argument("image1", type=Path, metavar="IMAGE1")
    sub.add_argument("image2", type=Path, metavar="IMAGE2")
    sub.add_argument("--threshold", type=float, default=None,
                     help="minimum cosine for 'same' (default: the card's 1:1 threshold)")
    sub.add_argument("--json", action="store_true")

    sub = command("people", cmd_people,
                  "List, edit or remove enrolled people (remove deletes their templates, "
                  "crops and snapshots).", db=True, model=False)
    sub.add_argument("action", choices=["list", "edit", "remove"])
    sub.add_argument("person", nargs="?", help="name or id (for edit and remove)")
    sub.add_argument("--json", action="store_true")
    active = sub.add_mutually_exclusive_group()
    active.add_argument("--active", dest="active", action="store_true", default=None,
                        help="edit: may open the door")
    active.add_argument("--inactive", dest="active", action="store_false",
                        help="edit: may not open the door (kept enrolled)")
    sub.add_argument("--rename", metavar="NAME", help="edit: new name")
    sub.add_argument("--external-id", metavar="ID", help="edit: badge or HR number ('' clears)")
    sub.add_argument("--valid-from", metavar="TIME",
                     help="edit: first day/time allowed, ISO (local time unless a zone is "
                          "given; '' clears)")
    sub.add_argument("--valid-until", metavar="TIME",
                     help="edit: end of access, ISO; a date alone is the whole of that day "
                          "(until 23:59:59 local; '' clears)")
    sub.add_argument("--schedule", metavar="TEXT",
                     help='edit: weekly hours, e.g. "mon-fri 07:00-19:00; sat 08:00-12:00" '
                          "(door's local time; 'none' clears)")

    sub = command("templates", cmd_templates,
                  "List a person's face templates, or remove one enrolled by mistake (the "
                  "person and their other templates stay).", db=True, model=False)
    sub.add_argument("action", choices=["list", "remove"])
    sub.add_argument("target", metavar="NAME_OR_ID",
                     help="list: the person's name or id; remove: the template's id (see "
                          "`facegate templates list NAME`)")
    sub.add_argument("--json", action="store_true", help="list: one JSON object per line")

    sub = command("events", cmd_events, "Show the access log.", db=True, model=False)
    sub.add_argument("--since", metavar="WHEN",
                     help="e.g. 10m, 2h, 3d, 2026-01-31 or 2026-01-31T18:00")
    sub.add_argument("--kind", choices=list(EVENT_KINDS), help="only this kind of event")
    sub.add_argument("--limit", type=int, default=100, help="at most this many (newest)")
    sub.add_argument("--json", action="store_true", help="one JSON object per line")

    sub = command("token", cmd_token, "Manage API tokens (docs/api.md).", db=True, model=False)
    sub.add_argument("action", choices=["add", "list", "revoke"])
    sub.add_argument("target", nargs="?", help="add: the account; revoke: the token's id")
    sub.add_argument("name", nargs="?", help="add: what the token is for")

    sub = command("run", cmd_run,
                  "Run the door: camera, recognition, relay and access log, until stopped.",
                  model=False)
    sub.add_argument("--camera", metavar="SOURCE",
                     help="a folder or video to replay, a device index, a URL, 'picamera2' or "
                          "'auto' (default: the configuration's camera.source)")
    sub.add_argument("--exit-at-end", action="store_true",
                     help="stop when a replayed folder or video runs out (scripts, tests)")
    sub.add_argument("--web", metavar="HOST:PORT",
                     help="serve the admin page here (default: the configuration's web.listen,"
                          " 127.0.0.1:8080)")
    sub.add_argument("--no-web", action="store_true", help="run the door without the page")

    sub = command("admin", cmd_admin, "Manage the admin page's accounts: add, list, remove, "
                  "passwd (set a new password), disable (no sign-in, no API token, until "
                  "enable), enable, or role (--role). Every change but add signs that "
                  "account's sessions out; the door's last active admin cannot be disabled, "
                  "removed or made a viewer.", db=True, model=False)
    sub.add_argument("action", choices=["add", "list", "remove", "passwd", "disable", "enable",
                                        "role"])
    sub.add_argument("name", nargs="?", help="the account's name (for all but list)")
    sub.add_argument("--role", choices=["admin", "viewer"],
                     help="add (default admin) and role: admin: everything; viewer: the "
                          "dashboard and the log only")
    sub.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of standard input "
                          "(default: ask on the terminal)")

    sub = command("info", cmd_info,
                  "Show the door at a glance: its id, camera (and what 'auto' would open), "
                  "pins, web address, MQTT broker, models and thresholds, liveness, gallery "
                  "counts and data folder.", db=True)
    sub.add_argument("--json", action="store_true")

    sub = command("reembed", cmd_reembed,
                  "Move the gallery to another embedder (--model, default: the configured "
                  "one): recompute every template from its stored crop, then switch in one "
                  "transaction.", db=True)
    sub.add_argument("--drop-without-crops", action="store_true",
                     help="remove templates that have no stored crop instead of refusing")

    sub = command("mqtt", cmd_mqtt,
                  "Test the connection to the MQTT broker of [mqtt] (docs/mqtt.md): reach it, "
                  "TLS, the account, a publish to the door's topics, the commands' "
                  "subscription; one line per check, exit 1 if one fails.", model=False)
    sub.add_argument("action", choices=["test"])
    sub.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                     help="how long to wait for each answer of the broker (default 5)")

    sub = command("camera", cmd_camera,
                  "Test the door's camera: grab one frame, save it, and report the frame "
                  "size, the faces found and their size in pixels between the eyes against "
                  "recognition.min_interocular_px; one line per fact, exit 1 when the camera "
                  "cannot be opened.", model=False)
    sub.add_argument("action", choices=["test"])
    sub.add_argument("--camera", metavar="SOURCE",
                     help="the camera to test, as camera.source (default: the configuration's; "
                          "'auto' never falls back to the demo replay here)")
    sub.add_argument("--out", type=Path, metavar="PATH",
                     help="where to save the frame, .jpg or .png (default: "
                          "facegate-camera-DATE-TIME.jpg in the current folder)")

    sub = command("backup", cmd_backup,
                  "Write a backup of the gallery, access log, audit log and site settings "
                  "(not the accounts: the same file as the page's backup download) into DIR "
                  "as facegate-DATE.db, written whole or not at all; for a systemd timer "
                  "(systemd/facegate-backup.timer). Restore it on the settings page.",
                  db=True, model=False)
    sub.add_argument("--to", type=Path, required=True, metavar="DIR",
                     help="the folder to write into (made if missing)")
    sub.add_argument("--keep", type=int, metavar="N",
                     help="then remove all but the newest N dated backups in DIR (default: "
                          "keep them all)")

    sub = command("site", cmd_site,
                  "A site of many doors (docs/site.md): serve runs the site server on "
                  "[site] database and listen; door add ID registers a door and prints its "
                  "credential once, door list shows each door's last contact, replica and "
                  "pending events, door remove ID refuses its credential.", model=False)
    sub.add_argument("action", choices=["serve", "door"])
    sub.add_argument("door_action", nargs="?", choices=["add", "list", "remove"],
                     metavar="add|list|remove")
    sub.add_argument("door_id", nargs="?", metavar="ID", help="the door's door.id")

    sub = command("demo", cmd_demo,
                  "Enrol the bundled demo people and identify the other photos.", model=False)
    sub.add_argument("--folder", type=Path, default=PROJECT_DIR / "tests" / "data",
                     help="folder with people/<name>/*.jpg and strangers/*.jpg")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:  # said by the command's own parser, which knows its options' spellings
        _command_parser(parser, args.command).error(
            f"unrecognized arguments: {' '.join(extras)}")
    try:
        return args.func(args)
    except FacegateError as exc:
        _warn(str(exc))
    except DATABASE_ERRORS as exc:  # a file that is no database, a disk that fails, a
        # site's PostgreSQL that is away
        config = getattr(args, "_config", None)
        named = getattr(args, "db", None) or (
            (config.site.database or config.paths.database) if config else None)
        where = describe_location(named) if named else "the database"
        _warn(f"{where}: {' '.join(str(exc).split())}")
    except OSError as exc:  # a folder that cannot be made or read, a full disk
        _warn(f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror
              else str(exc))
    except KeyboardInterrupt:
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
