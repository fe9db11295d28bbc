"""face_recognition (dlib) as its README uses it, for side-by-side benchmarks.

Runs in the peers' own virtual environment (``bench/.peers-venv``), never in the product's.
The chain: dlib's HOG face detector (``face_locations``, one upsampling, the library's
default), 68-point landmarks (``face_encodings(model="large")``, the alignment the issue names;
the library's default is the 5-point ``"small"``), and dlib's ResNet, 128-d, one jitter.
Two faces are the same person when the Euclidean distance of their encodings is at most
``tolerance=0.6`` (``compare_faces``' default). Encodings are not unit length, so they are
compared by distance, scored as minus the distance ("higher is more alike").
"""

from __future__ import annotations

import importlib.metadata

import face_recognition
import numpy as np

NAME = "face_recognition"
METRIC = "neg_euclidean"  # training.evaluate scores them as -distance
DEFAULT_THRESHOLD = -0.6  # distance <= 0.6, the library's tolerance
UPSAMPLE = 1
LANDMARKS = "large"  # 68 points
JITTERS = 1


class FaceRecognitionDlib:
    """``detect(rgb) -> boxes`` and ``embed(rgb, boxes) -> (n, 128)``, largest face first."""

    name = NAME
    metric = METRIC
    default_threshold = DEFAULT_THRESHOLD

    def __init__(self, models_dir: str | None = None) -> None:
        del models_dir  # the library finds its own models (face_recognition_models)

    @staticmethod
    def load(path: str) -> np.ndarray:
        """The image as RGB uint8 (PIL, as the library's ``load_image_file``)."""
        return face_recognition.load_image_file(path)

    @staticmethod
    def detect(image: np.ndarray) -> list[tuple[int, int, int, int]]:
        """Face boxes as (top, right, bottom, left), largest first; empty when none."""
        boxes = face_recognition.face_locations(image, number_of_times_to_upsample=UPSAMPLE,
                                                model="hog")
        return sorted(boxes, key=lambda b: (b[2] - b[0]) * (b[1] - b[3]), reverse=True)

    @staticmethod
    def embed(image: np.ndarray, boxes: list) -> np.ndarray:
        if not boxes:
            return np.empty((0, 128), np.float32)
        encodings = face_recognition.face_encodings(image, boxes, num_jitters=JITTERS,
                                                    model=LANDMARKS)
        return np.asarray(encodings, np.float32)

    @staticmethod
    def settings() -> dict:
        import dlib
        return {"detector": f"dlib HOG, upsample {UPSAMPLE}",
                "landmarks": "68 points (face_encodings model='large'; library default 'small')",
                "embedder": "dlib_face_recognition_resnet_model_v1, 128-d", "jitters": JITTERS,
                "default_rule": "Euclidean distance <= 0.6 (compare_faces tolerance)",
                "dlib": dlib.__version__, "dlib_cuda": bool(dlib.DLIB_USE_CUDA),
                # The package's own __version__ still says 1.2.3 in the 1.3.0 release.
                "face_recognition": importlib.metadata.version("face-recognition")}
