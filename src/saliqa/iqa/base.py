"""The interface every no-reference quality model implements.

A model takes a batch of equal-size RGB images ``(B, 3, H, W)`` in [0, 1] and returns, per image, its own
``score`` (the model's scale and direction), ``quality`` (0-100, higher is better, comparable across models
only in direction), a ``category`` and a patch-quality map on a stated grid of pixel boxes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass(frozen=True)
class PatchGrid:
    """Geometry of a patch map: pixel edges of its rows and columns in the rated image.

    Patch ``(i, j)`` covers rows ``row_edges[i]:row_edges[i+1]`` and columns ``col_edges[j]:col_edges[j+1]``
    (edges may be fractional, as PaQ-2-PiQ's ``linspace`` grid is). The image is ``height`` x ``width``.
    """

    row_edges: tuple[float, ...]
    col_edges: tuple[float, ...]

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.row_edges) - 1, len(self.col_edges) - 1

    @property
    def height(self) -> float:
        return self.row_edges[-1]

    @property
    def width(self) -> float:
        return self.col_edges[-1]

    @classmethod
    def regular(cls, height: int, width: int, block: int) -> PatchGrid:
        """Blocks of ``block`` pixels from the top-left corner; the last row/column may be cut by the border."""
        rows = tuple(float(min(v, height)) for v in range(0, height + block - 1, block)) or (0.0,)
        cols = tuple(float(min(v, width)) for v in range(0, width + block - 1, block)) or (0.0,)
        if rows[-1] != height:
            rows = (*rows, float(height))
        if cols[-1] != width:
            cols = (*cols, float(width))
        return cls(rows, cols)

    @classmethod
    def linspace(cls, height: int, width: int, rows: int, cols: int) -> PatchGrid:
        """``rows`` x ``cols`` equal blocks with edges ``linspace(0, H, rows + 1)`` (PaQ-2-PiQ's grid)."""
        return cls(
            tuple(float(v) for v in np.linspace(0, height, rows + 1)),
            tuple(float(v) for v in np.linspace(0, width, cols + 1)),
        )


@dataclass
class QualityOutput:
    """What a quality model says about a batch of ``B`` equal-size images."""

    score: torch.Tensor
    """(B,) float64, the model's own scale and direction."""
    quality: torch.Tensor
    """(B,) float64 in [0, 100], higher is better."""
    category: list[str | None]
    """B of :data:`saliqa.iqa.categories.CATEGORIES`."""
    patch_map: torch.Tensor
    """(B, rows, cols) float32 patch quality on the 0-100 higher-is-better scale; NaN = patch not rated."""
    grid: PatchGrid
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    """Model-specific per-patch outputs, e.g. PIQE's masks, each (B, rows, cols)."""


class QualityModel(ABC):
    """A no-reference image quality model. Subclasses set the class attributes and implement ``rate``."""

    name: str
    """Short registry name, e.g. ``"piqe"``."""
    higher_is_better: bool
    """Direction of ``score``."""
    score_range: tuple[float, float]
    """Nominal range of ``score``, for plots."""

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)

    @abstractmethod
    def rate(self, images: torch.Tensor) -> QualityOutput:
        """Rate a batch of equal-size images ``(B, 3, H, W)`` float in [0, 1]."""

    def to(self, device: str | torch.device) -> QualityModel:
        self.device = torch.device(device)
        return self

    def use_precision(self, precision: str) -> None:
        """Evaluate's ``precision`` (:mod:`saliqa.precision`). Only a network judge uses ``"mixed"``; the
        statistics of the NSS models and PIQE would move in half precision, so they keep theirs."""

    def attribution_model(self) -> torch.nn.Module | None:
        """A differentiable module from images ``(B, 3, H, W)`` in [0, 1] to the picture score ``(B, 1)``, for
        attribution maps of the judge itself; ``None`` for models without gradients (the NSS models)."""
        return None

    def fingerprint(self) -> dict[str, str]:
        """What identifies this model's outputs: name, version and weight hashes (none for PIQE)."""
        return {"name": self.name}

    def __call__(self, images: torch.Tensor) -> QualityOutput:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected a batch (B, 3, H, W), got shape {tuple(images.shape)}")
        return self.rate(images.to(self.device))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, device={str(self.device)!r})"
