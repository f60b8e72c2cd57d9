"""MATLAB-faithful building blocks shared by the classical quality models (PIQE, NIQE, BRISQUE).

The official scores of these models come from MATLAB code, and their statistics are sensitive to
last-bit details (flat 7x7 windows give an MSCN that is exactly zero, or not). These helpers pin the
arithmetic that reproduced the official numbers closest (see GUIDE section 5): MATLAB's ``rgb2gray``
weights with the grey rounded to integers, and a separable float64 Gaussian with exact normalised taps,
summed tap by tap as plain multiplies and adds (no convolution kernel, no BLAS, no fused multiply-add),
so the result is the same on every device. MATLAB's bicubic ``imresize`` (NIQE's and BRISQUE's second
scale) is summed the same way.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
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

    The outer product of these taps is MATLAB's ``fspecial('gaussian', size, sigma)`` up to rounding. They
    are NIQE/BRISQUE/PIQE's 7x7 window and MS-SSIM's 11x11 one (:mod:`saliqa.fullref`). Not scipy's taps
    (:func:`saliqa.corrupt.filters.gaussian_kernel1d`, pinned by scipy for the corruptions): those use
    numpy's SIMD ``exp`` (not libm's on every CPU), another exponent and a pairwise sum, and differ from these
    in the last bit at gaussian_blur's sigmas 2, 3, 4 and 6.
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"Gaussian window size must be odd and positive, got {size}")
    if sigma <= 0:
        raise ValueError(f"Gaussian sigma must be positive, got {sigma}")
    # Python floats (libm exp) and an explicit left-to-right sum: the same taps whatever the device, SIMD
    # exp or Python version (``sum`` is compensated from Python 3.12 on, which moves the last bit of the taps
    # and with it NIQE/BRISQUE on flat regions: I19's BRISQUE by 2.6 points).
    g = [math.exp(-(x * x) / (2.0 * sigma * sigma)) for x in (k - (size - 1) / 2 for k in range(size))]
    total = 0.0
    for v in g:
        total += v
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

    Why not saliqa's other Gaussian blurs: :func:`saliqa.corrupt.filters.gaussian_filter` repeats scipy's
    taps (radius from ``truncate``) and scipy's summation order (centre tap, then pairs from the outside in),
    which the corruptions' bit-exactness with imagecorruptions needs; MS-SSIM (:mod:`saliqa.fullref`) uses
    these taps but keeps the 'valid' region and sums by matrix products. NIQE and BRISQUE need this order: on
    perfectly flat windows the last bit decides whether an MSCN value is zero, and this order reproduced the
    official scores closest.
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


def _cubic(x: np.ndarray) -> np.ndarray:
    """MATLAB ``imresize``'s bicubic kernel (a = -0.5), written as MATLAB's ``cubic`` does."""
    absx = np.abs(x)
    absx2 = absx**2
    absx3 = absx**3
    return (1.5 * absx3 - 2.5 * absx2 + 1) * (absx <= 1) + (-0.5 * absx3 + 2.5 * absx2 - 4 * absx + 2) * (
        (1 < absx) & (absx <= 2)
    )


def imresize_contributions(in_length: int, out_length: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Weights and 0-based source indices ``(out_length, taps)`` of MATLAB ``imresize`` (bicubic).

    Mirrors MATLAB's ``contributions``: with ``scale < 1`` the kernel is stretched (antialiasing, width
    ``4 / scale``), each row of weights is normalised to sum 1, indices outside the image are mirrored
    with the edge pixel repeated (``symmetric``), and taps whose weight is zero for every output are
    dropped. At ``scale = 0.5`` every row is the same 8 dyadic weights, so they are exact.
    """
    kernel_width = 4.0
    if scale < 1:
        kernel_width = kernel_width / scale

        def h(x: np.ndarray) -> np.ndarray:
            return scale * _cubic(scale * x)
    else:
        h = _cubic
    x = np.arange(1, out_length + 1, dtype=np.float64)[:, None]
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    indices = left + np.arange(taps, dtype=np.float64)[None, :]
    weights = h(u - indices)
    weights = weights / np.sum(weights, axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    indices = mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_length)]
    keep = np.any(weights != 0, axis=0)
    return weights[:, keep], indices[:, keep]


def _resize_along(x: torch.Tensor, dim: int, scale: float) -> torch.Tensor:
    """Resize ``x`` along ``dim`` to ``ceil(scale * n)``, summing the taps one by one in tap order."""
    n_in = x.shape[dim]
    weights, indices = imresize_contributions(n_in, math.ceil(scale * n_in), scale)
    shape = [1] * x.ndim
    shape[dim] = weights.shape[0]
    w = torch.from_numpy(weights).to(device=x.device, dtype=torch.float64)
    idx = torch.from_numpy(indices).to(x.device)
    out = torch.mul(x.index_select(dim, idx[:, 0]), w[:, 0].reshape(shape))
    for k in range(1, weights.shape[1]):
        out.add_(torch.mul(x.index_select(dim, idx[:, k]), w[:, k].reshape(shape)))
    return out


def imresize(x: torch.Tensor, scale: float) -> torch.Tensor:
    """MATLAB ``imresize(x, scale)`` (bicubic, antialiasing when shrinking) on doubles ``(B, C, H, W)``.

    Like MATLAB: the output is ``ceil(scale * H) x ceil(scale * W)``, the image is resized along its first
    dimension (H) and then its second (W) since the scales are equal, each output is the tap-by-tap sum
    of weighted input pixels in float64 (separate multiply and add), and nothing is rounded or clipped:
    NIQE and BRISQUE resize doubles. Returns float64 on the input's device.
    """
    if x.ndim != 4:
        raise ValueError(f"expected (B, C, H, W), got shape {tuple(x.shape)}")
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    x = x.to(torch.float64)
    return _resize_along(_resize_along(x, 2, scale), 3, scale)


def imresize_half(x: torch.Tensor) -> torch.Tensor:
    """MATLAB ``imresize(x, 0.5)``: the second scale of NIQE and BRISQUE (see :func:`imresize`)."""
    return imresize(x, 0.5)
