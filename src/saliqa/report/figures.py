"""Figures of the rating stage (the study's Figures 2 and 3), written as PNG files atomically."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from saliqa.io.atomic import atomic_path
from saliqa.iqa.categories import CATEGORIES


def _save(fig: plt.Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def _judge(ratings: pd.DataFrame) -> str:
    names = ratings["iqa"].dropna().unique()
    return ", ".join(str(n).upper() for n in names) or "?"


def plot_quality_histogram(ratings: pd.DataFrame, path: str | Path, score_label: str | None = None) -> Path:
    """Histogram of the judge's scores over the rated images (the study's Figure 2).

    ``score_label`` names the axis, e.g. "PIQE score (lower is better)".
    """
    path = Path(path)
    ok = ratings[ratings["status"] == "ok"]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    scores = ok["score"].to_numpy(dtype=float)
    ax.hist(scores[np.isfinite(scores)], bins=40, color="#4c72b0", edgecolor="white")
    ax.set_xlabel(score_label or f"{_judge(ratings)} score")
    ax.set_ylabel("images")
    ax.set_title(f"Quality scores of {len(ok)} rated images ({len(ratings) - len(ok)} not rated)")
    _save(fig, path)
    return path


def plot_category_counts(ratings: pd.DataFrame, path: str | Path, keep: tuple[str, ...] = ()) -> Path:
    """Images per quality category, kept categories highlighted (the study's Figure 3)."""
    path = Path(path)
    counts = ratings.loc[ratings["status"] == "ok", "category"].value_counts()
    values = [int(counts.get(c, 0)) for c in CATEGORIES]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    colours = ["#dd8452" if c in keep else "#8c8c8c" for c in CATEGORIES]
    bars = ax.bar(CATEGORIES, values, color=colours)
    ax.bar_label(bars, labels=[str(v) for v in values])
    ax.set_ylabel("images")
    title = f"{_judge(ratings)} categories"
    ax.set_title(title + (f" (kept for the split: {', '.join(keep)})" if keep else ""))
    _save(fig, path)
    return path
