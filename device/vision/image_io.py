"""Reading images from files and uploads, with one clear error for every way they go wrong.

Every image that comes in (a web or API upload, a CLI argument, a replay camera's file) goes
through :func:`decode_image`, which reads the size from the file's header *before* OpenCV
decodes anything: a "decompression bomb" (an 875 KB PNG of 30000x30000 grey pixels) would
otherwise be decoded before its size could be judged (900 MB as grey; decoded as BGR, a 5 GB
peak measured by ``bench/bench_upload_checks.py``), and on a Pi the kernel's OOM killer
would take the door with it. The header is parsed here by hand, because cv2 gives no size
without decoding and Pillow (which could) is not a dependency; and only the formats the
project accepts are let through to OpenCV: JPEG, PNG, WebP, BMP, PGM/PPM (PBM too) and TIFF.
Others OpenCV 5 could decode (GIF, AVIF, HDR, EXR, PFM, PAM, Sun raster) are refused, so
that their decoders are never exposed to an upload. The check costs a few microseconds and
no memory, against a full decode's milliseconds and megabytes (the same bench).

Files are read through :func:`read_file`, which refuses what is not a regular file (a device
such as /dev/zero, a pipe) and reads at most ``MAX_FILE_BYTES`` + 1 bytes.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import struct
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from device.errors import ImageTooLarge, ImageUnreadable

# The most pixels an image may have before OpenCV allocates it: 40 megapixels is a modern
# phone's photo with room to spare; decoded as BGR it is 120 MB. The web page takes its limit
# from MAX_UPLOAD_PIXELS (this by default); the CLI and the replay camera use this.
MAX_PIXELS = 40_000_000

# The most bytes read from one image file (CLI, replay camera): a 40-megapixel JPEG is
# 10-20 MB, an uncompressed one could reach 120 MB but no camera or phone writes those.
MAX_FILE_BYTES = 50_000_000

ACCEPTED = "JPEG, PNG, WebP, BMP, PGM/PPM or TIFF"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG frame headers (SOF0-SOF15 but DHT C4, JPG C8 and DAC CC): they carry the size.
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE,
                       0xCF})
_JPEG_PARAMETERLESS = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: no length field
_JPEG_NEXT_MARKER = re.compile(rb"[^\xff]*\xff+([^\xff])", re.S)  # as libjpeg: skip to it
_JPEG_MAX_SEGMENTS = 10_000  # a photo has a few dozen before its frame header
_PNM_KINDS = (b"1", b"2", b"3", b"4", b"5", b"6")  # P1-P6; P7 (PAM) is not accepted
_PNM_NUMBER = re.compile(rb"[0-9]{1,10}")
_PNM_HEADER_BYTES = 65536  # comments longer than this are not a photo's header
_TIFF_WIDTH, _TIFF_LENGTH, _TIFF_TILE_WIDTH, _TIFF_TILE_LENGTH = 256, 257, 322, 323
_TIFF_MAX_ENTRIES = 4096
_TIFF_TILE_SLACK = 1 << 20  # tiles may exceed a small image (256x256 tiles of a 100x100)


class _Short(Exception):
    """The header ends (or points) past the end of the data."""


def image_size(data: bytes, label: str = "image") -> tuple[int, int]:
    """(width, height) in pixels read from the header of ``data``, decoding no pixels.

    Raises ``ImageUnreadable`` naming ``label`` when the format is not one the project
    accepts (JPEG, PNG, WebP, BMP, PGM/PPM, TIFF) or the header is corrupt or cut short.
    The size is the stored one: a JPEG's EXIF rotation may swap it when decoded.
    """
    found = _parser_for(data)
    if found is None:
        raise ImageUnreadable(f"{label}: not an image facegate can read (it reads {ACCEPTED})")
    kind, parser = found
    try:
        width, height = parser(data)
    except (_Short, struct.error):
        raise ImageUnreadable(f"{label}: not an image facegate can read (its {kind} header "
                              f"is cut short)") from None
    except ValueError as exc:
        raise ImageUnreadable(f"{label}: not an image facegate can read (its {kind} header "
                              f"is corrupt: {exc})") from None
    if width <= 0 or height <= 0:
        raise ImageUnreadable(f"{label}: not an image facegate can read (its {kind} header "
                              f"says {width}x{height} pixels)")
    return width, height


def check_size(data: bytes, label: str = "image", *,
               max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """The header's (width, height), or ``ImageTooLarge`` when over ``max_pixels``."""
    width, height = image_size(data, label)
    if width * height > max_pixels:
        raise ImageTooLarge(f"{label}: image too large ({width}x{height} pixels, limit "
                            f"{max_pixels / 1e6:g} megapixels)")
    return width, height


