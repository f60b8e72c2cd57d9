"""The curves of a PaQ-2-PiQ training (:func:`saliqa.iqa.training.train_paq2piq`): losses and validation agreement
with MOS against epoch, in the project's figure style."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from saliqa.report.figures import OKABE_ITO, _save


def _ticks(epochs: np.ndarray) -> np.ndarray:
    """Integer epoch ticks, at most ~12."""
    first, last = int(epochs.min()), int(epochs.max())
    step = max(1, int(np.ceil((last - first + 1) / 12)))
    return np.arange(first, last + 1, step)


def _training_figure(log: pd.DataFrame, best_epoch: int | None = None) -> plt.Figure:
    """Mean squared error (train, validation; all boxes and picture boxes) and validation SROCC/PLCC of the
    picture score against epoch; the best epoch marked."""
    log = log.sort_values("epoch", kind="stable")
    epochs = log["epoch"].to_numpy(dtype=int)
    fig, (loss_ax, corr_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    lines: tuple[tuple[str, str, str, str], ...] = (
        ("train_loss", "train, all boxes", OKABE_ITO[0], "-"),
        ("train_picture_loss", "train, pictures", OKABE_ITO[0], "--"),
        ("val_loss", "validation, all boxes", OKABE_ITO[1], "-"),
        ("val_picture_loss", "validation, pictures", OKABE_ITO[1], "--"),
    )
    picture_only = all(
        np.array_equal(log[a].to_numpy(dtype=float), log[b].to_numpy(dtype=float), equal_nan=True)
        for a, b in (("train_loss", "train_picture_loss"), ("val_loss", "val_picture_loss"))
    )
    if picture_only:  # one box per picture: the two losses are one
        lines = (("train_loss", "train", OKABE_ITO[0], "-"), ("val_loss", "validation", OKABE_ITO[1], "-"))
    for column, label, colour, style in lines:
        values = log[column].to_numpy(dtype=float)
        if np.isfinite(values).any():
            loss_ax.plot(epochs, values, marker="o", color=colour, linestyle=style, label=label, gid=column)
    losses = log[[c for c, *_ in lines]].to_numpy(dtype=float)
    finite = losses[np.isfinite(losses)]
    if finite.size and finite.min() > 0 and finite.max() > 20 * finite.min():
        loss_ax.set_yscale("log")  # a start from scratch can begin orders of magnitude above the rest
    loss_ax.set_ylabel("mean squared error (MOS units², lower is better)")
    for column, label, colour in (
        ("val_srocc", "SROCC", OKABE_ITO[2]),
        ("val_plcc", "PLCC", OKABE_ITO[3]),
        ("val_patch_srocc", "SROCC, patches", OKABE_ITO[4]),
    ):
        values = log[column].to_numpy(dtype=float)
        if np.isfinite(values).any():
            corr_ax.plot(epochs, values, marker="o", color=colour, label=label, gid=column)
    corr_ax.set_ylabel("validation correlation with MOS (higher is better)")
    correlations = log[["val_srocc", "val_plcc", "val_patch_srocc"]].to_numpy(dtype=float)
    lowest = np.nanmin(correlations) if np.isfinite(correlations).any() else 0.0
    corr_ax.set_ylim(min(0.0, float(lowest)) - 0.05, 1.02)
    corr_ax.axhline(0, color="grey", linewidth=0.6)
    for ax in (loss_ax, corr_ax):
        ax.set_xlabel("epoch")
        if len(epochs):
            ax.set_xticks(_ticks(epochs))
        if best_epoch:
            ax.axvline(
                best_epoch, color="black", linestyle=":", linewidth=0.9, label=f"best (epoch {best_epoch})"
            )
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    fig.suptitle(f"PaQ-2-PiQ training over {len(epochs)} epochs")
    fig.tight_layout()
    return fig


def plot_paq2piq_training(log: pd.DataFrame, path: str | Path, *, best_epoch: int | None = None) -> Path:
    """Write the training curves as PNG (300 dpi) and SVG beside it; returns the PNG's path."""
    path = Path(path)
    _save(_training_figure(log, best_epoch), path)
    return path
