"""Statistics across conditions and images, each with a seeded 95 % bootstrap interval over images.

- ``pearson_top1_quality`` / ``spearman_top1_quality``: over the distorted conditions of a set, the
  correlation of the Top-1 drop with the mean-quality drop (both against the clean condition).
- ``auc_quality_error``: how well low picture quality predicts a misclassification: the probability that a
  misclassified crop has lower quality than a correctly classified one (ties count half; 0.5 = no
  information, 1 = perfect). Pooled over every condition (``corruption = "all"``) and per condition.
- ``spearman_quality_prob_drop``: per distorted condition, over images, the Spearman correlation of the
  picture-quality drop with the drop of the true-class probability.
- ``compare`` summaries: the mean of each agreement number over images, with the baselines beside it.

Resampling draws images, not rows, so an image's conditions stay together. :func:`eval_statistics_file` reads
one set's ok rows, six columns, at a time from the eval table on disk, never the whole table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
from scipy.stats import rankdata

from saliqa.io.tables import iter_row_groups, read_frame
from saliqa.seeding import rng_for
from saliqa.stats import bootstrap_mean_ci

LEVEL = 0.95
CLEAN = "none"
STATS_COLUMNS = ["statistic", "set", "corruption", "severity", "n", "value", "lo", "hi"]
SUMMARY_KEY = ["set", "corruption", "severity", "method", "reference", "metric", "grid"]
BASELINE_COLUMNS = {
    "centre": "baseline:centre",
    "sobel": "baseline:sobel",
    "random": "baseline:random",
}


def _interval(samples: np.ndarray) -> tuple[float, float]:
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return float("nan"), float("nan")
    alpha = (1 - LEVEL) / 2
    lo, hi = np.quantile(finite, [alpha, 1 - alpha])
    return float(lo), float(hi)


def _counts(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """How often each of ``n`` images is drawn in each of ``n_boot`` resamples: ``(n_boot, n)``."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def _corr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation along the last axis; NaN where either side is constant."""
    xc, yc = x - x.mean(-1, keepdims=True), y - y.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (xc * yc).sum(-1) / np.sqrt((xc**2).sum(-1) * (yc**2).sum(-1))


def weighted_auc(quality: np.ndarray, wrong: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """P(quality of a wrong crop < quality of a right one), ties half, for each row of ``weights`` (B, n)."""
    order = np.argsort(quality, kind="stable")
    q, bad, w = quality[order], wrong[order], weights[:, order]
    w_bad, w_ok = w * bad, w * ~bad
    # right crops strictly above each value, and tied with it
    starts = np.searchsorted(q, q, side="left")
    ends = np.searchsorted(q, q, side="right")
    cum_ok = np.concatenate([np.zeros((len(w), 1)), np.cumsum(w_ok, axis=1)], axis=1)
    total_ok = cum_ok[:, -1:]
    above = total_ok - cum_ok[:, ends]
    tied = cum_ok[:, ends] - cum_ok[:, starts]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w_bad * (above + 0.5 * tied)).sum(1) / (w_bad.sum(1) * total_ok[:, 0])


def _stat_row(statistic: str, eval_set: str, corruption: str, severity: int, n: int, value: float,
              samples: np.ndarray) -> dict:  # fmt: skip
    lo, hi = _interval(samples)
    return dict(
        zip(STATS_COLUMNS, [statistic, eval_set, corruption, severity, n, value, lo, hi], strict=True)
    )


def _per_image(rows: pd.DataFrame, column: str) -> pd.DataFrame:
    """(images x conditions) of one column, conditions in the order they first appear."""
    return rows.pivot_table(
        index="image_id", columns=["corruption", "severity"], values=column, aggfunc="first"
    )


def condition_correlations(rows: pd.DataFrame, eval_set: str, n_boot: int, seed: int) -> list[dict]:
    """Pearson and Spearman of Top-1 drop with mean-quality drop across the distorted conditions."""
    top1 = _per_image(rows.assign(top1=rows["top1"].astype(float)), "top1")
    quality = _per_image(rows, "quality")[top1.columns]
    columns = list(top1.columns)
    if (CLEAN, 0) not in columns or len(columns) < 4:
        return []
    complete = top1.notna().all(axis=1) & quality.notna().all(axis=1)
    top1, quality = top1[complete].to_numpy(), quality[complete].to_numpy()
    clean = columns.index((CLEAN, 0))
    distorted = [i for i in range(len(columns)) if i != clean]
    n = len(top1)
    if n < 2:
        return []
    weights = np.vstack([np.ones(n), _counts(n, n_boot, rng_for(seed, "stats-conditions", eval_set))]) / n
    acc, mq = weights @ top1, weights @ quality  # (1 + B, conditions)
    top1_drop = acc[:, [clean]] - acc[:, distorted]
    quality_drop = mq[:, [clean]] - mq[:, distorted]
    pearson = _corr(top1_drop, quality_drop)
    spearman = _corr(
        rankdata(top1_drop, axis=1, method="average"), rankdata(quality_drop, axis=1, method="average")
    )
    return [
        _stat_row("pearson_top1_quality", eval_set, "all", 0, n, pearson[0], pearson[1:]),
        _stat_row("spearman_top1_quality", eval_set, "all", 0, n, spearman[0], spearman[1:]),
    ]


