"""Stage explain: does the classifier's attention go where the quality judge sees the damage?

On a seeded, class-stratified sample of each evaluation set, the crops evaluate judged are attributed
(``[explain] methods``), their maps compared with the quality model's patch map, the damage map and the
judge's own Grad-CAM on one grid, beside null baselines (``compare.parquet``, ``compare_summary.parquet``);
the cascading randomisation test checks that the maps depend on the trained weights (``sanity.parquet``);
statistics across conditions relate accuracy to quality over every evaluated image (``stats.parquet``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from saliqa.config import RunConfig, result_settings
from saliqa.device import resolve_device
from saliqa.errors import ConfigError
from saliqa.explain.compare import compare_maps, damage_map
from saliqa.explain.statistics import eval_statistics_file, summarize_compare
from saliqa.pipeline.engines import check_engine
from saliqa.pipeline.explanation import (
    QUALITY,
    QUALITY_GRADCAM,
    SOBEL,
    CropMaps,
    ExplainRecipe,
    ExplainSettings,
    ExplainWork,
    explain_to_dir,
    load_maps,
    make_panel,
)
from saliqa.pipeline.layout import RunLayout
from saliqa.pipeline.models import ClassifierSpec, QualitySpec
from saliqa.pipeline.plan import CropPlan, Runtime, conditions
from saliqa.pipeline.runner import Stage, StageContext, StageReport
from saliqa.pipeline.sanity_check import sanity_table
from saliqa.pipeline.stages.evaluate import eval_records
from saliqa.pipeline.tables import COMPARE, COMPARE_SUMMARY, EVAL, MAPS_INDEX, SANITY, STATS
from saliqa.report.explain_figures import plot_agreement, plot_change, plot_panels, plot_sanity
from saliqa.seeding import rng_for


def _settings(config: RunConfig) -> dict[str, Any]:
    return {"explain": result_settings(config.explain), "seed": config.seed}


def _check(config: RunConfig) -> None:
    check_engine(config.engine)
    resolve_device(config.explain.device)
    sliding = config.explain.sliding_map
    if sliding is not None:
        crop = explain_plan(config).crop  # evaluate.crop, or the crop of a model's published transforms
        if sliding.patch > crop:
            raise ConfigError(
                f"explain.sliding_map.patch = {sliding.patch} is larger than the {crop}-pixel crop: no window fits"
            )


def explain_plan(config: RunConfig) -> CropPlan:
    """Evaluate's crop plan restricted to explain's conditions (each crop is the one evaluate judged: its
    random draws depend on the image and its own condition only)."""
    x, e = config.explain, config.evaluate
    plan = CropPlan.from_config(config)
    chosen = conditions(x.corruptions or e.corruptions, x.severities or e.severities)
    return replace(plan, conditions=chosen)


def _device(config: RunConfig) -> torch.device:
    return resolve_device(config.explain.device)


def _checkpoint(ctx: StageContext) -> Path:
    return ctx.path(RunLayout.classifier(ctx.config.evaluate.checkpoint, ctx.config.model is not None))


def _inputs(ctx: StageContext) -> dict[str, Any]:
    return {"device": _device(ctx.config).type}


def stratified_sample(frame: pd.DataFrame, n: int, seed: int, eval_set: str) -> pd.DataFrame:
    """Up to ``n`` rows, classes taking turns (each class's rows in a seeded order, classes in a seeded
    order), so every class is represented as evenly as ``n`` allows; the same seed gives the same sample."""
    if frame.empty:
        return frame
    rng = rng_for(seed, "explain-sample", eval_set)
    shuffled = frame.sort_values("image_id", kind="stable").iloc[rng.permutation(len(frame))]
    turn = shuffled.groupby("label", sort=False).cumcount()
    labels = shuffled["label"].unique()
    class_order = dict(zip(labels, rng.permutation(len(labels)), strict=True))
    ranked = shuffled.assign(_turn=turn, _class=shuffled["label"].map(class_order))
    picked = ranked.sort_values(["_turn", "_class"], kind="stable").head(n)
    return picked.drop(columns=["_turn", "_class"]).sort_values("image_id", kind="stable")


def sample_records(ctx: StageContext) -> pd.DataFrame:
    """The images to explain: per evaluation set, a stratified sample of those whose clean crop evaluate
    judged (status ok), with their paths."""
    config = ctx.config
    clean_ok = {"corruption": "none", "status": "ok"}
    judged = EVAL.read(ctx.layout.eval, columns=["set", "image_id"], where=clean_ok)
    records = eval_records(ctx.layout, ctx.sources.extra_sets)
    records = records.merge(judged[["set", "image_id"]], on=["set", "image_id"])
    picked = [
        stratified_sample(rows, config.explain.sample, config.seed, eval_set)
        for eval_set, rows in records.groupby("set", sort=True)
    ]
    return pd.concat(picked, ignore_index=True) if picked else records.iloc[0:0]


def change_rows(path: Path, eval_set: str = "val") -> pd.DataFrame:
    """What the change figure plots: the ok rows of one set, five columns, filtered while the file is read."""
    where = {"status": "ok", "set": eval_set}
    columns = ["set", "status", "image_id", "corruption", "quality", "prob_true"]
    return EVAL.read(path, columns=columns, where=where)


def _compare(ctx: StageContext, work: ExplainWork, meta: dict[str, Any]) -> pd.DataFrame:
    config, layout, x = ctx.config, ctx.layout, ctx.config.explain
    index = MAPS_INDEX.read(layout.path(RunLayout.MAPS_INDEX))
    ok = index[index["status"] == "ok"].reset_index(drop=True)
    maps = load_maps(layout, ok, [*x.methods, QUALITY, QUALITY_GRADCAM, SOBEL])
    references = {QUALITY: maps[QUALITY], "damage": damage_map(maps[QUALITY])} if QUALITY in maps else {}
    if QUALITY_GRADCAM in maps:
        references[QUALITY_GRADCAM] = maps[QUALITY_GRADCAM]
    grid = ok["grid"].iloc[0] if len(ok) else f"{x.grid}x{x.grid}"
    compare = compare_maps(
        ok,
        {m: maps[m] for m in x.methods if m in maps},
        references,
        x.metrics,
        grid=grid,
        sobel=maps.get(SOBEL) if x.baselines else None,
        seed=config.seed,
    )
    COMPARE.write(layout.path(RunLayout.COMPARE), COMPARE.frame(compare.to_dict("records")), meta)
    summary = summarize_compare(compare, n_boot=x.bootstrap, seed=config.seed)
    summary["note"] = None
    if work.maker.judge_net is None:
        summary = pd.concat([summary, _not_applicable(compare, config.rate.iqa)], ignore_index=True)
    COMPARE_SUMMARY.write(
        layout.path(RunLayout.COMPARE_SUMMARY), COMPARE_SUMMARY.frame(summary.to_dict("records")), meta
    )
    return summary


def _not_applicable(compare: pd.DataFrame, judge: str) -> pd.DataFrame:
    """Rows that say the judge's own attention could not be compared: it has no gradients."""
    keys = compare[compare["reference"] == QUALITY][
        ["set", "corruption", "severity", "method", "metric", "grid"]
    ].drop_duplicates()
    return keys.assign(
        reference=QUALITY_GRADCAM, n=0, mean=np.nan, lo=np.nan, hi=np.nan, centre=np.nan, sobel=np.nan,
        random=np.nan, shuffled=np.nan, note=f"not applicable: {judge} has no gradients",
    )  # fmt: skip


