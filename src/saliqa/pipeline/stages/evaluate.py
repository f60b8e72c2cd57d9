"""Stage evaluate: the validation split and any extra sets under every condition, judged by the classifier and
the quality model on the same crops; then the summary with intervals, the figures and robustness scores.

Two levels of work: ``eval.parquet`` depends on everything that makes a number in it; the summary, figures
and robustness scores also on the bootstrap and the robustness references. Changing only the latter remakes
only them (``eval.parquet`` is kept when its recorded fingerprint is the work's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from saliqa.config import RunConfig, config_to_dict, result_settings
from saliqa.data.readers import ImageTable
from saliqa.device import resolve_device
from saliqa.errors import CheckpointError, ConfigError
from saliqa.io.hashing import fingerprint
from saliqa.io.tables import iter_row_groups, read_provenance, write_table
from saliqa.iqa.registry import check_quality_model, judge_label
from saliqa.pipeline.engines import check_engine
from saliqa.pipeline.evaluation import evaluate_to_dir
from saliqa.pipeline.layout import RunLayout
from saliqa.pipeline.models import ClassifierSpec, JudgesSpec, QualitySpec
from saliqa.pipeline.plan import CropPlan, Runtime
from saliqa.pipeline.runner import Stage, StageContext, StageReport
from saliqa.pipeline.sources import listing_identity
from saliqa.pipeline.stages.split import split_records
from saliqa.report.eval_figures import (
    plot_corruption_curves,
    plot_corruption_heatmap,
    plot_corruption_overview,
)
from saliqa.robustness import corruption_errors
from saliqa.stats import summarize_eval_file

SUMMARY_ONLY = ("bootstrap", "baseline", "alexnet_reference")
"""Settings that change the summary, figures and robustness scores but no row of eval.parquet."""


def baseline_eval(baseline: Path | None) -> Path | None:
    """The baseline's eval.parquet (given as the file or its run directory), checked before any work."""
    if baseline is None:
        return None
    path = baseline / RunLayout.EVAL if baseline.is_dir() else baseline
    if not path.is_file():
        raise ConfigError(
            f"evaluate.baseline: no eval table at {path}; give a run directory or its {RunLayout.EVAL}"
        )
    return path


def _check(config: RunConfig) -> None:
    check_engine(config.engine)
    resolve_device(config.evaluate.device)
    check_quality_model(config.rate.iqa)
    baseline_eval(config.evaluate.baseline)


def _settings(config: RunConfig) -> dict[str, Any]:
    return {
        "evaluate": result_settings(config.evaluate),
        "seed": config.seed,
        "images": config_to_dict(config.images),
        "iqa": config.rate.iqa,
    }


def _checkpoint(ctx: StageContext) -> Path:
    return ctx.path(RunLayout.classifier(ctx.config.evaluate.checkpoint, ctx.config.model is not None))


def _judges(ctx: StageContext) -> JudgesSpec:
    def spec() -> JudgesSpec:
        runtime, hashes = Runtime.for_evaluate(ctx.config), ctx.run.hashes
        precision = ctx.config.evaluate.precision
        return JudgesSpec(
            ClassifierSpec.of(_checkpoint(ctx), runtime.device, hashes),
            QualitySpec.find(ctx.config.rate.iqa, runtime.device, hashes, precision=precision),
            runtime.batch_size,
            precision,
        )

    return ctx.once("judges", spec)


def _quality_identity(ctx: StageContext) -> dict[str, Any]:
    return ctx.once("quality", lambda: _judges(ctx).quality.identity())


def _identity(ctx: StageContext) -> str:
    return _judges(ctx).identity(_quality_identity(ctx))


def _sets(ctx: StageContext) -> list[list[str]]:
    return [[name, listing_identity(table, ctx.run.hashes)] for name, table in ctx.sources.extra_sets.items()]


def _baseline_sha256(ctx: StageContext) -> str | None:
    baseline = baseline_eval(ctx.config.evaluate.baseline)
    return ctx.run.hashes.sha256(baseline) if baseline else None


def _work_inputs(ctx: StageContext) -> dict[str, Any]:
    return {"judges": _identity(ctx), "sets": ctx.once("sets", lambda: _sets(ctx))}


def _inputs(ctx: StageContext) -> dict[str, Any]:
    return {**_work_inputs(ctx), "baseline": _baseline_sha256(ctx)}


