"""A whole site on loopback for the tests: the site server and member doors as real
``facegate`` processes (``site serve``, ``run``) on a real PostgreSQL, and a link between a
door and the site that can be cut (a TCP relay that stops relaying)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from device.daemon.scenes import write_scene
from tests.e2e.appliance import free_port

FACEGATE = [sys.executable, "-m", "device"]


def environment() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("FACEGATE_")}
    env["GPIOZERO_PIN_FACTORY"] = "mock"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait_for(condition: Callable[[], object], timeout_s: float, what: str,
             every_s: float = 0.2) -> object:
    """Poll ``condition`` until it is truthy; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(every_s)


class Process:
    """A facegate process with its output in a file (read by :meth:`output`)."""

    def __init__(self, folder: Path, name: str, args: list[str]) -> None:
        self.log = folder / f"{name}.log"
        self.args = args
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen([*FACEGATE, *self.args], stdout=out,
                                            stderr=subprocess.STDOUT, env=environment(),
                                            stdin=subprocess.DEVNULL)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(5)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class SiteServer(Process):
    def __init__(self, folder: Path, dsn: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = folder / "site.toml"
        self.config.write_text(f'[site]\ndatabase = "{dsn}"\nlisten = "127.0.0.1:{self.port}"\n'
                               f'[paths]\ndata_dir = "{folder / "data"}"\n'
                               '[liveness]\nenabled = false\n')
        super().__init__(folder, "site", ["site", "serve", "--config", str(self.config)])

    def start(self) -> None:
        super().start()
        wait_for(self._answers, 30, f"the site server on {self.url}\n{self.output()}")

    def _answers(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port),
                                                                    timeout=0.5):
            return True
        return False

    def command(self, *args: str) -> subprocess.CompletedProcess:
        """A facegate command against the site (``--config`` its file)."""
        return subprocess.run([*FACEGATE, *args, "--config", str(self.config)],
                              capture_output=True, text=True, env=environment(), timeout=120,
                              stdin=subprocess.DEVNULL)


class MemberDoor(Process):
    """A door daemon that is a member of the site at ``site_url``, watching a replayed scene
    folder (empty frames until :meth:`show` puts a photo in front of it)."""

    def __init__(self, folder: Path, door_id: str, site_url: str, token: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.door_id = door_id
        self.data = folder / "data"
        self.database = self.data / "facegate.db"
        self.scene = folder / "scene"
        write_scene(self.scene, [None], frames_each=6)
        self._next_frame = 6
        token_file = folder / "site-token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        self.config = folder / "facegate.toml"
        self.config.write_text(
            f'[door]\nid = "{door_id}"\n[web]\nenabled = false\n[liveness]\nenabled = false\n'
            f'[recognition]\ncooldown_seconds = 1\n'
            f'[paths]\ndata_dir = "{self.data}"\n'
            f'[site]\nurl = "{site_url}"\ntoken_file = "{token_file}"\npoll_seconds = 1\n'
            f'digest_minutes = 1\n')
        super().__init__(folder, door_id, ["run", "--camera", str(self.scene), "--config",
                                           str(self.config)])

    def hide(self) -> None:
        """Nobody at the door from now on: only the empty hall is played."""
        for frame in sorted(self.scene.glob("frame-*.jpg"))[6:]:
            frame.unlink()
        time.sleep(2)  # the replay notices within its rescan (1 s), and the track ends

    def show(self, photo: Path) -> None:
        """A person walking up, then an empty hall, played in a loop from now on."""
        self._next_frame = write_scene(self.scene, [photo, None], frames_each=20,
                                       start=self._next_frame)


class CuttableLink:
    """A TCP relay from a free port to ``target_port``: :meth:`cut` drops every connection
    and refuses new ones (a door cut off from the site), :meth:`mend` relays again."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._cut = threading.Event()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            for connection in list(self._open):
                with contextlib.suppress(OSError):
                    connection.close()
            self._open.clear()

    def mend(self) -> None:
        self._cut.clear()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._cut.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.close()
