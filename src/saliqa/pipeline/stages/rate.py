"""Stage rate: every image gets a quality score, a category and a patch map.

Decoding runs in a small thread pool ahead of the model (Pillow releases the GIL while decoding); images of
equal size are rated in one batch. Work is cut into shards of images sorted by ``image_id``: each finished
shard is on disk (its rows and its maps), so a killed run resumes at the first unfinished shard and ends with
the same table as an uninterrupted one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from saliqa.config import RunConfig, config_to_dict, result_settings
from saliqa.data.readers import ImageTable
from saliqa.device import resolve_device
from saliqa.errors import ImageRejected
from saliqa.images import DecodedImage, DecodePolicy, decode_image, reject_status, to_batch
from saliqa.iqa.base import PatchGrid, QualityModel
from saliqa.iqa.registry import check_quality_model, judge_label
from saliqa.pipeline.engines import check_engine
from saliqa.pipeline.layout import RunLayout
from saliqa.pipeline.mapstore import write_map_shard
from saliqa.pipeline.models import QualitySpec
from saliqa.pipeline.plan import Runtime, decode_policy
from saliqa.pipeline.runner import Stage, StageContext, StageReport
from saliqa.pipeline.shards import FailureGuard, Item, Shards, in_order, judged, run_shards, unusable
from saliqa.pipeline.sources import listing_identity
from saliqa.pipeline.tables import RATINGS
from saliqa.report.figures import plot_category_counts, plot_quality_histogram

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Rated:
    """One image's rating row, and its patch map when it was rated."""

    row: dict[str, Any]
    patch_map: np.ndarray | None = None
    grid: PatchGrid | None = None


@dataclass
class _Image(Item):
    decoded: DecodedImage | None = None
    rated: Rated | None = None


def _ordered_map(
    fn: Callable[[T], R], items: Iterable[T], pool: ThreadPoolExecutor | None, window: int
) -> Iterator[R]:
    """``map(fn, items)`` on a thread pool, in order, with at most ``window`` items in flight."""
    if pool is None:
        yield from map(fn, items)
        return
    pending: deque[Future[R]] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def decode_item(position: int, record: dict[str, Any], policy: DecodePolicy) -> _Image:
    """Rate's CPU half: the record decoded, or why it cannot be (missing, rejected)."""
    item = _Image(position, record)
    why = unusable(record)
    if why is not None:
        item.status, item.reason = why
    else:
        try:
            item.decoded = decode_image(record["path"], policy)
        except ImageRejected as reject:
            item.status, item.reason = reject_status(reject.reason), reject.reason
    return item


@dataclass(frozen=True)
class RateRecipe:
    """Rate's picklable halves (:class:`~saliqa.pipeline.shards.WorkRecipe`): decode, and the quality model."""

    quality: QualitySpec
    policy: DecodePolicy
    batch_size: int

    @property
    def device(self) -> str:
        return self.quality.device

    def prepare(self, position: int, record: dict[str, Any]) -> _Image:
        return decode_item(position, record, self.policy)

    def build(self) -> RateWork:
        model = self.quality.build()
        return RateWork(model, Runtime(model.device, self.batch_size, workers=0), self.policy)

    def ready(self, item: _Image, work: RateWork) -> _Image:
        return item


class RateWork:
    """The per-image work of rate: decode (threads), rate equal-size batches, one map shard per shard."""

    units = 1
    key = ("image_id",)
    failure = "quality model failed"

    def __init__(
        self, model: QualityModel, runtime: Runtime, policy: DecodePolicy, maps: Path | None = None
    ) -> None:
        self.model, self.policy, self.maps = model, policy, maps
        self.label = f"rate ({model.name})"
        self.batch_images = runtime.batch_size
        self.window = max(4, 2 * runtime.workers + runtime.batch_size)
        self.pool = (
            ThreadPoolExecutor(runtime.workers, thread_name_prefix="saliqa-decode")
            if runtime.workers > 0
            else None
        )

    def prepare(self, start: int, records: Sequence[dict[str, Any]]) -> Iterator[_Image]:
        return _ordered_map(
            lambda numbered: decode_item(*numbered, self.policy), enumerate(records), self.pool, self.window
        )

    def batch_key(self, item: _Image) -> Hashable:
        return item.decoded.array.shape if item.decoded is not None else None

    def judge(self, items: list[_Image]) -> None:
        out = self.model(to_batch([item.decoded.array for item in items]))
        score, quality = out.score.double().cpu().numpy(), out.quality.double().cpu().numpy()
        maps = out.patch_map.float().cpu().numpy()
        for i, item in enumerate(items):
            item.rated = Rated(
                self._row(item, score=float(score[i]), quality=float(quality[i]), category=out.category[i]),
                maps[i],
                out.grid,
            )

    def _row(self, item: _Image, **values: Any) -> dict[str, Any]:
        decoded, record = item.decoded, item.record
        return RATINGS.row(
            image_id=record["image_id"],
            path=record["path"],
            label=record["label"],
            width=decoded.width if decoded is not None else None,
            height=decoded.height if decoded is not None else None,
            status=item.status,
            reason=item.reason if item.status != "ok" else decoded.note,
            iqa=self.model.name,
            **{"score": float("nan"), "quality": float("nan"), **values},
        )

    def result(self, item: _Image) -> Rated:
        return item.rated if item.rated is not None and item.status == "ok" else Rated(self._row(item))

    def rows(self, item: _Image) -> list[dict[str, Any]]:
        return [self.result(item).row]

    def before_commit(self, index: int, items: list[_Image]) -> None:
        if self.maps is None:
            return
        done = [self.result(item) for item in items]
        done = [r for r in done if r.patch_map is not None]
        write_map_shard(
            self.maps / f"part-{index:05d}.npz",
            [r.row["image_id"] for r in done],
            [r.patch_map for r in done],
            [r.grid for r in done],
        )

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def rate_records(
    records: pd.DataFrame,
    model: QualityModel,
    *,
    policy: DecodePolicy | None = None,
    batch_size: int = 16,
    workers: int = 2,
) -> Iterator[Rated]:
    """Rate the images of ``records`` (columns ``image_id, path, label[, present, reason]``), in order.

    Never raises for one image: missing, undecodable and model-failing images come back as rows with their
    ``status`` and ``reason``; the same error on every image raises :class:`~saliqa.errors.StageFailed`.
    """
    work = RateWork(model, Runtime(model.device, batch_size, workers), policy or DecodePolicy())
    guard = FailureGuard(work.label)
    try:
        items = work.prepare(0, records.to_dict("records"))
        for item in in_order(judged(work, items, lambda _: None)):
            guard.shard(item.position, [item])
            yield work.result(item)
        guard.finish()
    finally:
        work.close()


