"""Replay a folder of images or a video file as if it were a camera (demos, tests, benchmarks)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from device.camera.base import Camera, Frame, Size, fit_to_size
from device.errors import CameraError, EndOfStream, ImageUnreadable
from device.vision.image_io import decode_image

log = logging.getLogger(__name__)

# Decoded folder images are kept up to this many bytes, so a demo folder loops without
# decoding again (a 640x480 JPEG costs a Pi 4 about 5 ms); a big folder is read lazily.
CACHE_BYTES = 64 * 2**20


class ReplayCamera(Camera):
    """Plays a folder of images, a single image or a video file at ``fps`` frames a second.

    A folder is played in name order, descending into sub-folders where they sort (hidden
    entries, starting with ".", are left out). Files OpenCV cannot decode are skipped with
    one warning each; a folder with none it can decode is a ``CameraError``. A video is
    decoded one frame at a time, never held in memory.

    ``fps`` paces ``read()`` against the monotonic clock (it sleeps; a slow reader is not
    made to catch up in a burst); ``fps=0`` returns frames as fast as they decode. With
    ``loop`` the replay starts again at the end and ``index`` keeps counting; without it
    ``read()`` raises ``EndOfStream``. ``size`` (width, height) letterboxes every frame to
    the detection size; None keeps each as it is. If the folder is removed while playing,
    ``read()`` raises ``CameraError`` as a vanished device would.
    """

    def __init__(self, source: str | Path, fps: float = 15.0, loop: bool = True,
                 size: Size | None = None) -> None:
        if fps < 0:
            raise ValueError(f"fps must be 0 (unpaced) or more, not {fps}")
        self.source = Path(source)
        super().__init__(f"replay:{self.source}")
        self.fps = fps
        self.loop = loop
        self.size = size
        self._files: list[Path] | None = None  # None: the source is a video
        self._position = 0  # next file to play
        self._cache: dict[Path, np.ndarray] = {}
        self._cached_bytes = 0
        self._video: cv2.VideoCapture | None = None
        self._due: float | None = None  # monotonic time the next frame is due
        self._opened = False

    def open(self) -> None:
        if self._opened:
            return
        if self.source.is_dir():
            self._files = list(_walk(self.source))
            if not self._files:
                raise CameraError(f"replay folder {self.source} has no files in it")
        elif self.source.is_file():
            if cv2.haveImageReader(str(self.source)):
                self._files = [self.source]
            else:
                self._video = self._open_video()
        else:
            raise CameraError(f"replay source {self.source} does not exist")
        self._position = 0
        self._due = None
        self._opened = True

    def read(self) -> Frame:
        if not self._opened:
            raise CameraError(f"{self.name}: read() before open()")
        image = self._next_image()
        self._wait_until_due()
        return self._frame(fit_to_size(image, self.size))

    def close(self) -> None:
        if self._video is not None:
            self._video.release()
            self._video = None
        self._opened = False

    def _wait_until_due(self) -> None:
        if not self.fps:
            return
        period = 1.0 / self.fps
        now = time.monotonic()
        if self._due is None or now - self._due > period:
            # First frame, or the reader fell more than a frame behind: start the beat again
            # from now rather than hand out a burst of frames to catch up.
            self._due = now
        elif self._due > now:
            time.sleep(self._due - now)
        self._due += period

    def _next_image(self) -> np.ndarray:
        if self._files is None:
            return self._next_video_frame()
        return self._next_file_image()

    def _next_file_image(self) -> np.ndarray:
        # One stat a frame: a cached folder would otherwise play on after its disk has gone.
        if not self.source.exists():
            raise CameraError(f"replay source {self.source} has gone")
        while True:
            files = self._files
            assert files is not None
            if not files:
                raise CameraError(f"replay {self.source}: no file in it is an image OpenCV "
                                  f"can decode")
            if self._position >= len(files):
                if not self.loop:
                    raise EndOfStream(f"replay {self.source}: played all {len(files)} images")
                self._position = 0
            path = files[self._position]
            image = self._load(path)
            if image is None:
                del files[self._position]  # skipped for good: one warning, not one per loop
                continue
            self._position += 1
            return image

    def _load(self, path: Path) -> np.ndarray | None:
        cached = self._cache.get(path)
        if cached is not None:
            return cached
        try:
            image = decode_image(path.read_bytes(), str(path))
        except ImageUnreadable as exc:
            log.warning("replay: skipping %s", exc)
            return None
        except OSError as exc:  # deleted or unreadable while playing
            log.warning("replay: skipping %s: %s", path, exc.strerror or exc)
            return None
        if self._cached_bytes + image.nbytes <= CACHE_BYTES:
            self._cache[path] = image
            self._cached_bytes += image.nbytes
        return image

    def _open_video(self) -> cv2.VideoCapture:
        video = cv2.VideoCapture(str(self.source))
        if not video.isOpened():
            video.release()
            raise CameraError(f"replay source {self.source} is neither an image nor a video "
                              f"OpenCV can open")
        return video

    def _next_video_frame(self) -> np.ndarray:
        video = self._video
        assert video is not None
        ok, image = video.read()
        if ok and image is not None:
            return image
        if not self.loop:
            raise EndOfStream(f"replay {self.source}: the video has ended")
        # Opening again is more dependable than seeking to frame 0 (not every container
        # seeks), and it also notices a file that has gone.
        video.release()
        self._video = video = self._open_video()
        ok, image = video.read()
        if not ok or image is None:
            raise CameraError(f"replay {self.source}: the video has no frames OpenCV can decode")
        return image


def _walk(folder: Path) -> Iterator[Path]:
    """Files under ``folder`` in name order, each sub-folder's files where its name sorts."""
    for entry in sorted(folder.iterdir(), key=lambda path: path.name):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            yield from _walk(entry)
        elif entry.is_file():
            yield entry
