"""The sync API: how member doors talk to their site server (``/sync/...``, JSON).

Every request carries the door's credential as ``Authorization: Bearer fgd_...``
(:mod:`device.site.doors`); it reads the gallery and writes that door's own events only.
Nothing else of the admin page answers a door's credential, and no account's session or API
token answers here.

| request | answer |
|---|---|
| ``GET /sync/head`` | ``{"head", "model"}`` |
| ``GET /sync/changes?since=N&limit=L`` | a page of :func:`~device.site.feed.changes_since` |
| ``GET /sync/snapshot?entity=person|template&after=ID&limit=L`` | a page of full rows |
| ``GET /sync/digest`` | ``{"head", "digest"}`` |
| ``POST /sync/events`` ``{"events": [...]}`` | ``{"stored": [ids]}`` |
| ``PUT /sync/events/<id>/snapshots/<face|frame>`` (a JPEG) | ``{}`` |
| ``POST /sync/status`` ``{"replica_seq", "replica_model", "pending_events"}`` | ``{}`` |
| ``GET /sync/models/<name>`` and ``/sync/models/<name>/file`` | a model's card, its file |
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, g, jsonify, request, send_file
from werkzeug.wrappers import Response

from device.errors import FacegateError
from device.events.snapshots import Snapshots
from device.gallery.store import Gallery
from device.site import feed
from device.site.doors import authenticate_door, record_contact

bp = Blueprint("sync", __name__, url_prefix="/sync")

MAX_EVENTS_PER_POST = 500


@bp.before_request
def _authenticate() -> Response | tuple[Response, int] | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    g.site_gallery = Gallery(current_app.config["DATABASE"])
    door = authenticate_door(g.site_gallery, token.strip()) if scheme == "Bearer" else None
    if door is None:
        return jsonify(error="a door's credential is needed (Authorization: Bearer fgd_...)"), 401
    g.door_id = door
    record_contact(g.site_gallery, door)
    return None


@bp.teardown_request
def _close(_error: BaseException | None = None) -> None:
    gallery = g.pop("site_gallery", None)
    if gallery is not None:
        gallery.close()


@bp.errorhandler(FacegateError)
def _refused(error: FacegateError) -> tuple[Response, int]:
    return jsonify(error=str(error)), 400


@bp.get("/head")
def head() -> Response:
    return jsonify(feed.head(g.site_gallery))


@bp.get("/changes")
def changes() -> Response:
    return jsonify(feed.changes_since(g.site_gallery, _number("since", 0),
                                      _number("limit", feed.MAX_PAGE)))


@bp.get("/snapshot")
def snapshot() -> Response:
    return jsonify(feed.snapshot_page(g.site_gallery, request.args.get("entity", ""),
                                      request.args.get("after", ""),
                                      _number("limit", feed.MAX_PAGE)))


@bp.get("/digest")
def digest() -> Response:
    return jsonify(feed.digest_at_head(g.site_gallery))


@bp.post("/events")
def events() -> Response:
    body = request.get_json(silent=True)
    batch = body.get("events") if isinstance(body, dict) else None
    if not isinstance(batch, list) or len(batch) > MAX_EVENTS_PER_POST:
        raise feed.BadSyncRequest(f"send {{\"events\": [...]}} with at most "
                                  f"{MAX_EVENTS_PER_POST} events")
    return jsonify(stored=feed.ingest_events(g.site_gallery, g.door_id, batch))


@bp.put("/events/<event_id>/snapshots/<which>")
def snapshot_file(event_id: str, which: str) -> Response:
    data = request.get_data(cache=False)
    feed.store_snapshot(g.site_gallery, Snapshots(current_app.config["SNAPSHOTS_DIR"]),
                        g.door_id, event_id, which, data)
    return jsonify({})


@bp.post("/status")
def status() -> Response:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise feed.BadSyncRequest("send a JSON object")
    record_contact(g.site_gallery, g.door_id, replica_seq=_whole(body, "replica_seq"),
                   replica_model=_text(body, "replica_model"),
                   pending_events=_whole(body, "pending_events"))
    feed.retire_old_sets(g.site_gallery)  # the last door off the old model lets it go
    return jsonify({})


@bp.get("/models/<name>")
def model(name: str) -> Response:
    """A model's card, for a door that has to fetch it before it follows a model swap."""
    return jsonify(card=feed.model_card(_models_dir(), name).card)


@bp.get("/models/<name>/file")
def model_file(name: str) -> Response:
    return send_file(feed.model_card(_models_dir(), name).path,
                     mimetype="application/octet-stream", max_age=0)


def _models_dir():
    services = current_app.extensions["facegate"]
    return services.models_dir


def _number(name: str, default: int) -> int:
    value = request.args.get(name)
    if value is None:
        return default
    if not value.isdigit():
        raise feed.BadSyncRequest(f"{name} is a whole number")
    return int(value)


def _whole(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise feed.BadSyncRequest(f"{key} is a whole number")
    return value


def _text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and (not isinstance(value, str) or len(value) > 200):
        raise feed.BadSyncRequest(f"{key} is text")
    return value
