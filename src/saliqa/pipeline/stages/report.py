"""Stage report: everything the stages made, on one self-contained page, from the artifacts alone.

:func:`build_report` reads a run directory (tables, stage records, figures, the resolved config) and never
the config file or a model, so ``saliqa report RUN_DIR`` rebuilds the page for any run, finished or not: a
section whose stage did not run says so and how to run it. Every table is also written as CSV next to its
parquet file (and, asked for, all of them as Markdown).
"""

from __future__ import annotations

import json
import shlex
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from saliqa.config import RunConfig
from saliqa.io.atomic import atomic_path, write_text
from saliqa.io.tables import iter_row_groups, read_provenance
from saliqa.pipeline.layout import RunLayout
from saliqa.pipeline.runner import Stage, StageContext, StageReport
from saliqa.report.html import Report, Section, figure_of, markdown_tables, render_report, table_of

TABLES = (
    RunLayout.RATINGS,
    RunLayout.SPLIT,
    RunLayout.TRAIN_LOG,
    RunLayout.EVAL,
    RunLayout.SUMMARY,
    RunLayout.ROBUSTNESS,
    RunLayout.MAPS_INDEX,
    RunLayout.COMPARE,
    RunLayout.COMPARE_SUMMARY,
    RunLayout.SANITY,
    RunLayout.STATS,
)
"""Every table a run may hold; each present one gets a CSV twin."""


def _read(layout: RunLayout, name: str, columns: list[str] | None = None) -> pd.DataFrame | None:
    path = layout.path(name)
    return pd.read_parquet(path, columns=columns) if path.is_file() else None


def _record(layout: RunLayout, stage: str) -> dict[str, Any]:
    path = layout.path(RunLayout.stage_record(stage))
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _missing(stage: str, layout: RunLayout) -> str:
    return f"The {stage} stage has not run in this directory: saliqa run --out {shlex.quote(str(layout.root))} --until {stage}"


def _figures(section: Section, layout: RunLayout, names: list[tuple[str, str]]) -> None:
    for name, title in names:
        figure = figure_of(layout.path(name), title)
        if figure is not None:
            section.figures.append(figure)


def _messages(layout: RunLayout, stage: str) -> list[str]:
    return [str(m) for m in _record(layout, stage).get("messages", [])]


def rate_section(layout: RunLayout) -> Section:
    section = Section(
        "rate", "Quality of the dataset",
        "Each image's picture quality on the judge's 0-100 scale (higher is better) and its category; rejected "
        "files stay listed with the reason.",
    )  # fmt: skip
    ratings = _read(layout, RunLayout.RATINGS)
    if ratings is None:
        section.missing = _missing("rate", layout)
        return section
    section.lines += _messages(layout, "rate")
    _figures(section, layout, [(RunLayout.QUALITY_HISTOGRAM, "quality histogram"),
                               (RunLayout.CATEGORY_COUNTS, "images per category")])  # fmt: skip
    status = ratings.groupby(["status", "reason"], dropna=False).size().reset_index(name="images")
    section.tables.append(table_of(status, "Images by status and reason"))
    unusable = ratings.loc[ratings["status"] != "ok", ["image_id", "label", "status", "reason"]]
    if len(unusable):
        section.tables.append(table_of(unusable, "Files that could not be used"))
    categories = ratings.groupby("category", dropna=True)["quality"].agg(["count", "mean", "min", "max"])
    section.tables.append(table_of(categories.reset_index(), "Quality per category", digits=1))
    return section


def split_section(layout: RunLayout) -> Section:
    section = Section(
        "split", "The split",
        "Images kept by quality category and split per class into training and validation (seeded, stratified).",
    )  # fmt: skip
    split, ratings = _read(layout, RunLayout.SPLIT), _read(layout, RunLayout.RATINGS, ["image_id", "label"])
    if split is None or ratings is None:
        section.missing = _missing("split", layout)
        return section
    section.lines += _messages(layout, "split")
    per_class = split.merge(ratings, on="image_id").pivot_table(
        index="label", columns="split", values="image_id", aggfunc="count", fill_value=0
    )
    section.tables.append(table_of(per_class.reset_index(), "Images per class and split"))
    return section