def _degenerate_share(layout: RunLayout, methods: tuple[str, ...]) -> list[str]:
    """Say how many maps of each method carried nothing (all zero after the ReLU, or constant): their
    comparisons are NaN and left out of every mean."""
    index = MAPS_INDEX.read(layout.path(RunLayout.MAPS_INDEX), columns=["status", "degenerate"])
    ok = index[index["status"] == "ok"]
    flagged = ok["degenerate"].dropna().str.split(",").explode()
    counts = flagged.value_counts()
    return [
        f"{method}: {counts[method]} of {len(ok)} maps degenerate (nothing after the ReLU): left out"
        for method in methods
        if counts.get(method, 0)
    ]


def headline(summary: pd.DataFrame, methods: tuple[str, ...]) -> list[str]:
    """Per method: CC with the quality map, beside the shuffled pairing, clean and at the worst severity
    (mean over the corruptions there)."""
    lines = []
    rows = summary[
        (summary["set"] == "val") & (summary["reference"] == QUALITY) & (summary["metric"] == "cc")
    ]
    if rows.empty:
        return lines
    worst = int(rows["severity"].max())
    for method in methods:
        own = rows[rows["method"] == method]
        clean = own[own["corruption"] == "none"]
        hard = own[(own["severity"] == worst) & (own["corruption"] != "none")]
        if clean.empty:
            continue
        c = clean.iloc[0]
        text = f"{method}: CC with the quality map clean {c['mean']:+.3f} [{c.lo:+.3f}, {c.hi:+.3f}] (shuffled {c.shuffled:+.3f})"
        if not hard.empty:
            text += (
                f"; severity {worst} (mean of {len(hard)} corruptions) {hard['mean'].mean():+.3f}"
                f" (shuffled {hard['shuffled'].mean():+.3f})"
            )
        lines.append(text)
    return lines


