"""A real PostgreSQL server for the tests: Debian's, with a cluster made by ``initdb`` in a
temporary folder and started on a free loopback port (never a mock, never the machine's own
cluster).

``scripts/ensure-system-packages`` installs the ``postgresql`` package (``make test`` runs
that script). Without its binaries the PostgreSQL tests are skipped on a developer's machine
and fail on CI (``CI=true``), as the browser and MQTT tests do.

PostgreSQL refuses to run as root, and these machines run the tests as root: then the
cluster belongs to the ``postgres`` user the Debian package creates, and its programs run as
that user (``runuser``); as anyone else they run as the caller.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.appliance import free_port

__all__ = ["Postgres", "postgres_missing"]

PROGRAMS = ("initdb", "pg_ctl", "postgres")
_numbers = itertools.count(1)
START_SECONDS = 30.0


def postgres_bin() -> Path | None:
    """The folder of Debian's PostgreSQL server programs (the newest version), or None."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                      key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    for folder in reversed(versions):
        if all((folder / name).is_file() for name in PROGRAMS):
            return folder
    found = shutil.which("pg_ctl")
    return Path(found).resolve().parent if found else None


def postgres_missing() -> str | None:
    """Why a server cannot run here, or None when it can."""
    if postgres_bin() is None:
        return ("PostgreSQL's server programs are missing: run scripts/ensure-system-packages "
                "(apt-get install postgresql)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run the server as"
        if shutil.which("runuser") is None:
            return "running as root and runuser is missing"
    return None


@dataclass
class Postgres:
    """One cluster in ``folder`` on 127.0.0.1:``port``, database ``facegate``, trusted local
    connections (the tests' own; the site server's documentation sets a password).

    ``folder`` defaults to a new one under the system's temporary folder, which the
    ``postgres`` user can reach (pytest's ``tmp_path`` is closed to other users);
    ``remove()`` stops the server and deletes it.

    ``start()`` makes the cluster on first use and waits until it takes connections;
    ``stop()`` shuts it down fast (as a restart by systemd would); ``kill()`` kills the
    postmaster outright (a crash); ``dsn`` is a psycopg connection string."""

    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="facegate-pg-")))
    port: int = field(default_factory=free_port)
    database: str = "facegate"

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def dsn(self) -> str:
        return f"postgresql://{self._user}@127.0.0.1:{self.port}/{self.database}"

    @property
    def _user(self) -> str:
        return "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name

    def start(self) -> Postgres:
        if not self.data.exists():
            self._make_cluster()
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"),
                  "-o", f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1",
                  "-w", "-t", str(int(START_SECONDS)), "start")
        self._wait_ready()
        if not self._database_exists():
            self._psql("postgres", f'CREATE DATABASE "{self.database}"')
        return self

    def stop(self) -> None:
        pid = self._pid()
        if pid is not None and self._alive(pid):
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def kill(self) -> None:
        """SIGKILL to the postmaster: what a power cut or an OOM kill looks like to clients.
        Its children notice and exit; ``start()`` then recovers from the write-ahead log."""
        pid = self._pid()
        if pid is None:
            return
        os.kill(pid, 9)
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline and self._alive(pid):
            time.sleep(0.05)

    def restart(self) -> None:
        self.stop()
        self.start()

    def fresh_database(self) -> str:
        """A new, empty database on this server (one per test: CREATE DATABASE from the
        empty template is a file copy, milliseconds); returns its connection string."""
        name = f"test_{next(_numbers)}_{os.getpid()}"
        self._psql("postgres", f'CREATE DATABASE "{name}"')
        return self._dsn_for(name)

    def drop_database(self, dsn: str) -> None:
        name = dsn.rsplit("/", 1)[1]
        self._psql("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def remove(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def log(self) -> str:
        path = self.folder / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # --- internals ----------------------------------------------------------------------

    def _make_cluster(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:  # the cluster belongs to the user that runs the server
            account = pwd.getpwnam("postgres")
            os.chown(self.folder, account.pw_uid, account.pw_gid)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-E", "UTF8",
                  "--locale=C", "-U", self._user)
        with (self.data / "postgresql.conf").open("a") as conf:
            # A test cluster: small, quiet, and quick to stop; durability stays on, since the
            # tests restart and kill the server and count what survived.
            conf.write("shared_buffers = 16MB\nmax_connections = 50\n"
                       "log_min_messages = warning\n")

    def _run(self, program: str, *args: str) -> subprocess.CompletedProcess:
        command = [str(postgres_bin() / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, cwd=self.folder,
                                timeout=START_SECONDS * 2)
        if result.returncode:
            raise RuntimeError(f"{program} failed ({result.returncode}): "
                               f"{result.stderr.strip() or result.stdout.strip()}\n{self.log()}")
        return result

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                with psycopg.connect(self._dsn_for("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError as error:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not take connections:\n{self.log()}"
                                       ) from error
                time.sleep(0.1)

    def _database_exists(self) -> bool:
        import psycopg

        with psycopg.connect(self._dsn_for("postgres")) as connection:
            return connection.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                      (self.database,)).fetchone() is not None

    def _psql(self, database: str, statement: str) -> None:
        import psycopg

        with psycopg.connect(self._dsn_for(database), autocommit=True) as connection:
            connection.execute(statement)

    def _dsn_for(self, database: str) -> str:
        return f"postgresql://{self._user}@127.0.0.1:{self.port}/{database}"

    def _pid(self) -> int | None:
        """The postmaster's pid from its lock file (which a killed server leaves behind)."""
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
