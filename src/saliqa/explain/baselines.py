"""What an agreement number must beat: maps that know nothing of the model (a centred Gaussian, a seeded
random map), one that knows only the image's structure (Sobel edge magnitude), and the shuffled pairing (a
map of another image under the same condition).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

LUMA = (0.299, 0.587, 0.114)
"""ITU-R BT.601 weights: the grey image the edges are taken from."""


def centre_gaussian(rows: int, cols: int, sigma: float = 0.25) -> np.ndarray:
    """A Gaussian bump at the centre of a ``rows`` x ``cols`` grid (cell centres), ``sigma`` a fraction of
    each side: the centre bias every photo carries."""
    y = (np.arange(rows) + 0.5) / rows - 0.5
    x = (np.arange(cols) + 0.5) / cols - 0.5
    return np.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / (2 * sigma**2))


def sobel_magnitude(images: torch.Tensor) -> torch.Tensor:
    """Edge magnitude ``(B, H, W)`` of the grey image of ``(B, 3, H, W)`` in [0, 1] (3 x 3 Sobel, borders
    replicated)."""
    weights = torch.tensor(LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    grey = (images * weights).sum(dim=1, keepdim=True)
    padded = F.pad(grey, (1, 1, 1, 1), mode="replicate")
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=images.dtype)
    kernels = torch.stack([kx, kx.T])[:, None].to(images.device)
    g = F.conv2d(padded, kernels)
    return g.pow(2).sum(dim=1).sqrt()


def random_maps(rows: int, cols: int, seeds: Sequence[int]) -> np.ndarray:
    """Uniform noise maps ``(len(seeds), rows, cols)``, each from its own seed."""
    return (
        np.stack([np.random.default_rng(s).random((rows, cols)) for s in seeds])
        if seeds
        else np.zeros((0, rows, cols))
    )


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation with no fixed point (``n`` >= 2): each position gets another one's index, so the
    shuffled pairing never pairs an image with itself."""
    if n < 2:
        raise ValueError(f"a pairing with no image paired to itself needs at least 2 images, got {n}")
    order = rng.permutation(n)
    perm = np.empty(n, dtype=np.int64)
    perm[order] = np.roll(order, -1)
    return perm
