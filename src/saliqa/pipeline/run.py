"""``saliqa run``: the stages that exist, in order, each skipped when its fingerprint is unchanged.

rate -> ``ratings.parquet`` + ``quality_maps/`` + figures; split -> ``split.parquet``; train -> ``model/``
(``best.pt``, ``last.pt``, ``train_log.parquet``) + figure; evaluate -> ``eval.parquet``, ``summary.parquet``
+ figures. A stage's fingerprint
covers its config slice and the fingerprints of its inputs, so changing one setting reruns only what depends
on it, and a second run with the same config does no work.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from saliqa.classify.checkpoint import classifier_from_checkpoint
from saliqa.classify.models import check_pretrained
from saliqa.classify.train import BEST, LAST, LOG, Trainer
from saliqa.config import RunConfig, TrainConfig, config_to_dict, dump_config
from saliqa.data.readers import ImageTable, open_dataset, read_folder
from saliqa.data.split import quality_split
from saliqa.device import resolve_device
from saliqa.errors import CheckpointError, ConfigError
from saliqa.images import DecodePolicy
from saliqa.io.atomic import write_json, write_text
from saliqa.io.hashing import fingerprint, sha256_file
from saliqa.io.progress import progress_callback
from saliqa.io.provenance import provenance, versions
from saliqa.io.tables import read_provenance, write_table
from saliqa.iqa.registry import check_quality_model, load_quality_model
from saliqa.pipeline.evaluate import EVAL_FILE, Judges, conditions, evaluate_to_dir, read_eval
from saliqa.pipeline.evaluate import PARTS_DIR as EVAL_PARTS_DIR
from saliqa.pipeline.rate import MAPS_DIR, RATINGS_FILE, rate_to_dir
from saliqa.pipeline.rate import PARTS_DIR as RATE_PARTS_DIR
from saliqa.pipeline.rundir import RunDir
from saliqa.pipeline.shards import discard_parts
from saliqa.report.eval_figures import (
    plot_corruption_curves,
    plot_corruption_heatmap,
    plot_corruption_overview,
    plot_training_curves,
)
from saliqa.report.figures import plot_category_counts, plot_quality_histogram
from saliqa.robustness import corruption_errors
from saliqa.stats import summarize_eval

log = logging.getLogger(__name__)

SPLIT_FILE = "split.parquet"
FIGURE_HISTOGRAM = "figures/quality_histogram.png"
FIGURE_CATEGORIES = "figures/category_counts.png"
FIGURE_TRAINING = "figures/training_curves.png"
FIGURE_OVERVIEW = "figures/eval_overview.png"
MODEL_DIR = "model"
SUMMARY_FILE = "summary.parquet"
ROBUSTNESS_FILE = "robustness.parquet"
FIGURE_HEATMAP = "figures/eval_heatmap.png"
_STAGE_VERSIONS = {"rate": 1, "split": 1, "train": 1, "evaluate": 2}
"""Bumped when a stage's code changes its output, so old artifacts are not reused."""


@dataclass
class StageResult:
    name: str
    ran: bool
    fingerprint: str
    seconds: float = 0.0
    messages: list[str] = field(default_factory=list)


def decode_policy(config: RunConfig) -> DecodePolicy:
    c = config.images
    return DecodePolicy(max_pixels=c.max_pixels, oversize=c.oversize, min_side=c.min_side)


def demo_dataset(config: RunConfig, run: RunDir, progress: bool = True) -> ImageTable:
    """The embedded demo, built once inside the run directory (rebuilt only when its settings change)."""
    from saliqa.data.demo import build_demo

    with progress_callback("build demo", enabled=progress) as report:
        root = build_demo(
            run.path("data", "demo"),
            seed=config.seed,
            views_per_class=config.data.demo_views_per_class,
            progress=report,
        )
    return read_folder(root)


def listing_fingerprint(table: ImageTable) -> str:
    """Identity of a dataset listing: ids, labels, and each file's size and modification time."""
    rows = []
    for image_id, path, label, present in table.frame[["image_id", "path", "label", "present"]].itertuples(
        index=False
    ):
        try:
            stat = Path(path).stat() if present else None
        except OSError:  # gone since it was listed: rating will record it as missing
            stat = None
        rows.append((image_id, label, stat.st_size if stat else -1, stat.st_mtime_ns if stat else -1))
    return fingerprint(rows)


