"""The running marker and the data folder's lock: files in the data directory while the
daemon runs.

The lock (:func:`lock_data_dir`, ``facegate.lock``) keeps a second ``facegate run`` off a data
folder already in use: it is an ``flock`` held for the daemon's life, released by the kernel
however the process ends, so a stale file never blocks a start.

Written at start and removed at a clean stop (SIGTERM, SIGINT, the end of a replay, an
error the daemon handled). Found at start, it means the last run ended without its shutdown
(SIGKILL, a crash in C, power lost): a hold-open or an unlock then may have left no record
of its end, so the access log says so with an ``unclean_shutdown`` event.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from device.errors import DataDirInUse
from device.events import EventLog

log = logging.getLogger(__name__)

MARKER_FILE = "facegate.running"
LOCK_FILE = "facegate.lock"


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Take the data folder's exclusive lock and write this process's id into it; keep the
    returned file open for as long as the daemon runs (closing it releases the lock).
    Raises :class:`DataDirInUse`, naming the holder's pid, when another process has it."""
    path = data_dir / LOCK_FILE
    file = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held open: that is the lock)
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        file.seek(0)
        holder = file.read().strip() or "unknown"
        file.close()
        raise DataDirInUse(f"another facegate (pid {holder}) is already running on {data_dir}: "
                           "stop it first (sudo systemctl stop facegate) or give this one its "
                           "own --data-dir") from None
    file.truncate(0)
    file.write(f"{os.getpid()}\n")
    file.flush()
    return file


def mark_running(data_dir: Path, events: EventLog) -> Path:
    """Log an ``unclean_shutdown`` when the last run left its marker; write this run's.
    Returns the marker's path, for :func:`clear_running`. Never raises for the disk: a
    marker that cannot be written is logged (the door matters more)."""
    marker = data_dir / MARKER_FILE
    last = _read(marker)
    if last is not None:
        log.warning("the last run (started %s, pid %s) did not stop cleanly",
                    last.get("started_at", "?"), last.get("pid", "?"))
        events.record("unclean_shutdown", reason="the last run did not stop cleanly",
                      detail={"started_at": last.get("started_at"), "pid": last.get("pid")})
    try:
        marker.write_text(json.dumps({"pid": os.getpid(),
                                      "started_at": datetime.now(UTC).isoformat()}) + "\n")
    except OSError as error:
        log.error("cannot write %s (%s): an unclean stop of this run will go unnoticed",
                  marker, error)
    return marker


def clear_running(marker: Path) -> None:
    """Remove the marker at a clean stop."""
    try:
        marker.unlink(missing_ok=True)
    except OSError as error:
        log.error("cannot remove %s (%s): the next start will report an unclean stop",
                  marker, error)


def _read(marker: Path) -> dict | None:
    try:
        text = marker.read_text()
    except FileNotFoundError:
        return None
    except OSError as error:
        return {"error": str(error)}
    try:
        data = json.loads(text)
    except ValueError:  # cut short by the crash itself
        return {}
    return data if isinstance(data, dict) else {}
