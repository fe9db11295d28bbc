"""Per-request handles on the gallery file: sqlite connections belong to one thread, and
waitress serves each request on one of several, so every request opens its own (opened on
first use, closed when the request ends, like flaskr's ``get_db``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from flask import Flask, current_app, g, has_request_context, request

from device.config import Config, Places, load_config
from device.errors import FacegateError
from device.events import EventLog
from device.gallery.engines import is_postgres_location
from device.gallery.store import Gallery
from device.identification import Decision, embedder_name
from device.liveness import LivenessSettings
from device.web.services import Services

if TYPE_CHECKING:
    from device.enrolment import Actor, EnrolmentService


def services() -> Services:
    """The appliance's services handed to ``create_app``."""
    return current_app.extensions["facegate"]


def database_path() -> Path | str:
    """The gallery file, or at a site server its PostgreSQL connection string."""
    location = current_app.config["DATABASE"]
    return location if is_postgres_location(location) else Path(location)


def gallery() -> Gallery:
    """This request's Gallery (migrated on first open)."""
    if "gallery" not in g:
        g.gallery = Gallery(database_path())
    return g.gallery


def event_log() -> EventLog:
    """This request's EventLog (for reading and erasing; the daemon records)."""
    if "event_log" not in g:
        g.event_log = EventLog(database_path(), current_app.config["SNAPSHOTS_DIR"],
                               door_id=current_app.config["DOOR_ID"])
    return g.event_log


def close(_error: BaseException | None = None) -> None:
    for name in ("gallery", "event_log"):
        handle = g.pop(name, None)
        if handle is not None:
            handle.close()


def init_app(app: Flask) -> None:
    app.teardown_appcontext(close)


def enrolment(source: str) -> tuple[EnrolmentService, Actor]:
    """This request's enrolment service (the one every front uses) and the signed-in admin
    enrolling from ``source`` ("upload", "capture" or "api") as its actor. Raises
    ``ModelMismatch`` when the configuration pins another model than the gallery's."""
    from device.enrolment import Actor, EnrolmentPolicy, EnrolmentService
    from device.web.roles import current_user

    svc = services()
    config = svc.config
    configured = config.recognition.model if config is not None else None
    effective = door_config()
    with svc.pipeline_lock:
        pipeline = svc.pipeline(embedder_name(gallery(), configured or None))
        liveness = svc.liveness(LivenessSettings.from_config(effective.liveness))
    decision = Decision.from_card(pipeline.embedder_card.threshold,
                                  effective.recognition.threshold, effective.recognition.margin)
    service = EnrolmentService(
        pipeline, gallery(), EnrolmentPolicy.from_card(pipeline.embedder_card.card, decision),
        pipeline_lock=svc.pipeline_lock, store_crops=effective.recognition.store_crops,
        liveness=liveness)
    account = current_user()
    return service, Actor(account.name if account else None, source,
                          request.remote_addr if has_request_context() else None)


def door_config() -> Config:
    """The daemon's configuration with the settings page's values on top, as the door runs."""
    from device.site_settings import apply_site_settings, read_site_settings

    base = services().config or load_config(None, environ={}, places=Places(
        system_config=Path("/nonexistent/facegate.toml"), system_data_dir=Path("/nonexistent"),
        project_dir=None))
    try:
        return apply_site_settings(base, read_site_settings(database_path()))
    except FacegateError:
        return base
