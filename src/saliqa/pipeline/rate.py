"""Stage rate: every image gets a quality score, a category and a patch map.

Decoding runs in a small thread pool ahead of the model (Pillow releases the GIL while decoding); images of
equal size are rated in one batch. Work is cut into shards of images sorted by ``image_id``: each finished
shard is on disk (its rows and its maps), so a killed run resumes at the first unfinished shard and ends with
the same table as an uninterrupted one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from saliqa.errors import ImageRejected
from saliqa.images import DecodedImage, DecodePolicy, decode_image, reject_status, to_batch
from saliqa.io.progress import progress_bar
from saliqa.io.tables import write_table
from saliqa.iqa.base import PatchGrid, QualityModel
from saliqa.pipeline.mapstore import write_map_shard
from saliqa.pipeline.shards import Shards

RATING_COLUMNS: tuple[str, ...] = (
    "image_id",
    "path",
    "label",
    "width",
    "height",
    "status",
    "reason",
    "iqa",
    "score",
    "quality",
    "category",
)
"""Columns of ``ratings.parquet``. ``status`` is ok, missing, rejected or failed; ``reason`` says why (or
notes what was done to an ok image, e.g. a downscale)."""

RATINGS_FILE = "ratings.parquet"
MAPS_DIR = "quality_maps"
PARTS_DIR = "ratings.parts"

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Rated:
    """One image's rating row, and its patch map when it was rated."""

    row: dict[str, Any]
    patch_map: np.ndarray | None = None
    grid: PatchGrid | None = None


def _ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int, window: int) -> Iterator[R]:
    """``map(fn, items)`` on a thread pool, in order, with at most ``window`` items in flight."""
    if workers <= 0:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="saliqa-decode") as pool:
        pending: deque[Future[R]] = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _base_row(record: dict[str, Any], iqa: str) -> dict[str, Any]:
    return {
        "image_id": record["image_id"],
        "path": record["path"],
        "label": record["label"],
        "width": None,
        "height": None,
        "status": "ok",
        "reason": None,
        "iqa": iqa,
        "score": float("nan"),
        "quality": float("nan"),
        "category": None,
    }


def _decode(record: dict[str, Any], policy: DecodePolicy) -> tuple[dict[str, Any], DecodedImage | str]:
    if not record.get("present", True):
        return record, "file not found"
    try:
        return record, decode_image(record["path"], policy)
    except ImageRejected as reject:
        return record, reject.reason


def _rate_batch(model: QualityModel, batch: list[tuple[dict[str, Any], DecodedImage]]) -> list[Rated]:
    """Rate equal-size images together; if the batch fails, retry one by one so one bad image fails alone."""
    try:
        out = model(to_batch([d.array for _, d in batch]))
    except Exception as error:  # noqa: BLE001 - a model failure on one image must not end the run
        if len(batch) > 1:
            return [r for item in batch for r in _rate_batch(model, [item])]
        record, decoded = batch[0]
        row = _base_row(record, model.name)
        row.update(width=decoded.width, height=decoded.height, status="failed")
        row["reason"] = f"quality model failed: {type(error).__name__}: {error}"
        return [Rated(row)]
    rated = []
    score, quality = out.score.double().cpu().numpy(), out.quality.double().cpu().numpy()
    maps = out.patch_map.float().cpu().numpy()
    for i, (record, decoded) in enumerate(batch):
        row = _base_row(record, model.name)
        row.update(
            width=decoded.width,
            height=decoded.height,
            reason=decoded.note,
            score=float(score[i]),
            quality=float(quality[i]),
            category=out.category[i],
        )
        rated.append(Rated(row, maps[i], out.grid))
    return rated


