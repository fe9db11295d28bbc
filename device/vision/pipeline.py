"""The face pipeline: frame -> detector -> FaceMesh -> alignment -> quality -> embedding."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from device.errors import ModelNotFound
from device.vision.alignment import ARCFACE_TEMPLATE_112, Aligner
from device.vision.detector import FaceDetector
from device.vision.embedder import FaceEmbedder
from device.vision.interpreter import InterpreterFactory
from device.vision.landmarks import FaceMesh
from device.vision.models import (
    DEFAULT_EMBEDDER,
    DETECTOR,
    LANDMARKS,
    ModelCard,
    default_models_dir,
    load_card,
)
from device.vision.quality import Quality, measure_quality

# The still path's second detector (device/vision/detector.py, ``thorough=True``).
FULL_RANGE_DETECTOR = "face_detection_full_range_sparse"
# The canonical face of the homography alignment, for 112x112 crops (training/canonical_face.py).
CANONICAL_MESH_FILE = "canonical_face_mesh_112.npy"

# Below this FaceMesh presence score the detector's box is taken for a false positive (a cat,
# a logo or a fold of a coat the still path's extra runs took for a face): the mesh model has
# looked closer than the detector could. Detector false positives on ../shared/data/no-face
# score under 0.05, real faces near 1.
MIN_MESH_PRESENCE = 0.5


@dataclass(frozen=True)
class LocatedFace:
    """A face found, measured and aligned, before the embedder has seen it."""

    box: np.ndarray  # (4,) x1, y1, x2, y2 in frame pixels
    score: float  # detector confidence
    landmarks5: np.ndarray  # (5, 2) eye centres, nose tip, mouth corners
    landmarks: np.ndarray  # (468, 3) FaceMesh points, frame pixels
    quality: Quality
    aligned: np.ndarray  # the aligned crop the embedder sees, BGR uint8
    alignment: str  # "similarity" or "homography" (the method actually used)

    @property
    def area(self) -> float:
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))


@dataclass(frozen=True)
class Face(LocatedFace):
    embedding: np.ndarray  # (dim,) float32, unit length


class FacePipeline:
    """Finds, aligns and embeds every face in a frame, largest first.

    Built from three model wrappers and an aligner; ``from_models_dir`` picks them by name.
    """

    def __init__(self, detector: FaceDetector, mesh: FaceMesh, aligner: Aligner,
                 embedder: FaceEmbedder | None, embedder_card: ModelCard | None) -> None:
        self.detector = detector
        self.mesh = mesh
        self.aligner = aligner
        self.embedder = embedder
        self.embedder_card = embedder_card

    @classmethod
    def from_models_dir(
        cls,
        models_dir: str | Path | None = None,
        *,
        embedder: str | None = None,
        alignment: str | None = None,
        mirror: bool | None = None,
        interpreter_factory: InterpreterFactory | None = None,
    ) -> FacePipeline:
        """Load the detector, FaceMesh and an embedder (default: SFace) by name.

        ``alignment`` and ``mirror`` override the embedder card's choices (for evaluation).
        """
        models_dir = Path(models_dir) if models_dir else default_models_dir()
        mesh_card = load_card(LANDMARKS, models_dir)
        embedder_card = load_card(embedder or DEFAULT_EMBEDDER, models_dir)
        feed = embedder_card.card["input"]
        align = embedder_card.card.get("alignment", {})
        size = int(feed["size"][0])
        aligner = Aligner(
            method=alignment or align.get("method", "similarity"),
            template=np.array(align.get("template", ARCFACE_TEMPLATE_112), np.float32),
            size=size,
            canonical_mesh=embedder_card.companion("canonical_mesh"),
        )
        return cls(
            load_detector(models_dir, interpreter_factory),
            FaceMesh(mesh_card.path, interpreter_factory=interpreter_factory),
            aligner,
            FaceEmbedder(
                embedder_card.path,
                colour=feed.get("colour", "RGB"),
                mean=feed.get("mean", 0.0),
                std=feed.get("std", 1.0),
                mirror=embedder_card.card.get("mirror", False) if mirror is None else mirror,
                interpreter_factory=interpreter_factory,
            ),
            embedder_card,
        )

    @classmethod
    def without_embedder(cls, models_dir: str | Path | None = None, *,
                         alignment: str = "similarity",
                         interpreter_factory: InterpreterFactory | None = None) -> FacePipeline:
        """Detector, FaceMesh and a 112x112 aligner only, for ``locate``: how training caches
        the crops a new embedder learns from (ArcFace template, the bundled canonical mesh)."""
        models_dir = Path(models_dir) if models_dir else default_models_dir()
        aligner = Aligner(method=alignment, template=ARCFACE_TEMPLATE_112, size=112,
                          canonical_mesh=np.load(models_dir / CANONICAL_MESH_FILE))
        return cls(
            load_detector(models_dir, interpreter_factory),
            FaceMesh(load_card(LANDMARKS, models_dir).path,
                     interpreter_factory=interpreter_factory),
            aligner, None, None)

    @property
    def model_name(self) -> str:
        """The embedder's name: templates are only ever compared with the same model's."""
        return self.embedder_card.name

    def process(self, frame_bgr: np.ndarray, *, thorough: bool = False,
                max_faces: int | None = None, min_interocular_px: float = 0.0) -> list[Face]:
        """Every face in the frame, largest first, embedded; an empty list when there is none.

        ``thorough`` searches harder for small and cut faces (still photos).
        ``max_faces`` embeds only the largest few (the door needs the nearest person).
        ``min_interocular_px`` skips the embedding of faces too far away to be at the door.
        """
        return [
            Face(**{f.name: getattr(located, f.name) for f in fields(LocatedFace)},
                 embedding=self.embedder.embed([located.aligned])[0])
            for located in self.locate(frame_bgr, thorough=thorough, max_faces=max_faces,
                                       min_interocular_px=min_interocular_px)
        ]

    def locate(self, frame_bgr: np.ndarray, *, thorough: bool = False,
               max_faces: int | None = None, min_interocular_px: float = 0.0
               ) -> list[LocatedFace]:
        """The steps before the embedder (same arguments as ``process``): training caches
        these crops, so a network learns from exactly what the door will show it."""
        detections = sorted(self.detector.detect(frame_bgr, thorough=thorough),
                            key=lambda d: d.area, reverse=True)
        faces = []
        for detection in detections:
            if max_faces is not None and len(faces) >= max_faces:
                break
            landmarks = self.mesh.locate(frame_bgr, detection)
            if landmarks.presence < MIN_MESH_PRESENCE:
                continue
            five = landmarks.five_points()
            if float(np.linalg.norm(five[1] - five[0])) < min_interocular_px:
                continue
            aligned = self.aligner.align(frame_bgr, five, landmarks.points)
            faces.append(LocatedFace(
                box=detection.box,
                score=detection.score,
                landmarks5=five,
                landmarks=landmarks.points,
                quality=measure_quality(five, landmarks.points, aligned.crop),
                aligned=aligned.crop,
                alignment=aligned.method,
            ))
        return faces

    def embed_crop(self, aligned_crop: np.ndarray) -> np.ndarray:
        """Embed a stored aligned crop (re-embedding a gallery after a model change)."""
        return self.embedder.embed([aligned_crop])[0]


def load_detector(models_dir: Path, interpreter_factory: InterpreterFactory | None = None
                  ) -> FaceDetector:
    """The short-range detector of ``models_dir`` with its full-range partner for stills.

    A folder made for one embedder (a benchmark's or a training test's) may hold only the
    short-range detector and FaceMesh: the full-range model is then the bundled one, so the
    still path finds the same faces whichever embedder is tried.
    """
    short = load_card(DETECTOR, models_dir)
    try:
        full = load_card(FULL_RANGE_DETECTOR, models_dir)
    except ModelNotFound:
        full = load_card(FULL_RANGE_DETECTOR, default_models_dir())
    return FaceDetector(
        short.path,
        full_range_path=full.path,
        full_range_score_threshold=full.card["output"]["score_threshold"],
        interpreter_factory=interpreter_factory,
    )
