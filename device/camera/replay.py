"""Replay a folder of images or a video file as if it were a camera (demos, tests, benchmarks)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import cv2
import numpy as np

from device.camera.base import Camera, Frame, Size, fit_to_size
from device.errors import CameraError, EndOfStream, ImageUnreadable
from device.vision.image_io import decode_image, read_file

log = logging.getLogger(__name__)

# Decoded folder images are kept up to this many bytes, so a demo folder loops without
# decoding again (a 640x480 JPEG costs a Pi 4 about 5 ms); a big folder is read lazily.
CACHE_BYTES = 64 * 2**20

# How often the folder's (and sub-folders') mtimes are checked for files added or removed,
# one stat each; the files are listed again when one moved, and at the end of every pass
# (which also notices a file rewritten in place), since listing costs a stat per file.
RESCAN_SECONDS = 1.0

Stamp = tuple[int, int]  # a file's (mtime in ns, size): a change means its content changed


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

    The folder is listed again at the end of every pass, and every ``rescan`` seconds when
    its (or a sub-folder's) mtime has moved, and a file is checked to be there before each
    of its frames: files removed (or changed) are dropped with their cached frames, added
    ones are played where they sort, and a warning says so. A folder emptied while playing
    raises ``CameraError``, as a camera that disappeared: ``ResilientCamera`` then keeps the
    door locked until files come back. Each file is read within ``MAX_FILE_BYTES`` and
    ``MAX_PIXELS`` (:mod:`device.vision.image_io`); a bigger one is skipped.
    """

    def __init__(self, source: str | Path, fps: float = 15.0, loop: bool = True,
                 size: Size | None = None, *, rescan: float = RESCAN_SECONDS) -> None:
        if fps < 0:
            raise ValueError(f"fps must be 0 (unpaced) or more, not {fps}")
        self.source = Path(source)
        super().__init__(f"replay:{self.source}")
        self.fps = fps
        self.loop = loop
        self.size = size
        self.rescan = rescan
        self._files: list[Path] | None = None  # None: the source is a video
        self._folder = False  # True: the source is a folder, listed again while playing
        self._stamps: dict[Path, Stamp] = {}  # the folder's files at the last listing
        self._skipped: dict[Path, Stamp] = {}  # files that did not decode, as they were then
        self._folders: dict[str, int] = {}  # the mtimes of the folder and its sub-folders
        self._rescan_at = 0.0
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
            self._folders = {}
            self._stamps = _listing(self.source, self._folders)
            if not self._stamps:
                raise CameraError(f"replay folder {self.source} has no files in it")
            self._folder = True
            self._skipped = {}
            self._files = list(self._stamps)
            self._rescan_at = time.monotonic() + self.rescan
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
        self._cache.clear()
        self._cached_bytes = 0

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
        if self._folder and time.monotonic() >= self._rescan_at:
            self._rescan_at = time.monotonic() + self.rescan
            if _folders_changed(self._folders):
                self._rescan()
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
                if self._folder:
                    self._rescan()  # once a pass, however fast the frames go
                    continue
            path = files[self._position]
            if self._folder and not path.is_file():  # removed: never serve its cached frame
                self._rescan()
                files = self._files
                if self._position >= len(files) or files[self._position] != path:
                    continue
                self._forget(path)  # listed again meanwhile: read it afresh, or skip it
            image = self._load(path)
            if image is None:
                del files[self._position]  # skipped for good: one warning, not one per loop
                if self._folder:
                    self._skipped[path] = self._stamps.get(path, (0, 0))
                continue
            self._position += 1
            return image

    def _rescan(self) -> None:
        """List the folder again; drop removed or changed files, take in added ones."""
        self._rescan_at = time.monotonic() + self.rescan
        folders: dict[str, int] = {}
        try:
            stamps = _listing(self.source, folders)
        except OSError as exc:
            raise CameraError(f"replay folder {self.source} cannot be listed: "
                              f"{exc.strerror or exc}") from None
        if not stamps:
            self._cache.clear()
            self._cached_bytes = 0
            raise CameraError(f"replay folder {self.source} is empty: its files were removed")
        self._folders = folders
        if stamps == self._stamps:
            return
        removed = [path for path in self._stamps if path not in stamps]
        changed = [path for path in self._stamps if path in stamps
                   and stamps[path] != self._stamps[path]]
        added = [path for path in stamps if path not in self._stamps]
        for path in removed + changed:
            self._forget(path)
            self._skipped.pop(path, None)  # a changed file that did not decode is tried again
        played = (self._files or [])[:self._position]
        self._stamps = stamps
        self._files = [path for path in stamps if path not in self._skipped]
        # Go on after the last file played that is still there, so that files added after it
        # are played in this pass, where they sort.
        position = {path: number for number, path in enumerate(self._files)}
        last = next((path for path in reversed(played) if path in position), None)
        self._position = 0 if last is None else position[last] + 1
        log.warning("replay folder %s changed: %d file(s) removed, %d changed, %d added; "
                    "%d to play", self.source, len(removed), len(changed), len(added),
                    len(self._files))

    def _forget(self, path: Path) -> None:
        cached = self._cache.pop(path, None)
        if cached is not None:
            self._cached_bytes -= cached.nbytes

    def _load(self, path: Path) -> np.ndarray | None:
        cached = self._cache.get(path)
        if cached is not None:
            return cached
        try:
            image = decode_image(read_file(path), str(path))
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


def _listing(folder: Path, folders: dict[str, int]) -> dict[Path, Stamp]:
    """The files under ``folder`` in play order (name order, each sub-folder's files where its
    name sorts, hidden entries left out), with their stamps; ``folders`` gets the mtime of
    ``folder`` and of each sub-folder. One ``scandir`` a folder and one stat a file (about
    10 ms for 1,000 files on a desktop)."""
    folders[str(folder)] = os.stat(folder).st_mtime_ns
    stamps: dict[Path, Stamp] = {}
    with os.scandir(folder) as scan:
        entries = sorted(scan, key=lambda entry: entry.name)
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_dir():
                stamps.update(_listing(Path(entry.path), folders))
            elif entry.is_file():
                info = entry.stat()
                stamps[Path(entry.path)] = (info.st_mtime_ns, info.st_size)
        except OSError:  # gone while it was listed
            continue
    return stamps


def _folders_changed(folders: dict[str, int]) -> bool:
    """True when a file was added to, removed from or renamed in one of ``folders`` (its
    mtime moved): one stat a folder, cheap enough for every second."""
    try:
        return any(os.stat(path).st_mtime_ns != mtime for path, mtime in folders.items())
    except OSError:
        return True