def train_section(layout: RunLayout) -> Section:
    section = Section(
        "train", "Training",
        "Loss and accuracy per epoch on the training split and on clean validation crops; the best epoch "
        "(validation Top-1) is the model that was evaluated.",
    )  # fmt: skip
    skipped = _record(layout, "train").get("skipped")
    if skipped:  # a model evaluated as it is: nothing was trained
        section.title, section.meaning = (
            "Training (skipped)",
            f"Skipped: {skipped} as it is; nothing was trained.",
        )
        section.lines += _messages(layout, "train")
        return section
    log = _read(layout, RunLayout.TRAIN_LOG)
    if log is None:
        section.missing = _missing("train", layout)
        return section
    section.lines += _messages(layout, "train")
    _figures(section, layout, [(RunLayout.TRAINING_CURVES, "training curves")])
    section.tables.append(table_of(log, "Training log"))
    return section


def evaluate_section(layout: RunLayout) -> Section:
    section = Section(
        "evaluate", "Accuracy and quality under distortion",
        "Top-1 and Top-5 accuracy of the classifier and the judge's mean quality (higher is better) on the same "
        "crops, per corruption and severity (0 = clean), with 95% bootstrap intervals over images.",
    )  # fmt: skip
    summary = _read(layout, RunLayout.SUMMARY)
    if summary is None:
        section.missing = _missing("evaluate", layout)
        return section
    section.lines += _messages(layout, "evaluate")
    corruptions = [c for c in dict.fromkeys(summary["corruption"]) if c != "none"]
    names = [
        (RunLayout.EVAL_OVERVIEW, "all corruptions"),
        (RunLayout.EVAL_HEATMAP, "Top-1 by corruption and severity"),
    ]
    names += [(RunLayout.eval_curves(c), c) for c in corruptions]
    _figures(section, layout, names)
    columns = ["set", "corruption", "severity", "n", "top1_acc", "top1_lo", "top1_hi", "top5_acc",
               "mean_quality", "quality_lo", "quality_hi"]  # fmt: skip
    section.tables.append(table_of(summary[[c for c in columns if c in summary]], "Per condition"))
    robustness = _read(layout, RunLayout.ROBUSTNESS)
    if robustness is not None:
        section.tables.append(
            table_of(
                robustness,
                "Robustness",
                "CE: the top-1 error summed over severities, relative to the "
                "reference's; mCE: its mean over the 15 common corruptions (lower is better).",
            )
        )
    return section


def explain_section(layout: RunLayout) -> Section:
    section = Section(
        "explain", "Attention against quality",
        "Agreement of each attribution map with the quality map (higher = better quality), the damage map (its "
        "best patch minus it: a positive CC means attention goes where the damage is) and the judge's own "
        "Grad-CAM, beside what a centred Gaussian, Sobel edges, a random map and the shuffled pairing give.",
    )  # fmt: skip
    summary = _read(layout, RunLayout.COMPARE_SUMMARY)
    if summary is None:
        section.missing = _missing("explain", layout)
        return section
    section.lines += _messages(layout, "explain")
    cc = summary[(summary["metric"] == "cc") & ~summary["method"].str.startswith("baseline:")]
    columns = ["set", "corruption", "severity", "method", "reference", "grid", "n", "mean", "lo", "hi",
               "centre", "sobel", "random", "shuffled", "note"]  # fmt: skip
    section.tables.append(table_of(cc[columns], "CC with each reference map, baselines beside"))
    every = summary[~summary["method"].str.startswith("baseline:") & (summary["n"] > 0)].pivot_table(
        index=["set", "corruption", "severity", "method", "reference"],
        columns="metric",
        values="mean",
        sort=False,
    )
    section.tables.append(
        table_of(
            every.reset_index(),
            "Every metric (means over images)",
            "cc, spearman, sim, iou: higher = more "
            "alike; kld, kld_reverse, emd: lower = more alike. Intervals and baselines: compare_summary.csv.",
        )
    )
    corruptions = [c for c in dict.fromkeys(summary["corruption"]) if c != "none"]
    names = [(RunLayout.explain_curves(c), f"agreement under {c}") for c in corruptions]
    names += [(RunLayout.EXPLAIN_SANITY, "randomisation test"), (RunLayout.EXPLAIN_CHANGE, "change under distortion"),
              (RunLayout.EXPLAIN_PANELS, "example panels: each image at its lowest-quality condition")]  # fmt: skip
    _figures(section, layout, names)
    sanity = _read(layout, RunLayout.SANITY)
    if sanity is not None:
        section.tables.append(
            table_of(
                sanity,
                "Randomisation test",
                "Similarity to the trained model's maps after the blocks down "
                "to `layer` were re-initialised; a method that depends on the weights falls towards 0.",
            )
        )
    stats = _read(layout, RunLayout.STATS)
    if stats is not None:
        section.tables.append(
            table_of(
                stats,
                "Statistics across conditions",
                "AUC > 0.5: low picture quality goes with "
                "misclassification; correlations over conditions or images, 95% intervals over images.",
            )
        )
    return section


