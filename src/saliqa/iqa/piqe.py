"""PIQE, the Perception-based Image Quality Evaluator, as MATLAB's ``piqe.m`` computes it.

Venkatanath et al., "Blind image quality evaluation using perception based features", NCC 2015.
The image is cut into 16x16 blocks of its MSCN coefficients. Spatially active blocks (variance > 0.1)
are examined for noticeable artifacts (a flat 6-pixel segment on a block edge) and for Gaussian noise
(centre-surround deviation); each distorted active block adds a distortion ``D_k`` and the score is
``100 (sum D_k + 1) / (N_active + 1)``: 0 is best, 100 worst (a uniform image scores 100).

Everything is vectorised over the batch and the blocks, in float64, on the images' device. Details
follow MATLAB, not the ``pypiqe`` port (which uses OpenCV's BGR grey weights, symmetric padding and
rescales the grey by its maximum).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from saliqa.iqa.base import PatchGrid, QualityModel, QualityOutput
from saliqa.iqa.categories import categorize_by_bands
from saliqa.iqa.matlab import mscn, rgb_to_gray

BLOCK = 16
"""Block side in pixels."""
ACTIVITY_THRESHOLD = 0.1
"""A block is spatially active when the unbiased variance of its MSCN exceeds this."""
IMPAIRED_THRESHOLD = 0.1
"""An edge segment is flat (noticeable artifact) when its unbiased standard deviation is below this."""
SEGMENT = 6
"""Pixels per edge segment; ``BLOCK - SEGMENT + 1 = 11`` sliding segments per edge."""

_CENTRE = (7, 8)
"""0-based block columns of the noise criterion's centre (MATLAB columns 8 and 9)."""
_SURROUND = tuple(c for c in range(BLOCK) if c not in (7, 9))
"""MATLAB deletes column 8, then column 9 of what is left (original 10): columns 7 and 9, 0-based."""

PIQE_BAND_UPPER_BOUNDS: tuple[float, ...] = (20.0, 35.0, 50.0, 80.0)
PIQE_BAND_LABELS: tuple[str, ...] = ("Excellent", "Good", "Fair", "Poor", "Bad")
"""MATLAB's table: Excellent 0-20, Good 21-35, Fair 36-50, Poor 51-80, Bad 81-100. The table is in
integers and leaves gaps (e.g. 20 < s < 21); saliqa makes each upper bound inclusive and gives a score
in a gap to the next, worse band: Excellent s <= 20, Good 20 < s <= 35, Fair 35 < s <= 50,
Poor 50 < s <= 80, Bad s > 80."""


@dataclass
class PiqeResult:
    """PIQE of a batch of ``B`` images: scores and per-block masks on the padded ``nby x nbx`` block grid."""

    score: torch.Tensor
    """(B,) float64 in [0, 100], lower is better."""
    activity: torch.Tensor
    """(B, nby, nbx) bool, spatially active (salient) blocks."""
    noticeable: torch.Tensor
    """(B, nby, nbx) bool, active blocks with a noticeable artifact (blockiness or a sudden flat edge)."""
    noise: torch.Tensor
    """(B, nby, nbx) bool, active blocks with Gaussian-like noise."""
    block_distortion: torch.Tensor
    """(B, nby, nbx) float64, ``D_k`` of each block (0 for inactive blocks)."""
    grid: PatchGrid
    """The blocks in pixels of the original (unpadded) image; the last row/column may be cut."""

    def pixel_masks(self) -> dict[str, torch.Tensor]:
        """The masks at pixel resolution ``(B, H, W)`` of the original size, like MATLAB's outputs.

        Keys ``"activity"``, ``"noticeable"``, ``"noise"``.
        """
        height, width = int(self.grid.height), int(self.grid.width)
        masks = {"activity": self.activity, "noticeable": self.noticeable, "noise": self.noise}
        return {
            name: mask.repeat_interleave(BLOCK, dim=1).repeat_interleave(BLOCK, dim=2)[:, :height, :width]
            for name, mask in masks.items()
        }


def _unbiased_var(x: torch.Tensor) -> torch.Tensor:
    """Variance over the last dimension with ``n - 1``, two-pass like MATLAB's ``var``."""
    centred = x - x.mean(dim=-1, keepdim=True)
    return (centred * centred).sum(dim=-1) / (x.shape[-1] - 1)


