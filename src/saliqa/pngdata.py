"""Two things about PNG files that Pillow does not do for saliqa: check that the image data fills every row,
and keep 16-bit colour samples.

Pillow decodes a PNG whose compressed data ends early (fewer rows than its header promises) without an
error, the missing rows black; :func:`rows_missing` counts the bytes the data inflates to against what the
header needs, so such a file is rejected as truncated instead. Pillow opens 16-bit RGB, RGBA and grey+alpha
PNGs as 8-bit modes by keeping each sample's high byte (1257 becomes 4 where round(1257 / 257) is 5);
:func:`read_sixteen_bit` reads their samples whole, with pypng (pure Python; such files are rare).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
"""Samples per pixel by PNG colour type (grey, RGB, palette, grey+alpha, RGBA)."""
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
"""Interlace passes: first column, first row, column step, row step."""
_CHUNK = 1 << 20


@dataclass(frozen=True)
class PngHeader:
    """The fields of a PNG's IHDR chunk that decide how much image data it needs."""

    width: int
    height: int
    bit_depth: int
    color_type: int
    interlaced: bool

    @property
    def sixteen_bit_colour(self) -> bool:
        """16-bit samples Pillow would cut to 8 (grey alone it reads whole, as mode ``I;16``)."""
        return self.bit_depth == 16 and self.color_type in (2, 4, 6)

    def data_size(self) -> int:
        """Bytes the image data must inflate to: every row of every pass with its filter byte."""
        bits = _CHANNELS.get(self.color_type, 1) * self.bit_depth
        passes = _ADAM7 if self.interlaced else ((0, 0, 1, 1),)
        total = 0
        for x0, y0, dx, dy in passes:
            columns = -(-(self.width - x0) // dx) if self.width > x0 else 0
            rows = -(-(self.height - y0) // dy) if self.height > y0 else 0
            if columns and rows:
                total += rows * (1 + -(-columns * bits // 8))
        return total


def read_header(path: str | Path) -> PngHeader | None:
    """The IHDR of the PNG at ``path`` (None when the file does not start like a PNG)."""
    with open(path, "rb") as f:
        head = f.read(33)
    if len(head) < 33 or not head.startswith(SIGNATURE) or head[12:16] != b"IHDR":
        return None
    width, height, bit_depth, color_type, _, _, interlace = struct.unpack(">IIBBBBB", head[16:29])
    return PngHeader(width, height, bit_depth, color_type, interlace == 1)


def _image_data(path: str | Path) -> Iterator[bytes]:
    """The image data stream (every IDAT chunk, in order), one chunk at a time."""
    with open(path, "rb") as f:
        f.seek(len(SIGNATURE))
        while True:
            head = f.read(8)
            if len(head) < 8:
                return
            length, kind = struct.unpack(">I4s", head)
            if kind == b"IDAT":
                yield f.read(length)
                f.seek(4, 1)  # its CRC
            elif kind == b"IEND":
                return
            else:
                f.seek(length + 4, 1)


def rows_missing(path: str | Path, header: PngHeader) -> bool:
    """Whether the image data inflates to fewer bytes than ``header`` needs (without keeping them)."""
    need, have = header.data_size(), 0
    inflater = zlib.decompressobj()
    try:
        for data in _image_data(path):
            while data and have < need:
                have += len(inflater.decompress(data, _CHUNK))
                data = inflater.unconsumed_tail
            if have >= need:
                return False
        have += len(inflater.flush())
    except zlib.error:
        return True
    return have < need


def read_sixteen_bit(path: str | Path) -> np.ndarray:
    """The samples of a 16-bit PNG as (H, W, planes) uint16, exactly as stored (pypng)."""
    import png  # pypng

    width, height, rows, info = png.Reader(filename=str(path)).asDirect()
    planes = int(info["planes"])
    samples = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows])
    if samples.shape != (height, width * planes):
        raise ValueError(f"PNG data holds {samples.shape[0]} of {height} rows")
    return samples.reshape(height, width, planes)
