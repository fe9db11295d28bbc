"""``facegate camera test``: what the door's camera sees, for the technician mounting it.

Opens the configured camera (or another spec) the way the daemon does, with the same size,
rotation and mirror, but never falls back to the demo replay: a camera that cannot be opened
is a ``CameraError``. Takes one frame, saves the detection image (the picture the door
detects in), and measures each face's distance between the eyes in that image against
``recognition.min_interocular_px``: under it, the door ignores the face, so the camera is too
far from where people stand (or the frame too small).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from device.camera import open_camera
from device.config import Config
from device.errors import CameraError
from device.vision.pipeline import FacePipeline


@dataclass(frozen=True)
class CameraCheck:
    """One frame's facts: the camera's name, the detection image's and the full picture's
    sizes (width, height), where it was saved, and each face's eye distance in pixels,
    largest face first."""

    camera: str
    size: tuple[int, int]
    full_size: tuple[int, int] | None
    saved: Path
    interocular_px: list[float]
    min_interocular_px: float

    def lines(self) -> list[str]:
        """One line per fact, as ``facegate camera test`` prints them."""
        full = (f" (from a {self.full_size[0]}x{self.full_size[1]} picture)"
                if self.full_size else "")
        lines = [f"camera: {self.camera}", f"frame: {self.size[0]}x{self.size[1]}{full}",
                 f"saved: {self.saved}", f"faces: {len(self.interocular_px)}"]
        need = self.min_interocular_px
        for number, eyes in enumerate(self.interocular_px, 1):
            verdict = ("ok" if eyes >= need else "too small: the door ignores this face; "
                       "bring the camera closer or raise camera.width and camera.height")
            lines.append(f"face {number}: {eyes:.0f} px between the eyes, the door needs "
                         f"{need:g}: {verdict}")
        if not self.interocular_px:
            lines.append("no face found: stand where people will stand, facing the camera, "
                         "and check the light")
        return lines


def check_camera(config: Config, out: Path, *, spec: str | None = None,
                 pipeline: FacePipeline | None = None) -> CameraCheck:
    """Open ``spec`` (default ``camera.source``), read one frame, write it to ``out``
    (JPEG or PNG by its suffix) and measure its faces. Raises ``CameraError`` when the
    camera cannot be opened or gives no frame, or ``out`` cannot be written."""
    camera = open_camera(spec or config.camera.source, demo_folder=None, fps=0,
                         size=(config.camera.width, config.camera.height), loop=False,
                         rotation=config.camera.rotation, mirror=config.camera.mirror)
    with camera:
        frame = camera.read()
    out = Path(out)
    if not cv2.imwrite(str(out), frame.image):
        raise CameraError(f"cannot write the frame to {out} (a .jpg or .png in a writable "
                          "folder?)")
    pipeline = pipeline or FacePipeline.without_embedder(config.recognition.models_dir)
    faces = pipeline.locate(frame.image, max_faces=config.recognition.max_faces)
    eyes = [float(np.linalg.norm(face.landmarks5[1] - face.landmarks5[0])) for face in faces]
    height, width = frame.image.shape[:2]
    full = None if frame.full is None else (frame.full.shape[1], frame.full.shape[0])
    return CameraCheck(camera.name, (width, height), full, out, eyes,
                       config.recognition.min_interocular_px)