def work_fingerprint(ctx: StageContext) -> str:
    """The identity of eval.parquet's rows: the stage's fingerprint without the summary-only settings."""
    settings = {
        **ctx.settings,
        "evaluate": {k: v for k, v in ctx.settings["evaluate"].items() if k not in SUMMARY_ONLY},
    }
    return fingerprint("evaluate", ctx.upstream, settings, _work_inputs(ctx))


def eval_records(layout: RunLayout, extra_sets: dict[str, ImageTable]) -> pd.DataFrame:
    """The validation split plus every extra evaluation set, with a ``set`` column."""
    _, val = split_records(layout)
    columns = ["image_id", "path", "label", "set", "present", "reason"]
    frames = [val.assign(set="val", present=True, reason=None)[columns]]
    frames += [table.frame.assign(set=name)[columns] for name, table in extra_sets.items()]
    return pd.concat(frames, ignore_index=True)


def _evaluate(ctx: StageContext) -> StageReport:
    config, layout, e = ctx.config, ctx.layout, ctx.config.evaluate
    spec, work_fp = _judges(ctx), work_fingerprint(ctx)
    meta = ctx.meta(
        "evaluate", model=_quality_identity(ctx), device=spec.classifier.device, checkpoint=e.checkpoint
    )
    meta["fingerprint"] = work_fp  # eval.parquet is identified by its work, not by the summary settings
    messages: list[str] = []
    if layout.eval.exists() and (read_provenance(layout.eval) or {}).get("fingerprint") == work_fp:
        messages.append("eval.parquet is up to date: only the summary and figures were remade")
    else:
        judges = spec.build()
        if judges.trained_by != ctx.upstream.get("train"):
            raise CheckpointError(
                f"{_checkpoint(ctx)} was not made by this run's training stage; delete model/ to retrain"
            )
        records = eval_records(layout, ctx.sources.extra_sets)
        runtime = Runtime.for_evaluate(config, ctx.progress)
        reused = evaluate_to_dir(records, judges, CropPlan.from_config(config), runtime, layout, meta, spec)
        if reused:
            messages.append(f"resumed: {reused} shard(s) reused from an interrupted run")
    summary = summarize_eval_file(layout.eval, seed=config.seed, n_boot=e.bootstrap)
    summary_meta = {**meta, "fingerprint": ctx.fingerprint, "bootstrap": e.bootstrap}
    write_table(layout.summary, summary, summary_meta)
    _evaluation_figures(config, layout, summary, judge=judge_label(config.rate.iqa))
    messages += _robustness(config, layout, {**summary_meta, "baseline_sha256": _baseline_sha256(ctx)})
    messages[:0] = [_summary_line(summary, name) for name in ["val", *(s.name for s in e.extra_sets)]]
    counts = status_counts(layout.eval)
    messages.append("eval rows: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return StageReport(messages)


def status_counts(path: Path) -> dict[str, int]:
    """Rows per status of an eval table, most first (ties: first seen), counted one row group at a time."""
    counts: dict[str, int] = {}
    for group in iter_row_groups(path, ["status"]):
        for item in group.column("status").value_counts().to_pylist():
            if item["values"] is not None:
                counts[item["values"]] = counts.get(item["values"], 0) + item["counts"]
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


def image_pairs(path: Path) -> pd.DataFrame:
    """The distinct (set, image_id) of an eval table: one row per image instead of one per condition."""
    seen: dict[tuple[str, str], None] = {}
    for group in iter_row_groups(path, ["set", "image_id"]):
        pairs = group.group_by(["set", "image_id"], use_threads=False).aggregate([])
        seen.update(
            dict.fromkeys(zip(*(pairs.column(k).to_pylist() for k in ("set", "image_id")), strict=True))
        )
    return pd.DataFrame(list(seen), columns=["set", "image_id"])


def _robustness(config: RunConfig, layout: RunLayout, meta: dict[str, Any]) -> list[str]:
    """robustness.parquet (CE, relative CE, mCE against the baseline run and/or AlexNet) when asked; returns
    the messages that say where the baseline is not comparable. Both eval tables are streamed from disk."""
    e = config.evaluate
    path = layout.path(RunLayout.ROBUSTNESS)
    path.unlink(missing_ok=True)
    baseline = baseline_eval(e.baseline)
    frames, messages = [], []
    if baseline:
        frames.append(corruption_errors(layout.eval, baseline))
        ours, theirs = image_pairs(layout.eval), image_pairs(baseline)
        messages += baseline_differences(config, ours, theirs, read_provenance(baseline) or {})
    frames += [corruption_errors(layout.eval)] if e.alexnet_reference else []
    if frames:
        scores = pd.concat(frames, ignore_index=True)
        write_table(path, scores, {**meta, "baseline": str(baseline) if baseline else None})
    return messages


def baseline_differences(
    config: RunConfig, ours: pd.DataFrame, theirs: pd.DataFrame, made: dict[str, Any]
) -> list[str]:
    """CE is a ratio of errors on the same images under the same corruptions: say where that is not so.
    ``ours`` and ``theirs`` need only ``set`` and ``image_id`` (one row per image will do)."""
    notes = []
    their_config = made.get("config") or {}
    if "seed" in their_config and their_config["seed"] != config.seed:
        notes.append(
            f"baseline: seed {their_config['seed']} (this run {config.seed}): its random corruptions differ"
        )
    their_crop = (their_config.get("evaluate") or {}).get("crop")
    if their_crop is not None and their_crop != config.evaluate.crop:
        notes.append(f"baseline: crop {their_crop} (this run {config.evaluate.crop})")
    for name, rows in ours.groupby("set"):
        mine = set(rows["image_id"])
        other = set(theirs.loc[theirs["set"] == name, "image_id"])
        if not other:
            notes.append(f"baseline: no set {name!r}; it gets no CE")
        elif mine != other:
            notes.append(f"baseline: set {name!r} shares {len(mine & other)} of {len(mine)} images")
    return notes


def _figures(config: RunConfig) -> tuple[str, ...]:
    """Every figure evaluate draws for a config."""
    e = config.evaluate
    names = [
        RunLayout.EVAL_OVERVIEW,
        RunLayout.EVAL_HEATMAP,
        *(RunLayout.eval_curves(c) for c in e.corruptions),
    ]
    for extra in e.extra_sets:
        names += [RunLayout.eval_overview(extra.name), RunLayout.eval_heatmap(extra.name)]
    return tuple(names)


def _evaluation_figures(config: RunConfig, layout: RunLayout, summary: pd.DataFrame, judge: str) -> None:
    """The curves of each corruption, the overviews and the Top-1 heat maps; stale figures are removed."""
    for old in [
        *layout.path(RunLayout.FIGURES).glob("eval_*.png"),
        *layout.path(RunLayout.FIGURES).glob("eval_*.svg"),
    ]:
        old.unlink()
    sets = ["val", *(extra.name for extra in config.evaluate.extra_sets)]
    for eval_set in sets:
        plot_corruption_overview(
            summary, layout.path(RunLayout.eval_overview(eval_set)), judge=judge, eval_set=eval_set
        )
        plot_corruption_heatmap(summary, layout.path(RunLayout.eval_heatmap(eval_set)), eval_set=eval_set)
    for name in config.evaluate.corruptions:
        plot_corruption_curves(summary, name, layout.path(RunLayout.eval_curves(name)), judge=judge)


def _summary_line(summary: pd.DataFrame, eval_set: str) -> str:
    clean = summary[(summary["set"] == eval_set) & (summary["corruption"] == "none")]
    if clean.empty:
        return f"{eval_set}: nothing evaluated"
    row = clean.iloc[0]
    return (
        f"{eval_set} clean ({row.n} images): top-1 {row.top1_acc:.3f} [{row.top1_lo:.3f}, {row.top1_hi:.3f}], "
        f"top-5 {row.top5_acc:.3f}, mean quality {row.mean_quality:.1f}"
    )


def _writes(config: RunConfig) -> tuple[str, ...]:
    e = config.evaluate
    robustness = (RunLayout.ROBUSTNESS,) if e.baseline is not None or e.alexnet_reference else ()
    return (RunLayout.EVAL, RunLayout.SUMMARY, *robustness, *_figures(config))


EVALUATE = Stage(
    name="evaluate",
    does="judges val (and extra sets) under every corruption x severity: accuracy, quality, intervals, CE",
    version=2,
    reads=(RunLayout.SPLIT, RunLayout.RATINGS, RunLayout.BEST, RunLayout.LAST),
    writes=_writes,
    settings=_settings,
    inputs=_inputs,
    body=_evaluate,
    check=_check,
    scratch=(RunLayout.EVAL_PARTS,),
)
