"""Colour and codec corruptions of ImageNet-C: brightness, contrast, saturate, jpeg_compression.

ImageNet-C files brightness under *weather* (see the registry); it lives here with saturate because both
are the same HSV round trip.

Each follows imagecorruptions 1.1.x step by step (same constants, same operation order, float64 on the exact
path) so that the registry's final uint8 truncation gives the reference's pixels bit for bit. Functions take
and return (B, 3, H, W) floats in [0, 255] (see ``registry.ApplyFn``).
"""

from __future__ import annotations

from io import BytesIO

import numpy as np
import torch
from PIL import Image

__all__ = ["brightness", "contrast", "hsv_to_rgb", "jpeg_compression", "rgb_to_hsv", "saturate"]

IMAGE_BY_IMAGE = ("jpeg_compression",)
"""Corruptions that go through a CPU codec one image at a time (no batched form)."""

# Per-severity constants (severity 1..5), as in imagecorruptions.
BRIGHTNESS_SHIFT = (0.1, 0.2, 0.3, 0.4, 0.5)
CONTRAST_FACTOR = (0.4, 0.3, 0.2, 0.1, 0.05)
SATURATE_SCALE_SHIFT = ((0.3, 0.0), (0.1, 0.0), (2.0, 0.0), (5.0, 0.1), (20.0, 0.2))
JPEG_QUALITY = (25, 18, 15, 10, 7)


def rgb_to_hsv(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RGB (B, 3, H, W) in [0, 1] -> planes (h, s, v), bit-exact with ``skimage.color.rgb2hsv`` in float64.

    Same operations in the same order: V = max, S = ptp / V (0 where ptp = 0), hue from the channel that
    holds the max with blue overriding green overriding red on ties, ``(hue / 6) % 1``, 0 where ptp = 0.
    """
    r, g, b = rgb.unbind(1)
    v = torch.maximum(torch.maximum(r, g), b)
    delta = v - torch.minimum(torch.minimum(r, g), b)
    flat = delta == 0.0
    safe_delta = torch.where(flat, 1.0, delta)  # only changes pixels whose h and s are zeroed below
    s = torch.where(flat, 0.0, delta / torch.where(v == 0.0, 1.0, v))
    h = torch.where(
        b == v,
        4.0 + (r - g) / safe_delta,
        torch.where(g == v, 2.0 + (b - r) / safe_delta, (g - b) / safe_delta),
    )
    h = torch.remainder(h / 6.0, 1.0)
    return h.masked_fill_(flat, 0.0), s, v


def hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Planes (h, s, v) -> RGB (B, 3, H, W), bit-exact with ``skimage.color.hsv2rgb`` in float64."""
    h6 = h * 6.0
    hi = torch.floor(h6)
    f = h6 - hi
    p = v * (1.0 - s)
    q = v * (1.0 - f * s)
    t = v * (1.0 - (1.0 - f) * s)
    sector = torch.remainder(hi.to(torch.uint8), 6).long().unsqueeze(0)
    choose = lambda *planes: torch.stack(planes).gather(0, sector).squeeze(0)
    return torch.stack((choose(v, q, p, p, t, v), choose(t, v, v, q, p, p), choose(p, p, t, v, v, q)), 1)


def _to_255(x: torch.Tensor) -> torch.Tensor:
    """The reference's last step, ``np.clip(x, 0, 1) * 255``."""
    return x.clamp_(0.0, 1.0).mul_(255.0)


def brightness(x: torch.Tensor, severity: int, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Raise HSV value by 0.1 .. 0.5 (clipped to 1): a brighter picture with hue and saturation kept."""
    h, s, v = rgb_to_hsv(x / 255.0)
    v = torch.clamp(v + BRIGHTNESS_SHIFT[severity - 1], 0.0, 1.0)
    return _to_255(hsv_to_rgb(h, s, v))


def contrast(x: torch.Tensor, severity: int, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Pull every channel towards its own image mean by a factor 0.4 .. 0.05."""
    x = x / 255.0
    means = x.mean(dim=(2, 3), keepdim=True)
    return _to_255((x - means).mul_(CONTRAST_FACTOR[severity - 1]).add_(means))


def saturate(x: torch.Tensor, severity: int, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Scale and shift HSV saturation (x0.3, x0.1 desaturate; x2, x5+0.1, x20+0.2 oversaturate)."""
    scale, shift = SATURATE_SCALE_SHIFT[severity - 1]
    h, s, v = rgb_to_hsv(x / 255.0)
    s = torch.clamp(s * scale + shift, 0.0, 1.0)
    return _to_255(hsv_to_rgb(h, s, v))


def as_uint8_images(x: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) floats in [0, 255] -> uint8 (B, H, W, 3) on the CPU, rounding values between levels."""
    return x.round().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def from_uint8_images(images: list[np.ndarray] | np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) images -> (B, 3, H, W) in ``like``'s dtype and device."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).to(like.device, like.dtype)


def jpeg_compression(x: torch.Tensor, severity: int, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Round-trip each image through Pillow's JPEG encoder at quality 25 .. 7, in memory, as the reference."""
    decoded = []
    for image in as_uint8_images(x):
        buffer = BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=JPEG_QUALITY[severity - 1])
        buffer.seek(0)
        with Image.open(buffer) as reopened:
            decoded.append(np.array(reopened, dtype=np.uint8))
    return from_uint8_images(decoded, x)
