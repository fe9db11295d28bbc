"""The Raspberry Pi camera (CSI ribbon cable) through picamera2 / libcamera.

Configured the way picamera2's own face-detection examples are (``opencv_face_detect_2.py``):
one request gives two streams of the same moment and field of view, a small ``lores`` one
for detection and the ``main`` one for crops and snapshots. Not testable off a Pi; see
``tests/test_real_camera.py``.

Colour order, which is easy to get wrong here (checked against the Picamera2 manual,
the picamera2 sources and OpenCV's headers, and by converting real images with OpenCV):

* picamera2's format names follow libcamera/DRM, which name the bits of a little-endian
  word: ``"RGB888"`` is stored ``[B, G, R]`` in memory, so its arrays are already what
  OpenCV calls BGR ("RGB888 - 24 bits per pixel, ordered [B, G, R]", Picamera2 manual,
  Image formats). ``"BGR888"`` would be RGB. So ``main`` asks for ``"RGB888"``.
* ``lores`` must be YUV on a Pi 4 (the ISP cannot scale to RGB there): ``"YUV420"`` is a Y
  plane, then a quarter U plane, then a quarter V plane, i.e. I420. The matching OpenCV
  code is ``COLOR_YUV2BGR_I420``. Beware ``COLOR_YUV420p2BGR``: despite its name it is an
  alias of ``COLOR_YUV2BGR_YV12`` (V before U) and swaps the chroma, which turns skin blue
  (picamera2's example uses ``COLOR_YUV420p2RGB``, where the two swaps nearly cancel).
* OpenCV's YUV conversions assume limited range (Y from 16 to 235, BT.601); picamera2's
  preview default is full-range sYCC, so the configuration asks for SMPTE 170M (BT.601,
  limited) to make OpenCV's arithmetic the right one.
* The lores array comes padded to the stream's stride: shape (height * 3 / 2, stride).
  Converted whole, the planes line up (U and V have half the stride); the padding columns
  are cut off afterwards.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from device.camera.base import Camera, Fitted, Frame, Size
from device.errors import CameraError


class Picamera2Camera(Camera):
    """The Pi camera: ``image`` from the ``size`` lores stream, ``full`` from ``full_size``.

    ``size`` and ``full_size`` are (width, height) and should share an aspect ratio
    (both streams see the same field of view, so a different ratio stretches one of them).
    ``lores`` can be no larger than ``main``.

    Hazards: picamera2 is imported only in ``open()`` (it exists only on Raspberry Pi OS);
    only one process can hold the camera, so ``open()`` fails while ``rpicam-hello`` or a
    second daemon runs; ``read()`` waits for the next frame, and a camera whose cable has
    come loose may leave it waiting rather than failing (not verified on hardware).
    """

    def __init__(self, size: Size = (640, 480), full_size: Size = (1280, 960),
                 camera_num: int = 0) -> None:
        super().__init__(f"picamera2:{camera_num}")
        self.size = size
        self.full_size = full_size
        self.camera_num = camera_num
        self._picam: Any = None  # picamera2.Picamera2, typed loosely: it is not importable here

    def open(self) -> None:
        if self._picam is not None:
            return
        try:
            import libcamera
            from picamera2 import Picamera2
        except ImportError as exc:
            # Installed but broken (say, built for another numpy) is worth its own words.
            detail = "" if exc.name in ("picamera2", "libcamera") else f": {exc}"
            raise CameraError("picamera2 is not installed (Raspberry Pi OS: apt install "
                              "python3-picamera2; a virtualenv needs --system-site-packages)"
                              f"{detail}") from None
        try:
            picam = Picamera2(self.camera_num)
        except Exception as exc:  # IndexError when no camera is connected, RuntimeError if busy
            raise CameraError(f"Pi camera {self.camera_num}: cannot open it ({exc!r}); "
                              f"is the ribbon cable in, and no other program using it?") from None
        try:
            picam.configure(picam.create_preview_configuration(
                main={"size": tuple(self.full_size), "format": "RGB888"},
                lores={"size": tuple(self.size), "format": "YUV420"},
                colour_space=libcamera.ColorSpace.Smpte170m(),
            ))
            picam.start()
        except Exception as exc:  # picamera2 raises bare RuntimeErrors for bad configurations
            picam.close()
            raise CameraError(f"Pi camera {self.camera_num}: cannot start it with lores "
                              f"{self.size} and main {self.full_size} ({exc})") from None
        self._picam = picam

    def read(self) -> Frame:
        if self._picam is None:
            raise CameraError(f"{self.name}: read() before open()")
        try:
            # Both arrays from one request, so the crop and the detection are the same instant.
            (main, lores), _metadata = self._picam.capture_arrays(["main", "lores"])
        except Exception as exc:  # libcamera errors surface as assorted exceptions
            raise CameraError(f"Pi camera {self.camera_num}: capture failed ({exc})") from None
        width, height = self.size
        image = np.ascontiguousarray(cv2.cvtColor(lores, cv2.COLOR_YUV2BGR_I420)[:height, :width])
        full = np.ascontiguousarray(main[:, :, :3])
        scale = (full.shape[1] / width, full.shape[0] / height)
        return self._frame(Fitted(image, full, (0.0, 0.0), scale))

    def close(self) -> None:
        if self._picam is None:
            return
        picam, self._picam = self._picam, None
        try:
            picam.stop()
        finally:
            picam.close()
