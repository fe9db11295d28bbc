"""The appliance as a user runs it: ``facegate admin add`` then ``facegate run --web``.

A subprocess on gpiozero's mock pins, replaying a folder of frames as its camera, with its
own data folder and configuration file (so nothing from /etc or var/ leaks in), serving the
admin page on a free local port.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from device.daemon.scenes import write_scene

PROJECT = Path(__file__).resolve().parents[2]
DATA = PROJECT / "tests" / "data"
PEOPLE = DATA / "people"
ADMIN = "admin"
PASSWORD = "correct horse battery staple"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _environment() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("FACEGATE_")}  # the test's files, not the developer's
    env["GPIOZERO_PIN_FACTORY"] = "mock"
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Appliance:
    """One door daemon with its admin page; ``start()``, then ``stop()`` (its exit status).

    ``photos`` is the replay, looped: each photo (None: an empty hall) held for
    ``frames_each`` frames at the camera's 15 frames per second.
    """

    def __init__(self, folder: Path, photos: Sequence[Path | None], *,
                 frames_each: int = 20) -> None:
        self.folder = folder
        self.data_dir = folder / "data"
        self.scene = folder / "scene"
        self.config = folder / "facegate.toml"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self._stdout = folder / "daemon.stdout"
        self._stderr = folder / "daemon.stderr"
        folder.mkdir(parents=True, exist_ok=True)
        # The replay holds LFW press photos up to the camera, which the liveness check rightly
        # takes for photos (docs/door.md, "Liveness"): off, to watch the grants.
        self.config.write_text("# facegate end-to-end test: the defaults, but liveness off\n"
                               "[liveness]\nenabled = false\n")
        write_scene(self.scene, photos, frames_each=frames_each)

    @property
    def snapshots(self) -> Path:
        return self.data_dir / "snapshots"

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        """``python -m device ARGS --config ... --data-dir ...``; raises on a non-zero exit."""
        result = subprocess.run(
            [sys.executable, "-m", "device", *args, "--config", str(self.config),
             "--data-dir", str(self.data_dir)],
            input=stdin, capture_output=True, text=True, timeout=120, env=_environment(),
            cwd=PROJECT)
        if result.returncode != 0:
            raise AssertionError(f"facegate {' '.join(args)} exited {result.returncode}: "
                                 f"{result.stderr.strip()}")
        return result

    def cli_json(self, *args: str) -> list[dict]:
        return [json.loads(line) for line in self.cli(*args, "--json").stdout.splitlines()]

    def add_admin(self, name: str = ADMIN, password: str = PASSWORD) -> None:
        self.cli("admin", "add", name, "--password-stdin", stdin=password + "\n")

    def start(self, timeout: float = 60) -> None:
        """Start the daemon and wait until ``/health`` answers."""
        with open(self._stdout, "wb") as out, open(self._stderr, "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "device", "run", "--config", str(self.config),
                 "--data-dir", str(self.data_dir), "--camera", str(self.scene),
                 "--web", f"127.0.0.1:{self.port}"],
                stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=_environment(),
                cwd=PROJECT)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"the daemon exited {self.process.returncode} while "
                                     f"starting:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.url}/health did not answer in {timeout:.0f} s:"
                                     f"\n{self.log_tail()}")
            time.sleep(0.2)

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM, as systemd stops it; returns its exit status (killed: -9)."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log_tail(self, lines: int = 30) -> str:
        """The end of the daemon's stderr (its log), for failure messages."""
        if not self._stderr.exists():
            return "(no log)"
        return "\n".join(self._stderr.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> Appliance:
        self.add_admin()
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