def quality_error_auc(rows: pd.DataFrame, eval_set: str, n_boot: int, seed: int) -> list[dict]:
    """AUC of low quality for a misclassification, pooled and per condition, resampling images."""
    out = []
    ok = rows[np.isfinite(rows["quality"])]
    images = {image: i for i, image in enumerate(ok["image_id"].unique())}
    if len(images) < 2:
        return out
    image_of = ok["image_id"].map(images).to_numpy()
    groups = [("all", 0, np.ones(len(ok), dtype=bool))]
    for (corruption, severity), part in ok.groupby(["corruption", "severity"], sort=False).groups.items():
        groups.append((corruption, int(severity), ok.index.isin(part)))
    counts = _counts(len(images), n_boot, rng_for(seed, "stats-auc", eval_set))
    for corruption, severity, selected in groups:
        q = ok["quality"].to_numpy()[selected]
        wrong = ~ok["top1"].to_numpy(dtype=bool)[selected]
        weights = np.vstack([np.ones(selected.sum()), counts[:, image_of[selected]]])
        auc = weighted_auc(q, wrong, weights)
        n = len(np.unique(image_of[selected]))
        out.append(_stat_row("auc_quality_error", eval_set, corruption, severity, n, auc[0], auc[1:]))
    return out


def quality_prob_drop(rows: pd.DataFrame, eval_set: str, n_boot: int, seed: int) -> list[dict]:
    """Per distorted condition: Spearman over images of the quality drop with the true-class probability drop."""
    quality, prob = _per_image(rows, "quality"), _per_image(rows, "prob_true")
    if (CLEAN, 0) not in quality.columns:
        return []
    out = []
    for corruption, severity in quality.columns:
        if corruption == CLEAN:
            continue
        dq = (quality[(CLEAN, 0)] - quality[(corruption, severity)]).to_numpy()
        dp = (prob[(CLEAN, 0)] - prob[(corruption, severity)]).to_numpy()
        keep = np.isfinite(dq) & np.isfinite(dp)
        dq, dp = dq[keep], dp[keep]
        n = len(dq)
        if n < 3:
            continue
        rng = rng_for(seed, "stats-prob-drop", eval_set, corruption, severity)
        picks = np.vstack([np.arange(n), rng.integers(0, n, size=(n_boot, n))])
        rho = _corr(rankdata(dq[picks], axis=1), rankdata(dp[picks], axis=1))
        out.append(
            _stat_row("spearman_quality_prob_drop", eval_set, corruption, int(severity), n, rho[0], rho[1:])
        )
    return out


STATS_INPUT = ["image_id", "corruption", "severity", "top1", "quality", "prob_true"]
"""The eval columns the statistics use (besides ``set`` and ``status``)."""


def _set_statistics(part: pd.DataFrame, eval_set: str, n_boot: int, seed: int) -> list[dict]:
    part = part.reset_index(drop=True)
    return [
        *condition_correlations(part, eval_set, n_boot, seed),
        *quality_error_auc(part, eval_set, n_boot, seed),
        *quality_prob_drop(part, eval_set, n_boot, seed),
    ]


def eval_statistics(table: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """stats.parquet from an eval table (rows with status ok), per set."""
    rows = []
    ok = table[table["status"] == "ok"]
    for eval_set, part in ok.groupby("set", sort=True):
        rows += _set_statistics(part, eval_set, n_boot, seed)
    return pd.DataFrame(rows, columns=STATS_COLUMNS)


def _ok_sets(path: str | Path) -> list[str]:
    """The sets with an ok row, sorted, from a pass over two columns one row group at a time."""
    sets: set[str] = set()
    for group in iter_row_groups(path, ["set", "status"]):
        ok = group.filter(pc.fill_null(pc.equal(group.column("status"), "ok"), False))
        sets.update(s for s in pc.unique(ok.column("set")).to_pylist() if s is not None)
    return sorted(sets)


def eval_statistics_file(path: str | Path, *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """:func:`eval_statistics` of the eval table at ``path``, the same numbers, holding one set's ok rows (six
    columns, in file order) at a time."""
    rows = []
    for eval_set in _ok_sets(path):
        part = read_frame(path, STATS_INPUT, where={"set": eval_set, "status": "ok"})
        rows += _set_statistics(part, eval_set, n_boot, seed)
    return pd.DataFrame(rows, columns=STATS_COLUMNS)


def summarize_compare(compare: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Mean of each agreement number over images with its 95 % interval (``n``: images with a finite value),
    and, on each method's row, the means of the baselines for the same set, condition, reference and metric
    (``shuffled``: the same method's maps paired with other images)."""
    rows = []
    for key, part in compare.groupby(SUMMARY_KEY, sort=False):
        values = part["value"].to_numpy(dtype=float)
        finite = values[np.isfinite(values)]
        mean, lo, hi = bootstrap_mean_ci(finite, n_boot=n_boot, rng=rng_for(seed, "compare-summary", *key))
        rows.append([*key, len(finite), mean, lo, hi])
    summary = pd.DataFrame(rows, columns=[*SUMMARY_KEY, "n", "mean", "lo", "hi"])
    means = summary.set_index(SUMMARY_KEY)["mean"]
    for column, method in BASELINE_COLUMNS.items():
        summary[column] = [
            means.get((s, c, v, method, r, m, g), np.nan)
            for s, c, v, _, r, m, g in summary[SUMMARY_KEY].itertuples(index=False, name=None)
        ]
    summary["shuffled"] = [
        means.get((s, c, v, f"baseline:shuffled:{me}", r, m, g), np.nan)
        for s, c, v, me, r, m, g in summary[SUMMARY_KEY].itertuples(index=False, name=None)
    ]
    is_baseline = summary["method"].str.startswith("baseline:")
    summary.loc[is_baseline, [*BASELINE_COLUMNS, "shuffled"]] = np.nan
    return summary
