"""Replay scenes: photos of people "walking up" to the door, as a folder of 640x480 frames.

The replay camera plays a folder of frames; a single photo shown for one frame is not a
person at a door (the vote needs the same face in several frames), so each photo is held for
a while, drifting a little as a person does. Used by ``make run``'s demo, the tests and the
benchmarks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

FRAME_SIZE = (640, 480)
BACKGROUND = 70  # grey, like a corridor wall


def compose_frame(photo: np.ndarray | None, *, shift: tuple[int, int] = (0, 0),
                  scale: float = 1.4, size: tuple[int, int] = FRAME_SIZE) -> np.ndarray:
    """A frame with ``photo`` scaled and centred (plus ``shift`` pixels); None: an empty hall."""
    width, height = size
    frame = np.full((height, width, 3), BACKGROUND, np.uint8)
    if photo is None:
        return frame
    resized = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    h, w = resized.shape[:2]
    x0 = (width - w) // 2 + shift[0]
    y0 = (height - h) // 2 + shift[1]
    # Paste the part of the photo that falls inside the frame.
    fx0, fy0 = max(0, x0), max(0, y0)
    fx1, fy1 = min(width, x0 + w), min(height, y0 + h)
    frame[fy0:fy1, fx0:fx1] = resized[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
    return frame


def write_scene(folder: Path, photos: Sequence[Path | None], *, frames_each: int = 12,
                start: int = 0) -> int:
    """Write frames ``start``, ``start+1``, ... holding each photo (None: nobody) for
    ``frames_each`` frames; returns the next frame number. Names sort in play order."""
    folder.mkdir(parents=True, exist_ok=True)
    number = start
    for photo_path in photos:
        photo = None if photo_path is None else cv2.imread(str(photo_path))
        for k in range(frames_each):
            frame = compose_frame(photo, shift=(2 * k - frames_each, k // 2))
            cv2.imwrite(str(folder / f"frame-{number:06d}.jpg"), frame,
                        [cv2.IMWRITE_JPEG_QUALITY, 90])
            number += 1
    return number


def demo_scene(folder: Path, data_dir: Path) -> Path:
    """The demo: each person's and stranger's photos in turn, with empty frames between."""
    marker = folder / ".complete"
    if marker.exists():
        return folder
    photos: list[Path | None] = []
    for person in sorted(p for p in (data_dir / "people").iterdir() if p.is_dir()):
        for photo in sorted(person.glob("*.jpg")):
            photos += [photo, None]
    for stranger in sorted((data_dir / "strangers").glob("*.jpg")):
        photos += [stranger, None]
    write_scene(folder, photos)
    marker.touch()
    return folder
