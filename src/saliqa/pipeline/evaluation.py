"""Evaluate's per-image work: every image x condition, distorted at full size, centre-cropped, judged twice.

A condition is the clean image (corruption ``none``, severity 0) or one corruption at one severity. Each image
is decoded once in a loader worker, brought up to the crop size on its short side when smaller (recorded in
``upscaled``), distorted at that full size for every condition, and centre-cropped (:mod:`.crops`), so the
classifier and the quality model see the very same crop. Loader workers live as long as the stage and prepare
the next images while the models run; memory holds one shard's rows and the crops of the batches in flight.
"""

from __future__ import annotations

from collections.abc import Container, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch.utils.data import Sampler

from saliqa.loading import data_loader
from saliqa.pipeline.crops import CropsDataset, Prepared, prepare_record
from saliqa.pipeline.layout import RunLayout
from saliqa.pipeline.models import Judges, JudgesSpec
from saliqa.pipeline.plan import CropPlan, Runtime
from saliqa.pipeline.shards import FailureGuard, Shards, in_order, judged, run_shards
from saliqa.pipeline.tables import EVAL


class _ShardBatches(Sampler[list[int]]):
    """The batches of the shard at hand: one loader (and its workers) serves every shard of the stage."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(list(self.batches))

    def __len__(self) -> int:
        return len(self.batches)


class CropFeed:
    """Records in, prepared crops out: loader workers (alive for the whole stage) decode, upscale and distort
    each wanted record of a shard, in batches of ``batch_images``; evaluate and explain both read from one."""

    def __init__(
        self,
        plan: CropPlan,
        runtime: Runtime,
        records: Sequence[dict[str, Any]],
        batch_images: int,
        device: torch.device,
        usable: int,
    ) -> None:
        self.plan, self.batch_images, self.device = plan, batch_images, device
        self.batches = _ShardBatches()
        workers = min(runtime.workers, usable)
        self.loader = data_loader(
            CropsDataset(list(records), plan),
            workers=workers,
            collate_fn=list,
            batch_sampler=self.batches,
            persistent_workers=workers > 0,
        )

    def prepare(self, start: int, wanted: list[int]) -> Iterator[Prepared]:
        """The records at positions ``wanted`` (stage-wide) with their crops (or why none), positions made
        relative to the shard's ``start``."""
        if not wanted:
            return
        self.batches.batches = [
            wanted[i : i + self.batch_images] for i in range(0, len(wanted), self.batch_images)
        ]
        for batch in self.loader:
            for prepared in batch:
                prepared.position -= start
                yield ready_on_device(prepared, self.plan, self.device)

    def close(self) -> None:
        self.loader = None  # type: ignore[assignment]  # its persistent workers end with it


def _unknown_label(position: int, record: dict[str, Any], classes: Container[str]) -> Prepared | None:
    """The record as skipped when its label is none of the classifier's classes."""
    if record["label"] in classes:
        return None
    reason = f"label {record['label']!r} is not one of the classifier's classes"
    return Prepared(position, record, status="skipped", reason=reason)


def ready_on_device(item: Prepared, plan: CropPlan, device: torch.device) -> Prepared:
    """An item's crops made on the models' device, when the plan distorts there."""
    return item.make_crops(plan, device) if plan.distort_on == "device" else item


@dataclass(frozen=True)
class EvaluateRecipe:
    """Evaluate's picklable halves (:class:`~saliqa.pipeline.shards.WorkRecipe`): decode and distort; judge."""

    judges: JudgesSpec
    plan: CropPlan
    classes: tuple[str, ...]

    @property
    def device(self) -> str:
        return self.judges.classifier.device

    def prepare(self, position: int, record: dict[str, Any]) -> Prepared:
        return _unknown_label(position, record, self.classes) or prepare_record(position, record, self.plan)

    def build(self) -> EvaluateWork:
        return EvaluateWork(self.judges.build(), self.plan, Runtime(workers=0), [])

    def ready(self, item: Prepared, work: EvaluateWork) -> Prepared:
        return ready_on_device(item, self.plan, work.judges.device)


