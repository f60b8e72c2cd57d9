"""Corruption robustness scores of ImageNet-C (Hendrycks & Dietterich, 2019): CE, relative CE, mCE.

For a model f and a reference model b, per corruption c over the severities s both were evaluated at:

    CE_c          = sum_s E(f, c, s) / sum_s E(b, c, s)
    relative CE_c = sum_s [E(f, c, s) - E(f, clean)] / sum_s [E(b, c, s) - E(b, clean)]

with E the top-1 error; mCE and relative mCE are their means over the 15 common corruptions. The reference
is either another saliqa run (its ``eval.parquet``: same images, same on-the-fly corruptions, so the ratio
is exact) or the published AlexNet errors on the released ImageNet-C files. Those files were made from
256-resized, 224-cropped ImageNet images saved as JPEG, while saliqa distorts each image at full size and
then crops, so scores against AlexNet are approximate and flagged so.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import numpy as np
import pandas as pd

from saliqa.corrupt import CLEAN, CORRUPTIONS, SEVERITIES, corruption_names

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


def top1_errors(frame: pd.DataFrame) -> pd.DataFrame:
    """Top-1 error per (set, corruption, severity) of an eval table, over its rows with status "ok"."""
    ok = frame[frame["status"] == "ok"]
    errors = 1.0 - ok.groupby(["set", "corruption", "severity"], sort=False)["top1"].mean().astype(float)
    return (
        errors.rename("top1_error").reset_index().astype({"set": str, "corruption": str, "severity": "int64"})
    )


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
    model: pd.DataFrame, reference: pd.DataFrame | None = None, *, reference_name: str = "baseline"
) -> pd.DataFrame:
    """CE and relative CE per set and corruption, then the set's mCE row, against ``reference``.

    ``model`` and ``reference`` are eval tables (``eval.parquet``); a set is scored against the reference's
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
