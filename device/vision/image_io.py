"""Reading images from files and uploads, with one clear error for every way they go wrong."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np

from device.errors import ImageUnreadable

# A decoded image bigger than this is refused before OpenCV allocates it (a "decompression
# bomb" is a few kilobytes of PNG that decodes to gigabytes).
MAX_PIXELS = 40_000_000


def decode_image(data: bytes, label: str = "image") -> np.ndarray:
    """Decode image bytes to a BGR uint8 array; ``ImageUnreadable`` names ``label`` on failure."""
    if not data:
        raise ImageUnreadable(f"{label}: the file is empty")
    buffer = np.frombuffer(data, np.uint8)
    # A 1/8-scale decode is cheap and tells the size before the full image is allocated.
    preview = cv2.imdecode(buffer, cv2.IMREAD_REDUCED_GRAYSCALE_8)
    if preview is None:
        raise ImageUnreadable(f"{label}: not an image OpenCV can decode (corrupt or wrong type)")
    if preview.shape[0] * preview.shape[1] * 64 > MAX_PIXELS:
        raise ImageUnreadable(f"{label}: image too large (about {preview.shape[1] * 8}x"
                              f"{preview.shape[0] * 8} pixels, limit "
                              f"{MAX_PIXELS // 1_000_000} megapixels)")
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise ImageUnreadable(f"{label}: not an image OpenCV can decode (corrupt or truncated)")
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise ImageUnreadable(f"{label}: image too large ({image.shape[1]}x{image.shape[0]})")
    return image


def read_image(path: str | Path) -> tuple[np.ndarray, str]:
    """Read an image file; returns the BGR array and the SHA-256 of the file's bytes."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageUnreadable(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageUnreadable(f"{path}: is a folder, not an image") from None
    except OSError as exc:
        raise ImageUnreadable(f"{path}: cannot be read ({exc.strerror})") from None
    return decode_image(data, str(path)), hashlib.sha256(data).hexdigest()

