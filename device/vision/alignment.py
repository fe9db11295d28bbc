"""Alignment: warp a face onto the canonical face the embedder was trained on.

Two methods, chosen per embedder by its model card:

- ``similarity``: a rotation, uniform scale and shift fitted by least squares to five points
  (eye centres, nose tip, mouth corners) against the embedder's five-point template. This is
  how SFace's training crops were made, so it is SFace's default.
- ``homography``: a projective warp fitted with RANSAC over all 468 mesh points against a
  canonical mesh (the average of many frontal faces, already in the 112x112 crop). It undoes
  mild perspective, but a degenerate fit (few inliers, strong perspective) falls back to the
  similarity transform.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# The ArcFace / InsightFace five-point template for 112x112 crops, which SFace and OpenCV's
# FaceRecognizerSF.alignCrop use.
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)

# A homography that magnifies one side of the face more than this fraction over the other is
# treated as degenerate, and so is a fit that keeps fewer than this share of the 468 points.
MAX_PERSPECTIVE = 0.15
MIN_INLIER_SHARE = 0.6
RANSAC_REPROJECTION_PX = 3.0


@dataclass(frozen=True)
class AlignedFace:
    crop: np.ndarray  # (size, size, 3) uint8 BGR
    method: str  # the method actually used: "similarity" or "homography"
    matrix: np.ndarray  # (3, 3) frame -> crop
    inlier_share: float  # homography only: share of mesh points RANSAC kept; 1.0 otherwise


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama, 1991) mapping ``source`` (n, 2) onto ``target``.

    Returns a (3, 3) matrix. Least squares rather than RANSAC: with five points a 3-pixel
    RANSAC threshold throws away good landmarks and costs accuracy.
    """
    source = np.asarray(source, np.float64)
    target = np.asarray(target, np.float64)
    src_mean, dst_mean = source.mean(0), target.mean(0)
    src, dst = source - src_mean, target - dst_mean
    covariance = dst.T @ src / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    reflection = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        reflection[1, 1] = -1
    rotation = u @ reflection @ vt
    scale = np.trace(np.diag(singular) @ reflection) / src.var(0).sum()
    matrix = np.eye(3)
    matrix[:2, :2] = scale * rotation
    matrix[:2, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


class Aligner:
    """Warps faces to ``size`` x ``size`` crops for one embedder.

    ``canonical_mesh`` (468, 2 or 3) is only needed for the homography method.
    """

    def __init__(
        self,
        *,
        method: str = "similarity",
        template: np.ndarray = ARCFACE_TEMPLATE_112,
        size: int = 112,
        canonical_mesh: np.ndarray | None = None,
    ) -> None:
        if method not in ("similarity", "homography"):
            raise ValueError(f"unknown alignment method {method!r}")
        if method == "homography" and canonical_mesh is None:
            raise ValueError("the homography alignment needs a canonical mesh")
        self.method = method
        self.template = np.asarray(template, np.float32)
        self.size = size
        # Only x, y take part in the fit; a canonical mesh may also carry depth.
        self.canonical_mesh = (None if canonical_mesh is None
                               else np.asarray(canonical_mesh, np.float32)[:, :2])

    def align(self, frame_bgr: np.ndarray, five_points: np.ndarray,
              mesh_points: np.ndarray | None = None) -> AlignedFace:
        if self.method == "homography" and mesh_points is not None:
            fitted = self._homography(mesh_points)
            if fitted is not None:
                matrix, share = fitted
                crop = cv2.warpPerspective(frame_bgr, matrix, (self.size, self.size),
                                           flags=cv2.INTER_LINEAR)
                return AlignedFace(crop, "homography", matrix, share)
        matrix = similarity_transform(five_points, self.template)
        crop = cv2.warpAffine(frame_bgr, matrix[:2], (self.size, self.size),
                              flags=cv2.INTER_LINEAR)
        return AlignedFace(crop, "similarity", matrix, 1.0)

    def _homography(self, mesh_points: np.ndarray) -> tuple[np.ndarray, float] | None:
        source = np.asarray(mesh_points[:, :2], np.float32)
        matrix, inliers = cv2.findHomography(source, self.canonical_mesh, cv2.RANSAC,
                                             RANSAC_REPROJECTION_PX)
        if matrix is None:
            return None
        share = float(inliers.mean())
        # The projective divisor w varies across the face: max(w) / min(w) - 1 says how much
        # more one side of the face is magnified than the other.
        divisor = source @ matrix[2, :2] + matrix[2, 2]
        if np.any(divisor <= 0):
            return None
        bend = float(divisor.max() / divisor.min()) - 1.0
        if share < MIN_INLIER_SHARE or bend > MAX_PERSPECTIVE:
            return None
        return matrix, share
