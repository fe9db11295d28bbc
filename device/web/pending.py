"""Photos held back from enrolment until an admin confirms them (their face already matches
someone else). Kept server-side, in a private folder, under a random token: the page only
ever sends the token back, never the image, and never a file name of the client's.

Each photo is two files, ``<token>.img`` (the uploaded bytes) and ``<token>.json`` (whose
enrolment it belongs to). A token is taken at most once (an atomic rename claims it), and
photos older than ``max_age_s`` are deleted the next time one is held back.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any

_TOKEN = re.compile(r"[0-9a-f]{32}")


class PendingPhotos:
    """The held-back photos under ``folder`` (created, owner-only, on first use)."""

    def __init__(self, folder: str | Path, max_age_s: float = 3600.0) -> None:
        self.folder = Path(folder)
        self.max_age_s = max_age_s

    def put(self, data: bytes, meta: dict[str, Any]) -> str:
        """Keep ``data`` with ``meta`` (JSON-ready); return the token that takes it back."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.prune()
        token = secrets.token_hex(16)
        _write(self.folder / f"{token}.img", data)
        _write(self.folder / f"{token}.json",
               json.dumps({**meta, "created": time.time()}).encode())
        return token

    def peek(self, token: str) -> tuple[bytes, dict[str, Any]] | None:
        """The photo and its meta, left in place (to show it); None as for :meth:`take`."""
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            return None
        try:
            meta = json.loads((self.folder / f"{token}.json").read_text())
            data = (self.folder / f"{token}.img").read_bytes()
        except (OSError, ValueError):
            return None
        if time.time() - float(meta.get("created", 0)) > self.max_age_s:
            return None
        return data, meta

    def take(self, token: str) -> tuple[bytes, dict[str, Any]] | None:
        """The photo and its meta, removed from the folder; None when the token is not one
        (malformed, unknown, already taken, or expired)."""
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            return None
        image, meta_file = self.folder / f"{token}.img", self.folder / f"{token}.json"
        claimed = self.folder / f"{token}.taken-{secrets.token_hex(4)}"
        try:
            os.rename(image, claimed)
        except FileNotFoundError:
            return None
        try:
            data = claimed.read_bytes()
            meta = json.loads(meta_file.read_text())
        except (OSError, ValueError):
            return None
        finally:
            claimed.unlink(missing_ok=True)
            meta_file.unlink(missing_ok=True)
        if time.time() - float(meta.get("created", 0)) > self.max_age_s:
            return None
        return data, meta

    def discard_person(self, person_id: str) -> int:
        """Delete every photo held back for ``person_id`` (they were deleted); return how
        many went."""
        removed = 0
        for meta_file in self.folder.glob("*.json"):
            try:
                meta = json.loads(meta_file.read_text())
            except (OSError, ValueError):
                continue
            if meta.get("person_id") == person_id:
                token = meta_file.stem
                removed += self.take(token) is not None
        return removed

    def prune(self) -> int:
        """Delete expired photos; return how many files went."""
        removed = 0
        limit = time.time() - self.max_age_s
        for path in self.folder.glob("*"):
            try:
                if path.stat().st_mtime < limit:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed


def _write(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
    os.replace(temporary, path)
