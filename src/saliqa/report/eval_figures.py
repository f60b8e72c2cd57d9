"""Figures of the evaluate and train stages (the study's Figures 5, 8, 11 and 14, plus training curves).

Each public function builds its Figure with a private ``_*_figure`` function (which tests inspect) and
writes it atomically with ``_save``. Labels taken from data (corruption, set and judge names) are shown as
plain text: every ``$`` is escaped so matplotlib never reads them as mathtext.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from saliqa.corrupt import CLEAN
from saliqa.report.figures import OKABE_ITO, _save, series_style

# (point column, low column, high column, scale to the axis unit, panel name)
PANELS: tuple[tuple[str, str, str, float, str], ...] = (
    ("top1_acc", "top1_lo", "top1_hi", 100.0, "Top-1 accuracy"),
    ("top5_acc", "top5_lo", "top5_hi", 100.0, "Top-5 accuracy"),
    ("mean_quality", "quality_lo", "quality_hi", 1.0, "mean quality"),
)
_CLEAN_STYLE: dict[str, object] = {
    "marker": "*", "markersize": 11, "color": "black", "linestyle": "none", "label": "clean", "zorder": 3
}  # fmt: skip
_LINE_STYLE: dict[str, object] = {"markersize": 4, "linewidth": 1.2, "elinewidth": 0.7, "alpha": 0.85}


def _plain(text: object) -> str:
    """Text from data as matplotlib plain text: ``$`` escaped, so no mathtext is ever parsed."""
    return str(text).replace("$", r"\$")


def _quality_label(judge: str) -> str:
    return f"mean quality ({_plain(judge)}, 0-100)" if judge else "mean quality (0-100)"


def _set_rows(summary: pd.DataFrame, eval_set: str) -> pd.DataFrame:
    return summary[summary["set"].astype(str) == str(eval_set)]


def _curve(rows: pd.DataFrame, corruption: str) -> pd.DataFrame:
    """The clean point (severity 0) followed by one corruption's severities, ascending."""
    clean = rows[rows["corruption"] == CLEAN]
    own = rows[rows["corruption"] == corruption] if corruption != CLEAN else rows.iloc[0:0]
    return pd.concat([clean, own]).sort_values("severity", kind="stable")


def _yerr(curve: pd.DataFrame, point: str, lo: str, hi: str, scale: float) -> tuple[np.ndarray, ...]:
    """Error bar lengths; a percentile interval need not bracket the mean exactly, so clip at 0."""
    y = curve[point].to_numpy(dtype=float) * scale
    below = np.clip(y - curve[lo].to_numpy(dtype=float) * scale, 0.0, None)
    above = np.clip(curve[hi].to_numpy(dtype=float) * scale - y, 0.0, None)
    return y, np.vstack([below, above])


def _format_axes(axes: np.ndarray, severities: list[int], judge: str) -> None:
    for ax, (_, _, _, scale, name) in zip(axes, PANELS, strict=True):
        ax.set_xticks(severities, ["0 (clean)" if s == 0 else str(s) for s in severities])
        ax.set_xlabel("severity")
        ax.grid(alpha=0.3)
        if scale == 100.0:
            ax.set_ylabel(f"{name} (%)")
            ax.set_ylim(-2, 102)
        else:
            ax.set_ylabel(_quality_label(judge))
        ax.set_title(name)


def _n_text(curve: pd.DataFrame) -> str:
    counts = curve["n"].astype(int)
    if counts.empty:
        return "n = 0"
    low, high = int(counts.min()), int(counts.max())
    return f"n = {low}" if low == high else f"n = {low}-{high}"


def _plot_curve(ax: plt.Axes, curve: pd.DataFrame, panel: tuple, gid: str, **style: object) -> None:
    point, lo, hi, scale, _ = panel
    y, err = _yerr(curve, point, lo, hi, scale)
    bars = ax.errorbar(curve["severity"].to_numpy(dtype=int), y, yerr=err, capsize=3, **style)
    bars.lines[0].set_gid(gid)


def _corruption_figure(summary: pd.DataFrame, corruption: str, *, judge: str, eval_set: str) -> plt.Figure:
    """Three panels (Top-1, Top-5, mean quality) against severity for one corruption."""
    curve = _curve(_set_rows(summary, eval_set), corruption)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), squeeze=False)
    for ax, panel in zip(axes[0], PANELS, strict=True):
        _plot_curve(ax, curve, panel, f"{panel[0]}:{corruption}", marker="o", color=OKABE_ITO[0])
    _format_axes(axes[0], [int(s) for s in curve["severity"]], judge)
    title = f"{_plain(corruption)} on {_plain(eval_set)} ({_n_text(curve)}, 95% bootstrap intervals)"
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_corruption_curves(
    summary: pd.DataFrame, corruption: str, path: str | Path, *, judge: str = "", eval_set: str = "val"
) -> Path:
    """Accuracy and mean quality against severity for one corruption (the study's Figures 5/8/11/14)."""
    path = Path(path)
    _save(_corruption_figure(summary, corruption, judge=judge, eval_set=eval_set), path)
    return path


def _corruptions(rows: pd.DataFrame) -> list[str]:
    return [str(c) for c in pd.unique(rows["corruption"].astype(str)) if c != CLEAN]


