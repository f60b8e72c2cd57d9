"""Pixel-wise colour and codec corruptions of ImageNet-C: brightness, contrast, saturate, jpeg_compression.

ImageNet-C files brightness under *weather* (see the registry); it lives here with saturate because both
are the same HSV round trip.

Each follows imagecorruptions 1.1.x step by step (float64 on ``x / 255``, same constants, same operation
order) so that the registry's final ``uint8`` truncation gives the reference's pixels bit for bit. Every
function takes ``(image, severity, rng)`` with ``image`` a C-contiguous uint8 (H, W, 3) array and returns
float64 in [0, 255] (or uint8 for JPEG); the deterministic ones ignore ``rng``.
"""

from __future__ import annotations

from io import BytesIO

import numpy as np
from PIL import Image

__all__ = ["brightness", "contrast", "hsv_to_rgb", "jpeg_compression", "rgb_to_hsv", "saturate"]

# Per-severity constants (severity 1..5), as in imagecorruptions.
BRIGHTNESS_SHIFT = (0.1, 0.2, 0.3, 0.4, 0.5)
CONTRAST_FACTOR = (0.4, 0.3, 0.2, 0.1, 0.05)
SATURATE_SCALE_SHIFT = ((0.3, 0.0), (0.1, 0.0), (2.0, 0.0), (5.0, 0.1), (20.0, 0.2))
JPEG_QUALITY = (25, 18, 15, 10, 7)


def _unit(image: np.ndarray) -> np.ndarray:
    """uint8 -> float64 in [0, 1], computed as the reference does (``x / 255.``)."""
    return np.ascontiguousarray(image) / 255.0


def _to_255(x: np.ndarray) -> np.ndarray:
    """The reference's last step, ``np.clip(x, 0, 1) * 255``, done in place on our own buffer."""
    np.clip(x, 0.0, 1.0, out=x)
    x *= 255.0
    return x


def rgb_to_hsv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float64 RGB (..., 3) -> planes (h, s, v), bit-exact with ``skimage.color.rgb2hsv``.

    Same operations in the same order: V = max, S = ptp / V (0 where ptp = 0), hue from the channel that
    holds the max with blue overriding green overriding red on ties, ``(hue / 6) % 1``, 0 where ptp = 0.
    Planes instead of a stacked array, and ``np.where`` instead of boolean scatter, for speed.
    """
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = np.maximum(np.maximum(r, g), b)
    delta = v - np.minimum(np.minimum(r, g), b)
    flat = delta == 0.0
    safe_delta = np.where(flat, 1.0, delta)  # only changes pixels whose h and s are zeroed below
    s = np.where(flat, 0.0, delta / np.where(v == 0.0, 1.0, v))
    h = np.where(
        b == v,
        4.0 + (r - g) / safe_delta,
        np.where(g == v, 2.0 + (b - r) / safe_delta, (g - b) / safe_delta),
    )
    h /= 6.0
    h %= 1.0
    h[flat] = 0.0
    return h, s, v


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Planes (h, s, v) in float64 -> RGB (..., 3), bit-exact with ``skimage.color.hsv2rgb``."""
    h6 = h * 6.0
    hi = np.floor(h6)
    f = h6 - hi
    p = v * (1.0 - s)
    q = v * (1.0 - f * s)
    t = v * (1.0 - (1.0 - f) * s)
    sector = hi.astype(np.uint8) % 6
    out = np.empty((*h.shape, 3), dtype=np.float64)
    np.choose(sector, (v, q, p, p, t, v), out=out[..., 0])
    np.choose(sector, (t, v, v, q, p, p), out=out[..., 1])
    np.choose(sector, (p, p, t, v, v, q), out=out[..., 2])
    return out


def brightness(image: np.ndarray, severity: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Raise HSV value by 0.1 .. 0.5 (clipped to 1): a brighter picture with hue and saturation kept."""
    h, s, v = rgb_to_hsv(_unit(image))
    v = np.clip(v + BRIGHTNESS_SHIFT[severity - 1], 0.0, 1.0)
    return _to_255(hsv_to_rgb(h, s, v))


def contrast(image: np.ndarray, severity: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Pull every channel towards its own image mean by a factor 0.4 .. 0.05."""
    c = CONTRAST_FACTOR[severity - 1]
    x = _unit(image)
    means = np.mean(x, axis=(0, 1), keepdims=True)  # same reduction, same layout -> same float sum
    x -= means
    x *= c
    x += means
    return _to_255(x)


def saturate(image: np.ndarray, severity: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Scale and shift HSV saturation (x0.3, x0.1 desaturate; x2, x5+0.1, x20+0.2 oversaturate)."""
    scale, shift = SATURATE_SCALE_SHIFT[severity - 1]
    h, s, v = rgb_to_hsv(_unit(image))
    s = np.clip(s * scale + shift, 0.0, 1.0)
    return _to_255(hsv_to_rgb(h, s, v))


def jpeg_compression(image: np.ndarray, severity: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Round-trip through Pillow's JPEG encoder at quality 25 .. 7 (in memory), as the reference does."""
    buffer = BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, "JPEG", quality=JPEG_QUALITY[severity - 1])
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.array(decoded, dtype=np.uint8)
