"""What the admin page needs from the rest of the appliance, handed in by whoever serves it.

The daemon builds a ``Services`` with its real door, camera view and pipeline; tests build one
with their own parts (a door on gpiozero's mock pins, a live view fed from image files), or
leave parts out: a page whose part is missing says so instead of failing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from device.config import Config
from device.liveness import LivenessCheck, LivenessLoader, LivenessSettings, liveness_loader
from device.vision.pipeline import FacePipeline


class DoorControl(Protocol):
    """The door as the web page may drive it (``device.door.Door`` satisfies this)."""

    @property
    def state(self) -> str: ...  # "locked" | "unlocked" | "held_open"

    def manual_unlock(self, seconds: float | None = None, by: str | None = None) -> float: ...

    def hold_open_until(self, when: float) -> None: ...  # time.monotonic() scale

    def relock(self) -> None: ...


class LiveView(Protocol):
    """The door camera as the web page sees it."""

    def latest_jpeg(self) -> bytes | None:
        """The newest frame as JPEG with the detected faces boxed and labelled; None while
        the camera is down or before the first frame."""
        ...

    def latest_frame(self) -> np.ndarray | None:
        """The newest raw BGR frame (for enrolment by capture); None as above."""
        ...

    # Optional: ``frame_age_seconds`` (float | None), seconds since the newest frame
    # (``device.daemon.live.LiveFrames`` has it); a view without it counts as delivering.


@dataclass
class Services:
    database: Path  # the gallery + access log SQLite file
    snapshots: Path  # where the access log's JPEG snapshots live
    models_dir: Path | None = None  # None: the default models folder
    door: DoorControl | None = None
    live: LiveView | None = None
    # The daemon's configuration as loaded (file, environment, command line), before the site
    # settings: the settings page shows it as what applies when a setting is cleared, and
    # checks a change against it. None: the defaults.
    config: Config | None = None
    # The pipeline is loaded on first use and shared; TFLite interpreters are not
    # thread-safe, so every use holds ``pipeline_lock`` (waitress serves from several threads).
    pipeline_factory: Callable[[], FacePipeline] | None = None
    pipeline_lock: threading.Lock = field(default_factory=threading.Lock)
    _pipeline: FacePipeline | None = None
    # Loads the liveness model that frames captured for enrolment must pass (None: from
    # ``models_dir``); loaded on first use and used under ``pipeline_lock`` too.
    liveness_factory: LivenessLoader | None = None
    _liveness: LivenessCheck | None = None

    def liveness(self, settings: LivenessSettings) -> LivenessCheck | None:
        """The shared liveness check with ``settings`` (callers hold ``pipeline_lock``);
        None when the check is off."""
        if not settings.enabled:
            return None
        if self._liveness is None:
            self._liveness = LivenessCheck(
                self.liveness_factory or liveness_loader(self.models_dir), settings)
        self._liveness.configure(settings)
        return self._liveness

    def pipeline(self, model: str | None = None) -> FacePipeline:
        """The shared pipeline (callers hold ``pipeline_lock`` while using it), running
        ``model`` when given (the gallery's: it is reloaded when the gallery has moved to
        another model since), else whatever the factory or the default gives."""
        current = self._pipeline
        if current is not None and (model is None or current.model_name == model):
            return current
        if current is None and self.pipeline_factory is not None:
            current = self.pipeline_factory()
        if current is None or (model and current.model_name != model):
            current = FacePipeline.from_models_dir(self.models_dir, embedder=model)
        self._pipeline = current
        return current
