"""NIQE, the Natural Image Quality Evaluator, as the LIVE MATLAB release (``computequality.m``) computes it.

Mittal, Soundararajan and Bovik, "Making a completely blind image quality analyzer", IEEE SPL 2013.
The grey image (MATLAB ``rgb2gray`` rounded to integers) is cropped to a multiple of 96 pixels and cut
into 96x96 patches. Per patch and scale 18 features of the MSCN coefficients (7x7 Gaussian, sigma 7/6,
replicate borders): an asymmetric-GGD fit of the coefficients (shape ``alpha`` and the mean of the left
and right ``beta``) and, for the products with the horizontal, vertical and two diagonal neighbours
(``circshift`` within the patch), ``alpha``, the mean ``(beta_r - beta_l) Gamma(2/alpha) / Gamma(1/alpha)``,
``beta_l`` and ``beta_r``. The second scale is MATLAB's bicubic ``imresize(im, 0.5)`` (antialiased, on
doubles, not rounded) with 48x48 patches. The score is the Mahalanobis-like distance between the
pristine model ``(mu_p, S_p)`` and the image's patch features ``(mu_d, S_d)``:
``sqrt((mu_p - mu_d)^T pinv((S_p + S_d) / 2) (mu_p - mu_d))``, with ``mu_d = nanmean`` (per feature) and
``S_d = nancov`` (patches with any NaN feature dropped). Lower is better; about 2-4 for pristine photos.

Patch map: the same distance for each patch's own feature vector, ``sqrt((mu_p - x_k)^T pinv((S_p + S_d)
/ 2) (mu_p - x_k))``. A single patch has no covariance of its own, so the metric is the image's: the
same ``(S_p + S_d) / 2`` as the image score (IL-NIQE's per-patch distance uses the same pooled matrix).
The map thus uses the same yardstick as the score it explains, at the cost of depending on the other
patches of the image. A patch's distance is larger than the image's (one patch's features scatter
around the image mean that the score uses: on the TID2013 images a 3.2-3.7 image has patches at
3.5-7), so compare patches with each other, not with the image score. Patches with a NaN feature
(e.g. perfectly flat ones: no negative or no positive MSCN values) and the cropped-off border are NaN.

Sliding map (an option, not the release: :class:`~saliqa.iqa.nss.SlidingMap`): the same distance, with the
same metric, for overlapping windows (default 96 pixels every 16) over the whole image rather than the
96-pixel tiles of its crop, so a 224 crop gets 9 x 9 values instead of 2 x 2. A window's features come from
the whole image's MSCN at both scales (the uncropped image, replicate borders at its edges); on an image
whose sides are multiples of 96, windows of 96 every 96 pixels are exactly the release's map. The score
is the release's in either case.

``quality`` (0-100, higher is better) is ``100 / (1 + exp((score - 4.56) / 1.47))``, a logistic chosen
from data, not by taste: on the 627 CLIVE photos (``shared/data/clive``, authentic distortions with
human MOS 0-100) this NIQE has quartiles 3.08 / 3.79 / 4.91 and the MOS 44.2 / 61.5 / 73.3; the
midpoint and width put NIQE's first and third quartiles on the MOS's third and first, so that the
mapped scores spread like human opinion (mapped mean 57.1, sd 20.6; MOS 56.7, 21.1). It never
saturates, so strongly corrupted images keep their order. The TID2013 images land at I04 65, I06 71,
I08 72 (Good), I19 6 and I03 0.05 (Bad). Category: PaQ-2-PiQ's 20-point bands of ``quality``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from saliqa.errors import CheckpointError, WeightsNotFoundError
from saliqa.iqa.base import PatchGrid
from saliqa.iqa.matlab import imresize_half, mscn, rgb_to_gray
from saliqa.iqa.nss import (
    ImageTooSmall,
    NssQualityModel,
    SlidingMap,
    aggd_fit,
    gamma_at,
    logistic_quality,
    rate_in_chunks,
    shifted_products,
    sliding_features,
    to_blocks,
)

PATCH = 96
"""Patch side at the first scale (48 at the second)."""
MIN_PATCHES_PER_SIDE = 2
"""An image needs at least 2 x 2 patches (192 x 192 pixels)."""
SHIFTS: tuple[tuple[int, int], ...] = ((0, 1), (1, 0), (1, 1), (1, -1))
"""``circshift`` offsets of ``computefeature.m``: horizontal, vertical, main and secondary diagonal."""
N_FEATURES = 36

QUALITY_MIDPOINT = 4.56
"""NIQE mapped to quality 50 (see the module docstring: CLIVE quartile matching)."""
QUALITY_WIDTH = 1.47
"""Logistic width of the quality map, in NIQE units."""

PARAM_KEYS: tuple[tuple[str, str], ...] = (
    ("pop_mu", "pop_cov"),  # the LIVE release as saliqa ships it (niqe_image_params.mat)
    ("mu_prisparam", "cov_prisparam"),  # LIVE modelparameters.mat, pyiqa's niqe_modelparameters.mat
    ("mu_pris_param", "cov_pris_param"),  # BasicSR's niqe_pris_params.npz
)
"""Key pairs (mean, covariance) accepted in a parameter file, tried in this order."""


@dataclass
class NiqeResult:
    """NIQE of a batch of ``B`` images."""

    score: torch.Tensor
    """(B,) float64, lower is better; NaN when fewer than 2 patches have all 36 features."""
    patch_score: torch.Tensor
    """(B, rows, cols) float64 NIQE distance of each 96x96 patch (or sliding window) on :attr:`grid`; NaN =
    not rated."""
    features: torch.Tensor
    """(B, H // 96, W // 96, 36) float64 features of the full patches (the cropped-off border has none)."""
    grid: PatchGrid


def load_niqe_params(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Pristine ``(mu (36,), cov (36, 36))`` from a ``.mat`` (or BasicSR ``.npz``) file; see :data:`PARAM_KEYS`."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(
            f"NIQE parameter file not found: {path}. Put the LIVE release's pristine model there "
            "(niqe_image_params.mat with pop_mu/pop_cov, or modelparameters.mat / pyiqa's "
            "niqe_modelparameters.mat), or pass params_path."
        )
    try:
        data = dict(np.load(path)) if path.suffix == ".npz" else _loadmat(path)
    except Exception as error:  # any unreadable file: one clear message
        raise CheckpointError(f"cannot read NIQE parameters from {path}: {error}") from error
    for mu_key, cov_key in PARAM_KEYS:
        if mu_key in data and cov_key in data:
            mu = np.asarray(data[mu_key], dtype=np.float64).ravel()
            cov = np.asarray(data[cov_key], dtype=np.float64)
            if mu.shape != (N_FEATURES,) or cov.shape != (N_FEATURES, N_FEATURES):
                raise CheckpointError(
                    f"{path}: NIQE needs a 36-vector and a 36x36 matrix, got {mu.shape} and {cov.shape}"
                )
            return mu, cov
    keys = sorted(k for k in data if not k.startswith("__"))
    raise CheckpointError(
        f"{path} is not a NIQE pristine model: expected keys {' / '.join('+'.join(p) for p in PARAM_KEYS)}, "
        f"found {keys}"
    )


def _loadmat(path: Path) -> dict[str, np.ndarray]:
    from scipy.io import loadmat

    return loadmat(path)


def patch_features(coeffs: torch.Tensor) -> torch.Tensor:
    """NIQE's 18 features (``computefeature.m``) of MSCN blocks ``(..., h, w)`` -> ``(..., 18)``."""
    alpha, left, right, index = aggd_fit(coeffs.flatten(-2))
    root = torch.sqrt(gamma_at(index, 1) / gamma_at(index, 3))
    features = [alpha, (left * root + right * root) / 2]
    for pair in shifted_products(coeffs, SHIFTS):
        alpha, left, right, index = aggd_fit(pair)
        root = torch.sqrt(gamma_at(index, 1) / gamma_at(index, 3))
        beta_l, beta_r = left * root, right * root
        mean = (beta_r - beta_l) * (gamma_at(index, 2) / gamma_at(index, 1))
        features += [alpha, mean, beta_l, beta_r]
    return torch.stack(features, dim=-1)


def niqe_features(gray: torch.Tensor) -> torch.Tensor:
    """The 36 features of each 96x96 patch of grey images ``(B, 1, H, W)`` whose sides are multiples of 96.

    Returns ``(B, H/96, W/96, 36)`` float64: 18 at full scale, then 18 at half scale.
    """
    image = gray.to(torch.float64)
    per_scale = []
    for scale in (1, 2):
        coeffs, _, _ = mscn(image, padding="replicate")
        per_scale.append(patch_features(to_blocks(coeffs, PATCH // scale)))
        if scale == 1:
            image = imresize_half(image)
    return torch.cat(per_scale, dim=-1)


def _nan_mean_cov(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MATLAB ``nanmean`` (per feature) and ``nancov`` (complete rows) of ``(B, n, F)``, and the row counts."""
    valid = ~torch.isnan(features)
    zero = torch.zeros((), dtype=features.dtype, device=features.device)
    mean = torch.where(valid, features, zero).sum(dim=1) / valid.sum(dim=1)
    complete = valid.all(dim=-1, keepdim=True)  # (B, n, 1)
    n_complete = complete.sum(dim=1).to(features.dtype)  # (B, 1)
    mean_complete = torch.where(complete, features, zero).sum(dim=1) / n_complete
    centred = torch.where(complete, features - mean_complete[:, None], zero)
    cov = centred.transpose(1, 2) @ centred / (n_complete[..., None] - 1)
    return mean, cov, n_complete[:, 0]


def matlab_pinv(matrix: torch.Tensor) -> torch.Tensor:
    """MATLAB ``pinv``: SVD, singular values below ``max(size) * eps(max singular value)`` dropped."""
    u, s, vh = torch.linalg.svd(matrix)
    largest = s[..., :1]
    eps = torch.pow(2.0, torch.floor(torch.log2(largest)) - 52)  # MATLAB eps(x) for normal x
    tol = max(matrix.shape[-2:]) * eps
    inv_s = torch.where(s > tol, 1.0 / s, torch.zeros_like(s))
    return (vh.transpose(-2, -1) * inv_s[..., None, :]) @ u.transpose(-2, -1)


def _distance(diff: torch.Tensor, metric: torch.Tensor) -> torch.Tensor:
    """``sqrt((d * P) * d')`` for row vectors ``d`` (..., F) and a per-image ``P`` broadcastable to them."""
    return torch.sqrt(((diff[..., None, :] @ metric)[..., 0, :] * diff).sum(dim=-1))


def niqe(
    images: torch.Tensor,
    mu_pristine: torch.Tensor,
    cov_pristine: torch.Tensor,
    max_pixels: int | None = None,
    sliding: SlidingMap | None = None,
) -> NiqeResult:
    """NIQE of ``(B, 3, H, W)`` (or grey ``(B, 1, H, W)``) float in [0, 1] holding ``uint8 / 255``.

    Raises :class:`~saliqa.iqa.nss.ImageTooSmall` below 192 x 192 pixels (2 x 2 patches), or below the
    sliding window. An image with fewer than 2 patches whose 36 features are all defined (e.g. uniform)
    gets a NaN score rather than an error, so one flat image does not fail a whole batch. The batch is
    processed in chunks of at most ``max_pixels`` pixels (see :func:`~saliqa.iqa.nss.chunk_size`); results
    do not depend on it. ``sliding``: the local map's windows instead of the release's 96-pixel tiles
    (the score is the same either way).
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected (B, 3, H, W) or (B, 1, H, W), got shape {tuple(images.shape)}")
    _, _, height, width = images.shape
    if min(height // PATCH, width // PATCH) < MIN_PATCHES_PER_SIDE:
        side = MIN_PATCHES_PER_SIDE * PATCH
        raise ImageTooSmall(f"too small for NIQE ({width}x{height} < {side}x{side} pixels)")
    if sliding is not None:
        sliding.grid(height, width)  # raises ImageTooSmall below one window
    return rate_in_chunks(
        images, max_pixels, lambda chunk: _niqe_chunk(chunk, mu_pristine, cov_pristine, sliding)
    )


def _niqe_chunk(
    images: torch.Tensor, mu_pristine: torch.Tensor, cov_pristine: torch.Tensor, sliding: SlidingMap | None
) -> NiqeResult:
    """:func:`niqe` of one chunk of a validated batch."""
    batch, _, height, width = images.shape
    rows, cols = height // PATCH, width // PATCH
    whole = rgb_to_gray(images)
    gray = whole[..., : rows * PATCH, : cols * PATCH]
    features = niqe_features(gray)  # (B, rows, cols, 36)
    flat = features.reshape(batch, rows * cols, N_FEATURES)

    mu_p = mu_pristine.to(device=flat.device, dtype=torch.float64)
    cov_p = cov_pristine.to(device=flat.device, dtype=torch.float64)
    mu_d, cov_d, n_complete = _nan_mean_cov(flat)
    defined = n_complete >= 2
    cov_d = torch.where(defined[:, None, None], cov_d, torch.zeros_like(cov_d))
    metric = matlab_pinv((cov_p + cov_d) / 2)  # (B, 36, 36)

    score = _distance(mu_p - mu_d, metric)
    score = torch.where(defined, score, torch.full_like(score, math.nan))
    if sliding is not None:  # each window's distance, by the metric of the release's score
        windows = sliding_features(whole, sliding, "replicate", patch_features)  # (B, r, c, 36)
        per_window = _distance(mu_p - windows, metric[:, None, None])
        patch_score = torch.where(defined[:, None, None], per_window, torch.full_like(per_window, math.nan))
        return NiqeResult(score, patch_score, features, sliding.grid(height, width))
    per_patch = _distance(mu_p - flat, metric[:, None])  # NaN features give NaN
    per_patch = torch.where(defined[:, None], per_patch, torch.full_like(per_patch, math.nan))

    grid = PatchGrid.regular(height, width, PATCH)
    patch_score = torch.full((batch, *grid.shape), math.nan, dtype=torch.float64, device=flat.device)
    patch_score[:, :rows, :cols] = per_patch.reshape(batch, rows, cols)
    return NiqeResult(score=score, patch_score=patch_score, features=features, grid=grid)


def niqe_quality(score: torch.Tensor) -> torch.Tensor:
    """NIQE score -> 0-100 quality, higher is better (the CLIVE-calibrated logistic of the module docstring)."""
    return logistic_quality(score, QUALITY_MIDPOINT, QUALITY_WIDTH)


class NIQE(NssQualityModel):
    """NIQE as a :class:`QualityModel`, with a 96x96 patch map or, after :meth:`use_sliding_map`, a map of
    sliding windows (see the module docstring).

    ``params_path``: the pristine model (``.mat`` with ``pop_mu``/``pop_cov`` or ``mu_prisparam``/
    ``cov_prisparam``); ``None`` asks :func:`saliqa.iqa.weights.find_weights` for ``"niqe"``.
    """

    name = "niqe"
    score_range = (0.0, 20.0)
    quality_midpoint, quality_width = QUALITY_MIDPOINT, QUALITY_WIDTH

    def __init__(self, params_path: str | Path | None = None, device: str | torch.device = "cpu") -> None:
        if params_path is None:
            from saliqa.iqa.weights import find_weights

            params_path = find_weights("niqe")
        self.params_path = Path(params_path).expanduser()
        mu, cov = load_niqe_params(self.params_path)
        super().__init__(device, {"params": self.params_path})
        self.mu_pristine, self.cov_pristine = torch.from_numpy(mu), torch.from_numpy(cov)

    def measure(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, PatchGrid]:
        result = niqe(images, self.mu_pristine, self.cov_pristine, sliding=self.sliding_map)
        return result.score, result.patch_score, result.grid
