"""``saliqa iqa validate``: how well a quality judge agrees with human opinion on a set with MOS.

Every picture is scored by the judge through rate's per-image loop (:func:`~saliqa.pipeline.stages.rate.
rate_records`: decoding threads, equal-size batches, a failing batch bisected to the bad picture; a picture that
cannot be decoded or judged is a row with its status and reason, never the end of the run). The scores are then
compared with the MOS (:mod:`saliqa.iqa.validation`): SROCC, KROCC, PLCC, RMSE, and PLCC and RMSE after the
VQEG 4-parameter logistic, each with a seeded 95 % bootstrap interval over pictures, and a table per quality
category of the judge. The output folder holds::

    scores.parquet, scores.csv          one row per listed picture: MOS, status, reason, score, quality,
                                        category, and the MOS the fitted mapping predicts
    metrics.parquet, metrics.csv        one row per metric: value, interval, n, the sign used
    categories.parquet, categories.csv  one row per category (Bad .. Excellent) of the judge
    agreement.png, agreement.svg        MOS against score, with the fitted curve
    provenance.json                     settings, versions, the judge's fingerprint and parameter-file hashes,
                                        the MOS files' hashes, the fitted parameters, timings

Each table also carries the provenance in its parquet metadata, as every saliqa table does.

Why per category of the judge, not per MOS quintile: saliqa uses a judge's categories to select pictures (the
study keeps Good and Excellent), so what a researcher needs to know is what human opinion a category holds
(mean MOS with its interval) and whether the judge still orders pictures inside it; bins of MOS would describe
the set, not the selection saliqa makes with the judge.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from saliqa.data.iqa_sets import IqaSet, open_iqa_set
from saliqa.device import resolve_device
from saliqa.errors import DatasetError
from saliqa.images import DecodePolicy
from saliqa.io.atomic import write_json, write_text
from saliqa.io.hashing import fingerprint, sha256_file
from saliqa.io.progress import progress_bar
from saliqa.io.provenance import provenance
from saliqa.io.tables import TableSchema
from saliqa.iqa.base import QualityModel
from saliqa.iqa.categories import CATEGORIES
from saliqa.iqa.registry import check_quality_model, judge_label, judge_slug
from saliqa.iqa.validation import (
    LOGISTIC_FORMULA,
    METRIC_DESCRIPTIONS,
    METRICS,
    Agreement,
    bootstrap_agreement,
    category_table,
)
from saliqa.pipeline.models import QualitySpec
from saliqa.pipeline.stages.rate import rate_records
from saliqa.report.iqa_figures import direction, plot_agreement

__all__ = [
    "CATEGORY_TABLE",
    "METRICS_TABLE",
    "SCORES",
    "ValidationResult",
    "default_out",
    "validate_quality_model",
]

SCORES = TableSchema(
    "scores.parquet",
    [
        ("image_id", pa.string()),
        ("path", pa.string()),
        ("mos", pa.float64()),
        ("mos_std", pa.float64()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("iqa", pa.string()),
        ("score", pa.float64()),
        ("quality", pa.float64()),
        ("category", pa.string()),
        ("mos_fitted", pa.float64()),
    ],
)
"""One row per listed picture. ``status``: ok, missing, rejected or failed, with ``reason``; ``score`` is the
judge's own scale, ``quality`` its 0-100 higher-is-better value; ``mos_fitted`` the fitted mapping of ``score``
(NaN for pictures not in the metrics)."""

METRICS_TABLE = TableSchema(
    "metrics.parquet",
    [
        ("iqa", pa.string()),
        ("data", pa.string()),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("lo", pa.float64()),
        ("hi", pa.float64()),
        ("level", pa.float64()),
        ("n", pa.int64()),
        ("n_boot", pa.int64()),
        ("sign", pa.string()),
        ("description", pa.string()),
        ("note", pa.string()),
    ],
)
"""One row per metric of :data:`saliqa.iqa.validation.METRICS`; ``lo``/``hi`` the percentile-bootstrap interval
at ``level`` from ``n_boot`` resamples with a finite value; ``sign`` says whether correlations used ``+score``
or ``-score`` (lower-is-better judges), so that a positive correlation always means agreement."""

CATEGORY_TABLE = TableSchema(
    "categories.parquet",
    [
        ("iqa", pa.string()),
        ("data", pa.string()),
        ("category", pa.string()),
        ("n", pa.int64()),
        ("share", pa.float64()),
        ("mos_mean", pa.float64()),
        ("mos_lo", pa.float64()),
        ("mos_hi", pa.float64()),
        ("mos_sd", pa.float64()),
        ("mos_median", pa.float64()),
        ("score_mean", pa.float64()),
        ("score_min", pa.float64()),
        ("score_max", pa.float64()),
        ("srocc", pa.float64()),
        ("srocc_lo", pa.float64()),
        ("srocc_hi", pa.float64()),
    ],
)
"""One row per category of the judge, worst to best (empty ones included): the MOS its pictures hold."""

FIGURE = "agreement.png"
PROVENANCE = "provenance.json"


@dataclass
class ValidationResult:
    """What a validation wrote, and its numbers."""

    out: Path
    iqa: str
    data: str
    higher_is_better: bool
    scores: pd.DataFrame
    metrics: pd.DataFrame
    categories: pd.DataFrame
    agreement: Agreement
    mos_scale: str
    files: list[Path] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def table(self) -> str:
        """The metrics and the category table as plain text, for the terminal and logs."""
        return format_result(self)


def default_out(iqa: str, data_name: str) -> Path:
    """``runs/iqa-validate/<iqa>-<data>``."""
    return Path("runs") / "iqa-validate" / f"{judge_slug(iqa)}-{data_name}"


def _score(
    iqa_set: IqaSet, model: QualityModel, *, batch_size: int, workers: int, progress: bool
) -> pd.DataFrame:
    """Every listed picture scored (or its reason), in the set's order, joined with its MOS."""
    human = iqa_set.frame[["image_id", "mos", "mos_std"]].to_dict("records")
    rows: list[dict[str, Any]] = []
    with progress_bar(f"validate ({model.name})", total=len(iqa_set), enabled=progress) as bar:
        rated = rate_records(
            iqa_set.records(), model, policy=DecodePolicy(), batch_size=batch_size, workers=workers
        )
        for mos, one in zip(human, rated, strict=True):  # rate_records keeps the records' order
            if one.row["image_id"] != mos["image_id"]:
                raise RuntimeError(f"scores out of order: {one.row['image_id']!r} for {mos['image_id']!r}")
            values = {k: v for k, v in one.row.items() if k != "label"}
            rows.append(SCORES.row(**values, mos=mos["mos"], mos_std=mos["mos_std"], mos_fitted=math.nan))
            bar.advance()
    return SCORES.frame(rows)


