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
