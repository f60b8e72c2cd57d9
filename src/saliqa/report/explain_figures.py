"""Figures of the explain stage: the study's example panels, agreement against severity beside the
baselines, the randomisation test and the change under distortion.

Colours are Okabe-Ito (colour-blind safe); maps use viridis (quality: higher is better) and magma
(attribution: higher is more attention). Text from data is shown as plain text (no mathtext).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from saliqa.report.eval_figures import _plain
from saliqa.report.figures import OKABE_ITO, _save

REFERENCE_NAMES = {
    "quality": "quality map (higher = better)",
    "damage": "damage map (higher = worse)",
    "quality_gradcam": "judge's own Grad-CAM",
}
BASELINE_STYLE = {"centre": ":", "sobel": "-."}


@dataclass
class Panel:
    """One image under one condition, as the study showed it."""

    clean: np.ndarray
    """(S, S, 3) uint8, the clean crop."""
    distorted: np.ndarray
    """(S, S, 3) uint8, the crop under ``condition``."""
    quality_map: np.ndarray
    """(rows, cols) patch quality of the distorted crop, 0-100, higher is better (NaN: not rated)."""
    row_edges: tuple[float, ...]
    col_edges: tuple[float, ...]
    attribution: np.ndarray
    """(S, S) the classifier's map of the distorted crop."""
    image_id: str
    condition: str
    method: str
    label: str
    target: str
    """The class the attribution map explains."""
    prediction: str
    """The class predicted for the distorted crop."""
    clean_quality: float
    quality: float
    judge: str


def _draw_panel(axes: np.ndarray, p: Panel, size: float = 8) -> None:
    (a, b), (c, d) = axes
    a.imshow(p.clean)
    a.set_title(f"clean: {p.judge} {p.clean_quality:.1f}\n{_plain(p.image_id)}", fontsize=size)
    b.imshow(p.distorted)
    b.set_title(f"{_plain(p.condition)}: {p.judge} {p.quality:.1f}", fontsize=size)
    c.imshow(p.distorted)
    mesh = c.pcolormesh(
        np.asarray(p.col_edges) - 0.5, np.asarray(p.row_edges) - 0.5, np.ma.masked_invalid(p.quality_map),
        cmap="viridis", vmin=0, vmax=100, alpha=0.55,
    )  # fmt: skip
    c.set_title("quality map (higher = better)", fontsize=size)
    d.imshow(p.distorted)
    d.imshow(p.attribution, cmap="magma", alpha=0.55)
    truth = f", true {_plain(p.label)}" if p.label != "?" else ""
    d.set_title(
        f"{_plain(p.method)} of {_plain(p.target)}\n(predicted {_plain(p.prediction)}{truth})", fontsize=size
    )
    for ax in (a, b, c, d):
        ax.set_xticks([])
        ax.set_yticks([])
    c.figure.colorbar(mesh, ax=c, fraction=0.046, pad=0.02)


def plot_panel(panel: Panel, path: str | Path) -> Path:
    """The study's panel: clean | distorted crop over quality map | attribution of the distorted crop."""
    fig, axes = plt.subplots(2, 2, figsize=(6.4, 6.6))
    _draw_panel(axes, panel)
    fig.tight_layout()
    _save(fig, Path(path))
    return Path(path)


