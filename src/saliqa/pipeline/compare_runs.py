"""Several runs side by side (two quality judges, two classifiers, ...): accuracy and agreement per
condition in one table, one figure per corruption, each run named by its directory."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from saliqa.errors import RunDirError
from saliqa.io.atomic import write_text
from saliqa.io.tables import read_frame
from saliqa.pipeline.layout import RunLayout
from saliqa.report.explain_figures import plot_runs
from saliqa.report.html import Report, Section, figure_of, render_report, table_of

CONDITION = ["set", "corruption", "severity"]
AGREEMENT = [*CONDITION, "method", "n", "mean", "lo", "hi", "shuffled", "sobel"]
"""The columns of compare_summary.parquet this page shows (its rows with the damage map and CC only)."""


def _names(runs: list[Path]) -> list[str]:
    """Each run's directory name; the whole path where two runs share a name."""
    names = [run.name for run in runs]
    return [str(run) if names.count(run.name) > 1 else run.name for run in runs]


def compare_runs(runs: list[Path], out: Path) -> Path:
    """``out/report.html`` with the runs side by side, ``out/runs_summary.csv``, ``out/runs_agreement.csv`` and
    ``out/figures/runs_<corruption>.png`` (and .svg); returns the page's path."""
    if len(runs) < 2:
        raise RunDirError("comparing runs needs at least two run directories")
    summaries: dict[str, pd.DataFrame] = {}
    agreement: dict[str, pd.DataFrame] = {}
    for name, run in zip(_names(runs), runs, strict=True):
        layout = RunLayout(run)
        if not layout.summary.is_file():
            raise RunDirError(f"{run}: no {RunLayout.SUMMARY} (run evaluate there first)")
        summaries[name] = pd.read_parquet(layout.summary)
        compare = layout.path(RunLayout.COMPARE_SUMMARY)
        if compare.is_file():
            rows = read_frame(compare, AGREEMENT, where={"reference": "damage", "metric": "cc"})
            agreement[name] = rows[~rows["method"].str.startswith("baseline:")]
    accuracy = pd.concat([s.assign(run=name) for name, s in summaries.items()], ignore_index=True)
    accuracy = accuracy[
        ["run", *CONDITION, "n", "top1_acc", "top1_lo", "top1_hi", "mean_quality", "quality_lo", "quality_hi"]
    ]
    agree = (
        pd.concat([a.assign(run=name) for name, a in agreement.items()], ignore_index=True)[
            ["run", *CONDITION, "method", "n", "mean", "lo", "hi", "shuffled", "sobel"]
        ]
        if agreement
        else pd.DataFrame()
    )
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "runs_summary.csv", accuracy.to_csv(index=False))
    section = Section(
        "runs", "Runs side by side",
        "Top-1 accuracy and the judge's mean quality per condition for each run, and the CC of each method's "
        "attention with the damage map (positive: attention goes where quality is low), 95% intervals over images.",
    )  # fmt: skip
    corruptions = [c for c in dict.fromkeys(accuracy["corruption"]) if c != "none"]
    for corruption in corruptions:
        path = plot_runs(summaries, {k: v[v["method"] == v["method"].iloc[0]] for k, v in agreement.items() if len(v)},
                         corruption, out / "figures" / f"runs_{corruption}.png")  # fmt: skip
        figure = figure_of(path, f"{corruption}: each run")
        if figure is not None:
            section.figures.append(figure)
    section.tables.append(table_of(accuracy, "Accuracy and quality per run and condition"))
    if not agree.empty:
        write_text(out / "runs_agreement.csv", agree.to_csv(index=False))
        section.tables.append(table_of(agree, "Agreement with the damage map per run, method and condition"))
    report = Report(
        title="saliqa: runs compared",
        run_dir=str(out),
        created=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        command="saliqa report " + " ".join(str(r) for r in runs) + f" --out {out}",
        facts=[(name, str(run)) for name, run in zip(_names(runs), runs, strict=True)],
        sections=[section],
        config="(each run's config.toml is in its directory)",
    )
    page = out / "report.html"
    write_text(page, render_report(report))
    return page
