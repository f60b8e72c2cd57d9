"""Bootstrap confidence intervals for the evaluation table.

The study plotted accuracy and mean quality per corruption and severity without any interval, so a drop
of one point could not be told from noise. Every interval here is a percentile bootstrap of the mean whose
random stream depends only on (seed, set, corruption, severity, metric): a condition's numbers do not
change when other conditions are added, removed or reordered, nor when its rows arrive in another order.

:func:`summarize_eval_file` gives the same summary from the table on disk without reading it whole into pandas:
one pass over the three key columns numbers the conditions, then passes over the seven columns a summary needs
each keep the rows of a run of whole conditions (250,000 rows at most), one row group read at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from saliqa.corrupt import CLEAN
from saliqa.io.tables import NULLABLE, column_names, iter_row_groups
from saliqa.seeding import rng_for

# Upper bound on resampled indices held at once; keeps memory near 2 x 16 MB whatever n_boot x n is (smaller
# chunks were no slower: 35 s instead of 45 s for 96 conditions of 52,000 images at 160 resamples).
_MAX_INDICES = 2_000_000
# Upper bound on eval rows read from a file at once (whole conditions, seven columns: about 20 MB).
_ROWS_IN_MEMORY = 250_000

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

_KEYS = ("set", "corruption", "severity")
_REQUIRED = ("image_id", "corruption", "severity", "set", "status", *METRICS)
_CONDITION_COLUMNS = ["image_id", "status", *METRICS]
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


def _check_names(columns: Iterable[str]) -> None:
    missing = [c for c in _REQUIRED if c not in set(columns)]
    if missing:
        raise ValueError(f"eval table lacks columns {missing}; pass the evaluate stage's eval.parquet")


def _check_blank(blank: list[str]) -> None:
    if blank:
        raise ValueError(f"eval table has empty {blank} in some rows; every row must name its condition")


def _check_columns(frame: pd.DataFrame) -> None:
    _check_names(frame.columns)
    _check_blank([c for c in _KEYS if frame[c].isna().any()])


def _metric_values(rows: pd.DataFrame, column: str) -> np.ndarray:
    """Finite values of one metric in a canonical order (image_id, then value), whatever the input order."""
    values = rows[column].to_numpy(dtype=float, na_value=np.nan)
    ids = rows["image_id"].astype(str).to_numpy()
    keep = np.isfinite(values)
    values, ids = values[keep], ids[keep]
    return values[np.lexsort((values, ids))]


def _report_order(conditions: Iterable[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    """Distinct conditions, given in the order their rows first appear, in report order: set val first, then
    clean, corruptions as first seen, severity up."""
    seen = list(dict.fromkeys(conditions))
    corr_first = {c: i for i, c in enumerate(dict.fromkeys(c for _, c, _ in seen))}

    def sort_key(cond: tuple[str, str, int]) -> tuple:
        s, c, v = cond
        return (s != _MAIN_SET, s, c != CLEAN, corr_first[c], v)

    return sorted(seen, key=sort_key)


def _condition_order(frame: pd.DataFrame) -> list[tuple[str, str, int]]:
    """The frame's conditions in report order."""
    keys = frame[list(_KEYS)].drop_duplicates()
    return _report_order((str(s), str(c), int(v)) for s, c, v in keys.itertuples(index=False))


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


def condition_codes(group: pa.Table, found: dict[tuple[str, str, int], int]) -> np.ndarray:
    """The condition code of each row of ``group`` (a table with set, corruption and severity, none missing),
    numbering the conditions not ``found`` before in the order their rows first appear (a dictionary encoding
    keeps that order; arrow's multi-key group-by does not)."""
    severity = pc.cast(group.column("severity"), pa.string())
    key = pc.binary_join_element_wise(group.column("set"), group.column("corruption"), severity, "\x1f")
    encoded = key.combine_chunks().dictionary_encode() if group.num_rows else pa.array([]).dictionary_encode()
    local = []
    for text in encoded.dictionary.to_pylist():
        s, c, v = text.split("\x1f")
        local.append(found.setdefault((s, c, int(v)), len(found)))
    return np.asarray(local, dtype=np.int32)[encoded.indices.to_numpy(zero_copy_only=False)]


class ConditionIndex:
    """Which condition each row of an eval table on disk belongs to, from one pass over its key columns.

    ``conditions`` are the distinct (set, corruption, severity) in the order their rows first appear, ``counts``
    their rows; one small integer per row is kept (4 bytes), so later passes read only value columns and pick
    a condition's rows by code, without comparing strings again.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = path
        found: dict[tuple[str, str, int], int] = {}
        self.codes: list[np.ndarray] = []
        for group in iter_row_groups(path, list(_KEYS)):
            _check_blank([c for c in _KEYS if group.column(c).null_count])
            self.codes.append(condition_codes(group, found))
        self.conditions = list(found)
        self.counts = np.zeros(len(found), dtype=np.int64)
        for codes in self.codes:
            self.counts += np.bincount(codes, minlength=len(found))

    def rows(self, wanted: list[int], columns: list[str]) -> Iterator[tuple[int, pd.DataFrame]]:
        """(code, rows) of each condition in ``wanted``, in that order, ``columns`` only, from one pass."""
        keep = np.zeros(len(self.conditions), dtype=bool)
        keep[wanted] = True
        parts, codes = [], []
        for group, group_codes in zip(iter_row_groups(self.path, columns), self.codes, strict=True):
            mask = keep[group_codes]
            parts.append(group.filter(pa.array(mask)))
            codes.append(group_codes[mask])
        frame = pa.concat_tables(parts).to_pandas(types_mapper=NULLABLE.get)
        del parts
        groups = frame.groupby(np.concatenate(codes), sort=False)
        for code in wanted:
            yield code, groups.get_group(code)

    def batches(self, order: list[int], budget: int) -> Iterator[list[int]]:
        """``order`` cut into runs of conditions of at most ``budget`` rows together (one when it alone is
        more): one pass over the file per run."""
        run: list[int] = []
        rows = 0
        for code in order:
            if run and rows + self.counts[code] > budget:
                yield run
                run, rows = [], 0
            run.append(code)
            rows += int(self.counts[code])
        if run:
            yield run


def summarize_eval_file(
    path: str | Path, *, seed: int, n_boot: int = 1000, level: float = 0.95, budget: int = _ROWS_IN_MEMORY
) -> pd.DataFrame:
    """:func:`summarize_eval` of the eval table at ``path``, the same numbers to the bit, holding seven columns
    of at most ``budget`` rows (whole conditions) at a time instead of the whole table in pandas."""
    _check_names(column_names(path))
    index = ConditionIndex(path)
    if not index.conditions:
        return _empty_summary()
    position = {cond: code for code, cond in enumerate(index.conditions)}
    order = [position[cond] for cond in _report_order(index.conditions)]
    records = []
    for run in index.batches(order, budget):
        for code, rows in index.rows(run, _CONDITION_COLUMNS):
            cond = index.conditions[code]
            records.append(_summarize_condition(rows, cond, seed=seed, n_boot=n_boot, level=level))
    return pd.DataFrame.from_records(records, columns=list(SUMMARY_COLUMNS)).astype(_DTYPES)