def _usable(scores: pd.DataFrame) -> np.ndarray:
    score = scores["score"].to_numpy(dtype=float, na_value=np.nan)
    return (scores["status"] == "ok").to_numpy(dtype=bool) & np.isfinite(score)


def _not_enough(scores: pd.DataFrame, usable: int) -> DatasetError:
    reasons = scores.loc[scores["status"] != "ok", "reason"].fillna("no score").value_counts()
    why = "; ".join(f"{n} {reason}" for reason, n in reasons.head(5).items()) or "scores were not finite"
    return DatasetError(
        f"only {usable} of {len(scores)} pictures could be scored ({why}); agreement needs at least 3: check "
        "the paths in the MOS file and the pictures"
    )


def _metrics_frame(
    iqa: str, data: str, agreement: Agreement, higher_is_better: bool, n_boot: int, level: float
) -> pd.DataFrame:
    sign = "+score" if higher_is_better else "-score"
    rows = []
    for metric in METRICS:
        interval = agreement.metrics[metric]
        note = ""
        if metric in ("srocc", "krocc", "plcc") and not higher_is_better:
            note = f"computed on -score: {iqa} is lower-is-better, so positive = agreement"
        if metric.endswith("_logistic"):
            note = (
                "VQEG logistic " + LOGISTIC_FORMULA
                if agreement.fit.converged
                else f"least-squares line: {agreement.fit.note}"
            )
            if agreement.boot_fits_linear:
                note += f"; {agreement.boot_fits_linear} of {n_boot} resamples fell back to a line"
        rows.append(
            METRICS_TABLE.row(
                iqa=iqa,
                data=data,
                metric=metric,
                value=interval.value,
                lo=interval.lo,
                hi=interval.hi,
                level=level,
                n=agreement.n,
                n_boot=interval.n_boot,
                sign=sign,
                description=METRIC_DESCRIPTIONS[metric],
                note=note,
            )
        )
    return METRICS_TABLE.frame(rows)


