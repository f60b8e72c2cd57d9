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

A model trained by saliqa (:func:`saliqa.iqa.training.train_paq2piq`, format ``saliqa-paq2piq``) loads the same
way; its file carries the normalisation of its own training set (the release's constants are FLIVE's training
MOS mean and one-sided deviations), so ``quality`` and the categories mean the same for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from saliqa.precision import channels_last, half_precision, runs_mixed

SCORE_MEAN = 72.59696108881171
SCORE_STD_LEFT = 7.798274017370107
SCORE_STD_RIGHT = 4.118047289170692
"""The standalone release's normalisation constants (training-set MOS mean and one-sided deviations)."""

DEFAULT_GRID = (20, 20)
"""The standalone release's block grid; the official demo also uses 5x5 and 32x32."""

TRAINED_FORMAT = "saliqa-paq2piq"
TRAINED_VERSION = 1
"""The format tag and version of the weights files saliqa's PaQ-2-PiQ training writes."""


@dataclass(frozen=True)
class Normalisation:
    """Where raw scores sit: the training MOS mean ``m`` and its one-sided deviations ``sl`` (below ``m``) and
    ``sr`` (above), ``sqrt(mean((g - m)^2))`` over each side, as the standalone release defines them."""

    mean: float = SCORE_MEAN
    std_left: float = SCORE_STD_LEFT
    std_right: float = SCORE_STD_RIGHT


RELEASE_NORMALISATION = Normalisation()


def normalise_score(score: Tensor, norm: Normalisation = RELEASE_NORMALISATION) -> Tensor:
    """Raw PaQ-2-PiQ scores -> 0-100 ``quality``, float64, as the standalone release's ``predict``.

    ``g < m``: ``max(0, m + m (g - m) / (4 sl))``; ``g > m``: ``min(100, m + (100 - m) (g - m) / (4 sr))``;
    ``g == m``: ``m``. A NaN stays NaN (an unrated image), where the release would return ``m``. ``norm``: the
    release's constants, or those a trained model's file carries.
    """
    m, sl, sr = norm.mean, norm.std_left, norm.std_right
    g = score.to(torch.float64)
    low = torch.clamp(m + m * (g - m) / (4 * sl), min=0.0)
    high = torch.clamp(m + (100 - m) * (g - m) / (4 * sr), max=100.0)
    x = torch.where(g < m, low, torch.where(g > m, high, torch.full_like(g, m)))
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
    """The float32 state dict in ``path`` (official fastai ``{'model': ...}``, plain, ``module.``-prefixed, or
    saliqa's trained format), checked against ``reference``'s keys and shapes; weights-only unpickling.

    BatchNorm ``num_batches_tracked`` counters may be absent (older PyTorch): they do not affect inference.
    """
    return checked_paq2piq_state(state_dict_of(read_weights_file(path), path), reference, path)


def trained_normalisation(obj: Any, path: Path) -> Normalisation:
    """The normalisation a weights file's contents carry: its own for saliqa's trained format, else the
    release's (official and pyiqa files hold only weights)."""
    if not isinstance(obj, Mapping) or obj.get("format") != TRAINED_FORMAT:
        return RELEASE_NORMALISATION
    version = obj.get("version")
    if not isinstance(version, int) or version > TRAINED_VERSION:
        raise CheckpointError(
            f"{path} is a {TRAINED_FORMAT} file of version {version!r}; this saliqa reads up to "
            f"{TRAINED_VERSION}: upgrade saliqa"
        )
    values = obj.get("normalisation")
    try:
        norm = Normalisation(float(values["mean"]), float(values["std_left"]), float(values["std_right"]))
    except (TypeError, KeyError, ValueError):
        raise CheckpointError(
            f"{path} lacks its normalisation (mean, std_left, std_right); retrain it"
        ) from None
    if not (norm.std_left > 0 and norm.std_right > 0 and 0 < norm.mean < 100):
        raise CheckpointError(f"{path} has an unusable normalisation {norm}; retrain it")
    return norm


def checked_paq2piq_state(
    tensors: dict[str, Tensor], reference: dict[str, Tensor], path: Path | str
) -> dict[str, Tensor]:
    """``tensors`` as float32, checked against ``reference``'s keys and shapes (see :func:`load_paq2piq_state`)."""
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
    """``P2PNet(1)`` holding the weights in ``path``, in eval mode on the CPU."""
    return build_paq2piq(path)[0]


def build_paq2piq(path: Path) -> tuple[P2PNet, Normalisation]:
    """``P2PNet(1)`` holding the weights in ``path`` (eval mode, CPU) and the normalisation of its scores.

    Built on the meta device and filled by assignment: no random initialisation, so it is fast and leaves the
    global RNG untouched. The file is read once.
    """
    with torch.device("meta"):
        net = P2PNet(1)
    obj = read_weights_file(path)
    norm = trained_normalisation(obj, path)
    state = checked_paq2piq_state(state_dict_of(obj, path), net.state_dict(), path)
    net.load_state_dict(state, strict=True, assign=True)
    return net.eval(), norm


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
        net, self.normalisation = build_paq2piq(self.weights_path)
        self.net = net.to(self.device)
        self._sha256: str | None = None
        self.precision = "float32"

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
        mixed = runs_mixed(self.precision, self.device)
        with full_fp32(self.device):
            with half_precision(self.device, mixed):  # the body only: the head's scores stay float32
                features = self.net.features(channels_last(x, mixed))
            out = self.net.forward_rois(features.float(), boxes).view(batch, -1)
        return out[:, 0], out[:, 1:].reshape(batch, *self.grid_shape)

    def use_precision(self, precision: str) -> None:
        """``"mixed"``: the ResNet body in half precision on CUDA (its RoI head, and so every score, in
        float32), with the body's weights channels-last; part of the fingerprint where it applies."""
        self.precision = precision
        if runs_mixed(precision, self.device):
            self.net.body.to(memory_format=torch.channels_last)

    def rate(self, images: Tensor) -> QualityOutput:
        picture, blocks = self.predict(images)
        quality = normalise_score(picture, self.normalisation)
        return QualityOutput(
            score=picture.to(torch.float64),
            quality=quality,
            category=categorize_quality(quality.cpu().numpy()),
            patch_map=normalise_score(blocks, self.normalisation).to(torch.float32),
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
        identity = {"name": self.name, "weights_sha256": self._sha256, "grid": f"{rows}x{cols}"}
        if runs_mixed(self.precision, self.device):
            identity["precision"] = self.precision
        return identity