def plot_panels(panels: list[Panel], path: str | Path, columns: int = 4) -> Path:
    """A grid of panels (each 2 x 2), e.g. every sampled image at its worst condition."""
    columns = max(1, min(columns, len(panels)))
    rows = max(1, -(-len(panels) // columns))
    fig, axes = plt.subplots(2 * rows, 2 * columns, figsize=(3.4 * columns, 3.6 * rows))
    axes = np.atleast_2d(axes)
    for ax in axes.ravel():
        ax.axis("off")
    for k, panel in enumerate(panels):
        r, c = divmod(k, columns)
        block = axes[2 * r : 2 * r + 2, 2 * c : 2 * c + 2]
        for ax in block.ravel():
            ax.axis("on")
        _draw_panel(block, panel, size=6)
    fig.tight_layout()
    _save(fig, Path(path))
    return Path(path)


def _condition_curve(rows: pd.DataFrame, corruption: str) -> pd.DataFrame:
    picked = rows[(rows["corruption"] == "none") | (rows["corruption"] == corruption)]
    return picked.sort_values("severity", kind="stable")


def agreement_figure(summary: pd.DataFrame, corruption: str, *, eval_set: str = "val", metric: str = "cc"):
    """One panel per reference map: each method's mean ``metric`` against severity (95 % intervals), its
    shuffled pairing dashed in the same colour, the centre and Sobel baselines in grey."""
    rows = summary[(summary["set"] == eval_set) & (summary["metric"] == metric)]
    rated = set(rows.loc[rows["n"] > 0, "reference"])
    references = [r for r in REFERENCE_NAMES if r in rated]
    missing = rows.loc[(rows["n"] == 0) & rows["note"].notna(), "note"].unique() if "note" in rows else []
    fig, axes = plt.subplots(1, max(1, len(references)), figsize=(4.6 * max(1, len(references)), 3.8))
    axes = np.atleast_1d(axes)
    methods = [m for m in rows["method"].unique() if not str(m).startswith("baseline:")]
    for ax, reference in zip(axes, references, strict=False):
        own = rows[rows["reference"] == reference]
        for k, method in enumerate(methods):
            curve = _condition_curve(own[own["method"] == method], corruption)
            if curve.empty or curve["n"].sum() == 0:
                continue
            x, y = curve["severity"].to_numpy(int), curve["mean"].to_numpy(float)
            colour = OKABE_ITO[k % len(OKABE_ITO)]
            ax.plot(x, y, marker="o", color=colour, label=_plain(method))
            ax.fill_between(
                x, curve["lo"].to_numpy(float), curve["hi"].to_numpy(float), color=colour, alpha=0.15
            )
            ax.plot(x, curve["shuffled"].to_numpy(float), linestyle="--", color=colour, linewidth=1,
                    label=f"{_plain(method)}, shuffled pairing")  # fmt: skip
            if k == 0:
                for name, style in BASELINE_STYLE.items():
                    ax.plot(x, curve[name].to_numpy(float), linestyle=style, color="grey", linewidth=1,
                            label=f"{name} baseline")  # fmt: skip
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_xticks(sorted(set(_condition_curve(own, corruption)["severity"].astype(int))))
        ax.set_xlabel("severity (0 = clean)")
        ax.set_ylabel(f"{metric.upper()} with the reference (higher = more alike)")
        ax.set_title(REFERENCE_NAMES[reference], fontsize=9)
        ax.grid(alpha=0.3)
    if len(axes) and axes[0].has_data():
        axes[0].legend(fontsize=7, loc="best")
    notes = "".join(f"\n(judge's own Grad-CAM: {_plain(n)})" for n in missing)
    fig.suptitle(f"attribution vs quality: {_plain(corruption)} on {_plain(eval_set)}{notes}")
    fig.tight_layout()
    return fig


def plot_agreement(
    summary: pd.DataFrame, corruption: str, path: str | Path, *, eval_set: str = "val"
) -> Path:
    _save(agreement_figure(summary, corruption, eval_set=eval_set), Path(path))
    return Path(path)


def sanity_figure(sanity: pd.DataFrame):
    """Similarity to the trained model's maps as blocks are randomised from the top (falls for a method
    that depends on the weights)."""
    metrics = list(dict.fromkeys(sanity["metric"]))
    fig, axes = plt.subplots(1, max(1, len(metrics)), figsize=(4.8 * max(1, len(metrics)), 4.0))
    axes = np.atleast_1d(axes)
    for ax, metric in zip(axes, metrics, strict=False):
        rows = sanity[sanity["metric"] == metric]
        for k, (method, curve) in enumerate(rows.groupby("method", sort=False)):
            curve = curve.sort_values("step")
            colour = OKABE_ITO[k % len(OKABE_ITO)]
            x = curve["step"].to_numpy(int)
            ax.plot(x, curve["mean"].to_numpy(float), marker="o", color=colour, label=_plain(method))
            ax.fill_between(
                x, curve["lo"].to_numpy(float), curve["hi"].to_numpy(float), color=colour, alpha=0.15
            )
            ax.set_xticks(x, [_plain(v) for v in curve["layer"]], rotation=60, fontsize=7, ha="right")
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_ylabel(f"{metric} to the trained model's map")
        ax.set_xlabel("randomised down to (cumulative, from the logits)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("cascading model-parameter randomisation (Adebayo et al. 2018)")
    fig.tight_layout()
    return fig


def plot_sanity(sanity: pd.DataFrame, path: str | Path) -> Path:
    _save(sanity_figure(sanity), Path(path))
    return Path(path)


def change_figure(eval_table: pd.DataFrame, eval_set: str = "val"):
    """Per image and condition: the drop of picture quality against the drop of the true-class probability
    (both clean minus distorted), one colour per corruption."""
    ok = eval_table[(eval_table["status"] == "ok") & (eval_table["set"] == eval_set)]
    clean = ok[ok["corruption"] == "none"].set_index("image_id")
    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    for k, (corruption, rows) in enumerate(ok[ok["corruption"] != "none"].groupby("corruption", sort=True)):
        base = clean.reindex(rows["image_id"])
        dq = base["quality"].to_numpy(float) - rows["quality"].to_numpy(float)
        dp = base["prob_true"].to_numpy(float) - rows["prob_true"].to_numpy(float)
        ax.scatter(dq, dp, s=9, alpha=0.6, color=OKABE_ITO[k % len(OKABE_ITO)], label=_plain(corruption))
    ax.axhline(0, color="black", linewidth=0.5)
    ax.axvline(0, color="black", linewidth=0.5)
    ax.set_xlabel("picture quality drop (clean - distorted; > 0 = worse)")
    ax.set_ylabel("true-class probability drop (> 0 = less sure)")
    if ax.has_data():
        ax.legend(fontsize=7, markerscale=1.5)
    ax.set_title(f"change under distortion on {_plain(eval_set)}")
    fig.tight_layout()
    return fig


def plot_change(eval_table: pd.DataFrame, path: str | Path, eval_set: str = "val") -> Path:
    _save(change_figure(eval_table, eval_set), Path(path))
    return Path(path)


def runs_figure(summaries: dict[str, pd.DataFrame], agreement: dict[str, pd.DataFrame], corruption: str):
    """Several runs side by side for one corruption: Top-1, mean quality and the CC of attention with the
    damage map against severity, a line per run (95 % intervals as bars)."""
    panels = [("top1_acc", "top1_lo", "top1_hi", "Top-1 accuracy"), ("mean_quality", "quality_lo", "quality_hi",
              "mean quality (0-100, higher = better)"), ("mean", "lo", "hi", "CC of attention with the damage map")]  # fmt: skip
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for k, run in enumerate(summaries):
        colour = OKABE_ITO[k % len(OKABE_ITO)]
        for ax, (column, lo, hi, title) in zip(axes, panels, strict=True):
            frame = agreement.get(run) if column == "mean" else summaries[run]
            if frame is None or frame.empty:
                continue
            rows = frame[frame["set"] == "val"]
            curve = _condition_curve(rows, corruption)
            if curve.empty:
                continue
            x, y = curve["severity"].to_numpy(int), curve[column].to_numpy(float)
            err = np.vstack(
                [
                    np.clip(y - curve[lo].to_numpy(float), 0, None),
                    np.clip(curve[hi].to_numpy(float) - y, 0, None),
                ]
            )
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=colour, label=_plain(run))
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("severity (0 = clean)")
            ax.set_xticks(sorted(set(x)))
            ax.grid(alpha=0.3)
    if axes[0].has_data():
        axes[0].legend(fontsize=8)
    fig.suptitle(f"runs compared: {_plain(corruption)} on val")
    fig.tight_layout()
    return fig


def plot_runs(summaries: dict[str, pd.DataFrame], agreement: dict[str, pd.DataFrame], corruption: str,
              path: str | Path) -> Path:  # fmt: skip
    _save(runs_figure(summaries, agreement, corruption), Path(path))
    return Path(path)
