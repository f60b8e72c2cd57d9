"""The Python API: the same operations as the CLI, as plain functions.

>>> import saliqa
>>> image = saliqa.read_image("photo.jpg")                     # (H, W, 3) uint8 RGB
>>> model = saliqa.load_quality_model("piqe")
>>> out = model(saliqa.to_batch([image]))                       # score, quality, category, patch map
>>> table = saliqa.rate(["photos/"], iqa="piqe", out="rated")  # ratings.parquet + quality_maps/
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd

from saliqa.config import config_from_dict
from saliqa.data.readers import ImageTable, read_paths
from saliqa.images import DecodePolicy
from saliqa.iqa.registry import load_quality_model
from saliqa.pipeline.layout import RunLayout
from saliqa.pipeline.runner import run_stages
from saliqa.pipeline.sources import Sources
from saliqa.pipeline.stages.rate import RATE, Rated, rate_records
from saliqa.pipeline.tables import RATINGS

PathLike = str | os.PathLike[str]


def collect_images(paths: Sequence[PathLike]) -> ImageTable:
    """Image files named by ``paths`` (files, or folders searched recursively); see
    :func:`saliqa.data.readers.read_paths` for ids and labels."""
    return read_paths(paths)


def iter_ratings(
    paths: Sequence[PathLike] | ImageTable,
    *,
    iqa: str = "piqe",
    device: str = "auto",
    batch_size: int = 16,
    workers: int = 2,
    policy: DecodePolicy | None = None,
) -> Iterator[Rated]:
    """Rate images one by one as they are done (rows and patch maps), without writing anything."""
    table = paths if isinstance(paths, ImageTable) else collect_images(paths)
    model = load_quality_model(iqa, device=device)
    yield from rate_records(table.frame, model, policy=policy, batch_size=batch_size, workers=workers)


def rate(
    paths: Sequence[PathLike] | ImageTable,
    *,
    iqa: str = "piqe",
    out: PathLike | None = None,
    device: str = "auto",
    batch_size: int = 16,
    workers: int = 2,
    progress: bool = False,
) -> pd.DataFrame:
    """Rate images and return the ratings table (columns of ``ratings.parquet``).

    With ``out``, also write ``ratings.parquet``, the patch maps (``quality_maps/``, read them with
    :class:`saliqa.MapStore`) and the figures there, resumable and skipped when already up to date.
    """
    table = paths if isinstance(paths, ImageTable) else collect_images(paths)
    if out is None:
        rated = iter_ratings(table, iqa=iqa, device=device, batch_size=batch_size, workers=workers)
        return RATINGS.frame(r.row for r in rated)
    config = config_from_dict(
        {"rate": {"iqa": iqa, "device": device, "batch_size": batch_size, "workers": workers}}
    )
    run_stages([RATE], config, out, sources=Sources(config, table), progress=progress)
    return RATINGS.read(RunLayout(Path(out)).ratings)


def explain_image(
    path: PathLike,
    checkpoint: PathLike,
    *,
    corruption: str,
    severity: int,
    iqa: str = "piqe",
    method: str = "gradcam",
    target: str = "prediction",
    label: str | None = None,
    image_id: str | None = None,
    crop: int = 224,
    grid: int = 7,
    seed: int = 0,
    device: str = "auto",
    out: PathLike | None = None,
    sliding_map: tuple[int, int] | None = None,
) -> dict[str, object]:
    """One image as the explain stage sees it: the study's panel (written to ``out`` when given) and how far
    the attribution map of the distorted crop agrees with its quality and damage maps.

    ``image_id`` keys the corruption's random draws (default: the file name); give the id a run used (its
    path under the dataset root) to get that run's very crop. ``target``: ``prediction`` (the clean crop's
    predicted class) or ``label`` (then ``label`` names the class). ``sliding_map``: ``(patch, stride)`` of
    NIQE's or BRISQUE's windows instead of the release's 96-pixel tiling (as ``[explain.sliding_map]``).
    """
    from saliqa.classify.checkpoint import classifier_from_checkpoint
    from saliqa.config import ExplainConfig
    from saliqa.device import resolve_device
    from saliqa.explain.compare import damage_map, pair_scores
    from saliqa.pipeline.explanation import ExplainSettings, explanation_maps, make_panel
    from saliqa.pipeline.plan import CropPlan, conditions
    from saliqa.report.explain_figures import plot_panel

    windows = {"sliding_map": dict(zip(("patch", "stride"), sliding_map, strict=True))} if sliding_map else {}
    checked = config_from_dict(
        {
            "rate": {"iqa": iqa},
            "evaluate": {"crop": crop},
            "explain": {"methods": [method], "target": target, "grid": grid, **windows},
        }
    )
    if target == "label" and label is None:
        raise ValueError("target='label' needs label= (the image's class name)")
    torch_device = resolve_device(device)
    classifier, state = classifier_from_checkpoint(checkpoint, torch_device)
    sliding = checked.explain.sliding_map
    if sliding is None:
        quality = load_quality_model(iqa, device=torch_device)
    else:
        quality = load_quality_model(iqa, device=torch_device, sliding_map=sliding.windows())
    plan = CropPlan(conditions((corruption,), (severity,)), crop=crop, seed=seed)
    settings = ExplainSettings((method,), target, grid, {}, seed, 16)
    record = {"path": str(path), "image_id": image_id or Path(path).name, "label": label, "set": "val"}
    panel = make_panel(
        classifier, list(state["classes"]), quality, record, plan, plan.conditions[1], method, settings
    )
    maps = explanation_maps(classifier, list(state["classes"]), quality, record, plan, settings)
    quality_map = maps["quality"][1:]
    scores = {
        f"{metric} with the {name} map": float(pair_scores(maps[method][1:], ref, metric)[0])
        for name, ref in (("quality", quality_map), ("damage", damage_map(quality_map)))
        for metric in ExplainConfig().metrics
    }
    if out is not None:
        plot_panel(panel, out)
    return {
        "image": str(path),
        "condition": panel.condition,
        "explained class": panel.target,
        "prediction (distorted)": panel.prediction,
        "quality clean": panel.clean_quality,
        "quality distorted": panel.quality,
        "grid": maps["grid"],
        **scores,
        "panel": str(out) if out is not None else None,
    }
