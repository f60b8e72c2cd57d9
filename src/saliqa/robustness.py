"""Corruption robustness scores of ImageNet-C (Hendrycks & Dietterich, 2019): CE, relative CE, mCE.

For a model f and a reference model b, per corruption c over the severities s both were evaluated at:

    CE_c          = sum_s E(f, c, s) / sum_s E(b, c, s)
    relative CE_c = sum_s [E(f, c, s) - E(f, clean)] / sum_s [E(b, c, s) - E(b, clean)]

with E the top-1 error; mCE and relative mCE are their means over the 15 common corruptions. The reference
is either another saliqa run (its ``eval.parquet``: same images, same on-the-fly corruptions, so the ratio
is exact) or the published AlexNet errors on the released ImageNet-C files. Those files were made from
256-resized, 224-cropped ImageNet images saved as JPEG, while saliqa distorts each image at full size and
then crops, so scores against AlexNet are approximate and flagged so.

An eval table may be given as a frame or as the path of its parquet file; a file is read five columns and one
row group at a time (errors are counted per condition as it goes), never whole.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from saliqa.corrupt import CLEAN, CORRUPTIONS, SEVERITIES, corruption_names
from saliqa.io.tables import iter_row_groups
from saliqa.stats import condition_codes

EvalSource = pd.DataFrame | str | Path
"""An eval table: the frame, or the path of its parquet file (read in a streaming way)."""

_KEYS = ["set", "corruption", "severity"]

__all__ = [
    "ROBUSTNESS_COLUMNS",
    "alexnet_errors",
    "corruption_errors",
    "top1_errors",
]

MEAN_ROW = "mCE"
"""The ``corruption`` of the row holding mCE and relative mCE (the means over the common corruptions)."""

ROBUSTNESS_COLUMNS: tuple[str, ...] = (
    "set",
    "reference",
    "corruption",
    "group",
    "severities",
    "error",
    "reference_error",
    "clean_error",
    "reference_clean_error",
    "ce",
    "relative_ce",
    "n_corruptions",
    "complete",
    "approximate",
)


@cache
def alexnet_errors() -> pd.DataFrame:
    """AlexNet's published ImageNet-C top-1 errors (``corruption, severity, top1_error``; clean = "none", 0)."""
    text = resources.files("saliqa.reference_data").joinpath("alexnet_imagenet_c.csv")
    with resources.as_file(text) as path:
        return pd.read_csv(path, comment="#").astype({"corruption": str, "severity": "int64"})


def top1_errors(table: EvalSource) -> pd.DataFrame:
    """Top-1 error per (set, corruption, severity) of an eval table, over its rows with status "ok"; conditions
    in the order their first ok row appears."""
    if not isinstance(table, pd.DataFrame):
        return _file_top1_errors(table)
    ok = table[table["status"] == "ok"]
    errors = 1.0 - ok.groupby(_KEYS, sort=False)["top1"].mean().astype(float)
    return (
        errors.rename("top1_error").reset_index().astype({"set": str, "corruption": str, "severity": "int64"})
    )


def _file_top1_errors(path: str | Path) -> pd.DataFrame:
    """:func:`top1_errors` of the table at ``path``: top-1 hits and counts per condition summed row group by
    row group (the mean of a boolean column is its exact count of hits over its count of values)."""
    found: dict[tuple[str, str, int], int] = {}
    hits, counts = np.zeros(0), np.zeros(0)
    for group in iter_row_groups(path, [*_KEYS, "status", "top1"]):
        keep = pc.and_(pc.equal(group.column("status"), "ok"), _named(group))
        ok = group.filter(pc.fill_null(keep, False))
        codes = condition_codes(ok, found)
        top1 = ok.column("top1")
        valid = pc.is_valid(top1).to_numpy(zero_copy_only=False)
        hit = pc.fill_null(top1, False).to_numpy(zero_copy_only=False) & valid
        hits = _add(hits, np.bincount(codes, weights=hit, minlength=len(found)))
        counts = _add(counts, np.bincount(codes, weights=valid, minlength=len(found)))
    with np.errstate(invalid="ignore", divide="ignore"):
        errors = 1.0 - hits / counts
    rows = [(s, c, v, float(e)) for (s, c, v), e in zip(found, errors, strict=True)]
    frame = pd.DataFrame(rows, columns=[*_KEYS, "top1_error"])
    return frame.astype({"set": str, "corruption": str, "severity": "int64", "top1_error": float})


