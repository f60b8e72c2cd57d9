"""Stage split: keep the images a quality judge rates well enough, then a seeded stratified split.

Each class is split on its own, from its image ids sorted and shuffled by a stream seeded with (seed, label):
the split of one class does not depend on any other class, on row order, or on how many classes there are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from saliqa.errors import SaliqaError
from saliqa.seeding import rng_for

SPLIT_COLUMNS: tuple[str, ...] = ("image_id", "split", "reason")
"""Columns of ``split.parquet``: ``split`` is train, val or excluded; ``reason`` says why a row is excluded."""


class SplitError(SaliqaError):
    """No class has enough kept images to split."""


def n_validation(n: int, val_fraction: float) -> int:
    """Validation images of a class of ``n``: ``val_fraction * n`` rounded half up, at least 1 and at most n-1."""
    return min(n - 1, max(1, math.floor(n * val_fraction + 0.5)))


def quality_split(
    ratings: pd.DataFrame,
    *,
    keep: Sequence[str] = ("Good", "Excellent"),
    val_fraction: float = 0.2,
    min_per_class: int = 2,
    seed: int = 0,
    evaluate_only: bool = False,
) -> tuple[pd.DataFrame, list[str]]:
    """Split the rated images whose category is in ``keep``; every other row is excluded with a reason.

    ``evaluate_only`` (a model evaluated as it is, nothing to train) puts every kept image in ``val``, whatever
    the size of its class. Returns the split table (one row per rating row) and human-readable messages about excluded classes.
    Raises :class:`SplitError` when nothing is left to split.
    """
    if min_per_class < 2:
        raise ValueError("min_per_class must be at least 2 (one train and one validation image)")
    ratings = ratings.reset_index(drop=True)
    split = pd.Series("excluded", index=ratings.index, dtype=object)
    reason = pd.Series(None, index=ratings.index, dtype=object)
    ok = ratings["status"] == "ok"
    reason[~ok] = "status " + ratings.loc[~ok, "status"].astype(str)
    kept = ok & ratings["category"].isin(list(keep))
    reason[ok & ~kept] = "category " + ratings.loc[ok & ~kept, "category"].astype(str) + " not kept"

    messages = []
    kept_rows = ratings[kept]
    if evaluate_only:
        split[kept] = "val"
    for label in [] if evaluate_only else sorted(ratings["label"].unique()):
        group = kept_rows[kept_rows["label"] == label]
        ids = np.sort(group["image_id"].to_numpy(dtype=str))
        if len(ids) < min_per_class:
            messages.append(
                f"class {label!r} has {len(ids)} image(s) rated {'/'.join(keep)}, fewer than min_per_class="
                f"{min_per_class}: left out of the split (keep more categories or add images)"
            )
            reason[group.index] = f"class has {len(ids)} kept image(s) < min_per_class={min_per_class}"
            continue
        order = rng_for(seed, "split", label).permutation(len(ids))
        val_ids = set(ids[order[: n_validation(len(ids), val_fraction)]])
        split[group.index] = np.where(group["image_id"].isin(val_ids), "val", "train")
    table = pd.DataFrame({"image_id": ratings["image_id"], "split": split, "reason": reason})
    if not (table["split"] != "excluded").any():
        raise SplitError(
            f"nothing to split: no class has at least {min_per_class} ok images rated "
            f"{'/'.join(keep)} (of {len(ratings)} rows); widen split.keep or add images"
        )
    return table.sort_values("image_id", kind="stable").reset_index(drop=True), messages