def decode_image(data: bytes, label: str = "image", *,
                 max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode image bytes to a BGR uint8 array; ``ImageUnreadable`` names ``label`` on failure.

    The header is checked first (:func:`check_size`): an image of more than ``max_pixels``
    is refused with ``ImageTooLarge`` before OpenCV allocates anything for it.
    """
    if not data:
        raise ImageUnreadable(f"{label}: the file is empty")
    check_size(data, label, max_pixels=max_pixels)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise ImageUnreadable(f"{label}: not an image OpenCV can decode (corrupt or truncated)")
    if image.shape[0] * image.shape[1] > max_pixels:  # a header that lied: never seen, cheap
        raise ImageTooLarge(f"{label}: image too large ({image.shape[1]}x{image.shape[0]})")
    return image


def read_file(path: str | Path, *, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes`` (else ``ImageTooLarge``).

    A device, pipe or socket is refused before reading (``/dev/zero`` would never end), and
    never more than ``max_bytes`` + 1 bytes are read, even from a file that grows meanwhile.
    """
    path = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO would otherwise wait for a writer; no effect on files.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ImageUnreadable(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageUnreadable(f"{path}: is a folder, not an image") from None
    except OSError as exc:
        raise ImageUnreadable(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ImageUnreadable(f"{path}: is a folder, not an image")
        if not stat.S_ISREG(info.st_mode):
            raise ImageUnreadable(f"{path}: not a regular file (a device, pipe or socket); "
                                  "give an image file")
        if info.st_size > max_bytes:
            raise _too_many_bytes(path, info.st_size, max_bytes)
        with open(fd, "rb", closefd=False) as file:
            data = file.read(max_bytes + 1)
    except OSError as exc:
        raise ImageUnreadable(f"{path}: cannot be read ({exc.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise _too_many_bytes(path, len(data), max_bytes)
    return data


def read_image(path: str | Path, *, max_pixels: int = MAX_PIXELS,
               max_bytes: int = MAX_FILE_BYTES) -> tuple[np.ndarray, str]:
    """Read an image file; returns the BGR array and the SHA-256 of the file's bytes.

    At most ``max_bytes`` are read and at most ``max_pixels`` decoded (see :func:`read_file`
    and :func:`decode_image`).
    """
    data = read_file(path, max_bytes=max_bytes)
    return decode_image(data, str(path), max_pixels=max_pixels), hashlib.sha256(data).hexdigest()


def _too_many_bytes(path: Path, size: int, limit: int) -> ImageTooLarge:
    return ImageTooLarge(f"{path}: file too large ({size / 1e6:.1f} MB or more, limit "
                         f"{limit / 1e6:g} MB)")


# --- header parsers: each returns (width, height), raises _Short or ValueError -----------------


def _parser_for(data: bytes) -> tuple[str, Callable[[bytes], tuple[int, int]]] | None:
    """The format's name and header parser, told by the signature as OpenCV tells it."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG", _jpeg_size
    if data.startswith(_PNG_SIGNATURE):
        return "PNG", _png_size
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP", _webp_size
    if data.startswith(b"BM"):
        return "BMP", _bmp_size
    if data[:1] == b"P" and data[1:2] in _PNM_KINDS and data[2:3].isspace():
        return "PGM/PPM", _pnm_size
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF", _tiff_size
    return None


def _take(data: bytes, offset: int, length: int) -> bytes:
    if offset < 0 or offset + length > len(data):
        raise _Short
    return data[offset:offset + length]


def _jpeg_size(data: bytes) -> tuple[int, int]:
    # Walk the markers as libjpeg does (bytes between segments are skipped to the next 0xFF,
    # fill bytes 0xFF are allowed) up to the first frame header, which holds the size; the
    # EXIF thumbnail's own frame header is inside APP1 and skipped with it.
    offset = 2
    for _ in range(_JPEG_MAX_SEGMENTS):
        found = _JPEG_NEXT_MARKER.match(data, offset)
        if found is None:
            raise _Short
        marker, offset = found[1][0], found.end()
        if marker == 0x00 or marker in _JPEG_PARAMETERLESS:
            continue
        if marker in (0xD8, 0xD9, 0xDA):
            raise ValueError("no frame header before the image data")
        (length,) = struct.unpack(">H", _take(data, offset, 2))
        if length < 2:
            raise ValueError(f"a segment of length {length}")
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", _take(data, offset + 3, 4))
            if height == 0:
                raise ValueError("the height is given after the image (DNL), not supported")
            return width, height
        offset += length
    raise ValueError(f"more than {_JPEG_MAX_SEGMENTS} segments before the frame header")


def _png_size(data: bytes) -> tuple[int, int]:
    length, kind, width, height = struct.unpack(">I4sII", _take(data, 8, 16))
    if kind != b"IHDR" or length != 13:
        raise ValueError("the first chunk is not IHDR")
    if width > 0x7FFFFFFF or height > 0x7FFFFFFF:
        raise ValueError("a size over 2^31 - 1")
    return width, height


def _webp_size(data: bytes) -> tuple[int, int]:
    kind = _take(data, 12, 4)
    body = _take(data, 20, 10)
    if kind == b"VP8 ":  # lossy: a key frame's start code, then 14-bit sizes
        if body[3:6] != b"\x9d\x01\x2a":
            raise ValueError("no VP8 key frame")
        width, height = struct.unpack("<HH", body[6:10])
        return width & 0x3FFF, height & 0x3FFF
    if kind == b"VP8L":  # lossless: a signature byte, then 14-bit sizes less one
        if body[0] != 0x2F:
            raise ValueError("no VP8L signature")
        (bits,) = struct.unpack("<I", body[1:5])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8X":  # extended: the canvas, 24-bit sizes less one
        return (int.from_bytes(body[4:7], "little") + 1,
                int.from_bytes(body[7:10], "little") + 1)
    raise ValueError(f"an unknown first chunk {kind!r}")


def _bmp_size(data: bytes) -> tuple[int, int]:
    (header,) = struct.unpack("<I", _take(data, 14, 4))
    if header == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        return struct.unpack("<HH", _take(data, 18, 4))
    if header < 16:
        raise ValueError(f"a {header}-byte info header")
    width, height = struct.unpack("<ii", _take(data, 18, 8))
    return width, abs(height)  # a negative height is a top-down bitmap


def _pnm_size(data: bytes) -> tuple[int, int]:
    # Whitespace and "#" comments (to the end of the line) may come before each number, as
    # OpenCV's reader allows; parsed by hand, as a regular expression over comments
    # backtracks badly on a crafted header.
    header = data[:_PNM_HEADER_BYTES]
    offset, numbers = 2, []
    while len(numbers) < 2:
        while offset < len(header) and (header[offset:offset + 1].isspace()
                                        or header[offset] == ord("#")):
            if header[offset] == ord("#"):
                ends = [end for end in (header.find(b"\n", offset), header.find(b"\r", offset))
                        if end >= 0]
                offset = min(ends) if ends else len(header)
            else:
                offset += 1
        number = _PNM_NUMBER.match(header, offset)
        if number is None or number.end() >= len(header):
            if len(header) < _PNM_HEADER_BYTES:
                raise _Short
            raise ValueError("no width and height in the first 64 KB")
        numbers.append(int(number[0]))
        offset = number.end()
    return numbers[0], numbers[1]


def _tiff_size(data: bytes) -> tuple[int, int]:
    # The first directory (the one OpenCV decodes): ImageWidth and ImageLength, and the tile
    # size, which OpenCV allocates too (a 16x16 image with 16384x16384 tiles is a bomb).
    order = "<" if data[:2] == b"II" else ">"
    big = struct.unpack(order + "H", _take(data, 2, 2))[0] == 43
    if big:
        if struct.unpack(order + "HH", _take(data, 4, 4)) != (8, 0):
            raise ValueError("a BigTIFF with offsets not 8 bytes wide")
        (directory,) = struct.unpack(order + "Q", _take(data, 8, 8))
        (count,) = struct.unpack(order + "Q", _take(data, directory, 8))
        entry_size, first, count_format, value_at = 20, directory + 8, "Q", 12
    else:
        (directory,) = struct.unpack(order + "I", _take(data, 4, 4))
        (count,) = struct.unpack(order + "H", _take(data, directory, 2))
        entry_size, first, count_format, value_at = 12, directory + 2, "I", 8
    if count > _TIFF_MAX_ENTRIES:
        raise ValueError(f"{count} directory entries")
    tags: dict[int, int] = {}
    formats = {3: "H", 4: "I", 16: "Q"}  # SHORT, LONG, LONG8
    for number in range(count):
        entry = _take(data, first + number * entry_size, entry_size)
        tag, kind = struct.unpack(order + "HH", entry[:4])
        values = struct.unpack(order + count_format, entry[4:value_at])[0]
        if tag in (_TIFF_WIDTH, _TIFF_LENGTH, _TIFF_TILE_WIDTH, _TIFF_TILE_LENGTH):
            if kind not in formats or values < 1:
                raise ValueError(f"tag {tag} is not a number")
            size = struct.calcsize(formats[kind])
            tags[tag] = struct.unpack(order + formats[kind], entry[value_at:value_at + size])[0]
    if _TIFF_WIDTH not in tags or _TIFF_LENGTH not in tags:
        raise ValueError("no ImageWidth or ImageLength")
    width, height = tags[_TIFF_WIDTH], tags[_TIFF_LENGTH]
    tile = tags.get(_TIFF_TILE_WIDTH, 1) * tags.get(_TIFF_TILE_LENGTH, 1)
    if tile > max(width * height, _TIFF_TILE_SLACK):
        raise ValueError("tiles larger than the image")
    return width, height