def _named(group: pa.Table) -> pa.ChunkedArray:
    """Rows whose condition is complete (pandas' group-by leaves out rows with a missing key)."""
    valid = [pc.is_valid(group.column(k)) for k in _KEYS]
    return pc.and_(pc.and_(valid[0], valid[1]), valid[2])


def _add(total: np.ndarray, more: np.ndarray) -> np.ndarray:
    """Running sums per condition, grown as new conditions appear."""
    out = np.zeros(max(len(total), len(more)))
    out[: len(total)] += total
    out[: len(more)] += more
    return out


def _lookup(errors: pd.DataFrame) -> dict[tuple[str, int], float]:
    return {(str(c), int(s)): float(e) for c, s, e in errors[["corruption", "severity", "top1_error"]].values}


def _scores(
    model: dict[tuple[str, int], float], reference: dict[tuple[str, int], float], corruption: str
) -> dict[str, object]:
    severities = [s for s in SEVERITIES if (corruption, s) in model and (corruption, s) in reference]
    error = sum(model[corruption, s] for s in severities)
    ref_error = sum(reference[corruption, s] for s in severities)
    clean, ref_clean = model.get((CLEAN, 0), np.nan), reference.get((CLEAN, 0), np.nan)
    drop = error - len(severities) * clean
    ref_drop = ref_error - len(severities) * ref_clean
    return {
        "corruption": corruption,
        "group": CORRUPTIONS[corruption].group,
        "severities": ",".join(map(str, severities)),
        "error": error / len(severities) if severities else np.nan,
        "reference_error": ref_error / len(severities) if severities else np.nan,
        "clean_error": clean,
        "reference_clean_error": ref_clean,
        "ce": error / ref_error if severities and ref_error > 0 else np.nan,
        "relative_ce": drop / ref_drop if severities and ref_drop > 0 else np.nan,
        "n_corruptions": 1,
        "complete": len(severities) == len(SEVERITIES),
    }


def _finite_mean(values: list[object]) -> float:
    finite = [float(v) for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else np.nan


def _mean_row(rows: list[dict[str, object]]) -> dict[str, object]:
    """mCE over the common corruptions with a finite CE (relative mCE: those with a finite relative CE)."""
    common = [r for r in rows if r["group"] == "common" and np.isfinite(r["ce"])]
    return {
        "corruption": MEAN_ROW,
        "group": "common",
        "severities": "",
        "error": _finite_mean([r["error"] for r in common]),
        "reference_error": _finite_mean([r["reference_error"] for r in common]),
        "clean_error": rows[0]["clean_error"],
        "reference_clean_error": rows[0]["reference_clean_error"],
        "ce": _finite_mean([r["ce"] for r in common]),
        "relative_ce": _finite_mean([r["relative_ce"] for r in common]),
        "n_corruptions": len(common),
        "complete": len(common) == len(corruption_names("common")) and all(r["complete"] for r in common),
    }


def corruption_errors(
    model: EvalSource, reference: EvalSource | None = None, *, reference_name: str = "baseline"
) -> pd.DataFrame:
    """CE and relative CE per set and corruption, then the set's mCE row, against ``reference``.

    ``model`` and ``reference`` are eval tables (``eval.parquet``, as frames or paths); a set is scored against the reference's
    set of the same name. With ``reference=None`` the published AlexNet ImageNet-C errors are the
    reference, rows are flagged ``approximate`` and corruptions without published errors are left out.
    Severities missing on either side are left out of the sums (``severities`` lists those used; ``complete``
    says whether all five were).
    """
    ours = top1_errors(model)
    if reference is None:
        theirs = {s: _lookup(alexnet_errors()) for s in ours["set"].unique()}
        reference_name = "alexnet"
    else:
        ref_errors = top1_errors(reference)
        theirs = {s: _lookup(g) for s, g in ref_errors.groupby("set")}
    records = []
    for set_name, group in ours.groupby("set", sort=False):
        if set_name not in theirs:
            continue
        mine, ref = _lookup(group), theirs[set_name]
        names = [c for c in CORRUPTIONS if any(c == k[0] for k in mine) and any(c == k[0] for k in ref)]
        rows = [_scores(mine, ref, c) for c in names]
        for row in [*rows, _mean_row(rows)] if rows else []:
            records.append(
                {"set": set_name, "reference": reference_name, **row, "approximate": reference is None}
            )
    frame = pd.DataFrame.from_records(records, columns=list(ROBUSTNESS_COLUMNS))
    return frame.astype({"n_corruptions": "int64", "complete": bool, "approximate": bool})
