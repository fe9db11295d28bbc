"""Models by name: each ``NAME.tflite`` in the models directory travels with ``NAME.json``.

The card says how to feed the model and, for embedders, how to align faces for it and which
threshold to use, so a model trained by ``training/`` drops in beside the bundled ones and is
loaded by name without code changes.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from device.errors import ModelNotFound

DETECTOR = "face_detection_short_range"
LANDMARKS = "face_landmark"
# The dynamic-range int8 SFace with its depthwise weights in float, so XNNPACK runs every node:
# twice int8dr's speed at the same accuracy (models/README.md, "SFace with every node in
# XNNPACK"); the float16 file stays beside it as the reference. The integer file
# (face_recognition_sface_2021dec_int8) is as fast but less exact at the door's threshold. A
# gallery enrolled with another model keeps it until `facegate reembed`.
DEFAULT_EMBEDDER = "face_recognition_sface_2021dec_int8dr_xnnpack"
# MiniFASNetV2 and V1SE fine-tuned on pad-dev and fused (models/README.md, docs/liveness.md).
DEFAULT_LIVENESS = "liveness_minifasnet_fused_paddev_2026dec_float32"


def default_models_dir() -> Path:
    """``FACEGATE_MODELS`` if set, else ``models/`` beside the ``device`` package."""
    configured = os.environ.get("FACEGATE_MODELS")
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / "models"


@dataclass(frozen=True)
class ModelCard:
    name: str
    path: Path  # the .tflite file
    card: dict[str, Any]  # the JSON card as written

    @property
    def task(self) -> str:
        return self.card["task"]

    @property
    def threshold(self) -> dict[str, Any]:
        """The embedder's default open-set decision: ``{"score": .., "margin": .., ...}``."""
        return self.card.get("threshold", {})

    def companion(self, key: str) -> np.ndarray | None:
        """Load a numpy array the card names (a canonical mesh, a score-normalisation cohort)."""
        file_name = self.card.get("files", {}).get(key)
        return None if file_name is None else np.load(self.path.parent / file_name)

    def verify_sha256(self) -> bool:
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()
        return digest == self.card.get("sha256")


def load_card(name: str, models_dir: Path | None = None) -> ModelCard:
    models_dir = Path(models_dir) if models_dir else default_models_dir()
    model_path = models_dir / f"{name}.tflite"
    card_path = models_dir / f"{name}.json"
    if not model_path.is_file() or not card_path.is_file():
        available = ", ".join(sorted(p.stem for p in models_dir.glob("*.tflite"))) or "none"
        raise ModelNotFound(
            f"model {name!r} not found in {models_dir} (it needs {name}.tflite and {name}.json;"
            f" available: {available})"
        )
    return ModelCard(name, model_path, json.loads(card_path.read_text()))


def list_cards(models_dir: Path | None = None) -> list[ModelCard]:
    models_dir = Path(models_dir) if models_dir else default_models_dir()
    return [load_card(p.stem, models_dir) for p in sorted(models_dir.glob("*.tflite"))
            if p.with_suffix(".json").is_file()]