def _facts(layout: RunLayout, config_text: str) -> list[tuple[str, str]]:
    facts = [("run directory", str(layout.root))]
    made = read_provenance(layout.eval) if layout.eval.is_file() else None
    made = made or (read_provenance(layout.ratings) if layout.ratings.is_file() else None) or {}
    facts += [(name, str(version)) for name, version in (made.get("versions") or {}).items()]
    if "model" in made:
        facts.append(("quality model", json.dumps(made["model"], sort_keys=True)))
    if "device" in made:
        facts.append(("device", str(made["device"])))
    evaluated = _record(layout, "train")
    if evaluated.get("skipped"):
        facts.append(
            ("classifier", f"{evaluated['skipped']} (weights sha256 {evaluated.get('weights_sha256')})")
        )
    train = evaluated.get("files", {})
    for name in (RunLayout.BEST, RunLayout.LAST):
        if name in train:
            facts.append((f"{name} (bytes, content hash)", f"{train[name][0]}, {train[name][1]}"))
    for stage in ("rate", "split", "train", "evaluate", "explain"):
        record = _record(layout, stage)
        if record:
            facts.append(
                (
                    f"stage {stage}",
                    f"fingerprint {record.get('fingerprint')}, {record.get('seconds', 0):.1f} s",
                )
            )
    seed = next((line for line in config_text.splitlines() if line.startswith("seed")), None)
    if seed:
        facts.append(("seed", seed.split("=", 1)[1].strip()))
    return facts


def build_report(layout: RunLayout) -> Report:
    """The report of the run directory ``layout``, from its artifacts alone."""
    config_path = layout.path(RunLayout.CONFIG)
    config_text = config_path.read_text(encoding="utf-8") if config_path.is_file() else "(no config.toml)"
    root = shlex.quote(str(layout.root))
    return Report(
        title=f"saliqa report: {layout.root.name}",
        run_dir=str(layout.root),
        created=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        command=f"saliqa run --config {root}/config.toml --out {root}",
        facts=_facts(layout, config_text),
        sections=[
            rate_section(layout),
            split_section(layout),
            train_section(layout),
            evaluate_section(layout),
            explain_section(layout),
        ],
        config=config_text,
    )


def write_report(layout: RunLayout, markdown: bool = False) -> Path:
    """report.html (and report.md with ``markdown``) and a CSV twin of every table; returns the page's path."""
    report = build_report(layout)
    for name in TABLES:
        path = layout.path(name)
        if path.is_file():
            write_csv_twin(path)
    if markdown:
        write_text(layout.path(RunLayout.REPORT_MD), markdown_tables(report))
    page = layout.path(RunLayout.REPORT)
    write_text(page, render_report(report))
    return page


def write_csv_twin(path: Path) -> Path:
    """``path``'s table as CSV next to it, written one row group at a time (eval.parquet may have millions of
    rows): the same text as ``pd.read_parquet(path).to_csv(index=False)``, since each row group is converted
    with the file's own schema and pandas metadata."""
    out = path.with_suffix(".csv")
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        header = True
        for group in iter_row_groups(path):
            group.to_pandas().to_csv(handle, index=False, header=header)
            header = False
        if header:  # no row group: the columns alone
            pq.read_schema(path).empty_table().to_pandas().to_csv(handle, index=False)
    return out


def _report(ctx: StageContext) -> StageReport:
    page = write_report(ctx.layout)
    return StageReport([f"report: {page}"])


def _writes(config: RunConfig) -> tuple[str, ...]:
    scored = config.evaluate.baseline is not None or config.evaluate.alexnet_reference
    tables = [name for name in TABLES if name != RunLayout.ROBUSTNESS or scored]
    if config.model is not None:  # evaluated as it is: no training log
        tables.remove(RunLayout.TRAIN_LOG)
    if not config.explain.sanity:
        tables.remove(RunLayout.SANITY)
    return (RunLayout.REPORT, *(Path(name).with_suffix(".csv").as_posix() for name in tables))


REPORT = Stage(
    name="report",
    does="one self-contained HTML page of everything the run made, and a CSV twin of every table",
    version=1,
    reads=(
        RunLayout.SUMMARY,
        RunLayout.COMPARE_SUMMARY,
        RunLayout.RATINGS,
        RunLayout.SPLIT,
        RunLayout.BEST,
    ),
    writes=_writes,
    settings=lambda config: {},
    body=_report,
)