def stage_rate(config: RunConfig, run: RunDir, table: ImageTable, progress: bool) -> StageResult:
    model = load_quality_model(config.rate.iqa, device=config.rate.device)
    slice_ = {"images": config_to_dict(config.images), "iqa": config.rate.iqa}
    model_id = model.fingerprint()
    fp = fingerprint("rate", _STAGE_VERSIONS["rate"], listing_fingerprint(table), slice_, model_id)
    outputs = [RATINGS_FILE, MAPS_DIR, FIGURE_HISTOGRAM, FIGURE_CATEGORIES]
    if run.is_done("rate", fp):
        return StageResult("rate", False, fp)
    run.invalidate("rate")  # its outputs are about to change: never leave them marked done meanwhile
    start = time.perf_counter()
    meta = provenance("rate", fp, slice_, model=model_id, device=str(model.device), dataset=table.source)
    ratings, reused = rate_to_dir(
        table.frame,
        model,
        run.root,
        fp=fp,
        meta=meta,
        policy=decode_policy(config),
        batch_size=config.rate.batch_size,
        shard_size=config.rate.shard_size,
        workers=config.rate.workers,
        progress=progress,
    )
    direction = "higher" if model.higher_is_better else "lower"
    label = f"{model.name.upper()} score ({direction} is better)"
    plot_quality_histogram(ratings, run.path(FIGURE_HISTOGRAM), score_label=label)
    plot_category_counts(ratings, run.path(FIGURE_CATEGORIES))  # no split setting: rate must not depend on it
    counts = ratings["status"].value_counts().to_dict()
    messages = [table.summary(), *table.notes, "status: " + ", ".join(f"{k} {v}" for k, v in counts.items())]
    if reused:
        messages.append(f"resumed: {reused} shard(s) reused from an interrupted run")
    seconds = time.perf_counter() - start
    run.mark_done("rate", fp, outputs, seconds=seconds, shards_reused=reused, status_counts=counts)
    discard_parts(run.path(RATE_PARTS_DIR))
    return StageResult("rate", True, fp, seconds, messages)


def stage_split(config: RunConfig, run: RunDir, rate_fp: str) -> StageResult:
    slice_ = {"split": config_to_dict(config.split), "seed": config.seed}
    fp = fingerprint("split", _STAGE_VERSIONS["split"], rate_fp, slice_)
    if run.is_done("split", fp):
        return StageResult("split", False, fp)
    run.invalidate("split")
    start = time.perf_counter()
    ratings = pd.read_parquet(run.path(RATINGS_FILE))
    s = config.split
    table, messages = quality_split(
        ratings, keep=s.keep, val_fraction=s.val_fraction, min_per_class=s.min_per_class, seed=config.seed
    )
    write_table(run.path(SPLIT_FILE), table, provenance("split", fp, slice_, ratings=rate_fp))
    counts = table["split"].value_counts().to_dict()
    messages.append("split: " + ", ".join(f"{k} {counts.get(k, 0)}" for k in ("train", "val", "excluded")))
    seconds = time.perf_counter() - start
    run.mark_done("split", fp, [SPLIT_FILE], seconds=seconds, counts=counts, messages=messages)
    return StageResult("split", True, fp, seconds, messages)


def _split_records(run: RunDir) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and validation rows (``image_id, path, label``) of the split."""
    split = pd.read_parquet(run.path(SPLIT_FILE))
    ratings = pd.read_parquet(run.path(RATINGS_FILE), columns=["image_id", "path", "label"])
    rows = split.merge(ratings, on="image_id", how="left")
    return rows[rows["split"] == "train"], rows[rows["split"] == "val"]


def _pretrained_identity(pretrained: str) -> Any:
    """What the initial weights are, for the fingerprint: the name, or a local file's size and time."""
    if pretrained in ("random", "imagenet"):
        return pretrained
    stat = Path(pretrained).expanduser().stat()
    return [str(Path(pretrained).expanduser().resolve()), stat.st_size, stat.st_mtime_ns]


