"""BRISQUE, the Blind/Referenceless Image Spatial Quality Evaluator, as the LIVE release computes it.

Mittal, Moorthy and Bovik, "No-reference image quality assessment in the spatial domain", IEEE TIP 2012.
``brisquescore.m``: the grey image (MATLAB ``rgb2gray`` rounded to integers) gives 18 features per scale
(``brisque_feature.m``): a GGD fit of the MSCN coefficients (7x7 Gaussian, sigma 7/6, **zero** borders as
``filter2(..., 'same')``), shape and variance, and for the products with the four neighbours
(``circshift`` by (0,1), (1,0), (1,1), (-1,1), wrapping around the image) an asymmetric GGD fit: shape,
mean, left and right variance. The second scale is MATLAB's bicubic ``imresize(im, 0.5)`` (antialiased,
doubles, not rounded). MATLAB writes the 36 features as text with ``%f`` (6 decimals); ``svm-scale``
maps each to [-1, 1] with the LIVE ranges and writes ``%g`` (6 significant digits); ``svm-predict``
evaluates the epsilon-SVR with an RBF kernel: ``score = sum_i coef_i exp(-gamma |x - sv_i|^2) - rho``.
Both text round trips are reproduced (they move scores by ~1e-4); the SVR is exact float64.
Lower is better: the SVR was trained on LIVE DMOS (0 = undistorted, ~100 = worst).

Patch map: the same 36 features for each full 96x96 patch (48x48 at the second scale), computed from
the whole image's MSCN maps (so patch borders see their true neighbours in the Gaussian window), with
the neighbour products wrapping within the patch (as NIQE's ``blkproc``), then the same scaling and
SVR. The SVR was trained on whole images, so patch scores are noisier than the image score. Patches
cut by the border are NaN (not rated), as are patches whose statistics are undefined (flat patches).

Sliding map (an option, not the release: :class:`~saliqa.iqa.nss.SlidingMap`): the same SVR score for
overlapping windows (default 96 pixels every 16) over the whole image, the last ones flush with the
border, so a 224 crop gets 9 x 9 values instead of 2 x 2 (plus an unrated border). Features come from the
whole image's MSCN maps as above; windows of 96 every 96 pixels on an image whose sides are multiples of
96 are exactly the patch map above. The score is the release's in either case.

``quality`` (0-100, higher is better) is ``100 / (1 + exp((score - 32.1) / 14.6))``. The score estimates
LIVE DMOS, but ``100 - score`` would tie everything beyond 0 and 100 (clean photos score below 0,
heavy corruptions above 100) and spreads CLIVE's authentic photos far above their MOS (median 74 vs
61.5). So, as for NIQE, the logistic is fitted to human opinion: on the 627 CLIVE photos
(``shared/data/clive``) this BRISQUE has quartiles 17.4 / 25.5 / 35.6 and the MOS 44.2 / 61.5 / 73.3;
midpoint and width put BRISQUE's first and third quartiles on the MOS's third and first (mapped mean
56.7, sd 21.5; MOS 56.7, 21.1). The TID2013 images land at I04 90, I06 89, I08 86 (Excellent), I19 6
and I03 1 (Bad). Category: PaQ-2-PiQ's 20-point bands of ``quality``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from saliqa.classify.models import read_weights_file
from saliqa.errors import CheckpointError, WeightsNotFoundError
from saliqa.iqa.base import PatchGrid
from saliqa.iqa.matlab import imresize_half, mscn, rgb_to_gray
from saliqa.iqa.nss import (
    ImageTooSmall,
    NssQualityModel,
    SlidingMap,
    aggd_fit,
    gamma_at,
    ggd_fit,
    logistic_quality,
    rate_in_chunks,
    shifted_products,
    sliding_features,
    to_blocks,
)

PATCH = 96
"""Patch side of the map at the first scale (48 at the second)."""
SHIFTS: tuple[tuple[int, int], ...] = ((0, 1), (1, 0), (1, 1), (-1, 1))
"""``circshift`` offsets of ``brisque_feature.m`` (the last diagonal differs from NIQE's)."""
N_FEATURES = 36
LIVE_GAMMA = 0.05
LIVE_RHO = -153.591
"""RBF ``gamma`` and ``rho`` of the LIVE model (``allmodel``); needed for pyiqa's ``.pth``, which lacks them."""
QUALITY_MIDPOINT = 32.1
"""BRISQUE mapped to quality 50 (see the module docstring: CLIVE quartile matching)."""
QUALITY_WIDTH = 14.6
"""Logistic width of the quality map, in BRISQUE points."""


@dataclass(frozen=True)
class SvrModel:
    """An epsilon-SVR with an RBF kernel: ``sum_i coef_i exp(-gamma |x - sv_i|^2) - rho``."""

    support_vectors: np.ndarray
    """(n, 36) float64."""
    coef: np.ndarray
    """(n,) float64."""
    gamma: float
    rho: float


@dataclass(frozen=True)
class FeatureRanges:
    """``svm-scale -r`` ranges: target ``[lower, upper]`` and per-feature ``[minimum, maximum]``."""

    lower: float
    upper: float
    minimum: np.ndarray
    maximum: np.ndarray


@dataclass
class BrisqueResult:
    """BRISQUE of a batch of ``B`` images."""

    score: torch.Tensor
    """(B,) float64, lower is better; NaN when the statistics are undefined (e.g. a uniform image)."""
    patch_score: torch.Tensor
    """(B, rows, cols) float64 BRISQUE of each 96x96 patch (or sliding window) on :attr:`grid`; NaN = not
    rated."""
    features: torch.Tensor
    """(B, 36) float64 image features, before scaling."""
    grid: PatchGrid


def _missing(kind: str, path: Path, what: str) -> WeightsNotFoundError:
    return WeightsNotFoundError(
        f"BRISQUE {kind} file not found: {path}. Put {what} there, or pass its path explicitly."
    )


def load_svr_model(path: str | Path) -> SvrModel:
    """The SVR from libsvm's text model (LIVE ``allmodel``) or pyiqa's ``brisque_svm_weights.pth``.

    pyiqa's file is a pair ``(sv_coef (n,), sv (n, 36))``: its ``brisque_arch.py`` unpacks the loaded pair
    as ``sv_coef, sv`` and transposes ``sv``; the file carries no ``gamma``/``rho``, so the
    LIVE values are used (pyiqa hard-codes the same). This layout was read from pyiqa's source, not
    checked on the file itself; ``sv`` stored as ``(36, n)`` is accepted too. If the file holds float32
    tensors (piq's original does), scores differ from the text model's in the sixth digit or so.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise _missing("model", path, "the LIVE release's SVR model (allmodel / brisque_live_allmodel)")
    try:
        if path.suffix in (".pth", ".pt"):
            return _load_pth(path)
        return _load_libsvm(path)
    except CheckpointError:
        raise
    except Exception as error:  # any unreadable file: one clear message
        raise CheckpointError(f"cannot read the BRISQUE model {path}: {error}") from error


def _load_pth(path: Path) -> SvrModel:
    obj = read_weights_file(path)  # weights-only: a file that needs code is refused, never run
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2 and all(torch.is_tensor(t) for t in obj)):
        raise CheckpointError(f"{path} is not pyiqa's BRISQUE weights (a pair sv_coef, sv of tensors)")
    coef, sv = (t.detach().to(torch.float64).numpy() for t in obj)
    coef = coef.ravel()
    if sv.shape == (N_FEATURES, coef.shape[0]) and coef.shape[0] != N_FEATURES:
        sv = sv.T  # pyiqa transposes after loading; accept the file either way round
    return _checked(path, SvrModel(np.ascontiguousarray(sv), coef, LIVE_GAMMA, LIVE_RHO))


def _load_libsvm(path: Path) -> SvrModel:
    header: dict[str, str] = {}
    lines = path.read_text().splitlines()
    for start, line in enumerate(lines):
        if line.strip() == "SV":
            break
        key, _, value = line.partition(" ")
        header[key] = value.strip()
    else:
        raise CheckpointError(f"{path} is not a libsvm model: no 'SV' line")
    if header.get("svm_type") not in ("epsilon_svr", "nu_svr") or header.get("kernel_type") != "rbf":
        raise CheckpointError(
            f"{path}: BRISQUE needs an RBF support-vector regression, got svm_type "
            f"{header.get('svm_type')!r}, kernel_type {header.get('kernel_type')!r}"
        )
    rows = [line.split() for line in lines[start + 1 :] if line.strip()]
    coef = np.array([float(r[0]) for r in rows], dtype=np.float64)
    sv = np.zeros((len(rows), N_FEATURES), dtype=np.float64)  # libsvm omits zero features
    for i, row in enumerate(rows):
        for item in row[1:]:
            index, _, value = item.partition(":")
            sv[i, int(index) - 1] = float(value)
    model = SvrModel(sv, coef, float(header["gamma"]), float(header["rho"].split()[0]))
    if "total_sv" in header and int(header["total_sv"]) != len(rows):
        raise CheckpointError(f"{path}: header says {header['total_sv']} support vectors, found {len(rows)}")
    return _checked(path, model)


def _checked(path: Path, model: SvrModel) -> SvrModel:
    n = model.coef.shape[0]
    if model.support_vectors.shape != (n, N_FEATURES):
        raise CheckpointError(
            f"{path}: expected support vectors (n, 36) and n coefficients, got "
            f"{model.support_vectors.shape} and {model.coef.shape}"
        )
    return model


def load_ranges(path: str | Path) -> FeatureRanges:
    """``svm-scale`` range file: a ``lower upper`` line, then ``index min max`` (or ``min max``) per feature.

    Lines starting with ``#`` and the ``x`` marker are skipped.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise _missing(
            "ranges", path, "the LIVE release's feature ranges (allrange / brisque_live_allrange.txt)"
        )
    try:
        rows = [line.split() for line in path.read_text().splitlines()]
        rows = [r for r in rows if r and not r[0].startswith("#") and r[0] != "x"]
        lower, upper = (float(v) for v in rows[0])
        minimum, maximum = np.full(N_FEATURES, np.nan), np.full(N_FEATURES, np.nan)
        for k, row in enumerate(rows[1:]):
            index, lo, hi = (int(row[0]) - 1, row[1], row[2]) if len(row) == 3 else (k, row[0], row[1])
            minimum[index], maximum[index] = float(lo), float(hi)
    except Exception as error:  # any malformed file: one clear message
        raise CheckpointError(f"cannot read BRISQUE feature ranges from {path}: {error}") from error
    if np.isnan(minimum).any() or np.isnan(maximum).any():
        raise CheckpointError(f"{path}: expected ranges for 36 features")
    return FeatureRanges(lower, upper, minimum, maximum)


