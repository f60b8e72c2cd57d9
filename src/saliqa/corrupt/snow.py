"""The snow corruption of ImageNet-C: a zoomed, thresholded and motion-smeared layer of flakes over a paled image.

Follows imagecorruptions 1.1.x step by step on batched (B, 3, H, W) tensors in [0, 255] (see
``registry.ApplyFn``): float32 image, float64 flake layer, the flake layer zoomed and smeared with blur's
``clipped_zoom`` and ``motion_smear`` (the same code as zoom_blur and motion_blur). Given the same normal
layer and angle it reproduces the reference's pixels (on every photo the tests try); the one step not
repeated exactly is OpenCV's grey conversion in its scalar loop tail, one float32 ulp apart at times
(see ``_rgb_to_grey``), which could move a value by one level.
"""

from __future__ import annotations

import numpy as np
import torch

from saliqa.corrupt.blur import clipped_zoom, motion_smear

__all__ = ["draw_snow", "snow"]

# Per severity (1..5), as in imagecorruptions: flake layer mean and sd, zoom factor, threshold, motion-blur
# radius and sigma, weight kept by the image when it is paled.
SNOW = (
    (0.1, 0.3, 3.0, 0.5, 10, 4, 0.8),
    (0.2, 0.3, 2.0, 0.5, 12, 4, 0.7),
    (0.55, 0.3, 4.0, 0.9, 12, 8, 0.7),
    (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
    (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
)
SNOW_ANGLE = (-135.0, -45.0)
GREY_WEIGHTS = (0.299, 0.587, 0.114)  # OpenCV's RGB2GRAY, applied as float32


def draw_snow(image: torch.Tensor, severity: int, rng: np.random.Generator) -> dict[str, np.ndarray | float]:
    """One normal value per pixel (the flake layer before zooming) and the fall angle, uniform in [-135, -45)."""
    mean, sd = SNOW[severity - 1][:2]
    flakes = rng.normal(loc=mean, scale=sd, size=tuple(image.shape[-2:]))
    return {"flakes": flakes, "angle": rng.uniform(*SNOW_ANGLE)}


def _fma32(a: torch.Tensor, weight: float, c: torch.Tensor) -> torch.Tensor:
    """float32 ``a * weight + c`` rounded once, as a fused multiply-add (the product is exact in float64)."""
    return (a.double() * float(np.float32(weight)) + c.double()).float()


def _rgb_to_grey(rgb: torch.Tensor) -> torch.Tensor:
    """``cv2.cvtColor(x, COLOR_RGB2GRAY)`` on float32 (B, 3, H, W) -> (B, 1, H, W).

    OpenCV's vector loop computes ``fma(b, 0.114, fma(r, 0.299, g * 0.587))`` in float32, which this
    repeats; the last W mod 8 pixels of a row go through its scalar loop, whose rounding differs in a few
    of them (by one float32 ulp).
    """
    red, green, blue = (channel.unsqueeze(1) for channel in rgb.unbind(1))
    wr, wg, wb = GREY_WEIGHTS
    return _fma32(blue, wb, _fma32(red, wr, green * float(np.float32(wg))))


def _flake_layer(flakes: torch.Tensor, angles: torch.Tensor, severity: int) -> torch.Tensor:
    """The reference's flake layer (B, 1, H', W') on uint8 levels /255: zoom, threshold, clip, smear, round."""
    _, _, zoom, threshold, radius, sigma, _ = SNOW[severity - 1]
    layer = clipped_zoom(flakes.unsqueeze(1), zoom)
    layer = torch.where(layer < threshold, 0.0, layer).clamp_(0.0, 1.0)
    layer = motion_smear(layer, angles, radius, sigma)
    return torch.round(layer * 255.0).div_(255.0)


def snow(x: torch.Tensor, severity: int, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Falling snow: the image paled towards 1.5 * grey + 0.5, plus the flake layer and its 180-degree turn."""
    height, width = x.shape[-2:]
    keep = SNOW[severity - 1][-1]
    image = x.to(torch.float32) / 255.0
    pale = torch.maximum(image, _rgb_to_grey(image) * 1.5 + 0.5)
    image = keep * image + (1 - keep) * pale
    layer = _flake_layer(params["flakes"].to(x.dtype), params["angle"], severity)[..., :height, :width]
    return (image + layer + layer.flip(-2, -1)).clamp_(0.0, 1.0).mul_(255.0).to(x.dtype)
