"""Serving the admin page from the daemon's process: waitress on a thread, the persistent
secret key, and the one-time set-up link while the door has no admin.

The daemon does, in this order::

    key = load_or_create_secret_key(config.paths.data_dir)
    app = create_app({"SECRET_KEY": key, "DATABASE": db, "SNAPSHOTS_DIR": snaps},
                     services=Services(database=db, snapshots=snaps, door=door, live=live,
                                       config=config, pipeline_factory=lambda: pipeline))
    server = WebServer(app, config.web.host, config.web.port)   # listening from here
    if (link := setup_link(db, server.url)) is not None:
        log.warning("no admin yet: create one at %s (valid 24 h, once)", link)
    ...
    server.close()
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from pathlib import Path

from flask import Flask
from waitress.server import create_server

from device.web.users import admin_exists, create_setup_token

log = logging.getLogger(__name__)

SECRET_KEY_FILE = "web-secret-key"


class WebServer:
    """``app`` served by waitress on ``host``:``port`` from a daemon thread, until
    :meth:`close`. Port 0 picks a free port (see :attr:`port`). Raises ``OSError`` at once
    when the address cannot be bound (in use, not this machine's)."""

    def __init__(self, app: Flask, host: str, port: int, *, threads: int = 8) -> None:
        # Requests are small and short except uploads; 8 threads serve a few admins while
        # the live view polls. url_scheme stays http: TLS, if any, ends in a proxy.
        self._server = create_server(app, host=host, port=port, threads=threads,
                                     ident="facegate", clear_untrusted_proxy_headers=True)
        self.host = host
        self.port = int(self._server.effective_port)
        self._thread = threading.Thread(target=self._run, name="web", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def close(self, timeout_s: float = 5.0) -> None:
        """Let running requests finish (up to ``timeout_s``), stop listening, drop open
        connections and end the serving thread."""
        server = self._server
        if not self._thread.is_alive():
            return
        server.task_dispatcher.shutdown(timeout=timeout_s)
        # Closed from the loop's own thread (the trigger runs a callable there): every
        # dispatcher in the loop's map (the listening socket, the trigger, each connection)
        # removes itself from the map, and an empty map ends the loop.
        server.trigger.pull_trigger(self._close_sockets)
        self._thread.join(timeout_s)

    def _close_sockets(self) -> None:
        for dispatcher in list(self._server._map.values()):
            dispatcher.close()

    def _run(self) -> None:
        try:
            self._server.run()
        except OSError:  # a socket closed under the loop by close()
            pass


def load_or_create_secret_key(data_dir: str | Path) -> str:
    """The key that signs session cookies, kept in ``data_dir/web-secret-key`` (owner-only)
    so that a restart does not sign everybody out; created on first use."""
    path = Path(data_dir) / SECRET_KEY_FILE
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        key = ""
    if len(key) >= 32:
        return key
    key = secrets.token_urlsafe(48)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(key + "\n")
    os.replace(temporary, path)
    return key


def setup_link(db_path: str | Path, base_url: str) -> str | None:
    """``<base_url>/setup/<token>`` with a fresh one-time token while no admin exists, else
    None. Each call makes a new token (each valid 24 h); all die once an admin exists."""
    if admin_exists(db_path):
        return None
    return f"{base_url.rstrip('/')}/setup/{create_setup_token(db_path)}"