def single_scale_features(coeffs: torch.Tensor) -> torch.Tensor:
    """NSS features of coefficient maps ``(..., h, w)`` at one scale -> ``(..., 18)`` (``brisque_feature.m``)."""
    alpha, sigma, _ = ggd_fit(coeffs.flatten(-2))
    out = [alpha, sigma**2]
    for pair in shifted_products(coeffs, SHIFTS):
        alpha, left, right, index = aggd_fit(pair)
        const = torch.sqrt(gamma_at(index, 1)) / torch.sqrt(gamma_at(index, 3))
        mean = (right - left) * (gamma_at(index, 2) / gamma_at(index, 1)) * const
        out += [alpha, mean, left**2, right**2]
    return torch.stack(out, dim=-1)


def brisque_features(
    gray: torch.Tensor, patch: int | None = PATCH
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Image features ``(B, 36)`` of grey ``(B, 1, H, W)`` 0-255, and those of each full ``patch`` block.

    Patch features are ``(B, H // patch, W // patch, 36)`` (``None`` when ``patch`` is ``None`` or no
    full patch fits).
    """
    image = gray.to(torch.float64)
    _, _, height, width = image.shape
    rows, cols = (height // patch, width // patch) if patch else (0, 0)
    whole, blocks = [], []
    for scale in (1, 2):
        coeffs, _, _ = mscn(image, padding="zero")
        whole.append(single_scale_features(coeffs[:, 0]))
        if rows and cols:
            side = patch // scale
            region = coeffs[..., : rows * side, : cols * side]
            blocks.append(single_scale_features(to_blocks(region, side)))
        if scale == 1:
            image = imresize_half(image)
    return torch.cat(whole, dim=-1), (torch.cat(blocks, dim=-1) if blocks else None)


def _text_round_trip(values: np.ndarray, fmt: str) -> np.ndarray:
    """``values`` written with a C format and read back (MATLAB ``fprintf`` / libsvm ``printf``)."""
    flat = [float(format(v, fmt)) for v in values.ravel().tolist()]
    return np.array(flat, dtype=np.float64).reshape(values.shape)


def svm_scale(features: np.ndarray, ranges: FeatureRanges) -> np.ndarray:
    """libsvm ``svm-scale -r``: the ``%f`` features to ``[lower, upper]``, written back with ``%g``.

    Values equal to a bound map exactly to ``lower``/``upper``; values outside the range are not
    clipped; a feature whose range is a single value is dropped (0 in the sparse vector).
    """
    x = _text_round_trip(features, "f")
    lo, hi, minimum, maximum = ranges.lower, ranges.upper, ranges.minimum, ranges.maximum
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = lo + (hi - lo) * (x - minimum) / (maximum - minimum)
    scaled = np.where(x == minimum, lo, np.where(x == maximum, hi, scaled))
    scaled = np.where(maximum == minimum, 0.0, scaled)
    return _text_round_trip(scaled, "g")


def svr_predict(scaled: torch.Tensor, model: SvrModel, chunk: int = 4096) -> torch.Tensor:
    """``sum_i coef_i exp(-gamma |x - sv_i|^2) - rho`` for rows ``(N, 36)``, float64 on ``scaled``'s device.

    A row-wise reduction rather than a matrix product, so a row's result does not depend on the others.
    """
    sv = torch.from_numpy(model.support_vectors).to(scaled.device)
    coef = torch.from_numpy(model.coef).to(scaled.device)
    out = [
        (torch.exp(-model.gamma * ((part[:, None, :] - sv[None]) ** 2).sum(dim=-1)) * coef).sum(dim=-1)
        - model.rho
        for part in scaled.split(chunk)
    ]
    return torch.cat(out) if out else scaled.new_zeros(0)


def predict(features: torch.Tensor, model: SvrModel, ranges: FeatureRanges) -> torch.Tensor:
    """BRISQUE scores of raw features ``(..., 36)``: the text round trips, scaling and the SVR."""
    lead = features.shape[:-1]
    raw = features.detach().reshape(-1, N_FEATURES).cpu().numpy()
    scaled = torch.from_numpy(svm_scale(raw, ranges)).to(features.device)
    return svr_predict(scaled, model).reshape(lead)


def brisque(
    images: torch.Tensor,
    model: SvrModel,
    ranges: FeatureRanges,
    max_pixels: int | None = None,
    sliding: SlidingMap | None = None,
) -> BrisqueResult:
    """BRISQUE of ``(B, 3, H, W)`` (or grey ``(B, 1, H, W)``) float in [0, 1] holding ``uint8 / 255``.

    Any non-empty size is accepted (patches need 96 x 96); an image whose statistics are undefined
    (e.g. uniform: no negative MSCN products) gets a NaN score, as libsvm would, rather than an error,
    so one flat image does not fail a whole batch. Processed in chunks of at most ``max_pixels`` pixels
    (see :func:`~saliqa.iqa.nss.chunk_size`); results do not depend on it. ``sliding``: the local map's
    windows instead of the 96-pixel patches (the score is the same either way; an image smaller than a
    window is :class:`~saliqa.iqa.nss.ImageTooSmall`).
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected (B, 3, H, W) or (B, 1, H, W), got shape {tuple(images.shape)}")
    _, _, height, width = images.shape
    if height < 1 or width < 1:
        raise ImageTooSmall(f"empty image ({width}x{height})")
    if sliding is not None:
        sliding.grid(height, width)  # raises ImageTooSmall below one window
    return rate_in_chunks(images, max_pixels, lambda chunk: _brisque_chunk(chunk, model, ranges, sliding))


def _brisque_chunk(
    images: torch.Tensor, model: SvrModel, ranges: FeatureRanges, sliding: SlidingMap | None
) -> BrisqueResult:
    """:func:`brisque` of one chunk of a validated batch."""
    batch, _, height, width = images.shape
    gray = rgb_to_gray(images)
    features, blocks = brisque_features(gray, patch=None if sliding is not None else PATCH)
    score = predict(features, model, ranges)
    if sliding is not None:
        windows = sliding_features(gray, sliding, "zero", single_scale_features)  # (B, r, c, 36)
        patch_score = predict(windows, model, ranges)
        return BrisqueResult(score, patch_score, features, sliding.grid(height, width))
    grid = PatchGrid.regular(height, width, PATCH)
    patch_score = torch.full((batch, *grid.shape), math.nan, dtype=torch.float64, device=score.device)
    if blocks is not None:
        patch_score[:, : blocks.shape[1], : blocks.shape[2]] = predict(blocks, model, ranges)
    return BrisqueResult(score=score, patch_score=patch_score, features=features, grid=grid)


def brisque_quality(score: torch.Tensor) -> torch.Tensor:
    """BRISQUE score -> 0-100 quality, higher is better (the CLIVE-calibrated logistic of the module docstring)."""
    return logistic_quality(score, QUALITY_MIDPOINT, QUALITY_WIDTH)


class BRISQUE(NssQualityModel):
    """BRISQUE as a :class:`QualityModel`, with a 96x96 patch map or, after :meth:`use_sliding_map`, a map
    of sliding windows (see the module docstring).

    ``model_path``: libsvm text model (or pyiqa's ``.pth``); ``ranges_path``: the ``svm-scale`` ranges.
    ``None`` asks :func:`saliqa.iqa.weights.find_weights` for ``"brisque_model"`` / ``"brisque_ranges"``.
    """

    name = "brisque"
    score_range = (0.0, 100.0)
    quality_midpoint, quality_width = QUALITY_MIDPOINT, QUALITY_WIDTH

    def __init__(
        self,
        model_path: str | Path | None = None,
        ranges_path: str | Path | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if model_path is None or ranges_path is None:
            from saliqa.iqa.weights import find_weights

            model_path = find_weights("brisque_model") if model_path is None else model_path
            ranges_path = find_weights("brisque_ranges") if ranges_path is None else ranges_path
        self.model_path, self.ranges_path = Path(model_path).expanduser(), Path(ranges_path).expanduser()
        self.model = load_svr_model(self.model_path)
        self.ranges = load_ranges(self.ranges_path)
        super().__init__(device, {"model": self.model_path, "ranges": self.ranges_path})

    def measure(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, PatchGrid]:
        result = brisque(images, self.model, self.ranges, sliding=self.sliding_map)
        return result.score, result.patch_score, result.grid
