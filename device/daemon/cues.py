"""The optional motion cue: a tracked face must blink or turn its head before it opens.

``liveness.motion_cue`` ("off" by default) names the cue: "blink", "head_turn" or "either".
The texture model (``device/liveness.py``) still judges every frame; the cue can only hold a
track back, never make a photo pass, and a track still waiting for it is no attack: a live
face that stands still just waits. Each track keeps a :class:`CueWatch`, fed one
:class:`CueSample` per frame that passed the quality gate (the maths is in
``device/vision/motion_cues.py``); once the cue is seen it stays seen for the track's life,
until a grant starts the track over (:meth:`CueWatch.reset`).

- **head turn**: the nose tip has left the face plane by ``liveness.head_turn_parallax`` eye
  distances or more since the track's first good frame;
- **blink**: the eyes' openness fell under ``liveness.blink_drop`` of the track's usual level
  (the median of its last ``BLINK_HISTORY`` good frames, once it has ``BLINK_MIN_FRAMES``)
  and came back to ``BLINK_REOPEN`` of it.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass

import numpy as np

from device.vision.motion_cues import eye_openness, turn_parallax

BLINK_HISTORY = 30  # frames, 2 s at 15 fps: the level a blink is measured against
BLINK_MIN_FRAMES = 3  # no level, and no blink, before this many good frames
BLINK_REOPEN = 0.85  # the eyes are open again at this share of the level

KINDS = {"blink": ("blink",), "head_turn": ("head_turn",), "either": ("blink", "head_turn")}
WORDS = {"blink": "a blink", "head_turn": "a head turn", "either": "a blink or a head turn"}


@dataclass(frozen=True)
class CueRule:
    """Which cue a track needs (``kind``: "blink", "head_turn" or "either") and when it
    counts as seen."""

    kind: str
    head_turn_parallax: float = 0.2
    blink_drop: float = 0.6

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown motion cue {self.kind!r}; one of {', '.join(KINDS)}")

    @property
    def watches_blink(self) -> bool:
        return "blink" in KINDS[self.kind]

    @property
    def watches_turn(self) -> bool:
        return "head_turn" in KINDS[self.kind]

    @property
    def words(self) -> str:
        """For the log: "a blink", "a head turn", "a blink or a head turn"."""
        return WORDS[self.kind]


@dataclass(frozen=True)
class CueSample:
    """One frame's measurements of a face: its mesh points (468, 2), frame pixels, and its
    eyes' openness (None when the rule does not watch blinks; NaN when unmeasurable)."""

    points: np.ndarray
    openness: float | None = None

    @classmethod
    def measure(cls, frame_bgr: np.ndarray, landmarks: np.ndarray,
                rule: CueRule) -> CueSample:
        openness = eye_openness(frame_bgr, landmarks) if rule.watches_blink else None
        return cls(np.asarray(landmarks, np.float32)[:, :2].copy(), openness)


class CueWatch:
    """One track's motion cue. ``seen`` is the cue seen ("blink" or "head_turn"), None while
    the track still waits; ``parallax`` the largest head-turn parallax so far."""

    def __init__(self, rule: CueRule) -> None:
        self.rule = rule
        self.reset()

    def reset(self) -> None:
        self.seen: str | None = None
        self.parallax = 0.0
        self._first: np.ndarray | None = None
        self._openness: deque[float] = deque(maxlen=BLINK_HISTORY)
        self._closed = False  # the eyes were seen closed; a blink once they open again

    def add(self, sample: CueSample) -> None:
        """Take one good frame's measurements of this track's face."""
        if self.rule.watches_turn:
            self._watch_turn(sample.points)
        if self.rule.watches_blink and sample.openness is not None:
            self._watch_blink(sample.openness)

    def _watch_turn(self, points: np.ndarray) -> None:
        if self._first is None:
            self._first = points
            return
        parallax = turn_parallax(self._first, points)
        if math.isnan(parallax):
            return
        self.parallax = max(self.parallax, parallax)
        if self.seen is None and parallax >= self.rule.head_turn_parallax:
            self.seen = "head_turn"

    def _watch_blink(self, openness: float) -> None:
        if math.isnan(openness):
            return
        self._openness.append(openness)
        if len(self._openness) < BLINK_MIN_FRAMES:
            return
        level = statistics.median(self._openness)
        if openness < self.rule.blink_drop * level:
            self._closed = True
        elif self._closed and openness >= BLINK_REOPEN * level and self.seen is None:
            self.seen = "blink"