def _overview_figure(summary: pd.DataFrame, *, judge: str, eval_set: str) -> plt.Figure:
    """All corruptions in one figure; Okabe-Ito colours with cycling markers keep 19 lines apart."""
    rows = _set_rows(summary, eval_set)
    names = _corruptions(rows)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), squeeze=False)
    clean = _curve(rows, CLEAN)
    for ax, panel in zip(axes[0], PANELS, strict=True):
        _plot_curve(ax, clean, panel, f"{panel[0]}:{CLEAN}", **_CLEAN_STYLE)
        for i, name in enumerate(names):
            style = {**series_style(i), **_LINE_STYLE}
            _plot_curve(ax, _curve(rows, name), panel, f"{panel[0]}:{name}", label=_plain(name), **style)
    severities = sorted({int(s) for s in rows["severity"]})
    _format_axes(axes[0], severities, judge)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        ncol=1 if len(names) < 12 else 2,
        fontsize="small",
        frameon=False,
    )
    fig.suptitle(f"All corruptions on {_plain(eval_set)} ({_n_text(rows)}, 95% bootstrap intervals)")
    fig.tight_layout()
    return fig


def plot_corruption_overview(
    summary: pd.DataFrame, path: str | Path, *, judge: str = "", eval_set: str = "val"
) -> Path:
    """Every corruption's curves in one figure, sharing the clean point, to compare corruptions at a glance."""
    path = Path(path)
    _save(_overview_figure(summary, judge=judge, eval_set=eval_set), path)
    return path


def heatmap_grid(summary: pd.DataFrame, *, eval_set: str = "val") -> tuple[list[str], list[int], np.ndarray]:
    """Top-1 accuracy (%) as rows = corruptions (first seen order), columns = severities; NaN where not run.

    The clean accuracy is the first column (severity 0), so every row can be read against it; a run of the
    clean condition alone gives one row named "none".
    """
    rows = _set_rows(summary, eval_set)
    names = _corruptions(rows) or [CLEAN]
    severities = [0, *sorted({int(s) for s in rows["severity"] if int(s) > 0})]
    grid = np.full((len(names), len(severities)), np.nan)
    clean = rows.loc[rows["corruption"] == CLEAN, "top1_acc"]
    for i, name in enumerate(names):
        own = rows[rows["corruption"] == name].set_index("severity")["top1_acc"]
        grid[i, 0] = float(clean.iloc[0]) if len(clean) else np.nan
        for j, severity in enumerate(severities[1:], start=1):
            if severity in own.index:
                grid[i, j] = float(own.loc[severity])
    return names, severities, grid * 100.0


def _heatmap_figure(summary: pd.DataFrame, *, eval_set: str) -> plt.Figure:
    names, severities, grid = heatmap_grid(summary, eval_set=eval_set)
    fig, ax = plt.subplots(figsize=(1.6 + 0.9 * len(severities), 1.4 + 0.38 * max(len(names), 1)))
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", vmin=0.0, vmax=100.0, aspect="auto")
    image.set_gid("top1_heatmap")
    for (i, j), value in np.ndenumerate(grid):
        if np.isfinite(value):
            colour = "black" if value > 60 else "white"
            ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize="small", color=colour)
    ax.set_xticks(range(len(severities)), ["clean" if s == 0 else str(s) for s in severities])
    ax.set_yticks(range(len(names)), [_plain(n) for n in names])
    ax.set_xlabel("severity")
    fig.colorbar(image, ax=ax, label="Top-1 accuracy (%)")
    n = _n_text(_set_rows(summary, eval_set))
    ax.set_title(f"Top-1 accuracy by corruption and severity on {_plain(eval_set)} ({n})")
    fig.tight_layout()
    return fig


def plot_corruption_heatmap(summary: pd.DataFrame, path: str | Path, *, eval_set: str = "val") -> Path:
    """Top-1 of every corruption x severity in one grid: reads at a glance with all 19 x 5 conditions."""
    path = Path(path)
    _save(_heatmap_figure(summary, eval_set=eval_set), path)
    return path


def _training_figure(log: pd.DataFrame) -> plt.Figure:
    """Loss and accuracy against epoch, to see over- or under-fitting at a glance (accuracies are fractions)."""
    log = log.sort_values("epoch", kind="stable")
    epochs = log["epoch"].to_numpy(dtype=int)
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    for column, name in (("train_loss", "train"), ("val_loss", "validation")):
        loss_ax.plot(epochs, log[column].to_numpy(dtype=float), marker="o", label=name, gid=column)
    for column, name in (
        ("train_acc", "train"),
        ("val_top1", "validation Top-1"),
        ("val_top5", "validation Top-5"),
    ):
        acc_ax.plot(epochs, 100.0 * log[column].to_numpy(dtype=float), marker="o", label=name, gid=column)
    losses = log[["train_loss", "val_loss"]].to_numpy(dtype=float)
    finite = losses[np.isfinite(losses)]
    if finite.size and finite.min() > 0 and finite.max() > 20 * finite.min():
        loss_ax.set_yscale("log")  # a first epoch from scratch can be orders of magnitude above the rest
    loss_ax.set_ylabel("loss")
    acc_ax.set_ylabel("accuracy (%)")
    acc_ax.set_ylim(-2, 102)
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("epoch")
        if len(epochs):
            ax.set_xticks(_epoch_ticks(epochs))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(f"Training over {len(epochs)} epochs")
    fig.tight_layout()
    return fig


def _epoch_ticks(epochs: np.ndarray) -> np.ndarray:
    """Integer epoch ticks, thinned to at most ~12 so long runs stay legible."""
    first, last = int(epochs.min()), int(epochs.max())
    step = max(1, int(np.ceil((last - first + 1) / 12)))
    return np.arange(first, last + 1, step)


def plot_training_curves(log: pd.DataFrame, path: str | Path) -> Path:
    """Training and validation loss and accuracy against epoch."""
    path = Path(path)
    _save(_training_figure(log), path)
    return path
