"""The admin web page: an application factory and one blueprint per concern.

Shaped like Flask's tutorial (pallets/flask ``examples/tutorial/flaskr``): ``create_app``
builds the app from config only; tests hand in their own config and :class:`Services`. The
daemon serves it in its own process with waitress (``device.web.server``, docs/web.md)::

    app = create_app({"SECRET_KEY": key, "DATABASE": db, "SNAPSHOTS_DIR": snaps},
                     services=Services(database=db, snapshots=snaps, door=door, live=live))
    server = WebServer(app, host, port)  # ... server.close()
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from flask import Flask

from device.gallery.engines import is_postgres_location
from device.vision.image_io import MAX_PIXELS
from device.web.services import Services

DEFAULTS: dict[str, Any] = {
    "MAX_CONTENT_LENGTH": 20 * 1024 * 1024,  # bytes of one request (all photos together)
    "MAX_UPLOAD_PIXELS": MAX_PIXELS,  # pixels of one decoded photo
    "MAX_PHOTOS_PER_UPLOAD": 20,
    "SESSION_IDLE_MINUTES": 30,
    "SESSION_COOKIE_SECURE": False,  # True when served over HTTPS
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "SESSION_COOKIE_NAME": "facegate_session",
    "LOGIN_RATE_LIMIT": 5,  # failed sign-ins per LOGIN_RATE_WINDOW_SECONDS, per address/user
    "LOGIN_RATE_WINDOW_SECONDS": 60,
    "CAPTURE_FRAMES": 3,  # good frames an enrolment by capture takes
    "CAPTURE_INTERVAL_SECONDS": 0.7,  # between two captured frames, so they differ
    "CAPTURE_TIMEOUT_SECONDS": 10.0,  # give up capturing after this long
    "PENDING_MAX_AGE_SECONDS": 3600,  # how long a held-back duplicate photo may be confirmed
    "DOOR_ID": "web",
}


def create_app(test_config: dict | None = None, *, services: Services | None = None) -> Flask:
    """The admin web app.

    Config keys (``test_config`` or the defaults above): ``SECRET_KEY`` (required unless
    ``TESTING``), ``DATABASE`` (the gallery file; used to build :class:`Services` when none
    is handed in), ``SNAPSHOTS_DIR`` (default: ``snapshots`` beside the database),
    ``PENDING_DIR`` (held-back duplicate photos; default ``pending-enrolment`` beside the
    database), and those in ``DEFAULTS``. ``app.extensions["facegate"]`` is the Services.
    """
    app = Flask(__name__)
    app.config.from_mapping(DEFAULTS)
    if test_config:
        app.config.from_mapping(test_config)
    services = _services(app, services)
    if "PENDING_DIR" not in app.config:  # a site server names its own (device/site/server.py)
        app.config["PENDING_DIR"] = Path(services.database).parent / "pending-enrolment"
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(
        minutes=app.config["SESSION_IDLE_MINUTES"])
    if not app.config.get("SECRET_KEY"):
        if not app.testing:
            raise RuntimeError("create_app needs a SECRET_KEY (the daemon keeps one in the "
                               "data folder)")
        app.config["SECRET_KEY"] = "testing"
    app.extensions["facegate"] = services

    from device.web import (
        accounts,
        api,
        audit,
        auth,
        dashboard,
        db,
        enrol,
        error_pages,
        log,
        people,
        roles,
        security,
        words,
    )
    from device.web import settings as settings_page

    db.init_app(app)
    roles.init_app(app)  # first: who is asking, and may they ask at all
    security.init_app(app)
    error_pages.init_app(app)
    words.init_app(app)
    for blueprint in (auth.bp, dashboard.bp, people.bp, enrol.bp, log.bp, settings_page.bp,
                      audit.bp, accounts.bp):
        app.register_blueprint(blueprint)
    api.init_app(app)
    app.jinja_env.globals["current_user"] = roles.current_user
    # A site server's page (device/site/server.py): the doors instead of one door's state.
    app.jinja_env.globals["site_server"] = bool(app.config.get("SITE_SERVER"))
    app.jinja_env.filters["local_time"] = local_time
    return app


def local_time(utc_text: str | None) -> str:
    """A stored UTC time as the door's local time, to the second (a Jinja filter)."""
    if not utc_text:
        return ""
    return datetime.fromisoformat(utc_text).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _services(app: Flask, services: Services | None) -> Services:
    if services is None:
        database = app.config.get("DATABASE")
        if not database:
            raise RuntimeError("create_app needs DATABASE (the gallery file) or services")
        if is_postgres_location(database):
            raise RuntimeError("a site's app (PostgreSQL) is made by device.site.server")
        database = Path(database)
        snapshots = Path(app.config.get("SNAPSHOTS_DIR") or database.parent / "snapshots")
        services = Services(database=database, snapshots=snapshots)
    app.config["DATABASE"] = services.database
    app.config["SNAPSHOTS_DIR"] = services.snapshots
    return services
