"""The access log: filter by person, decision and time; each event's snapshots; CSV export.
Viewers may see it too.

Snapshots are served by event id only: the file is found through the event's row
(``EventLog.get`` then ``snapshot_file``), so no part of the URL ever becomes a path.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, abort, render_template, request, send_file, url_for

from device.errors import EventNotFound, TimeUnreadable
from device.events import KINDS, Event, parse_since
from device.web.db import event_log, gallery
from device.web.roles import login_required

bp = Blueprint("log", __name__)

PAGE_SIZE = 50
CSV_BATCH = 1000
MAX_CSV_ROWS = 200_000
CSV_COLUMNS = ("at", "door", "kind", "person", "score", "reason", "event_id")
SNAPSHOTS = ("face", "frame")
MAX_PAGE = 1_000_000  # 50 million events: far beyond any retention
# How a kind reads where it is not plain enough with its underscores turned to spaces.
KIND_LABELS = {"attack": "presentation attack"}
# Kinds shown in the colour of a refusal (static/app.css: .kind-refused).
REFUSED_KINDS = frozenset({"denied", "unknown", "forced_open", "attack"})


@dataclass(frozen=True)
class Filters:
    person_id: str | None = None
    kind: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def query(self) -> dict[str, Any]:
        return {"person_id": self.person_id, "kind": self.kind, "since": self.since,
                "until": self.until}


@bp.route("/log")
@login_required
def index() -> tuple[str, int]:
    filters, errors = parse_filters(request.args)
    page = page_number(request.args.get("page"), errors)
    events, more = [], False
    if not errors:
        found = event_log().list(**filters.query(), limit=PAGE_SIZE + 1,
                                 offset=(page - 1) * PAGE_SIZE)
        events, more = found[:PAGE_SIZE], len(found) > PAGE_SIZE
    args = {key: value for key, value in request.args.items() if key != "page" and value}
    return render_template(
        "log.html", events=events, errors=errors, args=args, page=page, more=more,
        people=[(p.id, p.name) for p in gallery().list_people()], kinds=KINDS,
        csv_url=url_for("log.export", **args),
    ), 400 if errors else 200


@bp.route("/log.csv")
@login_required
def export() -> Response:
    filters, errors = parse_filters(request.args)
    if errors:
        abort(400, description=" ".join(errors.values()))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    events = event_log()
    for offset in range(0, MAX_CSV_ROWS, CSV_BATCH):
        batch = events.list(**filters.query(), limit=CSV_BATCH, offset=offset)
        for event in batch:
            writer.writerow([
                event.at, _cell(event.door), event.kind, _cell(event.person_name or ""),
                "" if event.score is None else f"{event.score:.4f}",
                _cell(event.reason or ""), event.id])
        if len(batch) < CSV_BATCH:
            break
    return Response(buffer.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": "attachment; filename=access-log.csv"})


@bp.route("/log/<event_id>")
@login_required
def event_page(event_id: str) -> str:
    """One event in full: time, decision, person, score, reason, liveness, and its face and
    frame snapshots (what a snapshot thumbnail in the log or on the dashboard opens)."""
    try:
        event = event_log().get(event_id)
    except EventNotFound:
        abort(404, description="No such event (retention may have removed it).")
    return render_template("event.html", event=event)


@bp.route("/snapshots/<event_id>/<which>")
@login_required
def snapshot(event_id: str, which: str) -> Response:
    if which not in SNAPSHOTS:
        abort(404)
    events = event_log()
    try:
        event = events.get(event_id)
    except EventNotFound:
        abort(404)
    relative = event.face_path if which == "face" else event.frame_path
    if not relative:
        abort(404, description="This event has no snapshot (none was kept, or it was "
                               "removed by retention or with its person).")
    try:
        path = events.snapshot_file(relative)
    except ValueError:
        abort(404)
    if not path.is_file():
        abort(404, description="The snapshot file is gone.")
    return send_file(path, mimetype="image/jpeg", conditional=False, etag=False)


@bp.app_template_filter("kind_label")
def kind_label(kind: str) -> str:
    """``forced_open`` -> "forced open", ``attack`` -> "presentation attack"."""
    return KIND_LABELS.get(kind, kind.replace("_", " "))


@bp.app_template_global()
def kind_class(kind: str) -> str:
    """The CSS classes of a kind's badge: its own, and ``kind-refused`` for a refusal."""
    return f"kind kind-{kind}" + (" kind-refused" if kind in REFUSED_KINDS else "")


@bp.app_template_global()
def event_liveness(event: Event) -> float | None:
    """The liveness score the door saw (0..1), when the event records one."""
    value = (event.detail or {}).get("liveness")
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if is_number and 0.0 <= value <= 1.0 else None


@bp.app_template_global()
def event_summary(event: Event) -> str:
    """What the log's reason column says: the door's reason, and for a presentation attack
    "Presentation attack — looked like Colin Powell, liveness 0.03" (the likeness left out
    when the face resembled nobody enrolled, or the person has since been erased)."""
    if event.kind != "attack":
        return event.reason or ""
    parts = [f"looked like {event.person_name}"] if event.person_name else []
    score = event_liveness(event)
    if score is not None:
        parts.append(f"liveness {score:.2f}")
    return "Presentation attack" + (" — " + ", ".join(parts) if parts else "")


def parse_filters(args: Any) -> tuple[Filters, dict[str, str]]:
    errors: dict[str, str] = {}
    kind = args.get("kind") or None
    if kind is not None and kind not in KINDS:
        errors["kind"] = f"Unknown decision {kind!r}."
    times: dict[str, datetime | None] = {}
    for key in ("since", "until"):
        text = (args.get(key) or "").strip()
        try:
            times[key] = parse_since(text) if text else None
        except TimeUnreadable as error:
            errors[key] = f"{str(error)[:1].upper()}{str(error)[1:]}."
            times[key] = None
    if times["since"] and times["until"] and times["until"] <= times["since"]:
        errors["until"] = "'Until' must come after 'since'."
    return Filters(args.get("person") or None, kind, times["since"], times["until"]), errors


def page_number(text: str | None, errors: dict[str, str]) -> int:
    """The page number asked for, 1 when none; a bad one is refused (an offset SQLite cannot
    hold would otherwise be a 500)."""
    if not text:
        return 1
    number = int(text) if text.isascii() and text.isdigit() and len(text) <= 7 else 0
    if not 1 <= number <= MAX_PAGE:
        errors["page"] = f"The page must be a whole number from 1 to {MAX_PAGE}."
        return 1
    return number


def _cell(value: str) -> str:
    """Text a spreadsheet will not run as a formula (a name may start with "=")."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
