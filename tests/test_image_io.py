"""Bad files give one clear error naming the file; good files decode."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from device.errors import ImageUnreadable
from device.vision.image_io import MAX_PIXELS, decode_image, read_image
from tests.conftest import DATA


def test_reads_a_jpeg_and_hashes_its_bytes():
    path = next((DATA / "strangers").glob("*.jpg"))
    image, sha256 = read_image(path)
    assert image.ndim == 3 and image.shape[2] == 3
    assert len(sha256) == 64


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "empty"),
        (b"this is a text file, not a photo", "not an image"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 64, "not an image"),  # a JPEG header and nothing else
    ],
)
def test_bad_bytes_give_a_clear_error(tmp_path, content, words):
    path = tmp_path / "upload.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageUnreadable, match=words) as raised:
        read_image(path)
    assert str(path) in str(raised.value)


def test_a_truncated_jpeg_is_refused_or_decodes_partially_never_crashes(tmp_path):
    data = (next((DATA / "strangers").glob("*.jpg"))).read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 3])
    try:
        image, _ = read_image(path)
    except ImageUnreadable:
        return
    assert image.shape[0] > 0  # libjpeg fills the missing rows with grey


def test_missing_file_and_folder_are_named(tmp_path):
    with pytest.raises(ImageUnreadable, match="no such file"):
        read_image(tmp_path / "absent.jpg")
    with pytest.raises(ImageUnreadable, match="folder"):
        read_image(tmp_path)


def test_an_image_over_the_pixel_limit_is_refused_before_decoding():
    side = int(MAX_PIXELS ** 0.5) + 64
    ok, png = cv2.imencode(".png", np.zeros((side, side), np.uint8))
    assert ok
    with pytest.raises(ImageUnreadable, match="too large"):
        decode_image(png.tobytes(), "huge.png")
