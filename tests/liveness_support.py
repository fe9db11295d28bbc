"""pad-dev photos the liveness tests use, read from ../shared (never copied into the project).

All come from the held-apart test part of ``training/liveness_data.py``'s split, which no
liveness model of ours was trained or tuned on. ``make eval-liveness`` measures every photo;
these few are the ones the tests replay through the CLI and the door.
"""

from __future__ import annotations

from pathlib import Path

import pytest

PAD_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "pad-dev"

BONA_FIDE = ["bona/real_1600335531.jpg", "bona/real_1600335535.jpg",
             "bona/real_1597925197.jpg"]
PRINT_ATTACKS = ["attack/print_1379.jpg", "attack/print_1380.jpg", "attack/print_1415.jpg"]

needs_pad_dev = pytest.mark.skipif(
    not PAD_DEV.is_dir(), reason=f"{PAD_DEV} is missing (the project's shared data, see "
                                 "../shared/data/README.md)")


def pad_dev(name: str) -> Path:
    return PAD_DEV / name
