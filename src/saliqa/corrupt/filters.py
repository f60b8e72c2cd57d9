"""Filters shared by several corruptions, written to give scipy.ndimage's numbers on batched tensors.

``gaussian_filter`` calls scipy on the CPU and elsewhere repeats scipy's arithmetic: the kernel is built with numpy exactly as
``scipy.ndimage._gaussian_kernel1d`` builds it, axis 0 (rows) is filtered before axis 1, and each output
value is summed as scipy's symmetric correlation sums it (centre tap first, then the pairs from the
outermost inwards), in float64, rounded to the input's dtype after each axis. On float64 input this is
bit-exact with ``skimage.filters.gaussian`` / ``scipy.ndimage.gaussian_filter``.

It stays apart from saliqa's two other Gaussian blurs on purpose (see ``gaussian_kernel1d`` and
``gaussian_filter``): each is pinned to a different reference, and the same image through two of them
differs in the last bits.
"""

from __future__ import annotations

from functools import cache
from typing import Literal

import numpy as np
import torch

__all__ = [
    "BorderMode",
    "border_index",
    "clip_to_255",
    "gaussian_filter",
    "gaussian_filter_tensor",
    "gaussian_kernel1d",
]

BorderMode = Literal["nearest", "reflect", "mirror", "wrap"]
"""scipy.ndimage's names: nearest = aaa|abcd|ddd, reflect = cba|abcd|dcb, mirror = dcb|abcd|cba."""


def clip_to_255(x: torch.Tensor) -> torch.Tensor:
    """The reference's last step, ``np.clip(x, 0, 1) * 255``, in place on a buffer the caller owns."""
    return x.clamp_(0.0, 1.0).mul_(255.0)


@cache
def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> tuple[float, ...]:
    """scipy's normalised Gaussian taps for ``sigma`` (radius ``int(truncate * sigma + 0.5)``).

    Not :func:`saliqa.iqa.matlab.gaussian_taps` (MATLAB's ``fspecial``, pinned by the NIQE/BRISQUE scores):
    scipy takes numpy's SIMD ``exp`` of ``-0.5 / sigma**2 * x**2`` and normalises by numpy's pairwise sum,
    which moves the last bit of some taps (gaussian_blur's sigmas 2, 3, 4, 6), and the corruptions must
    match scipy bit for bit.
    """
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (float(sigma) * float(sigma)) * x**2)
    return tuple((phi / phi.sum()).tolist())


@cache
def _border_index_cached(size: int, radius: int, mode: BorderMode) -> torch.Tensor:
    i = np.arange(-radius, size + radius)
    if mode == "nearest":
        j = np.clip(i, 0, size - 1)
    elif mode == "wrap":
        j = np.mod(i, size)
    elif mode == "reflect":  # period 2n, the edge sample repeated
        j = np.mod(i, 2 * size)
        j = np.where(j >= size, 2 * size - 1 - j, j)
    elif mode == "mirror":  # period 2n - 2, the edge sample not repeated
        period = max(2 * size - 2, 1)
        j = np.mod(i, period)
        j = np.where(j >= size, period - j, j)
    else:
        raise ValueError(f"unknown border mode {mode!r}")
    return torch.from_numpy(j.astype(np.int64))


def border_index(
    size: int, radius: int, mode: BorderMode, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Source indices of a line of ``size`` samples padded by ``radius`` on each side under ``mode``."""
    return _border_index_cached(size, radius, mode).to(device)


def _correlate_symmetric(
    x: torch.Tensor, taps: tuple[float, ...], dim: int, mode: BorderMode
) -> torch.Tensor:
    """scipy's symmetric 1-D correlation of float64 ``x`` along ``dim`` (one reused pair buffer)."""
    radius = len(taps) // 2
    size = x.shape[dim]
    padded = x.index_select(dim, border_index(size, radius, mode, x.device))
    out = padded.narrow(dim, radius, size) * taps[radius]
    pair = torch.empty_like(out)
    for j in range(radius, 0, -1):  # outermost pair first, as scipy accumulates
        torch.add(padded.narrow(dim, radius - j, size), padded.narrow(dim, radius + j, size), out=pair)
        out += pair.mul_(taps[radius - j])
    return out


CPU_CHUNK = 1 << 20
"""Values per piece of work on the CPU: float64 temporaries of a whole batch would leave the caches and run
several times slower than image-sized pieces."""


def gaussian_filter(
    x: torch.Tensor,
    sigma: float | tuple[float, float],
    *,
    mode: BorderMode = "nearest",
    truncate: float = 4.0,
) -> torch.Tensor:
    """Gaussian blur over the last two dims (rows, then columns), as ``scipy.ndimage.gaussian_filter``.

    ``sigma`` is one value or (rows, columns); a sigma of 0 leaves that axis alone, as scipy does.
    skimage.filters.gaussian's default mode is "nearest"; its "reflect" is scipy's "reflect". float32 and
    float64 tensors on the CPU go through scipy itself; other devices and dtypes through the tensor port,
    which gives the same values.

    Why not saliqa's other Gaussian blurs: :func:`saliqa.iqa.matlab.gaussian_filter` sums MATLAB's taps one
    by one in tap order with replicate or zero padding (pinned by the official NIQE/BRISQUE/PIQE scores),
    and MS-SSIM's blur in :mod:`saliqa.fullref` keeps only the 'valid' region; this one is pinned bit for bit
    by scipy.ndimage / skimage, which the imagecorruptions reference calls.
    """
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
        passes = _passes(sigma, truncate)
        return _gaussian_filter_scipy(x, passes, mode) if passes else x.clone()
    return gaussian_filter_tensor(x, sigma, mode=mode, truncate=truncate)


def _passes(sigma: float | tuple[float, float], truncate: float) -> list[tuple[int, tuple[float, ...]]]:
    """(dim, taps) of each axis to filter, rows first; an axis with sigma 0 is skipped, as scipy skips it."""
    sigmas = (sigma, sigma) if isinstance(sigma, int | float) else sigma
    return [
        (dim, gaussian_kernel1d(float(s), truncate)) for dim, s in zip((-2, -1), sigmas) if float(s) > 1e-15
    ]


def gaussian_filter_tensor(
    x: torch.Tensor,
    sigma: float | tuple[float, float],
    *,
    mode: BorderMode = "nearest",
    truncate: float = 4.0,
) -> torch.Tensor:
    """:func:`gaussian_filter` as tensor ops on ``x``'s device: scipy's sums in scipy's order, in float64."""
    out = x.clone()
    for dim, taps in _passes(sigma, truncate):  # scipy writes each axis' result in the input's dtype
        out = _correlate_symmetric(out.to(torch.float64), taps, dim, mode).to(x.dtype)
    return out


def _gaussian_filter_scipy(
    x: torch.Tensor, passes: list[tuple[int, tuple[float, ...]]], mode: BorderMode
) -> torch.Tensor:
    """The CPU path: scipy's own ``correlate1d`` on the tensor's memory, the reference's arithmetic by definition.

    About 4x faster than the tensor port on one core (scipy sums each line in a cached buffer; the port
    streams the whole image once per tap), and it releases the GIL, so images filter in parallel threads.
    For float32 scipy sums in double and stores float32 after each axis, as the port does.
    """
    from scipy.ndimage import correlate1d

    out = x.detach().numpy()
    for dim, taps in passes:
        out = correlate1d(out, np.asarray(taps), axis=dim, mode=mode)
    return torch.from_numpy(out)
