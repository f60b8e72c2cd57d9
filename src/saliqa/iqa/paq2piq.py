"""PaQ-2-PiQ (Ying et al., CVPR 2020), the RoIPool model, as a :class:`QualityModel`.

The network is :class:`saliqa.classify.p2p.P2PNet` with one output and the released weights. It takes RGB in
[0, 1] at native resolution with no mean/std normalisation. Per batch of equal-size images the body runs once;
then one RoI list pools, per image, the whole picture and the ``bh x bw`` blocks of the grid
(``linspace(0, H, bh + 1) x linspace(0, W, bw + 1)``, row-major), exactly as the official
``input_block_rois``: output 0 is the picture score, outputs 1.. the block scores.

``score`` is the raw prediction (MOS scale, ~0-100, higher is better). ``quality`` is the standalone
release's normalisation of it (:func:`normalise_score`); the category follows from ``quality``. The patch map
is the block predictions normalised the same way, so picture and patches share one 0-100 scale (the official
code leaves block scores raw; :meth:`PaQ2PiQ.predict` gives the raw ones). On CUDA the forward runs in plain
float32 (no TF32), so GPU and CPU scores agree to ~2e-5.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from saliqa.classify.models import read_weights_file, short_list, state_dict_of
from saliqa.classify.p2p import P2PNet
from saliqa.errors import CheckpointError
from saliqa.io.hashing import sha256_file
from saliqa.iqa.base import PatchGrid, QualityModel, QualityOutput
from saliqa.iqa.categories import categorize_quality
from saliqa.iqa.weights import find_weights

SCORE_MEAN = 72.59696108881171
SCORE_STD_LEFT = 7.798274017370107
SCORE_STD_RIGHT = 4.118047289170692
"""The standalone release's normalisation constants (training-set MOS mean and one-sided deviations)."""

DEFAULT_GRID = (20, 20)
"""The standalone release's block grid; the official demo also uses 5x5 and 32x32."""


def normalise_score(score: Tensor) -> Tensor:
    """Raw PaQ-2-PiQ scores -> 0-100 ``quality``, float64, as the standalone release's ``predict``.

    ``g < m``: ``max(0, m + m (g - m) / (4 sl))``; ``g > m``: ``min(100, m + (100 - m) (g - m) / (4 sr))``;
    ``g == m``: ``m``. A NaN stays NaN (an unrated image), where the release would return ``m``.
    """
    g = score.to(torch.float64)
    low = torch.clamp(SCORE_MEAN + SCORE_MEAN * (g - SCORE_MEAN) / (4 * SCORE_STD_LEFT), min=0.0)
    high = torch.clamp(SCORE_MEAN + (100 - SCORE_MEAN) * (g - SCORE_MEAN) / (4 * SCORE_STD_RIGHT), max=100.0)
    x = torch.where(g < SCORE_MEAN, low, torch.where(g > SCORE_MEAN, high, torch.full_like(g, SCORE_MEAN)))
    return torch.where(torch.isnan(g), g, x)


def block_rois(
    batch: int, height: int, width: int, grid: tuple[int, int], device: torch.device | str | None = None
) -> Tensor:
    """RoIs ``[b, x1, y1, x2, y2]`` (float32): per image its picture box, then the grid's blocks row-major.

    Edges are ``np.linspace`` in float64 cast to float32, as the official code builds them, so RoIPool's
    rounding of the box corners is the same.
    """
    rows, cols = grid
    y = np.linspace(0, height, rows + 1)
    x = np.linspace(0, width, cols + 1)
    per_image = [[0.0, 0.0, float(width), float(height)]]
    per_image += [[x[j], y[i], x[j + 1], y[i + 1]] for i in range(rows) for j in range(cols)]
    boxes = torch.tensor(per_image, dtype=torch.float32).repeat(batch, 1)
    index = torch.arange(batch, dtype=torch.float32).repeat_interleave(len(per_image)).unsqueeze(1)
    return torch.cat([index, boxes], dim=1).to(device)


@contextlib.contextmanager
def full_fp32(device: torch.device) -> Iterator[None]:
    """Plain float32 convolutions and matmuls on CUDA (no TF32) for the duration, then the caller's settings.

    cuDNN uses TF32 for float32 convolutions by default on Ampere and later, which moves PaQ-2-PiQ's scores by
    ~3e-3 and block scores by ~1e-2 (H100, 384x512): more than the official numbers' printed precision.
    """
    if device.type != "cuda":
        yield
        return
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = cudnn.allow_tf32, matmul.allow_tf32
    cudnn.allow_tf32 = matmul.allow_tf32 = False
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = saved


def _checked_grid(grid: tuple[int, int]) -> tuple[int, int]:
    if len(grid) != 2 or any(int(v) != v or v < 1 for v in grid):
        raise ValueError(f"grid must be two positive integers (rows, cols), got {grid!r}")
    return int(grid[0]), int(grid[1])