def _unbiased_std(x: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(_unbiased_var(x))


def block_criteria(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """PIQE's per-block tests on MSCN blocks ``(..., 16, 16)`` (float64).

    Returns ``(variance, activity, noticeable, noise)``, each of shape ``(...)``: the unbiased MSCN
    variance, and the three masks (noticeable and noise only where active).
    """
    lead = blocks.shape[:-2]
    variance = _unbiased_var(blocks.reshape(*lead, BLOCK * BLOCK))
    activity = variance > ACTIVITY_THRESHOLD

    # Noticeable artifacts: 11 sliding 6-pixel segments on each edge (top, right, bottom, left).
    top, right, bottom, left = blocks[..., 0, :], blocks[..., :, -1], blocks[..., -1, :], blocks[..., :, 0]
    edges = torch.stack((top, right, bottom, left), dim=-2)
    segments = edges.unfold(-1, SEGMENT, 1)  # (..., 4, 11, 6)
    flat = _unbiased_std(segments) < IMPAIRED_THRESHOLD
    noticeable = flat.flatten(-2).any(dim=-1) & activity

    # Noise: centre-surround deviation ratio against the block's standard deviation.
    centre = blocks[..., list(_CENTRE)].reshape(*lead, -1)
    surround = blocks[..., list(_SURROUND)].reshape(*lead, -1)
    ratio = _unbiased_std(centre) / _unbiased_std(surround)  # 0/0 = NaN -> 0; c/0 = inf stays inf
    ratio = torch.where(torch.isnan(ratio), torch.zeros_like(ratio), ratio)
    block_sigma = torch.sqrt(variance)
    beta = torch.abs(block_sigma - ratio) / torch.maximum(block_sigma, ratio)  # inf/inf = NaN: not noisy
    noise = (block_sigma > 2.0 * beta) & activity
    return variance, activity, noticeable, noise


def piqe(images: torch.Tensor, max_pixels: int | None = None) -> PiqeResult:
    """PIQE of a batch ``(B, 3, H, W)`` (or grey ``(B, 1, H, W)``) float in [0, 1] holding ``uint8 / 255``.

    Faithful to MATLAB ``piqe.m``: replicate-pad bottom/right to a multiple of 16, ``rgb2gray`` rounded
    to integers 0..255, MSCN with a 7x7 Gaussian (sigma 7/6, replicate borders), then the block criteria.
    The batch is processed in chunks of at most ``max_pixels`` pixels (at least one image per chunk):
    on CPU small chunks stay in cache and are several times faster than one huge batch; the default is
    2**20 pixels on CPU and 2**25 elsewhere. Results do not depend on the chunking.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected (B, 3, H, W) or (B, 1, H, W), got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        images = images.to(torch.float64) / 255.0
    elif not images.is_floating_point():
        raise ValueError(f"expected float images in [0, 1] (or uint8), got dtype {images.dtype}")
    batch, _, height, width = images.shape
    if height == 0 or width == 0:
        raise ValueError(f"empty image of size {height}x{width}")
    if max_pixels is None:
        max_pixels = 2**20 if images.device.type == "cpu" else 2**25
    per_chunk = max(1, max_pixels // (height * width))
    if batch > per_chunk:
        parts = [_piqe_chunk(chunk) for chunk in images.split(per_chunk)]
        return PiqeResult(
            score=torch.cat([p.score for p in parts]),
            activity=torch.cat([p.activity for p in parts]),
            noticeable=torch.cat([p.noticeable for p in parts]),
            noise=torch.cat([p.noise for p in parts]),
            block_distortion=torch.cat([p.block_distortion for p in parts]),
            grid=parts[0].grid,
        )
    return _piqe_chunk(images)


def _piqe_chunk(images: torch.Tensor) -> PiqeResult:
    """:func:`piqe` on one chunk of a validated float batch."""
    batch, _, height, width = images.shape

    # Replicate padding commutes with the per-pixel grey conversion, so pad the cheaper grey image.
    gray = rgb_to_gray(images)
    pad_h, pad_w = -height % BLOCK, -width % BLOCK
    if pad_h or pad_w:
        gray = F.pad(gray, (0, pad_w, 0, pad_h), mode="replicate")
    coeffs, _, _ = mscn(gray, padding="replicate")

    nby, nbx = coeffs.shape[2] // BLOCK, coeffs.shape[3] // BLOCK
    blocks = coeffs.reshape(batch, nby, BLOCK, nbx, BLOCK).permute(0, 1, 3, 2, 4)  # (B, nby, nbx, 16, 16)
    variance, activity, noticeable, noise = block_criteria(blocks)

    distortion = noticeable.to(torch.float64) * (1.0 - variance) + noise.to(torch.float64) * variance
    distortion = torch.where(activity, distortion, torch.zeros_like(distortion))
    n_active = activity.sum(dim=(1, 2)).to(torch.float64)
    score = (distortion.sum(dim=(1, 2)) + 1.0) / (n_active + 1.0) * 100.0
    return PiqeResult(
        score=score,
        activity=activity,
        noticeable=noticeable,
        noise=noise,
        block_distortion=distortion,
        grid=PatchGrid.regular(height, width, BLOCK),
    )


def piqe_category(score: torch.Tensor) -> list[str | None]:
    """MATLAB's PIQE quality band of each score (see :data:`PIQE_BAND_LABELS` for the gaps)."""
    return categorize_by_bands(score.detach().cpu().numpy(), PIQE_BAND_UPPER_BOUNDS, PIQE_BAND_LABELS)


class PIQE(QualityModel):
    """PIQE as a :class:`QualityModel`: no weights, 16x16 block map.

    ``patch_map`` is ``clip(100 (1 - D_k), 0, 100)`` on active blocks and NaN on inactive ones: PIQE
    rates only spatially active (salient) blocks, an inactive block contributes nothing to the score, so
    calling it "perfect" would be wrong. ``D_k`` may leave [0, 1] (``1 - v`` for a noticeable-only block
    with MSCN variance ``v > 1``, ``v`` for a noise-only one), hence the clip.
    """

    name = "piqe"
    higher_is_better = False
    score_range = (0.0, 100.0)

    def rate(self, images: torch.Tensor) -> QualityOutput:
        result = piqe(images)
        patch = torch.clamp(100.0 * (1.0 - result.block_distortion), 0.0, 100.0)
        patch = torch.where(result.activity, patch, torch.full_like(patch, float("nan")))
        return QualityOutput(
            score=result.score,
            quality=torch.clamp(100.0 - result.score, 0.0, 100.0),  # D_k > 1 can push PIQE past 100
            category=piqe_category(result.score),
            patch_map=patch.to(torch.float32),
            grid=result.grid,
            extras={"activity": result.activity, "noticeable": result.noticeable, "noise": result.noise},
        )
