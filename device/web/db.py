"""Per-request handles on the gallery file: sqlite connections belong to one thread, and
waitress serves each request on one of several, so every request opens its own (opened on
first use, closed when the request ends, like flaskr's ``get_db``)."""

from __future__ import annotations

from pathlib import Path

from flask import Flask, current_app, g

from device.events import EventLog
from device.gallery.store import Gallery
from device.web.services import Services


def services() -> Services:
    """The appliance's services handed to ``create_app``."""
    return current_app.extensions["facegate"]


def database_path() -> Path:
    return Path(current_app.config["DATABASE"])


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
