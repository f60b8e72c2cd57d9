"""``saliqa run``: the stages that exist, in order, each skipped when its fingerprint is unchanged.

rate -> ``ratings.parquet`` + ``quality_maps/`` + figures; split -> ``split.parquet``. A stage's fingerprint
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

from saliqa.config import RunConfig, config_to_dict, dump_config
from saliqa.data.readers import ImageTable, open_dataset, read_folder
from saliqa.data.split import quality_split
from saliqa.device import resolve_device
from saliqa.images import DecodePolicy
from saliqa.iqa.registry import load_quality_model
from saliqa.pipeline.artifacts import fingerprint, provenance, versions, write_json, write_table, write_text
from saliqa.pipeline.rate import MAPS_DIR, RATINGS_FILE, discard_parts, rate_to_dir
from saliqa.pipeline.rundir import RunDir
from saliqa.progress import progress_callback
from saliqa.report.figures import plot_category_counts, plot_quality_histogram

log = logging.getLogger(__name__)

SPLIT_FILE = "split.parquet"
FIGURE_HISTOGRAM = "figures/quality_histogram.png"
FIGURE_CATEGORIES = "figures/category_counts.png"
_STAGE_VERSIONS = {"rate": 1, "split": 1}
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
    discard_parts(run.root)
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


def run_pipeline(config: RunConfig, out: str | Path, *, progress: bool = True) -> list[StageResult]:
    """Run every stage that is not up to date in the run directory ``out``; return what each did."""
    # Everything that can be wrong with the config fails here, before the run directory is touched.
    decode_policy(config)
    resolve_device(config.rate.device)
    data = config.data
    table = (
        None if data.source == "demo" else open_dataset(data.source, data.root, listed_only=data.listed_only)
    )
    run = RunDir(out)
    write_text(run.path("config.toml"), dump_config(config))
    if table is None:
        table = demo_dataset(config, run, progress)
    results = [stage_rate(config, run, table, progress)]
    results.append(stage_split(config, run, results[0].fingerprint))
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