def _settings(iqa: str, data: str, root: Path | None, n_boot: int, seed: int, level: float) -> dict[str, Any]:
    """The settings that change a number (device, batch size and workers do not)."""
    return {
        "iqa": iqa,
        "data": data,
        "root": str(root) if root is not None else None,
        "bootstrap": n_boot,
        "seed": seed,
        "level": level,
    }


def validate_quality_model(
    data: str,
    iqa: str,
    *,
    root: str | Path | None = None,
    out: str | Path | None = None,
    device: str = "auto",
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    batch_size: int = 16,
    workers: int = 2,
    progress: bool = False,
) -> ValidationResult:
    """Score every picture of ``data`` (``clive``, ``koniq10k`` or a ``path,mos[,std]`` CSV) with quality model
    ``iqa``, compare with the MOS and write the output folder (module docstring; default
    ``runs/iqa-validate/<iqa>-<data>``). The judge and the set are checked before any picture is scored."""
    if n_boot < 0:
        raise ValueError(f"n_boot must be 0 or more, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    check_quality_model(iqa)
    torch_device = resolve_device(device)
    root_path = Path(root) if root is not None else None
    iqa_set = open_iqa_set(data, root_path)
    spec = QualitySpec.find(iqa, torch_device)
    judge = spec.build()
    higher = bool(judge.higher_is_better)
    out_dir = Path(out) if out is not None else default_out(iqa, iqa_set.name)

    started = time.monotonic()
    scores = _score(iqa_set, judge, batch_size=batch_size, workers=workers, progress=progress)
    scored_s = time.monotonic() - started

    usable = _usable(scores)
    if usable.sum() < 3:
        raise _not_enough(scores, int(usable.sum()))
    ok = scores[usable]  # already in image_id order: intervals do not depend on the order of the MOS file
    score = ok["score"].to_numpy(dtype=float)
    mos = ok["mos"].to_numpy(dtype=float)
    started = time.monotonic()
    agreement = bootstrap_agreement(
        score, mos, higher_is_better=higher, n_boot=n_boot, level=level, seed=seed
    )
    scores.loc[usable, "mos_fitted"] = agreement.fit(score)
    categories = CATEGORY_TABLE.frame(
        {"iqa": iqa, "data": iqa_set.name, **row}
        for row in category_table(
            ok["category"].tolist(),
            score,
            mos,
            order=CATEGORIES,
            higher_is_better=higher,
            n_boot=n_boot,
            level=level,
            seed=seed,
        )
    )
    metrics = _metrics_frame(iqa, iqa_set.name, agreement, higher, n_boot, level)
    metrics_s = time.monotonic() - started

    notes = list(iqa_set.notes)
    skipped = scores.loc[~usable]
    if len(skipped):
        counts = skipped["reason"].fillna("score not finite").value_counts()
        notes.append(
            f"{len(skipped)} of {len(scores)} pictures not in the metrics: "
            + "; ".join(f"{n} {reason}" for reason, n in counts.items())
        )
    settings = _settings(iqa, data, root_path, n_boot, seed, level)
    identity = judge.fingerprint()
    mos_files = [{"path": str(p), "sha256": sha256_file(p)} for p in iqa_set.mos_files]
    record = provenance(
        "iqa-validate",
        fingerprint(settings, identity, mos_files, scores["image_id"].tolist()),
        settings,
        runtime={"device": str(torch_device), "batch_size": batch_size, "workers": workers},
        judge={
            **identity,
            "higher_is_better": higher,
            "files": [{"name": k, "path": p, "sha256": h} for k, p, h in spec.files],
        },
        dataset={
            "name": iqa_set.name,
            "source": iqa_set.source,
            "pictures": len(iqa_set),
            "mos_scale": iqa_set.mos_scale,
            "mos_files": mos_files,
            "notes": list(iqa_set.notes),
        },
        fit={
            "function": LOGISTIC_FORMULA,
            "kind": agreement.fit.kind,
            "params": list(agreement.fit.params),
            "note": agreement.fit.note,
            "resamples_linear": agreement.boot_fits_linear,
        },
        correlation_sign="+score" if higher else "-score",
        more_versions={"scipy": metadata.version("scipy")},
        seconds={"score": round(scored_s, 3), "metrics": round(metrics_s, 3)},
        notes=notes,
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    for schema, frame in ((SCORES, scores), (METRICS_TABLE, metrics), (CATEGORY_TABLE, categories)):
        table = out_dir / schema.name
        schema.write(table, frame, record)
        write_text(table.with_suffix(".csv"), frame.to_csv(index=False))
        files += [table, table.with_suffix(".csv")]
    figure = plot_agreement(
        score,
        mos,
        agreement.fit,
        out_dir / FIGURE,
        judge=judge_label(iqa),
        higher_is_better=higher,
        data=iqa_set.name,
        mos_scale=iqa_set.mos_scale,
        srocc=agreement.metrics["srocc"].value,
        plcc_logistic=agreement.metrics["plcc_logistic"].value,
    )
    files += [figure, figure.with_suffix(".svg")]
    write_json(out_dir / PROVENANCE, record)
    files.append(out_dir / PROVENANCE)
    return ValidationResult(
        out=out_dir,
        iqa=iqa,
        data=iqa_set.name,
        higher_is_better=higher,
        scores=scores,
        metrics=metrics,
        categories=categories,
        agreement=agreement,
        mos_scale=iqa_set.mos_scale,
        files=files,
        seconds={"score": scored_s, "metrics": metrics_s},
        notes=notes,
    )


def _num(value: float, digits: int = 4) -> str:
    return "nan" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def format_result(result: ValidationResult) -> str:
    """The metrics table, the fitted mapping, the sign convention and the category table, as text."""
    m = result.metrics
    n = int(m["n"].iloc[0]) if len(m) else 0
    level = float(m["level"].iloc[0]) if len(m) else 0.95
    lines = [
        (
            f"{judge_label(result.iqa)} ({direction(result.higher_is_better)}) vs MOS ({result.mos_scale}) on "
            f"{result.data}: {n} of {len(result.scores)} pictures"
        ),
        f"{'metric':<15}{'value':>9}   {level:.0%} interval",
    ]
    for row in m.itertuples(index=False):
        lines.append(f"{row.metric:<15}{_num(row.value):>9}   [{_num(row.lo)}, {_num(row.hi)}]")
    if not result.higher_is_better:
        lines.append(
            f"SROCC, KROCC and PLCC are computed on -score ({result.iqa} is lower-is-better): positive = agreement."
        )
    fit = result.agreement.fit
    if fit.converged:
        b1, b2, b3, b4 = fit.params
        lines.append(f"mapping: {LOGISTIC_FORMULA} with b1={b1:.4g}, b2={b2:.4g}, b3={b3:.4g}, b4={b4:.4g}")
    else:
        lines.append(f"mapping: least-squares line ({fit.note})")
    lines.append(f"RMSE in MOS units ({result.mos_scale}).")
    lines.append(f"{'category':<11}{'n':>6}{'MOS mean':>10}   {'interval':<18}{'score mean':>11}{'SROCC':>8}")
    for row in result.categories.itertuples(index=False):
        interval = f"[{_num(row.mos_lo, 2)}, {_num(row.mos_hi, 2)}]"
        lines.append(
            f"{row.category:<11}{row.n:>6}{_num(row.mos_mean, 2):>10}   {interval:<18}"
            f"{_num(row.score_mean, 3):>11}{_num(row.srocc, 3):>8}"
        )
    lines.extend(f"note: {note}" for note in result.notes)
    lines.append(f"scored in {result.seconds['score']:.1f} s, metrics in {result.seconds['metrics']:.1f} s")
    lines.append(f"written to {result.out}")
    return "\n".join(lines)
