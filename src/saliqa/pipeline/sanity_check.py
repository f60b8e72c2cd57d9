"""Explain's randomisation test on the run's own classifier: the clean crops of a few validation images."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import torch

from saliqa.classify.models import Classifier
from saliqa.errors import ImageRejected
from saliqa.explain.attribution import method_options
from saliqa.explain.sanity import cascading_randomisation, sanity_scores
from saliqa.loading import to_unit_float
from saliqa.pipeline.crops import image_crops
from saliqa.pipeline.explanation import ExplainSettings
from saliqa.pipeline.plan import CLEAN_CONDITION, CropPlan
from saliqa.seeding import derive_seed, rng_for
from saliqa.stats import bootstrap_mean_ci

COLUMNS = ["method", "step", "layer", "metric", "n", "mean", "lo", "hi"]


def sanity_table(
    classifier: Classifier,
    state: dict[str, Any],
    records: pd.DataFrame,
    plan: CropPlan,
    settings: ExplainSettings,
    n_boot: int,
) -> pd.DataFrame:
    """Per method and step of the cascade, the mean similarity of the maps to the trained model's, with a
    95 % interval over images (``records``: the images, whose clean crops are used)."""
    clean = replace(plan, conditions=(CLEAN_CONDITION,), distort_on="workers")
    crops, kept = [], []
    for record in records.to_dict("records"):
        try:
            crops.append(image_crops(record["path"], clean, record["image_id"]).crops)
            kept.append(record)
        except ImageRejected:
            continue
    if not crops:
        return pd.DataFrame(columns=COLUMNS)
    device = next(classifier.parameters()).device
    x = to_unit_float(torch.cat(crops), device)
    if settings.target == "label":
        index = {c: i for i, c in enumerate(state["classes"])}
        targets = torch.tensor([index[r["label"]] for r in kept], device=device)
    else:
        with torch.no_grad():
            targets = classifier(x).argmax(dim=1)
    rows = []
    for method in settings.methods:
        options = dict(settings.options.get(method, {}))
        if "seeds" in method_options(method):
            options["seeds"] = [derive_seed(settings.seed, "sanity", method, r["image_id"]) for r in kept]
        trained = None
        for step, layer, maps in cascading_randomisation(
            classifier, x, targets, method, seed=settings.seed, **options
        ):
            trained = maps if trained is None else trained
            for metric, values in sanity_scores(trained, maps).items():
                finite = values[np.isfinite(values)]
                rng = rng_for(settings.seed, "sanity-ci", method, step, metric)
                mean, lo, hi = bootstrap_mean_ci(finite, n_boot=n_boot, rng=rng)
                rows.append([method, step, layer, metric, len(finite), mean, lo, hi])
    return pd.DataFrame(rows, columns=COLUMNS)
