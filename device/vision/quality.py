"""Face quality: size, sharpness, pose and brightness, and the gate that refuses poor faces.

Enrolment and the door both use it: a template from a blurred or turned-away face matches
strangers and misses its owner, so such faces are refused rather than stored or trusted.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np

# Mesh indices for the head's axes: the outer eye corners (left to right in the image) and the
# top of the forehead to the chin.
OUTER_EYE_RIGHT, OUTER_EYE_LEFT = 33, 263
FOREHEAD, CHIN = 10, 152
# By these axes a face looking straight into the camera has a pitch of about -5 degrees (the
# forehead leans back from the chin): the median over lfw-a, printed by
# `python -m training.canonical_face`. Subtracted so that 0 means level.
FRONTAL_PITCH_DEGREES = -5.4


@dataclass(frozen=True)
class Quality:
    interocular_px: float  # distance between the eye centres in the frame, pixels
    sharpness: float  # variance of the Laplacian of the aligned grey crop
    brightness: float  # mean grey level (0-255) of the aligned crop's centre
    yaw: float  # degrees, 0 = facing the camera; sign: positive turned to the image's right
    pitch: float  # degrees, positive = chin up
    roll: float  # degrees, positive = head tilted clockwise in the image

    def as_dict(self) -> dict[str, float]:
        return {key: round(value, 2) for key, value in asdict(self).items()}


@dataclass(frozen=True)
class QualityGate:
    """Limits a face must meet. Defaults suit enrolment photos; the door may relax size."""

    min_interocular_px: float = 30.0
    min_sharpness: float = 20.0
    min_brightness: float = 40.0
    max_brightness: float = 220.0
    max_yaw: float = 35.0
    max_pitch: float = 30.0
    max_roll: float = 40.0

    def problems(self, quality: Quality) -> list[str]:
        """Reasons the face fails, in words for the admin; empty when it passes."""
        found = []
        if quality.interocular_px < self.min_interocular_px:
            found.append(f"face too small ({quality.interocular_px:.0f} px between the eyes, "
                         f"need {self.min_interocular_px:.0f})")
        if quality.sharpness < self.min_sharpness:
            found.append(f"face blurred (sharpness {quality.sharpness:.0f}, "
                         f"need {self.min_sharpness:.0f})")
        if quality.brightness < self.min_brightness:
            found.append(f"face too dark (brightness {quality.brightness:.0f})")
        if quality.brightness > self.max_brightness:
            found.append(f"face over-exposed (brightness {quality.brightness:.0f})")
        for name, limit in (("yaw", self.max_yaw), ("pitch", self.max_pitch),
                            ("roll", self.max_roll)):
            angle = getattr(quality, name)
            if abs(angle) > limit:
                found.append(f"face turned too far ({name} {angle:.0f} degrees, "
                             f"limit {limit:.0f})")
        return found


def measure_quality(five_points: np.ndarray, mesh_points: np.ndarray,
                    aligned_crop: np.ndarray) -> Quality:
    grey = cv2.cvtColor(aligned_crop, cv2.COLOR_BGR2GRAY)
    size = grey.shape[0]
    centre = grey[size // 4: 3 * size // 4, size // 4: 3 * size // 4]
    yaw, pitch, roll = head_pose(mesh_points)
    return Quality(
        interocular_px=float(np.linalg.norm(five_points[1] - five_points[0])),
        sharpness=float(cv2.Laplacian(grey, cv2.CV_64F).var()),
        brightness=float(centre.mean()),
        yaw=yaw,
        pitch=pitch,
        roll=roll,
    )


def head_pose(mesh_points: np.ndarray) -> tuple[float, float, float]:
    """Yaw, pitch and roll in degrees from the mesh's 3-D points (x, y in pixels, z depth).

    The head's x axis runs between the outer eye corners and its y axis from forehead to
    chin; how far each axis leans into depth gives yaw and pitch, the eye line's slope gives
    roll. Good to a few degrees, which is all a quality gate needs.
    """
    points = np.asarray(mesh_points, np.float64)
    x_axis = points[OUTER_EYE_LEFT] - points[OUTER_EYE_RIGHT]
    y_axis = points[CHIN] - points[FOREHEAD]
    yaw = math.degrees(math.atan2(x_axis[2], math.hypot(x_axis[0], x_axis[1])))
    pitch = math.degrees(math.atan2(-y_axis[2], math.hypot(y_axis[0], y_axis[1])))
    pitch -= FRONTAL_PITCH_DEGREES
    roll = math.degrees(math.atan2(x_axis[1], x_axis[0]))
    return yaw, pitch, roll