def _training_settings(t: TrainConfig, device: torch.device) -> dict[str, Any]:
    """The train settings that can change a weight: loader workers never do (every random draw is keyed by
    image), ``amp`` only on CUDA, the step settings only for the step schedule, warm-up not under onecycle."""
    unused = {"workers", "device"}
    unused |= {"amp"} if device.type != "cuda" else set()
    unused |= {"step_epochs", "step_gamma"} if t.schedule != "step" else set()
    unused |= {"warmup_epochs"} if t.schedule == "onecycle" else set()
    return {k: v for k, v in config_to_dict(t).items() if k not in unused}


def stage_train(config: RunConfig, run: RunDir, split_fp: str, progress: bool) -> StageResult:
    device = resolve_device(config.train.device)
    t = config.train
    slice_ = {
        "train": _training_settings(t, device),
        "seed": config.seed,
        "images": config_to_dict(config.images),
    }
    fp = fingerprint(
        "train", _STAGE_VERSIONS["train"], split_fp, slice_, _pretrained_identity(t.pretrained), device.type
    )
    outputs = [f"{MODEL_DIR}/{BEST}", f"{MODEL_DIR}/{LAST}", f"{MODEL_DIR}/{LOG}", FIGURE_TRAINING]
    if run.is_done("train", fp):
        return StageResult("train", False, fp)
    run.invalidate("train")
    start = time.perf_counter()
    train, val = _split_records(run)
    meta = provenance("train", fp, slice_, split=split_fp, device=str(device))
    result = Trainer(
        train,
        val,
        t,
        run.path(MODEL_DIR),
        seed=config.seed,
        fingerprint=fp,
        device=device,
        policy=decode_policy(config),
        meta=meta,
        progress=progress,
    ).run()
    plot_training_curves(result.log, run.path(FIGURE_TRAINING))
    best = result.log[result.log["epoch"] == result.best_epoch].iloc[0]
    messages = [
        f"train: {len(train)} images, {len(result.classes)} classes, {t.arch} from {result.init}",
        f"best epoch {result.best_epoch}/{t.epochs}: val top-1 {best.val_top1:.3f}, top-5 {best.val_top5:.3f}",
    ]
    if result.resumed_epochs:
        messages.append(f"resumed: {result.resumed_epochs} epoch(s) reused from an interrupted run")
    seconds = time.perf_counter() - start
    run.mark_done("train", fp, outputs, seconds=seconds, best_epoch=result.best_epoch, messages=messages)
    return StageResult("train", True, fp, seconds, messages)


def _eval_records(run: RunDir, extra_sets: dict[str, ImageTable]) -> tuple[pd.DataFrame, list[Any]]:
    """The validation split plus every extra evaluation set, with a ``set`` column; and the sets' identities."""
    _, val = _split_records(run)
    columns = ["image_id", "path", "label", "set", "present"]
    frames = [val.assign(set="val", present=True)[columns]]
    frames += [table.frame.assign(set=name)[columns] for name, table in extra_sets.items()]
    identities = [[name, listing_fingerprint(table)] for name, table in extra_sets.items()]
    return pd.concat(frames, ignore_index=True), identities


