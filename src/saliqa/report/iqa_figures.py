"""The figure of ``saliqa iqa validate``: human opinion against a judge's score, with the fitted mapping."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from saliqa.iqa.validation import LOGISTIC_FORMULA, LogisticFit
from saliqa.report.figures import OKABE_ITO, _save, plt


def direction(higher_is_better: bool) -> str:
    return "higher is better" if higher_is_better else "lower is better"


def plot_agreement(
    score: np.ndarray,
    mos: np.ndarray,
    fit: LogisticFit,
    path: str | Path,
    *,
    judge: str,
    higher_is_better: bool,
    data: str,
    mos_scale: str,
    srocc: float,
    plcc_logistic: float,
) -> Path:
    """Scatter of MOS against the judge's score (one dot per picture) with the fitted curve; PNG + SVG.

    Both axes say which way is better; the title gives n, SROCC (signed so that agreement is positive) and PLCC
    after the mapping; the legend names the mapping (the VQEG logistic, or the line it fell back to).
    """
    path = Path(path)
    score, mos = np.asarray(score, dtype=float), np.asarray(mos, dtype=float)
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    small = score.size > 2000
    ax.scatter(
        score,
        mos,
        s=4 if small else 10,
        alpha=0.35 if small else 0.6,
        color=OKABE_ITO[0],
        edgecolors="none",
        label=f"pictures (n = {score.size})",
    )
    if score.size:
        grid = np.linspace(float(score.min()), float(score.max()), 400)
        label = (
            f"VQEG logistic {LOGISTIC_FORMULA.split('=', 1)[1].strip()}"
            if fit.converged
            else "least-squares line (the logistic did not converge)"
        )
        ax.plot(grid, fit(grid), color=OKABE_ITO[3], linewidth=1.8, label=label)
    ax.set_xlabel(f"{judge} score ({direction(higher_is_better)})")
    ax.set_ylabel(f"MOS, {mos_scale} (higher is better)")
    ax.set_title(
        f"{judge} vs human opinion on {data}: SROCC {srocc:.3f}, PLCC (fitted) {plcc_logistic:.3f}"
        + ("\n(SROCC on -score: lower-is-better judge, positive = agreement)" if not higher_is_better else "")
    )
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), frameon=False, fontsize=7)  # off the dots
    ax.grid(True, linewidth=0.3, alpha=0.5)
    _save(fig, path)
    return path
