"""Snapshot files: each event's face crop and a small thumbnail of its frame, as JPEG.

A snapshot's path is made here, from the event's uuid and UTC date, never from input:
``YYYY/MM/DD/<uuid>-face.jpg`` (and ``-frame.jpg``), relative to the snapshots folder. A
path read back from the database is checked against that shape before a file is opened or
deleted, so a hand-edited or replicated row can never point outside the folder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np

FACE_JPEG_QUALITY = 90
FRAME_JPEG_QUALITY = 80
FRAME_LONGEST_SIDE = 320  # pixels: a thumbnail to see who stood there, not evidence-grade

_RELATIVE = re.compile(
    r"\d{4}/\d{2}/\d{2}/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    r"-(face|frame)\.jpg"
)

logger = logging.getLogger(__name__)

Writer = Callable[[Path, bytes], None]


def snapshot_path(event_id: str, at: datetime, which: str) -> str:
    """The relative path of an event's ``"face"`` or ``"frame"`` snapshot; ``at`` in UTC.

    Folders are by UTC date, so they never jump or repeat at a daylight-saving change.
    """
    relative = f"{at:%Y/%m/%d}/{event_id}-{which}.jpg"
    if not _RELATIVE.fullmatch(relative):
        raise ValueError(f"not a snapshot path: {relative!r} (is the event id a uuid?)")
    return relative


def encode_face(crop: np.ndarray) -> bytes:
    """The face crop (BGR or grey, uint8) as JPEG at quality 90, at its own size."""
    return _encode(crop, FACE_JPEG_QUALITY)


def encode_frame(frame: np.ndarray) -> bytes:
    """The frame shrunk to at most 320 px on its longest side (never enlarged), as JPEG."""
    height, width = frame.shape[:2]
    scale = FRAME_LONGEST_SIDE / max(height, width)
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    return _encode(frame, FRAME_JPEG_QUALITY)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the whole file or none of it.

    The bytes go to a hidden temporary file beside ``path``, are flushed to the card
    (fsync: after a power cut the row committed later must not point at an empty file),
    and the file is then renamed into place. The temporary file is removed on failure.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    for attempt in (1, 2):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(temporary, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
            return
        except FileNotFoundError:
            # Retention in another process removed the (empty) date folder in between.
            if attempt == 2:
                raise
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise


class Snapshots:
    """The snapshots folder ``root``. ``write`` stores one file (tests hand in a failing one)."""

    def __init__(self, root: Path, write: Writer = write_atomic) -> None:
        self.root = Path(root)
        self._write = write
        self._touched: set[Path] = set()

    def save(self, relative: str, data: bytes) -> int:
        """Store ``data`` at ``relative``; return its size. Raises ``OSError`` on disk trouble."""
        self._write(self.path(relative), data)
        return len(data)

    def path(self, relative: str) -> Path:
        """The file a relative snapshot path names; ``ValueError`` unless we could have made it."""
        if not isinstance(relative, str) or not _RELATIVE.fullmatch(relative):
            raise ValueError(f"not a snapshot path: {relative!r}")
        return self.root / relative

    def remove(self, relatives: Iterable[str | None]) -> list[str]:
        """Delete these snapshot files (None entries are skipped); a file already gone counts
        as deleted. Returns the errors, one sentence each; empty when all are gone."""
        errors = []
        for relative in relatives:
            if relative is None:
                continue
            try:
                path = self.path(relative)
            except ValueError:
                # Not a path we make: nothing of ours to delete, so only the row is cleared.
                logger.warning("ignoring snapshot path %r: not one facegate makes", relative)
                continue
            try:
                path.unlink(missing_ok=True)
            except OSError as error:
                errors.append(f"cannot delete {path}: {error.strerror or error}")
                continue
            self._touched.add(path.parent)
        return errors

    def prune(self) -> int:
        """Remove the date folders (day, then month, then year) that deletions since the last
        call have left empty; return how many went. Only those folders are looked at, so
        this is cheap however large the tree."""
        removed = 0
        candidates = set()
        for folder in self._touched:
            candidates.update([folder, folder.parent, folder.parent.parent])
        self._touched.clear()
        # Deepest first, so a month goes only after its days.
        for folder in sorted(candidates, key=lambda path: len(path.parts), reverse=True):
            if folder == self.root or self.root not in folder.parents:
                continue
            try:
                folder.rmdir()
            except OSError:  # not empty (or already gone): either way, nothing to do
                continue
            removed += 1
        return removed


def _encode(image: np.ndarray, quality: int) -> bytes:
    ok, buffer = cv2.imencode(".jpg", np.asarray(image), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("OpenCV could not encode the snapshot as JPEG")
    return buffer.tobytes()
