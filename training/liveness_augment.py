"""Augmentation for liveness fine-tuning: what differs between doors, not between attacks.

Each training crop is cut from the whole photo with a jittered box (scale and position), then
changed the way another camera, light or compression would change it: colour (brightness,
contrast, hue, saturation), blur, JPEG quality, a left-right flip. None of these turns a live
face into an attack or back, so the network cannot use them to tell the classes apart.

:func:`screen_replay` is the one augmentation that makes a new *attack* out of a bona fide
photo: pad-dev has no screen replays, and the door must refuse them. A screen shown to a
camera leaves a periodic sub-pixel pattern that aliases into moiré, a flattened tone curve,
a colour cast and glare; the synthetic version adds those to a live photo before the crop.
"""

from __future__ import annotations

import cv2
import numpy as np

from device.vision.liveness import liveness_crop


def jittered_box(box: tuple[float, float, float, float], rng: np.random.Generator,
                 *, scale: float = 0.15, shift: float = 0.08) -> list[float]:
    """The detector's box, grown or shrunk by up to ``scale`` and moved by up to ``shift`` of
    its size: BlazeFace's boxes wander that much from frame to frame at the door."""
    x1, y1, x2, y2 = box
    width, height = x2 - x1, y2 - y1
    factor = 1.0 + rng.uniform(-scale, scale)
    cx = (x1 + x2) / 2 + rng.uniform(-shift, shift) * width
    cy = (y1 + y2) / 2 + rng.uniform(-shift, shift) * height
    half_w, half_h = width * factor / 2, height * factor / 2
    return [cx - half_w, cy - half_h, cx + half_w, cy + half_h]


def photometric(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour, blur and JPEG changes of an 80x80 BGR crop (uint8 in, uint8 out)."""
    image = crop.astype(np.float32)
    if rng.random() < 0.8:  # brightness and contrast
        image = (image - 128.0) * rng.uniform(0.75, 1.25) + 128.0 + rng.uniform(-25, 25)
    image = np.clip(image, 0, 255).astype(np.uint8)
    if rng.random() < 0.6:  # hue and saturation, in OpenCV's HSV (hue 0..179)
        hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV).astype(np.int16)
        hsv[..., 0] = (hsv[..., 0] + rng.integers(-8, 9)) % 180
        hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.7, 1.3), 0, 255)
        image = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)
    if rng.random() < 0.3:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 1.2))
    if rng.random() < 0.25:  # a lower-resolution camera: down and back up
        side = int(rng.integers(28, 64))
        image = cv2.resize(cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA),
                           crop.shape[1::-1], interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.25:  # sensor noise
        noise = rng.normal(0.0, rng.uniform(2.0, 8.0), image.shape)
        image = np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        quality = int(rng.integers(35, 96))
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            image = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    if rng.random() < 0.5:
        image = image[:, ::-1]
    return np.ascontiguousarray(image)


def screen_replay(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A live photo as if shown on a monitor or phone and filmed: sub-pixel grid (which the
    later resize aliases into moiré), a flatter tone curve, a colour cast, a glare gradient."""
    height, width = photo.shape[:2]
    image = photo.astype(np.float32) / 255.0
    # The display's pixel grid, slightly rotated to the camera: RGB stripes of a few pixels.
    period = rng.uniform(2.2, 4.5)
    angle = rng.uniform(-0.25, 0.25)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    along = (xs * np.cos(angle) + ys * np.sin(angle)) / period
    depth = rng.uniform(0.12, 0.35)
    for channel, phase in zip((2, 1, 0), (0.0, 1 / 3, 2 / 3), strict=True):  # R, G, B stripes
        stripe = 0.5 + 0.5 * np.cos(2 * np.pi * (along - phase))
        image[..., channel] *= 1.0 - depth + depth * stripe
    rows = 0.5 + 0.5 * np.cos(2 * np.pi * ys / rng.uniform(2.2, 4.5))  # the row gaps
    image *= (1.0 - depth / 2 + depth / 2 * rows)[..., None]
    # A display's tone: raised blacks, softer contrast, a cool or warm white point.
    image = rng.uniform(0.03, 0.12) + image * rng.uniform(0.75, 0.95)
    image *= rng.uniform(0.9, 1.1, size=3).astype(np.float32)
    # Glare: a soft bright blob somewhere on the glass.
    centre = rng.uniform(0, 1, size=2) * (width, height)
    radius = rng.uniform(0.3, 0.8) * max(width, height)
    glare = np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * radius ** 2))
    image += rng.uniform(0.0, 0.25) * glare[..., None]
    return np.clip(image * 255.0, 0, 255).astype(np.uint8)


def training_crop(photo: np.ndarray, box: tuple[float, float, float, float], crop_scale: float,
                  rng: np.random.Generator) -> np.ndarray:
    """One augmented 80x80 crop of the photo's face, as the network is trained on it."""
    return photometric(liveness_crop(photo, jittered_box(box, rng), crop_scale), rng)
