"""The five quality categories and the rules that map a score to one of them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CATEGORIES: tuple[str, ...] = ("Bad", "Poor", "Fair", "Good", "Excellent")
"""Worst to best, as in PaQ-2-PiQ and MATLAB's PIQE table."""


def categorize_quality(quality: np.ndarray | Sequence[float]) -> list[str | None]:
    """Category of a 0-100, higher-is-better quality: ``CATEGORIES[min(4, int(q // 20))]``.

    This is PaQ-2-PiQ's rule on its normalised score. NaN (an unrated image) gives ``None``.
    """
    q = np.asarray(quality, dtype=np.float64)
    out: list[str | None] = []
    for value in q.ravel():
        out.append(None if np.isnan(value) else CATEGORIES[int(min(4, max(0, value // 20)))])
    return out


def categorize_by_bands(
    score: np.ndarray | Sequence[float], upper_bounds: Sequence[float], labels: Sequence[str]
) -> list[str | None]:
    """Category of a score by ascending band upper bounds (inclusive); above the last bound: last label.

    ``labels`` has one more entry than ``upper_bounds``. NaN gives ``None``.
    """
    if len(labels) != len(upper_bounds) + 1:
        raise ValueError("labels must have exactly one more entry than upper_bounds")
    s = np.asarray(score, dtype=np.float64).ravel()
    index = np.searchsorted(np.asarray(upper_bounds, dtype=np.float64), s, side="left")
    return [None if np.isnan(v) else labels[i] for v, i in zip(s, index, strict=True)]
