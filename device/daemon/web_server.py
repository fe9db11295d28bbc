"""The admin page, served by waitress from the daemon's own process.

One process owns the door, the camera and the database, so the page's "unlock now" and live
view reach the real door and camera without any IPC. waitress runs in its own threads; the
door loop is not slowed by it beyond the CPU the page itself asks for.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from pathlib import Path

log = logging.getLogger(__name__)


def secret_key(data_dir: Path) -> str:
    """The session-signing key, made once per door and kept (0600) in the data directory,
    so sessions survive a restart and no two doors share a key."""
    path = data_dir / "secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path.read_text().strip()


class WebServer:
    """waitress in a background thread; ``close()`` stops it."""

    def __init__(self, app, host: str, port: int, threads: int = 4) -> None:
        from waitress import create_server

        self._server = create_server(app, host=host, port=port, threads=threads,
                                     ident="facegate")
        self.address = f"{host}:{self._server.effective_port}"
        self._thread = threading.Thread(target=self._serve, name="web", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _serve(self) -> None:
        try:
            self._server.run()
        except OSError:
            pass  # closed while serving: the daemon is stopping

    def close(self) -> None:
        self._server.close()
        self._thread.join(timeout=5)
