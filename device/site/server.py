"""``facegate site serve``: the site server. The same admin page as a door's (people,
enrolment, templates, the access log with snapshots, settings, accounts), for the whole site,
on its PostgreSQL store; and the doors' sync API (:mod:`device.site.api`) beside it. There is
no camera or relay here: a site server opens no door.

TLS: like a door's page, the site server speaks plain HTTP on ``site.listen`` (waitress has
no TLS) and is meant to sit behind a TLS proxy (docs/site.md); doors then use its ``https://``
address, trusting its certificate through ``site.ca_file``.
"""

from __future__ import annotations

import logging
import signal
import threading

from flask import Flask

from device.config import Config, parse_listen
from device.errors import FacegateError
from device.gallery.engines import describe_location
from device.gallery.store import Gallery
from device.site import api, page
from device.web.roles import login_required
from device.web.server import WebServer, load_or_create_secret_key, setup_link
from device.web.services import Services

log = logging.getLogger(__name__)


def site_database(config: Config) -> str:
    """The site's PostgreSQL, or one sentence saying what is missing."""
    if not config.site.database:
        raise FacegateError("site.database is not set: name the site's PostgreSQL, e.g. "
                            '[site] database = "postgresql://facegate@127.0.0.1/facegate"')
    return config.site.database


def site_app(config: Config) -> Flask:
    """The site's admin page and sync API on ``site.database``; its secret key, snapshots
    and held-back photos under ``paths.data_dir``."""
    from device.web import create_app

    database = site_database(config)
    data = config.paths.data_dir
    data.mkdir(parents=True, exist_ok=True)
    Gallery(database).close()  # create or migrate the store before anyone reads it
    services = Services(database=database, snapshots=data / "snapshots",
                        models_dir=config.recognition.models_dir, config=config)
    app = create_app({"SECRET_KEY": load_or_create_secret_key(data), "DATABASE": database,
                      "SNAPSHOTS_DIR": data / "snapshots",
                      "PENDING_DIR": data / "pending-enrolment", "DOOR_ID": "site",
                      "SESSION_COOKIE_SECURE": config.web.cookie_secure,
                      "SITE_SERVER": True}, services=services)
    app.register_blueprint(api.bp)
    app.register_blueprint(page.bp)
    app.view_functions["dashboard.index"] = login_required(page.home)
    return app


def serve(config: Config, stop: threading.Event | None = None) -> int:
    """Serve until ``stop`` is set, SIGTERM or SIGINT; returns 0."""
    stop = stop or threading.Event()
    host, port = parse_listen(config.site.listen)
    app = site_app(config)
    server = WebServer(app, host, port)
    log.info("site server on %s/ (store %s)", server.url, describe_location(config.site.database))
    link = setup_link(config.site.database, server.url)
    if link:
        log.warning("no admin yet: create the first one at %s (works once, for 24 hours), "
                    "or run `facegate admin add NAME --config SITE.toml`", link)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, lambda *_: stop.set())
                    for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        stop.wait()
    finally:
        server.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