def stage_evaluate(
    config: RunConfig, run: RunDir, train_fp: str, extra_sets: dict[str, ImageTable], progress: bool
) -> StageResult:
    e = config.evaluate
    device = resolve_device(e.device)
    records, sets = _eval_records(run, extra_sets)
    quality = load_quality_model(config.rate.iqa, device=e.device)
    checkpoint = run.path(MODEL_DIR, BEST if e.checkpoint == "best" else LAST)
    # Loader workers, shard size and the device's index change no number; the bootstrap only the summary,
    # the robustness references only robustness.parquet.
    ignored = ("workers", "shard_size", "device", "bootstrap", "baseline", "alexnet_reference")
    slice_ = {
        "evaluate": {k: v for k, v in config_to_dict(e).items() if k not in ignored},
        "seed": config.seed,
        "images": config_to_dict(config.images),
        "iqa": config.rate.iqa,
    }
    work = [train_fp, slice_, sets, quality.fingerprint(), device.type, sha256_file(checkpoint)]
    work_fp = fingerprint("evaluate", _STAGE_VERSIONS["evaluate"], *work)
    baseline = _baseline_eval(e.baseline)
    baseline_sha256 = sha256_file(baseline) if baseline else None
    fp = fingerprint(work_fp, e.bootstrap, baseline_sha256, e.alexnet_reference)
    if run.is_done("evaluate", fp):
        return StageResult("evaluate", False, fp)
    run.invalidate("evaluate")
    start = time.perf_counter()
    meta = provenance(
        "evaluate",
        work_fp,
        slice_,
        train=train_fp,
        model=quality.fingerprint(),
        device=str(device),
        checkpoint=e.checkpoint,
    )
    messages, eval_path = [], run.path(EVAL_FILE)
    done_before = (read_provenance(eval_path) if eval_path.exists() else None) or {}
    if done_before.get("fingerprint") == work_fp:
        messages.append("eval.parquet is up to date: only the summary and figures were remade")
    else:
        classifier, state = classifier_from_checkpoint(checkpoint, device)
        if state.get("fingerprint") != train_fp:
            raise CheckpointError(
                f"{checkpoint} was not made by this run's training stage; delete model/ to retrain"
            )
        reused = evaluate_to_dir(
            records,
            Judges(classifier, list(state["classes"]), quality, e.batch_size),
            conditions(e.corruptions, e.severities),
            run.root,
            fp=work_fp,
            meta=meta,
            crop=e.crop,
            seed=config.seed,
            policy=decode_policy(config),
            shard_size=e.shard_size,
            workers=e.workers,
            distort_on_device=e.distort_on == "device",
            progress=progress,
        )
        if reused:
            messages.append(f"resumed: {reused} shard(s) reused from an interrupted run")
    table = read_eval(eval_path)
    summary = summarize_eval(table, seed=config.seed, n_boot=e.bootstrap)
    write_table(run.path(SUMMARY_FILE), summary, {**meta, "fingerprint": fp, "bootstrap": e.bootstrap})
    figures = _evaluation_figures(config, run, summary, judge=quality.name.upper())
    robustness, notes = _robustness(
        config, run, table, baseline, {**meta, "fingerprint": fp, "baseline_sha256": baseline_sha256}
    )
    outputs = [EVAL_FILE, SUMMARY_FILE, *robustness, *figures]
    messages += notes
    messages[:0] = [_summary_line(summary, name) for name in ["val", *(s.name for s in e.extra_sets)]]
    counts = table["status"].value_counts().to_dict()
    messages.append("eval rows: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    seconds = time.perf_counter() - start
    run.mark_done("evaluate", fp, outputs, seconds=seconds, messages=messages)
    discard_parts(run.path(EVAL_PARTS_DIR))
    return StageResult("evaluate", True, fp, seconds, messages)


def _baseline_eval(baseline: Path | None) -> Path | None:
    """The baseline's eval.parquet (given as the file or its run directory), checked before any work."""
    if baseline is None:
        return None
    path = baseline / EVAL_FILE if baseline.is_dir() else baseline
    if not path.is_file():
        raise ConfigError(
            f"evaluate.baseline: no eval table at {path}; give a run directory or its {EVAL_FILE}"
        )
    return path


def _robustness(
    config: RunConfig, run: RunDir, table: pd.DataFrame, baseline: Path | None, meta: dict
) -> tuple[list[str], list[str]]:
    """robustness.parquet (CE, relative CE, mCE against the baseline run and/or AlexNet) when asked; and
    the messages that say where the baseline is not comparable."""
    e = config.evaluate
    run.path(ROBUSTNESS_FILE).unlink(missing_ok=True)
    frames, messages = [], []
    if baseline:
        theirs = read_eval(baseline)
        frames.append(corruption_errors(table, theirs))
        messages += _baseline_differences(config, table, theirs, read_provenance(baseline) or {})
    frames += [corruption_errors(table)] if e.alexnet_reference else []
    if not frames:
        return [], messages
    scores = pd.concat(frames, ignore_index=True)
    write_table(run.path(ROBUSTNESS_FILE), scores, {**meta, "baseline": str(baseline) if baseline else None})
    return [ROBUSTNESS_FILE], messages


def _baseline_differences(
    config: RunConfig, ours: pd.DataFrame, theirs: pd.DataFrame, made: dict
) -> list[str]:
    """CE is a ratio of errors on the same images under the same corruptions: say where that is not so."""
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


def _evaluation_figures(config: RunConfig, run: RunDir, summary: pd.DataFrame, judge: str) -> list[str]:
    """The curves of each corruption, the overviews and the Top-1 heat maps; stale figures are removed."""
    for old in run.path("figures").glob("eval_*.png"):
        old.unlink()
    figures = [FIGURE_OVERVIEW, FIGURE_HEATMAP]
    plot_corruption_overview(summary, run.path(FIGURE_OVERVIEW), judge=judge)
    plot_corruption_heatmap(summary, run.path(FIGURE_HEATMAP))
    for name in config.evaluate.corruptions:
        figures.append(f"figures/eval_{name}.png")
        plot_corruption_curves(summary, name, run.path(figures[-1]), judge=judge)
    for extra in config.evaluate.extra_sets:
        figures.append(f"figures/eval_overview_{extra.name}.png")
        plot_corruption_overview(summary, run.path(figures[-1]), judge=judge, eval_set=extra.name)
        figures.append(f"figures/eval_heatmap_{extra.name}.png")
        plot_corruption_heatmap(summary, run.path(figures[-1]), eval_set=extra.name)
    return figures


def _summary_line(summary: pd.DataFrame, eval_set: str) -> str:
    clean = summary[(summary["set"] == eval_set) & (summary["corruption"] == "none")]
    if clean.empty:
        return f"{eval_set}: nothing evaluated"
    row = clean.iloc[0]
    return (
        f"{eval_set} clean ({row.n} images): top-1 {row.top1_acc:.3f} [{row.top1_lo:.3f}, {row.top1_hi:.3f}], "
        f"top-5 {row.top5_acc:.3f}, mean quality {row.mean_quality:.1f}"
    )


STAGES = ("rate", "split", "train", "evaluate")


def run_pipeline(
    config: RunConfig, out: str | Path, *, until: str | None = None, progress: bool = True
) -> list[StageResult]:
    """Run every stage that is not up to date in the run directory ``out``; return what each did.

    ``until`` names the last stage to run (e.g. ``"split"`` to rate and split only).
    """
    if until is not None and until not in STAGES:
        raise ConfigError(f"unknown stage {until!r}; choose one of {', '.join(STAGES)}")
    # Everything that can be wrong with the config fails here, before the run directory is touched.
    decode_policy(config)
    for device in (config.rate.device, config.train.device, config.evaluate.device):
        resolve_device(device)
    check_quality_model(config.rate.iqa)
    check_pretrained(config.train.arch, config.train.pretrained)
    _baseline_eval(config.evaluate.baseline)
    extra_sets = {
        extra.name: open_dataset(extra.source, extra.root, listed_only=extra.listed_only)
        for extra in config.evaluate.extra_sets
    }
    data = config.data
    table = (
        None if data.source == "demo" else open_dataset(data.source, data.root, listed_only=data.listed_only)
    )
    run = RunDir(out)
    write_text(run.path("config.toml"), dump_config(config))
    if table is None:
        table = demo_dataset(config, run, progress)
    results = [stage_rate(config, run, table, progress)]
    later = (
        lambda fp: stage_split(config, run, fp),
        lambda fp: stage_train(config, run, fp, progress),
        lambda fp: stage_evaluate(config, run, fp, extra_sets, progress),
    )
    for stage in later:
        if results[-1].name == until:
            break
        results.append(stage(results[-1].fingerprint))
    summary: dict[str, Any] = {
        "versions": versions(),
        "stages": [
            {"name": r.name, "ran": r.ran, "fingerprint": r.fingerprint, "seconds": r.seconds}
            for r in results
        ],
    }
    write_json(run.path("run.json"), summary)
    for r in results:
        log.info("%s: %s", r.name, "done" if r.ran else "up to date")
    return results
