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

# The demo's scene, as written: a folder made by another recipe is written again.
DEMO_RECIPE = "corridor, 24 frames a photo, 11 empty between"
DEMO_FRAMES_EACH = 24  # 1.6 s at the camera's 15 fps: a person walking up and waiting
# Long enough for the door to forget the last face whatever the settings (a track outlives
# its face by ``recognition.votes_window`` frames, at most 10), so each photo is a new person
# walking up; short enough that the live view mostly shows someone (the flat-grey halls
# between photos used to fill half of the demo).
DEMO_EMPTY_FRAMES = 11


def corridor(size: tuple[int, int] = FRAME_SIZE) -> np.ndarray:
    """An empty corridor as a door camera sees it: a lit wall fading into a darker floor,
    a door frame and a little sensor noise. The demo's background, so that the live view of
    an empty hall looks like a camera picture rather than a flat grey of a broken feed."""
    width, height = size
    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    columns = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :]
    horizon = 0.72  # where the wall meets the floor, as a fraction of the height
    wall = 150 - 40 * np.abs(columns) - 20 * rows
    floor = 95 - 30 * (rows - horizon) / (1 - horizon) + 0 * columns  # full width
    light = np.where(rows < horizon, wall, floor)
    warm = np.array([0.78, 0.93, 1.1], np.float32)  # BGR: a beige wall, not a grey feed
    frame = np.repeat(light[:, :, None], 3, axis=2) * warm
    frame = np.clip(frame, 0, 255).astype(np.uint8)
    x_left, x_right = int(width * 0.12), int(width * 0.88)  # the door frame, edge to edge
    top, bottom = int(height * 0.06), int(height * horizon)
    cv2.rectangle(frame, (x_left, top), (x_right, bottom), (50, 75, 110), 8)  # wood
    cv2.line(frame, (0, bottom), (width, bottom), (55, 65, 80), 3)
    noise = np.random.default_rng(0).normal(0, 3, frame.shape)  # fixed: frames repeat exactly
    return np.clip(frame + noise, 0, 255).astype(np.uint8)


def compose_frame(photo: np.ndarray | None, *, shift: tuple[int, int] = (0, 0),
                  scale: float = 1.4, size: tuple[int, int] = FRAME_SIZE,
                  background: np.ndarray | None = None) -> np.ndarray:
    """A frame with ``photo`` scaled and centred (plus ``shift`` pixels); None: an empty hall.
    ``background`` (height x width x 3) is what lies behind; None: a flat grey wall."""
    width, height = size
    frame = (np.full((height, width, 3), BACKGROUND, np.uint8) if background is None
             else background.copy())
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
                start: int = 0, empty_frames: int | None = None,
                background: np.ndarray | None = None) -> int:
    """Write frames ``start``, ``start+1``, ... holding each photo (None: nobody) for
    ``frames_each`` frames (``empty_frames`` for a None, when given); returns the next frame
    number. Names sort in play order. ``background`` as for :func:`compose_frame`."""
    folder.mkdir(parents=True, exist_ok=True)
    number = start
    for photo_path in photos:
        photo = None if photo_path is None else cv2.imread(str(photo_path))
        count = empty_frames if photo is None and empty_frames is not None else frames_each
        for k in range(count):
            frame = compose_frame(photo, shift=(2 * k - count, k // 2), background=background)
            cv2.imwrite(str(folder / f"frame-{number:06d}.jpg"), frame,
                        [cv2.IMWRITE_JPEG_QUALITY, 90])
            number += 1
    return number


def demo_scene(folder: Path, data_dir: Path) -> Path:
    """The demo: each person's and stranger's photos in turn in a corridor, a short empty
    hall between them; written once, and again when the recipe has changed since."""
    marker = folder / ".complete"
    if marker.exists() and marker.read_text() == DEMO_RECIPE:
        return folder
    for old in folder.glob("frame-*.jpg"):  # another recipe's frames would play on
        old.unlink()
    photos: list[Path | None] = []
    for person in sorted(p for p in (data_dir / "people").iterdir() if p.is_dir()):
        for photo in sorted(person.glob("*.jpg")):
            photos += [photo, None]
    for stranger in sorted((data_dir / "strangers").glob("*.jpg")):
        photos += [stranger, None]
    write_scene(folder, photos, frames_each=DEMO_FRAMES_EACH, empty_frames=DEMO_EMPTY_FRAMES,
                background=corridor())
    marker.write_text(DEMO_RECIPE)
    return folder
