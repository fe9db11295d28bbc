"""Serving the page as the daemon does: waitress on a thread, a lasting secret key, and the
set-up link while no admin exists."""

from __future__ import annotations

import http.client
import json
import stat

from device.config import Places, load_config
from device.daemon.live import LiveFrames
from device.daemon.run import web_app
from device.gallery.store import Gallery
from device.web import create_app
from device.web.auth import add_user
from device.web.server import WebServer, load_or_create_secret_key, setup_link


def test_the_page_is_served_by_waitress_until_closed(tmp_path):
    database = tmp_path / "facegate.db"
    Gallery(database).close()
    app = create_app({"SECRET_KEY": load_or_create_secret_key(tmp_path), "DATABASE": database})
    server = WebServer(app, "127.0.0.1", 0)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        connection.request("GET", "/health")
        response = connection.getresponse()
        assert response.status == 200 and json.loads(response.read()) == {"status": "ok"}
        assert "frame-ancestors 'none'" in response.getheader("Content-Security-Policy")
        connection.request("GET", "/people")  # the same kept-alive connection
        response = connection.getresponse()
        response.read()
        assert response.status == 302
    finally:
        server.close()
    assert not server._thread.is_alive()
    connection.close()


def test_the_secret_key_is_created_once_and_private(tmp_path):
    key = load_or_create_secret_key(tmp_path / "data")
    assert len(key) >= 32 and load_or_create_secret_key(tmp_path / "data") == key
    mode = (tmp_path / "data" / "web-secret-key").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


def test_a_setup_link_is_made_only_while_there_is_no_admin(tmp_path):
    database = tmp_path / "facegate.db"
    link = setup_link(database, "http://door.local:8080/")
    assert link.startswith("http://door.local:8080/setup/")
    add_user(database, "vic", "long enough", role="viewer")
    assert setup_link(database, "http://door.local:8080") is not None
    add_user(database, "ann", "long enough")
    assert setup_link(database, "http://door.local:8080") is None


def test_the_daemon_marks_the_cookie_secure_when_the_configuration_says_so(tmp_path, door):
    places = Places(system_config=tmp_path / "none.toml", system_data_dir=tmp_path / "none",
                    project_dir=None)
    cookies = {}
    for secure in (False, True):
        config = load_config(None, {"paths.data_dir": str(tmp_path / "data"),
                                    "web.cookie_secure": secure}, environ={}, places=places)
        app = web_app(config, door, LiveFrames())
        assert app.config["SESSION_COOKIE_SECURE"] is secure
        cookies[secure] = app.test_client().get("/login").headers["Set-Cookie"]
    assert "; Secure" not in cookies[False] and "; Secure" in cookies[True]
