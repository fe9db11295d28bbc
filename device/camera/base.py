"""What every camera source gives the daemon: a ``Frame``, and the small ``Camera`` contract."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType

import cv2
import numpy as np

Size = tuple[int, int]  # (width, height) in pixels, OpenCV's order


@dataclass(frozen=True, eq=False)
class Frame:
    """One picture from a camera.

    ``image`` is the detection stream (BGR uint8, e.g. 480x640x3). ``full`` is the same
    moment at a higher resolution for crops and snapshots when the source has one, else
    None. ``full_offset`` and ``full_scale`` place ``image`` inside ``full`` (letterbox
    padding, then per-axis scale); use ``to_full`` rather than reading them.
    """

    image: np.ndarray
    timestamp: float  # time.monotonic() seconds when the frame was taken from the source
    index: int  # 0 for the first frame since the camera was made, then 1, 2, ...
    full: np.ndarray | None = None
    full_offset: tuple[float, float] = (0.0, 0.0)  # padding (x, y) in image pixels
    full_scale: tuple[float, float] = (1.0, 1.0)  # full pixels per image pixel (x, y)

    def to_full(self, points: np.ndarray) -> np.ndarray:
        """Map (..., 2) x, y points (or boxes reshaped to points) from ``image`` to ``full``.

        The identity when ``full`` is None: crop from ``image`` then.
        """
        points = np.asarray(points, np.float32)
        return (points - np.float32(self.full_offset)) * np.float32(self.full_scale)


class Camera(ABC):
    """A source of frames: ``open()``, ``read()`` until done, ``close()``; or ``with``.

    ``open()`` and ``close()`` may be called again harmlessly. ``read()`` blocks until the
    next frame and raises ``CameraError`` when the source fails (a failed grab, a vanished
    device) and ``EndOfStream`` (a ``CameraError``) when a replay has run out.
    """

    def __init__(self, name: str) -> None:
        self.name = name  # for logs, e.g. "replay:/srv/demo" or "opencv:/dev/video0"
        self._count = 0
        # How the camera is mounted (camera.rotation, camera.mirror), undone on every frame
        # in _frame: first mirrored left to right, then turned clockwise by ``rotation``.
        self.rotation = 0  # degrees: 0, 90, 180 or 270
        self.mirror = False

    @abstractmethod
    def open(self) -> None:
        """Start the source; raises ``CameraError`` with one sentence when it cannot."""

    @abstractmethod
    def read(self) -> Frame:
        """The next frame."""

    @abstractmethod
    def close(self) -> None:
        """Release the device; the camera may be opened again afterwards."""

    def __enter__(self) -> Camera:
        self.open()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    def _frame(self, fitted: Fitted) -> Frame:
        """Stamp a picture just taken from the source with the time and the next index."""
        self._count += 1
        fitted = orient(fitted, self.rotation, self.mirror)
        return Frame(fitted.image, time.monotonic(), self._count - 1, fitted.full,
                     fitted.full_offset, fitted.full_scale)


@dataclass(frozen=True, eq=False)
class Fitted:
    """A picture ready to become a ``Frame``: the detection image and where it sits in ``full``."""

    image: np.ndarray
    full: np.ndarray | None
    full_offset: tuple[float, float]
    full_scale: tuple[float, float]


def fit_to_size(image: np.ndarray, size: Size | None) -> Fitted:
    """Letterbox ``image`` into ``size`` (width, height): scaled to fit, centred, black bars.

    The aspect ratio is kept because a face squashed by a plain resize embeds differently.
    When the source is bigger than ``size`` it is kept as ``full`` for crops; a smaller
    source is enlarged and nothing sharper exists, so ``full`` is None.
    """
    height, width = image.shape[:2]
    if size is None or (width, height) == tuple(size):
        return Fitted(image, None, (0.0, 0.0), (1.0, 1.0))
    target_w, target_h = size
    scale = min(target_w / width, target_h / height)
    new_w = max(1, round(width * scale))
    new_h = max(1, round(height * scale))
    # INTER_AREA averages when shrinking (no aliasing on fine texture); it is blocky upwards.
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    left = (target_w - new_w) // 2
    top = (target_h - new_h) // 2
    boxed = np.zeros((target_h, target_w, 3), np.uint8)
    boxed[top:top + new_h, left:left + new_w] = resized
    if width <= target_w and height <= target_h:
        return Fitted(boxed, None, (0.0, 0.0), (1.0, 1.0))
    return Fitted(boxed, image, (float(left), float(top)), (width / new_w, height / new_h))


ROTATIONS = (0, 90, 180, 270)  # camera.rotation, clockwise degrees


def orient(fitted: Fitted, rotation: int = 0, mirror: bool = False) -> Fitted:
    """``fitted`` mirrored left to right (``mirror``), then turned ``rotation`` degrees
    clockwise, its ``full`` picture with it and the offset and scale that place one in the
    other kept exact, so crops still come from the right place. A 90 or 270 turn makes a
    landscape detection image portrait. Costs one copy per picture when not the identity."""
    if rotation not in ROTATIONS:
        raise ValueError(f"rotation must be one of {ROTATIONS}, got {rotation!r}")
    if mirror:
        fitted = _mirrored(fitted)
    for _ in range(rotation // 90):
        fitted = _turned(fitted)
    return fitted


def _mirrored(fitted: Fitted) -> Fitted:
    # x' = W - x in both pictures; solving X' = (x' - ox') * sx for ox'.
    width = fitted.image.shape[1]
    (ox, oy), (sx, sy) = fitted.full_offset, fitted.full_scale
    full_width = width * sx if fitted.full is None else fitted.full.shape[1]
    full = None if fitted.full is None else np.ascontiguousarray(fitted.full[:, ::-1])
    return Fitted(np.ascontiguousarray(fitted.image[:, ::-1]), full,
                  (width - ox - full_width / sx, oy), (sx, sy))


def _turned(fitted: Fitted) -> Fitted:
    # A quarter turn clockwise: x' = H - y, y' = x in both pictures.
    height = fitted.image.shape[0]
    (ox, oy), (sx, sy) = fitted.full_offset, fitted.full_scale
    full_height = height * sy if fitted.full is None else fitted.full.shape[0]
    clockwise = cv2.ROTATE_90_CLOCKWISE
    full = None if fitted.full is None else cv2.rotate(fitted.full, clockwise)
    return Fitted(cv2.rotate(fitted.image, clockwise), full,
                  (height - oy - full_height / sy, ox), (sy, sx))