def _explain(ctx: StageContext) -> StageReport:
    config, layout, x = ctx.config, ctx.layout, ctx.config.explain
    device = _device(config)
    classifier_spec = ClassifierSpec.of(_checkpoint(ctx), device, ctx.run.hashes)
    sliding = x.sliding_map.windows() if x.sliding_map is not None else None
    quality_spec = QualitySpec.find(config.rate.iqa, device, ctx.run.hashes, sliding_map=sliding)
    classifier, state = classifier_spec.build()
    quality = quality_spec.build()
    settings = ExplainSettings(x.methods, x.target, x.grid, x.options, config.seed, x.batch_size)
    plan = explain_plan(config)
    runtime = Runtime(device, x.batch_size, x.workers, x.shard_size, ctx.progress, config.engine)
    records = sample_records(ctx)
    meta = ctx.meta("explain", model=quality.fingerprint(), device=device.type)
    maker = CropMaps(classifier, list(state["classes"]), quality, plan, settings)
    work = ExplainWork(maker, runtime, records.to_dict("records"), layout.path(RunLayout.MAPS))  # fmt: skip
    messages = [
        f"explained {len(records)} image(s) x {len(plan.conditions)} conditions ({', '.join(x.methods)})"
    ]
    recipe = ExplainRecipe(classifier_spec, quality_spec, plan, settings)
    reused = explain_to_dir(records, work, runtime, layout, meta, recipe)
    if reused:
        messages.append(f"resumed: {reused} shard(s) reused from an interrupted run")
    summary = _compare(ctx, work, meta)
    messages += _degenerate_share(layout, x.methods)
    if work.maker.judge_net is None:
        messages.append(f"the judge's own Grad-CAM: not applicable ({config.rate.iqa} has no gradients)")
    STATS.write(
        layout.path(RunLayout.STATS),
        eval_statistics_file(layout.eval, n_boot=x.bootstrap, seed=config.seed),
        meta,
    )
    sanity = None
    if x.sanity:
        val = records[records["set"] == "val"].head(x.sanity_sample)
        sanity = sanity_table(classifier, state, val, plan, settings, x.bootstrap)
        SANITY.write(layout.path(RunLayout.SANITY), SANITY.frame(sanity.to_dict("records")), meta)
    _figures(ctx, summary, sanity, work, settings, records)
    return StageReport([*messages, *headline(summary, x.methods)])


def _figures(
    ctx: StageContext,
    summary: pd.DataFrame,
    sanity: pd.DataFrame | None,
    work: ExplainWork,
    settings: ExplainSettings,
    records: pd.DataFrame,
) -> None:
    """Agreement curves per set and corruption, the randomisation curve, the change scatter and a grid of
    panels (each image at the condition where its quality is lowest); stale figures are removed."""
    config, layout, x = ctx.config, ctx.layout, ctx.config.explain
    for old in [
        *layout.path(RunLayout.FIGURES).glob("explain_*.png"),
        *layout.path(RunLayout.FIGURES).glob("explain_*.svg"),
    ]:
        old.unlink()
    corruptions = x.corruptions or config.evaluate.corruptions
    for eval_set in ["val", *(s.name for s in config.evaluate.extra_sets)]:
        for corruption in corruptions:
            plot_agreement(
                summary,
                corruption,
                layout.path(RunLayout.explain_curves(corruption, eval_set)),
                eval_set=eval_set,
            )
    if sanity is not None:
        plot_sanity(sanity, layout.path(RunLayout.EXPLAIN_SANITY))
    plot_change(change_rows(layout.eval), layout.path(RunLayout.EXPLAIN_CHANGE))
    if not x.panels:
        return
    index = MAPS_INDEX.read(layout.path(RunLayout.MAPS_INDEX))
    ok = index[(index["status"] == "ok") & (index["corruption"] != "none")]
    worst = ok.sort_values("quality", kind="stable").drop_duplicates(["set", "image_id"])
    worst = worst.sort_values(["set", "image_id"], kind="stable").head(x.panels)
    by_id = records.set_index(["set", "image_id"])
    panels = [
        make_panel(
            work.maker.classifier,
            work.maker.classes,
            work.maker.quality,
            {**by_id.loc[(row.set, row.image_id)].to_dict(), "set": row.set, "image_id": row.image_id},
            work.plan,
            (row.corruption, int(row.severity)),
            x.methods[0],
            settings,
        )
        for row in worst.itertuples()
    ]
    if panels:
        plot_panels(panels, layout.path(RunLayout.EXPLAIN_PANELS))


def _writes(config: RunConfig) -> tuple[str, ...]:
    x = config.explain
    sanity = (RunLayout.SANITY, RunLayout.EXPLAIN_SANITY) if x.sanity else ()
    corruptions = x.corruptions or config.evaluate.corruptions
    sets = ["val", *(s.name for s in config.evaluate.extra_sets)]
    curves = tuple(RunLayout.explain_curves(c, s) for s in sets for c in corruptions)
    panels = (RunLayout.EXPLAIN_PANELS,) if x.panels else ()
    return (
        RunLayout.MAPS,
        RunLayout.COMPARE,
        RunLayout.COMPARE_SUMMARY,
        RunLayout.STATS,
        *sanity,
        *curves,
        RunLayout.EXPLAIN_CHANGE,
        *panels,
    )


EXPLAIN = Stage(
    name="explain",
    does="attribution maps vs quality maps on evaluate's crops: agreement, baselines, sanity check, statistics",
    version=1,
    reads=(RunLayout.EVAL, RunLayout.SPLIT, RunLayout.BEST, RunLayout.LAST),
    writes=_writes,
    settings=_settings,
    inputs=_inputs,
    body=_explain,
    check=_check,
    scratch=(RunLayout.EXPLAIN_PARTS,),
)
