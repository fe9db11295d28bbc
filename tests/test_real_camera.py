"""Tests on a real camera, skipped unless ``FACEGATE_REAL_CAMERA`` names one.

Run on the door's Pi (or a machine with a webcam), pointing the camera at a lit scene::

    FACEGATE_REAL_CAMERA=picamera2 pytest tests/test_real_camera.py
    FACEGATE_REAL_CAMERA=0 pytest tests/test_real_camera.py      # first USB webcam

The value is any camera setting ``open_camera`` accepts ("picamera2", "0", "/dev/video0",
an RTSP URL).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from device.camera import Camera, Picamera2Camera, ResilientCamera, open_camera

SPEC = os.environ.get("FACEGATE_REAL_CAMERA", "").strip()
SIZE = (640, 480)

pytestmark = pytest.mark.skipif(not SPEC, reason="set FACEGATE_REAL_CAMERA to test a camera")


def make_camera() -> Camera:
    return open_camera(SPEC, demo_folder=Path("/nonexistent"), size=SIZE)


def test_the_camera_delivers_detection_sized_bgr_frames():
    with make_camera() as camera:
        frames = [camera.read() for _ in range(10)]
    for frame in frames:
        assert frame.image.shape == (SIZE[1], SIZE[0], 3) and frame.image.dtype == np.uint8
        assert frame.image.flags["C_CONTIGUOUS"]
    assert [frame.index for frame in frames] == list(range(10))
    stamps = [frame.timestamp for frame in frames]
    assert stamps == sorted(stamps) and len(set(stamps)) == 10
    assert frames[-1].image.std() > 2, "a flat frame: lens cap on, or no picture at all?"


def test_the_camera_can_be_closed_and_opened_again():
    camera = make_camera()
    for _ in range(2):  # ResilientCamera depends on this after every outage
        with camera:
            assert camera.read().image.shape[:2] == (SIZE[1], SIZE[0])


def test_resilient_camera_reads_from_the_real_camera():
    with ResilientCamera(make_camera) as camera:
        frames = [camera.read() for _ in range(5)]
        assert camera.is_up and camera.outages == 0
    assert all(frame is not None for frame in frames)


@pytest.mark.skipif(SPEC != "picamera2", reason="only the Pi camera has two streams")
def test_pi_camera_streams_agree_in_colour_and_place():
    """The lores (YUV) and main (RGB888) streams are converted differently; a mistake in
    either order (RGB for BGR, U for V) shows as a channel that differs between them."""
    with Picamera2Camera(size=SIZE, full_size=(1280, 960)) as camera:
        for _ in range(10):  # let exposure and white balance settle
            frame = camera.read()
    assert frame.full is not None and frame.full.shape == (960, 1280, 3)
    shrunk = cv2.resize(frame.full, SIZE, interpolation=cv2.INTER_AREA).astype(np.float32)
    image = frame.image.astype(np.float32)
    channel_means = image.mean(axis=(0, 1)) - shrunk.mean(axis=(0, 1))
    assert np.abs(channel_means).max() < 12, f"B, G, R means differ by {channel_means}"
    # Same field of view: the two pictures line up pixel for pixel (up to noise).
    assert np.abs(image - shrunk).mean() < 20
    assert frame.to_full(np.array([320, 240])) == pytest.approx([640, 480])
