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
from saliqa.iqa.registry import judge_label

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
"""Okabe & Ito's colour-blind-safe palette: every figure's colours come from it, in this order."""
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.prop_cycle": plt.cycler(color=OKABE_ITO),
    "svg.fonttype": "path",
    "svg.hashsalt": "saliqa",
}
"""One style for every figure: one font (shipped with matplotlib, so the same everywhere), one palette; SVG
text drawn as paths, so a figure looks the same without its fonts and holds no text a viewer could run."""
plt.rcParams.update(STYLE)
PNG_DPI = 300


def series_style(k: int) -> dict[str, object]:
    """Colour and marker of the ``k``-th line: Okabe-Ito's 8 colours, then the same colours with the next
    marker, so even 19 lines stay apart without leaving the colour-blind-safe palette."""
    return {"color": OKABE_ITO[k % len(OKABE_ITO)], "marker": MARKERS[(k // len(OKABE_ITO)) % len(MARKERS)]}


def svg_twin(path: Path) -> Path:
    """The SVG file written beside a figure's PNG."""
    return path.with_suffix(".svg")


def _save(fig: plt.Figure, path: Path) -> None:
    """The figure as a PNG at 300 dpi and as an SVG beside it, each written atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=PNG_DPI, bbox_inches="tight", metadata={"Software": None})
    with atomic_path(svg_twin(path)) as tmp:
        fig.savefig(tmp, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)


def _judge(ratings: pd.DataFrame) -> str:
    names = ratings["iqa"].dropna().unique()
    return ", ".join(judge_label(str(n)) for n in names) or "?"


def plot_quality_histogram(ratings: pd.DataFrame, path: str | Path, score_label: str | None = None) -> Path:
    """Histogram of the judge's scores over the rated images (the study's Figure 2).

    ``score_label`` names the axis, e.g. "PIQE score (lower is better)".
    """
    path = Path(path)
    ok = ratings[ratings["status"] == "ok"]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    scores = ok["score"].to_numpy(dtype=float)
    ax.hist(scores[np.isfinite(scores)], bins=40, color=OKABE_ITO[0], edgecolor="white")
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
    colours = [OKABE_ITO[1] if c in keep else "#8c8c8c" for c in CATEGORIES]
    bars = ax.bar(CATEGORIES, values, color=colours)
    ax.bar_label(bars, labels=[str(v) for v in values])
    ax.set_ylabel("images")
    title = f"{_judge(ratings)} categories"
    ax.set_title(title + (f" (kept for the split: {', '.join(keep)})" if keep else ""))
    _save(fig, path)
    return path
