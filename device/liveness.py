"""Liveness: whether a face in front of the camera is a live person or a photo held up to it.

:class:`LivenessCheck` turns the configuration's ``[liveness]`` into one verdict per face with
the model of :mod:`device.vision.liveness`: live when its score reaches the threshold
(``liveness.threshold``, else the model card's). The door counts those verdicts per tracked
face (``device/daemon/votes.py``: K live frames of the last M, as well as K identity votes,
and, when ``liveness.motion_cue`` asks for one, a blink or a head turn: device/daemon/cues.py);
the enrolment service refuses a frame captured from the door camera that is not live.

The model is loaded once, when first needed: at the daemon's start when the check is on (a
model that cannot be loaded then stops the start, :meth:`LivenessCheck.require`), or when an
admin turns the check on at run time. Hazard: a model that fails to load at run time, or a
score that raises, makes frames *not live*, never live: the door stays locked and says why
in its log, rather than silently opening without the check.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.config import LivenessConfig
from device.errors import FacegateError
from device.vision.interpreter import InterpreterFactory
from device.vision.liveness import LivenessModel

log = logging.getLogger(__name__)

_CUE_WORDS = {"blink": ", and a blink", "head_turn": ", and a head turn",
              "either": ", and a blink or a head turn"}

# A model's name ("" for the default one) -> the loaded model.
LivenessLoader = Callable[[str], LivenessModel]


@dataclass(frozen=True)
class LivenessSettings:
    """``[liveness]`` as the check uses it: ``threshold`` and ``votes_needed`` of None take
    the model card's; ``model`` "" is the default liveness model. ``motion_cue`` ("off",
    "blink", "head_turn", "either") and its two limits are for the door's tracks."""

    enabled: bool = True
    model: str = ""
    threshold: float | None = None
    votes_needed: int | None = None
    motion_cue: str = "off"
    head_turn_parallax: float = 0.2
    blink_drop: float = 0.6

    @classmethod
    def from_config(cls, config: LivenessConfig) -> LivenessSettings:
        return cls(enabled=config.enabled, model=config.model, threshold=config.threshold,
                   votes_needed=config.votes_needed, motion_cue=config.motion_cue,
                   head_turn_parallax=config.head_turn_parallax, blink_drop=config.blink_drop)


@dataclass(frozen=True)
class Liveness:
    """One face's verdict. ``score``: the model's probability that it is live (0..1), None
    when it could not be scored; ``live``: the score reached ``threshold``. A face that was
    scored and is not live is an *attack* vote; one that could not be scored is neither."""

    score: float | None
    live: bool
    threshold: float | None

    @property
    def attack(self) -> bool:
        return self.score is not None and not self.live


def attack_sentence(liveness: Liveness | None) -> str:
    """What a face judged not live is told (the ``attack`` event's reason, the refusal of a
    captured frame), e.g. "looks like a photo or a screen, not a live face (liveness 0.03)"."""
    if liveness is None or liveness.score is None:
        return "the liveness check could not judge this face, so it is not taken as live"
    return f"looks like a photo or a screen, not a live face (liveness {liveness.score:.2f})"


def liveness_loader(models_dir: Path | None = None, *,
                    interpreter_factory: InterpreterFactory | None = None) -> LivenessLoader:
    """Loads liveness models from ``models_dir`` (None: the project's ``models/``)."""
    def load(name: str) -> LivenessModel:
        return LivenessModel.by_name(name, models_dir, interpreter_factory=interpreter_factory)

    return load


