"""Two things about PNG files that Pillow does not do for saliqa: check that the image data fills every row,
and keep 16-bit colour samples.

Pillow decodes a PNG whose compressed data ends cleanly but early (fewer rows than its header promises)
without an error, the missing rows black. A non-zero last row proves the data was all there
(:func:`last_row_decoded`); otherwise :func:`rows_missing` counts the bytes the data inflates to against what
the header needs, so such a file is rejected as truncated instead. Pillow opens 16-bit RGB, RGBA and
grey+alpha PNGs as 8-bit modes by keeping each sample's high byte (1257 becomes 4 where round(1257 / 257) is
5); :func:`read_sixteen_bit` runs Pillow's own decoder once more per byte of the sample, so they are read
whole, in C, as stored.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

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


def last_row_decoded(img: Image.Image, header: PngHeader) -> bool:
    """Whether Pillow's decoder demonstrably reached the last row of a loaded, non-interlaced PNG.

    Pillow fills rows its decoder never got with zeros and reports no error when the compressed
    stream ends cleanly on a row boundary, so any non-zero byte in the last row proves the data held
    every row; this spares re-inflating the whole stream (:func:`rows_missing`) for almost every
    file. An all-zero last row, an interlaced file (its last data is not one image row) or an image whose
    size differs from the header (an APNG frame) gets the full check.
    """
    if header.interlaced or img.size != (header.width, header.height):
        return False
    width, height = img.size
    return bool(np.frombuffer(img.crop((0, height - 1, width, height)).tobytes(), np.uint8).any())


# PNG bit depth 16 colour types -> (Pillow image mode, rawmodes) that give every byte of each sample.
# Pillow's own reading keeps the high byte only ("RGB;16B"); "RGB;16L" keeps the other byte of each
# sample, which for PNG's big-endian data is the low one. Grey+alpha is 4 bytes a pixel, read as they are.
_SIXTEEN_BIT_RAWMODES: dict[int, tuple[str, tuple[str, ...]]] = {
    2: ("RGB", ("RGB;16B", "RGB;16L")),
    6: ("RGBA", ("RGBA;16B", "RGBA;16L")),
    4: ("RGBA", ("RGBA",)),
}


def read_sixteen_bit(path: str | Path, header: PngHeader) -> np.ndarray:
    """The samples of a 16-bit RGB, RGBA or grey+alpha PNG as (H, W, planes) uint16, exactly as stored.

    Pillow's own zip decoder (C: every PNG filter, Adam7 interlacing) runs on the image data once per
    byte of the sample, with rawmodes that keep that byte, so nothing is rescaled (sBIT and tRNS are
    not applied) and no Python loop touches a pixel.
    """
    data = b"".join(_image_data(path))
    size = (header.width, header.height)
    mode, rawmodes = _SIXTEEN_BIT_RAWMODES[header.color_type]
    decoded = [
        np.asarray(Image.frombytes(mode, size, data, "zip", rawmode, int(header.interlaced)))
        for rawmode in rawmodes
    ]
    if len(decoded) == 1:  # grey+alpha: [grey high, grey low, alpha high, alpha low]
        stored = decoded[0].astype(np.uint16)
        return (stored[:, :, 0::2] << 8) | stored[:, :, 1::2]
    high, low = decoded
    return (high.astype(np.uint16) << 8) | low
