"""``facegate camera test`` with a replay folder as the camera: the technician's facts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import cv2

from tests.conftest import DATA

PHOTO = DATA / "people" / "Colin_Powell" / "Colin_Powell_0001.jpg"  # 250x250, one face


def camera_test(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "device", "camera", "test", *args],
                          capture_output=True, text=True, timeout=300, cwd=cwd)


def test_camera_test_saves_the_frame_and_measures_the_face(tmp_path):
    scene = tmp_path / "scene"
    scene.mkdir()
    shutil.copy(PHOTO, scene)
    out = tmp_path / "seen.png"
    result = camera_test("--camera", str(scene), "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:4] == [f"camera: replay:{scene}", "frame: 640x480", f"saved: {out}",
                         "faces: 1"]
    assert lines[4].startswith("face 1: ") and lines[4].endswith("the door needs 40: ok")
    assert cv2.imread(str(out)).shape == (480, 640, 3)


def test_camera_test_says_when_faces_are_too_small_for_the_door(tmp_path):
    scene = tmp_path / "scene"
    scene.mkdir()
    shutil.copy(PHOTO, scene)
    config = tmp_path / "facegate.toml"
    config.write_text("[recognition]\nmin_interocular_px = 200\n[camera]\nrotation = 90\n")
    result = camera_test("--config", str(config), "--camera", str(scene), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "frame: 480x640" in result.stdout  # turned: portrait
    (face,) = [line for line in result.stdout.splitlines() if line.startswith("face 1:")]
    assert "the door needs 200: too small" in face
    (saved,) = tmp_path.glob("facegate-camera-*.jpg")  # the default: the current folder
    assert f"saved: {saved.name}" in result.stdout


def test_camera_test_without_a_camera_fails_in_one_line(tmp_path):
    result = camera_test("--camera", str(tmp_path / "no-such-folder"), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().count("\n") == 0 and "no-such-folder" in result.stderr
    assert not list(tmp_path.glob("facegate-camera-*"))
