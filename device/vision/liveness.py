"""Presentation-attack detection: a face box in a frame -> the probability it is a live face.

A MiniFASNet-family network (Minivision's Silent-Face-Anti-Spoofing, fine-tuned by
``training/liveness.py``) looks at the texture around the face: the paper grain, print dots,
the moiré and colour of a screen, the edge of a photo. It sees more than the face: the box is
scaled about its centre by the card's ``crop_scale`` and shifted (not clipped) to stay inside
the picture (the frame less any letterbox bars), the way upstream cut its training crops,
then resized to 80x80.

The contract, for every liveness card (``task: "liveness"``): one input per crop, in the
card's ``inputs`` order, ``[1, 80, 80, 3]`` float32 NHWC **BGR 0..255**; one output, the
softmax of three classes, class 1 live. ``score`` returns that probability; the card's
``threshold.live`` is the default decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from device.vision.interpreter import InterpreterFactory, load_interpreter
from device.vision.models import DEFAULT_LIVENESS, ModelCard, load_card

LIVE_CLASS = 1


def liveness_crop(frame_bgr: np.ndarray, box: np.ndarray | list[float], scale: float,
                  size: int = 80) -> np.ndarray:
    """Upstream's crop (``src/generate_patches.py``): the box scaled by ``scale`` about its
    centre, at most to the picture's size, moved back inside it, resized to size x size.

    A face filling the picture gets the whole picture, squeezed to a square: upstream trained
    on exactly that, so it is kept rather than padded. The picture is the frame without its
    letterbox bars (:func:`picture_bounds`): a replayed photo of another shape comes with
    black bars, which are no part of the scene, and a crop showing them looks like the edge
    of a photo held up to the camera.
    """
    left0, top0, right0, bottom0 = picture_bounds(frame_bgr)
    picture = frame_bgr[top0:bottom0, left0:right0]
    height, width = picture.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2, y1, y2 = x1 - left0, x2 - left0, y1 - top0, y2 - top0
    box_w, box_h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    scale = min((height - 1) / box_h, (width - 1) / box_w, scale)
    new_w, new_h = box_w * scale, box_h * scale
    centre_x, centre_y = x1 + box_w / 2, y1 + box_h / 2
    left, top = centre_x - new_w / 2, centre_y - new_h / 2
    right, bottom = centre_x + new_w / 2, centre_y + new_h / 2
    if left < 0:
        right, left = right - left, 0.0
    if top < 0:
        bottom, top = bottom - top, 0.0
    if right > width - 1:
        left, right = left - (right - width + 1), width - 1.0
    if bottom > height - 1:
        top, bottom = top - (bottom - height + 1), height - 1.0
    left, top, right, bottom = (max(0, int(v)) for v in (left, top, right, bottom))
    return cv2.resize(picture[top:bottom + 1, left:right + 1], (size, size))


def picture_bounds(frame_bgr: np.ndarray) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the frame without letterbox bars: whole rows and columns
    of exact zeros at its edges, which ``fit_to_size`` writes and a camera sensor never does.
    Checks the four edges first, so a frame without bars costs four small reads."""
    height, width = frame_bgr.shape[:2]
    if (frame_bgr[:, 0].any() and frame_bgr[:, -1].any() and frame_bgr[0].any()
            and frame_bgr[-1].any()):
        return 0, 0, width, height
    columns = np.flatnonzero(frame_bgr.any(axis=(0, 2)))
    rows = np.flatnonzero(frame_bgr.any(axis=(1, 2)))
    if not len(columns) or not len(rows):  # an all-black frame: nothing to trim to
        return 0, 0, width, height
    return int(columns[0]), int(rows[0]), int(columns[-1]) + 1, int(rows[-1]) + 1


@dataclass(frozen=True)
class LivenessInput:
    crop_scale: float
    size: int = 80


class LivenessModel:
    """``score(frame_bgr, box) -> float`` in 0..1: the probability that the face is live."""

    def __init__(self, model_path: str | Path, inputs: list[LivenessInput], *,
                 interpreter_factory: InterpreterFactory | None = None,
                 num_threads: int | None = None, name: str = "",
                 threshold: float = 0.5, votes_needed: int = 2) -> None:
        self._interpreter = load_interpreter(model_path, interpreter_factory, num_threads)
        details = self._interpreter.get_input_details()
        if len(details) != len(inputs):
            raise ValueError(f"{Path(model_path).name} takes {len(details)} inputs, its card "
                             f"describes {len(inputs)}")
        # The converter may list inputs in any order; they are named crop_0, crop_1, ...
        # after the card's order when there are several.
        self._input_indices = [d["index"] for d in sorted(details, key=lambda d: d["name"])]
        self._output_index = self._interpreter.get_output_details()[0]["index"]
        self.inputs = inputs
        self.name = name
        self.threshold = threshold  # the card's default decision: live when score >= this
        self.votes_needed = votes_needed  # the card's default K of live frames per track

    @classmethod
    def from_card(cls, card: ModelCard, *, interpreter_factory: InterpreterFactory | None = None,
                  num_threads: int | None = None) -> LivenessModel:
        if card.task != "liveness":
            raise ValueError(f"{card.name} is a {card.task} model, not a liveness model")
        inputs = [LivenessInput(float(item["crop_scale"]), int(item.get("size", 80)))
                  for item in card.card["inputs"]]
        return cls(card.path, inputs, interpreter_factory=interpreter_factory,
                   num_threads=num_threads, name=card.name,
                   threshold=float(card.threshold.get("live", 0.5)),
                   votes_needed=int(card.threshold.get("votes_needed", 2)))

    @classmethod
    def by_name(cls, name: str = "", models_dir: Path | None = None, *,
                interpreter_factory: InterpreterFactory | None = None) -> LivenessModel:
        """The named liveness model; "" is the default one (``DEFAULT_LIVENESS``)."""
        return cls.from_card(load_card(name or DEFAULT_LIVENESS, models_dir),
                             interpreter_factory=interpreter_factory)

    def crops(self, frame_bgr: np.ndarray, box: np.ndarray | list[float]) -> list[np.ndarray]:
        """What the network sees of this face, one crop per input (BGR uint8)."""
        return [liveness_crop(frame_bgr, box, item.crop_scale, item.size)
                for item in self.inputs]

    def score(self, frame_bgr: np.ndarray, box: np.ndarray | list[float]) -> float:
        return self.score_crops(self.crops(frame_bgr, box))

    def score_crops(self, crops_bgr: list[np.ndarray]) -> float:
        return float(np.clip(self.class_probabilities(crops_bgr)[LIVE_CLASS], 0.0, 1.0))

    def class_probabilities(self, crops_bgr: list[np.ndarray]) -> np.ndarray:
        """All three class probabilities (the parity checks compare every one)."""
        for index, crop in zip(self._input_indices, crops_bgr, strict=True):
            self._interpreter.set_tensor(index, crop.astype(np.float32)[None])
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output_index)[0].astype(np.float64)
