"""Noise corruptions of ImageNet-C: gaussian_noise, shot_noise, impulse_noise and speckle_noise.

Each follows imagecorruptions 1.1.x step by step (same constants, same operation order, float64 on the exact
path), so that with the same random values the registry's uint8 truncation gives the reference's pixels bit
for bit. The random values come from the image's own ``np.random.Generator`` and are drawn in the
reference's (H, W, 3) order, with the reference's distributions and arguments, then moved to (3, H, W): a test
can hand exactly these values to the reference, and impulse_noise draws what ``skimage.util.random_noise``
draws from the same generator.
"""

from __future__ import annotations

import numpy as np
import torch

from saliqa.corrupt.filters import clip_to_255

__all__ = [
    "draw_gaussian_noise",
    "draw_impulse_noise",
    "draw_shot_noise",
    "draw_speckle_noise",
    "gaussian_noise",
    "impulse_noise",
    "shot_noise",
    "speckle_noise",
]

# Per-severity constants (severity 1..5), as in imagecorruptions.
GAUSSIAN_SCALE = (0.08, 0.12, 0.18, 0.26, 0.38)
SHOT_PHOTONS = (60, 25, 12, 5, 3)
IMPULSE_AMOUNT = (0.03, 0.06, 0.09, 0.17, 0.27)
SPECKLE_SCALE = (0.15, 0.2, 0.35, 0.45, 0.6)
SALT_VS_PEPPER = 0.5  # skimage.util.random_noise's default for 's&p'
ANY_LAYOUT = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise")  # pixel-wise (see registry)


def _hwc_shape(image: torch.Tensor) -> tuple[int, int, int]:
    """The reference's array shape (H, W, 3) for a (3, H, W) image."""
    channels, height, width = image.shape
    return height, width, channels


def _chw(hwc: np.ndarray) -> np.ndarray:
    """(H, W, 3) draws -> (3, H, W), the layout ``apply`` works in."""
    return np.moveaxis(hwc, -1, 0)


def draw_gaussian_noise(
    image: torch.Tensor, severity: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Zero-mean normal noise with the severity's standard deviation, one value per pixel and channel."""
    return {"noise": _chw(rng.normal(scale=GAUSSIAN_SCALE[severity - 1], size=_hwc_shape(image)))}


def gaussian_noise(x: torch.Tensor, severity: int, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Add the drawn noise (sd 0.08 .. 0.38 of the full range) to the image in [0, 1]."""
    return clip_to_255(x.div_(255.0).add_(params["noise"].to(x.dtype)))


def draw_shot_noise(image: torch.Tensor, severity: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Photon counts: Poisson with mean ``level / 255 * photons`` per pixel and channel.

    The mean is taken from the image rounded to its uint8 level, so float input in [0, 1] draws exactly what
    its uint8 version draws: numpy's Poisson sampler uses a varying number of uniforms per value, and one
    slightly different mean would shift the stream for every later pixel.
    """
    levels = image.round().clamp(0.0, 255.0).permute(1, 2, 0).to("cpu", torch.float64).numpy()
    return {"counts": _chw(rng.poisson(levels / 255.0 * SHOT_PHOTONS[severity - 1]))}


def shot_noise(x: torch.Tensor, severity: int, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """The drawn counts over the photon number (60 .. 3 photons at full brightness): the noisy image."""
    return clip_to_255(params["counts"].to(x.dtype) / float(SHOT_PHOTONS[severity - 1]))


def draw_impulse_noise(image: torch.Tensor, severity: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """skimage's 's&p' draws: which values flip (probability ``amount``), then which flips are salt (1/2)."""
    shape = _hwc_shape(image)
    flipped = rng.random(shape) <= IMPULSE_AMOUNT[severity - 1]
    salted = rng.random(shape) <= SALT_VS_PEPPER
    return {"flipped": _chw(flipped), "salted": _chw(salted)}


def impulse_noise(x: torch.Tensor, severity: int, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Set the flipped values to white (salt) or black (pepper), per channel: 3 .. 27 % of the values."""
    salt_or_pepper = params["salted"].to(x.dtype)
    return clip_to_255(torch.where(params["flipped"], salt_or_pepper, x.div_(255.0), out=x))


def draw_speckle_noise(image: torch.Tensor, severity: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Zero-mean normal noise with the severity's standard deviation, one value per pixel and channel."""
    return {"noise": _chw(rng.normal(scale=SPECKLE_SCALE[severity - 1], size=_hwc_shape(image)))}


def speckle_noise(x: torch.Tensor, severity: int, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Multiplicative noise: each value plus itself times the drawn noise (sd 0.15 .. 0.6)."""
    x = x.div_(255.0)
    return clip_to_255((x * params["noise"].to(x.dtype)).add_(x))  # x + x * noise