def rate_records(
    records: pd.DataFrame,
    model: QualityModel,
    *,
    policy: DecodePolicy | None = None,
    batch_size: int = 16,
    workers: int = 2,
) -> Iterator[Rated]:
    """Rate the images of ``records`` (columns ``image_id, path, label[, present]``), yielding in order.

    Never raises for one image: missing, undecodable and model-failing images come back as rows with their
    ``status`` and ``reason``.
    """
    policy = policy or DecodePolicy()
    items = records.to_dict("records")
    decoded = _ordered_map(
        lambda r: _decode(r, policy), items, workers, window=max(4, 2 * workers + batch_size)
    )
    pending: list[tuple[dict[str, Any], DecodedImage | str]] = []  # everything since the last flush, in order
    batch: list[tuple[dict[str, Any], DecodedImage]] = []  # its decoded images, all of one size

    def flush() -> Iterator[Rated]:
        rated = iter(_rate_batch(model, batch) if batch else ())
        for record, d in pending:
            if isinstance(d, DecodedImage):
                yield next(rated)
            else:
                row = _base_row(record, model.name)
                row.update(status=reject_status(d), reason=d)
                yield Rated(row)
        pending.clear()
        batch.clear()

    for record, d in decoded:
        if isinstance(d, DecodedImage):
            if batch and (d.array.shape != batch[0][1].array.shape or len(batch) >= batch_size):
                yield from flush()
            batch.append((record, d))
        pending.append((record, d))
    yield from flush()


def ratings_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows as a table with the contract's columns and dtypes."""
    frame = pd.DataFrame(rows, columns=list(RATING_COLUMNS))
    for column in ("width", "height"):
        frame[column] = frame[column].astype("Int64")
    for column in ("score", "quality"):
        frame[column] = frame[column].astype("float64")
    return frame


def rate_to_dir(
    records: pd.DataFrame,
    model: QualityModel,
    out: Path,
    *,
    fp: str,
    meta: dict[str, Any],
    policy: DecodePolicy | None = None,
    batch_size: int = 16,
    shard_size: int = 256,
    workers: int = 2,
    progress: bool = True,
) -> tuple[pd.DataFrame, int]:
    """Rate into ``out``: ``ratings.parquet`` and the map store ``quality_maps/``, resuming finished shards.

    ``fp`` identifies the work (data, decoding, model); shards left by other work (another ``fp``, shard size
    or device) are discarded. Returns the ratings and the number of shards reused from an interrupted run.
    """
    maps = out / MAPS_DIR
    identity = f"{fp} shard_size={shard_size} device={model.device.type}"
    shards = Shards(out / PARTS_DIR, identity, clear_with=[maps])
    maps.mkdir(parents=True, exist_ok=True)

    ordered = records.sort_values("image_id", kind="stable").reset_index(drop=True)
    pieces = [ordered.iloc[i : i + shard_size] for i in range(0, len(ordered), shard_size)]
    frames, reused = [], 0
    with progress_bar(f"rate ({model.name})", total=len(ordered), enabled=progress) as bar:
        for index, shard in enumerate(pieces):
            done_part = shards.done(index, [[i] for i in shard["image_id"]], ["image_id"])
            if done_part is not None:
                frames.append(done_part)
                reused += 1
                bar.advance(len(shard))
                continue
            rated = []
            for item in rate_records(shard, model, policy=policy, batch_size=batch_size, workers=workers):
                rated.append(item)
                bar.advance()
            done = [r for r in rated if r.patch_map is not None]
            write_map_shard(
                maps / f"part-{index:05d}.npz",
                [r.row["image_id"] for r in done],
                [r.patch_map for r in done],
                [r.grid for r in done],
            )
            frame = ratings_frame([r.row for r in rated])
            shards.commit(index, frame)  # written last: the shard's commit mark
            frames.append(frame)
    ratings = ratings_frame([]) if not frames else pd.concat(frames, ignore_index=True)
    # Rebuilt from plain records: parts read back from parquet and parts rated now then share one set of
    # dtypes, so a resumed table is identical to an uninterrupted one.
    ratings = ratings_frame(ratings.to_dict("records"))
    write_table(out / RATINGS_FILE, ratings, meta)
    return ratings, reused
