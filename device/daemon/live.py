"""The latest camera frame, shared from the door loop with the admin page's live view.

The loop publishes each frame with what it found in it; the page asks for a JPEG now and then.
Encoding happens on the page's request (at most once per frame), never in the door's loop.
"""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np

from device.identification import Identification

GREEN, RED, AMBER = (80, 200, 80), (60, 60, 230), (0, 190, 255)


class LiveFrames:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frame: np.ndarray | None = None
        self._found: list[Identification] = []
        self._number = 0
        self._jpeg: tuple[int, bytes] | None = None
        self._published_at: float | None = None  # time.monotonic() of the newest frame

    def publish(self, frame: np.ndarray, found: list[Identification]) -> None:
        """Called by the loop for every frame (a reference, no copy: frames are not reused)."""
        with self._lock:
            self._frame, self._found = frame, found
            self._number += 1
            self._published_at = time.monotonic()

    @property
    def frame_age_seconds(self) -> float | None:
        """Seconds since the loop published its newest frame; None before the first one.
        The admin page reads a camera whose newest frame is seconds old as down."""
        with self._lock:
            published = self._published_at
        return None if published is None else time.monotonic() - published

    def latest_frame(self) -> np.ndarray | None:
        with self._lock:
            return None if self._frame is None else self._frame.copy()

    def latest_jpeg(self) -> bytes | None:
        with self._lock:
            frame, found, number = self._frame, list(self._found), self._number
            cached = self._jpeg
        if frame is None:
            return None
        if cached is not None and cached[0] == number:
            return cached[1]
        picture = annotate(frame, found)
        ok, encoded = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, 80])
        if not ok:
            return None
        jpeg = encoded.tobytes()
        with self._lock:
            self._jpeg = (number, jpeg)
        return jpeg


def annotate(frame: np.ndarray, found: list[Identification]) -> np.ndarray:
    """A copy of the frame with each face boxed and labelled (name and score, or unknown)."""
    picture = frame.copy()
    for item in found:
        x1, y1, x2, y2 = (int(v) for v in item.face.box)
        if item.decision == "match":
            colour = GREEN if item.active else AMBER
            label = f"{item.person_name} {item.score:.2f}"
        else:
            colour, label = RED, f"unknown {item.score:.2f}" if item.score > -1 else "unknown"
        cv2.rectangle(picture, (x1, y1), (x2, y2), colour, 2)
        # A filled strip behind the label keeps it readable on any background.
        (width, height), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.7, 2)
        top = max(0, y1 - height - 10)
        cv2.rectangle(picture, (x1, top), (x1 + width + 8, top + height + 10), colour, -1)
        cv2.putText(picture, label, (x1 + 4, top + height + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.7,
                    (255, 255, 255), 2, cv2.LINE_AA)
    return picture
