"""Bad files give one clear error naming the file; good files decode."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tracemalloc

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.errors import ImageTooLarge, ImageUnreadable
from device.vision.image_io import (
    MAX_PIXELS,
    check_size,
    decode_image,
    image_size,
    read_file,
    read_image,
)
from tests.conftest import DATA
from tests.image_bombs import BOMB_SIDE, png_bomb

REAL_IMAGES = sorted(path for path in DATA.rglob("*")
                     if path.suffix in {".jpg", ".png"} and "train-mini" not in path.parts)
# (extension, encoder flags, channels) for every format the project accepts.
FORMATS = [(".jpg", [], 3), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1], 1), (".png", [], 3),
           (".png", [], 1), (".webp", [], 3), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101], 3),
           (".bmp", [], 3), (".bmp", [], 1), (".pgm", [], 1), (".ppm", [], 3),
           (".pgm", [cv2.IMWRITE_PXM_BINARY, 0], 1), (".tiff", [], 3), (".tiff", [], 1)]


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


# --- The header is judged before anything is decoded ---------------------------------------


def test_a_png_bomb_is_refused_by_its_header_without_allocating_the_image():
    bomb = png_bomb()
    assert len(bomb) < 1_000_000
    tracemalloc.start()
    try:
        with pytest.raises(ImageTooLarge, match=f"{BOMB_SIDE}x{BOMB_SIDE} pixels, limit 40 "):
            decode_image(bomb, "bomb.png")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100_000  # bytes: the decoded image would be 900,000,000


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux's /proc")
def test_a_png_bomb_does_not_raise_the_peak_memory_of_a_process(tmp_path):
    # tracemalloc sees Python's allocations only; the peak resident size sees OpenCV's too.
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across fork and exec, so the child would
    # report pytest's own peak.
    script = textwrap.dedent("""
        import sys
        from device.errors import ImageTooLarge
        from device.vision.image_io import read_image

        def peak():
            with open("/proc/self/status") as status:
                return next(int(line.split()[1]) for line in status
                            if line.startswith("VmHWM:"))

        before = peak()
        try:
            read_image(sys.argv[1])
        except ImageTooLarge as refused:
            print(refused, file=sys.stderr)
        else:
            sys.exit("the bomb was decoded")
        print(peak() - before)
    """)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb())
    result = subprocess.run([sys.executable, "-c", script, str(bomb)], capture_output=True,
                            text=True, timeout=120, cwd=DATA.parents[1])
    assert result.returncode == 0, result.stderr
    assert "image too large" in result.stderr
    assert int(result.stdout) < 20_000  # KiB of peak growth, against 900,000 KiB decoded


def test_the_pixel_limit_is_the_callers():
    data = cv2.imencode(".png", np.zeros((100, 200), np.uint8))[1].tobytes()
    assert check_size(data, "small.png", max_pixels=20_000) == (200, 100)
    with pytest.raises(ImageTooLarge, match=r"small.png: image too large \(200x100 pixels, "
                                            r"limit 0.01 megapixels\)"):
        decode_image(data, "small.png", max_pixels=10_000)


@pytest.mark.parametrize(("content", "words"), [
    (b"GIF89a\x08\x00\x08\x00\x00\x00\x00;", "it reads JPEG, PNG"),  # not accepted
    (b"P7\nWIDTH 8\nHEIGHT 8\n", "it reads"),  # PAM: OpenCV reads it, we do not
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR", "cut short"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x00\x00\x00\x00\x00\x01", "0x1"),
    (b"\xff\xd8\xff\xda\x00\x08", "no frame header"),
    (b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x00\x01\x00", "DNL"),
    (b"BM" + bytes(12) + b"\x05\x00\x00\x00", "corrupt"),
    (b"II*\x00\x08\x00\x00\x00\x00\x00", "no ImageWidth"),
])
def test_a_header_that_cannot_be_parsed_is_refused_in_one_sentence(content, words):
    with pytest.raises(ImageUnreadable, match=words) as refused:
        image_size(content, "upload")
    message = str(refused.value)
    assert message.startswith("upload: not an image facegate can read") and "\n" not in message


@pytest.mark.parametrize(("extension", "flags", "channels"), FORMATS)
def test_the_header_size_of_every_accepted_format_is_the_decoded_size(extension, flags,
                                                                      channels):
    image = np.random.default_rng(7).integers(0, 255, (37, 61, channels), np.uint8)
    data = cv2.imencode(extension, image, flags)[1].tobytes()
    assert image_size(data) == (61, 37)
    assert decode_image(data).shape[:2] == (37, 61)


def test_read_file_refuses_devices_pipes_and_files_over_the_byte_limit(tmp_path):
    with pytest.raises(ImageUnreadable, match="/dev/zero: not a regular file"):
        read_file("/dev/zero")
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer without O_NONBLOCK
    with pytest.raises(ImageUnreadable, match="not a regular file"):
        read_image(fifo)
    big = tmp_path / "big.jpg"
    big.write_bytes(bytes(1001))
    with pytest.raises(ImageTooLarge, match=r"file too large \(0.0 MB or more, limit 0.001 MB"):
        read_file(big, max_bytes=1000)
    assert read_file(big, max_bytes=1001) == bytes(1001)


# --- Property-based: the parser never fails other than in a named sentence ---------------------


_SIGNATURES = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF\x00\x00\x00\x00WEBP", b"BM",
               b"P5\n", b"P6 ", b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"]
_PROPERTY = settings(max_examples=300, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])


def _sized_or_refused(data: bytes) -> tuple[int, int] | None:
    try:
        width, height = image_size(data, "x")
    except ImageUnreadable as refused:
        assert str(refused).startswith("x: ")
        return None
    assert isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0
    return width, height


@_PROPERTY
@given(st.binary(max_size=600))
def test_random_bytes_are_sized_or_refused_never_crash(data):
    _sized_or_refused(data)


@_PROPERTY
@given(st.sampled_from(_SIGNATURES), st.binary(max_size=300))
def test_random_bytes_behind_a_real_signature_are_sized_or_refused(signature, tail):
    _sized_or_refused(signature + tail)


@st.composite
def _mutated(draw) -> bytes:
    """A real image (from tests/data, or one encoded in an accepted format) with a few bytes
    of its first kilobyte changed, bytes inserted or deleted, then cut short somewhere."""
    if draw(st.booleans()):
        data = bytearray(draw(st.sampled_from(REAL_IMAGES)).read_bytes())
    else:
        extension, flags, channels = draw(st.sampled_from(FORMATS))
        data = bytearray(cv2.imencode(extension, np.full((24, 40, channels), 128, np.uint8),
                                      flags)[1].tobytes())
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, min(len(data), 1024) - 1))
        action = draw(st.sampled_from(["set", "insert", "delete"]))
        if action == "set":
            data[at] = draw(st.integers(0, 255))
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif len(data) > 1:
            del data[at]
    return bytes(data[:draw(st.integers(0, len(data)))])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated())
def test_mutated_and_truncated_real_images_decode_or_are_refused_by_name(data):
    size = _sized_or_refused(data)
    try:
        image = decode_image(data, "x", max_pixels=4_000_000)
    except ImageUnreadable as refused:  # ImageTooLarge among them
        assert str(refused).startswith("x: ")
        return
    assert size is not None and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[0] * image.shape[1] <= 4_000_000


@st.composite
def _encoded(draw) -> tuple[bytes, int, int]:
    extension, flags, channels = draw(st.sampled_from(FORMATS))
    width, height = draw(st.integers(1, 300)), draw(st.integers(1, 300))
    seed = draw(st.integers(0, 2**32 - 1))
    image = np.random.default_rng(seed).integers(0, 255, (height, width, channels), np.uint8)
    ok, encoded = cv2.imencode(extension, image, flags)
    assert ok
    return encoded.tobytes(), width, height


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_encoded())
def test_the_parsed_size_of_a_valid_image_is_the_size_opencv_decodes(encoded):
    data, width, height = encoded
    assert image_size(data) == (width, height)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8),
                           cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    assert decoded.shape[:2] == (height, width)


@pytest.mark.parametrize("path", REAL_IMAGES, ids=lambda path: path.name)
def test_the_parsed_size_of_each_real_image_is_the_size_opencv_decodes(path):
    data = path.read_bytes()
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8),
                           cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    assert image_size(data) == (decoded.shape[1], decoded.shape[0])
