"""The one place that turns a camera setting into a camera.

``camera = "auto"`` (the default) tries the Pi camera, then the first USB webcam, then the
demo replay, and logs which it chose and why it passed over the others. The demo replay is
for a source checkout run by hand (``make run``) only: :func:`demo_allowed` is the one place
that says so. Under systemd, with real GPIO pins, or when installed, a missing camera is a
``CameraError`` (the daemon keeps the door locked and retries) rather than a door that runs on
the bundled photos because a ribbon cable came loose. The environment
variable ``FACEGATE_CAMERA`` takes the place of "auto" (not of an explicit setting), the way
``GPIOZERO_PIN_FACTORY`` picks gpiozero's pins: ``FACEGATE_CAMERA=/srv/clips/door.mp4``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from device.camera.base import Camera, Size
from device.camera.opencv import URL_SCHEMES, OpenCVCamera
from device.camera.pi_camera import Picamera2Camera
from device.camera.replay import ReplayCamera
from device.config import source_checkout
from device.errors import CameraError

log = logging.getLogger(__name__)

ENV_VAR = "FACEGATE_CAMERA"
FIRST_WEBCAM = "/dev/video0"


def demo_allowed(*, real_gpio: bool, environ: Mapping[str, str] | None = None,
                 checkout: bool | None = None) -> bool:
    """Whether "auto" may fall back to the demo replay: only in a source checkout
    (``checkout``, default: :func:`device.config.source_checkout` finds one), not under systemd
    (``INVOCATION_ID`` or ``NOTIFY_SOCKET`` set) and not on real GPIO pins (``real_gpio``),
    where a door running on photos would hide a camera fault."""
    environ = os.environ if environ is None else environ
    if checkout is None:
        checkout = source_checkout() is not None
    under_systemd = bool(environ.get("INVOCATION_ID") or environ.get("NOTIFY_SOCKET"))
    return checkout and not under_systemd and not real_gpio


def open_camera(spec: str, *, demo_folder: Path | None, fps: float = 15.0,
                size: Size = (640, 480), loop: bool = True, rotation: int = 0,
                mirror: bool = False) -> Camera:
    """The camera ``spec`` names, not yet opened (``with open_camera(...) as camera:``).

    ``spec`` is one of: "auto"; "picamera2"; a device index such as "0"; a ``/dev/videoN``
    path; an rtsp://, http:// or https:// URL; a folder of images or a video or image file
    to replay at ``fps`` (looping unless ``loop`` is False). Every source delivers frames
    letterboxed to ``size`` (width, height). Anything else is a ``CameraError``.

    "auto" opens each candidate once to prove it works and closes it again; it falls back
    to replaying ``demo_folder`` and raises ``CameraError`` when that is missing too, or is
    None (no demo allowed, see :func:`demo_allowed`).

    Every frame is mirrored left to right (``mirror``) then turned ``rotation`` degrees
    clockwise (0, 90, 180 or 270) before anything detects in it: how the camera is mounted.
    """
    camera = _camera(spec, demo_folder=demo_folder, fps=fps, size=size, loop=loop)
    camera.rotation, camera.mirror = rotation, mirror
    return camera


def _camera(spec: str, *, demo_folder: Path | None, fps: float, size: Size,
            loop: bool) -> Camera:
    spec = spec.strip()
    if spec == "auto" and os.environ.get(ENV_VAR, "").strip():
        spec = os.environ[ENV_VAR].strip()
        log.info("camera: %s=%s overrides 'auto'", ENV_VAR, spec)
    if spec == "auto":
        return _auto(demo_folder, fps=fps, size=size, loop=loop)
    if spec == "picamera2":
        return Picamera2Camera(size=size)
    if spec.isdigit():
        return OpenCVCamera(int(spec), size=size)
    if spec.lower().startswith(URL_SCHEMES) or spec.startswith("/dev/"):
        return OpenCVCamera(spec, size=size)
    path = Path(spec).expanduser()
    if spec and (path.is_dir() or path.is_file()):
        return ReplayCamera(path, fps=fps, loop=loop, size=size)
    raise CameraError(f"camera source '{spec}' is not a folder, video file, URL, device index "
                      f"or 'picamera2'")


def _auto(demo_folder: Path | None, *, fps: float, size: Size, loop: bool) -> Camera:
    skipped: list[str] = []
    picamera = Picamera2Camera(size=size)
    if _works(picamera, skipped):
        return _chosen(picamera, skipped)
    if Path(FIRST_WEBCAM).exists():
        webcam = OpenCVCamera(FIRST_WEBCAM, size=size)
        if _works(webcam, skipped):
            return _chosen(webcam, skipped)
    else:
        skipped.append(f"{FIRST_WEBCAM}: no such device")
    if demo_folder is None:
        raise CameraError(f"no camera found ({'; '.join(skipped)}); check the camera's cable "
                          "and camera.source (the demo replay is only for `make run` in a "
                          "source checkout)")
    demo_folder = Path(demo_folder)
    if not demo_folder.is_dir():
        raise CameraError(f"no camera found and no demo folder {demo_folder} to replay "
                          f"({'; '.join(skipped)})")
    return _chosen(ReplayCamera(demo_folder, fps=fps, loop=loop, size=size), skipped)


def _works(camera: Camera, skipped: list[str]) -> bool:
    try:
        camera.open()
    except CameraError as exc:
        skipped.append(f"{camera.name}: {exc}")
        return False
    camera.close()
    return True


def _chosen(camera: Camera, skipped: list[str]) -> Camera:
    because = f" (skipped {'; '.join(skipped)})" if skipped else ""
    log.info("camera: auto chose %s%s", camera.name, because)
    return camera
