"""Stage split: keep the categories the config names and split them 80/20 per class, seeded."""

from __future__ import annotations

from typing import Any

import pandas as pd

from saliqa.config import RunConfig, result_settings
from saliqa.data.split import quality_split
from saliqa.io.tables import write_table
from saliqa.pipeline.layout import RunLayout
from saliqa.pipeline.runner import Stage, StageContext, StageReport


def split_records(layout: RunLayout) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and validation rows (``image_id, path, label``) of a run's split."""
    split = pd.read_parquet(layout.split)
    ratings = pd.read_parquet(layout.ratings, columns=["image_id", "path", "label"])
    rows = split.merge(ratings, on="image_id", how="left")
    return rows[rows["split"] == "train"], rows[rows["split"] == "val"]


def _settings(config: RunConfig) -> dict[str, Any]:
    return {
        "split": result_settings(config.split),
        "seed": config.seed,
        "evaluate_only": config.model is not None,
    }


def _split(ctx: StageContext) -> StageReport:
    s, layout = ctx.config.split, ctx.layout
    ratings = pd.read_parquet(layout.ratings)
    table, messages = quality_split(
        ratings,
        keep=s.keep,
        val_fraction=s.val_fraction,
        min_per_class=s.min_per_class,
        seed=ctx.config.seed,
        evaluate_only=ctx.config.model is not None,
    )
    write_table(layout.split, table, ctx.meta("split"))
    counts = table["split"].value_counts().to_dict()
    messages.append("split: " + ", ".join(f"{k} {counts.get(k, 0)}" for k in ("train", "val", "excluded")))
    return StageReport(messages, {"counts": counts})


SPLIT = Stage(
    name="split",
    does="keeps the chosen quality categories and splits them train/val per class, seeded",
    version=1,
    reads=(RunLayout.RATINGS,),
    writes=lambda config: (RunLayout.SPLIT,),
    settings=_settings,
    body=_split,
)