class LivenessCheck:
    """The configured liveness rule, with its model loaded lazily and at most once.

    Not thread-safe, as the TFLite interpreter under it is not: one check per thread, or
    hold a lock around :meth:`judge` (the web page holds its pipeline lock).
    """

    def __init__(self, load: LivenessLoader, settings: LivenessSettings | None = None) -> None:
        self._load = load
        self.settings = settings or LivenessSettings()
        self._model: LivenessModel | None = None
        self._loaded_name: str | None = None  # the name the model was loaded by
        self._failed: str | None = None  # why loading it failed (until the settings change)
        self._scoring_failed = False  # a scoring error was already logged

    @classmethod
    def with_model(cls, model: LivenessModel,
                   settings: LivenessSettings | None = None) -> LivenessCheck:
        """A check with its model already loaded (by the name in ``settings``)."""
        check = cls(lambda name: model, settings)
        check._model, check._loaded_name = model, check.settings.model
        return check

    # -- settings ---------------------------------------------------------------------------

    def configure(self, settings: LivenessSettings) -> None:
        """New settings (the settings page); another model is loaded when next needed."""
        if settings == self.settings:
            return
        if settings.model != self._loaded_name:
            self._model, self._loaded_name = None, None
        self.settings, self._failed = settings, None

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    # -- the model --------------------------------------------------------------------------

    def require(self) -> LivenessModel:
        """The model, loaded now if it is not yet; raises :class:`FacegateError` with one
        sentence when it cannot be (the daemon then refuses to start)."""
        if self._model is None or self._loaded_name != self.settings.model:
            name = self.settings.model
            try:
                self._model = self._load(name)
            except Exception as exc:  # a missing card, a damaged file, an interpreter error
                self._model, self._loaded_name = None, None
                self._failed = str(exc) or type(exc).__name__
                raise FacegateError(
                    f"the liveness model {name or '(the default)'} cannot be loaded: "
                    f"{self._failed}; fix liveness.model, or set liveness.enabled = false to "
                    "run the door without presentation-attack detection") from None
            self._loaded_name = name
        return self._model

    @property
    def model(self) -> LivenessModel | None:
        """The loaded model, loading it on first use; None when the check is off or the
        model failed to load (logged once, and not tried again until the settings change)."""
        if not self.enabled:
            return None
        if self._failed is not None:
            return None
        try:
            return self.require()
        except FacegateError as error:
            log.error("%s. Until then no face counts as live: the door stays locked", error)
            return None

    @property
    def model_name(self) -> str | None:
        """The loaded model's name (None: none loaded); never loads one."""
        return None if self._model is None else self._model.name

    @property
    def threshold(self) -> float | None:
        """The score a live face reaches: ``liveness.threshold``, else the card's; None when
        there is no model."""
        if self.settings.threshold is not None:
            return self.settings.threshold
        model = self.model
        return None if model is None else model.threshold

    def votes_needed(self, window: int) -> int:
        """K: live frames a track needs among its last ``window``; ``liveness.votes_needed``,
        else the card's, at most ``window`` (a card asking for more could never open)."""
        wanted = self.settings.votes_needed
        if wanted is None:
            model = self.model
            wanted = model.votes_needed if model is not None else window
        return max(1, min(wanted, window))

    def describe(self, window: int) -> str:
        """For the daemon's log: the model, its threshold, the votes it needs and the
        motion cue, if any ("... 2 of 3 frames, and a head turn)")."""
        if not self.enabled:
            return "liveness off"
        model = self.model
        if model is None:
            return "liveness model not loaded: nobody is let in"
        cue = _CUE_WORDS.get(self.settings.motion_cue, "")
        return (f"liveness {model.name} (live at >= {self.threshold:.3f}, "
                f"{self.votes_needed(window)} of {window} frames{cue})")

    # -- judging ----------------------------------------------------------------------------

    def judge(self, frame_bgr: np.ndarray, box: np.ndarray | list[float]) -> Liveness:
        """Whether the face in ``box`` (x1, y1, x2, y2, frame pixels) is live. A model that
        is missing or raises gives ``Liveness(None, False, ...)``: not live (logged)."""
        model = self.model
        threshold = self.threshold
        if model is None or threshold is None:
            return Liveness(None, False, threshold)
        try:
            score = model.score(frame_bgr, box)
        except Exception:  # the frame counts as not live; the door stays locked
            if not self._scoring_failed:
                log.exception("liveness scoring failed: the face counts as not live")
                self._scoring_failed = True
            return Liveness(None, False, threshold)
        self._scoring_failed = False
        return Liveness(score, score >= threshold, threshold)
