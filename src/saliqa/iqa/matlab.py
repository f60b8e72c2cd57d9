"""MATLAB-faithful building blocks shared by the classical quality models (PIQE, NIQE, BRISQUE).

The official scores of these models come from MATLAB code, and their statistics are sensitive to
last-bit details (flat 7x7 windows give an MSCN that is exactly zero, or not). These helpers pin the
arithmetic that reproduced the official numbers closest (see GUIDE section 5): MATLAB's ``rgb2gray``
weights with the grey rounded to integers, and a separable float64 Gaussian with exact normalised taps,
summed tap by tap as plain multiplies and adds (no convolution kernel, no BLAS, no fused multiply-add),
so the result is the same on every device.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

RGB2GRAY_WEIGHTS: tuple[float, float, float] = (0.298936021293775, 0.587043074451121, 0.114020904255103)
"""MATLAB ``rgb2gray`` weights for R, G, B: the first row of the inverse of its NTSC (YIQ) matrix."""

Padding = Literal["replicate", "zero"]


def rgb_to_gray(images: torch.Tensor) -> torch.Tensor:
    """Grey levels 0..255 as MATLAB's ``round(255 * im2double(rgb2gray(uint8 image)))``.

    ``images`` is ``(B, 3, H, W)`` float in [0, 1] holding ``uint8 / 255`` (or ``(B, 1, H, W)`` grey).
    The pixels are first rounded back to their integer values so that float32 inputs give the same
    result as float64 ones; ``rgb2gray`` on uint8 then rounds the weighted sum to an integer.
    Returns ``(B, 1, H, W)`` float64 holding integers.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected (B, 3, H, W) or (B, 1, H, W), got shape {tuple(images.shape)}")
    pixels = torch.round(255.0 * images.to(torch.float64))
    if pixels.shape[1] == 1:
        return pixels
    w_r, w_g, w_b = RGB2GRAY_WEIGHTS
    gray = w_r * pixels[:, 0:1] + w_g * pixels[:, 1:2] + w_b * pixels[:, 2:3]
    return torch.round(gray)


def gaussian_taps(size: int, sigma: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Exact normalised 1-D Gaussian taps ``g = exp(-x^2 / (2 sigma^2)) / sum(g)``, x centred on 0.

    The outer product of these taps is MATLAB's ``fspecial('gaussian', size, sigma)`` up to rounding.
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"Gaussian window size must be odd and positive, got {size}")
    if sigma <= 0:
        raise ValueError(f"Gaussian sigma must be positive, got {sigma}")
    # Python floats (libm exp, left-to-right sum): the same taps whatever the device or SIMD exp.
    g = [math.exp(-(x * x) / (2.0 * sigma * sigma)) for x in (k - (size - 1) / 2 for k in range(size))]
    total = sum(g)
    return torch.tensor([v / total for v in g], dtype=dtype)


def _filter_1d(x: torch.Tensor, taps: list[float], dim: int) -> torch.Tensor:
    """Correlate the padded ``x`` with ``taps`` along ``dim`` ('valid' part), one tap at a time."""
    n_out = x.shape[dim] - len(taps) + 1
    out = torch.mul(x.narrow(dim, 0, n_out), taps[0])
    term = torch.empty_like(out)
    for k in range(1, len(taps)):
        # A separate multiply and add (no FMA), in place to spare large allocations.
        out.add_(torch.mul(x.narrow(dim, k, n_out), taps[k], out=term))
    return out


def gaussian_filter(
    x: torch.Tensor, size: int = 7, sigma: float = 7 / 6, padding: Padding = "replicate"
) -> torch.Tensor:
    """MATLAB ``imfilter(x, fspecial('gaussian', size, sigma), padding, 'same')`` on ``(B, C, H, W)``.

    ``padding`` is ``"replicate"`` (NIQE, PIQE) or ``"zero"`` (``filter2``, BRISQUE). The filter is
    separable: along H (MATLAB's first dimension) first, then along W, in float64, each pass summed
    tap by tap in tap order. Returns float64 of the input's shape, on the input's device.
    """
    if x.ndim != 4:
        raise ValueError(f"expected (B, C, H, W), got shape {tuple(x.shape)}")
    if padding not in ("replicate", "zero"):
        raise ValueError(f"padding must be 'replicate' or 'zero', got {padding!r}")
    taps = gaussian_taps(size, sigma).tolist()
    r = (size - 1) // 2
    x = x.to(torch.float64)
    if padding == "replicate":
        x = F.pad(x, (r, r, r, r), mode="replicate")
    else:
        x = F.pad(x, (r, r, r, r), mode="constant", value=0.0)
    return _filter_1d(_filter_1d(x, taps, dim=2), taps, dim=3)


def mscn(
    gray: torch.Tensor, padding: Padding = "replicate", size: int = 7, sigma: float = 7 / 6
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean-subtracted contrast-normalised coefficients, as in the LIVE/MATLAB NSS code.

    ``mu = G * I``, ``sigma = sqrt(|G * I^2 - mu^2|)`` (``abs`` as MATLAB does, so rounding cannot give a
    negative variance), ``mscn = (I - mu) / (sigma + 1)``. Returns ``(mscn, mu, sigma)``, float64.
    """
    gray = gray.to(torch.float64)
    mu = gaussian_filter(gray, size, sigma, padding)
    sd = torch.sqrt(torch.abs(gaussian_filter(gray * gray, size, sigma, padding) - mu * mu))
    return (gray - mu) / (sd + 1.0), mu, sd