def load_paq2piq_state(path: Path, reference: dict[str, Tensor]) -> dict[str, Tensor]:
    """The float32 state dict in ``path`` (official fastai ``{'model': ...}``, plain, or ``module.``-prefixed),
    checked against ``reference``'s keys and shapes; weights-only unpickling.

    BatchNorm ``num_batches_tracked`` counters may be absent (older PyTorch): they do not affect inference.
    """
    tensors = state_dict_of(read_weights_file(path), path)
    missing = {k for k in reference if k not in tensors and not k.endswith("num_batches_tracked")}
    unexpected = set(tensors) - set(reference)
    if missing or unexpected:
        parts = [f"missing keys: {short_list(missing)}"] if missing else []
        parts += [f"unexpected keys: {short_list(unexpected)}"] if unexpected else []
        raise CheckpointError(
            f"{path} is not a PaQ-2-PiQ RoIPool model state dict ({'; '.join(parts)}); expected the release "
            f"file RoIPoolModel-fit.10.bs.120.pth or pyiqa's copy of it"
        )
    wrong = [k for k, v in tensors.items() if v.shape != reference[k].shape]
    if wrong:
        shapes = ", ".join(
            f"{k} {tuple(tensors[k].shape)} != {tuple(reference[k].shape)}" for k in sorted(wrong)[:4]
        )
        raise CheckpointError(f"{path} has tensors of the wrong shape for PaQ-2-PiQ: {shapes}")
    state = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in tensors.items()}
    for key, value in reference.items():
        state.setdefault(key, torch.zeros_like(value, device="cpu"))
    return state


def build_paq2piq_net(path: Path) -> P2PNet:
    """``P2PNet(1)`` holding the weights in ``path``, in eval mode on the CPU.

    Built on the meta device and filled by assignment: no random initialisation, so it is fast and leaves the
    global RNG untouched.
    """
    with torch.device("meta"):
        net = P2PNet(1)
    state = load_paq2piq_state(path, net.state_dict())
    net.load_state_dict(state, strict=True, assign=True)
    return net.eval()


class PaQ2PiQ(QualityModel):
    """PaQ-2-PiQ's RoIPool model: picture score and a ``grid`` block map from one body pass per batch.

    ``weights``: a weights file (or a folder holding it); default: :func:`saliqa.iqa.weights.find_weights`.
    """

    name = "paq2piq"
    higher_is_better = True
    score_range = (0.0, 100.0)

    def __init__(
        self,
        weights: str | Path | None = None,
        device: str | torch.device = "cpu",
        grid: tuple[int, int] = DEFAULT_GRID,
    ) -> None:
        super().__init__(device)
        self.grid_shape = _checked_grid(grid)
        self.weights_path = find_weights("paq2piq", weights)
        self.net = build_paq2piq_net(self.weights_path).to(self.device)
        self._sha256: str | None = None

    def to(self, device: str | torch.device) -> PaQ2PiQ:
        super().to(device)
        self.net.to(self.device)
        return self

    @torch.inference_mode()
    def predict(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Raw predictions for ``(B, 3, H, W)`` RGB in [0, 1]: picture ``(B,)`` and blocks ``(B, bh, bw)``, float32."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected a batch (B, 3, H, W), got shape {tuple(images.shape)}")
        if images.dtype == torch.uint8:
            images = images.to(torch.float32) / 255.0
        elif not images.is_floating_point():
            raise ValueError(f"expected float images in [0, 1] (or uint8), got dtype {images.dtype}")
        batch, _, height, width = images.shape
        if height == 0 or width == 0:
            raise ValueError(f"empty image of size {height}x{width}")
        x = images.to(self.device, torch.float32)
        boxes = block_rois(batch, height, width, self.grid_shape, device=self.device)
        with full_fp32(self.device):
            out = self.net.forward_rois(self.net.features(x), boxes).view(batch, -1)
        return out[:, 0], out[:, 1:].reshape(batch, *self.grid_shape)

    def rate(self, images: Tensor) -> QualityOutput:
        picture, blocks = self.predict(images)
        quality = normalise_score(picture)
        return QualityOutput(
            score=picture.to(torch.float64),
            quality=quality,
            category=categorize_quality(quality.cpu().numpy()),
            patch_map=normalise_score(blocks).to(torch.float32),
            grid=PatchGrid.linspace(images.shape[2], images.shape[3], *self.grid_shape),
        )

    def attribution_model(self) -> torch.nn.Module:
        """The network itself: its whole-image box gives the picture score, on the ResNet-18 body."""
        return self.net

    def fingerprint(self) -> dict[str, str]:
        """Name, grid and the weights file's sha256 (hashed once, on first use)."""
        if self._sha256 is None:
            self._sha256 = sha256_file(self.weights_path)
        rows, cols = self.grid_shape
        return {"name": self.name, "weights_sha256": self._sha256, "grid": f"{rows}x{cols}"}
