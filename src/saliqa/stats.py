"""Bootstrap confidence intervals for the evaluation table.

The study plotted accuracy and mean quality per corruption and severity without any interval, so a drop
of one point could not be told from noise. Every interval here is a percentile bootstrap of the mean whose
random stream depends only on (seed, set, corruption, severity, metric): a condition's numbers do not
change when other conditions are added, removed or reordered, nor when its rows arrive in another order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from saliqa.corrupt import CLEAN
from saliqa.seeding import rng_for

# Upper bound on resampled indices held at once; keeps memory near 2 x 64 MB whatever n_boot x n is.
_MAX_INDICES = 8_000_000

# eval column (also the rng key and the prefix of the interval columns) -> summary column of the mean
METRICS: dict[str, str] = {
    "top1": "top1_acc",
    "top5": "top5_acc",
    "quality": "mean_quality",
    "score": "mean_score",
    "ms_ssim": "mean_ms_ssim",
    "psnr": "mean_psnr",
}
"""Metrics averaged per condition. Non-finite values are left out of a mean: PSNR is +inf where a corruption
left the crop unchanged (and on every clean row), MS-SSIM NaN for crops too small for five scales."""

SUMMARY_COLUMNS: tuple[str, ...] = (
    "set",
    "corruption",
    "severity",
    "n",
    "n_skipped",
    "top1_acc",
    "top1_lo",
    "top1_hi",
    "top5_acc",
    "top5_lo",
    "top5_hi",
    "mean_quality",
    "quality_lo",
    "quality_hi",
    "mean_score",
    "score_lo",
    "score_hi",
    "mean_ms_ssim",
    "ms_ssim_lo",
    "ms_ssim_hi",
    "mean_psnr",
    "psnr_lo",
    "psnr_hi",
)

# Strings use pandas' default string dtype (``str``), counts int64, everything else float64.
_DTYPES: dict[str, object] = {
    "set": str,
    "corruption": str,
    "severity": "int64",
    "n": "int64",
    "n_skipped": "int64",
    **{c: "float64" for c in SUMMARY_COLUMNS[5:]},
}

_REQUIRED = ("image_id", "corruption", "severity", "set", "status", *METRICS)
_MAIN_SET = "val"


def _resampled_means(
    values: np.ndarray, n_boot: int, rng: np.random.Generator, max_indices: int | None = None
) -> np.ndarray:
    """Means of ``n_boot`` resamples, drawn in row chunks.

    Rows are drawn in order from one stream, so any chunk size yields the same indices (and means) as one
    (n_boot, n) draw: the chunk size is a memory knob, never a change of result.
    """
    n = values.shape[0]
    rows = max(1, (_MAX_INDICES if max_indices is None else max_indices) // n)
    out = np.empty(n_boot, dtype=float)
    for start in range(0, n_boot, rows):
        stop = min(n_boot, start + rows)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = values[idx].mean(axis=1)
    return out


def bootstrap_mean_ci(
    values: np.ndarray, *, n_boot: int = 1000, level: float = 0.95, rng: np.random.Generator
) -> tuple[float, float, float]:
    """(mean, lo, hi): the mean and its percentile-bootstrap interval at ``level``.

    The caller passes finite values only. n == 0 gives NaNs and n == 1 a zero-width interval (nothing to
    resample), so callers need no special cases for tiny conditions.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    x = np.asarray(values, dtype=float).ravel()
    if x.size == 0:
        return (float("nan"), float("nan"), float("nan"))
    mean = float(x.mean())
    if x.size == 1:
        return (mean, mean, mean)
    means = _resampled_means(x, n_boot, rng)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha], method="linear")
    return (mean, float(lo), float(hi))


def _check_columns(frame: pd.DataFrame) -> None:
    missing = [c for c in _REQUIRED if c not in frame.columns]
    if missing:
        raise ValueError(f"eval table lacks columns {missing}; pass the evaluate stage's eval.parquet")
    blank = [c for c in ("set", "corruption", "severity") if frame[c].isna().any()]
    if blank:
        raise ValueError(f"eval table has empty {blank} in some rows; every row must name its condition")


def _metric_values(rows: pd.DataFrame, column: str) -> np.ndarray:
    """Finite values of one metric in a canonical order (image_id, then value), whatever the input order."""
    values = rows[column].to_numpy(dtype=float, na_value=np.nan)
    ids = rows["image_id"].astype(str).to_numpy()
    keep = np.isfinite(values)
    values, ids = values[keep], ids[keep]
    return values[np.lexsort((values, ids))]


def _condition_order(frame: pd.DataFrame) -> list[tuple[str, str, int]]:
    """Conditions in report order: set val first, then clean, corruptions as first seen, severity up."""
    corr_first = {c: i for i, c in enumerate(pd.unique(frame["corruption"].astype(str)))}
    keys = frame[["set", "corruption", "severity"]].drop_duplicates()
    conditions = [(str(s), str(c), int(v)) for s, c, v in keys.itertuples(index=False)]

    def sort_key(cond: tuple[str, str, int]) -> tuple:
        s, c, v = cond
        return (s != _MAIN_SET, s, c != CLEAN, corr_first[c], v)

    return sorted(set(conditions), key=sort_key)


def _summarize_condition(
    rows: pd.DataFrame, cond: tuple[str, str, int], *, seed: int, n_boot: int, level: float
) -> dict[str, object]:
    ok = rows[rows["status"] == "ok"]
    record: dict[str, object] = {
        "set": cond[0],
        "corruption": cond[1],
        "severity": cond[2],
        "n": len(ok),
        "n_skipped": len(rows) - len(ok),
    }
    for metric, point in METRICS.items():
        rng = rng_for(seed, "bootstrap", *cond, metric)
        mean, lo, hi = bootstrap_mean_ci(_metric_values(ok, metric), n_boot=n_boot, level=level, rng=rng)
        record.update({point: mean, f"{metric}_lo": lo, f"{metric}_hi": hi})
    return record


def _empty_summary() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=float) for c in SUMMARY_COLUMNS})
    return frame.astype(_DTYPES)


def summarize_eval(
    frame: pd.DataFrame, *, seed: int, n_boot: int = 1000, level: float = 0.95
) -> pd.DataFrame:
    """One row per (set, corruption, severity): counts, accuracies and mean quality/score with intervals.

    Only rows with status "ok" count (``n``); the others are reported as ``n_skipped`` so a condition that
    lost images is visible rather than silently smaller. Accuracies are fractions in [0, 1].
    """
    _check_columns(frame)
    if frame.empty:
        return _empty_summary()
    keyed = frame.assign(
        set=frame["set"].astype(str),
        corruption=frame["corruption"].astype(str),
        severity=frame["severity"].astype("int64"),
    )
    groups = keyed.groupby(["set", "corruption", "severity"], sort=False)
    records = [
        _summarize_condition(groups.get_group(cond), cond, seed=seed, n_boot=n_boot, level=level)
        for cond in _condition_order(keyed)
    ]
    return pd.DataFrame.from_records(records, columns=list(SUMMARY_COLUMNS)).astype(_DTYPES)
