"""Decompression bombs, written byte by byte: small files that would decode to gigabytes.

The pixels are never allocated: the PNG's rows of zeros are fed to zlib a block at a time,
so building the 30000x30000 bomb costs a few megabytes and about two seconds (once per
process: it is cached).
"""

from __future__ import annotations

import struct
import zlib
from functools import cache

BOMB_SIDE = 30_000  # 900 megapixels: 900 MB as grey, 2.7 GB as BGR; 875 KB as a PNG


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@cache
def png_bomb(width: int = BOMB_SIDE, height: int = BOMB_SIDE) -> bytes:
    """A valid 8-bit greyscale PNG of ``width`` x ``height`` black pixels."""
    row = b"\x00" * (width + 1)  # filter type 0, then the row's pixels
    rows_per_block = max(1, (8 << 20) // len(row))
    block = row * rows_per_block
    deflate = zlib.compressobj(9)
    parts, left = [], height
    while left:
        rows = min(rows_per_block, left)
        parts.append(deflate.compress(block if rows == rows_per_block else row * rows))
        left -= rows
    parts.append(deflate.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8 bits, greyscale
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", b"".join(parts))
            + _chunk(b"IEND", b""))
