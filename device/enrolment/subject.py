"""draft"""
from __future__ import annotations
import numpy as np
from device.errors import SeveralFaces
CENTRE_WEIGHT = 1.0
SIMILAR_PROMINENCE = 0.4

def offset_from_centre(box, frame_shape) -> float:
    height, width = frame_shape[:2]
    centre = np.array([width / 2, height / 2])
    return float(np.linalg.norm((np.asarray(box[:2]) + np.asarray(box[2:])) / 2 - centre)
                 / np.hypot(width / 2, height / 2))

def choose_subject(faces, frame_shape, *, centre_weight=CENTRE_WEIGHT,
                   similar_prominence=SIMILAR_PROMINENCE, label=None) -> int:
    raise NotImplementedError
