"""USB webcams, ``/dev/videoN``, network streams and video files through ``cv2.VideoCapture``."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2

from device.camera.base import Camera, Frame, Size, fit_to_size
from device.errors import CameraError, EndOfStream

# A network stream that stops answering would otherwise block open() or read() for
# FFmpeg's own timeout (30 s or more), and the daemon's watchdog with it.
STREAM_TIMEOUT_MS = 5000
URL_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://")


class OpenCVCamera(Camera):
    """A camera OpenCV can open: a device index (0), ``/dev/video0``, an RTSP/HTTP URL or a file.

    Live devices are asked for ``size`` (width, height); whatever mode they choose, and
    every stream or file, is letterboxed to ``size`` (None keeps frames as they come). A
    source bigger than ``size`` is also kept as the frame's ``full``. ``read()`` raises
    ``CameraError`` when a grab fails (unplugged, stream dropped) and ``EndOfStream`` at the
    end of a video file.

    Hazard: a USB webcam adjusts its exposure over the first second or so; the first frames
    after ``open()`` can be dark.
    """

    def __init__(self, source: int | str, size: Size | None = (640, 480)) -> None:
        self.source = source
        label = f"/dev/video{source}" if _is_linux_index(source) else source
        super().__init__(f"opencv:{label}")
        self.size = size
        self._capture: cv2.VideoCapture | None = None

    def open(self) -> None:
        if self._capture is not None:
            return
        self._check_device_node()
        if _is_url(self.source):
            capture = cv2.VideoCapture(self.source, cv2.CAP_FFMPEG,
                                       [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS,
                                        cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS])
        else:
            capture = cv2.VideoCapture(self.source)
        if not capture.isOpened():
            capture.release()
            raise CameraError(f"camera {self._label()}: OpenCV cannot open it ({self._why()})")
        if self._is_live_device() and self.size is not None:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[0])
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[1])
        if self._is_live_device():
            # V4L2 queues several frames; a reader slower than the camera would otherwise
            # see the door as it was a few frames ago.
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        self._capture = capture

    def read(self) -> Frame:
        if self._capture is None:
            raise CameraError(f"camera {self._label()}: read() before open()")
        ok, image = self._capture.read()
        if not ok or image is None:
            if self._is_file():
                raise EndOfStream(f"camera {self._label()}: the video has ended")
            raise CameraError(f"camera {self._label()}: no frame (unplugged or stream lost?)")
        return self._frame(fit_to_size(image, self.size))

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def _why(self) -> str:
        if _is_url(self.source):
            return "unreachable, or not a video stream?"
        if self._is_live_device():
            return "in use by another program, or not a camera?"
        return "not a video OpenCV can decode?"

    def _label(self) -> str:
        return self.name.removeprefix("opencv:")

    def _check_device_node(self) -> None:
        # OpenCV answers a missing device with a bare "cannot open" (and stderr noise);
        # the missing node is the clearer sentence.
        node = self._label()
        if node.startswith("/dev/") and not Path(node).exists():
            raise CameraError(f"camera {node}: no such device (is the webcam plugged in?)")

    def _is_live_device(self) -> bool:
        return isinstance(self.source, int) or str(self.source).startswith("/dev/")

    def _is_file(self) -> bool:
        return (isinstance(self.source, str) and not _is_url(self.source)
                and not self.source.startswith("/dev/") and Path(self.source).is_file())


def _is_linux_index(source: int | str) -> bool:
    # On Linux OpenCV opens index N as the V4L2 node /dev/videoN.
    return isinstance(source, int) and sys.platform.startswith("linux")


def _is_url(source: int | str) -> bool:
    return isinstance(source, str) and source.lower().startswith(URL_SCHEMES)
