"""The camera layer: every source gives ``Frame``s through the same small ``Camera`` contract.

``open_camera(spec, demo_folder=...)`` is the one place that picks a source; wrap what it
makes in ``ResilientCamera`` so an unplugged camera never stops the daemon.
"""

from device.camera.base import Camera, Frame, Size, fit_to_size
from device.camera.factory import ENV_VAR, open_camera
from device.camera.opencv import OpenCVCamera
from device.camera.pi_camera import Picamera2Camera
from device.camera.replay import ReplayCamera
from device.camera.resilient import ResilientCamera
from device.errors import CameraError, EndOfStream

__all__ = [
    "ENV_VAR",
    "Camera",
    "CameraError",
    "EndOfStream",
    "Frame",
    "OpenCVCamera",
    "Picamera2Camera",
    "ReplayCamera",
    "ResilientCamera",
    "Size",
    "fit_to_size",
    "open_camera",
]
