"""Dated backups in a folder, for ``facegate backup --to DIR`` and its systemd timer.

Each backup is ``facegate-YYYYmmddTHHMMSSZ.db`` (UTC, the name the page's download has), so
the names sort in time order; each is written beside its final name and renamed into place
(:func:`device.backup.database.backup_database`), so the folder never holds half a backup,
even when the power goes mid-copy. ``keep`` prunes the oldest after a new one is complete;
only files of that name pattern are ever removed.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from device.backup.database import backup_database

_NAME = re.compile(r"facegate-\d{8}T\d{6}Z(-\d+)?\.db")


def backup_file_name(now: datetime | None = None) -> str:
    """``facegate-20261201T134000Z.db`` for ``now`` (default: this moment), in UTC."""
    now = datetime.now(UTC) if now is None else now.astimezone(UTC)
    return f"facegate-{now:%Y%m%dT%H%M%SZ}.db"


def backups_in(folder: Path) -> list[Path]:
    """The dated backups in ``folder``, oldest first (the timer's own files only)."""
    if not folder.is_dir():
        return []
    found = [path for path in folder.iterdir() if _NAME.fullmatch(path.name) and path.is_file()]
    return sorted(found, key=lambda path: (path.name[:25], len(path.name), path.name))


def backup_to_folder(db_path: Path, folder: Path, *, keep: int | None = None,
                     now: datetime | None = None) -> tuple[Path, list[Path]]:
    """Write a backup of ``db_path`` (without the accounts, as the page's download) into
    ``folder`` (made if missing) under a dated name; then, with ``keep``, remove all but the
    newest ``keep`` dated backups. Returns the new file and the ones removed."""
    if keep is not None and keep < 1:
        raise ValueError("keep must be at least 1: the backup just made is always kept")
    folder.mkdir(parents=True, exist_ok=True)
    name = backup_file_name(now)
    dest, copy = folder / name, 1
    while dest.exists():  # two backups in one second: keep both
        dest, copy = folder / name.replace(".db", f"-{copy}.db"), copy + 1
    backup_database(db_path, dest)
    removed: list[Path] = []
    if keep is not None:
        for old in backups_in(folder)[:-keep]:
            if old != dest:
                old.unlink(missing_ok=True)
                removed.append(old)
    return dest, removed
