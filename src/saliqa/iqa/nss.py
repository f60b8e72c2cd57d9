"""Natural-scene statistics shared by NIQE and BRISQUE, written as the LIVE MATLAB releases compute them.

Both models describe MSCN coefficients (and products of neighbouring coefficients) by generalised
Gaussian fits whose shape ``alpha`` is found by a grid search over ``0.2:0.001:10``: the grid value whose
moment ratio is nearest the sample's (``min`` in MATLAB, so ties and all-NaN/inf distances give the first
grid value). The search here is vectorised: a ``searchsorted`` on the (strictly monotone) ratio table and
a comparison of the two neighbours with MATLAB's own distance, which is the same as MATLAB's scan.

Moments follow MATLAB's empty-set semantics: the mean of no values is NaN, so a block with no negative
(or positive) values gets NaN left (right) statistics, which NIQE then drops as ``nancov`` does.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import Any, Self, TypeVar

import numpy as np
import torch
from scipy.special import gamma as gamma_fn

from saliqa.errors import ImageRejected
from saliqa.io.hashing import sha256_file
from saliqa.iqa.base import PatchGrid, QualityModel, QualityOutput
from saliqa.iqa.categories import categorize_quality
from saliqa.iqa.matlab import Padding, imresize_half, mscn

R = TypeVar("R", bound=Any)

GRID_MILLES = (200, 10000)
"""First and last value of the shape grid ``0.2:0.001:10``, in thousandths (9801 values, each the
double nearest ``k / 1000``)."""


class ImageTooSmall(ImageRejected, ValueError):
    """The image is smaller than the model needs (e.g. NIQE's 2 x 2 patches of 96 pixels).

    An :class:`~saliqa.errors.ImageRejected` (the pipeline records its ``reason``) and a ``ValueError``.
    """


@lru_cache(maxsize=1)
def _tables() -> dict[str, np.ndarray]:
    """Shape grid, ``Gamma(k / alpha)`` for k = 1, 2, 3, and the GGD / AGGD moment ratios on it."""
    alpha = np.arange(GRID_MILLES[0], GRID_MILLES[1] + 1, dtype=np.float64) / 1000.0
    g1, g2, g3 = gamma_fn(1.0 / alpha), gamma_fn(2.0 / alpha), gamma_fn(3.0 / alpha)
    return {
        "alpha": alpha,
        "gamma1": g1,
        "gamma2": g2,
        "gamma3": g3,
        "ratio_ggd": (g1 * g3) / (g2**2),  # decreasing in alpha
        "ratio_aggd": (g2**2) / (g1 * g3),  # increasing in alpha
    }


def grid_table(name: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """One of the grid tables (``alpha``, ``gamma1..3``, ``ratio_ggd``, ``ratio_aggd``) as float64."""
    return torch.from_numpy(_tables()[name]).to(device=device, dtype=torch.float64)


def nearest_grid_index(ratio: torch.Tensor, x: torch.Tensor, squared: bool) -> torch.Tensor:
    """Index of MATLAB's ``min`` over the grid of ``(ratio - x).^2`` (``squared``) or ``abs(x - ratio)``.

    ``ratio`` is strictly monotone, so the minimum is at one of the two grid neighbours of ``x``; the
    lower index wins a tie, and a NaN or infinite smallest distance gives index 0, as MATLAB's ``min``.
    """
    n = ratio.shape[0]
    r, v = (ratio, x) if ratio[-1] > ratio[0] else (-ratio, -x)  # negation is exact: same distances
    finite_v = torch.where(torch.isnan(v), torch.zeros_like(v), v).contiguous()
    upper = torch.searchsorted(r, finite_v)
    lo, hi = (upper - 1).clamp(0, n - 1), upper.clamp(0, n - 1)
    if squared:
        d_lo, d_hi = (r[lo] - v) ** 2, (r[hi] - v) ** 2
    else:
        d_lo, d_hi = torch.abs(v - r[lo]), torch.abs(v - r[hi])
    index = torch.where(d_lo <= d_hi, lo, hi)
    best = torch.minimum(d_lo, d_hi)
    return torch.where(torch.isfinite(best), index, torch.zeros_like(index))


def gamma_at(index: torch.Tensor, k: int) -> torch.Tensor:
    """``Gamma(k / alpha)`` at grid indices (k = 1, 2 or 3), from the table."""
    return grid_table(f"gamma{k}", index.device)[index]


def ggd_fit(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Zero-mean GGD fit over the last dimension, as BRISQUE's ``estimateggdparam.m``.

    Returns ``(alpha, sigma, index)``: the shape on the grid, ``sigma = sqrt(mean(v^2))`` and the grid
    index of ``alpha`` (for the Gamma tables).
    """
    v = v.to(torch.float64)
    sigma_sq = (v * v).mean(dim=-1)
    sigma = torch.sqrt(sigma_sq)
    e = torch.abs(v).mean(dim=-1)
    rho = sigma_sq / e**2
    index = nearest_grid_index(grid_table("ratio_ggd", v.device), rho, squared=False)
    return grid_table("alpha", v.device)[index], sigma, index


def aggd_fit(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric GGD fit over the last dimension, as ``estimateaggdparam.m`` of NIQE and BRISQUE.

    Returns ``(alpha, left_std, right_std, index)``: the shape on the grid, the root mean squares of the
    negative and of the positive values (NaN when there are none: MATLAB's mean of an empty set) and
    the grid index of ``alpha``. NIQE's ``beta = std * sqrt(Gamma(1/alpha) / Gamma(3/alpha))``.
    """
    v = v.to(torch.float64)
    sq = v * v
    zero = torch.zeros((), dtype=torch.float64, device=v.device)
    neg, pos = v < 0, v > 0
    left_std = torch.sqrt(torch.where(neg, sq, zero).sum(dim=-1) / neg.sum(dim=-1))
    right_std = torch.sqrt(torch.where(pos, sq, zero).sum(dim=-1) / pos.sum(dim=-1))
    gammahat = left_std / right_std
    rhat = torch.abs(v).mean(dim=-1) ** 2 / sq.mean(dim=-1)
    rhatnorm = (rhat * (gammahat**3 + 1) * (gammahat + 1)) / ((gammahat**2 + 1) ** 2)
    index = nearest_grid_index(grid_table("ratio_aggd", v.device), rhatnorm, squared=True)
    return grid_table("alpha", v.device)[index], left_std, right_std, index


def shifted_products(coeffs: torch.Tensor, shifts: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
    """``coeffs(:) .* circshift(coeffs, s)(:)`` for each shift, over the last two dims, flattened.

    ``torch.roll`` and MATLAB's ``circshift`` move values the same way (positive shift: towards higher
    indices), wrapping around the last two dimensions (a whole image, or each block when ``coeffs`` is
    ``(..., rows, cols, h, w)`` blocks, as ``blkproc`` hands them to NIQE's ``computefeature``).
    """
    return [(coeffs * torch.roll(coeffs, shifts=tuple(s), dims=(-2, -1))).flatten(-2) for s in shifts]


def chunk_size(images: torch.Tensor, max_pixels: int | None) -> int:
    """Images per chunk: at most ``max_pixels`` pixels (2**20 on CPU, where small chunks stay in cache,
    2**25 elsewhere), at least one image."""
    if max_pixels is None:
        max_pixels = 2**20 if images.device.type == "cpu" else 2**25
    return max(1, max_pixels // max(1, images.shape[-2] * images.shape[-1]))


def rate_in_chunks(
    images: torch.Tensor, max_pixels: int | None, rate_chunk: Callable[[torch.Tensor], R]
) -> R:
    """``rate_chunk`` over chunks of at most ``max_pixels`` pixels, its per-image results concatenated.

    ``R`` is a result dataclass with per-image ``score``, ``patch_score`` and ``features`` and one ``grid``.
    """
    parts = [rate_chunk(chunk) for chunk in images.split(chunk_size(images, max_pixels))]
    return type(parts[0])(
        score=torch.cat([p.score for p in parts]),
        patch_score=torch.cat([p.patch_score for p in parts]),
        features=torch.cat([p.features for p in parts]),
        grid=parts[0].grid,
    )


def to_blocks(x: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, 1, H, W)`` with sides multiples of ``size`` -> blocks ``(B, H/size, W/size, size, size)``."""
    batch, _, height, width = x.shape
    rows, cols = height // size, width // size
    return x.reshape(batch, rows, size, cols, size).permute(0, 1, 3, 2, 4)


MIN_WINDOW = 32
"""Smallest sliding window: 16 x 16 at the half scale, so a window holds coefficients normalised by several
distinct 7 x 7 MSCN neighbourhoods and each shape fit sees at least 256 values (the release's 96-pixel patch:
2,304 at the half scale). Smaller windows are refused rather than fitted on a handful of values."""


@dataclass(frozen=True)
class SlidingMap:
    """A local map of overlapping windows for NIQE and BRISQUE, instead of the release's 96-pixel tiling.

    On a 224 crop the release tiling gives NIQE 2 x 2 patches, too coarse to compare with a 7 x 7 attention
    map. Here ``patch`` x ``patch`` windows start every ``stride`` pixels from the top-left corner; when the
    steps fall short of the bottom (right) border, one more window is placed flush with it (on an even
    pixel), so the windows cover the whole image (all but its last row or column when that side is odd).
    Each window's value is drawn on the cells nearest its centre: cell edges lie halfway between
    neighbouring window centres, and the outer cells reach the image border (:meth:`grid`). The picture
    score is untouched: it stays the release's whole-image computation.

    Both sides must be even: a window's second scale (MATLAB ``imresize(., 0.5)`` of the whole image)
    starts at half its offset and is half its side.
    """

    patch: int = 96
    """Window side in pixels (96: the release's patch, so a window's statistics are those the pristine model
    and the release's patch map are made of)."""
    stride: int = 16
    """Pixels between neighbouring windows (16: 9 x 9 windows on a 224 crop, finer than the 7 x 7 grid)."""

    def __post_init__(self) -> None:
        for name in ("patch", "stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"sliding map {name} must be a whole number of pixels, got {value!r}")
        if self.stride < 1:
            raise ValueError(
                f"sliding map stride must be a positive even number of pixels, got {self.stride}"
            )
        if self.patch < MIN_WINDOW:
            raise ValueError(
                f"sliding map patch {self.patch} is too small for NIQE's and BRISQUE's block statistics: "
                f"use at least {MIN_WINDOW} pixels ({MIN_WINDOW // 2} at the half scale)"
            )
        if self.patch % 2 or self.stride % 2:
            raise ValueError(
                f"sliding map patch and stride must be even (the half scale takes half of each), got "
                f"patch {self.patch}, stride {self.stride}"
            )
        if self.stride > self.patch:
            raise ValueError(
                f"sliding map stride {self.stride} is larger than the patch {self.patch}: pixels between the "
                "windows would be rated by none"
            )

    def describe(self) -> str:
        """The map's identity in a model fingerprint."""
        return f"sliding(patch={self.patch}, stride={self.stride})"

    def offsets(self, size: int) -> list[int]:
        """Window starts along a side of ``size`` pixels: every ``stride`` from 0, plus one flush with the far
        border (on an even pixel) when the steps fall short of it."""
        last = size - self.patch
        if last < 0:
            raise ImageTooSmall(f"too small for the sliding map (side {size} < patch {self.patch} pixels)")
        starts = list(range(0, last + 1, self.stride))
        flush = last - last % 2
        if flush > starts[-1]:
            starts.append(flush)
        return starts

    def edges(self, size: int) -> tuple[float, ...]:
        """Cell edges along one side: halfway between neighbouring window centres, 0 and ``size`` outside."""
        centres = [start + self.patch / 2 for start in self.offsets(size)]
        middle = [(a + b) / 2 for a, b in pairwise(centres)]
        return (0.0, *middle, float(size))

    def grid(self, height: int, width: int) -> PatchGrid:
        """The cells the windows' values are drawn on, in image pixels."""
        return PatchGrid(self.edges(height), self.edges(width))


def window_features(
    coeffs: torch.Tensor,
    rows: Sequence[int],
    cols: Sequence[int],
    size: int,
    features: Callable[[torch.Tensor], torch.Tensor],
    max_values: int | None = None,
) -> torch.Tensor:
    """``features`` of the ``size`` x ``size`` windows of ``coeffs`` ``(B, H, W)`` starting at every (row, col)
    of ``rows`` x ``cols`` -> ``(B, len(rows), len(cols), F)``.

    The windows are one ``unfold`` view (no copy), gathered a few rows of windows at a time so that about
    ``max_values`` coefficients are copied at once whatever the batch and the number of windows (2**18 on
    CPU, where they stay in cache: 2**21 was up to 10x slower on a busy 2-core machine; 2**25 elsewhere).
    ``features`` takes windows ``(..., size, size)``, as NIQE's and BRISQUE's block features do (neighbour
    products wrap within each window, as the release's ``blkproc`` patches).
    """
    if max_values is None:
        max_values = 2**18 if coeffs.device.type == "cpu" else 2**25
    view = coeffs.unfold(1, size, 1).unfold(2, size, 1)  # (B, H - size + 1, W - size + 1, size, size)
    device = coeffs.device
    r = torch.as_tensor(list(rows), dtype=torch.long, device=device)
    c = torch.as_tensor(list(cols), dtype=torch.long, device=device)
    # One row of windows of one image is the unit of work: (image, window row) pairs, a group at a time.
    image = torch.arange(coeffs.shape[0], device=device).repeat_interleave(len(r))
    row = r.repeat(coeffs.shape[0])
    step = max(1, max_values // max(1, len(c) * size * size))
    parts = [
        features(view[image[i : i + step, None], row[i : i + step, None], c[None, :]])
        for i in range(0, len(row), step)
    ]
    return torch.cat(parts).reshape(coeffs.shape[0], len(r), len(c), -1)


def sliding_features(
    gray: torch.Tensor,
    sliding: SlidingMap,
    padding: Padding,
    features: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Two-scale features of each sliding window of grey images ``(B, 1, H, W)`` 0-255 -> ``(B, rows, cols, 2F)``.

    As the release's patch maps: MSCN of the whole image (so a window's border sees its true neighbours), the
    second scale MATLAB's ``imresize(., 0.5)`` of the whole image with the window at half its offset and side.
    """
    _, _, height, width = gray.shape
    rows, cols = sliding.offsets(height), sliding.offsets(width)
    image = gray.to(torch.float64)
    per_scale = []
    for scale in (1, 2):
        coeffs, _, _ = mscn(image, padding=padding)
        per_scale.append(
            window_features(
                coeffs[:, 0],
                [r // scale for r in rows],
                [c // scale for c in cols],
                sliding.patch // scale,
                features,
            )
        )
        if scale == 1:
            image = imresize_half(image)
    return torch.cat(per_scale, dim=-1)


def logistic_quality(score: torch.Tensor, midpoint: float, width: float) -> torch.Tensor:
    """A lower-is-better score -> 0-100 quality, ``100 / (1 + exp((score - midpoint) / width))``.

    Monotone decreasing and never saturating, so heavily distorted images keep their order; NaN stays NaN.
    NIQE and BRISQUE fix ``midpoint`` and ``width`` by matching the quartiles of their scores on the 627
    CLIVE photos to the quartiles of those photos' MOS (see their module docstrings).
    """
    return torch.clamp(100.0 * torch.sigmoid(-(score - midpoint) / width), 0.0, 100.0)


class NssQualityModel(QualityModel):
    """The shared shell of NIQE and BRISQUE: a lower-is-better score and per-patch scores, both mapped to
    0-100 quality by the model's CLIVE-calibrated logistic; parameter files identified by their sha256."""

    higher_is_better = False
    version = "live-release-1"
    quality_midpoint: float
    quality_width: float

    def __init__(self, device: str | torch.device, files: dict[str, Path]) -> None:
        super().__init__(device)
        self.file_sha256 = {key: sha256_file(path) for key, path in files.items()}
        self.sliding_map: SlidingMap | None = None
        """``None``: the release's 96-pixel tiling; otherwise the local map's windows (the score is the same)."""

    def use_sliding_map(self, sliding: SlidingMap | None) -> Self:
        """Draw the local map with ``sliding``'s windows (``None``: the release's tiling); returns the model."""
        if sliding is not None and not isinstance(sliding, SlidingMap):
            raise TypeError(f"expected a SlidingMap or None, got {type(sliding).__name__}")
        self.sliding_map = sliding
        return self

    @abstractmethod
    def measure(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, PatchGrid]:
        """Picture scores ``(B,)``, patch scores ``(B, rows, cols)`` and the patches' grid."""

    def fingerprint(self) -> dict[str, str]:
        return {
            "name": self.name,
            "version": self.version,
            **{f"{key}_sha256": digest for key, digest in self.file_sha256.items()},
            "quality_map": f"logistic({self.quality_midpoint}, {self.quality_width})",
            # Only a departure from the release is named, so the release's fingerprint stays what it was.
            **({"patch_map": self.sliding_map.describe()} if self.sliding_map is not None else {}),
        }

    def rate(self, images: torch.Tensor) -> QualityOutput:
        score, patch_score, grid = self.measure(images)
        quality = logistic_quality(score, self.quality_midpoint, self.quality_width)
        return QualityOutput(
            score=score,
            quality=quality,
            category=categorize_quality(quality.detach().cpu().numpy()),
            patch_map=logistic_quality(patch_score, self.quality_midpoint, self.quality_width).to(
                torch.float32
            ),
            grid=grid,
        )