class EvaluateWork:
    """The per-image work of evaluate over ``records`` (the stage's, in order), for the shard loop."""

    label = "evaluate"
    key = ("set", "image_id")
    failure = "model failed"

    def __init__(
        self, judges: Judges, plan: CropPlan, runtime: Runtime, records: Sequence[dict[str, Any]]
    ) -> None:
        self.judges, self.plan = judges, plan
        self.units = len(plan.conditions)
        self.batch_images = max(1, judges.batch_size // self.units)
        usable = sum(r["label"] in judges.index for r in records)
        self.feed = CropFeed(plan, runtime, records, self.batch_images, judges.device, usable)

    def prepare(self, start: int, records: Sequence[dict[str, Any]]) -> Iterator[Prepared]:
        wanted = []
        for position, record in enumerate(records):
            skipped = _unknown_label(position, record, self.judges.index)
            if skipped is None:
                wanted.append(start + position)
            else:
                yield skipped
        yield from self.feed.prepare(start, wanted)

    def batch_key(self, item: Prepared) -> Hashable:
        return None

    def judge(self, items: list[Prepared]) -> None:
        n = self.units
        crops = torch.cat([item.crops for item in items])
        labels = torch.tensor([self.judges.index[item.record["label"]] for item in items]).repeat_interleave(
            n
        )
        clean = torch.arange(len(crops)) // n * n  # every image's crops start with its clean one
        out = self.judges(crops, labels, clean)
        for j, item in enumerate(items):
            item.result = {key: value[j * n : (j + 1) * n] for key, value in out.items()}
            item.crops = None  # only the numbers are kept until the shard is written

    def rows(self, item: Prepared) -> list[dict[str, Any]]:
        record = item.record
        rows = []
        for k, (corruption, severity) in enumerate(self.plan.conditions):
            values: dict[str, Any] = {
                "prob_true": float("nan"),
                "score": float("nan"),
                "quality": float("nan"),
            }
            if item.status == "ok":
                true = self.judges.index[record["label"]]
                topk = item.result["topk"][k]
                values = {
                    "pred": self.judges.classes[int(topk[0])],
                    "top1": bool(topk[0] == true),
                    "top5": bool((topk == true).any()),
                    "upscaled": item.upscaled,
                    **{
                        key: float(item.result[key][k])
                        for key in ("prob_true", "score", "quality", "psnr", "ms_ssim")
                    },
                }
            rows.append(
                EVAL.row(
                    image_id=record["image_id"],
                    label=record["label"],
                    corruption=corruption,
                    severity=severity,
                    set=record["set"],
                    status=item.status,
                    reason=item.reason,
                    **values,
                )
            )
        return rows

    def before_commit(self, index: int, items: list[Prepared]) -> None:
        return None

    def close(self) -> None:
        self.feed.close()


def evaluate_records(
    records: Sequence[dict[str, Any]], judges: Judges, plan: CropPlan, runtime: Runtime
) -> Iterator[dict[str, Any]]:
    """Rows of ``eval.parquet`` for ``records`` (``image_id, path, label, set``), in record order.

    The distortions run in the loader workers on the CPU, or with ``plan.distort_on = "device"`` in the main
    process on the models' device (the batched GPU path; on CUDA a few values may land one level apart).
    """
    work = EvaluateWork(judges, plan, runtime, records)
    guard = FailureGuard(work.label)
    try:
        for item in in_order(judged(work, work.prepare(0, records), lambda _: None)):
            guard.shard(item.position, [item])
            yield from work.rows(item)
        guard.finish()
    finally:
        work.close()


def evaluate_to_dir(
    records: pd.DataFrame,
    judges: Judges,
    plan: CropPlan,
    runtime: Runtime,
    out: RunLayout,
    meta: dict[str, Any],
    spec: JudgesSpec | None = None,
) -> int:
    """Evaluate into ``eval.parquet`` of the run directory ``out``, resuming finished shards of its parts;
    returns how many shards were reused. ``meta`` is the table's provenance; its ``fingerprint`` names the work
    (parts of other work are thrown away). ``spec``, the judges' spec, lets the Ray engine build them."""
    shards = Shards(
        out.path(RunLayout.EVAL_PARTS),
        f"{meta['fingerprint']} shard_size={runtime.shard_size} device={judges.device.type}",
    )
    ordered = records.sort_values(["set", "image_id"], kind="stable").to_dict("records")
    done = run_shards(
        EvaluateWork(judges, plan, runtime, ordered),
        ordered,
        shards,
        schema=EVAL,
        runtime=runtime,
        recipe=None if spec is None else EvaluateRecipe(spec, plan, tuple(judges.classes)),
    )
    EVAL.write_parts(out.eval, done.parts, meta)
    return done.reused
