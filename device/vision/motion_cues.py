"""Motion cues from FaceMesh: whether the eyes close, whether the head turns in depth.

Pure geometry and grey levels on the 468 points the pipeline already has for each face
(``LocatedFace.landmarks``, frame pixels); no model of its own. Used by the door's optional
motion-cue check (``device/daemon/cues.py``), which compares frames of one tracked face.

**Head turn.** Every view of a flat picture, however it is tilted or moved in front of the
camera, is a homography of every other view, so a homography fitted on points
of the face plane (eye corners, brows, cheeks, chin, forehead, mouth corners) also predicts
where the nose tip goes. A real head is not flat: its nose stands about 0.6 eye distances in
front of that plane, so a turn moves the nose tip off the homography's prediction.
:func:`turn_parallax` is that miss, in eye distances. Measured with the bundled FaceMesh
(``tests/test_motion_cues.py`` checks a few): of 5,682 perspective warps of 394 real photos
(lfw-a and pad-dev, tilts up to 35 degrees, both views within the door's pose gate) 99% stay
under 0.12 and 99.9% under 0.20; the six above came from three photos the mesh misreads
once tilted (for lfw-a's Lea_Fastow_0001 its yaw estimate flips from +17 to -20 degrees).
Consecutive pad-dev frames of live people whose heads turn 15 to 25 degrees between them
reach 0.2 in 68% of pairs, turns beyond 25 degrees in all of them.

**Blink.** The usual eye aspect ratio (:func:`eye_aspect_ratio`) is kept for reference but
not used: this FaceMesh (``face_landmark.tflite``, no eye refinement) draws an open eye's
contour on a closed eye. On ORL's ten closed-eye photos the ratio stays at 0.86 to 1.10 of
the same person's open-eye median. :func:`eye_openness` looks inside the mesh's eye
contours instead: an open eye shows a dark iris against the white and the lids, a closed one
an even lid. On the same photos it falls to 0.44 to 1.05 of the open-eye median (half of
them under 0.6); tilts of still photos keep it above 0.72 of its level in 99 of 100, but
not always (the lowest 0.44), so the blink is the weaker cue.
"""

from __future__ import annotations

import cv2
import numpy as np

from device.vision.landmarks import LEFT_EYE_RING, RIGHT_EYE_RING

# The six points of the eye aspect ratio (Soukupova and Cech, 2016) in MediaPipe's mesh:
# outer corner, two upper lid points, inner corner, two lower lid points (p1..p6).
RIGHT_EYE_EAR = (33, 160, 158, 133, 153, 144)
LEFT_EYE_EAR = (362, 385, 387, 263, 373, 380)

# Points of the face plane: in the canonical face (models/canonical_face_mesh_112.npy) they
# lie within about 6 of 112 units of the plane of the eye and mouth corners, and none is on
# a lid, so a blink does not move them. Mouth corners move with a smile: RANSAC drops them.
FACE_PLANE = (33, 133, 362, 263,  # eye corners
              70, 300, 105, 334,  # brows
              50, 280, 205, 425,  # cheeks
              152, 175,  # chin
              10, 151,  # forehead
              61, 291)  # mouth corners
NOSE = (1, 4)  # the nose tip and the point above it: 20 units in front of the plane

# A face-plane point further than this (eye distances) from the fitted homography is an
# outlier (a mesh point misplaced, a mouth that smiled).
RANSAC_TOLERANCE = 0.05
MIN_EYE_PIXELS = 10  # fewer pixels inside an eye contour: too small to judge openness


def interocular(points: np.ndarray) -> float:
    """Distance between the eye centres (the means of the mesh's eye contours), pixels."""
    xy = np.asarray(points, np.float64)[:, :2]
    return float(np.linalg.norm(xy[list(RIGHT_EYE_RING)].mean(0)
                                - xy[list(LEFT_EYE_RING)].mean(0)))


def turn_parallax(first: np.ndarray, current: np.ndarray) -> float:
    """How far the nose tip has left the face plane between two views of one face, in eye
    distances (of ``current``): 0 for any two views of a flat picture, more the further a
    real head turned in depth. ``first``, ``current``: (468, 2 or 3) mesh points, frame
    pixels. NaN when no homography fits (a degenerate mesh)."""
    before = np.asarray(first, np.float64)[:, :2]
    after = np.asarray(current, np.float64)[:, :2]
    scale = interocular(after)
    if not scale > 0:
        return float("nan")
    homography, _ = cv2.findHomography(before[list(FACE_PLANE)], after[list(FACE_PLANE)],
                                       cv2.RANSAC, RANSAC_TOLERANCE * scale)
    if homography is None:
        return float("nan")
    predicted = cv2.perspectiveTransform(before[list(NOSE)][None], homography)[0]
    return float(np.linalg.norm(predicted - after[list(NOSE)], axis=1).mean() / scale)


def eye_aspect_ratio(points: np.ndarray) -> float:
    """The mean of both eyes' aspect ratios (lid opening over eye width) from the mesh's
    lid points: about 0.2 to 0.35 for open eyes. Not used for the blink cue (see the
    module's docstring: this mesh keeps the lids open on a closed eye)."""
    xy = np.asarray(points, np.float64)[:, :2]
    ratios = []
    for p1, p2, p3, p4, p5, p6 in (RIGHT_EYE_EAR, LEFT_EYE_EAR):
        opening = np.linalg.norm(xy[p2] - xy[p6]) + np.linalg.norm(xy[p3] - xy[p5])
        ratios.append(opening / (2.0 * np.linalg.norm(xy[p1] - xy[p4])))
    return float(np.mean(ratios))


def eye_openness(frame_bgr: np.ndarray, points: np.ndarray) -> float:
    """How open the eyes look, from the grey levels inside the mesh's eye contours: the
    spread from the darkest (the iris, 5th percentile) to the median, over the mean, both
    eyes averaged. Only comparable between frames of the same face in the same light; a
    closed eye scores about half an open one. NaN when an eye is too small or out of frame.
    """
    grey = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY) if frame_bgr.ndim == 3 else frame_bgr
    height, width = grey.shape[:2]
    xy = np.asarray(points, np.float64)[:, :2]
    values = []
    for ring in (RIGHT_EYE_RING, LEFT_EYE_RING):
        contour = np.round(xy[list(ring)]).astype(np.int32)
        left, top, w, h = cv2.boundingRect(contour)
        if left < 0 or top < 0 or left + w > width or top + h > height:
            return float("nan")
        mask = np.zeros((h, w), np.uint8)
        cv2.fillPoly(mask, [contour - (left, top)], 1)
        inside = grey[top:top + h, left:left + w][mask > 0].astype(np.float64)
        if inside.size < MIN_EYE_PIXELS:
            return float("nan")
        p5, p50 = np.percentile(inside, [5, 50])
        values.append((p50 - p5) / (inside.mean() + 1.0))
    return float(np.mean(values))
