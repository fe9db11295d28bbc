"""468-point face landmarks with MediaPipe FaceMesh (``face_landmark.tflite``).

The mesh model sees a 192x192 RGB crop scaled to [0, 1], cut around the detector's box,
enlarged 1.5 times and turned so that the eyes are level, as MediaPipe's own graph does. It
returns 468 (x, y, z) points in that crop and a face-presence score, which we use to drop
detector false positives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from device.vision.detector import Detection
from device.vision.interpreter import InterpreterFactory, load_interpreter

INPUT_SIZE = 192
ROI_SCALE = 1.5
# lfw-a's Franz_Muentefering_0003 (strong profile) scores 0.02 on the eye-levelled crop and
# 0.87 on the upright one.
RETRY_BELOW_PRESENCE = 0.5

# Mesh indices (MediaPipe's canonical face model) behind the five points of ArcFace-style
# templates, in the template's order: the eye on the image's left (the subject's right eye),
# the eye on the image's right, nose tip, left mouth corner, right mouth corner (image sides).
RIGHT_EYE_RING = (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7)
LEFT_EYE_RING = (362, 398, 384, 385, 386, 387, 388, 466, 263, 249, 390, 373, 374, 380, 381, 382)
NOSE_TIP = 4
MOUTH_LEFT, MOUTH_RIGHT = 61, 291


@dataclass(frozen=True)
class Landmarks:
    points: np.ndarray  # (468, 3) float32: x, y in frame pixels; z in the same scale
    presence: float  # the mesh model's probability that the crop holds a face

    def five_points(self) -> np.ndarray:
        """(5, 2) float32 eye centres, nose tip and mouth corners, in template order."""
        return five_points_from_mesh(self.points)


def five_points_from_mesh(points: np.ndarray) -> np.ndarray:
    xy = points[:, :2]
    return np.stack(
        [
            xy[list(RIGHT_EYE_RING)].mean(0),
            xy[list(LEFT_EYE_RING)].mean(0),
            xy[NOSE_TIP],
            xy[MOUTH_LEFT],
            xy[MOUTH_RIGHT],
        ]
    ).astype(np.float32)


class FaceMesh:
    """FaceMesh: ``locate(frame_bgr, detection) -> Landmarks`` for one detected face."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        interpreter_factory: InterpreterFactory | None = None,
        num_threads: int | None = None,
    ) -> None:
        self._interpreter = load_interpreter(model_path, interpreter_factory, num_threads)
        self._input_index = self._interpreter.get_input_details()[0]["index"]
        outputs = sorted(self._interpreter.get_output_details(), key=lambda d: -d["shape"][-1])
        self._points_index = outputs[0]["index"]  # (1, 1, 1, 1404)
        self._presence_index = outputs[1]["index"]  # (1, 1, 1, 1), a logit

    def locate(self, frame_bgr: np.ndarray, detection: Detection) -> Landmarks:
        """Landmarks of one detected face.

        The crop is turned to level the detector's eye keypoints, as MediaPipe does; in strong
        profile those keypoints are unreliable, so a doubtful result (presence under
        ``RETRY_BELOW_PRESENCE``) is tried again on an upright crop and the surer one kept.
        """
        landmarks = self._locate_in(frame_bgr, roi_transform(detection))
        if landmarks.presence < RETRY_BELOW_PRESENCE:
            upright = self._locate_in(frame_bgr, roi_transform(detection, level_eyes=False))
            if upright.presence > landmarks.presence:
                return upright
        return landmarks

    def _locate_in(self, frame_bgr: np.ndarray, to_crop: np.ndarray) -> Landmarks:
        crop = cv2.warpAffine(frame_bgr, to_crop, (INPUT_SIZE, INPUT_SIZE),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        rgb = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
        self._interpreter.set_tensor(self._input_index, (rgb.astype(np.float32) / 255.0)[None])
        self._interpreter.invoke()
        points = self._interpreter.get_tensor(self._points_index).reshape(468, 3)
        logit = float(self._interpreter.get_tensor(self._presence_index).ravel()[0])
        to_frame = cv2.invertAffineTransform(to_crop)
        xy = points[:, :2] @ to_frame[:, :2].T + to_frame[:, 2]
        # z shares x's scale in the crop; undo the crop's zoom so it shares the frame's.
        z = points[:, 2:3] * math.hypot(to_frame[0, 0], to_frame[1, 0])
        presence = 1.0 / (1.0 + math.exp(-max(-100.0, min(100.0, logit))))
        return Landmarks(np.hstack([xy, z]).astype(np.float32), presence)


def roi_transform(detection: Detection, *, level_eyes: bool = True) -> np.ndarray:
    """Affine (2, 3) from the frame to the 192x192 mesh crop: centred, eyes level, 1.5x box."""
    x1, y1, x2, y2 = detection.box
    right_eye, left_eye = detection.keypoints[0], detection.keypoints[1]
    angle = math.degrees(math.atan2(left_eye[1] - right_eye[1], left_eye[0] - right_eye[0]))
    if not level_eyes:
        angle = 0.0
    centre = ((x1 + x2) / 2, (y1 + y2) / 2)
    side = ROI_SCALE * max(x2 - x1, y2 - y1)
    matrix = cv2.getRotationMatrix2D(centre, angle, INPUT_SIZE / side)
    matrix[:, 2] += (INPUT_SIZE / 2 - centre[0], INPUT_SIZE / 2 - centre[1])
    return matrix