# -- the stage ---------------------------------------------------------------------------------------------------
def _dataset(ctx: StageContext) -> ImageTable:
    sources = ctx.sources
    if sources.dataset is None:
        return sources.demo(ctx.path(RunLayout.DEMO_DATA), ctx.progress)
    return sources.dataset


def _check(config: RunConfig) -> None:
    check_engine(config.engine)
    resolve_device(config.rate.device)
    check_quality_model(config.rate.iqa)


def _settings(config: RunConfig) -> dict[str, Any]:
    return {"images": config_to_dict(config.images), **result_settings(config.rate)}


def _spec(ctx: StageContext) -> QualitySpec:
    """The stage's quality model as a spec: the parameter files found now, by hash."""
    device = Runtime.for_rate(ctx.config).device
    return ctx.once("quality_spec", lambda: QualitySpec.find(ctx.config.rate.iqa, device, ctx.run.hashes))


def _quality(ctx: StageContext) -> QualityModel:
    """The stage's quality model, built once from its spec."""
    return ctx.once("quality", lambda: _spec(ctx).build())


def _inputs(ctx: StageContext) -> dict[str, Any]:
    return {"dataset": listing_identity(_dataset(ctx), ctx.run.hashes), "model": _quality(ctx).fingerprint()}


def _rate(ctx: StageContext) -> StageReport:
    config, layout = ctx.config, ctx.layout
    table = _dataset(ctx)
    runtime = Runtime.for_rate(config, ctx.progress)
    model = _quality(ctx)
    maps = layout.quality_maps
    # Rows computed on another kind of device are not mixed into one table: the device is in the stamp.
    shards = Shards(
        layout.path(RunLayout.RATINGS_PARTS),
        f"{ctx.fingerprint} shard_size={runtime.shard_size} device={model.device.type}",
        clear_with=[maps],
    )
    maps.mkdir(parents=True, exist_ok=True)
    records = table.frame.sort_values("image_id", kind="stable").to_dict("records")
    policy = decode_policy(config)
    done = run_shards(
        RateWork(model, runtime, policy, maps),
        records,
        shards,
        schema=RATINGS,
        runtime=runtime,
        recipe=RateRecipe(_spec(ctx), policy, runtime.batch_size),
    )
    frames = [RATINGS.read(part) for part in done.parts]
    ratings = pd.concat(frames, ignore_index=True) if frames else RATINGS.empty()
    meta = ctx.meta("rate", model=model.fingerprint(), device=str(model.device), dataset=table.source)
    RATINGS.write(layout.ratings, ratings, meta)
    direction = "higher" if model.higher_is_better else "lower"
    label = f"{judge_label(ctx.config.rate.iqa)} score ({direction} is better)"
    plot_quality_histogram(ratings, layout.path(RunLayout.QUALITY_HISTOGRAM), score_label=label)
    plot_category_counts(ratings, layout.path(RunLayout.CATEGORY_COUNTS))  # rate must not depend on split
    counts = ratings["status"].value_counts().to_dict()
    messages = [table.summary(), *table.notes, "status: " + ", ".join(f"{k} {v}" for k, v in counts.items())]
    if done.reused:
        messages.append(f"resumed: {done.reused} shard(s) reused from an interrupted run")
    return StageReport(messages, {"shards_reused": done.reused, "status_counts": counts})


RATE = Stage(
    name="rate",
    does="every image gets a quality score, a category and a patch map",
    version=1,
    reads=(),
    writes=lambda config: (
        RunLayout.RATINGS,
        RunLayout.QUALITY_MAPS,
        RunLayout.QUALITY_HISTOGRAM,
        RunLayout.CATEGORY_COUNTS,
    ),
    settings=_settings,
    inputs=_inputs,
    body=_rate,
    check=_check,
    scratch=(RunLayout.RATINGS_PARTS,),
)
