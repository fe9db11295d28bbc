"""Build the canonical face: the average FaceMesh of many frontal faces, in the 112x112 crop.

The homography alignment warps each face's 468 mesh points onto this average. It is built
after a five-point similarity alignment to the embedder's template, so the canonical face
lives in exactly the crop the embedder expects.

    python -m training.canonical_face --data ../shared/data/lfw-a \
        --out models/canonical_face_mesh_112.npy
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from device.errors import FacegateError
from device.vision.alignment import ARCFACE_TEMPLATE_112, similarity_transform
from device.vision.detector import FaceDetector
from device.vision.image_io import read_image
from device.vision.landmarks import FaceMesh
from device.vision.models import DETECTOR, LANDMARKS, default_models_dir, load_card
from device.vision.quality import head_pose

# Only near-frontal faces go into the average, so that it is the shape of a face seen
# straight on rather than the average of poses.
MAX_ANGLE_DEGREES = 10.0


def identity_folders(data_dir: Path) -> list[Path]:
    return sorted(p for p in data_dir.iterdir() if p.is_dir())


def build_canonical_mesh(data_dir: Path, models_dir: Path, per_person: int = 1,
                         template: np.ndarray = ARCFACE_TEMPLATE_112) -> tuple[np.ndarray, dict]:
    detector = FaceDetector(load_card(DETECTOR, models_dir).path)
    mesh = FaceMesh(load_card(LANDMARKS, models_dir).path)
    aligned_meshes, poses, skipped = [], [], 0
    for folder in identity_folders(data_dir):
        for image_path in sorted(folder.iterdir())[:per_person]:
            try:
                frame, _ = read_image(image_path)
            except FacegateError:
                skipped += 1
                continue
            detections = sorted(detector.detect(frame), key=lambda d: d.area, reverse=True)
            if not detections:
                skipped += 1
                continue
            landmarks = mesh.locate(frame, detections[0])
            yaw, pitch, roll = head_pose(landmarks.points)
            poses.append((yaw, pitch, roll))
            matrix = similarity_transform(landmarks.five_points(), template)
            xy = landmarks.points[:, :2] @ matrix[:2, :2].T + matrix[:2, 2]
            z = landmarks.points[:, 2:3] * np.sqrt(abs(np.linalg.det(matrix[:2, :2])))
            aligned_meshes.append((np.hstack([xy, z]), (yaw, pitch, roll)))
    # Judge "frontal" against the median pitch, so the average is centred whatever the
    # calibration of head_pose's pitch.
    median_pitch = float(np.median([p[1] for p in poses]))
    frontal = [m for m, (yaw, pitch, roll) in aligned_meshes
               if abs(yaw) < MAX_ANGLE_DEGREES and abs(pitch - median_pitch) < MAX_ANGLE_DEGREES
               and abs(roll) < MAX_ANGLE_DEGREES]
    canonical = np.mean(frontal, axis=0).astype(np.float32)
    stats = {"faces_seen": len(aligned_meshes), "frontal_faces_averaged": len(frontal),
             "images_skipped": skipped, "median_pitch_degrees": round(median_pitch, 2)}
    return canonical, stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True,
                        help="folder with one sub-folder of images per person")
    parser.add_argument("--models", type=Path, default=default_models_dir())
    parser.add_argument("--per-person", type=int, default=1, help="images used per person")
    parser.add_argument("--out", type=Path, required=True, help="where to write the .npy")
    args = parser.parse_args(argv)
    canonical, stats = build_canonical_mesh(args.data, args.models, args.per_person)
    np.save(args.out, canonical)
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
